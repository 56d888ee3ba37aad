"""Hand-written backward pass of softmax_clf.toml (4-5-3 tanh/softmax, mean CE, decay 0.01)."""

import numpy as np

LAM = 0.01


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def grad(params, X, T):
    W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
    n = X.shape[0]
    z1 = X @ W1.T + b1
    a1 = np.tanh(z1)
    z2 = a1 @ W2.T + b2
    a2 = softmax(z2)
    delta2 = (a2 - T) / n
    dW2 = delta2.T @ a1 + LAM * W2
    db2 = delta2.sum(axis=0)
    delta1 = (delta2 @ W2) * (1 - a1 ** 2)
    dW1 = delta1.T @ X + LAM * W1
    db1 = delta1.sum(axis=0)
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


def grad_jacobian(params, X, T):
    """The softmax Jacobian written out per sample, the loss derivative -t/y through it."""
    W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
    n = len(X)
    a1 = np.tanh(X @ W1.T + b1)
    a2 = softmax(a1 @ W2.T + b2)
    dL_da2 = -T / a2 / n
    delta2 = np.empty_like(a2)
    for i in range(n):
        p = a2[i]
        J = np.diag(p) - np.outer(p, p)
        delta2[i] = J @ dL_da2[i]
    delta1 = delta2 @ W2 * (1 - np.tanh(X @ W1.T + b1) ** 2)
    return {"W1": X.T.dot(delta1).T + W1 * LAM, "b1": np.ones(n) @ delta1,
            "W2": (a1.T @ delta2).T + W2 * LAM, "b2": np.ones(n) @ delta2}


def grad_mean_first(params, X, T):
    """Sums over the batch first, the mean taken at the end."""
    W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
    a1 = np.tanh(X @ W1.T + b1)
    a2 = softmax(a1 @ W2.T + b2)
    d2 = a2 - T
    d1 = d2 @ W2 * (1 - a1) * (1 + a1)
    n = X.shape[0]
    return {"W1": np.dot(d1.T, X) / n + LAM * W1, "b1": np.mean(d1, axis=0),
            "W2": np.dot(d2.T, a1) / n + LAM * W2, "b2": np.mean(d2, axis=0)}
