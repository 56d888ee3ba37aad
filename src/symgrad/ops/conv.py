"""The convolution family as SymPy expressions over whole arrays.

Contract: each class here is an ``sp.Function`` with a fixed number of
arguments: first the arrays (``sp.Symbol`` standing for a whole batch-first
NCHW array, a kernel (F, C, kh, kw) or a bias (F,)), then integer
hyper-parameters (``sp.Integer``).  Every class gives four views of one
operation, which the operation registry wires into the derivation:

* ``scalar(*args)`` (classmethod): the operation written out entry by entry
  with explicit index loops, from the textbook formula (the VJP classes from
  the textbook VJP, never by differentiating), over NumPy object arrays of
  SymPy expressions; the constructor's arguments with arrays replaced by
  object arrays.  ``expr.scalar_at(values)`` does the same for an expression,
  ``values`` mapping its array symbols to object arrays.
* ``shape(*args)`` (classmethod): the output shape, the constructor's
  arguments with arrays replaced by shape tuples (``ValueError`` when they do
  not fit); ``expr.shape_at(shapes)`` for an expression.
* ``_numpycode``: a call of a helper from :mod:`symgrad.ops.kernels`
  (recorded in ``printer.helpers`` when the printer has that set; the
  helpers a class needs, dependencies first, are ``kernels.HELPERS[name]``).
* ``_latex``: textbook notation, compilable with amsmath: ``\\star`` is
  cross-correlation (what every library calls convolution) contracting the
  kernel's input channels, ``\\ast`` true convolution; ``\\operatorname{pad}_p``
  pads with p zeros, ``(\\cdot)_{\\downarrow s}`` keeps every s-th position
  (stride), ``(\\cdot)_{\\uparrow s}`` inserts s-1 zeros between entries.
* ``precedence``: a forward convolution with a bias binds like a sum, a bare
  ``A \\star K`` below a product, so a printer that honours precedence
  brackets them inside products; the operator forms bind like function calls.

>>> A, K, b = sp.symbols("X K1 b1")
>>> z = Conv2d(A, K, b, 2, 2, 1, 1)
>>> from symgrad.printing import ArrayCodePrinter
>>> ArrayCodePrinter().doprint(z)
'_conv2d(X, K1, b1, (2, 2), (1, 1))'
>>> z.shape_at({A: (5, 3, 28, 28), K: (8, 3, 5, 5), b: (8,)})
(5, 8, 13, 13)
>>> G = sp.Symbol("delta1")
>>> ArrayCodePrinter().doprint(MaxPool2dGrad(G, A, 2, 2, 2, 2))
'_maxpool2d_grad(delta1, X, (2, 2), (2, 2))'
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import sympy as sp
from sympy.printing.precedence import PRECEDENCE

from . import kernels
from .arrays import ArrayOp as BaseArrayOp
from .arrays import lookup as _lookup
from .arrays import register_kernels

register_kernels(kernels)

__all__ = ["ArrayOp", "Conv2d", "Conv2dGradInput", "Conv2dGradKernel", "ChannelSum",
           "MaxPool2d", "MaxPool2dGrad", "AvgPool2d", "AvgPool2dGrad", "Flatten", "Unflatten"]


class ArrayOp(BaseArrayOp):
    """Base of the convolution family: its NumPy views call :mod:`symgrad.ops.kernels`."""

    kernels = kernels


# ---------------------------------------------------------------- convolution


class Conv2d(ArrayOp):
    """Z[n,f,i,j] = b[f] + sum_{c,u,v} Apad[n,c,i*sh+u,j*sw+v] K[f,c,u,v].

    Args ``(A, K, b, sh, sw, ph, pw)``: A (N,C,H,W), K (F,C,kh,kw), b (F,) or
    ``sp.S.Zero`` for no bias; Apad is A with ph zero rows and pw zero columns
    on each side.  Output (N, F, (H+2ph-kh)//sh+1, (W+2pw-kw)//sw+1).
    """

    nargs = 7
    arrays = 3

    @property
    def precedence(self):
        if self.args[2] != 0:
            return PRECEDENCE["Add"]
        return PRECEDENCE["Func"] if self.hyper[:2] != (1, 1) else PRECEDENCE["Mul"] - 1

    @classmethod
    def scalar(cls, A, K, b, sh, sw, ph, pw):
        N, C, H, W = A.shape
        F, _, kh, kw = K.shape
        Ap = _zero_pad(A, ph, pw)
        Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
        Z = np.empty((N, F, Ho, Wo), dtype=object)
        for n, f, i, j in itertools.product(range(N), range(F), range(Ho), range(Wo)):
            terms = [Ap[n, c, i * sh + u, j * sw + v] * K[f, c, u, v]
                     for c in range(C) for u in range(kh) for v in range(kw)]
            Z[n, f, i, j] = sp.Add(*terms) + (0 if _no_bias(b) else b[f])
        return Z

    @classmethod
    def shape(cls, A, K, b, sh, sw, ph, pw):
        N, C, H, W = A
        F, Ck, kh, kw = K
        if Ck != C or (not _no_bias(b) and tuple(b) != (F,)):
            raise ValueError(f"conv2d: input {A}, kernel {K}, bias {b} do not fit")
        return (N, F) + _out_size((H, W), (kh, kw), (sh, sw), (ph, pw))

    def shape_at(self, shapes):
        A, K, b = self.args[:3]
        return type(self).shape(_lookup(shapes, A), _lookup(shapes, K),
                                None if b == 0 else _lookup(shapes, b), *self.hyper)

    def scalar_at(self, values):
        A, K, b = self.args[:3]
        return type(self).scalar(_lookup(values, A), _lookup(values, K),
                                 None if b == 0 else _lookup(values, b), *self.hyper)

    def _numpycode(self, printer):
        A, K, b = self.args[:3]
        sh, sw, ph, pw = self.hyper
        arrays = [printer._print(A), printer._print(K), "None" if b == 0 else printer._print(b)]
        return self._call(printer, f"({sh}, {sw})", f"({ph}, {pw})", arrays=arrays)

    def _latex(self, printer, exp=None):
        A, K, b = self.args[:3]
        sh, sw, ph, pw = self.hyper
        body = rf"{_pad(printer._print(A), ph, pw)} \star {_group(printer._print(K))}"
        body = _down(body, sh, sw)
        if b != 0:
            body += f" + {printer._print(b)}"
        return _power(body, exp)


class Conv2dGradInput(ArrayOp):
    """dL/dA for Z = Conv2d(A, K, ...) given G = dL/dZ, the textbook way.

    Args ``(G, K, sh, sw, ph, pw, H, W)``: G (N,F,Ho,Wo) is zero-dilated by the
    stride (s-1 zeros between entries), padded with kh-1, kw-1 zeros and
    correlated with the kernel rotated by 180 degrees, channels swapped
    (a full correlation with rot180(K), which is the true full convolution
    with K); the result, in the padded input's coordinates, is cropped by
    (ph, pw) to (N, C, H, W); rows and columns no window reads get zero.
    """

    nargs = 8
    arrays = 2

    @property
    def precedence(self):
        return PRECEDENCE["Func"] if any(self.hyper[2:4]) else PRECEDENCE["Mul"] - 1

    @classmethod
    def scalar(cls, G, K, sh, sw, ph, pw, H, W):
        N, F, Ho, Wo = G.shape
        _, C, kh, kw = K.shape
        Gd = _dilate(G, sh, sw)
        Gp = _zero_pad(Gd, kh - 1, kw - 1)
        rot = K[:, :, ::-1, ::-1]
        Hf, Wf = Gd.shape[2] + kh - 1, Gd.shape[3] + kw - 1  # the full correlation's size
        dA = np.full((N, C, H, W), sp.S.Zero, dtype=object)
        for n, c, y, x in itertools.product(range(N), range(C), range(H), range(W)):
            yf, xf = y + ph, x + pw
            if yf < Hf and xf < Wf:
                dA[n, c, y, x] = sp.Add(*[Gp[n, f, yf + u, xf + v] * rot[f, c, u, v]
                                          for f in range(F) for u in range(kh)
                                          for v in range(kw)])
        return dA

    @classmethod
    def shape(cls, G, K, sh, sw, ph, pw, H, W):
        N, F, Ho, Wo = G
        Fk, C, kh, kw = K
        if Fk != F or _out_size((H, W), (kh, kw), (sh, sw), (ph, pw)) != (Ho, Wo):
            raise ValueError(f"conv2d input gradient: delta {G}, kernel {K}, input {H}x{W}")
        return (N, C, H, W)

    def _numpycode(self, printer):
        sh, sw, ph, pw, H, W = self.hyper
        return self._call(printer, f"({sh}, {sw})", f"({ph}, {pw})", f"({H}, {W})")

    def _latex(self, printer, exp=None):
        G, K = self.args[:2]
        sh, sw, ph, pw, H, W = self.hyper
        delta = _up(printer._print(G), sh, sw)
        full = (r"\operatorname{pad}_{k_h-1,\,k_w-1}"
                rf"\left({delta}\right) \star \operatorname{{rot180}}\left({printer._print(K)}\right)")
        body = (rf"\operatorname{{crop}}_{{{_pair(ph, pw)}}}\left({full}\right)"
                if ph or pw else full)
        return _power(body, exp)


class Conv2dGradKernel(ArrayOp):
    """dL/dK[f,c,u,v] = sum_{n,y,x} Apad[n,c,y+u,x+v] Gd[n,f,y,x] (weight sharing).

    Args ``(A, G, sh, sw, ph, pw, kh, kw)``: the padded input correlated with
    the stride-dilated delta Gd, summed over the batch and all positions,
    keeping the kh x kw offsets: (F, C, kh, kw).
    """

    nargs = 8
    arrays = 2

    @property
    def precedence(self):
        return PRECEDENCE["Func"] if self.hyper[:2] != (1, 1) else PRECEDENCE["Mul"] - 1

    @classmethod
    def scalar(cls, A, G, sh, sw, ph, pw, kh, kw):
        N, C = A.shape[:2]
        F = G.shape[1]
        Ap, Gd = _zero_pad(A, ph, pw), _dilate(G, sh, sw)
        Hd, Wd = Gd.shape[2:]
        dK = np.empty((F, C, kh, kw), dtype=object)
        for f, c, u, v in itertools.product(range(F), range(C), range(kh), range(kw)):
            dK[f, c, u, v] = sp.Add(*[Ap[n, c, y + u, x + v] * Gd[n, f, y, x]
                                      for n in range(N) for y in range(Hd) for x in range(Wd)])
        return dK

    @classmethod
    def shape(cls, A, G, sh, sw, ph, pw, kh, kw):
        N, C, H, W = A
        if G[0] != N or _out_size((H, W), (kh, kw), (sh, sw), (ph, pw)) != tuple(G[2:]):
            raise ValueError(f"conv2d kernel gradient: input {A}, delta {G}")
        return (G[1], C, kh, kw)

    def _numpycode(self, printer):
        sh, sw, ph, pw, kh, kw = self.hyper
        return self._call(printer, f"({sh}, {sw})", f"({ph}, {pw})", f"({kh}, {kw})")

    def _latex(self, printer, exp=None):
        A, G = self.args[:2]
        sh, sw, ph, pw, kh, kw = self.hyper
        body = (rf"{_pad(printer._print(A), ph, pw)} \star "
                rf"{_up(printer._print(G), sh, sw)}")
        if (sh, sw) != (1, 1):  # the dilated delta reaches past the kernel's extent
            body = rf"\left[{body}\right]_{{{kh}\times {kw}}}"
        return _power(body, exp)


class ChannelSum(ArrayOp):
    """dL/db[f] = sum_{n,i,j} G[n,f,i,j]: one bias per filter, shared by every position."""

    nargs = 1
    precedence = PRECEDENCE["Add"]

    @classmethod
    def scalar(cls, G):
        N, F, Ho, Wo = G.shape
        out = np.empty((F,), dtype=object)
        for f in range(F):
            out[f] = sp.Add(*[G[n, f, i, j] for n in range(N) for i in range(Ho)
                              for j in range(Wo)])
        return out

    @classmethod
    def shape(cls, G):
        return (G[1],)

    def _numpycode(self, printer):
        return self._call(printer)

    def _latex(self, printer, exp=None):
        return _power(rf"\sum_{{n,i,j}} {_entry(printer, self.args[0], 'n,:,i,j')}", exp)


# ---------------------------------------------------------------- pooling


class MaxPool2d(ArrayOp):
    """P[n,c,i,j] = max_{u<kh, v<kw} A[n,c,i*sh+u,j*sw+v]; args ``(A, kh, kw, sh, sw)``."""

    nargs = 5

    @classmethod
    def scalar(cls, A, kh, kw, sh, sw):
        N, C, H, W = A.shape
        Ho, Wo = _out_size((H, W), (kh, kw), (sh, sw))
        P = np.empty((N, C, Ho, Wo), dtype=object)
        for n, c, i, j in itertools.product(range(N), range(C), range(Ho), range(Wo)):
            P[n, c, i, j] = sp.Max(*[A[n, c, i * sh + u, j * sw + v]
                                     for u in range(kh) for v in range(kw)])
        return P

    @classmethod
    def shape(cls, A, kh, kw, sh, sw):
        return tuple(A[:2]) + _out_size(A[2:], (kh, kw), (sh, sw))

    def _numpycode(self, printer):
        kh, kw, sh, sw = self.hyper
        return self._call(printer, f"({kh}, {kw})", f"({sh}, {sw})")

    def _latex(self, printer, exp=None):
        kh, kw, sh, sw = self.hyper
        return _power(rf"{_pool('maxpool', kh, kw, sh, sw)}\left({printer._print(self.args[0])}"
                      r"\right)", exp)


class MaxPool2dGrad(ArrayOp):
    """dL/dA for P = MaxPool2d(A, ...): each G[n,c,i,j] routed to the arg-max of its window.

    Args ``(G, A, kh, kw, sh, sw)``.  Tie rule: when a window's maximum occurs
    more than once, the first occurrence in row-major window order (smallest
    u, then smallest v) receives all of G; overlapping windows accumulate.
    """

    nargs = 6
    arrays = 2

    @classmethod
    def scalar(cls, G, A, kh, kw, sh, sw):
        N, C, Ho, Wo = G.shape
        dA = np.full(A.shape, sp.S.Zero, dtype=object)
        for n, c, i, j in itertools.product(range(N), range(C), range(Ho), range(Wo)):
            window = [A[n, c, i * sh + u, j * sw + v] for u in range(kh) for v in range(kw)]
            for k, a in enumerate(window):  # a wins: above every earlier entry, not below a later
                wins = sp.And(*[a > q for q in window[:k]], *[a >= q for q in window[k + 1:]])
                dA[n, c, i * sh + k // kw, j * sw + k % kw] += \
                    sp.Piecewise((G[n, c, i, j], wins), (0, True))
        return dA

    @classmethod
    def shape(cls, G, A, kh, kw, sh, sw):
        if tuple(G) != MaxPool2d.shape(A, kh, kw, sh, sw):
            raise ValueError(f"max-pool gradient: delta {G}, input {A}")
        return tuple(A)

    def _numpycode(self, printer):
        kh, kw, sh, sw = self.hyper
        return self._call(printer, f"({kh}, {kw})", f"({sh}, {sw})")

    def _latex(self, printer, exp=None):
        G, A = self.args[:2]
        kh, kw, sh, sw = self.hyper
        stride = "" if (sh, sw) == (kh, kw) else rf",\,s={_pair(sh, sw)}"
        where = rf"\arg\max_{{{kh}\times {kw}{stride}}} {_group(printer._print(A))}"
        return _power(rf"\operatorname{{route}}_{{{where}}}\left({printer._print(G)}\right)",
                      exp)


class AvgPool2d(ArrayOp):
    """P[n,c,i,j] = sum_{u<kh, v<kw} A[n,c,i*sh+u,j*sw+v] / (kh*kw); args ``(A, kh, kw, sh, sw)``."""

    nargs = 5

    @classmethod
    def scalar(cls, A, kh, kw, sh, sw):
        N, C, H, W = A.shape
        Ho, Wo = _out_size((H, W), (kh, kw), (sh, sw))
        P = np.empty((N, C, Ho, Wo), dtype=object)
        for n, c, i, j in itertools.product(range(N), range(C), range(Ho), range(Wo)):
            P[n, c, i, j] = sp.Add(*[A[n, c, i * sh + u, j * sw + v] for u in range(kh)
                                     for v in range(kw)]) / (kh * kw)
        return P

    @classmethod
    def shape(cls, A, kh, kw, sh, sw):
        return tuple(A[:2]) + _out_size(A[2:], (kh, kw), (sh, sw))

    def _numpycode(self, printer):
        kh, kw, sh, sw = self.hyper
        return self._call(printer, f"({kh}, {kw})", f"({sh}, {sw})")

    def _latex(self, printer, exp=None):
        kh, kw, sh, sw = self.hyper
        return _power(rf"{_pool('avgpool', kh, kw, sh, sw)}\left({printer._print(self.args[0])}"
                      r"\right)", exp)


class AvgPool2dGrad(ArrayOp):
    """dA[n,c,i*sh+u,j*sw+v] += G[n,c,i,j]/(kh*kw); args ``(G, kh, kw, sh, sw, H, W)``."""

    nargs = 7
    precedence = PRECEDENCE["Mul"] - 1

    @classmethod
    def scalar(cls, G, kh, kw, sh, sw, H, W):
        N, C, Ho, Wo = G.shape
        dA = np.full((N, C, H, W), sp.S.Zero, dtype=object)
        for n, c, i, j in itertools.product(range(N), range(C), range(Ho), range(Wo)):
            for u, v in itertools.product(range(kh), range(kw)):
                dA[n, c, i * sh + u, j * sw + v] += G[n, c, i, j] / (kh * kw)
        return dA

    @classmethod
    def shape(cls, G, kh, kw, sh, sw, H, W):
        if tuple(G[2:]) != _out_size((H, W), (kh, kw), (sh, sw)):
            raise ValueError(f"average-pool gradient: delta {G}, input {H}x{W}")
        return tuple(G[:2]) + (H, W)

    def _numpycode(self, printer):
        kh, kw, sh, sw, H, W = self.hyper
        return self._call(printer, f"({kh}, {kw})", f"({sh}, {sw})", f"({H}, {W})")

    def _latex(self, printer, exp=None):
        kh, kw, sh, sw, H, W = self.hyper
        body = (rf"\frac{{1}}{{{kh * kw}}} {_pool('upsample', kh, kw, sh, sw)}"
                rf"\left({printer._print(self.args[0])}\right)")
        return _power(body, exp)


# ---------------------------------------------------------------- reshapes


class Flatten(ArrayOp):
    """F[n, (c*H + h)*W + w] = A[n,c,h,w]: (N,C,H,W) -> (N, C*H*W), row-major."""

    view = True  # NumPy returns a view: the memory plan treats it as its operand's array
    nargs = 1

    @classmethod
    def scalar(cls, A):
        N, C, H, W = A.shape
        out = np.empty((N, C * H * W), dtype=object)
        for n, c, h, w in itertools.product(range(N), range(C), range(H), range(W)):
            out[n, (c * H + h) * W + w] = A[n, c, h, w]
        return out

    @classmethod
    def shape(cls, A):
        N, C, H, W = A
        return (N, C * H * W)

    def _numpycode(self, printer):
        arg = _operand(printer._print(self.args[0]))
        return f"{arg}.reshape({arg}.shape[0], -1)"

    def _latex(self, printer, exp=None):
        return _power(rf"\operatorname{{vec}}\left({printer._print(self.args[0])}\right)", exp)


class Unflatten(ArrayOp):
    """U[n,c,h,w] = G[n, (c*H + h)*W + w]: (N, C*H*W) -> (N,C,H,W); args ``(G, C, H, W)``."""

    view = True  # NumPy returns a view: the memory plan treats it as its operand's array
    nargs = 4

    @classmethod
    def scalar(cls, G, C, H, W):
        N = G.shape[0]
        out = np.empty((N, C, H, W), dtype=object)
        for n, c, h, w in itertools.product(range(N), range(C), range(H), range(W)):
            out[n, c, h, w] = G[n, (c * H + h) * W + w]
        return out

    @classmethod
    def shape(cls, G, C, H, W):
        if G[1] != C * H * W:
            raise ValueError(f"unflatten: {G} is not (N, {C}*{H}*{W})")
        return (G[0], C, H, W)

    def _numpycode(self, printer):
        arg = _operand(printer._print(self.args[0]))
        C, H, W = self.hyper
        return f"{arg}.reshape({arg}.shape[0], {C}, {H}, {W})"

    def _latex(self, printer, exp=None):
        C, H, W = self.hyper
        return _power(rf"\operatorname{{vec}}^{{-1}}_{{{C}\times {H}\times {W}}}"
                      rf"\left({printer._print(self.args[0])}\right)", exp)


# ---------------------------------------------------------------- internals


def _no_bias(b) -> bool:
    """Whether a bias argument means no bias."""
    return b is None or (not isinstance(b, (np.ndarray, tuple, list)) and b == 0)


def _out_size(size, kernel, stride, padding=(0, 0)) -> tuple:
    """Output rows and columns of a window operation; ``ValueError`` if no window fits."""
    out = tuple((s + 2 * p - k) // t + 1 for s, k, t, p in zip(size, kernel, stride, padding))
    if any(o < 1 for o in out if isinstance(o, int)):
        raise ValueError(f"a {kernel} window does not fit a {size} input padded by {padding}")
    return out


def _zero_pad(A, ph, pw):
    """An object array with ph zero rows and pw zero columns on each side."""
    N, C, H, W = A.shape
    out = np.full((N, C, H + 2 * ph, W + 2 * pw), sp.S.Zero, dtype=object)
    out[:, :, ph:ph + H, pw:pw + W] = A
    return out


def _dilate(G, sh, sw):
    """An object array with sh-1 zero rows and sw-1 zero columns between entries."""
    N, F, Ho, Wo = G.shape
    out = np.full((N, F, (Ho - 1) * sh + 1, (Wo - 1) * sw + 1), sp.S.Zero, dtype=object)
    out[:, :, ::sh, ::sw] = G
    return out


def _operand(code: str) -> str:
    """Code as the object of a method call: parenthesised unless a name."""
    return code if code.isidentifier() else f"({code})"


def _pair(a: int, b: int) -> str:
    return f"{a}" if a == b else f"{a},\\,{b}"


def _pad(text: str, ph: int, pw: int) -> str:
    return rf"\operatorname{{pad}}_{{{_pair(ph, pw)}}}\left({text}\right)" if ph or pw else text


def _down(text: str, sh: int, sw: int) -> str:
    return rf"\left({text}\right)_{{\downarrow {_pair(sh, sw)}}}" if (sh, sw) != (1, 1) else text


def _up(text: str, sh: int, sw: int) -> str:
    return _subscript(text, rf"\uparrow {_pair(sh, sw)}") if (sh, sw) != (1, 1) else text


def _group(text: str) -> str:
    """``text`` as one operand: bracketed when it is compound."""
    return rf"\left({text}\right)" if " " in text or "\\frac" in text else text


#: A symbol that takes a subscript as it is: a letter or command, maybe a superscript.
_PLAIN = re.compile(r"\\?[A-Za-z]+(\^\{[^{}]*\})?")


def _subscript(text: str, sub: str) -> str:
    """``text_{sub}``, bracketing ``text`` unless it is a plain symbol."""
    head = text if _PLAIN.fullmatch(text) else rf"\left({text}\right)"
    return f"{head}_{{{sub}}}"


def _entry(printer, arg, index: str) -> str:
    return _subscript(printer._print(arg), index)


def _pool(name: str, kh: int, kw: int, sh: int, sw: int) -> str:
    stride = "" if (sh, sw) == (kh, kw) else rf",\,s={_pair(sh, sw)}"
    return rf"\operatorname{{{name}}}_{{{kh}\times {kw}{stride}}}"


def _power(text: str, exp) -> str:
    return rf"\left({text}\right)^{{{exp}}}" if exp else text
