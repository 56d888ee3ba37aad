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
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import lru_cache

import sympy as sp

x = sp.Symbol("x", real=True)
a = sp.Symbol("a", real=True)
y = sp.Symbol("y", real=True)
t = sp.Symbol("t", real=True)
K = sp.Symbol("K", positive=True, integer=True)  # number of outputs


class UnknownPrimitive(KeyError):
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
    per_output: sp.Expr  # summed over outputs j to give the per-sample loss
    needs_softmax: bool = False
    description: str = ""


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
    derivative = sp.diff(forward, x)
    if derivative.has(sp.Piecewise):
        return sp.piecewise_fold(derivative)
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
    if forward == x:
        return None
    if forward.has(sp.Piecewise, sp.Max, sp.Min, sp.Abs):
        return _sign_preserving_slope(forward)
    invertible = sp.count_ops(forward) < 40 and _occurrences(forward) == 1
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
    derivative = sp.diff(per_output, y)
    if derivative.has(sp.Heaviside, sp.sign, sp.Piecewise):
        return derivative  # simplify() can fail on the kinks of abs/max
    simpler = sp.simplify(derivative)
    return simpler if sp.count_ops(simpler) <= sp.count_ops(derivative) else derivative


@lru_cache(maxsize=None)
def fused_delta(per_output: sp.Expr, forward: sp.Expr) -> sp.Expr | None:
    """``d l(f(x), t)/dx`` in forward terms when it is simpler than the product.

    This is how binary cross-entropy on a sigmoid output collapses to ``a - t``.

    >>> fused_delta(-(t * sp.log(y) + (1 - t) * sp.log(1 - y)), 1 / (1 + sp.exp(-x)))
    a - t
    >>> fused_delta((y - t) ** 2 / 2, 1 / (1 + sp.exp(-x))) is None
    True
    """
    slope = in_forward_terms(forward)
    if slope is None:
        return None
    product = loss_derivative(per_output).subs(y, a) * slope
    fused = sp.factor(sp.cancel(product))
    if sp.count_ops(fused) < sp.count_ops(product) and not fused.has(x):
        return sp.expand(fused) if sp.count_ops(sp.expand(fused)) <= sp.count_ops(fused) else fused
    return None
