"""The templates ship inside the wheel: build it, install it in a fresh venv, generate.

The wheel is built from the checkout (hatchling, fetched from PyPI by pip's
isolated build), installed without its dependencies into a new virtual
environment, and the dependencies (NumPy, SymPy, Jinja2) are lent to that venv
from the running interpreter by a ``.pth`` file, so nothing else is downloaded.
``symgrad generate`` then runs from a folder outside the repository, where
the checkout's ``templates/`` cannot be found: only the copy in the wheel can
serve.  This test runs in the default ``pytest`` invocation (it takes a few
seconds).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(args, **kwargs):
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                            env=_clean_env(), **kwargs)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", out, ROOT]
    result = subprocess.run([str(a) for a in command], capture_output=True, text=True,
                            env=_clean_env())
    if result.returncode != 0:
        try:
            import hatchling  # noqa: F401
        except ImportError:
            pytest.fail(f"cannot build the wheel:\n{result.stdout}\n{result.stderr}")
        _run([*command, "--no-build-isolation"])
    wheels = list(out.glob("symgrad-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin") / ("python.exe" if os.name == "nt"
                                                               else "python")


def _lend_dependencies(python: Path) -> None:
    """Make NumPy, SymPy and Jinja2 of the running interpreter importable in the venv."""
    import jinja2
    import markupsafe
    import mpmath
    import numpy
    import sympy

    folders = []
    for module in (numpy, sympy, mpmath, jinja2, markupsafe):
        folder = str(Path(module.__file__).resolve().parents[1])
        if folder not in folders:
            folders.append(folder)
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
                   ).stdout.strip()
    Path(purelib, "_symgrad_test_dependencies.pth").write_text("\n".join(folders) + "\n")


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = _venv_python(venv)
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
          wheel])
    _lend_dependencies(python)
    return venv


def test_wheel_contains_the_templates(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "symgrad/templates/module.py.j2" in names
    assert "symgrad/cli.py" in names
    assert not any(name.startswith(("templates/", "tests/", "src/")) for name in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "symgrad = symgrad.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_symgrad_generates_from_outside_the_checkout(installed, tmp_path):
    python = _venv_python(installed)
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _run([python, "-c", "import symgrad, symgrad.resources as r; "
                  "print(symgrad.__file__); print(r.templates_dir())"], cwd=work).stdout.split()
    venv = installed.resolve()
    assert Path(where[0]).resolve().is_relative_to(venv), where
    assert Path(where[1]).resolve().is_relative_to(venv), where
    assert Path(where[1]).name == "templates"

    script = python.parent / ("symgrad.exe" if os.name == "nt" else "symgrad")
    assert script.exists()
    spec = ROOT / "examples" / "xor.toml"
    result = _run([script, "generate", spec, "-o", "out.py"], cwd=work)
    assert "wrote out.py" in result.stderr
    out = work / "out.py"
    assert out.exists()
    # The installed generator writes what the checkout's writes.
    from symgrad.codegen import generate_module_source, load_module
    from symgrad.spec import load_spec

    assert out.read_text() == generate_module_source(load_spec(spec), spec_path=str(spec),
                                                     output_path="out.py")
    module = load_module(out, name="wheel_generated_xor")
    params = module.init_params(0)
    assert set(params) == {"W1", "b1", "W2", "b2"}
    # ... and the generated module runs in the venv too, importing only NumPy.
    _run([python, "-c", "import out, numpy as np; p = out.init_params(0); "
          "print(out.loss_and_grad(p, np.eye(2), np.ones((2, 1)))[0])"], cwd=work)


def test_installed_check_and_version(installed, tmp_path):
    python = _venv_python(installed)
    result = _run([python, "-m", "symgrad", "check", ROOT / "examples" / "xor.toml"],
                  cwd=tmp_path)
    assert "PASSED" in result.stdout
    from symgrad import __version__

    assert _run([python, "-m", "symgrad", "--version"], cwd=tmp_path).stdout.strip() == \
        f"symgrad {__version__}"

