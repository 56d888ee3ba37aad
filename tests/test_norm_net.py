"""End to end: generated modules with batch norm, layer norm, embeddings and dropout
against PyTorch autograd in float64 (an independent implementation), evaluation mode with
the running statistics, inputs left unchanged, float32 kept, bad input refused."""

from __future__ import annotations

import numpy as np
import pytest

from symgrad.codegen import generate_module_source, load_module
from symgrad.spec import Network, SpecError, loads_spec

torch = pytest.importorskip("torch")
F = torch.nn.functional


def module(spec, dtype="float64"):
    return load_module(generate_module_source(spec, dtype=dtype))


def torch_grads(params, loss_fn):
    p = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    loss = loss_fn(p)
    loss.backward()
    return float(loss.detach()), {k: v.grad.numpy() for k, v in p.items() if v.grad is not None}


def compare(mod, params, X, T, loss_fn, **kwargs):
    before = {k: v.copy() for k, v in params.items()}
    X0 = X.copy()
    value, grads = mod.loss_and_grad(params, X, T, **kwargs)
    want_value, want = torch_grads(params, loss_fn)
    assert value == pytest.approx(want_value, rel=1e-12)
    for name, grad in want.items():
        np.testing.assert_allclose(grads[name], grad, rtol=1e-9, atol=1e-12, err_msg=name)
    for name in before:  # inputs unchanged
        np.testing.assert_array_equal(params[name], before[name])
    np.testing.assert_array_equal(X, X0)
    return grads


def perturbed(mod, seed=0):
    rng = np.random.default_rng(seed)
    params = mod.init_params(seed)
    for name, value in params.items():
        if not name.startswith("running"):
            value += rng.uniform(-0.3, 0.3, value.shape)
    return params


def test_batchnorm_mlp_training_and_evaluation():
    spec = (Network("bn", inputs=4).dense(6).batchnorm(activation="relu", momentum=0.2)
            .dense(3, "softmax").loss("cross_entropy").build())
    mod = module(spec)
    rng = np.random.default_rng(1)
    X, T = rng.normal(size=(8, 4)), np.eye(3)[rng.integers(0, 3, 8)]
    params = perturbed(mod)

    def loss_fn(p):
        z = torch.tensor(X) @ p["W1"].T + p["b1"]
        a = F.relu(F.batch_norm(z, None, None, p["gamma2"], p["beta2"], training=True,
                                eps=1e-5))
        return F.cross_entropy(a @ p["W3"].T + p["b3"], torch.tensor(T.argmax(1)),
                               reduction="sum")

    grads = compare(mod, params, X, T, loss_fn)
    assert not grads["running_mean2"].any() and not grads["running_var2"].any()
    # training refreshes the running statistics as PyTorch does; evaluation reads them
    mean, var = torch.zeros(6, dtype=torch.float64), torch.ones(6, dtype=torch.float64)
    z = torch.tensor(X @ params["W1"].T + params["b1"])
    start = {k: v.copy() for k, v in params.items()}
    mod.train(params, X, T, epochs=1, mode="batch", learning_rate=0.0)
    F.batch_norm(z, mean, var, training=True, momentum=0.2, eps=1e-5)
    np.testing.assert_allclose(params["running_mean2"], mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(params["running_var2"], var.numpy(), rtol=1e-12)
    for name in ("W1", "gamma2", "W3"):
        np.testing.assert_array_equal(params[name], start[name])
    p = {k: torch.tensor(v) for k, v in params.items()}
    a = F.relu(F.batch_norm(z, p["running_mean2"], p["running_var2"], p["gamma2"], p["beta2"],
                            training=False, eps=1e-5))
    want = torch.softmax(a @ p["W3"].T + p["b3"], 1).numpy()
    np.testing.assert_allclose(mod.forward(params, X), want, rtol=1e-12)
    assert not np.allclose(mod.forward(params, X), _batch_forward(mod, params, X))


def _batch_forward(mod, params, X):
    """The training-mode output (batch statistics), to show forward() differs from it."""
    z = X @ params["W1"].T + params["b1"]
    xhat = (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)
    a = np.maximum(params["gamma2"] * xhat + params["beta2"], 0)
    e = np.exp(a @ params["W3"].T + params["b3"])
    return e / e.sum(1, keepdims=True)


def test_layernorm_mlp():
    spec = (Network("ln", inputs=5).dense(4, "tanh").layernorm(activation="tanh", eps=1e-3)
            .dense(2).loss("sse", reduction="mean").build())
    mod = module(spec)
    rng = np.random.default_rng(2)
    X, T = rng.normal(size=(7, 5)), rng.normal(size=(7, 2))
    params = perturbed(mod, 1)

    def loss_fn(p):
        a1 = torch.tanh(torch.tensor(X) @ p["W1"].T + p["b1"])
        a2 = torch.tanh(F.layer_norm(a1, (4,), p["gamma2"], p["beta2"], eps=1e-3))
        return ((a2 @ p["W3"].T + p["b3"] - torch.tensor(T)) ** 2).sum() / 2 / 7

    compare(mod, params, X, T, loss_fn)


def test_embedding_model_with_repeated_ids():
    spec = (Network("emb", inputs=3).embedding(6, 4).layernorm().dense(2, "sigmoid")
            .loss("bce").build())
    mod = module(spec)
    X = np.array([[1, 1, 1], [5, 1, 0], [1, 5, 5], [2, 2, 1]])
    T = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=float)
    params = perturbed(mod, 2)

    def loss_fn(p):
        a1 = F.embedding(torch.tensor(X), p["E1"]).reshape(4, -1)
        z2 = F.layer_norm(a1, (12,), p["gamma2"], p["beta2"], eps=1e-5)
        return F.binary_cross_entropy_with_logits(z2 @ p["W3"].T + p["b3"], torch.tensor(T),
                                                  reduction="sum")

    grads = compare(mod, params, X, T, loss_fn)
    assert not grads["E1"][3:5].any()  # ids never seen get no gradient
    np.testing.assert_allclose(mod.forward(params, X.ravel()[:3].reshape(1, 3)),
                               mod.forward(params, X[:1]))


def test_dropout_with_a_fixed_seed():
    spec = (Network("drop", inputs=5).dense(8, "relu").dropout(0.4).dense(3).loss("sse")
            .build())
    mod = module(spec)
    rng = np.random.default_rng(3)
    X, T = rng.normal(size=(6, 5)), rng.normal(size=(6, 3))
    params = perturbed(mod, 3)
    mask = mod._dropout_mask(np.random.default_rng(11), (6, 8), 0.4, np.float64)

    def loss_fn(p):
        a1 = F.relu(torch.tensor(X) @ p["W1"].T + p["b1"])
        a2 = torch.where(torch.tensor(mask != 0), a1 / 0.6, torch.zeros_like(a1))
        return ((a2 @ p["W3"].T + p["b3"] - torch.tensor(T)) ** 2).sum() / 2

    compare(mod, params, X, T, loss_fn, seed=11)
    assert mod.loss(params, X, T, seed=11) == mod.loss_and_grad(params, X, T, seed=11)[0]
    assert mod.loss(params, X, T, seed=12) != mod.loss(params, X, T, seed=11)
    # evaluation: no dropout
    want = np.maximum(X @ params["W1"].T + params["b1"], 0) @ params["W3"].T + params["b3"]
    np.testing.assert_allclose(mod.forward(params, X), want, rtol=1e-12)


def test_float32_stays_float32():
    spec = (Network("f32", inputs=3).embedding(5, 2).batchnorm(activation="tanh").dropout(0.2)
            .layernorm().dense(2, "softmax").loss("cross_entropy").build())
    mod = module(spec, "float32")
    params = mod.init_params(0)
    X = np.array([[0, 1, 4], [2, 2, 3], [4, 0, 1]])
    T = np.eye(2, dtype=np.float32)[[0, 1, 1]]
    value, grads = mod.loss_and_grad(params, X, T, seed=1, stats=(stats := {}))
    assert all(g.dtype == np.float32 for g in grads.values())
    assert all(s.dtype == np.float32 for s in stats.values())
    assert mod.forward(params, X).dtype == np.float32
    mod.train(params, X, T, epochs=2)
    assert all(v.dtype == np.float32 for v in params.values())


def test_generated_module_refuses_bad_input(tmp_path, capsys):
    mod = module(Network("e", inputs=2).embedding(4, 2).dense(1).loss("sse").build())
    params = mod.init_params(0)
    T = np.zeros((2, 1))
    for X, why in (([[0, 4], [1, 1]], r"in \[0, 4\)"), ([[0, -1], [1, 1]], r"in \[0, 4\)"),
                   ([[0.5, 1], [1, 1]], "integers")):
        with pytest.raises(ValueError, match=why):
            mod.loss_and_grad(params, np.array(X), T)
        np.savez(tmp_path / "d.npz", X=np.array(X), T=T)
        assert mod._main(["--data", str(tmp_path / "d.npz"), "--out",
                          str(tmp_path / "p.npz")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "d.npz: X: embedding ids" in err
    assert not (tmp_path / "p.npz").exists()
    bn = module(Network("b", inputs=2).batchnorm().dense(1).loss("sse").build())
    with pytest.raises(ValueError, match="at least 2 samples"):
        bn.loss_and_grad(bn.init_params(0), np.ones((1, 2)), np.ones((1, 1)))
    np.savez(tmp_path / "b.npz", X=np.ones((3, 2)), T=np.ones((3, 1)))
    assert bn._main(["--data", str(tmp_path / "b.npz"), "--mode", "online"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("layer,field,why", [
    ('kind = "dropout"\nrate = 1.0', "rate", "less than 1"),
    ('kind = "dropout"\nrate = -0.1', "rate", "at least 0"),
    ('kind = "batchnorm"\neps = 0', "eps", "greater than 0"),
    ('kind = "embedding"\nvocab = 3\ndim = 2', "kind", "first layer"),
])
def test_spec_errors(layer, field, why):
    text = f'inputs = 2\n[[layers]]\nunits = 2\n[[layers]]\n{layer}\n[[layers]]\nunits = 1\n'
    with pytest.raises(SpecError, match=why) as info:
        loads_spec(text, path="s.toml")
    line = 5 if field == "kind" else 6
    assert str(info.value).startswith(f"s.toml:{line}: layers[2].{field}: ")
    assert "\n" not in str(info.value)


def test_spec_batchnorm_needs_two_samples():
    text = ('inputs = 2\n[[layers]]\nkind = "batchnorm"\n[[layers]]\nunits = 1\n'
            '[training]\nmode = "online"\n')
    with pytest.raises(SpecError, match="at least 2 samples") as info:
        loads_spec(text, path="s.toml")
    assert "s.toml:7: training.mode" in str(info.value)
