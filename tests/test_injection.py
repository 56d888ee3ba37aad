"""Hostile text in a spec never becomes code, markup or terminal control.

Every string a user controls (network name, description, layer, ``from`` and
input-group names, custom expressions with trailing comments, init and training
choices, the spec's file name and the output name) is given payloads that would
run code if pasted into the generated module (``\"\"\"``, ``'''``, ``#``, line
breaks), template syntax, terminal escapes and HTML.  The validator may refuse a
payload with a one-line :class:`SpecError`; whatever it accepts must generate a
module that (a) runs nothing on import (each payload would create ``PWNED``) and
(b) has the same syntax tree as a module generated from a benign spec of the same
structure once every string constant is replaced by a placeholder: user text
changes string constants only.  The oracle is Python's own parser, not symgrad.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from symgrad.codegen import generate_module_source, load_module
from symgrad.derive import derive
from symgrad.render import render_latex, render_markdown, render_text
from symgrad.spec import SpecError, spec_from_dict

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

RUN = "__import__('os').system('touch PWNED')"
PAYLOADS = [
    f'"""; {RUN}; """',
    f"'''; {RUN}; '''",
    f'\\"""; {RUN} #',
    "\\",
    f"\n{RUN}\n",
    f"\r{RUN}\r",
    f"# x\n{RUN}",
    "{{ 7 * 7 }} {% raw %} %} {# #}",
    "ünïcödé ☃ 😀 \u2028\u2029\u202e",
    "\x1b[31mRED\x1b[0m\x1b]0;title\x07",
    "</script><script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "$(id) `id` ${IFS}",
    "| a | b |\n\nsymgrad: forged line",
    r"\input{/etc/passwd} \write18{id} $x$ ^_~%&",
]
IDS = [f"p{i}" for i in range(len(PAYLOADS))]

BASE = {
    "name": "net",
    "description": "a small network",
    "inputs": {"left": 1, "right": 1},
    "layers": [
        {"name": "hidden", "units": 2, "from": ["left", "right"],
         "activation": {"expr": "x * tanh(x)"}},
        {"name": "out", "units": 1, "from": ["hidden"], "activation": "sigmoid"},
    ],
    "loss": {"expr": "(y - t)**2"},
    "init": {"kind": "uniform", "range": 0.5},
    "training": {"mode": "batch", "optimizer": "sgd"},
}


def _name(data, text):
    data["name"] = text


def _description(data, text):
    data["description"] = text


def _layer_name(data, text):
    data["layers"][0]["name"] = text
    data["layers"][1]["from"] = [text]


def _from_name(data, text):
    data["layers"][1]["from"] = [text]


def _group(data, text):
    data["inputs"] = {text: 1, "right": 1}
    data["layers"][0]["from"] = [text, "right"]


def _activation_comment(data, text):
    data["layers"][0]["activation"] = {"expr": f"x * tanh(x)  # {text}"}


def _loss_comment(data, text):
    data["loss"] = {"expr": f"(y - t)**2 #{text}"}


def _init(data, text):
    data["init"]["kind"] = text


def _mode(data, text):
    data["training"]["mode"] = text


def _optimizer(data, text):
    data["training"]["optimizer"] = text


FIELDS = [_name, _description, _layer_name, _from_name, _group, _activation_comment,
          _loss_comment, _init, _mode, _optimizer]


def skeleton(source: str) -> str:
    """The module's syntax tree with every string constant replaced by one placeholder."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            node.value = "S"
    return ast.dump(tree)


@pytest.fixture(scope="module")
def benign():
    spec = spec_from_dict(copy.deepcopy(BASE), path="net.toml")
    derivation = derive(spec)
    source = generate_module_source(derivation, spec_path="net.toml", output_path="net.py")
    return derivation, skeleton(source)


def assert_inert(source: str, expected_skeleton: str, folder: Path, name: str):
    """Importing the module creates nothing; only string constants differ from benign."""
    before = sorted(os.listdir(folder))
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        module = load_module(source, name=f"injection_{name}")
        params = module.init_params(0)
        assert module.forward(params, np.array([[0.5, -0.5]])).shape == (1, 1)
    finally:
        os.chdir(cwd)
    assert sorted(os.listdir(folder)) == before
    assert skeleton(source) == expected_skeleton
    return module


@pytest.mark.parametrize("payload", PAYLOADS, ids=IDS)
@pytest.mark.parametrize("field", FIELDS, ids=[f.__name__[1:] for f in FIELDS])
def test_spec_strings_are_refused_or_inert(field, payload, benign, tmp_path):
    data = copy.deepcopy(BASE)
    field(data, payload)
    try:
        spec = spec_from_dict(data, path="net.toml")
    except SpecError as error:
        assert "\n" not in str(error) and "\r" not in str(error) and "\x1b" not in str(error)
        return
    source = generate_module_source(spec, spec_path="net.toml", output_path="net.py")
    assert_inert(source, benign[1], tmp_path, field.__name__)


@pytest.mark.parametrize("payload", PAYLOADS, ids=IDS)
def test_spec_path_and_output_name_are_inert(payload, benign, tmp_path):
    derivation, expected = benign
    spec_path, output = f"specs/{payload}.toml", f"{payload}.py"
    source = generate_module_source(derivation, spec_path=spec_path, output_path=output)
    module = assert_inert(source, expected, tmp_path, "paths")
    assert f"\nSpec:    {spec_path}\nCommand: " in module.__doc__  # the text, read back


def test_windows_path_makes_a_valid_module(benign, tmp_path):
    derivation, expected = benign
    source = generate_module_source(derivation, spec_path=r"examples\xor.toml",
                                    output_path=r"generated\xor.py")
    module = assert_inert(source, expected, tmp_path, "windows")
    assert r"Spec:    examples\xor.toml" in module.__doc__


def _renamed(derivation, texts):
    """The derivation with its spec's names replaced, past the validator (defence in depth)."""
    spec = derivation.spec
    layers = list(spec.layers)
    layers[0] = dataclasses.replace(layers[0], name=texts[0])
    layers[1] = dataclasses.replace(layers[1], name=texts[1], sources=(texts[0],))
    spec = dataclasses.replace(spec, name=texts[2], layers=tuple(layers), source=texts[3])
    return dataclasses.replace(derivation, spec=spec)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.text(max_size=24), min_size=6, max_size=6))
def test_random_text_changes_string_constants_only(texts, benign, tmp_path):
    derivation = _renamed(benign[0], texts)
    source = generate_module_source(derivation, spec_path=texts[4] or None,
                                    output_path=texts[5] or None)
    assert "\x00" not in source and "\r" not in source
    assert_inert(source, benign[1], tmp_path, "random")


def test_group_names_that_are_not_identifiers_never_reach_code():
    data = copy.deepcopy(BASE)
    spec = spec_from_dict(data, path="net.toml")
    hostile = f'left"""; {RUN}; """'
    layers = (dataclasses.replace(spec.layers[0], sources=(hostile, "right")), spec.layers[1])
    spec = dataclasses.replace(spec, inputs=((hostile, 1), ("right", 1)), layers=layers)
    with pytest.raises(ValueError, match="not a valid name in generated code"):
        generate_module_source(spec)


# --------------------------------------------------------------------------- the views

HOSTILE = ["<img src=x onerror=alert(1)>|", "\x1b[2J\nsymgrad: forged\r",
           r"\input{/etc/passwd}}{$", "t"]


def test_markdown_shows_names_as_inert_text(benign):
    plain = render_markdown(_renamed(benign[0], ["h", "o", "n", "s"]))
    hostile = render_markdown(_renamed(benign[0], HOSTILE))
    for raw in ("<img", "\x1b", "\r", "forged\n", "<script"):
        assert raw not in hostile
    assert "&#60;img src&#61;x onerror&#61;alert&#40;1&#41;&#62;&#124;" in hostile
    assert len(hostile.splitlines()) == len(plain.splitlines())
    rows = [line for line in hostile.splitlines() if line.startswith("| ")]
    assert [row.count("|") for row in rows] == [
        row.count("|") for row in plain.splitlines() if row.startswith("| ")]


def test_text_view_escapes_control_characters(benign):
    derivation = _renamed(benign[0], ["h", "o", "net\x1b[2J\nsymgrad: forged\r", "s"])
    plain = render_text(_renamed(benign[0], ["h", "o", "n", "s"]))
    hostile = render_text(derivation)
    assert "\x1b" not in hostile and "\r" not in hostile
    assert not any(line.startswith("symgrad:") for line in hostile.splitlines())
    assert hostile.splitlines()[0] == r"Backpropagation in the network net\x1b[2J\nsymgrad: forged\r"
    assert len(hostile.splitlines()) == len(plain.splitlines())


def test_latex_escapes_names(benign, tmp_path):
    plain = render_latex(_renamed(benign[0], ["h", "o", "n", "s"]))
    hostile = render_latex(_renamed(benign[0], HOSTILE))
    assert r"\input{" not in hostile and "\x1b" not in hostile
    assert r"\textbackslash{}input\{/etc/passwd\}\}\{\$" in hostile
    assert len(hostile.splitlines()) == len(plain.splitlines())
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed")
    (tmp_path / "doc.tex").write_text(hostile, encoding="utf-8")
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-no-shell-escape",
                             "doc.tex"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout[-2000:]


# --------------------------------------------------------------------------- the command line

def test_command_line_with_hostile_file_names(tmp_path):
    name = f'a"""{RUN}"""\\b'
    spec = tmp_path / f"{name}.toml"
    spec.write_text('name = "net"\ninputs = 2\n[[layers]]\nunits = 1\nactivation = "sigmoid"\n'
                    "[loss]\nexpr = '(y - t)**2 #\"\"\"; __import__(\"os\").system(\"touch PWNED\"); "
                    "\"\"\"'\n", encoding="utf-8")
    output = f"o'''{RUN}'''$(id).py"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC),
                                                                    os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-m", "symgrad", "generate", spec.name, "-o", output],
                            cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    run = subprocess.run([sys.executable, output, "--help"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([spec.name, output])
    module = load_module(tmp_path / output, name="injection_cli")
    assert f"Spec:    {spec.name}\n" in module.__doc__
    assert "loss custom ((-t + y)**2)" in module.__doc__
