"""Views of a derivation: a LaTeX document, Markdown, plain text.

Contract: :func:`render_latex` turns a :class:`~symgrad.derive.Derivation`
into a standalone LaTeX document (``pdflatex`` with texlive-latex-base and
-recommended only) that reads like a textbook: the network and notation,
the forward pass and the loss, the backward pass step by step, each step
naming its rule and showing what SymPy derived (``sigma'(z) = e^{-z}/(1 +
e^{-z})^2 = a(1 - a)``) before the matrix equation it gives, the general
recurrence and the update rule, and, given ``per_weight`` (parameter name
-> SymPy matrix of scalar derivatives), every single weight's gradient
beside the matching entry of the matrix result.  Equations carry
``\\tag{n}`` with the step number, the number of the ``# (n)`` comment in
the generated code.  :func:`render_markdown` is the same content with
``$$`` math for GitHub and Jupyter, :func:`render_latex_body` the equations
alone (``_repr_latex_``), :func:`render_text` a plain-terminal view.
Output is deterministic: the same spec gives the same bytes.

Long equations are broken between terms (or factors) where
:func:`~symgrad.latex.latex_width` says they would not fit, and shrunk to
the line width only when a single unbreakable piece is too wide.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache

import jinja2
import sympy as sp
from sympy.printing.str import StrPrinter

from . import naming, ops, primitives
from .latex import (
    DerivationLatexPrinter,
    entry,
    latex_text,
    latex_width,
    named_function,
    tighten,
    transposed,
)
from .resources import environment, templates_dir
from .symbolic import Total

#: Estimated widths (see latex_width) that fit beside a tag, in LaTeX and Markdown.
LINE_WIDTH = 52.0
#: Estimated width of a full text line without a tag.
PAGE_WIDTH = 104.0

z = sp.Symbol("z", real=True)


# --------------------------------------------------------------------------- user text

def plain_text(text: str) -> str:
    r"""User text for a terminal: control characters (ANSI escapes, line breaks) escaped.

    >>> plain_text("h\x1b[2J\nsymgrad: forged")
    'h\\x1b[2J\\nsymgrad: forged'
    """
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in str(text))


def markdown_code(text: str) -> str:
    r"""User text as inline code in Markdown, inert as HTML and Markdown (tables too).

    Plain names stay a code span; anything else becomes ``<code>`` with every ASCII
    punctuation character as a numeric entity and control characters escaped.

    >>> markdown_code("layer_1")
    '`layer_1`'
    >>> markdown_code("<img src=x onerror=alert(1)>|`")
    '<code>&#60;img src&#61;x onerror&#61;alert&#40;1&#41;&#62;&#124;&#96;</code>'
    """
    text = plain_text(text)
    if re.fullmatch(r"[A-Za-z0-9_.\-]+", text):
        return f"`{text}`"
    return "<code>" + "".join(f"&#{ord(c)};" if c.isascii() and not c.isalnum() and c != " "
                              else c for c in text) + "</code>"


# --------------------------------------------------------------------------- data for templates

@dataclass
class Equation:
    """``lhs = rhs``, possibly over several lines; ``tag`` is the step number."""

    lhs: str
    lines: list[str]
    tag: int | None = None
    note: str = ""  # e.g. \in \mathbb{R}^{N \times 2}
    resize: bool = False
    relation: str = "="

    @property
    def multiline(self) -> bool:
        return len(self.lines) > 1


@dataclass
class StepView:
    """One step of the derivation as the templates show it."""

    number: int
    title: str
    prose: list[str] = field(default_factory=list)
    scalar: list[Equation] = field(default_factory=list)  # unnumbered, before the step
    after: list[str] = field(default_factory=list)
    equation: Equation | None = None


# --------------------------------------------------------------------------- layout

def _chunks(expr, printer: DerivationLatexPrinter, limit: float) -> list[tuple[str, str]]:
    """(joiner, latex) pieces of ``expr`` between which a line may break."""
    if isinstance(expr, sp.MatAdd):
        return [("+" if i else "", printer._print(a)) for i, a in enumerate(expr.args)]
    if isinstance(expr, sp.Add):
        terms = sorted(sp.Add.make_args(expr),
                       key=lambda t: (t.could_extract_minus_sign(), t.is_number))
        out = []
        for index, term in enumerate(terms):
            negative = term.could_extract_minus_sign()
            body = -term if negative else term
            sign = "-" if negative else ("+" if index else "")
            text = printer._factor(body) if isinstance(body, sp.Add) else printer._print(body)
            if latex_width(text) > limit and isinstance(body, sp.Mul):
                pieces = _factor_chunks(body, printer)
                out.append((sign, pieces[0][1]))
                out.extend(pieces[1:])
            else:
                out.append((sign, text))
        return out
    if isinstance(expr, sp.Mul):
        sums = [f for f in sp.Mul.make_args(expr) if isinstance(f, sp.Add)]
        if len(sums) == 1:
            rest = sp.Mul(*[f for f in sp.Mul.make_args(expr) if f is not sums[0]])
            inner = _chunks(sums[0], printer, limit)
            if rest == -1:
                head = "-"
            else:
                head = printer._print(rest)
                if isinstance(rest, sp.Add):
                    head = rf"\left({head}\right)"
                if _elementwise(rest, printer) and _elementwise(sums[0], printer):
                    head += r" \odot"
            joiner, first = inner[0]
            inner[0] = ("", rf"{head} \Bigl({joiner}{first}")
            joiner, last = inner[-1]
            inner[-1] = (joiner, rf"{last}\Bigr)")
            return inner
        return _factor_chunks(expr, printer)
    return [("", printer._print(expr))]


def _factor_chunks(expr: sp.Mul, printer: DerivationLatexPrinter) -> list[tuple[str, str]]:
    factors = list(sp.Mul.make_args(expr))
    scalars = [f for f in factors if not _elementwise(f, printer)]
    others = [f for f in factors if _elementwise(f, printer)]
    joiner = r"\odot" if others else r"\cdot"
    if not others:  # a product of scalars (numbers, 1/N, sums over entries)
        others, scalars = [f for f in factors if not f.is_number], \
            [f for f in factors if f.is_number]
    pieces = []
    head = sp.Mul(*scalars) if scalars else None
    for index, factor in enumerate(others):
        text = printer._factor(factor)
        if index == 0 and head is not None and head != 1:
            text = f"{printer._factor(head) if head != -1 else '-'} {text}"
        pieces.append((joiner if index else "", text))
    return pieces


def _elementwise(expr, printer: DerivationLatexPrinter) -> bool:
    """Whether ``expr`` is an array (not a scalar such as 1/N or a sum over entries)."""
    if not printer.is_array(expr):
        return False
    bare = expr.replace(lambda e: isinstance(e, Total), lambda e: sp.Integer(1))
    return isinstance(bare, sp.MatrixExpr) or printer.is_array(bare)


def layout(lhs: str, expr, printer: DerivationLatexPrinter, *, tag: int | None = None,
           note: str = "", limit: float = LINE_WIDTH, text: str | None = None) -> Equation:
    """An :class:`Equation` for ``lhs = expr``, broken over lines if it is too wide."""
    text = printer.doprint(expr) if text is None else text
    room = limit - latex_width(lhs) - latex_width(note) - 2
    if latex_width(text) <= room:
        return Equation(lhs, [text], tag, note)
    room = limit - min(latex_width(lhs), 10) - 4
    chunks = _chunks(expr, printer, room)
    lines: list[str] = []
    for joiner, piece in chunks:
        candidate = f"{lines[-1]} {joiner} {piece}" if lines else f"{joiner}{piece}"
        if lines and latex_width(candidate) <= room:
            lines[-1] = candidate
        else:
            lines.append(f"{{}} {joiner} {piece}" if lines and joiner else
                         (candidate if not lines else piece))
    resize = any(latex_width(line) > room + 4 for line in lines)
    if latex_width(lhs) + latex_width(lines[0]) > limit:
        lines.insert(0, "")
    return Equation(lhs, lines, tag, note, resize)


# --------------------------------------------------------------------------- the builder

class _Builder:
    """Collect what the templates show, for ``target`` "tex" or "md"."""

    def __init__(self, derivation, target: str):
        self.d, self.spec, self.graph = derivation, derivation.spec, derivation.graph
        self.target = target
        sizes = {n.name: (naming.BATCH, n.size) for n in self.graph.nodes}
        sizes[naming.TARGET] = (naming.BATCH, self.graph.node(self.graph.output).size)
        for node in self.graph.nodes:
            if node.op == "dense":
                sizes[naming.grad(node.name.replace("z", "a", 1))] = sizes[node.name]
        sizes.update({k: (v + (1,))[:2] for k, v in self.graph.params.items()})
        self.sizes = sizes
        self.printer = DerivationLatexPrinter(sizes=sizes)
        self.lemmas: dict[tuple, int] = {}  # activation -> the step that derived f'
        self.scalar = DerivationLatexPrinter(arrays=False)

    # -- helpers

    def name(self, text: str) -> str:
        """A user-given name (layer, group, network) as literal text."""
        if self.target == "md":
            return markdown_code(text)
        return rf"\texttt{{{latex_text(text)}}}"

    def sym(self, name: str) -> str:
        return naming.latex(name)

    def shape(self, shape: tuple) -> str:
        if not shape:
            return ""
        dims = r" \times ".join(str(d) for d in shape)
        return rf"\in \mathbb{{R}}^{{{dims}}}"

    def fname(self, step) -> str:
        """How the activation of a step's layer is named: \\sigma, \\tanh, f_1."""
        activation = self.spec.layers[step.layer - 1].activation
        if activation.expr is None:
            rule = primitives.activation(activation.kind)
            if rule.latex:
                return rule.latex
        return f"f_{{{step.layer}}}"

    def layer_nodes(self, layer: int) -> list:
        """The graph nodes of one layer, in order (the first reads the layer's sources)."""
        return [n for n in self.graph.nodes if n.layer == layer]

    def source_latex(self, layer: int) -> str:
        node = self.layer_nodes(layer)[0]
        return ", ".join(f"${self.sym(s)}$" for s in node.sources)

    def layer_params(self, layer: int) -> list[str]:
        """The parameters of one layer: its nodes' weights and biases, then any other."""
        named = [p for n in self.layer_nodes(layer) for p in (n.weight, n.bias) if p]
        others = [p for p in self.graph.params
                  if re.fullmatch(rf"[A-Za-z_]+{layer}", p) and p not in named]
        return list(dict.fromkeys(named + others))

    def param_latex(self, name: str) -> str:
        dims = r" \times ".join(str(d) for d in self.graph.params[name])
        return rf"${self.sym(name)} \in \mathbb{{R}}^{{{dims}}}$"

    def activation_text(self, index: int, activation) -> str:
        if activation.expr is not None:
            return rf"$f_{{{index}}}(x) = {self.scalar.doprint(activation.forward())}$"
        act = self.name(activation.kind)
        extra = ", ".join(f"{k} = {_number(v)}" for k, v in activation.parameters)
        return act + (f" ({extra})" if extra else "")

    def layers(self) -> list[dict]:
        shape = self.spec.input_shape
        size = (r"$\times$".join(str(d) for d in shape) if shape and len(shape) > 1
                else str(self.spec.n_inputs))
        rows = [{"index": 0, "name": self.name("input"), "sources": "", "units": size,
                 "operation": "data", "activation": "",
                 "params": rf"$X = A^{{(0)}} {self.shape((naming.BATCH, *self.graph.node(naming.INPUT).shape))}$",
                 "groups": ""}]
        if len(self.spec.inputs) > 1:
            rows[0]["groups"] = ", ".join(
                f"{self.name(g)}: ${self.sym(naming.input_group(g))}$ ({size})"
                for g, size in self.spec.inputs)
        for index, layer in enumerate(self.spec.layers, start=1):
            params = [self.param_latex(p) for p in self.layer_params(index)]
            kernel = r"$\times$".join(map(str, layer.kernel))
            stride = "" if layer.stride == layer.kernel and layer.kind != "conv2d" else (
                "" if layer.stride == (1, 1) else
                ", stride " + ",".join(map(str, dict.fromkeys(layer.stride))))
            padding = "" if layer.padding == (0, 0) else \
                ", padding " + ",".join(map(str, dict.fromkeys(layer.padding)))
            operation = {"dense": "dense", "conv2d": f"conv {kernel}{stride}{padding}",
                         "maxpool2d": f"max pool {kernel}{stride}",
                         "avgpool2d": f"average pool {kernel}{stride}",
                         "flatten": "flatten"}.get(layer.kind, self.name(layer.kind))
            act = (self.activation_text(index, layer.activation)
                   if getattr(layer, "activation", None) is not None
                   and layer.kind not in ("maxpool2d", "avgpool2d", "flatten") else "")
            units = r"$\times$".join(map(str, layer.shape)) if layer.shape else str(layer.units)
            rows.append({"index": index, "name": self.name(layer.name),
                         "sources": self.source_latex(index), "units": units,
                         "operation": operation, "activation": act,
                         "params": ", ".join(params)})
        return rows

    def steps(self, phase: str) -> list[StepView]:
        views = []
        for step in self.d.steps:
            if step.phase != phase:
                continue
            view = getattr(self, f"step_{step.rule}", self.step_default)(step)
            if view.equation is None:
                view.equation = layout(self.sym(step.target), step.expr, self.printer,
                                       tag=step.number, note=self.shape(step.shape))
            views.append(view)
        return views

    def view(self, step, title: str, *prose: str) -> StepView:
        layer = f"Layer {step.layer}: " if step.layer else ""
        return StepView(step.number, layer + title, list(prose))

    # forward
    def step_dense(self, step) -> StepView:
        node = self.graph.node(step.target)
        if len(node.sources) == 1:
            return self.view(step, "dense layer",
                             rf"Each row of ${self.sym(node.sources[0])}$ is one sample; every "
                             "unit takes a weighted sum of its inputs plus its bias "
                             rf"($\mathbf{{1}}_N$ copies the bias row to every sample):")
        blocks = r"\;".join(self.sym(naming.block(node.weight, s)) for s in node.sources)
        return self.view(step, "dense layer over several sources",
                         f"The layer reads {self.source_latex(step.layer)}, side by side; its "
                         f"weight matrix splits into one column block per source, "
                         rf"${self.sym(node.weight)} = \begin{{bmatrix}} {blocks} "
                         r"\end{bmatrix}$, and the blocks' contributions add:")

    def step_activation_forward(self, step) -> StepView:
        activation = step.detail["activation"]
        if activation.kind == "identity" and activation.expr is None:
            return self.view(step, "identity activation", "The output is the weighted sum:")
        fname = self.fname(step)
        view = self.view(step, f"activation ${fname}$, elementwise",
                         rf"The activation acts on every entry of ${self.sym(step.target)}$'s "
                         "weighted input separately:")
        definition = layout(rf"{fname}(z)", step.detail["function"].subs(primitives.x, z),
                            self.scalar)
        if _bare(definition.lines[0]) != _bare(rf"{fname}(z)"):  # not "tanh(z) = tanh(z)"
            view.scalar.append(definition)
        return view

    def step_softmax_forward(self, step) -> StepView:
        view = self.view(step, "softmax over the units of each row",
                         "Each row becomes a probability distribution over the "
                         f"{step.shape[1]} units:")
        a, zz = entry(step.target, "nj"), entry(naming.pre_activation(step.layer), "nj")
        view.scalar.append(Equation(a, [rf"\frac{{e^{{{zz}}}}}{{\sum_{{k}} "
                                        rf"e^{{{entry(naming.pre_activation(step.layer), 'nk')}}}}}"]))
        return view

    # loss
    def step_loss(self, step) -> StepView:
        loss = self.spec.loss
        y, t = sp.Symbol("y", real=True), sp.Symbol("t", real=True)
        per_output = step.detail["per_output"]
        kind = "a custom loss" if loss.kind == "custom" else {
            "sse": "half the sum of squared errors", "mse": "the mean squared error",
            "bce": "binary cross-entropy", "cross_entropy": "cross-entropy"}.get(loss.kind,
                                                                                loss.kind)
        prose = [f"The loss is {kind}, per output $y$ with target $t$:"]
        view = self.view(step, "the loss", *prose)
        view.title = "The loss"
        view.scalar.append(layout("l(y, t)", per_output.subs({primitives.y: y, primitives.t: t}),
                                  self.scalar))
        reduce = ("summed over the outputs and the batch" if loss.reduction == "sum" else
                  r"summed over the outputs, averaged over the batch ($\frac{1}{N}$)")
        after = f"The batch loss is {reduce}"
        if loss.weight_decay:
            after += (rf", plus weight decay $\frac{{\lambda}}{{2}} \sum w^2$ over every weight "
                      rf"(not the biases), $\lambda = {_number(loss.weight_decay)}$")
        view.prose.append(after + ":")
        return view

    def step_hinge(self, step) -> StepView:
        out = self.graph.node(self.graph.output).layer
        a, t = (lambda index: entry(naming.activation(out), index)), \
            (lambda index: entry(naming.TARGET, index))
        view = self.view(step, "the loss",
                         "The loss is the multiclass hinge loss (Weston and Watkins; the SVM "
                         "loss), on the scores $a$ of the identity output layer. With $y_n$ "
                         "the true class of sample $n$, every wrong class whose score comes "
                         "within a margin of 1 of the true class's score costs the excess:")
        view.title = "The loss"
        view.scalar.append(Equation("l_n", [
            rf"\sum_{{j \neq y_n}} \max\left(0, 1 + {a('nj')} - {a('n y_n')}\right)"]))
        reduce = ("summed over the batch" if self.spec.loss.reduction == "sum" else
                  r"averaged over the batch ($\frac{1}{N}$)")
        view.prose.append(
            "The loss couples the outputs of a sample, so it is no sum of per-output terms. "
            rf"With one-hot targets the true class's score is $s_n = \sum_k {t('nk')} "
            rf"{a('nk')}$ and the factor $1 - {t('nj')}$ leaves out $j = y_n$; the batch loss is "
            + reduce + (r", plus weight decay $\frac{\lambda}{2} \sum w^2$" if
                        self.spec.loss.weight_decay else "") + ":")
        decay = sp.Add(*(term for term in sp.Add.make_args(step.expr) if not term.has(sp.Max)))
        scale = r"\frac{1}{N} " if self.spec.loss.reduction == "mean" else ""
        text = (rf"{scale}\sum_{{n=1}}^{{N}} \sum_{{j}} \left(1 - {t('nj')}\right) "
                rf"\max\left(0, 1 + {a('nj')} - s_n\right)")
        if decay != 0:
            text += " + " + self.printer.doprint(decay)
        view.equation = Equation(self.sym(step.target), [text], step.number)
        return view

    def step_hinge_derivative(self, step) -> StepView:
        out = self.graph.node(self.graph.output).layer
        a, t = (lambda index: entry(naming.activation(out), index)), \
            (lambda index: entry(naming.TARGET, index))
        view = self.view(step, "derivative of the hinge loss",
                         rf"With the margins $m_{{nj}} = 1 + {a('nj')} - s_n$, a violated "
                         rf"margin ($m_{{nj}} > 0$, $j \neq y_n$) adds 1 to its class's "
                         "slope and takes 1 from the true class's:")
        view.scalar.append(Equation(rf"\frac{{\partial l_n}}{{\partial {a('nj')}}}", [
            rf"\left(1 - {t('nj')}\right) \left[m_{{nj}} > 0\right] - {t('nj')} \sum_k "
            rf"\left(1 - {t('nk')}\right) \left[m_{{nk}} > 0\right]"]))
        view.prose.append(
            "The Iverson bracket is 0 at the kink $m_{nj} = 0$, the one-sided slope the code "
            r"takes there, as for ReLU. For the batch, with $[\,\cdot > 0]$ entrywise"
            + (r" and the $\frac{1}{N}$ of the mean" if self.spec.loss.reduction == "mean"
               else "") + ":")
        return view

    # backward
    def step_loss_derivative(self, step) -> StepView:
        view = self.view(step, "derivative of the loss",
                         "SymPy differentiates the per-output loss with respect to the output:")
        view.scalar.append(layout(r"\frac{\partial l}{\partial y}",
                                  _common_factor(step.detail["derivative"]), self.scalar))
        where = "every entry of the output"
        if self.spec.loss.reduction == "mean":
            where += r", with the $\frac{1}{N}$ of the mean"
        view.prose.append(f"Applied to {where}:")
        shown = _common_factor(step.expr)
        if shown != step.expr:  # 2 (A - T), not 2 A - 2 T
            view.equation = layout(self.sym(step.target), shown, self.printer,
                                   tag=step.number, note=self.shape(step.shape))
        return view

    def activation_scalar(self, step) -> list[Equation]:
        fname = self.fname(step)
        function, derivative = step.detail["function"], step.detail["derivative"]
        eqs = [layout(rf"{fname}(z)", function.subs(primitives.x, z), self.scalar)]
        shown = derivative.subs(primitives.x, z)
        lines = [self.scalar.doprint(shown)]
        simpler = None if step.detail.get("slope") is not None else _simplified(derivative)
        if simpler is not None:
            lines.append(self.scalar.doprint(simpler.subs(primitives.x, z)))
        activation = step.detail.get("activation")
        if activation is not None and activation.expr is None and activation.kind == "sigmoid":
            # the algebra between e^{-z}/(1 + e^{-z})^2 and sigma (1 - sigma)
            lines.append(r"\frac{1}{1 + e^{- z}} \cdot \frac{e^{- z}}{1 + e^{- z}}")
        slope = step.detail.get("slope")
        if slope is not None:
            named = named_function(fname, "F")(z)
            in_f = self.scalar.doprint(slope.subs(primitives.a, named))
            in_a = self.scalar.doprint(slope)
            if in_f != lines[-1]:
                lines.append(in_f)
            lines.append(in_a)
        if sum(latex_width(line) for line in lines) + 3 * len(lines) < LINE_WIDTH:
            eqs.append(Equation(rf"{fname}'(z)", [" = ".join(lines)]))
        else:
            eqs.append(layout(rf"{fname}'(z)", shown, self.scalar, text=lines[0]))
            for line in lines[1:]:
                eqs.append(Equation("", [line]))
        return eqs

    def step_activation(self, step) -> StepView:
        fname = self.fname(step)
        view = self.view(step, f"chain rule through ${fname}$ (elementwise)",
                         rf"Each entry of ${self.sym(step.target.replace('delta', 'a'))}$ "
                         "depends only on the same entry of the weighted input, so the chain "
                         "rule is an entrywise product. SymPy differentiates the activation:")
        key = (fname, str(step.detail["function"]))
        if key in self.lemmas:  # each activation's derivative is worked out once
            view.prose[0] = (rf"Each entry of ${self.sym(step.target.replace('delta', 'a'))}$ "
                             "depends only on the same entry of the weighted input; "
                             f"${fname}'$ is as in step ({self.lemmas[key]}).")
        else:
            self.lemmas[key] = step.number
            view.scalar = self.activation_scalar(step)
            activation = step.detail.get("activation")
            if activation is not None and activation.expr is None \
                    and activation.kind == "sigmoid":
                view.prose.append(r"since $e^{-z} / (1 + e^{-z}) = 1 - \sigma(z)$.")
        if step.detail.get("slope") is not None:
            view.prose.append(r"Written with the forward value $a$, which the forward pass "
                              "already computed, the local gradient multiplies entrywise "
                              r"($\odot$):")
        else:
            view.prose.append(r"The local gradient multiplies entrywise ($\odot$):")
        text = self.printer.doprint(step.expr)
        if latex_width(text) > LINE_WIDTH - 12:
            upstream = sp.Symbol(naming.grad(naming.activation(step.layer)))
            prime = named_function(f"{fname}'", "Fprime")(sp.Symbol(
                naming.pre_activation(step.layer)))
            short = self.printer.doprint(upstream * prime)
            short = short if latex_width(short) < LINE_WIDTH - 12 else text
            view.equation = layout(self.sym(step.target), step.expr, self.printer,
                                   tag=step.number, note=self.shape(step.shape), text=short)
            view.after.append(rf"with ${fname}'$ as above, applied to every entry.")
        return view

    def step_identity(self, step) -> StepView:
        return self.view(step, "chain rule through the identity",
                         "The identity's derivative is 1, so the error signal passes unchanged:")

    def step_softmax(self, step) -> StepView:
        a = self.sym(naming.activation(step.layer))
        return self.view(step, "chain rule through softmax",
                         r"Softmax couples the units of a row: $\partial a_{nk} / \partial z_{nj}"
                         r" = a_{nk} ([k = j] - a_{nj})$, so "
                         r"$\delta_{nj} = a_{nj} \bigl(g_{nj} - \sum_k g_{nk} a_{nk}\bigr)$ with "
                         rf"$g = \partial L / \partial {a}$; in matrix form, with "
                         r"$\mathbf{1}\mathbf{1}^\top$ spreading each row sum over the row:")

    def step_fused(self, step) -> StepView:
        fname = self.fname(step)
        view = self.view(step, f"loss and ${fname}$ together",
                         "SymPy differentiates the loss and the output activation; their "
                         "product simplifies:")
        y = sp.Symbol("y", real=True)
        view.scalar.append(layout(r"\frac{\partial l}{\partial y}",
                                  step.detail["loss_derivative"].subs(primitives.y, y),
                                  self.scalar))
        view.scalar.append(Equation(rf"{fname}'(z)", [self.scalar.doprint(step.detail["slope"])]))
        product = sp.Mul(step.detail["loss_derivative"].subs(primitives.y, primitives.a),
                         step.detail["slope"], evaluate=False)
        view.scalar.append(Equation(
            r"\frac{\partial l}{\partial z}",
            [rf"\left.\frac{{\partial l}}{{\partial y}}\right|_{{y = a}} {fname}'(z) = "
             + self.scalar.doprint(product) + " = "
             + self.scalar.doprint(step.detail["combined"])]))
        view.prose.append("The slope cancels, which is also what keeps this step accurate when "
                          rf"${fname}$ saturates. For the whole batch:")
        return view

    def step_fused_softmax(self, step) -> StepView:
        lemma = step.detail["lemma"]
        k, out = lemma["outputs"], step.layer
        bold = r"\textbf{{{}}} " if self.target == "tex" else "**{}** "
        view = self.view(step, "softmax with cross-entropy (a lemma)",
                         bold.format("Lemma.")
                         + r"Let $p_k = e^{z_k} / \sum_m e^{z_m}$ (softmax) and "
                         r"$l = -\sum_k t_k \log p_k$ with $\sum_k t_k = 1$. Then "
                         r"$\partial l / \partial z_i = p_i - t_i$.")
        view.prose[0] += (
            " " + bold.format("Proof.")
            + r"As $\log p_k = z_k - \log \sum_m e^{z_m}$ and "
            r"$\partial \log \sum_m e^{z_m} / \partial z_i = e^{z_i} / \sum_m e^{z_m} = p_i$,"
            r" with $[k = i]$ being 1 if $k = i$ and 0 otherwise,")
        view.scalar = [
            Equation(r"\frac{\partial \log p_k}{\partial z_i}", [r"[k = i] - p_i,"]),
            Equation(r"\frac{\partial l}{\partial z_i}",
                     [r"-\sum_k t_k \bigl([k = i] - p_i\bigr) = -t_i + p_i \sum_k t_k "
                      r"= p_i - t_i,"])]
        verdict = "confirms it" if lemma["proved"] else "could not confirm it"
        end = r"$\square$" if self.target == "tex" else "∎"
        view.prose.append(
            r"using $\sum_k t_k = 1$ in the last step; the first line is the softmax Jacobian "
            r"$\partial p_k / \partial z_i = p_k ([k = i] - p_i)$ divided by $p_k$. "
            f"{end} (SymPy, differentiating the {k}-output loss symbolically, {verdict}.) "
            f"Here $p$ is a row of $A^{{({out})}}$ (one sample) and $t$ the matching row of "
            "$T$. The Jacobian and the logarithm cancel, which is also why the generated "
            "code computes this step as $p - t$, never taking the logarithm of a probability. "
            "For the batch"
            + (r", with the $\frac{1}{N}$ of the mean" if self.spec.loss.reduction == "mean"
               else "") + ":")
        return view

    def step_weight(self, step) -> StepView:
        node = self.graph.node(naming.pre_activation(step.layer))
        layer, d = step.layer, self.sym(naming.delta(step.layer))
        w = self.sym(node.weight)
        delta = entry(naming.delta(layer), "nj")
        bias = f" + b^{{({layer})}}_j" if node.bias else ""
        if len(node.sources) == 1:
            source = node.sources[0]
            prose = (rf"Since $z^{{({layer})}}_{{nj}} = \sum_i {entry(source, 'ni')}\, "
                     rf"w^{{({layer})}}_{{ji}}{bias}$, the gradient of ${w}$ sums over the batch: "
                     rf"$\bigl(\partial L / \partial {w}\bigr)_{{ji}} = \sum_n {delta}\, "
                     rf"{entry(source, 'ni')}$, which is the matrix product "
                     rf"${transposed(d)} {self.sym(source)}$")
        else:
            sources = r" \; ".join(self.sym(s) for s in node.sources)
            prose = (rf"Layer {layer} reads ${sources}$ side by side, "
                     rf"$z^{{({layer})}}_{{nj}} = \sum_i \bar a_{{ni}}\, w^{{({layer})}}_{{ji}}{bias}$ "
                     r"with $\bar a_{n\cdot}$ the concatenated row, so "
                     rf"$\bigl(\partial L / \partial {w}\bigr)_{{ji}} = "
                     rf"\sum_n {delta}\, \bar a_{{ni}}$: the matrix product "
                     rf"${transposed(d)} \bigl[\, {sources} \,\bigr]$, that is, one column "
                     rf"block ${transposed(d)} S$ for each source $S$")
        if self.spec.loss.weight_decay:
            prose += rf", plus $\lambda {w}$ from the weight decay term"
        return self.view(step, f"gradient of ${w}$", prose + ":")

    def step_bias(self, step) -> StepView:
        d, layer = naming.delta(step.layer), step.layer
        return self.view(step, f"gradient of ${self.sym(naming.bias(layer))}$",
                         rf"Each bias adds to its unit for every sample: "
                         rf"$\partial L / \partial b^{{({layer})}}_j = \sum_n {entry(d, 'nj')}$:")

    def step_backprop(self, step) -> StepView:
        return self.backprop(step, False)

    def step_backprop_sum(self, step) -> StepView:
        return self.backprop(step, True)

    def backprop(self, step, several: bool) -> StepView:
        source = step.target[4:]
        users = [self.graph.node(u) for u in self.graph.consumers[source]]
        layers = ", ".join(str(u.layer) for u in users)
        a = self.sym(source)
        lu = users[0].layer
        blocks = any(len(u.sources) > 1 for u in users)
        if len(users) == 1:
            prose = (rf"${a}$ feeds layer {lu} only; as $z^{{({lu})}}_{{nk}} = "
                     rf"\sum_j {entry(source, 'nj')}\, w^{{({lu})}}_{{kj}} + \dots$, the chain "
                     rf"rule gives $\partial L / \partial {entry(source, 'nj')} = "
                     rf"\sum_k {entry(naming.delta(lu), 'nk')}\, w^{{({lu})}}_{{kj}}$")
        else:
            prose = (rf"${a}$ feeds layers {layers}; each contributes "
                     rf"$\sum_k \delta^{{(m)}}_{{nk}}\, w^{{(m)}}_{{kj}}$ for its layer $m$")
        if blocks:
            m = str(lu) if len(users) == 1 else "m"
            prose += (rf", with $w^{{({m})}}_{{kj}}$ taken from "
                      rf"$W^{{({m})}}_{{[{a}]}}$, the columns of $W^{{({m})}}$ that multiply ${a}$")
        if several:
            prose += "; the contributions of the consumers add up"
        return self.view(step, "chain rule through "
                         + ("several consumers" if several else "a dense layer"), prose + ":")

    # convolutional family
    def conv_node(self, layer: int):
        return self.layer_nodes(layer)[0]

    @staticmethod
    def _at(stride: int, out: str, offset: str) -> str:
        return f"{out}+{offset}" if stride == 1 else f"{stride}{out}+{offset}"

    def step_conv2d(self, step) -> StepView:
        node = self.graph.node(step.target)
        (sh, sw), (ph, pw), (kh, kw) = node.stride, node.padding, node.kernel
        channels = self.graph.node(node.sources[0]).shape[0]
        source, k = node.sources[0], node.weight
        index = f"n,c,{self._at(sh, 'i', 'u')},{self._at(sw, 'j', 'v')}"
        bias = f"{entry(node.bias, 'f')} + " if node.bias else ""
        padded = (f" (the input zero-padded by {_pair_text(ph, pw)} on each side)"
                  if ph or pw else "")
        view = self.view(step, "convolution",
                         f"Each of the {node.shape[0]} kernels $k^{{({node.layer})}}_{{f}} \\in "
                         rf"\mathbb{{R}}^{{{channels} \times {kh} \times {kw}}}$ slides over "
                         f"${self.sym(source)}${padded}"
                         + (f" in steps of {_pair_text(sh, sw)}" if (sh, sw) != (1, 1) else "")
                         + "; the same kernel weights serve every position (weight sharing). "
                         "Output channel $f$ at position $(i, j)$ of sample $n$ is")
        view.scalar.append(Equation(
            entry(step.target, "n,f,i,j"),
            [rf"{bias}\sum_{{c}} \sum_{{u=0}}^{{{kh - 1}}} \sum_{{v=0}}^{{{kw - 1}}} "
             rf"{entry(source, index)}\, {entry(k, 'f,c,u,v')}"]))
        view.prose.append(r"that is, the cross-correlation $\star$ of the input with each "
                          "kernel, summed over the input channels (what deep-learning libraries "
                          "call convolution):")
        return view

    def step_conv_kernel(self, step) -> StepView:
        node = self.conv_node(step.layer)
        (sh, sw) = node.stride
        d, source = naming.delta(step.layer), node.sources[0]
        index = f"n,c,{self._at(sh, 'i', 'u')},{self._at(sw, 'j', 'v')}"
        view = self.view(step, f"gradient of the kernels ${self.sym(node.weight)}$",
                         f"Weight sharing: $k^{{({step.layer})}}_{{f,c,u,v}}$ multiplies an input "
                         "entry at every output position $(i, j)$ of every sample, so its "
                         "gradient sums over all of them:")
        view.scalar.append(Equation(
            rf"\frac{{\partial L}}{{\partial {entry(node.weight, 'f,c,u,v')}}}",
            [rf"\sum_{{n=1}}^{{N}} \sum_{{i,j}} {entry(d, 'n,f,i,j')}\, {entry(source, index)}"
             + (rf" + \lambda\, {entry(node.weight, 'f,c,u,v')}"
                if self.spec.loss.weight_decay else "")]))
        view.prose.append(f"the input correlated with ${self.sym(d)}$"
                          + (r" (with $s-1$ zeros between the entries of $\delta$ for stride "
                             r"$s$, cut to the kernel's size)" if (sh, sw) != (1, 1) else "")
                          + (r", plus $\lambda K$ from the weight decay" if
                             self.spec.loss.weight_decay else "") + ":")
        return view

    def step_conv_bias(self, step) -> StepView:
        d = naming.delta(step.layer)
        view = self.view(step, f"gradient of the biases ${self.sym(naming.bias(step.layer))}$",
                         f"Bias $b^{{({step.layer})}}_f$ is added at every position of output "
                         "channel $f$ for every sample, so")
        view.scalar.append(Equation(
            rf"\frac{{\partial L}}{{\partial {entry(naming.bias(step.layer), 'f')}}}",
            [rf"\sum_{{n=1}}^{{N}} \sum_{{i,j}} {entry(d, 'n,f,i,j')}"]))
        view.prose.append("in array notation:")
        return view

    def step_conv_input(self, step) -> StepView:
        consumer = step.detail.get("consumer", step.layer)
        node = self.conv_node(consumer)
        (sh, sw), (ph, pw), (kh, _) = node.stride, node.padding, node.kernel
        d, k = naming.delta(consumer), node.weight
        a = self.sym(step.target[4:])
        view = self.view(step, f"chain rule through the convolution of layer {consumer}",
                         f"Input entry $({a})_{{n,c,p,q}}$ meets kernel entry "
                         f"$k^{{({consumer})}}_{{f,c,u,v}}$ in every output position $(i, j)$ "
                         "whose window covers it, so")
        rows = f"{self._at(sh, 'i', 'u')} = p" + (f" + {ph}" if ph else "")
        cols = f"{self._at(sw, 'j', 'v')} = q" + (f" + {pw}" if pw else "")
        view.scalar.append(Equation(
            rf"\frac{{\partial L}}{{\partial ({a})_{{n,c,p,q}}}}",
            [rf"\sum_{{f}} \sum_{{\substack{{i,u:\ {rows} \\ j,v:\ {cols}}}}} "
             rf"{entry(d, 'n,f,i,j')}\, {entry(k, 'f,c,u,v')}"]))
        full = ("As $u$ grows the output index $i$ falls: the kernel is traversed backwards, "
                rf"so this is the true (full) convolution $\ast$ of $\delta^{{({consumer})}}$ "
                rf"with the kernel, or, written as a cross-correlation, "
                rf"$\delta^{{({consumer})}}$ padded by $k - 1 = {kh - 1}$ zeros correlated with "
                r"the kernel rotated by $180^\circ$ (input and output channels swapped)")
        if (sh, sw) != (1, 1):
            full += (rf"; with stride {_pair_text(sh, sw)} only every "
                     rf"{_pair_text(sh, sw)}th position has an $i$, so "
                     r"$\delta$ first gets $s - 1$ zeros between its entries "
                     r"($\uparrow s$)")
        if ph or pw:
            full += (f"; the padding's {_pair_text(ph, pw)} border rows and columns are cut "
                     r"off again ($\operatorname{crop}$)")
        view.prose.append(full + ":")
        return view

    def step_maxpool2d(self, step) -> StepView:
        node = self.graph.node(step.target)
        (kh, kw), (sh, sw) = node.kernel, node.stride
        source = node.sources[0]
        view = self.view(step, f"max pooling {kh}$\\times${kw}",
                         "Each output is the largest entry of its window:")
        view.scalar.append(Equation(
            entry(step.target, "n,c,i,j"),
            [rf"\max_{{u < {kh},\ v < {kw}}} "
             rf"{entry(source, f'n,c,{self._at(sh, chr(105), chr(117))},{self._at(sw, chr(106), chr(118))}')}"]))
        view.prose.append("for the whole batch:")
        return view

    def step_maxpool_route(self, step) -> StepView:
        consumer = self.graph.consumers[step.target[4:]][0]
        node = self.graph.node(consumer)
        a = self.sym(step.target[4:])
        view = self.view(step, f"chain rule through the max pooling of layer {node.layer}",
                         "The maximum of a window has slope 1 in its largest entry and 0 in "
                         "every other, so each window's gradient goes, whole, to the position "
                         f"of its maximum in ${a}$ (the arg-max) and nothing to the rest. "
                         r"\emph{Tie rule:} when several entries share the maximum, the first "
                         "in row-major window order (smallest row, then smallest column) "
                         "receives it, as in the generated code (the maximum is not "
                         "differentiable there, and this is one valid subgradient)"
                         + ("; overlapping windows add their shares"
                            if node.stride != node.kernel else "") + ":")
        return view

    def step_avgpool2d(self, step) -> StepView:
        node = self.graph.node(step.target)
        (kh, kw), (sh, sw) = node.kernel, node.stride
        source = node.sources[0]
        view = self.view(step, f"average pooling {kh}$\\times${kw}",
                         "Each output is the mean of its window:")
        view.scalar.append(Equation(
            entry(step.target, "n,c,i,j"),
            [rf"\frac{{1}}{{{kh * kw}}} \sum_{{u < {kh}}} \sum_{{v < {kw}}} "
             rf"{entry(source, f'n,c,{self._at(sh, chr(105), chr(117))},{self._at(sw, chr(106), chr(118))}')}"]))
        view.prose.append("for the whole batch:")
        return view

    def step_avgpool_spread(self, step) -> StepView:
        consumer = self.graph.consumers[step.target[4:]][0]
        node = self.graph.node(consumer)
        (kh, kw) = node.kernel
        view = self.view(step, f"chain rule through the average pooling of layer {node.layer}",
                         rf"Every entry of a window has slope $1/{kh * kw}$ in its mean, so "
                         rf"each window's gradient is spread evenly over the window, divided by "
                         rf"its size $k_h k_w = {kh * kw}$"
                         + ("; overlapping windows add their shares"
                            if node.stride != node.kernel else "") + ":")
        return view

    def step_flatten(self, step) -> StepView:
        return self.view(step, "flatten",
                         "Each sample's channels, rows and columns are laid out as one row "
                         r"($\operatorname{vec}$, row-major), for the dense layers above:")

    def step_unflatten(self, step) -> StepView:
        consumer = self.graph.consumers[step.target[4:]][0]
        return self.view(step, f"chain rule through the flatten of layer "
                         f"{self.graph.node(consumer).layer}",
                         "Flattening only moves entries, so the gradient row is reshaped back "
                         "to channels, rows and columns:")

    def step_default(self, step) -> StepView:
        """Any rule without a view of its own: the registry's description, the step's LaTeX.

        A row may give its description in LaTeX (``Rule.latex``, the project's own text,
        not a user's); an operation whose class lists its recurrences (``equations``) has
        them shown before the step.
        """
        description = step.description
        title, _, _ = description.partition(":")
        text = latex_text if self.target == "tex" else plain_text
        rule = ops.rule(step.rule)
        if rule.latex and self.target == "tex":
            prose = rule.latex
        else:
            prose = text(description[:1].upper() + description[1:]) + ":"
        view = self.view(step, text(title), prose)
        if self.target == "tex":
            for node in sp.preorder_traversal(step.expr):
                equations = getattr(type(node), "equations", None)
                if callable(equations) and type(node).__name__.endswith("Backward"):
                    bptt = node.hyper[-1] if getattr(node, "hyper", ()) else 0
                    for lhs, rhs in equations(bptt):
                        view.scalar.append(Equation(lhs, [rhs]))
                    break
        return view

    # -- the rest

    def recurrence(self) -> dict:
        t = self.spec.training
        shrink = getattr(t, "shrink", getattr(t, "weight_decay", 0.0))  # [training] shrink
        return {
            "learning_rate": _number(t.learning_rate), "momentum": _number(t.momentum),
            "optimizer": t.optimizer, "mode": t.mode, "batch_size": t.batch_size,
            "epochs": t.epochs, "decay": _number(shrink) if shrink else "",
            "loss_decay": (_number(self.spec.loss.weight_decay)
                           if self.spec.loss.weight_decay else ""),
            "reduction": self.spec.loss.reduction,
        }

    def general(self) -> dict:
        """What the general recurrence, the algorithm box and the notation refer to."""
        refs: dict[str, list[int]] = {}
        for step in self.d.steps:
            refs.setdefault(step.rule, []).append(step.number)
        kinds = {layer.kind for layer in self.spec.layers}
        dense = [n for n in self.graph.nodes if n.op == "dense"]
        forward = [s.number for s in self.d.steps if s.phase == "forward"]
        backward = [s.number for s in self.d.steps if s.phase == "backward"]
        seed = backward[0] if backward else None
        return {
            "refs": defaultdict(str, {rule: _numbers(numbers) for rule, numbers in refs.items()}),
            "conv": bool(kinds & {"conv2d", "maxpool2d", "avgpool2d", "flatten"}),
            "plain": all(len(n.sources) == 1 for n in dense)
            and not any(n.op == "slice" for n in self.graph.nodes),
            "depth": len(self.spec.layers),
            "forward": _span(forward), "loss": self.d.loss_step.number,
            "seed": seed, "seed_rule": self.d.steps[seed - 1].rule if seed else "",
            "backward": _span(backward[1:]) if len(backward) > 1 else "",
            "elementwise_only": "softmax" not in refs,
            "decay": bool(self.spec.loss.weight_decay),
        }

    def per_weight(self, gradients) -> list[dict]:
        if not gradients:
            return []
        if _is_delta_form(gradients):
            return [self.per_weight_deltas(gradients)]
        names = sorted(gradients, key=lambda p: (int("".join(c for c in p if c.isdigit()) or 0),
                                                 p))
        entries = [(p, idx, sp.sympify(gradients[p][idx]))
                   for p in names for idx in _indices(gradients[p])]
        symbols = set().union(*(e.free_symbols for _, _, e in entries))
        batch = [s for s in symbols if re.fullmatch(r"x_\d+_\d+", s.name)]
        samples = 1 + max(int(s.name.split("_")[1]) for s in batch) if batch else None
        scalar = DerivationLatexPrinter(arrays=False, names=_scalar_names(self.spec, samples))
        expressions = [e for _, _, e in entries]
        abbreviations: list[Equation] = []
        if any(latex_width(scalar.doprint(e)) > LINE_WIDTH - 14 for e in expressions):
            numbered = sp.numbered_symbols("u_", start=1, real=True)
            replaced, expressions = sp.cse(expressions, symbols=numbered, optimizations="basic")
            abbreviations = [layout(scalar.doprint(u), value, scalar) for u, value in replaced]
        groups = []
        for param in names:
            runs: list[dict] = []
            for (p, idx, _), expr in zip(entries, expressions):
                if p != param:
                    continue
                lhs, rhs = self.matrix_entry(p, idx)
                eq = layout(self.weight_symbol(p, idx, r"\ell" if samples is None else "L"),
                            expr, scalar)  # one sample: the derivative of its loss
                inline = not eq.multiline and not eq.resize and latex_width(
                    lhs + rhs + eq.lhs + eq.lines[0]) < LINE_WIDTH + 12
                if not runs or runs[-1]["inline"] != inline or not inline:
                    runs.append({"inline": inline, "entries": []})
                runs[-1]["entries"].append({"lhs": lhs, "rhs": rhs, "equation": eq})
            lhs, rhs = self.matrix_entry(param, None)
            groups.append({"param": self.sym(param), "runs": runs, "general": f"{lhs} = {rhs}"})
        return [{"abbreviations": abbreviations, "groups": groups, "samples": samples,
                 "deltas": [], "slopes": [], "softmax_ce": False,
                 "mean": self.spec.loss.reduction == "mean",
                 "decay": bool(self.spec.loss.weight_decay)}]

    def delta_printer(self, form) -> DerivationLatexPrinter:
        names = {symbol.name: text for symbol, text in form.latex_names().items()}
        return DerivationLatexPrinter(arrays=False, names=names)

    def delta_equations(self, form, symbols=None) -> tuple[list[Equation], list[Equation]]:
        """The slopes named once (f_1'(z) = ...) and the error signals, as aligned rows."""
        printer = self.delta_printer(form)
        slopes = []
        primes = {}
        for prime, derivative in form.slopes.items():
            layer = prime.__name__.removeprefix("fprime")
            named = named_function(f"f_{{{layer}}}'", f"Fprime{layer}")
            primes[prime] = named
            slopes.append(layout(f"f_{{{layer}}}'(z)", derivative.subs(primitives.x, z),
                                 self.scalar))
        rows = []
        for symbol, _ in (form.deltas if symbols is None else symbols):
            shown = form.shown(symbol) if symbol in form.parts else \
                _common_factor(form.shown(symbol))
            shown = shown.replace(lambda e: type(e) in primes,
                                                lambda e: primes[type(e)](*e.args))
            rows.append(layout(printer.doprint(symbol), shown, printer))
        return slopes, rows

    def per_weight_deltas(self, form) -> dict:
        """Every weight with named error signals: delta_j a_i, the deltas defined once."""
        printer = self.delta_printer(form)
        slopes, deltas = self.delta_equations(form)
        groups = []
        for param, matrix in form.gradients.items():
            cells = []
            for idx in _indices(matrix):
                text = printer.doprint(form.signal(param, idx))
                if param.startswith("W"):
                    text += r"\, " + printer.doprint(form.input_of(param, idx))
                if form.gradients[param][idx].has(form_decay()):
                    text += r" + \lambda " + printer.doprint(form.params[param][idx])
                cells.append((idx[0], self.weight_symbol(param, idx, r"\ell", slash=True), text))
            width = max(latex_width(f"{lhs} = {rhs}") for _, lhs, rhs in cells) + 4
            fits = max(1, min(4, int(PAGE_WIDTH // width)))
            if param.startswith("b"):  # one entry per unit: fill the rows
                cells = [(0, lhs, rhs) for _, lhs, rhs in cells]
            rows: list[tuple] = []
            for unit in dict.fromkeys(u for u, _, _ in cells):  # a row per unit j, wrapped
                mine = [(lhs, rhs) for u, lhs, rhs in cells if u == unit]
                count = -(-len(mine) // fits)
                per_row = -(-len(mine) // count)  # balanced: no orphan at the end
                rows += [(unit, mine[i:i + per_row]) for i in range(0, len(mine), per_row)]
            lhs, rhs = self.matrix_entry(param, None)
            groups.append({"param": self.sym(param), "general": f"{lhs} = {rhs}",
                           "rows": [cells for _, cells in rows], "runs": []})
        return {"abbreviations": [], "groups": groups, "samples": None, "deltas": deltas,
                "slopes": slopes, "mean": self.spec.loss.reduction == "mean",
                "decay": bool(self.spec.loss.weight_decay),
                "softmax_ce": form.softmax_cross_entropy}

    def weight_symbol(self, param: str, idx: tuple, loss: str = "L", slash: bool = False) -> str:
        head = entry(param, _index(idx if param.startswith("W") else idx[:1]))
        if slash:
            return rf"\partial {loss} / \partial {head}"
        return rf"\frac{{\partial {loss}}}{{\partial {head}}}"

    def matrix_entry(self, param: str, idx: tuple | None,
                     slash: bool = False) -> tuple[str, str]:
        """``(dL/dW)_{ji} = sum_n delta_nj a_ni`` for one entry (or in general, idx None).

        Indices count from 0, as in the generated code and :mod:`symgrad.expand`.
        """
        layer = int("".join(c for c in param if c.isdigit()))
        delta = naming.delta(layer)
        node = self.graph.node(naming.pre_activation(layer))
        bias = param.startswith("b")
        if idx is None:
            j, i, sep = "j", "" if bias else "i", ""
        else:  # a bias is one index, even when stored as a (units, 1) column
            j, i = str(idx[0]), str(idx[1]) if len(idx) > 1 and not bias else ""
            sep = "," if (len(j) > 1 or len(i) > 1) and i else ""
        lhs = (rf"(\partial L / \partial {self.sym(param)})_{{{j}{sep}{i}}}" if slash else
               rf"\left(\frac{{\partial L}}{{\partial {self.sym(param)}}}\right)_{{{j}{sep}{i}}}")
        if param.startswith("b"):
            return lhs, rf"\sum_{{n}} {entry(delta, 'n' + (',' if len(j) > 1 else '') + j)}"
        if idx is None:
            source = entry(node.sources[0], "ni") if len(node.sources) == 1 else "a_{ni}"
        else:
            column, source = idx[1], ""
            for src, start, stop in self.graph.blocks(node):
                if start <= column < stop:
                    column_in = column - start
                    src_node = self.graph.node(src)
                    if src_node.op == "slice":
                        src, column_in = naming.INPUT, src_node.start + column_in
                    source = entry(src, "n" + ("," if column_in > 9 else "") + str(column_in))
        text = rf"\sum_{{n}} {entry(delta, 'n' + (',' if len(j) > 1 else '') + j)}\, {source}"
        if self.spec.loss.weight_decay:
            text += rf" + \lambda {entry(param, j + sep + i)}"
        return lhs, text


def form_decay() -> sp.Symbol:
    """The weight-decay symbol of the scalar expansion (lambda)."""
    from .expand import LAMBDA
    return LAMBDA


def _is_delta_form(per_weight) -> bool:
    """Whether ``per_weight`` is a :class:`symgrad.expand.DeltaForm` (not a dict of matrices)."""
    return hasattr(per_weight, "deltas") and hasattr(per_weight, "gradients")


def _scalar_names(spec, samples: int | None) -> dict[str, str]:
    """LaTeX of the scalar expansion's symbols (``w1_0_1`` -> ``w^{(1)}_{01}``)."""
    try:
        from .expand import latex_names
    except ImportError:  # pragma: no cover - the expansion is optional
        return {}
    try:
        return {symbol.name: text for symbol, text in latex_names(spec, samples).items()}
    except Exception:  # noqa: BLE001 - names are cosmetic; never fail the document on them
        return {}


def _indices(matrix) -> list[tuple]:
    matrix = sp.Matrix(matrix)
    return [(r, c) for r in range(matrix.rows) for c in range(matrix.cols)]


def _index(idx: tuple) -> str:
    parts = [str(i) for i in idx]
    return ("," if any(len(p) > 1 for p in parts) else "").join(parts)


def _numbers(numbers: list[int]) -> str:
    """Equation references: ``(3)``, ``(3) and (7)``, ``(3), (7) and (9)``."""
    refs = [f"({n})" for n in numbers]
    return refs[0] if len(refs) == 1 else ", ".join(refs[:-1]) + " and " + refs[-1]


def _span(numbers: list[int]) -> str:
    if not numbers:
        return ""
    return f"({numbers[0]})" if len(numbers) == 1 else f"({numbers[0]})--({numbers[-1]})"


def _common_factor(expr):
    """``2 y - 2 t`` as ``2 (y - t)``: a common factor taken out of a sum, for display."""
    if not isinstance(expr, sp.Expr) or isinstance(expr, sp.MatrixExpr):
        return expr
    factored = sp.factor_terms(expr)
    sums = [f for f in sp.Mul.make_args(factored) if isinstance(f, sp.Add)]
    if len(sums) != 1:
        return expr
    rest = sp.Mul(*[f for f in sp.Mul.make_args(factored) if f is not sums[0]])
    if rest == 1 or sp.Mul(*[f for f in sp.Mul.make_args(expr)
                             if not isinstance(f, sp.Add)]) == rest:
        return expr  # nothing new came out
    return sp.Mul(rest, sums[0], evaluate=False)


def _bare(text: str) -> str:
    """LaTeX without sizing and spacing, to compare what two pieces say."""
    return re.sub(r"\\(left|right|mathopen\{\})|\s", "", text)


def _pair_text(a: int, b: int) -> str:
    return str(a) if a == b else f"{a} (rows) and {b} (columns)"


def _number(value: float) -> str:
    return repr(float(value)).removesuffix(".0") if float(value).is_integer() else repr(value)


def _escape_plain(text: str) -> str:
    return "".join({"_": " ", "^": "", "&": "and", "%": "percent", "#": "", "$": "",
                    "\\": "", "{": "", "}": ""}.get(c, c) for c in text)


@lru_cache(maxsize=None)
def _simplified(derivative: sp.Expr) -> sp.Expr | None:
    """SymPy's simplification of f'(x) when it is shorter than the raw derivative."""
    if derivative.has(sp.Piecewise, sp.Heaviside) or sp.count_ops(derivative) > 60:
        return None
    simpler = sp.simplify(derivative)
    if sp.count_ops(simpler) < sp.count_ops(derivative) and simpler != derivative:
        return simpler
    return None


# --------------------------------------------------------------------------- environments

@lru_cache(maxsize=None)
def latex_environment() -> jinja2.Environment:
    """Jinja2 over ``templates/`` with LaTeX-friendly delimiters: ``\\VAR{}``, ``\\BLOCK{}``."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        block_start_string=r"\BLOCK{", block_end_string="}",
        variable_start_string=r"\VAR{", variable_end_string="}",
        comment_start_string=r"\#{", comment_end_string="}",
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
        trim_blocks=True, lstrip_blocks=True, autoescape=False,
    )


def _context(derivation, per_weight, target: str) -> dict:
    builder = _Builder(derivation, target)
    spec = derivation.spec
    return {
        "spec": spec, "name": builder.name(spec.name), "layers": builder.layers(),
        "forward": builder.steps("forward"), "loss": builder.steps("loss"),
        "backward": builder.steps("backward"), "training": builder.recurrence(),
        "per_weight": builder.per_weight(per_weight), "skip": any(
            len(n.sources) > 1 for n in derivation.graph.nodes if n.op == "dense"),
        "decay": bool(spec.loss.weight_decay), "groups": len(spec.inputs) > 1,
        "uses_heaviside": any(s.expr.has(sp.Heaviside) for s in derivation.steps
                              if isinstance(s.expr, sp.Basic)),
        "general": builder.general(),
        "figure": network_figure(spec, derivation.graph) if target == "tex" else {},
        "figure_units": FIGURE_UNITS, "fragment": False,
    }


def render_latex(derivation, *, per_weight=None, fragment: bool = False) -> str:
    """A standalone LaTeX document of the derivation (pdflatex; amsmath, booktabs, TikZ).

    ``fragment=True`` leaves out the preamble and the document environment, for ``\\input``
    into a paper; a comment at its top lists the packages it needs.
    """
    context = _context(derivation, per_weight, "tex")
    context["fragment"] = fragment
    return tighten(latex_environment().get_template("derivation.tex.j2").render(context))


def render_latex_body(derivation) -> str:
    """The numbered equations alone, as one ``align`` environment (``_repr_latex_``)."""
    builder = _Builder(derivation, "md")
    rows = []
    for phase in ("forward", "loss", "backward"):
        for view in builder.steps(phase):
            eq = view.equation
            for index, line in enumerate(eq.lines):
                lhs = eq.lhs if index == 0 else ""
                rel = "&=" if index == 0 else r"&\quad"
                last = index == len(eq.lines) - 1
                end = rf"\tag{{{eq.tag}}}" if last else r"\notag"
                rows.append(f"{lhs} {rel} {line} {end}")
    return tighten("\\begin{align}\n" + " \\\\\n".join(rows) + "\n\\end{align}")


def render_markdown(derivation, *, per_weight: dict | None = None) -> str:
    """The derivation in Markdown with ``$$`` math (GitHub, Jupyter)."""
    return tighten(environment().get_template("derivation.md.j2").render(
        _context(derivation, per_weight, "md")))


# --------------------------------------------------------------------------- plain text

class TextPrinter(StrPrinter):
    """Steps as one-line formulas for a terminal: ``δ2 = dL/dA2 ⊙ A2 ⊙ (1 - A2)``."""

    def _print_Symbol(self, expr):
        return naming.text(expr.name)

    _print_MatrixSymbol = _print_Symbol

    def _is_array(self, expr) -> bool:
        """An array factor: an array symbol outside any sum over entries (a Σ is a scalar)."""
        bare = expr.replace(lambda e: isinstance(e, Total), lambda e: sp.Integer(1))
        return any(s.name not in (naming.BATCH, naming.DECAY) for s in bare.free_symbols
                   if isinstance(s, sp.Symbol)) or isinstance(bare, sp.MatrixExpr)

    def _print_Mul(self, expr):
        factors = sp.Mul.make_args(expr)
        arrays = [f for f in factors if self._is_array(f) and not
                  (isinstance(f, sp.Pow) and f.exp.is_negative)]
        if len(arrays) < 2:
            return super()._print_Mul(expr)
        rest = sp.Mul(*[f for f in factors if f not in arrays])
        arrays.sort(key=lambda f: not (isinstance(f, sp.Symbol) and f.name.startswith("dL_d")))
        body = " ⊙ ".join(self.parenthesize(f, 50) for f in arrays)
        if rest == 1:
            return body
        if rest == -1:
            return f"-({body})"
        return f"{self.parenthesize(rest, 50)} * ({body})"

    def _print_Transpose(self, expr):
        return f"{self.parenthesize(expr.arg, 999)}ᵀ"

    def _print_MatMul(self, expr):
        return " ".join(self.parenthesize(a, 50) for a in expr.args)

    def _print_MatAdd(self, expr):
        return " + ".join(self._print(a) for a in expr.args)

    def _print_OneMatrix(self, expr):
        return "1"

    def _print_BlockMatrix(self, expr):
        return "[" + " | ".join(self._print(b) for b in expr.blocks) + "]"

    def _print_Total(self, expr):
        return f"Σ({self._print(expr.args[0])})"

    def _print_RowSum(self, expr):
        return f"rowsum({self._print(expr.args[0])})"

    def _print_Sigmoid(self, expr):
        return f"σ({self._print(expr.args[0])})"

    def _print_Heaviside(self, expr):
        return f"H({self._print(expr.args[0])})"


class ScalarTextPrinter(StrPrinter):
    """Scalars of the per-weight view for a terminal: ``δ2[0]*W2[0,1]``, no ``⊙``."""

    def _print_Symbol(self, expr):
        name = expr.name
        match = re.fullmatch(r"(delta|a|z|w|b)(\d+)_(\d+)(?:_(\d+))?", name)
        if match:
            kind, layer, j, i = match.groups()
            head = {"delta": "δ", "w": "W"}.get(kind, kind)
            return f"{head}{layer}[{j}{',' + i if i is not None else ''}]"
        match = re.fullmatch(r"([xt])_(\d+)(?:_(\d+))?", name)
        if match:
            letter, first, second = match.groups()
            return f"{letter}[{first}{',' + second if second is not None else ''}]"
        return naming.text(name)

    def _print_Function(self, expr):
        name = type(expr).__name__
        if name.startswith("fprime"):
            return f"f{name[6:]}'({', '.join(self._print(a) for a in expr.args)})"
        return super()._print_Function(expr)

    def _print_Heaviside(self, expr):
        return f"H({self._print(expr.args[0])})"

    def _print_Sigmoid(self, expr):
        return f"σ({self._print(expr.args[0])})"


def _text_cse(expressions: list) -> tuple[list[tuple], list]:
    """Shared subexpressions of long scalar expressions named u1, u2, ... (text view)."""
    printer = ScalarTextPrinter()
    if not any(len(printer.doprint(e)) > 100 for e in expressions):
        return [], expressions
    numbered = sp.numbered_symbols("u", start=1, real=True)
    return sp.cse(expressions, symbols=numbered, optimizations="basic")


def _text_per_weight(per_weight, only: tuple | None = None) -> dict:
    """The per-weight part of the text view: deltas and products, or (dict) SymPy's entries."""
    printer = ScalarTextPrinter()
    if _is_delta_form(per_weight):
        form = per_weight
        entries = []
        for param, matrix in form.gradients.items():
            for idx in _indices(matrix):
                if only is not None and (param, idx) != only:
                    continue
                shown = idx[:1] if param.startswith("b") else idx
                text = printer.doprint(form.signal(param, idx))
                if param.startswith("W"):
                    text += "*" + printer.parenthesize(form.input_of(param, idx), 50)
                if matrix[idx].has(form_decay()):
                    text += " + λ*" + printer.doprint(form.params[param][idx])
                entries.append((f"dℓ/d{param}[{','.join(map(str, shown))}]", text,
                                matrix[idx]))
        symbols = (form.deltas if only is None else
                   form.needed(sp.Add(*(e for _, _, e in entries))))

        def shown_text(symbol) -> str:
            if symbol not in form.parts:
                return printer.doprint(_common_factor(dict(form.deltas)[symbol]))
            return "*".join(printer.parenthesize(f, 50, strict=True) for f in form.parts[symbol])

        definitions = [(printer.doprint(s), shown_text(s)) for s, _ in symbols]
        slopes = [(f"f{prime.__name__[6:]}'(x)", printer.doprint(d))
                  for prime, d in form.slopes.items()]
        return {"kind": "deltas", "definitions": definitions, "slopes": slopes,
                "heaviside": any(e.has(sp.Heaviside) for _, e in symbols),
                "weights": [(n, e) for n, e, _ in entries],
                "softmax_ce": form.softmax_cross_entropy}
    names, expressions = [], []
    for param in sorted(per_weight):
        matrix = sp.Matrix(per_weight[param])
        for idx in _indices(matrix):
            shown = idx[:1] if param.startswith("b") else idx  # a bias has one index
            names.append(f"dL/d{param}[{_index(shown)}]")
            expressions.append(matrix[idx])
    replaced, expressions = _text_cse(expressions)
    return {"kind": "full", "definitions": [(printer.doprint(u), printer.doprint(v))
                                            for u, v in replaced],
            "slopes": [], "softmax_ce": False,
            "weights": [(n, printer.doprint(e)) for n, e in zip(names, expressions)]}


def render_weight(derivation, per_weight, weight: str) -> str:
    """One weight's derivative in the text view, with the error signals it uses."""
    name, idx = per_weight.entry(weight)
    part = _text_per_weight(per_weight, only=(name, idx))
    lines = [f"{n} = {e}" for n, e in part["weights"]]
    if part["definitions"]:
        lines.append("where, from the output down (one sample; al[j] from the forward pass):")
        lines += [f"  {n} = {e}" for n, e in part["slopes"] + part["definitions"]]
    return "".join(plain_text(line) + "\n" for line in lines)


def render_text(derivation, *, per_weight=None) -> str:
    """A plain-text view: notation, one numbered line per step, the recurrence and the update."""
    printer = TextPrinter()
    rows = []
    for step in derivation.steps:
        shape = "×".join(str(d) for d in step.shape) if step.shape else "scalar"
        rows.append({"number": step.number, "phase": step.phase,
                     "lhs": naming.text(step.target), "rhs": printer.doprint(step.expr),
                     "shape": shape, "rule": step.description,
                     "layer": step.layer, "detail": _text_detail(step, printer)})
    part = _text_per_weight(per_weight) if per_weight else None
    if part:
        for key in ("definitions", "slopes", "weights"):
            part[key] = [(plain_text(n), plain_text(e)) for n, e in part[key]]
    rows = [{key: plain_text(value) if isinstance(value, str) else value
             for key, value in row.items()} for row in rows]
    builder = _Builder(derivation, "md")
    return environment().get_template("derivation.txt.j2").render(
        spec=derivation.spec, name=plain_text(derivation.spec.name), steps=rows,
        per_weight=part, training=builder.recurrence(), general=builder.general(),
        skip=any(len(n.sources) > 1 for n in derivation.graph.nodes if n.op == "dense"))


def _text_detail(step, printer: TextPrinter) -> str:
    detail = step.detail
    if step.rule == "activation":
        text = f"f(x) = {detail['function']}, f'(x) = {detail['derivative']}"
        if detail.get("slope") is not None:
            text += f" = {detail['slope']} with a = f(x)"
        return text
    if step.rule == "loss_derivative":
        return f"l(y, t) = {detail['per_output']}, dl/dy = {detail['derivative']}"
    if step.rule == "fused":
        return (f"dl/dy = {detail['loss_derivative']}, f' = {detail['slope']}: "
                f"together {detail['combined']}")
    if step.rule == "fused_softmax":
        return "softmax with cross-entropy: dl/dz = p - t (checked by SymPy)"
    if step.rule == "loss":
        return f"l(y, t) = {detail['per_output']}, reduction {detail['reduction']}"
    if step.rule == "hinge":
        return f"per sample: sum over j != y of max(0, 1 + s_j - s_y), reduction {detail['reduction']}"
    return ""


# --------------------------------------------------------------------------- the figure

#: The most units a column of the network figure shows; wider layers are elided.
FIGURE_UNITS = 6


def _drawn_units(size: int) -> list[int | None]:
    """Unit indices a column shows, ``None`` for the ellipsis: 0 1 2 ... n-2 n-1."""
    if size <= FIGURE_UNITS:
        return list(range(size))
    return [0, 1, 2, None, size - 2, size - 1]


def network_figure(spec, graph) -> dict:
    r"""The network drawn from the spec in TikZ, as in Bishop's Fig. 5.7.

    Units are circles (at most :data:`FIGURE_UNITS` a layer, the middle ones elided), a
    layer without units of its own (convolution, pooling, recurrent, normalisation, ...)
    a labelled box; connections that skip a layer are curved.  One weight
    :math:`w^{(l)}_{ji}` is drawn thick and labelled, and red dashed arrows show the error
    signals :math:`\delta^{(l+1)}_k` flowing back to unit j.  Returns the picture and the
    names the caption needs.
    """
    depth = len(spec.layers)
    columns = depth + 1
    step = min(2.6, 13.0 / max(columns, 1))
    gap = 0.85
    first_nodes = {layer: [n for n in graph.nodes if n.layer == layer][0]
                   for layer in range(1, depth + 1)}

    def source_layers(layer: int) -> list[tuple[int, tuple | None]]:
        """(layer read, input columns or None) for each source of a layer."""
        out = []
        for name in first_nodes[layer].sources:
            node = graph.node(name)
            while node.layer == layer and node.sources:
                node = graph.node(node.sources[0])
            if node.op == "slice":
                out.append((0, (node.start, node.start + node.size)))
            else:
                out.append((node.layer or 0, None))
        return out

    shape = spec.input_shape
    unit_columns = {0: shape is None or len(shape) <= 1}
    sizes = {0: spec.n_inputs}
    for index, layer in enumerate(spec.layers, start=1):
        unit_columns[index] = layer.kind == "dense"
        sizes[index] = layer.units
    lines = [r"\begin{tikzpicture}[x=1cm, y=1cm, >=stealth,",
             r"  unit/.style={circle, draw, thick, minimum size=5.5mm, inner sep=0pt, "
             r"font=\scriptsize},",
             r"  box/.style={draw, thick, rounded corners=2pt, align=center, "
             r"minimum height=2.2cm, text width=%.2fcm, font=\scriptsize}," % (step * 0.62),
             r"  edge/.style={draw=black!35}, skip/.style={draw=blue!60, bend left=28},",
             r"  back/.style={->, draw=red!75!black, dashed, thick}]"]
    where: dict[int, dict] = {}  # column -> unit index -> node name (or "box")
    for column in range(columns):
        x = column * step
        if unit_columns[column]:
            drawn = _drawn_units(sizes[column])
            top = (len(drawn) - 1) * gap / 2
            where[column] = {}
            for row, unit in enumerate(drawn):
                y = top - row * gap
                if unit is None:
                    lines.append(rf"\node at ({x:.2f},{y:.2f}) {{$\vdots$}};")
                    continue
                name = f"u{column}x{unit}"
                where[column][unit] = name
                label = (rf"$x_{{{unit}}}$" if column == 0 else "")
                lines.append(rf"\node[unit] ({name}) at ({x:.2f},{y:.2f}) {{{label}}};")
        else:
            if column == 0:
                text = r"input\\ " + r"$\times$".join(map(str, shape))
            else:
                layer = spec.layers[column - 1]
                kind = {"conv2d": "conv", "maxpool2d": "max pool", "avgpool2d": "avg pool",
                        "rnn": "recurrent", "lstm": "LSTM", "gru": "GRU",
                        "batchnorm": "batch norm", "layernorm": "layer norm"}.get(
                            layer.kind, latex_text(layer.kind))
                dims = layer.shape if layer.shape else (layer.units,)
                text = kind + r"\\ " + r"$\times$".join(map(str, dims))
            lines.append(rf"\node[box] (c{column}) at ({x:.2f},0) {{{text}}};")
            where[column] = {}
        label = "input" if column == 0 else f"$l = {column}$"
        lines.append(rf"\node[font=\scriptsize, anchor=north] at ({x:.2f},-2.75) {{{label}}};")

    def anchors(column: int, span: tuple | None) -> list[str]:
        if not where[column]:
            return [f"c{column}"]
        return [name for unit, name in where[column].items()
                if span is None or span[0] <= unit < span[1]]

    bundles: list[bool] = []
    candidates = []  # (source column, unit i's node, layer): where w_ji can be shown
    for layer in range(1, depth + 1):
        for source, span in source_layers(layer):
            bent = layer - source > 1
            pairs = [(a, b) for a in anchors(source, span) for b in anchors(layer, None)]
            if bent and len(pairs) > 4:  # a bundle: one thick curve for all of them
                a, b = anchors(source, span)[0], anchors(layer, None)[0]
                lines.append(rf"\draw[skip, line width=2.2pt, draw=blue!45, bend left=22] "
                             rf"({a}) to ({b});")
                bundles.append(True)
            else:
                for a, b in pairs:
                    lines.append(rf"\draw[{'skip' if bent else 'edge'}] ({a}) to ({b});")
            if unit_columns[layer] and unit_columns[source] and not bent \
                    and anchors(source, span):
                candidates.append((source, anchors(source, span)[0], layer))
    fed = [c for c in candidates
           if any(unit_columns[m] and any(s == c[2] for s, _ in source_layers(m))
                  for m in range(c[2] + 1, depth + 1))]
    highlight = (fed or candidates or [None])[-1]
    out_x = depth * step + step * 0.75
    lines.append(rf"\node[draw, thick, font=\small] (loss) at ({out_x:.2f},0) {{$L$}};")
    for a in anchors(depth, None):
        lines.append(rf"\draw[edge] ({a}) to (loss);")
    names = {"weight": "", "delta": ""}
    if highlight is not None:
        source, a, layer = highlight
        b = next(iter(where[layer].values()))
        i, j = a.split("x")[1], b.split("x")[1]
        lines.append(rf"\draw[very thick] ({a}) -- node[above, sloped, font=\scriptsize, "
                     rf"pos=0.45] {{$w^{{({layer})}}_{{{j}{i}}}$}} ({b});")
        lines.append(rf"\node[font=\scriptsize, anchor=north, inner sep=1pt] at "
                     rf"({b}.south) {{$\delta^{{({layer})}}_{{{j}}}$}};")
        lines.append(rf"\node[font=\scriptsize, anchor=south east, inner sep=1pt] at "
                     rf"({a}.north west) {{$a_{{{i}}}$}};" if source else "")
        names["weight"] = rf"$w^{{({layer})}}_{{{j}{i}}}$"
        consumers = [m for m in range(layer + 1, depth + 1) if unit_columns[m]
                     and any(s == layer for s, _ in source_layers(m))]
        if consumers and where[consumers[0]]:
            m = consumers[0]
            for (k, name), side in zip(list(where[m].items())[:2], ("above", "below")):
                lines.append(rf"\draw[back] ({name}) to[bend right=10] node[pos=0.3, {side}, "
                             rf"font=\scriptsize, inner sep=1pt] "
                             rf"{{$\delta^{{({m})}}_{{{k}}}$}} ({b});")
            names["delta"] = rf"$\delta^{{({m})}}_k$"
        else:
            lines.append(rf"\draw[back] (loss) to[bend right=20] node[pos=0.4, font=\scriptsize,"
                         rf" fill=white, inner sep=1pt] {{$\partial L / \partial a$}} ({b});")
            names["delta"] = rf"$\partial L / \partial a^{{({depth})}}_j$"
    lines.append(r"\end{tikzpicture}")
    return {"tikz": "\n".join(line for line in lines if line), "bundles": bool(bundles),
            **names}


def _register_views() -> None:
    """Make ``str(derivation)`` and Jupyter's rich display use these printers."""
    from .derive import VIEWS

    VIEWS.update(text=render_text, latex=render_latex_body, markdown=render_markdown)


_register_views()
