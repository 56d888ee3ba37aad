"""``symgrad train SPEC``: train a network from its spec on a task or a data file.

Contract
--------
The spec is derived and its standalone NumPy module generated in memory
(nothing is written but what ``--out`` and ``--plot`` name); the module's own
``train`` function does the work.  Training options come from the spec's
``[training]`` table, and every command-line option overrides its entry.

* Data: ``--task NAME`` (a built-in task, :func:`symgrad.tasks.load_task`,
  split by ``--seed`` where it has a held-out set) or ``--data FILE.npz``
  (arrays ``X`` and ``T``, optionally ``X_test``/``T_test``).  The task's
  inputs and outputs must match the spec's, or the command stops with exit
  code 2 and one line saying which.
* Progress: a carriage-return bar on stderr with the epoch and current loss
  (``--quiet`` turns it off).
* Report: final loss; accuracy where the task has classes (argmax) or else
  the fraction of patterns with every output within the tolerance; held-out
  accuracy and "k/n held-out right" when the task has a test split; and the
  sweeps to solution (the first epoch after which every output of every
  training pattern lies within the tolerance of its target).  The tolerance
  is ``--tolerance``, else the spec's ``training.tolerance``, else the
  task's own (0.5 = the right side of 0.5; 0.2 = above 0.8 / below 0.2).
* ``--out FILE.npz`` saves the parameters atomically (a temporary file in
  the same folder, then a rename), keyed as the generated module's
  ``PARAM_SHAPES``, so the module's ``--params`` option reads them back.
* ``--plot FILE.png`` draws the loss curve with matplotlib (the ``plot``
  extra); without it the command stops before training with one line.

Exit codes: 0 trained; 1 training diverged (the loss became NaN or
infinite: one line naming the epoch, no traceback, no parameter file);
2 bad input (spec, task, data, shapes, options).

>>> from symgrad.spec import load_spec
>>> spec = load_spec("examples/xor.toml")
>>> options = training_options(spec, learning_rate=0.25)
>>> options["learning_rate"], options["momentum"], options["mode"]
(0.25, 0.9, 'batch')
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .spec import MODES, OPTIMIZERS, NetworkSpec

#: Options of the generated module's ``train`` that the spec's [training] table sets.
OPTION_NAMES = ("mode", "optimizer", "learning_rate", "momentum", "epochs", "batch_size",
                "seed", "shrink", "schedule")

EXIT_OK, EXIT_DIVERGED, EXIT_BAD_INPUT = 0, 1, 2


def _usage_error(message: str) -> Exception:
    from .cli import UsageError

    return UsageError(message)


def training_options(spec: NetworkSpec, **overrides: Any) -> dict[str, Any]:
    """The keyword arguments for the module's ``train``: the spec's table, then overrides.

    An override of ``None`` keeps the spec's value.  The schedule is a tuple of
    ``(epoch, learning_rate, momentum)`` rows as the generated module takes it.
    """
    training = spec.training
    options: dict[str, Any] = {name: getattr(training, name) for name in OPTION_NAMES}
    options["schedule"] = tuple((p.epoch, p.learning_rate, p.momentum)
                                for p in training.schedule)
    for name, value in overrides.items():
        if name not in OPTION_NAMES:
            raise TypeError(f"unknown training option {name!r}")
        if value is not None:
            options[name] = value
    return options


def check_shapes(spec: NetworkSpec, task, where: str) -> None:
    """Raise UsageError unless ``task``'s inputs and outputs match the spec's."""
    problems = []
    if task.n_inputs != spec.n_inputs:
        groups = ""
        if len(spec.inputs) > 1:
            groups = " (" + " + ".join(f"{name} {size}" for name, size in spec.inputs) + ")"
        problems.append(f"{task.n_inputs} inputs per pattern but the network takes "
                        f"{spec.n_inputs}{groups}")
    if task.n_outputs != spec.n_outputs:
        problems.append(f"{task.n_outputs} targets per pattern but the network has "
                        f"{spec.n_outputs} outputs")
    if problems:
        raise _usage_error(f"{where} has {' and '.join(problems)}; "
                           f"the spec '{spec.name}' does not fit this data")


def correct(task, Y: np.ndarray, T: np.ndarray, tolerance: float) -> np.ndarray:
    """Per pattern: argmax right (class tasks) or every output within ``tolerance``."""
    if task.classes:
        return np.argmax(Y, axis=1) == np.argmax(T, axis=1)
    return np.all(np.abs(Y - T) < tolerance, axis=1)


@dataclass
class Result:
    """What one training run did."""

    params: dict[str, np.ndarray]
    history: list[float]
    tolerance: float
    solved_at: int | None  # first sweep after which every training output was within tolerance
    train_accuracy: float
    test_accuracy: float | None = None
    test_right: int | None = None
    test_total: int | None = None
    seconds: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)
    outputs: np.ndarray | None = None  # the network's outputs on the training set

    @property
    def final_loss(self) -> float:
        return self.history[-1] if self.history else float("nan")

    @property
    def epochs(self) -> int:
        return len(self.history)


class ProgressBar:
    """A dependency-free carriage-return progress bar: ``[####....] 120/2000 loss 0.51``."""

    def __init__(self, total: int, *, stream=None, width: int = 30, label: str = "epoch"):
        self.total, self.width, self.label = max(1, total), width, label
        self.stream = sys.stderr if stream is None else stream
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.last_time = 0.0
        self.last_fraction = -1.0
        self.shown = False

    def update(self, done: int, loss: float, *, force: bool = False) -> None:
        fraction = min(1.0, done / self.total)
        now = time.monotonic()
        # On a terminal redraw ten times a second; in a log, every 10% at most.
        if not force and (now - self.last_time < 0.1 if self.interactive
                          else fraction - self.last_fraction < 0.1):
            return
        self.last_time, self.last_fraction = now, fraction
        if not self.interactive:  # a log: plain lines, no carriage returns
            self.stream.write(f"{self.label} {done}/{self.total}  loss {loss:.6g}\n")
            self.stream.flush()
            return
        filled = int(round(fraction * self.width))
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r[{bar}] {self.label} {done}/{self.total}  loss {loss:.6g}  ")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def fit(module, task, options: dict[str, Any], *, tolerance: float | None = None,
        stop_when_solved: bool = False, params: dict[str, np.ndarray] | None = None,
        progress: ProgressBar | None = None) -> Result:
    """Train a generated ``module`` on ``task`` with the module's own ``train``.

    Watches the training outputs after every sweep to find the sweeps to
    solution.  A diverging run raises the module's ``FloatingPointError``.
    """
    tolerance = task.tolerance if tolerance is None else float(tolerance)
    dtype = getattr(module, "DTYPE", np.float64)
    params = module.init_params(options["seed"]) if params is None else params
    X = np.asarray(task.X, dtype=dtype)
    T = np.asarray(task.T, dtype=dtype)
    solved_at: list[int] = []
    history_seen: list[float] = []

    def callback(epoch, loss, current):
        history_seen.append(loss)
        if not solved_at and np.all(np.abs(module.forward(current, X) - T) < tolerance):
            solved_at.append(epoch + 1)
        if progress is not None:
            progress.update(epoch + 1, loss)
        return bool(stop_when_solved and solved_at)

    start = time.perf_counter()
    try:
        history = module.train(params, X, T, callback=callback, **options)
    finally:
        if progress is not None:
            if history_seen:
                progress.update(len(history_seen), history_seen[-1], force=True)
            progress.close()
    seconds = time.perf_counter() - start
    Y = module.forward(params, X)
    result = Result(params=params, history=[float(v) for v in history], tolerance=tolerance,
                    outputs=Y,
                    solved_at=solved_at[0] if solved_at else None,
                    train_accuracy=float(np.mean(correct(task, Y, T, tolerance))),
                    seconds=seconds, options=dict(options))
    if task.X_test is not None:
        Y_test = module.forward(params, np.asarray(task.X_test, dtype=dtype))
        right = correct(task, Y_test, np.asarray(task.T_test, dtype=dtype), tolerance)
        result.test_accuracy = float(np.mean(right))
        result.test_right, result.test_total = int(right.sum()), int(right.size)
    return result


def save_params(params: dict[str, np.ndarray], path: str | Path) -> Path:
    """Write ``params`` to an .npz file atomically (temporary file, then rename)."""
    from .fileio import atomic_file

    path = Path(path)
    with atomic_file(path) as handle:
        np.savez(handle, **params)
    return path


def _pyplot():
    """matplotlib's pyplot on the Agg backend, or a one-line UsageError."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise _usage_error("--plot needs matplotlib: pip install 'symgrad[plot]'") from None
    return plt


def plot_history(history: list[float], path: str | Path, *, title: str = "",
                 solved_at: int | None = None) -> Path:
    """Draw the loss curve (log scale) to ``path`` atomically."""
    plt = _pyplot()
    path = Path(path)
    figure, axes = plt.subplots(figsize=(6, 4))
    epochs = np.arange(1, len(history) + 1)
    axes.plot(epochs, history, lw=1.5)
    if min(history) > 0:
        axes.set_yscale("log")
    if solved_at is not None:
        axes.axvline(solved_at, color="grey", ls="--", lw=1, label=f"solved at {solved_at}")
        axes.legend()
    axes.set_xlabel("epoch (sweep)")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    from .fileio import atomic_file

    try:
        with atomic_file(path) as handle:
            figure.savefig(handle, format=path.suffix.lstrip(".") or "png", dpi=120)
    finally:
        plt.close(figure)
    return path


# --------------------------------------------------------------------------- command line

def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seed(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2**63 - 1, got {value}")
    return value


def _number(minimum: float | None = 0.0, maximum: float | None = None):
    import argparse

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not np.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be finite, got {text}")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value

    return parse


def add_arguments(parser) -> None:
    """The options of ``symgrad train``."""
    parser.description = ("Train a network from its spec on a built-in task or an .npz file. "
                          "Options override the spec's [training] table. Exit codes: 0 trained, "
                          "1 the loss diverged (NaN/inf), 2 bad input.")
    parser.add_argument("spec", help="a network spec (.toml)")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--task", metavar="NAME",
                      help="a built-in task: xor, parity:N, encoder:K-H-K, symmetry:N, "
                           "family-trees, digits[:F]")
    data.add_argument("--data", metavar="FILE.npz",
                      help="arrays X and T (optionally X_test and T_test)")
    parser.add_argument("--mode", choices=MODES)
    parser.add_argument("--optimizer", choices=OPTIMIZERS)
    parser.add_argument("--epochs", type=_positive_int)
    parser.add_argument("--learning-rate", type=_number())
    parser.add_argument("--momentum", type=_number(0.0, 1.0))
    parser.add_argument("--batch-size", type=_positive_int)
    parser.add_argument("--shrink", type=_number(0.0, 1.0),
                        help="fraction every parameter shrinks after each update (weight decay "
                        "as in 1986; the loss's L2 term is [loss] weight_decay)")
    parser.add_argument("--seed", type=_seed, help="initial weights, shuffling, held-out split")
    parser.add_argument("--tolerance", type=_number(0.0, 1.0),
                        help="solved when every output is within this of its target "
                             "(default: the spec's, else the task's)")
    parser.add_argument("--stop-when-solved", action="store_true",
                        help="stop at the first sweep that meets the tolerance")
    parser.add_argument("--out", metavar="FILE.npz", help="save the trained parameters here")
    parser.add_argument("--plot", metavar="FILE.png", help="draw the loss curve (matplotlib)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _load_data(args, spec: NetworkSpec, seed: int):
    from .tasks import TaskError, load_npz, load_task

    if args.task is None and args.data is None:
        raise _usage_error("give the training data: --task NAME or --data FILE.npz")
    try:
        if args.data is not None:
            output = spec.layers[-1]  # a softmax output takes integer class labels too
            classes = output.activation.vector or spec.loss.coupled
            steps = output.shape[0] if len(output.shape) == 2 else None
            task, where = load_npz(args.data, n_classes=output.units if classes else None,
                                   label_steps=steps), args.data
        else:
            task, where = load_task(args.task, seed=seed), f"task '{args.task}'"
    except TaskError as exc:
        raise _usage_error(str(exc)) from None
    check_shapes(spec, task, where)
    return task


def run(args) -> int:
    """``symgrad train``: see the module docstring for the contract."""
    from .codegen import generate_module_source, load_module
    from .spec import load_spec

    spec = load_spec(args.spec)
    if args.plot:
        _pyplot()  # fail before training, not after
    if args.out and not args.out.endswith(".npz"):
        raise _usage_error(f"--out {args.out}: the parameters are written as .npz; "
                           "give a name ending in .npz")
    options = training_options(
        spec, mode=args.mode, optimizer=args.optimizer, epochs=args.epochs,
        learning_rate=args.learning_rate, momentum=args.momentum, batch_size=args.batch_size,
        shrink=args.shrink, seed=args.seed)
    task = _load_data(args, spec, options["seed"])
    tolerance = args.tolerance if args.tolerance is not None else spec.training.tolerance
    module = load_module(generate_module_source(spec), name=f"symgrad_train_{spec.name}")
    print(f"{spec.name}: {task.name}, {task.n_patterns} patterns"
          + (f" (+{len(task.X_test)} held out)" if task.X_test is not None else "")
          + f"; {options['mode']} {options['optimizer']}, learning rate "
          f"{options['learning_rate']:g}, momentum {options['momentum']:g}, "
          f"{options['epochs']} epochs, seed {options['seed']}"
          + (f", shrink {options['shrink']:g} per update" if options["shrink"] else "")
          + (f", {len(options['schedule'])} schedule phases" if options["schedule"] else ""))
    progress = None if args.quiet else ProgressBar(options["epochs"])
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported below
            result = fit(module, task, options, tolerance=tolerance,
                         stop_when_solved=args.stop_when_solved, progress=progress)
    except FloatingPointError as exc:
        print(f"symgrad: training diverged: {exc}; no parameters written", file=sys.stderr)
        return EXIT_DIVERGED
    print(report(result, task))
    from .fileio import printable

    if args.out:
        try:
            save_params(result.params, args.out)
        except OSError as exc:
            raise _usage_error(f"--out {args.out}: cannot write: {exc.strerror or exc}") \
                from None
        print(f"parameters written to {printable(args.out)}")
    if args.plot:
        try:
            plot_history(result.history, args.plot, title=f"{spec.name} on {task.name}",
                         solved_at=result.solved_at)
        except OSError as exc:
            raise _usage_error(f"--plot {args.plot}: cannot write: {exc.strerror or exc}") \
                from None
        print(f"loss curve written to {printable(args.plot)}")
    return EXIT_OK


def report(result: Result, task) -> str:
    """The summary lines printed after training."""
    lines = [f"final loss {result.final_loss:.6g} after {result.epochs} epochs "
             f"({result.seconds:.2f} s)"]
    if not task.classes and not np.isin(task.T, (0, 1)).all():
        # Regression targets: "right" and "solved" would measure nothing; give the error.
        if result.outputs is not None:
            rmse = float(np.sqrt(np.mean((result.outputs - task.T) ** 2)))
            lines.append(f"root-mean-square error {rmse:.6g} on the training set "
                         f"(regression targets: no accuracy or 'solved' is reported)")
        return "\n".join(lines)
    what = ("argmax: the largest output is the target class" if task.classes
            else f"every output within {result.tolerance:g} of its 0/1 target")
    lines.append(f"training accuracy {100 * result.train_accuracy:.1f}% ({what})")
    if result.test_total is not None:
        lines.append(f"held-out accuracy {100 * result.test_accuracy:.1f}%: "
                     f"{result.test_right}/{result.test_total} held-out patterns right")
    if result.solved_at is not None:
        lines.append(f"solved after {result.solved_at} sweeps (every training output within "
                     f"{result.tolerance:g} of its target)")
    else:
        lines.append(f"not solved in {result.epochs} sweeps (criterion: every training output "
                     f"within {result.tolerance:g} of its target)")
    return "\n".join(lines)
