"""A sweep of hostile and broken inputs through the command line: each is one line, exit 2.

Every case runs ``symgrad`` in-process on a spec text (and, for some, extra
arguments or files) and must end with exit code 0 or 2 (1 only where a
check rightly finds a wrong gradient), at most one line on stderr, no
traceback, and within a time bound that only catches hangs.  A second,
hypothesis-driven test throws random values at every spec field.
"""

from __future__ import annotations

import string
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from symgrad import cli
from symgrad.errors import BadInput
from symgrad.spec import spec_from_dict

BASE = 'inputs = 2\n[[layers]]\nunits = 2\nactivation = "tanh"\n[[layers]]\nunits = 1\n'

SPECS = {
    "kind int": 'inputs = 2\n[[layers]]\nkind = 5\nunits = 1\n',
    "kind list": 'inputs = 2\n[[layers]]\nkind = ["tanh"]\nunits = 1\n',
    "activation int": 'inputs = 2\n[[layers]]\nunits = 1\nactivation = 5\n',
    "units huge": 'inputs = 2\n[[layers]]\nunits = 1000000000\n',
    "units 2**63": 'inputs = 2\n[[layers]]\nunits = 9223372036854775807\n',
    "units float": 'inputs = 2\n[[layers]]\nunits = 1e9\n',
    "units zero": 'inputs = 2\n[[layers]]\nunits = 0\n',
    "inputs negative": 'inputs = -3\n[[layers]]\nunits = 1\n',
    "init range 1e308": BASE + '[init]\nkind = "uniform"\nrange = 1e308\n',
    "slope 1e308": 'inputs = 2\n[[layers]]\nunits = 1\n'
                   'activation = { kind = "leaky_relu", slope = 1e308 }\n',
    "momentum 5": BASE + '[training]\nmomentum = 5\n',
    "learning rate nan": BASE + '[training]\nlearning_rate = nan\n',
    "epochs negative": BASE + '[training]\nepochs = -1\n',
    "seed negative": BASE + '[training]\nseed = -1\n',
    "bce on tanh": 'inputs = 2\n[[layers]]\nunits = 1\nactivation = "tanh"\n[loss]\nkind = "bce"\n',
    "bce on relu": 'inputs = 2\n[[layers]]\nunits = 1\nactivation = "relu"\n[loss]\nkind = "bce"\n',
    "ce on sigmoid": 'inputs = 2\n[[layers]]\nunits = 2\nactivation = "sigmoid"\n'
                     '[loss]\nkind = "cross_entropy"\n',
    "nested 5000": "x = " + "[" * 5000 + "]" * 5000 + "\n",
    "unknown key": BASE + "[loss]\nknd = 'sse'\n",
    "unknown activation": 'inputs = 2\n[[layers]]\nunits = 1\nactivation = "tanhh"\n',
    "not toml": "inputs = = 2\n",
    "no layers": "inputs = 2\n",
    "ansi name": 'name = "\\u001b[31mred"\n' + BASE,
    "newline name": 'name = "a\\nsymgrad: forged"\n' + BASE,
    "layer name payload": 'inputs = 2\n[[layers]]\nname = "x\\"\\"\\"; import os"\nunits = 1\n',
    "from unknown": 'inputs = 2\n[[layers]]\nunits = 1\nfrom = ["nowhere"]\n',
    "expr 9**9**9**9": 'inputs = 2\n[[layers]]\nunits = 1\nactivation = { expr = "9**9**9**9" }\n',
    "expr x**(10**100)": 'inputs = 2\n[[layers]]\nunits = 1\n'
                         'activation = { expr = "x**(10**100)" }\n',
    "expr (x+1)**1000": 'inputs = 2\n[[layers]]\nunits = 1\nactivation = { expr = "(x+1)**1000" }\n',


    "expr exp(x, x)": 'inputs = 2\n[[layers]]\nunits = 1\nactivation = { expr = "exp(x, x)" }\n',
    "expr 1/0": 'inputs = 2\n[[layers]]\nunits = 1\nactivation = { expr = "1/0 + x" }\n',
    "expr constant": 'inputs = 2\n[[layers]]\nunits = 1\nactivation = { expr = "x*0" }\n',
    "expr complex": 'inputs = 2\n[[layers]]\nunits = 1\nactivation = { expr = "log(-1)*x" }\n',
    "expr dunder": 'inputs = 2\n[[layers]]\nunits = 1\n'
                   'activation = { expr = "__import__(\'os\').system(\'id\')" }\n',
    "loss t**2": BASE + '[loss]\nexpr = "t**2"\n',
    "conv on flat": 'inputs = 4\n[[layers]]\nkind = "conv2d"\nfilters = 2\nkernel = 3\n',
    "kernel too big": 'inputs = { shape = [1, 4, 4] }\n[[layers]]\nkind = "conv2d"\nfilters = 2\n'
                      'kernel = 7\n[[layers]]\nkind = "flatten"\n[[layers]]\nunits = 1\n',
    "stride misfit": 'inputs = { shape = [1, 6, 6] }\n[[layers]]\nkind = "conv2d"\nfilters = 2\n'
                     'kernel = 3\nstride = 2\n[[layers]]\nkind = "flatten"\n[[layers]]\nunits = 1\n',
    "dense after conv": 'inputs = { shape = [1, 4, 4] }\n[[layers]]\nkind = "conv2d"\nfilters = 2\n'
                        'kernel = 3\n[[layers]]\nunits = 1\n',
    "conv after flatten": 'inputs = { shape = [1, 4, 4] }\n[[layers]]\nkind = "flatten"\n'
                          '[[layers]]\nkind = "conv2d"\nfilters = 2\nkernel = 1\n[[layers]]\nunits = 1\n',
    "dropout rate 1": BASE.replace('[[layers]]\nunits = 1\n', '[[layers]]\nkind = "dropout"\n'
                                   'rate = 1.0\n[[layers]]\nunits = 1\n'),
}

#: Valid but once costly: accepted, within the time bound (they hung or crashed before).
COSTLY = {
    "expr nested sinh": 'inputs = 2\n[[layers]]\nunits = 1\nactivation = { expr = "'
                        + "sinh(" * 12 + "x" + ")" * 12 + '" }\n',
    "expr 1000 terms": 'inputs = 2\n[[layers]]\nunits = 1\nactivation = { expr = "'
                       + "+".join(["x"] * 150) + '" }\n',
    "expr 1500 minuses": 'inputs = 2\n[[layers]]\nunits = 1\nactivation = { expr = "'
                         + "-" * 1500 + 'x" }\n',
}

COMMANDS = [["derive"], ["derive", "--format", "latex"], ["derive", "--format", "markdown"],
            ["generate"]]


def run(capsys, argv):
    start = time.monotonic()
    code = cli.main([str(a) for a in argv])
    elapsed = time.monotonic() - start
    out, err = capsys.readouterr()
    return code, out, err, elapsed


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
@pytest.mark.parametrize("name", sorted(SPECS))
def test_hostile_spec_is_one_line_and_exit_2(capsys, tmp_path, name, command):
    path = tmp_path / "hostile.toml"
    path.write_text(SPECS[name], encoding="utf-8")
    code, _, err, elapsed = run(capsys, [command[0], path, *command[1:]])
    assert code == 2, (name, code, err)
    assert err.count("\n") == 1 and err.startswith("symgrad: "), err
    assert "Traceback" not in err and "\x1b" not in err
    assert str(path) in err  # names the file
    assert elapsed < 60


@pytest.mark.parametrize("name", sorted(COSTLY))
def test_costly_expression_is_bounded(capsys, tmp_path, name):
    path = tmp_path / "costly.toml"
    path.write_text(COSTLY[name], encoding="utf-8")
    code, _, err, elapsed = run(capsys, ["generate", path])
    assert code in (0, 2) and err.count("\n") <= 1 and "Traceback" not in err
    assert elapsed < 60


def test_hostile_sweep_counts(capsys, tmp_path):
    """The whole table, every command: how many cases ran, and that none escaped."""
    escaped = []
    for name, text in SPECS.items():
        path = tmp_path / "h.toml"
        path.write_text(text, encoding="utf-8")
        for command in COMMANDS:
            code, _, err, _ = run(capsys, [command[0], path, *command[1:]])
            if code != 2 or err.count("\n") != 1:
                escaped.append((name, command, code, err))
    assert len(SPECS) * len(COMMANDS) >= 160
    assert escaped == []


FIELD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=string.printable + "\x1b\u202e\"'\\", max_size=30),
    st.lists(st.integers(-5, 50), max_size=4),
    st.dictionaries(st.sampled_from(["kind", "expr", "slope", "shape", "x"]),
                    st.one_of(st.integers(-3, 9), st.text(max_size=8)), max_size=3),
)
LAYER_KEYS = ["units", "activation", "kind", "bias", "name", "from", "filters", "kernel",
              "stride", "padding", "size", "rate", "init", "sequences"]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(inputs=st.one_of(st.integers(-2, 6), FIELD_VALUES),
       layer=st.dictionaries(st.sampled_from(LAYER_KEYS), FIELD_VALUES, max_size=4),
       loss=st.dictionaries(st.sampled_from(["kind", "reduction", "weight_decay", "expr"]),
                            FIELD_VALUES, max_size=3),
       training=st.dictionaries(st.sampled_from(["mode", "learning_rate", "momentum", "epochs",
                                                 "batch_size", "seed", "bptt", "schedule"]),
                                FIELD_VALUES, max_size=3))
def test_random_spec_fields_are_accepted_or_one_line(inputs, layer, loss, training):
    data = {"inputs": inputs, "layers": [layer, {"units": 1}], "loss": loss,
            "training": training}
    start = time.monotonic()
    try:
        spec_from_dict(data, path="fuzz.toml")
    except BadInput as exc:
        text = str(exc)
        assert "\n" not in text and "\r" not in text and text.startswith("fuzz.toml")
    assert time.monotonic() - start < 20
