"""The only module of the harness that touches symgrad.

Everything symgrad-specific the benchmarks need goes through these functions:

* ``derive_source(net, dtype)``  - spec -> derivation + code generation -> source text
* ``build_module(net, dtype)``   - the loaded generated module
* ``module_from_toml(text, dtype)`` - the same from a spec's TOML (convolutional nets)
* ``to_module_params`` / ``from_module_grads`` - convert between the harness layout
  (``Wk`` (units, fan_in), ``bk`` (units,)) and the generated module's ``PARAM_SHAPES``
* ``make_stepper`` / ``train_epochs`` - the generated training step and ``train()``
* ``cold_script`` / ``ttfg_script`` - Python source run in fresh subprocesses

If symgrad's API is missing or incomplete, each raises ``SymgradUnavailable`` with the
reason, and the harness reports the symgrad rows as unavailable instead of failing.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.networks import Network, spec_toml

REPO_ROOT = Path(__file__).resolve().parent.parent
SRC = REPO_ROOT / "src"


class SymgradUnavailable(RuntimeError):
    """symgrad (or the part of its API the harness needs) cannot be used."""


def _ensure_importable() -> None:
    if str(SRC) not in sys.path and (SRC / "symgrad").is_dir():
        sys.path.insert(0, str(SRC))


def _api():
    _ensure_importable()
    try:
        from symgrad.codegen import generate_module_source, load_module
        from symgrad.spec import load_spec
    except Exception as exc:  # ImportError, or an error inside a half-written module
        raise SymgradUnavailable(
            f"symgrad API not importable ({type(exc).__name__}: {exc}); the harness needs "
            "symgrad.spec.load_spec and symgrad.codegen.generate_module_source/load_module"
        ) from exc
    return load_spec, generate_module_source, load_module


def available() -> tuple[bool, str]:
    try:
        _api()
    except SymgradUnavailable as exc:
        return False, str(exc)
    return True, ""


def version() -> str:
    _ensure_importable()
    try:
        import symgrad
        return getattr(symgrad, "__version__", "?")
    except Exception:
        return "not importable"


def _dtype_name(dtype) -> str:
    return np.dtype(dtype).name


def _spec_path(net: Network, directory: str) -> str:
    path = os.path.join(directory, f"{net.name}.toml")
    with open(path, "w") as fh:
        fh.write(spec_toml(net))
    return path


def derive_source(net: Network, dtype=np.float64) -> str:
    """Derivation + code generation, the cost measured in the derivation sweep."""
    load_spec, generate_module_source, _ = _api()
    with tempfile.TemporaryDirectory() as tmp:
        spec = load_spec(_spec_path(net, tmp))
        try:
            return generate_module_source(spec, dtype=_dtype_name(dtype))
        except Exception as exc:
            raise SymgradUnavailable(f"generate_module_source failed on {net.name}: "
                                     f"{type(exc).__name__}: {exc}") from exc


def build_module(net: Network, dtype=np.float64):
    _, _, load_module = _api()
    source = derive_source(net, dtype)
    try:
        module = load_module(source)
    except Exception as exc:
        raise SymgradUnavailable(f"load_module failed on {net.name}: "
                                 f"{type(exc).__name__}: {exc}") from exc
    for attr in ("PARAM_SHAPES", "loss_and_grad", "loss", "forward"):
        if not hasattr(module, attr):
            raise SymgradUnavailable(f"generated module has no {attr}")
    return module


def module_from_toml(text: str, dtype=np.float64, name: str = "conv"):
    """A spec's TOML text -> the loaded generated module (the convolution benchmark)."""
    load_spec, generate_module_source, load_module = _api()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.toml")
        with open(path, "w") as fh:
            fh.write(text)
        try:
            spec = load_spec(path)
            module = load_module(generate_module_source(spec, dtype=_dtype_name(dtype)))
        except Exception as exc:
            raise SymgradUnavailable(f"symgrad failed on {name}: "
                                     f"{type(exc).__name__}: {exc}") from exc
    if not hasattr(module, "loss_and_grad"):
        raise SymgradUnavailable("generated module has no loss_and_grad")
    return module


def _fit(value: np.ndarray, shape: tuple) -> np.ndarray:
    """Reshape/transpose ``value`` to ``shape`` (W may be stored transposed, b as a column)."""
    shape = tuple(shape)
    if value.shape == shape:
        return np.ascontiguousarray(value)
    if value.ndim == 2 and value.T.shape == shape:
        return np.ascontiguousarray(value.T)
    if value.size == int(np.prod(shape)) and (value.ndim == 1 or len(shape) == 1):
        return np.ascontiguousarray(value.reshape(shape))
    raise SymgradUnavailable(f"cannot map parameter of shape {value.shape} onto {shape}")


def to_module_params(module, params: dict, dtype=np.float64) -> dict:
    """Harness parameters -> the generated module's layout (copies)."""
    shapes = module.PARAM_SHAPES
    missing = set(params) ^ set(shapes)
    if missing:
        raise SymgradUnavailable(f"parameter names differ: {sorted(missing)}")
    return {k: _fit(np.asarray(params[k], dtype=dtype), shapes[k]).copy() for k in shapes}


def from_module_grads(grads: dict, reference: dict) -> dict:
    """Generated-module gradients -> harness layout (``reference`` gives the shapes)."""
    return {k: _fit(np.asarray(grads[k]), reference[k].shape) for k in reference}


def make_stepper(module, params, X, T, *, lr: float, momentum: float):
    """A zero-argument function doing one full-batch SGD-momentum step in place.

    Uses the generated module's own step, ``loss_and_grad`` + ``apply_gradient`` with one
    optimiser state kept across calls (what ``train()`` does per update); falls back to
    ``train(mode="batch", epochs=1, state=...)`` for modules without ``apply_gradient``."""
    if hasattr(module, "apply_gradient") and hasattr(module, "init_state"):
        state = module.init_state(params)

        def step():
            _, grads = module.loss_and_grad(params, X, T)
            module.apply_gradient(params, state, grads, learning_rate=lr, momentum=momentum)

        return step

    def step_via_train():
        module.train(params, X, T, mode="batch", epochs=1, learning_rate=lr,
                     momentum=momentum, batch_size=X.shape[0], seed=0)

    return step_via_train


def train_epochs(module, params, X, T, *, epochs, lr, momentum, batch_size, seed, on_epoch):
    """Minibatch SGD-momentum through the generated ``train()``; ``on_epoch(epoch)`` returning
    True stops training (``train`` calls ``callback(epoch, loss, params)`` after every epoch
    and stops when it returns True).  Returns the epochs run."""
    count = [0]

    def callback(*args, **kwargs):
        count[0] += 1
        return bool(on_epoch(count[0] - 1))

    module.train(params, X, T, mode="minibatch", epochs=epochs, learning_rate=lr,
                 momentum=momentum, batch_size=batch_size, seed=seed, optimizer="sgd",
                 callback=callback)
    return count[0]


# --- source run in fresh interpreters ------------------------------------------------------

_PRELUDE = f"""
import sys, time
sys.path.insert(0, {str(SRC)!r}); sys.path.insert(0, {str(REPO_ROOT)!r})
"""


def cold_script(net: Network) -> str:
    """Fresh interpreter: import symgrad, derive + generate; prints seconds since the
    script started (imports included)."""
    return _PRELUDE + f"""
t0 = time.perf_counter()
from bench.networks import sweep_network
from bench.symgrad_adapter import derive_source
derive_source(sweep_network({net.inputs}, {len(net.layers)}))
print(time.perf_counter() - t0)
"""


def ttfg_script(net_name: str, pregenerated_path: str | None = None) -> str:
    """Fresh interpreter to the first gradient: spec -> derive -> generate -> load -> grad;
    or, with ``pregenerated_path``, just import the already generated module and run it."""
    if pregenerated_path is None:
        body = f"""
from bench.symgrad_adapter import build_module, to_module_params
from bench.networks import BY_NAME, init_params, make_data
net = BY_NAME[{net_name!r}]
mod = build_module(net)
P = to_module_params(mod, init_params(net))
"""
    else:
        body = f"""
import importlib.util, numpy as np
spec = importlib.util.spec_from_file_location("gen", {pregenerated_path!r})
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
P = mod.init_params(seed=0)
"""
    return _PRELUDE + body + f"""
from bench.networks import BY_NAME, make_data
X, T = make_data(BY_NAME[{net_name!r}], 32 if {net_name!r} == "mnist" else 4)
mod.loss_and_grad(P, X, T)
print(repr(time.time()))
"""
