"""Hand-written im2col NumPy for small convolutional networks: the baseline of the conv benchmark.

Written independently of symgrad (nothing here imports it), the way a careful NumPy
programmer writes a LeNet forward and backward pass:

* activations are kept channel-major (C, N, H, W) inside, so every convolution is **one**
  GEMM over the whole batch: the im2col matrix ``cols`` (C*kh*kw, N*Ho*Wo) is one copy of a
  transposed ``sliding_window_view`` (innermost runs of Wo contiguous pixels), and
  ``Z = K.reshape(F, -1) @ cols + b`` (F, N*Ho*Wo) is already the next layer's (F, N, Ho, Wo)
  activation;
* ``cols`` is kept from the forward pass, so dL/dK = ``delta @ cols.T`` is one GEMM too;
* dL/dA = ``K.T @ delta`` (C*kh*kw, N*Ho*Wo), folded back by a strided col2im: kh*kw
  shifted in-place adds of contiguous blocks into a zero (padded) buffer; never computed
  for the input image;
* max pooling by s*s strided ``np.maximum``; its gradient routes G to every position equal
  to its window's maximum (after a ReLU, ties occur only between zeros, where the ReLU
  derivative is 0 anyway);
* flatten transposes (C, N, H, W) to the (N, C*H*W) rows the dense layer reads (one small
  copy);
* softmax cross-entropy (mean) is fused to ``delta = (p - t) / N``.

The network is a tuple of layers, the same description ``bench/conv.py`` derives from
a spec's TOML: ("conv", filters, kernel, padding, activation), ("maxpool", size),
("flatten",), ("dense", units, activation).  Parameters are named like the generated
module's: ``K<k>``/``b<k>`` for a conv layer and ``W<k>``/``b<k>`` for a dense layer,
k counting every layer from 1; K is (F, C, kh, kw), W (units, fan_in), data NCHW outside.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def layer_shapes(layers: tuple, input_shape: tuple) -> list:
    """The (C, H, W) or (units,) output shape of every layer."""
    shapes, shape = [], tuple(input_shape)
    for layer in layers:
        kind = layer[0]
        if kind == "conv":
            _, f, k, p, _ = layer
            shape = (f, shape[1] + 2 * p - k + 1, shape[2] + 2 * p - k + 1)
        elif kind == "maxpool":
            s = layer[1]
            shape = (shape[0], shape[1] // s, shape[2] // s)
        elif kind == "flatten":
            shape = (int(np.prod(shape)),)
        elif kind == "dense":
            shape = (layer[1],)
        else:
            raise ValueError(f"unknown layer kind {kind!r}")
        shapes.append(shape)
    return shapes


def init_params(layers: tuple, input_shape: tuple, dtype=np.float64, seed: int = 0) -> dict:
    """He-uniform weights, zero biases (the benchmark overwrites them with symgrad's)."""
    rng = np.random.default_rng(seed)
    params, shape = {}, tuple(input_shape)
    for k, (layer, out) in enumerate(zip(layers, layer_shapes(layers, input_shape)), start=1):
        if layer[0] == "conv":
            f, ks = layer[1], layer[2]
            fan_in = shape[0] * ks * ks
            lim = np.sqrt(6 / fan_in)
            params[f"K{k}"] = rng.uniform(-lim, lim, (f, shape[0], ks, ks)).astype(dtype)
            params[f"b{k}"] = np.zeros(f, dtype=dtype)
        elif layer[0] == "dense":
            lim = np.sqrt(6 / shape[0])
            params[f"W{k}"] = rng.uniform(-lim, lim, (layer[1], shape[0])).astype(dtype)
            params[f"b{k}"] = np.zeros(layer[1], dtype=dtype)
        shape = out
    return params


def _im2col(A, kernel: int, padding: int):
    """A (C, N, H, W) -> cols (C*kh*kw, N*Ho*Wo), rows in (c, u, v) order, and (Ho, Wo).

    The one im2col copy; its innermost runs are window rows of Wo contiguous pixels."""
    if padding:
        A = np.pad(A, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    win = sliding_window_view(A, (kernel, kernel), axis=(2, 3))  # (C, N, Ho, Wo, kh, kw)
    c, n, ho, wo = win.shape[:4]
    return win.transpose(0, 4, 5, 1, 2, 3).reshape(c * kernel * kernel, n * ho * wo), (ho, wo)


def _col2im(dcols, shape_cnhw: tuple, kernel: int, padding: int):
    """Sum dcols (C*kh*kw, N*Ho*Wo) back onto the (C, N, H, W) input (stride 1): kh*kw
    shifted adds of contiguous (N, Ho, Wo) blocks into a zero padded buffer."""
    c, n, h, w = shape_cnhw
    hp, wp = h + 2 * padding, w + 2 * padding
    ho, wo = hp - kernel + 1, wp - kernel + 1
    d = dcols.reshape(c, kernel, kernel, n, ho, wo)
    out = np.zeros((c, n, hp, wp), dtype=dcols.dtype)
    for u in range(kernel):
        for v in range(kernel):
            out[:, :, u:u + ho, v:v + wo] += d[:, u, v]
    if padding:
        out = out[:, :, padding:padding + h, padding:padding + w]
    return out


def _maxpool(A, s: int):
    """Max over non-overlapping s x s windows of A (C, N, H, W) by strided slices."""
    ho, wo = A.shape[2] // s, A.shape[3] // s
    P = A[:, :, 0:s * ho:s, 0:s * wo:s].copy()
    for u in range(s):
        for v in range(s):
            if u or v:
                np.maximum(P, A[:, :, u:s * ho:s, v:s * wo:s], out=P)
    return P


def _maxpool_grad(G, A, P, s: int):
    """G routed to every window position equal to the window's maximum.  After a ReLU, ties
    occur only between zeros, whose gradient the ReLU derivative sets to 0 anyway."""
    ho, wo = P.shape[2:]
    dA = np.zeros(A.shape, dtype=G.dtype)
    for u in range(s):
        for v in range(s):
            np.multiply(G, A[:, :, u:s * ho:s, v:s * wo:s] == P,
                        out=dA[:, :, u:s * ho:s, v:s * wo:s])
    return dA


def _activate_(z, act: str):
    if act == "relu":
        return np.maximum(z, 0, out=z)
    if act == "tanh":
        return np.tanh(z, out=z)
    if act in ("identity", "softmax"):
        return z
    raise ValueError(f"unsupported activation {act!r}")


def _backprop_(delta, a, act: str):
    if act == "relu":
        return np.multiply(delta, a > 0, out=delta)
    if act == "tanh":
        delta *= 1.0 - a * a
    return delta


def _forward(params, layers, input_shape, X):
    """Forward pass; returns the output layer's pre-activation and one record per layer."""
    n = X.shape[0]
    A = X.reshape(n, *input_shape).transpose(1, 0, 2, 3)  # (C, N, H, W); a view
    tape = []
    for k, layer in enumerate(layers, start=1):
        kind = layer[0]
        if kind == "conv":
            _, f, ks, p, act = layer
            K, b = params[f"K{k}"], params[f"b{k}"]
            cols, (ho, wo) = _im2col(A, ks, p)
            Z = K.reshape(f, -1) @ cols  # one GEMM: (F, C*kh*kw) x (C*kh*kw, N*Ho*Wo)
            Z += b[:, None]
            Z = _activate_(Z, act)
            tape.append((cols, A.shape, Z))
            A = Z.reshape(f, n, ho, wo)
        elif kind == "maxpool":
            P = _maxpool(A, layer[1])
            tape.append((A, P))
            A = P
        elif kind == "flatten":
            tape.append(A.shape)
            A = A.transpose(1, 0, 2, 3).reshape(n, -1)  # (N, C*H*W), the spec's order
        elif kind == "dense":
            W, b = params[f"W{k}"], params[f"b{k}"]
            Z = A @ W.T
            Z += b
            if k < len(layers):
                Z = _activate_(Z, layer[2])
            tape.append((A, W, Z))
            A = Z
    return A, tape


def make_loss_and_grad(layers: tuple, input_shape: tuple, weight_decay: float = 0.0):
    """``loss_and_grad(params, X, T) -> (loss, grads)`` for the mean softmax cross-entropy,
    plus ``weight_decay / 2`` times the sum of squares of every kernel and weight matrix
    (not the biases)."""
    layers = tuple(layers)
    if layers[-1][0] != "dense" or layers[-1][2] != "softmax":
        raise ValueError("the last layer must be a dense softmax layer")

    def loss_and_grad(params, X, T):
        n = X.shape[0]
        z, tape = _forward(params, layers, input_shape, X)
        z = z - z.max(axis=1, keepdims=True)
        z -= np.log(np.exp(z).sum(axis=1, keepdims=True))  # log p
        loss = float(-np.vdot(T, z) / n)
        if weight_decay:
            loss += 0.5 * weight_decay * sum(float(np.vdot(v, v)) for k, v in params.items()
                                             if k[0] in "KW")
        G = np.exp(z, out=z)
        G -= T
        G /= n  # dL/dz of the softmax output layer
        grads = {}
        for k in range(len(layers), 0, -1):
            layer, rec = layers[k - 1], tape[k - 1]
            kind = layer[0]
            if kind == "dense":
                A, W, Z = rec
                delta = G if k == len(layers) else _backprop_(G, Z, layer[2])
                grads[f"W{k}"] = delta.T @ A
                grads[f"b{k}"] = delta.sum(axis=0)
                if k > 1:
                    G = delta @ W
            elif kind == "flatten":
                c, n_, h, w = rec
                G = G.reshape(n_, c, h, w).transpose(1, 0, 2, 3)  # a view, (C, N, H, W)
            elif kind == "maxpool":
                A, P = rec
                G = _maxpool_grad(G, A, P, layer[1])
            elif kind == "conv":
                cols, in_shape, Z = rec
                _, f, ks, p, act = layer
                delta = _backprop_(G.reshape(f, -1), Z, act)  # (F, N*Ho*Wo)
                grads[f"K{k}"] = (delta @ cols.T).reshape(params[f"K{k}"].shape)
                grads[f"b{k}"] = delta.sum(axis=1)
                if k > 1:
                    G = _col2im(params[f"K{k}"].reshape(f, -1).T @ delta, in_shape, ks, p)
        if weight_decay:
            for k, g in grads.items():
                if k[0] in "KW":
                    g += weight_decay * params[k]
        return loss, grads

    return loss_and_grad
