"""NumPy kernels of the recurrent family (Elman RNN), copied verbatim into generated modules.

Contract: every function here is self-contained (it names only ``np`` and
the other helpers in this module), so :func:`inspect.getsource` of it pastes
into a generated module as is; :data:`HELPERS` says which functions each
expression class of :mod:`symgrad.ops.recurrent` needs, dependencies first.
Sequences are batch-first, ``(N, T, F)``; inside a kernel they are walked
time-major, ``(T, N, F)``, so each step is a contiguous ``(N, F)`` block and
one matrix product over the whole batch.  The only Python loop is the one
over time (a recurrence cannot be vectorised over t); everything that does
not depend on the previous step (the input terms ``X W_xh^T`` of every step,
and the shared-weight sums ``sum_t delta_t^T x_t``, ``sum_t delta_t^T h_{t-1}``)
is one product over all ``N*T`` rows, outside the loop.  Activation codes:
0 tanh, 1 relu, 2 sigmoid, 3 identity.  Nothing changes its inputs, and
float32 stays float32.

>>> X = np.ones((1, 3, 1))
>>> H, = _rnn_forward(X, np.ones((1, 1)), np.full((1, 1), 0.5), np.zeros(1), 3)
>>> H[0, :, 0]
array([1.  , 1.5 , 1.75])
>>> dX, dWx, dWh, db = _rnn_backward(np.ones((1, 3, 1)), X, (H,), np.ones((1, 1)),
...                                  np.full((1, 1), 0.5), np.zeros(1), 3, 0)
>>> dX[0, :, 0]
array([1.75, 1.5 , 1.  ])
"""

from __future__ import annotations

import numpy as np


def _rnn_activate(Z, act):
    """f(Z) in place: 0 tanh, 1 relu, 2 sigmoid (exponent capped: no overflow), 3 identity."""
    if act == 0:
        np.tanh(Z, out=Z)
    elif act == 1:
        np.maximum(Z, 0, out=Z)
    elif act == 2:
        np.negative(Z, out=Z)
        np.minimum(Z, 88.0 if Z.dtype == np.float32 else 709.0, out=Z)
        np.exp(Z, out=Z)
        Z += 1
        np.reciprocal(Z, out=Z)
    return Z


def _rnn_slope(H, act):
    """f'(z) from the output h = f(z): 1 - h^2, [h > 0], h (1 - h), 1."""
    if act == 0:
        return 1 - H * H
    if act == 1:
        return (H > 0).astype(H.dtype)
    if act == 2:
        return H * (1 - H)
    return np.ones_like(H)


def _rnn_forward(X, Wx, Wh, b, act, h0=None):
    """h_t = f(x_t W_xh^T + h_{t-1} W_hh^T + b), h_{-1} = h0 (None: 0); the tape (H,), H (N, T, U)."""
    Xt = X.transpose(1, 0, 2)  # time-major: each step a contiguous (N, F) block
    H = np.matmul(Xt, Wx.T)  # the input terms of every step, in one product
    if b is not None:
        H += b
    for t in range(H.shape[0]):
        if t:
            H[t] += H[t - 1] @ Wh.T
        elif h0 is not None:
            H[0] += h0 @ Wh.T  # the state carried in (a constant: no gradient flows into it)
        _rnn_activate(H[t], act)
    return (H.transpose(1, 0, 2),)


def _rnn_backward(G, X, tape, Wx, Wh, b, act, bptt, h0=None):
    """BPTT, one reverse loop over time; returns (dL/dX, dL/dW_xh, dL/dW_hh, dL/db).

    delta_t = (G_t + delta_{t+1} W_hh) * f'(h_t), where the term from t+1 is dropped when
    bptt > 0 and t+1 is a multiple of bptt (the state entering each chunk of bptt steps is a
    constant); then dL/dW_xh = sum_t delta_t^T x_t, dL/dW_hh = sum_t delta_t^T h_{t-1},
    dL/db = sum_t delta_t^T 1, dL/dx_t = delta_t W_xh.  h_{-1} = h0 (None: 0), the state the
    forward pass started from: a constant, so only dL/dW_hh reads it (delta_0^T h0).
    """
    H = tape[0].transpose(1, 0, 2)  # (T, N, U), time-major
    Gt = G.transpose(1, 0, 2)
    steps, n, units = H.shape
    D = np.empty(H.shape, dtype=H.dtype)  # delta_t for every t
    carry = None  # delta_{t+1} W_hh: what step t+1 sends back to h_t
    for t in range(steps - 1, -1, -1):
        D[t] = Gt[t] if carry is None else Gt[t] + carry
        D[t] *= _rnn_slope(H[t], act)
        carry = D[t] @ Wh if t and (bptt == 0 or t % bptt) else None
    rows = D.reshape(steps * n, units)
    dWx = rows.T @ X.transpose(1, 0, 2).reshape(steps * n, X.shape[2])
    dWh = D[1:].reshape(-1, units).T @ H[:-1].reshape(-1, units)  # h_{-1} = 0 adds nothing
    if h0 is not None:
        dWh += D[0].T @ h0  # the first step's h_{-1} = h0
    db = None if b is None else rows.sum(axis=0)
    dX = np.matmul(D, Wx).transpose(1, 0, 2)
    return dX, dWx, dWh, db


def _last_step_grad(G, H):
    """dL/dH for h_T = H[:, -1]: zeros, with G at the last step."""
    out = np.zeros(H.shape, dtype=G.dtype)
    out[:, -1] = G
    return out


#: For each expression class, the helpers its NumPy view calls, dependencies first.
HELPERS: dict[str, tuple[str, ...]] = {
    "RnnForward": ("_rnn_activate", "_rnn_forward"),
    "RnnBackward": ("_rnn_slope", "_rnn_backward"),
    "LastStep": (),
    "LastStepGrad": ("_last_step_grad",),
    "MergeTime": (),
    "SplitTime": (),
}
