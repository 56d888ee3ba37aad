"""The naive symbolic baseline: every weight its own scalar SymPy symbol, the loss of one
example written out as a scalar expression, ``sympy.diff`` once per weight, and each
derivative printed as Python code.  This is what "derive the gradient with a CAS" costs
without symgrad's layer-by-layer matrix formulation."""

from __future__ import annotations

from bench.networks import SSE_SCALE, Network


def _activate(sp, act: str, z: list) -> list:
    if act == "sigmoid":
        return [1 / (1 + sp.exp(-zi)) for zi in z]
    if act == "tanh":
        return [sp.tanh(zi) for zi in z]
    if act == "relu":
        return [sp.Max(0, zi) for zi in z]
    if act == "identity":
        return z
    if act == "softmax":
        e = [sp.exp(zi) for zi in z]
        s = sp.Add(*e)
        return [ei / s for ei in e]
    raise ValueError(act)


def build_loss(net: Network):
    """(loss expression of one example, list of weight symbols)."""
    import sympy as sp

    a = list(sp.symbols(f"x0:{net.inputs}"))
    weights, fan_in = [], net.inputs
    for k, (units, act) in enumerate(net.layers, start=1):
        W = [[sp.Symbol(f"W{k}_{i}_{j}") for j in range(fan_in)] for i in range(units)]
        b = [sp.Symbol(f"b{k}_{i}") for i in range(units)]
        z = [sp.Add(*[W[i][j] * a[j] for j in range(fan_in)], b[i]) for i in range(units)]
        a = _activate(sp, act, z)
        for i in range(units):
            weights += W[i] + [b[i]]
        fan_in = units
    t = sp.symbols(f"t0:{net.outputs}")
    if net.loss == "cross_entropy":
        loss = -sp.Add(*[ti * sp.log(ai) for ti, ai in zip(t, a)])
    elif net.loss == "sse":
        loss = SSE_SCALE * sp.Add(*[(ai - ti) ** 2 for ai, ti in zip(a, t)])
    else:
        raise ValueError(net.loss)
    return loss, weights


def naive_derive(net: Network) -> int:
    """Differentiate w.r.t. every weight and print each derivative; returns the count."""
    import sympy as sp

    loss, weights = build_loss(net)
    for w in weights:
        sp.pycode(sp.diff(loss, w))
    return len(weights)


def naive_gradient(net: Network, params: dict, X, T):
    """Numerical gradient from the naive derivatives (summed over the batch): used once to
    check that the naive baseline derives the right thing."""
    import numpy as np
    import sympy as sp

    loss, weights = build_loss(net)
    xs = sp.symbols(f"x0:{net.inputs}")
    ts = sp.symbols(f"t0:{net.outputs}")
    args = list(xs) + list(ts) + weights
    fns = [sp.lambdify(args, sp.diff(loss, w), "numpy") for w in weights]
    wvals = []
    for k in range(1, len(net.layers) + 1):
        W, b = params[f"W{k}"], params[f"b{k}"]
        for i in range(W.shape[0]):
            wvals += list(W[i]) + [b[i]]
    flat = np.array([sum(f(*X[n], *T[n], *wvals) for n in range(X.shape[0])) for f in fns])
    grads, pos = {}, 0
    for k in range(1, len(net.layers) + 1):
        units, fan_in = params[f"W{k}"].shape
        block = flat[pos:pos + units * (fan_in + 1)].reshape(units, fan_in + 1)
        grads[f"W{k}"], grads[f"b{k}"] = block[:, :fan_in], block[:, fan_in]
        pos += units * (fan_in + 1)
    return grads
