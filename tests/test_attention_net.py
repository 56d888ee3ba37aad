"""End to end: generated modules with self-attention layers against PyTorch autograd in
float64 (an independent implementation): a per-step dense layer, causal multi-head attention
with a residual connection and a per-step softmax output; two attention layers stacked without
biases and with the loss's weight decay; inputs left unchanged, float32 kept, a toy sequence
task learnt, bad specs refused with one line (exit 2)."""

from __future__ import annotations

import numpy as np
import pytest

from symgrad.codegen import generate_module_source, load_module
from symgrad.spec import SpecError, loads_spec

torch = pytest.importorskip("torch")
F = torch.nn.functional

BLOCK = """
name = "block"
inputs = { shape = [4, 3] }
[[layers]]
units = 4
activation = "tanh"
[[layers]]
kind = "attention"
dk = 4
heads = 2
causal = true
residual = true
[[layers]]
units = 3
activation = "softmax"
[loss]
kind = "cross_entropy"
"""

STACKED = """
name = "stacked"
inputs = { shape = [3, 2] }
[[layers]]
kind = "attention"
bias = false
[[layers]]
kind = "attention"
dk = 3
causal = true
[[layers]]
units = 2
[loss]
kind = "sse"
weight_decay = 0.01
"""


def module(text, dtype="float64"):
    return load_module(generate_module_source(loads_spec(text), dtype=dtype))


def perturbed(mod, seed=0):
    rng = np.random.default_rng(seed)
    params = mod.init_params(seed)
    for value in params.values():
        value += rng.uniform(-0.3, 0.3, value.shape)
    return params


def attention(p, x, layer, heads, causal, residual):
    """Hand-written torch attention (independent of the kernels): projections, SDPA, output."""
    n, t, _ = x.shape

    def get(name):
        return p.get(f"{name}{layer}", 0)

    def split(a):
        dk = a.shape[-1]
        return a.reshape(n, t, heads, dk // heads).transpose(1, 2)

    q, k, v = (split(x @ p[f"W{r}{layer}"].T + get(f"b{r}")) for r in "qkv")
    s = q @ k.transpose(-1, -2) / (q.shape[-1] ** 0.5)
    if causal:
        s = s.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
    o = (torch.softmax(s, -1) @ v).transpose(1, 2).reshape(n, t, -1)
    y = o @ p[f"Wo{layer}"].T + get("bo")
    return x + y if residual else y


def check(mod, params, X, T, loss_fn):
    before = {k: v.copy() for k, v in params.items()}
    X0, T0 = X.copy(), T.copy()
    value, grads = mod.loss_and_grad(params, X, T)
    p = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    loss = loss_fn(p)
    loss.backward()
    assert value == pytest.approx(float(loss.detach()), rel=1e-12)
    assert set(grads) == set(params)
    for name in params:
        np.testing.assert_allclose(grads[name], p[name].grad.numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=name)
    for name in before:
        np.testing.assert_array_equal(params[name], before[name])
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(T, T0)
    return value, grads


def test_block_gradients_equal_torch_autograd():
    mod = module(BLOCK)
    assert set(mod.PARAM_SHAPES) == {"W1", "b1", "Wq2", "bq2", "Wk2", "Wv2", "bv2", "Wo2",
                                     "bo2", "W3", "b3"}  # no key bias
    assert mod.PARAM_SHAPES["Wq2"] == (4, 4) and mod.PARAM_SHAPES["Wo2"] == (4, 4)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(5, 4, 3))
    T = np.eye(3)[rng.integers(0, 3, (5, 4))]
    params = perturbed(mod)

    def loss_fn(p):
        h = torch.tanh(torch.tensor(X) @ p["W1"].T + p["b1"])
        y = attention(p, h, 2, heads=2, causal=True, residual=True)
        z = y @ p["W3"].T + p["b3"]
        return -(torch.tensor(T) * F.log_softmax(z, -1)).sum()

    check(mod, params, X, T, loss_fn)
    assert mod.forward(params, X).shape == (5, 4, 3)
    # causal: the output at step t does not depend on later steps
    X2 = X.copy()
    X2[:, 2:] += 1.0
    np.testing.assert_allclose(mod.forward(params, X2)[:, :2], mod.forward(params, X)[:, :2],
                               rtol=1e-12)


def test_stacked_attention_without_biases_and_weight_decay():
    mod = module(STACKED)
    assert "bq1" not in mod.PARAM_SHAPES and mod.PARAM_SHAPES["Wq2"] == (3, 2)
    rng = np.random.default_rng(2)
    X, T = rng.normal(size=(4, 3, 2)), rng.normal(size=(4, 3, 2))
    params = perturbed(mod, 3)

    def loss_fn(p):
        y = attention(p, torch.tensor(X), 1, heads=1, causal=False, residual=False)
        y = attention(p, y, 2, heads=1, causal=True, residual=False)
        out = y @ p["W3"].T + p["b3"]
        decay = sum((p[k] ** 2).sum() for k in p if k.startswith("W"))
        return ((out - torch.tensor(T)) ** 2).sum() / 2 + 0.01 / 2 * decay

    check(mod, params, X, T, loss_fn)


def test_float32_stays_float32():
    mod = module(BLOCK, dtype="float32")
    params = mod.init_params(0)
    assert all(v.dtype == np.float32 for v in params.values())
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3, 4, 3)).astype(np.float32)
    T = np.eye(3, dtype=np.float32)[rng.integers(0, 3, (3, 4))]
    _, grads = mod.loss_and_grad(params, X, T)
    assert all(g.dtype == np.float32 for g in grads.values())
    assert mod.forward(params, X).dtype == np.float32


def test_training_learns_a_sequence_task():
    mod = module(BLOCK)
    rng = np.random.default_rng(0)
    X = np.eye(3)[rng.integers(0, 3, (64, 4))]
    counts = np.cumsum(X, axis=1)  # the most frequent token so far (ties: the smallest id)
    T = np.eye(3)[counts.argmax(axis=-1)]
    params = mod.init_params(0)
    before = mod.loss(params, X, T)
    losses = mod.train(params, X, T, epochs=300, learning_rate=0.02, mode="batch",
                       optimizer="adam")  # in place
    assert losses[-1] == pytest.approx(mod.loss(params, X, T), rel=0.05)
    assert mod.loss(params, X, T) < 0.5 * before


@pytest.mark.parametrize("text, message", [
    ('inputs = 4\n[[layers]]\nkind = "attention"\n[[layers]]\nunits = 1\n',
     "an attention layer needs a sequence input but the input is not a sequence"),
    ('inputs = { shape = [3, 2] }\n[[layers]]\nkind = "attention"\ndk = 3\nheads = 2\n'
     '[[layers]]\nunits = 1\n', "2 heads do not divide dk = 3"),
    ('inputs = { shape = [3, 2] }\n[[layers]]\nkind = "attention"\ncausal = 1\n'
     '[[layers]]\nunits = 1\n', "expected true or false"),
    ('inputs = { shape = [3, 2] }\n[[layers]]\nkind = "attention"\nunits = 3\n'
     '[[layers]]\nunits = 1\n', "unknown key 'units'"),
])
def test_bad_specs_are_one_line_errors(text, message):
    with pytest.raises(SpecError, match=message):
        loads_spec(text)


def test_cli_refuses_attention_on_flat_input(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "flat.toml"
    path.write_text('inputs = 4\n[[layers]]\nkind = "attention"\n[[layers]]\nunits = 1\n')
    out = tmp_path / "flat.py"
    result = subprocess.run([sys.executable, "-m", "symgrad", "generate", str(path), "-o",
                             str(out)], capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "flat.toml:3" in lines[0] and "sequence" in lines[0]
    assert not out.exists()
