"""The ``symgrad`` command line: derive, generate, check; exit codes 0, 1 and 2."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
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


# --------------------------------------------------------------------------- float32 modules


def _xor32(tmp_path, old=None, new=None):
    """The XOR network generated in float32, optionally with one line of its backward tampered."""
    out = tmp_path / "xor32.py"
    assert main(["generate", XOR, "--dtype", "float32", "-o", str(out)]) == 0
    if old is not None:
        source = out.read_text()
        assert old in source
        out.write_text(source.replace(old, new))
    return str(out)


def test_a_float32_module_is_checked_in_float32(tmp_path, capsys):
    module = _xor32(tmp_path)
    capsys.readouterr()
    assert main(["check", module, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["eval_dtype"] == "float32" and report["grad_dtype"] == "float32"
    assert report["eps"] > 1e-3  # the float32 step, not float64's 6e-6
    assert any("module DTYPE float32; checked in float32" in n for n in report["notes"])
    assert main(["check", module]) == 0
    assert "evaluated in float32, gradient float32" in capsys.readouterr().out


def test_eval_dtype_float64_forces_the_old_check(tmp_path, capsys):
    module = _xor32(tmp_path)
    capsys.readouterr()
    assert main(["check", module, "--eval-dtype", "float64", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["eval_dtype"] == "float64" and report["grad_dtype"] == "float64"
    assert report["eps"] < 1e-4
    assert any("checked in float64 (--eval-dtype)" in n for n in report["notes"])


def test_a_float64_module_is_still_checked_in_float64(capsys):
    assert main(["check", str(ROOT / "generated" / "xor.py"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["eval_dtype"] == "float64"


@pytest.mark.parametrize("eval_dtype", [[], ["--eval-dtype", "float64"]], ids=["own", "f64"])
@pytest.mark.parametrize("old,new,wrong", [
    ("    dL_dW2 = delta2.T @ a1\n", "    dL_dW2 = -(delta2.T @ a1)\n", "W2"),
    ("    dL_dW1 = delta1.T @ X\n",
     "    dL_dW1 = delta1.T @ X\n    dL_dW1.flat[np.argmax(np.abs(dL_dW1))] *= 2\n", "W1"),
], ids=["sign_flip", "one_entry_x2"])
def test_a_planted_bug_fails_the_float32_check(tmp_path, capsys, eval_dtype, old, new, wrong):
    # float32 differences resolve about 1e-3 * abs(L) per entry: double the largest entry
    module = _xor32(tmp_path, old, new)
    capsys.readouterr()
    for seed in ("0", "1", "2"):
        assert main(["check", module, "--seed", seed, *eval_dtype]) == 1
        out = capsys.readouterr().out
        failing = [row.split()[0] for row in out.splitlines() if " FAIL " in row]
        assert failing == [wrong], out
        assert "evaluated in " + ("float64" if eval_dtype else "float32") in out


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


# --------------------------------------------------------------------------- hostile input

# A module with the generated interface, written by hand, whose gradient is wrong (sign).
HAND_MODULE = '''\
import numpy as np
PARAM_SHAPES = {"W": __SHAPE__}
N_INPUTS, N_OUTPUTS, CLASSES = __SHAPE__[1], __SHAPE__[0], False
def init_params(seed=0, dtype=np.float64):
    return {k: np.random.default_rng(seed).normal(size=s).astype(dtype)
            for k, s in PARAM_SHAPES.items()}
def loss(p, X, T):
    LOSS_BODY
    return 0.5 * float(np.sum((X @ p["W"].T - T) ** 2))
def loss_and_grad(p, X, T):
    GRAD_BODY
    r = X @ p["W"].T - T
    return loss(p, X, T), {"W": -(r.T @ X)}
'''


def hand_module(tmp_path, name="wrong.py", shape=(3, 2), loss_body="pass", grad_body="pass",
                head=""):
    path = tmp_path / name
    path.write_text(head + HAND_MODULE.replace("__SHAPE__", repr(shape))
                    .replace("LOSS_BODY", loss_body).replace("GRAD_BODY", grad_body))
    return path


def test_the_hand_module_fails_its_check(tmp_path, capsys):
    # the control for the cases below: the same module, well-formed input, is caught
    assert main(["check", str(hand_module(tmp_path))]) == 1
    assert "FAILED" in capsys.readouterr().out


@pytest.mark.parametrize("args,needle", [
    (["--batch", "0"], "--batch: must be at least 1, got 0"),
    (["--batch", "-1"], "--batch: must be at least 1"),
    (["--batch", "five"], "--batch: expected an integer"),
    (["--seed", "-1"], "--seed: must be at least 0"),
    (["--entries", "0"], "--entries: must be at least 1"),
    (["--directions", "-1"], "--directions: must be at least 0"),
    (["--timeout", "0"], "--timeout: must be a positive number"),
    (["--timeout", "nan"], "--timeout: must be a positive number"),
    (["--no-such-option"], "unrecognized arguments"),
])
def test_bad_check_arguments_exit_2_with_one_line(tmp_path, capsys, args, needle):
    with pytest.raises(SystemExit) as exc:
        main(["check", str(hand_module(tmp_path)), *args])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert needle in one_line_error(captured.err) and captured.out == ""


@pytest.mark.parametrize("command", [["train", XOR, "--task", "xor", "--seed", "-1"],
                                     ["verify", XOR, "--grad", "x.py:f", "--points", "0"],
                                     ["verify", XOR, "--grad", "x.py:f", "--seed", "-3"],
                                     ["derive"]])
def test_bad_arguments_of_other_commands_exit_2_with_one_line(capsys, command):
    with pytest.raises(SystemExit) as exc:
        main(command)
    assert exc.value.code == 2
    one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("kwargs,needle", [
    ({"loss_body": "return float('nan')"}, "the loss is nan"),
    ({"shape": (0, 2)}, "nothing to check"),
    ({"head": "import sys\nsys.exit(0)\n"}, "cannot import: SystemExit: 0"),
    ({"grad_body": "import sys; sys.exit(0)"}, "exited (SystemExit: 0)"),
    ({"loss_body": "raise GeneratorExit('odd')"}, "GeneratorExit: odd"),
])
def test_a_check_that_checked_nothing_never_passes(tmp_path, capsys, kwargs, needle):
    path = hand_module(tmp_path, **kwargs)
    assert main(["check", str(path)]) == 2
    captured = capsys.readouterr()
    message = one_line_error(captured.err)
    assert needle in message and str(path) in message and captured.out == ""


def test_no_parameters_is_bad_input(tmp_path, capsys):
    path = tmp_path / "empty.py"
    path.write_text(HAND_MODULE.replace('{"W": __SHAPE__}', "{}").replace("__SHAPE__", "(3, 2)"))
    assert main(["check", str(path)]) == 2
    assert "no parameters" in one_line_error(capsys.readouterr().err)


def test_sys_exit_in_a_subprocess_is_exit_2_not_0(tmp_path):
    path = hand_module(tmp_path, grad_body="import sys; sys.exit(0)")
    result = run_cli("check", str(path))
    assert result.returncode == 2 and "SystemExit" in one_line_error(result.stderr)


def test_timeout_stops_a_hanging_check(tmp_path):
    path = hand_module(tmp_path, loss_body="import time; time.sleep(1000)")
    start = time.monotonic()
    result = run_cli("check", str(path), "--timeout", "1")
    assert time.monotonic() - start < 30
    assert result.returncode == 2
    assert "did not finish within --timeout 1 s" in one_line_error(result.stderr)


def test_timeout_and_exit_in_verify(tmp_path, capsys):
    grad = tmp_path / "grad.py"
    grad.write_text("import sys, time\n"
                    "def leaves(p, X, T):\n    sys.exit(0)\n"
                    "def hangs(p, X, T):\n    time.sleep(1000)\n")
    assert main(["verify", XOR, "--grad", f"{grad}:leaves"]) == 2
    assert "SystemExit" in one_line_error(capsys.readouterr().err)
    start = time.monotonic()
    assert main(["verify", XOR, "--grad", f"{grad}:hangs", "--timeout", "0.5"]) == 2
    assert time.monotonic() - start < 30
    assert "--timeout 0.5 s" in one_line_error(capsys.readouterr().err)


def test_control_characters_in_user_text_are_escaped(tmp_path):
    name = "evil\nsymgrad: forged line\x1b[31m.py"
    result = run_cli("check", name, cwd=tmp_path)
    assert result.returncode == 2
    message = one_line_error(result.stderr)
    assert "\x1b" not in result.stderr and "\\x1b[31m" in message and "\\n" in message


# --------------------------------------------------------------------------- files


def test_a_planted_temporary_symlink_is_not_followed(tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "xor.py"
    for name in (".xor.py.tmp", f".xor.py.{os.getpid()}.tmp"):
        (tmp_path / name).symlink_to(victim)
    assert main(["generate", XOR, "-o", str(out)]) == 0
    assert victim.read_text() == "precious"
    assert out.read_text().startswith('"""xor')
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".xor.py.tmp", f".xor.py.{os.getpid()}.tmp", "victim.txt", "xor.py"])


def test_generate_refuses_to_overwrite_its_spec(tmp_path, capsys):
    spec = tmp_path / "xor.toml"
    text = Path(XOR).read_text()
    spec.write_text(text)
    os.link(spec, tmp_path / "hardlink.toml")
    (tmp_path / "sub").mkdir()
    for output in (spec, tmp_path / "sub" / ".." / "xor.toml", tmp_path / "hardlink.toml"):
        for command in ("generate", "derive"):
            assert main([command, str(spec), "-o", str(output)]) == 2
            assert "would overwrite the input" in one_line_error(capsys.readouterr().err)
    assert spec.read_text() == text


def test_a_too_long_output_name_is_one_line(tmp_path, capsys):
    out = tmp_path / ("x" * 300 + ".py")
    assert main(["generate", XOR, "-o", str(out)]) == 2
    assert "too long" in one_line_error(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_cleans_up_on_failure(tmp_path):
    from symgrad.fileio import atomic_file, write_atomically

    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as handle:
        handle.write(b"partial")
        raise RuntimeError("disk on fire")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    write_atomically(target, "new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    assert (target.stat().st_mode & 0o777) == (0o666 & ~_umask())


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_progress_lines(monkeypatch):
    import io

    from symgrad.cli import Progress

    plain = io.StringIO()
    progress = Progress("checking", stream=plain, delay=0)
    for i in range(1, 1001):
        progress(i, 1000)
    lines = plain.getvalue().splitlines()
    assert 1 <= len(lines) <= 5 and lines[-1] == "checking: 1000/1000 (100%)"
    assert "\r" not in plain.getvalue()

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    progress = Progress("checking", stream=tty, delay=0)
    progress(1, 2)
    progress(2, 2)
    progress.close()
    assert tty.getvalue().startswith("\rchecking: 1/2 (50%)") and "\n" not in tty.getvalue()
