"""Evaluate a derivation on concrete small arrays, in SymPy arithmetic.

Contract: :func:`evaluate` runs every :class:`~symgrad.derive.Step` of a
:class:`~symgrad.derive.Derivation` on given values (SymPy matrices of exact
rationals, typically) and returns the value of every step target, so a
derivation can be checked exactly against an independent oracle, with no
floating point and no generated code in between.

Values: ``X`` (N, n_inputs), ``T`` (N, n_outputs), every weight ``W<l>`` as
(units, fan_in) and every bias ``b<l>`` as a (units, 1) column (a 1-D list
or a (1, units) row is accepted and turned into that column).  The batch
size N is read from ``X``.  The weight decay lambda is the spec's value
(as an exact rational) unless ``values`` gives ``weight_decay``.  Input
group slices (``X_a``) and weight blocks (``W2__a1``) are cut from ``X`` and
the weights as :mod:`symgrad.graph` lays them out.

Elementwise steps are evaluated by a recursive walk over the expression
tree with NumPy broadcasting of (N, k), (N, 1), (1, k), (k, 1) and
scalars; functions apply entrywise, ``Total`` sums every entry,
``RowSum``/``LogSumExp`` reduce a row to an (N, 1) column, ``Softmax`` is
row-wise.  ``Sigmoid(u)`` is ``1/(1 + exp(-u))``, ``Softplus(u)`` is
``log(1 + exp(u))``; ``Heaviside(0)`` is taken as 0, as the generated code
``(z > 0)`` does.  Matrix steps are walked the same way (products,
transposes, sums, ``OneMatrix``, block rows).  Results: every target as a
SymPy matrix of its step's shape (bias gradients as (units, 1) columns, the
loss ``L`` as 1x1).

>>> import sympy as sp
>>> from symgrad.spec import Network
>>> from symgrad.derive import derive
>>> d = derive(Network(inputs=1).dense(1).loss("sse").build())
>>> out = evaluate(d, {"X": sp.Matrix([[1], [2]]), "T": sp.Matrix([[0], [1]]),
...                    "W1": sp.Matrix([[3]]), "b1": [1]})
>>> out["L"], out["dL_dW1"], out["dL_db1"]
(Matrix([[26]]), Matrix([[16]]), Matrix([[10]]))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import sympy as sp

from . import naming
from .symbolic import LogSumExp, RowSum, Sigmoid, Softmax, Softplus, Total

__all__ = ["evaluate", "InterpretError"]


class InterpretError(ValueError):
    """A value is missing or has the wrong shape, or an expression is not understood."""


Array = sp.ImmutableMatrix


def evaluate(derivation, values: Mapping[str, object], *, exact: bool = True,
             form: str = "expr", digits: int = 50) -> dict[str, sp.ImmutableMatrix]:
    """The value of every step target of ``derivation`` at ``values``.

    ``form`` picks the textbook ``"expr"`` or the stable ``"code"`` form of
    each step (each form feeds its own later steps).  With ``exact=False``
    every entry is rounded to ``digits`` significant digits after each
    operation, which keeps deep transcendental expressions small.
    """
    if form not in ("expr", "code"):
        raise InterpretError(f"form must be 'expr' or 'code', got {form!r}")
    env = _environment(derivation, values)
    batch = env[naming.INPUT].shape[0]
    scalars = {naming.BATCH: sp.Integer(batch), naming.DECAY: env.pop(naming.DECAY)}
    walker = _Walker(env, scalars, None if exact else digits)
    results: dict[str, sp.ImmutableMatrix] = {}
    for step in derivation.steps:
        expr = step.expr if form == "expr" else step.code_expr
        value = walker.value(expr)
        value = value if isinstance(value, Array) else Array([[value]])
        expected = _expected_shape(step.shape, batch)
        if expected is not None and value.shape != expected:
            if value.shape == (1, 1):  # a constant array (identity steps of a constant)
                value = Array(*expected, lambda i, j: value[0, 0])
            else:
                raise InterpretError(f"step {step.number} ({step.target}) evaluated to shape "
                                     f"{value.shape}, expected {expected}")
        env[step.target] = value
        results[step.target] = value
    return results


# --------------------------------------------------------------------------- values

def _as_array(name: str, value: object) -> sp.ImmutableMatrix:
    if isinstance(value, sp.MatrixBase):
        return Array(value)
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(row, (list, tuple)) for row in value):
            return Array([[sp.sympify(v) for v in row] for row in value])
        return Array([[sp.sympify(v)] for v in value])  # 1-D: a column
    raise InterpretError(f"value of '{name}' must be a SymPy matrix or a list, "
                         f"got {type(value).__name__}")


def _environment(derivation, values: Mapping[str, object]) -> dict:
    graph = derivation.graph
    spec = derivation.spec
    env: dict = {}
    for name in (naming.INPUT, naming.TARGET, *graph.params):
        if name not in values:
            raise InterpretError(f"missing value for '{name}'")
        env[name] = _as_array(name, values[name])
    batch = env[naming.INPUT].shape[0]
    wanted = {naming.INPUT: (batch, spec.n_inputs), naming.TARGET: (batch, spec.n_outputs)}
    for name, shape in graph.params.items():
        if len(shape) == 1:  # a bias: a (units, 1) column
            if env[name].shape == (1, shape[0]):
                env[name] = env[name].T
            wanted[name] = (shape[0], 1)
        else:
            wanted[name] = shape
    for name, shape in wanted.items():
        if env[name].shape != shape:
            raise InterpretError(f"'{name}' has shape {env[name].shape}, expected {shape}")
    for node in graph.nodes:
        if node.op == "slice":
            env[node.name] = env[naming.INPUT][:, node.start:node.start + node.size]
        if node.op == "dense" and len(node.sources) > 1:
            for source, start, stop in graph.blocks(node):
                env[naming.block(node.weight, source)] = env[node.weight][:, start:stop]
    decay = values.get(naming.DECAY, spec.loss.weight_decay)
    env[naming.DECAY] = sp.nsimplify(decay) if isinstance(decay, float) else sp.sympify(decay)
    return env


def _expected_shape(shape: tuple, batch: int) -> tuple[int, int] | None:
    dims = [batch if getattr(d, "name", None) == naming.BATCH else d for d in shape]
    if len(dims) == 0:
        return (1, 1)
    if len(dims) == 1:
        return (int(dims[0]), 1)
    return (int(dims[0]), int(dims[1]))


# --------------------------------------------------------------------------- walking

def _heaviside(u: sp.Expr, *_: sp.Expr) -> sp.Expr:
    return sp.S.One if bool(u > 0) else sp.S.Zero


#: How each entrywise function is evaluated (mathematical definitions).
_ENTRYWISE: dict[type, Callable] = {
    Sigmoid: lambda u: 1 / (1 + sp.exp(-u)),
    Softplus: lambda u: sp.log(1 + sp.exp(u)),
    sp.Heaviside: _heaviside,
}


class _Walker:
    def __init__(self, env: dict, scalars: dict, digits: int | None):
        self.env, self.scalars, self.digits = env, scalars, digits

    def round(self, value):
        if self.digits is None:
            return value
        if isinstance(value, Array):
            return value.applyfunc(lambda e: sp.N(e, self.digits))
        return sp.N(value, self.digits)

    def value(self, expr):
        return self.round(self.walk(expr))

    # entry helpers
    @staticmethod
    def shape_of(values) -> tuple[int, int] | None:
        shape = None
        for v in values:
            if not isinstance(v, Array):
                continue
            if shape is None:
                shape = v.shape
                continue
            dims = []
            for a, b in zip(shape, v.shape):
                if a != b and 1 not in (a, b):
                    raise InterpretError(f"cannot broadcast shapes {shape} and {v.shape}")
                dims.append(max(a, b))
            shape = tuple(dims)
        return shape

    @staticmethod
    def entry(v, i: int, j: int):
        if not isinstance(v, Array):
            return v
        return v[i if v.shape[0] > 1 else 0, j if v.shape[1] > 1 else 0]

    def entrywise(self, function: Callable, values: list):
        shape = self.shape_of(values)
        if shape is None:
            return self.round(function(*values))
        return self.round(Array(*shape, lambda i, j: function(
            *(self.entry(v, i, j) for v in values))))

    # the walk
    def walk(self, expr):
        if isinstance(expr, sp.MatrixExpr):
            return self.matrix(expr)
        if isinstance(expr, sp.Symbol):
            if expr.name in self.scalars:
                return self.scalars[expr.name]
            if expr.name not in self.env:
                raise InterpretError(f"no value for '{expr.name}'")
            return self.env[expr.name]
        if not expr.free_symbols and not expr.has(Total, RowSum, Softmax, LogSumExp):
            return self.round(expr)  # a number: sqrt(2), pi, 1/2
        if isinstance(expr, sp.Add):
            return self.entrywise(lambda *a: sp.Add(*a), [self.walk(a) for a in expr.args])
        if isinstance(expr, sp.Mul):
            return self.entrywise(lambda *a: sp.Mul(*a), [self.walk(a) for a in expr.args])
        if isinstance(expr, sp.Pow):
            return self.entrywise(lambda b, e: b**e, [self.walk(a) for a in expr.args])
        if isinstance(expr, Total):
            inner = self.walk(expr.args[0])
            return self.round(sp.Add(*inner) if isinstance(inner, Array) else inner)
        if isinstance(expr, RowSum):
            inner = self.as_array(self.walk(expr.args[0]))
            return self.round(Array(inner.shape[0], 1, lambda i, _: sp.Add(*inner.row(i))))
        if isinstance(expr, LogSumExp):
            inner = self.as_array(self.walk(expr.args[0]))
            return self.round(Array(inner.shape[0], 1, lambda i, _: sp.log(
                sp.Add(*(sp.exp(v) for v in inner.row(i))))))
        if isinstance(expr, Softmax):
            inner = self.as_array(self.walk(expr.args[0]))
            rows = [[sp.exp(v) for v in inner.row(i)] for i in range(inner.shape[0])]
            return self.round(Array([[e / sp.Add(*row) for e in row] for row in rows]))
        if isinstance(expr, sp.Piecewise):
            return self.piecewise(expr)
        if isinstance(expr, sp.core.relational.Relational):
            # a condition is an array of 1 (true) and 0 (false)
            return self.entrywise(lambda a, b: sp.S.One if bool(expr.func(a, b)) else sp.S.Zero,
                                  [self.walk(expr.lhs), self.walk(expr.rhs)])
        if isinstance(expr, sp.Function) or isinstance(expr, (sp.Max, sp.Min)):
            function = _ENTRYWISE.get(type(expr), expr.func)
            return self.entrywise(function, [self.walk(a) for a in expr.args])
        raise InterpretError(f"cannot evaluate {type(expr).__name__}: {expr}")

    @staticmethod
    def as_array(value):
        return value if isinstance(value, Array) else Array([[value]])

    def piecewise(self, expr: sp.Piecewise):
        pieces = [(self.walk(value), sp.S.One if cond == sp.true else self.walk(cond))
                  for value, cond in expr.args]
        flat = [v for piece in pieces for v in piece]
        shape = self.shape_of(flat)

        def choose(i: int, j: int):
            for value, cond in pieces:
                if bool(self.entry(cond, i, j) > 0):  # 1 or 1.0: true
                    return self.entry(value, i, j)
            raise InterpretError(f"no branch of {expr} applies")

        if shape is None:
            return choose(0, 0)
        return Array(*shape, choose)

    def matrix(self, expr: sp.MatrixExpr):
        if isinstance(expr, sp.MatrixSymbol):
            if expr.name not in self.env:
                raise InterpretError(f"no value for '{expr.name}'")
            return self.env[expr.name]
        if isinstance(expr, sp.OneMatrix):
            rows, cols = (int(self.walk(d)) if isinstance(d, sp.Expr) else int(d)
                          for d in expr.shape)
            return Array.ones(rows, cols)
        if isinstance(expr, sp.ZeroMatrix):
            rows, cols = (int(self.walk(d)) for d in expr.shape)
            return Array.zeros(rows, cols)
        if isinstance(expr, sp.Transpose):
            return self.as_array(self.walk(expr.arg)).T
        if isinstance(expr, sp.MatAdd):
            parts = [self.walk(a) for a in expr.args]
            total = parts[0]
            for part in parts[1:]:
                total = total + part
            return self.round(total)
        if isinstance(expr, sp.MatMul):
            result = None
            for factor in expr.args:
                value = self.walk(factor)
                result = value if result is None else result * value
            return self.round(result)
        if isinstance(expr, sp.HadamardProduct):
            return self.entrywise(lambda *a: sp.Mul(*a), [self.walk(a) for a in expr.args])
        if isinstance(expr, sp.BlockMatrix):
            blocks = expr.blocks
            rows = [Array.hstack(*(self.as_array(self.walk(blocks[i, j]))
                                   for j in range(blocks.shape[1])))
                    for i in range(blocks.shape[0])]
            return Array.vstack(*rows)
        raise InterpretError(f"cannot evaluate {type(expr).__name__}: {expr}")
