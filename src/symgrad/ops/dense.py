"""The dense layer: ``Z = A W^T + 1 b^T`` over the concatenation of its sources.

VJP: ``dL/dW = delta^T A`` (one column block per source), ``dL/db = delta^T 1``
and ``dL/dA = delta W`` (the source's block of W), with ``delta = dL/dZ``;
weight decay adds ``lambda W``.  Proof obligation: ``tests/test_derive_proof.py``
compares the assembled gradients with ``sympy.diff`` of the scalar loss.
"""

from __future__ import annotations

import sympy as sp

from .registry import Op, Rule, Term, register


@register
class Dense(Op):
    kind = "dense"
    rules = {
        "dense": Rule("dense layer: weighted sum of the inputs plus bias",
                      "layer {layer}: weighted inputs plus bias"),
        "weight": Rule("gradient of a weight matrix: delta^T times the layer input, "
                       "summed over the batch",
                       "dL/dW{layer} = delta{layer}^T times the layer input, "
                       "summed over the batch"),
        "bias": Rule("gradient of a bias: delta summed over the batch",
                     "dL/db{layer} = delta{layer} summed over the batch"),
        "backprop": Rule("chain rule through a dense layer: delta times W",
                         "dL/d{wrt}: chain rule back through the next dense layer"),
    }

    def weight_block(self, node, d, source: str, start: int, stop: int) -> sp.MatrixExpr:
        """The columns of W that multiply one source (W itself for a single source)."""
        weight = d.matrix(node.weight)
        if len(node.sources) == 1:
            return weight
        return sp.MatrixSymbol(d.naming.block(node.weight, source), weight.shape[0], stop - start)

    def forward(self, node, d) -> None:
        terms = [d.matrix(source) * self.weight_block(node, d, source, start, stop).T
                 for source, start, stop in d.graph.blocks(node)]
        if node.bias:
            terms.append(sp.OneMatrix(d.N, 1) * d.matrix(node.bias).T)
        d.add("forward", node.name, sp.MatAdd(*terms), "dense", (d.N, node.size), node.layer)

    def vjp(self, node, d):
        delta = sp.MatrixSymbol(d.gradient_name(node.name), d.N, node.size)
        sources = [d.matrix(source) for source in node.sources]
        weight_grad = sp.MatMul(delta.T, sources[0]) if len(sources) == 1 else \
            sp.BlockMatrix([[sp.MatMul(delta.T, s) for s in sources]])
        if d.spec.loss.weight_decay:
            weight_grad = sp.MatAdd(weight_grad, d.LAMBDA * d.matrix(node.weight))
        yield Term(node.weight, weight_grad, "weight")
        if node.bias:
            yield Term(node.bias, sp.MatMul(delta.T, sp.OneMatrix(d.N, 1)), "bias")
        for source, start, stop in d.graph.blocks(node):
            yield Term(source, sp.MatMul(delta, self.weight_block(node, d, source, start, stop)),
                       "backprop")
