"""Proof obligations of scaled dot-product attention: the VJP against sympy.diff.

At T = 3 steps and d = dk = 2 (N = 1 or 2), the whole layer is written out in
scalars with explicit sums by :func:`forward_scalar` (a plain loop per sample,
sharing nothing with the expression classes), the loss is ``sum(G * Y)``, and
``sympy.diff`` of it with respect to every entry of X and of the projections
must equal the VJP assembled from the backward classes' scalar forms, which
are written from the textbook backward formulas (dO = G W_O, dV = P^T dO,
dP = dO V^T, dS = P * (dP - rowsum(dP * P)), dQ = dS K/sqrt(c),
dK = dS^T Q/sqrt(c)); causal and not, one and two heads, with and without
biases and the residual connection.  Then the NumPy kernels must equal the
scalar forms, and PyTorch (hand-written attention and
F.scaled_dot_product_attention) must agree with the kernels in float64.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import sympy as sp

from symgrad.ops import attention_kernels as K
from symgrad.ops.attention import (
    AttnSoftmax,
    AttnSoftmaxGrad,
    Mix,
    MixGradValues,
    MixGradWeights,
    Project,
    ProjectGradBias,
    ProjectGradInput,
    ProjectGradWeight,
    Scores,
    ScoresGradKey,
    ScoresGradQuery,
    forward_scalar,
)
from symgrad.printing import ArrayCodePrinter

T, D, DK = 3, 2, 2


def symbols(name, shape):
    out = np.empty(shape, dtype=object)
    for idx in itertools.product(*map(range, shape)):
        out[idx] = sp.Symbol(f"{name}_{'_'.join(map(str, idx))}", real=True)
    return out


def arrays(n, bias=True):
    out = {"X": symbols("x", (n, T, D)), "G": symbols("g", (n, T, D))}
    for role in "qkvo":
        out[f"W{role}"] = symbols(f"w{role}", (D, DK) if role == "o" else (DK, D))
        if bias:
            out[f"b{role}"] = symbols(f"b{role}", (D,) if role == "o" else (DK,))
    return out


def vjp(a, heads, causal, residual):
    """The VJP from the classes' scalar forms (forward intermediates, then the textbook backward)."""
    b = {r: a.get(f"b{r}") for r in "qkvo"}
    X, G = a["X"], a["G"]
    q, k, v = (Project.scalar(X, a[f"W{r}"], b[r]) for r in "qkv")
    P = AttnSoftmax.scalar(Scores.scalar(q, k, heads, DK), causal)
    Out = Mix.scalar(P, v, heads)
    dO = ProjectGradInput.scalar(G, a["Wo"])
    dV = MixGradValues.scalar(P, dO, heads)
    dP = MixGradWeights.scalar(dO, v, heads)
    dS = AttnSoftmaxGrad.scalar(P, dP)
    dQ = ScoresGradQuery.scalar(dS, k, heads, DK)
    dK = ScoresGradKey.scalar(dS, q, heads, DK)
    grads = {"Wo": ProjectGradWeight.scalar(G, Out), "Wq": ProjectGradWeight.scalar(dQ, X),
             "Wk": ProjectGradWeight.scalar(dK, X), "Wv": ProjectGradWeight.scalar(dV, X)}
    if b["q"] is not None:
        grads.update(bo=ProjectGradBias.scalar(G), bq=ProjectGradBias.scalar(dQ),
                     bk=ProjectGradBias.scalar(dK), bv=ProjectGradBias.scalar(dV))
    dX = sum(ProjectGradInput.scalar(d, a[f"W{r}"]) for d, r in ((dQ, "q"), (dK, "k"), (dV, "v")))
    grads["X"] = dX + G if residual else dX
    return grads


def values_at(a, seed):
    rng = np.random.default_rng(seed)
    return {s: sp.Float(rng.normal(), 25) for array in a.values() for s in array.flat}


CASES = [  # (N, heads, causal, bias, residual)
    (1, 1, False, True, False),
    (2, 1, True, True, False),
    (2, 2, False, True, False),
    (1, 1, True, False, True),
    (1, 2, True, True, True),
]


@pytest.mark.parametrize("n, heads, causal, bias, residual", CASES)
def test_vjp_equals_sympy_diff(n, heads, causal, bias, residual):
    a = arrays(n, bias)
    Y = forward_scalar(a["X"], a["Wq"], a["Wk"], a["Wv"], a["Wo"], a.get("bq"), a.get("bk"),
                       a.get("bv"), a.get("bo"), heads=heads, causal=causal, residual=residual)
    L = sp.Add(*(a["G"] * Y).ravel())
    grads = vjp(a, heads, causal, residual)
    values = values_at(a, seed=n + 10 * heads)
    for name, grad in grads.items():
        # every other array fixed at its value first: the same partial derivatives, faster
        mine = set(a[name].flat)
        partial = L.xreplace({s: v for s, v in values.items() if s not in mine})
        for symbol, entry in zip(a[name].flat, grad.flat):
            want = sp.diff(partial, symbol).xreplace(values).evalf(20)
            got = sp.sympify(entry).xreplace(values).evalf(20)
            assert abs(float(want - got)) < 1e-15 * max(1.0, abs(float(want))), (name, symbol)
    if bias:  # the key bias shifts a query's scores alike: softmax ignores it
        assert all(abs(float(sp.sympify(e).xreplace(values))) < 1e-15 for e in grads["bk"].flat)


def test_masked_weights_are_zero_and_rows_sum_to_one():
    S = symbols("s", (1, 1, T, T))
    P = AttnSoftmax.scalar(S, 1)
    assert all(P[0, 0, i, j] == 0 for i in range(T) for j in range(i + 1, T))
    for i in range(T):
        assert sp.simplify(sp.Add(*P[0, 0, i]) - 1) == 0


# ---------------------------------------------------------------- kernels


def _float(array):
    return np.vectorize(lambda e: float(e), otypes=[float])(array)


def _numbers(rng, shape):
    return rng.normal(size=shape)


@pytest.mark.parametrize("heads, causal", [(1, 0), (1, 1), (2, 0), (2, 1)])
def test_kernels_equal_scalar_forms(heads, causal):
    rng = np.random.default_rng(heads + 2 * causal)
    n, dk = 2, 4
    X, W, b = _numbers(rng, (n, T, D)), _numbers(rng, (dk, D)), _numbers(rng, (dk,))
    Q, Kk, V = (_numbers(rng, (n, T, dk)) for _ in range(3))
    G, Gs = _numbers(rng, (n, T, dk)), _numbers(rng, (n, heads, T, T))
    P = K._attn_softmax(K._attn_scores(Q, Kk, heads), causal)
    pairs = [
        (K._attn_project(X, W, b), Project.scalar(X, W, b)),
        (K._attn_project(X, W, None), Project.scalar(X, W, None)),
        (K._attn_project_grad_input(G, W), ProjectGradInput.scalar(G, W)),
        (K._attn_project_grad_weight(G, X), ProjectGradWeight.scalar(G, X)),
        (K._attn_scores(Q, Kk, heads), Scores.scalar(Q, Kk, heads, dk)),
        (P, AttnSoftmax.scalar(Scores.scalar(Q, Kk, heads, dk), causal)),
        (K._attn_mix(P, V, heads), Mix.scalar(P, V, heads)),
        (K._attn_mix_grad_weights(G, V, heads), MixGradWeights.scalar(G, V, heads)),
        (K._attn_mix_grad_values(P, G, heads), MixGradValues.scalar(P, G, heads)),
        (K._attn_softmax_grad(P, Gs), AttnSoftmaxGrad.scalar(P, Gs)),
        (K._attn_scores_grad_query(Gs, Kk, heads), ScoresGradQuery.scalar(Gs, Kk, heads, dk)),
        (K._attn_scores_grad_key(Gs, Q, heads), ScoresGradKey.scalar(Gs, Q, heads, dk)),
    ]
    for got, want in pairs:
        np.testing.assert_allclose(got, _float(want), rtol=1e-12, atol=1e-13)


def test_kernels_keep_float32_and_leave_inputs_alone():
    rng = np.random.default_rng(0)
    Q, Kk, V = (rng.normal(size=(2, T, 4)).astype(np.float32) for _ in range(3))
    before = [a.copy() for a in (Q, Kk, V)]
    S = K._attn_scores(Q, Kk, 2)
    P = K._attn_softmax(S, 1)
    outs = [S, P, K._attn_mix(P, V, 2), K._attn_softmax_grad(P, S),
            K._attn_scores_grad_query(S, Kk, 2), K._attn_scores_grad_key(S, Q, 2),
            K._attn_mix_grad_values(P, Q, 2), K._attn_mix_grad_weights(Q, V, 2),
            K._attn_project(Q, np.ones((3, 4), np.float32), np.ones(3, np.float32))]
    assert all(o.dtype == np.float32 for o in outs)
    for a, b in zip((Q, Kk, V), before):
        np.testing.assert_array_equal(a, b)


def test_softmax_is_stable_for_large_scores():
    S = np.array([[[[1000.0, -1000.0, 999.0]] * 3]])
    P = K._attn_softmax(S, 1)
    assert np.isfinite(P).all()
    np.testing.assert_allclose(P.sum(-1), 1.0)


def test_numpy_views_print_helper_calls():
    printer = ArrayCodePrinter()
    q, k, p, v, g = sp.symbols("q1 k1 p1 v1 dL_do1")
    assert printer.doprint(Scores(q, k, 2, 4)) == "_attn_scores(q1, k1, 2)"
    assert printer.doprint(AttnSoftmax(sp.Symbol("s1"), 1)) == "_attn_softmax(s1, 1)"
    assert printer.doprint(MixGradValues(p, g, 2)) == "_attn_mix_grad_values(p1, dL_do1, 2)"
    assert printer.doprint(Project(sp.Symbol("X"), sp.Symbol("Wq1"), sp.S.Zero)) \
        == "_attn_project(X, Wq1, None)"
    assert printer.doprint(ProjectGradBias(g)) == "dL_do1.sum(axis=(0, 1))"
    assert {"_attn_scores", "_attn_split", "_attn_mix_grad_values"} <= printer.helpers


# ---------------------------------------------------------------- torch


torch = pytest.importorskip("torch")


def _layer(params, X, heads, causal, residual):
    """The kernels chained as the generated module chains them: (Y, grads given G)."""
    W = params
    q, k, v = (K._attn_project(X, W[f"W{r}"], W[f"b{r}"]) for r in "qkv")
    P = K._attn_softmax(K._attn_scores(q, k, heads), causal)
    Out = K._attn_mix(P, v, heads)
    Y = K._attn_project(Out, W["Wo"], W["bo"]) + (X if residual else 0)

    def backward(G):
        dO = K._attn_project_grad_input(G, W["Wo"])
        dV = K._attn_mix_grad_values(P, dO, heads)
        dS = K._attn_softmax_grad(P, K._attn_mix_grad_weights(dO, v, heads))
        dQ = K._attn_scores_grad_query(dS, k, heads)
        dK = K._attn_scores_grad_key(dS, q, heads)
        out = {"Wo": K._attn_project_grad_weight(G, Out), "bo": G.sum((0, 1))}
        for r, d in (("q", dQ), ("k", dK), ("v", dV)):
            out[f"W{r}"] = K._attn_project_grad_weight(d, X)
            out[f"b{r}"] = d.sum((0, 1))
        out["X"] = sum(K._attn_project_grad_input(d, W[f"W{r}"])
                       for r, d in (("q", dQ), ("k", dK), ("v", dV))) + (G if residual else 0)
        return out

    return Y, backward


@pytest.mark.parametrize("heads, causal, residual", [(1, False, False), (2, True, False),
                                                     (4, True, True)])
def test_torch_agrees_in_float64(heads, causal, residual):
    rng = np.random.default_rng(heads)
    n, t, d, dk = 3, 5, 6, 8
    params = {}
    for r in "qkvo":
        params[f"W{r}"] = rng.normal(size=(d, dk) if r == "o" else (dk, d)) * 0.5
        params[f"b{r}"] = rng.normal(size=d if r == "o" else dk) * 0.5
    X, G = rng.normal(size=(n, t, d)), rng.normal(size=(n, t, d))
    Y, backward = _layer(params, X, heads, causal, residual)
    grads = backward(G)

    p = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    x = torch.tensor(X, requires_grad=True)

    def split(a):
        return a.reshape(n, t, heads, dk // heads).transpose(1, 2)

    q, k, v = (split(x @ p[f"W{r}"].T + p[f"b{r}"]) for r in "qkv")
    o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
    # a hand-written torch attention as a second opinion on the forward pass
    s = q @ k.transpose(-1, -2) / (dk // heads) ** 0.5
    if causal:
        s = s.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
    torch.testing.assert_close(torch.softmax(s, -1) @ v, o, rtol=1e-12, atol=1e-12)
    y = o.transpose(1, 2).reshape(n, t, dk) @ p["Wo"].T + p["bo"] + (x if residual else 0)
    np.testing.assert_allclose(Y, y.detach().numpy(), rtol=1e-12, atol=1e-12)
    (y * torch.tensor(G)).sum().backward()
    for name, grad in grads.items():
        want = x.grad if name == "X" else p[name].grad
        np.testing.assert_allclose(grad, want.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)
