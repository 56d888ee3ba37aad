"""The symbolic chain rule, assembled layer by layer.

Contract: :func:`derive` turns a spec (or its graph) into a
:class:`Derivation`: an ordered list of numbered :class:`Step` objects, the
forward pass, the loss, then the backward pass, each naming the rule it
applies.  Matrix steps (``Z = X W^T + 1 b^T``, ``dL/dW = delta^T A``) are
SymPy matrix expressions over :class:`~sympy.MatrixSymbol` with the batch
size ``N`` symbolic; elementwise steps (``delta = dL/dA * A (1 - A)``) are
SymPy expressions whose symbols stand for whole arrays.  SymPy derives every
elementwise and loss derivative (:mod:`symgrad.primitives`); the derivation
never expands the network into scalars, so its cost does not grow with the
width of a layer, and grows linearly with depth.

Each step carries its textbook form (``expr``, what the LaTeX shows) and,
where that form is unstable in floating point, a stable form for code
(``code``): softmax with cross-entropy fused to ``p - t`` and a max-shifted
log-sum-exp, binary cross-entropy from the logits, overflow-free sigmoid
and softplus.  The LaTeX printer and the code generator are two views of
this one object.

>>> from symgrad.spec import Network
>>> d = derive(Network(inputs=2).dense(2, "sigmoid").dense(1, "sigmoid").loss("sse").build())
>>> [(s.number, s.target, s.rule) for s in d.backward][:3]
[(6, 'dL_da2', 'loss_derivative'), (7, 'delta2', 'activation'), (8, 'dL_dW2', 'weight')]
>>> d.step("delta2").expr
a2*dL_da2*(1 - a2)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import sympy as sp

from . import naming, ops
from .graph import Graph, Node, build_graph
from .spec import NetworkSpec

N = sp.Symbol(naming.BATCH, positive=True, integer=True)
LAMBDA = sp.Symbol(naming.DECAY, nonnegative=True)

@dataclass(frozen=True)
class Step:
    """One numbered equation: ``target = expr``, the rule it applies, its shape."""

    number: int
    phase: str  # forward | loss | backward
    target: str
    expr: sp.Basic
    rule: str
    shape: tuple
    layer: int | None = None
    code: sp.Basic | None = None  # stable form for code, when it differs from expr
    detail: dict = field(default_factory=dict, compare=False)

    @property
    def elementwise(self) -> bool:
        return not isinstance(self.expr, sp.MatrixExpr)

    @property
    def code_expr(self) -> sp.Basic:
        return self.expr if self.code is None else self.code

    @property
    def description(self) -> str:
        return ops.rule(self.rule).description


@dataclass
class Derivation:
    """The whole derivation: spec, graph and numbered steps."""

    spec: NetworkSpec
    graph: Graph
    steps: list[Step]
    gradients: dict[str, str]  # parameter -> target of its gradient step

    @property
    def forward(self) -> list[Step]:
        return [s for s in self.steps if s.phase == "forward"]

    @property
    def backward(self) -> list[Step]:
        return [s for s in self.steps if s.phase == "backward"]

    @property
    def loss_step(self) -> Step:
        return next(s for s in self.steps if s.phase == "loss")

    def step(self, target: str) -> Step:
        """The step that defines ``target``."""
        return next(s for s in self.steps if s.target == target)

    def __str__(self) -> str:
        view = VIEWS.get("text")
        if view is not None:
            return view(self)
        return "\n".join(f"({s.number}) {s.target} = {sp.sstr(s.expr)}" for s in self.steps)

    def _repr_latex_(self) -> str | None:
        view = VIEWS.get("latex")
        return None if view is None else view(self)

    def _repr_markdown_(self) -> str | None:
        view = VIEWS.get("markdown")
        return None if view is None else view(self)


#: Views of a derivation (text, latex, markdown) that the document printers downstream
#: register when they are imported; this module never imports them.
VIEWS: dict[str, Callable[[Derivation], str]] = {}


def array(name: str) -> sp.Symbol:
    """A symbol standing for a whole array in an elementwise step."""
    return sp.Symbol(name, real=True)


def derive(spec_or_graph: NetworkSpec | Graph) -> Derivation:
    """Derive dL/dW and dL/db for every parameter of the network."""
    graph = spec_or_graph if isinstance(spec_or_graph, Graph) else build_graph(spec_or_graph)
    return _Deriver(graph).run()


def derivation_of(spec) -> Derivation:
    """A derivation given one, a spec, or the path of a TOML spec."""
    if isinstance(spec, Derivation):
        return spec
    if isinstance(spec, (str, Path)):
        from .spec import load_spec

        spec = load_spec(spec)
    return derive(spec)


ops.register_rules({
    "backprop_sum": ops.Rule("chain rule through several consumers: their contributions add up",
                             "dL/d{wrt}: contributions of every consumer add up"),
})


class _Deriver:
    """The context the registry rows derive in: the graph, and the steps so far."""

    N, LAMBDA, naming = N, LAMBDA, naming

    def __init__(self, graph: Graph):
        self.graph, self.spec = graph, graph.spec
        self.steps: list[Step] = []
        self.gradients: dict[str, str] = {}

    def add(self, phase: str, target: str, expr: sp.Basic, rule: str, shape: tuple,
            layer: int | None = None, code: sp.Basic | None = None, **detail) -> Step:
        step = Step(len(self.steps) + 1, phase, target, expr, rule, shape, layer, code, detail)
        self.steps.append(step)
        return step

    def matrix(self, name: str) -> sp.MatrixSymbol:
        """The matrix symbol of a node or parameter, with its shape."""
        if name in self.graph.params:
            shape = self.graph.params[name]
            return sp.MatrixSymbol(name, shape[0], shape[1] if len(shape) > 1 else 1)
        return sp.MatrixSymbol(name, N, self.graph.node(name).size)

    array = staticmethod(array)
    gradient_name = staticmethod(naming.gradient)

    def shape(self, node: Node) -> tuple:
        """The shape of a node's value and of its gradient: batch first."""
        return (N, *node.shape)

    def reduction(self) -> sp.Expr:
        return 1 / N if self.spec.loss.reduction == "mean" else sp.S.One

    def run(self) -> Derivation:
        graph = self.graph
        for node in graph.nodes:
            ops.row(node.op).forward(node, self)
        output, loss = graph.node(graph.output), ops.row("loss")
        loss.forward(output, self)
        terms: dict[str, list[ops.Term]] = {}
        self.send(output, loss.vjp(output, self), terms)
        for node in reversed(graph.nodes):
            if node.name in terms:  # else nothing flows back: data, or fused into the loss
                self.total(node, terms.pop(node.name))
                self.send(node, ops.row(node.op).vjp(node, self), terms)
        return Derivation(self.spec, graph, self.steps, self.gradients)

    def send(self, node: Node, node_terms, terms: dict) -> None:
        """Parameter gradients become steps at once; other terms wait for their sum."""
        for term in node_terms:
            if term.target in self.graph.params:
                target = naming.grad(term.target)
                detail = dict(term.detail)
                self.add("backward", target, term.expr, term.rule, self.graph.params[term.target],
                         node.layer, detail.pop("code", None), **detail)
                self.gradients[term.target] = target
            elif self.graph.needs_gradient(term.target):
                terms.setdefault(term.target, []).append(term)

    def total(self, node: Node, node_terms: list[ops.Term]) -> None:
        """dL/d(node): its one term, or the sum over its consumers."""
        exprs = [term.expr for term in node_terms]
        if len(node_terms) == 1:
            term = node_terms[0]
            expr, rule, detail = term.expr, term.rule, dict(term.detail)
        else:
            expr, rule, detail = sp.Add(*exprs), "backprop_sum", {}
        if isinstance(exprs[0], sp.MatrixExpr):
            expr = sp.MatAdd(*exprs)  # printed as a sum over consumers, even of one
        self.add("backward", self.gradient_name(node.name), expr, rule, self.shape(node),
                 node.layer, detail.pop("code", None), **detail)
