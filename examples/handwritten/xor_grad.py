"""A hand-written gradient of the XOR network (examples/xor.toml), as a student would write it.

``symgrad verify examples/xor.toml --grad examples/handwritten/xor_grad.py:grad`` compares it
with the derived gradient; ``grad_wrong`` has the classic slip of a missing sigmoid derivative
in the hidden layer, which verify reports and names.
"""

import numpy as np


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def grad(params, X, T):
    """dE/dW and dE/db for E = 1/2 sum (y - t)^2, sigmoid hidden and output layers."""
    a1 = _sigmoid(X @ params["W1"].T + params["b1"])
    a2 = _sigmoid(a1 @ params["W2"].T + params["b2"])
    delta2 = (a2 - T) * a2 * (1 - a2)
    delta1 = (delta2 @ params["W2"]) * a1 * (1 - a1)
    return {"W1": delta1.T @ X, "b1": delta1.sum(axis=0),
            "W2": delta2.T @ a1, "b2": delta2.sum(axis=0)}


def grad_wrong(params, X, T):
    """The same, with the hidden layer's sigmoid derivative forgotten."""
    a1 = _sigmoid(X @ params["W1"].T + params["b1"])
    a2 = _sigmoid(a1 @ params["W2"].T + params["b2"])
    delta2 = (a2 - T) * a2 * (1 - a2)
    delta1 = delta2 @ params["W2"]
    return {"W1": delta1.T @ X, "b1": delta1.sum(axis=0),
            "W2": delta2.T @ a1, "b2": delta2.sum(axis=0)}
