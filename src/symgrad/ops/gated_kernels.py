"""NumPy kernels of the gated recurrent family (LSTM, GRU), copied verbatim into generated modules.

Contract: every function here is self-contained (it names only ``np`` and
the other helpers in this module), so :func:`inspect.getsource` of it pastes
into a generated module as is; :data:`HELPERS` says which functions each
expression class of :mod:`symgrad.ops.gated` needs, dependencies first.
Data are batch-first, X (N, T, F); h_0 = c_0 = 0.  Weights are stacked by
gate, PyTorch's layout: LSTM Wx (4U, F), Wh (4U, U), b (4U,) in gate order
i, f, g, o; GRU (3U, ...) in gate order r, z, n.  ``b`` may be None (no
bias; its gradient is then None).  Each forward pass is one loop over time
with one matmul over the batch per step (the input terms of every step are
one product before the loop); each backward pass is one reverse loop (BPTT)
and the shared-weight gradients are summed over time in one product after it.
No function loops over samples, changes its inputs, and float32 stays float32.

Tapes (what the forward pass returns and the backward pass reads), all
batch-first (N, T, .), possibly transposed views of time-major storage:
LSTM ``(H, A, C)``, A the gate activations [i, f, g, o] (N, T, 4U), C the
cell states; GRU ``(H, A, Hn)``, A the gate activations [r, z, n] (N, T, 3U),
Hn[:, t] = h_{t-1} Wh_n^T (the recurrent term that r gates).

Truncation ``bptt = k > 0``: time is cut into chunks of k steps counted
from the start, [0, k), [k, 2k), ...; the state entering a chunk is taken as
a constant, so the errors carried from step t back to step t-1 (dh, and dc
for the LSTM) are dropped when t is a multiple of k.  It is the gradient of
a forward pass whose carried state is detached every k steps (PyTorch's
truncated BPTT by chunks); ``bptt = 0`` is full BPTT.

>>> X = np.zeros((1, 2, 1)); W = np.zeros((4, 1)); V = np.zeros((4, 1))
>>> H, A, C = _lstm_forward(X, W, V, np.array([0.0, 0.0, 1.0, 0.0]))
>>> np.round(H[0, :, 0], 4)
array([0.1817, 0.2581])
"""

from __future__ import annotations

import numpy as np


def _gate_sigmoid(z):
    """The logistic function as (1 + tanh(z/2))/2: never overflows, a new array of z's dtype."""
    s = np.multiply(z, 0.5)
    np.tanh(s, out=s)
    s *= 0.5
    s += 0.5
    return s


def _lstm_forward(X, Wx, Wh, b):
    """LSTM, h_0 = c_0 = 0: the tape (H, A, C), H (N, T, U).

    a_t = x_t Wx^T + h_{t-1} Wh^T + b; i, f, o = sigma(a), g = tanh(a);
    c_t = f * c_{t-1} + i * g; h_t = o * tanh(c_t).
    """
    n, steps, _ = X.shape
    units = Wh.shape[1]
    A = np.matmul(X.transpose(1, 0, 2), Wx.T)  # (T, N, 4U): every step's input terms at once
    if b is not None:
        A += b
    H = np.empty((steps, n, units), dtype=A.dtype)
    C = np.empty((steps, n, units), dtype=A.dtype)
    WhT = Wh.T
    for t in range(steps):
        a = A[t]
        if t:
            a += H[t - 1] @ WhT
        g = np.tanh(a[:, 2 * units:3 * units])
        a[...] = _gate_sigmoid(a)
        a[:, 2 * units:3 * units] = g
        c = C[t]
        np.multiply(a[:, :units], g, out=c)
        if t:
            c += a[:, units:2 * units] * C[t - 1]
        np.tanh(c, out=H[t])
        H[t] *= a[:, 3 * units:]
    return H.transpose(1, 0, 2), A.transpose(1, 0, 2), C.transpose(1, 0, 2)


def _lstm_backward(G, X, tape, Wx, Wh, b, bptt):
    """LSTM BPTT, one reverse loop over time: (dL/dX, dL/dWx, dL/dWh, dL/db).

    delta_t = G_t + da_{t+1} Wh; dc_t = delta_t o_t (1 - tanh^2 c_t) + dc_{t+1} f_{t+1};
    da^o = delta tanh(c) o(1-o), da^i = dc g i(1-i), da^f = dc c_{t-1} f(1-f),
    da^g = dc i (1-g^2); dWx = sum_t da_t^T x_t, dWh = sum_t da_t^T h_{t-1},
    db = sum_t da_t^T 1, dx_t = da_t Wx.  With bptt = k > 0 the terms from t+1
    are dropped when t+1 is a multiple of k.
    """
    H, A, C = (x.transpose(1, 0, 2) for x in tape)  # time-major (T, N, .)
    Gt = G.transpose(1, 0, 2)
    steps, n, units = H.shape
    D = np.empty(A.shape, dtype=A.dtype)  # da_t, the gate pre-activation errors
    dh = np.zeros((n, units), dtype=A.dtype)  # carried from step t+1
    dc = np.zeros((n, units), dtype=A.dtype)
    for t in range(steps - 1, -1, -1):
        a, d = A[t], D[t]
        i, f = a[:, :units], a[:, units:2 * units]
        g, o = a[:, 2 * units:3 * units], a[:, 3 * units:]
        tc = np.tanh(C[t])
        dh += Gt[t]
        dc += dh * o * (1 - tc * tc)
        d[:, 3 * units:] = dh * tc * o * (1 - o)
        d[:, :units] = dc * g * i * (1 - i)
        d[:, 2 * units:3 * units] = dc * i * (1 - g * g)
        if t:
            d[:, units:2 * units] = dc * C[t - 1] * f * (1 - f)
        else:
            d[:, units:2 * units] = 0  # c_{-1} = 0
        if t and (bptt == 0 or t % bptt):
            dh = d @ Wh
            dc *= f
        else:
            dh = np.zeros_like(dh)
            dc = np.zeros_like(dc)
    rows = D.reshape(steps * n, 4 * units)
    dWx = rows.T @ X.transpose(1, 0, 2).reshape(steps * n, X.shape[2])
    dWh = D[1:].reshape(-1, 4 * units).T @ H[:-1].reshape(-1, units)  # h_{-1} = 0 adds nothing
    db = None if b is None else rows.sum(axis=0)
    dX = np.matmul(D, Wx).transpose(1, 0, 2)
    return dX, dWx, dWh, db


def _gru_forward(X, Wx, Wh, b):
    """GRU, h_0 = 0 (PyTorch's form with b_hh = 0): the tape (H, A, Hn), H (N, T, U).

    r = sigma(x Wx_r^T + h Wh_r^T + b_r), z = sigma(x Wx_z^T + h Wh_z^T + b_z),
    n = tanh(x Wx_n^T + r * (h Wh_n^T) + b_n), h_t = (1 - z) * n + z * h_{t-1}.
    """
    n, steps, _ = X.shape
    units = Wh.shape[1]
    A = np.matmul(X.transpose(1, 0, 2), Wx.T)  # (T, N, 3U): every step's input terms at once
    if b is not None:
        A += b
    H = np.empty((steps, n, units), dtype=A.dtype)
    Hn = np.zeros((steps, n, units), dtype=A.dtype)
    WhT = Wh.T
    for t in range(steps):
        a = A[t]
        if t:
            hh = H[t - 1] @ WhT
            a[:, :2 * units] += hh[:, :2 * units]
            Hn[t] = hh[:, 2 * units:]
        a[:, :2 * units] = _gate_sigmoid(a[:, :2 * units])
        r, z, m = a[:, :units], a[:, units:2 * units], a[:, 2 * units:]
        m += r * Hn[t]
        np.tanh(m, out=m)
        h = H[t]
        np.subtract(1, z, out=h)
        h *= m
        if t:
            h += z * H[t - 1]
    return H.transpose(1, 0, 2), A.transpose(1, 0, 2), Hn.transpose(1, 0, 2)


def _gru_backward(G, X, tape, Wx, Wh, b, bptt):
    """GRU BPTT, one reverse loop over time: (dL/dX, dL/dWx, dL/dWh, dL/db).

    delta_t = G_t + delta_{t+1} z_{t+1} + dh_{t+1} Wh; da^n = delta (1-z)(1-n^2),
    da^z = delta (h_{t-1} - n) z(1-z), da^r = da^n (h_{t-1} Wh_n^T) r(1-r);
    the input side dx = [da^r, da^z, da^n], the recurrent side dh = [da^r, da^z, da^n r];
    dWx = sum_t dx_t^T x_t, dWh = sum_t dh_t^T h_{t-1}, db = sum_t dx_t^T 1,
    dx_t = dx_t Wx.  With bptt = k > 0 the terms from t+1 are dropped when t+1 is a
    multiple of k.
    """
    H, A, Hn = (x.transpose(1, 0, 2) for x in tape)  # time-major (T, N, .)
    Gt = G.transpose(1, 0, 2)
    steps, n, units = H.shape
    Dx = np.empty(A.shape, dtype=A.dtype)  # input-side pre-activation errors
    Dh = np.empty(A.shape, dtype=A.dtype)  # recurrent-side pre-activation errors
    delta = np.zeros((n, units), dtype=A.dtype)  # carried from step t+1
    for t in range(steps - 1, -1, -1):
        a, dx = A[t], Dx[t]
        r, z, m = a[:, :units], a[:, units:2 * units], a[:, 2 * units:]
        delta += Gt[t]
        dm = dx[:, 2 * units:]
        np.multiply(delta, 1 - z, out=dm)
        dm *= 1 - m * m
        if t:
            dx[:, units:2 * units] = delta * (H[t - 1] - m) * z * (1 - z)
        else:
            dx[:, units:2 * units] = -delta * m * z * (1 - z)  # h_{-1} = 0
        dx[:, :units] = dm * Hn[t] * r * (1 - r)
        Dh[t, :, :2 * units] = dx[:, :2 * units]
        Dh[t, :, 2 * units:] = dm * r
        if t and (bptt == 0 or t % bptt):
            delta = delta * z + Dh[t] @ Wh
        else:
            delta = np.zeros_like(delta)
    rows = Dx.reshape(steps * n, 3 * units)
    dWx = rows.T @ X.transpose(1, 0, 2).reshape(steps * n, X.shape[2])
    dWh = Dh[1:].reshape(-1, 3 * units).T @ H[:-1].reshape(-1, units)  # h_{-1} = 0 adds nothing
    db = None if b is None else rows.sum(axis=0)
    dX = np.matmul(Dx, Wx).transpose(1, 0, 2)
    return dX, dWx, dWh, db


#: For each expression class, the helpers its NumPy view calls, dependencies first.
HELPERS: dict[str, tuple[str, ...]] = {
    "LstmForward": ("_gate_sigmoid", "_lstm_forward"),
    "LstmBackward": ("_lstm_backward",),
    "GruForward": ("_gate_sigmoid", "_gru_forward"),
    "GruBackward": ("_gru_backward",),
}
