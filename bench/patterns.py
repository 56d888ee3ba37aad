"""Three generated-code patterns against careful hand-written NumPy: time and peak memory.

1. ``deep_relu``: a 20-layer ReLU network (256 wide, batch 512): every delta and dL/da is
   freed once its last reader has run.
2. ``softmax_ce``: softmax with cross-entropy (digits-size 64-32-10, batch 256, and a
   1024-100 output): the output and its log from one exp.
3. ``tanh_delta``: one tanh layer's delta at 1024x256, ``dL/da * (1 - a**2)`` with one
   temporary.

Each case times the generated ``loss_and_grad`` and a hand-written one (independent code,
the way a careful person writes it) in interleaved rounds (``bench.timing``), reports the
median of the per-round ratio generated/hand with its range, and the tracemalloc peak of
one call of each.  A ratio whose rounds spread by more than 15 % of the median is
reported as too noisy, not as a number.

    python -m bench.patterns [--repeats 15]
"""

from __future__ import annotations

import argparse
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread for every library, before NumPy loads

import statistics  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402

from bench.timing import interleaved  # noqa: E402
from symgrad.codegen import generate_module_source, load_module  # noqa: E402
from symgrad.spec import Network  # noqa: E402


def _deep_relu():
    net = Network("deep_relu", inputs=256)
    for _ in range(20):
        net = net.dense(256, "relu")
    spec = net.dense(10, "softmax").loss("cross_entropy", reduction="mean").build()

    def hand(p, X, T):
        n = len(X)
        acts = [X]
        for i in range(1, 21):
            z = acts[-1] @ p[f"W{i}"].T
            z += p[f"b{i}"]
            acts.append(np.maximum(z, 0, out=z))
        z = acts[-1] @ p["W21"].T + p["b21"]
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)
        loss = float(-(T * (z - np.log(s))).sum() / n)
        delta = e / s
        delta -= T
        delta /= n
        g = {"W21": delta.T @ acts[20], "b21": delta.sum(axis=0)}
        for i in range(20, 0, -1):
            back = delta @ p[f"W{i + 1}"]
            a = acts.pop()
            back *= a > 0
            delta = back
            g[f"W{i}"] = delta.T @ acts[-1]
            g[f"b{i}"] = delta.sum(axis=0)
        return loss, g

    rng = np.random.default_rng(0)
    X = rng.normal(size=(512, 256))
    T = np.eye(10)[rng.integers(10, size=512)]
    return spec, hand, X, T


def _softmax_ce(inputs, hidden, classes, batch):
    spec = (Network("softmax_ce", inputs=inputs).dense(hidden, "tanh")
            .dense(classes, "softmax").loss("cross_entropy", reduction="mean").build())

    def hand(p, X, T):
        n = len(X)
        a1 = np.tanh(X @ p["W1"].T + p["b1"])
        z = a1 @ p["W2"].T + p["b2"]
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)
        loss = float(-(T * (z - np.log(s))).sum() / n)
        delta2 = e / s
        delta2 -= T
        delta2 /= n
        d1 = delta2 @ p["W2"]
        d1 *= 1 - a1 * a1
        return loss, {"W2": delta2.T @ a1, "b2": delta2.sum(axis=0),
                      "W1": d1.T @ X, "b1": d1.sum(axis=0)}

    rng = np.random.default_rng(0)
    X = rng.normal(size=(batch, inputs))
    T = np.eye(classes)[rng.integers(classes, size=batch)]
    return spec, hand, X, T


def _tanh_delta():
    spec = (Network("tanh_delta", inputs=256).dense(256, "tanh").dense(256, "identity")
            .loss("mse", reduction="mean").build())

    def hand(p, X, T):
        n = len(X)
        a1 = np.tanh(X @ p["W1"].T + p["b1"])
        y = a1 @ p["W2"].T + p["b2"]
        r = y - T
        loss = float((r * r).sum() / (256 * n))
        d2 = r * (2 / (256 * n))
        d1 = d2 @ p["W2"]
        t = a1 * a1
        np.subtract(1, t, out=t)
        d1 *= t
        return loss, {"W2": d2.T @ a1, "b2": d2.sum(axis=0), "W1": d1.T @ X,
                      "b1": d1.sum(axis=0)}

    rng = np.random.default_rng(0)
    return spec, hand, rng.normal(size=(1024, 256)), rng.normal(size=(1024, 256))


CASES = {
    "deep_relu": _deep_relu,
    "softmax_ce_digits": lambda: _softmax_ce(64, 32, 10, 256),
    "softmax_ce_wide": lambda: _softmax_ce(256, 256, 100, 1024),
    "tanh_delta": _tanh_delta,
}


def _peak(fn) -> int:
    fn()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def run(repeats: int = 15, target_s: float = 0.05) -> list[dict]:
    rows = []
    for name, make in CASES.items():
        spec, hand, X, T = make()
        module = load_module(generate_module_source(spec), name=f"bench_{name}")
        params = module.init_params(seed=0)
        lg, hg = module.loss_and_grad(params, X, T), hand(params, X, T)
        assert abs(lg[0] - hg[0]) <= 1e-9 * max(1.0, abs(hg[0])), name
        for key in params:
            np.testing.assert_allclose(lg[1][key], hg[1][key], rtol=1e-8, atol=1e-12,
                                       err_msg=f"{name}: {key}")
        timings = interleaved({"generated": lambda: module.loss_and_grad(params, X, T),
                               "hand": lambda: hand(params, X, T)},
                              repeats=repeats, target_s=target_s)
        ratios = [g / h for g, h in zip(timings["generated"].samples, timings["hand"].samples)]
        median = statistics.median(ratios)
        spread = (max(ratios) - min(ratios)) / median
        rows.append({"case": name, "ratio": median, "min": min(ratios), "max": max(ratios),
                     "noisy": spread > 0.15 and (statistics.quantiles(ratios, n=4)[2]
                                                 - statistics.quantiles(ratios, n=4)[0])
                     / median > 0.15,
                     "peak_generated": _peak(lambda: module.loss_and_grad(params, X, T)),
                     "peak_hand": _peak(lambda: hand(params, X, T)),
                     "hand_ms": timings["hand"].median * 1e3})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    print(f"{'case':<20} {'generated/hand (median [min, max])':<38} {'peak gen/hand':<14} "
          f"{'hand ms':>8}")
    for row in run(args.repeats):
        ratio = ("too noisy" if row["noisy"] else
                 f"{row['ratio']:.3f} [{row['min']:.3f}, {row['max']:.3f}]")
        memory = row["peak_generated"] / row["peak_hand"]
        print(f"{row['case']:<20} {ratio:<38} {memory:<14.3f} {row['hand_ms']:>8.2f}")


if __name__ == "__main__":
    main()
