"""symgrad demo: end to end into a temporary folder, nothing written elsewhere."""

from __future__ import annotations

import os
import re
from pathlib import Path

from symgrad.cli import main
from symgrad.demo import XOR_SPEC

ROOT = Path(__file__).resolve().parents[1]


def test_embedded_spec_is_the_bundled_example():
    assert XOR_SPEC == (ROOT / "examples" / "xor.toml").read_text(encoding="utf-8")


def test_demo_end_to_end(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(tmp_path))
    code = main(["demo", "--out", "demo-out"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert sorted(os.listdir(tmp_path)) == sorted([*before, "demo-out"])
    assert sorted(os.listdir(tmp_path / "demo-out")) == ["xor.py", "xor.tex", "xor.toml"]
    assert "\\documentclass" in (tmp_path / "demo-out" / "xor.tex").read_text()
    assert "gradient check PASSED" in out
    assert "dL/dW1" in out  # the derivation was printed
    assert "solved after 407 sweeps" in out
    rows = re.findall(r"^ ([01])   ([01])   ([01])       ([0-9.]+)$", out, flags=re.M)
    assert len(rows) == 4
    for x1, x2, target, output in rows:
        assert int(target) == int(x1) ^ int(x2)
        assert abs(float(output) - int(target)) < 0.1


def test_demo_generated_module_runs_standalone(capsys, tmp_path):
    import subprocess
    import sys

    import numpy as np

    assert main(["demo", "--out", str(tmp_path), "--quiet", "--epochs", "600"]) == 0
    capsys.readouterr()
    np.savez(tmp_path / "xor.npz", X=[[0, 0], [0, 1], [1, 0], [1, 1]], T=[[0], [1], [1], [0]])
    done = subprocess.run([sys.executable, "xor.py", "--data", "xor.npz", "--out", "p.npz"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert done.returncode == 0, done.stderr
    assert "parameters written to p.npz" in done.stdout
