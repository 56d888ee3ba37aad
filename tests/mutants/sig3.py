"""Hand-written backward pass of sig3.toml (3-4-4-2 sigmoid/tanh/sigmoid, SSE sum)."""

import numpy as np


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def grad(params, X, T):
    W1, b1, W2, b2, W3, b3 = (params[k] for k in ("W1", "b1", "W2", "b2", "W3", "b3"))
    z1 = X @ W1.T + b1
    a1 = sigmoid(z1)
    z2 = a1 @ W2.T + b2
    a2 = np.tanh(z2)
    z3 = a2 @ W3.T + b3
    a3 = sigmoid(z3)
    delta3 = (a3 - T) * a3 * (1 - a3)
    dW3 = delta3.T @ a2
    db3 = delta3.sum(axis=0)
    delta2 = (delta3 @ W3) * (1 - a2 ** 2)
    dW2 = delta2.T @ a1
    db2 = delta2.sum(axis=0)
    delta1 = (delta2 @ W2) * a1 * (1 - a1)
    dW1 = delta1.T @ X
    db1 = delta1.sum(axis=0)
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2, "W3": dW3, "b3": db3}


def grad_einsum(params, X, T):
    """Outer products summed with einsum; derivatives written in z."""
    W1, b1, W2, b2, W3, b3 = (params[k] for k in ("W1", "b1", "W2", "b2", "W3", "b3"))
    z1 = np.einsum("ni,ji->nj", X, W1) + b1
    a1 = sigmoid(z1)
    z2 = np.einsum("ni,ji->nj", a1, W2) + b2
    a2 = np.tanh(z2)
    z3 = np.einsum("ni,ji->nj", a2, W3) + b3
    a3 = sigmoid(z3)
    delta3 = (a3 - T) * np.exp(-z3) / (1 + np.exp(-z3)) ** 2
    delta2 = np.einsum("nk,kj->nj", delta3, W3) / np.cosh(z2) ** 2
    delta1 = np.einsum("nk,kj->nj", delta2, W2) * sigmoid(z1) * sigmoid(-z1)
    return {
        "W1": np.einsum("nj,ni->ji", delta1, X), "b1": np.einsum("nj->j", delta1),
        "W2": np.einsum("nj,ni->ji", delta2, a1), "b2": np.einsum("nj->j", delta2),
        "W3": np.einsum("nj,ni->ji", delta3, a2), "b3": np.einsum("nj->j", delta3),
    }


def grad_loop(params, X, T):
    """One sample at a time, gradients accumulated in place."""
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    for x, t in zip(X, T):
        a1 = sigmoid(params["W1"] @ x + params["b1"])
        a2 = np.tanh(params["W2"] @ a1 + params["b2"])
        a3 = sigmoid(params["W3"] @ a2 + params["b3"])
        d3 = (a3 - t) * a3 * (1 - a3)
        d2 = params["W3"].T @ d3 * (1 - a2 * a2)
        d1 = params["W2"].T @ d2 * a1 * (1 - a1)
        for name, delta, inp in (("1", d1, x), ("2", d2, a1), ("3", d3, a2)):
            grads["W" + name] += np.outer(delta, inp)
            grads["b" + name] += delta
    return grads
