"""Activations: ``A = f(Z)`` elementwise, or softmax over the units of each row.

VJP: ``delta = dL/dA * f'(Z)``, with SymPy deriving ``f'`` and rewriting it in
forward terms where it can (``sigma' = A (1 - A)``), so the backward pass reads
the forward pass; softmax's Jacobian is not diagonal:
``delta = A * (dL/dA - rowsum(dL/dA * A))``.  Where the textbook form of ``f``
or ``f'`` is unstable in floating point, the step also carries a stable form
for code.  Proof obligation: ``tests/test_derive_proof.py`` and
``tests/test_primitives.py`` (every derivative against ``sympy.diff``).
"""

from __future__ import annotations

from functools import lru_cache

import sympy as sp

from .. import primitives
from ..symbolic import RowSum, Softmax, stabilize
from .registry import Op, Rule, Term, register


@lru_cache(maxsize=None)
def stable(expr: sp.Expr) -> sp.Expr:
    """The overflow-free form of an activation or its derivative (cached)."""
    return stabilize(expr)


@register
class Activation(Op):
    kind = "activation"
    rules = {
        "activation_forward": Rule("activation, applied elementwise",
                                   "layer {layer}: {kind} activation"),
        "softmax_forward": Rule("softmax over the units of each row",
                                "layer {layer}: softmax activation"),
        "activation": Rule("chain rule through the activation (elementwise)",
                           "delta{layer}: chain rule through {kind}, f' = {derivative}"),
        "identity": Rule("chain rule through the identity",
                         "delta{layer}: chain rule through the identity"),
        "softmax": Rule("chain rule through softmax (its Jacobian is not diagonal)",
                        "delta{layer}: chain rule through softmax (its Jacobian times dL/da)"),
    }

    def forward(self, node, d) -> None:
        z = d.array(node.sources[0])
        shape = d.shape(node)
        if node.activation.vector:
            d.add("forward", node.name, Softmax(z), "softmax_forward", shape, node.layer,
                  activation=node.activation)
            return
        forward = node.activation.forward()
        d.add("forward", node.name, forward.subs(primitives.x, z), "activation_forward", shape,
              node.layer, code=stable(forward).subs(primitives.x, z),
              activation=node.activation, function=forward)

    def vjp(self, node, d):
        source = node.sources[0]
        upstream, z, a = d.array(d.gradient_name(node.name)), d.array(source), d.array(node.name)
        if node.activation.vector:
            yield Term(source, a * (upstream - RowSum(upstream * a)), "softmax")
            return
        forward = node.activation.forward()
        derivative = primitives.activation_derivative(forward)
        if derivative == 1:
            yield Term(source, upstream, "identity")
            return
        slope = primitives.in_forward_terms(forward)
        expr = upstream * (slope.subs(primitives.a, a) if slope is not None
                           else derivative.subs(primitives.x, z))
        code = None if slope is not None else \
            sp.piecewise_fold(upstream * stable(derivative).subs(primitives.x, z))
        yield Term(source, expr, "activation",
                   dict(code=code, derivative=derivative, slope=slope, function=forward,
                        activation=node.activation))
