"""The derivation's command-line views: per-weight with named error signals, one weight,
a LaTeX fragment, the network figure, and the text format's sections."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sympy as sp

from symgrad.cli import main
from symgrad.derive import derive
from symgrad.expand import DeltaForm, per_weight_gradients
from symgrad.render import render_latex, render_text
from symgrad.spec import Network, load_spec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))
PDFLATEX = shutil.which("pdflatex")
needs_pdflatex = pytest.mark.skipif(PDFLATEX is None, reason="pdflatex is not installed")


def sigmoid_net(units: list[int], loss: str = "sse", **kw):
    net = Network("net", inputs=units[0])
    for n in units[1:]:
        net = net.dense(n, "sigmoid")
    return net.loss(loss, **kw).build()


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------ per weight, named deltas

@pytest.mark.parametrize("spec", [
    sigmoid_net([2, 2, 1]), sigmoid_net([2, 1, 1], "bce", weight_decay=0.1),
    Network(inputs=2).dense(1, "sigmoid", name="h").dense(1, "sigmoid", sources=["input", "h"])
    .loss("bce").build(),
    Network(inputs=3).dense(3, "relu").dense(2, "softmax").loss("cross_entropy").build(),
    Network(inputs=2).dense(2, {"expr": "x*tanh(log(1+exp(x)))"}).dense(1)
    .loss("mse", reduction="mean").build(),
], ids=["xor", "bce_decay", "skip", "softmax", "custom"])
def test_delta_form_equals_sympy_diff_of_the_scalar_loss(spec):
    """The named-delta form, substituted back, is SymPy's derivative of the scalar loss."""
    form, full = DeltaForm(spec), per_weight_gradients(spec, simplify=False)
    expanded = form.expanded()
    step = lambda e: e.replace(sp.Heaviside, lambda u, *_: sp.Heaviside(u, 0))  # noqa: E731
    rng = random.Random(0)
    symbols = set().union(*(m.free_symbols for m in full.values()),
                          *(m.free_symbols for m in expanded.values()))
    point = {s: sp.Float(rng.uniform(-1, 1)) for s in symbols}
    targets = sorted((s for s in symbols if s.name.startswith("t_")), key=str)
    weights = [rng.random() for _ in targets]
    point.update({s: sp.Float(w / sum(weights)) for s, w in zip(targets, weights)})
    for name in full:
        for got, want in zip(expanded[name], full[name]):
            assert abs(complex(sp.N(step(got).xreplace(point) - step(want).xreplace(point)))) \
                < 1e-12


def test_sigmoid_bce_cancellation_is_kept():
    form = DeltaForm(sigmoid_net([2, 2, 1], "bce"))
    out = dict(form.deltas)[sp.Symbol("delta2_0", real=True)]
    assert out == sp.Symbol("a2_0", real=True) - sp.Symbol("t_0", real=True)


def test_per_weight_output_grows_linearly(tmp_path, capsys):
    """A 57-parameter net (4-4-5-2, and 2-4-4-4-1) printed to a few kB, no line over 200."""
    sizes = {}
    for units in ([4, 4, 5, 2], [2, 4, 4, 4, 1], [4, 8, 5, 2]):
        spec = sigmoid_net(units)
        text = render_text(derive(spec), per_weight=DeltaForm(spec))
        assert max(len(line) for line in text.splitlines()) < 200
        sizes[tuple(units)] = len(text)
        latex = render_latex(derive(spec), per_weight=DeltaForm(spec))
        assert len(latex) < 60_000 and r"\resizebox" not in latex
    assert sizes[(2, 4, 4, 4, 1)] < 15_000
    # 4-8-5-2 has 93 parameters to 4-4-5-2's 57: the text grows by less than the ratio
    assert sizes[(4, 8, 5, 2)] / sizes[(4, 4, 5, 2)] < 93 / 57


def test_text_per_weight_has_no_hadamard_between_scalars():
    spec = sigmoid_net([2, 2, 1])
    text = render_text(derive(spec), per_weight=DeltaForm(spec))
    weights = text[text.index("Every weight, in scalars"):]
    assert "⊙" not in weights
    assert "dℓ/dW2[0,1] = δ2[0]*a1[1]" in weights
    assert "δ1[0] = a1[0]*(1 - a1[0])*δ2[0]*W2[0,0]" in weights
    dict_form = render_text(derive(spec), per_weight=per_weight_gradients(spec))
    assert "⊙" not in dict_form[dict_form.index("Every weight, in scalars"):]


def test_text_has_notation_recurrence_and_update():
    text = render_text(derive(load_spec(ROOT / "examples" / "xor_skip.toml")))
    for heading in ("Notation", "The general recurrence", "The update rule"):
        assert f"\n{heading}\n" in text
    assert "(R2) δl = dL/dAl ⊙ f_l'(Zl)" in text and "Δw(τ) = -ε dL/dw" in text
    assert "Δw(t)" not in text and "\\" not in text


def test_latex_per_weight_names_deltas_aligned():
    spec = sigmoid_net([2, 2, 1])
    source = render_latex(derive(spec), per_weight=DeltaForm(spec))
    weights = source[source.index(r"\section{Every weight, in scalars}"):]
    assert r"\delta^{(1)}_{0} &= a^{(1)}_{0} \left(1 - a^{(1)}_{0}\right)" in weights
    assert r"\partial \ell / \partial w^{(2)}_{01} &= \delta^{(2)}_{0}\, a^{(1)}_{1}" in weights
    assert "u_{1}" not in weights and r"\begin{gather*}" not in weights
    assert r"\Delta w(\tau)" in source and r"\Delta w(t)" not in source


# ------------------------------------------------------------------ the command line

def test_one_weight(capsys):
    code, out, _ = run(capsys, "derive", str(ROOT / "examples" / "xor.toml"), "--per-weight",
                       "--weight", "W2[0,1]")
    assert code == 0
    assert out.splitlines()[0] == "dℓ/dW2[0,1] = δ2[0]*a1[1]"
    assert "δ2[0] = a2[0]*(1 - a2[0])*(a2[0] - t[0])" in out
    assert "dW1" not in out and "δ1[0]" not in out  # that weight only


@pytest.mark.parametrize("entry", ["W2[1,0]", "W9[0,0]", "W2", "b1[5]", "W2[0,1,2]"])
def test_bad_weight_is_one_line_exit_2(capsys, entry):
    code, out, err = run(capsys, "derive", str(ROOT / "examples" / "xor.toml"), "--weight",
                         entry)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("symgrad: --weight")


def test_fragment_needs_latex(capsys):
    code, _, err = run(capsys, "derive", str(ROOT / "examples" / "xor.toml"), "--fragment")
    assert code == 2 and "--format latex" in err


def test_fragment_has_no_preamble(capsys):
    code, out, _ = run(capsys, "derive", str(ROOT / "examples" / "xor.toml"), "--format",
                       "latex", "--fragment")
    assert code == 0
    assert r"\documentclass" not in out and r"\begin{document}" not in out
    assert r"\end{document}" not in out and r"\usepackage" not in out.split("\n", 8)[-1]
    header = [line for line in out.splitlines() if line.startswith("%")]
    assert any(r"\usepackage{tikz}" in line for line in header)
    assert any(r"\usepackage{amsmath,amssymb}" in line for line in header)


@needs_pdflatex
def test_fragment_compiles_when_input(tmp_path, capsys):
    code, out, _ = run(capsys, "derive", str(ROOT / "examples" / "xor_skip.toml"), "--format",
                       "latex", "--fragment", "--per-weight")
    assert code == 0
    (tmp_path / "derivation.tex").write_text(out, encoding="utf-8")
    (tmp_path / "paper.tex").write_text(
        "\\documentclass{article}\n\\usepackage{amsmath,amssymb,booktabs,tabularx,graphicx,tikz}\n"
        "\\begin{document}\nBefore.\n\\input{derivation}\nAfter.\n\\end{document}\n",
        encoding="utf-8")
    result = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error",
                             "paper.tex"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout[-2000:]
    assert (tmp_path / "paper.pdf").exists()


# ------------------------------------------------------------------ the figure

def figure(source: str) -> str:
    return source[source.index(r"\begin{tikzpicture}"):source.index(r"\end{tikzpicture}")]


def test_figure_units_weight_skip_and_backward_flow():
    source = render_latex(derive(load_spec(ROOT / "examples" / "family_trees.toml")))
    pic = figure(source)
    assert r"\usepackage{tikz}" in source
    assert len(re.findall(r"\\node\[unit\]", pic)) <= 6 * 6  # at most six a column
    assert r"\vdots" in pic  # 36 inputs, 12 and 24 units: elided
    assert "skip" in pic  # layers 2 and 3 read columns that are not the previous one
    assert re.search(r"\{\$w\^\{\(\d\)\}_\{\d\d\}\$\}", pic)  # one labelled weight
    assert "back" in pic and r"\delta^{(5)}_{0}" in pic  # the error signals flow back


def test_figure_boxes_for_layers_without_units():
    lenet = figure(render_latex(derive(load_spec(ROOT / "examples" / "lenet_digits.toml"))))
    assert "conv" in lenet and "max pool" in lenet and "flatten" in lenet
    rnn = figure(render_latex(derive(load_spec(ROOT / "examples" / "char_rnn.toml"))))
    assert "recurrent" in rnn


@needs_pdflatex
def test_tikz_is_installed():
    """The figure needs TikZ (texlive-pictures, installed by .ci/run): no silent skip."""
    assert subprocess.run(["kpsewhich", "tikz.sty"], capture_output=True,
                          text=True).stdout.strip()


def test_ci_installs_tikz():
    assert "texlive-pictures" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
