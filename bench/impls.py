"""Implementations under test, each wrapped into the same four closures.

``Impl.check()``   -> (loss, grads as NumPy arrays in the harness layout), untimed
``Impl.grad()``    forward + gradient of the fixed batch        (timed)
``Impl.forward()`` forward + loss only                           (timed)
``Impl.step()``    one full SGD-momentum training step            (timed; own parameter copy)

Data and parameters are converted to each library's arrays once, outside the timed code.
A factory raises ``Unavailable`` when its library (or symgrad's API) is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bench import peers, symgrad_adapter
from bench.handwritten import HandwrittenMLP, SGDMomentum
from bench.networks import Network

#: Training-step hyper-parameters: tiny so that thousands of timed steps never drift the
#: parameters into a different numerical regime.
STEP_LR, STEP_MOMENTUM = 1e-7, 0.9

BASELINE = "numpy (hand)"


class Unavailable(RuntimeError):
    pass


@dataclass
class Impl:
    name: str
    check: Callable[[], tuple]
    grad: Callable[[], object]
    forward: Callable[[], object]
    step: Callable[[], object]


def _copy(params):
    return {k: v.copy() for k, v in params.items()}


def make_hand(net: Network, params, X, T, dtype) -> Impl:
    mlp = HandwrittenMLP(net)
    P, P_step = _copy(params), _copy(params)
    opt = SGDMomentum(P_step, STEP_LR, STEP_MOMENTUM)

    def step():
        _, g = mlp.loss_and_grad(P_step, X, T)
        opt.step(P_step, g)

    return Impl(BASELINE, lambda: mlp.loss_and_grad(P, X, T),
                lambda: mlp.loss_and_grad(P, X, T), lambda: mlp.loss(P, X, T), step)


_SYMGRAD_MODULES: dict = {}


def make_symgrad(net: Network, params, X, T, dtype) -> Impl:
    key = (net.name, np.dtype(dtype).name)
    try:
        if key not in _SYMGRAD_MODULES:  # derive once per network and dtype, not per batch
            _SYMGRAD_MODULES[key] = symgrad_adapter.build_module(net, dtype)
        mod = _SYMGRAD_MODULES[key]
        P = symgrad_adapter.to_module_params(mod, params, dtype)
        P_step = symgrad_adapter.to_module_params(mod, params, dtype)
    except symgrad_adapter.SymgradUnavailable as exc:
        raise Unavailable(str(exc)) from exc

    def check():
        loss, grads = mod.loss_and_grad(P, X, T)
        return float(loss), symgrad_adapter.from_module_grads(grads, params)

    step = symgrad_adapter.make_stepper(mod, P_step, X, T, lr=STEP_LR, momentum=STEP_MOMENTUM)
    return Impl("symgrad", check, lambda: mod.loss_and_grad(P, X, T),
                lambda: mod.loss(P, X, T), step)


def make_torch(net: Network, params, X, T, dtype) -> Impl:
    try:
        import torch
    except ImportError as exc:
        raise Unavailable(f"torch not installed ({exc})") from exc
    loss_fn = peers.torch_loss_fn(net)

    def tensors(p):
        return {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}

    P, P_step = tensors(params), tensors(params)
    plist = list(P.values())
    Xt, Tt = torch.from_numpy(X.copy()), torch.from_numpy(T.copy())
    idx = Tt.argmax(dim=1) if net.loss == "cross_entropy" else None
    opt = torch.optim.SGD(list(P_step.values()), lr=STEP_LR, momentum=STEP_MOMENTUM)

    def grad():
        loss = loss_fn(P, Xt, Tt, idx)
        return loss, torch.autograd.grad(loss, plist)

    def check():
        loss, g = grad()
        return float(loss.detach()), {k: peers.as_numpy(v) for k, v in zip(P, g)}

    def forward():
        with torch.no_grad():
            return loss_fn(P, Xt, Tt, idx)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(P_step, Xt, Tt, idx).backward()
        opt.step()

    return Impl("PyTorch", check, grad, forward, step)


def make_jax(net: Network, params, X, T, dtype) -> Impl:
    try:
        import jax
        import jax.numpy as jnp
    except ImportError as exc:
        raise Unavailable(f"jax not installed ({exc})") from exc
    jax.config.update("jax_enable_x64", True)
    loss_fn = peers.jax_loss_fn(net)
    vg = jax.jit(jax.value_and_grad(loss_fn))
    fwd = jax.jit(loss_fn)

    def _step(P, V, X, T):
        loss, g = jax.value_and_grad(loss_fn)(P, X, T)
        V = jax.tree_util.tree_map(lambda v, g: STEP_MOMENTUM * v + g, V, g)
        P = jax.tree_util.tree_map(lambda p, v: p - STEP_LR * v, P, V)
        return P, V, loss

    step_jit = jax.jit(_step, donate_argnums=(0, 1))
    P = {k: jnp.asarray(v) for k, v in params.items()}
    state = {"P": {k: jnp.array(v) for k, v in params.items()},
             "V": {k: jnp.zeros_like(jnp.asarray(v)) for k, v in params.items()}}
    Xj, Tj = jnp.asarray(X), jnp.asarray(T)

    def grad():
        return jax.block_until_ready(vg(P, Xj, Tj))

    def check():
        loss, g = grad()
        return float(loss), {k: np.asarray(v) for k, v in g.items()}

    def step():
        state["P"], state["V"], loss = step_jit(state["P"], state["V"], Xj, Tj)
        jax.block_until_ready(loss)

    return Impl("JAX jit", check, grad, lambda: jax.block_until_ready(fwd(P, Xj, Tj)), step)


def make_autograd(net: Network, params, X, T, dtype) -> Impl:
    try:
        import autograd
    except ImportError as exc:
        raise Unavailable(f"autograd not installed ({exc})") from exc
    loss_fn = peers.autograd_loss_fn(net)
    vg = autograd.value_and_grad(loss_fn)
    P, P_step = _copy(params), _copy(params)
    opt = SGDMomentum(P_step, STEP_LR, STEP_MOMENTUM)

    def check():
        loss, g = vg(P, X, T)
        return float(loss), {k: np.asarray(v) for k, v in g.items()}

    def step():
        _, g = vg(P_step, X, T)
        opt.step(P_step, g)

    return Impl("autograd", check, lambda: vg(P, X, T), lambda: loss_fn(P, X, T), step)


FACTORIES = {
    BASELINE: make_hand,
    "symgrad": make_symgrad,
    "PyTorch": make_torch,
    "JAX jit": make_jax,
    "autograd": make_autograd,
}
IMPL_NAMES = tuple(FACTORIES)


def build_all(net: Network, params, X, T, dtype, names=IMPL_NAMES):
    """Returns ({name: Impl}, {name: reason it is unavailable})."""
    impls, missing = {}, {}
    for name in names:
        try:
            impls[name] = FACTORIES[name](net, params, X, T, dtype)
        except Unavailable as exc:
            missing[name] = str(exc)
    return impls, missing
