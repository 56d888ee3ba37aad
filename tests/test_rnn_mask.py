"""A padding mask for per-step recurrent networks, against an oracle on the unpadded sequences.

The generated ``loss``, ``loss_and_grad`` and ``train`` take ``mask`` (N, T) of 0/1; the
oracle shares no code with symgrad: each sequence is cut to its true length and run through
a hand-written recurrence in torch, the loss summed over the steps that remain (divided by N
for reduction "mean"), and differentiated by autograd in float64.  The padded steps hold
random inputs and targets, which must change nothing.  A mask of the wrong shape or with
values other than 0 and 1 is refused, by the functions and by the command line (exit 2).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from symgrad.codegen import generate_module_source, load_module
from symgrad.spec import Network

torch = pytest.importorskip("torch")
F = torch.nn.functional

STEPS, FEATURES = 6, 3
LENGTHS = [6, 3, 1, 4]


def bce_mean():
    return (Network("bce", inputs=(STEPS, FEATURES)).rnn(4, "tanh", sequences=True)
            .dense(2, "sigmoid").loss("bce", reduction="mean"))


def softmax_mean():
    return (Network("ce", inputs=(STEPS, FEATURES)).rnn(5, "tanh", sequences=True)
            .dense(3, "softmax").loss("cross_entropy", reduction="mean"))


def sse_decay():
    """Identity output with sse: dL/dY is hoisted into the loss line."""
    return (Network("sse", inputs=(STEPS, FEATURES)).rnn(4, "relu", sequences=True)
            .dense(2, "identity").loss("sse", weight_decay=0.05))


SPECS = {"bce": bce_mean, "ce": softmax_mean, "sse": sse_decay}


@pytest.fixture(scope="module")
def modules():
    return {name: load_module(generate_module_source(make().build()), f"mask_{name}")
            for name, make in SPECS.items()}


def data(spec, seed=0):
    rng = np.random.default_rng(seed)
    n, k = len(LENGTHS), spec.n_outputs
    X = rng.normal(size=(n, STEPS, FEATURES))
    if spec.loss.kind == "cross_entropy":
        T = np.eye(k)[rng.integers(0, k, size=(n, STEPS))]
    elif spec.loss.kind == "bce":
        T = rng.integers(0, 2, size=(n, STEPS, k)).astype(float)
    else:
        T = rng.normal(size=(n, STEPS, k))
    mask = (np.arange(STEPS) < np.array(LENGTHS)[:, None]).astype(float)
    return X, T, mask


def oracle(spec, params, X, T):
    """The loss of the unpadded sequences, and its gradient, by torch autograd."""
    p = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    act = {"tanh": torch.tanh, "relu": torch.relu}[spec.layers[0].activation.kind]
    total = torch.zeros((), dtype=torch.float64)
    for i, length in enumerate(LENGTHS):
        h = torch.zeros(p["Wh1"].shape[0], dtype=torch.float64)
        for t in range(length):  # the padded steps are never seen
            h = act(torch.tensor(X[i, t]) @ p["Wx1"].T + h @ p["Wh1"].T + p["b1"])
            z = h @ p["W2"].T + p["b2"]
            target = torch.tensor(T[i, t])
            if spec.loss.kind == "bce":
                total = total + F.binary_cross_entropy_with_logits(z, target, reduction="sum")
            elif spec.loss.kind == "cross_entropy":
                total = total - (target * torch.log_softmax(z, dim=0)).sum()
            else:
                total = total + 0.5 * ((z - target) ** 2).sum()
    if spec.loss.reduction == "mean":
        total = total / len(LENGTHS)
    if spec.loss.weight_decay:
        total = total + spec.loss.weight_decay / 2 * sum(
            (p[w] ** 2).sum() for w in ("Wx1", "Wh1", "W2"))
    total.backward()
    return total.item(), {k: v.grad.numpy() for k, v in p.items()}


@pytest.mark.parametrize("name", SPECS)
def test_masked_loss_and_gradient_equal_the_unpadded_oracle(modules, name):
    module, spec = modules[name], SPECS[name]().build()
    params = module.init_params(seed=3)
    params = {k: v + np.random.default_rng(1).normal(scale=0.3, size=v.shape)
              for k, v in params.items()}  # nonzero biases
    X, T, mask = data(spec)
    want, want_grads = oracle(spec, params, X, T)
    value, grads = module.loss_and_grad(params, X, T, mask=mask)
    assert value == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert module.loss(params, X, T, mask=mask) == pytest.approx(want, rel=1e-12, abs=1e-12)
    for key in params:
        np.testing.assert_allclose(grads[key], want_grads[key], rtol=1e-10, atol=1e-12)
    # Different padding contents change nothing; a mask of ones is no mask.
    X2, T2, _ = data(spec, seed=7)
    X2[mask == 1], T2[mask == 1] = X[mask == 1], T[mask == 1]
    again, grads2 = module.loss_and_grad(params, X2, T2, mask=mask.astype(int))
    assert again == pytest.approx(value, rel=1e-12)
    ones = module.loss_and_grad(params, X, T, mask=np.ones((len(X), STEPS)))
    plain = module.loss_and_grad(params, X, T)
    assert ones[0] == pytest.approx(plain[0], rel=1e-12)
    for key in params:
        np.testing.assert_allclose(grads2[key], grads[key], rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(ones[1][key], plain[1][key], rtol=1e-12, atol=1e-15)


def test_training_with_a_mask_ignores_the_padding(modules):
    module, spec = modules["bce"], bce_mean().build()
    X, T, mask = data(spec)
    X2, T2, _ = data(spec, seed=5)
    X2[mask == 1], T2[mask == 1] = X[mask == 1], T[mask == 1]
    runs = []
    for inputs, targets in ((X, T), (X2, T2)):
        params = module.init_params(seed=0)
        history = module.train(params, inputs, targets, mode="minibatch", batch_size=2,
                               epochs=3, mask=mask)
        runs.append((history, params))
    assert runs[0][0] == pytest.approx(runs[1][0], rel=1e-12)
    for key in runs[0][1]:
        np.testing.assert_allclose(runs[0][1][key], runs[1][1][key], rtol=1e-12)


@pytest.mark.parametrize("bad, message", [
    (np.ones((4, STEPS - 1)), r"mask: expected shape \(4, 6\), got \(4, 5\)"),
    (np.ones((3, STEPS)), r"mask: expected shape \(4, 6\), got \(3, 6\)"),
    (np.ones(4 * STEPS), r"mask: expected shape"),
    (np.full((4, STEPS), 0.5), "mask: must hold only 0 and 1"),
    (np.full((4, STEPS), np.nan), "mask: must hold only 0 and 1"),
])
def test_a_bad_mask_is_refused(modules, bad, message):
    module, spec = modules["bce"], bce_mean().build()
    X, T, _ = data(spec)
    params = module.init_params()
    for call in (lambda: module.loss(params, X, T, mask=bad),
                 lambda: module.loss_and_grad(params, X, T, mask=bad),
                 lambda: module.train(params, X, T, epochs=1, mask=bad)):
        with pytest.raises(ValueError, match=message):
            call()


def test_the_command_line_reads_the_mask(tmp_path):
    path = tmp_path / "bce.py"
    path.write_text(generate_module_source(bce_mean().build()))
    X, T, mask = data(bce_mean().build())

    def run(name, **arrays):
        np.savez(tmp_path / f"{name}.npz", X=X.reshape(len(X), -1),
                 T=T.reshape(len(T), -1), **arrays)
        return subprocess.run([sys.executable, str(path), "--data", str(tmp_path / f"{name}.npz"),
                               "--epochs", "2", "--out", str(tmp_path / f"{name}-out.npz")],
                              capture_output=True, text=True, timeout=120)

    good = run("good", mask=mask)
    assert good.returncode == 0, good.stderr
    wrong = run("wrong", mask=mask[:, :-1])
    assert wrong.returncode == 2
    assert wrong.stderr.strip().count("\n") == 0
    assert "mask: expected shape (4, 6), got (4, 5)" in wrong.stderr
    assert not (tmp_path / "wrong-out.npz").exists()
    values = run("values", mask=mask * 2)
    assert values.returncode == 2 and "mask: must hold only 0 and 1" in values.stderr
