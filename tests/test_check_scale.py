"""Gradient checks that scale: sampled entries plus random directional derivatives.

The oracle is a hand-written NumPy 784-300-100-10 network (ReLU, ReLU,
softmax with mean cross-entropy) and its hand-derived backward pass, written
here; bugs are planted into its gradient and every one must be caught, while
the correct gradient must pass for every seed (ReLU kinks included).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from symgrad.gradcheck import check_gradient

ROOT = Path(__file__).resolve().parents[1]
SIZES = (784, 300, 100, 10)
BATCH = 5


def _problem(seed: int = 0):
    """Random parameters (biases off zero), inputs in [-1, 1] and one-hot targets."""
    rng = np.random.default_rng(1000 + seed)
    p = {}
    for k, (fan_in, units) in enumerate(zip(SIZES[:-1], SIZES[1:]), start=1):
        p[f"W{k}"] = rng.normal(0.0, np.sqrt(2.0 / fan_in), (units, fan_in))
        p[f"b{k}"] = rng.uniform(-0.5, 0.5, units)
    X = rng.uniform(-1, 1, (BATCH, SIZES[0]))
    T = np.eye(SIZES[-1])[rng.integers(0, SIZES[-1], BATCH)]
    return p, X, T


def _loss(p, X, T):
    h1 = np.maximum(X @ p["W1"].T + p["b1"], 0)
    h2 = np.maximum(h1 @ p["W2"].T + p["b2"], 0)
    z = h2 @ p["W3"].T + p["b3"]
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-np.sum(T * logp) / len(X))


def _grad(p, X, T):
    z1 = X @ p["W1"].T + p["b1"]
    h1 = np.maximum(z1, 0)
    z2 = h1 @ p["W2"].T + p["b2"]
    h2 = np.maximum(z2, 0)
    z = h2 @ p["W3"].T + p["b3"]
    e = np.exp(z - z.max(axis=1, keepdims=True))
    d3 = (e / e.sum(axis=1, keepdims=True) - T) / len(X)
    d2 = (d3 @ p["W3"]) * (z2 > 0)
    d1 = (d2 @ p["W2"]) * (z1 > 0)
    return {"W1": d1.T @ X, "b1": d1.sum(0), "W2": d2.T @ h1, "b2": d2.sum(0),
            "W3": d3.T @ h2, "b3": d3.sum(0)}


def _check(grad_fn, seed=0, **kw):
    p, X, T = _problem(seed)
    kw.setdefault("entries", 32)
    kw.setdefault("directions", 4)
    return check_gradient(_loss, grad_fn, p, X, T, seed=seed, **kw)


@pytest.mark.parametrize("seed", range(3))
def test_the_correct_gradient_passes_with_every_seed(seed):
    rep = _check(_grad, seed)
    assert rep.passed, str(rep)
    assert rep["W1"].n_checked == 32 and rep["b3"].n_checked == 10
    assert all(sum(d["status"] == "ok" for d in r.directions) == 4
               for r in rep.params.values())
    assert "W1: 32 of 235200 entries sampled + 4 directional derivatives" in str(rep)


def _mutated(mutate):
    def grad(p, X, T):
        g = _grad(p, X, T)
        mutate(g, p, X, T)
        return g
    return grad


def _single_entry(g, p, X, T):
    w = g["W1"]
    # a typical entry (median magnitude among the nonzero ones), off by a factor 2
    flat = np.abs(w).ravel()
    nz = np.flatnonzero(flat)
    k = nz[np.argsort(flat[nz])[len(nz) // 2]]
    w.ravel()[k] *= 2.0
    _single_entry.index = np.unravel_index(k, w.shape)


@pytest.mark.parametrize("seed", range(3))
def test_one_wrong_entry_that_the_sample_misses_is_caught_by_the_directions(seed):
    rep = _check(_mutated(_single_entry), seed)
    w1 = rep["W1"]
    assert not w1.checked[_single_entry.index], "the sample should have missed the entry"
    assert w1.n_wrong == 0                      # no sampled entry is wrong ...
    assert w1.n_wrong_directions >= 1           # ... yet the directions see it
    assert rep.failed == ["W1"], str(rep)
    assert any("directional derivatives disagree" in n for n in w1.notes)


def _wrong_row(g, p, X, T):
    g["W2"][17] *= 0.5


def _transposed_block(g, p, X, T):
    g["W2"][:40, :40] = g["W2"][:40, :40].T.copy()


def _missing_one_over_n(g, p, X, T):
    for k in g:
        g[k] *= len(X)


def _sign_flip(g, p, X, T):
    g["b2"] = -g["b2"]


def _w3_plus_tiny_row(g, p, X, T):
    g["W3"][3] += 1e-3


@pytest.mark.parametrize("mutate,failing", [
    (_wrong_row, {"W2"}),
    (_transposed_block, {"W2"}),
    (_missing_one_over_n, {"W1", "b1", "W2", "b2", "W3", "b3"}),
    (_sign_flip, {"b2"}),
    (_w3_plus_tiny_row, {"W3"}),
], ids=["wrong_row", "transposed_block", "missing_1_over_N", "sign_flip", "tiny_row"])
def test_planted_bugs_are_caught(mutate, failing):
    rep = _check(_mutated(mutate))
    assert set(rep.failed) == failing, str(rep)
    for name in failing:
        assert rep[name].n_wrong_directions >= 1 or rep[name].n_wrong >= 1


def test_directions_alone_catch_every_planted_bug():
    """With a single sampled entry per parameter the directions still catch them all."""
    for mutate in (_single_entry, _wrong_row, _transposed_block, _sign_flip):
        rep = _check(_mutated(mutate), entries=1, directions=2)
        assert not rep.passed, mutate.__name__


def test_json_names_the_sampled_entries():
    rep = _check(_grad)
    d = json.loads(json.dumps(rep.to_dict(), allow_nan=False))
    w1 = d["params"]["W1"]
    assert w1["sampled"] is True and w1["entries_checked"] == 32
    assert w1["entries_total"] == 235200
    assert len(w1["sampled_indices"]) == 32 and len(w1["numerical"]) == 32
    assert [tuple(i) for i in w1["sampled_indices"]] == \
        [tuple(i) for i in np.argwhere(rep["W1"].checked)]
    assert len(w1["directions"]) == 4 and all(x["status"] == "ok" for x in w1["directions"])
    assert d["params"]["b3"]["sampled"] is False and "sampled_indices" not in d["params"]["b3"]
    assert d["checked"] == rep.n_checked == 5 * 32 + 10 + 6 * 4


def test_the_sample_depends_on_the_seed():
    p, X, T = _problem()
    a = check_gradient(_loss, _grad, p, X, T, entries=8, seed=1)["W1"].checked
    b = check_gradient(_loss, _grad, p, X, T, entries=8, seed=2)["W1"].checked
    c = check_gradient(_loss, _grad, p, X, T, entries=8, seed=1)["W1"].checked
    assert (a == c).all() and not (a == b).all()


def test_sampled_failures_say_how_to_get_a_diagnosis():
    rep = _check(_mutated(_sign_flip))
    assert rep["b2"].diagnoses == []
    assert any("--entries all" in n for n in rep["b2"].notes)


def test_progress_is_reported():
    calls = []
    p, X, T = _problem()
    check_gradient(_loss, _grad, p, X, T, entries=4, directions=1,
                   progress=lambda done, total: calls.append((done, total)))
    total = 4 * 5 + 10 * 0 + 4 + 6   # b3 has 10 entries > 4: sampled too
    assert calls[-1] == (total, total)
    assert [d for d, _ in calls] == list(range(1, total + 1))


def test_bad_sampling_arguments():
    p, X, T = _problem()
    with pytest.raises(ValueError, match="entries"):
        check_gradient(_loss, _grad, p, X, T, entries=0)
    with pytest.raises(ValueError, match="directions"):
        check_gradient(_loss, _grad, p, X, T, directions=-1)


# --------------------------------------------------------------------------- the command line


MNIST_SPEC = """\
name = "mnist"
inputs = 784

[[layers]]
units = 300
activation = "relu"

[[layers]]
units = 100
activation = "relu"

[[layers]]
units = 10
activation = "softmax"

[loss]
kind = "cross_entropy"
reduction = "mean"
"""


def _cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "symgrad", *args], capture_output=True,
                          text=True, env=env, cwd=cwd)


def test_mnist_size_check_on_the_command_line_is_fast(tmp_path):
    spec = tmp_path / "mnist.toml"
    spec.write_text(MNIST_SPEC)
    start = time.monotonic()
    result = _cli("generate", str(spec), "-o", "mnist.py", "--check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = _cli("check", "mnist.py", cwd=tmp_path)
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result.stdout + result.stderr
    assert "W1: 32 of 235200 entries sampled + 4 directional derivatives" in result.stdout
    assert "b3: all 10 entries + 4 directional derivatives" in result.stdout
    # the full per-entry check took 923 s; generous bound for a loaded 2-core machine
    assert elapsed < 60, elapsed
    # stderr is not a TTY here: at most a few plain progress lines, no carriage returns
    assert "\r" not in result.stderr and len(result.stderr.splitlines()) <= 6
