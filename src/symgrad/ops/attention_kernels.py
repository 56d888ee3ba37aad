"""NumPy kernels of scaled dot-product attention, copied verbatim into generated modules.

Contract as :mod:`symgrad.ops.kernels`: every function is self-contained
(``np`` and the helpers here only), none changes or returns a view of its
inputs, float32 stays float32; :data:`HELPERS` says which functions each
expression class of :mod:`symgrad.ops.attention` needs, dependencies first.
Sequences are batch-first, ``(N, T, D)``; scores and attention weights are
``(N, H, T, T)`` (H heads, query i, key j); a projection folds time into the
batch so it is one matrix product over all ``N*T`` rows, and every per-head
product is one batched ``np.matmul`` over ``(N, H)``.  No Python loop.

>>> Q = np.array([[[1.0], [0.0]]])
>>> P = _attn_softmax(_attn_scores(Q, Q, 1), 1)  # causal: the first query sees only itself
>>> P[0, 0]
array([[1. , 0. ],
       [0.5, 0.5]])
"""

from __future__ import annotations

import numpy as np


def _attn_split(A, heads):
    """(N, T, H*c) -> (N, H, T, c): the columns of each head as its own sequence (a view)."""
    n, t, k = A.shape
    return A.reshape(n, t, heads, k // heads).transpose(0, 2, 1, 3)


def _attn_merge(A):
    """(N, H, T, c) -> (N, T, H*c): the heads side by side again (a new array)."""
    n, h, t, c = A.shape
    return A.transpose(0, 2, 1, 3).reshape(n, t, h * c)


def _attn_project(X, W, b):
    """Y[n, t] = X[n, t] W^T + b: one product over every (sample, step) row."""
    n, t, f = X.shape
    Y = (X.reshape(n * t, f) @ W.T).reshape(n, t, W.shape[0])
    if b is not None:
        Y += b
    return Y


def _attn_project_grad_input(G, W):
    """dX[n, t] = G[n, t] W."""
    n, t, u = G.shape
    return (G.reshape(n * t, u) @ W).reshape(n, t, W.shape[1])


def _attn_project_grad_weight(G, X):
    """dW = sum over n, t of G[n, t]^T X[n, t]: one product over every row."""
    return G.reshape(-1, G.shape[-1]).T @ X.reshape(-1, X.shape[-1])


def _attn_scores(Q, K, heads):
    """S[n, h] = Q_h K_h^T / sqrt(c), c = the columns of a head."""
    S = np.matmul(_attn_split(Q, heads), _attn_split(K, heads).transpose(0, 1, 3, 2))
    S *= 1.0 / np.sqrt(Q.shape[-1] // heads)
    return S


def _attn_softmax(S, causal):
    """P = softmax of each row of S (over keys j), max-shifted; causal: key j > query i gets 0."""
    if causal:
        S = np.where(np.tri(S.shape[-1], dtype=bool), S, -np.inf)
    P = S - S.max(axis=-1, keepdims=True)
    np.exp(P, out=P)
    P /= P.sum(axis=-1, keepdims=True)
    return P


def _attn_mix(P, V, heads):
    """O = P V per head, heads side by side: (N, T, H*c)."""
    return _attn_merge(np.matmul(P, _attn_split(V, heads)))


def _attn_mix_grad_weights(G, V, heads):
    """dP = dO V^T per head: (N, H, T, T)."""
    return np.matmul(_attn_split(G, heads), _attn_split(V, heads).transpose(0, 1, 3, 2))


def _attn_mix_grad_values(P, G, heads):
    """dV = P^T dO per head, heads side by side."""
    return _attn_merge(np.matmul(P.transpose(0, 1, 3, 2), _attn_split(G, heads)))


def _attn_softmax_grad(P, G):
    """dS = P * (dP - rowsum(dP * P)), rows over keys."""
    dS = G * P
    dS -= P * dS.sum(axis=-1, keepdims=True)
    return dS


def _attn_scores_grad_query(G, K, heads):
    """dQ = dS K / sqrt(c) per head, heads side by side."""
    dQ = _attn_merge(np.matmul(G, _attn_split(K, heads)))
    dQ *= 1.0 / np.sqrt(K.shape[-1] // heads)
    return dQ


def _attn_scores_grad_key(G, Q, heads):
    """dK = dS^T Q / sqrt(c) per head, heads side by side."""
    dK = _attn_merge(np.matmul(G.transpose(0, 1, 3, 2), _attn_split(Q, heads)))
    dK *= 1.0 / np.sqrt(Q.shape[-1] // heads)
    return dK


#: For each expression class, the helpers its NumPy view calls, dependencies first.
HELPERS: dict[str, tuple[str, ...]] = {
    "Project": ("_attn_project",),
    "ProjectGradInput": ("_attn_project_grad_input",),
    "ProjectGradWeight": ("_attn_project_grad_weight",),
    "ProjectGradBias": (),
    "Scores": ("_attn_split", "_attn_scores"),
    "AttnSoftmax": ("_attn_softmax",),
    "Mix": ("_attn_split", "_attn_merge", "_attn_mix"),
    "MixGradWeights": ("_attn_split", "_attn_mix_grad_weights"),
    "MixGradValues": ("_attn_split", "_attn_merge", "_attn_mix_grad_values"),
    "AttnSoftmaxGrad": ("_attn_softmax_grad",),
    "ScoresGradQuery": ("_attn_split", "_attn_merge", "_attn_scores_grad_query"),
    "ScoresGradKey": ("_attn_split", "_attn_merge", "_attn_scores_grad_key"),
}
