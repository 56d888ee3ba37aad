"""The elementwise activations and per-output losses symgrad knows.

Contract: every primitive is one row of a registry: its name, its forward
form as a SymPy expression in ``x`` (activations) or ``y`` and ``t``
(losses), and nothing else.  Derivatives are never written here: SymPy
derives them (:func:`activation_derivative`, :func:`loss_derivative`) and
:func:`in_forward_terms` rewrites a derivative in terms of the forward value
``a = f(x)`` where that is cheaper, so the backward pass reuses what the
forward pass computed (``sigmoid' = a (1 - a)``, ``tanh' = 1 - a**2``).

Vector-valued activations (softmax) are marked; their Jacobian is not
diagonal and the derivation treats them separately.  A name that is not in
the registry raises :class:`UnknownPrimitive`, which names the nearest one.

Every SymPy step here runs under a time budget (:func:`symgrad.symbolic.budget`):
a derivative that does not finish raises :class:`ExpressionError`, an optional
rewrite (forward terms, fusion, simplification) falls back to the plain form.
:func:`check_activation` and :func:`check_loss` refuse custom expressions that
are not finite real functions with a usable derivative.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from functools import lru_cache

import sympy as sp

from .errors import BadInput
from .exprparse import ExpressionError, parse_expression
from .symbolic import TooCostly, bounded, budget

x = sp.Symbol("x", real=True)
a = sp.Symbol("a", real=True)
y = sp.Symbol("y", real=True)
t = sp.Symbol("t", real=True)
K = sp.Symbol("K", positive=True, integer=True)  # number of outputs


class UnknownPrimitive(KeyError, BadInput):
    """An activation or loss name that symgrad does not know."""

    def __init__(self, kind: str, name: str, known: list[str]):
        hint = difflib.get_close_matches(name, known, n=1)
        suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
        self.message = f"unknown {kind} '{name}'{suggestion} (known: {', '.join(known)})"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class ActivationRule:
    """One registry row: an activation's name and forward form ``f(x)``."""

    name: str
    forward: sp.Expr | None  # None for vector-valued activations
    parameters: dict = field(default_factory=dict)  # name -> default value
    vector: bool = False
    latex: str = ""  # how the function is named in print, e.g. r"\sigma"


@dataclass(frozen=True)
class LossRule:
    """One registry row: a loss's name and per-output form ``l(y, t)``."""

    name: str
    per_output: sp.Expr | None  # summed over outputs j; None for a loss that couples outputs
    needs_softmax: bool = False
    description: str = ""
    needs_identity: bool = False  # scores, not probabilities: the output layer is linear


def _activation_rows() -> dict[str, ActivationRule]:
    slope, alpha = sp.Symbol("slope", positive=True), sp.Symbol("alpha", positive=True)
    rows = [
        ActivationRule("identity", x, latex=r"\operatorname{id}"),
        ActivationRule("sigmoid", 1 / (1 + sp.exp(-x)), latex=r"\sigma"),
        ActivationRule("tanh", sp.tanh(x), latex=r"\tanh"),
        ActivationRule("relu", sp.Max(0, x), latex=r"\operatorname{relu}"),
        ActivationRule(
            "leaky_relu",
            sp.Piecewise((x, x > 0), (slope * x, True)),
            {"slope": 0.01},
            latex=r"\operatorname{lrelu}",
        ),
        ActivationRule("softplus", sp.log(1 + sp.exp(x)), latex=r"\operatorname{softplus}"),
        ActivationRule(
            "elu",
            sp.Piecewise((x, x > 0), (alpha * (sp.exp(x) - 1), True)),
            {"alpha": 1.0},
            latex=r"\operatorname{elu}",
        ),
        ActivationRule("gelu", x / 2 * (1 + sp.erf(x / sp.sqrt(2))), latex=r"\operatorname{gelu}"),
        ActivationRule("silu", x / (1 + sp.exp(-x)), latex=r"\operatorname{silu}"),
        ActivationRule("softmax", None, vector=True, latex=r"\operatorname{softmax}"),
    ]
    return {row.name: row for row in rows}


def _loss_rows() -> dict[str, LossRule]:
    rows = [
        LossRule("sse", (y - t) ** 2 / 2, description="half the sum of squared errors"),
        LossRule("mse", (y - t) ** 2 / K, description="mean squared error over outputs"),
        LossRule(
            "bce",
            -(t * sp.log(y) + (1 - t) * sp.log(1 - y)),
            description="binary cross-entropy",
        ),
        LossRule(
            "cross_entropy",
            -t * sp.log(y),
            needs_softmax=True,
            description="cross-entropy of a softmax output",
        ),
        # Weston-Watkins: sum over j != y of max(0, 1 + s_j - s_y); written by ops.loss.
        LossRule("hinge", None, needs_identity=True,
                 description="multiclass hinge loss of identity scores"),
    ]
    return {row.name: row for row in rows}


ACTIVATIONS: dict[str, ActivationRule] = _activation_rows()
LOSSES: dict[str, LossRule] = _loss_rows()


def activation(name: str) -> ActivationRule:
    """The registry row for activation ``name``.

    >>> activation("tanh").forward
    tanh(x)
    """
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise UnknownPrimitive("activation", name, sorted(ACTIVATIONS)) from None


def loss(name: str) -> LossRule:
    """The registry row for loss ``name``.

    >>> loss("sse").per_output
    (-t + y)**2/2
    """
    try:
        return LOSSES[name]
    except KeyError:
        raise UnknownPrimitive("loss", name, sorted(LOSSES)) from None


def bind(expr: sp.Expr, parameters: dict) -> sp.Expr:
    """Substitute numeric activation parameters (slope, alpha) into ``expr``."""
    values = {s: sp.nsimplify(parameters[s.name]) for s in expr.free_symbols if s.name in parameters}
    return expr.subs(values)


@lru_cache(maxsize=None)
def activation_derivative(forward: sp.Expr) -> sp.Expr:
    """``f'(x)`` as SymPy derives and simplifies it.

    >>> activation_derivative(sp.tanh(x))
    1 - tanh(x)**2
    >>> activation_derivative(1 / (1 + sp.exp(-x)))
    exp(-x)/(1 + exp(-x))**2
    """
    try:
        with budget():
            derivative = sp.diff(forward, x)
            if derivative.has(sp.Piecewise):
                derivative = sp.piecewise_fold(derivative)
    except TooCostly:
        raise ExpressionError(f"{_short(forward)} is too costly to differentiate") from None
    return derivative


@lru_cache(maxsize=None)
def in_forward_terms(forward: sp.Expr) -> sp.Expr | None:
    """``f'(x)`` as a polynomial in the forward value ``a = f(x)``, if it is one.

    >>> in_forward_terms(1 / (1 + sp.exp(-x)))
    a*(1 - a)
    >>> in_forward_terms(sp.tanh(x))
    1 - a**2
    >>> in_forward_terms(sp.Max(0, x))
    Heaviside(a)
    >>> in_forward_terms(sp.Piecewise((x, x > 0), (x / 100, True)))
    Piecewise((1, a > 0), (1/100, True))
    """
    return bounded(lambda: _in_forward_terms(forward), lambda: None)


def _in_forward_terms(forward: sp.Expr) -> sp.Expr | None:
    """The search behind :func:`in_forward_terms`, without a time budget."""
    if forward == x:
        return None
    if forward.has(sp.Piecewise, sp.Max, sp.Min, sp.Abs):
        return _sign_preserving_slope(forward)
    invertible = (sp.count_ops(forward) < 40 and _occurrences(forward) == 1
                  and _small_for_solve(forward))
    derivative = activation_derivative(forward)
    candidates = [derivative.subs(forward, a)]  # f' written with f itself, as tanh' is
    if invertible:  # x occurs once: f is a chain of invertible steps, solve is quick
        try:
            candidates += [derivative.subs(x, inverse)
                           for inverse in sp.solve(sp.Eq(a, forward), x)]
        except (NotImplementedError, ValueError, TypeError):
            pass
    for candidate in candidates:
        if candidate.has(x):
            continue
        candidate = _tidy(sp.factor(sp.simplify(candidate)))
        if not candidate.is_polynomial(a):
            continue
        # SymPy must confirm the rewrite, tidied as printed: f'(x) - g(f(x)) is zero.
        if sp.simplify(derivative - candidate.subs(a, forward)) == 0:
            return candidate
    return None


def _sign_preserving_slope(forward: sp.Expr) -> sp.Expr | None:
    """A kinked ``f'`` in terms of ``a``, when f' depends only on the sign of x and f keeps it.

    relu' = H(x) is H(a): a > 0 exactly when x > 0.  SymPy checks the rewrite on
    both half-lines and at the kink, with the step function 0 at 0 as in the code.
    """
    derivative = activation_derivative(forward)
    pieces = derivative.args if isinstance(derivative, sp.Piecewise) else ()
    if any(value.has(x) for value, _ in pieces) or not (
            isinstance(derivative, sp.Heaviside) and derivative.args[0] == x or pieces):
        return None
    candidate = derivative.xreplace({x: a})

    def step_zero_at_zero(expr: sp.Expr) -> sp.Expr:
        return expr.replace(sp.Heaviside, lambda u, *_: sp.Heaviside(u, 0))

    slope, rewritten = step_zero_at_zero(derivative), step_zero_at_zero(candidate)

    def at(point: sp.Expr) -> bool:
        value = slope.subs(x, point) - rewritten.subs(a, forward.subs(x, point))
        return sp.simplify(sp.piecewise_fold(value)) == 0

    positive, negative = sp.Symbol("p", positive=True), sp.Symbol("q", negative=True)
    if at(positive) and at(negative) and at(sp.S.Zero):
        return candidate
    return None


def _small_for_solve(expr: sp.Expr) -> bool:
    """Whether sp.solve can invert ``expr`` quickly: low powers, functions nested <= 3 deep."""
    for power in expr.atoms(sp.Pow):
        exponent = power.exp
        if power.base.has(x) and not (exponent.is_Rational and abs(exponent.p) <= 2
                                      and exponent.q <= 2):
            return False
    return _nesting(expr) <= 3


def _nesting(expr: sp.Expr) -> int:
    """How deeply functions and powers of ``x`` nest in ``expr`` (sums and products are free)."""
    if not expr.args or not expr.has(x):
        return 0
    inner = max(_nesting(arg) for arg in expr.args)
    return inner if isinstance(expr, (sp.Add, sp.Mul)) else inner + 1


def _occurrences(expr: sp.Expr) -> int:
    """How many times ``x`` occurs in ``expr``."""
    return sum(1 for node in sp.preorder_traversal(expr) if node == x)


def _tidy(expr: sp.Expr) -> sp.Expr:
    """The shortest of the factored and expanded forms, preferring ``a*(1 - a)``."""
    factored = sp.factor(expr)
    coefficient, rest = factored.as_coeff_Mul()
    if coefficient.is_negative:
        factors = list(sp.Mul.make_args(rest))
        for index, factor in enumerate(factors):
            if isinstance(factor, sp.Add):
                factors[index] = -factor  # -c*(a - 1) -> c*(1 - a)
                factored = -coefficient * sp.Mul(*factors)
                break
    expanded = sp.expand(expr)
    best = min([factored, expanded], key=sp.count_ops)
    assert sp.expand(best - expr) == 0
    return best


@lru_cache(maxsize=None)
def loss_derivative(per_output: sp.Expr) -> sp.Expr:
    """``dl/dy`` for a per-output loss, as SymPy derives and simplifies it.

    >>> loss_derivative((y - t) ** 2 / 2)
    -t + y
    """
    try:
        with budget():
            derivative = sp.diff(per_output, y)
    except TooCostly:
        raise ExpressionError(f"{_short(per_output)} is too costly to differentiate") from None
    if derivative.has(sp.Heaviside, sp.sign, sp.Piecewise):
        return derivative  # simplify() can fail on the kinks of abs/max

    def simplest() -> sp.Expr:
        simpler = sp.simplify(derivative)
        return simpler if sp.count_ops(simpler) <= sp.count_ops(derivative) else derivative

    return bounded(simplest, lambda: derivative)


@lru_cache(maxsize=None)
def fused_delta(per_output: sp.Expr, forward: sp.Expr) -> sp.Expr | None:
    """``d l(f(x), t)/dx`` in forward terms when it is simpler than the product.

    This is how binary cross-entropy on a sigmoid output collapses to ``a - t``.

    >>> fused_delta(-(t * sp.log(y) + (1 - t) * sp.log(1 - y)), 1 / (1 + sp.exp(-x)))
    a - t
    >>> fused_delta((y - t) ** 2 / 2, 1 / (1 + sp.exp(-x))) is None
    True
    """
    return bounded(lambda: _fused_delta(per_output, forward), lambda: None)


def _fused_delta(per_output: sp.Expr, forward: sp.Expr) -> sp.Expr | None:
    """The fusion behind :func:`fused_delta`, without a time budget."""
    slope = in_forward_terms(forward)
    if slope is None:
        return None
    product = loss_derivative(per_output).subs(y, a) * slope
    fused = sp.factor(sp.cancel(product))
    if sp.count_ops(fused) < sp.count_ops(product) and not fused.has(x):
        return sp.expand(fused) if sp.count_ops(sp.expand(fused)) <= sp.count_ops(fused) else fused
    return None


# ----------------------------------------------------------------------------- validation

#: Where a custom expression is sampled: it must be finite and real at one of them at least.
SAMPLE_X = (-2.0, -0.5, 0.3, 1.7)
SAMPLE_T = (0.0, 1.0)
WIDE_X = (-1e3, -30.0, *SAMPLE_X, 30.0, 1e3)  # an activation that is constant on all is refused


@lru_cache(maxsize=256)
def parse_activation(text: str) -> sp.Expr:
    """A custom activation in x: parsed, bounded, and checked to be a finite real function.

    >>> parse_activation("x * tanh(log(1 + exp(x)))")
    x*tanh(log(exp(x) + 1))
    >>> parse_activation("x*0")
    Traceback (most recent call last):
    ...
    symgrad.exprparse.ExpressionError: the activation does not depend on x ...
    """
    forward = parse_expression(text, ("x",))
    check_activation(forward)
    return forward


@lru_cache(maxsize=256)
def parse_loss(text: str) -> sp.Expr:
    """A custom per-output loss in y and t: parsed, bounded and checked.

    >>> parse_loss("t**2")
    Traceback (most recent call last):
    ...
    symgrad.exprparse.ExpressionError: the loss does not depend on the output y
    """
    per_output = parse_expression(text, ("y", "t"))
    check_loss(per_output)
    return per_output


def check_activation(forward: sp.Expr) -> None:
    """Refuse an activation that is constant or not a finite real function of x.

    >>> check_activation(x * sp.tanh(x))
    >>> check_activation(x * 0 + 1)
    Traceback (most recent call last):
    ...
    symgrad.exprparse.ExpressionError: the activation does not depend on x (it is the constant 1)
    """
    if x not in forward.free_symbols:
        raise ExpressionError(f"the activation does not depend on x (it is the constant "
                              f"{_short(forward)})")
    derivative = activation_derivative(forward)
    _check_finite(forward, "the activation", [{x: v} for v in SAMPLE_X])
    _check_finite(derivative, "the activation's derivative", [{x: v} for v in SAMPLE_X])
    if derivative == 0:
        raise ExpressionError("the activation's derivative is identically 0")
    try:
        with budget():
            values = {_float_at(forward, {x: v}) for v in WIDE_X}
            slopes = {_float_at(derivative, {x: v}) for v in WIDE_X}
    except TooCostly:
        raise ExpressionError("the activation is too costly to evaluate") from None
    if len(values) == 1 and slopes == {0.0}:
        raise ExpressionError(f"the activation is constant ({_short(forward)} is "
                              f"{values.pop():g} at every sample point)")


def check_loss(per_output: sp.Expr) -> None:
    """Refuse a loss that ignores y or is not a finite real function.

    >>> check_loss((y - t) ** 2 / 2)
    >>> check_loss(t ** 2)
    Traceback (most recent call last):
    ...
    symgrad.exprparse.ExpressionError: the loss does not depend on the output y
    """
    if y not in per_output.free_symbols:
        raise ExpressionError("the loss does not depend on the output y")
    try:
        with budget():
            derivative = sp.diff(per_output, y)  # not simplified: that is loss_derivative's job
    except TooCostly:
        raise ExpressionError(f"{_short(per_output)} is too costly to differentiate") from None
    points = [{y: u, t: v} for u in SAMPLE_X for v in SAMPLE_T]
    _check_finite(per_output, "the loss", points)
    _check_finite(derivative, "the loss's derivative dl/dy", points)


def _check_finite(expr: sp.Expr, what: str, points: list[dict]) -> None:
    """Refuse ``expr`` if it has no finite real value at any of ``points``."""
    if expr.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
        raise ExpressionError(f"{what} is not finite ({_short(expr)})")
    if expr.has(sp.I):
        raise ExpressionError(f"{what} is complex ({_short(expr)})")

    def any_finite() -> bool:
        return any(math.isfinite(_float_at(expr, point)) for point in points)

    try:
        with budget():
            finite = any_finite()
    except TooCostly:
        raise ExpressionError(f"{what} is too costly to evaluate") from None
    if not finite:
        where = ", ".join(f"{s.name} = {v:g}" for s, v in points[0].items())
        raise ExpressionError(f"{what} is not a finite real number at any of {len(points)} "
                              f"sample points ({where}, ...)")


def _float_at(expr: sp.Expr, point: dict) -> float:
    """``expr`` at ``point`` in float64 arithmetic; nan where it is not a finite real."""
    try:
        value = _float_walk(expr, point)
    except (ArithmeticError, ValueError, TypeError):
        return math.nan
    return value if isinstance(value, float) else math.nan


def _saturating(function):
    """A math function that gives inf instead of raising OverflowError."""
    def call(u: float) -> float:
        try:
            return function(u)
        except OverflowError:
            return math.copysign(math.inf, u) if function is math.sinh else math.inf
    return call


_FLOATS = {
    sp.exp: _saturating(math.exp), sp.sinh: _saturating(math.sinh),
    sp.cosh: _saturating(math.cosh), sp.log: math.log, sp.tanh: math.tanh, sp.sin: math.sin,
    sp.cos: math.cos, sp.atan: math.atan, sp.erf: math.erf, sp.Abs: abs,
    sp.sign: lambda u: math.copysign(1.0, u) if u else 0.0,
}
_RELATIONS = {
    sp.StrictGreaterThan: lambda u, v: u > v, sp.GreaterThan: lambda u, v: u >= v,
    sp.StrictLessThan: lambda u, v: u < v, sp.LessThan: lambda u, v: u <= v,
    sp.Eq: lambda u, v: u == v, sp.Ne: lambda u, v: u != v,
}


def _float_walk(expr, point: dict):
    """The recursion behind :func:`_float_at` (booleans for conditions)."""
    if expr in point:
        return float(point[expr])
    if expr.is_Number or isinstance(expr, sp.NumberSymbol):
        return float(expr)
    if expr is sp.true or expr is sp.false:
        return bool(expr)
    if isinstance(expr, sp.Piecewise):
        for value, condition in expr.args:
            if _float_walk(condition, point):
                return _float_walk(value, point)
        return math.nan
    args = [_float_walk(arg, point) for arg in expr.args]
    if isinstance(expr, sp.Add):
        return math.fsum(args)
    if isinstance(expr, sp.Mul):
        return math.prod(args)
    if isinstance(expr, sp.Pow):
        try:
            return float(args[0] ** args[1])  # a complex power raises TypeError
        except OverflowError:
            return math.inf
    if expr.func in _FLOATS:
        return float(_FLOATS[expr.func](args[0]))
    if isinstance(expr, (sp.Max, sp.Min)):
        return max(args) if isinstance(expr, sp.Max) else min(args)
    if isinstance(expr, sp.Heaviside):
        at_zero = args[1] if len(args) > 1 else 0.5
        return 1.0 if args[0] > 0 else 0.0 if args[0] < 0 else at_zero
    if expr.func in _RELATIONS:
        return _RELATIONS[expr.func](*args)
    if isinstance(expr, sp.And):
        return all(args)
    if isinstance(expr, sp.Or):
        return any(args)
    if isinstance(expr, sp.Not):
        return not args[0]
    value = expr.xreplace({s: sp.Float(v) for s, v in point.items()}).evalf(15)
    return float(value) if value.is_Number else math.nan


def _short(expr: sp.Expr) -> str:
    """An expression as text short enough for a one-line error."""
    text = str(expr)
    return text if len(text) <= 60 else text[:57] + "..."
