"""Data flows one way: spec -> ops -> graph -> derive -> (document | code) -> checks -> training -> CLI.

The operation registry (ops) defines each operation; the graph builder may
ask a row how a layer of its kind becomes nodes.

Every import inside the package (including the lazy ones inside functions)
goes to a module of the same or an earlier stage.  The finite-difference
checker never imports the deriver.  Subcommand modules may reach back to the
command line's shared helpers (exit codes, argument types, the user-code guard).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "symgrad"

STAGES = [
    {"errors", "naming", "fileio", "resources", "symbolic", "exprparse"},
    {"primitives", "spec"},
    {"ops"},
    {"graph"},
    {"derive"},
    {"latex", "render", "expand", "interpret", "printing", "inplace"},
    {"codegen"},
    {"gradcheck", "diagnose", "check", "prove", "verify", "verify_layer"},
    {"tasks", "train", "demo"},
    {"cli", "__main__", "__init__"},
]
STAGE = {name: index for index, names in enumerate(STAGES) for name in names}
SUBCOMMANDS = {"verify", "verify_layer", "train", "demo"}


def _module(path: Path) -> str:
    relative = path.relative_to(PACKAGE).with_suffix("")
    return relative.parts[0]  # ops/anything is the ops stage


def _type_checking_only(tree) -> set[int]:
    """Line numbers of imports under ``if TYPE_CHECKING:`` (annotations, never run)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            lines |= {n.lineno for n in ast.walk(node) if hasattr(n, "lineno")}
    return lines


def _imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    inside_ops = path.parent.name == "ops"
    annotations_only = _type_checking_only(tree)
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in annotations_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.level:
            if inside_ops and node.level == 1:
                yield "ops", node.lineno
                continue
            base = (node.module or "").split(".")[0]
            if base:
                yield base, node.lineno
            else:
                for alias in node.names:
                    yield alias.name.split(".")[0], node.lineno


def test_every_module_has_a_stage():
    modules = {_module(p) for p in PACKAGE.rglob("*.py")}
    assert modules <= set(STAGE), sorted(modules - set(STAGE))


def test_imports_go_upstream_only():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = _module(path)
        for target, line in _imports(path):
            if target == "cli" and here in SUBCOMMANDS:
                continue
            if STAGE.get(target, -1) > STAGE[here]:
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} imports {target}")
    assert wrong == []


def test_the_checker_never_imports_the_deriver():
    for name in ("gradcheck.py", "diagnose.py", "check.py"):
        targets = {target for target, _ in _imports(PACKAGE / name)}
        assert not targets & {"derive", "ops", "codegen", "graph"}, (name, targets)
