"""Check a generated module's gradient against finite differences.

Contract: :func:`check_module` imports nothing from the derivation: it takes
a generated module (anything with ``PARAM_SHAPES``, ``init_params``,
``loss`` and ``loss_and_grad``), draws random inputs and targets, and
compares ``loss_and_grad`` entry by entry with central finite differences of
``loss`` in float64 (:func:`symgrad.gradcheck.check_gradient`).  An entry
whose finite difference straddles the kink of a ReLU-like unit is reported
as a kink, never as a wrong gradient.
"""

from __future__ import annotations

import numpy as np

from .gradcheck import GradientReport, check_gradient


def random_problem(module, *, batch: int = 5, seed: int = 0):
    """Random float64 parameters, inputs and targets shaped for ``module``."""
    rng = np.random.default_rng(seed)
    params = {name: value.astype(np.float64) for name, value in
              module.init_params(seed, dtype=np.float64).items()}
    for value in params.values():  # biases start at zero: move them off it
        value += rng.uniform(-0.5, 0.5, value.shape)
    X = rng.uniform(-1, 1, (batch, module.N_INPUTS))
    shape = getattr(module, "TARGET_SHAPE", (module.N_OUTPUTS,))  # per-step: (T, K)
    if module.CLASSES:  # one class per step
        T = np.eye(shape[-1])[rng.integers(0, shape[-1], (batch, *shape[:-1]))]
        T = T.reshape(batch, module.N_OUTPUTS)
    else:
        T = rng.uniform(0.05, 0.95, (batch, module.N_OUTPUTS))
    return params, X, T


def check_module(module, *, batch: int = 5, seed: int = 0, method: str = "central"
                 ) -> GradientReport:
    """Compare the module's analytic gradient with finite differences."""
    params, X, T = random_problem(module, batch=batch, seed=seed)
    return check_gradient(
        module.loss,
        lambda p, x, t: module.loss_and_grad(p, x, t)[1],
        params, X, T, method=method,
    )
