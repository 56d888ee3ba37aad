"""The operation registry and its rows, one module per family of operations.

Importing this package registers every row; see :mod:`symgrad.ops.registry`.
"""

from . import (  # noqa: F401  (each module registers its rows)
    activation,
    attention_rows,  # scaled dot-product self-attention
    convolution,
    dense,
    inputs,
    loss,
    normalisation,  # layernorm, batchnorm, embedding, dropout
    recurrence,  # rnn, lstm, gru and the time views
)
from .arrays import ArrayOp, Part, kernel_modules, register_kernels
from .registry import MissingRule, Op, Rule, Term, kinds, register, register_rules, row, rule, rules

__all__ = ["ArrayOp", "Part", "kernel_modules", "register_kernels", "MissingRule", "Op", "Rule", "Term", "kinds", "register", "register_rules", "row",
           "rule", "rules"]
