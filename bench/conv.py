"""Convolutional networks: symgrad's generated ``loss_and_grad`` against a hand-written
im2col NumPy (``bench/conv_handwritten.py``) and PyTorch eager, forward + gradient.

Networks: the LeNet of ``examples/lenet_digits.toml`` (8x8 digits, batches 16 and 64) and a
28x28 LeNet (conv 8@5x5 relu, maxpool 2, conv 16@5x5 relu, maxpool 2, flatten, dense 10
softmax; batch 128); mean softmax cross-entropy (plus the spec's L2 term
``weight_decay / 2 * sum of squared kernels and weights``); float64 and float32.

Protocol: all three start from the generated module's ``init_params(0)``; synthetic images
uniform in [0, 1] and one-hot targets.  Before timing, the generated gradient must agree
with the hand-written one to a relative 2-norm error of 1e-10 per parameter in float64
(1e-4 in float32), PyTorch's with the hand-written one to 1e-8 (1e-3); one that does not is
reported and not timed.  PyTorch runs with ``torch.set_num_threads`` set to NumPy's BLAS
thread count (read with threadpoolctl; 1 in the pinned run).  Timing is
``bench/timing.py``'s interleaved rounds; each ratio is the median of the per-round ratios,
with their interquartile range as the spread; a ratio whose spread is wider than
``MAX_SPREAD`` is reported as too noisy instead of as a number.  Peak memory: tracemalloc's
peak during one ``loss_and_grad`` call (NumPy's allocations; inputs and parameters already
exist), generated against hand-written.
"""

from __future__ import annotations

import statistics
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tomllib

from bench import conv_handwritten as hand
from bench.timing import interleaved

REPO_ROOT = Path(__file__).resolve().parent.parent

HAND, SYMGRAD, TORCH = "numpy im2col (hand)", "symgrad", "PyTorch"
#: Gradient agreement required before timing: (generated vs hand, torch vs hand).
TOLERANCE = {"float64": (1e-10, 1e-8), "float32": (1e-4, 1e-3)}
#: Widest accepted spread of the per-round ratios: (q75 - q25) / median.
MAX_SPREAD = 0.15

LENET28_TOML = """\
name = "lenet28"
inputs = { shape = [1, 28, 28] }

[[layers]]
kind = "conv2d"
filters = 8
kernel = 5
activation = "relu"

[[layers]]
kind = "maxpool2d"
size = 2

[[layers]]
kind = "conv2d"
filters = 16
kernel = 5
activation = "relu"

[[layers]]
kind = "maxpool2d"
size = 2

[[layers]]
kind = "flatten"

[[layers]]
units = 10
activation = "softmax"

[loss]
kind = "cross_entropy"
reduction = "mean"
"""


@dataclass(frozen=True)
class ConvNet:
    name: str
    title: str
    toml: str
    batches: tuple


def conv_nets() -> tuple:
    lenet = (REPO_ROOT / "examples" / "lenet_digits.toml").read_text()
    return (ConvNet("lenet_digits", "LeNet for 8x8 digits (examples/lenet_digits.toml)",
                    lenet, (16, 64)),
            ConvNet("lenet28", "LeNet 28x28: conv 8@5x5, pool 2, conv 16@5x5, pool 2, "
                    "dense 10", LENET28_TOML, (128,)))


def layers_from_toml(text: str) -> tuple[tuple, tuple]:
    """(layers, input shape) in conv_handwritten's description, read from the TOML itself."""
    data = tomllib.loads(text)
    shape = tuple(data["inputs"]["shape"])
    layers = []
    for layer in data["layers"]:
        kind = layer.get("kind", "dense")
        if kind == "conv2d":
            if layer.get("stride", 1) != 1 or not isinstance(layer["kernel"], int):
                raise ValueError("the hand-written baseline takes square kernels, stride 1")
            pad = layer.get("padding", 0)
            if pad == "same":
                pad = (layer["kernel"] - 1) // 2
            layers.append(("conv", layer["filters"], layer["kernel"], pad,
                           layer.get("activation", "identity")))
        elif kind == "maxpool2d":
            if layer.get("stride", layer["size"]) != layer["size"]:
                raise ValueError("the hand-written baseline pools with stride = size")
            layers.append(("maxpool", layer["size"]))
        elif kind == "flatten":
            layers.append(("flatten",))
        elif kind == "dense":
            layers.append(("dense", layer["units"], layer.get("activation", "identity")))
        else:
            raise ValueError(f"layer kind {kind!r} not in the conv benchmark")
    return tuple(layers), shape


def architecture(layers: tuple, shape: tuple) -> str:
    parts = ["x".join(map(str, shape))]
    for layer in layers:
        if layer[0] == "conv":
            parts.append(f"conv {layer[1]}@{layer[2]}x{layer[2]}"
                         + (f" pad {layer[3]}" if layer[3] else "") + f" {layer[4]}")
        elif layer[0] == "maxpool":
            parts.append(f"maxpool {layer[1]}")
        elif layer[0] == "dense":
            parts.append(f"dense {layer[1]} {layer[2]}")
    return " - ".join(parts)


def make_data(shape: tuple, batch: int, n_classes: int, dtype, seed: int = 1):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0.0, 1.0, (batch, int(np.prod(shape)))).astype(dtype)
    T = np.eye(n_classes, dtype=dtype)[rng.integers(0, n_classes, batch)]
    return X, T


def numpy_threads() -> int | None:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    counts = [d.get("num_threads") for d in threadpool_info() if d.get("user_api") == "blas"]
    return max(counts) if counts else None


def weight_decay(text: str) -> float:
    return float(tomllib.loads(text).get("loss", {}).get("weight_decay", 0.0))


def torch_loss_and_grad(layers: tuple, shape: tuple, params: dict, X, T, decay: float = 0.0):
    """PyTorch eager: F.conv2d / F.max_pool2d / F.linear, F.cross_entropy with class
    indices (mean), torch.autograd.grad over every parameter."""
    import torch
    import torch.nn.functional as F

    P = {k: torch.from_numpy(v.copy()).requires_grad_(True) for k, v in params.items()}
    names = list(P)
    leaves = [P[k] for k in names]
    Xt = torch.from_numpy(X).reshape(len(X), *shape)
    idx = torch.from_numpy(T.argmax(axis=1))
    acts = {"relu": torch.relu, "tanh": torch.tanh, "identity": lambda z: z}

    def call():
        a = Xt
        for k, layer in enumerate(layers, start=1):
            kind = layer[0]
            if kind == "conv":
                a = acts[layer[4]](F.conv2d(a, P[f"K{k}"], P[f"b{k}"], padding=layer[3]))
            elif kind == "maxpool":
                a = F.max_pool2d(a, layer[1])
            elif kind == "flatten":
                a = a.flatten(1)
            else:
                a = F.linear(a, P[f"W{k}"], P[f"b{k}"])
                if k < len(layers):
                    a = acts[layer[2]](a)
        loss = F.cross_entropy(a, idx)
        if decay:
            loss = loss + 0.5 * decay * sum((P[k] * P[k]).sum() for k in names if k[0] in "KW")
        grads = torch.autograd.grad(loss, leaves)
        return loss, grads

    def as_numpy():
        loss, grads = call()
        return float(loss.detach()), {k: g.numpy() for k, g in zip(names, grads)}

    return call, as_numpy


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def max_rel_err(res, ref) -> float:
    (la, ga), (lb, gb) = res, ref
    if set(ga) != set(gb) or any(np.shape(ga[k]) != np.shape(gb[k]) for k in gb):
        return float("inf")
    return max([_rel(la, lb)] + [_rel(ga[k], gb[k]) for k in gb])


def peak_bytes(fn) -> int:
    """tracemalloc's peak during one call of ``fn`` (NumPy reports its buffers to it)."""
    fn()  # warm caches first
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def ratio_stats(t: dict, base: dict) -> dict:
    r = sorted(x / y for x, y in zip(t["samples"], base["samples"]))
    q = statistics.quantiles(r, n=4) if len(r) >= 2 else [r[0]] * 3
    med = statistics.median(r)
    spread = (q[2] - q[0]) / med
    return {"median": med, "q25": q[0], "q75": q[2], "min": r[0], "max": r[-1],
            "spread": spread, "ok": spread <= MAX_SPREAD}


def measure(net: ConvNet, batch: int, dtype_name: str, settings, log=print) -> dict:
    from bench.symgrad_adapter import SymgradUnavailable, module_from_toml

    dtype = np.dtype(dtype_name).type
    layers, shape = layers_from_toml(net.toml)
    rec = {"network": net.name, "batch": batch, "dtype": dtype_name,
           "arch": architecture(layers, shape), "check": {}, "missing": {}, "times": {},
           "ratios": {}, "peak_bytes": {}}
    try:
        module = module_from_toml(net.toml, dtype, net.name)
    except SymgradUnavailable as exc:
        rec["error"] = str(exc)
        return rec
    params = module.init_params(0, dtype)
    rec["n_params"] = int(sum(v.size for v in params.values()))
    X, T = make_data(shape, batch, layers[-1][1], dtype)
    decay = weight_decay(net.toml)
    rec["weight_decay"] = decay
    hand_fn = hand.make_loss_and_grad(layers, shape, decay)
    fns = {HAND: lambda: hand_fn(params, X, T),
           SYMGRAD: lambda: module.loss_and_grad(params, X, T)}
    reference = fns[HAND]()
    tol_gen, tol_torch = TOLERANCE[dtype_name]
    err = max_rel_err(fns[SYMGRAD](), reference)
    rec["check"][SYMGRAD] = {"max_err": err, "tol": tol_gen, "ok": bool(err < tol_gen)}
    try:
        torch_call, torch_np = torch_loss_and_grad(layers, shape, params, X, T, decay)
        err = max_rel_err(torch_np(), reference)
        rec["check"][TORCH] = {"max_err": err, "tol": tol_torch, "ok": bool(err < tol_torch)}
        fns[TORCH] = torch_call
    except ImportError as exc:
        rec["missing"][TORCH] = f"not installed ({exc})"
    timed = {n: f for n, f in fns.items() if n == HAND or rec["check"][n]["ok"]}
    res = interleaved(timed, repeats=max(settings.repeats, 7 if settings.quick else 15),
                      target_s=settings.target_s)
    rec["times"] = {n: t.as_dict() for n, t in res.items()}
    if SYMGRAD in res:
        rec["ratios"]["symgrad/hand"] = ratio_stats(rec["times"][SYMGRAD], rec["times"][HAND])
        if TORCH in res:
            rec["ratios"]["symgrad/torch"] = ratio_stats(rec["times"][SYMGRAD],
                                                         rec["times"][TORCH])
    if TORCH in res:
        rec["ratios"]["torch/hand"] = ratio_stats(rec["times"][TORCH], rec["times"][HAND])
    for n in (HAND, SYMGRAD):
        if n in timed:
            rec["peak_bytes"][n] = peak_bytes(fns[n])
    log(f"  {net.name:12s} b={batch:<4d} {dtype_name}: hand {res[HAND].median * 1e6:8.1f} us; "
        + ", ".join(f"{k} x{v['median']:.2f} [{v['q25']:.2f}-{v['q75']:.2f}]"
                    for k, v in rec["ratios"].items()))
    return rec


def run(settings, log=print) -> dict:
    threads = numpy_threads()
    torch_threads = None
    try:
        import torch
        if threads:
            torch.set_num_threads(threads)
        torch_threads = torch.get_num_threads()
    except ImportError:
        pass
    log(f"  NumPy BLAS threads {threads}, torch threads {torch_threads}")
    nets = conv_nets()
    records = [measure(net, b, dt, settings, log=log)
               for dt in ("float64", "float32") for net in nets for b in net.batches]
    return {"numpy_threads": threads, "torch_threads": torch_threads,
            "max_spread": MAX_SPREAD, "tolerance": TOLERANCE,
            "nets": {n.name: {"title": n.title, "batches": list(n.batches)} for n in nets},
            "records": records}
