"""Numerical stability of the generated modules at extreme pre-activations.

Each case is a small network whose weights put the pre-activation of the
unit under test exactly at an extreme value (softmax logits of +-1000,
sigmoid/softplus/mish inputs of +-800, ELU at +800).  The loss and the
gradient must be finite, raise no floating-point warning (overflow, division
by zero, invalid operation; underflow to zero is the correctly rounded answer
and is allowed), and agree with a reference computed in mpmath with 50
significant digits from closed-form derivatives written here.
"""

from __future__ import annotations

import functools
import warnings

import mpmath as mp
import numpy as np
import pytest

from symgrad.codegen import generate_module_source, load_module
from symgrad.spec import Network

MISH = {"expr": "x*tanh(log(1+exp(x)))"}
DIGITS = 50


def high_precision(function):
    """Run ``function`` with mpmath working to DIGITS significant digits."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with mp.workdps(DIGITS):
            return function(*args, **kwargs)

    return wrapper


# --------------------------------------------------------------------------- mpmath oracle

def _sigmoid(z):
    return 1 / (1 + mp.exp(-z))


def _softplus(z):
    return mp.log(1 + mp.exp(z))


#: name -> (f, f'), both in mpmath, derived by hand.
FUNCTIONS = {
    "identity": (lambda z: z, lambda z: mp.mpf(1)),
    "sigmoid": (_sigmoid, lambda z: mp.exp(-z) / (1 + mp.exp(-z)) ** 2),
    "tanh": (mp.tanh, lambda z: mp.sech(z) ** 2),
    "softplus": (_softplus, _sigmoid),
    "mish": (lambda z: z * mp.tanh(_softplus(z)),
             lambda z: mp.tanh(_softplus(z)) + z * mp.sech(_softplus(z)) ** 2 * _sigmoid(z)),
    "elu": (lambda z: z if z > 0 else mp.exp(z) - 1,
            lambda z: mp.mpf(1) if z > 0 else mp.exp(z)),
    "silu": (lambda z: z * _sigmoid(z),
             lambda z: _sigmoid(z) + z * mp.exp(-z) / (1 + mp.exp(-z)) ** 2),
    "gelu": (lambda z: z / 2 * (1 + mp.erf(z / mp.sqrt(2))),
             lambda z: (1 + mp.erf(z / mp.sqrt(2))) / 2
             + z * mp.exp(-z * z / 2) / mp.sqrt(2 * mp.pi)),
}
SPEC_ACTIVATION = {"mish": MISH}


@high_precision
def reference_scalar(activation, loss, zs, ts, w2=None, b2=None):
    """Loss and dL/dz for each row of a one-unit layer, in mpmath.

    With ``w2``/``b2`` the unit is hidden and feeds an identity output
    ``y = w2 * f(z) + b2`` under the sse loss.
    """
    f, df = FUNCTIONS[activation]
    total, grads = mp.mpf(0), []
    for z, t in zip(zs, ts):
        z, t = mp.mpf(z), mp.mpf(t)
        if w2 is not None:
            y = w2 * f(z) + b2
            total += (y - t) ** 2 / 2
            grads.append((y - t) * w2 * df(z))
        elif loss == "sse":
            y = f(z)
            total += (y - t) ** 2 / 2
            grads.append((y - t) * df(z))
        elif loss == "bce":  # sigmoid output
            y, one_minus_y = _sigmoid(z), _sigmoid(-z)  # 1 - y without cancellation
            total += -(t * mp.log(y) + (1 - t) * mp.log(one_minus_y))
            # dl/dy * dy/dz, with dy/dz = y (1 - y)
            grads.append(-(t * one_minus_y - (1 - t) * y))
        else:
            raise AssertionError(loss)
    return total, grads


@high_precision
def reference_softmax_cross_entropy(z, t):
    """-sum t log softmax(z) and its gradient p - t, in mpmath."""
    z, t = [mp.mpf(v) for v in z], [mp.mpf(v) for v in t]
    denominator = mp.fsum(mp.exp(v) for v in z)
    p = [mp.exp(v) / denominator for v in z]
    return -mp.fsum(ti * mp.log(pi) for ti, pi in zip(t, p)), [pi - ti for pi, ti in zip(p, t)]


@high_precision
def assert_close(got, want, what=""):
    """Relative error 1e-12, or an absolute error below 1e-300 (underflow to 0)."""
    got, want = float(got), mp.mpf(want)
    assert np.isfinite(got), what
    assert abs(mp.mpf(got) - want) <= mp.mpf("1e-12") * abs(want) + mp.mpf("1e-300"), \
        f"{what}: got {got!r}, want {mp.nstr(want, 17)}"


@pytest.mark.parametrize("activation", list(FUNCTIONS))
@high_precision
def test_the_oracle_derivatives_are_right(activation):
    """The hand-written derivatives agree with mpmath's numerical ones at ordinary points."""
    f, df = FUNCTIONS[activation]
    for z in (-2.5, -0.3, 0.7, 3.0):
        assert abs(mp.diff(f, z) - df(mp.mpf(z))) < mp.mpf("1e-30")


# --------------------------------------------------------------------------- harness

@functools.lru_cache(maxsize=None)
def _module(activation: str, loss: str, hidden: bool, units: int = 1):
    act = SPEC_ACTIVATION.get(activation, activation)
    net = Network(f"stab_{activation}_{loss}", inputs=1)
    if hidden:
        net.dense(1, act).dense(1, "identity")
    else:
        net.dense(units, act)
    return load_module(generate_module_source(net.loss(loss).build()))


def strict(function, *args):
    """Call with every warning an error and overflow/invalid/divide raising."""
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise",
                                                invalid="raise", under="ignore"):
        warnings.simplefilter("error")
        return function(*args)


ROWS = [([1.0], "+"), ([-1.0], "-"), ([1.0, -1.0], "+-")]


def _run_scalar(activation, loss, extreme, rows, targets, hidden=False):
    module = _module(activation, loss, hidden)
    X = np.array(rows, float).reshape(-1, 1)
    T = np.array(targets, float).reshape(-1, 1)
    params = {"W1": np.array([[extreme]]), "b1": np.array([0.0])}
    w2 = b2 = None
    if hidden:
        w2, b2 = 2.0, 0.5
        params.update(W2=np.array([[w2]]), b2=np.array([b2]))
    value, grads = strict(module.loss_and_grad, params, X, T)
    alone = strict(module.loss, params, X, T)
    output = strict(module.forward, params, X)
    assert np.all(np.isfinite(output))
    zs = [extreme * x for x in rows]
    want_loss, want_dz = reference_scalar(activation, loss, zs, targets, w2, b2)
    assert_close(value, want_loss, "loss")
    assert_close(alone, want_loss, "loss()")
    # z = x W + b: dL/db = sum of dL/dz, dL/dW = sum of dL/dz x.
    assert_close(grads["b1"][0], mp.fsum(want_dz), "dL/db1")
    assert_close(grads["W1"][0, 0], mp.fsum(d * x for d, x in zip(want_dz, rows)), "dL/dW1")
    for grad in grads.values():
        assert np.all(np.isfinite(grad))


# --------------------------------------------------------------------------- cases

@pytest.mark.parametrize("rows", [r for r, _ in ROWS], ids=[i for _, i in ROWS])
@pytest.mark.parametrize("target", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("loss", ["sse", "bce"])
def test_sigmoid_output_at_800(loss, target, rows):
    _run_scalar("sigmoid", loss, 800.0, rows, [target] * len(rows))


@pytest.mark.parametrize("rows", [r for r, _ in ROWS], ids=[i for _, i in ROWS])
@pytest.mark.parametrize("activation", ["sigmoid", "softplus", "mish", "tanh", "silu",
                                        "gelu", "elu"])
def test_hidden_unit_at_800(activation, rows):
    if activation == "elu" and rows != [1.0]:
        rows = [1.0]  # ELU's extreme is the overflowing exp(+800) branch
    _run_scalar(activation, "sse", 800.0, rows, [0.25] * len(rows), hidden=True)


@pytest.mark.parametrize("rows", [r for r, _ in ROWS], ids=[i for _, i in ROWS])
@pytest.mark.parametrize("activation", ["softplus", "mish", "elu", "silu", "gelu"])
def test_output_unit_at_800(activation, rows):
    _run_scalar(activation, "sse", 800.0, rows, [0.5] * len(rows))


def test_elu_at_minus_800_too():
    _run_scalar("elu", "sse", -800.0, [1.0], [0.0])


LOGITS = [
    [1000.0, -1000.0, 0.0],
    [-1000.0, -1000.0, 1000.0],
    [1000.0, 1000.0, -1000.0],
    [-1000.0, 0.0, 0.0],
]


@pytest.mark.parametrize("logits", LOGITS)
@pytest.mark.parametrize("target", [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.2, 0.3, 0.5]])
def test_softmax_cross_entropy_at_1000(logits, target):
    module = _module("softmax", "cross_entropy", False, units=3)
    params = {"W1": np.zeros((3, 1)), "b1": np.array(logits)}
    X, T = np.ones((1, 1)), np.array([target], float)
    value, grads = strict(module.loss_and_grad, params, X, T)
    alone = strict(module.loss, params, X, T)
    probabilities = strict(module.forward, params, X)
    want_loss, want_grad = reference_softmax_cross_entropy(logits, target)
    assert_close(value, want_loss, "loss")
    assert_close(alone, want_loss, "loss()")
    assert np.all(np.isfinite(probabilities))
    assert probabilities.sum() == pytest.approx(1.0)
    for j in range(3):
        assert_close(grads["b1"][j], want_grad[j], f"dL/db1[{j}]")
        assert_close(grads["W1"][j, 0], want_grad[j], f"dL/dW1[{j}]")


def test_softmax_cross_entropy_batch_with_mixed_extremes():
    module = _module("softmax", "cross_entropy", False, units=3)
    params = {"W1": np.array([[1000.0], [-1000.0], [0.0]]), "b1": np.zeros(3)}
    X = np.array([[1.0], [-1.0], [0.5]])
    T = np.eye(3)[[1, 0, 2]]
    value, grads = strict(module.loss_and_grad, params, X, T)
    want_loss, want_b = mp.mpf(0), [mp.mpf(0)] * 3
    want_w = [mp.mpf(0)] * 3
    for x, t in zip(X[:, 0], T):
        logits = [1000.0 * x, -1000.0 * x, 0.0]
        loss, grad = reference_softmax_cross_entropy(logits, t)
        want_loss += loss
        want_b = [b + g for b, g in zip(want_b, grad)]
        want_w = [w + g * mp.mpf(x) for w, g in zip(want_w, grad)]
    assert_close(value, want_loss, "loss")
    for j in range(3):
        assert_close(grads["b1"][j], want_b[j], f"dL/db1[{j}]")
        assert_close(grads["W1"][j, 0], want_w[j], f"dL/dW1[{j}]")


def test_float32_sigmoid_and_softmax_stay_finite():
    """In float32 the extremes overflow far sooner (exp(89)); the stable forms still hold."""
    for activation, loss, units, b in [("sigmoid", "bce", 1, [200.0]),
                                       ("sigmoid", "bce", 1, [-200.0]),
                                       ("softmax", "cross_entropy", 3, [300.0, -300.0, 0.0])]:
        net = Network("f32", inputs=1).dense(units, activation).loss(loss)
        module = load_module(generate_module_source(net.build(), dtype="float32"))
        params = {"W1": np.zeros((units, 1), np.float32), "b1": np.array(b, np.float32)}
        X = np.ones((1, 1), np.float32)
        T = np.eye(units, dtype=np.float32)[[0]] if units > 1 else np.ones((1, 1), np.float32)
        value, grads = strict(module.loss_and_grad, params, X, T)
        assert np.isfinite(value)
        assert all(np.all(np.isfinite(g)) and g.dtype == np.float32 for g in grads.values())
