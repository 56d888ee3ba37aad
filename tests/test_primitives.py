"""The primitive registry: derivatives, forward-term rewrites, stable forms."""

from __future__ import annotations

import mpmath
import pytest
import sympy as sp

from symgrad import primitives
from symgrad.primitives import a, t, x, y
from symgrad.symbolic import Sigmoid, Softplus, stabilize

mpmath.mp.dps = 50

ELEMENTWISE = [name for name, rule in primitives.ACTIVATIONS.items() if not rule.vector]
POINTS = [-2.5, -0.7, -0.1, 0.3, 1.1, 3.0]  # away from 0, where relu & co. have a kink
PARAMETERS = {"slope": 0.2, "alpha": 1.5}


def bound(name: str) -> sp.Expr:
    rule = primitives.activation(name)
    return primitives.bind(rule.forward, {k: PARAMETERS[k] for k in rule.parameters})


def as_mpmath(expr: sp.Expr):
    modules = [{"Heaviside": lambda u, *_: mpmath.mpf(1) if u > 0 else mpmath.mpf(0),
                "Sigmoid": lambda u: 1 / (1 + mpmath.exp(-u)),
                "Softplus": lambda u: mpmath.log1p(mpmath.exp(u))}, "mpmath"]
    return sp.lambdify(x, expr, modules=modules)


def test_registry_contents():
    assert set(primitives.ACTIVATIONS) == {"identity", "sigmoid", "tanh", "relu", "leaky_relu",
                                           "softplus", "elu", "gelu", "silu", "softmax"}
    assert set(primitives.LOSSES) == {"sse", "mse", "bce", "cross_entropy", "hinge"}
    assert primitives.loss("hinge").per_output is None  # couples outputs: ops.loss writes it
    assert primitives.activation("softmax").vector
    assert primitives.loss("cross_entropy").needs_softmax


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_derivative_matches_central_difference(name):
    forward = bound(name)
    f = as_mpmath(forward)
    derivative = as_mpmath(primitives.activation_derivative(forward))
    h = mpmath.mpf("1e-15")
    for point in POINTS:
        u = mpmath.mpf(point)
        numeric = (f(u + h) - f(u - h)) / (2 * h)
        assert abs(derivative(u) - numeric) < mpmath.mpf("1e-20"), (name, point)


@pytest.mark.parametrize("name,expected", [
    ("sigmoid", a * (1 - a)),
    ("tanh", 1 - a**2),
    ("identity", None),
    ("relu", sp.Heaviside(a)),  # a > 0 exactly when x > 0
    ("leaky_relu", sp.Piecewise((1, a > 0), (sp.Rational(1, 5), True))),
    ("elu", None),  # f' = exp(x) on the left: not a function of the sign alone
])
def test_in_forward_terms(name, expected):
    result = primitives.in_forward_terms(bound(name))
    if expected is None:
        assert result is None
    elif expected.has(sp.Piecewise):
        assert result == expected
    else:
        assert sp.expand(result - expected) == 0


@pytest.mark.parametrize("forward", [
    sp.Max(0, x - 1),  # kink away from 0: a > 0 is x > 1, not x > 0
    sp.Abs(x),  # loses the sign
    sp.Piecewise((x, x > 0), (-x / 100, True)),  # a > 0 on both sides
    sp.Min(sp.Max(-1, x), 1),  # flat on both sides
], ids=["shifted-relu", "abs", "sign-flipping", "hardtanh"])
def test_kinked_forms_that_are_not_rewritten(forward):
    assert primitives.in_forward_terms(forward) is None


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_in_forward_terms_is_the_derivative(name):
    forward = bound(name)
    slope = primitives.in_forward_terms(forward)
    if slope is None:
        return
    derivative = as_mpmath(primitives.activation_derivative(forward))
    rewritten = as_mpmath(slope.subs(a, forward))
    for point in POINTS:
        assert abs(derivative(point) - rewritten(point)) < mpmath.mpf("1e-40")


@pytest.mark.parametrize("name,per_output,derivative", [
    ("sse", (y - t) ** 2 / 2, y - t),
    ("bce", -(t * sp.log(y) + (1 - t) * sp.log(1 - y)), (y - t) / (y * (1 - y))),
    ("cross_entropy", -t * sp.log(y), -t / y),
])
def test_loss_rows_and_derivatives(name, per_output, derivative):
    rule = primitives.loss(name)
    assert sp.simplify(rule.per_output - per_output) == 0
    assert sp.simplify(primitives.loss_derivative(rule.per_output) - derivative) == 0


def test_fused_bce_sigmoid():
    fused = primitives.fused_delta(primitives.loss("bce").per_output, bound("sigmoid"))
    assert sp.expand(fused - (a - t)) == 0


def test_unknown_primitive_suggests():
    with pytest.raises(primitives.UnknownPrimitive, match="did you mean 'tanh'"):
        primitives.activation("tahn")
    with pytest.raises(primitives.UnknownPrimitive, match="did you mean 'mse'"):
        primitives.loss("mes")


# ----------------------------------------------------------------------------- stable forms

STABLE_CASES = {
    **{name: bound(name) for name in ELEMENTWISE},
    **{f"{name}'": primitives.activation_derivative(bound(name)) for name in ELEMENTWISE},
    "mish": x * sp.tanh(sp.log(1 + sp.exp(x))),
    "mish'": sp.diff(x * sp.tanh(sp.log(1 + sp.exp(x))), x),
}


@pytest.mark.parametrize("name", sorted(STABLE_CASES))
def test_stable_forms_are_finite_and_exact(name):
    textbook = STABLE_CASES[name]
    stable = stabilize(textbook)
    fast = sp.lambdify(x, stable, modules=[
        {"Sigmoid": _float_sigmoid, "Softplus": _float_softplus,
         "Heaviside": lambda u, *_: 1.0 if u > 0 else 0.0}, "math"])
    precise = as_mpmath(textbook)
    for point in (-800.0, -30.0, -1.3, 0.4, 2.0, 30.0, 800.0):
        value = fast(point)  # plain floats: overflow would raise or give inf/nan
        assert value == value and abs(value) != float("inf"), (name, point, value)
        reference = precise(mpmath.mpf(point))
        assert abs(value - reference) <= 1e-12 * max(1.0, abs(reference)), (name, point)


def _float_sigmoid(u: float) -> float:
    import math

    if u >= 0:
        return 1.0 / (1.0 + math.exp(-u))
    e = math.exp(u)
    return e / (1.0 + e)


def _float_softplus(u: float) -> float:
    import math

    return max(u, 0.0) + math.log1p(math.exp(-abs(u)))


def test_stabilize_rewrites():
    u = sp.Symbol("u", real=True)
    assert stabilize(sp.log(1 + sp.exp(u))) == Softplus(u)
    assert stabilize(1 / (1 + sp.exp(-u))) == Sigmoid(u)
    assert not stabilize(sp.exp(-u) / (1 + sp.exp(-u)) ** 2).has(sp.exp)
