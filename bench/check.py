"""Gradient agreement: every implementation against every other, before anything is timed."""

from __future__ import annotations

import numpy as np

#: Maximum relative error accepted, by dtype.
TOLERANCE = {"float64": 1e-6, "float32": 1e-3}


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(np.linalg.norm(a), np.linalg.norm(b), 1e-300)
    return float(np.linalg.norm(a - b) / scale)


def max_rel_err(res_a, res_b) -> float:
    (loss_a, ga), (loss_b, gb) = res_a, res_b
    if set(ga) != set(gb):
        return float("inf")
    errs = [rel_err(loss_a, loss_b)]
    for k in ga:
        if np.shape(ga[k]) != np.shape(gb[k]):
            return float("inf")
        errs.append(rel_err(ga[k], gb[k]))
    return max(errs)


def check_all(impls: dict, dtype_name: str) -> dict:
    """Run every ``Impl.check`` once and compare all pairs.

    Returns name -> {"ok", "max_err" (worst against any other implementation), "error"}.
    An implementation fails if it raises, returns non-finite values, or disagrees with the
    majority; when two disagree, the one that also disagrees with the hand-written baseline
    (the first entry) is blamed."""
    tol = TOLERANCE[dtype_name]
    results, report = {}, {}
    for name, impl in impls.items():
        try:
            loss, grads = impl.check()
            finite = np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads.values())
            if not finite:
                raise FloatingPointError("non-finite loss or gradient")
            results[name] = (loss, grads)
        except Exception as exc:
            report[name] = {"ok": False, "max_err": float("nan"),
                            "error": f"{type(exc).__name__}: {exc}"}
    names = list(results)
    for a in names:
        errs = {b: max_rel_err(results[a], results[b]) for b in names if b != a}
        agree = sum(e < tol for e in errs.values())
        worst = max(errs.values(), default=0.0)
        ok = agree * 2 >= len(errs) if errs else True
        if names and a != names[0] and names[0] in errs and errs[names[0]] >= tol:
            ok = False
        report[a] = {"ok": bool(ok), "max_err": worst,
                     "error": "" if ok else f"disagrees (max rel err {worst:.2e} > {tol:g})"}
    return report
