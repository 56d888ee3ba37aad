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
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sympy as sp

from . import primitives
from .exprparse import ExpressionError, parse_expression

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class SpecError(ValueError):
    """A bad network description: one line naming file, line and field."""

    def __init__(self, message: str, *, field: str = "", path: str | None = None,
                 line: int | None = None):
        self.message, self.field, self.path, self.line = message, field, path, line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path or "<spec>"
        if self.line is not None:
            where += f":{self.line}"
        return f"{where}: {self.field + ': ' if self.field else ''}{self.message}"


INPUT = "input"
MODES = ("batch", "minibatch", "stochastic", "online")
OPTIMIZERS = ("sgd", "adam")
INITS = ("uniform", "xavier", "he")
REDUCTIONS = ("sum", "mean")


@dataclass(frozen=True)
class Activation:
    """An activation: a registry name with its parameters, or a custom expression in x."""

    kind: str
    parameters: tuple[tuple[str, float], ...] = ()
    expr: str | None = None

    def forward(self) -> sp.Expr | None:
        """The forward form ``f(x)`` with parameters bound (None for softmax)."""
        if self.expr is not None:
            return parse_expression(self.expr, ("x",))
        rule = primitives.activation(self.kind)
        if rule.forward is None:
            return None
        return primitives.bind(rule.forward, dict(self.parameters))

    @property
    def vector(self) -> bool:
        return self.expr is None and primitives.activation(self.kind).vector


@dataclass(frozen=True)
class Layer:
    """A dense layer: z = A W^T + b, a = f(z), reading ``sources`` concatenated."""

    name: str
    units: int
    activation: Activation
    bias: bool = True
    sources: tuple[str, ...] = ()
    init: str | None = None


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
            return parse_expression(self.expr, ("y", "t"))
        return primitives.loss(self.kind).per_output


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
    weight_decay: float = 0.0  # fraction each weight shrinks after every update
    tolerance: float | None = None
    schedule: tuple[Phase, ...] = ()


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

    @property
    def n_inputs(self) -> int:
        return sum(size for _, size in self.inputs)

    @property
    def n_outputs(self) -> int:
        return self.layers[-1].units


# --------------------------------------------------------------------------- schema

_TOP_KEYS = {"name", "inputs", "layers", "loss", "training", "init", "description"}
_LAYER_KEYS = {"units", "activation", "bias", "name", "from", "init"}
_ACTIVATION_KEYS = {"kind", "expr", "slope", "alpha"}
_LOSS_KEYS = {"kind", "reduction", "weight_decay", "expr"}
_TRAINING_KEYS = {"mode", "optimizer", "learning_rate", "momentum", "epochs", "batch_size",
                  "seed", "weight_decay", "tolerance", "schedule"}
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
        out += f"[{part + 1}]" if isinstance(part, int) else (("." if out else "") + part)
    return out


class _Reader:
    """Validate a parsed spec dictionary into a :class:`NetworkSpec`."""

    def __init__(self, data: dict, path: str | None, text: str | None):
        self.data, self.path, self.locator = data, path, _Locator(text)

    def fail(self, where: tuple, message: str, line_of: tuple | None = None):
        line = self.locator.line(where if line_of is None else line_of)
        if line is None and (self.locator.keys or self.locator.sections):
            line = 1  # a missing top-level key: the top of the file
        raise SpecError(message, field=_field_name(where), path=self.path, line=line)

    def check_keys(self, table: Any, allowed: set, where: tuple, required=()):
        if not isinstance(table, dict):
            self.fail(where, f"expected a table, got {_typename(table)}")
        for key in table:
            if key not in allowed:
                hint = difflib.get_close_matches(key, sorted(allowed), n=1)
                suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
                self.fail((*where, key), f"unknown key '{key}'{suggestion}")
        for key in required:
            if key not in table:  # named as the field; located at its table's header
                self.fail((*where, key), f"missing key '{key}'", line_of=where)

    def integer(self, value: Any, where: tuple, minimum: int = 1) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(where, f"expected an integer, got {_typename(value)} {value!r}")
        if value < minimum:
            self.fail(where, f"must be at least {minimum}, got {value}")
        return value

    def number(self, value: Any, where: tuple, minimum: float | None = 0.0) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(where, f"expected a number, got {_typename(value)} {value!r}")
        if not math.isfinite(value):
            self.fail(where, f"must be finite, got {value}")
        if minimum is not None and value < minimum:
            self.fail(where, f"must be at least {minimum}, got {value}")
        return float(value)

    def choice(self, value: Any, options: tuple, where: tuple) -> str:
        if not isinstance(value, str) or value not in options:
            hint = difflib.get_close_matches(str(value), options, n=1)
            suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
            self.fail(where, f"unknown value {value!r}{suggestion} (one of: {', '.join(options)})")
        return value

    def string(self, value: Any, where: tuple) -> str:
        if not isinstance(value, str) or not value:
            self.fail(where, f"expected a non-empty string, got {_typename(value)} {value!r}")
        return value

    # -- sections

    def read(self) -> NetworkSpec:
        data = self.data
        self.check_keys(data, _TOP_KEYS, (), required=("inputs", "layers"))
        name = self.string(data.get("name", "network"), ("name",))
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", name):
            self.fail(("name",), f"'{name}' is not a valid name (letters, digits, _ and -)")
        inputs = self.read_inputs(data["inputs"])
        layers_data = data["layers"]
        if not isinstance(layers_data, list) or not layers_data:
            self.fail(("layers",), "expected at least one [[layers]] table")
        known = [group for group, _ in inputs] + ([INPUT] if len(inputs) > 1 else [])
        layers: list[Layer] = []
        for index, layer_data in enumerate(layers_data):
            layers.append(self.read_layer(layer_data, index, known, layers))
            known.append(layers[-1].name)
        loss = self.read_loss(data.get("loss", {}))
        self.check_output(layers, loss)
        return NetworkSpec(
            name=name, inputs=inputs, layers=tuple(layers), loss=loss,
            training=self.read_training(data.get("training", {})),
            init=self.read_init(data.get("init", {})), source=self.path,
        )

    def read_inputs(self, value: Any) -> tuple[tuple[str, int], ...]:
        if isinstance(value, dict):
            if not value:
                self.fail(("inputs",), "expected at least one input group")
            groups = []
            for group, size in value.items():
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", group) or group == INPUT:
                    self.fail(("inputs", group), f"'{group}' is not a valid input group name")
                groups.append((group, self.integer(size, ("inputs", group))))
            return tuple(groups)
        return ((INPUT, self.integer(value, ("inputs",))),)

    def read_layer(self, data: Any, index: int, known: list[str], earlier: list[Layer]) -> Layer:
        where = ("layers", index)
        self.check_keys(data, _LAYER_KEYS, where, required=("units",))
        units = self.integer(data["units"], (*where, "units"))
        name = self.string(data.get("name", f"layer{index + 1}"), (*where, "name"))
        if name in known or name == INPUT:
            self.fail((*where, "name"), f"name '{name}' is already used")
        if "from" in data:
            sources = data["from"]
            if isinstance(sources, str):
                sources = [sources]
            if not isinstance(sources, list) or not sources:
                self.fail((*where, "from"), "expected a list of layer names")
            for source in sources:
                if source not in known:
                    later = [d.get("name") for d in self.data["layers"][index:]
                             if isinstance(d, dict)]
                    if source in later:
                        self.fail((*where, "from"),
                                  f"'{source}' is this layer or a later one (a cycle); "
                                  "a layer can only read earlier layers")
                    hint = difflib.get_close_matches(str(source), known, n=1)
                    suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
                    self.fail((*where, "from"), f"unknown layer '{source}'{suggestion} "
                              f"(known here: {', '.join(known)})")
            if len(set(sources)) != len(sources):
                self.fail((*where, "from"), "a layer is listed twice")
            sources = tuple(sources)
        else:
            sources = (earlier[-1].name,) if earlier else (known[0] if len(known) == 1
                                                           else INPUT,)
        bias = data.get("bias", True)
        if not isinstance(bias, bool):
            self.fail((*where, "bias"), f"expected true or false, got {bias!r}")
        init = data.get("init")
        if init is not None:
            init = self.choice(init, INITS, (*where, "init"))
        activation = self.read_activation(data.get("activation", "identity"),
                                          (*where, "activation"))
        return Layer(name=name, units=units, activation=activation, bias=bias,
                     sources=sources, init=init)

    def read_activation(self, value: Any, where: tuple) -> Activation:
        if isinstance(value, str):
            value = {"kind": value}
        self.check_keys(value, _ACTIVATION_KEYS, where)
        if "expr" in value:
            if "kind" in value and value["kind"] != "custom":
                self.fail(where, "give either 'kind' or 'expr', not both")
            text = value["expr"]
            try:
                parse_expression(text, ("x",))
            except ExpressionError as exc:
                self.fail((*where, "expr"), str(exc))
            return Activation(kind="custom", expr=text)
        if "kind" not in value:
            self.fail(where, "missing key 'kind' (or 'expr' for a custom activation)")
        kind = value["kind"]
        try:
            rule = primitives.activation(kind)
        except primitives.UnknownPrimitive as exc:
            self.fail(where, exc.message)
        parameters = []
        for key in ("slope", "alpha"):
            if key in value:
                if key not in rule.parameters:
                    self.fail((*where, key), f"'{kind}' has no parameter '{key}'")
                parameters.append((key, self.number(value[key], (*where, key), None)))
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
                parse_expression(data["expr"], ("y", "t"))
            except ExpressionError as exc:
                self.fail((*where, "expr"), str(exc))
            return Loss("custom", reduction, decay, data["expr"])
        kind = data.get("kind", "sse")
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
        for key in ("learning_rate", "momentum", "weight_decay", "tolerance"):
            if key in data:
                kw[key] = self.number(data[key], (*where, key))
        for key, minimum in (("epochs", 1), ("batch_size", 1), ("seed", 0)):
            if key in data:
                kw[key] = self.integer(data[key], (*where, key), minimum)
        if "schedule" in data:
            phases = []
            if not isinstance(data["schedule"], list):
                self.fail((*where, "schedule"), "expected [[training.schedule]] tables")
            for index, phase in enumerate(data["schedule"]):
                at = (*where, "schedule", index)
                self.check_keys(phase, _PHASE_KEYS, at, required=("epoch",))
                phases.append(Phase(
                    epoch=self.integer(phase["epoch"], (*at, "epoch"), 0),
                    learning_rate=(self.number(phase["learning_rate"], (*at, "learning_rate"))
                                   if "learning_rate" in phase else None),
                    momentum=(self.number(phase["momentum"], (*at, "momentum"))
                              if "momentum" in phase else None),
                ))
            kw["schedule"] = tuple(sorted(phases, key=lambda p: p.epoch))
        return Training(**kw)

    def read_init(self, data: Any) -> Init:
        where = ("init",)
        if isinstance(data, str):
            data = {"kind": data}
        self.check_keys(data, _INIT_KEYS, where)
        kind = self.choice(data.get("kind", "xavier"), INITS, (*where, "kind"))
        value = self.number(data.get("range", 0.5), (*where, "range"))
        if value <= 0:
            self.fail((*where, "range"), "must be positive")
        return Init(kind, value)


def _typename(value: Any) -> str:
    return {dict: "a table", list: "an array", str: "a string", bool: "a boolean",
            int: "an integer", float: "a float"}.get(type(value), type(value).__name__)


# --------------------------------------------------------------------------- front ends

def spec_from_dict(data: dict, *, path: str | None = None, text: str | None = None) -> NetworkSpec:
    """Validate a spec dictionary (the parsed TOML) into a :class:`NetworkSpec`."""
    return _Reader(data, path, text).read()


def load_spec(path: str | Path) -> NetworkSpec:
    """Read and validate a TOML spec file.

    >>> load_spec("no/such/file.toml")
    Traceback (most recent call last):
    ...
    symgrad.spec.SpecError: no/such/file.toml: cannot read spec: file not found
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("cannot read spec: file not found", path=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read spec: {exc}", path=str(path)) from None
    return loads_spec(text, path=str(path))


def loads_spec(text: str, *, path: str = "<spec>") -> NetworkSpec:
    """Parse and validate TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        line = int(match.group(1)) if match else None
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise SpecError(f"malformed TOML: {message}", path=path, line=line) from None
    return spec_from_dict(data, path=path, text=text)


class Network:
    """Build a :class:`NetworkSpec` in Python, with the same checks as the TOML reader.

    >>> spec = (Network("skip", inputs=2)
    ...         .dense(1, "sigmoid", name="hidden")
    ...         .dense(1, "sigmoid", sources=["input", "hidden"])
    ...         .loss("sse").build())
    >>> spec.layers[1].sources
    ('input', 'hidden')
    """

    def __init__(self, name: str = "network", *, inputs: int | dict[str, int]):
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
