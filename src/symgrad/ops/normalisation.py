"""Rows of normalisation, embedding and dropout: layernorm, batchnorm, embedding, dropout.

Forward forms and VJPs are the expression classes of :mod:`symgrad.ops.norm`.
Batch and layer norm add their stages as forward steps (mean, centred input,
variance, inverse standard deviation, normalised input, scale and shift);
their VJP gives ``dL/dgamma = sum_n G Xhat``, ``dL/dbeta = sum_n G`` and
``dL/dX`` in closed form, after the staged chain rule as steps marked
``display_only`` (printed in the derivation, not computed by generated code),
the closed form's rule saying whether SymPy proved the two equal.  Batch norm's
mean and variance steps carry an ``evaluate`` form, the running statistics,
used by the generated ``forward``/``predict``; dropout's mask step is left out
there and its output is its input.  Embedding looks rows up (the one-hot
product) and scatter-adds its gradient.  Proof obligations:
``tests/test_ops_norm.py``.
"""

from __future__ import annotations

import sympy as sp

from .. import naming
from .norm import (
    AxisSum,
    DropoutMask,
    Embedding,
    EmbeddingGrad,
    Mean,
    NormGradInput,
    closed_form_proof,
)
from .registry import Op, Rule, Term, register


def options(d, node) -> dict:
    """The layer's options from the spec (eps, momentum, rate, vocab, dim)."""
    return dict(d.spec.layers[node.layer - 1].options)


class _Norm(Op):
    axis = 1

    def forward(self, node, d) -> None:
        layer, source = node.layer, node.sources[0]
        eps = sp.Float(options(d, node)["eps"], 17)
        A, N, F = d.array(source), d.N, node.size
        size = F if self.axis == 1 else 0
        stat = (N, 1) if self.axis == 1 else (1, F)
        names = {key: f"{key}{layer}" for key in ("mu", "xc", "var", "rstd", "xhat")}
        mu, xc, var, rstd, xhat = (d.array(names[k]) for k in ("mu", "xc", "var", "rstd", "xhat"))
        evaluate = {}
        if self.kind == "batchnorm":
            evaluate = {"mu": d.array(f"running_mean{layer}"), "var": d.array(f"running_var{layer}")}
        d.add("forward", mu.name, Mean(A, self.axis, size), "norm_mean", stat, layer,
              **({"evaluate": evaluate["mu"]} if evaluate else {}))
        d.add("forward", xc.name, A - mu, "norm_centre", (N, F), layer)
        d.add("forward", var.name, Mean(xc ** 2, self.axis, size), "norm_variance", stat, layer,
              **({"evaluate": evaluate["var"]} if evaluate else {}))
        d.add("forward", rstd.name, sp.Pow(var + eps, -sp.Rational(1, 2)), "norm_rstd", stat,
              layer)
        d.add("forward", xhat.name, xc * rstd, "norm_normalise", (N, F), layer)
        gamma, beta = d.array(node.weight), d.array(node.bias)
        d.add("forward", node.name, gamma * xhat + beta, "norm_affine", (N, F), layer)

    def vjp(self, node, d):
        layer, source = node.layer, node.sources[0]
        G, N, F = d.array(d.gradient_name(node.name)), d.N, node.size
        xhat, xc, rstd = (d.array(f"{k}{layer}") for k in ("xhat", "xc", "rstd"))
        gamma = d.array(node.weight)
        yield Term(node.weight, AxisSum(G * xhat, 0, 0), "norm_gamma")
        yield Term(node.bias, AxisSum(G, 0, 0), "norm_beta")
        if not d.graph.needs_gradient(source):
            return
        size = F if self.axis == 1 else d.N
        stat = (N, 1) if self.axis == 1 else (1, F)
        targets = [f"dL_dxhat{layer}", f"dL_drstd{layer}", f"dL_dvar{layer}", f"dL_dmu{layer}",
                   f"{d.gradient_name(source)}_staged"]
        shapes = [(N, F), stat, stat, stat, (N, F)]
        rules = ["norm_stage_xhat", "norm_stage_rstd", "norm_stage_var", "norm_stage_mu",
                 "norm_stage_input"]
        sx, sr, sv, sm = (d.array(t) for t in targets[:4])
        # Each stage in terms of the one before, as a person works it out.
        stages = [gamma * G, AxisSum(sx * xc, self.axis, 1), -rstd ** 3 / 2 * sr,
                  -rstd * AxisSum(sx, self.axis, 1) - 2 * sv * AxisSum(xc, self.axis, 1) / size,
                  rstd * sx + 2 * sv * xc / size + sm / size]
        for target, expr, shape, rule in zip(targets, stages, shapes, rules):
            d.add("backward", target, expr, rule, shape, layer, display_only=True)
        proved = closed_form_proof(self.axis)
        yield Term(source, NormGradInput(G, xhat, rstd, gamma, self.axis,
                                         F if self.axis == 1 else 0),
                   "norm_input" if proved else "norm_input_unproved",
                   dict(staged=targets[-1], proved=proved, consumer=layer))


_NORM_RULES = {
    "norm_mean": Rule("normalisation, stage 1: the mean", "layer {layer}: mean"),
    "norm_centre": Rule("normalisation, stage 2: the centred input", "layer {layer}: centred input"),
    "norm_variance": Rule("normalisation, stage 3: the variance (biased, as in training)",
                          "layer {layer}: variance"),
    "norm_rstd": Rule("normalisation, stage 4: the inverse standard deviation",
                      "layer {layer}: inverse standard deviation 1/sqrt(var + eps)"),
    "norm_normalise": Rule("normalisation, stage 5: the normalised input",
                           "layer {layer}: normalised input"),
    "norm_affine": Rule("normalisation, stage 6: scale by gamma and shift by beta",
                        "layer {layer}: scale by gamma, shift by beta"),
    "norm_gamma": Rule("gradient of a normalisation scale: delta times the normalised input, "
                       "summed over the batch",
                       "dL/dgamma{layer} = delta times the normalised input, summed over the batch"),
    "norm_beta": Rule("gradient of a normalisation shift: delta summed over the batch",
                      "dL/dbeta{layer} = delta summed over the batch"),
    "norm_stage_xhat": Rule("staged chain rule, 1: through the scale (dL/dXhat = gamma delta)",
                            "dL/dxhat{layer} (staged; not computed)"),
    "norm_stage_rstd": Rule("staged chain rule, 2: to the inverse standard deviation",
                            "dL/drstd{layer} (staged; not computed)"),
    "norm_stage_var": Rule("staged chain rule, 3: to the variance",
                           "dL/dvar{layer} (staged; not computed)"),
    "norm_stage_mu": Rule("staged chain rule, 4: to the mean (directly and through the variance)",
                          "dL/dmu{layer} (staged; not computed)"),
    "norm_stage_input": Rule("staged chain rule, 5: to the input, through the centred input, "
                             "the variance and the mean",
                             "dL/d{wrt} (staged; not computed)"),
    "norm_input": Rule("chain rule through normalisation in closed form, "
                       "1/D r (D g - sum g - Xhat sum(g Xhat)) with g = gamma delta; "
                       "SymPy proved it equal to the staged form",
                       "dL/d{wrt}: closed form through the normalisation of layer {consumer} "
                       "(proved equal to the staged chain rule)"),
    "norm_input_unproved": Rule("chain rule through normalisation in closed form (NOT proved "
                                "equal to the staged form)",
                                "dL/d{wrt}: closed form through the normalisation of layer "
                                "{consumer} (unproved)"),
}


@register
class LayerNorm(_Norm):
    kind = "layernorm"
    axis = 1
    rules = _NORM_RULES


@register
class BatchNorm(_Norm):
    kind = "batchnorm"
    axis = 0
    rules = {}


@register
class EmbeddingRow(Op):
    kind = "embedding"
    rules = {
        "embedding": Rule("embedding: each id picks a row of the table (the one-hot product), "
                          "rows of one sample side by side",
                          "layer {layer}: embedding lookup, onehot(ids) E{layer}"),
        "embedding_table": Rule("gradient of an embedding table: onehot(ids)^T delta, a "
                                "scatter-add (a repeated id adds up its rows)",
                                "dL/dE{layer} = onehot(ids)^T delta, scatter-added"),
    }

    def forward(self, node, d) -> None:
        vocab = options(d, node)["vocab"]
        d.add("forward", node.name, Embedding(d.array(node.sources[0]), d.array(node.weight),
                                              vocab), "embedding", d.shape(node), node.layer)

    def vjp(self, node, d):
        vocab = options(d, node)["vocab"]
        G = d.array(d.gradient_name(node.name))
        yield Term(node.weight, EmbeddingGrad(d.array(node.sources[0]), G, vocab),
                   "embedding_table")


@register
class Dropout(Op):
    kind = "dropout"
    rules = {
        "dropout_mask": Rule("dropout mask: keep each entry with probability 1 - p, scaled by "
                             "1/(1 - p) (inverted dropout; training only)",
                             "layer {layer}: dropout mask drawn from rng (training only)"),
        "dropout": Rule("dropout: the input times the mask (the identity in evaluation)",
                        "layer {layer}: dropout"),
        "dropout_backprop": Rule("chain rule through dropout: delta times the same mask",
                                 "dL/d{wrt}: through dropout, times the mask of layer "
                                 "{consumer}"),
    }

    def forward(self, node, d) -> None:
        rate = options(d, node)["rate"]
        A, mask = d.array(node.sources[0]), d.array(f"m{node.layer}")
        d.add("forward", mask.name, DropoutMask(A, sp.Float(rate, 17)), "dropout_mask",
              d.shape(node), node.layer, evaluate_skip=True)
        d.add("forward", node.name, mask * A, "dropout", d.shape(node), node.layer, evaluate=A)

    def vjp(self, node, d):
        G = d.array(d.gradient_name(node.name))
        yield Term(node.sources[0], G * d.array(f"m{node.layer}"), "dropout_backprop",
                   dict(consumer=node.layer))


def buffers(graph) -> dict[str, tuple[tuple[int, ...], float]]:
    """Non-trained entries of params: batch norm's running mean and variance (shape, momentum)."""
    out = {}
    for node in graph.nodes:
        if node.op == "batchnorm":
            momentum = dict(graph.spec.layers[node.layer - 1].options)["momentum"]
            out[f"running_mean{node.layer}"] = ((node.size,), momentum)
            out[f"running_var{node.layer}"] = ((node.size,), momentum)
    return out


def has_op(graph, kind: str) -> bool:
    return any(node.op == kind for node in graph.nodes)


__all__ = ["LayerNorm", "BatchNorm", "EmbeddingRow", "Dropout", "buffers", "has_op", "naming"]


# ---------------------------------------------------------------- what the code generator needs


def evaluation_steps(steps):
    """The forward steps of evaluation mode: batch norm reads its running statistics,
    dropout's mask is not drawn and its output is its input."""
    from dataclasses import replace

    out = []
    for step in steps:
        if step.detail.get("evaluate_skip"):
            continue
        if "evaluate" in step.detail:
            step = replace(step, code=step.detail["evaluate"])
        out.append(step)
    return out


def computed(steps):
    """The steps generated code computes: the staged chain rule is for reading only."""
    return [step for step in steps if not step.detail.get("display_only")]


def codegen_context(derivation) -> dict:
    """Template variables: buffers, their statistics, the dropout seed, embedding ids."""
    graph = derivation.graph
    held = buffers(graph)
    stats = []
    layers = []
    for node in graph.nodes:
        if node.op in ("layernorm", "batchnorm"):
            layers.append({"weight": node.weight, "bias": node.bias, "init": "ones",
                           "activation": "identity", "receptive": None})
        if node.op == "batchnorm":
            layers.append({"weight": f"running_var{node.layer}",
                           "bias": f"running_mean{node.layer}", "init": "ones",
                           "activation": "identity", "receptive": None})
            momentum = held[f"running_mean{node.layer}"][1]
            stats += [(f"running_mean{node.layer}", f"mu{node.layer}", False, momentum),
                      (f"running_var{node.layer}", f"var{node.layer}", True, momentum)]
        if node.op == "embedding":
            layers.append({"weight": node.weight, "bias": None, "init": "normal",
                           "activation": "identity", "receptive": None})
    vocab = next((dict(derivation.spec.layers[n.layer - 1].options)["vocab"]
                  for n in graph.nodes if n.op == "embedding"), None)
    dropout, batchnorm = has_op(graph, "dropout"), has_op(graph, "batchnorm")
    return {
        "any": bool(dropout or batchnorm),
        "dropout": dropout,
        "batchnorm": batchnorm,
        "buffers": {name: shape for name, (shape, _) in held.items()},
        "zero_grads": {name: f"np.zeros_like(params[\"{name}\"])" for name in held},
        "stats": stats,
        "live": {target for _, target, _, _ in stats},
        "init_layers": layers,
        "vocab": vocab,
    }
