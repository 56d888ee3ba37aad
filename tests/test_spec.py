"""Bad network descriptions: one-line messages naming file, line and field."""

from __future__ import annotations

import builtins
import os
import re
from pathlib import Path

import pytest
import sympy

from symgrad.spec import Network, SpecError, load_spec, loads_spec

ROOT = Path(__file__).resolve().parents[1]

BASE = """name = "t"
inputs = 2

[[layers]]
name = "hidden"
units = 2
activation = "sigmoid"

[[layers]]
units = 1
activation = "sigmoid"

[loss]
kind = "sse"
"""


def line_of(text: str, fragment: str) -> int:
    """The 1-based line of the first line containing ``fragment``."""
    for number, line in enumerate(text.splitlines(), start=1):
        if fragment in line:
            return number
    raise AssertionError(f"{fragment!r} not in text")


def fails(text: str, field: str, line: int, *words: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        loads_spec(text, path="net.toml")
    error = info.value
    message = str(error)
    assert "\n" not in message
    assert message.startswith(f"net.toml:{line}: {field}: "), message
    assert error.field == field and error.line == line and error.path == "net.toml"
    for word in words:
        assert word in message, (word, message)
    return error


def test_base_is_valid():
    spec = loads_spec(BASE)
    assert [layer.units for layer in spec.layers] == [2, 1]


def test_malformed_toml():
    text = "inputs = 2\n[[layers]\nunits = 1\n"
    with pytest.raises(SpecError) as info:
        loads_spec(text, path="net.toml")
    assert str(info.value).startswith("net.toml:2: malformed TOML: ")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("key", ["inputs", "layers"])
def test_missing_top_level_key(key):
    text = "\n".join(line for line in BASE.splitlines() if not line.startswith(key)
                     and not (key == "layers" and line.startswith(("[[", "units", "activ",
                                                                   "name = \"hidden"))))
    fails(text, key, 1, f"missing key '{key}'")


def test_missing_units():
    text = BASE.replace("units = 1\n", "")
    second_header = [n for n, line in enumerate(text.splitlines(), 1) if line == "[[layers]]"][1]
    fails(text, "layers[2].units", second_header, "missing key 'units'")


@pytest.mark.parametrize("text,field,fragment,suggestion", [
    (BASE.replace('inputs = 2', 'inputs = 2\nlayer = 3'), "layer", "layer = 3", "layers"),
    (BASE.replace('units = 1', 'units = 1\nactivaton = "tanh"'), "layers[2].activaton",
     "activaton", "activation"),
    (BASE.replace('kind = "sse"', 'kind = "sse"\nreduce = "sum"'), "loss.reduce", "reduce",
     "reduction"),
    (BASE + "\n[training]\nlearning_rte = 0.1\n", "training.learning_rte", "learning_rte",
     "learning_rate"),
    (BASE + "\n[training]\nepochs = 5\n[[training.schedule]]\nepoch = 1\nlearnig_rate = 1.0\n",
     "training.schedule[1].learnig_rate", "learnig_rate", "learning_rate"),
    (BASE + "\n[init]\nrang = 0.1\n", "init.rang", "rang", "range"),
    (BASE.replace('activation = "sigmoid"\n\n[loss]',
                  '[layers.activation]\nkind = "leaky_relu"\nslop = 0.1\n\n[loss]'),
     "layers[2].activation.slop", "slop", "slope"),
])
def test_unknown_keys_suggest_the_nearest(text, field, fragment, suggestion):
    fails(text, field, line_of(text, fragment), "unknown key", f"did you mean '{suggestion}'")


def test_unknown_activation_and_loss():
    text = BASE.replace('activation = "sigmoid"\n\n[loss]', 'activation = "sigmod"\n\n[loss]')
    fails(text, "layers[2].activation", line_of(text, "sigmod"), "unknown activation 'sigmod'",
          "did you mean 'sigmoid'")
    text = BASE.replace('kind = "sse"', 'kind = "ssr"')
    fails(text, "loss.kind", line_of(text, "ssr"), "unknown loss 'ssr'", "did you mean 'sse'")


@pytest.mark.parametrize("value,words", [
    ("0", ["must be at least 1, got 0"]),
    ("-3", ["must be at least 1, got -3"]),
    ("1.5", ["expected an integer", "float"]),
    ('"one"', ["expected an integer", "string"]),
    ("true", ["expected an integer", "boolean"]),
])
def test_bad_units(value, words):
    text = BASE.replace("units = 1", f"units = {value}")
    fails(text, "layers[2].units", line_of(text, f"units = {value}"), *words)


def test_from_unknown_layer_suggests():
    text = BASE.replace("units = 1", 'units = 1\nfrom = ["hiden"]')
    fails(text, "layers[2].from", line_of(text, "from ="), "unknown layer 'hiden'",
          "did you mean 'hidden'")


def test_from_later_layer_is_a_cycle():
    text = BASE.replace("units = 2\n", 'units = 2\nfrom = ["out"]\n').replace(
        "units = 1", 'units = 1\nname = "out"')
    fails(text, "layers[1].from", line_of(text, "from ="), "cycle")
    text = BASE.replace("units = 2\n", 'units = 2\nfrom = ["hidden"]\n')
    fails(text, "layers[1].from", line_of(text, "from ="), "cycle")


def test_unused_layer():
    text = BASE.replace("units = 1", 'units = 1\nfrom = ["input"]')
    fails(text, "layers[1]", line_of(text, "[[layers]]"), "feeds nothing")


def test_cross_entropy_needs_softmax():
    text = BASE.replace('kind = "sse"', 'kind = "cross_entropy"')
    fails(text, "loss.kind", line_of(text, "cross_entropy"), "softmax")


def test_softmax_with_bce():
    text = BASE.replace('units = 1\nactivation = "sigmoid"',
                        'units = 2\nactivation = "softmax"').replace('kind = "sse"', 'kind = "bce"')
    fails(text, "layers[2].activation", line_of(text, "softmax"), "cross_entropy")


# ----------------------------------------------------------------------------- custom expressions

PWNED = "/tmp/symgrad_pwned_by_spec_test"


@pytest.fixture
def no_evaluation(monkeypatch):
    """Make every evaluating entry point raise: the parser must never reach them."""
    def refuse(*args, **kwargs):
        raise AssertionError("evaluation attempted")

    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    monkeypatch.setattr(sympy, "sympify", refuse)
    monkeypatch.setattr(sympy, "parse_expr", refuse)
    if os.path.exists(PWNED):
        os.remove(PWNED)
    yield
    assert not os.path.exists(PWNED)


ACTIVATION_LINE = 'activation = "sigmoid"\n\n[loss]'


def custom_activation(expr: str) -> str:
    return BASE.replace(ACTIVATION_LINE, f'activation = {{ expr = "{expr}" }}\n\n[loss]')


@pytest.mark.parametrize("expr,words", [
    ("x * foo(x)", ["unknown function 'foo'"]),
    ("x + z", ["unknown name 'z'"]),
    (f"__import__('os').system('touch {PWNED}')", ["not allowed"]),
    ("x.__class__", ["'x.__class__' is not allowed"]),
    ("(lambda u: u)(x)", ["not allowed"]),
    ("x[0]", ["'x[0]' is not allowed"]),
    ("exp(x, base=2)", ["positional arguments only"]),
    ("x if x > 0 else 0", ["not allowed"]),
    ("'text'", ["not a number"]),
    ("x +", ["not a valid expression"]),
])
def test_custom_activation_rejected_without_evaluation(no_evaluation, expr, words):
    text = custom_activation(expr)
    fails(text, "layers[2].activation.expr", line_of(text, "expr ="), *words)


@pytest.mark.parametrize("expr", [
    f"__import__('os').system('touch {PWNED}')",
    "y.__class__.__bases__",
    "(lambda: 0)()",
    "t[0]",
    "open('x')",
])
def test_custom_loss_rejected_without_evaluation(no_evaluation, expr):
    text = BASE.replace('kind = "sse"', f'expr = "{expr}"')
    fails(text, "loss.expr", line_of(text, "expr ="))


def test_custom_expressions_accepted_without_evaluation(no_evaluation):
    text = custom_activation("x * tanh(log(1 + exp(x)))").replace(
        'kind = "sse"', 'expr = "(y - t)**4 / 4"')
    spec = loads_spec(text)
    assert spec.layers[1].activation.kind == "custom"
    assert spec.loss.kind == "custom"


# ----------------------------------------------------------------------------- front ends agree


def test_toml_and_python_api_give_equal_specs():
    text = """name = "skip"
inputs = { a = 2, b = 1 }

[[layers]]
name = "h"
units = 3
from = ["a"]
activation = { kind = "leaky_relu", slope = 0.1 }

[[layers]]
units = 2
from = ["input", "h"]
activation = "softmax"
bias = false

[loss]
kind = "cross_entropy"
reduction = "mean"
weight_decay = 0.01

[training]
learning_rate = 0.5
epochs = 10
"""
    from_toml = loads_spec(text)
    from_python = (Network("skip", inputs={"a": 2, "b": 1})
                   .dense(3, {"kind": "leaky_relu", "slope": 0.1}, name="h", sources=["a"])
                   .dense(2, "softmax", sources=["input", "h"], bias=False)
                   .loss("cross_entropy", reduction="mean", weight_decay=0.01)
                   .training(learning_rate=0.5, epochs=10)
                   .build())
    assert from_toml.source == "<spec>" and from_python.source is None
    assert from_toml == from_python.__class__(**{**from_python.__dict__, "source": "<spec>"})


def test_python_api_errors_have_fields():
    with pytest.raises(SpecError) as info:
        Network(inputs=2).dense(0, "tanh").build()
    assert str(info.value) == "<spec>: layers[1].units: must be at least 1, got 0"


def test_xor_example_loads_verbatim():
    path = ROOT / "examples" / "xor.toml"
    spec = load_spec(path)
    assert spec.name == "xor" and spec.n_inputs == 2
    assert [(layer.units, layer.activation.kind) for layer in spec.layers] == \
        [(2, "sigmoid"), (1, "sigmoid")]
    assert spec.loss.kind == "sse" and spec.loss.reduction == "sum"
    assert spec == loads_spec(path.read_text(), path=str(path))


def test_missing_file():
    with pytest.raises(SpecError, match=re.escape("cannot read spec: file not found")):
        load_spec(ROOT / "no" / "such.toml")
