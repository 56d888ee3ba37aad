"""The recurrent family (Elman 1990; BPTT: Rumelhart, Hinton & Williams 1986) as SymPy expressions.

Contract: as in :mod:`symgrad.ops.conv`, each class is an ``sp.Function``
with first its arrays (symbols standing for whole batch-first arrays: a
sequence ``X`` (N, T, F), weights ``W_xh`` (U, F), ``W_hh`` (U, U), a bias
(U,) or ``sp.S.Zero`` for none, an upstream gradient ``G`` (N, T, U), a tape),
then integers (the activation code: 0 tanh, 1 relu, 2 sigmoid, 3 identity;
the truncation length ``bptt``, 0 for full BPTT), with four views:
``scalar`` (the recurrence written out entry by entry from the textbook
formula; the backward class from the BPTT recurrence, never by
differentiating), ``shape``, ``_numpycode`` (a call of a helper from
:mod:`symgrad.ops.recurrent_kernels`) and ``_latex`` (the recurrence in
delta notation).  A recurrent layer's forward pass is one step whose value
is a tuple, the *tape* ``(H,)`` (``H`` every hidden state, all the backward
pass needs); its backward pass is one reverse loop over time whose value is
the tuple ``(dL/dX, dL/dW_xh, dL/dW_hh, dL/db)``; :class:`~symgrad.ops.arrays.Part`
reads one entry.  :class:`LastStep` and :class:`MergeTime`/:class:`SplitTime`
are the views a graph needs around them (the last state only; time folded
into the batch so a dense layer acts on every step).  The gated classes
(``LstmForward``, ``GruForward``) in :mod:`symgrad.ops.gated` share this
interface.

>>> X, Wx, Wh, b, G = sp.symbols("X Wx1 Wh1 b1 dL_da1")
>>> from symgrad.printing import ArrayCodePrinter
>>> ArrayCodePrinter().doprint(RnnForward(X, Wx, Wh, b, 0))
'_rnn_forward(X, Wx1, Wh1, b1, 0)'
>>> tape = sp.Symbol("tape1")
>>> ArrayCodePrinter().doprint(RnnBackward(G, X, tape, Wx, Wh, b, 0, 5))
'_rnn_backward(dL_da1, X, tape1, Wx1, Wh1, b1, 0, 5)'
>>> RnnBackward.shape((4, 7, 2), (4, 7, 3), ((4, 7, 2),), (2, 3), (2, 2), (2,), 0, 0)
((4, 7, 3), (2, 3), (2, 2), (2,))
"""

from __future__ import annotations

import itertools

import numpy as np
import sympy as sp
from sympy.printing.precedence import PRECEDENCE

from .. import naming
from . import recurrent_kernels
from .arrays import ArrayOp as BaseArrayOp
from .arrays import lookup as _lookup
from .arrays import register_kernels

register_kernels(recurrent_kernels)

__all__ = ["ACTIVATIONS", "RnnForward", "RnnBackward", "LastStep", "LastStepGrad",
           "MergeTime", "SplitTime"]

#: The activation codes of the recurrent kernels.
ACTIVATIONS = {"tanh": 0, "relu": 1, "sigmoid": 2, "identity": 3}


class ArrayOp(BaseArrayOp):
    """Base of the recurrent family: its NumPy views call :mod:`.recurrent_kernels`."""

    kernels = recurrent_kernels


def activate(z, act: int):
    """f(z) for an activation code, as a SymPy expression."""
    return (sp.tanh(z), sp.Max(0, z), 1 / (1 + sp.exp(-z)), z)[act]


def slope(h, act: int):
    """f'(z) written in the output h = f(z), as the backward pass reads it."""
    return (1 - h ** 2, sp.Heaviside(h, 0), h * (1 - h), sp.S.One)[act]


_F_TEXT = ("tanh", "relu", "sigmoid", "")
_SLOPE_TEXT = ("1 - h_t^2", "[h_t > 0]", "h_t (1 - h_t)", "1")
_F_LATEX = (r"\tanh", r"\operatorname{relu}", r"\sigma", "")
_SLOPE_LATEX = ("1 - h_t^{2}", "[h_t > 0]", "h_t (1 - h_t)", "1")


def _no_bias(b) -> bool:
    return b is None or (not isinstance(b, (np.ndarray, tuple, list)) and b == 0)


def _operand(code: str) -> str:
    return code if code.isidentifier() else f"({code})"


def _transposed(printer, arg) -> str:
    """``W^\top``, braced when the symbol already has a superscript: ``{W^{(1)}}^\top``."""
    text = printer._print(arg)
    return f"{{{text}}}^{{\\top}}" if "^" in text else f"{text}^{{\\top}}"


def _initial_state(printer, X) -> list[str]:
    """``["h0=h0"]`` when the printer carries a state in (``printer.initial_state``) and the
    layer reads the network's input X (the first layer); otherwise no extra argument."""
    if getattr(printer, "initial_state", False) and getattr(X, "name", None) == naming.INPUT:
        return ["h0=h0"]
    return []


def _step(printer, arg, t: str) -> str:
    """``A_{:,t}``: one time step of a batch-first sequence."""
    text = printer._print(arg)
    if " " in text or "\\frac" in text:
        text = rf"\left({text}\right)"
    return rf"{text}_{{:,{t}}}"


# ---------------------------------------------------------------- Elman RNN


class RnnForward(ArrayOp):
    """The tape (H,): H[n,t,:] = f(X[n,t,:] Wx^T + H[n,t-1,:] Wh^T + b), H[n,-1,:] = 0.

    Args ``(X, Wx, Wh, b, act)``: X (N, T, F), Wx (U, F), Wh (U, U), b (U,)
    or ``sp.S.Zero``; the value is a 1-tuple, H of shape (N, T, U).
    """

    nargs = 5
    arrays = 4

    @classmethod
    def scalar(cls, X, Wx, Wh, b, act):
        N, T, F = X.shape
        U = Wx.shape[0]
        H = np.empty((N, T, U), dtype=object)
        for n, t, u in itertools.product(range(N), range(T), range(U)):
            z = sp.Add(*[X[n, t, f] * Wx[u, f] for f in range(F)])
            if t:
                z += sp.Add(*[H[n, t - 1, v] * Wh[u, v] for v in range(U)])
            H[n, t, u] = activate(z + (0 if _no_bias(b) else b[u]), act)
        return (H,)

    @classmethod
    def shape(cls, X, Wx, Wh, b, act):
        N, T, F = X
        U = Wx[0]
        if tuple(Wx) != (U, F) or tuple(Wh) != (U, U) or (not _no_bias(b) and tuple(b) != (U,)):
            raise ValueError(f"rnn: input {X}, W_xh {Wx}, W_hh {Wh}, bias {b} do not fit")
        return ((N, T, U),)

    def shape_at(self, shapes):
        X, Wx, Wh, b = self.args[:4]
        return type(self).shape(*(_lookup(shapes, a) for a in (X, Wx, Wh)),
                                None if b == 0 else _lookup(shapes, b), *self.hyper)

    def scalar_at(self, values):
        X, Wx, Wh, b = self.args[:4]
        return type(self).scalar(*(_lookup(values, a) for a in (X, Wx, Wh)),
                                 None if b == 0 else _lookup(values, b), *self.hyper)

    def _numpycode(self, printer):
        X, Wx, Wh, b = self.args[:4]
        arrays = [printer._print(a) for a in (X, Wx, Wh)]
        arrays.append("None" if b == 0 else printer._print(b))
        return self._call(printer, str(self.hyper[0]), *_initial_state(printer, X),
                          arrays=arrays)

    def _latex(self, printer, exp=None):
        X, Wx, Wh, b = self.args[:4]
        (act,) = self.hyper
        inner = (rf"{_step(printer, X, 't')} {_transposed(printer, Wx)} + h_{{t-1}} "
                 rf"{_transposed(printer, Wh)}")
        if b != 0:
            inner += f" + {_transposed(printer, b)}"
        f = _F_LATEX[act]
        body = rf"{f}\left({inner}\right)" if f else inner
        return (rf"\left(h_t = {body}\right)_{{t=1}}^{{T}},\ h_0 = 0")

    def _sympystr(self, printer) -> str:
        X, Wx, Wh, b = (printer._print(a) for a in self.args[:4])
        inner = f"{X}[:,t] {Wx}ᵀ + h_(t-1) {Wh}ᵀ" + ("" if self.args[3] == 0 else f" + {b}")
        f = _F_TEXT[self.hyper[0]]
        return f"h_t = {f + '(' + inner + ')' if f else inner}, t = 1..T, h_0 = 0"


class RnnBackward(ArrayOp):
    """BPTT for H = RnnForward(X, Wx, Wh, b, act) given G = dL/dH: (dX, dWx, dWh, db).

    Args ``(G, X, tape, Wx, Wh, b, act, bptt)``.  The recurrence, from the last
    step back: delta_t = (G_t + delta_{t+1} Wh) * f'(h_t), delta_{T+1} = 0,
    where f'(h_t) is written in the output (1 - h_t^2 for tanh); with
    truncation (bptt = k > 0) the term delta_{t+1} Wh is dropped when t+1 is
    a multiple of k (0-based), i.e. the state entering each chunk of k steps
    is a constant.  Then dX_t = delta_t Wx, dWx = sum_t delta_t^T x_t,
    dWh = sum_t delta_t^T h_{t-1} (h_{-1} = 0), db = sum_t delta_t^T 1.
    """

    @classmethod
    def equations(cls, bptt: int = 0) -> list[tuple[str, str]]:
        """The BPTT recurrences in delta notation, as (lhs, rhs) LaTeX pairs."""
        cut = (rf",\quad \delta_{{t+1}} W_{{hh}} \text{{ dropped when }} k \mid t+1,"
               rf"\ k = {bptt}" if bptt else "")
        return [
            (r"h_t", r"f\!\left(x_t W_{xh}^{\top} + h_{t-1} W_{hh}^{\top} + b\right),"
                     r"\quad h_{-1} = 0"),
            (r"\delta_t", r"\left(\frac{\partial L}{\partial h_t} + \delta_{t+1} W_{hh}\right)"
                           r" \odot f'(h_t),\quad \delta_{T+1} = 0" + cut),
            (r"\frac{\partial L}{\partial W_{xh}}", r"\sum_t \delta_t^{\top} x_t"),
            (r"\frac{\partial L}{\partial W_{hh}}", r"\sum_t \delta_t^{\top} h_{t-1}"),
            (r"\frac{\partial L}{\partial b}", r"\sum_t \delta_t^{\top} \mathbf{1}"),
            (r"\frac{\partial L}{\partial x_t}", r"\delta_t W_{xh}"),
        ]

    nargs = 8
    arrays = 6

    @classmethod
    def scalar(cls, G, X, tape, Wx, Wh, b, act, bptt):
        (H,) = tape
        N, T, F = X.shape
        U = Wx.shape[0]
        delta = np.empty((N, T, U), dtype=object)
        for t in range(T - 1, -1, -1):
            carried = t + 1 < T and (bptt == 0 or (t + 1) % bptt)
            for n, u in itertools.product(range(N), range(U)):
                total = G[n, t, u]
                if carried:
                    total += sp.Add(*[delta[n, t + 1, v] * Wh[v, u] for v in range(U)])
                delta[n, t, u] = total * slope(H[n, t, u], act)
        dX = np.empty((N, T, F), dtype=object)
        for n, t, f in itertools.product(range(N), range(T), range(F)):
            dX[n, t, f] = sp.Add(*[delta[n, t, u] * Wx[u, f] for u in range(U)])
        dWx = np.empty((U, F), dtype=object)
        for u, f in itertools.product(range(U), range(F)):
            dWx[u, f] = sp.Add(*[delta[n, t, u] * X[n, t, f] for n in range(N) for t in range(T)])
        dWh = np.empty((U, U), dtype=object)
        for u, v in itertools.product(range(U), range(U)):
            dWh[u, v] = sp.Add(*[delta[n, t, u] * H[n, t - 1, v] for n in range(N)
                                 for t in range(1, T)])
        db = None if _no_bias(b) else np.array(
            [sp.Add(*[delta[n, t, u] for n in range(N) for t in range(T)]) for u in range(U)],
            dtype=object)
        return dX, dWx, dWh, db

    @classmethod
    def shape(cls, G, X, tape, Wx, Wh, b, act, bptt):
        (H,) = RnnForward.shape(X, Wx, Wh, b, act)
        if tuple(G) != H or tuple(tape[0]) != H:
            raise ValueError(f"rnn backward: delta {G}, tape {tape}, states {H}")
        return (tuple(X), tuple(Wx), tuple(Wh), None if _no_bias(b) else tuple(b))

    def shape_at(self, shapes):
        G, X, tape, Wx, Wh, b = self.args[:6]
        return type(self).shape(*(_lookup(shapes, a) for a in (G, X, tape, Wx, Wh)),
                                None if b == 0 else _lookup(shapes, b), *self.hyper)

    def scalar_at(self, values):
        G, X, tape, Wx, Wh, b = self.args[:6]
        return type(self).scalar(*(_lookup(values, a) for a in (G, X, tape, Wx, Wh)),
                                 None if b == 0 else _lookup(values, b), *self.hyper)

    def _numpycode(self, printer):
        b = self.args[5]
        arrays = [printer._print(a) for a in self.args[:5]]
        arrays.append("None" if b == 0 else printer._print(b))
        act, bptt = self.hyper
        return self._call(printer, str(act), str(bptt), *_initial_state(printer, self.args[1]),
                          arrays=arrays)

    def _latex(self, printer, exp=None):
        G, X, tape, Wx, Wh, b = self.args[:6]
        act, bptt = self.hyper
        wx, wh = printer._print(Wx), printer._print(Wh)
        slope_text = _SLOPE_LATEX[act]
        carry = rf"\delta_{{t+1}} {wh}"
        delta = (rf"\delta_t = \left({_step(printer, G, 't')} + {carry}\right)"
                 + ("" if act == 3 else rf" \odot \left({slope_text}\right)"))
        when = (r",\ t = T, \dots, 1,\ \delta_{T+1} = 0" if not bptt else
                rf",\ t = T, \dots, 1,\ \delta_{{t+1}} := 0 \text{{ if }} {bptt} \mid t")
        grads = (rf"\Big(\left(\delta_t {wx}\right)_{{t=1}}^{{T}},\ \sum_t \delta_t^{{\top}} {_step(printer, X, 't')},\ "
                 rf"\sum_t \delta_t^{{\top}} h_{{t-1}}")
        grads += r",\ \sum_t \delta_t^{\top} \mathbf{1}\Big)" if b != 0 else r"\Big)"
        return rf"{grads}\ \text{{where}}\ {delta}{when}"

    def _sympystr(self, printer) -> str:
        G, X, tape, Wx, Wh, b = (printer._print(a) for a in self.args[:6])
        act, bptt = self.hyper
        cut = f", cut where {bptt} divides t+1" if bptt else ""
        grads = f"(delta_t {Wx}, Σ_t delta_tᵀ {X}[:,t], Σ_t delta_tᵀ h_(t-1)"
        grads += ", Σ_t delta_tᵀ 1)" if self.args[5] != 0 else ")"
        return (f"{grads} where delta_t = ({G}[:,t] + delta_(t+1) {Wh}) ⊙ "
                f"({_SLOPE_TEXT[act]}), t = T..1{cut}")


# ---------------------------------------------------------------- views over time


class LastStep(ArrayOp):
    """h_T = H[:, T-1, :]: the last state of a sequence, (N, T, U) -> (N, U)."""

    view = True  # a NumPy view: the memory plan treats it as its operand's array
    nargs = 1

    @classmethod
    def scalar(cls, H):
        return H[:, -1, :].copy()

    @classmethod
    def shape(cls, H):
        return (H[0], H[2])

    def _numpycode(self, printer):
        return f"{_operand(printer._print(self.args[0]))}[:, -1]"

    def _sympystr(self, printer) -> str:
        return f"{printer._print(self.args[0])}[:, T]"

    def _latex(self, printer, exp=None):
        return _step(printer, self.args[0], "T")


class LastStepGrad(ArrayOp):
    """dL/dH for h_T = LastStep(H), given G = dL/dh_T: G at the last step, zero before.

    Args ``(G, H)``: G (N, U), H (N, T, U) (only its shape is read).
    """

    nargs = 2
    arrays = 2

    @classmethod
    def scalar(cls, G, H):
        out = np.full(H.shape, sp.S.Zero, dtype=object)
        out[:, -1, :] = G
        return out

    @classmethod
    def shape(cls, G, H):
        if (H[0], H[2]) != tuple(G):
            raise ValueError(f"last-step gradient: delta {G}, states {H}")
        return tuple(H)

    def _numpycode(self, printer):
        return self._call(printer)

    def _sympystr(self, printer) -> str:
        return f"(0, ..., 0, {printer._print(self.args[0])})"

    def _latex(self, printer, exp=None):
        return (rf"\left(0, \dots, 0, {printer._print(self.args[0])}\right)"
                r"_{t=1,\dots,T}")


class MergeTime(ArrayOp):
    """R[n*T + t, :] = A[n, t, :]: time folded into the batch, (N, T, U) -> (N*T, U).

    A dense layer after a sequence layer reads these rows, so it acts on every
    step with one matrix product, and a loss over them sums over time.
    """

    view = True
    nargs = 1

    @classmethod
    def scalar(cls, A):
        N, T, U = A.shape
        return A.reshape(N * T, U).copy()

    @classmethod
    def shape(cls, A):
        N, T, U = A
        return (N * T, U)

    def _numpycode(self, printer):
        arg = _operand(printer._print(self.args[0]))
        return f"{arg}.reshape(-1, {arg}.shape[-1])"

    def _sympystr(self, printer) -> str:
        return f"rows({printer._print(self.args[0])})"

    def _latex(self, printer, exp=None):
        return rf"\operatorname{{rows}}\left({printer._print(self.args[0])}\right)"


class SplitTime(ArrayOp):
    """A[n, t, :] = R[n*T + t, :]: rows back into sequences, (N*T, U) -> (N, T, U).

    Args ``(R, X)``: the number of sequences N is read from the input X.
    """

    view = True
    nargs = 2
    arrays = 2

    @classmethod
    def scalar(cls, R, X):
        N = X.shape[0]
        return R.reshape(N, R.shape[0] // N, R.shape[1]).copy()

    @classmethod
    def shape(cls, R, X):
        rows, U = R
        if rows % X[0]:
            raise ValueError(f"split time: {rows} rows are not a multiple of {X[0]} sequences")
        return (X[0], rows // X[0], U)

    def _numpycode(self, printer):
        R, X = (printer._print(a) for a in self.args)
        arg = _operand(R)
        return f"{arg}.reshape(len({X}), -1, {arg}.shape[-1])"

    def _sympystr(self, printer) -> str:
        return f"rows⁻¹({printer._print(self.args[0])})"

    def _latex(self, printer, exp=None):
        return rf"\operatorname{{rows}}^{{-1}}\left({printer._print(self.args[0])}\right)"

    @property
    def precedence(self):
        return PRECEDENCE["Func"]
