"""The operation registry: every row has a rule for each step it makes, and a proof obligation.

The chain rule is one loop over the graph; these tests pin the contract
that makes that possible: an operation without a row is a named error, every
rule a derivation uses is described by some row, and every row is covered
by a test that compares its VJP with an independent oracle.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path

import numpy as np
import pytest

from symgrad import ops
from symgrad.codegen import generate_module_source, load_module
from symgrad.derive import derive
from symgrad.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]


def test_missing_row_is_a_named_error():
    with pytest.raises(ops.MissingRule, match="no registry row for the operation 'nope'"):
        ops.row("nope")
    with pytest.raises(ops.MissingRule, match="rule 'nope'"):
        ops.rule("nope")


@pytest.mark.parametrize("path", sorted(glob.glob(str(ROOT / "examples" / "*.toml"))),
                         ids=lambda p: Path(p).stem)
def test_every_step_of_every_example_has_a_described_rule(path):
    derivation = derive(load_spec(path))
    for step in derivation.steps:
        rule = ops.rule(step.rule)
        assert rule.description and rule.comment
    graph_ops = {node.op for node in derivation.graph.nodes}
    assert graph_ops <= set(ops.kinds())


def test_every_row_has_a_proof_obligation_test():
    """Each row's module names the test file that proves its VJP; that file exists and tests it."""
    for kind in ops.kinds():
        row = ops.row(kind)
        module = __import__(type(row).__module__, fromlist=["_"])
        if kind in ("input", "slice"):
            continue  # data: nothing flows back
        named = set(re.findall(r"tests/(test_\w+\.py)", module.__doc__ or ""))
        assert named, f"row {kind!r}: its module docstring names no proof test"
        for name in named:
            assert (ROOT / "tests" / name).is_file(), f"row {kind!r}: {name} is missing"


def test_a_single_named_input_group_is_the_whole_input():
    from symgrad.derive import derive
    from symgrad.spec import loads_spec

    spec = loads_spec('inputs = { grp_a = 2 }\n[[layers]]\nunits = 1\nfrom = ["grp_a"]\n')
    module = load_module(generate_module_source(spec), name="single_group")
    params = module.init_params(seed=0)
    X, T = np.array([[1.0, 2.0]]), np.array([[0.5]])
    value, grads = module.loss_and_grad(params, X, T)
    y = X @ params["W1"].T + params["b1"]
    np.testing.assert_allclose(grads["W1"], (y - T).T @ X)  # sse: dL/dW = (y - t) x^T
    assert str(derive(spec).steps[0].expr) == "X*W1.T + 1*b1.T"
