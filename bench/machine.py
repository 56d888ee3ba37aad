"""Machine, library versions and thread settings, recorded with every run."""

from __future__ import annotations

import datetime
import importlib.metadata as md
import os
import platform
import subprocess
import sys

from bench import symgrad_adapter

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "XLA_FLAGS")
PACKAGES = ("numpy", "scipy", "sympy", "jinja2", "torch", "jax", "jaxlib", "autograd",
            "scikit-learn", "matplotlib")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib():
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        return None


def _version(pkg: str) -> str:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return "not installed"


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=symgrad_adapter.REPO_ROOT).stdout.strip()
    except OSError:
        return "?"


def _blas():
    try:
        from threadpoolctl import threadpool_info
        return [{k: d.get(k) for k in ("user_api", "internal_api", "num_threads", "version",
                                       "architecture")} for d in threadpool_info()]
    except Exception as exc:
        return [{"error": str(exc)}]


def _torch_threads():
    try:
        import torch
        return {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}
    except Exception:
        return None


def collect() -> dict:
    import numpy as np  # noqa: F401  (so threadpoolctl sees numpy's BLAS)

    versions = {p: _version(p) for p in PACKAGES}
    versions["symgrad"] = symgrad_adapter.version()
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": _memory_gib(),
        "python": sys.version.split()[0],
        "versions": versions,
        "thread_env": {v: os.environ.get(v, "(unset)") for v in THREAD_VARS},
        "blas": _blas(),
        "torch_threads": _torch_threads(),
        "load_average": load_average(),
    }


def load_average():
    """1-minute load average (None where the OS has none): a busy machine skews timings."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None
