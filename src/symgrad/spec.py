"""Network descriptions: the TOML spec file and the Python API.

Contract: both front ends produce one validated, immutable
:class:`NetworkSpec`.  :func:`load_spec` reads a TOML file with the standard
library's ``tomllib``; :class:`Network` builds the same object in Python.
Every problem raises :class:`SpecError`, whose message is one line naming
the file, the line (found in the TOML text), the field and what is wrong,
with the nearest valid name when a key or a primitive is misspelt.  Custom
expressions are parsed by :mod:`symgrad.exprparse`, never evaluated.

>>> net = Network("xor", inputs=2).dense(2, "sigmoid").dense(1, "sigmoid").loss("sse")
>>> spec = net.build()
>>> [layer.units for layer in spec.layers], spec.loss.kind
([2, 1], 'sse')

Convolutional networks
----------------------
``inputs = { shape = [C, H, W] }`` declares image inputs (data ``X`` of shape
``(N, C, H, W)``); :attr:`NetworkSpec.input_shape` is then ``(C, H, W)`` and
:attr:`NetworkSpec.inputs` stays ``(("input", C*H*W),)``.  Layer kinds
(``kind``, default ``"dense"``):

* ``conv2d``: ``filters``, ``kernel`` (int or ``[kh, kw]``), ``stride = 1``
  and ``padding = 0`` (int or pair; ``padding = "same"`` needs an odd kernel and
  stride 1), ``activation`` (default identity, not softmax), ``bias``,
  ``name``, ``init``;
* ``maxpool2d`` / ``avgpool2d``: ``size`` (int or pair), ``stride = size``;
* ``flatten``: (C, H, W) to C*H*W, in C order.

Conv and pooling layers read the previous layer (no ``from``), which must have
a (C, H, W) output; a dense layer needs flat inputs (add a flatten layer), and
the last layer must be dense.  Output sizes are ``(in + 2*pad - k) // stride + 1``
and must divide exactly.  Every :class:`Layer` records its per-sample output
``shape``: ``(units,)`` for dense and flatten, ``(C, H, W)`` for conv and pooling;
``units`` is the filters of a conv layer, the channels of a pooling layer and
C*H*W for flatten.

>>> spec = (Network("lenet", inputs=(1, 8, 8)).conv2d(6, 3, "tanh", padding=1)
...         .maxpool2d(2).flatten().dense(10, "softmax").loss("cross_entropy").build())
>>> [(layer.kind, layer.shape) for layer in spec.layers]
[('conv2d', (6, 8, 8)), ('maxpool2d', (6, 4, 4)), ('flatten', (96,)), ('dense', (10,))]
>>> spec.input_shape, spec.n_inputs, spec.n_outputs
((1, 8, 8), 64, 10)

Limits (hostile files): the file is a regular file of at most 1 MiB of UTF-8,
nested at most 64 brackets deep; names are identifiers of at most 64
characters; sizes and every number are bounded (see ``MAX_*`` below).
"""

from __future__ import annotations

import difflib
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sympy as sp

from . import primitives
from .errors import BadInput
from .exprparse import ExpressionError

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# Characters that could break an error message out of its one line (or forge a
# terminal escape): C0/C1 controls, line/paragraph separators, bidi and
# zero-width marks, the byte-order mark.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def _printable(text: str) -> str:
    """``text`` with control characters written as escapes (``\\n``, ``\\x1b``)."""
    return _UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], str(text))


class SpecError(BadInput):
    """A bad network description: one line naming file, line and field.

    User-provided text is rendered with control characters escaped, so the
    message is always exactly one line:

    >>> str(SpecError("name 'a\\nsymgrad: ok' is bad", field="layers[1].name", path="n.toml", line=3))
    "n.toml:3: layers[1].name: name 'a\\\\nsymgrad: ok' is bad"
    """

    def __init__(self, message: str, *, field: str = "", path: str | None = None,
                 line: int | None = None):
        self.message, self.field, self.path, self.line = message, field, path, line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = _printable(self.path or "<spec>")
        if self.line is not None:
            where += f":{self.line}"
        field_ = _printable(self.field)
        return f"{where}: {field_ + ': ' if field_ else ''}{_printable(self.message)}"


INPUT = "input"
MODES = ("batch", "minibatch", "stochastic", "online")
OPTIMIZERS = ("sgd", "adam")
INITS = ("uniform", "xavier", "he")
REDUCTIONS = ("sum", "mean")
LAYER_KINDS = ("dense", "conv2d", "maxpool2d", "avgpool2d", "flatten")
RECURRENT = ("rnn", "lstm", "gru")
RECURRENT_ACTIVATIONS = ("tanh", "relu", "sigmoid", "identity")
LAYER_KINDS += RECURRENT
POOLS = ("maxpool2d", "avgpool2d")
NORM_KINDS = ("layernorm", "batchnorm", "embedding", "dropout")  # read by read_norm_layer
LAYER_KINDS += NORM_KINDS
LAYER_KINDS += ("attention",)
_ATTENTION_KEYS = {"kind", "name", "dk", "heads", "causal", "bias", "residual", "init"}

MAX_SPEC_BYTES = 1 << 20         # a spec file is at most 1 MiB
MAX_DEPTH = 64                   # bracket/brace nesting in the TOML text
MAX_NAME = 64                    # characters in a layer or input-group name
MAX_LAYERS = 10_000
MAX_UNITS = 100_000              # units of a dense layer, filters of a conv layer
MAX_DIM = 100_000                # an image side, kernel, stride or padding
MAX_VALUES = 10_000_000          # values per sample in the input or any layer output
MAX_PARAMETERS = 50_000_000      # weights and biases of the whole network
MAX_EPOCHS = 100_000_000
MAX_BATCH = 100_000_000
MAX_SEED = 2**32                 # seeds are in [0, 2**32)
MAX_MAGNITUDE = 1e3              # activation parameters, learning rate, init range, decay

_IDENTIFIER = re.compile(rf"[A-Za-z_][A-Za-z0-9_]{{0,{MAX_NAME - 1}}}")
_NETWORK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,99}")


@dataclass(frozen=True)
class Activation:
    """An activation: a registry name with its parameters, or a custom expression in x."""

    kind: str
    parameters: tuple[tuple[str, float], ...] = ()
    expr: str | None = None

    def forward(self) -> sp.Expr | None:
        """The forward form ``f(x)`` with parameters bound (None for softmax)."""
        if self.expr is not None:
            return primitives.parse_activation(self.expr)
        rule = primitives.activation(self.kind)
        if rule.forward is None:
            return None
        return primitives.bind(rule.forward, dict(self.parameters))

    @property
    def vector(self) -> bool:
        return self.expr is None and primitives.activation(self.kind).vector


IDENTITY = Activation("identity")


@dataclass(frozen=True)
class Layer:
    """A layer; dense: z = A W^T + b, a = f(z), reading ``sources`` concatenated.

    ``units``: dense units, conv filters, pooling channels, flatten C*H*W.
    ``shape``: the output per sample, ``(units,)`` or ``(C, H, W)``.
    """

    name: str
    units: int
    activation: Activation
    bias: bool = True
    sources: tuple[str, ...] = ()
    init: str | None = None
    kind: str = "dense"
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    shape: tuple[int, ...] = ()
    options: tuple[tuple[str, Any], ...] = ()  # norm/embedding/dropout: eps, momentum, rate, ...
    steps: int = 0  # recurrent layers: the time steps T they unfold over


@dataclass(frozen=True)
class Loss:
    """The loss: a registry kind or a custom per-output expression in y and t."""

    kind: str = "sse"
    reduction: str = "sum"
    weight_decay: float = 0.0
    expr: str | None = None

    def per_output(self) -> sp.Expr:
        """``l(y, t)`` for one output, summed over outputs to give a sample's loss."""
        if self.expr is not None:
            return primitives.parse_loss(self.expr)
        per_output = primitives.loss(self.kind).per_output
        if per_output is None:
            raise SpecError(f"the {self.kind} loss couples the outputs: it has no per-output "
                            "form l(y, t), which this command needs", field="loss.kind")
        return per_output

    @property
    def coupled(self) -> bool:
        """Whether the loss couples the outputs (hinge): no per-output form l(y, t)."""
        return self.expr is None and primitives.loss(self.kind).per_output is None


@dataclass(frozen=True)
class Phase:
    """A change of learning rate or momentum from a given epoch on."""

    epoch: int
    learning_rate: float | None = None
    momentum: float | None = None


@dataclass(frozen=True)
class Training:
    """How the generated module trains by default."""

    mode: str = "batch"
    optimizer: str = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.0
    epochs: int = 1000
    batch_size: int = 32
    seed: int = 0
    shrink: float = 0.0  # fraction every parameter shrinks after each update (1986 weight decay)
    tolerance: float | None = None
    schedule: tuple[Phase, ...] = ()
    bptt: int = 0  # truncated backpropagation through time: chunks of bptt steps (0: full)


@dataclass(frozen=True)
class Init:
    """Initial weights: uniform(-range, range) as in 1986, or Xavier/He."""

    kind: str = "xavier"
    range: float = 0.5


@dataclass(frozen=True)
class NetworkSpec:
    """A validated network description."""

    name: str
    inputs: tuple[tuple[str, int], ...]
    layers: tuple[Layer, ...]
    loss: Loss = field(default_factory=Loss)
    training: Training = field(default_factory=Training)
    init: Init = field(default_factory=Init)
    source: str | None = None
    input_shape: tuple[int, ...] | None = None  # (C, H, W) images, (T, F) sequences

    @property
    def n_inputs(self) -> int:
        return sum(size for _, size in self.inputs)

    @property
    def n_outputs(self) -> int:
        return self.layers[-1].units


# --------------------------------------------------------------------------- schema

_TOP_KEYS = {"name", "inputs", "layers", "loss", "training", "init", "description"}
_LAYER_KEYS = {
    "dense": {"kind", "units", "activation", "bias", "name", "from", "init"},
    "conv2d": {"kind", "filters", "kernel", "stride", "padding", "activation", "bias", "name",
               "init"},
    "maxpool2d": {"kind", "size", "stride", "name"},
    "avgpool2d": {"kind", "size", "stride", "name"},
    "flatten": {"kind", "name"},
    "layernorm": {"kind", "name", "eps", "activation"},
    "batchnorm": {"kind", "name", "eps", "momentum", "activation"},
    "embedding": {"kind", "name", "vocab", "dim"},
    "dropout": {"kind", "name", "rate"},
    "attention": {"kind", "name", "dk", "heads", "causal", "bias", "residual", "init"},
    "rnn": {"kind", "units", "activation", "sequences", "bias", "name", "init"},
    "lstm": {"kind", "units", "sequences", "bias", "name", "init"},
    "gru": {"kind", "units", "sequences", "bias", "name", "init"},
}
_LAYER_REQUIRED = {"dense": ("units",), "conv2d": ("filters", "kernel"), "maxpool2d": ("size",),
                   "avgpool2d": ("size",), "flatten": (), "rnn": ("units",), "lstm": ("units",),
                   "gru": ("units",), "layernorm": (), "batchnorm": (),
                   "embedding": ("vocab", "dim"), "dropout": ("rate",), "attention": ()}
# a key of another layer kind -> the key meant here
_LAYER_SYNONYMS = {"dense": {"filters": "units"},
                   "conv2d": {"units": "filters", "size": "kernel"},
                   "maxpool2d": {"kernel": "size"}, "avgpool2d": {"kernel": "size"}}
_ACTIVATION_KEYS = {"kind", "expr", "slope", "alpha"}
_LOSS_KEYS = {"kind", "reduction", "weight_decay", "expr"}
_TRAINING_KEYS = {"mode", "optimizer", "learning_rate", "momentum", "epochs", "batch_size",
                  "seed", "shrink", "tolerance", "schedule", "bptt",
                  "weight_decay"}  # weight_decay: renamed shrink, refused with a hint
_PHASE_KEYS = {"epoch", "learning_rate", "momentum"}
_INIT_KEYS = {"kind", "range"}


class _Locator:
    """Find the line of a field in TOML text, for error messages."""

    _header = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-]+)\s*\]\]?")
    _key = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=")

    def __init__(self, text: str | None):
        self.sections: dict[tuple, int] = {}
        self.keys: dict[tuple, int] = {}
        if text is None:
            return
        counters: dict[str, int] = {}
        current: tuple = ()
        for number, line in enumerate(text.splitlines(), start=1):
            header = self._header.match(line)
            if header:
                name = header.group(2)
                parts = name.split(".")
                if header.group(1) == "[[":
                    counters[name] = counters.get(name, 0) + 1
                    current = (*parts, counters[name] - 1)
                elif parts[0] in counters:  # [layers.activation]: the latest [[layers]]
                    current = (parts[0], counters[parts[0]] - 1, *parts[1:])
                else:
                    current = tuple(parts)
                self.sections.setdefault(current, number)
                continue
            key = self._key.match(line)
            if key:
                self.keys.setdefault((*current, key.group(1)), number)

    def line(self, path: tuple) -> int | None:
        for depth in range(len(path), 0, -1):
            prefix = tuple(path[:depth])
            if prefix in self.keys:
                return self.keys[prefix]
            if prefix in self.sections:
                return self.sections[prefix]
        return None


def _field_name(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part + 1}]" if isinstance(part, int) else (("." if out else "") + str(part))
    return out


def _sized(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape)


def _listing(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


class _Reader:
    """Validate a parsed spec dictionary into a :class:`NetworkSpec`."""

    def __init__(self, data: dict, path: str | None, text: str | None):
        self.data, self.path, self.locator = data, path, _Locator(text)
        self.parameters = 0
        self.input_shape: tuple[int, ...] | None = None

    def fail(self, where: tuple, message: str, line_of: tuple | None = None):
        line = self.locator.line(where if line_of is None else line_of)
        if line is None and (self.locator.keys or self.locator.sections):
            line = 1  # a missing top-level key: the top of the file
        raise SpecError(message, field=_field_name(where), path=self.path, line=line)

    def check_keys(self, table: Any, allowed: set, where: tuple, required=(),
                   synonyms: dict[str, str] | None = None):
        if not isinstance(table, dict):
            self.fail(where, f"expected a table, got {_typename(table)}")
        for key in table:
            if key not in allowed:
                hint = difflib.get_close_matches(key, sorted(allowed), n=1)
                if synonyms and key in synonyms:
                    hint = [synonyms[key]]
                suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
                self.fail((*where, key), f"unknown key '{key}'{suggestion}")
        for key in required:
            if key not in table:  # named as the field; located at its table's header
                self.fail((*where, key), f"missing key '{key}'", line_of=where)

    def integer(self, value: Any, where: tuple, minimum: int = 1,
                maximum: int | None = None, what: str = "") -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(where, f"expected an integer, got {_typename(value)} {_short(value)}")
        if value < minimum:
            self.fail(where, f"must be at least {minimum}, got {_short(value)}")
        if maximum is not None and value > maximum:
            self.fail(where, f"must be at most {maximum:,}{what}, got {_short(value)}")
        return value

    def number(self, value: Any, where: tuple, minimum: float | None = 0.0,
               maximum: float | None = MAX_MAGNITUDE, *, above: float | None = None,
               below: float | None = None) -> float:
        """A finite number in [minimum, maximum] (exclusive bounds: above, below)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(where, f"expected a number, got {_typename(value)} {_short(value)}")
        try:
            number = float(value)
        except OverflowError:
            self.fail(where, f"out of range, got {_short(value)}")
        if not math.isfinite(number):
            self.fail(where, f"must be finite, got {_short(value)}")
        if minimum is not None and number < minimum:
            self.fail(where, f"must be at least {minimum:g}, got {number:g}")
        if above is not None and number <= above:
            self.fail(where, f"must be greater than {above:g}, got {number:g}")
        if maximum is not None and number > maximum:
            self.fail(where, f"must be at most {maximum:g}, got {number:g}")
        if below is not None and number >= below:
            self.fail(where, f"must be less than {below:g}, got {number:g}")
        return number

    def choice(self, value: Any, options: tuple, where: tuple) -> str:
        if not isinstance(value, str) or value not in options:
            hint = difflib.get_close_matches(value, options, n=1) if isinstance(value, str) else []
            suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
            if not isinstance(value, str):
                self.fail(where, f"expected one of {', '.join(options)}; got "
                          f"{_typename(value)} {_short(value)}")
            self.fail(where, f"unknown value {_short(value)}{suggestion} "
                      f"(one of: {', '.join(options)})")
        return value

    def string(self, value: Any, where: tuple) -> str:
        if not isinstance(value, str) or not value:
            self.fail(where, f"expected a non-empty string, got {_typename(value)} {_short(value)}")
        return value

    def identifier(self, value: Any, where: tuple, what: str) -> str:
        name = self.string(value, where)
        if not _IDENTIFIER.fullmatch(name):
            self.fail(where, f"{_short(name)} is not a valid {what} (a letter or _, then letters, "
                      f"digits or _, at most {MAX_NAME} characters)")
        return name

    def pair(self, value: Any, where: tuple, minimum: int = 1) -> tuple[int, int]:
        """An int or a [height, width] pair of ints, each in [minimum, MAX_DIM]."""
        if isinstance(value, list):
            if len(value) != 2:
                self.fail(where, f"expected an integer or a pair [height, width], "
                          f"got an array of {len(value)}")
            return (self.integer(value[0], where, minimum, MAX_DIM),
                    self.integer(value[1], where, minimum, MAX_DIM))
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(where, f"expected an integer or a pair [height, width], got "
                      f"{_typename(value)} {_short(value)}")
        number = self.integer(value, where, minimum, MAX_DIM)
        return (number, number)

    # -- sections

    def read(self) -> NetworkSpec:
        data = self.data
        self.check_keys(data, _TOP_KEYS, (), required=("inputs", "layers"))
        name = self.string(data.get("name", "network"), ("name",))
        if not _NETWORK_NAME.fullmatch(name):
            self.fail(("name",), f"{_short(name)} is not a valid name (letters, digits, _ and -, "
                      "at most 100 characters)")
        if "description" in data:
            self.string(data["description"], ("description",))
        inputs, input_shape = self.read_inputs(data["inputs"])
        self.input_shape = input_shape
        layers_data = data["layers"]
        if not isinstance(layers_data, list) or not layers_data:
            self.fail(("layers",), "expected at least one [[layers]] table")
        if len(layers_data) > MAX_LAYERS:
            self.fail(("layers",), f"{len(layers_data):,} layers; at most {MAX_LAYERS:,}")
        # every name a layer may read -> its output shape per sample
        shapes: dict[str, tuple[int, ...]] = {group: (size,) for group, size in inputs}
        if input_shape is not None:
            shapes = {INPUT: input_shape}
        elif len(inputs) > 1:
            shapes[INPUT] = (sum(size for _, size in inputs),)
        layers: list[Layer] = []
        for index, layer_data in enumerate(layers_data):
            layers.append(self.read_layer(layer_data, index, shapes, layers))
            shape = shapes[layers[-1].name] = layers[-1].shape
            if math.prod(shape) > MAX_VALUES:
                self.fail(("layers", index), f"output {_sized(shape)} = {math.prod(shape):,} "
                          f"values per sample; at most {MAX_VALUES:,}")
        if layers[-1].kind != "dense":
            self.fail(("layers", len(layers) - 1, "kind"),
                      f"the last layer must be dense (a loss needs a flat output), got "
                      f"{layers[-1].kind}; add " + ("" if layers[-1].kind == "flatten" else
                                                    "a flatten layer and ") + "a dense layer")
        loss = self.read_loss(data.get("loss", {}))
        self.check_output(layers, loss)
        self.check_norm_training(layers, data.get("training", {}))
        return NetworkSpec(
            name=name, inputs=inputs, layers=tuple(layers), loss=loss,
            training=self.read_training(data.get("training", {})),
            init=self.read_init(data.get("init", {})), source=self.path,
            input_shape=input_shape,
        )

    def read_inputs(self, value: Any) -> tuple[tuple[tuple[str, int], ...],
                                                tuple[int, ...] | None]:
        where = ("inputs",)
        if isinstance(value, dict) and isinstance(value.get("shape"), list):
            if len(value) > 1:
                other = next(key for key in value if key != "shape")
                self.fail((*where, other), "image inputs (shape) cannot have input groups")
            shape = value["shape"]
            at = (*where, "shape")
            if len(shape) == 2:
                return self.read_sequence(shape, at)
            if len(shape) != 3:
                self.fail(at, "expected [channels, height, width] (images) or [steps, "
                          f"features] (sequences), got {len(shape)} numbers")
            shape = tuple(self.integer(n, at, 1, MAX_DIM) for n in shape)
            size = math.prod(shape)
            if size > MAX_VALUES:
                self.fail(at, f"{_sized(shape)} = {size:,} inputs; at most {MAX_VALUES:,}")
            return ((INPUT, size),), shape
        if isinstance(value, dict):
            if not value:
                self.fail(where, "expected at least one input group")
            if len(value) > 1000:
                self.fail(where, f"{len(value):,} input groups; at most 1,000")
            groups = []
            for group, size in value.items():
                if not _IDENTIFIER.fullmatch(group) or group == INPUT:
                    self.fail((*where, group), f"{_short(group)} is not a valid input group name "
                              f"(a letter or _, then letters, digits or _, at most {MAX_NAME} "
                              "characters; not 'input')")
                groups.append((group, self.integer(size, (*where, group), 1, MAX_VALUES)))
            total = sum(size for _, size in groups)
            if total > MAX_VALUES:
                self.fail(where, f"{total:,} inputs in all; at most {MAX_VALUES:,}")
            return tuple(groups), None
        return ((INPUT, self.integer(value, where, 1, MAX_VALUES)),), None

    def read_sequence(self, shape: list, at: tuple) -> tuple[tuple[tuple[str, int], ...],
                                                              tuple[int, ...]]:
        """``inputs = { shape = [T, F] }``: sequences of T steps of F features, X (N, T, F)."""
        if shape and shape[0] == "T":
            self.fail(at, "variable-length sequences (T = \"T\") are not supported; give the "
                      "number of steps, padding shorter sequences to it")
        steps = self.integer(shape[0], at, 1, MAX_DIM)
        features = self.integer(shape[1], at, 1, MAX_VALUES)
        if steps * features > MAX_VALUES:
            self.fail(at, f"{steps}x{features} = {steps * features:,} inputs; at most "
                      f"{MAX_VALUES:,}")
        return ((INPUT, steps * features),), (steps, features)

    def read_recurrent(self, data: dict, index: int, kind: str, name: str, bias: bool,
                       init: str | None, shapes: dict[str, tuple[int, ...]],
                       earlier: list[Layer]) -> Layer:
        """An rnn, lstm or gru layer: it reads the previous layer, which must be a sequence."""
        where = ("layers", index)
        source = earlier[-1].name if earlier else INPUT
        in_shape = shapes[source]
        if len(in_shape) != 2:
            if source == INPUT:
                why = ("the input is not a sequence; give inputs = { shape = [T, F] } "
                       "(T steps of F features)")
            elif earlier[-1].kind in RECURRENT:
                why = (f"layer '{source}' outputs only its last step; give it "
                       "sequences = true")
            else:
                why = f"layer '{source}' is not a sequence (shape {_sized(in_shape)})"
            self.fail((*where, "kind"), f"a recurrent layer ({kind}) needs a sequence input but {why}")
        units = self.integer(data["units"], (*where, "units"), 1, MAX_UNITS)
        sequences = data.get("sequences", False)
        if not isinstance(sequences, bool):
            self.fail((*where, "sequences"), f"expected true or false, got {_short(sequences)}")
        activation = IDENTITY
        if kind == "rnn":
            activation = self.read_activation(data.get("activation", "tanh"),
                                              (*where, "activation"))
            if activation.kind not in RECURRENT_ACTIVATIONS or activation.parameters:
                self.fail((*where, "activation"), f"an rnn layer supports the activations "
                          f"{', '.join(RECURRENT_ACTIVATIONS)}; got '{activation.kind}'")
        gates = {"rnn": 1, "lstm": 4, "gru": 3}[kind]
        self.count_parameters(where, gates * units * (in_shape[1] + units + bias))
        steps = in_shape[0]
        return Layer(name=name, units=units, activation=activation, bias=bias,
                     sources=(source,), init=init, kind=kind, steps=steps,
                     shape=(steps, units) if sequences else (units,))

    def read_attention(self, data: dict, index: int, shapes: dict, earlier: list, name: str,
                       bias: bool, init) -> Layer:
        """Validate an attention layer: it reads the previous layer, which must be a sequence."""
        where = ("layers", index)
        self.check_keys(data, _ATTENTION_KEYS, where)
        source = earlier[-1].name if earlier else INPUT
        in_shape = shapes[source]
        if len(in_shape) != 2:
            why = ("the input is not a sequence; give inputs = { shape = [T, F] } (T steps of F "
                   "features)" if source == INPUT else
                   f"layer '{source}' is not a sequence (shape {_sized(in_shape)})")
            self.fail((*where, "kind"), f"an attention layer needs a sequence input but {why}")
        steps, width = in_shape
        dk = self.integer(data.get("dk", width), (*where, "dk"), 1, 100_000)
        heads = self.integer(data.get("heads", 1), (*where, "heads"), 1, 100_000)
        if dk % heads:
            self.fail((*where, "heads"), f"{heads} heads do not divide dk = {dk}")
        flags = {}
        for key in ("causal", "residual"):
            flags[key] = data.get(key, False)
            if not isinstance(flags[key], bool):
                self.fail((*where, key), f"expected true or false, got {flags[key]!r}"[:120])
        self.count_parameters(where, 4 * dk * width + (2 * dk + width) * bias)
        return Layer(name=name, units=width, activation=IDENTITY, bias=bias, sources=(source,),
                     init=init, kind="attention", steps=steps, shape=(steps, width),
                     options=(("dk", dk), ("heads", heads), ("causal", flags["causal"]),
                              ("residual", flags["residual"])))

    def read_layer(self, data: Any, index: int, shapes: dict[str, tuple[int, ...]],
                   earlier: list[Layer]) -> Layer:
        where = ("layers", index)
        if not isinstance(data, dict):
            self.fail(where, f"expected a table, got {_typename(data)}")
        kind = self.choice(data.get("kind", "dense"), LAYER_KINDS, (*where, "kind"))
        if kind != "dense" and "from" in data:
            self.fail((*where, "from"), f"'from' is not supported on {kind} layers; they read "
                      "the previous layer")
        if kind in (*POOLS, "flatten") and "activation" in data:
            self.fail((*where, "activation"), f"a {kind} layer has no activation; put it on the "
                      "layer before")
        self.check_keys(data, _LAYER_KEYS[kind], where, required=_LAYER_REQUIRED[kind],
                        synonyms=_LAYER_SYNONYMS.get(kind))
        name = self.identifier(data.get("name", f"layer{index + 1}"), (*where, "name"),
                               "layer name")
        if name in shapes or name == INPUT:
            self.fail((*where, "name"), f"name '{name}' is already used")
        bias = data.get("bias", kind in ("dense", "conv2d", "attention", *RECURRENT))
        if not isinstance(bias, bool):
            self.fail((*where, "bias"), f"expected true or false, got {_short(bias)}")
        init = data.get("init")
        if init is not None:
            init = self.choice(init, INITS, (*where, "init"))
        if kind == "dense":
            return self.read_dense(data, index, shapes, earlier, name, bias, init)
        if kind in NORM_KINDS:
            return self.read_norm_layer(data, index, shapes, earlier, name, kind)
        if kind in RECURRENT:
            return self.read_recurrent(data, index, kind, name, bias, init, shapes, earlier)
        if kind == "attention":
            return self.read_attention(data, index, shapes, earlier, name, bias, init)
        source = earlier[-1].name if earlier else INPUT
        if kind == "flatten":
            in_shape = self.image_input(where, kind, source, shapes)
            size = math.prod(in_shape)
            return Layer(name=name, units=size, activation=IDENTITY, bias=False,
                         sources=(source,), kind=kind, shape=(size,))
        in_shape = self.image_input(where, kind, source, shapes)
        channels, height, width = in_shape
        if kind in POOLS:
            kernel = self.pair(data["size"], (*where, "size"))
            stride = self.pair(data["stride"], (*where, "stride")) if "stride" in data else kernel
            out_h, out_w = self.output_size(where, (height, width), kernel, stride, (0, 0), "size")
            return Layer(name=name, units=channels, activation=IDENTITY, bias=False,
                         sources=(source,), kind=kind, kernel=kernel, stride=stride,
                         shape=(channels, out_h, out_w))
        filters = self.integer(data["filters"], (*where, "filters"), 1, MAX_UNITS)
        kernel = self.pair(data["kernel"], (*where, "kernel"))
        stride = self.pair(data.get("stride", 1), (*where, "stride"))
        padding_value = data.get("padding", 0)
        if padding_value == "same":
            if kernel[0] % 2 == 0 or kernel[1] % 2 == 0 or stride != (1, 1):
                self.fail((*where, "padding"), "'same' padding needs an odd kernel and stride 1, "
                          f"got kernel {_sized(kernel)} and stride {_sized(stride)}")
            padding = ((kernel[0] - 1) // 2, (kernel[1] - 1) // 2)
        elif isinstance(padding_value, str):
            self.fail((*where, "padding"), f"expected an integer, a pair or 'same', got "
                      f"{_short(padding_value)}")
        else:
            padding = self.pair(padding_value, (*where, "padding"), minimum=0)
        out_h, out_w = self.output_size(where, (height, width), kernel, stride, padding, "kernel")
        activation = self.read_activation(data.get("activation", "identity"),
                                          (*where, "activation"))
        if activation.vector:
            self.fail((*where, "activation"), f"'{activation.kind}' couples a layer's outputs "
                      "and needs a flat (dense) layer; it is not supported on conv2d layers")
        self.count_parameters(where, filters * (channels * kernel[0] * kernel[1] + bias))
        return Layer(name=name, units=filters, activation=activation, bias=bias,
                     sources=(source,), init=init, kind=kind, kernel=kernel, stride=stride,
                     padding=padding, shape=(filters, out_h, out_w))

    def read_dense(self, data: dict, index: int, shapes: dict[str, tuple[int, ...]],
                   earlier: list[Layer], name: str, bias: bool, init: str | None) -> Layer:
        where = ("layers", index)
        units = self.integer(data["units"], (*where, "units"), 1, MAX_UNITS)
        if "from" in data:
            sources = data["from"]
            if isinstance(sources, str):
                sources = [sources]
            if not isinstance(sources, list) or not sources:
                self.fail((*where, "from"), "expected a list of layer names")
            for source in sources:
                if not isinstance(source, str):
                    self.fail((*where, "from"), f"expected layer names, got {_typename(source)} "
                              f"{_short(source)}")
                if source not in shapes:
                    later = {d.get("name") for d in self.data["layers"][index:]
                             if isinstance(d, dict) and isinstance(d.get("name"), str)}
                    if source in later:
                        self.fail((*where, "from"),
                                  f"'{source}' is this layer or a later one (a cycle); "
                                  "a layer can only read earlier layers")
                    known = list(shapes)
                    hint = difflib.get_close_matches(source, known, n=1)
                    suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
                    self.fail((*where, "from"), f"unknown layer {_short(source)}{suggestion} "
                              f"(known here: {_listing(known)})")
            if len(set(sources)) != len(sources):
                self.fail((*where, "from"), "a layer is listed twice")
            sources = tuple(sources)
            at = (*where, "from")
        else:
            sources = (earlier[-1].name,) if earlier else (
                next(iter(shapes)) if len(shapes) == 1 else INPUT,)
            at = where
        steps = self.sequence_sources(at, sources, shapes)
        for source in sources:
            if len(shapes[source]) not in (1, 1 + bool(steps)):
                what = "the input" if source == INPUT else f"layer '{source}'"
                self.fail(at, f"a dense layer needs flat inputs but {what} has shape (C, H, W) = "
                          f"{_sized(shapes[source])}; add a flatten layer before this one")
        fan_in = sum(shapes[source][-1] for source in sources)
        self.count_parameters(where, units * (fan_in + bias))
        activation = self.read_activation(data.get("activation", "identity"),
                                          (*where, "activation"))
        return Layer(name=name, units=units, activation=activation, bias=bias,
                     sources=sources, init=init, shape=(steps, units) if steps else (units,))

    def sequence_sources(self, at: tuple, sources: tuple, shapes: dict) -> int:
        """T when a dense layer reads sequences (it then acts on every step), else 0."""
        if self.input_shape is None or len(self.input_shape) != 2:
            return 0
        steps = {shapes[source][0] for source in sources if len(shapes[source]) == 2}
        if steps and any(len(shapes[source]) != 2 for source in sources):
            self.fail(at, "a dense layer cannot read sequences and single vectors together "
                      "(a recurrent layer with sequences = false outputs its last step only)")
        return steps.pop() if steps else 0

    def read_norm_layer(self, data: dict, index: int, shapes: dict[str, tuple[int, ...]],
                        earlier: list[Layer], name: str, kind: str) -> Layer:
        """layernorm, batchnorm (flat inputs), embedding (the first layer), dropout."""
        where = ("layers", index)
        source = earlier[-1].name if earlier else INPUT
        shape = shapes[source]
        if kind == "dropout":
            rate = self.number(data["rate"], (*where, "rate"), 0.0, below=1.0)
            return Layer(name=name, units=math.prod(shape), activation=IDENTITY, bias=False,
                         sources=(source,), kind=kind, shape=shape,
                         options=(("rate", rate),))
        if kind == "embedding":
            if earlier or source not in shapes or len(shape) != 1 or len(shapes) > 1:
                self.fail((*where, "kind"), "an embedding layer must be the first layer and read "
                          "the whole input: inputs = T integer ids per sample")
            vocab = self.integer(data["vocab"], (*where, "vocab"), 1, MAX_VALUES)
            dim = self.integer(data["dim"], (*where, "dim"), 1, MAX_UNITS)
            self.count_parameters(where, vocab * dim)
            return Layer(name=name, units=shape[0] * dim, activation=IDENTITY, bias=False,
                         sources=(source,), kind=kind, shape=(shape[0] * dim,),
                         options=(("vocab", vocab), ("dim", dim)))
        if len(shape) != 1:
            self.fail((*where, "kind"), f"a {kind} layer needs flat inputs (features per sample), "
                      f"got {_sized(shape)}; add a flatten layer before this one")
        eps = self.number(data.get("eps", 1e-5), (*where, "eps"), None, 1.0, above=0.0)
        found: list[tuple[str, Any]] = [("eps", eps)]
        if kind == "batchnorm":
            found.append(("momentum", self.number(data.get("momentum", 0.1),
                                                  (*where, "momentum"), 0.0, 1.0)))
        activation = self.read_activation(data.get("activation", "identity"),
                                          (*where, "activation"))
        self.count_parameters(where, 2 * shape[0])
        return Layer(name=name, units=shape[0], activation=activation, bias=True,
                     sources=(source,), kind=kind, shape=shape, options=tuple(found))

    def check_norm_training(self, layers: list[Layer], data: Any) -> None:
        """Batch norm needs at least two samples per training batch."""
        if not any(layer.kind == "batchnorm" for layer in layers) or not isinstance(data, dict):
            return
        mode = data.get("mode", "batch")
        if mode in ("stochastic", "online"):
            self.fail(("training", "mode"), f"batch norm needs at least 2 samples per batch in "
                      f"training; mode '{mode}' uses 1 (use batch or minibatch)")
        if mode == "minibatch" and data.get("batch_size", 32) == 1:
            self.fail(("training", "batch_size"), "batch norm needs at least 2 samples per "
                      "batch in training, got 1")

    def image_input(self, where: tuple, kind: str, source: str,
                    shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
        """The (C, H, W) shape a conv/pool/flatten layer reads, or fail."""
        shape = shapes[source]
        if len(shape) != 3:
            if source == INPUT or where[1] == 0:
                self.fail((*where, "kind"), f"a {kind} layer needs image inputs; give "
                          "inputs = { shape = [C, H, W] }")
            self.fail((*where, "kind"), f"a {kind} layer needs a (C, H, W) input but layer "
                      f"'{source}' is flat; conv, pooling and flatten layers must come before "
                      "any flatten or dense layer")
        return shape

    def output_size(self, where: tuple, size: tuple[int, int], kernel: tuple[int, int],
                    stride: tuple[int, int], padding: tuple[int, int],
                    kernel_key: str) -> tuple[int, int]:
        """(out_h, out_w) = (in + 2*pad - k) // stride + 1, checked to divide exactly."""
        out = []
        for axis, n, k, s, p in zip(("height", "width"), size, kernel, stride, padding):
            span = n + 2 * p - k
            if span < 0:
                self.fail((*where, kernel_key), f"{kernel_key} {_sized(kernel)} is larger than "
                          f"the padded input {size[0] + 2 * padding[0]}x{size[1] + 2 * padding[1]}")
            if span % s:
                self.fail((*where, "stride"), f"stride {s} does not fit the {axis}: "
                          f"({n} + 2*{p} - {kernel_key} {k}) = {span} is not a multiple of {s}")
            out.append(span // s + 1)
        return out[0], out[1]

    def count_parameters(self, where: tuple, count: int) -> None:
        self.parameters += count
        if self.parameters > MAX_PARAMETERS:
            self.fail(where, f"the network would have more than {MAX_PARAMETERS:,} parameters "
                      f"({self.parameters:,} up to this layer)")

    def read_activation(self, value: Any, where: tuple) -> Activation:
        if isinstance(value, str):
            value = {"kind": value}
        if not isinstance(value, dict):
            self.fail(where, f"expected an activation name or a table, got {_typename(value)} "
                      f"{_short(value)}")
        self.check_keys(value, _ACTIVATION_KEYS, where)
        if "expr" in value:
            if "kind" in value and value["kind"] != "custom":
                self.fail(where, "give either 'kind' or 'expr', not both")
            text = value["expr"]
            try:
                primitives.parse_activation(text)
            except ExpressionError as exc:
                self.fail((*where, "expr"), str(exc))
            return Activation(kind="custom", expr=text)
        if "kind" not in value:
            self.fail(where, "missing key 'kind' (or 'expr' for a custom activation)")
        kind = value["kind"]
        if not isinstance(kind, str):
            self.fail(where, f"expected an activation name, got {_typename(kind)} {_short(kind)}")
        try:
            rule = primitives.activation(kind)
        except primitives.UnknownPrimitive as exc:
            self.fail(where, exc.message)
        parameters = []
        for key in ("slope", "alpha"):
            if key in value:
                if key not in rule.parameters:
                    self.fail((*where, key), f"'{kind}' has no parameter '{key}'")
                parameters.append((key, self.number(value[key], (*where, key), -MAX_MAGNITUDE)))
        for key, default in rule.parameters.items():
            if key not in dict(parameters):
                parameters.append((key, default))
        return Activation(kind=kind, parameters=tuple(sorted(parameters)))

    def read_loss(self, data: Any) -> Loss:
        where = ("loss",)
        self.check_keys(data, _LOSS_KEYS, where)
        reduction = self.choice(data.get("reduction", "sum"), REDUCTIONS, (*where, "reduction"))
        decay = self.number(data.get("weight_decay", 0.0), (*where, "weight_decay"))
        if "expr" in data:
            if data.get("kind", "custom") != "custom":
                self.fail(where, "give either 'kind' or 'expr', not both")
            try:
                primitives.parse_loss(data["expr"])
            except ExpressionError as exc:
                self.fail((*where, "expr"), str(exc))
            return Loss("custom", reduction, decay, data["expr"])
        kind = data.get("kind", "sse")
        if not isinstance(kind, str):
            self.fail((*where, "kind"), f"expected a loss name, got {_typename(kind)} "
                      f"{_short(kind)}")
        try:
            primitives.loss(kind)
        except primitives.UnknownPrimitive as exc:
            self.fail((*where, "kind"), exc.message)
        return Loss(kind, reduction, decay)

    def check_output(self, layers: list[Layer], loss: Loss) -> None:
        output = layers[-1]
        where = ("layers", len(layers) - 1, "activation")
        softmax_out = output.activation.kind == "softmax"
        if loss.kind == "cross_entropy" and not softmax_out:
            self.fail(("loss", "kind"), "cross_entropy needs a softmax output layer "
                      "(use 'bce' for independent sigmoid outputs)")
        if softmax_out and loss.kind == "bce":
            self.fail(where, "softmax with 'bce' treats coupled outputs as independent; "
                      "use kind = 'cross_entropy'")
        if loss.kind == "bce" and output.activation.kind != "sigmoid":
            if output.activation.kind == "custom":
                why = "a custom activation cannot be shown to stay in (0, 1)"
            else:
                why = f"{output.activation.kind} outputs are not limited to (0, 1)"
            self.fail(where, f"bce needs outputs in (0, 1) and {why}; use a sigmoid output "
                      "layer (or the sse/mse loss)")
        if loss.kind == "hinge" and output.activation.kind != "identity":
            self.fail(where, f"hinge needs an identity output layer (raw class scores), got "
                      f"{output.activation.kind}")
        if loss.kind == "hinge" and output.units < 2:
            self.fail(where, "hinge needs at least 2 classes (output units)")
        if softmax_out and output.units < 2:
            self.fail(where, "softmax over a single unit is constant; use sigmoid")
        consumers = {s for layer in layers for s in layer.sources}
        for index, layer in enumerate(layers[:-1]):
            if layer.name not in consumers:
                self.fail(("layers", index), f"layer '{layer.name}' feeds nothing; only the "
                          "last layer may be unused (it is the output)")

    def read_training(self, data: Any) -> Training:
        where = ("training",)
        self.check_keys(data, _TRAINING_KEYS, where)
        kw: dict[str, Any] = {}
        if "mode" in data:
            kw["mode"] = self.choice(data["mode"], MODES, (*where, "mode"))
        if "optimizer" in data:
            kw["optimizer"] = self.choice(data["optimizer"], OPTIMIZERS, (*where, "optimizer"))
        if "learning_rate" in data:
            kw["learning_rate"] = self.learning_rate(data["learning_rate"],
                                                     (*where, "learning_rate"))
        if "momentum" in data:
            kw["momentum"] = self.number(data["momentum"], (*where, "momentum"), below=1.0)
        if "weight_decay" in data:
            self.fail((*where, "weight_decay"), "renamed 'shrink' in [training] (every parameter "
                      "shrinks by that fraction after each update); the L2 term "
                      "lambda/2 sum W^2 is [loss] weight_decay")
        if "shrink" in data:  # a fraction of every parameter per update
            kw["shrink"] = self.number(data["shrink"], (*where, "shrink"), below=1.0)
        if "tolerance" in data:
            kw["tolerance"] = self.number(data["tolerance"], (*where, "tolerance"), 0.0, 1.0)
        if "bptt" in data:  # truncated BPTT: the gradient crosses at most chunks of bptt steps
            kw["bptt"] = self.integer(data["bptt"], (*where, "bptt"), 1, MAX_DIM)
        for key, minimum, maximum in (("epochs", 1, MAX_EPOCHS), ("batch_size", 1, MAX_BATCH),
                                      ("seed", 0, MAX_SEED - 1)):
            if key in data:
                kw[key] = self.integer(data[key], (*where, key), minimum, maximum)
        if "schedule" in data:
            phases: list[Phase] = []
            if not isinstance(data["schedule"], list):
                self.fail((*where, "schedule"), "expected [[training.schedule]] tables")
            if len(data["schedule"]) > 10_000:
                self.fail((*where, "schedule"), "more than 10,000 phases")
            for index, phase in enumerate(data["schedule"]):
                at = (*where, "schedule", index)
                self.check_keys(phase, _PHASE_KEYS, at, required=("epoch",))
                epoch = self.integer(phase["epoch"], (*at, "epoch"), 0, MAX_EPOCHS)
                if phases and epoch <= phases[-1].epoch:
                    self.fail((*at, "epoch"), f"epoch {epoch} is not after the previous phase's "
                              f"epoch {phases[-1].epoch}; list phases in increasing epoch order")
                phases.append(Phase(
                    epoch=epoch,
                    learning_rate=(self.learning_rate(phase["learning_rate"],
                                                      (*at, "learning_rate"))
                                   if "learning_rate" in phase else None),
                    momentum=(self.number(phase["momentum"], (*at, "momentum"), below=1.0)
                              if "momentum" in phase else None),
                ))
            kw["schedule"] = tuple(phases)
        return Training(**kw)

    def learning_rate(self, value: Any, where: tuple) -> float:
        return self.number(value, where, None, above=0.0)

    def read_init(self, data: Any) -> Init:
        where = ("init",)
        if isinstance(data, str):
            data = {"kind": data}
        self.check_keys(data, _INIT_KEYS, where)
        kind = self.choice(data.get("kind", "xavier"), INITS, (*where, "kind"))
        value = self.number(data.get("range", 0.5), (*where, "range"), None, above=0.0)
        return Init(kind, value)


def _typename(value: Any) -> str:
    return {dict: "a table", list: "an array", str: "a string", bool: "a boolean",
            int: "an integer", float: "a float"}.get(type(value), type(value).__name__)


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (huge integers included)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 190:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# --------------------------------------------------------------------------- front ends

_TOML_TOKEN = re.compile(r'"""(?:[^\\]|\\.)*?"""|\'\'\'.*?\'\'\''  # multi-line strings
                         r'|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'|#[^\n]*'  # strings, comments
                         r'|[\[\]{}]', re.DOTALL)


def _check_text(text: str, path: str) -> None:
    """Refuse oversized text and bracket nesting deeper than MAX_DEPTH (outside strings)."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(f"spec is larger than {MAX_SPEC_BYTES:,} bytes", path=path)
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    depth = 0
    for token in _TOML_TOKEN.finditer(text):
        bracket = token.group()
        if bracket in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                line = text.count("\n", 0, token.start()) + 1
                raise SpecError(f"malformed TOML: arrays or tables nested more than {MAX_DEPTH} "
                                "deep", path=path, line=line)
        elif bracket in "]}":
            depth = max(depth - 1, 0)


def spec_from_dict(data: dict, *, path: str | None = None, text: str | None = None) -> NetworkSpec:
    """Validate a spec dictionary (the parsed TOML) into a :class:`NetworkSpec`."""
    return _Reader(data, path, text).read()


def _read_text(path: Path) -> str:
    """The text of a regular file of at most MAX_SPEC_BYTES UTF-8 bytes (never blocks)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise SpecError("cannot read spec: file not found", path=str(path)) from None
    except OSError as exc:
        raise SpecError(f"cannot read spec: {exc.strerror or exc}", path=str(path)) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SpecError("cannot read spec: not a regular file", path=str(path))
        if info.st_size > MAX_SPEC_BYTES:
            raise SpecError(f"cannot read spec: larger than {MAX_SPEC_BYTES:,} bytes",
                            path=str(path))
        chunks, size = [], 0
        while size <= MAX_SPEC_BYTES:
            chunk = os.read(fd, MAX_SPEC_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise SpecError(f"cannot read spec: {exc.strerror or exc}", path=str(path)) from None
    finally:
        os.close(fd)
    if size > MAX_SPEC_BYTES:
        raise SpecError(f"cannot read spec: larger than {MAX_SPEC_BYTES:,} bytes", path=str(path))
    data = b"".join(chunks)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SpecError(f"cannot read spec: not UTF-8 text (byte {exc.start + 1})",
                        path=str(path), line=line) from None


def load_spec(path: str | Path) -> NetworkSpec:
    """Read and validate a TOML spec file (a regular file of at most 1 MiB of UTF-8).

    >>> load_spec("no/such/file.toml")
    Traceback (most recent call last):
    ...
    symgrad.spec.SpecError: no/such/file.toml: cannot read spec: file not found
    >>> load_spec("/dev/null")
    Traceback (most recent call last):
    ...
    symgrad.spec.SpecError: /dev/null: cannot read spec: not a regular file
    """
    path = Path(path)
    return loads_spec(_read_text(path), path=str(path))


def loads_spec(text: str, *, path: str = "<spec>") -> NetworkSpec:
    """Parse and validate TOML text.

    >>> loads_spec("inputs = 2\\n[[layers]]\\nunits = 1\\nactivation = 5\\n", path="n.toml")
    Traceback (most recent call last):
    ...
    symgrad.spec.SpecError: n.toml:4: layers[1].activation: expected an activation name or a table, got an integer 5
    """
    _check_text(text, path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        line = int(match.group(1)) if match else None
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise SpecError(f"malformed TOML: {message}", path=path, line=line) from None
    except (RecursionError, ValueError) as exc:  # nesting, or an integer too long to read
        raise SpecError(f"malformed TOML: {type(exc).__name__}: {exc}", path=path) from None
    return spec_from_dict(data, path=path, text=text)


class Network:
    """Build a :class:`NetworkSpec` in Python, with the same checks as the TOML reader.

    >>> spec = (Network("skip", inputs=2)
    ...         .dense(1, "sigmoid", name="hidden")
    ...         .dense(1, "sigmoid", sources=["input", "hidden"])
    ...         .loss("sse").build())
    >>> spec.layers[1].sources
    ('input', 'hidden')

    ``inputs`` is a size, a dict of input groups, or a ``(C, H, W)`` shape:

    >>> spec = (Network("cnn", inputs=(3, 32, 32)).conv2d(8, 5, "relu", stride=1)
    ...         .avgpool2d(2).conv2d(4, [3, 3], padding="same").flatten().dense(2, "softmax")
    ...         .loss("cross_entropy").build())
    >>> [layer.shape for layer in spec.layers]
    [(8, 28, 28), (8, 14, 14), (4, 14, 14), (784,), (2,)]
    """

    def __init__(self, name: str = "network", *,
                 inputs: int | dict[str, int] | tuple[int, ...] | list[int]):
        if isinstance(inputs, (tuple, list)):
            inputs = {"shape": list(inputs)}
        self._data: dict[str, Any] = {"name": name, "inputs": inputs, "layers": []}

    def dense(self, units: int, activation: str | dict = "identity", *, name: str | None = None,
              bias: bool = True, sources: list[str] | None = None,
              init: str | None = None) -> Network:
        """Append a dense layer; ``activation`` is a name or ``{"expr": "..."}``."""
        layer: dict[str, Any] = {"units": units, "activation": activation, "bias": bias}
        for key, value in (("name", name), ("from", sources), ("init", init)):
            if value is not None:
                layer[key] = value
        self._data["layers"].append(layer)
        return self

    def conv2d(self, filters: int, kernel: int | tuple[int, int] | list[int],
               activation: str | dict = "identity", *, stride: int | tuple[int, int] = 1,
               padding: int | tuple[int, int] | str = 0, name: str | None = None,
               bias: bool = True, init: str | None = None) -> Network:
        """Append a 2-D convolution (``padding`` may be ``"same"``).

        >>> Network(inputs=(1, 5, 5)).conv2d(2, 3, stride=2).flatten().dense(1).build().layers[0].shape
        (2, 2, 2)
        """
        layer: dict[str, Any] = {"kind": "conv2d", "filters": filters, "kernel": _listed(kernel),
                                 "stride": _listed(stride), "padding": _listed(padding),
                                 "activation": activation, "bias": bias}
        for key, value in (("name", name), ("init", init)):
            if value is not None:
                layer[key] = value
        self._data["layers"].append(layer)
        return self

    def maxpool2d(self, size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                  *, name: str | None = None) -> Network:
        """Append max pooling over ``size`` windows (stride defaults to size).

        >>> Network(inputs=(1, 4, 4)).maxpool2d(2).flatten().dense(1).build().layers[0].shape
        (1, 2, 2)
        """
        return self._pool("maxpool2d", size, stride, name)

    def avgpool2d(self, size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                  *, name: str | None = None) -> Network:
        """Append average pooling over ``size`` windows (stride defaults to size).

        >>> Network(inputs=(2, 6, 6)).avgpool2d(3, 1).flatten().dense(1).build().layers[0].shape
        (2, 4, 4)
        """
        return self._pool("avgpool2d", size, stride, name)

    def _pool(self, kind: str, size, stride, name) -> Network:
        layer: dict[str, Any] = {"kind": kind, "size": _listed(size)}
        if stride is not None:
            layer["stride"] = _listed(stride)
        if name is not None:
            layer["name"] = name
        self._data["layers"].append(layer)
        return self

    def rnn(self, units: int, activation: str = "tanh", *, sequences: bool = False,
            kind: str = "rnn", bias: bool = True, name: str | None = None) -> Network:
        """Append a recurrent layer (``kind`` rnn, lstm or gru) over a (T, F) sequence.

        >>> spec = Network(inputs=(5, 3)).rnn(4, sequences=True).dense(2).build()
        >>> [layer.shape for layer in spec.layers]
        [(5, 4), (5, 2)]
        """
        layer: dict[str, Any] = {"kind": kind, "units": units, "sequences": sequences,
                                 "bias": bias}
        if kind == "rnn":
            layer["activation"] = activation
        if name is not None:
            layer["name"] = name
        self._data["layers"].append(layer)
        return self

    def flatten(self, *, name: str | None = None) -> Network:
        """Append a flatten layer: (C, H, W) to C*H*W.

        >>> Network(inputs=(2, 3, 4)).flatten().dense(1).build().layers[0].units
        24
        """
        layer: dict[str, Any] = {"kind": "flatten"}
        if name is not None:
            layer["name"] = name
        self._data["layers"].append(layer)
        return self

    def layernorm(self, *, eps: float = 1e-5, activation: str | dict = "identity",
                  name: str | None = None) -> Network:
        """Append layer normalisation over the features of each sample."""
        return self._add({"kind": "layernorm", "eps": eps, "activation": activation}, name)

    def batchnorm(self, *, eps: float = 1e-5, momentum: float = 0.1,
                  activation: str | dict = "identity", name: str | None = None) -> Network:
        """Append batch normalisation over the batch (running statistics for evaluation)."""
        return self._add({"kind": "batchnorm", "eps": eps, "momentum": momentum,
                          "activation": activation}, name)

    def embedding(self, vocab: int, dim: int, *, name: str | None = None) -> Network:
        """Append an embedding of integer ids (the first layer)."""
        return self._add({"kind": "embedding", "vocab": vocab, "dim": dim}, name)

    def dropout(self, rate: float, *, name: str | None = None) -> Network:
        """Append inverted dropout with drop probability ``rate``."""
        return self._add({"kind": "dropout", "rate": rate}, name)

    def _add(self, layer: dict[str, Any], name: str | None) -> Network:
        if name is not None:
            layer["name"] = name
        self._data["layers"].append(layer)
        return self

    def loss(self, kind: str = "sse", *, reduction: str = "sum", weight_decay: float = 0.0,
             expr: str | None = None) -> Network:
        """Set the loss (a registry kind, or a custom expression in y and t)."""
        table: dict[str, Any] = {"reduction": reduction, "weight_decay": weight_decay}
        table.update({"expr": expr} if expr is not None else {"kind": kind})
        self._data["loss"] = table
        return self

    def training(self, **options: Any) -> Network:
        """Set the default training options (mode, learning_rate, momentum, ...)."""
        self._data["training"] = options
        return self

    def init(self, kind: str = "xavier", range: float = 0.5) -> Network:
        """Set the weight initialisation."""
        self._data["init"] = {"kind": kind, "range": range}
        return self

    def build(self) -> NetworkSpec:
        """Validate and return the spec."""
        return spec_from_dict(self._data)


def _listed(value: Any) -> Any:
    """A tuple as the list TOML would give (pairs), anything else unchanged."""
    return list(value) if isinstance(value, tuple) else value
