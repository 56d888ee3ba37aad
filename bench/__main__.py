"""``python -m bench [--quick]``: run the benchmark suite and write bench/results/BENCHMARKS.md.

Thread counts are pinned to 1 through environment variables, which must be set before
numpy, torch or jax is first imported: that happens here, before any other import; if one
of them was somehow imported already, the process re-executes itself.  The all-cores table
is measured in a subprocess started with those variables removed.
"""

import os
import sys

PINNED_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
}
WORKER_FLAG = "--allcores-worker"


def _set_thread_env() -> None:
    pinned = WORKER_FLAG not in sys.argv
    for key, value in PINNED_ENV.items():
        if pinned:
            os.environ[key] = value
        else:
            os.environ.pop(key, None)
    late = [m for m in ("numpy", "torch", "jax") if m in sys.modules]
    if late and not os.environ.get("SYMGRAD_BENCH_REEXEC"):
        os.environ["SYMGRAD_BENCH_REEXEC"] = "1"
        os.execv(sys.executable, [sys.executable, "-m", "bench", *sys.argv[1:]])


_set_thread_env()

# ruff: noqa: E402  (imports below must follow the environment set-up above)
import argparse
import json
import re
import subprocess
import tempfile
import time
from pathlib import Path

SECTIONS = ("runtime", "allcores", "conv", "derivation", "ttfg", "e2e")
REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"


def _configure_libraries(pinned: bool) -> None:
    try:
        import torch
        if pinned:
            torch.set_num_threads(1)
            torch.set_num_interop_threads(1)
    except ImportError:
        pass
    try:
        import jax
        jax.config.update("jax_enable_x64", True)
    except ImportError:
        pass


def _log(msg: str) -> None:
    print(msg, flush=True)


def _json_default(obj):
    if isinstance(obj, tuple):
        return list(obj)
    return str(obj)


def _keys_to_str(obj):
    """JSON needs string keys: (width, depth) -> "width x depth"."""
    if isinstance(obj, dict):
        return {(f"{k[0]}x{k[1]}" if isinstance(k, tuple) else str(k)): _keys_to_str(v)
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [_keys_to_str(v) for v in obj]
    return obj


def _run_allcores_subprocess(quick: bool) -> dict:
    """The all-cores table, measured by a child process with threads unpinned."""
    env = {k: v for k, v in os.environ.items() if k not in PINNED_ENV}
    env.pop("SYMGRAD_BENCH_REEXEC", None)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "allcores.json")
        cmd = [sys.executable, "-m", "bench", WORKER_FLAG, out] + (["--quick"] if quick else [])
        proc = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True)
        for line in proc.stdout.splitlines():
            _log("  [all cores] " + line)
        if proc.returncode != 0:
            return {"error": proc.stderr.strip().splitlines()[-1:] or ["?"]}
        with open(out) as fh:
            return json.load(fh)


def _worker(path: str, quick: bool) -> None:
    from bench import machine, runtime
    from bench.settings import make_settings

    _configure_libraries(pinned=False)
    records = runtime.run_allcores(make_settings(quick))
    with open(path, "w") as fh:
        json.dump({"records": records, "machine": machine.collect()}, fh, default=_json_default)


def _tuple_keys(obj):
    """Undo _keys_to_str: "64x3" -> (64, 3)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            m = re.fullmatch(r"(\d+)x(\d+)", k) if isinstance(k, str) else None
            out[(int(m[1]), int(m[2])) if m else k] = _tuple_keys(v)
        return out
    if isinstance(obj, list):
        return [_tuple_keys(v) for v in obj]
    return obj


def _merge_earlier(results: dict, path: Path, only: list) -> None:
    """A run of some sections keeps the others from the benchmarks.json it replaces, and
    says which run each came from (BENCHMARKS.md prints it)."""
    if not path.is_file():
        return
    try:
        with open(path) as fh:
            earlier = _tuple_keys(json.load(fh))
    except (OSError, ValueError):
        return
    kept = [s for s in SECTIONS if s not in only and s in earlier]
    if not kept:
        return
    m = earlier.get("machine", {})
    provenance = dict(earlier.get("provenance", {}))
    for s in kept:
        results[s] = earlier[s]
        results["section_seconds"][s] = earlier.get("section_seconds", {}).get(s, 0.0)
        provenance.setdefault(s, {"date": m.get("date"), "git_commit": m.get("git_commit"),
                                  "quick": earlier.get("quick")})
    results["provenance"] = {s: provenance[s] for s in kept}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced suite, under two minutes")
    parser.add_argument("--out", default=str(RESULTS_DIR),
                        help="directory for BENCHMARKS.md, benchmarks.json and the PNG plots "
                             "(default: bench/results)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--no-merge", action="store_true",
                        help="with --only, do not keep the other sections of an existing "
                             "benchmarks.json in --out")
    parser.add_argument(WORKER_FLAG, metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.allcores_worker:
        _worker(args.allcores_worker, args.quick)
        return 0

    from bench import conv, derivation, e2e, machine, report, runtime, ttfg
    from bench.settings import make_settings

    _configure_libraries(pinned=True)
    settings = make_settings(args.quick)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {sorted(unknown)}")

    results = {"quick": args.quick, "settings": settings.__dict__, "machine": machine.collect(),
               "section_seconds": {}}
    steps = {
        "runtime": lambda: runtime.run_all(settings, log=_log),
        "allcores": lambda: _run_allcores_subprocess(args.quick),
        "conv": lambda: conv.run(settings, log=_log),
        "derivation": lambda: derivation.run(settings, log=_log),
        "ttfg": lambda: ttfg.run(settings, log=_log),
        "e2e": lambda: e2e.run(settings, log=_log),
    }
    t_start = time.perf_counter()
    for name in SECTIONS:
        if name not in only:
            continue
        _log(f"== {name}")
        t0 = time.perf_counter()
        results[name] = steps[name]()
        results["section_seconds"][name] = time.perf_counter() - t0
    results["total_seconds"] = time.perf_counter() - t_start
    results["load_average_end"] = machine.load_average()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if set(only) != set(SECTIONS) and not args.no_merge:
        _merge_earlier(results, out / "benchmarks.json", only)
    plots = [] if args.no_plots else report.make_plots(results, out)
    (out / "BENCHMARKS.md").write_text(report.render(results, plots))
    with open(out / "benchmarks.json", "w") as fh:
        json.dump(_keys_to_str(results), fh, indent=1, default=_json_default)
    _log(f"wrote {out / 'BENCHMARKS.md'} ({results['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
