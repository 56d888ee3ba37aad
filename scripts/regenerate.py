"""Regenerate generated/ from examples/ (``make generated``); ``--check`` reports drift.

Each bundled spec ``examples/NAME.toml`` becomes ``generated/NAME.py``, made
exactly as ``symgrad generate examples/NAME.toml -o generated/NAME.py`` makes it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from symgrad.codegen import generate_module_source
from symgrad.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]


def expected() -> dict[Path, str]:
    """The generated module every bundled example should have, by output path."""
    out = {}
    for spec_path in sorted((ROOT / "examples").glob("*.toml")):
        relative_spec = spec_path.relative_to(ROOT).as_posix()
        target = Path("generated") / f"{spec_path.stem}.py"
        spec = load_spec(relative_spec) if Path(relative_spec).exists() else load_spec(spec_path)
        out[ROOT / target] = generate_module_source(
            spec, spec_path=relative_spec, output_path=target.as_posix())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if generated/ is stale")
    args = parser.parse_args(argv)
    wanted = expected()
    stale = [path for path, text in wanted.items()
             if not path.exists() or path.read_text(encoding="utf-8") != text]
    extra = sorted(set((ROOT / "generated").glob("*.py")) - set(wanted))
    if args.check:
        for path in stale + extra:
            print(f"stale: {path.relative_to(ROOT)}", file=sys.stderr)
        return 1 if stale or extra else 0
    (ROOT / "generated").mkdir(exist_ok=True)
    for path in stale:
        path.write_text(wanted[path], encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    for path in extra:
        path.unlink()
        print(f"removed {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
