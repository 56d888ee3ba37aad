"""The LaTeX printer: derivation steps as textbook equations.

Contract: :class:`DerivationLatexPrinter` customises SymPy's ``LatexPrinter``
the way :class:`~symgrad.printing.ArrayCodePrinter` customises the NumPy
printer, so one step prints as ``Z^{(1)} = X W^{(1)\\top} + \\mathbf{1}_N
b^{(1)\\top}`` here and ``z1 = X @ W1.T + b1`` there.  Symbols take their
names from :mod:`symgrad.naming`; in *array* mode (the default) a product of
arrays prints as the Hadamard product ``\\odot``, :class:`Total` as a double
sum over entries, :class:`RowSum` as ``(M)\\mathbf{1}\\mathbf{1}^\\top``;
in scalar mode (``arrays=False``) products print as ordinary products, for
``f'(x)`` and per-weight expressions.  :func:`latex_width` estimates how
wide a piece of printed LaTeX sets, so long equations can be broken between
terms before they overflow the page.

>>> import sympy as sp
>>> p = DerivationLatexPrinter()
>>> a2, g = sp.Symbol("a2"), sp.Symbol("dL_da2")
>>> p.doprint(a2 * g * (1 - a2))
'\\\\frac{\\\\partial L}{\\\\partial A^{(2)}} \\\\odot A^{(2)} \\\\odot \\\\left(1 - A^{(2)}\\\\right)'
>>> p.doprint(sp.MatrixSymbol("delta2", 5, 1).T * sp.MatrixSymbol("a1", 5, 2))
'\\\\delta^{(2)\\\\top} A^{(1)}'
"""

from __future__ import annotations

import re

import sympy as sp
from sympy.printing.latex import LatexPrinter
from sympy.printing.precedence import PRECEDENCE, precedence

from . import naming
from .symbolic import Total

#: Symbols that stand for scalars even in array mode.
SCALARS = {naming.BATCH, naming.DECAY, "K"}

_LAYERED = re.compile(r"(log_a|delta|z|a|W|K|b)(\d+)")
_ENTRY_HEAD = {"delta": r"\delta", "z": "z", "a": "a", "W": "w", "K": "k", "b": "b",
               "log_a": r"\log a"}


_LATEX_SPECIALS = {"_": r"\_", "&": r"\&", "%": r"\%", "#": r"\#", "$": r"\$", "{": r"\{",
                   "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                   "\\": r"\textbackslash{}"}


def latex_text(text: str) -> str:
    r"""User text (a layer or network name) as literal LaTeX text, safe in any argument.

    LaTeX's special characters are escaped; anything outside printable ASCII (line
    breaks, terminal escapes, characters pdflatex may not know) is shown as its
    Python escape, so no user text can run a command, open a group or end a paragraph.

    >>> print(latex_text(r"a_b\input{x}"))
    a\_b\textbackslash{}input\{x\}
    >>> print(latex_text("x\n\x1b[31m"))
    x\textbackslash{}n\textbackslash{}x1b[31m
    """
    out = []
    for char in str(text):
        if not (char.isascii() and char.isprintable()):
            char = char.encode("unicode_escape").decode("ascii")  # \n, \x1b, \u00e9
        out.append("".join(_LATEX_SPECIALS.get(c, c) for c in char))
    return "".join(out)


def entry(name: str, index: str) -> str:
    """The LaTeX of one entry of array ``name``: ``entry("a2", "nj") == "a^{(2)}_{nj}"``."""
    match = _LAYERED.fullmatch(name)
    if match:
        return f"{_ENTRY_HEAD[match.group(1)]}^{{({match.group(2)})}}_{{{index}}}"
    if name == naming.INPUT:
        return f"x_{{{index}}}"
    if name == naming.TARGET:
        return f"t_{{{index}}}"
    if name.startswith("X_"):
        group = name[2:].replace("_", r"\_")
        return rf"x^{{\mathrm{{{group}}}}}_{{{index}}}"
    return rf"\left({naming.latex(name)}\right)_{{{index}}}"


def transposed(symbol_latex: str) -> str:
    """``W^{(1)}`` -> ``W^{(1)\\top}``: the transpose mark joins an existing superscript."""
    head, sep, rest = symbol_latex.partition("^{")
    if sep and "{" not in head and "\\" not in head.replace("\\delta", "") and rest.endswith("}"):
        sup, sub_sep, sub = rest[:-1].partition("}_{")
        if "{" not in sup and "}" not in sup:
            return f"{head}^{{{sup}\\top}}" + (f"_{{{sub}}}" if sub_sep else "")
    if "^" not in symbol_latex and "\\" not in symbol_latex:
        return f"{symbol_latex}^{{\\top}}"
    return rf"\left({symbol_latex}\right)^{{\top}}"


class NamedFunction(sp.Function):
    """A function printed under a given LaTeX name (``\\sigma``, ``f'``); set ``latex_name``."""

    latex_name = "f"

    def _latex(self, printer, exp=None):
        args = ", ".join(printer._print(a) for a in self.args)
        text = rf"{self.latex_name}\left({args}\right)"
        return rf"{text}^{{{exp}}}" if exp else text


def named_function(latex_name: str, key: str) -> type:
    """A :class:`NamedFunction` subclass printing as ``latex_name`` (``key``: a valid name)."""
    return type(key, (NamedFunction,), {"latex_name": latex_name})


class DerivationLatexPrinter(LatexPrinter):
    """SymPy's LaTeX printer speaking symgrad's notation."""

    def __init__(self, arrays: bool = True, names: dict[str, str] | None = None,
                 sizes: dict[str, tuple] | None = None):
        super().__init__({"mul_symbol": None, "mat_delim": "[", "mat_str": "matrix"})
        self.arrays = arrays
        self.names = dict(names or {})
        self.sizes = dict(sizes or {})

    # ---------------------------------------------------------------- names

    def _print_Symbol(self, expr, style="plain"):
        name = expr.name
        if name in self.names:
            return self.names[name]
        if any(c in name for c in "\\{^"):
            return name  # already LaTeX, e.g. w^{(1)}_{21} from the scalar expansion
        printed = naming.latex(name)
        if printed != name or name in (naming.INPUT, naming.TARGET, naming.LOSS, naming.BATCH):
            return printed
        return super()._print_Symbol(expr, style)

    def _print_MatrixSymbol(self, expr, style="plain"):
        return self._print_Symbol(sp.Symbol(expr.name), style)

    def is_array(self, expr) -> bool:
        """Whether ``expr`` involves an array (a symbol that is not a scalar constant)."""
        if not self.arrays:
            return False
        if isinstance(expr, sp.MatrixExpr):
            return True
        return any(s.name not in SCALARS for s in expr.free_symbols
                   if isinstance(s, sp.Symbol)) or expr.has(Total)

    # ---------------------------------------------------------------- elementwise algebra

    def _print_Add(self, expr, order=None):
        terms = list(sp.Add.make_args(expr))
        terms = sorted(terms, key=lambda term: (term.could_extract_minus_sign(),
                                                term.is_number))  # stable: keeps SymPy's order
        return self._join_terms(terms)

    def _join_terms(self, terms) -> str:
        out = ""
        for index, term in enumerate(terms):
            if term.could_extract_minus_sign():
                text, sign = self._print(-term), " - "
            else:
                text, sign = self._print(term), " + "
            if isinstance(-term if sign == " - " else term, sp.Add):
                text = rf"\left({text}\right)"
            out += (("-" if sign == " - " else "") if index == 0 else sign) + text
        return out

    def _print_Mul(self, expr):
        if not self.is_array(expr):
            return super()._print_Mul(expr)
        if expr.could_extract_minus_sign():
            inner = self._print(-expr)
            return "-" + (rf"\left({inner}\right)" if isinstance(-expr, sp.Add) else inner)
        factors = sp.Mul.make_args(expr)
        scalar = sp.Mul(*[f for f in factors if not self.is_array(f)])
        arrays = [f for f in factors if self.is_array(f)]
        below = [1 / f for f in arrays if isinstance(f, sp.Pow) and f.exp.is_negative]
        above = [f for f in arrays if not (isinstance(f, sp.Pow) and f.exp.is_negative)]
        # the upstream gradient first, as in delta = dL/dA (.) f'(Z)
        above.sort(key=lambda f: not (isinstance(f, sp.Symbol) and f.name.startswith("dL_d")))
        head = "" if scalar == 1 else super()._print_Mul(scalar) if isinstance(scalar, sp.Mul) \
            else self._print(scalar)
        if isinstance(scalar, sp.Add):
            head = rf"\left({head}\right)"
        if below:
            denominator = self._print(below[0]) if len(below) == 1 else self._hadamard(below)
            body = rf"\frac{{{self._hadamard(above) or '1'}}}{{{denominator}}}"
        else:
            body = self._hadamard(above)
        if head and body.startswith("-"):
            return f"-{head} {body[1:]}"
        return f"{head} {body}" if head else body

    def _hadamard(self, factors) -> str:
        if len(factors) == 1:
            return self._print(factors[0]) if not isinstance(factors[0], sp.Add) \
                else self._factor(factors[0])
        return r" \odot ".join(self._factor(f) for f in factors)

    def _factor(self, expr) -> str:
        text = self._print(expr)
        if precedence(expr) < PRECEDENCE["Mul"] or (isinstance(expr, sp.Mul)
                                                    and self.is_array(expr)
                                                    and len(expr.args) > 1
                                                    and not text.startswith(r"\frac")):
            return rf"\left({text}\right)"
        return text

    # ---------------------------------------------------------------- matrix structure

    def _print_Transpose(self, expr):
        if isinstance(expr.arg, (sp.MatrixSymbol, sp.Symbol)):
            return transposed(self._print(expr.arg))
        return rf"\left({self._print(expr.arg)}\right)^{{\top}}"

    def _print_OneMatrix(self, expr):
        rows, cols = expr.shape
        size = rows if cols == 1 else cols
        return rf"\mathbf{{1}}_{{{self._print(size)}}}"

    def _print_MatMul(self, expr):
        scalars = [a for a in expr.args if not isinstance(a, sp.MatrixExpr)]
        matrices = [a for a in expr.args if isinstance(a, sp.MatrixExpr)]
        parts = [self._print(sp.Mul(*scalars))] if scalars else []
        for m in matrices:
            text = self._print(m)
            if isinstance(m, (sp.MatAdd, sp.MatMul)) and len(m.args) > 1:
                text = rf"\left({text}\right)"
            parts.append(text)
        return " ".join(parts)

    def _print_MatAdd(self, expr):
        return " + ".join(self._print(a) for a in expr.args)

    # ---------------------------------------------------------------- array functions

    def _print_Total(self, expr):
        arg = expr.args[0]
        symbols = sorted((s for s in arg.free_symbols if s.name not in SCALARS),
                         key=lambda s: s.name)
        weights = [s for s in symbols if s.name.startswith("W")]
        kernels = [s for s in symbols if re.fullmatch(r"K\d+", s.name)]
        if kernels and len(kernels) == len(symbols):  # every entry of a kernel array
            scalar = arg.xreplace({s: sp.Symbol(entry(s.name, "f,c,u,v")) for s in symbols})
            inner = DerivationLatexPrinter(arrays=False, names=self.names).doprint(scalar)
            return rf"\sum_{{f,c,u,v}} {inner}"
        if weights and len(weights) == len(symbols):
            rows, cols = self.sizes.get(weights[0].name, ("", ""))
            sums = [("j", rows), ("i", cols)]
        else:
            shape = next((self.sizes[s.name] for s in symbols if s.name in self.sizes), ())
            sums = [("n", naming.BATCH), ("j", shape[1] if len(shape) > 1 else "")]
        index = "".join("1" if n == 1 else i for i, n in sums)
        scalar = arg.xreplace({s: sp.Symbol(entry(s.name, index)) for s in symbols})
        sign = ""
        if scalar.could_extract_minus_sign():
            sign, scalar = "-", -scalar
        inner = DerivationLatexPrinter(arrays=False, names=self.names).doprint(scalar)
        if isinstance(scalar, sp.Add):
            inner = rf"\left({inner}\right)"
        limits = "".join(rf"\sum_{{{i}=1}}^{{{n}}} " if n != "" else rf"\sum_{{{i}}} "
                         for i, n in sums if n != 1)
        return sign + limits + inner

    def _print_RowSum(self, expr):
        return rf"\left({self._print(expr.args[0])}\right) \mathbf{{1}} \mathbf{{1}}^{{\top}}"

    def _print_Softmax(self, expr):
        return rf"\operatorname{{softmax}}\left({self._print(expr.args[0])}\right)"

    def _print_LogSumExp(self, expr):
        return rf"\operatorname{{logsumexp}}\left({self._print(expr.args[0])}\right)"

    def _print_Sigmoid(self, expr):
        return rf"\sigma\left({self._print(expr.args[0])}\right)"

    def _print_Softplus(self, expr):
        return rf"\operatorname{{softplus}}\left({self._print(expr.args[0])}\right)"

    def _print_Heaviside(self, expr, exp=None):
        """The unit step as an Iverson bracket, ``[z > 0]``: 0 at the kink, as in the code.

        SymPy's own ``Heaviside`` is 1/2 at 0; the derivation and the generated code take
        the one-sided value 0 there (``np.heaviside(z, 0)``), which the bracket states.
        """
        text = rf"\left[{self._print(expr.args[0])} > 0\right]"
        return f"{text}^{{{exp}}}" if exp else text


#: A function name directly before ``\left(``: TeX would set a thin space between them.
_FUNCTION_PAREN = re.compile(
    r"(\\(?:max|min|log|exp|tanh|sinh|cosh|sin|cos|arctan|sigma|operatorname\{[^{}]*\})"
    r"(?:\^\{[^{}]*\}|_\{[^{}]*\}|'){0,3})\s*\\left\(")


def tighten(text: str) -> str:
    r"""No gap between a function's name and its ``\left(``: ``\max\mathopen{}\left(``.

    >>> tighten(r"\max\left(0, z\right) + \log\left(x\right)")
    '\\max\\mathopen{}\\left(0, z\\right) + \\log\\mathopen{}\\left(x\\right)'
    """
    return _FUNCTION_PAREN.sub(lambda m: m.group(1) + r"\mathopen{}\left(", text)


# --------------------------------------------------------------------------- widths

_WIDE = {"sum": 1.6, "prod": 1.6, "odot": 2.2, "cdot": 1.4, "quad": 2.0, "qquad": 4.0,
         "partial": 1.0, "top": 0.8, "infty": 1.2, "leftrightarrow": 2.5, "in": 2.0,
         "times": 2.0, "to": 2.0, "mapsto": 2.0, "colon": 1.0, "ldots": 2.0, "dots": 2.0}
_ZERO = {"mathopen", "left", "right", "displaystyle", "textstyle", "mathrm", "mathbf", "bm", "limits",
         "boldsymbol", "mathbb", "notag", "nonumber", "big", "Big", "bigl", "bigr", "Bigl",
         "Bigr", "biggl", "biggr"}


def latex_width(text: str) -> float:
    """Estimated set width of math ``text`` in units of about one letter (~5.5pt at 10pt).

    Fractions count their wider part, sub- and superscripts at reduced size,
    relations and binary operators with their spacing.

    >>> latex_width("a + b") < latex_width(r"\\frac{\\partial L}{\\partial A^{(1)}} + b") < 9
    True
    """
    width, _ = _width(text, 0, 1.0)
    return width


def _width(text: str, pos: int, scale: float, stop: str = "") -> tuple[float, int]:
    width = 0.0
    while pos < len(text):
        char = text[pos]
        if char in stop:
            return width, pos + 1
        if char == "{":
            inner, pos = _width(text, pos + 1, scale, "}")
            width += inner
            continue
        if char in "^_":
            pos += 1
            if pos < len(text) and text[pos] == "{":
                inner, pos = _width(text, pos + 1, scale * 0.7, "}")
            else:
                inner, pos = _width(text[pos], 0, scale * 0.7)[0], pos + 1
            width += inner
            continue
        if char == "\\":
            end = pos + 1
            while end < len(text) and text[end].isalpha():
                end += 1
            command = text[pos + 1:end] or text[pos + 1:pos + 2]
            pos = end if end > pos + 1 else pos + 2
            if command == "frac":
                num, pos = _width(text, pos + 1, scale, "}")
                den, pos = _width(text, pos + 1, scale, "}")
                width += max(num, den) + 0.4 * scale
            elif command in ("operatorname", "text", "mathrm", "texttt"):
                inner, pos = _width(text, pos + 1, scale, "}")
                width += inner
            elif command in _ZERO:
                if command in ("left", "right") and pos < len(text):
                    width += 0 if text[pos] == "." else 0.5 * scale
                    pos += 1 if text[pos] != "\\" else 0
            elif command in ("sigma", "delta", "lambda", "alpha", "varepsilon", "epsilon",
                             "eta", "xi", "theta", "mu", "pi", "tau"):
                width += scale
            elif command in (",", ";", ":", "!"):
                width += 0.3 * scale if command != "!" else 0
            elif command in ("log", "exp", "tanh", "max", "min", "sin", "cos", "erf"):
                width += (len(command) + 0.3) * scale
            else:
                width += _WIDE.get(command, 1.0) * scale
            continue
        if char in "+-=<>":
            width += (2.2 if scale == 1.0 else 1.0) * scale
        elif char in "()[]|,":
            width += 0.5 * scale
        elif char not in " &":
            width += scale
        pos += 1
    return width, pos
