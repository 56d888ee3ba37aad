"""The generated module's own command line, run as a subprocess on good and bad input.

Every bad input must give exit status 2, exactly one line ``FILE: FIELD: WHY`` on
stderr, nothing on stdout and no change to the working directory (no partial
parameters file, no temporary file).  The expectations (which file, which field)
are written here by hand; the inputs are tiny so every case runs in well under a
second.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
XOR = ROOT / "generated" / "xor.py"
RELU = ROOT / "generated" / "relu_net.py"  # 3-5-5-1, identity output: it can diverge
XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
XOR_T = np.array([[0], [1], [1], [0]], dtype=float)


def run(module: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(module), *args], capture_output=True,
                          text=True, cwd=cwd, timeout=60,
                          env={**os.environ, "PYTHONPATH": ""})


def snapshot(folder: Path) -> dict:
    """Every entry under folder: file bytes, or the target of a symbolic link."""
    out = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        out[key] = (("link", os.readlink(path)) if path.is_symlink() else
                    ("dir", None) if path.is_dir() else ("file", path.read_bytes()))
    return out


def assert_refused(result, where: str, field: str):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"{where}: {field}: "), result.stderr
    assert len(result.stderr) > len(f"{where}: {field}: ") + 1  # a reason is given


def npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return path.name


def npy_member(header: dict, payload: bytes = b"") -> bytes:
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, header)
    return stream.getvalue() + payload


class OpensAFile:
    """Unpickling this creates the file ``PWNED``: proof that a pickle was executed."""

    def __reduce__(self):
        return (open, ("PWNED", "w"))


# --------------------------------------------------------------------------- bad inputs

def wrong_width(d):
    return ["--data", npz(d / "wide.npz", X=np.ones((4, 3)), T=XOR_T)], "wide.npz", "X"


def nan_data(d):
    return ["--data", npz(d / "nan.npz", X=XOR_X, T=XOR_T * np.nan)], "nan.npz", "T"


def inf_data(d):
    X = XOR_X.copy()
    X[2, 1] = np.inf
    return ["--data", npz(d / "inf.npz", X=X, T=XOR_T)], "inf.npz", "X"


def other_network_params(d):
    params = npz(d / "other.npz", W1=np.ones((3, 2)), b1=np.ones(3), W2=np.ones((1, 3)),
                 b2=np.ones(1))
    return (["--data", npz(d / "xor.npz", X=XOR_X, T=XOR_T), "--params", params],
            "other.npz", "W1")


def params_missing_a_key(d):
    params = npz(d / "partial.npz", W1=np.ones((2, 2)), b1=np.ones(2), W2=np.ones((1, 2)))
    return (["--data", npz(d / "xor.npz", X=XOR_X, T=XOR_T), "--params", params],
            "partial.npz", "b2")


def nan_params(d):
    params = npz(d / "nanp.npz", W1=np.ones((2, 2)), b1=np.ones(2),
                 W2=np.full((1, 2), np.nan), b2=np.ones(1))
    return (["--data", npz(d / "xor.npz", X=XOR_X, T=XOR_T), "--params", params],
            "nanp.npz", "W2")


def batch_size_zero(d):
    return (["--data", npz(d / "xor.npz", X=XOR_X, T=XOR_T), "--mode", "minibatch",
             "--batch-size", "0"], "xor.py", "--batch-size")


def epochs_zero(d):
    return (["--data", npz(d / "xor.npz", X=XOR_X, T=XOR_T), "--epochs", "0"],
            "xor.py", "--epochs")


def epochs_not_a_number(d):
    return (["--data", npz(d / "xor.npz", X=XOR_X, T=XOR_T), "--epochs", "ten"],
            "xor.py", "--epochs")


def nan_learning_rate(d):
    return (["--data", npz(d / "xor.npz", X=XOR_X, T=XOR_T), "--learning-rate", "nan"],
            "xor.py", "--learning-rate")


def no_data_option(d):
    return [], "xor.py", "arguments"


def missing_data_file(d):
    return ["--data", "absent.npz"], "absent.npz", "--data"


def data_is_a_folder(d):
    (d / "folder.npz").mkdir()
    return ["--data", "folder.npz"], "folder.npz", "--data"


def data_without_T(d):
    return ["--data", npz(d / "onlyx.npz", X=XOR_X)], "onlyx.npz", "T"


def data_without_X(d):
    return ["--data", npz(d / "onlyt.npz", T=XOR_T)], "onlyt.npz", "X"


def rows_disagree(d):
    return ["--data", npz(d / "rows.npz", X=XOR_X, T=XOR_T[:3])], "rows.npz", "T"


def no_rows(d):
    return (["--data", npz(d / "empty.npz", X=np.zeros((0, 2)), T=np.zeros((0, 1)))],
            "empty.npz", "X")


def strings(d):
    return (["--data", npz(d / "text.npz", X=np.array([["a", "b"]] * 4), T=XOR_T)],
            "text.npz", "X")


def complex_numbers(d):
    return ["--data", npz(d / "cplx.npz", X=XOR_X * 1j, T=XOR_T)], "cplx.npz", "X"


def pickled_objects(d):
    objects = np.empty((4, 1), dtype=object)
    objects[:] = [[OpensAFile()]] * 4
    return ["--data", npz(d / "pickle.npz", X=XOR_X, T=objects)], "pickle.npz", "T"


def not_a_zip(d):
    (d / "plain.npz").write_text("X,T\n0,0\n")
    return ["--data", "plain.npz"], "plain.npz", "--data"


def npy_not_npz(d):
    np.save(d / "array.npy", XOR_X)
    return ["--data", "array.npy"], "array.npy", "--data"


def declared_huge(d):
    """A zip whose header declares 3 GiB for X: refused before a byte is inflated."""
    path = d / "bomb.npz"
    np.savez(path, X=XOR_X, T=XOR_T)
    raw = bytearray(path.read_bytes())
    at = raw.index(b"PK\x01\x02")  # the central directory entry of the first member
    raw[at + 24:at + 28] = (3 * 2**30).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    return ["--data", "bomb.npz"], "bomb.npz", "--data"


def shape_beyond_the_file(d):
    """An .npy header claiming 10^10 rows in a few bytes: no 160 GB allocation."""
    with zipfile.ZipFile(d / "liar.npz", "w") as archive:
        archive.writestr("X.npy", npy_member(
            {"descr": "<f8", "fortran_order": False, "shape": (10**10, 2)}, b"\0" * 64))
        archive.writestr("T.npy", npy_member(
            {"descr": "<f8", "fortran_order": False, "shape": (4, 1)}, b"\0" * 32))
    return ["--data", "liar.npz"], "liar.npz", "X"


def truncated_member(d):
    with zipfile.ZipFile(d / "short.npz", "w") as archive:
        archive.writestr("X.npy", npy_member(
            {"descr": "<f8", "fortran_order": False, "shape": (4, 2)}, b"\0" * 8))
        archive.writestr("T.npy", npy_member(
            {"descr": "<f8", "fortran_order": False, "shape": (4, 1)}, b"\0" * 32))
    return ["--data", "short.npz"], "short.npz", "X"


def out_folder_missing(d):
    return (["--data", npz(d / "xor.npz", X=XOR_X, T=XOR_T), "--out", "nowhere/p.npz"],
            "nowhere/p.npz", "--out")


def out_is_a_folder(d):
    (d / "outdir").mkdir()
    return (["--data", npz(d / "xor.npz", X=XOR_X, T=XOR_T), "--out", "outdir"],
            "outdir", "--out")


def newline_in_file_name(d):
    """A file name cannot forge a second line of output."""
    return (["--data", "a\nsymgrad: forged.npz"], "a\\nsymgrad: forged.npz", "--data")


CASES = [wrong_width, nan_data, inf_data, other_network_params, params_missing_a_key,
         nan_params, batch_size_zero, epochs_zero, epochs_not_a_number, nan_learning_rate,
         no_data_option, missing_data_file, data_is_a_folder, data_without_T, data_without_X,
         rows_disagree, no_rows, strings, complex_numbers, pickled_objects, not_a_zip,
         npy_not_npz, declared_huge, shape_beyond_the_file, truncated_member,
         out_folder_missing, out_is_a_folder, newline_in_file_name]


@pytest.mark.parametrize("case", CASES, ids=[case.__name__ for case in CASES])
def test_bad_input_is_one_line_and_exit_2_writing_nothing(tmp_path, case):
    args, where, field = case(tmp_path)
    previous = npz(tmp_path / "params.npz", kept=np.arange(3))  # an earlier result
    before = snapshot(tmp_path)
    result = run(XOR, *args, cwd=tmp_path)
    assert_refused(result, where, field)
    assert snapshot(tmp_path) == before  # the earlier params.npz untouched, nothing new
    assert previous == "params.npz" and not (tmp_path / "PWNED").exists()


def test_divergence_is_one_line_and_writes_nothing(tmp_path):
    rng = np.random.default_rng(0)
    data = npz(tmp_path / "reg.npz", X=rng.normal(size=(8, 3)), T=rng.normal(size=(8, 1)))
    before = snapshot(tmp_path)
    result = run(RELU, "--data", data, "--learning-rate", "1000", "--epochs", "200",
                 cwd=tmp_path)
    assert_refused(result, "reg.npz", "loss")
    assert "epoch" in result.stderr and "RuntimeWarning" not in result.stderr
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- good inputs

def test_trains_and_writes_the_parameters(tmp_path):
    data = npz(tmp_path / "xor.npz", X=XOR_X.astype(int), T=XOR_T.astype(bool))
    result = run(XOR, "--data", data, "--epochs", "3", "--out", "p.npz", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and result.stdout.startswith("epochs 3  loss ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.npz", "xor.npz"]
    with np.load(tmp_path / "p.npz", allow_pickle=False) as saved:
        assert {name: saved[name].shape for name in saved.files} == {
            "W1": (2, 2), "b1": (2,), "W2": (1, 2), "b2": (1,)}


def test_out_replaces_a_symlink_instead_of_following_it(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    work = tmp_path / "work"
    work.mkdir()
    data = npz(work / "xor.npz", X=XOR_X, T=XOR_T)
    (work / "p.npz").symlink_to(victim)
    (work / "p.npz.tmp").symlink_to(victim)  # the old, predictable temporary name
    result = run(XOR, "--data", data, "--epochs", "2", "--out", "p.npz", cwd=work)
    assert result.returncode == 0, result.stderr
    assert victim.read_text() == "keep me"
    assert not (work / "p.npz").is_symlink()
    with np.load(work / "p.npz", allow_pickle=False) as saved:
        assert sorted(saved.files) == ["W1", "W2", "b1", "b2"]
    assert sorted(p.name for p in work.iterdir()) == ["p.npz", "p.npz.tmp", "xor.npz"]


def test_resumes_from_its_own_parameters(tmp_path):
    data = npz(tmp_path / "xor.npz", X=XOR_X, T=XOR_T)
    first = run(XOR, "--data", data, "--epochs", "2", "--out", "p.npz", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    with np.load(tmp_path / "p.npz") as saved:
        start = {name: saved[name] for name in saved.files}
    again = run(XOR, "--data", data, "--epochs", "1", "--params", "p.npz", "--out", "q.npz",
                "--learning-rate", "0", "--momentum", "0", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    with np.load(tmp_path / "q.npz") as saved:  # a zero learning rate changes nothing
        assert all(np.array_equal(saved[name], value) for name, value in start.items())
