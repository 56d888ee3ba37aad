"""Check a generated module's gradient against finite differences.

Contract: :func:`check_module` imports nothing from the derivation: it takes
a generated module (anything with ``PARAM_SHAPES``, ``init_params``,
``loss`` and ``loss_and_grad``), draws random inputs and targets, and
compares ``loss_and_grad`` entry by entry with central finite differences of
``loss`` (:func:`symgrad.gradcheck.check_gradient`) in the module's own
precision: a float32 module (``DTYPE = np.float32``) is checked in float32,
with the float32 step and tolerances, unless ``eval_dtype="float64"`` asks
for float64 parameters and data (the module then computes in float64).  An entry
whose finite difference straddles the kink of a ReLU-like unit is reported
as a kink, never as a wrong gradient.
"""

from __future__ import annotations

import numpy as np

from .gradcheck import GradientReport, check_gradient


def module_dtype(module) -> str:
    """``"float32"`` or ``"float64"``: the module's ``DTYPE`` (float64 when it has none)."""
    dtype = np.dtype(getattr(module, "DTYPE", np.float64))
    return "float32" if dtype == np.float32 else "float64"


def random_problem(module, *, batch: int = 5, seed: int = 0, dtype=np.float64):
    """Random parameters, inputs and targets shaped for ``module``.

    They are drawn in float64 (the same numbers whatever ``dtype``) and rounded to ``dtype``.
    """
    rng = np.random.default_rng(seed)
    params = {name: value.astype(np.float64) for name, value in
              module.init_params(seed, dtype=np.float64).items()}
    for value in params.values():  # biases start at zero: move them off it
        value += rng.uniform(-0.5, 0.5, value.shape)
    X, T = _data(module, batch, rng)
    dtype = np.dtype(dtype)
    if dtype != np.float64:
        params = {name: value.astype(dtype) for name, value in params.items()}
        X, T = X.astype(dtype), T.astype(dtype)
    return params, X, T


def _data(module, batch: int, rng: np.random.Generator):
    """Random inputs and targets (float64)."""
    X = rng.uniform(-1, 1, (batch, module.N_INPUTS))
    shape = getattr(module, "TARGET_SHAPE", (module.N_OUTPUTS,))  # per-step: (T, K)
    if module.CLASSES:  # one class per step
        T = np.eye(shape[-1])[rng.integers(0, shape[-1], (batch, *shape[:-1]))]
        T = T.reshape(batch, module.N_OUTPUTS)
    else:
        T = rng.uniform(0.05, 0.95, (batch, module.N_OUTPUTS))
    return X, T


def check_module(module, *, batch: int = 5, seed: int = 0, method: str = "central",
                 eval_dtype: str | None = None, **options) -> GradientReport:
    """Compare the module's analytic gradient with finite differences.

    ``eval_dtype``: ``"float32"`` or ``"float64"``; ``None`` (default) is the module's own
    ``DTYPE``.  ``options`` go to :func:`~symgrad.gradcheck.check_gradient`.
    """
    dtype = eval_dtype or module_dtype(module)
    params, X, T = random_problem(module, batch=batch, seed=seed, dtype=dtype)
    return check_gradient(
        module.loss,
        lambda p, x, t: module.loss_and_grad(p, x, t)[1],
        params, X, T, method=method, eval_dtype=dtype, seed=seed, **options,
    )
