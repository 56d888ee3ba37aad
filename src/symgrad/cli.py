"""The ``symgrad`` command line.

Contract: ``symgrad derive | generate | check`` and the subcommands that
other modules register (each module listed in :data:`SUBCOMMANDS` provides
``add_arguments(parser)`` and ``run(args) -> int``).  Exit codes: 0 success,
1 a check found a wrong gradient, 2 bad input (one line on stderr naming
the file, line and field; no traceback and no partial output file).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from . import __version__
from .spec import SpecError

#: Subcommands implemented in their own modules: name -> (module, help).
SUBCOMMANDS = {
    "verify": ("symgrad.verify", "compare a hand-written gradient with the derived one"),
    "train": ("symgrad.train", "train a network from its spec on a task or data file"),
    "demo": ("symgrad.demo", "derive, generate, check and train the 1986 XOR network"),
}

EXIT_OK, EXIT_WRONG, EXIT_BAD_INPUT = 0, 1, 2


class UsageError(Exception):
    """Bad input found by a command: reported in one line, exit code 2."""


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(path)
    except OSError as exc:
        if temporary.is_file():
            temporary.unlink()
        raise UsageError(f"{path}: cannot write: {exc.strerror or exc}") from None


def cmd_derive(args) -> int:
    from .derive import derive
    from .spec import load_spec

    spec = load_spec(args.spec)
    derivation = derive(spec)
    per_weight = None
    if args.per_weight:
        from .expand import per_weight_gradients

        per_weight = per_weight_gradients(spec)
    from . import render

    renderer = {"text": render.render_text, "latex": render.render_latex,
                "markdown": render.render_markdown}[args.format]
    text = renderer(derivation, per_weight=per_weight)
    if args.output:
        _write_atomically(Path(args.output), text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_generate(args) -> int:
    from .codegen import generate_module_source, load_module
    from .spec import load_spec

    spec = load_spec(args.spec)
    source = generate_module_source(spec, dtype=args.dtype, spec_path=args.spec,
                                    output_path=args.output)
    if args.check:
        code = _report(load_module(source, name=f"symgrad_check_{spec.name}"), args.json)
        if code != EXIT_OK:
            return code
    if args.output:
        _write_atomically(Path(args.output), source)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(source)
    return EXIT_OK


def cmd_check(args) -> int:
    from .codegen import generate_module_source, load_module

    target = Path(args.target)
    if not target.exists():
        raise UsageError(f"{target}: no such file")
    if target.suffix == ".py":
        try:
            module = load_module(target)
        except Exception as exc:  # the user's file: report, don't trace back
            raise UsageError(f"{target}: cannot import: {exc}") from None
        missing = [name for name in ("PARAM_SHAPES", "init_params", "loss", "loss_and_grad")
                   if not hasattr(module, name)]
        if missing:
            raise UsageError(f"{target}: not a generated module (missing {', '.join(missing)})")
        try:
            return _report(module, args.json, batch=args.batch, seed=args.seed)
        except Exception as exc:  # the user's code failed to run: report, don't trace back
            raise UsageError(f"{target}: cannot evaluate: {type(exc).__name__}: {exc}") from None
    from .spec import load_spec

    module = load_module(generate_module_source(load_spec(target)))
    return _report(module, args.json, batch=args.batch, seed=args.seed)


def _report(module, as_json: bool, *, batch: int = 5, seed: int = 0) -> int:
    import json

    from .check import check_module

    report = check_module(module, batch=batch, seed=seed)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report)
    return EXIT_OK if report.passed else EXIT_WRONG


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="symgrad",
        description="Symbolic backpropagation: derive, print and generate gradient code.")
    parser.add_argument("--version", action="version", version=f"symgrad {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    derive = commands.add_parser("derive", help="print the backpropagation derivation")
    derive.add_argument("spec", help="a network spec (.toml)")
    derive.add_argument("--format", choices=["text", "latex", "markdown"], default="text")
    derive.add_argument("--per-weight", action="store_true",
                        help="also derive dL/dw for every single weight (small networks)")
    derive.add_argument("-o", "--output", help="write to this file instead of stdout")
    derive.set_defaults(run=cmd_derive)

    generate = commands.add_parser("generate", help="generate a standalone NumPy module")
    generate.add_argument("spec", help="a network spec (.toml)")
    generate.add_argument("-o", "--output", help="write to this file instead of stdout")
    generate.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    generate.add_argument("--check", action="store_true",
                          help="check the gradient against finite differences first")
    generate.add_argument("--json", action="store_true", help="the check's report as JSON")
    generate.set_defaults(run=cmd_generate)

    check = commands.add_parser("check", help="check a module's gradient by finite differences")
    check.add_argument("target", help="a spec (.toml) or a generated module (.py)")
    check.add_argument("--batch", type=int, default=5)
    check.add_argument("--seed", type=int, default=0)
    check.add_argument("--json", action="store_true")
    check.set_defaults(run=cmd_check)

    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        sub = commands.add_parser(name, help=help_text)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return args.run(args)
    except (SpecError, UsageError) as exc:
        print(f"symgrad: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ValueError, KeyError) as exc:
        if type(exc).__name__ in ("TaskError", "ExpressionError", "UnknownPrimitive",
                                  "PerWeightError", "VerifyInputError"):
            print(f"symgrad: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        raise
    except BrokenPipeError:  # pragma: no cover - `symgrad derive ... | head`
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
