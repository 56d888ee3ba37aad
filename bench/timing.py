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


#: a share is a number only when its per-round ratios agree this well: (Q3 - Q1) / median
SHARE_MAX_SPREAD = 0.2
#: and when at least this many paired rounds were run
SHARE_MIN_ROUNDS = 7


def share(part: dict, whole: dict, *, max_spread: float = SHARE_MAX_SPREAD,
          min_rounds: int = SHARE_MIN_ROUNDS) -> tuple[float | None, str]:
    """The fraction of ``whole``'s time that ``part`` takes (the GEMM share of a step).

    ``part`` and ``whole`` are Timing dicts from the same :func:`interleaved` call: the share
    is the median over rounds of part/whole in the same round.  Returns ``(share, "")``, or
    ``(None, reason)`` when the figure cannot be trusted: the samples are not paired, too few
    rounds, a median share above 1 (the part cannot take longer than the whole: the machine
    was noisy), or an interquartile spread of the per-round ratios above ``max_spread`` of
    their median.  Nothing is clamped.
    """
    a, b = part.get("samples") or [], whole.get("samples") or []
    if len(a) != len(b) or not a:
        return None, "unpaired samples"
    if len(a) < min_rounds:
        return None, f"{len(a)} rounds < {min_rounds}"
    if not all(x > 0 and y > 0 and math.isfinite(x) and math.isfinite(y) for x, y in zip(a, b)):
        return None, "non-positive or non-finite time"
    ratios = [x / y for x, y in zip(a, b)]
    mid = statistics.median(ratios)
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    spread = (q3 - q1) / mid
    if mid > 1:
        return None, f"share {mid:.2f} > 1"
    if spread > max_spread:
        return None, f"spread {spread:.0%} > {max_spread:.0%}"
    return mid, ""


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
