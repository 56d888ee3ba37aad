"""Runtime of forward+gradient, forward alone and a full SGD-momentum step, per network,
batch size and dtype; every figure relative to the hand-written NumPy in the same run."""

from __future__ import annotations

import numpy as np

from bench import gemm
from bench.check import check_all
from bench.impls import BASELINE, build_all
from bench.networks import BY_NAME, NETWORKS, init_params, make_data
from bench.timing import interleaved, paired_ratio

GEMM_NAME = "np.matmul (GEMMs only)"
#: interleaved rounds at least, where the GEMM share is measured (a median of paired ratios)
GEMM_MIN_ROUNDS = 15
#: forward time is measured where "gradient cost over forward cost" is reported
FORWARD_MIN_BATCH = 64


def runs(settings, which: str = "timing"):
    """(network, batch, dtype-name) triples to time."""
    out = []
    for net in NETWORKS:
        batches = net.quick_batches if settings.quick else net.batches
        for b in batches:
            out.append((net.name, b, "float64"))
    f32 = settings.float32_runs
    for net in NETWORKS:
        for b in (net.quick_batches if settings.quick else net.batches):
            if f32 is None or (net.name, b) in f32:
                out.append((net.name, b, "float32"))
    return out


def measure(net_name: str, batch: int, dtype_name: str, settings, *, gemm_too=False,
            kinds=("grad", "step", "forward"), log=print) -> dict:
    net, dtype = BY_NAME[net_name], np.dtype(dtype_name).type
    params = init_params(net, dtype)
    X, T = make_data(net, batch, dtype)
    impls, missing = build_all(net, params, X, T, dtype)
    check = check_all(impls, dtype_name)
    good = {n: i for n, i in impls.items() if check[n]["ok"]}
    rec = {"network": net_name, "batch": batch, "dtype": dtype_name, "check": check,
           "missing": missing, "times": {}}
    if BASELINE not in good:
        rec["error"] = "baseline failed its gradient check; nothing timed"
        return rec
    for kind in kinds:
        if kind == "forward" and batch < FORWARD_MIN_BATCH:
            continue
        fns = {n: getattr(i, kind) for n, i in good.items()}
        flops, repeats = None, settings.repeats
        if kind == "grad" and gemm_too:
            fns[GEMM_NAME], flops = gemm.gemm_workload(net, batch, dtype)
            rec["gemm_flops"] = flops
            repeats = max(repeats, GEMM_MIN_ROUNDS)
        res = interleaved(fns, repeats=repeats, target_s=settings.target_s)
        rec["times"][kind] = {n: t.as_dict() for n, t in res.items()}
    tb = rec["times"]["grad"][BASELINE]
    base = tb["median"]
    log(f"  {net_name:9s} b={batch:<5d} {dtype_name}: baseline grad {base * 1e6:9.1f} us; "
        + ", ".join(f"{n} x{paired_ratio(t, tb):.2f}"
                    for n, t in rec["times"]["grad"].items() if n != BASELINE))
    return rec


def run_all(settings, log=print) -> list:
    gemm_runs = set(settings.gemm_runs)
    records = []
    for net_name, batch, dt in runs(settings):
        records.append(measure(net_name, batch, dt, settings, log=log,
                               gemm_too=(net_name, batch) in gemm_runs))
    return records


def run_allcores(settings, log=print) -> list:
    """Called inside the unpinned worker process."""
    return [measure(n, b, "float64", settings, kinds=("grad",), log=log)
            for n, b in settings.allcores_runs]
