"""Bad network descriptions: one-line messages naming file, line and field."""

from __future__ import annotations

import builtins
import os
import re
from pathlib import Path

import numpy as np
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


# ----------------------------------------------------------------------------- hostile input

LAYER2 = 'units = 1\nactivation = "sigmoid"'


@pytest.mark.parametrize("text,field,fragment,words", [
    (BASE.replace(LAYER2, 'units = 1\nactivation = { kind = 5 }'), "layers[2].activation",
     "kind = 5", ["expected an activation name", "integer 5"]),
    (BASE.replace(LAYER2, 'units = 1\nactivation = { kind = ["tanh"] }'), "layers[2].activation",
     "kind = [", ["expected an activation name", "['tanh']"]),
    (BASE.replace(LAYER2, "units = 1\nactivation = 5"), "layers[2].activation",
     "activation = 5", ["expected an activation name or a table"]),
    (BASE.replace('kind = "sse"', "kind = 5"), "loss.kind", "kind = 5", ["expected a loss name"]),
    (BASE.replace('kind = "sse"', 'kind = ["sse"]'), "loss.kind", "kind = [", ["loss name"]),
    (BASE + "\n[init]\nkind = 5\n", "init.kind", "kind = 5", ["expected one of uniform"]),
    (BASE + '\n[training]\nmode = ["batch"]\n', "training.mode", "mode =", ["expected one of"]),
    (BASE.replace('units = 1', 'units = 1\nfrom = [1]'), "layers[2].from", "from =",
     ["expected layer names"]),
    (BASE.replace('units = 1', 'units = 1\nfrom = [["hidden"]]'), "layers[2].from", "from =",
     ["expected layer names"]),
])
def test_wrong_types_are_one_line_errors(text, field, fragment, words):
    fails(text, field, line_of(text, fragment), *words)


@pytest.mark.parametrize("old,new,field,words", [
    ("units = 1", "units = 1e9", "layers[2].units", ["expected an integer", "float"]),
    ("units = 1", "units = 100001", "layers[2].units", ["at most 100,000"]),
    ("units = 1", "units = 9223372036854775808", "layers[2].units", ["at most 100,000"]),
    ("inputs = 2", "inputs = 10000001", "inputs", ["at most 10,000,000"]),
    ("inputs = 2", "inputs = { a = 2.0 }", "inputs.a", ["expected an integer"]),
])
def test_sizes_are_capped(old, new, field, words):
    text = BASE.replace(old, new)
    fails(text, field, line_of(text, new), *words)


def test_parameter_count_is_capped():
    text = BASE.replace("inputs = 2", "inputs = 1000000").replace("units = 2", "units = 51")
    fails(text, "layers[1]", line_of(text, "[[layers]]"), "more than 50,000,000 parameters")
    assert loads_spec(text.replace("units = 51", "units = 49")).layers[0].units == 49


LEAKY = BASE.replace(LAYER2, 'units = 1\nactivation = { kind = "leaky_relu", slope = SLOPE }')


@pytest.mark.parametrize("section,field,value,words", [
    ("[init]\nrange = VALUE", "init.range", "1e308", ["at most 1000"]),
    ("[init]\nrange = VALUE", "init.range", "0", ["greater than 0"]),
    ("[init]\nrange = VALUE", "init.range", "inf", ["finite"]),
    ("[training]\nlearning_rate = VALUE", "training.learning_rate", "1e308", ["at most 1000"]),
    ("[training]\nlearning_rate = VALUE", "training.learning_rate", "0", ["greater than 0"]),
    ("[training]\nlearning_rate = VALUE", "training.learning_rate", "-0.1", ["greater than 0"]),
    ("[training]\nlearning_rate = VALUE", "training.learning_rate", "nan", ["finite"]),
    ("[training]\nlearning_rate = VALUE", "training.learning_rate", "1" + "0" * 400,
     ["out of range", "401 digits"]),
    ("[training]\nmomentum = VALUE", "training.momentum", "5", ["less than 1"]),
    ("[training]\nmomentum = VALUE", "training.momentum", "1.0", ["less than 1"]),
    ("[training]\nmomentum = VALUE", "training.momentum", "-0.5", ["at least 0"]),
    ("[training]\nshrink = VALUE", "training.shrink", "1", ["less than 1"]),
    ("[training]\nweight_decay = VALUE", "training.weight_decay", "0.1", ["renamed 'shrink'"]),
    ("[training]\ntolerance = VALUE", "training.tolerance", "-0.1", ["at least 0"]),
    ("[training]\nepochs = VALUE", "training.epochs", "0", ["at least 1"]),
    ("[training]\nepochs = VALUE", "training.epochs", "1000000000", ["at most 100,000,000"]),
    ("[training]\nepochs = VALUE", "training.epochs", "1e3", ["expected an integer"]),
    ("[training]\nbatch_size = VALUE", "training.batch_size", "0", ["at least 1"]),
    ("[training]\nseed = VALUE", "training.seed", "-1", ["at least 0"]),
    ("[training]\nseed = VALUE", "training.seed", "4294967296", ["at most 4,294,967,295"]),
    ("[loss]\nweight_decay = VALUE", "loss.weight_decay", "1e308", ["at most 1000"]),
    ("[[training.schedule]]\nepoch = 0\nmomentum = VALUE", "training.schedule[1].momentum", "5",
     ["less than 1"]),
    ("[[training.schedule]]\nepoch = 0\nlearning_rate = VALUE",
     "training.schedule[1].learning_rate", "0", ["greater than 0"]),
])
def test_numbers_are_bounded(section, field, value, words):
    body = section.replace("VALUE", value)
    text = (BASE.replace('[loss]\nkind = "sse"\n', body + "\n") if section.startswith("[loss]")
            else BASE + "\n" + body + "\n")
    fails(text, field, line_of(text, body.splitlines()[-1]), *words)


def test_activation_parameters_are_bounded():
    for value, words in (("1e308", "at most 1000"), ("-1e308", "at least -1000"),
                         ("inf", "finite")):
        text = LEAKY.replace("SLOPE", value)
        fails(text, "layers[2].activation.slope", line_of(text, "slope ="), words)
    assert loads_spec(LEAKY.replace("SLOPE", "0.01")).layers[1].activation.parameters == (
        ("slope", 0.01),)


def test_valid_training_values_are_kept():
    text = BASE + ("\n[training]\nmomentum = 0.99\nlearning_rate = 1000\nseed = 4294967295\n"
                   "tolerance = 0\nshrink = 0\n")
    training = loads_spec(text).training
    assert (training.momentum, training.learning_rate, training.seed, training.tolerance) == \
        (0.99, 1000.0, 2**32 - 1, 0.0)


def test_schedule_epochs_must_increase():
    text = BASE + ("\n[training]\n[[training.schedule]]\nepoch = 20\n"
                   "[[training.schedule]]\nepoch = 5\n")
    fails(text, "training.schedule[2].epoch", line_of(text, "epoch = 5"),
          "not after the previous phase's epoch 20")
    text = text.replace("epoch = 5", "epoch = 20")
    fails(text, "training.schedule[2].epoch", line_of(text, "epoch = 20") + 2, "increasing")


@pytest.mark.parametrize("activation", ["tanh", "relu", "identity", "softplus"])
def test_bce_needs_sigmoid_outputs(activation):
    text = BASE.replace(LAYER2, f'units = 1\nactivation = "{activation}"').replace(
        'kind = "sse"', 'kind = "bce"')
    fails(text, "layers[2].activation", line_of(text, f'"{activation}"'), "bce needs outputs in "
          "(0, 1)", "sigmoid")


def test_bce_refuses_custom_activations():
    text = custom_activation("1 / (1 + exp(-x))").replace('kind = "sse"', 'kind = "bce"')
    fails(text, "layers[2].activation", line_of(text, "expr ="), "custom activation cannot be "
          "shown")
    text = BASE.replace('kind = "sse"', 'kind = "bce"')  # sigmoid output: accepted
    assert loads_spec(text).loss.kind == "bce"


@pytest.mark.parametrize("nest", [
    "x = " + "[" * 5000 + "]" * 5000,
    "x = " + "{ a = " * 5000 + "1" + " }" * 5000,
    "x = [" + "[" * 64 + "]" * 65,
])
def test_deep_nesting_is_refused(nest):
    text = BASE + nest + "\n"
    with pytest.raises(SpecError) as info:
        loads_spec(text, path="net.toml")
    assert str(info.value) == (f"net.toml:{line_of(text, 'x = ')}: malformed TOML: arrays or "
                               "tables nested more than 64 deep")


def test_brackets_in_strings_and_comments_do_not_count():
    deep = "[" * 5000
    text = BASE.replace('name = "t"', f'name = "t"\ndescription = "{deep}"  # {deep}\n'
                        f"# {deep}")
    assert loads_spec(text).name == "t"
    text = BASE.replace('name = "t"', f"name = \"t\"\ndescription = '''\n{deep}\n'''")
    assert loads_spec(text).name == "t"
    nested = "x = " + "[" * 64 + "]" * 64 + "\n" + BASE  # 64 deep is fine for the scanner
    fails(nested, "x", line_of(nested, "x = "), "unknown key 'x'")


def test_special_files_are_refused(tmp_path):
    fifo = tmp_path / "spec.fifo"
    os.mkfifo(fifo)  # opening a FIFO for reading would block without O_NONBLOCK
    for path in ("/dev/zero", str(fifo), str(tmp_path)):
        with pytest.raises(SpecError) as info:
            load_spec(path)
        assert str(info.value) == f"{path}: cannot read spec: not a regular file"


def test_large_and_binary_files_are_refused(tmp_path):
    big = tmp_path / "big.toml"
    big.write_text(BASE + "#" * (1 << 20) + "\n")
    with pytest.raises(SpecError, match=r"big.toml: cannot read spec: larger than 1,048,576 "):
        load_spec(big)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(BASE.encode() + b"# \xff\xfe\n")
    with pytest.raises(SpecError) as info:
        load_spec(binary)
    assert str(info.value) == f"{binary}:{BASE.count(chr(10)) + 1}: cannot read spec: not UTF-8 " \
        f"text (byte {len(BASE) + 3})"
    with pytest.raises(SpecError, match="larger than 1,048,576"):
        loads_spec(BASE + "#" * (1 << 20))


def make_layers(n: int) -> str:
    parts = ["inputs = 2\n"]
    for i in range(n):
        parts.append(f'[[layers]]\nname = "l{i}"\nunits = 2\nactivation = "tanh"\n')
    return "".join(parts)


def test_validation_is_linear_in_layers():
    import time

    def best(text: str) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            loads_spec(text)
            times.append(time.perf_counter() - start)
        return min(times)

    small, large = make_layers(200), make_layers(2000)
    assert len(loads_spec(large).layers) == 2000
    ratio = best(large) / best(small)
    assert ratio < 40, ratio  # linear: ~10; quadratic: ~100


@pytest.mark.parametrize("old,new,field,fragment", [
    ('name = "hidden"', 'name = "a\\u001b[31mb\\nsymgrad: all gradients correct"',
     "layers[1].name", "name = \"a"),
    ("units = 1", 'units = 1\nfrom = ["x\\u001b]0;title\\u0007\\r\\nsymgrad: ok\\u2028"]',
     "layers[2].from", "from ="),
    ('name = "t"', 'name = "t\\u0000\\u009b"', "name", 'name = "t'),
])
def test_control_characters_cannot_forge_lines(old, new, field, fragment):
    text = BASE.replace(old, new)
    error = fails(text, field, line_of(text, fragment))
    message = str(error)
    assert message.isprintable() and message.count("net.toml") == 1
    assert not re.search(r"[\x00-\x1f\x7f-\x9f\u2028]", message)


def test_spec_error_escapes_every_part():
    error = SpecError("bad\x1b[2J", field="layers[1].na\nme", path="a\rb.toml", line=3)
    assert str(error) == "a\\rb.toml:3: layers[1].na\\nme: bad\\x1b[2J"
    assert error.message == "bad\x1b[2J"  # the raw text stays available


@pytest.mark.parametrize("old,new,field", [
    ('name = "hidden"', 'name = "has space"', "layers[1].name"),
    ('name = "hidden"', 'name = "a-b"', "layers[1].name"),
    ('name = "hidden"', 'name = "1st"', "layers[1].name"),
    ('name = "hidden"', f'name = "{"a" * 65}"', "layers[1].name"),
    ("inputs = 2", "inputs = { 'bad name' = 2 }", "inputs.bad name"),
    ("inputs = 2", f"inputs = {{ {'g' * 65} = 2 }}", f"inputs.{'g' * 65}"),
])
def test_names_are_identifiers(old, new, field):
    text = BASE.replace(old, new)
    fails(text, field, line_of(text, new), "not a valid", "at most 64 characters")


def test_longest_names_are_accepted():
    text = BASE.replace('name = "hidden"', f'name = "{"a" * 64}"').replace(
        "inputs = 2", f"inputs = {{ {'g' * 64} = 2 }}")
    spec = loads_spec(text)
    assert spec.layers[0].name == "a" * 64 and spec.inputs == (("g" * 64, 2),)


# ----------------------------------------------------------------------------- data files (.npz)


def npz_error(path, **kwargs) -> str:
    import symgrad.tasks as tasks

    with pytest.raises(tasks.TaskError) as info:
        tasks.load_npz(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{Path(path).name}: "), message
    return message


def test_npz_zip_bomb_is_refused_before_decompressing(tmp_path, monkeypatch):
    import zipfile

    import symgrad.tasks as tasks

    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("X.npy", b"\0" * (3 << 20))  # 3 MiB of zeros, a few KiB compressed
        archive.writestr("T.npy", b"\0")
    assert bomb.stat().st_size < 100_000
    monkeypatch.setattr(tasks, "MAX_NPZ_BYTES", 2 << 20)
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("np.load reached"))
    assert "would unpack to 3,145,729 bytes; at most 2,097,152" in npz_error(bomb)


def test_npz_lying_header_is_refused(tmp_path):
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)})
    liar = tmp_path / "liar.npz"
    with zipfile.ZipFile(liar, "w") as archive:
        archive.writestr("X.npy", header.getvalue())
        archive.writestr("T.npy", header.getvalue())
    assert "array 'X' declares shape (1000000, 1000000) (8,000,000,000,000 bytes)" in \
        npz_error(liar)


@pytest.mark.parametrize("X,words", [
    (np.array([[1 + 2j, 0j]]), ["array 'X' is not numeric (dtype complex128)"]),
    (np.array([["1", "2"]]), ["array 'X' is not numeric (dtype <U1)"]),
    (np.array([[0.0, np.inf]]), ["NaN or infinite"]),
    (np.array([[0.0, np.nan]]), ["NaN or infinite"]),
])
def test_npz_bad_values(tmp_path, X, words):
    f = tmp_path / "bad.npz"
    np.savez(f, X=X, T=np.zeros((1, 1)))
    message = npz_error(f)
    for word in words:
        assert word in message


def test_npz_object_arrays_are_refused(tmp_path):
    f = tmp_path / "obj.npz"
    np.savez(f, X=np.array([[{"a": 1}, None]], dtype=object), T=np.zeros((1, 1)))
    assert "array 'X' holds Python objects" in npz_error(f)


def test_npz_missing_arrays_and_shapes(tmp_path):
    f = tmp_path / "d.npz"
    np.savez(f, X=np.zeros((3, 2)))
    assert npz_error(f) == "d.npz: missing array 'T' (found: X)"
    np.savez(f, X=np.zeros((3, 1, 4, 4)), T=np.zeros((3, 2)))
    assert npz_error(f, input_shape=(1, 4, 3)) == \
        "d.npz: array 'X' has shape (3, 1, 4, 4) but the network takes (N, 1, 4, 3)"
    assert "must be 2-D" in npz_error(f)  # image data without an image network
    from symgrad.tasks import load_npz

    task = load_npz(f, input_shape=(1, 4, 4))
    assert task.X.shape == (3, 16) and task.T.shape == (3, 2)
