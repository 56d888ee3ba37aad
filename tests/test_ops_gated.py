"""Proof obligations of the gated recurrent family (symgrad.ops.gated and symgrad.ops.gated_kernels).

Table-driven, like tests/test_ops_conv.py: for every cell (LSTM, GRU) and truncation
(a) SymPy differentiates L = sum(G * H), H the forward scalar form, with respect to every
    entry of X, Wx, Wh and b, and the result equals the BPTT class's scalar form, written
    from the textbook delta recurrences.  To keep SymPy fast on a recurrence of depth 3,
    every other entry (and G) is a random rational held as a 60-digit Float *before*
    differentiating (a partial derivative does not depend on when the other variables get
    their values), so the expression is univariate; both sides are compared at the point to
    1e-45.  Truncation (bptt = k): the forward pass is run chunk by chunk, the state entering
    a chunk replaced by its value (a constant), which is the definition the BPTT class claims;
(b) the NumPy kernels, run from copies of their source made as the code generator makes
    them, equal the scalar forms evaluated numerically, and keep float32;
(c) torch.nn.LSTM / torch.nn.GRU (weights copied in, bias_hh = 0) agree with the forward
    kernels and autograd with the backward kernels to 1e-10, truncation included (the state
    detached between chunks);
(d) mutants of the kernels (recurrent error dropped, cell error not carried, weight
    gradient of the last step only) are caught by the checks of (b) and (c).
"""

from __future__ import annotations

import inspect
import random

import numpy as np
import pytest
import sympy as sp

from symgrad.ops import gated_kernels as kernels
from symgrad.ops.gated import GruBackward, GruForward, LstmBackward, LstmForward, Tanh
from symgrad.printing import ArrayCodePrinter

CELLS = {"lstm": (LstmForward, LstmBackward, 4), "gru": (GruForward, GruBackward, 3)}
KERNELS = {"lstm": (kernels._lstm_forward, kernels._lstm_backward),
           "gru": (kernels._gru_forward, kernels._gru_backward)}
NAMES = ("X", "Wx", "Wh", "b")
DIGITS = 60

# (cell, N, T, F, U, bptt).  Proofs at depth T = 3 with N = 1 (samples are independent copies;
# the batch sums are covered by (b) and (c)) and F = 1 for full BPTT, to stay within seconds.
PROOFS = [("lstm", 1, 3, 1, 2, 0), ("lstm", 1, 3, 2, 2, 2),
          ("gru", 1, 3, 1, 2, 0), ("gru", 1, 3, 2, 2, 2)]
NUMERIC = [("lstm", 2, 4, 3, 3, 0), ("lstm", 3, 5, 2, 3, 2), ("lstm", 2, 4, 2, 2, 1),
           ("gru", 2, 4, 3, 3, 0), ("gru", 3, 5, 2, 3, 2), ("gru", 2, 4, 2, 2, 1)]
TORCH = [("lstm", 4, 7, 5, 6, 0), ("lstm", 3, 7, 4, 5, 3), ("lstm", 2, 6, 3, 4, 1),
         ("gru", 4, 7, 5, 6, 0), ("gru", 3, 7, 4, 5, 3), ("gru", 2, 6, 3, 4, 1)]


def case_id(c):
    return "{}_N{}T{}F{}U{}_bptt{}".format(*c)


def shapes(cell, N, T, F, U):
    k = CELLS[cell][2]
    return {"X": (N, T, F), "Wx": (k * U, F), "Wh": (k * U, U), "b": (k * U,), "G": (N, T, U)}


def random_floats(shape, rng):
    """An object array of random rationals in [-1.5, 1.5] as 60-digit SymPy Floats."""
    size = int(np.prod(shape))
    values = [sp.Float(sp.Rational(rng.randrange(-21, 22), 14), DIGITS) for _ in range(size)]
    return np.array(values, dtype=object).reshape(shape)


def chunked_forward(cell, X, Wx, Wh, b, bptt, detach):
    """H from the forward scalar form, the state entering each chunk of bptt steps replaced
    by ``detach(state)`` (bptt = 0: one chunk)."""
    forward = CELLS[cell][0]
    T = X.shape[1]
    size = bptt or T
    H, state = [], None
    for start in range(0, T, size):
        tape = forward.scalar(X[:, start:start + size], Wx, Wh, b, state=state)
        H.append(tape[0])
        if cell == "lstm":
            state = (detach(tape[0][:, -1]), detach(tape[2][:, -1]))
        else:
            state = detach(tape[0][:, -1])
    return np.concatenate(H, axis=1)


# ------------------------------------------------------------------ (a) proofs


@pytest.mark.parametrize("c", PROOFS, ids=case_id)
def test_bptt_is_the_derivative(c):
    cell, N, T, F, U, bptt = c
    rng = random.Random(str(c))
    point = {name: random_floats(shape, rng) for name, shape in shapes(cell, N, T, F, U).items()}
    claimed = CELLS[cell][1].scalar(point["G"], *(point[n] for n in NAMES), bptt)
    theta = sp.Symbol("theta")
    for name, grad in zip(NAMES, claimed):
        for index in np.ndindex(*point[name].shape):
            arrays = {n: point[n].copy() for n in NAMES}
            value = arrays[name][index]
            arrays[name][index] = theta

            def detach(state, value=value):
                return np.vectorize(lambda e: sp.sympify(e).xreplace({theta: value}),
                                    otypes=[object])(state)

            H = chunked_forward(cell, *(arrays[n] for n in NAMES), bptt, detach)
            L = sp.Add(*(point["G"] * H).ravel())
            derived = sp.diff(L, theta).xreplace({theta: value})
            assert not derived.free_symbols
            assert abs(sp.N(derived - grad[index], DIGITS)) < 1e-45, (name, index)


def test_tanh_atoms_differentiate_as_tanh():
    u = sp.Symbol("u")
    assert sp.diff(Tanh(u), u) == 1 - Tanh(u) ** 2
    assert Tanh(sp.Float(0.5)) == sp.tanh(sp.Float(0.5))
    assert abs(sp.N(Tanh(u).xreplace({u: sp.Rational(1, 3)})) - np.tanh(1 / 3)) < 1e-15


# ------------------------------------------------------------------ (b) kernels = scalar forms


def helpers(name):
    """The helpers of one expression class, executed from copies of their source."""
    namespace = {"np": np}
    for helper in kernels.HELPERS[name]:
        exec(inspect.getsource(getattr(kernels, helper)), namespace)
    return namespace


def run(expr, **arrays):
    """Evaluate the printed NumPy view of ``expr`` with self-contained helper copies."""
    printer = ArrayCodePrinter()
    code = printer.doprint(expr)
    assert printer.helpers == set(kernels.HELPERS[type(expr).__name__])
    return eval(code, {**helpers(type(expr).__name__), **arrays})


def as_float(array):
    return np.array(array.tolist(), dtype=float)


def random_arrays(cell, N, T, F, U, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(dtype)
            for name, shape in shapes(cell, N, T, F, U).items()}


def exprs(cell, bptt):
    x, wx, wh, b, g, tape = sp.symbols("X Wx1 Wh1 b1 delta1 tape1")
    forward, backward = CELLS[cell][:2]
    return forward(x, wx, wh, b), backward(g, x, tape, wx, wh, b, bptt)


def run_cell(cell, bptt, arrays, bias=True):
    forward, backward = exprs(cell, bptt)
    if not bias:
        forward = type(forward)(*forward.args[:3], sp.S.Zero)
        backward = type(backward)(*backward.args[:5], sp.S.Zero, bptt)
    names = {"X": arrays["X"], "Wx1": arrays["Wx"], "Wh1": arrays["Wh"], "b1": arrays["b"],
             "delta1": arrays["G"]}
    tape = run(forward, **names)
    return tape, run(backward, **names, tape1=tape)


@pytest.mark.parametrize("c", NUMERIC, ids=case_id)
def test_kernels_equal_the_scalar_forms(c):
    cell, N, T, F, U, bptt = c
    arrays = random_arrays(cell, N, T, F, U, seed=sum(c[1:]))
    objects = {k: v.astype(object) for k, v in arrays.items()}
    forward, backward = exprs(cell, bptt)
    tape, grads = run_cell(cell, bptt, arrays)
    values = {sp.Symbol("X"): objects["X"], sp.Symbol("Wx1"): objects["Wx"],
              sp.Symbol("Wh1"): objects["Wh"], sp.Symbol("b1"): objects["b"],
              sp.Symbol("delta1"): objects["G"]}
    scalar_tape = forward.scalar_at(values)
    scalar_grads = backward.scalar_at(values)
    sizes = {s: v.shape for s, v in values.items()}
    assert [t.shape for t in tape] == list(forward.shape_at(sizes))
    assert [g.shape for g in grads] == list(backward.shape_at(sizes))
    for mine, scalar in zip(list(tape) + list(grads), list(scalar_tape) + list(scalar_grads)):
        assert mine.shape == scalar.shape
        np.testing.assert_allclose(mine, as_float(scalar), rtol=1e-12, atol=1e-12)
    single_tape, single = run_cell(cell, bptt, {k: v.astype(np.float32) for k, v in arrays.items()})
    for s, d in zip(list(single_tape) + list(single), list(tape) + list(grads)):
        assert s.dtype == np.float32
        np.testing.assert_allclose(s, d, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_no_bias(cell):
    arrays = random_arrays(cell, 2, 3, 2, 2, seed=9)
    no_b = dict(arrays, b=np.zeros_like(arrays["b"]))
    tape, grads = run_cell(cell, 0, no_b, bias=False)
    tape0, grads0 = run_cell(cell, 0, no_b)
    np.testing.assert_array_equal(tape[0], tape0[0])
    assert grads[3] is None
    for g, g0 in zip(grads[:3], grads0[:3]):
        np.testing.assert_array_equal(g, g0)
    objects = {k: v.astype(object) for k, v in no_b.items()}
    scalar = CELLS[cell][1].scalar(objects["G"], objects["X"], objects["Wx"], objects["Wh"],
                                   None, 0)
    assert scalar[3] is None
    np.testing.assert_allclose(as_float(scalar[2]), grads[2], rtol=1e-12, atol=1e-12)


def test_kernels_neither_alias_nor_change_their_inputs():
    for cell, (forward, backward) in KERNELS.items():
        arrays = random_arrays(cell, 3, 4, 2, 3, seed=11)
        args = [arrays[n] for n in NAMES]
        before = {k: v.copy() for k, v in arrays.items()}
        tape = forward(*args)
        saved = [t.copy() for t in tape]
        grads = backward(arrays["G"], arrays["X"], tape, *args[1:], 2)
        for out in list(tape) + list(grads):
            for arr in arrays.values():
                assert not np.shares_memory(out, arr), cell
        for k, v in arrays.items():
            np.testing.assert_array_equal(v, before[k])
        for t, s in zip(tape, saved):
            np.testing.assert_array_equal(t, s)


def test_shapes_reject_what_does_not_fit():
    with pytest.raises(ValueError):
        LstmForward.shape((2, 3, 4), (12, 4), (12, 4), (12,))  # 3 gate blocks of 4, not 4
    with pytest.raises(ValueError):
        GruForward.shape((2, 3, 4), (9, 5), (9, 3), (9,))  # input width differs
    with pytest.raises(ValueError):
        LstmBackward.shape((2, 3, 4), (2, 3, 4), (12, 4), (12, 3), (12,), 0)
    assert LstmForward.shape((2, 3, 4), (12, 4), (12, 3), (12,)) == \
        ((2, 3, 3), (2, 3, 12), (2, 3, 3))
    assert GruBackward.shape((2, 3, 3), (2, 3, 4), (9, 4), (9, 3), None, 2) == \
        ((2, 3, 4), (9, 4), (9, 3), None)


# ------------------------------------------------------------------ (c) PyTorch as oracle


def torch_cell(cell, arrays, bptt):
    """H and the gradients of sum(G * H) by PyTorch, the state detached between chunks."""
    torch = pytest.importorskip("torch")
    X, Wx, Wh, b, G = (arrays[n] for n in ("X", "Wx", "Wh", "b", "G"))
    module = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(
        X.shape[2], Wh.shape[1], batch_first=True).double()
    with torch.no_grad():
        module.weight_ih_l0.copy_(torch.tensor(Wx))
        module.weight_hh_l0.copy_(torch.tensor(Wh))
        module.bias_ih_l0.copy_(torch.tensor(b))
        module.bias_hh_l0.zero_()
    Xt = torch.tensor(X, requires_grad=True)
    T = X.shape[1]
    size = bptt or T
    outs, state = [], None
    for start in range(0, T, size):
        out, state = module(Xt[:, start:start + size], state)
        outs.append(out)
        state = tuple(s.detach() for s in state) if cell == "lstm" else state.detach()
    H = torch.cat(outs, dim=1)
    H.backward(torch.tensor(G))
    grads = (Xt.grad, module.weight_ih_l0.grad, module.weight_hh_l0.grad, module.bias_ih_l0.grad)
    return H.detach().numpy(), [g.numpy() for g in grads]


def assert_agree(cell, bptt, arrays, forward, backward):
    H, expected = torch_cell(cell, arrays, bptt)
    args = [arrays[n] for n in NAMES]
    tape = forward(*args)
    np.testing.assert_allclose(tape[0], H, rtol=1e-10, atol=1e-10)
    grads = backward(arrays["G"], arrays["X"], tape, *args[1:], bptt)
    for name, mine, theirs in zip(NAMES, grads, expected):
        np.testing.assert_allclose(mine, theirs, rtol=1e-10, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("c", TORCH, ids=case_id)
def test_kernels_agree_with_torch(c):
    cell, N, T, F, U, bptt = c
    assert_agree(cell, bptt, random_arrays(cell, N, T, F, U, seed=sum(c[1:]) + 100),
                 *KERNELS[cell])


# ------------------------------------------------------------------ (d) mutants


MUTANTS = [  # (cell, kernel, text, replacement): bugs the checks above must catch
    ("lstm", "_lstm_backward", "dh = d @ Wh", "dh = np.zeros_like(dh)"),   # no recurrent error
    ("lstm", "_lstm_backward", "dc *= f", "dc = np.zeros_like(dc)"),         # cell error dropped
    ("lstm", "_lstm_backward", "D[1:].reshape(-1, 4 * units).T @ H[:-1].reshape(-1, units)",
     "D[-1].T @ H[-2]"),                                                      # dWh of one step
    ("gru", "_gru_backward", "delta = delta * z + Dh[t] @ Wh", "delta = delta * z"),
    ("gru", "_gru_backward", "rows.T @ X.transpose(1, 0, 2).reshape(steps * n, X.shape[2])",
     "Dx[-1].T @ X[:, -1]"),                                                  # dWx of one step
    ("gru", "_gru_forward", "h += z * H[t - 1]", "h += z"),
]


def mutant(name, text, replacement):
    namespace = {"np": np}
    for helper in ("_gate_sigmoid", "_lstm_forward", "_lstm_backward", "_gru_forward",
                   "_gru_backward"):
        source = inspect.getsource(getattr(kernels, helper))
        if helper == name:
            assert source.count(text) == 1, (name, text)
            source = source.replace(text, replacement)
        exec(source, namespace)
    return namespace["_" + name[1:].split("_")[0] + "_forward"], \
        namespace["_" + name[1:].split("_")[0] + "_backward"]


@pytest.mark.parametrize("cell, name, text, replacement", MUTANTS)
def test_mutants_are_caught(cell, name, text, replacement):
    forward, backward = mutant(name, text, replacement)
    arrays = random_arrays(cell, 3, 5, 2, 3, seed=13)
    with pytest.raises(AssertionError):
        assert_agree(cell, 0, arrays, forward, backward)


# ------------------------------------------------------------------ views


def test_latex_views_and_equations():
    from symgrad.latex import DerivationLatexPrinter

    printer = DerivationLatexPrinter(names={"Wx1": "W_x", "Wh1": "W_h", "b1": "b",
                                            "delta1": r"\delta"})
    (lf, lb), (_, gb) = exprs("lstm", 0), exprs("gru", 5)
    assert printer.doprint(lf) == r"\operatorname{LSTM}\left(X;\, W_x, W_h, b\right)"
    assert printer.doprint(lb) == \
        r"\operatorname{BPTT}_{\mathrm{LSTM}}\left(\delta, X;\, W_x, W_h, b\right)"
    assert printer.doprint(gb) == \
        r"\operatorname{BPTT}_{\mathrm{GRU},\,k=5}\left(\delta, X;\, W_x, W_h, b\right)"
    lstm = dict(LstmBackward.equations())
    assert lstm[r"\delta^o_t"] == r"\delta_t \odot \tanh(c_t) \odot o_t \odot (1 - o_t)"
    assert lstm[r"\frac{\partial L}{\partial W_h}"] == r"\sum_t {\delta^{a}_t}^{\top} h_{t-1}"
    gru = dict(GruBackward.equations(3))
    assert {r"\delta^z_t", r"\delta^n_t", r"\delta^r_t"} <= set(gru)
    assert any(r"\pmod{3}" in rhs for rhs in gru.values())
