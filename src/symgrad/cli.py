"""The ``symgrad`` command line.

Contract: ``symgrad derive | generate | check`` and the subcommands that
other modules register (each module listed in :data:`SUBCOMMANDS` provides
``add_arguments(parser)`` and ``run(args) -> int``).  Exit codes: 0 success,
1 a check found a wrong gradient, 2 bad input (one line on stderr naming
the file, line and field; no traceback and no partial output file).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from . import __version__
from .errors import BadInput
from .fileio import printable, write_atomically

#: Subcommands implemented in their own modules: name -> (module, help).
SUBCOMMANDS = {
    "verify": ("symgrad.verify", "compare a hand-written gradient with the derived one"),
    "verify-layer": ("symgrad.verify_layer", "compare one layer's hand-written backward with "
                     "its derived VJP"),
    "train": ("symgrad.train", "train a network from its spec on a task or data file"),
    "demo": ("symgrad.demo", "derive, generate, check and train the 1986 XOR network"),
}

EXIT_OK, EXIT_WRONG, EXIT_BAD_INPUT = 0, 1, 2

#: Defaults of the gradient check on the command line.
DEFAULT_ENTRIES, DEFAULT_DIRECTIONS, DEFAULT_TIMEOUT = 32, 4, 600.0


class UsageError(BadInput):
    """Bad input found by a command: reported in one line, exit code 2."""


class _TimeLimit(BaseException):
    """Raised by SIGALRM when user code runs past --timeout (not an Exception: harder to swallow)."""


# --------------------------------------------------------------------------- argument types


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit code 2."""

    def error(self, message: str):  # noqa: D102 - argparse API
        self.exit(EXIT_BAD_INPUT, f"{printable(self.prog)}: {printable(message)}\n")


def int_at_least(minimum: int, maximum: int | None = None):
    """An argparse type: an integer in [minimum, maximum]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value

    return parse


def _entries(text: str) -> int | None:
    """``--entries``: ``all`` or an integer >= 1."""
    if text.strip().lower() == "all":
        return None
    return int_at_least(1)(text)


def _seconds(text: str) -> float:
    """``--timeout``: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


seed_type = int_at_least(0, 2**63 - 1)


def add_check_options(parser, *, problem: bool = True) -> None:
    """The options of the gradient check (``check``, ``generate --check``)."""
    if problem:
        parser.add_argument("--batch", type=int_at_least(1, 100_000), default=5,
                            help="samples in the random batch (default 5)")
        parser.add_argument("--seed", type=seed_type, default=0,
                            help="random parameters, data and sample (default 0)")
    parser.add_argument("--entries", type=_entries, default=DEFAULT_ENTRIES, metavar="K|all",
                        help=f"entries compared per parameter, drawn at random when it has more"
                        f" (default {DEFAULT_ENTRIES}; 'all' for every entry)")
    parser.add_argument("--directions", type=int_at_least(0, 10_000),
                        default=DEFAULT_DIRECTIONS, metavar="D",
                        help="random directional derivatives per parameter, which see every"
                        f" entry at once (default {DEFAULT_DIRECTIONS})")
    parser.add_argument("--timeout", type=_seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"give up (exit 2) after this long (default {DEFAULT_TIMEOUT:g})")


# --------------------------------------------------------------------------- user code


@contextlib.contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise _TimeLimit after ``seconds`` (SIGALRM; only in the main thread on POSIX)."""
    if not seconds or not hasattr(signal, "setitimer") or \
            threading.current_thread() is not threading.main_thread():
        yield
        return

    def alarm(signum, frame):
        raise _TimeLimit

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _short(exc: BaseException, limit: int = 300) -> str:
    """``Type: message``, cut to ``limit`` characters."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


@contextlib.contextmanager
def user_code(label: str, timeout: float | None = None,
              passthrough: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Run user code: anything it raises or exits with, or a timeout, is a UsageError."""
    try:
        with _time_limit(timeout):
            yield
    except _TimeLimit:
        raise UsageError(f"{label}: did not finish within --timeout {timeout:g} s") from None
    except (KeyboardInterrupt, BadInput) + passthrough:
        raise
    except SystemExit as exc:
        raise UsageError(f"{label}: exited (SystemExit: {exc.code!r}) instead of returning") \
            from None
    except BaseException as exc:  # noqa: BLE001 - the user's code: report it in one line
        raise UsageError(f"{label}: {_short(exc)}") from None


class Progress:
    """``progress(done, total)`` on stderr once a task takes more than a second or two."""

    def __init__(self, label: str, stream=None, delay: float = 1.5):
        self.label, self.stream, self.delay = label, stream or sys.stderr, delay
        self.start = time.monotonic()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.last, self.shown, self.milestone = 0.0, False, 0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.start < self.delay or total <= 0:
            return
        percent = 100 * done // total
        if self.tty:
            if now - self.last >= 0.1 or done == total:
                self.stream.write(f"\r{self.label}: {done}/{total} ({percent}%)")
                self.stream.flush()
                self.last, self.shown = now, True
        elif percent >= self.milestone + 25 or (done == total and self.milestone < 100):
            self.milestone = 100 if done == total else percent - percent % 25
            self.stream.write(f"{self.label}: {done}/{total} ({percent}%)\n")
            self.stream.flush()

    def close(self) -> None:
        """End the progress line (TTY)."""
        if self.tty and self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


# --------------------------------------------------------------------------- files


def _name_max(folder: Path) -> int:
    """The longest file name the nearest existing ancestor of ``folder`` allows."""
    for candidate in (folder, *folder.parents):
        try:
            if candidate.is_dir():
                return int(os.pathconf(candidate, "PC_NAME_MAX"))
        except (OSError, ValueError, AttributeError):
            break
    return 255


def check_output_path(output: str, inputs: tuple[str, ...] = (), option: str = "-o") -> Path:
    """Refuse an output path that would overwrite an input, is a folder or cannot be named."""
    path = Path(output)
    where = f"{option} {output}"
    if not path.name or output.endswith(os.sep):
        raise UsageError(f"{where}: not a file name")
    if len(os.fsencode(path.name)) > _name_max(path.parent):
        raise UsageError(f"{where}: cannot write: file name too long")
    try:
        if path.is_dir():
            raise UsageError(f"{where}: cannot write: is a folder")
        for source in inputs:
            same = path.exists() and os.path.samefile(path, source)
            if same or path.resolve() == Path(source).resolve():
                raise UsageError(f"{where}: would overwrite the input {source}; "
                                 "choose another output file")
    except OSError as exc:
        raise UsageError(f"{where}: {exc.strerror or exc}") from None
    return path


def _write_atomically(path: Path, text: str) -> None:
    try:
        write_atomically(path, text)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror or exc}") from None


def cmd_derive(args) -> int:
    from .derive import derive
    from .spec import load_spec

    if args.output:
        check_output_path(args.output, (args.spec,))
    if args.fragment and args.format != "latex":
        raise UsageError("--fragment: writes LaTeX, so it needs --format latex")
    spec = load_spec(args.spec)
    derivation = derive(spec)
    per_weight = None
    if args.per_weight or args.weight:
        from .expand import DeltaForm

        per_weight = DeltaForm(spec)  # every weight as delta_j a_i, the deltas named once
    from . import render

    if args.weight:
        if args.format != "text":
            raise UsageError("--weight: prints one weight's derivative as text (--format text)")
        text = render.render_weight(derivation, per_weight, args.weight)
    elif args.format == "latex":
        text = render.render_latex(derivation, per_weight=per_weight, fragment=args.fragment)
    else:
        renderer = {"text": render.render_text, "markdown": render.render_markdown}[args.format]
        text = renderer(derivation, per_weight=per_weight)
    if args.output:
        _write_atomically(Path(args.output), text)
        print(f"wrote {printable(args.output)}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_generate(args) -> int:
    from .codegen import generate_module_source, load_module
    from .spec import load_spec

    if args.json and not args.check:
        raise UsageError("--json: reports the gradient check, so it needs --check")
    if args.output:
        check_output_path(args.output, (args.spec,))
    spec = load_spec(args.spec)
    source = generate_module_source(spec, dtype=args.dtype, spec_path=args.spec,
                                    output_path=args.output)
    if args.check:
        with user_code("the generated module", args.timeout):
            module = load_module(source, name=f"symgrad_check_{spec.name}")
            code = _report(module, args)
        if code != EXIT_OK:
            return code
    if args.output:
        _write_atomically(Path(args.output), source)
        print(f"wrote {printable(args.output)}", file=sys.stderr)
    else:
        sys.stdout.write(source)
    return EXIT_OK


def cmd_check(args) -> int:
    from .codegen import generate_module_source, load_module

    target = Path(args.target)
    if not target.is_file():
        raise UsageError(f"{target}: no such file")
    if target.suffix == ".py":
        with user_code(str(target), args.timeout):
            try:
                module = load_module(target)
            except (KeyboardInterrupt, _TimeLimit):
                raise
            except BaseException as exc:  # noqa: BLE001 - the user's file, sys.exit included
                raise UsageError(f"{target}: cannot import: {_short(exc)}") from None
            missing = [name for name in ("PARAM_SHAPES", "init_params", "loss", "loss_and_grad")
                       if not hasattr(module, name)]
            if missing:
                raise UsageError(f"{target}: not a generated module (missing "
                                 f"{', '.join(missing)})")
            return _report(module, args, label=str(target))
    from .spec import load_spec

    spec = load_spec(target)
    with user_code(f"{target}: generated module", args.timeout):
        return _report(load_module(generate_module_source(spec)), args, label=str(target))


def _report(module, args, *, label: str = "generated module") -> int:
    """Check ``module``'s gradient as the options say; print the report; the exit code."""
    import json

    from .check import module_dtype, random_problem
    from .gradcheck import check_gradient

    batch, seed = getattr(args, "batch", 5), getattr(args, "seed", 0)
    # check: the module's own DTYPE unless --eval-dtype; generate --check: float64 as before
    own = module_dtype(module)
    eval_dtype = getattr(args, "eval_dtype", "float64") or own
    params, X, T = random_problem(module, batch=batch, seed=seed, dtype=eval_dtype)
    if not params:
        raise UsageError(f"{label}: no parameters (PARAM_SHAPES is empty): nothing to check")
    if not all(getattr(x, "size", 0) for x in (X, T)):
        raise UsageError(f"{label}: the random batch is empty: nothing to check")
    progress = Progress("symgrad: checking the gradient")
    try:
        report = check_gradient(module.loss,
                                lambda p, x, t: module.loss_and_grad(p, x, t)[1],
                                params, X, T, entries=args.entries,
                                directions=args.directions, seed=seed, progress=progress,
                                eval_dtype=eval_dtype)
    finally:
        progress.close()
    if hasattr(args, "eval_dtype"):
        report.notes.append(
            f"module DTYPE {own}; checked in {eval_dtype}"
            + (" (--eval-dtype)" if args.eval_dtype else " (its own precision; --eval-dtype"
               f" {'float64' if own == 'float32' else 'float32'} for the other)"))
    if not math.isfinite(report.loss):
        raise UsageError(f"{label}: the loss is {report.loss} at the random point (batch "
                         f"{batch}, seed {seed}): nothing could be checked")
    if report.n_checked == 0:
        raise UsageError(f"{label}: every parameter has 0 entries: nothing was checked")
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report)
    return EXIT_OK if report.passed else EXIT_WRONG


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser; a subcommand in its own module is imported only when ``argv`` names it."""
    parser = Parser(
        prog="symgrad",
        description="Symbolic backpropagation: derive, print and generate gradient code.")
    parser.add_argument("--version", action="version", version=f"symgrad {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    derive = commands.add_parser(
        "derive", help="print the backpropagation derivation",
        description="Derive dL/dW for every parameter of the network by the chain rule, "
                    "layer by layer, and print the numbered steps.")
    derive.add_argument("spec", help="a network spec (.toml)")
    derive.add_argument("--format", choices=["text", "latex", "markdown"], default="text",
                        help="text for a terminal (default), a LaTeX document, or Markdown "
                             "with $$ math")
    derive.add_argument("--per-weight", action="store_true",
                        help="also derive dL/dw for every single weight (small networks)")
    derive.add_argument("--weight", metavar="ENTRY",
                        help="print one weight's derivative only, e.g. 'W2[0,1]' or 'b1[0]' "
                             "(indices from 0), with the error signals it uses")
    derive.add_argument("--fragment", action="store_true",
                        help="with --format latex: no preamble or document environment, "
                             "to \\input into a paper (the packages it needs are listed at "
                             "its top)")
    derive.add_argument("-o", "--output", help="write to this file instead of stdout")
    derive.set_defaults(run=cmd_derive)

    generate = commands.add_parser(
        "generate", help="generate a standalone NumPy module",
        description="Write one Python file, needing only NumPy, with forward, loss_and_grad, "
                    "train and update for the network; optionally check its gradient first.")
    generate.add_argument("spec", help="a network spec (.toml)")
    generate.add_argument("-o", "--output", help="write to this file instead of stdout")
    generate.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                          help="the floating-point type of the module's arrays (default float64)")
    generate.add_argument("--check", action="store_true",
                          help="check the gradient against finite differences first")
    generate.add_argument("--json", action="store_true",
                          help="with --check: print the check's report as JSON")
    add_check_options(generate, problem=False)
    generate.set_defaults(run=cmd_generate)

    check = commands.add_parser(
        "check", help="check a module's gradient by finite differences",
        description="Compare loss_and_grad of a generated (or spec's) module with finite "
                    "differences: a sample of entries per parameter plus random directions.")
    check.add_argument("target", help="a spec (.toml) or a generated module (.py)")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--eval-dtype", choices=["float32", "float64"], default=None,
                       help="precision of the parameters, data and finite differences"
                       " (default: the module's DTYPE; float64 checks a float32 module's"
                       " formulas without float32 rounding)")
    add_check_options(check)
    check.set_defaults(run=cmd_check)

    args = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in args if not a.startswith("-")), None)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if name != chosen:
            continue  # its options are read only when it runs
        module = importlib.import_module(module_name)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return args.run(args)
    except BadInput as exc:
        print(f"symgrad: {printable(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # pragma: no cover - `symgrad derive ... | head`
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
