"""GEMM efficiency: the matmuls of one forward+gradient step, timed alone with np.matmul at
the same shapes and layouts as the hand-written code (``a @ W.T``, ``delta.T @ a``,
``delta @ W``)."""

from __future__ import annotations

import numpy as np

from bench.networks import Network


def gemm_workload(net: Network, batch: int, dtype=np.float64, seed: int = 3):
    """Returns (fn, flops): ``fn()`` runs every matmul of one step once."""
    rng = np.random.default_rng(seed)
    ops, flops, fan_in = [], 0, net.inputs
    for k, (units, _) in enumerate(net.layers, start=1):
        a = rng.standard_normal((batch, fan_in)).astype(dtype)
        W = rng.standard_normal((units, fan_in)).astype(dtype)
        d = rng.standard_normal((batch, units)).astype(dtype)
        ops.append((a, W.T))  # forward  z = a @ W.T
        ops.append((d.T, a))  # dW = delta.T @ a
        if k > 1:
            ops.append((d, W))  # delta_prev = delta @ W
        flops += 2 * batch * fan_in * units * (3 if k > 1 else 2)
        fan_in = units

    def fn():
        for x, y in ops:
            np.matmul(x, y)

    return fn, flops
