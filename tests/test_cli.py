"""The ``symgrad`` command line: derive, generate, check; exit codes 0, 1 and 2."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from symgrad import __version__
from symgrad.cli import main
from symgrad.codegen import load_module

ROOT = Path(__file__).resolve().parents[1]
XOR = str(ROOT / "examples" / "xor.toml")


def run_cli(*args, cwd=None):
    """``python -m symgrad ARGS`` in a subprocess, importing symgrad from src/."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "symgrad", *args], capture_output=True,
                          text=True, env=env, cwd=cwd)


def one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# --------------------------------------------------------------------------- happy paths


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"symgrad {__version__}"


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "derive" in capsys.readouterr().out


def test_derive_text(capsys):
    assert main(["derive", XOR]) == 0
    out = capsys.readouterr().out
    assert "xor" in out
    numbers = [int(n) for n in re.findall(r"^\((\d+)\)", out, flags=re.M)]
    assert numbers == list(range(1, 14))
    for name in ("W2", "b1", "δ2"):
        assert name in out


@pytest.mark.parametrize("fmt", ["latex", "markdown"])
def test_derive_other_formats_to_a_file(tmp_path, capsys, fmt):
    out = tmp_path / f"xor.{fmt}"
    assert main(["derive", XOR, "--format", fmt, "-o", str(out)]) == 0
    assert out.read_text().strip()
    assert f"wrote {out}" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_generate_to_stdout(capsys):
    assert main(["generate", XOR]) == 0
    source = capsys.readouterr().out
    assert source.startswith('"""xor: a standalone NumPy training module')
    assert f"Command: symgrad generate {XOR}\n" in source


def test_generate_to_a_file_and_check(tmp_path, capsys):
    out = tmp_path / "sub" / "xor32.py"
    assert main(["generate", XOR, "-o", str(out), "--dtype", "float32", "--check"]) == 0
    captured = capsys.readouterr()
    assert "PASSED" in captured.out
    assert f"wrote {out}" in captured.err
    source = out.read_text()
    assert f"Command: symgrad generate {XOR} -o {out} --dtype float32" in source
    module = load_module(out, name="cli_xor32")
    assert module.init_params(0)["W1"].dtype.name == "float32"
    assert [p.name for p in out.parent.iterdir()] == ["xor32.py"]  # no temporary left


def test_generate_matches_the_committed_module():
    # Run from the repository root, the command in a module's header reproduces it.
    result = run_cli("generate", "examples/xor.toml", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    committed = (ROOT / "generated" / "xor.py").read_text()
    assert result.stdout == committed.replace(" -o generated/xor.py", "")


@pytest.mark.parametrize("target", ["examples/xor.toml", "generated/xor.py",
                                    "generated/skip_mish.py"])
def test_check_passes(capsys, target):
    assert main(["check", str(ROOT / target)]) == 0
    assert "PASSED" in capsys.readouterr().out


def test_check_json(capsys):
    import json

    assert main(["check", str(ROOT / "generated" / "xor.py"), "--json", "--batch", "3",
                 "--seed", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] is True and set(report["params"]) == {"W1", "b1", "W2", "b2"}


# --------------------------------------------------------------------------- exit code 1


def test_check_finds_a_sign_flipped_gradient(tmp_path):
    source = (ROOT / "generated" / "xor.py").read_text()
    line = "    dL_dW2 = delta2.T @ a1\n"
    assert line in source
    tampered = tmp_path / "tampered.py"
    tampered.write_text(source.replace(line, "    dL_dW2 = -(delta2.T @ a1)\n"))
    result = run_cli("check", str(tampered))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED" in result.stdout
    failing = [row.split()[0] for row in result.stdout.splitlines() if " FAIL " in row]
    assert failing == ["W2"]
    assert "Traceback" not in result.stderr


def test_check_finds_a_wrong_bias_gradient(tmp_path, capsys):
    source = (ROOT / "generated" / "xor.py").read_text()
    tampered = tmp_path / "tampered_bias.py"
    tampered.write_text(source.replace("dL_db1 = delta1.sum(axis=0)",
                                       "dL_db1 = 2 * delta1.sum(axis=0)"))
    assert main(["check", str(tampered)]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^b1 .*FAIL", out, flags=re.M)
    assert not re.search(r"^W1 .*FAIL", out, flags=re.M)


# --------------------------------------------------------------------------- exit code 2


BAD_SPECS = {
    "malformed": ('name = "bad"\ninputs = 2\n[[layers]\nunits = 1\n', 3, None),
    "unknown_activation": ('name = "bad"\ninputs = 2\n\n[[layers]]\nunits = 1\n'
                           'activation = "sigmod"\n', 6, "layers[1].activation"),
    "unknown_key": ('name = "bad"\ninputs = 2\n[[layers]]\nunits = 1\nactivaton = "tanh"\n',
                    5, "layers[1].activaton"),
    "bad_units": ('name = "bad"\ninputs = 2\n[[layers]]\nunits = 0\n', 4, "layers[1].units"),
    "custom_expr": ('name = "bad"\ninputs = 2\n[[layers]]\nunits = 1\n'
                    'activation = { expr = "__import__(1)" }\n', 5, "layers[1].activation.expr"),
}


@pytest.mark.parametrize("command", ["generate", "check", "derive"])
@pytest.mark.parametrize("case", list(BAD_SPECS))
def test_bad_spec_exits_2_with_one_line(tmp_path, capsys, command, case):
    text, line, field = BAD_SPECS[case]
    spec = tmp_path / f"{case}.toml"
    spec.write_text(text)
    out = tmp_path / "out.py"
    args = [command, str(spec)] + (["-o", str(out)] if command != "check" else [])
    assert main(args) == 2
    captured = capsys.readouterr()
    message = one_line_error(captured.err)
    assert f"{spec}:{line}:" in message
    if field:
        assert field in message
    assert captured.out == ""
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == [spec.name]


def test_unknown_activation_in_a_subprocess(tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text(BAD_SPECS["unknown_activation"][0])
    result = run_cli("generate", str(spec), "-o", "out.py", cwd=tmp_path)
    assert result.returncode == 2
    message = one_line_error(result.stderr)
    assert message.startswith(f"symgrad: {spec}:6: layers[1].activation: unknown activation")
    assert "did you mean 'sigmoid'" in message
    assert result.stdout == ""
    assert not (tmp_path / "out.py").exists()


@pytest.mark.parametrize("command", ["generate", "check", "derive"])
def test_missing_file_exits_2(tmp_path, capsys, command):
    missing = tmp_path / "nowhere.toml"
    assert main([command, str(missing)]) == 2
    message = one_line_error(capsys.readouterr().err)
    assert str(missing) in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("content", "needle"), [
    ("x = 1\n", "not a generated module"),
    ("import nonexistent_module_for_symgrad_tests\n", "cannot import"),
])
def test_check_refuses_a_python_file_that_is_not_a_module(tmp_path, capsys, content, needle):
    path = tmp_path / "other.py"
    path.write_text(content)
    assert main(["check", str(path)]) == 2
    message = one_line_error(capsys.readouterr().err)
    assert str(path) in message and needle in message


def test_bad_dtype_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["generate", XOR, "--dtype", "float16"])
    assert exc.value.code == 2


def test_check_reports_a_module_that_crashes(tmp_path, capsys):
    source = (ROOT / "generated" / "xor.py").read_text()
    broken = tmp_path / "crashing.py"
    broken.write_text(source.replace("    dL_dW2 = delta2.T @ a1\n",
                                     "    dL_dW2 = delta2.T @ a1 @ undefined_name\n"))
    assert main(["check", str(broken)]) == 2
    message = one_line_error(capsys.readouterr().err)
    assert str(broken) in message and "NameError" in message


def test_unwritable_output_exits_2_and_leaves_nothing(tmp_path, capsys):
    target = tmp_path / "a_directory"
    target.mkdir()
    assert main(["generate", XOR, "-o", str(target)]) == 2
    message = one_line_error(capsys.readouterr().err)
    assert str(target) in message and "cannot write" in message
    assert [p.name for p in tmp_path.iterdir()] == ["a_directory"]
    assert list(target.iterdir()) == []
