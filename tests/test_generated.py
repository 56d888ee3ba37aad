"""The committed modules in generated/: up to date with examples/, importable, correct.

Each module's gradient is compared with central finite differences written
here (an oracle independent of symgrad), and with ``symgrad.check``.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from symgrad.check import check_module
from symgrad.codegen import load_module

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted((ROOT / "generated").glob("*.py"))


def test_there_are_generated_modules_for_the_examples():
    examples = {p.stem for p in (ROOT / "examples").glob("*.toml")}
    assert examples and examples == {p.stem for p in MODULES}


def test_regenerate_check_reports_no_drift():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "regenerate.py"), "--check"],
                            capture_output=True, text=True, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "stale" not in result.stderr


def test_regenerate_check_notices_drift(tmp_path, monkeypatch):
    """--check fails on a stale module (run in-process on a copy of the layout)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import regenerate
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    (tmp_path / "examples").mkdir()
    (tmp_path / "generated").mkdir()
    (tmp_path / "examples" / "xor.toml").write_text((ROOT / "examples" / "xor.toml").read_text())
    monkeypatch.setattr(regenerate, "ROOT", tmp_path)
    monkeypatch.chdir(tmp_path)
    assert regenerate.main(["--check"]) == 1  # missing
    assert regenerate.main([]) == 0
    assert regenerate.main(["--check"]) == 0
    module = tmp_path / "generated" / "xor.py"
    assert module.read_text() == (ROOT / "generated" / "xor.py").read_text()
    module.write_text(module.read_text().replace("delta2 = ", "delta2 = 2*"))
    assert regenerate.main(["--check"]) == 1


def _finite_differences(module, params, X, T, h=1e-6):
    grads = {}
    for name, value in params.items():
        grad = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            old = value[index]
            value[index] = old + h
            up = module.loss(params, X, T)
            value[index] = old - h
            down = module.loss(params, X, T)
            value[index] = old
            grad[index] = (up - down) / (2 * h)
        grads[name] = grad
    return grads


def _problem(module, seed):
    rng = np.random.default_rng(seed)
    params = {k: v + rng.uniform(-0.3, 0.3, v.shape) for k, v in module.init_params(seed).items()}
    X = rng.uniform(-1, 1, (4, module.N_INPUTS))
    shape = getattr(module, "TARGET_SHAPE", (module.N_OUTPUTS,))  # per-step outputs: (T, K)
    T = (np.eye(shape[-1])[rng.integers(0, shape[-1], (4, *shape[:-1]))].reshape(4, -1)
         if module.CLASSES else rng.uniform(0.05, 0.95, (4, module.N_OUTPUTS)))
    return params, X, T


def _pre_activations_away_from_zero(module, params, X, T) -> bool:
    seen = {}

    def tracer(frame, event, arg):
        if frame.f_code is module.loss_and_grad.__code__:
            if event == "return":
                seen.update(frame.f_locals)
            return tracer
        return None

    sys.settrace(tracer)
    try:
        module.loss_and_grad(params, X, T)
    finally:
        sys.settrace(None)
    return all(np.abs(v).min() > 1e-4 for k, v in seen.items() if re.fullmatch(r"z\d+", k))


@pytest.mark.parametrize("path", MODULES, ids=[p.stem for p in MODULES])
def test_committed_module_imports_and_its_gradient_is_right(path):
    module = load_module(path, name=f"committed_check_{path.stem}")
    for name in ("PARAM_SHAPES", "N_INPUTS", "N_OUTPUTS", "CLASSES", "init_params", "forward",
                 "predict", "loss", "loss_and_grad", "init_state", "apply_gradient", "update",
                 "train"):
        assert hasattr(module, name), name
    tree = ast.parse(path.read_text())
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert [ast.unparse(n) for n in imports] == ["import numpy as np"]
    for seed in range(10):  # a draw with no ReLU-like unit within 1e-4 of its kink
        params, X, T = _problem(module, seed)
        if _pre_activations_away_from_zero(module, params, X, T):
            break
    value, grads = module.loss_and_grad(params, X, T)
    assert value == pytest.approx(module.loss(params, X, T), rel=1e-13)
    reference = _finite_differences(module, params, X, T)
    for name in params:
        assert grads[name].shape == params[name].shape
        scale = max(np.abs(reference[name]).max(), 1e-8)
        error = np.abs(grads[name] - reference[name]).max() / scale
        assert error < 1e-6, f"{path.name}: {name} relative error {error:.2e}"
    report = check_module(module)
    assert report.passed, str(report)
