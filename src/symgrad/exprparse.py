"""Parse user-written expressions into SymPy without ever evaluating them.

Contract: :func:`parse_expression` accepts the text of a custom activation
(in ``x``) or a custom loss (in ``y`` and ``t``) and returns a SymPy
expression.  The text is parsed by Python's :mod:`ast` and rebuilt node by
node from a whitelist of numbers, the allowed variable names, the four
arithmetic operators, powers and a fixed table of functions.  Nothing is
passed to ``eval`` or ``sympify``; attribute access, subscripts, keywords,
lambdas and every other construct raise :class:`ExpressionError` naming
what was refused.
"""

from __future__ import annotations

import ast
import difflib

import sympy as sp

MAX_LENGTH = 2000

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

#: Named constants a custom expression may use.
CONSTANTS = {"pi": sp.pi, "e": sp.E}


class ExpressionError(ValueError):
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
    """
    if not isinstance(text, str):
        raise ExpressionError(f"expected a string expression, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"not a valid expression: {exc.msg}") from None
    symbols = {name: sp.Symbol(name, real=True) for name in variables}
    return _Builder(symbols).build(tree.body)


class _Builder:
    """Rebuild a whitelisted AST as a SymPy expression."""

    _binary = {
        ast.Add: lambda a, b: a + b,
        ast.Sub: lambda a, b: a - b,
        ast.Mult: lambda a, b: a * b,
        ast.Div: lambda a, b: a / b,
        ast.Pow: lambda a, b: a**b,
    }

    def __init__(self, symbols: dict[str, sp.Symbol]):
        self.symbols = symbols

    def build(self, node: ast.AST) -> sp.Expr:
        method = getattr(self, "_build_" + type(node).__name__, None)
        if method is None:
            raise ExpressionError(f"'{_describe(node)}' is not allowed in an expression")
        return method(node)

    def _build_Constant(self, node: ast.Constant) -> sp.Expr:
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise ExpressionError(f"constant {node.value!r} is not a number")
        if isinstance(node.value, float):
            return sp.Rational(repr(node.value)) if abs(node.value) < 1e15 else sp.Float(node.value)
        return sp.Integer(node.value)

    def _build_Name(self, node: ast.Name) -> sp.Expr:
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

    def _build_BinOp(self, node: ast.BinOp) -> sp.Expr:
        operator = self._binary.get(type(node.op))
        if operator is None:
            raise ExpressionError(f"operator '{_describe(node.op)}' is not allowed")
        return operator(self.build(node.left), self.build(node.right))

    def _build_UnaryOp(self, node: ast.UnaryOp) -> sp.Expr:
        if isinstance(node.op, ast.USub):
            return -self.build(node.operand)
        if isinstance(node.op, ast.UAdd):
            return self.build(node.operand)
        raise ExpressionError(f"operator '{_describe(node.op)}' is not allowed")

    def _build_Call(self, node: ast.Call) -> sp.Expr:
        if not isinstance(node.func, ast.Name):
            raise ExpressionError(f"'{_describe(node.func)}' is not allowed in an expression")
        name = node.func.id
        if name not in FUNCTIONS:
            raise ExpressionError(
                f"unknown function '{name}'; allowed: {', '.join(sorted(FUNCTIONS))}"
            )
        if node.keywords or not node.args:
            raise ExpressionError(f"function '{name}' takes positional arguments only")
        return FUNCTIONS[name](*(self.build(arg) for arg in node.args))


def _describe(node: ast.AST) -> str:
    """A short human name for an AST node."""
    try:
        return ast.unparse(node)
    except Exception:  # pragma: no cover - ast.unparse handles every node we see
        return type(node).__name__
