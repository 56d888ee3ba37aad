"""The LaTeX, Markdown and text views of a derivation.

Every derivation must compile with ``pdflatex`` (texlive-latex-base and
-recommended) without errors and without overfull boxes; the test skips
only when ``pdflatex`` is not installed.  Golden files in ``tests/golden``
pin the exact output of two small networks; after an intended change,
regenerate them with::

    SYMGRAD_REGEN_GOLDEN=1 python -m pytest tests/test_render.py

They are compared only under the SymPy versions they were made with
(:data:`GOLDEN_SYMPY`), since SymPy's printing order may change between
releases.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import sympy as sp

from symgrad.derive import derive
from symgrad.latex import DerivationLatexPrinter, latex_width
from symgrad.render import render_latex, render_latex_body, render_markdown, render_text
from symgrad.spec import Network, load_spec

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).with_name("golden")
GOLDEN_SYMPY = ("1.14",)  # major.minor versions the golden files were made with
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))
PDFLATEX = shutil.which("pdflatex")


def built_specs() -> dict:
    return {
        "xor": Network("xor", inputs=2).dense(2, "sigmoid").dense(1, "sigmoid").loss("sse")
        .build(),
        "softmax": Network("softmax", inputs=4).dense(5, "relu").dense(3, "softmax")
        .loss("cross_entropy", reduction="mean", weight_decay=0.01)
        .training(momentum=0.9, shrink=0.001).build(),
        "skip": Network("skip", inputs=2).dense(1, "sigmoid", name="hidden")
        .dense(1, "sigmoid", sources=["input", "hidden"]).loss("bce").build(),
        "custom": Network("custom", inputs=2).dense(3, {"expr": "x*tanh(log(1+exp(x)))"})
        .dense(1).loss(expr="(y-t)**4").build(),
        "groups": Network("groups", inputs={"left": 2, "right_side": 1})
        .dense(2, "tanh", sources=["left"], name="hid_1")
        .dense(1, "leaky_relu", sources=["hid_1", "right_side"]).loss("mse", reduction="mean")
        .build(),
    }


def xor_per_weight(spec) -> dict:
    """dL/dw for every weight of one sample, written out in scalars as in symgrad.expand."""
    try:
        from symgrad.expand import per_weight_gradients
    except ImportError:  # build the same contract by hand
        per_weight_gradients = None
    if per_weight_gradients is not None:
        return per_weight_gradients(spec)
    x = [sp.Symbol(f"x_{i}", real=True) for i in range(2)]
    t = sp.Symbol("t_0", real=True)
    w1 = sp.Matrix(2, 2, lambda j, i: sp.Symbol(f"w^{{(1)}}_{{{j}{i}}}", real=True))
    b1 = sp.Matrix(2, 1, lambda j, _: sp.Symbol(f"b^{{(1)}}_{{{j}}}", real=True))
    w2 = sp.Matrix(1, 2, lambda j, i: sp.Symbol(f"w^{{(2)}}_{{{j}{i}}}", real=True))
    b2 = sp.Matrix(1, 1, lambda j, _: sp.Symbol(f"b^{{(2)}}_{{{j}}}", real=True))
    sig = lambda u: 1 / (1 + sp.exp(-u))  # noqa: E731
    hidden = [sig(w1[j, 0] * x[0] + w1[j, 1] * x[1] + b1[j]) for j in range(2)]
    y = sig(w2[0, 0] * hidden[0] + w2[0, 1] * hidden[1] + b2[0])
    loss = (y - t) ** 2 / 2
    return {name: m.applyfunc(lambda w: sp.diff(loss, w))
            for name, m in (("W1", w1), ("b1", b1), ("W2", w2), ("b2", b2))}


def compile_latex(source: str, directory: Path) -> str:
    """Run pdflatex; fail on an error or an overfull box; return the log."""
    (directory / "doc.tex").write_text(source, encoding="utf-8")
    result = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                            cwd=directory, capture_output=True, text=True, timeout=120)
    log = (directory / "doc.log").read_text(encoding="utf-8", errors="replace")
    errors = [line for line in log.splitlines() if line.startswith("!")]
    assert result.returncode == 0 and not errors, "\n".join(errors) or result.stdout[-3000:]
    overfull = [line for line in log.splitlines() if "Overfull \\hbox" in line]
    assert not overfull, "\n".join(overfull)
    assert (directory / "doc.pdf").exists()
    return log


needs_pdflatex = pytest.mark.skipif(PDFLATEX is None, reason="pdflatex is not installed")


@needs_pdflatex
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_compile(path, tmp_path):
    compile_latex(render_latex(derive(load_spec(path))), tmp_path)


@needs_pdflatex
@pytest.mark.parametrize("name", sorted(built_specs()))
def test_built_specs_compile(name, tmp_path):
    compile_latex(render_latex(derive(built_specs()[name])), tmp_path)


@needs_pdflatex
def test_per_weight_compiles(tmp_path):
    spec = built_specs()["xor"]
    source = render_latex(derive(spec), per_weight=xor_per_weight(spec))
    assert "Every weight, in scalars" in source
    assert r"\frac{\partial \ell}{\partial w^{(1)}_{01}}" in source
    compile_latex(source, tmp_path)


@needs_pdflatex
def test_repr_latex_compiles(tmp_path):
    d = derive(built_specs()["skip"])
    body = d._repr_latex_()
    assert body == render_latex_body(d)
    assert body.startswith(r"\begin{align}") and r"\tag{7}" in body
    compile_latex("\\documentclass{article}\n\\usepackage{amsmath,amssymb}\n"
                  "\\begin{document}\n" + body + "\n\\end{document}\n", tmp_path)


def test_document_content():
    d = derive(built_specs()["xor"])
    source = render_latex(d)
    for step in d.steps:  # numbers match the generated code's "# (n)" comments
        assert rf"\tag{{{step.number}}}" in source
    assert r"\frac{\partial L}{\partial A^{(2)}} \odot A^{(2)} \odot \left(1 - A^{(2)}\right)" \
        in source
    assert r"\sigma'(z) = \frac{e^{- z}}{\left(e^{- z} + 1\right)^{2}}" in source
    assert r"a \left(1 - a\right)" in source
    assert r"\delta^{(2)\top} A^{(1)}" in source and r"\delta^{(1)\top} \mathbf{1}_{N}" in source
    assert r"\Delta w(\tau) = -\varepsilon" in source and "Adam" in source
    assert r"\Delta w(t)" not in source  # t is the target; updates are counted by tau
    assert r"\in \mathbb{R}^{N \times 2}" in source


def test_softmax_skip_and_decay_content():
    softmax = render_latex(derive(built_specs()["softmax"]))
    assert "Lemma" in softmax and "Proof" in softmax and "= p_i - t_i" in softmax
    assert "confirms it" in softmax  # SymPy's check, as a side remark
    assert r"\frac{1}{N} \left(A^{(2)} - T\right)" in softmax
    assert r"\lambda W^{(2)}" in softmax and r"\frac{\lambda}{2}" in softmax
    skip = render_latex(derive(built_specs()["skip"]))
    assert r"W^{(2)}_{[A^{(1)}]}" in skip and r"W^{(2)\top}_{[X]}" in skip
    assert "A^{(2)} - T" in skip  # bce on a sigmoid: the slope cancels


def test_custom_activation_and_loss():
    source = render_latex(derive(built_specs()["custom"]))
    assert r"f_{1}(z) = z \tanh" in source and "f_{1}'(z)" in source
    assert r"\frac{\partial l}{\partial y} = 4 \left(y - t\right)^{3}" in source


def test_deterministic():
    spec = built_specs()["softmax"]
    assert render_latex(derive(spec)) == render_latex(derive(spec))
    assert render_markdown(derive(spec)) == render_markdown(derive(spec))


def test_markdown():
    d = derive(built_specs()["xor"])
    text = render_markdown(d, per_weight=xor_per_weight(built_specs()["xor"]))
    assert text.startswith("# Backpropagation in the network `xor`")
    assert "$$" in text and r"\tag{7}" in text and "| 1 | `layer1` |" in text
    assert "## Every weight, in scalars" in text
    assert text.count("$$") % 2 == 0
    assert d._repr_markdown_() == render_markdown(d)


def test_text():
    d = derive(built_specs()["xor"])
    text = render_text(d)
    assert str(d) == text
    assert "(7) δ2 = dL/dA2 ⊙ A2 ⊙ (1 - A2)    [N×1]" in text
    assert "(12) dL/dW1 = δ1ᵀ X    [2×2]" in text
    assert "\\" not in text  # no LaTeX in the terminal view
    with_weights = render_text(d, per_weight=xor_per_weight(built_specs()["xor"]))
    assert "Every weight, in scalars" in with_weights and "dL/dW1[01]" in with_weights
    assert "dL/db1[0] =" in with_weights and "dL/db1[00]" not in with_weights


def test_printer_pieces():
    p = DerivationLatexPrinter()
    one = sp.OneMatrix(sp.Symbol("N"), 1)
    b = sp.MatrixSymbol("b1", 2, 1)
    assert p.doprint(one * b.T) == r"\mathbf{1}_{N} b^{(1)\top}"
    assert p.doprint(sp.Symbol("a1") ** 2) == r"\left(A^{(1)}\right)^{2}"
    assert latex_width("x") < latex_width(r"\frac{\partial L}{\partial W^{(1)}}") < 6


def _golden_cases() -> dict:
    specs = built_specs()
    xor, skip = derive(specs["xor"]), derive(specs["skip"])
    return {"xor.tex": render_latex(xor), "xor.md": render_markdown(xor),
            "xor.txt": render_text(xor), "skip.tex": render_latex(skip)}


@pytest.mark.skipif(".".join(sp.__version__.split(".")[:2]) not in GOLDEN_SYMPY,
                    reason=f"golden files were made with SymPy {GOLDEN_SYMPY}")
@pytest.mark.parametrize("name", ["xor.tex", "xor.md", "xor.txt", "skip.tex"])
def test_golden(name):
    actual = _golden_cases()[name]
    path = GOLDEN / name
    if os.environ.get("SYMGRAD_REGEN_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(actual, encoding="utf-8")
    assert path.exists(), f"missing {path}; run with SYMGRAD_REGEN_GOLDEN=1"
    assert actual == path.read_text(encoding="utf-8"), (
        f"{name} changed; if intended, regenerate with SYMGRAD_REGEN_GOLDEN=1")
