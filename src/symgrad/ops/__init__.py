"""The operation registry and its rows, one module per family of operations.

Importing this package registers every row; see :mod:`symgrad.ops.registry`.
"""

from . import activation, convolution, dense, inputs, loss  # noqa: F401  (each module registers its rows)
from .registry import MissingRule, Op, Rule, Term, kinds, register, register_rules, row, rule, rules

__all__ = ["MissingRule", "Op", "Rule", "Term", "kinds", "register", "register_rules", "row",
           "rule", "rules"]
