"""SymPy building blocks for array-level steps, and the stable rewrite.

Contract: the derivation writes elementwise steps as ordinary SymPy
expressions whose symbols stand for whole arrays (broadcast like NumPy), and
uses the functions here for what is not elementwise: :class:`Total` (sum of
every entry), :class:`RowSum` (sum over units, kept as a column),
:class:`Softmax` and :class:`LogSumExp` (row-wise).  :class:`Sigmoid` and
:class:`Softplus` are the numerically stable primitives that
:func:`stabilize` rewrites textbook forms into, so the emitted code never
overflows: ``log(1 + exp(u))`` becomes ``softplus(u)``, every ``1 + exp(u)``
becomes ``1/sigmoid(-u)`` and the ``exp(u)`` beside it ``sigmoid(u)/sigmoid(-u)``,
and exponentials in a branch taken only for ``u <= 0`` see ``min(u, 0)``.

>>> u = sp.Symbol("u", real=True)
>>> stabilize(sp.exp(-u) / (1 + sp.exp(-u)) ** 2)
Sigmoid(-u)*Sigmoid(u)
>>> stabilize(u * sp.tanh(sp.log(1 + sp.exp(u))))
u*tanh(Softplus(u))
"""

from __future__ import annotations

import sympy as sp


class Total(sp.Function):
    """The sum of every entry of an array."""

    nargs = 1


class RowSum(sp.Function):
    """Row sums of a batch-first array, kept as an (N, 1) column."""

    nargs = 1


class Softmax(sp.Function):
    """Row-wise softmax of a batch-first array."""

    nargs = 1


class LogSumExp(sp.Function):
    """Row-wise max-shifted log-sum-exp, as an (N, 1) column."""

    nargs = 1


class Sigmoid(sp.Function):
    """The logistic function, evaluated without overflow."""

    nargs = 1

    def fdiff(self, argindex=1):
        return Sigmoid(self.args[0]) * Sigmoid(-self.args[0])


class Softplus(sp.Function):
    """log(1 + exp(u)), evaluated as logaddexp(0, u)."""

    nargs = 1

    def fdiff(self, argindex=1):
        return Sigmoid(self.args[0])


def stabilize(expr: sp.Expr) -> sp.Expr:
    """Rewrite ``expr`` into forms that stay finite for large arguments."""
    expr = expr.replace(
        lambda e: isinstance(e, sp.log) and _one_plus_exp(e.args[0]) is not None,
        lambda e: Softplus(_one_plus_exp(e.args[0])),
    )
    for u in sorted({_one_plus_exp(e) for e in expr.atoms(sp.Add)} - {None}, key=sp.default_sort_key):
        expr = expr.xreplace({1 + sp.exp(u): 1 / Sigmoid(-u)})
        expr = expr.xreplace({sp.exp(u): Sigmoid(u) / Sigmoid(-u),
                              sp.exp(-u): Sigmoid(-u) / Sigmoid(u)})
    return expr.replace(lambda e: isinstance(e, sp.Piecewise), _clamp_branches)


def _one_plus_exp(expr: sp.Expr) -> sp.Expr | None:
    """``u`` if ``expr`` is ``1 + exp(u)``, else None."""
    if isinstance(expr, sp.Add) and len(expr.args) == 2 and sp.S.One in expr.args:
        other = expr.args[0] if expr.args[1] == 1 else expr.args[1]
        if isinstance(other, sp.exp):
            return other.args[0]
    return None


def _clamp_branches(piecewise: sp.Piecewise) -> sp.Piecewise:
    """In ``Piecewise((f, u > 0), (g, True))`` evaluate g at min(u, 0), f at max(u, 0)."""
    pieces = list(piecewise.args)
    if len(pieces) != 2 or pieces[1].cond != sp.true:
        return piecewise
    (first, cond), (second, _) = pieces
    if not (isinstance(cond, (sp.StrictGreaterThan, sp.GreaterThan)) and cond.rhs == 0
            and cond.lhs.is_Symbol):
        return piecewise
    u = cond.lhs
    return sp.Piecewise(
        (first.xreplace({u: sp.Max(u, 0)}) if first.has(sp.exp) else first, cond),
        (second.xreplace({u: sp.Min(u, 0)}) if second.has(sp.exp) else second, True),
    )
