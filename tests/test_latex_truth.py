"""The printed derivation says only true things: one regression test per statement found false.

Each test names the false statement it guards against; together with
``tests/test_render.py`` (every example compiles without overfull boxes) it
keeps the document mathematically right as the operation registry grows:
:func:`test_every_registry_rule_renders` renders a step of every rule the
registry has, so a new row without a view of its own still prints (from its
description and its expression's ``_latex``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sympy as sp

from symgrad import ops
from symgrad.derive import Derivation, Step, derive
from symgrad.expand import per_weight_gradients
from symgrad.latex import DerivationLatexPrinter, tighten
from symgrad.render import _Builder, render_latex, render_markdown, render_text
from symgrad.spec import Network, load_spec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))


def example(name: str):
    return derive(load_spec(ROOT / "examples" / f"{name}.toml"))


def section(source: str, title: str) -> str:
    start = source.index(rf"\section{{{title}}}")
    end = source.find(r"\section", start + 10)
    return source[start:end if end > 0 else None]


# ------------------------------------------------------------------ 1. the general recurrence

@pytest.mark.parametrize("name", ["family_trees", "xor_skip", "skip_mish", "xor"])
def test_recurrence_weight_gradient_reads_the_layer_input(name):
    """False: dL/dW = delta^T A^(l-1) for layers reading several sources or an input group."""
    text = section(render_latex(example(name)), "The general recurrence")
    assert r"\delta^{(l)\top} A^{(l-1)}" not in text
    assert r"\delta^{(l)\top} \bar A^{(l)}" in text
    assert r"\bar A^{(l)} = [\," in text  # defined: the sources side by side


def test_a0_and_weight_blocks_are_defined_in_every_document():
    """False: A^(0) used but never defined; W_[A] defined only for multi-input networks."""
    source = render_latex(example("xor"))
    notation = source[source.index(r"\textbf{Notation.}"):source.index(r"\section{The forward")]
    assert "A^{(0)} = X" in notation
    assert r"W^{(l)}_{[S]}" in notation
    assert r"W^{(m)}_{[A^{(l)}]}" in section(source, "The general recurrence")


def test_entrywise_recurrence_sums_over_the_consumers():
    """False: the entrywise form uses delta^(l+1) w^(l+1) beside 'sum over the layers m'."""
    text = section(render_latex(example("family_trees")), "The general recurrence")
    entrywise = text[text.index("Entry by entry"):]
    assert r"\delta^{(l+1)}" not in entrywise
    assert r"\sum_{m \,\text{reading}\, A^{(l)}} \sum_k \delta^{(m)}_{nk}" in entrywise
    plain = section(render_latex(example("xor")), "The general recurrence")
    assert r"\sum_k \delta^{(l+1)}_{nk} w^{(l+1)}_{kj}" in plain  # true in a plain chain


def test_one_name_for_the_loss():
    source = render_latex(example("xor"))
    assert r"\partial E" not in source and r"\Delta w(\tau)" in source  # t is a target
    assert "w(\\tau+1) = w(\\tau) + \\Delta w(\\tau)" in source


# ------------------------------------------------------------------ 2. ReLU

def test_relu_mask_is_an_iverson_bracket():
    """False: relu'(z) = H(z) = H(relu(z)) = H(a) with H undefined (SymPy: H(0) = 1/2)."""
    source = render_latex(example("relu_net"))
    assert not re.search(r"(?<![A-Za-z\\])H\\(left|mathopen)", source)
    assert r"\left[a > 0\right]" in source and r"\left[z > 0\right]" in source
    assert "Iverson" in source and r"$0$ at the kink $z = 0$" in source
    # the bracket is what the code computes: 0 at z = 0, so [relu(z) > 0] = [z > 0] everywhere
    z = sp.Symbol("z", real=True)
    for point in (-2, 0, sp.Rational(1, 3)):
        assert sp.Heaviside(z, 0).subs(z, point) == sp.Heaviside(sp.Max(0, z), 0).subs(z, point)
    assert sp.Heaviside(sp.Max(0, z)).subs(z, -2) != sp.Heaviside(z).subs(z, -2)  # SymPy's H


# ------------------------------------------------------------------ 3. per-weight

def xor_spec(**loss):
    return (Network("xor", inputs=2).dense(2, "sigmoid").dense(1, "sigmoid")
            .loss(loss.pop("kind", "sse"), **loss).build())


def test_per_weight_bias_has_one_index():
    """False: (dL/db^(1))_{00} and dL/db1[00]: a bias has one index."""
    spec = xor_spec()
    pw = per_weight_gradients(spec)
    source = render_latex(derive(spec), per_weight=pw)
    assert r"\frac{\partial L}{\partial b^{(1)}}\right)_{00}" not in source
    assert r"\left(\frac{\partial L}{\partial b^{(1)}}\right)_{0} &= \sum_{n} \delta^{(1)}_{n0}" \
        in source
    text = render_text(derive(spec), per_weight=pw)
    assert "dL/db1[0] =" in text and "dL/db1[00]" not in text


@pytest.mark.parametrize("loss", [dict(reduction="mean"), dict(weight_decay=0.1), dict()])
def test_per_weight_relation_to_the_matrix_form(loss):
    """False: 'each result is one term n of the sum over the batch' (mean: 1/N; decay: N λw)."""
    spec = xor_spec(**dict(loss))
    source = render_latex(derive(spec), per_weight=per_weight_gradients(spec))
    text = section(source, "Every weight, in scalars")
    assert "one term $n$ of the sum" not in text
    if loss.get("reduction") == "mean":
        assert r"average over the $N$ samples" in text
    else:
        assert "sum over the samples" in text
    if loss.get("weight_decay"):
        assert r"without its $\lambda w$ term" in text and r"add $\lambda w$ once" in text
    markdown = render_markdown(derive(spec), per_weight=per_weight_gradients(spec))
    assert "one term $n$ of the sum" not in markdown


# ------------------------------------------------------------------ 4. multi-source weights

@pytest.mark.parametrize("name", ["family_trees", "xor_skip", "skip_mish"])
def test_multi_source_weight_prose_matches_its_equation(name):
    """False: 'delta^(3)T A^(1), one column block per source' beside a block matrix."""
    d = example(name)
    source = render_latex(d)
    for step in d.steps:
        if step.rule != "weight":
            continue
        node = d.graph.node(f"z{step.layer}")
        start = source.index(rf"\paragraph{{({step.number})")
        prose = source[start:source.index(r"\begin{equation}", start)]
        if len(node.sources) > 1:
            assert r"\bigl[\," in prose and "one column" in prose
            assert not re.search(r"matrix product \$\\delta\^\{\(\d+\)\\top\} [A-Z]", prose)
        else:
            assert "one column block" not in prose


# ------------------------------------------------------------------ custom loss layout

def huber():
    return (Network("huber", inputs=2).dense(2, "tanh").dense(1)
            .loss(expr="min(abs(y-t),1)**2/2 + max(abs(y-t)-1,0)", reduction="mean").build())


def test_no_hadamard_sign_between_scalars_and_no_shrunk_equations():
    """False: 'L = 1/N (.) sum...' (a Hadamard sign between scalars), and a resizebox."""
    source = render_latex(derive(huber()))
    assert not re.search(r"\\frac\{1\}\{N\}\s*(\\\\\s*&\\quad\s*\{\}\s*)?\\odot", source)
    assert r"\resizebox" not in source
    decay = render_latex(derive(xor_spec(weight_decay=0.1)))
    assert not re.search(r"\\frac\{\\lambda\}\{2\}\s*(\\\\\s*&\\quad\s*\{\}\s*)?\\odot", decay)


def test_no_gap_after_function_names():
    source = render_latex(example("relu_net"))
    assert r"\max\left(" not in source and r"\max\mathopen{}\left(" in source
    assert tighten(r"\sigma\left(z\right)") == r"\sigma\mathopen{}\left(z\right)"


# ------------------------------------------------------------------ convolutions, every rule

def test_lenet_renders_with_kernels_and_the_convolution_section():
    d = example("lenet_digits")
    source = render_latex(d)
    kernel = d.graph.params["K1"]
    dims = r" \times ".join(map(str, kernel))
    assert rf"K^{{(1)}} \in \mathbb{{R}}^{{{dims}}}" in source
    assert r"\operatorname{rot180}" in source and "rotated by $180^\\circ$" in source
    assert "weight sharing" in source.lower() and "Tie rule" in source
    assert "first" in source[source.index("Tie rule"):][:200]
    assert render_markdown(d) and render_text(d)


AVG = """
name = "avg"
inputs = { shape = [1, 7, 7] }
[[layers]]
kind = "conv2d"
filters = 2
kernel = 3
padding = 1
activation = "relu"
[[layers]]
kind = "conv2d"
filters = 2
kernel = 3
stride = 2
padding = 1
activation = "tanh"
[[layers]]
kind = "avgpool2d"
size = 2
[[layers]]
kind = "flatten"
[[layers]]
units = 1
[loss]
kind = "sse"
"""


def test_average_pooling_and_stride_views():
    source = render_latex(derive(load_spec_text(AVG)))
    assert r"slope $1/4$" in source and r"\uparrow" in source
    assert "zeros between its entries" in source


def load_spec_text(text: str):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.toml"
        path.write_text(text, encoding="utf-8")
        return load_spec(path)


def test_every_registry_rule_renders():
    """A step of every rule the registry has renders, with a view of its own or the generic one."""
    d = example("lenet_digits")
    steps = list(d.steps)
    covered = {s.rule for s in steps}
    for spec in (example("family_trees").spec, example("xor").spec, example("relu_net").spec,
                 huber(), load_spec_text(AVG), example("xor_skip").spec,
                 example("skip_mish").spec,
                 Network(inputs=2).dense(3, "softmax").loss("sse").build(),
                 Network(inputs=2).dense(3, "identity").loss("hinge").build(),
                 Network(inputs=2).dense(2, "tanh", name="h").dense(2, "tanh", name="g")
                 .dense(1, sources=["h", "g"]).loss("sse").build()):
        covered |= {s.rule for s in derive(spec).steps}
    own_views = {rule for rule in ops.rules() if hasattr(_Builder, f"step_{rule}")}
    assert own_views <= covered, "a rule with its own view needs a spec here that uses it"
    a1 = sp.Symbol("a1", real=True)
    for rule in sorted(set(ops.rules()) - covered):
        expr = sp.Function("some_operation")(a1) * 2
        steps.append(Step(len(steps) + 1, "backward", "dL_da1", expr, rule,
                          (sp.Symbol("N"), 8, 8, 8), 1))
    synthetic = Derivation(d.spec, d.graph, steps, d.gradients)
    source = render_latex(synthetic)
    for step in steps:
        assert rf"\tag{{{step.number}}}" in source
    for rule in set(ops.rules()) - covered:
        title = ops.rule(rule).description.partition(":")[0]
        assert title.replace("_", r"\_")[:20] in source
    assert render_markdown(synthetic) and render_text(synthetic)


def test_printer_brackets_heaviside_in_arrays():
    p = DerivationLatexPrinter()
    assert p.doprint(sp.Symbol("dL_da1") * sp.Heaviside(sp.Symbol("a1"))) == \
        r"\frac{\partial L}{\partial A^{(1)}} \odot \left[A^{(1)} > 0\right]"
