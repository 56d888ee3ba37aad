"""Rows for the data: the input ``X`` and the column views of its groups (no parameters, no VJP)."""

from __future__ import annotations

from .registry import Op, register


@register
class Input(Op):
    """The input batch ``X``: data, so nothing flows back into it."""

    kind = "input"


@register
class Slice(Op):
    """An input group ``X_g``: a view of some columns of ``X``."""

    kind = "slice"
