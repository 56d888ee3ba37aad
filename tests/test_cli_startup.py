"""The command line starts without SymPy: subcommands and the public API import on first use."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["check", "--help"],
                                  ["demo", "--help"], ["derive", "--help"]])
def test_help_imports_no_sympy(argv):
    code = ("import contextlib, io\nfrom symgrad import cli\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            f"    cli.main({argv!r})")
    assert "sympy" not in _modules_after(code)


def test_public_api_is_lazy_but_complete():
    import symgrad

    assert "sympy" not in _modules_after("import symgrad")
    for name in symgrad.__all__:
        assert getattr(symgrad, name) is not None
    with pytest.raises(AttributeError):
        symgrad.no_such_name  # noqa: B018


def test_every_bad_input_error_is_one_class():
    from symgrad.cli import UsageError
    from symgrad.errors import BadInput
    from symgrad.exprparse import ExpressionError
    from symgrad.primitives import UnknownPrimitive
    from symgrad.spec import SpecError
    from symgrad.tasks import TaskError
    from symgrad.verify import VerifyInputError

    for error in (UsageError, ExpressionError, UnknownPrimitive, SpecError, TaskError,
                  VerifyInputError):
        assert issubclass(error, BadInput), error


def test_json_without_check_is_refused(capsys):
    from symgrad import cli

    assert cli.main(["generate", "examples/xor.toml", "--json"]) == 2
    assert "needs --check" in capsys.readouterr().err
