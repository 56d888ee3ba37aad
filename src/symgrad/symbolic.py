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

Every SymPy step on user-written expressions runs under :func:`budget`, a
per-step time limit (SIGALRM, main thread only) that raises
:class:`TooCostly` instead of hanging; :func:`stabilize` falls back to its
input when the rewrite does not finish in time.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import TypeVar

import sympy as sp

T = TypeVar("T")

#: Seconds one symbolic step (a derivative, a simplification, a solve) may take.
STEP_SECONDS = 2.0


class TooCostly(BaseException):
    """A symbolic step ran past its time budget (a BaseException so SymPy cannot swallow it)."""


_deadlines: list[float] = []  # the active budgets, innermost last


def _on_alarm(signum, frame):
    """Raise TooCostly once the innermost budget has run out."""
    if not _deadlines:
        return
    if time.monotonic() >= min(_deadlines) - 1e-3:
        raise TooCostly
    signal.setitimer(signal.ITIMER_REAL, max(min(_deadlines) - time.monotonic(), 1e-3))


@contextmanager
def budget(seconds: float = STEP_SECONDS):
    """Raise :class:`TooCostly` in the block once ``seconds`` have passed (no limit off the main thread).

    >>> with budget(1.0):
    ...     sp.diff(sp.Symbol("u") ** 3)
    3*u**2
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return
    start = time.monotonic()
    outer = not _deadlines
    if outer:
        previous = signal.signal(signal.SIGALRM, _on_alarm)
        foreign, _ = signal.getitimer(signal.ITIMER_REAL)
        if foreign:  # somebody else's alarm is pending: do not run past it
            seconds = min(seconds, foreign)
    deadline = min([start + seconds, *_deadlines])
    _deadlines.append(deadline)
    signal.setitimer(signal.ITIMER_REAL, max(deadline - start, 1e-3))
    try:
        yield
    finally:
        _deadlines.pop()
        if _deadlines:
            signal.setitimer(signal.ITIMER_REAL, max(min(_deadlines) - time.monotonic(), 1e-3))
        else:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            if foreign:
                left = foreign - (time.monotonic() - start)
                signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3))


def bounded(step: Callable[[], T], fallback: Callable[[], T], seconds: float = STEP_SECONDS) -> T:
    """``step()`` within the time budget, else ``fallback()``."""
    try:
        with budget(seconds):
            return step()
    except TooCostly:
        return fallback()


class Total(sp.Function):
    """The sum of every entry of an array."""

    nargs = 1


class MaskedTotal(sp.Function):
    """The sum of every row of an array weighted by the padding mask ``mask_rows`` (code only)."""

    nargs = 1

    def _numpycode(self, printer) -> str:
        return f"np.sum(mask_rows*({printer._print(self.args[0])}))"


class OnesLike(sp.Function):
    """An array of ones shaped like its argument: a constant derivative as a whole array."""

    nargs = 1

    def _numpycode(self, printer) -> str:
        return f"np.ones_like({printer._print(self.args[0])})"


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

    def _eval_evalf(self, prec):
        return (1 / (1 + sp.exp(-self.args[0])))._eval_evalf(prec)


class Softplus(sp.Function):
    """log(1 + exp(u)), evaluated as logaddexp(0, u)."""

    nargs = 1

    def fdiff(self, argindex=1):
        return Sigmoid(self.args[0])

    def _eval_evalf(self, prec):
        return sp.log(1 + sp.exp(self.args[0]))._eval_evalf(prec)


def stabilize(expr: sp.Expr) -> sp.Expr:
    """Rewrite ``expr`` into forms that stay finite for large arguments (as is if too costly)."""
    return bounded(lambda: _stabilize(expr), lambda: expr)


def _stabilize(expr: sp.Expr) -> sp.Expr:
    """The rewrite behind :func:`stabilize`, without a time budget."""
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
        if isinstance(other, sp.exp) and other.args[0].free_symbols:  # a constant stays as is
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
