"""NumPy kernels of normalisation, embedding and dropout, copied verbatim into generated modules.

Contract as :mod:`symgrad.ops.kernels`: every function is self-contained
(``np`` and the helpers here only), none changes or returns a view of its
inputs, float32 stays float32; :data:`HELPERS` says which functions each
expression class of :mod:`symgrad.ops.norm` needs, dependencies first.

>>> xhat = np.array([[-1.0, 0.0, 1.0]]) * np.sqrt(1.5)  # mean 0, variance 1
>>> g = 2 + 0.5 * xhat  # a shift and a scale of xhat: the normalisation removes both
>>> bool(np.abs(_norm_grad_input(g, xhat, np.ones((1, 1)), np.ones(3), 1)).max() < 1e-12)
True
>>> _embedding_grad(np.array([[1, 1]]), np.ones((1, 4)), 3)  # a repeated id adds up
array([[0., 0.],
       [2., 2.],
       [0., 0.]])
"""

from __future__ import annotations

import numpy as np


def _norm_grad_input(G, xhat, rstd, gamma, axis):
    """dX = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = gamma * G, means over ``axis``."""
    g = G * gamma
    dX = g - g.mean(axis=axis, keepdims=True)
    dX -= xhat * (g * xhat).mean(axis=axis, keepdims=True)
    dX *= rstd
    return dX


def _embedding(ids, E):
    """A[n, t*D + d] = E[ids[n, t], d]: the rows of E that the ids pick, side by side."""
    return E[ids].reshape(len(ids), -1)


def _embedding_grad(ids, G, vocab):
    """dE[v] = sum of G's (n, t) rows over every position whose id is v (repeats add up)."""
    dim = G.shape[1] // ids.shape[1]
    dE = np.zeros((vocab, dim), dtype=G.dtype)
    np.add.at(dE, ids.reshape(-1), G.reshape(-1, dim))
    return dE


def _dropout_mask(rng, shape, rate, dtype):
    """Inverted dropout: 1 / (1 - rate) where a uniform draw is at least rate, else 0."""
    keep = rng.random(shape) >= rate
    return keep.astype(dtype) / np.asarray(1 - rate, dtype=dtype)


#: For each expression class, the helpers its NumPy view calls, dependencies first.
HELPERS: dict[str, tuple[str, ...]] = {
    "Mean": (),
    "AxisSum": (),
    "NormGradInput": ("_norm_grad_input",),
    "Embedding": ("_embedding",),
    "EmbeddingGrad": ("_embedding_grad",),
    "DropoutMask": ("_dropout_mask",),
}
