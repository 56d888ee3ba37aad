"""The base of structured operations on whole arrays, and the kernels behind their NumPy views.

Contract: an :class:`ArrayOp` is an ``sp.Function`` with a fixed number of
arguments, first ``arrays`` array symbols, then integer hyper-parameters.
Each family of operations (convolution, recurrence, normalisation, ...)
subclasses it in its own module with ``kernels`` set to the module of NumPy
helpers its views call; that module has a ``HELPERS`` table (class name ->
helper names, dependencies first) and is listed by :func:`kernel_modules`,
so the code generator can paste the helpers a module needs, and nothing
else.  A backward pass that yields several arrays at once (one reverse loop
over time gives every gradient of a recurrent layer) is one step whose value
is a tuple; :class:`Part` reads one of them.

>>> import sympy as sp
>>> from symgrad.printing import ArrayCodePrinter
>>> ArrayCodePrinter().doprint(Part(sp.Symbol("bptt3"), 1))
'bptt3[1]'
"""

from __future__ import annotations

import types

import numpy as np
import sympy as sp
from sympy.printing.precedence import PRECEDENCE

_KERNEL_MODULES: list[types.ModuleType] = []


def register_kernels(module: types.ModuleType) -> types.ModuleType:
    """List a module of NumPy helpers for the code generator (once)."""
    if module not in _KERNEL_MODULES:
        _KERNEL_MODULES.append(module)
    return module


def kernel_modules() -> list[types.ModuleType]:
    """Every module of helpers, in registration order."""
    return list(_KERNEL_MODULES)


def lookup(table, symbol):
    """``table[symbol]``, or ``table[symbol.name]``."""
    return table[symbol] if symbol in table else table[symbol.name]


class ArrayOp(sp.Function):
    """Base of the array operations: ``arrays`` leading array arguments, then integers."""

    arrays = 1
    kernels: types.ModuleType | None = None  # the module of the helpers the NumPy view calls

    @property
    def precedence(self) -> int:
        """How tightly the LaTeX view binds: a function call unless a class says otherwise."""
        return PRECEDENCE["Func"]

    @property
    def hyper(self) -> tuple[int, ...]:
        """The integer hyper-parameters, as Python ints."""
        return tuple(int(a) for a in self.args[self.arrays:])

    def scalar_at(self, values) -> np.ndarray:
        """The scalar form with each array symbol replaced by ``values[symbol]``."""
        arrays = [lookup(values, a) for a in self.args[:self.arrays]]
        return type(self).scalar(*arrays, *self.hyper)

    def shape_at(self, shapes) -> tuple:
        """The output shape given ``shapes[symbol]`` for each array argument."""
        arrays = [lookup(shapes, a) for a in self.args[:self.arrays]]
        return type(self).shape(*arrays, *self.hyper)

    def _call(self, printer, *parts, arrays=None) -> str:
        """``helper(arrays..., parts...)``, recording the helpers in ``printer.helpers``."""
        names = self.kernels.HELPERS[type(self).__name__]
        helpers = getattr(printer, "helpers", None)
        if isinstance(helpers, set):
            helpers.update(names)
        if arrays is None:
            arrays = [printer._print(a) for a in self.args[:self.arrays]]
        return f"{names[-1]}({', '.join(list(arrays) + list(parts))})"


class Part(sp.Function):
    """Entry ``i`` of a step whose value is a tuple of arrays: ``Part(tape, i)``."""

    nargs = 2
    view = True  # indexing a tuple: the memory plan treats it as the tuple's storage

    def _numpycode(self, printer) -> str:
        return f"{printer._print(self.args[0])}[{int(self.args[1])}]"

    def _sympystr(self, printer) -> str:
        return f"{printer._print(self.args[0])}[{int(self.args[1])}]"

    def _latex(self, printer) -> str:
        return rf"{printer._print(self.args[0])}_{{[{int(self.args[1])}]}}"
