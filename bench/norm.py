"""Normalisation benchmark: generated loss_and_grad vs hand-written NumPy vs PyTorch eager.

Network: 256 inputs -> dense 256 (no activation) -> {batchnorm, layernorm} relu -> dense 10
softmax, cross-entropy (sum), batch N = 512, float64, CPU.  The hand-written version is
independent code (the textbook closed-form backward written directly); PyTorch runs eagerly
with autograd.  Each timing is the median of `repeats` runs of `number` calls; the ratios
are reported as median [min, max] over rounds.

    python -m bench.norm            # prints a table
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread for every library, before NumPy loads

import time  # noqa: E402

import numpy as np  # noqa: E402

from symgrad.codegen import generate_module_source, load_module  # noqa: E402
from symgrad.spec import Network  # noqa: E402

N, D, H, K = 512, 256, 256, 10


def spec(kind):
    net = Network(f"bench_{kind}", inputs=D).dense(H, bias=False)
    net = net.batchnorm(activation="relu") if kind == "batchnorm" else \
        net.layernorm(activation="relu")
    return net.dense(K, "softmax").loss("cross_entropy").build()


def handwritten(kind):
    axis = 0 if kind == "batchnorm" else 1

    def loss_and_grad(p, X, T):
        z = X @ p["W1"].T
        mu = z.mean(axis=axis, keepdims=True)
        zc = z - mu
        r = 1.0 / np.sqrt((zc * zc).mean(axis=axis, keepdims=True) + 1e-5)
        xh = zc * r
        y = p["gamma2"] * xh + p["beta2"]
        a = np.maximum(y, 0)
        s = a @ p["W3"].T + p["b3"]
        s -= s.max(axis=1, keepdims=True)
        logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
        loss = -(T * logp).sum()
        d3 = np.exp(logp) - T
        g = {"W3": d3.T @ a, "b3": d3.sum(0)}
        dy = (d3 @ p["W3"]) * (y > 0)
        g["gamma2"], g["beta2"] = (dy * xh).sum(0), dy.sum(0)
        gh = dy * p["gamma2"]
        dz = r * (gh - gh.mean(axis=axis, keepdims=True)
                  - xh * (gh * xh).mean(axis=axis, keepdims=True))
        g["W1"] = dz.T @ X
        return loss, g
    return loss_and_grad


def torch_version(kind):
    import torch
    F = torch.nn.functional

    def loss_and_grad(p, X, T):
        p = {k: v.requires_grad_() for k, v in p.items()}
        z = X @ p["W1"].T
        if kind == "batchnorm":
            y = F.batch_norm(z, None, None, p["gamma2"], p["beta2"], training=True, eps=1e-5)
        else:
            y = F.layer_norm(z, (H,), p["gamma2"], p["beta2"], eps=1e-5)
        s = F.relu(y) @ p["W3"].T + p["b3"]
        loss = F.cross_entropy(s, T, reduction="sum")
        grads = torch.autograd.grad(loss, list(p.values()))
        return loss, grads
    return loss_and_grad


def timed(fn, args, number=5, repeats=7):
    fn(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn(*args)
        times.append((time.perf_counter() - start) / number)
    return float(np.median(times))


def main(rounds: int = 5) -> None:
    import torch
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D))
    labels = rng.integers(0, K, N)
    T = np.eye(K)[labels]
    print(f"N={N}, {D}-{H}-{K}, float64, 1 thread; ms per loss_and_grad (median), "
          "ratios median [min, max] over rounds")
    for kind in ("batchnorm", "layernorm"):
        mod = load_module(generate_module_source(spec(kind)))
        params = mod.init_params(0)
        mine, hand = mod.loss_and_grad, handwritten(kind)
        tp = {k: torch.tensor(v) for k, v in params.items() if not k.startswith("running")}
        tX, tT = torch.tensor(X), torch.tensor(labels)
        g1 = mine(params, X, T)[1]
        g2 = hand(params, X, T)[1]
        assert all(np.allclose(g1[k], g2[k]) for k in g2), "hand-written gradient disagrees"
        rows = {"generated": [], "hand-written": [], "torch": []}
        for _ in range(rounds):
            rows["generated"].append(timed(mine, (params, X, T)))
            rows["hand-written"].append(timed(hand, (params, X, T)))
            rows["torch"].append(timed(torch_version(kind), (tp, tX, tT)))
        gen = np.array(rows["generated"])
        for name, values in rows.items():
            values = np.array(values)
            ratio = gen / values
            print(f"{kind:10s} {name:13s} {1e3 * np.median(values):7.2f} ms   generated/{name}"
                  f" = {np.median(ratio):.2f} [{ratio.min():.2f}, {ratio.max():.2f}]")


if __name__ == "__main__":
    main()
