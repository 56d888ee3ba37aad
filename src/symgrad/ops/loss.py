"""The loss: ``L = reduce(sum of l(Y, T)) [+ lambda/2 sum W^2]``, the seed of the backward pass.

VJP: ``dL/dY = reduce(dl/dy)``, with SymPy deriving ``dl/dy``; where the loss
and the output activation simplify together (sigmoid with cross-entropy,
softmax with cross-entropy: ``delta = P - T``) the term goes straight to the
output layer's pre-activation and the activation sends nothing.  The loss
also carries a stable form for code: log-softmax by a max-shifted
log-sum-exp, binary cross-entropy from the logits.  Proof obligation:
``tests/test_derive_proof.py`` (the assembled gradient against ``sympy.diff``
of the scalar loss, for every loss kind) and ``tests/test_primitives.py``.
"""

from __future__ import annotations

from functools import lru_cache

import sympy as sp

from .. import naming, primitives
from ..symbolic import LogSumExp, OnesLike, RowSum, Total, stabilize
from .registry import Op, Rule, Term, register


@register
class Loss(Op):
    kind = "loss"
    rules = {
        "loss": Rule("the loss", "the loss"),
        "loss_derivative": Rule("derivative of the loss with respect to the output",
                                "dL/d{wrt}: derivative of the loss, dl/dy = {derivative}"),
        "fused": Rule("loss and output activation differentiated together",
                      "delta{layer}: loss and output activation differentiated together"),
        "fused_softmax": Rule("lemma: softmax with cross-entropy gives p - t",
                              "delta{layer}: softmax with cross-entropy gives p - t (lemma)"),
        "hinge": Rule("the multiclass hinge loss: every wrong class j whose score comes within "
                      "a margin of 1 of the true class's score s_y = rowsum(T * S) adds "
                      "max(0, 1 + s_j - s_y)",
                      "the multiclass hinge loss, sum over j != y of max(0, 1 + s_j - s_y)"),
        "hinge_derivative": Rule("derivative of the hinge loss: each violated margin, "
                                 "[1 + s_j - s_y > 0] for j != y, adds 1 to its class's "
                                 "score and takes 1 from the true class's score",
                                 "dL/d{wrt}: derivative of the hinge loss, violated margins "
                                 "[1 + s_j - s_y > 0] (0 at the kink)"),
    }

    @staticmethod
    def per_output(d) -> sp.Expr:
        per_output = d.spec.loss.per_output()
        return per_output.subs(primitives.K, d.graph.node(d.graph.output).size)

    @staticmethod
    def decay_terms(d) -> sp.Expr:
        if not d.spec.loss.weight_decay:
            return sp.S.Zero
        weights = [p for p in d.graph.params if p.startswith(("W", "K"))]
        return d.LAMBDA / 2 * sp.Add(*(Total(d.array(w) ** 2) for w in weights))

    def forward(self, node, d) -> None:
        y, t = d.array(node.name), d.array(naming.TARGET)
        if d.spec.loss.coupled:
            loss = d.reduction() * Total(sp.Max(0, hinge_margins(y, t)) * (1 - t))
            d.add("loss", naming.LOSS, loss + self.decay_terms(d), "hinge", (),
                  reduction=d.spec.loss.reduction)
            return
        per_output = self.per_output(d)
        textbook = d.reduction() * Total(per_output.subs({primitives.y: y, primitives.t: t}))
        code = None
        z = d.array(node.sources[0])
        if node.activation.vector and d.spec.loss.kind == "cross_entropy":
            # log softmax(z) = z - logsumexp(z): no log of a probability that underflows.
            code = d.reduction() * Total(-t * (z - LogSumExp(z))) + self.decay_terms(d)
        elif not node.activation.vector and per_output.has(sp.log):
            composed = _composed_loss(per_output, node.activation.forward())
            if composed is not None:
                code = d.reduction() * Total(composed.subs({primitives.x: z, primitives.t: t}))
                code += self.decay_terms(d)
        d.add("loss", naming.LOSS, textbook + self.decay_terms(d), "loss", (), code=code,
              per_output=per_output, reduction=d.spec.loss.reduction)

    def vjp(self, node, d):
        """``node`` is the output activation; the seed of the chain rule."""
        y, t = d.array(node.name), d.array(naming.TARGET)
        source = node.sources[0]
        if d.spec.loss.coupled:
            violated = sp.Heaviside(hinge_margins(y, t), 0) * (1 - t)
            yield Term(node.name, d.reduction() * (violated - t * RowSum(violated)),
                       "hinge_derivative")
            return
        if node.activation.vector and d.spec.loss.kind == "cross_entropy":
            yield Term(source, d.reduction() * (y - t), "fused_softmax",
                       dict(lemma=softmax_cross_entropy_lemma()))
            return
        per_output = self.per_output(d)
        if not node.activation.vector:
            fused = primitives.fused_delta(per_output, node.activation.forward())
            if fused is not None:
                yield Term(source, d.reduction() * fused.subs({primitives.a: y, primitives.t: t}),
                           "fused",
                           dict(combined=fused,
                                loss_derivative=primitives.loss_derivative(per_output),
                                slope=primitives.in_forward_terms(node.activation.forward())))
                return
        dl_dy = primitives.loss_derivative(per_output)
        expr = d.reduction() * dl_dy.subs({primitives.y: y, primitives.t: t})
        # A loss linear in y has a constant dl/dy: the code still needs a whole array.
        code = expr * OnesLike(y) if not dl_dy.free_symbols & {primitives.y, primitives.t} \
            else None
        yield Term(node.name, expr, "loss_derivative",
                   dict(derivative=dl_dy, per_output=per_output, code=code))


def hinge_margins(y: sp.Expr, t: sp.Expr) -> sp.Expr:
    """``1 + S - s_y`` (N, K) for scores S and one-hot targets T; s_y = rowsum(T * S) (N, 1).

    The true class's own entry is 1 and is masked out by ``1 - T`` wherever it is used.
    """
    return 1 + y - RowSum(t * y)


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
def softmax_cross_entropy_lemma(k: int = 3) -> dict:
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
