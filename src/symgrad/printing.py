"""The NumPy printer: derivation steps as lines of array code.

Contract: :class:`ArrayCodePrinter` customises SymPy's ``NumPyPrinter`` so a
step's expression prints as the code a careful person writes by hand:
``X @ W1.T + b1``, ``delta1.T @ X``, ``delta1.sum(axis=0)``,
``np.where(z1 > 0, ...)``, ``np.logaddexp(0, z)``, with names from
:mod:`symgrad.naming` and numeric constants as exact Python float literals
(so float32 arrays stay float32).  It records which module helpers
(``_sigmoid``, ``_softmax``, ``_logsumexp``, ``_erf``) the printed code uses.

>>> import sympy as sp
>>> from symgrad.symbolic import Sigmoid
>>> p = ArrayCodePrinter()
>>> p.doprint(sp.Symbol("dL_da1") * Sigmoid(sp.Symbol("z1")))
'dL_da1*_sigmoid(z1)'
>>> sorted(p.helpers)
['_sigmoid']
"""

from __future__ import annotations

import sympy as sp
from sympy.printing.numpy import NumPyPrinter
from sympy.printing.precedence import precedence

from . import naming
from .symbolic import LogSumExp, RowSum, Sigmoid, Softplus


class ArrayCodePrinter(NumPyPrinter):
    """SymPy's NumPy printer, speaking the generated module's names."""

    def __init__(self, names: dict[str, str] | None = None):
        super().__init__({"fully_qualified_modules": True, "inline": True})
        self.names = dict(names or {})
        self.helpers: set[str] = set()

    def doprint(self, expr, assign_to=None):
        return super().doprint(_numeric_constants(expr), assign_to)

    def _module_format(self, fqn, register=True):
        if fqn.startswith("numpy."):
            return "np." + fqn[len("numpy."):]
        return super()._module_format(fqn, register)

    def _helper(self, name: str, *args) -> str:
        self.helpers.add(name)
        return f"{name}({', '.join(self._print(a) for a in args)})"

    # names
    def _print_Symbol(self, expr):
        return self.names.get(expr.name, expr.name)

    _print_MatrixSymbol = _print_Symbol

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_Add(self, expr, order=None):
        """Positive terms first, so ``a2 - T`` rather than ``-T + a2`` (one ufunc, not two)."""
        terms = sorted(self._as_ordered_terms(expr, order=order),
                       key=lambda term: term.could_extract_minus_sign())
        text = self._print(terms[0])
        for term in terms[1:]:
            if term.could_extract_minus_sign():
                text += " - " + self.parenthesize(-term, precedence(expr))
            else:
                text += " + " + self.parenthesize(term, precedence(expr))
        return text

    # matrix structure
    def _print_MatMul(self, expr):
        scalars = [a for a in expr.args if not isinstance(a, sp.MatrixExpr)]
        matrices = [a for a in expr.args if isinstance(a, sp.MatrixExpr)]
        if len(matrices) == 2 and isinstance(matrices[1], sp.OneMatrix) \
                and isinstance(matrices[0], sp.Transpose):
            body = f"{self._wrap(matrices[0].arg)}.sum(axis=0)"  # sum over the batch
        elif len(matrices) == 2 and isinstance(matrices[0], sp.OneMatrix):
            body = self._print(matrices[1].arg if isinstance(matrices[1], sp.Transpose)
                               else matrices[1])  # broadcast a bias row
        else:
            body = " @ ".join(self._wrap(m) for m in matrices)
        if scalars:
            return " * ".join([self.parenthesize(s, precedence(expr)) for s in scalars]
                              + [body])
        return body

    def _print_Transpose(self, expr):
        return f"{self._wrap(expr.arg)}.T"

    def _print_MatAdd(self, expr):
        return " + ".join(self._print(a) for a in expr.args)

    def _print_BlockMatrix(self, expr):
        blocks = expr.blocks
        row = ", ".join(self._print(blocks[0, j]) for j in range(blocks.shape[1]))
        return f"np.hstack([{row}])"

    def _wrap(self, expr) -> str:
        text = self._print(expr)
        atom = expr.arg if isinstance(expr, sp.Transpose) else expr
        return text if isinstance(atom, (sp.MatrixSymbol, sp.Symbol)) else f"({text})"

    # array functions
    def _print_Total(self, expr):
        """``np.vdot(u, v)`` for a sum of products of two full arrays: one pass, no temporary."""
        coefficient, rest = expr.args[0].as_coeff_Mul()
        factors = list(sp.Mul.make_args(rest))
        if len(factors) == 1 and isinstance(factors[0], sp.Pow) and factors[0].exp == 2:
            factors = [factors[0].base] * 2
        if len(factors) == 2 and all(_full(f) for f in factors):
            text = f"np.vdot({self._print(factors[0])}, {self._print(factors[1])})"
            if coefficient == 1:
                return text
            if coefficient == -1:
                return f"-{text}"
            return f"{self.parenthesize(coefficient, precedence(sp.Mul(2, 3, evaluate=False)))}*{text}"
        return f"np.sum({self._print(expr.args[0])})"

    def _print_RowSum(self, expr):
        return f"np.sum({self._print(expr.args[0])}, axis=1, keepdims=True)"

    def _print_Softmax(self, expr):
        return self._helper("_softmax", *expr.args)

    def _print_LogSumExp(self, expr):
        return self._helper("_logsumexp", *expr.args)

    def _print_Sigmoid(self, expr):
        return self._helper("_sigmoid", *expr.args)

    def _print_Softplus(self, expr):
        return f"np.logaddexp(0, {self._print(expr.args[0])})"

    def _print_erf(self, expr):
        return self._helper("_erf", *expr.args)

    def _print_Heaviside(self, expr):
        # Alone, not ``(x > 0)``: a boolean array times an integer is int64, which would
        # turn float32 arrays into float64.  The step is 0 at the kink, as in ReLU's usual
        # subgradient.
        return f"np.heaviside({self._print(expr.args[0])}, 0)"

    def _print_Mask(self, expr):
        return f"({self._print(expr.args[0])} > 0)"

    def _print_Mul(self, expr):
        """A step function beside an array factor prints as a boolean mask: ``d*(a1 > 0)``."""
        # Only with no numeric coefficient: ``2*(a > 0)`` would be int64, ``-(a > 0)`` an error.
        if expr.as_coeff_Mul()[0] == 1 and any(isinstance(f, sp.Heaviside) for f in expr.args) \
                and any(_full(f) for f in expr.args if not isinstance(f, sp.Heaviside)):
            expr = sp.Mul(*[Mask(f.args[0]) if isinstance(f, sp.Heaviside) else f
                            for f in expr.args], evaluate=False)
        return super()._print_Mul(expr)

    # in-place forms
    def factor(self, expr) -> str:
        """``expr`` as the second operand of an in-place multiply: a step function is a mask."""
        if isinstance(expr, sp.Heaviside):
            return f"{self._print(expr.args[0])} > 0"
        return self.doprint(expr)

    def call_into(self, expr, child, operand: str, out: str) -> str | None:
        """``expr``, a function of ``child`` (already in array ``operand``), written into ``out``.

        None when ``expr`` is not one NumPy call that takes ``out=``.
        """
        if isinstance(expr, (sp.Max, sp.Min)) and len(expr.args) == 2:
            other = expr.args[1] if expr.args[0] == child else expr.args[0]
            function = "np.maximum" if isinstance(expr, sp.Max) else "np.minimum"
            return f"{function}({operand}, {self.doprint(other)}, out={out})"
        if len(expr.args) != 1:
            return None
        if isinstance(expr, Sigmoid):
            self.helpers.add("_sigmoid")
            return f"_sigmoid({operand}, out={out})"
        if isinstance(expr, Softplus):
            return f"np.logaddexp(0, {operand}, out={out})"
        name = type(expr).__name__
        return f"np.{_UFUNCS[name]}({operand}, out={out})" if name in _UFUNCS else None

    def into(self, expr, out: str) -> list[str] | None:
        """Statements computing ``expr`` into a new array ``out`` with one allocation.

        Each operation after the first is written in place (``out=``), the way a
        careful person writes ``t = np.square(a); np.subtract(1, t, out=t)`` for
        ``1 - a**2``.  None when ``expr`` is not a chain of such operations (at
        most one compound operand at each level).
        """
        if _simple(expr):
            return None
        if isinstance(expr, sp.Pow) and expr.exp == 2:
            return self._chain(expr.base, out, lambda a: f"np.square({a}, out={out})",
                               lambda a: f"{out} = np.square({a})")
        if isinstance(expr, sp.Function) and len(expr.args) == 1:
            (arg,) = expr.args
            if _simple(arg):
                call = self.call_into(expr, arg, self._print(arg), "None")
                return None if call is None else [f"{out} = {call.replace(', out=None', '')}"]
            inner = self.into(arg, out)
            call = None if inner is None else self.call_into(expr, arg, out, out)
            return None if call is None else inner + [call]
        if isinstance(expr, sp.Mul):
            coeff, factors = expr.as_coeff_mul()
            compound = [f for f in factors if not _simple(f)]
            if len(compound) > 1:
                return None
            if compound:
                lines = self.into(compound[0], out)
                others = [f for f in factors if f is not compound[0]]
            elif len(factors) >= 2:
                lines = [f"{out} = np.multiply({self._print(factors[0])}, "
                         f"{self._print(factors[1])})"]
                others = list(factors[2:])
            else:
                return None
            if lines is None:
                return None
            lines += [f"{out} *= {self._print(f)}" for f in others]
            return lines + ([f"{out} *= {self._print(coeff)}"] if coeff != 1 else [])
        if isinstance(expr, sp.Add):
            compound = [t for t in expr.args if not _simple(t) and not _simple(-t)]
            if len(compound) > 1:
                return None
            if not compound:  # a sum of arrays and numbers, at most one subtracted array
                negated = [t for t in expr.args if t.could_extract_minus_sign() and not t.is_Number]
                if len(negated) != 1:
                    return None
                other = sp.Add(*[t for t in expr.args if t is not negated[0]])
                return [f"{out} = np.subtract({self._print(other)}, {self._print(-negated[0])})"]
            term = compound[0]
            other = self._print(sp.Add(*[t for t in expr.args if t is not term]))
            if term.could_extract_minus_sign():
                lines = self.into(-term, out)
                return None if lines is None else \
                    lines + [f"np.subtract({other}, {out}, out={out})"]
            lines = self.into(term, out)
            return None if lines is None else lines + [f"{out} += {other}"]
        return None

    def _chain(self, arg, out, in_place, fresh) -> list[str] | None:
        """One operation on ``arg``: fresh when ``arg`` is an array, else after computing it."""
        if _simple(arg):
            return [fresh(self._print(arg))]
        lines = self.into(arg, out)
        return None if lines is None else lines + [in_place(out)]

    def _print_Max(self, expr):
        return self._fold("np.maximum", expr.args)

    def _print_Min(self, expr):
        return self._fold("np.minimum", expr.args)

    def _fold(self, function: str, args) -> str:
        args = sorted(args, key=lambda a: a.is_number)  # the array first, as people write it
        text = self._print(args[0])
        for arg in args[1:]:
            text = f"{function}({text}, {self._print(arg)})"
        return text

    def _print_Piecewise(self, expr):
        *pieces, (last, cond) = expr.args
        if cond != sp.true:
            return super()._print_Piecewise(expr)
        text = self._print(last)
        for value, condition in reversed(pieces):
            text = f"np.where({self._print(condition)}, {self._print(value)}, {text})"
        return text

    def _print_Relational(self, expr):
        op = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}[expr.rel_op]
        return f"{self._print(expr.lhs)} {op} {self._print(expr.rhs)}"


#: SymPy functions of one argument that are NumPy ufuncs (they take ``out=``).
_UFUNCS = {"exp": "exp", "log": "log", "tanh": "tanh", "sinh": "sinh", "cosh": "cosh",
           "sin": "sin", "cos": "cos", "atan": "arctan", "Abs": "abs"}


def _simple(expr) -> bool:
    """A number or a whole array: nothing to compute."""
    return expr.is_Number or isinstance(expr, sp.Symbol)


class Mask(sp.Function):
    """The step function as a boolean array, for use beside a float array factor."""

    nargs = 1


def _full(expr) -> bool:
    """Whether ``expr`` evaluates to a whole array, not a scalar or a row-sum column."""
    if isinstance(expr, (LogSumExp, RowSum)) or expr.is_number:
        return False
    if isinstance(expr, sp.Symbol):
        return expr.name not in (naming.BATCH, naming.DECAY)
    return any(_full(arg) for arg in expr.args)


def _numeric_constants(expr):
    """Replace irrational constants (sqrt(2), pi) by float literals."""
    if not isinstance(expr, sp.Basic):
        return expr
    return expr.replace(
        lambda e: e.is_number and not e.is_Rational and not isinstance(e, sp.Float)
        and not e.has(sp.MatrixExpr) and e.is_real,
        lambda e: sp.Float(e.evalf(20), 17),
    )


def code_names(graph) -> dict[str, str]:
    """Code for every symbol key that is not spelt as itself (blocks, slices, constants)."""
    names = {naming.BATCH: "n", naming.DECAY: "WEIGHT_DECAY"}
    for node in graph.nodes:
        if node.op == "slice":
            names[node.name] = f"X[:, {node.start}:{node.start + node.size}]"
        if node.op == "dense" and len(node.sources) > 1:
            for source, start, stop in graph.blocks(node):
                names[naming.block(node.weight, source)] = f"{node.weight}[:, {start}:{stop}]"
    return names
