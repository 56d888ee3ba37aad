"""The same networks written in PyTorch (eager), JAX (jit of value_and_grad) and HIPS autograd.

Each ``*_functions(net, dtype)`` returns plain callables over that library's own arrays;
``bench/impls.py`` wraps them into timed closures.  Imports happen inside the
functions so a missing library only removes its column.
"""

from __future__ import annotations

import numpy as np

from bench.networks import SSE_SCALE, Network


def _reduce(net: Network, total, n):
    return total / n if net.reduction == "mean" else total


# --- PyTorch -----------------------------------------------------------------------------

def torch_loss_fn(net: Network):
    import torch
    import torch.nn.functional as F

    acts = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
            "identity": lambda z: z}
    n_layers, red = len(net.layers), net.reduction

    def loss(P, X, T, target_idx=None):
        a = X
        for k, (_, act) in enumerate(net.layers, start=1):
            z = F.linear(a, P[f"W{k}"], P[f"b{k}"])
            if k == n_layers:
                break
            a = acts[act](z)
        if net.loss == "cross_entropy":
            if target_idx is not None:
                return F.cross_entropy(z, target_idx, reduction=red)
            return F.cross_entropy(z, T, reduction=red)  # class-probability targets
        if net.loss == "bce":
            return F.binary_cross_entropy_with_logits(z, T, reduction=red)
        y = acts[net.layers[-1][1]](z)
        scale = SSE_SCALE if net.loss == "sse" else 1.0 / T.shape[1]
        return _reduce(net, scale * F.mse_loss(y, T, reduction="sum"), X.shape[0])

    return loss


# --- JAX ---------------------------------------------------------------------------------

def jax_loss_fn(net: Network):
    import jax
    import jax.numpy as jnp

    acts = {"sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "relu": jax.nn.relu,
            "identity": lambda z: z}
    n_layers = len(net.layers)

    def loss(P, X, T):
        a = X
        for k, (_, act) in enumerate(net.layers, start=1):
            z = a @ P[f"W{k}"].T + P[f"b{k}"]
            if k == n_layers:
                break
            a = acts[act](z)
        if net.loss == "cross_entropy":
            total = -jnp.sum(T * jax.nn.log_softmax(z, axis=1))
        elif net.loss == "bce":
            total = jnp.sum(jnp.logaddexp(0.0, z) - T * z)
        else:
            y = acts[net.layers[-1][1]](z)
            scale = SSE_SCALE if net.loss == "sse" else 1.0 / T.shape[1]
            total = scale * jnp.sum((y - T) ** 2)
        return _reduce(net, total, X.shape[0])

    return loss


# --- HIPS autograd -----------------------------------------------------------------------

def autograd_loss_fn(net: Network):
    import autograd.numpy as anp

    def sigmoid(z):
        return 0.5 * (anp.tanh(0.5 * z) + 1.0)

    acts = {"sigmoid": sigmoid, "tanh": anp.tanh, "relu": lambda z: anp.maximum(z, 0.0),
            "identity": lambda z: z}
    n_layers = len(net.layers)

    def loss(P, X, T):
        a = X
        for k, (_, act) in enumerate(net.layers, start=1):
            z = anp.dot(a, P[f"W{k}"].T) + P[f"b{k}"]
            if k == n_layers:
                break
            a = acts[act](z)
        if net.loss == "cross_entropy":
            z = z - anp.max(z, axis=1, keepdims=True)
            logp = z - anp.log(anp.sum(anp.exp(z), axis=1, keepdims=True))
            total = -anp.sum(T * logp)
        elif net.loss == "bce":
            total = anp.sum(anp.logaddexp(0.0, z) - T * z)
        else:
            y = acts[net.layers[-1][1]](z)
            scale = SSE_SCALE if net.loss == "sse" else 1.0 / T.shape[1]
            total = scale * anp.sum((y - T) ** 2)
        return _reduce(net, total, X.shape[0])

    return loss


def as_numpy(x) -> np.ndarray:
    """Any library's array (torch tensor, jax array, numpy) as a NumPy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)
