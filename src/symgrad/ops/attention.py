r"""Scaled dot-product self-attention (Vaswani et al. 2017) as SymPy expressions over whole arrays.

Contract as :mod:`symgrad.ops.conv`: each class is an
:class:`~symgrad.ops.arrays.ArrayOp` (arrays first, then integer
hyper-parameters) with a ``scalar`` form written entry by entry from the
textbook formula (the backward classes from the textbook backward formulas,
never by differentiating), a ``shape``, a NumPy view calling a helper from
:mod:`symgrad.ops.attention_kernels` and a LaTeX view.  Sequences are
batch-first ``(N, T, D)``; with H heads the ``dk`` columns of Q, K and V are
H blocks of ``c = dk/H``, head h reading block h; scores and weights are
``(N, H, T, T)``.  The forward pass, per head:

    Q = X W_Q^T + b_Q,  K = X W_K^T (+ b_K),  V = X W_V^T + b_V,
    S = Q K^T / sqrt(c),  P = softmax(S + M) row by row,  O = P V,
    Y = O W_O^T + b_O   (+ X with a residual connection),

M = 0, or -inf above the diagonal (``causal``: query i sees keys j <= i).
The backward pass, from G = dL/dY: ``dO = G W_O``, ``dV = P^T dO``,
``dP = dO V^T``, ``dS = P * (dP - rowsum(dP * P))``, ``dQ = dS K/sqrt(c)``,
``dK = dS^T Q/sqrt(c)``, ``dX = dQ W_Q + dK W_K + dV W_V`` (+ G), and each
projection's ``dW = sum_{n,t} dZ_{n,t}^T A_{n,t}``, ``db = sum_{n,t} dZ_{n,t}``.

>>> from symgrad.printing import ArrayCodePrinter
>>> Q, K = sp.symbols("q2 k2")
>>> ArrayCodePrinter().doprint(Scores(Q, K, 1, 4))
'_attn_scores(q2, k2, 1)'
>>> Scores.shape((5, 3, 4), (5, 3, 4), 2, 4)
(5, 2, 3, 3)
"""

from __future__ import annotations

import itertools

import numpy as np
import sympy as sp
from sympy.printing.precedence import PRECEDENCE

from . import attention_kernels
from .arrays import ArrayOp as BaseArrayOp
from .arrays import lookup as _lookup
from .arrays import register_kernels

register_kernels(attention_kernels)

__all__ = ["Project", "ProjectGradInput", "ProjectGradWeight", "ProjectGradBias", "Scores",
           "AttnSoftmax", "Mix", "MixGradWeights", "MixGradValues", "AttnSoftmaxGrad",
           "ScoresGradQuery", "ScoresGradKey", "forward_scalar"]


class ArrayOp(BaseArrayOp):
    """Base of this family: its NumPy views call :mod:`.attention_kernels`."""

    kernels = attention_kernels

    @property
    def precedence(self):
        return PRECEDENCE["Mul"]

    def _sympystr(self, printer) -> str:
        return self._text(printer)


def _no_bias(b) -> bool:
    return b is None or (not isinstance(b, (np.ndarray, tuple, list)) and b == 0)


def _t(printer, arg) -> str:
    r"""``A^\top``, braced when the symbol already has a superscript."""
    text = printer._print(arg)
    return f"{{{text}}}^{{\\top}}" if "^" in text else f"{text}^{{\\top}}"


def _scale(dk, heads) -> str:
    c = int(dk) // int(heads)
    return rf"\frac{{1}}{{\sqrt{{{c}}}}}"


def _per_head(body: str, heads: int) -> str:
    """A product written once for one head; with several, for each head h, side by side."""
    if int(heads) == 1:
        return body
    return rf"\left[{body}\right]_{{h=1}}^{{{int(heads)}}}"


def _h(printer, arg, heads) -> str:
    """A head's block of columns: ``Q_h`` (the whole of Q with one head)."""
    text = printer._print(arg)
    if int(heads) == 1:
        return text
    return f"{{{text}}}_{{h}}" if "_" in text else f"{text}_{{h}}"


def _th(printer, arg, heads) -> str:
    text = _h(printer, arg, heads)
    return f"{{{text}}}^{{\\top}}" if "^" in text or "_" in text else f"{text}^{{\\top}}"


# ---------------------------------------------------------------- projections


class Project(ArrayOp):
    """Y[n,t,u] = sum_f X[n,t,f] W[u,f] + b[u]; args ``(X, W, b)``, b ``sp.S.Zero`` for none."""

    nargs = 3
    arrays = 3

    @classmethod
    def scalar(cls, X, W, b):
        N, T, F = X.shape
        U = W.shape[0]
        Y = np.empty((N, T, U), dtype=object)
        for n, t, u in itertools.product(range(N), range(T), range(U)):
            Y[n, t, u] = sp.Add(*[X[n, t, f] * W[u, f] for f in range(F)]) + (
                0 if _no_bias(b) else b[u])
        return Y

    @classmethod
    def shape(cls, X, W, b):
        N, T, F = X
        if tuple(W)[1:] != (F,) or (not _no_bias(b) and tuple(b) != (W[0],)):
            raise ValueError(f"projection: input {X}, weight {W}, bias {b} do not fit")
        return (N, T, W[0])

    def shape_at(self, shapes):
        X, W, b = self.args
        return type(self).shape(_lookup(shapes, X), _lookup(shapes, W),
                                None if b == 0 else _lookup(shapes, b))

    def scalar_at(self, values):
        X, W, b = self.args
        return type(self).scalar(_lookup(values, X), _lookup(values, W),
                                 None if b == 0 else _lookup(values, b))

    def _numpycode(self, printer):
        X, W, b = self.args
        arrays = [printer._print(X), printer._print(W), "None" if b == 0 else printer._print(b)]
        return self._call(printer, arrays=arrays)

    def _latex(self, printer, exp=None):
        X, W, b = self.args
        body = f"{printer._print(X)} {_t(printer, W)}"
        if b != 0:
            body += rf" + \mathbf{{1}} {_t(printer, b)}"
        return rf"\left({body}\right)^{{{exp}}}" if exp else body

    def _text(self, printer):
        X, W, b = (printer._print(a) for a in self.args)
        return f"{X} {W}ᵀ" + ("" if self.args[2] == 0 else f" + {b}")

    @property
    def precedence(self):
        return PRECEDENCE["Add"] if self.args[2] != 0 else PRECEDENCE["Mul"]


class ProjectGradInput(ArrayOp):
    """dX[n,t,f] = sum_u G[n,t,u] W[u,f] (dX = G W); args ``(G, W)``."""

    nargs = 2
    arrays = 2

    @classmethod
    def scalar(cls, G, W):
        N, T, U = G.shape
        F = W.shape[1]
        out = np.empty((N, T, F), dtype=object)
        for n, t, f in itertools.product(range(N), range(T), range(F)):
            out[n, t, f] = sp.Add(*[G[n, t, u] * W[u, f] for u in range(U)])
        return out

    @classmethod
    def shape(cls, G, W):
        if G[2] != W[0]:
            raise ValueError(f"projection input gradient: delta {G}, weight {W}")
        return (G[0], G[1], W[1])

    def _numpycode(self, printer):
        return self._call(printer)

    def _latex(self, printer, exp=None):
        G, W = (printer._print(a) for a in self.args)
        return rf"\left({G} {W}\right)^{{{exp}}}" if exp else f"{G} {W}"

    def _text(self, printer):
        G, W = (printer._print(a) for a in self.args)
        return f"{G} {W}"


class ProjectGradWeight(ArrayOp):
    """dW[u,f] = sum_{n,t} G[n,t,u] X[n,t,f]; args ``(G, X)``."""

    nargs = 2
    arrays = 2

    @classmethod
    def scalar(cls, G, X):
        N, T, U = G.shape
        F = X.shape[2]
        out = np.empty((U, F), dtype=object)
        for u, f in itertools.product(range(U), range(F)):
            out[u, f] = sp.Add(*[G[n, t, u] * X[n, t, f] for n in range(N) for t in range(T)])
        return out

    @classmethod
    def shape(cls, G, X):
        if tuple(G[:2]) != tuple(X[:2]):
            raise ValueError(f"projection weight gradient: delta {G}, input {X}")
        return (G[2], X[2])

    def _numpycode(self, printer):
        return self._call(printer)

    def _latex(self, printer, exp=None):
        G, X = self.args
        body = rf"\sum_{{n,t}} {_t(printer, G)}_{{n,t}} {printer._print(X)}_{{n,t}}"
        return rf"\left({body}\right)^{{{exp}}}" if exp else body

    def _text(self, printer):
        G, X = (printer._print(a) for a in self.args)
        return f"Σ_n,t {G}[n,t]ᵀ {X}[n,t]"


class ProjectGradBias(ArrayOp):
    """db[u] = sum_{n,t} G[n,t,u]; args ``(G,)``."""

    nargs = 1

    @classmethod
    def scalar(cls, G):
        return np.array([sp.Add(*G[:, :, u].ravel()) for u in range(G.shape[2])], dtype=object)

    @classmethod
    def shape(cls, G):
        return (G[2],)

    def _numpycode(self, printer):
        arg = printer._print(self.args[0])
        arg = arg if arg.isidentifier() else f"({arg})"
        return f"{arg}.sum(axis=(0, 1))"

    def _latex(self, printer, exp=None):
        body = rf"\sum_{{n,t}} {printer._print(self.args[0])}_{{n,t}}"
        return rf"\left({body}\right)^{{{exp}}}" if exp else body

    def _text(self, printer):
        return f"Σ_n,t {printer._print(self.args[0])}[n,t]"


# ---------------------------------------------------------------- scores and weights


def _heads(width: int, heads: int):
    c = width // heads
    return c, [range(h * c, (h + 1) * c) for h in range(heads)]


class Scores(ArrayOp):
    """S[n,h,i,j] = sum_{c in head h} Q[n,i,c] K[n,j,c] / sqrt(dk/H); args ``(Q, K, heads, dk)``."""

    nargs = 4
    arrays = 2

    @classmethod
    def scalar(cls, Q, K, heads, dk):
        N, T, _ = Q.shape
        c, cols = _heads(dk, heads)
        S = np.empty((N, heads, T, T), dtype=object)
        for n, h, i, j in itertools.product(range(N), range(heads), range(T), range(T)):
            S[n, h, i, j] = sp.Add(*[Q[n, i, k] * K[n, j, k] for k in cols[h]]) / sp.sqrt(c)
        return S

    @classmethod
    def shape(cls, Q, K, heads, dk):
        if tuple(Q) != tuple(K) or Q[2] != dk or dk % heads:
            raise ValueError(f"attention scores: queries {Q}, keys {K}, {heads} heads")
        return (Q[0], heads, Q[1], Q[1])

    def _numpycode(self, printer):
        return self._call(printer, str(self.hyper[0]))

    def _latex(self, printer, exp=None):
        Q, K = self.args[:2]
        heads, dk = self.hyper
        body = _per_head(f"{_scale(dk, heads)} {_h(printer, Q, heads)} {_th(printer, K, heads)}",
                         heads)
        return rf"\left({body}\right)^{{{exp}}}" if exp else body

    def _text(self, printer):
        Q, K = (printer._print(a) for a in self.args[:2])
        heads, dk = self.hyper
        return f"{Q} {K}ᵀ / √{dk // heads}" + (f" per head (H = {heads})" if heads > 1 else "")


class AttnSoftmax(ArrayOp):
    """P[n,h,i,:] = softmax of S[n,h,i,:] over keys j (causal: over j <= i, 0 beyond).

    Args ``(S, causal)``.
    """

    nargs = 2

    @classmethod
    def scalar(cls, S, causal):
        N, H, T, _ = S.shape
        P = np.full(S.shape, sp.S.Zero, dtype=object)
        for n, h, i in itertools.product(range(N), range(H), range(T)):
            keys = range(i + 1) if causal else range(T)
            total = sp.Add(*[sp.exp(S[n, h, i, j]) for j in keys])
            for j in keys:
                P[n, h, i, j] = sp.exp(S[n, h, i, j]) / total
        return P

    @classmethod
    def shape(cls, S, causal):
        return tuple(S)

    def _numpycode(self, printer):
        return self._call(printer, str(self.hyper[0]))

    def _latex(self, printer, exp=None):
        S = printer._print(self.args[0])
        if self.hyper[0]:
            body = (rf"\operatorname{{softmax}}_{{\mathrm{{row}}}}\left({S} + M\right),\ "
                    r"M_{ij} = -\infty \text{ for } j > i \text{ (causal)}")
        else:
            body = rf"\operatorname{{softmax}}_{{\mathrm{{row}}}}\left({S}\right)"
        return rf"\left({body}\right)^{{{exp}}}" if exp else body

    def _text(self, printer):
        S = printer._print(self.args[0])
        return f"softmax_row({S}" + (" + M), M = -inf above the diagonal" if self.hyper[0]
                                     else ")")

    @property
    def precedence(self):
        return PRECEDENCE["Func"]


class Mix(ArrayOp):
    """O[n,i,c] = sum_j P[n,h,i,j] V[n,j,c] for c in head h (O = P V); args ``(P, V, heads)``."""

    nargs = 3
    arrays = 2

    @classmethod
    def scalar(cls, P, V, heads):
        N, T, dk = V.shape
        _, cols = _heads(dk, heads)
        out = np.empty((N, T, dk), dtype=object)
        for n, h, i in itertools.product(range(N), range(heads), range(T)):
            for k in cols[h]:
                out[n, i, k] = sp.Add(*[P[n, h, i, j] * V[n, j, k] for j in range(T)])
        return out

    @classmethod
    def shape(cls, P, V, heads):
        if tuple(P) != (V[0], heads, V[1], V[1]):
            raise ValueError(f"attention mix: weights {P}, values {V}")
        return tuple(V)

    def _numpycode(self, printer):
        return self._call(printer, str(self.hyper[0]))

    def _latex(self, printer, exp=None):
        P, V = self.args[:2]
        heads = self.hyper[0]
        body = _per_head(f"{_h(printer, P, heads)} {_h(printer, V, heads)}", heads)
        return rf"\left({body}\right)^{{{exp}}}" if exp else body

    def _text(self, printer):
        P, V = (printer._print(a) for a in self.args[:2])
        return f"{P} {V}"


class MixGradWeights(ArrayOp):
    """dP[n,h,i,j] = sum_{c in head h} G[n,i,c] V[n,j,c] (dP = dO V^T); args ``(G, V, heads)``."""

    nargs = 3
    arrays = 2

    @classmethod
    def scalar(cls, G, V, heads):
        N, T, dk = V.shape
        _, cols = _heads(dk, heads)
        out = np.empty((N, heads, T, T), dtype=object)
        for n, h, i, j in itertools.product(range(N), range(heads), range(T), range(T)):
            out[n, h, i, j] = sp.Add(*[G[n, i, k] * V[n, j, k] for k in cols[h]])
        return out

    @classmethod
    def shape(cls, G, V, heads):
        if tuple(G) != tuple(V):
            raise ValueError(f"attention weight gradient: delta {G}, values {V}")
        return (V[0], heads, V[1], V[1])

    def _numpycode(self, printer):
        return self._call(printer, str(self.hyper[0]))

    def _latex(self, printer, exp=None):
        G, V = self.args[:2]
        heads = self.hyper[0]
        body = _per_head(f"{_h(printer, G, heads)} {_th(printer, V, heads)}", heads)
        return rf"\left({body}\right)^{{{exp}}}" if exp else body

    def _text(self, printer):
        G, V = (printer._print(a) for a in self.args[:2])
        return f"{G} {V}ᵀ"


class MixGradValues(ArrayOp):
    """dV[n,j,c] = sum_i P[n,h,i,j] G[n,i,c] for c in head h (dV = P^T dO); args ``(P, G, heads)``."""

    nargs = 3
    arrays = 2

    @classmethod
    def scalar(cls, P, G, heads):
        N, T, dk = G.shape
        _, cols = _heads(dk, heads)
        out = np.empty((N, T, dk), dtype=object)
        for n, h, j in itertools.product(range(N), range(heads), range(T)):
            for k in cols[h]:
                out[n, j, k] = sp.Add(*[P[n, h, i, j] * G[n, i, k] for i in range(T)])
        return out

    @classmethod
    def shape(cls, P, G, heads):
        if tuple(P) != (G[0], heads, G[1], G[1]):
            raise ValueError(f"attention value gradient: weights {P}, delta {G}")
        return tuple(G)

    def _numpycode(self, printer):
        return self._call(printer, str(self.hyper[0]))

    def _latex(self, printer, exp=None):
        P, G = self.args[:2]
        heads = self.hyper[0]
        body = _per_head(f"{_th(printer, P, heads)} {_h(printer, G, heads)}", heads)
        return rf"\left({body}\right)^{{{exp}}}" if exp else body

    def _text(self, printer):
        P, G = (printer._print(a) for a in self.args[:2])
        return f"{P}ᵀ {G}"


class AttnSoftmaxGrad(ArrayOp):
    """dS[n,h,i,j] = P[n,h,i,j] (G[n,h,i,j] - sum_j' G[n,h,i,j'] P[n,h,i,j']); args ``(P, G)``.

    Masked entries need no mask here: their P is 0.
    """

    nargs = 2
    arrays = 2

    @classmethod
    def scalar(cls, P, G):
        inner = (G * P).sum(axis=-1, keepdims=True)
        return P * (G - inner)

    @classmethod
    def shape(cls, P, G):
        if tuple(P) != tuple(G):
            raise ValueError(f"attention softmax gradient: weights {P}, delta {G}")
        return tuple(P)

    def _numpycode(self, printer):
        return self._call(printer)

    def _latex(self, printer, exp=None):
        P, G = (printer._print(a) for a in self.args)
        body = (rf"{P} \odot \left({G} - \operatorname{{rowsum}}\left({G} \odot {P}\right)"
                r"\mathbf{1}^{\top}\right)")
        return rf"\left({body}\right)^{{{exp}}}" if exp else body

    def _text(self, printer):
        P, G = (printer._print(a) for a in self.args)
        return f"{P} ⊙ ({G} - rowsum({G} ⊙ {P}))"


class ScoresGradQuery(ArrayOp):
    """dQ[n,i,c] = sum_j G[n,h,i,j] K[n,j,c] / sqrt(dk/H), c in head h; args ``(G, K, heads, dk)``."""

    nargs = 4
    arrays = 2

    @classmethod
    def scalar(cls, G, K, heads, dk):
        N, T, _ = K.shape
        c, cols = _heads(dk, heads)
        out = np.empty((N, T, dk), dtype=object)
        for n, h, i in itertools.product(range(N), range(heads), range(T)):
            for k in cols[h]:
                out[n, i, k] = sp.Add(*[G[n, h, i, j] * K[n, j, k] for j in range(T)]) / sp.sqrt(c)
        return out

    @classmethod
    def shape(cls, G, K, heads, dk):
        if tuple(G) != (K[0], heads, K[1], K[1]):
            raise ValueError(f"attention query gradient: delta {G}, keys {K}")
        return tuple(K)

    def _numpycode(self, printer):
        return self._call(printer, str(self.hyper[0]))

    def _latex(self, printer, exp=None):
        G, K = self.args[:2]
        heads, dk = self.hyper
        body = _per_head(f"{_scale(dk, heads)} {_h(printer, G, heads)} {_h(printer, K, heads)}",
                         heads)
        return rf"\left({body}\right)^{{{exp}}}" if exp else body

    def _text(self, printer):
        G, K = (printer._print(a) for a in self.args[:2])
        heads, dk = self.hyper
        return f"{G} {K} / √{dk // heads}"


class ScoresGradKey(ArrayOp):
    """dK[n,j,c] = sum_i G[n,h,i,j] Q[n,i,c] / sqrt(dk/H), c in head h; args ``(G, Q, heads, dk)``."""

    nargs = 4
    arrays = 2

    @classmethod
    def scalar(cls, G, Q, heads, dk):
        N, T, _ = Q.shape
        c, cols = _heads(dk, heads)
        out = np.empty((N, T, dk), dtype=object)
        for n, h, j in itertools.product(range(N), range(heads), range(T)):
            for k in cols[h]:
                out[n, j, k] = sp.Add(*[G[n, h, i, j] * Q[n, i, k] for i in range(T)]) / sp.sqrt(c)
        return out

    @classmethod
    def shape(cls, G, Q, heads, dk):
        if tuple(G) != (Q[0], heads, Q[1], Q[1]):
            raise ValueError(f"attention key gradient: delta {G}, queries {Q}")
        return tuple(Q)

    def _numpycode(self, printer):
        return self._call(printer, str(self.hyper[0]))

    def _latex(self, printer, exp=None):
        G, Q = self.args[:2]
        heads, dk = self.hyper
        body = _per_head(f"{_scale(dk, heads)} {_th(printer, G, heads)} {_h(printer, Q, heads)}",
                         heads)
        return rf"\left({body}\right)^{{{exp}}}" if exp else body

    def _text(self, printer):
        G, Q = (printer._print(a) for a in self.args[:2])
        heads, dk = self.hyper
        return f"{G}ᵀ {Q} / √{dk // heads}"


# ---------------------------------------------------------------- the whole layer, written out


def forward_scalar(X, Wq, Wk, Wv, Wo, bq=None, bk=None, bv=None, bo=None, *, heads=1,
                   causal=False, residual=False):
    """Y of the whole layer with explicit sums, directly from the textbook formula (no classes).

    Every entry is written out: q_i = x_i W_Q^T + b_Q, ..., s_ij = q_i.k_j / sqrt(c),
    p_ij = exp(s_ij) / sum_{j' allowed} exp(s_ij'), o_i = sum_j p_ij v_j, y_i = o_i W_O^T + b_O.
    """
    N, T, D = X.shape
    dk = Wq.shape[0]
    c = dk // heads

    def lin(x, W, b, u):
        return sp.Add(*[x[f] * W[u, f] for f in range(len(x))]) + (0 if b is None else b[u])

    Y = np.empty((N, T, Wo.shape[0]), dtype=object)
    for n in range(N):
        q = [[lin(X[n, t], Wq, bq, u) for u in range(dk)] for t in range(T)]
        k = [[lin(X[n, t], Wk, bk, u) for u in range(dk)] for t in range(T)]
        v = [[lin(X[n, t], Wv, bv, u) for u in range(dk)] for t in range(T)]
        o = [[sp.S.Zero] * dk for _ in range(T)]
        for h, i in itertools.product(range(heads), range(T)):
            block = range(h * c, (h + 1) * c)
            keys = range(i + 1) if causal else range(T)
            e = {j: sp.exp(sp.Add(*[q[i][u] * k[j][u] for u in block]) / sp.sqrt(c))
                 for j in keys}
            total = sp.Add(*e.values())
            for u in block:
                o[i][u] = sp.Add(*[e[j] / total * v[j][u] for j in keys])
        for t, u in itertools.product(range(T), range(Wo.shape[0])):
            Y[n, t, u] = lin(o[t], Wo, bo, u) + (X[n, t, u] if residual else 0)
    return Y
