"""Hand-written backward pass of skip_bce.toml (3-4-2, output reads [X, hidden], mean BCE)."""

import numpy as np


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def grad(params, X, T):
    W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
    n = X.shape[0]
    z1 = X @ W1.T + b1
    a1 = sigmoid(z1)
    h = np.hstack([X, a1])
    z2 = h @ W2.T + b2
    a2 = sigmoid(z2)
    delta2 = (a2 - T) / n
    dW2 = delta2.T @ h
    db2 = delta2.sum(axis=0)
    delta1 = (delta2 @ W2[:, 3:]) * a1 * (1 - a1)
    dW1 = delta1.T @ X
    db1 = delta1.sum(axis=0)
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


def grad_unfused(params, X, T):
    """dL/dy of the binary cross-entropy times sigmoid'(z), not fused to y - t."""
    W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
    n = X.shape[0]
    a1 = sigmoid(X @ W1.T + b1)
    z2 = X @ W2[:, :3].T + a1 @ W2[:, 3:].T + b2
    y = sigmoid(z2)
    dL_dy = (-T / y + (1 - T) / (1 - y)) / n
    delta2 = dL_dy * y * (1 - y)
    delta1 = delta2 @ W2[:, 3:] * a1 * (1 - a1)
    return {"W1": delta1.T @ X, "b1": delta1.sum(0),
            "W2": np.concatenate([delta2.T @ X, delta2.T @ a1], axis=1), "b2": delta2.sum(0)}


def grad_blocks(params, X, T):
    """The two blocks of W2 filled in separately, per-sample outer products."""
    W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
    n = X.shape[0]
    a1 = sigmoid(X @ W1.T + b1)
    a2 = sigmoid(np.hstack([X, a1]) @ W2.T + b2)
    delta2 = (a2 - T) / n
    dW2 = np.zeros_like(W2)
    for i in range(n):
        dW2[:, :3] += np.outer(delta2[i], X[i])
        dW2[:, 3:] += np.outer(delta2[i], a1[i])
    delta1 = np.einsum("nk,kj->nj", delta2, W2[:, 3:]) * (a1 - a1 ** 2)
    return {"W1": np.einsum("nj,ni->ji", delta1, X), "b1": delta1.sum(0), "W2": dW2,
            "b2": np.sum(delta2, axis=0)}
