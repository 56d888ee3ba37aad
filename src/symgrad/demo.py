"""``symgrad demo``: the whole pipeline on the 1986 XOR network, in a few seconds.

Contract: with no arguments the demo takes the bundled 2-2-1 XOR network
(:data:`XOR_SPEC`, the text of ``examples/xor.toml`` embedded here so that an
installed wheel needs no data files), and

1. prints the layer-level derivation of its gradient (text);
2. writes ``xor.toml``, the LaTeX document ``xor.tex`` and the generated
   standalone NumPy module ``xor.py`` to the folder it names
   (``./symgrad-demo/`` by default, ``--out DIR``); every file is written
   atomically and nothing is written anywhere else (the module is imported
   from its source text, so no ``__pycache__`` appears);
3. checks the generated gradient against finite differences and prints the
   table (exit 1 if it fails);
4. trains the network with the spec's [training] table (batch mode, learning
   rate 0.5, momentum 0.9, uniform [-0.5, 0.5] initial weights) and seed 0,
   showing a progress bar, and prints the sweeps to solution (every output on
   the right side of 0.5) and the outputs for the four patterns after all
   2000 sweeps (exit 1 if it did not solve XOR).

Seed 0 solves XOR in 407 sweeps; ``--seed`` picks another start.
"""

from __future__ import annotations

import sys
from pathlib import Path

#: The bundled 1986 XOR network: the text of examples/xor.toml.
XOR_SPEC = '''\
name = "xor"
inputs = 2

[[layers]]
units = 2
activation = "sigmoid"

[[layers]]
units = 1
activation = "sigmoid"

[loss]
kind = "sse"        # E = 1/2 sum (y - t)^2
reduction = "sum"

[init]
kind = "uniform"
range = 0.5

[training]
mode = "batch"
learning_rate = 0.5
momentum = 0.9
epochs = 2000
tolerance = 0.5
'''

#: A seed that solves XOR with the spec's settings (407 sweeps).
DEFAULT_SEED = 0


def add_arguments(parser) -> None:
    """The options of ``symgrad demo``."""
    parser.description = ("Derive, print, generate, check and train the 1986 XOR network "
                          "(2-2-1 sigmoid, E = 1/2 sum (y - t)^2, batch, momentum 0.9).")
    parser.add_argument("--out", default="symgrad-demo", metavar="DIR",
                        help="folder for xor.toml, xor.tex and xor.py (default: ./symgrad-demo)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"initial weights (default {DEFAULT_SEED}, which solves XOR)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training sweeps (default: the spec's 2000)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _write(path: Path, text: str) -> None:
    """Write one demo file atomically (fresh mkstemp temporary file, then rename)."""
    from .fileio import write_atomically

    write_atomically(path, text)


def _heading(text: str) -> None:
    print(f"\n== {text} " + "=" * max(0, 70 - len(text)))


def run(args) -> int:
    """``symgrad demo``: see the module docstring."""
    from .check import check_module
    from .codegen import generate_module_source, load_module
    from .derive import derive
    from .render import render_latex, render_text
    from .spec import loads_spec
    from .tasks import load_task
    from .train import ProgressBar, fit, training_options

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        from .cli import UsageError

        raise UsageError(f"--out {out}: exists and is not a folder")
    spec = loads_spec(XOR_SPEC, path="xor.toml")
    derivation = derive(spec)

    _heading("1. The derivation (symgrad derive xor.toml)")
    print(render_text(derivation), end="")

    _heading(f"2. Files in {out}/")
    out.mkdir(parents=True, exist_ok=True)
    source = generate_module_source(derivation, spec_path="xor.toml", output_path="xor.py")
    files = {"xor.toml": XOR_SPEC, "xor.tex": render_latex(derivation), "xor.py": source}
    for name, text in files.items():
        _write(out / name, text)
        print(f"wrote {out / name}")

    _heading("3. Gradient check against finite differences (symgrad check xor.py)")
    module = load_module(source, name="symgrad_demo_xor")
    report = check_module(module)
    print(report)
    if not report.passed:
        print("symgrad: the generated gradient disagrees with finite differences",
              file=sys.stderr)
        return 1

    _heading("4. Training (1986: batch, learning rate 0.5, momentum 0.9)")
    task = load_task("xor")
    options = training_options(spec, seed=args.seed, epochs=args.epochs)
    print(f"seed {options['seed']}, {options['epochs']} sweeps; solved = every output on "
          "the right side of 0.5")
    progress = None if args.quiet else ProgressBar(options["epochs"], stream=sys.stdout)
    try:
        result = fit(module, task, options, tolerance=spec.training.tolerance,
                     progress=progress)
    except FloatingPointError as exc:  # pragma: no cover - not with these settings
        print(f"symgrad: training diverged: {exc}", file=sys.stderr)
        return 1
    Y = module.forward(result.params, task.X)
    if result.solved_at is not None:
        print(f"solved after {result.solved_at} sweeps; loss {result.final_loss:.4g} "
              f"after {result.epochs}")
    else:
        print(f"not solved in {result.epochs} sweeps (loss {result.final_loss:.4g}); "
              "try another --seed")
    print("\n x1  x2  target  output")
    for x, t, y in zip(task.X, task.T, Y):
        print(f" {x[0]:.0f}   {x[1]:.0f}   {t[0]:.0f}       {y[0]:.3f}")
    print(f"\nDone. Everything is in {out}/: xor.toml (the spec), xor.tex (the derivation, "
          "LaTeX), xor.py (the standalone NumPy module: python xor.py --data FILE.npz).")
    return 0 if result.solved_at is not None else 1

