r"""Normalisation, embedding and dropout as SymPy expressions over whole arrays.

Contract as :mod:`symgrad.ops.conv`: each class is an
:class:`~symgrad.ops.arrays.ArrayOp` (arrays first, then integer
hyper-parameters) with a ``scalar`` form written entry by entry from the
textbook formula, a ``shape``, a NumPy view calling a helper from
:mod:`symgrad.ops.norm_kernels` (or a method) and a LaTeX view.

Batch and layer normalisation of ``X`` over ``axis`` (0: the batch, for
batch norm; 1: the features of each sample, for layer norm), with ``D``
entries along it, in stages:

    mu = mean(X),  Xc = X - mu,  var = mean(Xc^2),  r = (var + eps)^(-1/2),
    Xhat = Xc r,   Y = gamma Xhat + beta.

The staged chain rule, from ``G = dL/dY``: ``dL/dXhat = gamma G``,
``dL/dr = sum(dL/dXhat Xc)``, ``dL/dvar = -r^3/2 dL/dr``,
``dL/dmu = -r sum(dL/dXhat) - 2/D dL/dvar sum(Xc)``,
``dL/dX = r dL/dXhat + 2/D dL/dvar Xc + 1/D dL/dmu``; its closed form
(:class:`NormGradInput`), with ``g = gamma G``,

    dL/dX = (1/D) r (D g - sum(g) - Xhat sum(g Xhat)),

which for batch norm (gamma constant along the batch) is
``(1/N) gamma r (N G - sum G - Xhat sum(G Xhat))``.  :func:`closed_form_proof`
has SymPy prove the two equal (they agree exactly because ``sum(Xc) = 0``).

>>> from symgrad.printing import ArrayCodePrinter
>>> G, xhat, r, gamma = sp.symbols("dL_da2 xhat2 rstd2 gamma2")
>>> ArrayCodePrinter().doprint(NormGradInput(G, xhat, r, gamma, 1, 4))
'_norm_grad_input(dL_da2, xhat2, rstd2, gamma2, 1)'
>>> closed_form_proof(1, 3)
True
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np
import sympy as sp
from sympy.printing.precedence import PRECEDENCE

from . import norm_kernels
from .arrays import ArrayOp as BaseArrayOp
from .arrays import register_kernels

register_kernels(norm_kernels)

__all__ = ["Mean", "AxisSum", "NormGradInput", "Embedding", "EmbeddingGrad", "DropoutMask",
           "closed_form_proof", "staged_terms"]


class ArrayOp(BaseArrayOp):
    """Base of this family: its NumPy views call :mod:`symgrad.ops.norm_kernels`."""

    kernels = norm_kernels


def _size(size: int) -> str:
    return "N" if int(size) == 0 else str(int(size))


def _index(axis: int) -> str:
    return "n" if int(axis) == 0 else "j"


def _operand(code: str) -> str:
    return code if code.isidentifier() else f"({code})"


class Mean(ArrayOp):
    """M = mean of A along ``axis``, kept as a length-1 axis; args ``(A, axis, size)``.

    ``size`` is the length of that axis for the LaTeX view (0: the batch size N).
    """

    nargs = 3

    @classmethod
    def scalar(cls, A, axis, size):
        return A.mean(axis=axis, keepdims=True)

    @classmethod
    def shape(cls, A, axis, size):
        return tuple(1 if i == axis else s for i, s in enumerate(A))

    def _numpycode(self, printer):
        arg = _operand(printer._print(self.args[0]))
        return f"{arg}.mean(axis={int(self.args[1])}, keepdims=True)"

    def _latex(self, printer, exp=None):
        axis, size = int(self.args[1]), int(self.args[2])
        body = (rf"\frac{{1}}{{{_size(size)}}} \sum_{{{_index(axis)}}} "
                rf"\left({printer._print(self.args[0])}\right)")
        return rf"\left({body}\right)^{{{exp}}}" if exp else body

    @property
    def precedence(self):
        return PRECEDENCE["Mul"]


class AxisSum(ArrayOp):
    """S = sum of A along ``axis``; ``keep`` 1 keeps it as a length-1 axis; args ``(A, axis, keep)``."""

    nargs = 3

    @classmethod
    def scalar(cls, A, axis, keep):
        return A.sum(axis=axis, keepdims=bool(keep))

    @classmethod
    def shape(cls, A, axis, keep):
        if keep:
            return tuple(1 if i == axis else s for i, s in enumerate(A))
        return tuple(s for i, s in enumerate(A) if i != axis)

    def _numpycode(self, printer):
        arg = _operand(printer._print(self.args[0]))
        keep = ", keepdims=True" if int(self.args[2]) else ""
        return f"{arg}.sum(axis={int(self.args[1])}{keep})"

    def _latex(self, printer, exp=None):
        body = rf"\sum_{{{_index(int(self.args[1]))}}} \left({printer._print(self.args[0])}\right)"
        return rf"\left({body}\right)^{{{exp}}}" if exp else body

    @property
    def precedence(self):
        return PRECEDENCE["Mul"]


class NormGradInput(ArrayOp):
    """dL/dX of batch or layer norm, closed form; args ``(G, Xhat, r, gamma, axis, size)``.

    dX = r * (g - mean(g) - Xhat * mean(g * Xhat)) with g = gamma * G, means over ``axis``;
    ``r`` has length 1 along ``axis``, gamma broadcasts along the features.
    """

    nargs = 6
    arrays = 4

    @classmethod
    def scalar(cls, G, Xhat, r, gamma, axis, size):
        g = G * gamma.reshape(1, -1)
        count = G.shape[axis]
        return (r / count) * (count * g - g.sum(axis=axis, keepdims=True)
                              - Xhat * (g * Xhat).sum(axis=axis, keepdims=True))

    @classmethod
    def shape(cls, G, Xhat, r, gamma, axis, size):
        if tuple(G) != tuple(Xhat) or tuple(gamma) != (G[1],):
            raise ValueError(f"norm gradient: delta {G}, normalised input {Xhat}, gamma {gamma}")
        return tuple(G)

    def _numpycode(self, printer):
        return self._call(printer, str(int(self.args[4])))

    def _latex(self, printer, exp=None):
        G, Xhat, r, gamma = (printer._print(a) for a in self.args[:4])
        axis, size = int(self.args[4]), int(self.args[5])
        D, i = _size(size), _index(axis)
        if axis == 0:  # gamma is constant along the batch: it comes out of the sums
            body = (rf"\frac{{1}}{{{D}}}\, {gamma} \odot {r} \odot \left({D}\, {G} - "
                    rf"\sum_{{{i}}} {G} - {Xhat} \odot \sum_{{{i}}} \left({G} \odot {Xhat}"
                    r"\right)\right)")
        else:
            g = rf"\left({gamma} \odot {G}\right)"
            body = (rf"\frac{{1}}{{{D}}}\, {r} \odot \left({D}\, {g} - \sum_{{{i}}} {g} - "
                    rf"{Xhat} \odot \sum_{{{i}}} \left({g} \odot {Xhat}\right)\right)")
        return rf"\left({body}\right)^{{{exp}}}" if exp else body


class Embedding(ArrayOp):
    """A[n, t*D + d] = E[ids[n, t], d] = (onehot(ids) E); args ``(ids, E, vocab)``."""

    nargs = 3
    arrays = 2

    @classmethod
    def scalar(cls, ids, E, vocab):
        n, t = ids.shape
        dim = E.shape[1]
        out = np.empty((n, t * dim), dtype=object)
        for i, j, d in itertools.product(range(n), range(t), range(dim)):
            # the one-hot row of ids[i, j] times column d of E
            out[i, j * dim + d] = sp.Add(*[(1 if int(ids[i, j]) == v else 0) * E[v, d]
                                           for v in range(vocab)])
        return out

    @classmethod
    def shape(cls, ids, E, vocab):
        if E[0] != vocab:
            raise ValueError(f"embedding: table {E} for a vocabulary of {vocab}")
        return (ids[0], ids[1] * E[1])

    def _numpycode(self, printer):
        return self._call(printer)

    def _latex(self, printer, exp=None):
        ids, E = (printer._print(a) for a in self.args[:2])
        body = rf"\operatorname{{onehot}}\left({ids}\right) {E}"
        return rf"\left({body}\right)^{{{exp}}}" if exp else body


class EmbeddingGrad(ArrayOp):
    """dE[v, d] = sum_{n,t: ids[n,t] = v} G[n, t*D + d] = (onehot(ids)^T G), a scatter-add.

    Args ``(ids, G, vocab)``.
    """

    nargs = 3
    arrays = 2

    @classmethod
    def scalar(cls, ids, G, vocab):
        n, t = ids.shape
        dim = G.shape[1] // t
        out = np.full((vocab, dim), sp.S.Zero, dtype=object)
        for v, d in itertools.product(range(vocab), range(dim)):
            out[v, d] = sp.Add(*[(1 if int(ids[i, j]) == v else 0) * G[i, j * dim + d]
                                 for i in range(n) for j in range(t)])
        return out

    @classmethod
    def shape(cls, ids, G, vocab):
        if G[1] % ids[1]:
            raise ValueError(f"embedding gradient: delta {G} for ids {ids}")
        return (vocab, G[1] // ids[1])

    def _numpycode(self, printer):
        return self._call(printer, str(int(self.args[2])))

    def _latex(self, printer, exp=None):
        ids, G = (printer._print(a) for a in self.args[:2])
        body = rf"\operatorname{{onehot}}\left({ids}\right)^{{\top}} {G}"
        return rf"\left({body}\right)^{{{exp}}}" if exp else body


class DropoutMask(ArrayOp):
    """M = keep / (1 - p), keep ~ Bernoulli(1 - p), shaped like A; args ``(A, p)``, p a Float.

    Drawn from the generated function's ``rng`` (seeded by its ``seed`` argument).
    """

    nargs = 2

    @property
    def hyper(self):
        return (float(self.args[1]),)

    @classmethod
    def scalar(cls, A, p):  # pragma: no cover - random: no scalar form
        raise TypeError("a dropout mask is drawn, not computed")

    @classmethod
    def shape(cls, A, p):
        return tuple(A)

    def _numpycode(self, printer):
        arg = _operand(printer._print(self.args[0]))
        return self._call(printer, f"{arg}.shape", repr(float(self.args[1])), f"{arg}.dtype",
                          arrays=["rng"])

    def _latex(self, printer, exp=None):
        p = sp.latex(sp.Float(float(self.args[1]), 6).round(6))
        return (rf"\frac{{\operatorname{{Bernoulli}}\left(1 - {p}\right)}}{{1 - {p}}}"
                rf"_{{\,\text{{shaped like }} {printer._print(self.args[0])}}}")


# ---------------------------------------------------------------- the staged chain rule


def staged_terms(G, xc, rstd, gamma, axis: int, size):
    """The staged chain rule as expressions: dL/dXhat, dL/dr, dL/dvar, dL/dmu, dL/dX.

    ``size`` is the number of entries along ``axis`` (a number or the symbol N); the
    sums are :class:`AxisSum` with the axis kept.  The arguments are SymPy symbols
    (whole arrays) for the derivation, or callables are not needed: :func:`_staged_scalar`
    evaluates the same formulas on object arrays.
    """
    dxhat = gamma * G
    drstd = AxisSum(dxhat * xc, axis, 1)
    dvar = -rstd ** 3 / 2 * drstd
    dmu = -rstd * AxisSum(dxhat, axis, 1) - 2 * dvar * AxisSum(xc, axis, 1) / size
    dX = rstd * dxhat + 2 * dvar * xc / size + dmu / size
    return dxhat, drstd, dvar, dmu, dX


def _staged_scalar(G, X, gamma, r, axis: int):
    """The same staged formulas on object arrays (``r`` a free symbol, broadcast)."""
    count = X.shape[axis]
    xc = X - X.sum(axis=axis, keepdims=True) / count
    dxhat = G * gamma.reshape(1, -1)
    drstd = (dxhat * xc).sum(axis=axis, keepdims=True)
    dvar = -r ** 3 / 2 * drstd
    dmu = -r * dxhat.sum(axis=axis, keepdims=True) - 2 * dvar * xc.sum(axis=axis,
                                                                        keepdims=True) / count
    return r * dxhat + 2 * dvar * xc / count + dmu / count, xc


@lru_cache(maxsize=None)
def closed_form_proof(axis: int, size: int = 3) -> bool:
    """SymPy's proof, on a (3, size) or (size, 3) batch, that the staged and closed forms agree.

    ``r`` stays a free symbol (it is constant along ``axis``); the identity needs only
    ``sum(Xc) = 0``, so the difference of the two forms expands to exactly 0.
    """
    shape = (size, 3) if axis == 0 else (3, size)
    X = np.array(sp.symbols(f"x:{shape[0]}:{shape[1]}", real=True)).reshape(shape)
    G = np.array(sp.symbols(f"g:{shape[0]}:{shape[1]}", real=True)).reshape(shape)
    gamma = np.array(sp.symbols(f"gamma:{shape[1]}", real=True))
    rs = sp.symbols(f"r:{shape[1 - axis]}", positive=True)
    r = np.array(rs).reshape((1, -1) if axis == 0 else (-1, 1))
    staged, xc = _staged_scalar(G, X, gamma, r, axis)
    closed = NormGradInput.scalar(G, xc * r, r, gamma, axis, 0)
    return all(sp.expand(a - b) == 0 for a, b in zip(staged.ravel(), closed.ravel()))
