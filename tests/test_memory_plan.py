"""The memory plan frees each delta and dL/da once its last reader has run.

Peak memory is measured with tracemalloc (deterministic, not a timing): the
generated loss_and_grad of a deep ReLU network against the same module
generated without freeing.
"""

from __future__ import annotations

import sys
import tracemalloc

import numpy as np

from symgrad import codegen
from symgrad.codegen import generate_module_source, load_module
from symgrad.spec import Network


def deep_relu(depth=20, width=256):
    net = Network("deep", inputs=width)
    for _ in range(depth):
        net = net.dense(width, "relu")
    return net.dense(10, "softmax").loss("cross_entropy", reduction="mean").build()


def peak(module, params, X, T) -> int:
    module.loss_and_grad(params, X, T)  # warm up
    tracemalloc.start()
    try:
        module.loss_and_grad(params, X, T)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_freeing_lowers_the_peak_and_keeps_the_gradient(monkeypatch):
    spec = deep_relu()
    freed = load_module(generate_module_source(spec), name="deep_freed")
    lines = codegen._lines
    monkeypatch.setattr(codegen, "_lines", lambda *a, **k: lines(*a, **{**k, "free": False}))
    kept = load_module(generate_module_source(spec), name="deep_kept")
    params = freed.init_params(seed=0)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(512, 256))
    T = np.eye(10)[rng.integers(10, size=512)]
    value_freed, grads_freed = freed.loss_and_grad(params, X, T)
    value_kept, grads_kept = kept.loss_and_grad(params, X, T)
    assert value_freed == value_kept
    for name in params:
        np.testing.assert_array_equal(grads_freed[name], grads_kept[name])
    assert peak(freed, params, X, T) < 0.8 * peak(kept, params, X, T)


def test_no_delta_outlives_its_readers():
    module = load_module(generate_module_source(deep_relu(depth=6, width=8)), name="deep_small")
    params = module.init_params(seed=0)
    X, T = np.ones((4, 8)), np.eye(10)[[0, 1, 2, 3]]
    alive = {}

    def tracer(frame, event, arg):
        if frame.f_code is module.loss_and_grad.__code__:
            if event == "return":
                alive.update(frame.f_locals)
            return tracer
        return None

    sys.settrace(tracer)
    try:
        module.loss_and_grad(params, X, T)
    finally:
        sys.settrace(None)
    leftovers = sorted(k for k in alive if k.startswith(("delta", "dL_da", "z", "a")))
    assert leftovers == [], leftovers
