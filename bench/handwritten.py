"""Hand-written NumPy MLP: the baseline every runtime figure is divided by.

Written the way a careful NumPy programmer would write backprop for this
algorithm: batch-first ``X`` (N, in), ``W`` (units, fan_in), ``b`` (units,),
``z = a @ W.T + b``, activations applied in place, a stable sigmoid
(``0.5 * (1 + tanh(z / 2))``), softmax cross-entropy fused into
``delta = p - t``, ``dW = delta.T @ a``, ``db = delta.sum(0)``.
"""

from __future__ import annotations

import numpy as np

from bench.networks import SSE_SCALE, Network

# --- activations, applied in place to the pre-activation --------------------------------

def _sigmoid_(z):
    z *= 0.5
    np.tanh(z, out=z)
    z += 1.0
    z *= 0.5
    return z


def _tanh_(z):
    return np.tanh(z, out=z)


def _relu_(z):
    return np.maximum(z, 0, out=z)


def _identity_(z):
    return z


ACTIVATE = {"sigmoid": _sigmoid_, "tanh": _tanh_, "relu": _relu_, "identity": _identity_}


def _backprop_through(act: str, delta, a):
    """delta * act'(z), written in terms of the activation's output ``a``; in place on delta."""
    if act == "sigmoid":
        delta *= a * (1.0 - a)
    elif act == "tanh":
        delta *= 1.0 - a * a
    elif act == "relu":
        delta *= a > 0
    elif act != "identity":
        raise ValueError(f"unsupported hidden activation {act!r}")
    return delta


# --- output layer: loss and delta = dLoss/dz -------------------------------------------

def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
    return z


def _output_loss(net: Network, z, T, need_delta: bool):
    act, kind = net.layers[-1][1], net.loss
    if kind == "cross_entropy":
        if act != "softmax":
            raise ValueError("cross_entropy expects a softmax output layer")
        logp = _log_softmax(z)
        loss = -np.vdot(T, logp)
        delta = np.exp(logp, out=logp) - T if need_delta else None
    elif kind == "bce":
        if act != "sigmoid":
            raise ValueError("bce expects a sigmoid output layer")
        # sum softplus(z) - t*z, stably; delta = sigmoid(z) - t
        loss = np.sum(np.logaddexp(0.0, z) - T * z)
        delta = _sigmoid_(z.copy()) - T if need_delta else None
    elif kind in ("sse", "mse"):
        y = ACTIVATE[act](z.copy())
        r = y - T
        scale = SSE_SCALE if kind == "sse" else 1.0 / T.shape[1]
        loss = scale * np.vdot(r, r)
        delta = _backprop_through(act, (2.0 * scale) * r, y) if need_delta else None
    else:
        raise ValueError(f"unsupported loss {kind!r}")
    if net.reduction == "mean":
        n = T.shape[0]
        loss = loss / n
        if delta is not None:
            delta /= n
    return float(loss), delta


class HandwrittenMLP:
    """forward / loss / loss_and_grad for one network, params as a dict of arrays."""

    def __init__(self, net: Network):
        self.net = net
        self.n_layers = len(net.layers)

    def _hidden(self, params, X):
        """Activations of every layer but the output, plus the output pre-activation."""
        acts, a = [X], X
        for k, (_, act) in enumerate(self.net.layers, start=1):
            z = a @ params[f"W{k}"].T
            z += params[f"b{k}"]
            if k == self.n_layers:
                return acts, z
            a = ACTIVATE[act](z)
            acts.append(a)
        raise AssertionError("unreachable")

    def forward(self, params, X):
        _, z = self._hidden(params, X)
        act = self.net.layers[-1][1]
        if act == "softmax":
            return np.exp(_log_softmax(z))
        return ACTIVATE[act](z)

    def loss(self, params, X, T) -> float:
        _, z = self._hidden(params, X)
        return _output_loss(self.net, z, T, need_delta=False)[0]

    def loss_and_grad(self, params, X, T):
        acts, z = self._hidden(params, X)
        loss, delta = _output_loss(self.net, z, T, need_delta=True)
        grads = {}
        for k in range(self.n_layers, 0, -1):
            a_prev = acts[k - 1]
            grads[f"W{k}"] = delta.T @ a_prev
            grads[f"b{k}"] = delta.sum(axis=0)
            if k > 1:
                delta = _backprop_through(self.net.layers[k - 2][1], delta @ params[f"W{k}"],
                                          a_prev)
        return loss, grads


class SGDMomentum:
    """Heavy-ball momentum as in torch.optim.SGD: v = mu*v + g; p -= lr*v (in place)."""

    def __init__(self, params, lr: float, momentum: float):
        self.lr, self.mu = lr, momentum
        self.velocity = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, params, grads):
        for k, g in grads.items():
            v = self.velocity[k]
            v *= self.mu
            v += g
            p = params[k]
            p -= self.lr * v


def train_minibatch(mlp: HandwrittenMLP, params, X, T, *, epochs, lr, momentum, batch_size,
                    seed=0, callback=None):
    """Plain minibatch SGD with momentum; ``callback(epoch)`` returning True stops early."""
    opt = SGDMomentum(params, lr, momentum)
    rng = np.random.default_rng(seed)
    n = X.shape[0]
    for epoch in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            _, grads = mlp.loss_and_grad(params, X[idx], T[idx])
            opt.step(params, grads)
        if callback is not None and callback(epoch):
            return epoch + 1
    return epochs
