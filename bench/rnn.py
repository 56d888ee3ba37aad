"""Recurrent benchmark: generated RNN loss_and_grad against hand-written NumPy BPTT and PyTorch.

Standalone: ``python bench/rnn.py [--repeats R]``.  One Elman layer (tanh,
sequences = true) and a per-step linear readout with a summed squared error,
T = 50 steps, at hidden sizes 32..128 and batches 8..32.  The hand-written
version shares no code with symgrad (its own forward loop and reverse BPTT
loop, batch-first arrays, one matmul per step); PyTorch runs nn.RNN eagerly
on the CPU in float64 with one thread.  Gradients are checked to agree
before timing; each figure is the median of R timed calls, with the
interquartile range as the spread.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from symgrad.codegen import generate_module_source, load_module
from symgrad.spec import Network

STEPS, FEATURES, OUTPUTS = 50, 16, 8


def hand_loss_and_grad(p, X, T):
    """Elman RNN + linear readout, sse; BPTT written out by hand."""
    n, steps, _ = X.shape
    Wx, Wh, b, W, c = p["Wx1"], p["Wh1"], p["b1"], p["W2"], p["b2"]
    H = np.zeros((n, steps + 1, Wh.shape[0]))  # H[:, 0] = h_0 = 0
    for t in range(steps):
        H[:, t + 1] = np.tanh(X[:, t] @ Wx.T + H[:, t] @ Wh.T + b)
    Y = H[:, 1:] @ W.T + c
    E = Y - T
    loss = 0.5 * float((E * E).sum())
    gW = np.einsum("ntk,ntu->ku", E, H[:, 1:])
    gc = E.sum(axis=(0, 1))
    dH = E @ W  # dL/dh_t from the readout
    gWx, gWh, gb = np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)
    carry = np.zeros((n, Wh.shape[0]))
    for t in range(steps - 1, -1, -1):
        d = (dH[:, t] + carry) * (1 - H[:, t + 1] ** 2)
        gWx += d.T @ X[:, t]
        gWh += d.T @ H[:, t]
        gb += d.sum(axis=0)
        carry = d @ Wh
    return loss, {"Wx1": gWx, "Wh1": gWh, "b1": gb, "W2": gW, "b2": gc}


def timed(fn, repeats):
    fn()  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    q = statistics.quantiles(times, n=4)
    return statistics.median(times), q[2] - q[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    print(f"T = {STEPS}, F = {FEATURES}, K = {OUTPUTS}; median of {args.repeats} calls "
          "(IQR); ratios are time / generated")
    print(f"{'hidden':>6} {'batch':>5} {'generated ms':>16} {'hand NumPy':>16} "
          f"{'torch eager':>16} {'hand/gen':>8} {'torch/gen':>9}")
    for hidden, batch in ((32, 8), (64, 16), (128, 32)):
        spec = (Network("bench_rnn", inputs=(STEPS, FEATURES)).rnn(hidden, sequences=True)
                .dense(OUTPUTS).loss("sse").build())
        module = load_module(generate_module_source(spec), name=f"bench_rnn_{hidden}")
        params = module.init_params(seed=0)
        rng = np.random.default_rng(0)
        X = rng.normal(size=(batch, STEPS, FEATURES))
        T = rng.normal(size=(batch, STEPS, OUTPUTS))
        value, grads = module.loss_and_grad(params, X, T)
        hand_value, hand = hand_loss_and_grad(params, X, T)
        assert abs(value - hand_value) <= 1e-9 * abs(value)
        for key in grads:
            np.testing.assert_allclose(grads[key], hand[key], rtol=1e-8, atol=1e-10)
        rnn = torch.nn.RNN(FEATURES, hidden, batch_first=True, dtype=torch.float64)
        with torch.no_grad():
            rnn.weight_ih_l0.copy_(torch.tensor(params["Wx1"]))
            rnn.weight_hh_l0.copy_(torch.tensor(params["Wh1"]))
            rnn.bias_ih_l0.copy_(torch.tensor(params["b1"]))
            rnn.bias_hh_l0.zero_()
        readout = torch.nn.Linear(hidden, OUTPUTS, dtype=torch.float64)
        with torch.no_grad():
            readout.weight.copy_(torch.tensor(params["W2"]))
            readout.bias.copy_(torch.tensor(params["b2"]))
        tX, tT = torch.tensor(X), torch.tensor(T)

        def torch_step():
            for q in (*rnn.parameters(), *readout.parameters()):
                q.grad = None
            loss = 0.5 * ((readout(rnn(tX)[0]) - tT) ** 2).sum()
            loss.backward()
            return loss

        assert abs(torch_step().item() - value) <= 1e-9 * abs(value)
        np.testing.assert_allclose(rnn.weight_hh_l0.grad.numpy(), grads["Wh1"], rtol=1e-8)
        gen = timed(lambda: module.loss_and_grad(params, X, T), args.repeats)
        handt = timed(lambda: hand_loss_and_grad(params, X, T), args.repeats)
        tor = timed(torch_step, args.repeats)
        cell = lambda m: f"{m[0] * 1e3:8.2f} ({m[1] * 1e3:5.2f})"  # noqa: E731
        print(f"{hidden:>6} {batch:>5} {cell(gen):>16} {cell(handt):>16} {cell(tor):>16} "
              f"{handt[0] / gen[0]:>8.2f} {tor[0] / gen[0]:>9.2f}")


if __name__ == "__main__":
    main()
