"""The gated recurrent family (LSTM, GRU) as SymPy expressions over whole arrays.

Contract: as :mod:`symgrad.ops.conv`: each class is an ``sp.Function`` whose
arguments are first array symbols, then integer hyper-parameters, with four
views of one operation: ``scalar`` (classmethod, explicit index loops over
NumPy object arrays of SymPy expressions, the VJPs from the textbook delta
recurrences, never by differentiating), ``shape`` (classmethod),
``_numpycode`` (a call of a helper of :mod:`symgrad.ops.gated_kernels`) and
``_latex``.  Data are batch-first, X (N, T, F), hidden size U, h_0 = c_0 = 0;
weights are stacked by gate in PyTorch's layout (LSTM: i, f, g, o; GRU: r,
z, n).  ``b`` may be ``sp.S.Zero`` (no bias).

* ``LstmForward(X, Wx, Wh, b)`` and ``GruForward(X, Wx, Wh, b)``: the value is
  a tape, a tuple whose entry 0 (``Part(tape, 0)``) is H (N, T, U); the rest
  is what the backward pass reads (see :mod:`symgrad.ops.gated_kernels`).
  ``scalar`` returns the same tuple of object arrays; ``shape`` the tuple of
  shapes.  ``scalar(..., state=...)`` starts from a given state instead of
  zeros (to write a truncated forward pass for proofs).
* ``LstmBackward(G, X, tape, Wx, Wh, b, bptt)`` and ``GruBackward(...)``:
  G = dL/dH (N, T, U); the value is the tuple (dX, dWx, dWh, db) (db is None
  without a bias), read with ``Part``.  The tape is opaque to the scalar form:
  ``scalar(G, X, Wx, Wh, b, bptt)`` takes no tape and recomputes the forward
  pass in scalars; ``scalar_at`` skips the tape symbol.  ``bptt = 0`` is full
  BPTT; ``bptt = k > 0`` cuts time into chunks of k steps counted from the
  start and treats the state entering each chunk as a constant: the errors
  carried from step t back to step t-1 are dropped when t is a multiple of k
  (the gradient of a forward pass whose state is detached every k steps).
* ``equations(bptt=0)`` (classmethod of every class): the recurrences as
  (lhs, rhs) LaTeX strings, for the derivation document.

Sigmoids are written sigma(z) = (1 + tanh(z/2))/2 in the scalar forms (and
the kernels), so SymPy's own derivative of tanh proves the gate slopes
sigma(1 - sigma) and 1 - tanh^2 by polynomial identity.

>>> X, Wx, Wh, b, G, tape = sp.symbols("X Wx1 Wh1 b1 delta1 tape1")
>>> from symgrad.printing import ArrayCodePrinter
>>> ArrayCodePrinter().doprint(LstmForward(X, Wx, Wh, b))
'_lstm_forward(X, Wx1, Wh1, b1)'
>>> ArrayCodePrinter().doprint(GruBackward(G, X, tape, Wx, Wh, b, 5))
'_gru_backward(delta1, X, tape1, Wx1, Wh1, b1, 5)'
>>> LstmForward(X, Wx, Wh, b).shape_at({X: (8, 20, 3), Wx: (16, 3), Wh: (16, 4), b: (16,)})[0]
(8, 20, 4)
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from . import gated_kernels
from .arrays import ArrayOp as BaseArrayOp
from .arrays import lookup as _lookup
from .arrays import register_kernels

register_kernels(gated_kernels)

__all__ = ["GatedOp", "LstmForward", "LstmBackward", "GruForward", "GruBackward", "Tanh", "sigma"]


class Tanh(sp.Function):
    """tanh as a bare SymPy function: derivative 1 - tanh^2 of the same atom, nothing else.

    SymPy's own ``tanh`` simplifies and queries assumptions of its argument on
    construction, which is exponential on the nested arguments of a recurrence;
    this one does not, so a derivative and a delta written with these atoms agree
    by polynomial identity in them.  A number evaluates to ``sp.tanh`` of it.
    """

    nargs = 1

    @classmethod
    def eval(cls, arg):
        if arg.is_Number:
            return sp.tanh(arg)
        return None

    def fdiff(self, argindex=1):
        return 1 - self ** 2

    def _eval_evalf(self, prec):
        return sp.tanh(self.args[0])._eval_evalf(prec)

    def _latex(self, printer, exp=None):
        body = rf"\tanh{{\left({printer._print(self.args[0])}\right)}}"
        return rf"{body}^{{{exp}}}" if exp else body

    def _sympystr(self, printer):
        return f"tanh({printer._print(self.args[0])})"


def sigma(z):
    """The logistic function as (1 + tanh(z/2))/2 (a SymPy expression, or a Float for a number)."""
    return (1 + Tanh(z / 2)) / 2


class GatedOp(BaseArrayOp):
    """Base of the gated recurrent family: its NumPy views call :mod:`symgrad.ops.gated_kernels`.

    The arrays are (X, Wx, Wh, b) for a forward class, (G, X, tape, Wx, Wh, b) for a
    backward class; a bias of ``sp.S.Zero`` means none.
    """

    kernels = gated_kernels
    gates = 4  # gate blocks stacked in the weights
    cell = "LSTM"
    backward = False  # a backward class: args (G, X, tape, Wx, Wh, b, bptt)

    def _arrays(self, table):
        """``table[a]`` for each array argument, the tape left out and no bias as None."""
        return [None if a == 0 else _lookup(table, a)
                for k, a in enumerate(self.args[:self.arrays]) if not (self.backward and k == 2)]

    def scalar_at(self, values):
        return type(self).scalar(*self._arrays(values), *self.hyper)

    def shape_at(self, shapes):
        return type(self).shape(*self._arrays(shapes), *self.hyper)

    def _numpycode(self, printer):
        arrays = ["None" if a == 0 else printer._print(a) for a in self.args[:self.arrays]]
        return self._call(printer, *(str(h) for h in self.hyper), arrays=arrays)

    @classmethod
    def _check(cls, X, Wx, Wh, b):
        """(N, T, F, U), or ``ValueError`` when the shapes do not fit."""
        N, T, F = X
        k = cls.gates
        U = Wh[1]
        if (tuple(Wx) != (k * U, F) or tuple(Wh) != (k * U, U)
                or (b is not None and tuple(b) != (k * U,))):
            raise ValueError(f"{cls.cell}: input {tuple(X)}, Wx {tuple(Wx)}, Wh {tuple(Wh)}, "
                             f"b {None if b is None else tuple(b)} do not fit "
                             f"({k} gates of U units: Wx ({k}U, F), Wh ({k}U, U), b ({k}U,))")
        return N, T, F, U

    @classmethod
    def equations(cls, bptt: int = 0) -> list[tuple[str, str]]:
        return _EQUATIONS[cls.cell](bptt)


# ---------------------------------------------------------------- LSTM


class LstmForward(GatedOp):
    """LSTM over time, h_0 = c_0 = 0; args ``(X, Wx, Wh, b)``, value the tape (H, A, C).

    a_t = x_t Wx^T + h_{t-1} Wh^T + b in gate blocks i, f, g, o;
    i, f, o = sigma(a), g = tanh(a); c_t = f c_{t-1} + i g; h_t = o tanh(c_t).
    A holds the gate activations [i, f, g, o] (N, T, 4U), C the cell states (N, T, U).
    """

    nargs = 4
    arrays = 4

    @classmethod
    def scalar(cls, X, Wx, Wh, b, state=None):
        N, T, F, U = cls._check(X.shape, Wx.shape, Wh.shape, None if b is None else b.shape)
        h, c = (_zeros((N, U)), _zeros((N, U))) if state is None else state
        H, C, A = _zeros((N, T, U)), _zeros((N, T, U)), _zeros((N, T, 4 * U))
        for t in range(T):
            pre = _affine(X[:, t], Wx, h, Wh, b)
            for n in range(N):
                for u in range(U):
                    i, f = sigma(pre[n, u]), sigma(pre[n, U + u])
                    g, o = Tanh(pre[n, 2 * U + u]), sigma(pre[n, 3 * U + u])
                    A[n, t, u::U] = i, f, g, o
                    C[n, t, u] = f * c[n, u] + i * g
                    H[n, t, u] = o * Tanh(C[n, t, u])
            h, c = H[:, t], C[:, t]
        return H, A, C

    @classmethod
    def shape(cls, X, Wx, Wh, b):
        N, T, F, U = cls._check(X, Wx, Wh, b)
        return (N, T, U), (N, T, 4 * U), (N, T, U)

    def _latex(self, printer, exp=None):
        return _operator(printer, r"\operatorname{LSTM}", self.args[:1], self.args[1:4], exp)


class LstmBackward(GatedOp):
    """dL/d(X, Wx, Wh, b) of H = LstmForward(X, Wx, Wh, b)[0] given G = dL/dH, by BPTT.

    Args ``(G, X, tape, Wx, Wh, b, bptt)``; the value is (dX, dWx, dWh, db).
    delta_t = G_t + da_{t+1} Wh (the error reaching h_t),
    dc_t = delta_t o_t (1 - tanh^2 c_t) + dc_{t+1} f_{t+1},
    da^o_t = delta_t tanh(c_t) o_t (1 - o_t), da^f_t = dc_t c_{t-1} f_t (1 - f_t),
    da^i_t = dc_t g_t i_t (1 - i_t), da^g_t = dc_t i_t (1 - g_t^2),
    dx_t = da_t Wx, dWx = sum_t da_t^T x_t, dWh = sum_t da_t^T h_{t-1}, db = sum_t da_t^T 1.
    With bptt = k > 0 the terms from t+1 are zero when t+1 is a multiple of k.
    """

    nargs = 7
    arrays = 6
    backward = True

    @classmethod
    def scalar(cls, G, X, Wx, Wh, b, bptt):
        N, T, F, U = cls._check(X.shape, Wx.shape, Wh.shape, None if b is None else b.shape)
        H, A, C = LstmForward.scalar(X, Wx, Wh, b)
        dX, dWx, dWh = _zeros(X.shape), _zeros(Wx.shape), _zeros(Wh.shape)
        db = None if b is None else _zeros(b.shape)
        dh, dc = _zeros((N, U)), _zeros((N, U))  # carried from step t+1
        for t in range(T - 1, -1, -1):
            da = _zeros((N, 4 * U))
            for n in range(N):
                for u in range(U):
                    i, f, g, o = A[n, t, u::U]
                    c_prev = C[n, t - 1, u] if t else sp.S.Zero
                    tc = Tanh(C[n, t, u])
                    delta = G[n, t, u] + dh[n, u]
                    dcell = delta * o * (1 - tc ** 2) + dc[n, u]
                    da[n, u::U] = (dcell * g * i * (1 - i), dcell * c_prev * f * (1 - f),
                                   dcell * i * (1 - g ** 2), delta * tc * o * (1 - o))
                    dc[n, u] = dcell * f
            h_prev = H[:, t - 1] if t else _zeros((N, U))
            _accumulate(da, X[:, t], h_prev, Wx, dX[:, t], dWx, dWh, db)
            carried = t and (bptt == 0 or t % bptt)
            dh = _matmul(da, Wh) if carried else _zeros((N, U))
            dc = dc if carried else _zeros((N, U))
        return dX, dWx, dWh, db

    @classmethod
    def shape(cls, G, X, Wx, Wh, b, bptt):
        N, T, F, U = cls._check(X, Wx, Wh, b)
        if tuple(G) != (N, T, U) or bptt < 0:
            raise ValueError(f"LSTM gradient: delta {tuple(G)} is not (N, T, U) = {(N, T, U)}"
                             f" or bptt {bptt} < 0")
        return tuple(X), tuple(Wx), tuple(Wh), None if b is None else tuple(b)

    def _latex(self, printer, exp=None):
        return _backward_latex(self, printer, exp)


# ---------------------------------------------------------------- GRU


class GruForward(GatedOp):
    """GRU over time, h_0 = 0 (PyTorch's form, b_hh = 0); args ``(X, Wx, Wh, b)``.

    r = sigma(x Wx_r^T + h Wh_r^T + b_r), z = sigma(x Wx_z^T + h Wh_z^T + b_z),
    n = tanh(x Wx_n^T + r (h Wh_n^T) + b_n), h_t = (1 - z) n + z h_{t-1}.  The value is
    the tape (H, A, Hn): A the gate activations [r, z, n] (N, T, 3U), Hn[:, t] = h_{t-1} Wh_n^T.
    """

    nargs = 4
    arrays = 4
    gates = 3
    cell = "GRU"

    @classmethod
    def scalar(cls, X, Wx, Wh, b, state=None):
        N, T, F, U = cls._check(X.shape, Wx.shape, Wh.shape, None if b is None else b.shape)
        h = _zeros((N, U)) if state is None else state
        H, A, Hn = _zeros((N, T, U)), _zeros((N, T, 3 * U)), _zeros((N, T, U))
        for t in range(T):
            xin = _affine(X[:, t], Wx, None, None, b)
            rec = _matmul(h, Wh.T)
            for n in range(N):
                for u in range(U):
                    r = sigma(xin[n, u] + rec[n, u])
                    z = sigma(xin[n, U + u] + rec[n, U + u])
                    Hn[n, t, u] = rec[n, 2 * U + u]
                    m = Tanh(xin[n, 2 * U + u] + r * Hn[n, t, u])
                    A[n, t, u::U] = r, z, m
                    H[n, t, u] = (1 - z) * m + z * h[n, u]
            h = H[:, t]
        return H, A, Hn

    @classmethod
    def shape(cls, X, Wx, Wh, b):
        N, T, F, U = cls._check(X, Wx, Wh, b)
        return (N, T, U), (N, T, 3 * U), (N, T, U)

    def _latex(self, printer, exp=None):
        return _operator(printer, r"\operatorname{GRU}", self.args[:1], self.args[1:4], exp)


class GruBackward(GatedOp):
    """dL/d(X, Wx, Wh, b) of H = GruForward(X, Wx, Wh, b)[0] given G = dL/dH, by BPTT.

    Args ``(G, X, tape, Wx, Wh, b, bptt)``; the value is (dX, dWx, dWh, db).
    delta_t = G_t + delta_{t+1} z_{t+1} + dh_{t+1} Wh (the error reaching h_t),
    da^n_t = delta_t (1 - z_t)(1 - n_t^2), da^z_t = delta_t (h_{t-1} - n_t) z_t (1 - z_t),
    da^r_t = da^n_t (h_{t-1} Wh_n^T) r_t (1 - r_t); the input side dx_t = [da^r, da^z, da^n],
    the recurrent side dh_t = [da^r, da^z, da^n r]; dX_t = dx_t Wx,
    dWx = sum_t dx_t^T x_t, dWh = sum_t dh_t^T h_{t-1}, db = sum_t dx_t^T 1.
    With bptt = k > 0 the terms from t+1 are zero when t+1 is a multiple of k.
    """

    nargs = 7
    arrays = 6
    gates = 3
    cell = "GRU"
    backward = True

    @classmethod
    def scalar(cls, G, X, Wx, Wh, b, bptt):
        N, T, F, U = cls._check(X.shape, Wx.shape, Wh.shape, None if b is None else b.shape)
        H, A, Hn = GruForward.scalar(X, Wx, Wh, b)
        dX, dWx, dWh = _zeros(X.shape), _zeros(Wx.shape), _zeros(Wh.shape)
        db = None if b is None else _zeros(b.shape)
        carry = _zeros((N, U))  # delta_{t+1} z_{t+1} + dh_{t+1} Wh
        for t in range(T - 1, -1, -1):
            dx, dr = _zeros((N, 3 * U)), _zeros((N, 3 * U))
            h_prev = H[:, t - 1] if t else _zeros((N, U))
            for n in range(N):
                for u in range(U):
                    r, z, m = A[n, t, u::U]
                    delta = G[n, t, u] + carry[n, u]
                    dm = delta * (1 - z) * (1 - m ** 2)
                    dx[n, u::U] = (dm * Hn[n, t, u] * r * (1 - r),
                                   delta * (h_prev[n, u] - m) * z * (1 - z), dm)
                    dr[n, u::U] = dx[n, u], dx[n, U + u], dm * r
                    carry[n, u] = delta * z
            _accumulate(dx, X[:, t], None, Wx, dX[:, t], dWx, None, db)
            _accumulate(dr, None, h_prev, None, None, None, dWh, None)
            if t and (bptt == 0 or t % bptt):
                carry = carry + _matmul(dr, Wh)
            else:
                carry = _zeros((N, U))
        return dX, dWx, dWh, db

    @classmethod
    def shape(cls, G, X, Wx, Wh, b, bptt):
        N, T, F, U = cls._check(X, Wx, Wh, b)
        if tuple(G) != (N, T, U) or bptt < 0:
            raise ValueError(f"GRU gradient: delta {tuple(G)} is not (N, T, U) = {(N, T, U)}"
                             f" or bptt {bptt} < 0")
        return tuple(X), tuple(Wx), tuple(Wh), None if b is None else tuple(b)

    def _latex(self, printer, exp=None):
        return _backward_latex(self, printer, exp)


# ---------------------------------------------------------------- LaTeX


def _operator(printer, name, data, weights, exp):
    data = ", ".join(printer._print(a) for a in data)
    weights = ", ".join(printer._print(a) for a in weights if a != 0)
    body = rf"{name}\left({data};\, {weights}\right)"
    return rf"\left({body}\right)^{{{exp}}}" if exp else body


def _backward_latex(expr, printer, exp):
    (bptt,) = expr.hyper
    sub = rf"\mathrm{{{expr.cell}}}" + (rf",\,k={bptt}" if bptt else "")
    return _operator(printer, rf"\operatorname{{BPTT}}_{{{sub}}}",
                     (expr.args[0], expr.args[1]), expr.args[3:6], exp)


_ODOT = r" \odot "


def _truncation(bptt: int, carried: str) -> list[tuple[str, str]]:
    if not bptt:
        return []
    return [(carried, rf"0 \quad \text{{when }} t + 1 \equiv 0 \pmod{{{bptt}}}"
                      r" \text{ (truncated BPTT)}")]


def _lstm_equations(bptt: int) -> list[tuple[str, str]]:
    o = _ODOT
    return [
        (r"a_t", r"x_t W_x^{\top} + h_{t-1} W_h^{\top} + b = [a^i_t, a^f_t, a^g_t, a^o_t]"),
        (r"i_t,\, f_t,\, o_t", r"\sigma(a^i_t),\, \sigma(a^f_t),\, \sigma(a^o_t)"),
        (r"g_t", r"\tanh(a^g_t)"),
        (r"c_t", rf"f_t{o}c_{{t-1}} + i_t{o}g_t"),
        (r"h_t", rf"o_t{o}\tanh(c_t)"),
        (r"\delta_t", r"\frac{\partial L}{\partial h_t} + \delta^{a}_{t+1} W_h"),
        (r"\delta^o_t", rf"\delta_t{o}\tanh(c_t){o}o_t{o}(1 - o_t)"),
        (r"\delta^c_t", rf"\delta_t{o}o_t{o}\left(1 - \tanh^2(c_t)\right)"
                        rf" + \delta^c_{{t+1}}{o}f_{{t+1}}"),
        (r"\delta^f_t", rf"\delta^c_t{o}c_{{t-1}}{o}f_t{o}(1 - f_t)"),
        (r"\delta^i_t", rf"\delta^c_t{o}g_t{o}i_t{o}(1 - i_t)"),
        (r"\delta^g_t", rf"\delta^c_t{o}i_t{o}(1 - g_t^2)"),
        (r"\delta^{a}_t", r"[\delta^i_t, \delta^f_t, \delta^g_t, \delta^o_t]"),
        *_truncation(bptt, r"\delta^{a}_{t+1},\, \delta^c_{t+1}"),
        (r"\frac{\partial L}{\partial x_t}", r"\delta^{a}_t W_x"),
        (r"\frac{\partial L}{\partial W_x}", r"\sum_t {\delta^{a}_t}^{\top} x_t"),
        (r"\frac{\partial L}{\partial W_h}", r"\sum_t {\delta^{a}_t}^{\top} h_{t-1}"),
        (r"\frac{\partial L}{\partial b}", r"\sum_t {\delta^{a}_t}^{\top} \mathbf{1}"),
    ]


def _gru_equations(bptt: int) -> list[tuple[str, str]]:
    o = _ODOT
    return [
        (r"r_t", r"\sigma(x_t W_{x,r}^{\top} + h_{t-1} W_{h,r}^{\top} + b_r)"),
        (r"z_t", r"\sigma(x_t W_{x,z}^{\top} + h_{t-1} W_{h,z}^{\top} + b_z)"),
        (r"n_t", rf"\tanh\left(x_t W_{{x,n}}^{{\top}} + r_t{o}(h_{{t-1}} W_{{h,n}}^{{\top}})"
                 r" + b_n\right)"),
        (r"h_t", rf"(1 - z_t){o}n_t + z_t{o}h_{{t-1}}"),
        (r"\delta_t", rf"\frac{{\partial L}}{{\partial h_t}} + \delta_{{t+1}}{o}z_{{t+1}}"
                      r" + \delta^{h}_{t+1} W_h"),
        (r"\delta^n_t", rf"\delta_t{o}(1 - z_t){o}(1 - n_t^2)"),
        (r"\delta^z_t", rf"\delta_t{o}(h_{{t-1}} - n_t){o}z_t{o}(1 - z_t)"),
        (r"\delta^r_t", rf"\delta^n_t{o}(h_{{t-1}} W_{{h,n}}^{{\top}}){o}r_t{o}(1 - r_t)"),
        (r"\delta^{x}_t", r"[\delta^r_t, \delta^z_t, \delta^n_t]"),
        (r"\delta^{h}_t", rf"[\delta^r_t, \delta^z_t, \delta^n_t{o}r_t]"),
        *_truncation(bptt, r"\delta_{t+1},\, \delta^{h}_{t+1}"),
        (r"\frac{\partial L}{\partial x_t}", r"\delta^{x}_t W_x"),
        (r"\frac{\partial L}{\partial W_x}", r"\sum_t {\delta^{x}_t}^{\top} x_t"),
        (r"\frac{\partial L}{\partial W_h}", r"\sum_t {\delta^{h}_t}^{\top} h_{t-1}"),
        (r"\frac{\partial L}{\partial b}", r"\sum_t {\delta^{x}_t}^{\top} \mathbf{1}"),
    ]


_EQUATIONS = {"LSTM": _lstm_equations, "GRU": _gru_equations}


# ---------------------------------------------------------------- scalar internals


def _zeros(shape) -> np.ndarray:
    return np.full(shape, sp.S.Zero, dtype=object)


def _matmul(A, B) -> np.ndarray:
    """A @ B over object arrays, each entry one ``sp.Add``."""
    out = _zeros((A.shape[0], B.shape[1]))
    for i in range(A.shape[0]):
        for j in range(B.shape[1]):
            out[i, j] = sp.Add(*[A[i, k] * B[k, j] for k in range(A.shape[1])])
    return out


def _affine(x, Wx, h, Wh, b) -> np.ndarray:
    """x Wx^T (+ h Wh^T) (+ b), row by row."""
    out = _matmul(x, Wx.T)
    if h is not None:
        out = out + _matmul(h, Wh.T)
    if b is not None:
        out = out + b[None, :]
    return out


def _accumulate(d, x, h_prev, Wx, dx, dWx, dWh, db) -> None:
    """One step's share: dx = d Wx, dWx += d^T x, dWh += d^T h_prev, db += d^T 1 (in place)."""
    if dx is not None:
        dx[...] = _matmul(d, Wx)
    if dWx is not None:
        dWx += _matmul(d.T, x)
    if dWh is not None:
        dWh += _matmul(d.T, h_prev)
    if db is not None:
        db += d.sum(axis=0)
