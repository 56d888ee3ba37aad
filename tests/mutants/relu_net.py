"""Hand-written backward pass of examples/relu_net.toml (3-5-5-1 ReLU, mean squared error)."""

import numpy as np


def grad(params, X, T):
    W1, b1, W2, b2, W3, b3 = (params[k] for k in ("W1", "b1", "W2", "b2", "W3", "b3"))
    n = X.shape[0]
    z1 = X @ W1.T + b1
    a1 = np.maximum(z1, 0)
    z2 = a1 @ W2.T + b2
    a2 = np.maximum(z2, 0)
    y = a2 @ W3.T + b3
    delta3 = 2 * (y - T) / n
    dW3 = delta3.T @ a2
    db3 = delta3.sum(axis=0)
    delta2 = (delta3 @ W3) * (z2 > 0)
    dW2 = delta2.T @ a1
    db2 = delta2.sum(axis=0)
    delta1 = (delta2 @ W2) * (z1 > 0)
    dW1 = delta1.T @ X
    db1 = delta1.sum(axis=0)
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2, "W3": dW3, "b3": db3}


def grad_masks(params, X, T):
    """Masks from the activations, np.where and heaviside; sums by matrix products."""
    W1, b1, W2, b2, W3, b3 = (params[k] for k in ("W1", "b1", "W2", "b2", "W3", "b3"))
    n = len(X)
    a1 = np.where(X @ W1.T + b1 > 0, X @ W1.T + b1, 0.0)
    z2 = a1 @ W2.T + b2
    a2 = z2 * (z2 > 0)
    err = (a2 @ W3.T + b3 - T) * (2.0 / n)
    d2 = err @ W3 * np.heaviside(z2, 0.0)
    d1 = d2 @ W2 * (a1 > 0).astype(float)
    ones = np.ones((1, n))
    return {"W1": (X.T @ d1).T, "b1": (ones @ d1).ravel(), "W2": (a1.T @ d2).T,
            "b2": (ones @ d2)[0], "W3": (a2.T @ err).T, "b3": (ones @ err).reshape(1)}


def grad_loop(params, X, T):
    """Per sample, with the mean taken at the end."""
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    for x, t in zip(X, T):
        z1 = params["W1"] @ x + params["b1"]
        a1 = np.maximum(z1, 0)
        z2 = params["W2"] @ a1 + params["b2"]
        a2 = np.maximum(z2, 0)
        e = 2 * (params["W3"] @ a2 + params["b3"] - t)
        g2 = params["W3"].T @ e * (z2 >= 0)
        g1 = params["W2"].T @ g2 * (z1 >= 0)
        for name, delta, inp in (("3", e, a2), ("2", g2, a1), ("1", g1, x)):
            grads["W" + name] += np.outer(delta, inp)
            grads["b" + name] += delta
    return {k: v / len(X) for k, v in grads.items()}
