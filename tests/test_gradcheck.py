"""Tests for symgrad.gradcheck: accuracy of each method, kinks, NaN/inf, planted bugs.

Oracles are closed-form derivatives and hand-derived backward passes written
here; nothing is shared with the code under test.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

try:
    import symgrad  # noqa: F401
except ImportError:  # source checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from symgrad.gradcheck import DEFAULTS, METHODS, GradientReport, check_gradient

# --------------------------------------------------------------------------- scalar functions


def _scalar_case(f, df):
    """loss_fn / grad_fn pair for a scalar function of a one-element array."""
    return (lambda p: f(p["x"][0])), (lambda p: {"x": np.array([df(p["x"][0])])})


def _st(x):
    return np.exp(x) / np.sqrt(np.sin(x) ** 3 + np.cos(x) ** 3)


CLASSIC = [
    # name, f, exact derivative (closed form or published value), point
    ("squire_trapp", _st, lambda x: 4.053427893898621, 1.5),
    ("sin_x2", lambda x: np.sin(x) * x**2, lambda x: np.cos(x) * x**2 + 2 * x * np.sin(x), 0.7),
    ("log1p_x2", lambda x: np.log(1 + x**2), lambda x: 2 * x / (1 + x**2), 2.0),
    ("exp_neg", lambda x: np.exp(-x) * 10, lambda x: -10 * np.exp(-x), -3.0),
    ("rational", lambda x: 1 / (1 + x**2), lambda x: -2 * x / (1 + x**2) ** 2, 0.3),
    ("cube_big", lambda x: x**3 - x, lambda x: 3 * x**2 - 1, 40.0),
]
BOUNDS = {"central": 1e-9, "richardson": 1e-12, "complex": 1e-15}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name,f,df,x0", CLASSIC, ids=[c[0] for c in CLASSIC])
def test_classic_accuracy(method, name, f, df, x0):
    loss, grad = _scalar_case(f, df)
    rep = check_gradient(loss, grad, {"x": np.array([x0])}, method=method)
    exact = df(x0)
    rel = abs(rep["x"].numerical[0] - exact) / abs(exact)
    assert rel <= max(BOUNDS[method], 2.3e-16), (method, name, rel)
    assert rep.passed
    assert rep.method_used == method


def test_squire_trapp_value_is_the_published_one():
    # hand check of the oracle itself: d/dx e^x (s^3+c^3)^(-1/2)
    x = 1.5
    s, c = math.sin(x), math.cos(x)
    g = s**3 + c**3
    dg = 3 * s**2 * c - 3 * c**2 * s
    d = math.exp(x) / math.sqrt(g) - 0.5 * math.exp(x) * dg / g**1.5
    assert d == pytest.approx(4.053427893898621, rel=1e-15)


@pytest.mark.parametrize("method", METHODS)
def test_wrong_scalar_derivative_fails(method):
    loss, _ = _scalar_case(_st, None)
    rep = check_gradient(loss, lambda p: {"x": np.array([4.05])}, {"x": np.array([1.5])},
                         method=method)
    assert not rep.passed
    assert rep["x"].mismatch.tolist() == [True]
    assert rep["x"].worst_index == (0,)


# --------------------------------------------------------------------------- complex step validity

NON_ANALYTIC = [
    # name, loss, exact gradient
    ("abs", lambda p: np.sum(np.abs(p["x"]) ** 3), lambda x: 3 * x * np.abs(x)),
    ("norm", lambda p: np.linalg.norm(p["x"]) ** 2 + np.sum(p["x"]), lambda x: 2 * x + 1),
    ("relu_via_abs", lambda p: np.sum(((p["x"] + np.abs(p["x"])) / 2) ** 2),
     lambda x: 2 * np.maximum(x, 0)),
    ("float_cast", lambda p: float(np.sum(p["x"] ** 2)), lambda x: 2 * x),
    ("real_buffer", lambda p: _into_real_buffer(p["x"]), lambda x: 3 * x**2),
    ("conj", lambda p: np.real(np.vdot(p["x"], p["x"])), lambda x: 2 * x),
]


def _into_real_buffer(x):
    buf = np.zeros(x.shape)
    buf[:] = x  # ComplexWarning: imaginary part discarded
    return np.sum(buf**3)


@pytest.mark.parametrize("name,loss,dexact", NON_ANALYTIC, ids=[c[0] for c in NON_ANALYTIC])
def test_complex_step_detects_non_analytic_code(name, loss, dexact):
    x = np.array([0.7, -1.3, 2.1])
    rep = check_gradient(loss, lambda p: {"x": dexact(p["x"])}, {"x": x}, method="complex")
    assert rep.method_used == "central"
    assert any("complex step unusable" in n for n in rep.notes), rep.notes
    assert rep.passed, str(rep)  # the fallback still verifies the correct gradient


def test_complex_step_with_maximum_away_from_kinks_is_fine():
    # numpy orders complex numbers by real part first: np.maximum keeps the imaginary part
    x = np.array([0.7, -1.3, 2.1])
    rep = check_gradient(lambda p: np.sum(np.maximum(p["x"], 0) ** 3),
                         lambda p: {"x": 3 * np.maximum(p["x"], 0) ** 2}, {"x": x},
                         method="complex")
    assert rep.method_used == "complex" and rep.passed and not rep.notes


def test_complex_step_relu_at_kink_is_a_kink():
    x = np.array([0.0, 1.5])
    rep = check_gradient(lambda p: np.sum(np.maximum(p["x"], 0) * 2.0),
                         lambda p: {"x": 2.0 * (p["x"] > 0)}, {"x": x}, method="complex")
    assert rep.passed
    assert rep["x"].kinks.tolist() == [True, False]


# --------------------------------------------------------------------------- MLP with hand backward


def _sig(z):
    return 1 / (1 + np.exp(-z))


def mlp_params(sizes, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    p = {}
    for i, (m, n) in enumerate(itertools.pairwise(sizes), start=1):
        p[f"W{i}"] = rng.normal(0, 1, (n, m)).astype(dtype)
        p[f"b{i}"] = rng.normal(0, 0.5, n).astype(dtype)
    return p


def mlp_data(sizes, n=5, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (n, sizes[0])), rng.uniform(0, 1, (n, sizes[-1]))


def mlp_loss(p, X, T, act="sigmoid", lam=0.0):
    """0.5 * sum (y - t)^2 (+ lam/2 sum W^2); sigmoid hidden and output layers."""
    L = sum(1 for k in p if k.startswith("W"))
    a = X
    for i in range(1, L + 1):
        z = a @ p[f"W{i}"].T + p[f"b{i}"]
        a = _sig(z) if (act == "sigmoid" or i == L) else np.maximum(z, 0)
    out = 0.5 * np.sum((a - T) ** 2)
    if lam:
        out = out + 0.5 * lam * sum(np.sum(p[k] ** 2) for k in p if k.startswith("W"))
    return out


def mlp_backward(p, X, T, act="sigmoid", lam=0.0, bug=None):
    """Hand-derived backward pass; `bug` plants a known mistake."""
    L = sum(1 for k in p if k.startswith("W"))
    acts, zs = [X], []
    for i in range(1, L + 1):
        z = acts[-1] @ p[f"W{i}"].T + p[f"b{i}"]
        zs.append(z)
        acts.append(_sig(z) if (act == "sigmoid" or i == L) else np.maximum(z, 0))

    def dact(i):
        a, z = acts[i], zs[i - 1]
        if act == "relu" and i < L:
            return (z > 0).astype(z.dtype)
        if bug == "wrong_point":
            return _sig(a) * (1 - _sig(a))  # sigma'(a) instead of sigma'(z)
        if bug == "wrong_activation_derivative":
            return 1 - a**2  # tanh' used for a sigmoid
        return a * (1 - a)

    g = {}
    delta = (acts[L] - T) * dact(L)
    per_sample = {}
    for i in range(L, 0, -1):
        g[f"W{i}"] = delta.T @ acts[i - 1] + lam * p[f"W{i}"]
        g[f"b{i}"] = delta.sum(axis=0)
        per_sample[f"b{i}"] = delta.copy()
        if bug == "bias_not_summed" and i == L:
            g[f"b{i}"] = delta[0]
        if i > 1:
            delta = (delta @ p[f"W{i}"]) * dact(i - 1)
    if bug == "weight_decay_missing":
        for k, v in list(g.items()):
            if k.startswith("W"):
                g[k] = v - lam * p[k]
    mut = {
        "transposed": lambda: g.update(W1=g["W1"].T),
        "sign_flipped": lambda: g.update(W2=-g["W2"]),
        "x2": lambda: g.update({k: 2 * v for k, v in g.items()}),
        "x1/2": lambda: g.update(W1=0.5 * g["W1"]),
        "x1/N": lambda: g.update({k: v / X.shape[0] for k, v in g.items()}),
        "swapped": lambda: g.update(b1=g["b2"], b2=g["b1"]),
        "partial_row": lambda: g["W1"].__setitem__((2, slice(None)), 0.1 + g["W1"][2]),
        "zero": lambda: g.update(W2=np.zeros_like(g["W2"])),
    }
    if bug in mut:
        mut[bug]()
    return g, per_sample


SIZES = [3, 4, 2]
SQUARE = [3, 4, 4, 2]  # b1 and b2 have the same shape: a swap is possible

PLANTED = [
    # bug, sizes, lam, parameters that must fail, expected code
    ("transposed", SIZES, 0.0, {"W1"}, "transposed"),
    ("sign_flipped", SIZES, 0.0, {"W2"}, "sign_flipped"),
    ("x2", SIZES, 0.0, {"W1", "b1", "W2", "b2"}, "scaled"),
    ("x1/2", SIZES, 0.0, {"W1"}, "scaled"),
    ("x1/N", SIZES, 0.0, {"W1", "b1", "W2", "b2"}, "scaled"),
    ("swapped", SQUARE, 0.0, {"b1", "b2"}, "swapped"),
    ("bias_not_summed", SIZES, 0.0, {"b2"}, "bias_not_summed"),
    ("weight_decay_missing", SIZES, 0.01, {"W1", "W2"}, "weight_decay_missing"),
    ("wrong_point", SIZES, 0.0, {"W1", "b1", "W2", "b2"}, "wrong_point"),
    ("wrong_activation_derivative", SIZES, 0.0, {"W1", "b1", "W2", "b2"},
     "wrong_activation_derivative"),
    ("partial_row", SIZES, 0.0, {"W1"}, "partial"),
    ("zero", SIZES, 0.0, {"W2"}, "zero"),
]


def _context(p, X, T, lam):
    _, per_sample = mlp_backward(p, X, T, lam=lam)
    alts = {b: mlp_backward(p, X, T, lam=lam, bug=b)[0]
            for b in ("wrong_point", "wrong_activation_derivative")}
    return {"weight_decay": lam, "per_sample": per_sample, "alternatives": alts}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bug,sizes,lam,failing,code", PLANTED, ids=[c[0] for c in PLANTED])
def test_planted_bugs_are_caught_and_named(method, bug, sizes, lam, failing, code):
    p = mlp_params(sizes)
    X, T = mlp_data(sizes)
    rep = check_gradient(lambda q, X, T: mlp_loss(q, X, T, lam=lam),
                         lambda q, X, T: mlp_backward(q, X, T, lam=lam, bug=bug)[0],
                         p, X, T, method=method, batch_size=X.shape[0],
                         context=_context(p, X, T, lam))
    assert not rep.passed
    assert set(rep.failed) == failing, str(rep)
    for name in failing:
        codes = [d.code for d in rep[name].diagnoses]
        assert codes and codes[0] == code, (name, codes, str(rep))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("sizes,lam", [(SIZES, 0.0), (SQUARE, 0.0), (SIZES, 0.03)])
def test_correct_sigmoid_gradient_passes(method, sizes, lam):
    p = mlp_params(sizes, seed=3)
    X, T = mlp_data(sizes, seed=4)
    rep = check_gradient(lambda q: mlp_loss(q, X, T, lam=lam),
                         lambda q: mlp_backward(q, X, T, lam=lam)[0], p, method=method)
    assert rep.passed, str(rep)
    assert all(r.n_kinks == 0 and r.n_wrong == 0 for r in rep.params.values())
    assert rep.method_used == method


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 6), scale=st.sampled_from([0.1, 1.0, 3.0]))
def test_correct_gradient_never_alarms(seed, n, scale):
    p = {k: v * scale for k, v in mlp_params(SIZES, seed=seed).items()}
    X, T = mlp_data(SIZES, n=n, seed=seed + 1)
    rep = check_gradient(lambda q: mlp_loss(q, X, T), lambda q: mlp_backward(q, X, T)[0], p)
    assert rep.passed, str(rep)


def _relu_point_away_from_kinks(seed, margin=0.05):
    """Random ReLU-net point whose hidden pre-activations all satisfy |z| > margin."""
    for s in range(seed, seed + 1000):
        p = mlp_params(SIZES, seed=s)
        X, T = mlp_data(SIZES, seed=s + 7)
        z = X @ p["W1"].T + p["b1"]
        if np.min(np.abs(z)) > margin and np.any(z > 0):
            return p, X, T
    raise AssertionError("no point found")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", [0, 10, 20])
def test_relu_net_away_from_kinks_no_false_alarm(method, seed):
    p, X, T = _relu_point_away_from_kinks(seed * 50)
    rep = check_gradient(lambda q: mlp_loss(q, X, T, act="relu"),
                         lambda q: mlp_backward(q, X, T, act="relu")[0], p, method=method)
    assert rep.passed, str(rep)
    assert sum(r.n_kinks for r in rep.params.values()) == 0
    assert rep.method_used == method  # np.maximum keeps complex steps valid


def _relu_at_kink():
    p = mlp_params(SIZES, seed=5)
    X, T = mlp_data(SIZES, seed=6)
    # hidden unit 1, sample 0: z = W1[1] . X[0] + b1[1] == 0 exactly
    X[0] = [0.5, 0.5, 0.25]
    p["W1"][1] = [1.0, -1.0, 2.0]
    p["b1"][1] = -0.5
    assert (X[0] @ p["W1"][1] + p["b1"][1]) == 0.0
    return p, X, T


@pytest.mark.parametrize("method", METHODS)
def test_relu_exactly_at_kink_is_reported_as_kink(method):
    p, X, T = _relu_at_kink()
    rep = check_gradient(lambda q: mlp_loss(q, X, T, act="relu"),
                         lambda q: mlp_backward(q, X, T, act="relu")[0], p, method=method)
    assert rep.passed, str(rep)
    assert rep["W1"].kinks[1].all() and rep["W1"].kinks.sum() == 3
    assert rep["b1"].kinks.tolist() == [False, True, False, False]
    assert "k" in str(rep) and "kinks" in str(rep)


def test_wrong_gradient_at_kink_still_fails():
    p, X, T = _relu_at_kink()

    def bad(q):
        g = mlp_backward(q, X, T, act="relu")[0]
        g["W1"] = -g["W1"]
        return g

    rep = check_gradient(lambda q: mlp_loss(q, X, T, act="relu"), bad, p)
    assert not rep.passed and rep.failed == ["W1"]


KINKED_SCALARS = [
    # name, f, analytic derivative with a convention at the kink, point
    ("abs_sign0", lambda x: abs(x), lambda x: float(np.sign(x)), 0.0),
    ("relu_half", lambda x: max(x, 0.0), lambda x: 0.5, 0.0),
    ("leaky_left", lambda x: max(x, 0.1 * x), lambda x: 0.1, 0.0),
    ("max_two", lambda x: max(2 * x - 1, 3 - x), lambda x: 2.0, 4 / 3),
    ("relu_straddled", lambda x: max(x, 0.0) * 3, lambda x: 3.0, 1e-7),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name,f,df,x0", KINKED_SCALARS, ids=[c[0] for c in KINKED_SCALARS])
def test_scalar_kinks(method, name, f, df, x0):
    loss, grad = (lambda p: f(float(np.real(p["x"][0])))), (lambda p: {"x": np.array([df(0)])})
    rep = check_gradient(loss, grad, {"x": np.array([x0])}, method=method)
    assert rep.passed, str(rep)
    assert rep["x"].kinks.tolist() == [True]


def test_kink_with_wrong_value_fails():
    rep = check_gradient(lambda p: abs(p["x"][0]), lambda p: {"x": np.array([3.0])},
                         {"x": np.array([0.0])})
    assert not rep.passed and rep["x"].n_kinks == 0


# --------------------------------------------------------------------------- NaN / inf


def test_nan_in_analytic_gradient_is_a_failure():
    p = mlp_params(SIZES)
    X, T = mlp_data(SIZES)

    def g(q):
        out = mlp_backward(q, X, T)[0]
        out["W2"][1, 3] = np.nan
        out["b1"][0] = np.inf
        return out

    rep = check_gradient(lambda q: mlp_loss(q, X, T), g, p)
    assert set(rep.failed) == {"W2", "b1"}
    assert rep["W2"].nonfinite[1, 3] and rep["W2"].nonfinite.sum() == 1
    assert rep["W2"].worst_index == (1, 3)
    assert rep["W2"].diagnoses[0].code == "nan_inf"
    assert "NaN" in rep["W2"].diagnoses[0].message
    assert "N" in rep["W2"].mask_picture()


def test_nan_in_loss_is_a_failure_not_a_kink():
    # log(x) at x=-1: the numerical side is NaN
    rep = check_gradient(lambda p: np.log(p["x"][0]) if p["x"][0] > 0 else np.nan,
                         lambda p: {"x": np.array([1.0])}, {"x": np.array([-1.0])})
    assert not rep.passed
    assert rep["x"].nonfinite.tolist() == [True] and rep["x"].n_kinks == 0


def test_truncation_error_is_not_a_false_alarm():
    # sin(100 x): third derivative 1e6, central difference alone would be off by ~1e-6
    rep = check_gradient(lambda p: np.sin(100 * p["x"][0]),
                         lambda p: {"x": np.array([100 * np.cos(100 * p["x"][0])])},
                         {"x": np.array([0.3])})
    assert rep.passed, str(rep)


# --------------------------------------------------------------------------- float32


def test_float32_params_upcast_when_possible():
    p = mlp_params(SIZES, dtype=np.float32)
    X, T = mlp_data(SIZES)
    X, T = X.astype(np.float32), T.astype(np.float32)
    rep = check_gradient(lambda q: mlp_loss(q, X, T), lambda q: mlp_backward(q, X, T)[0], p)
    assert rep.passed, str(rep)
    assert rep.eval_dtype == "float64" and rep.grad_dtype == "float32"
    assert rep.rtol >= 1e-3
    assert any("float64 copies" in n for n in rep.notes)
    bad = check_gradient(lambda q: mlp_loss(q, X, T),
                         lambda q: mlp_backward(q, X, T, bug="x1/2")[0], p)
    assert bad.failed == ["W1"]


@pytest.mark.parametrize("method", ["central", "richardson"])
def test_float32_only_loss(method):
    p = mlp_params(SIZES, dtype=np.float32)
    X, T = mlp_data(SIZES)
    X, T = X.astype(np.float32), T.astype(np.float32)

    def loss32(q):
        q = {k: np.asarray(v, dtype=np.float32) for k, v in q.items()}
        return np.float32(mlp_loss(q, X, T))

    rep = check_gradient(loss32, lambda q: mlp_backward(q, X, T)[0], p, method=method)
    assert rep.eval_dtype == "float32"
    assert rep.eps == pytest.approx(DEFAULTS[(method, "float32")][0])
    assert rep.passed, str(rep)
    bad = check_gradient(loss32, lambda q: mlp_backward(q, X, T, bug="sign_flipped")[0], p,
                         method=method)
    assert bad.failed == ["W2"]


# --------------------------------------------------------------------------- report


def test_report_str_and_json():
    p = mlp_params(SIZES)
    X, T = mlp_data(SIZES)
    rep = check_gradient(lambda q: mlp_loss(q, X, T),
                         lambda q: mlp_backward(q, X, T, bug="partial_row")[0], p)
    s = str(rep)
    assert "FAILED" in s and "W1" in s and "[partial]" in s
    assert "    ...\n    ...\n    XXX\n    ..." in s  # mask picture: row 2 of W1
    d = rep.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["passed"] is False
    assert d["params"]["W1"]["mismatch_indices"] == [[2, 0], [2, 1], [2, 2]]
    assert d["params"]["W1"]["diagnoses"][0]["code"] == "partial"
    assert isinstance(rep, GradientReport) and not rep


def test_report_json_with_nan():
    rep = check_gradient(lambda p: np.sum(p["w"] ** 2),
                         lambda p: {"w": np.array([np.nan, 2.0])}, {"w": np.array([1.0, 1.0])})
    d = rep.to_dict()
    assert d["params"]["w"]["analytic"][0] == "NaN"
    json.dumps(d, allow_nan=False)


def test_mask_picture_is_capped():
    w = np.random.default_rng(0).normal(size=(30, 50))
    rep = check_gradient(lambda p: np.sum(p["w"] ** 2) / 2,
                         lambda p: {"w": -p["w"]}, {"w": w}, diagnose=False)
    pic = rep["w"].mask_picture()
    lines = pic.splitlines()
    assert len(lines) == 21 and all(len(ln) == 40 for ln in lines[:20])
    assert "showing 20 of 30 rows, 40 of 50 columns" in lines[-1]
    assert "1500 wrong" in lines[-1]


def test_missing_and_misshaped_gradients():
    params = {"a": np.ones((2, 3)), "b": np.ones(3)}
    rep = check_gradient(lambda p: np.sum(p["a"]) + np.sum(p["b"]),
                         lambda p: {"a": np.ones((3, 2))}, params)
    assert set(rep.failed) == {"a", "b"}
    assert any("shape" in n for n in rep["a"].notes)
    assert any("no gradient" in n for n in rep["b"].notes)
    assert rep["a"].diagnoses[0].code in {"transposed", "shape"}


def test_bad_arguments():
    with pytest.raises(ValueError):
        check_gradient(lambda p: 0.0, lambda p: {}, {"x": np.zeros(1)}, method="forward")
    with pytest.raises(TypeError):
        check_gradient(lambda p: 0.0, lambda p: {}, {"x": np.zeros(1, dtype=int)})


def test_params_are_not_modified():
    p = mlp_params(SIZES)
    before = {k: v.copy() for k, v in p.items()}
    X, T = mlp_data(SIZES)
    for m in METHODS:
        check_gradient(lambda q: mlp_loss(q, X, T), lambda q: mlp_backward(q, X, T)[0], p,
                       method=m)
    assert all(np.array_equal(before[k], p[k]) for k in p)


# --------------------------------------------------------------------------- sampling


def test_full_check_by_default_and_counts():
    loss = lambda p: float(np.sum(p["w"] ** 3))  # noqa: E731
    rep = check_gradient(loss, lambda p: {"w": 3 * p["w"] ** 2}, {"w": np.linspace(-1, 1, 50)})
    assert rep.passed and not rep["w"].sampled and rep["w"].n_checked == 50
    assert rep["w"].directions == [] and rep.n_checked == 50
    assert "sampled" not in str(rep)


def test_a_parameter_with_no_entries_checks_nothing():
    rep = check_gradient(lambda p: 0.0, lambda p: {"w": np.zeros(0)}, {"w": np.zeros(0)},
                         directions=3)
    assert rep.n_checked == 0


def test_sampled_mask_picture_marks_unchecked_entries():
    loss = lambda p: float(np.sum(p["w"] ** 2))  # noqa: E731
    bad = lambda p: {"w": -2 * p["w"]}  # noqa: E731
    rep = check_gradient(loss, bad, {"w": np.linspace(0.1, 1, 60).reshape(6, 10)}, entries=5)
    pic = rep["w"].mask_picture()
    assert pic.count("X") == 5 and pic.count("-") == 55
    assert "5 of 60 entries sampled" in str(rep)


def test_directions_replace_one_that_crosses_a_kink():
    # |w| summed: every direction through w = 0 crosses the kink; w is exactly 0 in one entry
    w = np.array([0.0, 0.5, -0.3])
    rep = check_gradient(lambda p: float(np.sum(np.abs(p["w"]))),
                         lambda p: {"w": np.sign(p["w"])}, {"w": w}, directions=3)
    assert rep.passed, str(rep)
    statuses = [d["status"] for d in rep["w"].directions]
    assert "kink" in statuses and set(statuses) <= {"ok", "kink"}
    assert "crossed a kink, not counted" in str(rep)


# --------------------------------------------------------------------------- eval_dtype


def _f32_problem():
    rng = np.random.default_rng(7)
    W = rng.uniform(-1, 1, (3, 4)).astype(np.float32)
    X = rng.uniform(-1, 1, (5, 4)).astype(np.float32)

    def loss(p):  # float32 throughout, as a float32 generated module computes
        return np.sum(np.tanh(X @ p["W"].T) ** 2, dtype=p["W"].dtype)

    def grad(p):
        y = np.tanh(X @ p["W"].T)
        return {"W": ((2 * y * (1 - y**2)).T @ X).astype(p["W"].dtype)}

    return W, loss, grad


def test_eval_dtype_float32_checks_in_float32():
    W, loss, grad = _f32_problem()
    rep = check_gradient(loss, grad, {"W": W}, eval_dtype="float32")
    assert rep.passed and rep.eval_dtype == "float32" and rep.grad_dtype == "float32"
    assert rep.eps == pytest.approx(DEFAULTS[("central", "float32")][0])
    auto = check_gradient(loss, grad, {"W": W})  # loss runs on float64 copies
    assert auto.passed and auto.eval_dtype == "float64"
    forced = check_gradient(loss, grad, {"W": W}, eval_dtype="float64")
    assert forced.passed and forced.eval_dtype == "float64"


@pytest.mark.parametrize("plant", ["largest_x2", "sign_flip"])
def test_eval_dtype_float32_still_finds_a_planted_bug(plant):
    W, loss, grad = _f32_problem()

    def wrong(p):
        g = grad(p)["W"]
        if plant == "sign_flip":
            return {"W": -g}
        g.flat[np.argmax(np.abs(g))] *= 2
        return {"W": g}

    rep = check_gradient(loss, wrong, {"W": W}, eval_dtype="float32")
    assert not rep.passed and rep.eval_dtype == "float32"
    if plant == "largest_x2":
        assert rep["W"].n_wrong == 1
    else:  # entries far below the float32 resolution may pass even flipped
        assert rep["W"].n_wrong >= W.size // 2


def test_eval_dtype_is_validated():
    W, loss, grad = _f32_problem()
    with pytest.raises(ValueError, match="eval_dtype"):
        check_gradient(loss, grad, {"W": W}, eval_dtype="float16")
