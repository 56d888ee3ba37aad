"""The row of scaled dot-product self-attention: ``kind = "attention"`` on a sequence (N, T, D).

Parameters of layer l: ``Wq<l>``, ``Wk<l>``, ``Wv<l>`` of shape (dk, D) and
``Wo<l>`` (D, dk), each a dense layer's ``W`` (rows = outputs), with biases
``bq<l>``, ``bv<l>`` (dk,) and ``bo<l>`` (D,) when ``bias = true`` (the
default).  There is no key bias: ``b_K`` would only shift every score of a
query by the same amount, which softmax ignores, so its gradient is exactly
zero and it would never learn (``tests/test_ops_attention.py`` proves it).  ``heads`` H divides ``dk``; head h reads
columns [h c, (h+1) c) of Q, K and V, c = dk/H.  ``causal = true`` masks
keys after the query; ``residual = true`` adds the input to the output.

Forward steps (one numbered equation each): Q, K, V, the scores
``S = Q K^T/sqrt(c)``, the weights ``P = softmax(S)`` by rows, ``O = P V``,
the output ``Y = O W_O^T + b_O`` (+ X).  Backward steps, one per line of the
textbook backward pass: ``dO = G W_O``, ``dV = P^T dO``, ``dP = dO V^T``,
``dS = P * (dP - rowsum(dP * P))``, ``dQ = dS K/sqrt(c)``,
``dK = dS^T Q/sqrt(c)``; each projection's weight gradient is summed over
the batch and time, and ``dX = dQ W_Q + dK W_K + dV W_V`` (+ G).  Proof
obligations: ``tests/test_ops_attention.py``; end to end:
``tests/test_attention_net.py``.
"""

from __future__ import annotations

import sympy as sp

from .attention import (
    AttnSoftmax,
    AttnSoftmaxGrad,
    Mix,
    MixGradValues,
    MixGradWeights,
    Project,
    ProjectGradBias,
    ProjectGradInput,
    ProjectGradWeight,
    Scores,
    ScoresGradKey,
    ScoresGradQuery,
)
from .registry import Op, Rule, Term, register

ROLES = ("q", "k", "v", "o")
BIASED = ("q", "v", "o")  # no key bias: softmax ignores it (its gradient is exactly 0)


def weight_name(role: str, layer: int) -> str:
    return f"W{role}{layer}"


def bias_name(role: str, layer: int) -> str:
    return f"b{role}{layer}"


def options(d, node) -> dict:
    return dict(d.spec.layers[node.layer - 1].options)


# ---------------------------------------------------------------- spec and graph


def init_layers(spec, graph) -> list[dict]:
    """init_params entries: the four projections of every attention layer, as dense weights."""
    out = []
    for index, layer in enumerate(spec.layers, start=1):
        if layer.kind != "attention":
            continue
        kind = spec.init.kind if layer.init is None else layer.init
        out += [{"weight": weight_name(role, index),
                 "bias": bias_name(role, index) if layer.bias and role in BIASED else None,
                 "init": kind,
                 "activation": "identity", "receptive": None} for role in ROLES]
    return out


# ---------------------------------------------------------------- the row


@register
class Attention(Op):
    kind = "attention"
    rules = {
        "attention_query": Rule("attention, the queries: a projection of every step, "
                                "Q = X W_Q^T + b_Q", "layer {layer}: queries Q"),
        "attention_key": Rule("attention, the keys: K = X W_K^T (no bias: softmax ignores it)", "layer {layer}: keys K"),
        "attention_value": Rule("attention, the values: V = X W_V^T + b_V",
                                "layer {layer}: values V"),
        "attention_scores": Rule("attention scores, scaled dot products of every query with "
                                 "every key: S = Q K^T / sqrt(d_k) (per head)",
                                 "layer {layer}: scores Q K^T / sqrt(d_k), (N, H, T, T)"),
        "attention_weights": Rule("attention weights: softmax of each row of the scores over "
                                  "the keys (max-shifted; masked keys get weight 0)",
                                  "layer {layer}: attention weights, softmax by rows"),
        "attention_mix": Rule("attention output: each step a weighted mean of the values, "
                              "O = P V (heads side by side)",
                              "layer {layer}: O = P V"),
        "attention_output": Rule("attention, the output projection: Y = O W_O^T + b_O",
                                 "layer {layer}: output projection"),
        "attention_output_residual": Rule("attention, the output projection and the residual "
                                          "connection: Y = X + O W_O^T + b_O",
                                          "layer {layer}: output projection plus the input"),
        "attention_back_output": Rule("chain rule through the output projection: dL/dO = G W_O",
                                      "dL/dO of layer {layer} = G W_O"),
        "attention_back_values": Rule("chain rule to the values: dL/dV = P^T dL/dO",
                                      "dL/dV of layer {layer} = P^T dO"),
        "attention_back_weights": Rule("chain rule to the attention weights: "
                                       "dL/dP = dL/dO V^T", "dL/dP of layer {layer} = dO V^T"),
        "attention_back_softmax": Rule("chain rule through the row softmax: dL/dS = P * (dL/dP "
                                       "- rowsum(dL/dP * P)) (its Jacobian diag(p) - p p^T "
                                       "applied row by row)",
                                       "dL/dS of layer {layer} = P * (dP - rowsum(dP * P))"),
        "attention_back_queries": Rule("chain rule to the queries: dL/dQ = dL/dS K / sqrt(d_k)",
                                       "dL/dQ of layer {layer} = dS K / sqrt(d_k)"),
        "attention_back_keys": Rule("chain rule to the keys: dL/dK = dL/dS^T Q / sqrt(d_k)",
                                    "dL/dK of layer {layer} = dS^T Q / sqrt(d_k)"),
        "attention_weight": Rule("gradient of a projection weight of attention, shared by every "
                                 "step: dL/dW = sum over n and t of dZ_{n,t}^T A_{n,t}",
                                 "dL/d{wrt} = sum over the batch and time of dZ^T A"),
        "attention_bias": Rule("gradient of a projection bias of attention: its delta summed "
                               "over the batch and time", "dL/d{wrt} = delta summed over n, t"),
        "attention_input": Rule("chain rule into attention's input through the three "
                                "projections: dL/dX = dQ W_Q + dK W_K + dV W_V",
                                "dL/d{wrt}: dQ W_Q + dK W_K + dV W_V of layer {consumer}"),
        "attention_input_residual": Rule("chain rule into attention's input through the three "
                                         "projections and the residual connection: dL/dX = G + "
                                         "dQ W_Q + dK W_K + dV W_V",
                                         "dL/d{wrt}: G + dQ W_Q + dK W_K + dV W_V of layer "
                                         "{consumer}"),
    }

    @staticmethod
    def params(node, d):
        layer = node.layer
        W = {r: d.array(weight_name(r, layer)) for r in ROLES}
        b = {r: d.array(bias_name(r, layer)) if node.bias and r in BIASED else sp.S.Zero
             for r in ROLES}
        return W, b

    @staticmethod
    def names(node):
        return {key: f"{key}{node.layer}" for key in ("q", "k", "v", "s", "p", "o")}

    def forward(self, node, d) -> None:
        opts, layer = options(d, node), node.layer
        heads, dk, causal = opts["heads"], opts["dk"], int(opts["causal"])
        X, (W, b) = d.array(node.sources[0]), self.params(node, d)
        N, (T, D) = d.N, node.dims
        names = self.names(node)
        q, k, v, s, p, o = (d.array(names[key]) for key in ("q", "k", "v", "s", "p", "o"))
        for role, rule in (("q", "attention_query"), ("k", "attention_key"),
                           ("v", "attention_value")):
            d.add("forward", names[role], Project(X, W[role], b[role]), rule, (N, T, dk), layer)
        d.add("forward", s.name, Scores(q, k, heads, dk), "attention_scores", (N, heads, T, T),
              layer)
        d.add("forward", p.name, AttnSoftmax(s, causal), "attention_weights", (N, heads, T, T),
              layer)
        d.add("forward", o.name, Mix(p, v, heads), "attention_mix", (N, T, dk), layer)
        out = Project(o, W["o"], b["o"])
        if opts["residual"]:
            d.add("forward", node.name, X + out, "attention_output_residual", (N, T, D), layer)
        else:
            d.add("forward", node.name, out, "attention_output", (N, T, D), layer)

    def vjp(self, node, d):
        opts, layer = options(d, node), node.layer
        heads, dk = opts["heads"], opts["dk"]
        X, (W, b) = d.array(node.sources[0]), self.params(node, d)
        N, T = d.N, node.dims[0]
        names = self.names(node)
        q, k, v, p, o = (d.array(names[key]) for key in ("q", "k", "v", "p", "o"))
        G = d.array(d.gradient_name(node.name))
        grad = {key: d.array(f"dL_d{names[key]}") for key in ("o", "v", "p", "s", "q", "k")}

        def params(role, delta, source):
            expr = ProjectGradWeight(delta, source)
            if d.spec.loss.weight_decay:
                expr = expr + d.LAMBDA * W[role]
            yield Term(W[role].name, expr, "attention_weight")
            if b[role] != 0:
                yield Term(b[role].name, ProjectGradBias(delta), "attention_bias")

        seq, scores = (N, T, dk), (N, heads, T, T)
        d.add("backward", grad["o"].name, ProjectGradInput(G, W["o"]), "attention_back_output",
              seq, layer)
        yield from params("o", G, o)
        d.add("backward", grad["v"].name, MixGradValues(p, grad["o"], heads),
              "attention_back_values", seq, layer)
        d.add("backward", grad["p"].name, MixGradWeights(grad["o"], v, heads),
              "attention_back_weights", scores, layer)
        d.add("backward", grad["s"].name, AttnSoftmaxGrad(p, grad["p"]),
              "attention_back_softmax", scores, layer)
        d.add("backward", grad["q"].name, ScoresGradQuery(grad["s"], k, heads, dk),
              "attention_back_queries", seq, layer)
        d.add("backward", grad["k"].name, ScoresGradKey(grad["s"], q, heads, dk),
              "attention_back_keys", seq, layer)
        for role in ("q", "k", "v"):
            yield from params(role, grad[role], X)
        if not d.graph.needs_gradient(node.sources[0]):
            return
        dX = sp.Add(*[ProjectGradInput(grad[role], W[role]) for role in ("q", "k", "v")])
        rule = "attention_input"
        if opts["residual"]:
            dX, rule = G + dX, "attention_input_residual"
        yield Term(node.sources[0], dX, rule, dict(consumer=layer))
