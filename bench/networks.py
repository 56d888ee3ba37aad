"""The table of benchmark networks, their TOML specs and their data.

Conventions shared by every implementation (hand-written NumPy, symgrad,
PyTorch, JAX, autograd):

* batch-first inputs ``X`` of shape (N, inputs), targets ``T`` of shape (N, outputs);
* parameters ``W1, b1, W2, b2, ...``; ``Wk`` has shape (units, fan_in), ``bk`` (units,);
* ``z = a @ W.T + b``;
* losses: ``sse`` = SSE_SCALE * sum((y - t)**2); ``cross_entropy`` = -sum(t * log softmax(z));
  ``mse`` / ``bce`` as usual; reduction "sum" unless a network says "mean".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Scale of the sum-of-squares loss.  Rumelhart, Hinton & Williams (1986) use 1/2.
SSE_SCALE = 0.5


@dataclass(frozen=True)
class Network:
    name: str
    title: str
    inputs: int
    layers: tuple  # ((units, activation), ...)
    loss: str  # sse | mse | bce | cross_entropy
    batches: tuple  # batch sizes timed in the full run
    quick_batches: tuple = ()  # batch sizes timed with --quick
    reduction: str = "sum"
    data: str = "random"  # how synthetic data is made, see make_data
    extra: dict = field(default_factory=dict)

    @property
    def outputs(self) -> int:
        return self.layers[-1][0]

    @property
    def n_params(self) -> int:
        fan_in, n = self.inputs, 0
        for units, _ in self.layers:
            n += units * (fan_in + 1)
            fan_in = units
        return n

    @property
    def arch(self) -> str:
        return "-".join([str(self.inputs)] + [str(u) for u, _ in self.layers])


def _deep(depth: int, width: int) -> tuple:
    return tuple([(width, "tanh")] * depth + [(10, "softmax")])


NETWORKS: tuple[Network, ...] = (
    Network("xor", "XOR 2-2-1 sigmoid/SSE", 2, ((2, "sigmoid"), (1, "sigmoid")), "sse",
            batches=(4,), quick_batches=(4,), data="xor"),
    Network("symmetry", "1986 symmetry 6-2-1 sigmoid/SSE", 6, ((2, "sigmoid"), (1, "sigmoid")),
            "sse", batches=(64, 1), quick_batches=(64,), data="symmetry"),
    Network("digits", "digits 64-32-10 sigmoid/softmax-CE", 64, ((32, "sigmoid"), (10, "softmax")),
            "cross_entropy", batches=(1, 32, 256), quick_batches=(32,)),
    Network("mnist", "MNIST-size 784-256-128-10 ReLU/softmax-CE", 784,
            ((256, "relu"), (128, "relu"), (10, "softmax")), "cross_entropy",
            batches=(1, 32, 128, 1024), quick_batches=(128, 1024)),
    Network("deep", "deep 64x20-10 tanh/softmax-CE", 64, _deep(20, 64), "cross_entropy",
            batches=(1, 64, 512), quick_batches=(64,)),
)

BY_NAME = {n.name: n for n in NETWORKS}

#: The width x depth sweep for derivation cost.
SWEEP_WIDTHS = (2, 8, 64, 256, 1024, 4096)
SWEEP_DEPTHS = (1, 2, 3, 5, 10, 20, 50, 100)
QUICK_SWEEP_WIDTHS = (2, 64, 1024)
QUICK_SWEEP_DEPTHS = (1, 2, 3, 10)


def sweep_network(width: int, depth: int) -> Network:
    """``depth`` weight layers of ``width`` units: tanh hidden, softmax-CE output."""
    layers = tuple([(width, "tanh")] * (depth - 1) + [(width, "softmax")])
    return Network(f"sweep_w{width}_d{depth}", f"sweep width {width} depth {depth}", width,
                   layers, "cross_entropy", batches=())


def spec_toml(net: Network) -> str:
    """The symgrad TOML spec of ``net``."""
    lines = [f'name = "{net.name}"', f"inputs = {net.inputs}", ""]
    for units, act in net.layers:
        lines += ["[[layers]]", f"units = {units}", f'activation = "{act}"', ""]
    lines += ["[loss]", f'kind = "{net.loss}"', f'reduction = "{net.reduction}"', ""]
    return "\n".join(lines)


def init_params(net: Network, dtype=np.float64, seed: int = 0) -> dict[str, np.ndarray]:
    """Shared initial parameters (Glorot-uniform weights, small biases) for every implementation."""
    rng = np.random.default_rng(seed)
    params, fan_in = {}, net.inputs
    for k, (units, _) in enumerate(net.layers, start=1):
        lim = np.sqrt(6.0 / (fan_in + units))
        params[f"W{k}"] = rng.uniform(-lim, lim, size=(units, fan_in)).astype(dtype)
        params[f"b{k}"] = rng.uniform(-0.1, 0.1, size=units).astype(dtype)
        fan_in = units
    return params


def make_data(net: Network, batch: int, dtype=np.float64, seed: int = 1):
    """Synthetic (X, T) for ``net`` at ``batch`` rows."""
    rng = np.random.default_rng(seed)
    if net.data == "xor":
        base = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
        X = base[np.arange(batch) % 4]
        T = (X[:, :1] != X[:, 1:]).astype(float)
    elif net.data == "symmetry":
        X = rng.integers(0, 2, size=(batch, net.inputs)).astype(float)
        T = np.all(X == X[:, ::-1], axis=1, keepdims=True).astype(float)
    else:
        X = rng.standard_normal((batch, net.inputs))
        if net.loss == "cross_entropy":
            T = np.eye(net.outputs)[rng.integers(0, net.outputs, size=batch)]
        else:
            T = rng.uniform(0, 1, size=(batch, net.outputs))
    return np.ascontiguousarray(X, dtype=dtype), np.ascontiguousarray(T, dtype=dtype)

