"""The multiclass hinge loss (Weston-Watkins, the SVM loss): ``[loss] kind = "hinge"``.

Per sample ``l = sum_{j != y} max(0, 1 + s_j - s_y)`` on the scores ``s`` of an identity
output layer.  The loss couples the outputs, so the registry writes it (and its VJP) on
whole arrays.  Proof obligation: the derived dL/dS equals ``sympy.diff`` of the scalar loss
written with explicit ``Max`` terms, exactly, at rational points away from the kinks, for
every true class.  The generated module agrees with finite differences and with PyTorch.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import sympy as sp

from symgrad.cli import main
from symgrad.codegen import generate_module_source, load_module
from symgrad.derive import derive
from symgrad.interpret import evaluate
from symgrad.spec import Network, SpecError, load_spec

K = 3


def scores_net(reduction="sum", k=K):
    """inputs k -> identity k, hinge: with W = I, b = 0 the scores are X itself."""
    return (Network("hinge_scores", inputs=k).dense(k, "identity")
            .loss("hinge", reduction=reduction).build())


def rational(rng, low=-2, high=2):
    return sp.Rational(int(rng.integers(low * 12, high * 12 + 1)), 12) + sp.Rational(1, 97)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("true_class", range(K))
def test_vjp_equals_sympy_diff_of_scalar_loss(true_class, reduction):
    d = derive(scores_net(reduction))
    s = sp.symbols(f"s0:{K}", real=True)
    scalar = sp.Add(*(sp.Max(0, 1 + s[j] - s[true_class]) for j in range(K) if j != true_class))
    rng = np.random.default_rng(true_class)
    checked = 0
    while checked < 6:
        point = [rational(rng) for _ in range(K)]
        margins = [1 + point[j] - point[true_class] for j in range(K) if j != true_class]
        if any(m == 0 for m in margins):
            continue  # on a kink: no derivative
        checked += 1
        values = {"X": sp.Matrix([point]), "T": sp.Matrix([[int(j == true_class)
                                                            for j in range(K)]]),
                  "W1": sp.eye(K), "b1": [0] * K}
        out = evaluate(d, values)
        at = dict(zip(s, point))
        assert out["L"][0, 0] == scalar.subs(at)
        expected = [sp.diff(scalar, sj).subs(at) for sj in s]
        assert list(out["dL_da1"]) == expected, (point, true_class)
        assert list(out["delta1"]) == expected


def network(reduction="mean"):
    return (Network("hinge_net", inputs=4).dense(5, "tanh").dense(K, "identity")
            .loss("hinge", reduction=reduction).build())


def data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, n)
    return rng.normal(size=(n, 4)), labels, np.eye(K)[labels]


def away_from_kinks(module, params, X, T, gap=1e-3):
    scores = module.forward(params, X)
    scores = scores[0] if isinstance(scores, tuple) else scores
    scores = scores["a2"] if isinstance(scores, dict) else scores
    margins = 1 + scores - (T * scores).sum(axis=1, keepdims=True)
    return bool((np.abs(margins[T == 0]) > gap).all())


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_generated_module_against_finite_differences(reduction):
    module = load_module(generate_module_source(network(reduction)), name=f"hinge_{reduction}")
    assert module.CLASSES
    X, labels, T = data()
    params = {k: v * 3 for k, v in module.init_params(seed=1).items()}  # some margins violated
    assert away_from_kinks(module, params, X, T)
    loss, grads = module.loss_and_grad(params, X, T)
    assert loss > 0
    eps = 1e-6
    for name, value in params.items():
        numeric = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            up, down = ({**params, name: value.copy()} for _ in range(2))
            up[name][index] += eps
            down[name][index] -= eps
            numeric[index] = (module.loss(up, X, T) - module.loss(down, X, T)) / (2 * eps)
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-6, atol=1e-8, err_msg=name)
    # Integer labels are one-hot rows.
    loss_int, grads_int = module.loss_and_grad(params, X, labels)
    assert loss_int == loss
    for name in grads:
        np.testing.assert_array_equal(grads_int[name], grads[name])


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_generated_module_against_torch(reduction):
    torch = pytest.importorskip("torch")
    module = load_module(generate_module_source(network(reduction)), name=f"hinge_t{reduction}")
    X, labels, _ = data(n=10, seed=3)
    params = {k: v * 3 for k, v in module.init_params(seed=2).items()}
    loss, grads = module.loss_and_grad(params, X, labels)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    scores = torch.tanh(torch.tensor(X) @ tp["W1"].T + tp["b1"]) @ tp["W2"].T + tp["b2"]
    # multi_margin_loss sums max(0, 1 - s_y + s_j) over j != y and divides by K.
    reference = K * torch.nn.functional.multi_margin_loss(
        scores, torch.tensor(labels), p=1, margin=1.0, reduction="sum")
    if reduction == "mean":
        reference = reference / len(X)
    reference.backward()
    assert loss == pytest.approx(reference.item(), rel=1e-12)
    for name, value in tp.items():
        np.testing.assert_allclose(grads[name], value.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_hinge_needs_identity_output(tmp_path):
    with pytest.raises(SpecError, match="hinge needs an identity output layer") as info:
        Network("bad", inputs=2).dense(3, "softmax").loss("hinge").build()
    assert "\n" not in str(info.value)
    spec = tmp_path / "bad.toml"
    spec.write_text('inputs = 2\n[[layers]]\nunits = 3\nactivation = "sigmoid"\n'
                    '[loss]\nkind = "hinge"\n')
    with pytest.raises(SpecError, match="got sigmoid"):
        load_spec(spec)


def test_hinge_spec_and_commands(tmp_path, capsys):
    spec = tmp_path / "hinge.toml"
    spec.write_text('name = "hinge_cli"\ninputs = 4\n[[layers]]\nunits = 5\nactivation = '
                    '"tanh"\n[[layers]]\nunits = 3\nactivation = "identity"\n[loss]\n'
                    'kind = "hinge"\nreduction = "mean"\n')
    assert main(["generate", str(spec), "-o", str(tmp_path / "m.py"), "--check"]) == 0
    capsys.readouterr()
    # The per-weight expansion needs a per-output loss: one line, exit 2.
    assert main(["derive", str(spec), "--per-weight"]) == 2
    err = capsys.readouterr().err.strip()
    assert "couples the outputs" in err and "\n" not in err
    tex = tmp_path / "hinge.tex"
    assert main(["derive", str(spec), "--format", "latex", "-o", str(tex)]) == 0
    text = tex.read_text()
    assert r"\sum_{j \neq y_n} \max" in text and r"\left[m_{nj} > 0\right]" in text
    if shutil.which("pdflatex"):
        run = subprocess.run(["pdflatex", "-interaction=batchmode", tex.name], cwd=tmp_path,
                             capture_output=True, timeout=120)
        assert run.returncode == 0, (tmp_path / "hinge.log").read_text()[-2000:]


def test_verify_handwritten_hinge_gradient(tmp_path):
    spec = tmp_path / "hinge.toml"
    spec.write_text('inputs = 2\n[[layers]]\nunits = 3\nactivation = "identity"\n'
                    '[loss]\nkind = "hinge"\n')
    grad = tmp_path / "grad.py"
    grad.write_text(
        "import numpy as np\n\n"
        "def grad(params, X, T, wrong=False):\n"
        "    S = X @ params['W1'].T + params['b1']\n"
        "    M = 1 + S - (T * S).sum(axis=1, keepdims=True)\n"
        "    V = (M > 0) * (1 - T)\n"
        "    D = V - (0 if wrong else T * V.sum(axis=1, keepdims=True))\n"
        "    return {'W1': D.T @ X, 'b1': D.sum(axis=0)}\n\n"
        "def grad_wrong(params, X, T):\n"
        "    return grad(params, X, T, wrong=True)\n")
    assert main(["verify", str(spec), "--grad", f"{grad}:grad"]) == 0
    assert main(["verify", str(spec), "--grad", f"{grad}:grad_wrong"]) == 1
