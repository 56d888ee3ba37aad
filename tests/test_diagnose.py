"""Tests for symgrad.diagnose: each hypothesis of the table on hand-made arrays,
and planted mistakes in a hand-written 3-4-2 sigmoid network's backward pass."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

try:
    import symgrad  # noqa: F401
except ImportError:  # source checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from symgrad import diagnose as dmod
from symgrad.diagnose import HYPOTHESES, Diagnosis, diagnose, hypothesis

W = np.array([[0.5, -1.25, 2.0], [3.0, 0.75, -0.5]])  # 2x3, hand-picked
S = np.array([[1.0, 2.0, -1.0], [0.5, -3.0, 4.0], [2.5, 0.25, 1.5]])  # square, not symmetric
SYM = S + S.T
B = np.array([0.5, -2.0, 1.0, 0.25])
ROWS = np.array([[0.1, -0.5, 0.2, 0.05], [0.3, -1.0, 0.4, 0.1], [0.1, -0.5, 0.4, 0.1]])  # sum = B


def codes(out, name):
    return [d.code for d in out[name]]


# (id, expected, got, kwargs, name, first code, substring of the first message)
CASES = [
    ("transposed_rect", {"W": W}, {"W": W.T}, {}, "W", "transposed", "shape (3, 2)"),
    ("transposed_square", {"W": S}, {"W": S.T}, {}, "W", "transposed", "rows and columns"),
    ("transposed_sign", {"W": S}, {"W": -S.T}, {}, "W", "transposed", "sign-flipped"),
    ("transposed_scaled", {"W": W}, {"W": 3 * W.T}, {}, "W", "transposed", "scaled by 3"),
    ("sign", {"W": W}, {"W": -W}, {}, "W", "sign_flipped", "wrong sign"),
    ("x2", {"W": W}, {"W": 2 * W}, {}, "W", "scaled", "(x2)"),
    ("half", {"W": W}, {"W": W / 2}, {}, "W", "scaled", "(x1/2)"),
    ("one_over_n", {"W": W}, {"W": W / 16}, {"batch_size": 16}, "W", "scaled",
     "mean versus sum over the batch"),
    ("times_n", {"W": W}, {"W": W * 16}, {"batch_size": 16}, "W", "scaled", "sum versus mean"),
    ("general_c", {"W": W}, {"W": 0.37 * W}, {}, "W", "scaled", "0.37"),
    ("minus_two", {"W": W}, {"W": -2 * W}, {}, "W", "scaled", "wrong sign and a factor 2"),
    ("zero", {"W": W}, {"W": np.zeros_like(W)}, {}, "W", "zero", "identically zero"),
    ("nan", {"W": W}, {"W": np.where(W > 2, np.nan, W)}, {}, "W", "nan_inf",
     "1 NaN and 0 inf entries (first at index (1, 0))"),
    ("inf", {"b": B}, {"b": np.array([0.5, -np.inf, 1.0, np.inf])}, {}, "b", "nan_inf",
     "0 NaN and 2 inf entries (first at index 1)"),
    ("reference_nan", {"b": np.array([np.nan, 1.0])}, {"b": np.array([1.0, 1.0])}, {}, "b",
     "nan_inf", "reference gradient"),
    ("swapped", {"W1": S, "W2": 2 * S.T + 1}, {"W1": 2 * S.T + 1, "W2": S}, {}, "W1",
     "swapped", "gradient of W2"),
    ("swapped_transposed", {"A": W, "B": S[:, :2]}, {"A": S[:, :2].T, "B": S[:, :2]}, {}, "A",
     "swapped", "gradient of B (transposed)"),
    ("bias_one_sample", {"b": B}, {"b": ROWS[2]}, {"context": {"per_sample": {"b": ROWS}}},
     "b", "bias_not_summed", "sample 2 only"),
    ("bias_mean_rows", {"b": B}, {"b": B / 3}, {"context": {"per_sample": {"b": ROWS}}},
     "b", "bias_not_summed", "mean instead of the sum"),
    ("bias_unsummed_shape", {"b": B}, {"b": ROWS}, {}, "b", "bias_not_summed",
     "per-sample rows of shape (3, 4)"),
    ("bias_mean_n", {"W": W, "b": B}, {"W": W, "b": B / 4}, {"batch_size": 4}, "b",
     "bias_not_summed", "mean instead of the sum over the batch (x1/N, N=4)"),
    ("wd_missing", {"W": W + 0.1 * S[:2]}, {"W": W}, {"context": {"params": {"W": S[:2]},
                                                                   "weight_decay": 0.1}},
     "W", "weight_decay_missing", "lambda=0.1"),
    ("wd_extra", {"W": W}, {"W": W + 0.1 * S[:2]}, {"context": {"params": {"W": S[:2]},
                                                                 "weight_decay": 0.1}},
     "W", "weight_decay_extra", "counted twice"),
    ("wd_halved", {"W": W + 0.1 * S[:2]}, {"W": W + 0.05 * S[:2]},
     {"context": {"params": {"W": S[:2]}, "weight_decay": {"W": 0.1}}}, "W",
     "weight_decay_wrong", "coefficient is 0.05 instead of lambda=0.1"),
    ("wd_unknown_lambda", {"W": W}, {"W": W - 0.003 * S[:2]},
     {"context": {"params": {"W": S[:2]}}}, "W", "weight_decay_missing", "0.003*W"),
    ("partial_row", {"W": S}, {"W": S + np.array([[0, 0, 0], [0, 0, 0], [1, 2, 3.0]])}, {},
     "W", "partial", "only row 2 differs (unit 2)"),
    ("partial_col", {"W": W}, {"W": W * np.array([1, -1, 1.0])}, {}, "W", "partial",
     "only column 1 differs (input 1); there it is sign-flipped"),
    ("partial_col_in_out", {"W": W}, {"W": W * np.array([1, 1, 0.0])},
     {"context": {"layout": "in_out"}}, "W", "partial",
     "only column 2 differs (unit 2); there it is zero"),
    ("partial_rows_scaled", {"W": S}, {"W": S * np.array([[2.0], [1.0], [2.0]])}, {}, "W",
     "partial", "only rows 0, 2 differ (units 0, 2); there it is scaled by 2"),
    ("partial_entries", {"W": S}, {"W": S + np.diag([1.0, 1.0, 1.0])}, {}, "W", "partial",
     "only entries (0, 0), (1, 1), (2, 2) differ"),
    ("partial_one_entry", {"W": S}, {"W": S + np.eye(3)[1:2].T @ np.eye(3)[2:3]}, {}, "W",
     "partial", "only entry (1, 2) differs; got 5 instead of 4"),
    ("partial_1d", {"b": B}, {"b": B * np.array([1, 1, 1, 5.0])}, {}, "b", "partial",
     "only entry 3 differs (unit 3); got 1.25 instead of 0.25"),
    ("shape_reshape", {"b": B}, {"b": B.reshape(4, 1)}, {}, "b", "shape",
     "same values, wrong shape"),
    ("unknown", {"W": W}, {"W": W + np.array([[1.0, -2.0, 0.5], [0.25, 3.0, -1.0]])}, {}, "W",
     "unknown", "relative error"),
    ("missing", {"W": W, "b": B}, {"W": W}, {}, "b", "missing", "no gradient"),
]


@pytest.mark.parametrize("cid,expected,got,kwargs,name,code,text", CASES,
                         ids=[c[0] for c in CASES])
def test_hypothesis_table(cid, expected, got, kwargs, name, code, text):
    out = diagnose(expected, got, **kwargs)
    assert name in out
    first = out[name][0]
    assert first.code == code, (cid, codes(out, name), [d.message for d in out[name]])
    assert text in first.message, first.message
    assert first.message.startswith(f"{name}: ")
    json.dumps({k: [d.to_dict() for d in v] for k, v in out.items()}, allow_nan=False)


def test_exact_patterns_are_not_also_reported_as_scaled_or_unknown():
    assert codes(diagnose({"W": W}, {"W": -W}), "W") == ["sign_flipped"]
    assert codes(diagnose({"W": W}, {"W": W.T}), "W") == ["transposed"]
    assert codes(diagnose({"W": W}, {"W": np.zeros_like(W)}), "W") == ["zero"]


def test_symmetric_transpose_is_indistinguishable_and_passes():
    assert diagnose({"W": SYM}, {"W": SYM.T}) == {}


def test_agreeing_parameters_are_absent():
    out = diagnose({"W": W, "b": B}, {"W": W * (1 + 1e-9), "b": -B})
    assert list(out) == ["b"]


def test_mean_over_batch_everywhere_is_scaled_not_bias():
    e = {"W": W, "b": B}
    out = diagnose(e, {"W": W / 4, "b": B / 4}, batch_size=4)
    assert codes(out, "W")[0] == "scaled" and codes(out, "b")[0] == "scaled"


def test_alternatives_with_caller_messages():
    alt = {"wrong_point": {"W": W + 1}, "wrong_activation_derivative": {"W": 2 * W - 1},
           "custom_bug": {"W": W ** 2}}
    msgs = {"custom_bug": "softmax Jacobian diagonal only"}
    for key, got in [("wrong_point", W + 1), ("wrong_activation_derivative", 2 * W - 1),
                     ("custom_bug", W ** 2)]:
        out = diagnose({"W": W}, {"W": got},
                       context={"alternatives": alt, "alternative_messages": msgs})
        assert codes(out, "W")[0] == key
    out = diagnose({"W": W}, {"W": W ** 2},
                   context={"alternatives": alt, "alternative_messages": msgs})
    assert out["W"][0].message == "W: softmax Jacobian diagonal only"
    out = diagnose({"W": W}, {"W": W + 1}, context={"alternatives": alt})
    assert "sigma'(a) instead of sigma'(z)" in out["W"][0].message


def test_float32_tolerance():
    e = {"W": S @ S}
    assert diagnose(e, {"W": (S @ S).astype(np.float32)}) == {}
    assert codes(diagnose(e, {"W": (2 * S @ S).astype(np.float32)}), "W") == ["scaled"]
    # the float64 default is tight: a 1e-5 relative deviation is a failure there
    assert "W" in diagnose(e, {"W": S @ S * (1 + 1e-5)})


def test_table_is_readable_and_extensible():
    order = [h.code for h in HYPOTHESES]
    assert order[:2] == ["nan_inf", "zero"] and order[-1] == "unknown"
    assert order.index("transposed") < order.index("scaled") < order.index("partial")
    assert all(h.message and h.test.__doc__ for h in HYPOTHESES)

    try:
        @hypothesis("off_by_one_row", "{name}: rows shifted by one")
        def _shifted(c):
            """got rows are expected rows rolled by one."""
            return {} if c.same_shape and c.close(np.roll(c.e, 1, axis=0)) else None

        # appended after 'unknown': move it before the fallbacks to make it speak
        HYPOTHESES.insert(order.index("partial"), HYPOTHESES.pop())
        out = diagnose({"W": S}, {"W": np.roll(S, 1, axis=0)})
        assert codes(out, "W") == ["off_by_one_row"]
    finally:
        HYPOTHESES[:] = [h for h in HYPOTHESES if h.code != "off_by_one_row"]
    assert [h.code for h in HYPOTHESES] == order


def test_diagnosis_dataclass():
    d = Diagnosis("scaled", "W: x2", {"factor": np.float64(2.0)})
    assert d.to_dict() == {"code": "scaled", "message": "W: x2", "detail": {"factor": 2.0}}
    assert dmod.Diagnosis is Diagnosis


# --------------------------------------------------------------------------- planted bugs


def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def _net(seed=0, n=6, lam=0.0):
    rng = np.random.default_rng(seed)
    p = {"W1": rng.normal(size=(4, 3)), "b1": rng.normal(size=4),
         "W2": rng.normal(size=(2, 4)), "b2": rng.normal(size=2)}
    return p, rng.normal(size=(n, 3)), rng.uniform(size=(n, 2))


def _backward(p, X, T, lam=0.0, bug=None):
    """Hand-derived gradient of 0.5*sum((y-t)^2) + lam/2*sum(W^2), 3-4-2 sigmoid net."""
    z1 = X @ p["W1"].T + p["b1"]
    a1 = _sig(z1)
    z2 = a1 @ p["W2"].T + p["b2"]
    a2 = _sig(z2)
    if bug == "wrong_point":
        d2, d1 = _sig(a2) * (1 - _sig(a2)), _sig(a1) * (1 - _sig(a1))
    elif bug == "wrong_activation_derivative":
        d2, d1 = 1 - a2 ** 2, 1 - a1 ** 2
    else:
        d2, d1 = a2 * (1 - a2), a1 * (1 - a1)
    delta2 = (a2 - T) * d2
    delta1 = (delta2 @ p["W2"]) * d1
    g = {"W1": delta1.T @ X, "b1": delta1.sum(0), "W2": delta2.T @ a1, "b2": delta2.sum(0)}
    if bug != "weight_decay_missing":
        g["W1"] = g["W1"] + lam * p["W1"]
        g["W2"] = g["W2"] + lam * p["W2"]
    per_sample = {"b1": delta1, "b2": delta2}
    n = X.shape[0]
    planted = {
        "transposed": {"W2": g["W2"].T},
        "sign_flipped": {"W1": -g["W1"]},
        "scaled_x2": {"W2": 2 * g["W2"], "b2": 2 * g["b2"]},
        "scaled_half": {"b1": g["b1"] / 2},
        "mean_not_sum": {k: v / n for k, v in g.items()},
        "bias_not_summed": {"b1": delta1[-1]},
        "bias_mean": {"b2": delta2.mean(0)},
        "partial": {"W1": np.vstack([g["W1"][:2], -g["W1"][2:3], g["W1"][3:]])},
    }
    g.update(planted.get(bug, {}))
    return g, per_sample


PLANTED = [
    # bug, lam, affected parameters, code
    ("transposed", 0.0, {"W2"}, "transposed"),
    ("sign_flipped", 0.0, {"W1"}, "sign_flipped"),
    ("scaled_x2", 0.0, {"W2", "b2"}, "scaled"),
    ("scaled_half", 0.0, {"b1"}, "scaled"),
    ("mean_not_sum", 0.0, {"W1", "b1", "W2", "b2"}, "scaled"),
    ("bias_not_summed", 0.0, {"b1"}, "bias_not_summed"),
    ("bias_mean", 0.0, {"b2"}, "bias_not_summed"),
    ("weight_decay_missing", 1e-3, {"W1", "W2"}, "weight_decay_missing"),
    ("wrong_point", 0.0, {"W1", "b1", "W2", "b2"}, "wrong_point"),
    ("wrong_activation_derivative", 0.0, {"W1", "b1", "W2", "b2"},
     "wrong_activation_derivative"),
    ("partial", 0.0, {"W1"}, "partial"),
]


@pytest.mark.parametrize("bug,lam,affected,code", PLANTED, ids=[c[0] for c in PLANTED])
@pytest.mark.parametrize("seed", [0, 1])
def test_planted_network_bugs_are_named(bug, lam, affected, code, seed):
    p, X, T = _net(seed, lam=lam)
    ref, per_sample = _backward(p, X, T, lam=lam)
    got, _ = _backward(p, X, T, lam=lam, bug=bug)
    alts = {b: _backward(p, X, T, lam=lam, bug=b)[0]
            for b in ("wrong_point", "wrong_activation_derivative")}
    ctx = {"params": p, "weight_decay": lam, "per_sample": per_sample, "alternatives": alts}
    out = diagnose(ref, got, batch_size=X.shape[0], context=ctx)
    assert set(out) == affected
    for name in affected:
        assert out[name][0].code == code, (name, [d.message for d in out[name]])


def test_planted_messages_are_specific():
    p, X, T = _net(0)
    ref, per_sample = _backward(p, X, T)
    out = diagnose(ref, _backward(p, X, T, bug="bias_not_summed")[0],
                   context={"per_sample": per_sample})
    assert "sample 5 only" in out["b1"][0].message
    out = diagnose(ref, _backward(p, X, T, bug="partial")[0])
    assert "only row 2 differs (unit 2); there it is sign-flipped" in out["W1"][0].message
    out = diagnose(ref, _backward(p, X, T, bug="mean_not_sum")[0], batch_size=6)
    assert "N=6" in out["W1"][0].message


# --------------------------------------------------------------------------- regressions


@pytest.mark.parametrize("factor, text", [(6.0, "N=6 times"), (1 / 6, "divided by N=6"),
                                          (2.0, "twice")])
def test_data_term_scaled_beside_weight_decay_is_named(factor, text):
    """A mean loss with weight decay whose data term misses 1/N (or has it twice)."""
    lam = 0.1
    p, X, T = _net(0, n=6)
    data, _ = _backward(p, X, T)  # the data term, summed over the batch
    ref = {k: v / 6 + (lam * p[k] if k.startswith("W") else 0) for k, v in data.items()}
    got = {k: factor * v / 6 + (lam * p[k] if k.startswith("W") else 0)
           for k, v in data.items()}
    out = diagnose(ref, got, batch_size=6, context={"params": p, "weight_decay": lam})
    for name in ("W1", "W2"):
        assert out[name][0].code == "scaled", out[name][0].message
        assert "data term" in out[name][0].message and text in out[name][0].message
    # the decay term alone wrong is still weight decay, not a scaled data term
    wrong_decay = {k: v + (lam * p[k] if k.startswith("W") else 0) for k, v in ref.items()}
    out = diagnose(ref, wrong_decay, batch_size=6, context={"params": p, "weight_decay": lam})
    assert out["W1"][0].code == "weight_decay_extra"
