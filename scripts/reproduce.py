"""Reproduce the 1986 backpropagation results with symgrad's generated modules.

Rumelhart, Hinton & Williams, "Learning representations by back-propagating
errors", Nature 323 (1986) 533-536, and "Learning internal representations by
error propagation", PDP vol. 1 ch. 8 (1986).  Every network is a bundled
example spec (examples/*.toml); its standalone NumPy module is generated in
memory and trained with the module's own ``train`` (batch mode, one update per
sweep, dw(t) = -eps dE/dw + alpha dw(t-1), E = 1/2 sum over cases and outputs
of (y - d)^2).  Seeds 0..S-1 fix the initial weights (and the held-out split
where a task has one).

    PYTHONPATH=src python scripts/reproduce.py --seeds 20        # writes REPRODUCTION.md
    PYTHONPATH=src python scripts/reproduce.py --only family     # one section, to stdout

``--only`` (sweeps, family, digits, lenet; repeatable) runs a subset and prints its
Markdown to stdout, or writes it to ``--out`` when that is given; REPRODUCTION.md
is only ever written by a full run, so it always comes from one command.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import sympy
import tomllib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from symgrad import __version__  # noqa: E402
from symgrad.codegen import generate_module_source, load_module  # noqa: E402
from symgrad.spec import load_spec, spec_from_dict  # noqa: E402
from symgrad.tasks import load_task  # noqa: E402
from symgrad.train import fit, training_options  # noqa: E402

#: The parts of the reproduction that --only can pick.
SECTIONS = ("sweeps", "family", "digits", "lenet")

#: The two 1986 success criteria: the right side of 0.5, and within 0.2 of the target.
LOOSE, STRICT = 0.5, 0.2

#: (label, spec, task, sweep limit, the paper's figure, where the paper gives it, overrides)
SWEEP_TASKS = [
    ("XOR 2-2-1", "xor.toml", "xor", 5000, None, "-", {}),
    ("XOR 2-1-1, input-output connections", "xor_skip.toml", "xor", 5000, 558,
     "PDP ch. 8: 558 sweeps, eps 0.5", {}),
    ("4-bit parity 4-4-1", "parity4.toml", "parity:4", 10000, 2825,
     "PDP ch. 8: 2,825 presentations of the pattern set, eps 0.5", {}),
    ("4-bit parity 4-4-1, online (one change per pattern)", "parity4.toml", "parity:4", 10000,
     2825, "-", {"mode": "online"}),
    ("8-3-8 encoder", "encoder.toml", "encoder:8-3-8", 5000, None, "-", {}),
    ("8-3-8 encoder, eps 0.5", "encoder.toml", "encoder:8-3-8", 5000, None, "-",
     {"learning_rate": 0.5}),
    ("Symmetry 6-2-1", "symmetry.toml", "symmetry:6", 10000, 1425,
     "Nature: 1,425 sweeps, eps 0.1, alpha 0.9", {}),
]


def module_for(spec_name: str):
    spec = load_spec(ROOT / "examples" / spec_name)
    return spec, load_module(generate_module_source(spec), name=f"repro_{spec.name}")


def sweeps_to_solution(spec_name: str, task_name: str, limit: int, seeds: range,
                       overrides: dict | None = None):
    """Per seed: (sweeps to the 0.5 criterion, sweeps to the 0.2 criterion, params at 0.2)."""
    spec, module = module_for(spec_name)
    task = load_task(task_name)
    X, T = task.X, task.T
    rows = []
    for seed in seeds:
        options = training_options(spec, seed=seed, epochs=limit, **(overrides or {}))
        params = module.init_params(seed)
        hit: dict[float, int] = {}
        snapshot: dict[str, np.ndarray] = {}

        def callback(epoch, loss, current, hit=hit, snapshot=snapshot):
            error = np.abs(module.forward(current, X) - T).max()
            for tolerance in (LOOSE, STRICT):
                if tolerance not in hit and error < tolerance:
                    hit[tolerance] = epoch + 1
            if STRICT in hit:
                snapshot.update({k: v.copy() for k, v in current.items()})
                return True
            return False

        module.train(params, X, T, callback=callback, **options)
        rows.append((hit.get(LOOSE), hit.get(STRICT), dict(snapshot) or None))
    return spec, rows


def summary(values: list[int | None]) -> dict:
    done = np.array([v for v in values if v is not None], dtype=float)
    out = {"n": len(values), "solved": len(done)}
    if len(done):
        q1, median, q3 = np.percentile(done, [25, 50, 75])
        out.update(median=median, q1=q1, q3=q3, min=done.min(), max=done.max(),
                   mean=done.mean())
    return out


def fmt(s: dict) -> str:
    rate = f"{s['solved']}/{s['n']}"
    if not s["solved"]:
        return f"{rate} | - | - | -"
    return (f"{rate} | {s['median']:.0f} | {s['q1']:.0f}-{s['q3']:.0f} | "
            f"{s['min']:.0f}-{s['max']:.0f}")


def symmetry_structure(W1: np.ndarray, b1: np.ndarray, b2: np.ndarray, rel: float = 0.25):
    """Check the 1986 solution: per hidden unit w_j = -w_(5-j), magnitudes 1:2:4 (either side);
    hidden biases negative, output bias positive.  Returns a dict of booleans.

    Tolerance: |w_j + w_(5-j)| <= rel * max|w| for mirror pairs, and each ratio of successive
    sorted pair magnitudes within rel of 2 (i.e. in [1.5, 2.5] for rel = 0.25).
    """
    mirror, ratio = True, True
    for w in W1:
        scale = np.abs(w).max()
        pairs = [(w[j], w[len(w) - 1 - j]) for j in range(len(w) // 2)]
        mirror &= all(abs(a + b) <= rel * scale and np.sign(a) == -np.sign(b) for a, b in pairs)
        sizes = np.sort([(abs(a) + abs(b)) / 2 for a, b in pairs])
        ratio &= bool(np.all(np.abs(sizes[1:] / sizes[:-1] - 2) <= 2 * rel))
    return {"mirror": bool(mirror), "ratio": bool(ratio), "hidden_bias_negative":
            bool(np.all(b1 < 0)), "output_bias_positive": bool(np.all(b2 > 0))}


#: Hinton's zero-error margin: an output above 0.8 where the target is 1, or below 0.2
#: where it is 0, has no error; otherwise E = 1/2 (distance to 0.8 or 0.2)^2.  Written
#: for targets 0/1 (the family-trees task's).
MARGIN_LOSS = "t * max(0.8 - y, 0)**2 / 2 + (1 - t) * max(y - 0.2, 0)**2 / 2"

#: The family-trees rows: (label, loss expression or None for the spec's SSE, initial
#: range or None for the spec's, learning-rate factor on both phases of the schedule).
FAMILY_ROWS = [
    ("A. the paper's settings (the bundled spec as it is)", None, None, 1),
    ("B. as A, with the zero-error margin", MARGIN_LOSS, None, 1),
    ("C. closest variant that learns: as B, initial weights in [-1, 1], eps x10", MARGIN_LOSS,
     1.0, 10),
]


def family_spec(loss_expr: str | None = None, init_range: float | None = None):
    """examples/family_trees.toml, optionally with a custom loss and initial range."""
    path = ROOT / "examples" / "family_trees.toml"
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    if loss_expr is not None:
        data["loss"] = {"expr": loss_expr, "reduction": data["loss"].get("reduction", "sum")}
    if init_range is not None:
        data["init"]["range"] = init_range
    return spec_from_dict(data, path=str(path))


def family_trees(seeds: range, loss_expr: str | None = None, init_range: float | None = None,
                 rate_factor: float = 1):
    """Per seed: held-out and training triples right at 0.2 and at 0.5, final E, time."""
    spec = family_spec(loss_expr, init_range)
    module = load_module(generate_module_source(spec), name=f"repro_{spec.name}")
    rows = []
    for seed in seeds:
        task = load_task("family-trees", seed=seed)
        options = training_options(spec, seed=seed)
        options["schedule"] = tuple((epoch, rate * rate_factor, alpha)
                                    for epoch, rate, alpha in options["schedule"])
        options["learning_rate"] *= rate_factor
        start = time.perf_counter()
        result = fit(module, task, options)
        seconds = time.perf_counter() - start
        Y, Y_test = module.forward(result.params, task.X), module.forward(result.params,
                                                                          task.X_test)
        row = {"seed": seed, "loss": result.final_loss, "seconds": seconds,
               "loss_100": result.history[min(99, len(result.history) - 1)],
               "options": options, "spec": spec}
        for tolerance in (STRICT, LOOSE):
            row[("train", tolerance)] = int(np.all(np.abs(Y - task.T) < tolerance, 1).sum())
            row[("held_out", tolerance)] = int(
                np.all(np.abs(Y_test - task.T_test) < tolerance, 1).sum())
        rows.append(row)
    return spec, rows


def digits(seeds: range):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    spec, module = module_for("digits.toml")
    hidden = spec.layers[0]
    t = spec.training
    rows = []
    for seed in seeds:
        task = load_task("digits", seed=seed)
        options = training_options(spec, seed=seed)
        start = time.perf_counter()
        result = fit(module, task, options)
        ours = time.perf_counter() - start
        clf = MLPClassifier(hidden_layer_sizes=(hidden.units,), activation=hidden.activation.kind,
                            solver="sgd", learning_rate_init=t.learning_rate,
                            momentum=t.momentum, nesterovs_momentum=False,
                            batch_size=t.batch_size, alpha=spec.loss.weight_decay,
                            max_iter=t.epochs, tol=0.0, n_iter_no_change=t.epochs + 1,
                            shuffle=True, random_state=seed)
        y_train, y_test = task.T.argmax(axis=1), task.T_test.argmax(axis=1)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(task.X, y_train)
        theirs = time.perf_counter() - start
        rows.append({"seed": seed, "ours": result.test_accuracy, "ours_s": ours,
                     "sklearn": float(np.mean(clf.predict(task.X_test) == y_test)),
                     "sklearn_s": theirs, "n_train": task.n_patterns,
                     "n_test": len(task.X_test)})
    return spec, rows


def held_out(spec_name: str, seeds: range) -> tuple:
    """The generated module of ``spec_name`` trained by its own ``train`` with the spec's
    [training] table on ``load_task('digits', seed=s)``: held-out accuracy and seconds."""
    spec, module = module_for(spec_name)
    rows = []
    for seed in seeds:
        task = load_task("digits", seed=seed)
        start = time.perf_counter()
        result = fit(module, task, training_options(spec, seed=seed))
        rows.append({"seed": seed, "accuracy": result.test_accuracy,
                     "seconds": time.perf_counter() - start})
    return spec, rows


def _lenet_section(seeds: range) -> str:
    md = ["## Digits: a LeNet against the dense network\n"]
    spec, conv_rows = held_out("lenet_digits.toml", seeds)
    _, dense_rows = held_out("digits.toml", seeds)
    t = spec.training
    convs = [layer for layer in spec.layers if layer.kind == "conv2d"]
    pools = [layer for layer in spec.layers if layer.kind in ("maxpool2d", "avgpool2d")]
    md.append(
        "`examples/lenet_digits.toml`, the 8x8 images as one channel: "
        + ", then ".join(
            f"conv {c.units}@{c.kernel[0]}x{c.kernel[1]} (padding {c.padding[0]}, "
            f"{c.activation.kind}) and {p.kind[:3]} pooling {p.kernel[0]}x{p.kernel[1]}"
            for c, p in zip(convs, pools))
        + f", flatten, dense {spec.layers[-1].units} softmax; mean cross-entropy with L2 "
        f"{spec.loss.weight_decay:g}; {spec.init.kind} initial weights; minibatch SGD, batch "
        f"{t.batch_size}, learning rate {t.learning_rate:g}, momentum {t.momentum:g}, "
        f"{t.epochs} epochs. Against it the dense 64-32-10 of `examples/digits.toml` (the "
        "section above), both generated modules trained by their own `train` with their "
        "spec's [training] table on the same split per seed (`load_task('digits', seed=s)`, "
        f"{len(seeds)} seeds). Times are wall-clock seconds for training on this machine.\n")
    md.append("| network | held-out accuracy, mean +- sd | min-max | runs >= 98% | "
              "training time per run, median (s) |")
    md.append("|---|---|---|---|---|")
    for label, rows in (("LeNet (`examples/lenet_digits.toml`)", conv_rows),
                        ("dense 64-32-10 (`examples/digits.toml`)", dense_rows)):
        acc = np.array([r["accuracy"] for r in rows])
        secs = np.array([r["seconds"] for r in rows])
        md.append(f"| {label} | {100 * acc.mean():.2f}% +- {100 * acc.std():.2f} | "
                  f"{100 * acc.min():.2f}-{100 * acc.max():.2f}% | "
                  f"{int(np.sum(acc >= 0.98 - 1e-12))}/{len(acc)} | {np.median(secs):.2f} |")
        print(f"{label}: mean {acc.mean():.4f} min {acc.min():.4f} max {acc.max():.4f}",
              file=sys.stderr)
    md.append("")
    return "\n".join(md)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="seeds 0..S-1 (default 20)")
    parser.add_argument("--out", default=str(ROOT / "REPRODUCTION.md"))
    parser.add_argument("--no-digits", action="store_true",
                        help="skip the scikit-learn parts (digits, lenet)")
    parser.add_argument("--only", action="append", choices=SECTIONS, metavar="SECTION",
                        help="run only this section (" + ", ".join(SECTIONS) + "; repeatable); "
                             "the Markdown goes to stdout unless --out is given")
    args = parser.parse_args(argv)
    out_given = any(a == "--out" or a.startswith("--out=") for a in (argv or sys.argv[1:]))
    sections = set(args.only or SECTIONS) - ({"digits", "lenet"} if args.no_digits else set())
    seeds = range(args.seeds)
    began = time.perf_counter()
    md: list[str] = []
    say = md.append

    say("# Reproducing the 1986 backpropagation results\n")
    say("Generated by `" + " ".join(["python", "scripts/reproduce.py", *(argv or sys.argv[1:])])
        + "` (every number below comes from that one command; do not edit by hand).\n")
    say(f"symgrad {__version__}, Python {platform.python_version()}, NumPy {np.__version__}, "
        f"SymPy {sympy.__version__}"
        + _sklearn_version() + f", {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs. Seeds 0-{args.seeds - 1}.\n")
    say("Papers: Rumelhart, Hinton & Williams, *Learning representations by back-propagating "
        "errors*, Nature 323 (1986) 533-536 ('Nature'); *Learning internal representations by "
        "error propagation*, PDP vol. 1 ch. 8 ('PDP ch. 8').\n")
    say("Method, as in 1986: E = 1/2 sum over cases and outputs of (y - d)^2; batch mode (one "
        "weight change per sweep through all cases); dw(t) = -eps dE/dw + alpha dw(t-1); "
        "sigmoid units with biases; initial weights uniform in [-r, r] (r from each spec's "
        "`[init]`). Each network is a bundled spec in `examples/`; its NumPy module is "
        "generated by symgrad and trained by the module's own `train`.\n")
    say("**Sweeps to solution.** A run is solved after sweep k when, with the weights after k "
        "changes, every output of every training pattern is within the tolerance of its "
        "target. Two criteria: **0.5** (every output on the right side of 0.5) and **0.2** "
        "(above 0.8 where the target is 1, below 0.2 where it is 0). Runs stop at the 0.2 "
        "criterion or at the sweep limit; an unsolved run counts as a failure and is left out "
        "of the median/IQR/min/max. The paper's figures are means over successful runs with "
        "their own criteria (the papers are not explicit for every task), so compare orders "
        "of magnitude, not digits.\n")

    if "sweeps" in sections:
        say("## Sweeps to solution\n")
        say("| network (spec) | mode, eps, alpha, r | limit | solved (0.5) | median | IQR | min-max "
            "| solved (0.2) | median | IQR | min-max | paper |")
        say("|---|---|---|---|---|---|---|---|---|---|---|---|")
        symmetry_rows = None
        for label, spec_name, task_name, limit, paper, _source, overrides in SWEEP_TASKS:
            spec, rows = sweeps_to_solution(spec_name, task_name, limit, seeds, overrides)
            t = training_options(spec, **overrides)
            loose, strict = summary([r[0] for r in rows]), summary([r[1] for r in rows])
            say(f"| {label} (`examples/{spec_name}`) | {t['mode']}, {t['learning_rate']:g}, "
                f"{t['momentum']:g}, "
                f"{spec.init.range:g} | {limit} | {fmt(loose)} | {fmt(strict)} | "
                f"{f'{paper:,}' if paper else '-'} |")
            if spec_name == "symmetry.toml":
                symmetry_rows = rows
            print(f"{label}: 0.5 {fmt(loose)}; 0.2 {fmt(strict)}", file=sys.stderr)
        say("")
        say("Paper sources: " + "; ".join(f"{label}: {source}" for label, _, _, _, _, source, _
                                          in SWEEP_TASKS if source != "-") + ". Rows marked "
            "online or with a changed eps override the spec's [training] table for that row only; "
            "an online sweep is one pass through the patterns in order with one weight change per "
            "pattern (the chapter counts 'presentations' of the pattern set).\n")

        say("### Symmetry: the structure of the solution\n")
        say("Nature, figure 1: for each hidden unit the weights from inputs mirrored about the "
            "middle are equal in size and opposite in sign, and the weights on one side are in "
            "the ratio 1:2:4; the hidden biases are negative and the output bias is positive. "
            "Checked on the weights at the 0.2 criterion of every run that reached it. "
            "Tolerances: mirror pairs |w_j + w_(7-j)| <= 0.25 max|w| with opposite signs; the "
            "sorted magnitudes of the three pairs (each pair's mean size) have successive ratios "
            "in [1.5, 2.5].\n")
        checked = [symmetry_structure(p["W1"], p["b1"], p["b2"]) for _, _, p in symmetry_rows
                   if p is not None]
        n = len(checked)
        say("| property | solved runs showing it |")
        say("|---|---|")
        for key, text in (("mirror", "mirror pairs equal and opposite"),
                          ("ratio", "pair magnitudes 1:2:4"),
                          ("hidden_bias_negative", "both hidden biases negative"),
                          ("output_bias_positive", "output bias positive")):
            say(f"| {text} | {sum(c[key] for c in checked)}/{n} |")
        say(f"| all four | {sum(all(c.values()) for c in checked)}/{n} |")
        if checked:
            _, _, example = next(r for r in symmetry_rows if r[2] is not None)
            say("\nFirst solved seed, hidden weights (rows: hidden units; columns: inputs 1-6), "
                "hidden biases, output bias:\n")
            say("```")
            for w, b in zip(example["W1"], example["b1"]):
                say("  ".join(f"{v:7.2f}" for v in w) + f"   bias {b:6.2f}")
            say(f"output bias {example['b2'][0]:.2f}")
            say("```")
        say("")

    if "family" in sections:
        say(_family_section(seeds))

    if "digits" in sections:
        say("## Digits: symgrad against scikit-learn\n")
        spec, rows = digits(seeds)
        t = spec.training
        h = spec.layers[0]
        say(f"`examples/digits.toml`: 64-{h.units}-10, {h.activation.kind} hidden units, "
            f"softmax outputs, mean cross-entropy with L2 {spec.loss.weight_decay:g}; minibatch "
            f"SGD, batch {t.batch_size}, learning rate {t.learning_rate:g}, momentum "
            f"{t.momentum:g} (plain, not Nesterov), {t.epochs} epochs. scikit-learn "
            "`MLPClassifier` with the same architecture, activation, solver='sgd', learning "
            "rate, momentum (nesterovs_momentum=False), batch size, alpha and max_iter "
            "(tol=0, no early stopping). Same stratified 50% held-out split per seed "
            f"({rows[0]['n_train']} training / {rows[0]['n_test']} held-out images, "
            "`load_task('digits', seed=s)`). Differences that remain: scikit-learn starts the "
            "biases uniform (symgrad at zero) and divides its L2 term by the batch size. "
            "Times are wall-clock seconds for training on this machine.\n")
        ours = np.array([r["ours"] for r in rows])
        theirs = np.array([r["sklearn"] for r in rows])
        ours_s = np.array([r["ours_s"] for r in rows])
        theirs_s = np.array([r["sklearn_s"] for r in rows])
        say("| | held-out accuracy, mean +- sd | min-max | training time per run, median (s) |")
        say("|---|---|---|---|")
        say(f"| symgrad generated module | {100 * ours.mean():.2f}% +- {100 * ours.std():.2f} | "
            f"{100 * ours.min():.2f}-{100 * ours.max():.2f}% | {np.median(ours_s):.2f} |")
        say(f"| scikit-learn MLPClassifier | {100 * theirs.mean():.2f}% +- "
            f"{100 * theirs.std():.2f} | {100 * theirs.min():.2f}-{100 * theirs.max():.2f}% | "
            f"{np.median(theirs_s):.2f} |")
        say("")

    if "lenet" in sections:
        say(_lenet_section(seeds))

    say(f"Total run time: {time.perf_counter() - began:.0f} s.\n")
    text = "\n".join(md)
    if args.only and not out_given:
        print(text)
        return 0
    Path(args.out).write_text(text, encoding="utf-8")
    print(f"wrote {args.out} in {time.perf_counter() - began:.0f} s", file=sys.stderr)
    return 0



def _family_section(seeds: range) -> str:
    spec = load_spec(ROOT / "examples" / "family_trees.toml")
    t = spec.training
    out = ["## Family trees\n"]
    say = out.append
    say("`examples/family_trees.toml`, the paper's settings: person (24) -> 6 units, "
        "relationship (12) -> 6 units, both -> 12 -> 6 -> 24 outputs, all sigmoid with "
        "biases, E = 1/2 sum (y - d)^2 with targets 0 and 1, uniform "
        f"[-{spec.init.range:g}, {spec.init.range:g}] initial weights. 1,500 sweeps in batch "
        "mode (one weight change per sweep through all 100 training triples): eps 0.005 and "
        "alpha 0.5 for the first 20 sweeps, then eps 0.01 and alpha 0.9; every weight and "
        f"bias decayed by {100 * t.shrink:g}% after each change. The task "
        "(`load_task('family-trees', seed=s)`) is the 104 (person, relationship) pairs of "
        "Hinton's two trees; the 8 with two correct answers (the aunts and uncles of Colin, "
        "Charlotte, Alfonso and Sophia) have both answer units at 1 (112 person-relationship-"
        "person facts in all). The seed draws the 4 held-out pairs. Paper (Nature): after "
        "1,500 sweeps all 4 held-out triples right.\n")
    say("Two criteria for a triple being right, both reported: **0.2** (every output above "
        "0.8 where the target is 1 and below 0.2 where it is 0) and **0.5** (every correct "
        "answer's unit above 0.5 and every other unit below 0.5). Rows B and C train with "
        "Hinton's zero-error margin, `[loss] expr = \"" + MARGIN_LOSS + "\"` (an output "
        "beyond 0.8 or 0.2 on the right side has no error), so they are judged on the 0.5 "
        "criterion: under the margin the error, and so the gradient, is zero exactly at 0.8 "
        "and 0.2, and the weight decay holds outputs just inside the margin, so the 0.2 "
        "criterion sits on the boundary and says nothing. Rows A and B use the spec's initial "
        "weights and learning rates; row C multiplies both phases' eps by 10 (0.05 then 0.1; "
        "alpha 0.5 then 0.9, decay and sweeps unchanged) and starts from [-1, 1].\n")
    say("| row | held-out right (of 4), 0.2: seeds with 0/1/2/3/4 | mean | held-out right, "
        "0.5: seeds with 0/1/2/3/4 | mean | training right (of 100), 0.2: median (min-max) "
        "| training right, 0.5: median (min-max) | all 100 right (0.5) | final E, median "
        "| s per run |")
    say("|---|---|---|---|---|---|---|---|---|---|")
    results = {}
    for label, loss_expr, init_range, factor in FAMILY_ROWS:
        _, rows = family_trees(seeds, loss_expr, init_range, factor)
        results[label] = rows
        say(_family_row(label, rows))
        print(f"family trees {label}: {_family_row('', rows)}", file=sys.stderr)
    a, b, c = (results[label] for label, *_ in FAMILY_ROWS)
    say("")
    drift = [max(abs(r["loss_100"] - r["loss"]) for r in rows) for rows in (a, b)]
    say("Rows A and B stay on a plateau: E is the same after sweep 100 as after sweep 1,500 "
        f"(the largest change over those 1,400 sweeps, on any seed, is {drift[0]:.3f} in A "
        f"and {drift[1]:.3f} in B) and no training triple is right on either criterion. "
        "From [-0.3, 0.3] the signal that tells the inputs apart has to pass four layers of "
        "small weights, and the 0.2% decay per change pulls the weights back faster than "
        "that signal grows; the margin alone does not change this. Row C is the closest "
        "variant found that learns all 100 training triples; it changes only the initial "
        "range and the learning rate. Exploratory runs (seeds 0-3 or 4-7, not part of this "
        "script; training triples right at 0.5): with the margin, [-1, 1] at eps x1 or x2 "
        "stayed at 0-25; [-0.3, 0.3] at eps x10 reached 65-94 and at x20 76-94; [-0.5, 0.5] "
        "at x10 reached 96-100. Without the margin (E = 1/2 sum (y - d)^2, decay kept), "
        "[-1, 1] at eps x10 reached 88-98, and [-2, 2] at eps x1 stayed on the plateau.\n")
    say(f"Held-out generalization is where it falls short of the paper: row C gets "
        f"{np.mean([r[('held_out', LOOSE)] for r in c]):.2f} of the 4 held-out triples right "
        f"on average at 0.5 and all 4 in {sum(r[('held_out', LOOSE)] == 4 for r in c)} of "
        f"{len(c)} seeds; the paper reports all 4 right.")
    return "\n".join(out) + "\n"


def _family_row(label: str, rows: list[dict]) -> str:
    def counts(key):
        return "/".join(str(c) for c in np.bincount([r[key] for r in rows], minlength=5))

    def spread(key):
        v = np.array([r[key] for r in rows])
        return f"{np.median(v):.0f} ({v.min()}-{v.max()})"

    return (f"| {label} | {counts(('held_out', STRICT))} | "
            f"{np.mean([r[('held_out', STRICT)] for r in rows]):.2f} | "
            f"{counts(('held_out', LOOSE))} | "
            f"{np.mean([r[('held_out', LOOSE)] for r in rows]):.2f} | "
            f"{spread(('train', STRICT))} | {spread(('train', LOOSE))} | "
            f"{sum(r[('train', LOOSE)] == 100 for r in rows)}/{len(rows)} | "
            f"{np.median([r['loss'] for r in rows]):.2f} | "
            f"{np.median([r['seconds'] for r in rows]):.2f} |")


def _sklearn_version() -> str:
    try:
        import sklearn
    except ImportError:
        return ""
    return f", scikit-learn {sklearn.__version__}"


if __name__ == "__main__":
    sys.exit(main())
