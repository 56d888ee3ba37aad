"""Rows of the recurrent family: RNN, LSTM and GRU layers, unfolded in time, and their views.

A recurrent layer is the same cell applied at every time step with shared
weights ``W_xh`` (G*U, F), ``W_hh`` (G*U, U) and ``b`` (G*U,) (G = 1 for an
Elman RNN, 4 for LSTM gates i, f, g, o, 3 for GRU gates r, z, n); h_0 = 0.
Its forward form is one step whose value is the tape (every state the
backward pass needs, ``H`` first) and the output ``A = tape[0]`` (every
state, ``sequences = true``) or ``h_T`` (:class:`LastStep`).  Its VJP is
one step, backpropagation through time (Rumelhart, Hinton & Williams 1986):
a reverse loop over t with

    delta_t = (dL/dh_t + delta_{t+1} W_hh) * f'(h_t),

then, because every step shares the weights, each weight gradient is a sum
over time: dL/dW_xh = sum_t delta_t^T x_t, dL/dW_hh = sum_t delta_t^T h_{t-1},
dL/db = sum_t delta_t^T 1, and dL/dx_t = delta_t W_xh.  Truncated BPTT
(``[training] bptt = k``) cuts the term from delta_{t+1} at the start of
every chunk of k steps.  A dense layer after a sequence acts on every step:
the graph folds time into the batch (:class:`MergeTime`, a view) so the
dense row is unchanged and a loss over those rows sums over time.
Proof obligation: ``tests/test_ops_rnn.py`` (each backward class against
``sympy.diff`` of the unrolled scalar loss, and torch.nn.RNN) and
``tests/test_rnn_net.py`` (whole networks against torch autograd).
"""

from __future__ import annotations

import sympy as sp

from .. import naming
from .arrays import Part
from .recurrent import (
    ACTIVATIONS,
    LastStep,
    LastStepGrad,
    MergeTime,
    RnnBackward,
    RnnForward,
    SplitTime,
)
from .registry import Op, Rule, Term, register, register_rules

register_rules({
    "recurrent_output": Rule("the layer's output: the hidden state at every step, "
                             "h_1, ..., h_T (entry 0 of the tape)",
                             "layer {layer}: the hidden states h_1..h_T (entry 0 of the tape)",
        latex="The layer's output is its hidden state at every step, $h_1, \\dots, h_T$ (entry 0 of the tape):"),
    "recurrent_input_weight": Rule(
        "gradient of the input weights, shared by every time step: their contributions add up, "
        "dL/dW_xh = sum_t delta_t^T x_t",
        "dL/dW_xh{layer} = sum over t of delta_t^T x_t (entry 1 of the BPTT tuple)",
        latex='The input weights are shared by every time step, so their contributions add up, $\\partial L/\\partial W_{xh} = \\sum_t \\delta_t^{\\top} x_t$:'),
    "recurrent_weight": Rule(
        "gradient of the recurrent weights, shared by every time step: "
        "dL/dW_hh = sum_t delta_t^T h_{t-1} (h_0 = 0)",
        "dL/dW_hh{layer} = sum over t of delta_t^T h_(t-1) (entry 2 of the BPTT tuple)",
        latex='The recurrent weights are shared by every time step: $\\partial L/\\partial W_{hh} = \\sum_t \\delta_t^{\\top} h_{t-1}$, with $h_{0} = 0$:'),
    "recurrent_bias": Rule("gradient of a recurrent bias: delta_t summed over the batch and "
                           "every time step",
                           "dL/db{layer} = delta_t summed over the batch and time (entry 3)",
        latex='The bias gradient sums $\\delta_t$ over the batch and every time step:'),
    "recurrent_input": Rule("chain rule into a recurrent layer's input: dL/dx_t = delta_t W_xh "
                            "at every step",
                            "dL/d{wrt}: delta_t W_xh of layer {consumer} at every step "
                            "(entry 0 of the BPTT tuple)",
        latex="Into the layer's input, at every step, $\\partial L/\\partial x_t = \\delta_t W_{xh}$:"),
})


class Recurrent(Op):
    """A recurrent layer: forward = one tape step and its output; VJP = one BPTT step."""

    forward_rule = backward_rule = ""

    def cell(self, node, d, X, Wx, Wh, b):
        """The forward expression (its value the tape)."""
        raise NotImplementedError

    def backprop(self, node, d, G, X, tape, Wx, Wh, b, bptt):
        """The BPTT expression (its value (dX, dWx, dWh, db))."""
        raise NotImplementedError

    @staticmethod
    def arrays(node, d):
        layer = node.layer
        b = d.array(node.bias) if node.bias else sp.S.Zero
        return (d.array(node.sources[0]), d.array(naming.input_weight(layer)),
                d.array(naming.recurrent_weight(layer)), b)

    def forward(self, node, d) -> None:
        tape = naming.tape(node.layer)
        shape = d.shape(node)
        d.add("forward", tape, self.cell(node, d, *self.arrays(node, d)), self.forward_rule,
              shape, node.layer)
        d.add("forward", node.name, Part(d.array(tape), 0), "recurrent_output", shape,
              node.layer)

    def vjp(self, node, d):
        layer = node.layer
        X, Wx, Wh, b = self.arrays(node, d)
        G = d.array(d.gradient_name(node.name))
        tape, name = d.array(naming.tape(layer)), naming.bptt(layer)
        bptt = int(getattr(d.spec.training, "bptt", 0) or 0)
        d.add("backward", name, self.backprop(node, d, G, X, tape, Wx, Wh, b, bptt),
              self.backward_rule, (), layer, truncation=bptt)
        result = d.array(name)
        for index, param, rule in ((1, Wx, "recurrent_input_weight"),
                                   (2, Wh, "recurrent_weight")):
            grad = Part(result, index)
            if d.spec.loss.weight_decay:
                grad = grad + d.LAMBDA * param
            yield Term(param.name, grad, rule)
        if node.bias:
            yield Term(node.bias, Part(result, 3), "recurrent_bias")
        yield Term(node.sources[0], Part(result, 0), "recurrent_input",
                   dict(consumer=layer))


@register
class Rnn(Recurrent):
    kind = "rnn"
    forward_rule, backward_rule = "rnn", "rnn_bptt"
    rules = {
        "rnn": Rule("recurrent layer (Elman), unfolded in time with the same weights at every "
                    "step: h_t = f(x_t W_xh^T + h_{t-1} W_hh^T + b), h_0 = 0; the tape keeps "
                    "every h_t for the backward pass",
                    "layer {layer}: h_t = f(x_t W_xh^T + h_(t-1) W_hh^T + b) for t = 1..T",
                    latex=r"A recurrent layer (Elman) unfolded in time, the same weights at "
                          r"every step: $h_t = f(x_t W_{xh}^{\top} + h_{t-1} W_{hh}^{\top} + b)$ "
                          r"for $t = 1, \dots, T$, $h_0 = 0$; the tape keeps every $h_t$ for "
                          r"the backward pass:"),
        "rnn_bptt": Rule("backpropagation through time: one reverse loop over t, delta_t from the "
                         "output at t and from delta_{t+1} through W_hh, times f'(h_t) "
                         "(truncated BPTT: the term from delta_{t+1} is cut at the start of "
                         "every chunk of bptt steps)",
                         "BPTT for layer {layer}: delta_t = (dL/dh_t + delta_(t+1) W_hh) "
                         "* f'(h_t), t = T..1",
                         latex=r"Backpropagation through time: one reverse loop over $t$, "
                               r"$\delta_t$ from the output at $t$ and from $\delta_{t+1}$ "
                               r"through $W_{hh}$, times $f'$; a weight shared by every step "
                               r"sums the gradients of its copies (truncated BPTT cuts the term "
                               r"from $\delta_{t+1}$ at the start of every chunk of "
                               r"\texttt{bptt} steps). The recurrences, then the step:"),
    }

    def cell(self, node, d, X, Wx, Wh, b):
        return RnnForward(X, Wx, Wh, b, ACTIVATIONS[node.activation.kind])

    def backprop(self, node, d, G, X, tape, Wx, Wh, b, bptt):
        return RnnBackward(G, X, tape, Wx, Wh, b, ACTIVATIONS[node.activation.kind], bptt)


def _gated():
    """The gated classes of :mod:`symgrad.ops.gated`, or None while that module is missing."""
    try:
        from . import gated
    except ImportError:  # pragma: no cover - the gated family is optional
        return None
    return gated


if _gated() is not None:

    @register
    class Lstm(Recurrent):
        kind = "lstm"
        forward_rule, backward_rule = "lstm", "lstm_bptt"
        rules = {
            "lstm": Rule("LSTM layer (Hochreiter & Schmidhuber 1997), unfolded in time: gates "
                         "i, f, o = sigma(.), g = tanh(.) of x_t W_xh^T + h_{t-1} W_hh^T + b, "
                         "c_t = f * c_{t-1} + i * g, h_t = o * tanh(c_t), h_0 = c_0 = 0; the "
                         "tape keeps the gates and cells for the backward pass",
                         "layer {layer}: LSTM cell for t = 1..T (gates i, f, g, o)"),
            "lstm_bptt": Rule("backpropagation through time for an LSTM: one reverse loop over "
                              "t carrying dL/dh_t and dL/dc_t back through W_hh and the forget "
                              "gate",
                              "BPTT for LSTM layer {layer}: dL/dh and dL/dc carried from t+1 "
                              "to t, t = T..1"),
        }

        def cell(self, node, d, X, Wx, Wh, b):
            return _gated().LstmForward(X, Wx, Wh, b)

        def backprop(self, node, d, G, X, tape, Wx, Wh, b, bptt):
            return _gated().LstmBackward(G, X, tape, Wx, Wh, b, bptt)

    @register
    class Gru(Recurrent):
        kind = "gru"
        forward_rule, backward_rule = "gru", "gru_bptt"
        rules = {
            "gru": Rule("GRU layer (Cho et al. 2014), unfolded in time: r, z = sigma(.), "
                        "n = tanh(x_t W_xn^T + r * (h_{t-1} W_hn^T) + b_n), "
                        "h_t = (1 - z) * n + z * h_{t-1}, h_0 = 0",
                        "layer {layer}: GRU cell for t = 1..T (gates r, z, n)"),
            "gru_bptt": Rule("backpropagation through time for a GRU: one reverse loop over t "
                             "carrying dL/dh_t back through the update gate and W_hh",
                             "BPTT for GRU layer {layer}: dL/dh carried from t+1 to t, "
                             "t = T..1"),
        }

        def cell(self, node, d, X, Wx, Wh, b):
            return _gated().GruForward(X, Wx, Wh, b)

        def backprop(self, node, d, G, X, tape, Wx, Wh, b, bptt):
            return _gated().GruBackward(G, X, tape, Wx, Wh, b, bptt)


@register
class LastStepRow(Op):
    kind = "last_step"
    rules = {
        "last_step": Rule("the layer's output is its last hidden state h_T (sequences = false)",
                          "layer {layer}: the last hidden state h_T"),
        "last_step_grad": Rule("chain rule through the last state: dL/dh_T at step T, zero at "
                               "every earlier step",
                               "dL/d{wrt}: dL/dh_T at the last step, zero before"),
    }

    def forward(self, node, d) -> None:
        d.add("forward", node.name, LastStep(d.array(node.sources[0])), "last_step",
              d.shape(node), node.layer)

    def vjp(self, node, d):
        source = node.sources[0]
        G = d.array(d.gradient_name(node.name))
        yield Term(source, LastStepGrad(G, d.array(source)), "last_step_grad")


@register
class MergeTimeRow(Op):
    kind = "merge_time"
    rules = {
        "merge_time": Rule("time folded into the batch: each step of each sequence is one row, "
                           "so the next dense layer acts on every step with the same weights",
                           "layer {layer} reads every time step as a row: (N, T, U) -> (N*T, U)"),
        "merge_time_grad": Rule("chain rule through the fold: the gradient rows split back "
                                "into sequences",
                                "dL/d{wrt}: gradient rows back to (N, T, U)"),
    }

    def forward(self, node, d) -> None:
        d.add("forward", node.name, MergeTime(d.array(node.sources[0])), "merge_time",
              d.shape(node), node.layer)

    def vjp(self, node, d):
        G = d.array(d.gradient_name(node.name))
        yield Term(node.sources[0], SplitTime(G, d.array(naming.INPUT)), "merge_time_grad")


@register
class SplitTimeRow(Op):
    kind = "split_time"
    rules = {
        "split_time": Rule("rows split back into sequences for the next recurrent layer",
                           "layer {layer} reads the rows as sequences: (N*T, U) -> (N, T, U)"),
        "split_time_grad": Rule("chain rule through the split: the gradient folded into rows",
                                "dL/d{wrt}: gradient sequences as rows"),
    }

    def forward(self, node, d) -> None:
        d.add("forward", node.name, SplitTime(d.array(node.sources[0]), d.array(naming.INPUT)),
              "split_time", d.shape(node), node.layer)

    def vjp(self, node, d):
        G = d.array(d.gradient_name(node.name))
        yield Term(node.sources[0], MergeTime(G), "split_time_grad")
