"""The memory plan of generated code: write over arrays that are no longer needed.

Contract: :func:`plan` turns the steps of one generated function, in order,
into lines of code.  It changes where values are stored, never what is
computed.  Two rewrites, both the ones a careful person makes by hand:

* a sum of matrix terms is accumulated into the fresh result of its first
  product: ``z1 = X @ W1.T`` then ``z1 += b1``;
* an elementwise step is written over one of its operands when that array
  belongs to the function (the result of an earlier line, never an input,
  target or parameter), has the step's shape, occurs once in the step, and
  nothing later reads it: ``a1 = np.tanh(z1, out=z1)``,
  ``delta1 = np.multiply(dL_da1, a1 > 0, out=dL_da1)``; a compound factor
  such as ``1 - a1**2`` is computed into one temporary, in place
  (:meth:`~symgrad.printing.ArrayCodePrinter.into`), not two.

Names that share storage after such a rewrite are tracked together, so an
array is dead only when every name for it is.  Anything the rewrite cannot
express as NumPy calls with ``out=`` is printed as it is.

>>> import sympy as sp
>>> from symgrad.printing import ArrayCodePrinter
>>> from symgrad.derive import Step
>>> N, z1, dL_da1 = sp.Symbol("N"), sp.Symbol("z1"), sp.Symbol("dL_da1")
>>> steps = [Step(1, "forward", "a1", sp.tanh(z1), "activation_forward", (N, 3), 1),
...          Step(2, "backward", "delta1", dL_da1 * (1 - sp.Symbol("a1") ** 2), "activation",
...               (N, 3), 1)]
>>> for lines in plan(steps, ArrayCodePrinter(), live_out={"a1", "delta1"},
...                  owned={"z1": (N, 3), "dL_da1": (N, 3)}):
...     for line in lines:
...         print(line)
a1 = np.tanh(z1, out=z1)
da1_dz1 = np.square(a1)
np.subtract(1, da1_dz1, out=da1_dz1)
delta1 = np.multiply(dL_da1, da1_dz1, out=dL_da1)
del da1_dz1
"""

from __future__ import annotations

import sympy as sp

from . import naming


def reads(expr) -> frozenset[str]:
    """The variables a line of code reads."""
    names = set()
    for symbol in _variables(expr):
        name = str(symbol.name)
        name = name.split("__")[0]  # a block of a weight matrix reads the matrix
        names.add(naming.INPUT if name.startswith("X_") else name)
    return frozenset(names)


def _variables(expr):
    """Symbols and matrix symbols in ``expr``, not counting the sizes in shapes."""
    if isinstance(expr, (sp.Symbol, sp.MatrixSymbol)):
        yield expr
    elif not isinstance(expr, sp.OneMatrix):
        for arg in expr.args:
            yield from _variables(arg)


def plan(steps, printer, *, live_out, owned=None, free=False) -> list[tuple[str, ...]]:
    """The statements of every step; a step of phase "loss" gets none (the template prints it).

    ``live_out``: names read after the last step (returned values).  ``owned``:
    arrays, with their shapes, that the function made before the first step.
    ``free``: after its last reader, ``del`` each array the function made, so a
    long backward pass holds only the deltas it still needs.
    """
    buffer = {name: name for name in (owned or {})}  # name -> the array it is stored in
    shape = dict(owned or {})
    step_reads = [reads(step.code_expr) for step in steps]
    last_read = {}  # name -> index of the last step reading it (len(steps) if returned)
    for index, names in enumerate(step_reads):
        last_read.update(dict.fromkeys(names, index))
    last_read.update(dict.fromkeys(live_out, len(steps)))
    live = _Live(last_read)
    for name in buffer:
        live.store(name, name)
    out, made = [], set()  # made: the arrays this function computed
    for index, step in enumerate(steps):
        if step.phase == "loss":
            out.append(())
            continue
        live.now = index
        expr = step.code_expr
        statements, home = None, step.target
        if isinstance(expr, sp.MatAdd):
            statements = _accumulate(step, printer)
        elif isinstance(expr, sp.Symbol) and expr.name in buffer:
            home = buffer[expr.name]  # identity: another name for the same array
        elif getattr(expr, "view", False):  # a reshape: a view of its operand's array
            home = buffer.get(expr.args[0].name)
        elif not isinstance(expr, sp.MatrixExpr):
            written = _in_place(step, printer, buffer, shape, live, step_reads[index])
            if written is not None:
                statements, home = written
        if home is not None:  # None: a view of an array the function does not own
            buffer[step.target] = home
            live.store(step.target, home)
            shape.setdefault(home, tuple(step.shape))
        if statements is None:
            statements = (f"{step.target} = {printer.doprint(expr)}",)
        made.add(step.target)
        if free:  # arrays whose last reader this was: drop every name bound to them
            dying = {buffer[name] for name in step_reads[index] if name in buffer}
            dead = sorted(name for name, home in buffer.items()
                          if home in dying and home not in live and name in made
                          and name != step.target)
            if dead:
                statements = (*statements, f"del {', '.join(dead)}")
                for name in dead:
                    del buffer[name]
        out.append(statements)
    return out


class _Live:
    """Which arrays are read after the current step: linear in the number of steps."""

    def __init__(self, last_read: dict[str, int]):
        self.last_read, self.until, self.now = last_read, {}, -1

    def store(self, name: str, home: str) -> None:
        """``name`` is stored in ``home``: the array lives as long as its last reader."""
        self.until[home] = max(self.until.get(home, -1), self.last_read.get(name, -1))

    def __contains__(self, home: str) -> bool:
        return self.until.get(home, -1) > self.now


def _accumulate(step, printer) -> tuple[str, ...] | None:
    """``target = A @ B`` then ``target += term`` for each further term of a matrix sum."""
    terms = list(step.code_expr.args)
    first = next((t for t in terms if _fresh_product(t) and tuple(t.shape) == tuple(step.shape)),
                 None)
    if first is None:
        return None
    terms.remove(first)
    lines = [f"{step.target} = {printer.doprint(first)}"]
    for term in terms:
        if _negated(term):
            lines.append(f"{step.target} -= {printer.doprint(-term)}")
        else:
            lines.append(f"{step.target} += {printer.doprint(term)}")
    return tuple(lines)


def _negated(term) -> bool:
    """A matrix term with a negative numeric coefficient (cheap: no SymPy simplification)."""
    if isinstance(term, sp.MatMul):
        return bool(term.args and term.args[0].is_Number and term.args[0] < 0)
    return False


def _fresh_product(term) -> bool:
    """A product of matrices (or a row of them) that NumPy returns as a new array."""
    if isinstance(term, sp.BlockMatrix):
        return True
    return isinstance(term, sp.MatMul) and len(term.args) >= 2 and all(
        isinstance(a, sp.MatrixExpr) and not isinstance(a, sp.OneMatrix) for a in term.args)


def _in_place(step, printer, buffer, shape, live, read_now):
    """(statements, array written) for the step over a dead operand; None if none qualifies."""
    expr = step.code_expr
    symbols = sorted((s for s in expr.atoms(sp.Symbol) if s.name in buffer),
                     key=lambda s: s.name)
    for symbol in symbols:
        home = buffer[symbol.name]
        others = {buffer[name] for name in read_now if name in buffer and name != symbol.name}
        if home in live or home in others or shape.get(home) != tuple(step.shape):
            continue
        if _count(expr, symbol) != 1:
            continue
        path = _path(expr, symbol)
        scratch = f"da{step.layer}_dz{step.layer}" \
            if step.rule == "activation" and step.layer is not None else f"{step.target}_factor"
        statements = _statements(step.target, symbol.name, path, printer, scratch) \
            if path else None
        if statements is not None:
            return statements, home
    return None


def _count(expr, symbol) -> int:
    return sum(1 for node in sp.preorder_traversal(expr) if node == symbol)


def _path(expr, symbol):
    """The operations from ``symbol`` up to ``expr``: ("mul" | "add", rest) or ("call", node,
    child); None if one of them is not a NumPy call with ``out=``."""
    if expr == symbol:
        return []
    if isinstance(expr, (sp.Mul, sp.Add)):
        args = list(expr.args)
        child = next(arg for arg in args if arg.has(symbol))
        args.remove(child)
        inner = _path(child, symbol)
        kind = "mul" if isinstance(expr, sp.Mul) else "add"
        return None if inner is None else inner + [(kind, expr.func(*args))]
    if isinstance(expr, (sp.Function, sp.Max, sp.Min)) and not isinstance(expr, sp.Piecewise):
        holders = [arg for arg in expr.args if arg.has(symbol)]
        if len(holders) == 1:
            inner = _path(holders[0], symbol)
            return None if inner is None else inner + [("call", expr, holders[0])]
    return None


def _statements(target, name, path, printer, scratch) -> tuple[str, ...] | None:
    lines = []
    if path and path[0][0] == "mul" and not path[0][1].is_Number:
        factor = printer.into(path[0][1], scratch)
        if factor is not None and len(factor) > 1:  # a compound factor: one temporary, not two
            lines = factor + [f"{target} = np.multiply({name}, {scratch}, out={name})",
                              f"del {scratch}"]
            path = path[1:]
    for operation in path:
        first = not lines
        operand = name if first else target
        kind = operation[0]
        if kind == "call":
            call = printer.call_into(operation[1], operation[2], operand, operand)
            if call is None:
                return None
            lines.append(f"{target} = {call}" if first else call)
            continue
        rest = operation[1]
        if kind == "mul" and rest == -1:
            call = f"np.negative({operand}, out={operand})"
            lines.append(f"{target} = {call}" if first else call)
            continue
        if kind == "mul" and isinstance(rest, sp.Pow) and rest.exp == -1:
            ufunc, symbol, value = "divide", "/", printer.doprint(rest.base)
        elif kind == "mul":
            ufunc, symbol, value = "multiply", "*", printer.factor(rest)
        elif rest.could_extract_minus_sign():
            ufunc, symbol, value = "subtract", "-", printer.doprint(-rest)
        else:
            ufunc, symbol, value = "add", "+", printer.doprint(rest)
        if first:
            lines.append(f"{target} = np.{ufunc}({name}, {value}, out={name})")
        else:
            lines.append(f"{target} {symbol}= {value}")
    return tuple(lines)
