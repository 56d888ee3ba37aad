"""The proof: the layer-level derivation equals sympy.diff of the scalar loss.

For every activation x every loss x reduction x weight decay (a table, as
JAX's lax_autodiff_test does), plus skip connections, input groups, a layer
with two consumers, bias-free layers and random small architectures, the
gradient that :mod:`symgrad.derive` assembles layer by layer (evaluated by
:func:`symgrad.interpret.evaluate` in exact SymPy arithmetic) is compared with
``sympy.diff`` of the loss written out in scalars.

The oracle is written here, independently: a scalar forward pass with
``sympy.exp``, ``sympy.tanh``, ... from the textbook definitions of each
activation and loss, keyed by the spec's kind names.  It reads only the
network's plain description (units, sources, bias flags, kinds, reduction,
decay) and uses no symgrad module to build or differentiate the loss.

Points are random rationals in [-1, 1] (targets in (0, 1), one-hot rows for
cross-entropy); networks with a kink (relu, leaky_relu, elu) are re-drawn
until every pre-activation is at least 1/20 from 0.  Networks built only
from rational operations compare exactly; the others compare to 1e-40 at 50
significant digits.
"""

from __future__ import annotations

import functools
import random
import time
import zlib

import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from symgrad.derive import derive
from symgrad.expand import input_symbols, per_weight_gradients, target_symbols, weight_symbols
from symgrad.interpret import evaluate
from symgrad.ops.loss import softmax_cross_entropy_lemma as _softmax_cross_entropy_lemma
from symgrad.spec import Network, NetworkSpec

DECAY = 0.25
SLOPE = 0.2
ALPHA = 1.5
MISH = "x*tanh(log(1+exp(x)))"
DIGITS = 70
QUARTIC = "(y-t)**4/4"

# ----------------------------------------------------------------------------- the oracle


def _relu(z):
    return sp.Piecewise((z, z > 0), (0, True))


#: kind -> (what the spec is given, scalar definition or None for softmax, kinked, rational)
ACTIVATIONS = {
    "identity": ("identity", lambda z: z, False, True),
    "sigmoid": ("sigmoid", lambda z: 1 / (1 + sp.exp(-z)), False, False),
    "tanh": ("tanh", lambda z: (sp.exp(z) - sp.exp(-z)) / (sp.exp(z) + sp.exp(-z)), False, False),
    "relu": ("relu", _relu, True, True),
    "leaky_relu": ({"kind": "leaky_relu", "slope": SLOPE},
                   lambda z: sp.Piecewise((z, z > 0), (sp.Rational(1, 5) * z, True)), True, True),
    "softplus": ("softplus", lambda z: sp.log(1 + sp.exp(z)), False, False),
    "elu": ({"kind": "elu", "alpha": ALPHA},
            lambda z: sp.Piecewise((z, z > 0), (sp.Rational(3, 2) * (sp.exp(z) - 1), True)),
            True, False),
    "gelu": ("gelu", lambda z: z / 2 * (1 + sp.erf(z / sp.sqrt(2))), False, False),
    "silu": ("silu", lambda z: z * (1 / (1 + sp.exp(-z))), False, False),
    "softmax": ("softmax", None, False, False),
    "mish": ({"expr": MISH}, lambda z: z * sp.tanh(sp.log(1 + sp.exp(z))), False, False),
}

#: loss kind -> (per-output loss l(y, t, K), rational)
LOSSES = {
    "sse": (lambda y, t, k: (y - t) ** 2 / 2, True),
    "mse": (lambda y, t, k: (y - t) ** 2 / k, True),
    "bce": (lambda y, t, k: -(t * sp.log(y) + (1 - t) * sp.log(1 - y)), False),
    "cross_entropy": (lambda y, t, k: -t * sp.log(y), False),
    "quartic": (lambda y, t, k: (y - t) ** 4 / 4, True),
}


def _kind(activation) -> str:
    """The key of ACTIVATIONS for a spec's activation (custom ones by their text)."""
    if activation.kind == "custom":
        assert activation.expr == MISH, activation.expr
        return "mish"
    params = dict(activation.parameters)
    assert params.get("slope", SLOPE) == SLOPE and params.get("alpha", ALPHA) == ALPHA
    return activation.kind


def _loss_kind(spec: NetworkSpec) -> str:
    if spec.loss.kind == "custom":
        assert spec.loss.expr == QUARTIC
        return "quartic"
    return spec.loss.kind


def oracle_loss(spec: NetworkSpec, X: sp.Matrix, T: sp.Matrix, params: dict,
                scale: sp.Expr | None = None, decay: sp.Expr | None = None):
    """The scalar loss from the spec's description; also the pre-activations.

    ``scale`` (1 or 1/N) and ``decay`` (lambda) default to the spec's
    reduction and weight decay; the table passes symbols for both so that one
    expression is the loss of all four of its variants.
    """
    groups, start = {}, 0
    for group, size in spec.inputs:
        groups[group], start = (start, start + size), start + size
    pre_activations = []
    total = 0
    for n in range(X.rows):
        row = list(X.row(n))
        outputs = {"input": row}
        for group, (lo, hi) in groups.items():
            outputs[group] = row[lo:hi]
        for index, layer in enumerate(spec.layers, start=1):
            fan_in = [v for source in layer.sources for v in outputs[source]]
            W = params[f"W{index}"]
            z = [sum((W[j, k] * fan_in[k] for k in range(len(fan_in))), sp.S.Zero)
                 + (params[f"b{index}"][j] if layer.bias else 0) for j in range(layer.units)]
            pre_activations += z
            f = ACTIVATIONS[_kind(layer.activation)][1]
            if f is None:
                denominator = sum(sp.exp(u) for u in z)
                a = [sp.exp(u) / denominator for u in z]
            else:
                a = [f(u) for u in z]
            outputs[layer.name] = a
        y = outputs[spec.layers[-1].name]
        per_output = LOSSES[_loss_kind(spec)][0]
        total += sum(per_output(y[j], T[n, j], len(y)) for j in range(len(y)))
    if scale is None:
        scale = sp.Rational(1, X.rows) if spec.loss.reduction == "mean" else sp.S.One
    if decay is None:
        decay = sp.nsimplify(spec.loss.weight_decay)
    total = scale * total + decay / 2 * sum(w**2 for name, W in params.items()
                                            if name.startswith("W") for w in W)
    return total, pre_activations


def parameter_shapes(spec: NetworkSpec) -> dict[str, tuple[int, int]]:
    sizes = dict(spec.inputs)
    if len(spec.inputs) > 1:
        sizes["input"] = spec.n_inputs
    shapes = {}
    for index, layer in enumerate(spec.layers, start=1):
        shapes[f"W{index}"] = (layer.units, sum(sizes[s] for s in layer.sources))
        if layer.bias:
            shapes[f"b{index}"] = (layer.units, 1)
        sizes[layer.name] = layer.units
    return shapes


def rational(rng: random.Random, low=-1, high=1, denominator=32) -> sp.Rational:
    return sp.Rational(rng.randint(low * denominator, high * denominator), denominator)


def draw_point(spec: NetworkSpec, rng: random.Random, batch: int):
    X = sp.Matrix(batch, spec.n_inputs, lambda i, j: rational(rng))
    if spec.loss.kind == "cross_entropy":
        T = sp.zeros(batch, spec.n_outputs)
        for n in range(batch):
            T[n, rng.randrange(spec.n_outputs)] = 1
    else:
        T = sp.Matrix(batch, spec.n_outputs, lambda i, j: sp.Rational(rng.randint(1, 31), 32))
    values = {name: sp.Matrix(*shape, lambda i, j: rational(rng))
              for name, shape in parameter_shapes(spec).items()}
    return X, T, values


def is_rational(spec: NetworkSpec) -> bool:
    return all(ACTIVATIONS[_kind(layer.activation)][3] for layer in spec.layers) \
        and LOSSES[_loss_kind(spec)][1]


def kinked(spec: NetworkSpec) -> bool:
    return any(ACTIVATIONS[_kind(layer.activation)][2] for layer in spec.layers)


def numeric(value: sp.Expr, exact: bool) -> sp.Expr:
    """Collapse a value at Float points: constants such as sqrt(2) and pi become Floats."""
    if exact:
        return value
    return value.replace(
        lambda e: isinstance(e, (sp.Pow, sp.NumberSymbol)) and e.is_number and not e.is_Rational,
        lambda e: sp.Float(e.evalf(DIGITS), DIGITS))


def same(a, b, exact: bool) -> bool:
    if exact:  # rational networks: both sides are exact rationals
        return a.is_Rational and b.is_Rational and a == b
    return abs(sp.N(a, 50) - sp.N(b, 50)) < 1e-40


def draw_away_from_kinks(spec: NetworkSpec, rng: random.Random, batch: int):
    """A random point; for networks with a kink, every pre-activation >= 1/20 from 0."""
    for _ in range(20):
        X, T, values = draw_point(spec, rng, batch)
        if not kinked(spec):
            return X, T, values
        _, pre = oracle_loss(spec, X, T, values)
        if all(abs(z) > sp.Rational(1, 20) for z in pre):
            return X, T, values
    pytest.fail("could not draw a point away from the kinks")  # pragma: no cover


def oracle(spec: NetworkSpec, X, T, values, exact: bool, scale=None, decay=None):
    """The loss and ``sympy.diff`` of it by every parameter, at the point.

    The loss is built in plain symbols for the parameters (inputs and
    targets are numbers), differentiated symbolically once per parameter,
    then evaluated at the point: exactly for rational networks, at 70
    digits for transcendental ones.
    """
    symbols = {name: sp.Matrix(*value.shape, lambda i, j, n=name: sp.Symbol(f"{n}_{i}_{j}"))
               for name, value in values.items()}
    loss, _ = oracle_loss(spec, X, T, symbols, scale, decay)
    point = {s: (v if exact else sp.Float(v, DIGITS))
             for name in symbols for s, v in zip(symbols[name], values[name])}
    gradients = {name: sp.Matrix(*matrix.shape, lambda i, j, m=matrix: numeric(
        sp.diff(loss, m[i, j]).xreplace(point), exact)) for name, matrix in symbols.items()}
    return numeric(loss.xreplace(point), exact), gradients


def check(spec: NetworkSpec, X, T, values, exact: bool, loss, gradients) -> None:
    """The derivation, evaluated at the point, against the oracle's values."""
    derivation = derive(spec)
    given_values = {"X": X, "T": T, **values}
    textbook = evaluate(derivation, given_values, exact=exact, digits=DIGITS)
    stable = evaluate(derivation, given_values, form="code", exact=exact, digits=DIGITS)
    assert same(textbook["L"][0, 0], loss, exact)
    assert set(derivation.gradients) == set(gradients)
    for name, target in derivation.gradients.items():
        layer_level, expected = textbook[target], gradients[name]
        assert layer_level.shape == expected.shape, name
        for i in range(expected.rows):
            for j in range(expected.cols):
                assert same(layer_level[i, j], expected[i, j], exact), \
                    (name, i, j, layer_level[i, j], expected[i, j])
    # the stable code form of every step equals the textbook form
    for step in derivation.steps:
        a, b = textbook[step.target], stable[step.target]
        assert a.shape == b.shape
        for u, v in zip(a, b):
            assert same(u, v, exact), (step.number, step.target)


def prove(spec: NetworkSpec, seed: str | int, batch: int = 2) -> None:
    """Check every gradient of ``spec`` against sympy.diff at a random point."""
    rng = random.Random(zlib.crc32(str(seed).encode()))
    X, T, values = draw_away_from_kinks(spec, rng, batch)
    exact = is_rational(spec)
    check(spec, X, T, values, exact, *oracle(spec, X, T, values, exact))


# ----------------------------------------------------------------------------- the table

OUTPUT_FOR_LOSS = {"bce": "sigmoid", "cross_entropy": "softmax"}
SPEC_LOSS = {"quartic": {"expr": QUARTIC}}

TABLE = [(activation, loss, reduction, decay)
         for activation in ACTIVATIONS
         for loss in LOSSES
         for reduction in ("sum", "mean")
         for decay in (False, True)]


def table_network(activation: str, loss: str, reduction: str, decay: bool) -> NetworkSpec:
    given_activation = ACTIVATIONS[activation][0]
    output = OUTPUT_FOR_LOSS.get(loss, activation)
    net = (Network(f"{activation}-{loss}", inputs=1)
           .dense(2, given_activation)
           .dense(2, ACTIVATIONS[output][0]))
    kw = SPEC_LOSS.get(loss, {"kind": loss})
    return net.loss(reduction=reduction, weight_decay=DECAY if decay else 0.0, **kw).build()


SCALE, LAMBDA = sp.Symbol("scale"), sp.Symbol("lam")
TABLE_BATCH = 2


@functools.lru_cache(maxsize=None)
def table_oracle(activation: str, loss: str):
    """One point and one symbolic gradient for the four reduction/decay variants.

    The oracle's loss is ``scale * data + lam/2 sum w**2`` with ``scale`` and
    ``lam`` symbols: at the point every derivative collapses to
    ``c * scale + lam * w``, and each variant substitutes its own values.
    """
    spec = table_network(activation, loss, "sum", False)
    rng = random.Random(zlib.crc32(f"{activation}-{loss}".encode()))
    X, T, values = draw_away_from_kinks(spec, rng, TABLE_BATCH)
    exact = is_rational(spec)
    return X, T, values, exact, oracle(spec, X, T, values, exact, SCALE, LAMBDA)


@pytest.mark.parametrize("activation,loss,reduction,decay", TABLE,
                         ids=[f"{a}-{lo}-{r}-{'decay' if d else 'nodecay'}"
                              for a, lo, r, d in TABLE])
def test_layer_gradient_equals_scalar_diff(activation, loss, reduction, decay):
    spec = table_network(activation, loss, reduction, decay)
    X, T, values, exact, (loss_value, gradients) = table_oracle(activation, loss)
    variant = {SCALE: sp.Rational(1, TABLE_BATCH) if reduction == "mean" else sp.S.One,
               LAMBDA: sp.nsimplify(DECAY) if decay else sp.S.Zero}

    def at(value):
        return numeric(sp.expand(value.xreplace(variant)), exact)

    check(spec, X, T, values, exact, at(loss_value),
          {name: matrix.applyfunc(at) for name, matrix in gradients.items()})


def test_table_size():
    assert len(TABLE) == 11 * 5 * 2 * 2


# ----------------------------------------------------------------------------- structures

STRUCTURES = {
    "skip": Network("skip", inputs=2)
    .dense(3, "tanh", name="hidden")
    .dense(2, "sigmoid", sources=["input", "hidden"]).loss("sse"),
    "skip_relu_mean_decay": Network("skip2", inputs=3)
    .dense(2, "relu", name="h1")
    .dense(2, "tanh", name="h2")
    .dense(2, "identity", sources=["input", "h1", "h2"])
    .loss("mse", reduction="mean", weight_decay=DECAY),
    "groups": Network("groups", inputs={"a": 2, "b": 2})
    .dense(2, "tanh", name="ha", sources=["a"])
    .dense(2, "sigmoid", name="hb", sources=["b"])
    .dense(3, "softmax", sources=["ha", "hb", "a"]).loss("cross_entropy", weight_decay=DECAY),
    "groups_whole_input": Network("groups2", inputs={"a": 1, "b": 2})
    .dense(2, "relu", name="hb", sources=["b"])
    .dense(2, "sigmoid", sources=["input", "hb"]).loss("bce", reduction="mean"),
    "two_consumers": Network("fork", inputs=2)
    .dense(3, "tanh", name="h1")
    .dense(2, "sigmoid", name="h2", sources=["h1"])
    .dense(2, "identity", sources=["h1", "h2"]).loss("sse"),
    "no_bias": Network("nobias", inputs=2)
    .dense(3, "tanh", bias=False)
    .dense(2, "identity", bias=False).loss("sse", weight_decay=DECAY),
    "mixed_bias": Network("mixed", inputs=2)
    .dense(2, "relu", bias=False)
    .dense(2, "softmax").loss("cross_entropy", reduction="mean"),
    "deep_softmax_hidden": Network("deep", inputs=2)
    .dense(2, "softmax")
    .dense(2, "gelu")
    .dense(2, "softplus").loss(expr=QUARTIC),
    "single_units": Network("thin", inputs=1)
    .dense(1, "sigmoid").dense(1, "tanh").dense(1, "sigmoid").loss("bce"),
}


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_structures(name):
    prove(STRUCTURES[name].build(), seed=name, batch=3 if name in ("skip", "no_bias") else 2)


# ----------------------------------------------------------------------------- random networks

HIDDEN = ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "softplus", "elu", "gelu",
          "silu", "softmax", "mish"]


@st.composite
def architectures(draw):
    depth = draw(st.integers(1, 3))
    n_inputs = draw(st.integers(1, 3))
    net = Network("random", inputs=n_inputs)
    names = ["input"]
    for index in range(depth):
        last = index == depth - 1
        units = draw(st.integers(1, 3))
        if last:
            loss = draw(st.sampled_from(sorted(LOSSES)))
            activation = OUTPUT_FOR_LOSS.get(loss) or draw(st.sampled_from(HIDDEN))
            if activation == "softmax" and units < 2:
                units = 2
        else:
            activation = draw(st.sampled_from(HIDDEN))
            if activation == "softmax" and units < 2:
                units = 2
        sources = [names[-1]]
        if index > 0 and draw(st.booleans()):
            sources.insert(0, draw(st.sampled_from(names[:-1])))  # a skip connection
        name = f"h{index + 1}"
        net.dense(units, ACTIVATIONS[activation][0], name=name, sources=sources,
                  bias=draw(st.booleans()) or last)
        names.append(name)
    kw = SPEC_LOSS.get(loss, {"kind": loss})
    net.loss(reduction=draw(st.sampled_from(["sum", "mean"])),
             weight_decay=draw(st.sampled_from([0.0, DECAY])), **kw)
    return net.build(), draw(st.integers(0, 10**6))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(architectures())
def test_random_architectures(case):
    spec, seed = case
    prove(spec, seed=seed, batch=2)


# ----------------------------------------------------------------------------- per-weight mode


def _per_weight_at_point(spec: NetworkSpec, batch: int, seed: str):
    rng = random.Random(zlib.crc32(seed.encode()))
    X, T, values = draw_point(spec, rng, batch)
    grads = per_weight_gradients(spec, samples=batch, simplify=False)
    point = dict(zip(input_symbols(spec, batch), X)) | dict(zip(target_symbols(spec, batch), T))
    for name, matrix in weight_symbols(spec).items():
        point |= dict(zip(matrix, values[name]))
    point[sp.Symbol("weight_decay", nonnegative=True)] = sp.nsimplify(spec.loss.weight_decay)
    layer_level = evaluate(derive(spec), {"X": X, "T": T, **values})
    return grads, point, layer_level


@pytest.mark.parametrize("spec", [
    Network("xor", inputs=2).dense(2, "sigmoid").dense(1, "sigmoid").loss("sse").build(),
    Network("sm", inputs=2).dense(3, "tanh").dense(3, "softmax")
    .loss("cross_entropy", reduction="mean", weight_decay=DECAY).build(),
], ids=["xor", "softmax"])
def test_per_weight_agrees_with_layer_level(spec):
    grads, point, layer_level = _per_weight_at_point(spec, 2, spec.name)
    derivation = derive(spec)
    for name, target in derivation.gradients.items():
        for a, b in zip(grads[name], layer_level[target]):
            assert same(a.xreplace(point), b, False), name


def test_per_weight_single_sample_is_batch_of_one():
    spec = Network("xor", inputs=2).dense(2, "sigmoid").dense(1, "sigmoid").loss("sse").build()
    single = per_weight_gradients(spec, simplify=False)
    batch = per_weight_gradients(spec, samples=1, simplify=False)
    rename = dict(zip(input_symbols(spec, 1), input_symbols(spec))) | \
        dict(zip(target_symbols(spec, 1), target_symbols(spec)))
    for name in single:
        assert (batch[name].xreplace(rename) - single[name]).is_zero_matrix


# ----------------------------------------------------------------------------- lemma


def test_softmax_cross_entropy_lemma_is_proved():
    lemma = _softmax_cross_entropy_lemma()
    assert lemma["proved"] is True
    assert lemma["outputs"] == 3
    spec = Network(inputs=2).dense(3, "softmax").loss("cross_entropy").build()
    step = derive(spec).step("delta1")
    assert step.rule == "fused_softmax" and step.detail["lemma"]["proved"]


# ----------------------------------------------------------------------------- derivation cost


def _cost(spec: NetworkSpec):
    derivation = derive(spec)
    ops = [sp.count_ops(step.expr) for step in derivation.steps]
    code_ops = [sp.count_ops(step.code_expr) for step in derivation.steps]
    return len(derivation.steps), [s.rule for s in derivation.steps], ops, code_ops


def test_derivation_does_not_grow_with_width():
    wide = (Network("mnist", inputs=784).dense(256, "relu").dense(128, "relu")
            .dense(10, "softmax").loss("cross_entropy").build())
    narrow = (Network("small", inputs=4).dense(4, "relu").dense(4, "relu")
              .dense(4, "softmax").loss("cross_entropy").build())
    assert _cost(wide) == _cost(narrow)


def test_derivation_grows_linearly_with_depth():
    def deep(n: int) -> NetworkSpec:
        net = Network("deep", inputs=3)
        for _ in range(n):
            net.dense(3, "tanh")
        return net.dense(2, "sigmoid").loss("sse").build()

    steps = {n: _cost(deep(n))[0] for n in (10, 20, 50)}
    per_layer = (steps[50] - steps[20]) / 30
    assert per_layer == (steps[20] - steps[10]) / 10
    assert steps[50] == steps[10] + 40 * per_layer
    assert per_layer <= 8
    start = time.perf_counter()
    derive(deep(50))
    assert time.perf_counter() - start < 60  # generous: a sanity bound, not a benchmark
