"""Tests for ``symgrad verify`` (symgrad.verify) and formula proofs (symgrad.prove)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from symgrad.cli import main
from symgrad.derive import derive
from symgrad.prove import FormulaError, prove_gradient_formula
from symgrad.spec import Network, load_spec
from symgrad.verify import (
    VerifyInputError,
    _draw,
    _reference,
    load_grad_function,
    verify_gradient,
)

ROOT = Path(__file__).resolve().parents[1]
RELU_SPEC = ROOT / "examples" / "relu_net.toml"
RELU_GRAD = ROOT / "tests" / "mutants" / "relu_net.py"
SIG3_SPEC = ROOT / "tests" / "mutants" / "sig3.toml"
CLF_SPEC = ROOT / "tests" / "mutants" / "softmax_clf.toml"


def write(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def wrapped(tmp_path: Path, name: str, body: str) -> Path:
    """A gradient file that wraps the correct ReLU gradient, then changes its result."""
    head = f"""
        import sys
        import numpy as np
        sys.path.insert(0, {str(RELU_GRAD.parent)!r})
        from relu_net import grad as correct
    """
    path = tmp_path / name
    path.write_text(textwrap.dedent(head) + textwrap.dedent(body), encoding="utf-8")
    return path


def cli(*args: str) -> int:
    return main(["verify", *map(str, args)])


# --------------------------------------------------------------------------- command line


def test_cli_correct_gradient_exits_0(capsys):
    assert cli(RELU_SPEC, "--grad", f"{RELU_GRAD}:grad") == 0
    out = capsys.readouterr().out
    assert "RESULT: CORRECT" in out and "W1" in out


def test_cli_wrong_gradient_exits_1_and_names_the_mistake(tmp_path, capsys):
    path = wrapped(tmp_path, "flip.py", """
        def grad(params, X, T):
            g = correct(params, X, T)
            g["W2"] = -g["W2"]
            return g
    """)
    assert cli(RELU_SPEC, "--grad", f"{path}:grad") == 1
    out = capsys.readouterr().out
    assert "RESULT: WRONG (W2)" in out
    assert "[sign_flipped] W2" in out
    assert "wrong entries" in out and "XXXXX" in out


def test_cli_json(tmp_path, capsys):
    path = wrapped(tmp_path, "half.py", """
        def grad(params, X, T):
            g = correct(params, X, T)
            g["b3"] = g["b3"] / 2
            return g
    """)
    assert cli(RELU_SPEC, "--grad", f"{path}:grad", "--json", "--points", "2",
               "--seed", "3") == 1
    data = json.loads(capsys.readouterr().out)
    assert data["passed"] is False
    report = data["gradient"]
    assert report["failed"] == ["b3"] and report["points"] == 2 and report["seed"] == 3
    b3 = report["params"]["b3"]
    assert b3["passed"] is False and b3["mismatch_indices"] == [[0]]
    assert b3["diagnoses"][0]["code"] == "scaled"
    assert report["params"]["W1"]["passed"] is True


@pytest.mark.parametrize("body,needle", [
    ("def grad(params, X, T):\n    return 3\n", "returned int, expected a dict"),
    ("def grad(params, X, T):\n    return {'W1': params['W1']}\n", "no gradient for b1"),
    ("def grad(params, X, T):\n    g = {k: 0 * v for k, v in params.items()}\n"
     "    g['W9'] = 1.0\n    return g\n", "unknown key(s) 'W9'"),
    ("def grad(params, X, T):\n    raise RuntimeError('boom')\n",
     "raised RuntimeError: boom (line 2)"),
    ("def grad(params, X, T):\n    g = {k: 0 * v for k, v in params.items()}\n"
     "    g['b1'] = 'text'\n    return g\n", "gradient 'b1' is str"),
])
def test_cli_bad_return_exits_2(tmp_path, capsys, body, needle):
    path = write(tmp_path, "bad.py", body)
    assert cli(RELU_SPEC, "--grad", f"{path}:grad") == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_cli_wrong_shape_exits_2_with_the_reason(tmp_path, capsys):
    path = wrapped(tmp_path, "transposed.py", """
        def grad(params, X, T):
            g = correct(params, X, T)
            g["W1"] = g["W1"].T
            return g
    """)
    assert cli(RELU_SPEC, "--grad", f"{path}:grad") == 2
    err = capsys.readouterr().err.strip()
    assert "gradient 'W1' has shape (3, 5), expected (5, 3)" in err
    assert "transposed" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("target,needle", [
    ("no/such/file.py:grad", "no such file"),
    ("{mutants}/relu_net.py:nothing", "no function 'nothing'"),
    ("{mutants}/relu_net.py", "expected FILE.py:FUNCTION"),
    ("{tmp}/syntax.py:grad", "cannot import: SyntaxError"),
    ("{tmp}/importerror.py:grad", "cannot import: ModuleNotFoundError"),
])
def test_cli_bad_file_exits_2(tmp_path, capsys, target, needle):
    write(tmp_path, "syntax.py", "def grad(params X):\n    pass\n")
    write(tmp_path, "importerror.py", "import no_such_module_xyz\n")
    target = target.format(mutants=RELU_GRAD.parent, tmp=tmp_path)
    assert cli(RELU_SPEC, "--grad", target) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_cli_needs_grad_or_formula(capsys):
    assert cli(RELU_SPEC) == 2
    assert "--grad" in capsys.readouterr().err


def test_cli_bad_spec_exits_2(tmp_path, capsys):
    assert cli(tmp_path / "missing.toml", "--grad", f"{RELU_GRAD}:grad") == 2
    assert "file not found" in capsys.readouterr().err


# --------------------------------------------------------------------------- API


def test_nan_and_inf_are_failures_with_their_own_message(tmp_path):
    path = wrapped(tmp_path, "nan.py", """
        def grad(params, X, T):
            g = correct(params, X, T)
            g["W3"] = g["W3"].copy()
            g["W3"][0, 1] = np.nan
            g["b2"] = g["b2"] + np.inf
            return g
    """)
    report = verify_gradient(RELU_SPEC, *load_grad_function(f"{path}:grad")[:1])
    assert report.failed == ["b2", "W3"]
    assert report["W3"].diagnoses[0].code == "nan_inf"
    assert "1 NaN" in report["W3"].diagnoses[0].message
    assert report["W3"].nonfinite[0, 1] and report["W3"].n_wrong == 1
    assert "inf" in report["b2"].diagnoses[0].message
    assert "N" in report["W3"].mask_picture()
    json.dumps(report.to_dict())  # NaN/inf become strings


def test_missing_key_raises_input_error():
    spec = load_spec(RELU_SPEC)
    with pytest.raises(VerifyInputError, match="no gradient for"):
        verify_gradient(spec, lambda p, X, T: {})


def test_float32_gradient_passes_with_float32_tolerance():
    from relu_net import grad  # tests/mutants is put on sys.path by the fixture below

    report = verify_gradient(RELU_SPEC, lambda p, X, T: {
        k: v.astype(np.float32) for k, v in grad(p, X, T).items()})
    assert report.passed


def test_loss_and_grad_tuple_is_accepted_with_a_note():
    derivation = derive(load_spec(SIG3_SPEC))
    module, _ = _reference(derivation)
    report = verify_gradient(derivation, module.loss_and_grad)
    assert report.passed
    assert any("(loss, grads)" in note for note in report.notes)


def test_points_avoid_relu_kinks():
    spec = Network("wide", inputs=6).dense(64, "relu").dense(32, "leaky_relu").dense(2).build()
    derivation = derive(spec)
    _, model = _reference(derivation)
    rng = np.random.default_rng(1)
    for _ in range(5):
        params, X, T, clear = _draw(model, rng, 8)
        values = model.forward(params, X)
        assert clear
        assert np.min(np.abs(values["z1"])) >= 1e-3 and np.min(np.abs(values["z2"])) >= 1e-3


def test_weight_decay_missing_is_named():
    spec = load_spec(CLF_SPEC)
    module, _ = _reference(derive(spec))

    def grad(params, X, T):
        g = module.loss_and_grad(params, X, T)[1]
        g["W1"] = g["W1"] - 0.01 * params["W1"]
        return g

    report = verify_gradient(spec, grad)
    assert report.failed == ["W1"]
    assert report["W1"].diagnoses[0].code == "weight_decay_missing"
    assert "lambda=0.01" in report["W1"].diagnoses[0].message


def test_report_text_and_batch_sizes():
    spec = load_spec(SIG3_SPEC)
    module, _ = _reference(derive(spec))

    def mean_instead_of_sum(params, X, T):
        return {k: v / len(X) for k, v in module.loss_and_grad(params, X, T)[1].items()}

    report = verify_gradient(spec, mean_instead_of_sum, points=2, batch_sizes=(1, 3, 4))
    assert not report.passed
    # right at N=1, wrong at N=3 and 4: a mean instead of a sum over the batch
    assert report["W2"].failed_evaluations == 4 and report["W2"].evaluations == 6
    assert report["W2"].diagnoses[0].code == "scaled"
    assert "N=4" in report["W2"].diagnoses[0].message
    assert "4/6 evaluations" in str(report)
    # wrong at one batch size only: the fit is not confirmed, so no mistake is named
    once = verify_gradient(spec, mean_instead_of_sum, points=2, batch_sizes=(1, 4))
    assert once["W2"].diagnoses[0].code == "unknown"
    assert "no known pattern" in once["W2"].diagnoses[0].message
    assert "not at two batch sizes" in once["W2"].diagnoses[0].message
    with pytest.raises(VerifyInputError):
        verify_gradient(spec, mean_instead_of_sum, batch_sizes=(0,))


# --------------------------------------------------------------------------- proofs


@pytest.mark.parametrize("param,formula", [
    ("W2", "delta2.T @ a1"),
    ("b2", "delta2.sum(axis=0)"),
    ("b2", "sum(delta2, axis=0)"),
    ("b1", "np.sum(delta1, axis=0)"),
    ("W1", "((delta2 @ W2) * (1 - a1 ** 2)).T @ X"),
    ("W1", "(X.T @ (dL_da1 * (1 - a1) * (1 + a1))).T"),
])
def test_proof_proved(param, formula):
    spec = Network("p", inputs=3).dense(4, "tanh").dense(2, "sigmoid").loss("sse").build()
    result = prove_gradient_formula(spec, param, formula)
    assert result.status == "proved" and result.proved and result.holds, str(result)
    assert str(result).startswith("PROVED")


def test_proof_with_weight_decay_and_mean():
    spec = load_spec(CLF_SPEC)
    assert prove_gradient_formula(spec, "W2", "delta2.T @ a1 + weight_decay * W2").proved
    assert prove_gradient_formula(spec, "W2", "((a2 - T) / N).T @ a1 + 0.01 * W2").proved
    missing = prove_gradient_formula(spec, "W2", "delta2.T @ a1")
    assert missing.status == "counterexample"


def test_proof_counterexample_relu():
    result = prove_gradient_formula(load_spec(RELU_SPEC), "W1", "(delta2 @ W2).T @ X")
    assert result.status == "counterexample" and not result.holds
    ce = result.counterexample
    assert ce["N"] >= 2 and len(ce["entry"]) == 2
    assert ce["formula_value"] != ce["derived_value"]
    assert {"delta2", "W2", "X"} <= set(ce["values"])
    text = str(result)
    assert text.startswith("COUNTEREXAMPLE") and "entry W1[" in text
    json.dumps(result.to_dict())


@pytest.mark.parametrize("param,formula,needle", [
    ("W3", "a2.T @ delta3", "the transpose"),
    ("b2", "delta2", "one row per sample"),
    ("W2", "delta2 @ a1", "does not type-check"),
])
def test_proof_wrong_shape(param, formula, needle):
    result = prove_gradient_formula(load_spec(SIG3_SPEC), param, formula)
    assert result.status == "wrong_shape" and needle in result.message


@pytest.mark.parametrize("formula,needle", [
    ("delta2.T @ a9", "unknown name 'a9'"),
    ("__import__('os').system('true')", "only sum"),
    ("delta2.T.shape", "attribute '.shape'"),
    ("[delta2]", "List is not supported"),
    ("delta2 / a1", "divide only by a number"),
    ("delta2 ** a1", "integer exponent"),
    ("delta2.T @", "cannot parse"),
    ("'text'", "is not a number"),
])
def test_formula_whitelist(formula, needle):
    with pytest.raises(FormulaError, match=None) as info:
        prove_gradient_formula(load_spec(SIG3_SPEC), "W3", formula)
    assert needle in str(info.value)


def test_cli_formula(capsys):
    assert cli(SIG3_SPEC, "--formula", "W3=delta3.T @ a2") == 0
    assert "PROVED" in capsys.readouterr().out
    assert cli(SIG3_SPEC, "--formula", "W1=(delta2 @ W2).T @ X") == 1
    assert "COUNTEREXAMPLE" in capsys.readouterr().out
    assert cli(SIG3_SPEC, "--formula", "W3=delta3.T @ a2", "--formula", "b3=delta3[0]") == 2
    assert "Subscript is not supported" in capsys.readouterr().err
    assert cli(SIG3_SPEC, "--formula", "W7=delta3.T @ a2") == 2
    assert "unknown parameter 'W7'" in capsys.readouterr().err
    assert cli(SIG3_SPEC, "--formula", "delta3.T @ a2") == 2
    assert cli(SIG3_SPEC, "--formula", "W3=delta3.T @ a2", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["formulas"][0]["status"] == "proved"


@pytest.fixture(autouse=True, scope="module")
def _mutants_on_path():
    import sys

    sys.path.insert(0, str(RELU_GRAD.parent))
    yield
    sys.path.remove(str(RELU_GRAD.parent))


# --------------------------------------------------------------------------- diagnosis regressions


def test_one_entry_fit_does_not_name_a_mistake():
    """b2 has one entry: any value 'fits' a scaled gradient there."""
    spec = Network("one", inputs=3).dense(4, "tanh").dense(1, "sigmoid").loss("sse").build()
    module, _ = _reference(derive(spec))
    name = "b2"

    def offset(params, X, T):
        g = module.loss_and_grad(params, X, T)[1]
        g[name] = g[name] + 0.3  # not a constant factor: the ratio changes every time
        return g

    for sizes in [(1,), (1, 3, 5)]:
        report = verify_gradient(spec, offset, batch_sizes=sizes)
        assert report.failed == [name]
        assert report[name].diagnoses[0].code == "unknown", report[name].diagnoses
        assert "no known pattern" in report[name].diagnoses[0].message

    def halved(params, X, T):  # the same factor at every evaluation: independent evidence
        g = module.loss_and_grad(params, X, T)[1]
        g[name] = g[name] / 2
        return g

    assert verify_gradient(spec, halved)[name].diagnoses[0].code == "scaled"
    assert verify_gradient(spec, halved, batch_sizes=(1,))[name].diagnoses[0].code == "unknown"


def test_message_and_mask_come_from_the_same_data():
    """Each call gets one row wrong, a different one per batch: the message names the mask's rows."""
    spec = load_spec(CLF_SPEC)
    module, _ = _reference(derive(spec))
    calls = []

    def one_row(params, X, T):
        g = module.loss_and_grad(params, X, T)[1]
        row = len(calls) % 2
        calls.append(row)
        g["W1"] = g["W1"].copy()
        g["W1"][row] *= 3.0
        return g

    report = verify_gradient(spec, one_row, points=3)
    verdict = report["W1"]
    rows = sorted(int(i) for i in np.nonzero(verdict.mismatch.any(axis=1))[0])
    assert rows == [0, 1]
    message = verdict.diagnoses[0].message
    assert "only rows 0, 1 differ" in message, message
    assert verdict.diagnoses[0].detail["rows"] == rows
