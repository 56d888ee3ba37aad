"""Derivation + code-generation cost over the width x depth sweep.

* symgrad warm: in this process, SymPy and symgrad already imported, SymPy's cache cleared
  before every repeat (so a repeat is not a cache hit);
* symgrad cold: a fresh interpreter per measurement, imports included;
* naive: scalar symbols + ``sympy.diff`` per weight (bench/naive.py), warm, with a timeout.

A configuration is skipped once a smaller one (no wider and no deeper) has timed out.
Growth exponents are least-squares slopes of log(time) against log(depth) at fixed width
and against log(width) at fixed depth.
"""

from __future__ import annotations

import math
import signal
import statistics
import subprocess
import sys
import time

import numpy as np

from bench import naive, symgrad_adapter
from bench.networks import sweep_network


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout


def timed_with_timeout(fn, timeout_s: float):
    """Seconds taken by ``fn()``, or None if it ran past ``timeout_s`` (SIGALRM)."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    except Timeout:
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _clear_sympy_cache():
    from sympy.core.cache import clear_cache
    clear_cache()


def _dominated(failed: set, w: int, d: int) -> bool:
    return any(w >= fw and d >= fd for fw, fd in failed)


def _grid(settings):
    return [(w, d) for w in settings.sweep_widths for d in settings.sweep_depths]


def sweep_warm(settings, fn, timeout_s, repeats, budget_s=math.inf, log=print) -> dict:
    """(width, depth) -> median seconds, None (timed out) or "skipped"."""
    out, failed, start = {}, set(), time.perf_counter()
    for w, d in _grid(settings):
        if _dominated(failed, w, d) or time.perf_counter() - start > budget_s:
            out[(w, d)] = "skipped"
            continue
        times = []
        for _ in range(repeats):
            _clear_sympy_cache()
            t = timed_with_timeout(lambda: fn(sweep_network(w, d)), timeout_s)
            if t is None:
                break
            times.append(t)
        if len(times) < repeats:
            failed.add((w, d))
            out[(w, d)] = None
            log(f"    width {w:5d} depth {d:3d}: timed out (> {timeout_s:g} s)")
        else:
            out[(w, d)] = statistics.median(times)
    return out


def cold_once(w: int, d: int, timeout_s: float):
    script = symgrad_adapter.cold_script(sweep_network(w, d))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None, None
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise symgrad_adapter.SymgradUnavailable(proc.stderr.strip().splitlines()[-1:])
    return float(proc.stdout.split()[-1]), wall


def sweep_cold(settings, log=print) -> dict:
    """Cold runs along the two axes through the middle of the grid (width 64 and depth 3)."""
    mid_w = 64 if 64 in settings.sweep_widths else settings.sweep_widths[0]
    mid_d = 3 if 3 in settings.sweep_depths else settings.sweep_depths[0]
    cells = sorted({(mid_w, d) for d in settings.sweep_depths}
                   | {(w, mid_d) for w in settings.sweep_widths})
    out, failed = {}, set()
    for w, d in cells:
        if _dominated(failed, w, d):
            out[(w, d)] = "skipped"
            continue
        runs = [cold_once(w, d, settings.symgrad_timeout_s) for _ in range(settings.cold_repeats)]
        if any(r[0] is None for r in runs):
            failed.add((w, d))
            out[(w, d)] = None
        else:
            out[(w, d)] = {"in_process": statistics.median(r[0] for r in runs),
                           "wall": statistics.median(r[1] for r in runs)}
    return out


def growth_exponents(results: dict, key=lambda v: v) -> dict:
    """{"depth": {width: slope}, "width": {depth: slope}} from cells with numeric times."""
    pts = {wd: key(v) for wd, v in results.items() if isinstance(v, (float, dict))}
    pts = {wd: v for wd, v in pts.items() if v and v > 0}

    def slope(xs, ys):
        if len(xs) < 3:
            return None
        return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])

    widths = sorted({w for w, _ in pts})
    depths = sorted({d for _, d in pts})
    by_depth = {w: slope(*zip(*[(d, pts[(w, d)]) for d in depths if (w, d) in pts]))
                if sum((w, d) in pts for d in depths) >= 3 else None for w in widths}
    by_width = {d: slope(*zip(*[(w, pts[(w, d)]) for w in widths if (w, d) in pts]))
                if sum((w, d) in pts for w in widths) >= 3 else None for d in depths}
    return {"depth": by_depth, "width": by_width}


def naive_exponent_vs_weights(results: dict):
    pts = [(sweep_network(w, d).n_params, t) for (w, d), t in results.items()
           if isinstance(t, float) and t > 0]
    if len(pts) < 3:
        return None
    xs, ys = zip(*pts)
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def run(settings, log=print) -> dict:
    out = {"widths": list(settings.sweep_widths), "depths": list(settings.sweep_depths)}
    ok, reason = symgrad_adapter.available()
    if ok:
        try:
            symgrad_adapter.derive_source(sweep_network(2, 1))  # imports + first-use warm-up
            log("  symgrad warm sweep")
            out["symgrad_warm"] = sweep_warm(settings, symgrad_adapter.derive_source,
                                             settings.symgrad_timeout_s, settings.warm_repeats,
                                             log=log)
            log("  symgrad cold runs")
            out["symgrad_cold"] = sweep_cold(settings, log=log)
        except symgrad_adapter.SymgradUnavailable as exc:
            ok, reason = False, str(exc)
    if not ok:
        out["symgrad_error"] = reason
        log(f"  symgrad unavailable: {reason}")
    log("  naive scalar-symbol sweep")
    out["naive"] = sweep_warm(settings, naive.naive_derive, settings.naive_timeout_s, 1,
                              budget_s=settings.naive_budget_s, log=log)
    out["exponents"] = {"naive": growth_exponents(out["naive"]),
                        "naive_vs_weights": naive_exponent_vs_weights(out["naive"])}
    if "symgrad_warm" in out:
        out["exponents"]["symgrad_warm"] = growth_exponents(out["symgrad_warm"])
        out["exponents"]["symgrad_cold"] = growth_exponents(
            out["symgrad_cold"], key=lambda v: v["in_process"] if isinstance(v, dict) else None)
    return out
