"""ArrayCodePrinter.into: a compound factor computed into one temporary equals the plain expression."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from symgrad.printing import ArrayCodePrinter

a, z = sp.Symbol("a1", real=True), sp.Symbol("z1", real=True)

CASES = [1 - a**2, a * (1 - a), 2 * a * (1 - a), sp.tanh(z) ** 2, 3 - 2 * a**2, 1 - a,
         (1 - a**2) * a * 0.5]


@pytest.mark.parametrize("expr", CASES, ids=str)
def test_into_equals_the_expression_with_one_allocation(expr):
    printer = ArrayCodePrinter()
    lines = printer.into(expr, "t")
    assert lines is not None
    rng = np.random.default_rng(0)
    env = {"np": np, "a1": rng.uniform(-1, 1, (4, 3)), "z1": rng.normal(size=(4, 3))}
    before = {k: v.copy() for k, v in env.items() if k != "np"}
    exec("\n".join(lines), env)  # noqa: S102 - printed by our own printer from a fixed table
    expected = sp.lambdify([a, z], expr, "numpy")(before["a1"], before["z1"])
    np.testing.assert_allclose(env["t"], expected, rtol=1e-14)
    assert sum(line.startswith("t = ") for line in lines) == 1  # one new array
    for name, value in before.items():
        np.testing.assert_array_equal(env[name], value)  # operands untouched


@pytest.mark.parametrize("expr", [a, sp.Integer(2), sp.exp(-z) / (1 + sp.exp(-z)) ** 2,
                                  sp.exp(-z) * (1 - a)],
                         ids=str)
def test_into_declines_what_is_not_a_chain(expr):
    assert ArrayCodePrinter().into(expr, "t") is None
