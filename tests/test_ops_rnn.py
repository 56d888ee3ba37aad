"""Proof obligations of the recurrent family: BPTT against sympy.diff of the unrolled loss.

For T = 3 steps and tiny sizes (N = 2, F = 2, U = 2), the network is unrolled
in time here, in scalars, by code that shares nothing with
:mod:`symgrad.ops.recurrent` (a plain loop per sample; truncated BPTT as a
forward pass whose state entering each chunk is a fresh constant symbol), the
loss is ``sum(G * H)``, and ``sympy.diff`` of it with respect to every entry
of X, W_xh, W_hh and b must equal :class:`RnnBackward`'s scalar form, which is
written from the delta recurrence.  Then the NumPy kernels must equal the
scalar forms, torch.nn.RNN must agree with the kernels in float64, and the
time views (last step, rows) must equal their scalar forms.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import sympy as sp

from symgrad.ops import recurrent_kernels as K
from symgrad.ops.recurrent import (
    ACTIVATIONS,
    LastStep,
    LastStepGrad,
    MergeTime,
    RnnBackward,
    RnnForward,
    SplitTime,
)
from symgrad.printing import ArrayCodePrinter

N, T, F, U = 2, 3, 2, 2
FUNCTIONS = {"tanh": sp.tanh, "relu": lambda z: sp.Max(0, z),
             "sigmoid": lambda z: 1 / (1 + sp.exp(-z)), "identity": lambda z: z}


def symbols(name, shape):
    out = np.empty(shape, dtype=object)
    for idx in itertools.product(*map(range, shape)):
        out[idx] = sp.Symbol(f"{name}_{'_'.join(map(str, idx))}", real=True)
    return out


def unrolled(X, Wx, Wh, b, f, chunk):
    """H (object array) and the constants standing for the state at each chunk start."""
    H = np.empty((N, T, U), dtype=object)
    constants = {}
    for n in range(N):
        h = [sp.S.Zero] * U
        for t in range(T):
            if chunk and t and t % chunk == 0:  # stop-gradient: the state is a constant here
                fresh = [sp.Symbol(f"s_{n}_{t}_{u}", real=True) for u in range(U)]
                constants.update(zip(fresh, h))
                h = fresh
            h = [f(sum(X[n, t, i] * Wx[u, i] for i in range(F))
                   + sum(h[v] * Wh[u, v] for v in range(U)) + b[u]) for u in range(U)]
            H[n, t] = h
    return H, constants


@pytest.fixture(scope="module")
def arrays():
    return {"X": symbols("x", (N, T, F)), "Wx": symbols("wx", (U, F)),
            "Wh": symbols("wh", (U, U)), "b": symbols("b", (U,)), "G": symbols("g", (N, T, U))}


def numbers(arrays, seed):
    rng = np.random.default_rng(seed)
    values = {}
    for name, array in arrays.items():
        scale = 0.8 if name in ("Wh",) else 1.0
        for symbol in array.flat:
            values[symbol] = sp.Float(rng.normal(scale=scale), 20)
    return values


def evaluate(expr, values, constants=None):
    """The value of expr; each stop-gradient constant is first added to values (in place)."""
    if constants:  # a stop-gradient constant takes the value of the state it stands for
        for symbol, state in constants.items():  # in time order: a later state reads earlier
            values[symbol] = sp.Float(evaluate(state, values), 20)
    return float(sp.sympify(expr).xreplace(values))


@pytest.mark.parametrize("activation,bptt", [("tanh", 0), ("sigmoid", 0), ("identity", 0),
                                             ("relu", 0), ("tanh", 2), ("sigmoid", 1)])
def test_bptt_equals_sympy_diff_of_the_unrolled_loss(arrays, activation, bptt):
    X, Wx, Wh, b, G = (arrays[k] for k in ("X", "Wx", "Wh", "b", "G"))
    act = ACTIVATIONS[activation]
    H, constants = unrolled(X, Wx, Wh, b, FUNCTIONS[activation], bptt)
    loss = sp.Add(*(G * H).flat)
    claimed = RnnBackward.scalar(G, X, RnnForward.scalar(X, Wx, Wh, b, act), Wx, Wh, b, act,
                                 bptt)
    values = numbers(arrays, seed=len(activation) + bptt)
    with_constants = dict(values)
    evaluate(0, with_constants, constants)
    for wrt, grad in zip((X, Wx, Wh, b), claimed):
        for idx in itertools.product(*map(range, wrt.shape)):
            oracle = evaluate(sp.diff(loss, wrt[idx]), with_constants)
            assert evaluate(grad[idx], values) == pytest.approx(oracle, rel=1e-12, abs=1e-12), \
                (activation, bptt, wrt[idx])


def test_forward_scalar_form_is_the_unrolled_network(arrays):
    X, Wx, Wh, b = (arrays[k] for k in ("X", "Wx", "Wh", "b"))
    H, _ = unrolled(X, Wx, Wh, b, sp.tanh, 0)
    (claimed,) = RnnForward.scalar(X, Wx, Wh, b, 0)
    values = numbers(arrays, seed=1)
    for idx in itertools.product(range(N), range(T), range(U)):
        assert evaluate(claimed[idx], values) == pytest.approx(evaluate(H[idx], values),
                                                               rel=1e-14)


def _as_float(array, values):
    return np.vectorize(lambda e: evaluate(e, values), otypes=[float])(array)


@pytest.mark.parametrize("act", [0, 1, 2, 3])
@pytest.mark.parametrize("bptt", [0, 2])
def test_kernels_equal_the_scalar_forms(arrays, act, bptt):
    X, Wx, Wh, b, G = (arrays[k] for k in ("X", "Wx", "Wh", "b", "G"))
    values = numbers(arrays, seed=10 + act)
    num = {k: _as_float(v, values) for k, v in arrays.items()}
    tape = RnnForward.scalar(X, Wx, Wh, b, act)
    (H,) = K._rnn_forward(num["X"], num["Wx"], num["Wh"], num["b"], act)
    np.testing.assert_allclose(H, _as_float(tape[0], values), rtol=1e-12)
    got = K._rnn_backward(num["G"], num["X"], (H,), num["Wx"], num["Wh"], num["b"], act, bptt)
    want = RnnBackward.scalar(G, X, tape, Wx, Wh, b, act, bptt)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, _as_float(w, values), rtol=1e-11, atol=1e-13)


def test_kernels_without_bias_and_in_float32():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3, 4, 2)).astype(np.float32)
    Wx, Wh = (rng.normal(size=s).astype(np.float32) for s in ((5, 2), (5, 5)))
    (H,) = K._rnn_forward(X, Wx, Wh, None, 0)
    dX, dWx, dWh, db = K._rnn_backward(np.ones_like(H), X, (H,), Wx, Wh, None, 0, 0)
    assert db is None
    assert {a.dtype for a in (H, dX, dWx, dWh)} == {np.dtype(np.float32)}
    X_before = X.copy()
    K._rnn_forward(X, Wx, Wh, None, 2)
    np.testing.assert_array_equal(X, X_before)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_kernels_agree_with_torch_rnn(nonlinearity):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    n, steps, features, units = 3, 7, 4, 5
    X = rng.normal(size=(n, steps, features))
    Wx, Wh, b = rng.normal(size=(units, features)), rng.normal(size=(units, units)) * 0.4, \
        rng.normal(size=units)
    G = rng.normal(size=(n, steps, units))
    rnn = torch.nn.RNN(features, units, nonlinearity=nonlinearity, batch_first=True,
                       dtype=torch.float64)
    weights = {"weight_ih_l0": torch.tensor(Wx, requires_grad=True),
               "weight_hh_l0": torch.tensor(Wh, requires_grad=True),
               "bias_ih_l0": torch.tensor(b, requires_grad=True),
               "bias_hh_l0": torch.zeros(units, dtype=torch.float64)}
    x = torch.tensor(X, requires_grad=True)
    out, _ = torch.func.functional_call(rnn, weights, (x,))
    (out * torch.tensor(G)).sum().backward()
    act = ACTIVATIONS[nonlinearity]
    (H,) = K._rnn_forward(X, Wx, Wh, b, act)
    np.testing.assert_allclose(H, out.detach().numpy(), rtol=1e-12, atol=1e-14)
    dX, dWx, dWh, db = K._rnn_backward(G, X, (H,), Wx, Wh, b, act, 0)
    for got, want in ((dX, x.grad), (dWx, weights["weight_ih_l0"].grad),
                      (dWh, weights["weight_hh_l0"].grad), (db, weights["bias_ih_l0"].grad)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-10, atol=1e-12)


def _run(expr, env):
    """The NumPy view of an expression, evaluated with the module's kernels."""
    code = ArrayCodePrinter().doprint(expr)
    return eval(code, {"np": np, **vars(K)}, env)  # noqa: S307 - our own printed code


def test_time_views_equal_their_scalar_forms():
    rng = np.random.default_rng(2)
    A = rng.normal(size=(N, T, U))
    R = rng.normal(size=(N * T, U))
    Gl = rng.normal(size=(N, U))
    X = rng.normal(size=(N, T, F))
    a, r, g, x = sp.symbols("A R G X")
    env = {"A": A, "R": R, "G": Gl, "X": X}
    cases = [(LastStep(a), LastStep.scalar(A)), (LastStepGrad(g, a), LastStepGrad.scalar(Gl, A)),
             (MergeTime(a), MergeTime.scalar(A)), (SplitTime(r, x), SplitTime.scalar(R, X))]
    for expr, scalar in cases:
        got = _run(expr, env)
        np.testing.assert_array_equal(got, scalar.astype(float))
        assert got.shape == expr.shape_at({"A": A.shape, "R": R.shape, "G": Gl.shape,
                                           "X": X.shape})
    # The VJP pairs: <view(A), B> == <A, view_grad(B)> for the fold and the last step.
    B = rng.normal(size=(N * T, U))
    assert np.vdot(MergeTime.scalar(A).astype(float), B) == pytest.approx(
        np.vdot(A, SplitTime.scalar(B, X).astype(float)))
    assert np.vdot(LastStep.scalar(A).astype(float), Gl) == pytest.approx(
        np.vdot(A, LastStepGrad.scalar(Gl, A).astype(float)))


def test_latex_reads_as_bptt():
    X, Wx, Wh, b, G, tape = sp.symbols("X Wx1 Wh1 b1 dL_da1 tape1")
    text = sp.latex(RnnBackward(G, X, tape, Wx, Wh, b, 0, 4))
    assert r"\delta_t = \left(" in text and r"\delta_{t+1}" in text and "1 - h_t^{2}" in text
    assert r"4 \mid t" in text
    assert r"h_{t-1}" in sp.latex(RnnForward(X, Wx, Wh, b, 0))
