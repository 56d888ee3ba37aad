"""Parse user-written expressions into SymPy without ever evaluating them.

Contract: :func:`parse_expression` accepts the text of a custom activation
(in ``x``) or a custom loss (in ``y`` and ``t``) and returns a SymPy
expression.  The text is parsed by Python's :mod:`ast` and rebuilt node by
node from a whitelist of numbers, the allowed variable names, the four
arithmetic operators, powers and a fixed table of functions.  Nothing is
passed to ``eval`` or ``sympify``; attribute access, subscripts, keywords,
lambdas and every other construct raise :class:`ExpressionError` naming
what was refused.

What an expression may cost is bounded before SymPy sees it: its length,
nesting depth and node count, the size of every literal and every number
SymPy folds from them, the exponent of every power and the number of
arguments of every function.  The tree is walked without recursion, so no
input raises ``RecursionError``.  An activation (variables ``("x",)``) or a
loss (``("y", "t")``) must then be a finite real function that SymPy can
differentiate within a time budget (:func:`symgrad.primitives.check_activation`,
:func:`symgrad.primitives.check_loss`).
"""

from __future__ import annotations

import ast
import difflib
import math
from functools import lru_cache

import sympy as sp

from .errors import BadInput
from .symbolic import TooCostly, budget

MAX_LENGTH = 2000
MAX_DEPTH = 40  # nesting of operators and calls
MAX_NODES = 200  # names, numbers, operators and calls
MAX_DIGITS = 15  # in an integer literal
MAX_EXPONENT = 64  # |e| of a constant exponent
LARGEST = 1e300  # no literal or folded number beyond this magnitude
SMALLEST = 1e-300  # ... nor, except 0, below this one
BUILD_SECONDS = 2.0

#: Functions a custom expression may call, by the name the user writes.
FUNCTIONS = {
    "exp": sp.exp,
    "log": sp.log,
    "sqrt": sp.sqrt,
    "tanh": sp.tanh,
    "sinh": sp.sinh,
    "cosh": sp.cosh,
    "sin": sp.sin,
    "cos": sp.cos,
    "atan": sp.atan,
    "erf": sp.erf,
    "abs": sp.Abs,
    "max": sp.Max,
    "min": sp.Min,
    "sigmoid": lambda u: 1 / (1 + sp.exp(-u)),
    "softplus": lambda u: sp.log(1 + sp.exp(u)),
}

#: How many arguments each function takes, (fewest, most); one unless listed.
ARITY = {"max": (2, 8), "min": (2, 8)}

#: Named constants a custom expression may use.
CONSTANTS = {"pi": sp.pi, "e": sp.E}

_NOT_FINITE = (sp.S.ComplexInfinity, sp.S.NaN, sp.S.Infinity, sp.S.NegativeInfinity)


class ExpressionError(BadInput):
    """A custom expression that is malformed or uses something not allowed."""


def parse_expression(text: str, variables: tuple[str, ...]) -> sp.Expr:
    """Parse ``text`` into a SymPy expression in the given real variables.

    >>> parse_expression("x * tanh(log(1 + exp(x)))", ("x",))
    x*tanh(log(exp(x) + 1))
    >>> parse_expression("(y - t)**2 / 2", ("y", "t"))
    (-t + y)**2/2
    >>> parse_expression("__import__('os')", ("x",))
    Traceback (most recent call last):
    ...
    symgrad.exprparse.ExpressionError: unknown function '__import__'; allowed: abs, atan, ...
    >>> parse_expression("x**(10**100)", ("x",))
    Traceback (most recent call last):
    ...
    symgrad.exprparse.ExpressionError: exponent 100 is too large (at most 64 in magnitude)
    """
    if not isinstance(text, str):
        raise ExpressionError(f"expected a string expression, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_LENGTH} characters")
    if not isinstance(variables, tuple) or not all(isinstance(v, str) for v in variables):
        variables = tuple(str(v) for v in variables)
    return _parse(text.strip(), variables)


@lru_cache(maxsize=256)
def _parse(text: str, variables: tuple[str, ...]) -> sp.Expr:
    """Parse and bound ``text``; cached."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"not a valid expression: {exc.msg}") from None
    except (RecursionError, MemoryError, ValueError):
        raise ExpressionError("not a valid expression: nested too deeply") from None
    _check_shape(tree.body)
    symbols = {name: sp.Symbol(name, real=True) for name in variables}
    try:
        with budget(BUILD_SECONDS):
            expr = _Builder(symbols).build(tree.body)
    except TooCostly:
        raise ExpressionError("expression too costly to build") from None
    return expr


def _check_shape(root: ast.AST) -> None:
    """Refuse trees deeper than MAX_DEPTH or larger than MAX_NODES, without recursion."""
    stack, count = [(root, 1)], 0
    while stack:
        node, depth = stack.pop()
        if isinstance(node, ast.expr):
            count += 1
            if count > MAX_NODES:
                raise ExpressionError(f"expression too large (more than {MAX_NODES} terms)")
            if depth > MAX_DEPTH:
                raise ExpressionError(f"expression nested too deeply (more than {MAX_DEPTH} levels)")
        for child in ast.iter_child_nodes(node):
            # a chain like x + x + x or x * y / z is flat, however Python nests it
            flat = (isinstance(node, ast.BinOp) and child is node.left
                    and isinstance(child, ast.BinOp) and _same_chain(node.op, child.op))
            stack.append((child, depth if flat else depth + 1))


def _same_chain(op: ast.operator, other: ast.operator) -> bool:
    """Whether two operators chain at one level (+ with -, * with /)."""
    sums, products = (ast.Add, ast.Sub), (ast.Mult, ast.Div)
    return isinstance(op, sums) and isinstance(other, sums) or \
        isinstance(op, products) and isinstance(other, products)


class _Builder:
    """Rebuild a whitelisted AST as a SymPy expression, bottom-up without recursion."""

    _binary = {
        ast.Add: lambda a, b: a + b,
        ast.Sub: lambda a, b: a - b,
        ast.Mult: lambda a, b: a * b,
        ast.Div: lambda a, b: a / b,
        ast.Pow: lambda a, b: a**b,
    }

    def __init__(self, symbols: dict[str, sp.Symbol]):
        self.symbols = symbols

    def build(self, root: ast.AST) -> sp.Expr:
        results: list[sp.Expr] = []
        stack: list[tuple[ast.AST, bool]] = [(root, False)]
        while stack:
            node, children_done = stack.pop()
            if not children_done:
                children = self._children(node)
                stack.append((node, True))
                stack.extend((child, False) for child in reversed(children))
                continue
            count = len(self._children(node))
            args = results[len(results) - count:] if count else []
            del results[len(results) - count:]
            results.append(_checked(self._combine(node, args)))
        return results[0]

    def _children(self, node: ast.AST) -> list[ast.AST]:
        """The operands of ``node``, after refusing anything not on the whitelist."""
        if isinstance(node, ast.BinOp):
            if type(node.op) not in self._binary:
                raise ExpressionError(f"operator '{_describe(node.op)}' is not allowed")
            return [node.left, node.right]
        if isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, (ast.USub, ast.UAdd)):
                raise ExpressionError(f"operator '{_describe(node.op)}' is not allowed")
            return [node.operand]
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                raise ExpressionError(f"'{_describe(node.func)}' is not allowed in an expression")
            name = node.func.id
            if name not in FUNCTIONS:
                raise ExpressionError(
                    f"unknown function '{name}'; allowed: {', '.join(sorted(FUNCTIONS))}"
                )
            if node.keywords or not node.args:
                raise ExpressionError(f"function '{name}' takes positional arguments only")
            fewest, most = ARITY.get(name, (1, 1))
            if not fewest <= len(node.args) <= most:
                wanted = str(fewest) if fewest == most else f"{fewest} to {most}"
                raise ExpressionError(f"function '{name}' takes {wanted} argument"
                                      f"{'' if wanted == '1' else 's'}, got {len(node.args)}")
            if any(isinstance(arg, ast.Starred) for arg in node.args):
                raise ExpressionError(f"function '{name}' takes positional arguments only")
            return list(node.args)
        if isinstance(node, (ast.Constant, ast.Name)):
            return []
        raise ExpressionError(f"'{_describe(node)}' is not allowed in an expression")

    def _combine(self, node: ast.AST, args: list[sp.Expr]) -> sp.Expr:
        if isinstance(node, ast.Constant):
            return _number(node.value)
        if isinstance(node, ast.Name):
            return self._name(node)
        if isinstance(node, ast.UnaryOp):
            return -args[0] if isinstance(node.op, ast.USub) else args[0]
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.Pow):
                _check_power(*args)
            return self._binary[type(node.op)](*args)
        return FUNCTIONS[node.func.id](*args)

    def _name(self, node: ast.Name) -> sp.Expr:
        if node.id in self.symbols:
            return self.symbols[node.id]
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        known = sorted(self.symbols) + sorted(CONSTANTS)
        hint = difflib.get_close_matches(node.id, known, n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise ExpressionError(
            f"unknown name '{node.id}'{suggestion}; variables here: {', '.join(self.symbols)}"
        )


def _number(value: object) -> sp.Expr:
    """A literal as an exact SymPy number, refused when out of range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ExpressionError(f"constant {value!r} is not a number")
    if isinstance(value, int):
        if abs(value) >= 10**MAX_DIGITS:
            raise ExpressionError(f"integer literal with more than {MAX_DIGITS} digits "
                                  "(write it as a float, e.g. 1e20)")
        return sp.Integer(value)
    if not math.isfinite(value) or value and not SMALLEST <= abs(value) <= LARGEST:
        raise ExpressionError(f"number {value!r} is out of range "
                              f"(0 or {SMALLEST:g} to {LARGEST:g} in magnitude)")
    return sp.Rational(repr(value)) if abs(value) < 1e15 else sp.Float(value)


def _check_power(base: sp.Expr, exponent: sp.Expr) -> None:
    """Refuse a power SymPy could not build or differentiate cheaply."""
    if exponent.free_symbols:
        if base.free_symbols:
            raise ExpressionError(f"exponent of {base} must be a constant, not {exponent}")
        return
    value = _magnitude(exponent)
    if value is None or value > MAX_EXPONENT:
        raise ExpressionError(f"exponent {exponent} is too large (at most {MAX_EXPONENT} "
                              "in magnitude)")


def _checked(expr: sp.Expr) -> sp.Expr:
    """``expr`` if it is finite, real and its numbers fit a float64, else ExpressionError."""
    if expr.has(*_NOT_FINITE):
        raise ExpressionError("division by zero or an infinite value")
    if expr.has(sp.I):
        raise ExpressionError(f"complex value {expr}")
    for number in expr.atoms(sp.Number):
        _in_range(number)
    if not expr.free_symbols and not expr.is_Number:
        value = expr.evalf(20)
        if not value.is_Number or not value.is_finite:
            raise ExpressionError(f"{expr} is not a finite real number")
        _in_range(value, expr)
    return expr


def _in_range(number: sp.Expr, shown: sp.Expr | None = None) -> None:
    """Refuse a number of magnitude outside [SMALLEST, LARGEST] (0 is fine)."""
    size = _magnitude(number)
    if size is None or size > LARGEST:
        raise ExpressionError(f"number {_short(shown or number)} overflows a float64")
    if size and size < SMALLEST:
        raise ExpressionError(f"number {_short(shown or number)} underflows a float64")


def _magnitude(number: sp.Expr) -> float | None:
    """|number| as a float, inf when too large; None if it is not a real number."""
    if isinstance(number, sp.Rational):
        p, q = abs(int(number.p)), int(number.q)
        if p.bit_length() - q.bit_length() > 1100:
            return math.inf
        if q.bit_length() - p.bit_length() > 1100:
            return 0.0 if p == 0 else 5e-324
        return p / q if p.bit_length() < 1000 and q.bit_length() < 1000 else \
            math.ldexp(1.0, p.bit_length() - q.bit_length())
    value = number.evalf(20) if not number.is_Float else number
    if not value.is_Number:
        return None
    try:
        return abs(float(value))
    except (OverflowError, TypeError):
        return None


def _short(number: sp.Expr) -> str:
    """A number as text short enough for a one-line error."""
    text = str(number)
    return text if len(text) <= 40 else text[:20] + "..."


def _describe(node: ast.AST) -> str:
    """A short human name for an AST node."""
    try:
        return ast.unparse(node)
    except Exception:  # pragma: no cover - ast.unparse handles every node we see
        return type(node).__name__
