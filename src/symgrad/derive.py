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

from dataclasses import dataclass, field
from functools import lru_cache

import sympy as sp

from . import naming, primitives
from .graph import Graph, Node, build_graph
from .spec import NetworkSpec
from .symbolic import LogSumExp, RowSum, Softmax, Total, stabilize

N = sp.Symbol(naming.BATCH, positive=True, integer=True)
LAMBDA = sp.Symbol(naming.DECAY, nonnegative=True)

#: What each rule means, in words: the LaTeX and text views print these.
RULES = {
    "dense": "dense layer: weighted sum of the inputs plus bias",
    "activation_forward": "activation, applied elementwise",
    "softmax_forward": "softmax over the units of each row",
    "loss": "the loss",
    "loss_derivative": "derivative of the loss with respect to the output",
    "fused": "loss and output activation differentiated together",
    "fused_softmax": "lemma: softmax with cross-entropy gives p - t",
    "activation": "chain rule through the activation (elementwise)",
    "identity": "chain rule through the identity",
    "softmax": "chain rule through softmax (its Jacobian is not diagonal)",
    "weight": "gradient of a weight matrix: delta^T times the layer input, summed over the batch",
    "bias": "gradient of a bias: delta summed over the batch",
    "backprop": "chain rule through a dense layer: delta times W",
    "backprop_sum": "chain rule through several consumers: their contributions add up",
}


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
        return RULES[self.rule]


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
        from .render import render_text  # printing lies downstream of the derivation

        return render_text(self)

    def _repr_latex_(self) -> str:
        from .render import render_latex_body

        return render_latex_body(self)

    def _repr_markdown_(self) -> str:
        from .render import render_markdown

        return render_markdown(self)


def array(name: str) -> sp.Symbol:
    """A symbol standing for a whole array in an elementwise step."""
    return sp.Symbol(name, real=True)


def derive(spec_or_graph: NetworkSpec | Graph) -> Derivation:
    """Derive dL/dW and dL/db for every parameter of the network."""
    graph = spec_or_graph if isinstance(spec_or_graph, Graph) else build_graph(spec_or_graph)
    return _Deriver(graph).run()


class _Deriver:
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

    def run(self) -> Derivation:
        for node in self.graph.nodes:
            if node.op == "dense":
                self.forward_dense(node)
            elif node.op == "activation":
                self.forward_activation(node)
        self.loss()
        self.backward()
        return Derivation(self.spec, self.graph, self.steps, self.gradients)

    # ------------------------------------------------------------------ forward

    def weight_block(self, dense: Node, source: str, start: int, stop: int) -> sp.MatrixExpr:
        weight = self.matrix(dense.weight)
        if len(dense.sources) == 1:
            return weight
        return sp.MatrixSymbol(naming.block(dense.weight, source), weight.shape[0], stop - start)

    def forward_dense(self, node: Node) -> None:
        terms = [self.matrix(source) * self.weight_block(node, source, start, stop).T
                 for source, start, stop in self.graph.blocks(node)]
        if node.bias:
            terms.append(sp.OneMatrix(N, 1) * self.matrix(node.bias).T)
        self.add("forward", node.name, sp.MatAdd(*terms), "dense", (N, node.size), node.layer)

    def forward_activation(self, node: Node) -> None:
        z = node.sources[0]
        if node.activation.vector:
            self.add("forward", node.name, Softmax(array(z)), "softmax_forward",
                     (N, node.size), node.layer, activation=node.activation)
            return
        forward = node.activation.forward()
        expr = forward.subs(primitives.x, array(z))
        self.add("forward", node.name, expr, "activation_forward", (N, node.size), node.layer,
                 code=_stable(forward).subs(primitives.x, array(z)), activation=node.activation,
                 function=forward)

    # ------------------------------------------------------------------ loss

    def reduction(self) -> sp.Expr:
        return 1 / N if self.spec.loss.reduction == "mean" else sp.S.One

    def per_output(self) -> sp.Expr:
        per_output = self.spec.loss.per_output()
        return per_output.subs(primitives.K, self.graph.node(self.graph.output).size)

    def decay_terms(self) -> sp.Expr:
        if not self.spec.loss.weight_decay:
            return sp.S.Zero
        weights = [p for p in self.graph.params if p.startswith("W")]
        return LAMBDA / 2 * sp.Add(*(Total(array(w) ** 2) for w in weights))

    def loss(self) -> None:
        output = self.graph.node(self.graph.output)
        y, t = array(output.name), array(naming.TARGET)
        per_output = self.per_output()
        textbook = self.reduction() * Total(per_output.subs({primitives.y: y, primitives.t: t}))
        code = None
        z = array(output.sources[0])
        if output.activation.vector and self.spec.loss.kind == "cross_entropy":
            # log softmax(z) = z - logsumexp(z): no log of a probability that underflows.
            code = self.reduction() * Total(-t * (z - LogSumExp(z))) + self.decay_terms()
        elif not output.activation.vector and per_output.has(sp.log):
            composed = _composed_loss(per_output, output.activation.forward())
            if composed is not None:
                code = self.reduction() * Total(composed.subs({primitives.x: z, primitives.t: t}))
                code += self.decay_terms()
        self.add("loss", naming.LOSS, textbook + self.decay_terms(), "loss", (), code=code,
                 per_output=per_output, reduction=self.spec.loss.reduction)

    # ------------------------------------------------------------------ backward

    def backward(self) -> None:
        contributions: dict[str, list[sp.MatrixExpr]] = {}
        for node in reversed(self.graph.nodes):
            if node.op == "activation":
                if node.name == self.graph.output:
                    if self.backward_output(node):
                        continue
                else:
                    self.collect(node, contributions.get(node.name, []))
                self.backward_activation(node)
            elif node.op == "dense":
                self.backward_dense(node, contributions)

    def backward_output(self, node: Node) -> bool:
        """Steps from the loss to the output; True when fused down to delta."""
        y, t = array(node.name), array(naming.TARGET)
        delta = naming.delta(node.layer)
        if node.activation.vector and self.spec.loss.kind == "cross_entropy":
            self.add("backward", delta, self.reduction() * (y - t), "fused_softmax",
                     (N, node.size), node.layer, lemma=_softmax_cross_entropy_lemma())
            return True
        per_output = self.per_output()
        if not node.activation.vector:
            fused = primitives.fused_delta(per_output, node.activation.forward())
            if fused is not None:
                expr = self.reduction() * fused.subs({primitives.a: y, primitives.t: t})
                self.add("backward", delta, expr, "fused", (N, node.size), node.layer,
                         combined=fused, loss_derivative=primitives.loss_derivative(per_output),
                         slope=primitives.in_forward_terms(node.activation.forward()))
                return True
        dl_dy = primitives.loss_derivative(per_output)
        self.add("backward", naming.grad(node.name),
                 self.reduction() * dl_dy.subs({primitives.y: y, primitives.t: t}),
                 "loss_derivative", (N, node.size), node.layer, derivative=dl_dy,
                 per_output=per_output)
        return False

    def collect(self, node: Node, terms: list[sp.MatrixExpr]) -> None:
        rule = "backprop" if len(terms) == 1 else "backprop_sum"
        self.add("backward", naming.grad(node.name), sp.MatAdd(*terms), rule,
                 (N, node.size), node.layer)

    def backward_activation(self, node: Node) -> None:
        upstream, z = array(naming.grad(node.name)), array(node.sources[0])
        a = array(node.name)
        target = naming.delta(node.layer)
        if node.activation.vector:
            expr = a * (upstream - RowSum(upstream * a))
            self.add("backward", target, expr, "softmax", (N, node.size), node.layer)
            return
        forward = node.activation.forward()
        derivative = primitives.activation_derivative(forward)
        if derivative == 1:
            self.add("backward", target, upstream, "identity", (N, node.size), node.layer)
            return
        slope = primitives.in_forward_terms(forward)
        in_z = derivative.subs(primitives.x, z)
        expr = upstream * (slope.subs(primitives.a, a) if slope is not None else in_z)
        code = None if slope is not None else sp.piecewise_fold(upstream * _stable(derivative)
                                                                .subs(primitives.x, z))
        self.add("backward", target, expr, "activation", (N, node.size), node.layer,
                 code=code, derivative=derivative, slope=slope, function=forward,
                 activation=node.activation)

    def backward_dense(self, node: Node, contributions: dict) -> None:
        delta = sp.MatrixSymbol(naming.delta(node.layer), N, node.size)
        sources = [self.matrix(source) for source in node.sources]
        weight_grad = sp.MatMul(delta.T, sources[0]) if len(sources) == 1 else \
            sp.BlockMatrix([[sp.MatMul(delta.T, s) for s in sources]])
        if self.spec.loss.weight_decay:
            weight_grad = sp.MatAdd(weight_grad, LAMBDA * self.matrix(node.weight))
        target = naming.grad(node.weight)
        self.add("backward", target, weight_grad, "weight", self.graph.params[node.weight],
                 node.layer)
        self.gradients[node.weight] = target
        if node.bias:
            target = naming.grad(node.bias)
            self.add("backward", target, sp.MatMul(delta.T, sp.OneMatrix(N, 1)), "bias",
                     self.graph.params[node.bias], node.layer)
            self.gradients[node.bias] = target
        for source, start, stop in self.graph.blocks(node):
            if self.graph.needs_gradient(source):
                contributions.setdefault(source, []).append(
                    sp.MatMul(delta, self.weight_block(node, source, start, stop)))


@lru_cache(maxsize=None)
def _stable(expr: sp.Expr) -> sp.Expr:
    return stabilize(expr)


@lru_cache(maxsize=None)
def _composed_loss(per_output: sp.Expr, forward: sp.Expr) -> sp.Expr | None:
    """``l(f(x), t)`` with logs of the activation expanded, stabilised; None if no gain."""
    composed = per_output.subs(primitives.y, forward)
    composed = composed.replace(lambda e: isinstance(e, sp.log),
                                lambda e: sp.log(sp.factor(sp.together(e.args[0]))))
    composed = stabilize(sp.expand_log(composed, force=True))
    if composed.has(sp.log):
        return None
    return sp.collect(sp.expand(composed), primitives.t)


@lru_cache(maxsize=None)
def _softmax_cross_entropy_lemma(k: int = 3) -> dict:
    """SymPy's proof, for K outputs, that d/dz_i of -sum t log softmax(z) is p_i - t_i."""
    z = sp.symbols(f"z1:{k + 1}", real=True)
    t = sp.symbols(f"t1:{k + 1}", real=True)
    p = [sp.exp(zi) / sp.Add(*map(sp.exp, z)) for zi in z]
    loss = -sp.Add(*(ti * sp.log(pi) for ti, pi in zip(t, p)))
    derivative = sp.diff(loss, z[0])
    claim = p[0] - t[0]
    # sum_j t_j = 1 for a target distribution.
    residual = sp.simplify((derivative - claim).subs(t[-1], 1 - sp.Add(*t[:-1])))
    return {"outputs": k, "derivative": derivative, "claim": claim, "proved": residual == 0}
