"""The operation registry: one row per tensor operation.

Contract: a row (:class:`Op`) knows one operation of the graph
(:mod:`symgrad.graph`): its *forward form* (the steps it adds to the forward
pass), its *vector-Jacobian product* (the terms it sends back to each of its
sources and parameters, given dL/d(its output)), and the rules those steps
apply, each with a one-line description for the printed derivation and a
comment for the generated code.  Shapes come from the graph; the LaTeX and
NumPy views of a structured operation are the ``_latex``/``_numpycode``
methods of its SymPy expression classes, so both printers dispatch on type.
Each row's VJP carries a proof obligation, checked in the test suite: it
equals ``sympy.diff`` of the operation written out in scalars.

The chain rule itself (:func:`symgrad.derive.derive`) is one loop over the
graph in reverse that asks each row for its terms; an operation with no row
is a :class:`MissingRule` error, never a silent zero.

>>> from symgrad import ops
>>> ops.row("dense").kind
'dense'
>>> ops.row("transformer")
Traceback (most recent call last):
...
symgrad.ops.registry.MissingRule: no registry row for the operation 'transformer'
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import sympy as sp

if TYPE_CHECKING:  # pragma: no cover
    from ..derive import _Deriver
    from ..graph import Node


class MissingRule(LookupError):
    """An operation, or a rule, that no registry row defines."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Term:
    """One term of dL/d(target): a source's share of the chain rule through one operation."""

    target: str  # a node or a parameter
    expr: sp.Basic
    rule: str
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    """A rule a step applies: what it means (derivation) and the comment beside its code."""

    description: str
    comment: str  # str.format fields: layer, wrt (the x of dL/dx), kind, derivative
    latex: str = ""  # the description in LaTeX for the document (default: the plain one)


class Op:
    """One registry row.  Subclasses set ``kind`` and ``rules``, and override the hooks."""

    kind: ClassVar[str] = ""
    rules: ClassVar[dict[str, Rule]] = {}

    def forward(self, node: Node, d: _Deriver) -> None:
        """Add the forward steps of ``node`` (none by default: inputs and views)."""

    def vjp(self, node: Node, d: _Deriver) -> Iterable[Term]:
        """Terms of dL/d(source) and dL/d(parameter), given dL/d(node) as ``d.gradient(node)``."""
        return ()


_ROWS: dict[str, Op] = {}
_RULES: dict[str, Rule] = {}


def register(cls: type[Op]) -> type[Op]:
    """Class decorator: add a row (and its rules) to the registry."""
    for rule in cls.rules:
        if rule in _RULES:
            raise ValueError(f"rule {rule!r} is defined twice")
    _ROWS[cls.kind] = cls()
    _RULES.update(cls.rules)
    return cls


def row(kind: str) -> Op:
    """The registry row of an operation."""
    try:
        return _ROWS[kind]
    except KeyError:
        raise MissingRule(f"no registry row for the operation {kind!r}") from None


def rule(name: str) -> Rule:
    """A rule by name, from whichever row defines it."""
    try:
        return _RULES[name]
    except KeyError:
        raise MissingRule(f"no registry row defines the rule {name!r}") from None


def kinds() -> list[str]:
    """Every operation that has a row, in registration order."""
    return list(_ROWS)


def rules() -> dict[str, Rule]:
    """Every rule, by name."""
    return dict(_RULES)


register_rules = _RULES.update  # rules of the chain rule itself (sums over consumers)
