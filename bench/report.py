"""Render the results dict as BENCHMARKS.md and draw the PNG plots."""

from __future__ import annotations

from bench.check import TOLERANCE
from bench.impls import BASELINE, IMPL_NAMES
from bench.networks import BY_NAME, NETWORKS, sweep_network
from bench.runtime import GEMM_NAME
from bench.timing import paired_ratio, share

PEERS = [n for n in IMPL_NAMES if n != BASELINE]


# --- formatting helpers -------------------------------------------------------------------

def _table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _us(seconds) -> str:
    if seconds is None:
        return "-"
    if seconds >= 0.1:
        return f"{seconds * 1e3:.0f} ms"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def _secs(seconds) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-2:
        return f"{seconds * 1e3:.2f} ms"
    if seconds < 1:
        return f"{seconds * 1e3:.0f} ms"
    return f"{seconds:.2f} s"


def _ratio(t: dict | None, base: dict) -> str:
    if not t:
        return "-"
    return f"{paired_ratio(t, base):.2f} ({t['min'] / base['min']:.2f})"


def _label(rec) -> str:
    return f"{rec['network']} b={rec['batch']}"


def _status(rec, name) -> str:
    if name in rec.get("missing", {}):
        return "n/a"
    chk = rec["check"].get(name)
    if chk and not chk["ok"]:
        return "**wrong gradient**"
    return "-"


# --- sections -----------------------------------------------------------------------------

def _machine(results) -> str:
    m = results["machine"]
    s = results["settings"]
    out = ["## Machine, versions, threads\n"]
    out.append(_table(["", ""], [
        ["date", m["date"]], ["git commit", m["git_commit"]], ["platform", m["platform"]],
        ["CPU", m["cpu"]], ["cores (usable)", f"{m['cpu_count']} ({m['cpus_usable']})"],
        ["memory", f"{m['memory_gib']} GiB"], ["Python", m["python"]],
        ["mode", "--quick" if results["quick"] else "full"],
        ["1-min load average (start, end)",
         f"{m.get('load_average')}, {results.get('load_average_end')}"],
        ["timing", f"warm-up, then median (min) of {s['repeats']} interleaved rounds; "
                   f"blocks of ~{s['target_s'] * 1e3:.0f} ms"],
    ]))
    out.append("\n" + _table(["package", "version"],
                             [[k, v] for k, v in m["versions"].items()]))
    out.append("\nThread settings (pinned run):\n\n" + _table(
        ["setting", "value"],
        [[k, f"`{v}`"] for k, v in m["thread_env"].items()]
        + [["torch threads (intra/inter-op)", m["torch_threads"]]]
        + [[f"BLAS {b.get('internal_api')} ({b.get('user_api')})",
            f"{b.get('num_threads')} threads, {b.get('version')}, {b.get('architecture')}"]
           for b in m["blas"] if "error" not in b]))
    return "\n".join(out)


def _checks(records) -> str:
    names = _impl_columns(records)
    rows = []
    for rec in records:
        row = [_label(rec), rec["dtype"]]
        for n in names:
            c = rec["check"].get(n)
            if c is None:
                row.append("n/a")
            else:
                mark = "ok" if c["ok"] else "**FAIL**"
                row.append(f"{mark} {c['max_err']:.1e}")
        rows.append(row)
    return ("## Gradient agreement (checked before timing)\n\nLargest relative error "
            "(2-norm, per parameter and loss) of each implementation against every other; "
            f"must be below {TOLERANCE['float64']:g} (float64) / {TOLERANCE['float32']:g} "
            "(float32). Implementations that fail are not timed.\n\n"
            + _table(["run", "dtype"] + names, rows))


def _impl_columns(records) -> list:
    seen = {n for r in records for n in list(r["check"]) + list(r.get("missing", {}))}
    return [n for n in IMPL_NAMES if n in seen]


def _runtime_table(records, kind: str, dtype: str) -> str:
    recs = [r for r in records if r["dtype"] == dtype and kind in r.get("times", {})]
    if not recs:
        return ""
    peers = [n for n in _impl_columns(records) if n != BASELINE]
    rows = []
    for rec in recs:
        t = rec["times"][kind]
        base = t[BASELINE]
        rows.append([_label(rec), f"{_us(base['median'])} ({_us(base['min'])})"]
                    + [_ratio(t.get(n), base) if n in t else _status(rec, n) for n in peers])
    return _table(["run", f"{BASELINE} median (min)"] + [f"{n} ×" for n in peers], rows)


def _runtime(records) -> str:
    out = ["## Runtime against hand-written NumPy (threads pinned to 1)\n",
           f"Absolute time for `{BASELINE}`; every other column is its time divided by the "
           "baseline's in the same run: median over rounds of the per-round ratio (ratio of the "
           "minima). Below 1 is faster "
           "than the hand-written code.\n"]
    for dtype in ("float64", "float32"):
        for kind, title in (("grad", "forward + gradient"),
                            ("step", "full training step (SGD with momentum)")):
            table = _runtime_table(records, kind, dtype)
            if table:
                out.append(f"### {title}, {dtype}\n\n{table}")
    return "\n".join(out)


def _grad_over_forward(records) -> str:
    names = _impl_columns(records)
    rows = []
    for rec in records:
        t = rec.get("times", {})
        if "forward" not in t:
            continue
        rows.append([_label(rec), rec["dtype"]]
                    + [f"{t['grad'][n]['median'] / t['forward'][n]['median']:.2f}"
                       if n in t["forward"] and n in t["grad"] else _status(rec, n)
                       for n in names])
    if not rows:
        return ""
    return ("## Gradient cost over forward cost (batch ≥ 64)\n\nTime of forward+gradient "
            "divided by the time of forward+loss, each implementation against itself "
            "(the classic bound for reverse mode is a small constant, about 2-3).\n\n"
            + _table(["run", "dtype"] + names, rows))


def _gemm(records) -> str:
    rows = []
    for rec in records:
        t = rec.get("times", {}).get("grad", {})
        if GEMM_NAME not in t:
            continue
        flops, g = rec["gemm_flops"], t[GEMM_NAME]["median"]
        rows.append([_label(rec), rec["dtype"], "np.matmul, GEMMs alone", _us(g),
                     f"{flops / g / 1e9:.1f}", "1.00"])
        for n, tn in t.items():
            if n == GEMM_NAME:
                continue
            rows.append(["", "", n, _us(tn["median"]), f"{flops / tn['median'] / 1e9:.1f}",
                         _share(t[GEMM_NAME], tn)])
    if not rows:
        return ""
    return ("## GEMM efficiency (MNIST-size)\n\nThe matmuls of one forward+gradient step "
            "(`a @ W.T`, `delta.T @ a`, `delta @ W`) timed alone with `np.matmul` at the same "
            "shapes, against each implementation's whole step. GFLOP/s counts only those "
            "matmul flops; *GEMM share* = GEMM-only time / step time (1.00 = the step is "
            "nothing but its matmuls), the median over rounds of the two timed back to back; "
            "*too noisy* when that median is above 1 or the rounds disagree (interquartile "
            "spread over 20 % of the median).\n\n"
            + _table(["run", "dtype", "implementation", "step time", "GFLOP/s", "GEMM share"],
                     rows))


def _share(gemm_t: dict, step_t: dict) -> str:
    """The GEMM share of a step, or *too noisy* with the reason (never a clamped number)."""
    value, why = share(gemm_t, step_t)
    return f"{value:.2f}" if value is not None else f"too noisy ({why})"


def _allcores(results) -> str:
    ac = results.get("allcores")
    if ac is None:
        return ""
    if "error" in ac:
        return f"## All cores\n\nThe all-cores worker failed: {ac['error']}\n"
    pinned = {(r["network"], r["batch"], r["dtype"]): r for r in results.get("runtime", [])}
    recs = ac["records"]
    peers = [n for n in _impl_columns(recs) if n != BASELINE]
    rows = []
    for rec in recs:
        t = rec["times"].get("grad", {})
        base = t.get(BASELINE)
        if not base:
            continue
        p = pinned.get((rec["network"], rec["batch"], rec["dtype"]))
        speedup = (f"{p['times']['grad'][BASELINE]['median'] / base['median']:.2f}"
                   if p and "grad" in p.get("times", {}) else "-")
        rows.append([_label(rec), f"{_us(base['median'])} ({_us(base['min'])})", speedup]
                    + [_ratio(t.get(n), base) if n in t else _status(rec, n) for n in peers])
    m = ac.get("machine", {})
    return ("## All cores (threads unpinned), forward + gradient, float64\n\n"
            f"Measured in a subprocess with the thread variables unset "
            f"(BLAS: {', '.join(str(b.get('num_threads')) for b in m.get('blas', []))} threads; "
            f"torch: {m.get('torch_threads')}). Ratios are against the hand-written NumPy in "
            "that same process; *speed-up* is pinned baseline time / all-cores baseline time.\n\n"
            + _table(["run", f"{BASELINE} median (min)", "speed-up vs 1 thread"]
                     + [f"{n} ×" for n in peers], rows))


def _mib(n) -> str:
    return "-" if n is None else f"{n / 2**20:.2f} MiB"


def _conv_ratio(r: dict | None) -> str:
    if not r:
        return "-"
    if not r["ok"]:
        return f"too noisy (IQR {r['q25']:.2f}-{r['q75']:.2f})"
    return f"{r['median']:.2f} [{r['q25']:.2f}-{r['q75']:.2f}]"


def _conv(results) -> str:
    c = results.get("conv")
    if not c:
        return ""
    from bench.conv import HAND, SYMGRAD, TORCH
    recs = c["records"]
    archs = {}
    for r in recs:
        archs.setdefault(r["network"], (r.get("arch", "?"), r.get("n_params", "?")))
    rows, checks = [], []
    for r in recs:
        if "error" in r:
            rows.append([_label(r), r["dtype"], "n/a", r["error"][:100], "", "", "", "", ""])
            continue
        t, ra, pk = r["times"], r["ratios"], r["peak_bytes"]
        rows.append([_label(r), r["dtype"], _us(t[HAND]["median"]),
                     _us(t[SYMGRAD]["median"]) if SYMGRAD in t else "**not timed**",
                     _us(t[TORCH]["median"]) if TORCH in t else r["missing"].get(TORCH, "-"),
                     _conv_ratio(ra.get("symgrad/hand")), _conv_ratio(ra.get("symgrad/torch")),
                     _conv_ratio(ra.get("torch/hand")),
                     f"{_mib(pk.get(SYMGRAD))} / {_mib(pk.get(HAND))}"])
        checks.append([_label(r), r["dtype"]] + [
            (("ok " if ch["ok"] else "**FAIL** ") + f"{ch['max_err']:.1e} (< {ch['tol']:g})")
            if (ch := r["check"].get(n)) else "n/a" for n in (SYMGRAD, TORCH)])
    return ("## Convolutional networks: forward + gradient\n\n"
            "`loss_and_grad` of the generated module against a hand-written im2col NumPy "
            "(`bench/conv_handwritten.py`: channel-major (C, N, H, W), one GEMM per convolution over the "
            "whole batch, im2col matrix kept for dL/dK, strided col2im) and PyTorch eager "
            "(`F.conv2d`, `F.max_pool2d`, `F.cross_entropy`, `torch.autograd.grad`), all "
            "from the same parameters, synthetic images in [0, 1], mean softmax "
            f"cross-entropy. Threads: NumPy BLAS {c.get('numpy_threads')}, "
            f"`torch.set_num_threads({c.get('torch_threads')})` to match. Ratios: median of "
            "the per-round ratios [interquartile range]; below 1 the generated module is "
            f"faster. A ratio whose IQR exceeds {c['max_spread']:.0%} of its median is "
            "reported as too noisy. Peak memory: tracemalloc's peak during one call "
            "(NumPy buffers; PyTorch's allocator is not traced).\n\n"
            + _table(["network", "architecture", "parameters"],
                     [[n, a, p] for n, (a, p) in archs.items()])
            + "\n" + _table(["run", "dtype", "hand median", "symgrad median",
                              "PyTorch median", "symgrad / hand", "symgrad / PyTorch",
                              "PyTorch / hand", "peak memory symgrad / hand"], rows)
            + "\nGradient agreement with the hand-written im2col, checked before timing "
              "(largest relative 2-norm error over the loss and every parameter):\n\n"
            + _table(["run", "dtype", "symgrad", "PyTorch"], checks))


def _cell(v) -> str:
    if v == "skipped":
        return "·"
    if v is None:
        return "timeout"
    if isinstance(v, dict):
        return _secs(v["in_process"])
    return _secs(v)


def _grid(title, grid: dict, widths, depths) -> str:
    rows = [[f"depth {d}"] + [_cell(grid.get((w, d), "skipped")) for w in widths]
            for d in depths]
    return f"{title}\n\n" + _table([""] + [f"width {w}" for w in widths], rows)


def _exps(exps: dict | None) -> str:
    if not exps:
        return ""
    dep = ", ".join(f"width {w}: {e:.2f}" for w, e in exps["depth"].items() if e is not None)
    wid = ", ".join(f"depth {d}: {e:.2f}" for d, e in exps["width"].items() if e is not None)
    return (f"growth exponent in depth ({dep or 'too few points'}); "
            f"in width ({wid or 'too few points'})")


def _derivation(results) -> str:
    d = results.get("derivation")
    if not d:
        return ""
    widths, depths = d["widths"], d["depths"]
    out = ["## Derivation + code generation cost\n",
           "Sweep network: `depth` weight layers of `width` units (tanh hidden, softmax "
           "cross-entropy output, inputs = width). *Warm*: SymPy and symgrad already imported, "
           "SymPy's cache cleared before each repeat. *Cold*: a fresh interpreter, imports "
           "included (along width 64 and depth 3). *Naive*: every weight a scalar SymPy "
           "symbol, `sympy.diff` per weight, `sympy.pycode` per derivative (bench/naive.py). "
           "`timeout` = over the time limit; `·` = not run (a smaller case already timed out, "
           "or outside this mode's grid). Exponent = slope of log time against log depth "
           "(or width).\n"]
    if "symgrad_warm" in d:
        out.append(_grid("### symgrad, warm", d["symgrad_warm"], widths, depths))
        out.append(_exps(d["exponents"].get("symgrad_warm")) + "\n")
        out.append(_grid("### symgrad, cold (fresh process, imports included)",
                         d["symgrad_cold"], widths, depths))
        out.append(_exps(d["exponents"].get("symgrad_cold")) + "\n")
    else:
        out.append(f"symgrad: **not measured** ({d.get('symgrad_error')})\n")
    naive_grid = d["naive"]
    out.append(_grid("### naive scalar-symbol baseline, warm", naive_grid, widths, depths))
    weights = ", ".join(f"{w}x{dd}: {sweep_network(w, dd).n_params}"
                        for (w, dd), v in naive_grid.items() if isinstance(v, float))
    e = d["exponents"].get("naive_vs_weights")
    out.append(_exps(d["exponents"].get("naive")) + (
        f"; against the number of weights: {e:.2f}" if e else "")
        + f"\n\nweights per finished naive case: {weights}\n")
    return "\n".join(out)


def _ttfg(results) -> str:
    t = results.get("ttfg")
    if not t:
        return ""
    rows = []
    for net, res in t.items():
        base = res.get(BASELINE, {}).get("median")
        for name, r in res.items():
            if "median" in r:
                ratio = f"{r['median'] / base:.2f}" if base else "-"
                rows.append([BY_NAME[net].title, name, _secs(r["median"]), _secs(r["min"]),
                             ratio])
            else:
                rows.append([BY_NAME[net].title, name, "n/a", "", r.get("error", "")[:120]])
    return ("## Time to first gradient\n\nFrom launching a fresh interpreter to the first "
            "gradient (imports, derivation or compilation, first call), threads pinned; "
            "ratio against the hand-written NumPy script.\n\n"
            + _table(["network", "implementation", "median", "min", "× numpy (hand)"], rows))


def _e2e(results) -> str:
    e = results.get("e2e")
    if not e:
        return ""
    base = e["results"].get(BASELINE, {}).get("seconds")
    rows = []
    for name, r in e["results"].items():
        if "error" in r:
            rows.append([name, "n/a", "", "", "", r["error"][:120]])
            continue
        rows.append([name, _secs(r["seconds"]), f"{r['seconds'] / base:.2f}" if base else "-",
                     f"{r['epochs']:g}", f"{r['accuracy']:.3f}",
                     "" if r["reached"] else "did not reach target"])
    return (f"## End to end: digits to {e['target']:.0%} held-out accuracy\n\n"
            f"64-32-10 (sigmoid hidden, softmax cross-entropy), {e['train_size']} training / "
            f"{e['test_size']} held-out images of scikit-learn's digits, minibatch {e['batch']}, "
            f"SGD with momentum {e['momentum']}, learning rate {e['lr_mean']} per example-mean "
            "(sum-reduction trainers use it divided by the batch size), accuracy checked after "
            "every epoch. Median over seeds.\n\n"
            + _table(["trainer", "wall time", "× numpy (hand)", "epochs", "accuracy", "note"],
                     rows))


def _busy_warning(results) -> str:
    loads = [x for x in (results["machine"].get("load_average"),
                         results.get("load_average_end")) if x is not None]
    cores = results["machine"].get("cpus_usable") or 1
    if not loads or max(loads) < 0.5 * cores + 0.5:
        return ""
    return (f"> **Busy machine**: the 1-minute load average reached {max(loads):.1f} on "
            f"{cores} cores during this run, so other processes competed for the CPU. "
            "Per-round ratios cancel part of that; absolute times and the all-cores table "
            "(whose threads fight the other load) are not representative.\n")


def _unavailable(results) -> str:
    reasons = {}
    for rec in results.get("runtime", []):
        for name, why in rec.get("missing", {}).items():
            reasons.setdefault(name, why)
    d = results.get("derivation", {})
    if "symgrad_error" in d:
        reasons.setdefault("symgrad", d["symgrad_error"])
    if not reasons:
        return ""
    return "## Not measured\n\n" + "\n".join(f"- **{k}**: {v}" for k, v in reasons.items()) + "\n"


def _provenance(results) -> str:
    """Sections a partial run (``--only``) kept from the benchmarks.json it replaced."""
    prov = results.get("provenance")
    if not prov:
        return ""
    m = results["machine"]
    kept = "; ".join(f"{sec} ({p.get('date')}, commit {p.get('git_commit')}"
                     + (", --quick" if p.get("quick") else "") + ")" for sec, p in prov.items())
    return (f" This file merges runs: the sections not listed below come from this run "
            f"({m['date']}, commit {m['git_commit']}); kept from earlier runs: {kept}; the "
            "machine table describes this run.")


def render(results: dict, plots: list) -> str:
    records = results.get("runtime", [])
    secs = results.get("section_seconds", {})
    parts = [
        "# symgrad benchmarks\n",
        "Generated by `python -m bench" + (" --quick" if results["quick"] else "") + "` in "
        f"{results.get('total_seconds', 0):.0f} s ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in secs.items()) + "). "
        "See `bench/README.md` for what each measurement means."
        + _provenance(results) + " Networks:\n",
        _table(["network", "architecture", "loss", "parameters", "batches"],
               [[n.title, n.arch, n.loss, n.n_params, ", ".join(map(str, n.batches))]
                for n in NETWORKS]),
        _busy_warning(results),
        _unavailable(results),
        _checks(records) if records else "",
        _runtime(records) if records else "",
        _grad_over_forward(records),
        _gemm(records),
        _allcores(results),
        _conv(results),
        _derivation(results),
        _ttfg(results),
        _e2e(results),
        "## Plots\n\n" + "\n".join(f"![{p}]({p})" for p in plots) + "\n" if plots else "",
        _machine(results),
    ]
    return "\n".join(p for p in parts if p)


# --- plots ----------------------------------------------------------------------------------

def make_plots(results: dict, out) -> list:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    for name, fn in (("bench_runtime.png", _plot_runtime), ("bench_derivation.png", _plot_deriv),
                     ("bench_ttfg.png", _plot_ttfg)):
        fig = fn(plt, results)
        if fig is not None:
            fig.savefig(out / name, dpi=110, bbox_inches="tight")
            plt.close(fig)
            made.append(name)
    return made


def _plot_runtime(plt, results):
    recs = [r for r in results.get("runtime", [])
            if r["dtype"] == "float64" and "grad" in r.get("times", {})]
    if not recs:
        return None
    peers = [n for n in _impl_columns(recs) if n != BASELINE]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(recs)), 4))
    width = 0.8 / max(1, len(peers))
    for i, n in enumerate(peers):
        xs, ys = [], []
        for j, r in enumerate(recs):
            t = r["times"]["grad"]
            if n in t:
                xs.append(j + (i - (len(peers) - 1) / 2) * width)
                ys.append(t[n]["median"] / t[BASELINE]["median"])
        ax.bar(xs, ys, width, label=n)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(recs)), [_label(r) for r in recs], rotation=30, ha="right")
    ax.set_ylabel("time / hand-written NumPy (log)")
    ax.set_title("forward + gradient, float64, 1 thread (lower is faster)")
    ax.legend(fontsize=8)
    return fig


def _plot_deriv(plt, results):
    d = results.get("derivation")
    if not d:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    series = [("naive", "naive", "--")]
    if "symgrad_warm" in d:
        series = [("symgrad_warm", "symgrad warm", "-"), ("symgrad_cold", "symgrad cold", ":")] \
            + series
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    def val(v):
        return v["in_process"] if isinstance(v, dict) else v

    for key, label, style in series:
        grid = d[key]
        for i, w in enumerate(d["widths"]):
            pts = [(dd, val(grid[(w, dd)])) for dd in d["depths"]
                   if isinstance(grid.get((w, dd)), (float, dict))]
            if len(pts) >= 2:
                ax1.plot(*zip(*pts), style, color=colors[i % len(colors)], marker="o", ms=3,
                         label=f"{label}, width {w}")
        for i, dd in enumerate(d["depths"]):
            pts = [(w, val(grid[(w, dd)])) for w in d["widths"]
                   if isinstance(grid.get((w, dd)), (float, dict))]
            if len(pts) >= 2:
                ax2.plot(*zip(*pts), style, color=colors[i % len(colors)], marker="o", ms=3,
                         label=f"{label}, depth {dd}")
    for ax, xl in ((ax1, "depth (weight layers)"), (ax2, "width (units per layer)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xl)
        ax.set_ylabel("seconds (solid: symgrad warm, dotted: cold, dashed: naive)")
        if ax.lines:
            ax.legend(fontsize=6, ncol=2)
    fig.suptitle("derivation + code generation")
    return fig


def _plot_ttfg(plt, results):
    t = results.get("ttfg")
    if not t:
        return None
    fig, ax = plt.subplots(figsize=(8, 3.5))
    labels, vals = [], []
    for net, res in t.items():
        for name, r in res.items():
            if "median" in r:
                labels.append(f"{net}: {name}")
                vals.append(r["median"])
    if not vals:
        plt.close(fig)
        return None
    ax.barh(range(len(vals)), vals)
    ax.set_yticks(range(len(vals)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds from process start to first gradient")
    ax.set_title("time to first gradient")
    return fig
