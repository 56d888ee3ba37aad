"""NumPy kernels of the convolution family, copied verbatim into generated modules.

Contract: every function here is self-contained (it names only ``np`` and
the other helpers in this module), so :func:`inspect.getsource` of it pastes
into a generated module as is; :data:`HELPERS` says which functions each
expression class of :mod:`symgrad.ops.conv` needs, dependencies first.
Arrays are batch-first NCHW; kernels are (F, C, kh, kw); ``stride``,
``padding``, ``kernel`` and ``size`` are (rows, columns) pairs of ints.
No function loops over samples or positions in Python (only over the
kh*kw kernel offsets: strided slices for pooling, scatter-adding windows
back for col2im), none
changes or returns a view of its inputs, and float32 stays float32.

>>> X = np.arange(16.0).reshape(1, 1, 4, 4)
>>> _maxpool2d(X, (2, 2), (2, 2))[0, 0]
array([[ 5.,  7.],
       [13., 15.]])
>>> _maxpool2d_grad(np.ones((1, 1, 2, 2)), X, (2, 2), (2, 2))[0, 0]
array([[0., 0., 0., 0.],
       [0., 1., 0., 1.],
       [0., 0., 0., 0.],
       [0., 1., 0., 1.]])
"""

from __future__ import annotations

import numpy as np


def _windows(A, kernel, stride, padding=(0, 0)):
    """W[n,c,i,j,u,v] = Apad[n,c,i*sh+u,j*sw+v], a read-only view (im2col without copying)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    if ph or pw:
        A = np.pad(A, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    view = np.lib.stride_tricks.sliding_window_view(A, (kh, kw), axis=(2, 3))
    return view[:, :, ::sh, ::sw]


def _col2im(cols, size, stride, padding=(0, 0)):
    """dA[n,c,i*sh+u-ph,j*sw+v-pw] += cols[u,v,n,c,i,j], summed over windows, cropped to size."""
    kh, kw, n, c, ho, wo = cols.shape
    (h, w), (sh, sw), (ph, pw) = size, stride, padding
    out = np.zeros((n, c, max(h + 2 * ph, (ho - 1) * sh + kh),
                    max(w + 2 * pw, (wo - 1) * sw + kw)), dtype=cols.dtype)
    for u in range(kh):
        for v in range(kw):
            out[:, :, u:u + sh * ho:sh, v:v + sw * wo:sw] += cols[u, v]
    return out[:, :, ph:ph + h, pw:pw + w].copy()


def _conv2d(A, K, b, stride, padding):
    """Z[n,f,i,j] = b[f] + sum_{c,u,v} Apad[n,c,i*sh+u,j*sw+v] K[f,c,u,v] (cross-correlation)."""
    f, c, kh, kw = K.shape
    cols = _windows(A, (kh, kw), stride, padding)
    n, _, ho, wo = cols.shape[:4]
    cols = cols.transpose(0, 1, 4, 5, 2, 3).reshape(n, c * kh * kw, ho * wo)
    Z = np.matmul(K.reshape(f, c * kh * kw), cols).reshape(n, f, ho, wo)
    if b is not None:
        Z += b.reshape(f, 1, 1)
    return Z


def _conv2d_grad_input(G, K, stride, padding, size):
    """dL/dA = crop_p(dilate_s(G) full-correlated with rot180(K)): dA[n,c,i*sh+u-ph,...] += G K."""
    f, c, kh, kw = K.shape
    n, _, ho, wo = G.shape
    cols = np.matmul(K.reshape(f, c * kh * kw).T, G.reshape(n, f, ho * wo))
    cols = cols.reshape(n, c, kh, kw, ho, wo).transpose(2, 3, 0, 1, 4, 5)
    return _col2im(cols, size, stride, padding)


def _conv2d_grad_kernel(A, G, stride, padding, kernel):
    """dL/dK[f,c,u,v] = sum_{n,i,j} Apad[n,c,i*sh+u,j*sw+v] G[n,f,i,j] (input correlated with G)."""
    (kh, kw), (n, f, ho, wo) = kernel, G.shape
    c = A.shape[1]
    cols = _windows(A, kernel, stride, padding).transpose(0, 1, 4, 5, 2, 3)
    cols = cols.reshape(n, c * kh * kw, ho * wo)
    dK = np.matmul(G.reshape(n, f, ho * wo), cols.transpose(0, 2, 1)).sum(axis=0)
    return dK.reshape(f, c, kh, kw)


def _channel_sum(G):
    """dL/db[f] = sum_{n,i,j} G[n,f,i,j]."""
    return G.sum(axis=(0, 2, 3))


def _maxpool2d(A, kernel, stride):
    """P[n,c,i,j] = max_{u,v} A[n,c,i*sh+u,j*sw+v]."""
    (kh, kw), (sh, sw) = kernel, stride
    ho, wo = (A.shape[2] - kh) // sh + 1, (A.shape[3] - kw) // sw + 1
    P = A[:, :, 0:sh * ho:sh, 0:sw * wo:sw].copy()
    for u in range(kh):
        for v in range(kw):
            np.maximum(P, A[:, :, u:u + sh * ho:sh, v:v + sw * wo:sw], out=P)
    return P


def _maxpool2d_grad(G, A, kernel, stride):
    """dA[n,c,i*sh+u,j*sw+v] += G[n,c,i,j] at the first (row-major) arg-max (u,v) of each window."""
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, G.shape[2:]
    top = _maxpool2d(A, kernel, stride)
    free = np.ones(top.shape, dtype=bool)  # windows whose maximum is not yet found
    dA = np.zeros(A.shape, dtype=G.dtype)
    for u in range(kh):
        for v in range(kw):
            hit = A[:, :, u:u + sh * ho:sh, v:v + sw * wo:sw] == top
            hit &= free
            free ^= hit
            dA[:, :, u:u + sh * ho:sh, v:v + sw * wo:sw] += G * hit
    return dA


def _avgpool2d(A, kernel, stride):
    """P[n,c,i,j] = sum_{u,v} A[n,c,i*sh+u,j*sw+v] / (kh*kw)."""
    (kh, kw), (sh, sw) = kernel, stride
    ho, wo = (A.shape[2] - kh) // sh + 1, (A.shape[3] - kw) // sw + 1
    P = A[:, :, 0:sh * ho:sh, 0:sw * wo:sw].copy()
    for u in range(kh):
        for v in range(kw):
            if u or v:
                P += A[:, :, u:u + sh * ho:sh, v:v + sw * wo:sw]
    P /= kh * kw
    return P


def _avgpool2d_grad(G, kernel, stride, size):
    """dA[n,c,i*sh+u,j*sw+v] += G[n,c,i,j] / (kh*kw): G spread evenly over each window."""
    kh, kw = kernel
    share = G / (kh * kw)
    cols = np.broadcast_to(share, (kh, kw) + share.shape)
    return _col2im(cols, size, stride)


#: For each expression class, the helpers its NumPy view calls, dependencies first.
HELPERS: dict[str, tuple[str, ...]] = {
    "Conv2d": ("_windows", "_conv2d"),
    "Conv2dGradInput": ("_col2im", "_conv2d_grad_input"),
    "Conv2dGradKernel": ("_windows", "_conv2d_grad_kernel"),
    "ChannelSum": ("_channel_sum",),
    "MaxPool2d": ("_maxpool2d",),
    "MaxPool2dGrad": ("_maxpool2d", "_maxpool2d_grad"),
    "AvgPool2d": ("_avgpool2d",),
    "AvgPool2dGrad": ("_col2im", "_avgpool2d_grad"),
    "Flatten": (),
    "Unflatten": (),
}
