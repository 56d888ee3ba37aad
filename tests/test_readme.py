"""Every command in the README's console block runs as written, in a fresh copy of the repository.

The commands run with the virtual environment's ``bin`` first on PATH (what
``source .venv/bin/activate`` does) in a temporary copy of the tracked files,
so a command that needs a file the repository does not ship fails here.
A command annotated ``# exits N`` must exit with N; every other with 0.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[tuple[str, int]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```console\n(.*?)```", text, flags=re.S)
    commands = []
    for block in blocks:
        for line in block.splitlines():
            if line.startswith("$ "):
                command, _, note = line[2:].partition("  # ")
                match = re.fullmatch(r"exits (\d+)", note.strip())
                commands.append((command.strip(), int(match.group(1)) if match else 0))
    return commands


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """The tracked files of the repository, copied: what a fresh clone has."""
    target = tmp_path_factory.mktemp("clone")
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.splitlines()
    for name in files:
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def test_readme_has_the_commands():
    commands = [command for command, _ in readme_commands()]
    assert len(commands) >= 10
    assert any(c.startswith("symgrad verify") for c in commands)
    assert any(c.startswith("python xor.py") for c in commands)


def test_every_readme_command_runs_as_written(clone):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               MPLBACKEND="Agg")
    for command, expected in readme_commands():
        if command.startswith("pdflatex") and shutil.which("pdflatex") is None:
            continue  # the LaTeX tests cover compiling where it is installed
        result = subprocess.run(command, shell=True, cwd=clone, env=env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == expected, \
            f"{command!r} exited {result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
