"""Verify one layer's hand-written backward pass against the registry's derived VJP.

Contract: :func:`verify_layer` calls a user's backward function (``backward(dout,
cache)``, ``conv_backward(dout, x, w, stride, pad)``, ...) with arrays it draws,
and compares every gradient it returns (``dx`` and one per parameter) entry by
entry with the vector-Jacobian product of the registry row of that layer
(:mod:`symgrad.ops`): a one-layer network is built, the row's forward steps and
its VJP terms (SymPy expressions whose NumPy views call the kernels of
:mod:`symgrad.ops.kernels`) are printed and evaluated.  Nothing of the user's
code enters the reference.  The result is a :class:`LayerReport`: per gradient
pass/fail, the mask of wrong entries and one diagnosis naming the layer's
known mistake, or ``no_known_pattern`` with the mask.

Kinds are the rows of :data:`KINDS` (one :class:`LayerKind` each: the
arrays it draws, default argument and return order, the canonical axes of
each array, the registry network it evaluates, and the planted mistakes it
can name); adding a kind is adding a row.  Conventions (canonical):

* ``dense``: ``out = x @ w.T + b``; x (N, D), w (M, D) = (out, in), b (M,).
* activations (``relu``, ``sigmoid``, ``tanh``, ``leaky_relu``, ``elu``,
  ``softplus``, ``gelu``, ``silu``, ``softmax``): ``out = f(x)``, x (N, D);
  ``out`` (the forward value) may be passed instead of x.
* ``softmax_ce``: scores x (N, C), integer labels y (N,); the loss is the
  mean (``reduction="mean"``, default, as in CS231n) or sum over the batch of
  ``-log softmax(x)[y]``; returns ``loss, dx`` by default (the loss is not
  compared).
* ``conv2d``: x (N, C, H, W), w (F, C, kh, kw), b (F,), cross-correlation
  with ``stride`` and zero ``padding`` (as every library computes it).
* ``maxpool2d``, ``avgpool2d``: x (N, C, H, W), window ``kernel``, ``stride``
  (default the window).
* ``rnn`` (tanh), ``lstm``, ``gru``: x (N, T, D), ``h_t = f(x_t wx^T + h_(t-1)
  wh^T + b)``, h_0 = 0, wx (units, D), wh (units, units) (gated: stacked by gate
  in PyTorch's order, LSTM i, f, g, o; GRU r, z, n), dout (N, T, units) = dL/dh
  at every step; returns ``dx, dwx, dwh, db``; ``out`` (= ``h``) holds every
  state, ``h0`` zeros.
* ``batchnorm`` (training mode, over the batch), ``layernorm`` (over the
  features): x (N, D), gamma, beta (D,), ``eps`` = :data:`NORM_EPS`; returns
  ``dx, dgamma, dbeta``; ``out``, ``xhat``, ``mean``, ``var`` may be asked for.
* ``embedding``: integer ids x (N, L) in [0, ``vocab``), w (vocab, D), dout
  (N, L, D); returns ``dw``.
* ``dropout``: ``mask`` (N, D) is inverted dropout's mask, 0 or 1/(1 - rate)
  (``keep`` the 0/1 mask, ``rate`` the drop probability); returns ``dx``.

Values the user's function may ask for by name in ``args``: the arrays
(``dout``, ``x``, ``w``, ``b``, ``y``, ``out``), ``stride``, ``pad``
(= ``padding``), ``kernel``, ``eps``, ``rate``, ``keep_prob``, ``vocab``, and
CS231n's ``conv_param`` ({'stride', 'pad'}), ``pool_param``
({'pool_height', 'pool_width', 'stride'}), ``bn_param`` and ``ln_param``; a
parenthesised group is passed as one tuple: ``args="dout,(x,w,b)"`` for
``backward(dout, cache)``.  ``layout`` maps an array to the order of its
canonical axes as the user stores it (``{"w": "in,out"}`` for W stored
(in, out); ``{"w": "kh,kw,C,F"}``); the gradient of that array is expected in
the same layout.  ``returns`` names what the function returns, in order
(``"dx,dw,db"``; ``_`` or ``loss`` to skip a value); a returned dict is read
by these names.

A diagnosis is named only when the gradient equals that planted mistake on
every entry, the mistake differs from the reference on at least
:data:`MIN_ENTRIES` entries, and this holds at two batch sizes at least;
otherwise the diagnosis is ``no_known_pattern`` and its message counts the
same mask the report shows.

>>> import numpy as np
>>> def affine_backward(dout, cache):
...     x, w, b = cache
...     return dout @ w.T, x.T @ dout, dout.sum(axis=0)
>>> verify_layer("dense", affine_backward, args="dout,(x,w,b)", layout={"w": "in,out"}).passed
True
>>> def relu_backward(dout, x):
...     return dout * (x < 0)
>>> report = verify_layer("relu", relu_backward)
>>> report.passed, report["dx"].diagnoses[0].code
(False, 'relu_mask_inverted')
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy as sp

from .diagnose import Diagnosis
from .verify import ParamVerdict, VerifyInputError, _compare, _describe, _jsonf

__all__ = ["KINDS", "LayerKind", "LayerReport", "Mistake", "verify_layer", "add_arguments",
           "run"]

#: Entries on which a planted mistake must differ from the reference for its fit to count.
MIN_ENTRIES = 3
KINK_MARGIN = 1e-2


# --------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Sizes:
    """The hyper-parameters of one check."""

    shape: tuple[int, ...]
    units: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    reduction: str = "mean"
    vocab: int = 6  # embedding
    rate: float = 0.3  # dropout: the drop probability


@dataclass(frozen=True)
class Mistake:
    """A planted mistake: which gradient, its code and message, how to compute it."""

    grad: str
    code: str
    message: str
    compute: Callable[[dict, dict, Sizes], np.ndarray | None]


@dataclass(frozen=True)
class LayerKind:
    """One row of :data:`KINDS`."""

    name: str
    args: tuple[str, ...]  # default argument order
    returns: tuple[str, ...]  # default return order
    axes: dict[str, tuple[str, ...]]  # canonical axes of each array
    defaults: dict[str, Any]  # default Sizes fields
    spec: Callable[[Sizes], Any]  # the one-layer network spec
    draw: Callable[[np.random.Generator, Sizes, int], dict]  # the arrays, canonical
    evaluate: Callable[[Any, dict, Sizes], tuple[dict, dict]]  # (extra values, reference)
    mistakes: tuple[Mistake, ...] = ()


# --------------------------------------------------------------------------- the registry


def _helpers() -> dict[str, Callable]:
    """The NumPy helpers a printed step may call: every kernel module, plus forward helpers."""
    from . import ops

    table: dict[str, Callable] = {}
    for module in ops.kernel_modules():
        for names in module.HELPERS.values():
            for name in names:
                table[name] = getattr(module, name)
    erf = np.vectorize(math.erf, otypes=[float])

    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def logsumexp(z):
        m = z.max(axis=1, keepdims=True)
        return m + np.log(np.exp(z - m).sum(axis=1, keepdims=True))

    def sigmoid(z, out=None):
        return np.exp(-np.logaddexp(0, -z))

    table.update(_softmax=softmax, _logsumexp=logsumexp, _sigmoid=sigmoid, _erf=erf)
    return table


class _Layer:
    """A one-layer network's derivation context: forward steps, and one row's VJP terms."""

    def __init__(self, spec):
        from . import ops
        from .derive import _Deriver
        from .graph import build_graph

        self.graph = build_graph(spec)
        self.deriver = _Deriver(self.graph)
        for node in self.graph.nodes:
            ops.row(node.op).forward(node, self.deriver)
        self.forward_steps = list(self.deriver.steps)

    def evaluate(self, expr, values: dict) -> np.ndarray:
        from .printing import ArrayCodePrinter

        printer = ArrayCodePrinter({"N": "n", "weight_decay": "WEIGHT_DECAY"})
        code = printer.doprint(expr)
        scope = {"np": np, **_helpers(), **values}
        with np.errstate(all="ignore"):
            value = eval(compile(code, "<registry>", "eval"), scope)  # noqa: S307
        return value if isinstance(value, tuple) else np.asarray(value)  # a tape is a tuple

    def forward(self, values: dict, until: str) -> dict:
        """Evaluate the forward steps (the registry's forward forms) up to node ``until``."""
        values = dict(values)
        for step in self.forward_steps:
            values[step.target] = self.evaluate(step.code_expr, values)
            if step.target == until:
                break
        return values

    def forward_layer(self, values: dict, layer: int, until: str | None = None) -> dict:
        """Evaluate the forward steps of one layer only (its input given in ``values``)."""
        values = dict(values)
        for step in self.forward_steps:
            if step.layer == layer:
                values[step.target] = self.evaluate(step.code_expr, values)
                if step.target == until:
                    break
        return values

    def vjp(self, node_name: str, values: dict, *, loss: bool = False) -> dict[str, np.ndarray]:
        """The registry row's VJP terms of a node (or of the loss at it), evaluated.

        Steps the row adds on the way (a recurrent layer's BPTT loop) are evaluated
        first and then taken back out, so the cached context does not grow; steps
        for reading only (the staged chain rule of a normalisation) are skipped.
        """
        from . import ops

        node = self.graph.node(node_name)
        row = ops.row("loss") if loss else ops.row(node.op)
        before = len(self.deriver.steps)
        try:
            terms = list(row.vjp(node, self.deriver))
            added = self.deriver.steps[before:]
        finally:
            del self.deriver.steps[before:]
        values = dict(values)
        for step in added:
            if step.phase == "backward" and not step.detail.get("display_only"):
                values[step.target] = self.evaluate(step.code_expr, values)
        return {term.target: self.evaluate(term.expr, values) for term in terms}


_LAYERS: dict[tuple, _Layer] = {}


def _layer(spec_key: tuple, build: Callable[[], Any]) -> _Layer:
    if spec_key not in _LAYERS:
        if len(_LAYERS) > 64:
            _LAYERS.clear()
        _LAYERS[spec_key] = _Layer(build())
    return _LAYERS[spec_key]


def _network(inputs):
    from .spec import Network

    return Network("layer", inputs=inputs)


# --------------------------------------------------------------------------- dense


def _dense_spec(s: Sizes):
    return _network(s.shape[0]).dense(s.units).loss("sse").build()


def _dense_draw(rng, s: Sizes, n: int) -> dict:
    d, m = s.shape[0], s.units
    return {"x": rng.normal(0, 1, (n, d)), "w": rng.normal(0, 1 / math.sqrt(d), (m, d)),
            "b": rng.normal(0, 0.5, m), "dout": rng.normal(0, 1, (n, m))}


def _dense_eval(layer: _Layer, v: dict, s: Sizes):
    values = {"X": v["x"], "W1": v["w"], "b1": v["b"], "n": len(v["x"])}
    out = layer.forward(values, "z1")["z1"]
    grads = layer.vjp("z1", {**values, "delta1": v["dout"]})
    return {"out": out}, {"dx": grads["X"], "dw": grads["W1"], "db": grads["b1"]}


def _one_sample(index: int):
    return lambda v, r, s: np.outer(v["dout"][index], v["x"][index])


_DENSE_MISTAKES = (
    Mistake("dw", "dw_transposed", "dW axes swapped: dW is (x^T dout)^T, laid out (in, out) "
            "where the weight is (out, in) (or the other way round)",
            lambda v, r, s: r["dw"].T),
    Mistake("dw", "dw_not_accumulated", "dW from the first sample only: not summed over the "
            "batch (dW = x_0^T dout_0)", _one_sample(0)),
    Mistake("dw", "dw_not_accumulated", "dW from the last sample only: overwritten instead of "
            "accumulated over the batch (= instead of +=)", _one_sample(-1)),
    Mistake("db", "db_not_summed", "db not summed over the batch: per-sample rows dout "
            "returned", lambda v, r, s: v["dout"]),
    Mistake("db", "db_not_summed", "db is the first sample's dout only, not summed over the "
            "batch", lambda v, r, s: v["dout"][0]),
    Mistake("db", "db_not_summed", "db is the last sample's dout only: overwritten instead of "
            "accumulated over the batch", lambda v, r, s: v["dout"][-1]),
    Mistake("db", "db_mean", "db is the mean over the batch instead of the sum",
            lambda v, r, s: v["dout"].mean(axis=0)),
)


# --------------------------------------------------------------------------- activations


def _activation_spec(kind: str):
    def build(s: Sizes):
        return _network(s.shape[0]).dense(s.shape[0], kind).loss("sse").build()

    return build


def _kinks(kind: str) -> list[float]:
    from . import primitives
    from .verify import _KINKY, _breakpoints

    forward = primitives.activation(kind).forward
    if forward is None or not forward.has(*_KINKY):
        return []
    return _breakpoints(primitives.bind(forward, dict(primitives.activation(kind).parameters)))


def _activation_draw(kind: str):
    def draw(rng, s: Sizes, n: int) -> dict:
        x = rng.normal(0, 1.5, (n, s.shape[0]))
        for point in _kinks(kind):
            near = np.abs(x - point) < KINK_MARGIN
            x[near] = point + np.where(rng.random(int(near.sum())) < 0.5, -1, 1) * \
                rng.uniform(0.1, 2.0, int(near.sum()))
        return {"x": x, "dout": rng.normal(0, 1, (n, s.shape[0]))}

    return draw


def _activation_eval(layer: _Layer, v: dict, s: Sizes):
    values = _activation_forward(layer, v)
    grads = layer.vjp("a1", {**values, "dL_da1": v["dout"]})
    return {"out": values["a1"]}, {"dx": grads["z1"]}


def _activation_forward(layer: _Layer, v: dict) -> dict:
    step = next(st for st in layer.forward_steps if st.target == "a1")
    values = {"z1": v["x"], "n": len(v["x"])}
    values["a1"] = layer.evaluate(step.code_expr, values)
    return values


def _activation_mistakes(kind: str) -> tuple[Mistake, ...]:
    from . import primitives
    from .verify import _lambdify

    rule = primitives.activation(kind)
    out = [Mistake("dx", "activation_derivative_missing",
                   f"the {kind} derivative is missing: dx = dout",
                   lambda v, r, s: v["dout"])]
    if rule.vector:
        out.append(Mistake("dx", "softmax_diagonal_only", "only the diagonal of the softmax "
                           "Jacobian is used: dout * a (1 - a), the -a_i a_j terms dropped",
                           lambda v, r, s: v["dout"] * v["out"] * (1 - v["out"])))
        return tuple(out)
    forward = primitives.bind(rule.forward, dict(rule.parameters))
    x, a = primitives.x, primitives.a
    derivative = _lambdify(x, primitives.activation_derivative(forward))
    slope_expr = primitives.in_forward_terms(forward)
    if kind in ("relu", "leaky_relu"):
        out.insert(0, Mistake("dx", "relu_mask_inverted", "ReLU mask on the wrong side: the "
                              "gradient passes where x <= 0 and is blocked where x > 0",
                              lambda v, r, s: derivative(-v["x"]) * v["dout"]))
    if slope_expr is not None and slope_expr.has(a):
        slope = _lambdify(a, slope_expr)
        out.insert(0, Mistake("dx", "derivative_in_z", f"the {kind} derivative written in "
                              f"terms of the output ({sp.sstr(slope_expr)}) is applied to "
                              "the input z instead of the output a",
                              lambda v, r, s: v["dout"] * slope(v["x"])))
    out.insert(1, Mistake("dx", "derivative_at_output", f"the {kind} derivative f'(z) is "
                          "evaluated at the output a instead of the input z",
                          lambda v, r, s: v["dout"] * derivative(v["out"])))
    return tuple(out)


# --------------------------------------------------------------------------- softmax + CE


def _ce_spec(s: Sizes):
    return (_network(s.shape[0]).dense(s.shape[0], "softmax")
            .loss("cross_entropy", reduction=s.reduction).build())


def _ce_draw(rng, s: Sizes, n: int) -> dict:
    c = s.shape[0]
    return {"x": rng.normal(0, 1.5, (n, c)), "y": rng.integers(0, c, n)}


def _ce_eval(layer: _Layer, v: dict, s: Sizes):
    n, c = v["x"].shape
    values = {"z1": v["x"], "n": n, "T": np.eye(c)[v["y"]]}
    step = next(st for st in layer.forward_steps if st.target == "a1")
    values["a1"] = layer.evaluate(step.code_expr, values)
    grads = layer.vjp("a1", values, loss=True)
    return {"out": values["a1"]}, {"dx": grads["z1"]}


def _ce_scale(v: dict, s: Sizes) -> float:
    return 1.0 / len(v["x"]) if s.reduction == "mean" else 1.0


_CE_MISTAKES = (
    Mistake("dx", "ce_label_not_subtracted", "the 1 at the true class is not subtracted: "
            "dx = p instead of p - onehot(y)",
            lambda v, r, s: v["out"] * _ce_scale(v, s)),
    Mistake("dx", "ce_mean_missing", "the 1/N of the mean over the batch is missing",
            lambda v, r, s: r["dx"] * len(v["x"]) if s.reduction == "mean" else None),
    Mistake("dx", "ce_mean_extra", "divided by N although the loss is summed over the batch",
            lambda v, r, s: r["dx"] / len(v["x"]) if s.reduction == "sum" else None),
)


# --------------------------------------------------------------------------- conv2d


def _conv_spec(s: Sizes):
    return (_network(s.shape).conv2d(s.units, list(s.kernel), stride=list(s.stride),
                                     padding=list(s.padding))
            .flatten().dense(1).loss("sse").build())


def _conv_out(s: Sizes) -> tuple[int, int]:
    (h, w), (kh, kw), (sh, sw), (ph, pw) = s.shape[1:], s.kernel, s.stride, s.padding
    return (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1


def _conv_draw(rng, s: Sizes, n: int) -> dict:
    c, (kh, kw), f = s.shape[0], s.kernel, s.units
    fan = c * kh * kw
    return {"x": rng.normal(0, 1, (n, *s.shape)),
            "w": rng.normal(0, 1 / math.sqrt(fan), (f, c, kh, kw)),
            "b": rng.normal(0, 0.5, f), "dout": rng.normal(0, 1, (n, f, *_conv_out(s)))}


def _conv_eval(layer: _Layer, v: dict, s: Sizes):
    values = {"X": v["x"], "K1": v["w"], "b1": v["b"], "n": len(v["x"])}
    out = layer.forward(values, "z1")["z1"]
    grads = layer.vjp("z1", {**values, "delta1": v["dout"]})
    return {"out": out}, {"dx": grads["X"], "dw": grads["K1"], "db": grads["b1"]}


def _kernel(name: str) -> Callable:
    return _helpers()[name]


def _conv_dx_unflipped(v, r, s):
    flipped = np.ascontiguousarray(v["w"][:, :, ::-1, ::-1])
    return _kernel("_conv2d_grad_input")(v["dout"], flipped, s.stride, s.padding, s.shape[1:])


def _conv_dw_samples(which: slice):
    def compute(v, r, s):
        return _kernel("_conv2d_grad_kernel")(v["x"][which], v["dout"][which], s.stride,
                                              s.padding, s.kernel)

    return compute


def _at_position(dout: np.ndarray, i: int, j: int) -> np.ndarray:
    only = np.zeros_like(dout)
    only[:, :, i, j] = dout[:, :, i, j]
    return only


def _conv_dw_position(last: bool, samples: slice = slice(None)):
    def compute(v, r, s):
        ho, wo = v["dout"].shape[2:]
        i, j = (ho - 1, wo - 1) if last else (0, 0)
        return _kernel("_conv2d_grad_kernel")(v["x"][samples],
                                              _at_position(v["dout"][samples], i, j),
                                              s.stride, s.padding, s.kernel)

    return compute


_CONV_MISTAKES = (
    Mistake("dx", "kernel_not_flipped", "the input gradient correlates dout with K instead of K rotated by 180 "
            "degrees (correlation where the backward pass needs a true convolution)",
            _conv_dx_unflipped),
    Mistake("dw", "dw_axes_swapped", "dW has its filter and channel axes swapped: (C, F, kh, "
            "kw) where the kernel is (F, C, kh, kw)", lambda v, r, s: r["dw"].transpose(1, 0, 2, 3)),
    Mistake("dw", "dw_axes_swapped", "dW has its two spatial axes swapped (kw, kh)",
            lambda v, r, s: r["dw"].transpose(0, 1, 3, 2)),
    Mistake("dw", "dw_flipped", "dW is rotated by 180 degrees: x and dout correlated the "
            "wrong way round", lambda v, r, s: r["dw"][:, :, ::-1, ::-1]),
    Mistake("dw", "dw_not_accumulated_batch", "dW from the first sample only: not summed "
            "over the batch", _conv_dw_samples(slice(0, 1))),
    Mistake("dw", "dw_not_accumulated_batch", "dW from the last sample only: overwritten "
            "instead of accumulated over the batch (= instead of +=)",
            _conv_dw_samples(slice(-1, None))),
    Mistake("dw", "dw_not_accumulated_positions", "dW from the first output position only: "
            "not summed over the positions the kernel slides to", _conv_dw_position(False)),
    Mistake("dw", "dw_not_accumulated_positions", "dW from the last output position only: "
            "overwritten instead of accumulated over positions (= instead of +=)",
            _conv_dw_position(True)),
    Mistake("dw", "dw_not_accumulated", "dW overwritten instead of accumulated (= instead of "
            "+=): only the last sample's last output position is left",
            _conv_dw_position(True, slice(-1, None))),
    Mistake("db", "db_not_summed_positions", "db summed over the batch but not over output "
            "positions: shape (F, Ho, Wo) returned", lambda v, r, s: v["dout"].sum(axis=0)),
    Mistake("db", "db_not_summed_positions", "db from the first output position only: not "
            "summed over positions", lambda v, r, s: v["dout"][:, :, 0, 0].sum(axis=0)),
    Mistake("db", "db_not_summed_positions", "db from the last output position only: "
            "overwritten instead of summed over positions",
            lambda v, r, s: v["dout"][:, :, -1, -1].sum(axis=0)),
    Mistake("db", "db_not_summed_batch", "db summed over positions but not over the batch: "
            "per-sample rows (N, F) returned", lambda v, r, s: v["dout"].sum(axis=(2, 3))),
    Mistake("db", "db_not_summed_batch", "db from the first sample only, not summed over the "
            "batch", lambda v, r, s: v["dout"][0].sum(axis=(1, 2))),
)


# --------------------------------------------------------------------------- pooling


def _pool_spec(kind: str):
    def build(s: Sizes):
        net = getattr(_network(s.shape), kind)(list(s.kernel), list(s.stride))
        return net.flatten().dense(1).loss("sse").build()

    return build


def _pool_out(s: Sizes) -> tuple[int, int]:
    (h, w), (kh, kw), (sh, sw) = s.shape[1:], s.kernel, s.stride
    return (h - kh) // sh + 1, (w - kw) // sw + 1


def _pool_draw(rng, s: Sizes, n: int) -> dict:
    return {"x": rng.normal(0, 1, (n, *s.shape)),
            "dout": rng.normal(0, 1, (n, s.shape[0], *_pool_out(s)))}


def _pool_eval(layer: _Layer, v: dict, s: Sizes):
    values = {"X": v["x"], "n": len(v["x"])}
    out = layer.forward(values, "a1")["a1"]
    grads = layer.vjp("a1", {**values, "dL_da1": v["dout"]})
    return {"out": out}, {"dx": grads["X"]}


def _spread(v, s, divide: bool):
    """dout spread over every entry of its window (divided by the window size if asked)."""
    g = _kernel("_avgpool2d_grad")(v["dout"], s.kernel, s.stride, s.shape[1:])
    return g if divide else g * (s.kernel[0] * s.kernel[1])


_MAXPOOL_MISTAKES = (
    Mistake("dx", "maxpool_spread", "max-pool gradient spread to every entry of the window "
            "instead of routed to its arg-max", lambda v, r, s: _spread(v, s, False)),
    Mistake("dx", "maxpool_averaged", "max-pool gradient spread evenly over the window as for "
            "average pooling, instead of routed to its arg-max",
            lambda v, r, s: _spread(v, s, True)),
)

_AVGPOOL_MISTAKES = (
    Mistake("dx", "avgpool_not_divided", "average-pool gradient not divided by the window size "
            "k^2 (kh*kw)", lambda v, r, s: r["dx"] * (s.kernel[0] * s.kernel[1])),
    Mistake("dx", "avgpool_routed_to_max", "average-pool gradient routed to the arg-max of each "
            "window as for max pooling", lambda v, r, s: _kernel("_maxpool2d_grad")(
                v["dout"], v["x"], s.kernel, s.stride)),
)


# --------------------------------------------------------------------------- recurrent


def _rnn_spec(kind: str):
    def build(s: Sizes):
        net = _network(tuple(s.shape)).rnn(s.units, "tanh", sequences=True, kind=kind)
        return net.dense(1).loss("sse").build()

    return build


_GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def _rnn_draw(kind: str):
    def draw(rng, s: Sizes, n: int) -> dict:
        (steps, d), u, k = s.shape, s.units, _GATES[kind]
        return {"x": rng.normal(0, 1, (n, steps, d)),
                "wx": rng.normal(0, 1 / math.sqrt(d), (k * u, d)),
                "wh": rng.normal(0, 0.9 / math.sqrt(u), (k * u, u)),
                "b": rng.normal(0, 0.5, k * u), "dout": rng.normal(0, 1, (n, steps, u))}

    return draw


def _rnn_eval(layer: _Layer, v: dict, s: Sizes):
    values = {"X": v["x"], "Wx1": v["wx"], "Wh1": v["wh"], "b1": v["b"], "n": len(v["x"])}
    values = layer.forward(values, "a1")
    grads = layer.vjp("a1", {**values, "dL_da1": v["dout"]})
    out = values["a1"]
    return ({"out": out, "h": out, "h0": np.zeros((len(out), s.units))},
            {"dx": grads["X"], "dwx": grads["Wx1"], "dwh": grads["Wh1"], "db": grads["b1"]})


def _previous(h: np.ndarray) -> np.ndarray:
    """h_{t-1} for every t: the states shifted one step, h_0 = 0 first."""
    return np.concatenate([np.zeros_like(h[:, :1]), h[:, :-1]], axis=1)


def _rnn_deltas(v: dict, recurrent: bool = True) -> np.ndarray:
    """delta_t = (dout_t + delta_{t+1} W_hh) (1 - h_t^2) (tanh), or without the second term."""
    h, dout, wh = v["out"], v["dout"], v["wh"]
    delta = np.zeros_like(h)
    carry = np.zeros_like(h[:, 0])
    for t in range(h.shape[1] - 1, -1, -1):
        delta[:, t] = (dout[:, t] + carry) * (1 - h[:, t] ** 2)
        carry = delta[:, t] @ wh if recurrent else carry
    return delta


def _rnn_grads(v: dict, delta: np.ndarray, steps=slice(None), state=_previous) -> dict:
    """The four gradients from the deltas, summed over the time steps ``steps``."""
    d, x, hp = delta[:, steps], v["x"][:, steps], state(v["out"])[:, steps]
    return {"dx": delta @ v["wx"], "dwx": np.einsum("ntu,ntd->ud", d, x),
            "dwh": np.einsum("ntu,ntv->uv", d, hp), "db": d.sum(axis=(0, 1))}


def _rnn_mistake(grad: str, recurrent=True, steps=slice(None), state=_previous):
    return lambda v, r, s: _rnn_grads(v, _rnn_deltas(v, recurrent), steps, state)[grad]


def _rnn_mistakes() -> tuple[Mistake, ...]:
    out = [Mistake(g, "bptt_recurrent_term_dropped", f"{g}: the recurrent term is dropped: "
                   "delta_t = dout_t f'(h_t) without delta_(t+1) W_hh (no error flows back "
                   "through time)", _rnn_mistake(g, recurrent=False))
           for g in ("dx", "dwx", "dwh", "db")]
    for g in ("dwx", "dwh", "db"):
        out += [Mistake(g, "bptt_not_accumulated", f"{g} from the first time step only: "
                        "overwritten in the reverse loop instead of accumulated over time "
                        "(= instead of +=)", _rnn_mistake(g, steps=slice(0, 1))),
                Mistake(g, "bptt_not_accumulated", f"{g} from the last time step only: not "
                        "accumulated over time (= instead of +=)",
                        _rnn_mistake(g, steps=slice(-1, None)))]
    out.append(Mistake("dwh", "dwh_wrong_state", "dWh pairs delta_t with h_t instead of the "
                       "previous state h_(t-1)", _rnn_mistake("dwh", state=lambda h: h)))
    return tuple(out)


def _gated_truncated(kind: str, grad: str):
    index = ("dx", "dwx", "dwh", "db").index(grad)

    def compute(v, r, s):
        tape = _kernel(f"_{kind}_forward")(v["x"], v["wx"], v["wh"], v["b"])
        out = _kernel(f"_{kind}_backward")(v["dout"], v["x"], tape, v["wx"], v["wh"], v["b"], 1)
        return out[index]

    return compute


def _gated_mistakes(kind: str) -> tuple[Mistake, ...]:
    return tuple(Mistake(g, "bptt_recurrent_term_dropped", f"{g}: the recurrent term is "
                         "dropped: no error flows back from step t+1 to step t (BPTT cut "
                         "after one step)", _gated_truncated(kind, g))
                 for g in ("dx", "dwx", "dwh", "db"))


# --------------------------------------------------------------------------- normalisation

#: The eps of batch and layer norm (passed as ``eps``, ``bn_param``, ``ln_param``).
NORM_EPS = 1e-5


def _norm_spec(kind: str):
    def build(s: Sizes):
        d = s.shape[0]  # a dense layer before, so that the gradient of the input is derived
        return getattr(_network(d).dense(d), kind)(eps=NORM_EPS).dense(1).loss("sse").build()

    return build


def _norm_draw(rng, s: Sizes, n: int) -> dict:
    d = s.shape[0]
    return {"x": rng.normal(0.5, 1.5, (n, d)), "gamma": rng.normal(1.0, 0.5, d),
            "beta": rng.normal(0, 0.5, d), "dout": rng.normal(0, 1, (n, d))}


def _norm_eval(layer: _Layer, v: dict, s: Sizes):
    values = layer.forward_layer({"a1": v["x"], "gamma2": v["gamma"], "beta2": v["beta"],
                                  "n": len(v["x"])}, 2)
    grads = layer.vjp("z2", {**values, "delta2": v["dout"]})
    extra = {"out": values["z2"], "xhat": values["xhat2"], "mean": values["mu2"].reshape(-1),
             "var": values["var2"].reshape(-1)}
    return extra, {"dx": grads["a1"], "dgamma": grads["gamma2"], "dbeta": grads["beta2"]}


def _norm_dx(v: dict, axis: int, *, gamma=True, mean=True, var=True) -> np.ndarray:
    """dx through a normalisation over ``axis``, with terms left out as a mistake leaves them."""
    x, g = v["x"], v["dout"] * (v["gamma"] if gamma else 1.0)
    xc = x - x.mean(axis=axis, keepdims=True)
    r = 1 / np.sqrt((xc ** 2).mean(axis=axis, keepdims=True) + NORM_EPS)
    xhat = xc * r
    dx = g.copy()
    if mean:
        dx -= g.mean(axis=axis, keepdims=True)
    if var:
        dx -= xhat * (g * xhat).mean(axis=axis, keepdims=True)
    return dx * r


def _norm_mistakes(axis: int) -> tuple[Mistake, ...]:
    over, other = ("the batch", "the features") if axis == 0 else ("the features", "the batch")
    return (
        Mistake("dx", "norm_mean_term_missing", "the gradient through the mean is missing "
                f"(the -mean(gamma dout) over {over} term): the mean treated as a constant",
                lambda v, r, s: _norm_dx(v, axis, mean=False)),
        Mistake("dx", "norm_variance_term_missing", "the gradient through the variance is "
                "missing (the -xhat mean(gamma dout xhat) term): the variance treated as a "
                "constant", lambda v, r, s: _norm_dx(v, axis, var=False)),
        Mistake("dx", "norm_statistics_constant", "the mean and the variance are both treated "
                "as constants: dx = gamma dout / sqrt(var + eps)",
                lambda v, r, s: _norm_dx(v, axis, mean=False, var=False)),
        Mistake("dx", "norm_gamma_forgotten", "gamma is forgotten: the gradient flows back "
                "through xhat as if gamma were 1", lambda v, r, s: _norm_dx(v, axis, gamma=False)),
        Mistake("dx", "norm_wrong_axis", f"the statistics are taken over {other} instead of "
                f"{over} (the wrong reduction axis)", lambda v, r, s: _norm_dx(v, 1 - axis)),
        Mistake("dgamma", "dgamma_not_summed", "dgamma not summed over the batch: per-sample "
                "rows dout * xhat returned", lambda v, r, s: v["dout"] * v["xhat"]),
        Mistake("dgamma", "dgamma_uses_x", "dgamma = sum(dout * x): the input x where the "
                "normalised input xhat belongs", lambda v, r, s: (v["dout"] * v["x"]).sum(0)),
        Mistake("dgamma", "dgamma_wrong_axis", "dgamma summed over the features instead of "
                "the batch", lambda v, r, s: (v["dout"] * v["xhat"]).sum(1)),
        Mistake("dbeta", "dbeta_not_summed", "dbeta not summed over the batch: per-sample rows "
                "dout returned", lambda v, r, s: v["dout"]),
        Mistake("dbeta", "dbeta_wrong_axis", "dbeta summed over the features instead of the "
                "batch", lambda v, r, s: v["dout"].sum(1)),
    )


# --------------------------------------------------------------------------- embedding


def _embedding_spec(s: Sizes):
    return _network(s.shape[0]).embedding(s.vocab, s.units).dense(1).loss("sse").build()


def _embedding_draw(rng, s: Sizes, n: int) -> dict:
    (length,), v, d = s.shape, s.vocab, s.units
    ids = rng.integers(0, v, (n, length))
    ids.flat[rng.permutation(ids.size)[:2]] = ids.flat[0]  # at least one id repeated
    return {"x": ids, "w": rng.normal(0, 1, (v, d)), "dout": rng.normal(0, 1, (n, length, d))}


def _embedding_eval(layer: _Layer, v: dict, s: Sizes):
    n = len(v["x"])
    values = layer.forward({"X": v["x"], "E1": v["w"], "n": n}, "a1")
    grads = layer.vjp("a1", {**values, "dL_da1": v["dout"].reshape(n, -1)})
    return {"out": values["a1"].reshape(v["dout"].shape)}, {"dw": grads["E1"]}


def _embedding_overwritten(v, r, s):
    dw = np.zeros_like(v["w"])
    dw[v["x"].reshape(-1)] += v["dout"].reshape(-1, s.units)  # buffered: the last one wins
    return dw


def _embedding_first_sample(v, r, s):
    dw = np.zeros_like(v["w"])
    np.add.at(dw, v["x"][0], v["dout"][0])
    return dw


_EMBEDDING_MISTAKES = (
    Mistake("dw", "embedding_repeats_dropped", "a repeated id keeps one row instead of the sum "
            "of its rows: dW[ids] += dout with fancy indexing (use np.add.at)",
            _embedding_overwritten),
    Mistake("dw", "dw_not_accumulated_batch", "dW from the first sample only: not summed over "
            "the batch", _embedding_first_sample),
)


# --------------------------------------------------------------------------- dropout


def _dropout_spec(s: Sizes):
    d = s.shape[0]
    return _network(d).dense(d).dropout(s.rate).dense(1).loss("sse").build()


def _dropout_draw(rng, s: Sizes, n: int) -> dict:
    return {"x": rng.normal(0, 1, (n, s.shape[0])), "dout": rng.normal(0, 1, (n, s.shape[0])),
            "rng": np.random.default_rng(rng.integers(2 ** 32))}


def _dropout_eval(layer: _Layer, v: dict, s: Sizes):
    values = layer.forward_layer({"a1": v["x"], "rng": v["rng"], "n": len(v["x"])}, 2,
                                 until="a2")
    grads = layer.vjp("a2", {**values, "dL_da2": v["dout"]})
    mask = values["m2"]
    return ({"out": values["a2"], "mask": mask, "keep": (mask != 0).astype(np.float64)},
            {"dx": grads["a1"]})


_DROPOUT_MISTAKES = (
    Mistake("dx", "dropout_mask_not_applied", "the dropout mask is not applied: dx = dout "
            "(the dropped units pass gradient)", lambda v, r, s: v["dout"]),
    Mistake("dx", "dropout_not_rescaled", "the mask is applied but not rescaled: dx = dout * "
            "keep, without the 1/(1 - p) of inverted dropout",
            lambda v, r, s: v["dout"] * v["keep"]),
    Mistake("dx", "dropout_rescaled_by_rate", "rescaled by 1/p instead of 1/(1 - p): the drop "
            "probability taken for the keep probability",
            lambda v, r, s: v["dout"] * v["keep"] / s.rate),
)


# --------------------------------------------------------------------------- the table


def _activation_row(kind: str) -> LayerKind:
    return LayerKind(kind, ("dout", "x"), ("dx",), {"x": ("N", "D"), "dout": ("N", "D"),
                                                     "out": ("N", "D")},
                     {"shape": (5,)}, _activation_spec(kind), _activation_draw(kind),
                     _activation_eval, _activation_mistakes(kind))


def _rows() -> dict[str, LayerKind]:
    image = ("N", "C", "H", "W")
    rows = [
        LayerKind("dense", ("dout", "x", "w", "b"), ("dx", "dw", "db"),
                  {"x": ("N", "in"), "w": ("out", "in"), "dout": ("N", "out"), "b": ("out",),
                   "out": ("N", "out")},
                  {"shape": (4,), "units": 3}, _dense_spec, _dense_draw, _dense_eval,
                  _DENSE_MISTAKES),
        LayerKind("softmax_ce", ("x", "y"), ("loss", "dx"), {"x": ("N", "C"), "out": ("N", "C")},
                  {"shape": (4,)}, _ce_spec, _ce_draw, _ce_eval, _CE_MISTAKES),
        LayerKind("conv2d", ("dout", "x", "w", "b", "conv_param"), ("dx", "dw", "db"),
                  {"x": image, "w": ("F", "C", "kh", "kw"), "b": ("F",),
                   "dout": ("N", "F", "H", "W"), "out": ("N", "F", "H", "W")},
                  {"shape": (2, 5, 5), "units": 3, "kernel": (3, 3)}, _conv_spec, _conv_draw,
                  _conv_eval, _CONV_MISTAKES),
        LayerKind("maxpool2d", ("dout", "x", "pool_param"), ("dx",),
                  {"x": image, "dout": image, "out": image},
                  {"shape": (2, 4, 4), "kernel": (2, 2)}, _pool_spec("maxpool2d"), _pool_draw,
                  _pool_eval, _MAXPOOL_MISTAKES),
        LayerKind("avgpool2d", ("dout", "x", "pool_param"), ("dx",),
                  {"x": image, "dout": image, "out": image},
                  {"shape": (2, 4, 4), "kernel": (2, 2)}, _pool_spec("avgpool2d"), _pool_draw,
                  _pool_eval, _AVGPOOL_MISTAKES),
        *(LayerKind(kind, ("dout", "x", "wx", "wh", "b"), ("dx", "dwx", "dwh", "db"),
                    {"x": ("N", "T", "D"), "wx": ("out", "in"), "wh": ("out", "in"),
                     "b": ("out",), "dout": ("N", "T", "H"), "out": ("N", "T", "H"),
                     "h": ("N", "T", "H")},
                    {"shape": (4, 3), "units": 3}, _rnn_spec(kind), _rnn_draw(kind), _rnn_eval,
                    _rnn_mistakes() if kind == "rnn" else _gated_mistakes(kind))
          for kind in ("rnn", "lstm", "gru")),
        *(LayerKind(kind, ("dout", "x", "gamma"), ("dx", "dgamma", "dbeta"),
                    {"x": ("N", "D"), "dout": ("N", "D"), "out": ("N", "D"),
                     "xhat": ("N", "D"), "gamma": ("D",), "beta": ("D",)},
                    {"shape": (4,)}, _norm_spec(kind), _norm_draw, _norm_eval,
                    _norm_mistakes(axis))
          for kind, axis in (("batchnorm", 0), ("layernorm", 1))),
        LayerKind("embedding", ("dout", "x", "w"), ("dw",),
                  {"x": ("N", "L"), "w": ("V", "D"), "dout": ("N", "L", "D"),
                   "out": ("N", "L", "D")},
                  {"shape": (4,), "units": 3, "vocab": 6}, _embedding_spec, _embedding_draw,
                  _embedding_eval, _EMBEDDING_MISTAKES),
        LayerKind("dropout", ("dout", "mask"), ("dx",),
                  {"x": ("N", "D"), "dout": ("N", "D"), "out": ("N", "D"), "mask": ("N", "D"),
                   "keep": ("N", "D")},
                  {"shape": (6,), "rate": 0.3}, _dropout_spec, _dropout_draw, _dropout_eval,
                  _DROPOUT_MISTAKES),
    ]
    return {row.name: row for row in rows}


_ACTIVATION_KINDS = ("relu", "leaky_relu", "sigmoid", "tanh", "elu", "softplus", "gelu", "silu",
                     "softmax")
KINDS: dict[str, LayerKind] = _rows()
KINDS.update({kind: None for kind in _ACTIVATION_KINDS})  # type: ignore[misc]  # built on use


def kind_row(name: str) -> LayerKind:
    """The row of a kind (activations are built on first use)."""
    if name not in KINDS:
        raise VerifyInputError(f"unknown layer kind {name!r} (known: {', '.join(KINDS)})")
    if KINDS[name] is None:
        KINDS[name] = _activation_row(name)
    return KINDS[name]


# --------------------------------------------------------------------------- report


@dataclass
class LayerReport:
    """Result of :func:`verify_layer`; index it by gradient name (``dx``, ``dw``, ...)."""

    kind: str
    function: str
    batch_sizes: tuple[int, ...]
    points: int
    seed: int
    rtol: float
    grads: dict[str, ParamVerdict]
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.grads.values())

    @property
    def failed(self) -> list[str]:
        return [k for k, v in self.grads.items() if not v.passed]

    @property
    def codes(self) -> set[str]:
        return {d.code for v in self.grads.values() for d in v.diagnoses}

    def __getitem__(self, name: str) -> ParamVerdict:
        return self.grads[name]

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        sizes = ", ".join(map(str, self.batch_sizes))
        lines = [f"verify-layer {self.kind}: {self.function} against the registry's VJP "
                 f"({self.points} points x batch sizes {sizes}; seed {self.seed}; "
                 f"rtol {self.rtol:g})", ""]
        for v in self.grads.values():
            total = int(np.prod(v.shape)) if v.shape else 1
            status = "ok" if v.passed else "WRONG"
            wrong = "shape" if v.shape_error else f"{v.n_wrong}/{total} entries wrong"
            lines.append(f"  {v.name} {tuple(v.shape)}: {status}, {wrong}, "
                         f"max rel err {v.max_rel_err:.2e}")
        for v in self.grads.values():
            if v.passed:
                continue
            lines += ["", f"{v.name}:"]
            if v.shape_error:
                lines.append(f"  {v.shape_error}")
            for d in v.diagnoses:
                lines.append(f"  [{d.code}] {d.message}")
            if v.mismatch is not None and v.n_wrong:
                lines.append("  wrong entries (. right, X wrong, N NaN/inf):")
                lines += ["    " + line for line in v.mask_picture().splitlines()]
        lines += [f"note: {note}" for note in self.notes]
        lines += ["", "RESULT: CORRECT" if self.passed else
                  f"RESULT: WRONG ({', '.join(self.failed)})"]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "function": self.function, "passed": self.passed,
                "failed": self.failed, "batch_sizes": list(self.batch_sizes),
                "points": self.points, "seed": self.seed, "rtol": _jsonf(self.rtol),
                "notes": list(self.notes),
                "grads": {k: v.to_dict() for k, v in self.grads.items()}}


# --------------------------------------------------------------------------- argument conventions


def parse_args_spec(text: str | tuple | list) -> list:
    """``"dout,(x,w,b)"`` -> ``["dout", ("x", "w", "b")]`` (one level of grouping)."""
    if not isinstance(text, str):
        return [tuple(a) if isinstance(a, (tuple, list)) else str(a) for a in text]
    out: list = []
    group: list[str] | None = None
    token = ""
    for ch in text + ",":
        if ch == "(":
            if group is not None or token.strip():
                raise VerifyInputError(f"--args {text!r}: one level of parentheses only")
            group = []
        elif ch in ",)":
            name = token.strip()
            token = ""
            if group is not None:
                if name:
                    group.append(name)
                if ch == ")":
                    out.append(tuple(group))
                    group = None
            elif name:
                out.append(name)
            elif ch == ")":
                raise VerifyInputError(f"--args {text!r}: unbalanced parentheses")
        else:
            token += ch
    if group is not None:
        raise VerifyInputError(f"--args {text!r}: unbalanced parentheses")
    if not out:
        raise VerifyInputError(f"--args {text!r}: no arguments named")
    return out


def _names(text: str | tuple | list, what: str) -> list[str]:
    items = text.split(",") if isinstance(text, str) else list(text)
    items = [str(i).strip() for i in items if str(i).strip()]
    if not items:
        raise VerifyInputError(f"--{what} {text!r}: no names given")
    return items


def _parse_layout(layout, row: LayerKind) -> dict[str, list[int]]:
    """``{"w": "in,out"}`` -> ``{"w": [1, 0]}``: the transpose from canonical to the user's."""
    if layout is None:
        return {}
    if isinstance(layout, str):
        entries = {}
        for part in layout.split(";"):
            if not part.strip():
                continue
            name, sep, axes = part.partition("=")
            if not sep:
                raise VerifyInputError(f"--layout {layout!r}: expected ARRAY=AXIS,AXIS,...")
            entries[name.strip()] = axes
        layout = entries
    perms = {}
    for name, axes in layout.items():
        if name not in row.axes:
            raise VerifyInputError(f"--layout: {row.name} has no array {name!r} with axes "
                                   f"(arrays: {', '.join(row.axes)})")
        canon = [a.lower() for a in row.axes[name]]
        given = [a.strip().lower() for a in (axes.split(",") if isinstance(axes, str) else axes)]
        if sorted(given) != sorted(canon):
            raise VerifyInputError(f"--layout {name}={','.join(given)}: expected an order of "
                                   f"the axes {','.join(row.axes[name])}")
        perms[name] = [canon.index(a) for a in given]
    return perms


def _pair(value, what: str) -> tuple[int, int]:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if isinstance(value, (int, np.integer)):
        value = (value, value)
    try:
        pair = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise VerifyInputError(f"--{what} {value!r}: expected an integer or a pair") from None
    if len(pair) == 1:
        pair = pair * 2
    if len(pair) != 2:
        raise VerifyInputError(f"--{what} {value!r}: expected an integer or a pair")
    return pair  # type: ignore[return-value]


def _sizes(row: LayerKind, shape, units, kernel, stride, padding, reduction) -> Sizes:
    d = row.defaults
    if shape is None:
        shape = d["shape"]
    elif isinstance(shape, str):
        try:
            shape = tuple(int(v) for v in shape.split(",") if v.strip())
        except ValueError:
            raise VerifyInputError(f"--shape {shape!r}: expected integers like 3,8,8") from None
    shape = tuple(int(v) for v in (shape if isinstance(shape, (tuple, list)) else (shape,)))
    if len(shape) != len(d["shape"]):
        what = {1: "one size", 2: "T,D (steps, features)", 3: "C,H,W"}[len(d["shape"])]
        raise VerifyInputError(f"--shape {','.join(map(str, shape))}: {row.name} takes {what}")
    if min(shape) < 1 or math.prod(shape) > 4096:
        raise VerifyInputError("--shape: sizes must be at least 1 and at most 4096 entries "
                               "per sample")
    units = int(units if units is not None else d.get("units", 1))
    kern = _pair(kernel if kernel is not None else d.get("kernel", (1, 1)), "kernel")
    strd = _pair(stride, "stride") if stride is not None else \
        (kern if row.name.endswith("pool2d") else (1, 1))
    pad = _pair(padding if padding is not None else 0, "padding")
    if not 1 <= units <= 256 or min(kern) < 1 or min(strd) < 1 or min(pad) < 0 or \
            max(kern + strd + pad) > 64:
        raise VerifyInputError("--units, --kernel, --stride must be positive and --padding "
                               "non-negative (and small)")
    if reduction not in ("mean", "sum"):
        raise VerifyInputError(f"--reduction {reduction!r}: expected mean or sum")
    sizes = Sizes(shape, units, kern, strd, pad, reduction, vocab=int(d.get("vocab", 6)),
                  rate=float(d.get("rate", 0.3)))
    if len(shape) == 3:
        h, w = shape[1] + 2 * pad[0], shape[2] + 2 * pad[1]
        if kern[0] > h or kern[1] > w:
            raise VerifyInputError(f"--kernel {kern}: larger than the (padded) input {(h, w)}")
    return sizes


# --------------------------------------------------------------------------- calling the user


def _user_values(row: LayerKind, v: dict, extra: dict, sizes: Sizes,
                 perms: dict[str, list[int]]) -> dict:
    """Everything an argument may name, in the user's layout."""
    values = {}
    for name, array in {**v, **extra}.items():
        if isinstance(array, np.random.Generator):
            continue  # dropout's mask generator: the mask itself is passed
        array = np.asarray(array)
        if name in perms:
            array = array.transpose(perms[name])
        values[name] = np.ascontiguousarray(array).copy()
    (kh, kw), (sh, sw), (ph, pw) = sizes.kernel, sizes.stride, sizes.padding
    values["stride"] = sh if sh == sw else (sh, sw)
    values["pad"] = values["padding"] = ph if ph == pw else (ph, pw)
    values["kernel"] = values["pool_size"] = kh if kh == kw else (kh, kw)
    values["conv_param"] = {"stride": values["stride"], "pad": values["pad"]}
    values["pool_param"] = {"pool_height": kh, "pool_width": kw, "stride": values["stride"]}
    values["eps"] = NORM_EPS
    values["bn_param"] = {"mode": "train", "eps": NORM_EPS}
    values["ln_param"] = {"eps": NORM_EPS}
    values["vocab"] = sizes.vocab
    values["rate"], values["keep_prob"] = sizes.rate, 1 - sizes.rate
    if "y" in v:
        values["y"] = np.asarray(v["y"]).copy()
    return values


def _argument(name, values: dict, row: LayerKind):
    if isinstance(name, tuple):
        return tuple(_argument(n, values, row) for n in name)
    if name not in values:
        raise VerifyInputError(f"--args: {row.name} has no value {name!r} (names: "
                               f"{', '.join(sorted(values))})")
    value = values[name]
    return value.copy() if isinstance(value, np.ndarray) else \
        (dict(value) if isinstance(value, dict) else value)


def _call(fn: Callable, label: str, args: list, returns: list[str], values: dict,
          row: LayerKind) -> dict[str, np.ndarray]:
    call_args = [_argument(a, values, row) for a in args]
    try:
        out = fn(*call_args)
    except Exception as exc:
        from pathlib import Path

        if isinstance(exc, TypeError) and exc.__traceback__ is not None and \
                exc.__traceback__.tb_next is None:  # the call itself: the arguments do not fit
            names = ",".join(a if isinstance(a, str) else f"({','.join(a)})" for a in args)
            raise VerifyInputError(f"{label} cannot be called with the arguments {names}: "
                                   f"{exc}; name them with --args") from None
        path = Path(label.rpartition(":")[0]) if ":" in label else None
        raise VerifyInputError(f"{label} raised {_describe(exc, path)}") from None
    if isinstance(out, Mapping):
        wanted = [r for r in returns if r not in ("_", "loss")]
        missing = [r for r in wanted if r not in out]
        if missing:
            raise VerifyInputError(f"{label} returned a dict without {', '.join(missing)}")
        items = {r: out[r] for r in wanted}
    else:
        seq = list(out) if isinstance(out, (tuple, list)) else [out]
        if len(returns) == 1 and not isinstance(out, (tuple, list)):
            seq = [out]
        if len(seq) != len(returns):
            raise VerifyInputError(f"{label} returned {len(seq)} value(s), expected "
                                   f"{len(returns)} ({','.join(returns)}); set --returns")
        items = {r: value for r, value in zip(returns, seq) if r not in ("_", "loss")}
    grads = {}
    for name, value in items.items():
        try:
            array = np.asarray(value)
        except Exception:  # pragma: no cover - exotic objects
            array = np.asarray(value, dtype=object)
        if array.dtype.kind not in "biuf":
            raise VerifyInputError(f"{label}: returned {name} is not a real array "
                                   f"(dtype {array.dtype})")
        grads[name] = array.astype(np.float64)
    return grads


# --------------------------------------------------------------------------- diagnosis


def _entry_close(x: np.ndarray, y: np.ndarray, tol: float) -> np.ndarray:
    """Per-entry agreement, the rule of :func:`symgrad.verify._compare`."""
    scale = float(np.max(np.abs(y), initial=0.0))
    with np.errstate(all="ignore"):
        rel = np.abs(x - y) / (np.abs(y) + 1e-2 * scale + 1e-300)
    return np.isfinite(x) & (rel <= tol)


def _generic(name: str, n: int) -> list[tuple[str, str, Callable]]:
    out = [("sign_flipped", f"{name} has the wrong sign", lambda e: -e),
           ("scaled", f"{name} is twice the reference (x2)", lambda e: 2 * e),
           ("scaled", f"{name} is half the reference (x1/2)", lambda e: e / 2)]
    if n > 1:
        out += [("scaled", f"{name} is N={n} times the reference (sum instead of mean over "
                 "the batch)", lambda e: n * e),
                ("scaled", f"{name} is the reference divided by N={n} (mean instead of sum "
                 "over the batch)", lambda e: e / n)]
    out.append(("transposed", f"{name} is transposed", lambda e: e.T if e.ndim == 2 else None))
    return out


def _fits(got: np.ndarray, cand, expected: np.ndarray, tol: float) -> int:
    """How many entries the candidate explains (differs from the reference there), or 0."""
    if cand is None:
        return 0
    cand = np.asarray(cand, dtype=np.float64)
    if cand.shape != got.shape or not np.all(np.isfinite(cand)):
        return 0
    if not _entry_close(got, cand, tol).all():
        return 0
    if cand.shape != expected.shape:
        return int(cand.size)
    return int((~_entry_close(cand, expected, tol)).sum())


def _merge(per_size: list[ParamVerdict]) -> ParamVerdict:
    """One verdict over every batch size; its mask is that of the largest failing batch.

    A gradient of a batch-shaped array (dx) has one shape per batch size, so masks
    are not united across sizes; the mask shown, its count and the message agree.
    """
    failing = [v for v in per_size if not v.passed]
    shown = failing[-1] if failing else per_size[-1]
    out = ParamVerdict(shown.name, shown.shape, passed=not failing,
                       max_abs_err=max(v.max_abs_err for v in per_size),
                       max_rel_err=max(v.max_rel_err for v in per_size),
                       mismatch=shown.mismatch, nonfinite=shown.nonfinite,
                       failed_evaluations=sum(v.failed_evaluations for v in per_size),
                       evaluations=sum(v.evaluations for v in per_size),
                       worst=shown.worst,
                       shape_error=next((v.shape_error for v in failing if v.shape_error),
                                        None))
    return out


def _choose(tally: dict, failures: int, sizes_failed: set, verdict: ParamVerdict
            ) -> list[Diagnosis]:
    """The mistake that fits every failing evaluation, on enough entries at two batch sizes."""
    for (code, message), (count, sizes_fit, entries) in tally.items():
        strong = {n for n, k in sizes_fit.items() if k >= MIN_ENTRIES}
        if count == failures and len(strong) >= 2:
            return [Diagnosis(code, f"{verdict.name}: {message}",
                              {"batch_sizes": sorted(strong), "entries": entries})]
    total = int(np.prod(verdict.shape)) if verdict.shape else 1
    if verdict.shape_error:
        text = f"{verdict.name}: no known pattern; {verdict.shape_error}"
    else:
        text = (f"{verdict.name}: no known pattern; {verdict.n_wrong} of {total} entries "
                "wrong (see the mask)")
    if len(sizes_failed) < 2:
        text += "; a diagnosis needs failures at two batch sizes"
    return [Diagnosis("no_known_pattern", text, {"wrong": verdict.n_wrong})]


# --------------------------------------------------------------------------- verify


def verify_layer(kind: str, fn: Callable, *, args=None, returns=None, layout=None,
                 shape=None, units=None, kernel=None, stride=None, padding=None,
                 reduction: str = "mean", batch_sizes=(3, 5), points: int = 2, seed: int = 0,
                 rtol: float | None = None, label: str | None = None) -> LayerReport:
    """Compare ``fn``'s gradients with the registry's VJP of layer ``kind``.

    See the module docstring for the conventions; bad input raises
    :class:`~symgrad.verify.VerifyInputError` (one line).
    """
    row = kind_row(kind)
    sizes = _sizes(row, shape, units, kernel, stride, padding, reduction)
    call_args = parse_args_spec(args) if args is not None else list(row.args)
    rets = _names(returns, "returns") if returns is not None else list(row.returns)
    perms = _parse_layout(layout, row)
    batch_sizes = tuple(int(b) for b in batch_sizes)
    if not batch_sizes or min(batch_sizes) < 1 or max(batch_sizes) > 10_000 or points < 1:
        raise VerifyInputError("batch sizes and points must be at least 1")
    label = label or getattr(fn, "__qualname__", repr(fn))
    try:
        layer = _layer((row.name, sizes), lambda: row.spec(sizes))
    except ValueError as exc:  # SpecError: sizes the spec refuses
        raise VerifyInputError(f"{row.name}: {str(exc).splitlines()[0]}") from None
    grad_names = [r for r in rets if r not in ("_", "loss")]
    if not grad_names:
        raise VerifyInputError("--returns names no gradient to compare")
    rng = np.random.default_rng(seed)
    verdicts: dict[str, ParamVerdict] = {}
    tallies: dict[str, dict] = {}
    failures: dict[str, int] = {}
    sizes_failed: dict[str, set] = {}
    tol = rtol if rtol is not None else 1e-6
    for n in batch_sizes:
        for point in range(points):
            v = row.draw(rng, sizes, n)
            extra, reference = row.evaluate(layer, v, sizes)
            unknown = [g for g in grad_names if g not in reference]
            if unknown:
                raise VerifyInputError(f"--returns: {row.name} has no gradient "
                                       f"{', '.join(unknown)} (it has {', '.join(reference)})")
            values = _user_values(row, v, extra, sizes, perms)
            got = _call(fn, label, call_args, rets, values, row)
            full = {**v, **extra}
            for g in grad_names:
                base = g[1:]
                perm = perms.get(base)
                expected = reference[g] if perm is None else reference[g].transpose(perm)
                verdict = verdicts.setdefault((g, n), ParamVerdict(g, tuple(expected.shape)))
                verdict.evaluations += 1
                if not _compare(verdict, got[g], np.asarray(expected, np.float64), tol, point, n):
                    continue
                failures[g] = failures.get(g, 0) + 1
                sizes_failed.setdefault(g, set()).add(n)
                tally = tallies.setdefault(g, {})
                candidates = []
                for m in row.mistakes:
                    if m.grad == g:
                        cand = m.compute(full, reference, sizes)
                        if cand is not None and perm is not None and \
                                np.ndim(cand) == len(perm):
                            cand = np.asarray(cand).transpose(perm)
                        candidates.append((m.code, m.message, cand))
                for code, message, make in _generic(g, n):
                    candidates.append((code, message, make(expected)))
                for code, message, cand in candidates:
                    k = _fits(got[g], cand, expected, tol)
                    if not k:
                        continue
                    entry = tally.setdefault((code, message), [0, {}, 0])
                    entry[0] += 1
                    entry[1][n] = min(entry[1].get(n, k), k)
                    entry[2] = max(entry[2], k)
    merged = {g: _merge([verdicts[(g, n)] for n in dict.fromkeys(batch_sizes)])
              for g in grad_names}
    for g, verdict in merged.items():
        if not verdict.passed:
            verdict.diagnoses = _choose(tallies.get(g, {}), failures.get(g, 0),
                                        sizes_failed.get(g, set()), verdict)
    notes = []
    if len(set(batch_sizes)) < 2:
        notes.append("one batch size only: mistakes are named only when they fit at two")
    return LayerReport(row.name, label, batch_sizes, points, seed, tol, merged, notes)


# --------------------------------------------------------------------------- command line


def add_arguments(parser) -> None:
    """Arguments of ``symgrad verify-layer``."""
    from .cli import DEFAULT_TIMEOUT, _seconds, int_at_least, seed_type

    parser.add_argument("kind", help="dense, relu, sigmoid, tanh, leaky_relu, elu, softplus, "
                        "gelu, silu, softmax, softmax_ce, conv2d, maxpool2d, avgpool2d, rnn, "
                        "lstm, gru, batchnorm, layernorm, embedding, dropout")
    parser.add_argument("--grad", required=True, metavar="FILE.py:FUNCTION",
                        help="the hand-written backward function")
    parser.add_argument("--args", metavar="NAMES",
                        help="its arguments in order, e.g. 'dout,(x,w,b)' (a group is a tuple)")
    parser.add_argument("--returns", metavar="NAMES",
                        help="what it returns, in order, e.g. 'dx,dw,db' ('_' skips a value)")
    parser.add_argument("--layout", action="append", default=[], metavar="ARRAY=AXES",
                        help="how an array is stored, e.g. 'w=in,out' or 'w=kh,kw,C,F' "
                             "(repeatable)")
    parser.add_argument("--shape", help="input shape per sample: D, T,D (recurrent), or C,H,W")
    parser.add_argument("--units", type=int_at_least(1, 256),
                        help="output units (dense) or filters (conv2d)")
    parser.add_argument("--kernel", help="window size: k or kh,kw")
    parser.add_argument("--stride", help="stride: s or sh,sw")
    parser.add_argument("--padding", help="zero padding: p or ph,pw")
    parser.add_argument("--reduction", choices=["mean", "sum"], default="mean",
                        help="softmax_ce: mean (default) or sum over the batch")
    parser.add_argument("--batch-sizes", default="3,5",
                        help="comma-separated batch sizes (default 3,5)")
    parser.add_argument("--points", type=int_at_least(1, 1000), default=2)
    parser.add_argument("--seed", type=seed_type, default=0)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--timeout", type=_seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"give up (exit 2) after this long (default {DEFAULT_TIMEOUT:g})")


def run(args) -> int:
    """``symgrad verify-layer``: exit 0 correct, 1 wrong, 2 bad input."""
    from .cli import UsageError, user_code
    from .verify import load_grad_function

    try:
        sizes = tuple(int(s) for s in str(args.batch_sizes).split(",") if s.strip())
    except ValueError:
        raise UsageError(f"--batch-sizes {args.batch_sizes!r}: expected integers like 2,3") \
            from None
    layout = ";".join(args.layout) if args.layout else None
    try:
        with user_code(args.grad, args.timeout, passthrough=(VerifyInputError,)):
            function, label = load_grad_function(args.grad)
            report = verify_layer(args.kind, function, args=args.args, returns=args.returns,
                                  layout=layout, shape=args.shape, units=args.units,
                                  kernel=args.kernel, stride=args.stride,
                                  padding=args.padding, reduction=args.reduction,
                                  batch_sizes=sizes, points=args.points, seed=args.seed,
                                  label=label)
    except VerifyInputError as exc:
        raise UsageError(str(exc)) from None
    print(json.dumps(report.to_dict(), indent=2) if args.json else str(report))
    return 0 if report.passed else 1
