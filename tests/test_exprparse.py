"""The restricted expression parser: a whitelist, never eval or sympify."""

from __future__ import annotations

import builtins
import os

import pytest
import sympy as sp

from symgrad.exprparse import MAX_LENGTH, ExpressionError, parse_expression

x, y, t = (sp.Symbol(n, real=True) for n in "xyt")


@pytest.fixture(autouse=True)
def no_evaluation(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("evaluation attempted")

    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    monkeypatch.setattr(sp, "sympify", refuse)
    monkeypatch.setattr(sp, "parse_expr", refuse)


@pytest.mark.parametrize("text,expected", [
    ("x", x),
    ("2*x + 1", 2 * x + 1),
    ("x - 3/4", x - sp.Rational(3, 4)),
    ("-x", -x),
    ("+x", x),
    ("x**2 / 2", x**2 / 2),
    ("0.1 * x", x / 10),
    ("1e20 * x", sp.Float(1e20) * x),
    ("exp(x) + log(x) + sqrt(x)", sp.exp(x) + sp.log(x) + sp.sqrt(x)),
    ("tanh(x) + sinh(x) + cosh(x) + sin(x) + cos(x) + atan(x) + erf(x)",
     sp.tanh(x) + sp.sinh(x) + sp.cosh(x) + sp.sin(x) + sp.cos(x) + sp.atan(x) + sp.erf(x)),
    ("abs(x) + max(x, 0) + min(x, 0)", sp.Abs(x) + sp.Max(x, 0) + sp.Min(x, 0)),
    ("sigmoid(x)", 1 / (1 + sp.exp(-x))),
    ("softplus(x)", sp.log(1 + sp.exp(x))),
    ("pi * e * x", sp.pi * sp.E * x),
    ("x * tanh(log(1 + exp(x)))", x * sp.tanh(sp.log(1 + sp.exp(x)))),
    ("  x  ", x),
])
def test_accepted(text, expected):
    assert sp.simplify(parse_expression(text, ("x",)) - expected) == 0


def test_loss_variables():
    assert parse_expression("(y - t)**4 / 4", ("y", "t")) == (y - t) ** 4 / 4
    symbols = parse_expression("y * t", ("y", "t")).free_symbols
    assert all(s.is_real for s in symbols)


@pytest.mark.parametrize("text,words", [
    ("__import__('os').system('touch /tmp/symgrad_pwned_exprparse')", ["not allowed"]),
    ("x.__class__", ["not allowed"]),
    ("x.real", ["not allowed"]),
    ("(lambda u: u)(x)", ["not allowed"]),
    ("x[0]", ["not allowed"]),
    ("[x]", ["not allowed"]),
    ("x if x else 0", ["not allowed"]),
    ("x > 0", ["not allowed"]),
    ("x and 1", ["not allowed"]),
    ("x // 2", ["operator", "not allowed"]),
    ("x % 2", ["operator", "not allowed"]),
    ("~x", ["operator", "not allowed"]),
    ("foo(x)", ["unknown function 'foo'"]),
    ("eval('1')", ["unknown function 'eval'"]),
    ("exp(x=1)", ["positional arguments only"]),
    ("exp()", ["positional arguments only"]),
    ("z", ["unknown name 'z'"]),
    ("xx", ["unknown name 'xx'", "did you mean 'x'"]),
    ("'x'", ["not a number"]),
    ("True", ["not a number"]),
    ("None", ["not a number"]),
    ("1j", ["not a number"]),
    ("x +", ["not a valid expression"]),
    ("", ["not a valid expression"]),
    ("x = 1", ["not a valid expression"]),
    ("f'{x}'", ["not allowed"]),
])
def test_rejected(text, words):
    with pytest.raises(ExpressionError) as info:
        parse_expression(text, ("x",))
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert not os.path.exists("/tmp/symgrad_pwned_exprparse")


def test_loss_variable_not_in_activation():
    with pytest.raises(ExpressionError, match="unknown name 'y'"):
        parse_expression("x * y", ("x",))


def test_not_a_string():
    with pytest.raises(ExpressionError, match="expected a string"):
        parse_expression(3, ("x",))


def test_length_limit():
    with pytest.raises(ExpressionError, match="longer than"):
        parse_expression("x+" * MAX_LENGTH + "x", ("x",))
