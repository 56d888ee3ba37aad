"""Self-attention benchmark: generated loss_and_grad vs hand-written NumPy vs PyTorch eager.

Network: sequences X (N, T, D) = (32, 64, 64) -> causal self-attention (4 heads, dk = 64,
biases) -> a per-step dense 10 softmax, cross-entropy (sum) at every step, float64, CPU,
one thread.  The hand-written version is independent code (head arrays and batched matmul, the
textbook backward written directly, a boolean mask); PyTorch runs eagerly with autograd and
F.scaled_dot_product_attention.  Each timing is the median of `repeats` runs of `number`
calls; the ratios are reported as median [min, max] over rounds.

    python -m bench.attention       # prints a table
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread for every library, before NumPy loads

import time  # noqa: E402

import numpy as np  # noqa: E402

from symgrad.codegen import generate_module_source, load_module  # noqa: E402
from symgrad.spec import loads_spec  # noqa: E402

N, T, D, DK, H, K = 32, 64, 64, 64, 4, 10

SPEC = f"""
name = "bench_attention"
inputs = {{ shape = [{T}, {D}] }}
[[layers]]
kind = "attention"
dk = {DK}
heads = {H}
causal = true
[[layers]]
units = {K}
activation = "softmax"
[loss]
kind = "cross_entropy"
"""


def handwritten(p, X, Y):
    """Forward and backward by hand: (N, H, T, c) head arrays, batched matmul, a boolean mask."""
    n, t, _ = X.shape
    c = DK // H
    rows = X.reshape(n * t, D)

    def heads(a):  # (N*T, DK) -> (N, H, T, c)
        return a.reshape(n, t, H, c).transpose(0, 2, 1, 3)

    q, k, v = (heads(rows @ p[f"W{r}1"].T + p.get(f"b{r}1", 0)) for r in "qkv")
    s = (q @ k.transpose(0, 1, 3, 2)) * (1 / np.sqrt(c))
    s[..., ~np.tri(t, dtype=bool)] = -np.inf
    s -= s.max(-1, keepdims=True)
    w = np.exp(s)
    w /= w.sum(-1, keepdims=True)
    o = (w @ v).transpose(0, 2, 1, 3).reshape(n * t, DK)
    a = o @ p["Wo1"].T + p["bo1"]
    z = a @ p["W2"].T + p["b2"]
    z -= z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    y = Y.reshape(n * t, K)
    loss = -(y * logp).sum()
    dz = np.exp(logp) - y
    g = {"W2": dz.T @ a, "b2": dz.sum(0)}
    da = dz @ p["W2"]
    g["Wo1"], g["bo1"] = da.T @ o, da.sum(0)
    do = heads(da @ p["Wo1"])
    dv = w.transpose(0, 1, 3, 2) @ do
    dw = do @ v.transpose(0, 1, 3, 2)
    ds = w * (dw - (dw * w).sum(-1, keepdims=True)) * (1 / np.sqrt(c))
    dq, dk = ds @ k, ds.transpose(0, 1, 3, 2) @ q
    for r, d in (("q", dq), ("k", dk), ("v", dv)):
        d = d.transpose(0, 2, 1, 3).reshape(n * t, DK)
        g[f"W{r}1"] = d.T @ rows
        if f"b{r}1" in p:
            g[f"b{r}1"] = d.sum(0)
    return loss, g


def torch_version(p, X, labels):
    import torch
    F = torch.nn.functional
    p = {k: v.requires_grad_() for k, v in p.items()}
    n, t, _ = X.shape

    def split(a):
        return a.reshape(n, t, H, DK // H).transpose(1, 2)

    q, k, v = (split(X @ p[f"W{r}1"].T + p.get(f"b{r}1", 0)) for r in "qkv")
    o = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(n, t, DK)
    z = (o @ p["Wo1"].T + p["bo1"]) @ p["W2"].T + p["b2"]
    loss = F.cross_entropy(z.reshape(-1, K), labels.reshape(-1), reduction="sum")
    return loss, torch.autograd.grad(loss, list(p.values()))


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
    X = rng.normal(size=(N, T, D))
    labels = rng.integers(0, K, (N, T))
    Y = np.eye(K)[labels]
    mod = load_module(generate_module_source(loads_spec(SPEC)))
    params = mod.init_params(0)
    g1 = mod.loss_and_grad(params, X, Y)[1]
    g2 = handwritten(params, X, Y)[1]
    assert all(np.allclose(g1[k], g2[k], rtol=1e-9, atol=1e-11) for k in g2), \
        "hand-written gradient disagrees"
    tp = {k: torch.tensor(v) for k, v in params.items()}
    tX, tl = torch.tensor(X), torch.tensor(labels)
    g3 = torch_version(dict(tp), tX, tl)[1]
    assert all(np.allclose(g1[k], g.numpy(), rtol=1e-9, atol=1e-11) for k, g in zip(tp, g3)), \
        "torch gradient disagrees"
    print(f"N={N}, T={T}, D={D}, dk={DK}, {H} heads, causal, dense {K} per step, float64, "
          "1 thread; ms per loss_and_grad (median), ratios median [min, max] over rounds")
    rows = {"generated": [], "hand-written": [], "torch": []}
    for _ in range(rounds):
        rows["generated"].append(timed(mod.loss_and_grad, (params, X, Y)))
        rows["hand-written"].append(timed(handwritten, (params, X, Y)))
        rows["torch"].append(timed(torch_version, (tp, tX, tl)))
    gen = np.array(rows["generated"])
    for name, values in rows.items():
        values = np.array(values)
        ratio = gen / values
        print(f"{name:13s} {1e3 * np.median(values):7.2f} ms   generated/{name}"
              f" = {np.median(ratio):.2f} [{ratio.min():.2f}, {ratio.max():.2f}]")


if __name__ == "__main__":
    main()
