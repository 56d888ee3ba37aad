"""Interleaved timing: warm-up, calibrate a block size per implementation, then R rounds in
which every implementation runs one block, round-robin with a rotating start."""

from __future__ import annotations

import gc
import math
import statistics
import time
from dataclasses import dataclass


@dataclass
class Timing:
    median: float  # seconds per call
    min: float
    number: int  # calls per block
    repeats: int
    samples: list  # seconds per call, one per round

    def as_dict(self):
        return {"median": self.median, "min": self.min, "number": self.number,
                "repeats": self.repeats, "samples": self.samples}


def paired_ratio(t: dict, base: dict) -> float:
    """Median over rounds of (time / baseline time in the same round): rounds run the
    implementations back to back, so pairing cancels most of a noisy machine's drift."""
    a, b = t.get("samples"), base.get("samples")
    if a and b and len(a) == len(b):
        return statistics.median(x / y for x, y in zip(a, b))
    return t["median"] / base["median"]


def _block(fn, number: int) -> float:
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        return (time.perf_counter() - t0) / number
    finally:
        if gc_was_enabled:
            gc.enable()


def calibrate(fn, target_s: float, warmup: int = 3) -> int:
    """Warm up ``fn`` (JIT compilation happens here) and choose calls per block."""
    for _ in range(warmup):
        fn()
    one = min(_block(fn, 1) for _ in range(3))
    number = max(1, math.ceil(target_s / max(one, 1e-9)))
    # refine with a longer block: single calls overestimate very fast functions
    est = _block(fn, number)
    return max(1, math.ceil(target_s / max(est, 1e-9)))


def interleaved(fns: dict, *, repeats: int, target_s: float, warmup: int = 3) -> dict:
    """Time every callable in ``fns`` (name -> zero-argument function). Returns name -> Timing."""
    numbers = {name: calibrate(fn, target_s, warmup) for name, fn in fns.items()}
    samples = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            samples[name].append(_block(fns[name], numbers[name]))
    return {name: Timing(statistics.median(s), min(s), numbers[name], repeats, s)
            for name, s in samples.items()}


def time_once(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
