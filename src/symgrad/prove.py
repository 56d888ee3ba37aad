"""Prove a hand-written gradient formula equal to the derived one, or refute it.

Contract: :func:`prove_gradient_formula` takes a formula for one parameter's
gradient written in the names the derivation uses (``"delta2.T @ a1"``,
``"delta1.T @ X + weight_decay * W1"``, ``"delta2.sum(axis=0)"``) and returns
a :class:`ProofResult`:

* ``proved``: at concrete batch sizes (two values of N, chosen unlike every
  layer width so that a transposition cannot type-check by accident) and the
  network's own layer sizes, every entry of ``formula - derived gradient`` is
  zero as a polynomial (or rational function) in independent symbols.  Every
  quantity of the derivation starts as a matrix of free symbols; when the
  difference is not zero, the latest step whose definition is algebraic
  (dense layers, deltas written in the activation, loss derivatives, the
  backprop products; not ``a = tanh(z)``) is substituted by its definition,
  and the test is repeated.  No floating point: exact SymPy arithmetic.
* ``counterexample``: concrete small rational inputs, targets and parameters
  (consistent values of every quantity, computed from the derivation by
  :func:`symgrad.interpret.evaluate`, exactly or to 40 significant digits when
  an activation is transcendental) where an entry of the formula differs from
  the derived gradient: the entry, the sizes and the values are reported.
* ``wrong_shape``: the formula's shape is not the parameter's (or its
  matrix products do not type-check).
* ``agrees_numerically``: no symbolic proof was found (the identity would
  need a relation such as ``a = sigmoid(z)``), but no counterexample either
  at several random points, to 40 digits.  Not a proof; said so.

The formula language is a small, safe subset of NumPy, parsed with
:mod:`ast` against a whitelist and never evaluated by Python or SymPy: names
of derivation quantities (``X``, ``T``, ``X_<group>``, ``z1``, ``a1``,
``dL_da1``, ``delta2``, ``W2``, ``b2``, ``W2__a1`` blocks, other gradients
``dL_dW1``), ``N`` (the batch size), ``weight_decay`` or ``lam`` (lambda),
numbers, ``+ - *`` (elementwise, broadcasting like NumPy), ``/`` and ``**``
by a number, ``@``, ``.T``, ``sum(x, axis=0)``, ``np.sum(x, axis=0)``,
``x.sum(axis=0)`` and ``x.sum()``.  Bias gradients are vectors; a column or
row of the same length is accepted.

>>> from symgrad.spec import Network
>>> spec = Network("net", inputs=3).dense(4, "tanh").dense(2, "sigmoid").loss("sse").build()
>>> prove_gradient_formula(spec, "W2", "delta2.T @ a1").status
'proved'
>>> prove_gradient_formula(spec, "W1", "((delta2 @ W2) * (1 - a1 * a1)).T @ X").status
'proved'
>>> result = prove_gradient_formula(spec, "b2", "delta2.sum(axis=1)")
>>> result.status
'wrong_shape'
>>> prove_gradient_formula(spec, "W1", "(delta2 @ W2).T @ X").status
'counterexample'
"""

from __future__ import annotations

import ast
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy as sp

from . import naming
from .symbolic import RowSum, Total

__all__ = ["FormulaError", "ProofResult", "prove_gradient_formula", "parse_formula"]

DIGITS = 40
_SYMBOLIC_SECONDS = 20.0


class FormulaError(ValueError):
    """A formula that cannot be read: bad syntax, an unknown name or operation."""


# --------------------------------------------------------------------------- arrays


@dataclass(frozen=True)
class _Arr:
    """A NumPy-like array of SymPy entries: shape (), (k,) or (r, c); data row-major."""

    shape: tuple
    data: tuple

    @staticmethod
    def of(matrix, vector: bool = False) -> _Arr:
        rows, cols = matrix.shape
        data = tuple(matrix[i, j] for i in range(rows) for j in range(cols))
        if vector:
            return _Arr((rows * cols,), data)
        return _Arr((rows, cols), data)

    @staticmethod
    def scalar(value) -> _Arr:
        return _Arr((), (sp.sympify(value),))

    def at(self, index: tuple):
        flat = 0
        for i, n in zip(index, self.shape):
            flat = flat * n + i
        return self.data[flat]

    def matrix(self) -> sp.Matrix:
        if len(self.shape) == 2:
            return sp.Matrix(self.shape[0], self.shape[1], list(self.data))
        if len(self.shape) == 1:
            return sp.Matrix(self.shape[0], 1, list(self.data))
        return sp.Matrix([[self.data[0]]])

    def map(self, function) -> _Arr:
        return _Arr(self.shape, tuple(function(v) for v in self.data))


def _broadcast(a: _Arr, b: _Arr, op) -> _Arr:
    try:
        shape = tuple(np.broadcast_shapes(a.shape, b.shape))
    except ValueError:
        raise _ShapeError(f"cannot broadcast shapes {a.shape} and {b.shape}") from None

    def pick(arr: _Arr, index: tuple):
        offset = len(index) - len(arr.shape)
        return arr.at(tuple(0 if n == 1 else index[offset + k] for k, n in enumerate(arr.shape)))

    data = tuple(op(pick(a, i), pick(b, i)) for i in itertools.product(*map(range, shape)))
    return _Arr(shape, data)


def _matmul(a: _Arr, b: _Arr) -> _Arr:
    if not a.shape or not b.shape:
        raise _ShapeError("@ needs arrays, not scalars")
    A = a.matrix().T if len(a.shape) == 1 else a.matrix()  # a 1-D left operand is a row
    B = b.matrix()
    if A.shape[1] != B.shape[0]:
        raise _ShapeError(f"cannot multiply shapes {a.shape} @ {b.shape}")
    product = A * B
    if len(a.shape) == 1 and len(b.shape) == 1:
        return _Arr.scalar(product[0, 0])
    if len(a.shape) == 1 or len(b.shape) == 1:
        return _Arr((product.shape[0] * product.shape[1],), tuple(product))
    return _Arr.of(product)


def _transpose(a: _Arr) -> _Arr:
    if len(a.shape) < 2:
        return a
    return _Arr.of(a.matrix().T)


def _sum(a: _Arr, axis) -> _Arr:
    if axis is None or not a.shape:
        return _Arr.scalar(sp.Add(*a.data))
    if axis < 0:
        axis += len(a.shape)
    if axis >= len(a.shape):
        raise _ShapeError(f"axis {axis} is out of range for shape {a.shape}")
    if len(a.shape) == 1:
        return _Arr.scalar(sp.Add(*a.data))
    m = a.matrix()
    if axis == 0:
        return _Arr((m.shape[1],), tuple(sp.Add(*m.col(j)) for j in range(m.shape[1])))
    return _Arr((m.shape[0],), tuple(sp.Add(*m.row(i)) for i in range(m.shape[0])))


class _ShapeError(Exception):
    """Shapes that do not fit: the formula is wrong, not unreadable."""


# --------------------------------------------------------------------------- parsing


_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.MatMult: "@",
           ast.Pow: "**"}


def parse_formula(text: str, names: set[str] | frozenset[str]) -> ast.expr:
    """Parse and check ``text`` against the whitelist; the AST of the expression."""
    if len(text) > 2000:
        raise FormulaError("formula is too long (2000 characters at most)")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise FormulaError(f"cannot parse {text!r}: {exc.msg}") from None
    _check(tree.body, names)
    return tree.body


def _check(node: ast.AST, names) -> None:
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _BINOPS:
            raise FormulaError(f"operator {type(node.op).__name__} is not supported")
        _check(node.left, names)
        _check(node.right, names)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, (ast.USub, ast.UAdd)):
            raise FormulaError(f"operator {type(node.op).__name__} is not supported")
        _check(node.operand, names)
    elif isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise FormulaError(f"constant {node.value!r} is not a number")
    elif isinstance(node, ast.Name):
        if node.id not in names:
            import difflib

            hint = difflib.get_close_matches(node.id, sorted(names), n=1)
            suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
            raise FormulaError(f"unknown name '{node.id}'{suggestion} "
                               f"(known: {', '.join(sorted(names))})")
    elif isinstance(node, ast.Attribute):
        if node.attr != "T":
            raise FormulaError(f"attribute '.{node.attr}' is not supported (only .T and "
                               ".sum(axis=...))")
        _check(node.value, names)
    elif isinstance(node, ast.Call):
        operand, _ = _sum_call(node)
        _check(operand, names)
    else:
        raise FormulaError(f"{type(node).__name__} is not supported in a formula (names, "
                           "numbers, + - * / ** @, .T and sums only)")


def _sum_call(node: ast.Call) -> tuple[ast.expr, int | None]:
    """The summed operand and the axis of a supported sum call."""
    func = node.func
    numpy_sum = isinstance(func, ast.Attribute) and func.attr == "sum" and \
        isinstance(func.value, ast.Name) and func.value.id in ("np", "numpy")
    builtin_sum = isinstance(func, ast.Name) and func.id == "sum"
    method_sum = isinstance(func, ast.Attribute) and func.attr == "sum" and not numpy_sum
    if not (numpy_sum or builtin_sum or method_sum):
        raise FormulaError("only sum(x, axis=k), np.sum(x, axis=k) and x.sum(axis=k) can be "
                           "called")
    args = list(node.args)
    operand = func.value if method_sum else (args.pop(0) if args else None)
    if operand is None:
        raise FormulaError("sum() needs an argument")
    axis = None
    for keyword in node.keywords:
        if keyword.arg != "axis":
            raise FormulaError(f"sum() takes only axis=, not {keyword.arg}=")
        args.append(keyword.value)
    if len(args) > 1:
        raise FormulaError("sum() takes one array and an axis")
    if args:
        value = args[0]
        if isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.USub) and \
                isinstance(value.operand, ast.Constant):
            value = ast.Constant(-value.operand.value)
        if not (isinstance(value, ast.Constant) and isinstance(value.value, int)
                and not isinstance(value.value, bool)):
            raise FormulaError("axis must be an integer")
        axis = value.value
    return operand, axis


class _Evaluator:
    def __init__(self, env: dict[str, _Arr]):
        self.env = env

    def __call__(self, node: ast.expr) -> _Arr:
        if isinstance(node, ast.Name):
            return self.env[node.id]
        if isinstance(node, ast.Constant):
            value = node.value
            return _Arr.scalar(sp.Integer(value) if isinstance(value, int)
                               else sp.nsimplify(value, rational=True))
        if isinstance(node, ast.UnaryOp):
            operand = self(node.operand)
            return operand.map(lambda v: -v) if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.Attribute):
            return _transpose(self(node.value))
        if isinstance(node, ast.Call):
            operand, axis = _sum_call(node)
            return _sum(self(operand), axis)
        left, right = self(node.left), self(node.right)
        op = _BINOPS[type(node.op)]
        if op == "@":
            return _matmul(left, right)
        if op == "+":
            return _broadcast(left, right, lambda a, b: a + b)
        if op == "-":
            return _broadcast(left, right, lambda a, b: a - b)
        if op == "*":
            return _broadcast(left, right, lambda a, b: a * b)
        if op == "/":
            if right.shape:
                raise FormulaError("divide only by a number or N, not by an array")
            return _broadcast(left, right, lambda a, b: a / b)
        exponent = right.data[0] if not right.shape else None
        if exponent is None or not (exponent.is_Integer and exponent >= 0):
            raise FormulaError("** takes a non-negative integer exponent")
        return left.map(lambda v: v ** exponent)


# --------------------------------------------------------------------------- the result


@dataclass
class ProofResult:
    """The verdict on one formula."""

    param: str
    formula: str
    status: str  # proved | counterexample | wrong_shape | agrees_numerically
    message: str
    batch_sizes: tuple[int, ...] = ()
    substitutions: list[str] = field(default_factory=list)
    counterexample: dict | None = None

    @property
    def proved(self) -> bool:
        return self.status == "proved"

    @property
    def holds(self) -> bool:
        """True unless a counterexample or a shape error was found."""
        return self.status in ("proved", "agrees_numerically")

    def __str__(self) -> str:
        head = {"proved": "PROVED", "counterexample": "COUNTEREXAMPLE",
                "wrong_shape": "WRONG SHAPE",
                "agrees_numerically": "NOT PROVED (agrees numerically)"}[self.status]
        lines = [f"{head}: dL/d{self.param} = {self.formula}", f"  {self.message}"]
        ce = self.counterexample
        if ce:
            lines.append(f"  sizes: N={ce['N']}, " + ", ".join(
                f"{k} {tuple(v)}" for k, v in ce["shapes"].items()))
            lines.append(f"  entry {self.param}{list(ce['entry'])}: formula gives "
                         f"{ce['formula_value']}, the derivation gives {ce['derived_value']}")
            lines.append("  at:")
            for name, value in ce["values"].items():
                count = sum(len(row) for row in value)
                shown = _show(value) if count <= 36 else \
                    f"({len(value)}x{len(value[0])}, in the JSON output)"
                lines.append(f"    {name} = {shown}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"param": self.param, "formula": self.formula, "status": self.status,
                "proved": self.proved, "holds": self.holds, "message": self.message,
                "batch_sizes": list(self.batch_sizes), "substitutions": self.substitutions,
                "counterexample": self.counterexample}


def _show(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


# --------------------------------------------------------------------------- proving


def _derivation(spec):
    from .derive import derivation_of

    return derivation_of(spec)


def _algebraic(expr) -> bool:
    """No transcendental or piecewise function: a rational function of its inputs."""
    for node in sp.preorder_traversal(expr):
        if isinstance(node, (RowSum, Total)):
            continue
        if isinstance(node, (sp.Function, sp.Piecewise, sp.Max, sp.Min, sp.Abs,
                             sp.core.relational.Relational)):
            return False
        if isinstance(node, sp.Pow) and not node.exp.is_Integer:
            return False
    return True


class _Problem:
    """Names, shapes and steps of a derivation at one batch size."""

    def __init__(self, derivation, n: int):
        self.derivation, self.n = derivation, n
        graph, spec = derivation.graph, derivation.spec
        self.graph = graph
        self.steps = {s.target: s for s in derivation.steps if s.phase != "loss"}
        self.shapes: dict[str, tuple[int, int]] = {
            naming.INPUT: (n, spec.n_inputs), naming.TARGET: (n, spec.n_outputs)}
        for name, shape in graph.params.items():
            self.shapes[name] = (shape[0], shape[1]) if len(shape) == 2 else (shape[0], 1)
        for step in self.steps.values():
            dims = [n if getattr(d, "name", None) == naming.BATCH else int(d) for d in step.shape]
            self.shapes[step.target] = (dims[0], dims[1]) if len(dims) == 2 else (dims[0], 1)
        self.biases = {name for name, shape in graph.params.items() if len(shape) == 1}
        self.decay = sp.nsimplify(spec.loss.weight_decay, rational=True)

    def names(self) -> set[str]:
        out = set(self.shapes) | {naming.BATCH, naming.DECAY, "lam"}
        for node in self.graph.nodes:
            if node.op == "slice":
                out.add(node.name)
            if node.op == "dense" and len(node.sources) > 1:
                out |= {naming.block(node.weight, s) for s in node.sources}
        return out

    def walker_env(self, values: dict) -> dict:
        """Leaves, slices and blocks for the interpreter's walker."""
        env = dict(values)
        for node in self.graph.nodes:
            if node.op == "slice":
                env[node.name] = env[naming.INPUT][:, node.start:node.start + node.size]
            if node.op == "dense" and len(node.sources) > 1:
                for source, start, stop in self.graph.blocks(node):
                    env[naming.block(node.weight, source)] = env[node.weight][:, start:stop]
        return env

    def formula_env(self, env: dict) -> dict[str, _Arr]:
        out = {}
        for name, value in env.items():
            if isinstance(value, sp.MatrixBase):
                out[name] = _Arr.of(value, vector=name in self.biases or
                                    (name.startswith("dL_db") and name[4:] in self.biases))
        out[naming.BATCH] = _Arr.scalar(self.n)
        out[naming.DECAY] = out["lam"] = _Arr.scalar(self.decay)
        return out

    def walk(self, env: dict, expr):
        from .interpret import _Walker

        walker = _Walker(env, {naming.BATCH: sp.Integer(self.n), naming.DECAY: self.decay},
                         None)
        value = walker.value(expr)
        return value if isinstance(value, sp.MatrixBase) else sp.ImmutableMatrix([[value]])


def _fit(param: str, problem: _Problem, value: _Arr) -> _Arr | str:
    """The formula's value in the parameter's shape, or a message why it is not."""
    shape = problem.derivation.graph.params[param]
    if value.shape == tuple(shape):
        return value
    if len(shape) == 1 and value.shape in ((shape[0], 1), (1, shape[0])):
        return _Arr(tuple(shape), value.data)
    hint = ""
    if len(shape) == 2 and value.shape == (shape[1], shape[0]) and shape[0] != shape[1]:
        hint = " (the transpose)"
    elif problem.n in value.shape:
        hint = f" (one row per sample: sum over the batch, axis=0, N={problem.n})"
    return f"the formula has shape {value.shape}, the gradient of {param} has shape " \
           f"{tuple(shape)}{hint}"


def _is_zero(d) -> bool:
    if d == 0:
        return True
    e = sp.expand(d)
    if e == 0:
        return True
    return sp.cancel(sp.together(e)) == 0


def _batch_sizes(derivation) -> tuple[int, int]:
    widths = {d for shape in derivation.graph.params.values() for d in shape}
    widths |= {derivation.spec.n_inputs, derivation.spec.n_outputs}
    sizes = [n for n in range(2, 40) if n not in widths]
    return sizes[0], sizes[1]


def prove_gradient_formula(spec, param: str, formula: str, *, seed: int = 0,
                           points: int = 3) -> ProofResult:
    """Prove ``dL/d(param) = formula`` or find a counterexample (see the module docstring)."""
    derivation = _derivation(spec)
    if param not in derivation.gradients:
        raise FormulaError(f"unknown parameter '{param}' (parameters: "
                           f"{', '.join(derivation.gradients)})")
    sizes = _batch_sizes(derivation)
    tree = parse_formula(formula, _Problem(derivation, sizes[0]).names())
    rng = np.random.default_rng(seed)
    substitutions: list[str] = []
    # 1. exact arithmetic, every non-algebraic quantity an independent random atom:
    #    a nonzero difference means no identity can hold at any level of substitution.
    identity = True
    for n in sizes:
        for _ in range(2):
            outcome = _free_check(_Problem(derivation, n), param, tree, rng)
            if isinstance(outcome, str):
                return ProofResult(param, formula, "wrong_shape", outcome, sizes)
            identity &= outcome
    # 2. the proof: symbolic entries, steps substituted by their definitions as needed
    #    (wide layers capped at SYMBOLIC_WIDTH units: the step formulas do not depend on widths).
    if identity:
        small, capped = _shrunk(derivation)
        small_sizes = _batch_sizes(small)
        proved = all(_symbolic(_Problem(small, n), param, tree, substitutions, rng)
                     for n in small_sizes)
        if proved:
            used = f"; substituted {', '.join(substitutions)}" if substitutions else ""
            where = (f"layer widths capped at {SYMBOLIC_WIDTH} (and confirmed at the network's "
                     "own sizes in exact arithmetic at random rational points)" if capped
                     else "the network's layer sizes")
            return ProofResult(param, formula, "proved",
                               f"every entry of the formula equals dL/d{param} identically, "
                               f"exact symbolic arithmetic at N={small_sizes[0]} and "
                               f"N={small_sizes[1]} with {where}{used}", small_sizes,
                               substitutions)
    # 3. a counterexample at consistent values of every quantity.
    for n in sizes:
        for _ in range(points):
            found = _counterexample(_Problem(derivation, n), param, tree, rng)
            if isinstance(found, str):
                return ProofResult(param, formula, "wrong_shape", found, sizes, substitutions)
            if found is not None:
                return ProofResult(param, formula, "counterexample",
                                   f"the formula differs from dL/d{param} at N={n}",
                                   sizes, substitutions, found)
    why = ("the symbolic check ran out of time" if identity else
           "the identity would need a relation such as a = f(z) between the quantities")
    return ProofResult(param, formula, "agrees_numerically",
                       f"no symbolic proof ({why}), but the formula agrees with dL/d{param} to "
                       f"{DIGITS} digits at {points * len(sizes)} random points (N={sizes[0]}, "
                       f"{sizes[1]}); this is evidence, not a proof", sizes, substitutions)


SYMBOLIC_WIDTH = 4


def _shrunk(derivation):
    """The same network with every width capped at SYMBOLIC_WIDTH; (derivation, capped?)."""
    import dataclasses

    from .derive import derive

    spec = derivation.spec
    widths = [size for _, size in spec.inputs] + [layer.units for layer in spec.layers]
    if max(widths) <= SYMBOLIC_WIDTH:
        return derivation, False
    inputs = tuple((group, min(size, SYMBOLIC_WIDTH)) for group, size in spec.inputs)
    layers = tuple(dataclasses.replace(layer, units=min(layer.units, SYMBOLIC_WIDTH))
                   for layer in spec.layers)
    return derive(dataclasses.replace(spec, inputs=inputs, layers=layers)), True



def _formula_value(param: str, problem, tree, env):
    """The formula evaluated on ``env`` and fitted to the parameter's shape, or why not."""
    try:
        value = _Evaluator(problem.formula_env(env))(tree)
    except _ShapeError as exc:
        return f"the formula does not type-check at N={problem.n}: {exc}"
    return _fit(param, problem, value)

def _free_check(problem: _Problem, param: str, tree, rng) -> bool | str:
    """Exact evaluation with independent random atoms; True when the two sides agree."""
    values = _random_values(problem, rng)
    env = problem.walker_env(values)
    for target, step in problem.steps.items():
        if _algebraic(step.expr):
            env[target] = problem.walk(env, step.expr)
        else:
            rows, cols = problem.shapes[target]
            env[target] = sp.ImmutableMatrix(rows, cols, lambda i, j: _rational(rng))
    fitted = _formula_value(param, problem, tree, env)
    if isinstance(fitted, str):
        return fitted
    derived = env[problem.derivation.gradients[param]]
    return all(f - g == 0 for f, g in zip(fitted.data, tuple(derived)))


def _rational(rng, size: float = 2.0):
    return sp.Rational(int(rng.integers(-int(4 * size), int(4 * size) + 1)),
                       int(rng.integers(2, 6)))


def _symbolic(problem: _Problem, param: str, tree, substitutions: list[str], rng) -> bool:
    """True when every entry of formula - gradient is identically zero."""
    atoms: dict[str, sp.ImmutableMatrix] = {}
    owner: dict[sp.Symbol, str] = {}
    for name, (rows, cols) in problem.shapes.items():
        symbols = [[sp.Symbol(f"{name}[{i},{j}]") for j in range(cols)] for i in range(rows)]
        atoms[name] = sp.ImmutableMatrix(symbols)
        for row in symbols:
            owner.update((s, name) for s in row)
    env = problem.walker_env(atoms)
    fitted = _fit(param, problem, _Evaluator(problem.formula_env(env))(tree))
    step = problem.steps[problem.derivation.gradients[param]]
    left, right = list(fitted.data), list(tuple(problem.walk(env, step.expr)))
    start = time.monotonic()
    while time.monotonic() - start < _SYMBOLIC_SECONDS:
        differences = [f - g for f, g in zip(left, right)]
        present = {s for d in differences for s in d.free_symbols if s in owner}
        trial = {s: _rational(rng) for s in present}
        if all(d.xreplace(trial) == 0 for d in differences) and all(
                _is_zero(d) for d in differences):
            return True
        names = {owner[s] for s in present}
        candidates = [problem.steps[name] for name in names if name in problem.steps
                      and _algebraic(problem.steps[name].expr)]
        if not candidates:
            return False
        step = max(candidates, key=lambda s: s.number)
        definition = problem.walk(env, step.expr)
        mapping = {atoms[step.target][i, j]: definition[i, j]
                   for i in range(definition.shape[0]) for j in range(definition.shape[1])}
        left = [v.xreplace(mapping) for v in left]
        right = [v.xreplace(mapping) for v in right]
        label = f"({step.number}) {step.target}"
        if label not in substitutions:
            substitutions.append(label)
    return False


def _random_values(problem: _Problem, rng: np.random.Generator) -> dict:
    derivation = problem.derivation
    spec, graph = derivation.spec, derivation.graph

    def matrix(rows, cols, size=2.0):
        return sp.ImmutableMatrix(rows, cols, [_rational(rng, size) for _ in range(rows * cols)])

    n = problem.n
    values = {naming.INPUT: matrix(n, spec.n_inputs)}
    k = spec.n_outputs
    output = graph.node(graph.output)
    if output.activation.vector or spec.loss.coupled:
        hot = rng.integers(0, k, n)
        values[naming.TARGET] = sp.ImmutableMatrix(n, k, lambda i, j: int(hot[i] == j))
    elif spec.loss.kind == "bce" or spec.loss.expr is not None:
        values[naming.TARGET] = sp.ImmutableMatrix(
            n, k, [sp.Rational(int(rng.integers(1, 5)), 5) for _ in range(n * k)])
    else:
        values[naming.TARGET] = matrix(n, k)
    for name, shape in graph.params.items():
        if len(shape) == 2:
            values[name] = matrix(shape[0], shape[1], 1.0)
        else:
            values[name] = matrix(shape[0], 1, 1.0)
    return values


def _counterexample(problem: _Problem, param: str, tree, rng) -> dict | str | None:
    from .interpret import evaluate

    derivation = problem.derivation
    steps = [s for s in derivation.steps if s.phase != "loss"]
    exact = all(_algebraic(s.expr) for s in steps)
    kinky = [node.sources[0] for node in derivation.graph.nodes
             if node.op == "activation" and not node.activation.vector
             and node.activation.forward().has(sp.Piecewise, sp.Max, sp.Min, sp.Abs)]
    for _ in range(20):  # no pre-activation exactly on a kink
        values = _random_values(problem, rng)
        results = evaluate(derivation, values, exact=exact, digits=DIGITS)
        on_kink = any(v == 0 for z in kinky for v in results[z])
        if not on_kink:
            break
    env = problem.walker_env({**values, **results})
    fitted = _formula_value(param, problem, tree, env)
    if isinstance(fitted, str):
        return fitted
    derived = results[derivation.gradients[param]]
    derived = _Arr(fitted.shape, tuple(derived))
    worst, gap = None, 0
    for index, (f, g) in enumerate(zip(fitted.data, derived.data)):
        difference = abs(sp.N(f - g, DIGITS)) if not exact else abs(f - g)
        scale = 1 + abs(sp.N(g, DIGITS))
        if difference > (0 if exact else sp.Float(10) ** (10 - DIGITS)) * scale and \
                difference > gap:
            worst, gap = index, difference
    if worst is None:
        return None
    shape = fitted.shape
    entry = tuple(int(i) for i in np.unravel_index(worst, shape)) if shape else ()
    shown = _names_in(tree) | _names_in_expr(derivation.step(
        derivation.gradients[param]).expr)
    leaves = [naming.INPUT, naming.TARGET, *derivation.graph.params]
    small = sum(env[name].shape[0] * env[name].shape[1] for name in leaves) <= 80
    names = [*sorted(shown - set(leaves)), *(name for name in leaves if small or name in shown)]
    shown_values = {name: _plain(env[name].T if name in problem.biases else env[name], exact)
                    for name in names if isinstance(env.get(name), sp.MatrixBase)}
    return {
        "N": problem.n, "entry": list(entry),
        "formula_value": _number(fitted.data[worst], exact),
        "derived_value": _number(derived.data[worst], exact),
        "shapes": {name: list(env[name].shape) for name in shown_values},
        "values": shown_values, "exact": exact,
    }


def _names_in(tree) -> set[str]:
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}


def _names_in_expr(expr) -> set[str]:
    return {str(s.name) for s in expr.free_symbols if hasattr(s, "name")}


def _number(value, exact: bool) -> str:
    if exact:
        return str(sp.nsimplify(value))
    return f"{float(sp.N(value, DIGITS)):.10g}"


def _plain(matrix, exact: bool) -> list:
    return [[_number(matrix[i, j], exact) for j in range(matrix.shape[1])]
            for i in range(matrix.shape[0])]
