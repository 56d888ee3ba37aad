"""Proof obligations of normalisation, embedding and dropout (symgrad.ops.norm, norm_kernels).

(a) SymPy differentiates L = sum(G * forward), the forward written out here entry by entry
    from the textbook formula, and the result equals the VJP classes' scalar forms;
(b) the closed form of dL/dX equals the staged chain rule (SymPy, exactly), and a wrong
    closed form is caught by the same check;
(c) the NumPy kernels equal the scalar forms numerically and keep float32;
(d) PyTorch (F.layer_norm, F.batch_norm(training=True), F.embedding, dropout with a fixed
    mask) agrees with the kernels forward and backward in float64.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import sympy as sp

from symgrad.ops import norm_kernels as K
from symgrad.ops.norm import (
    AxisSum,
    Embedding,
    EmbeddingGrad,
    NormGradInput,
    _staged_scalar,
    closed_form_proof,
)
from symgrad.printing import ArrayCodePrinter

EPS = sp.Rational(1, 10)


def symbols(prefix, shape):
    return np.array(sp.symbols(f"{prefix}:{shape[0]}:{shape[1]}", real=True)).reshape(shape)


def textbook_norm(X, gamma, beta, axis):
    """Y[i,j] = gamma_j (x_ij - mean) / sqrt(var + eps) + beta_j, loops written out."""
    n, f = X.shape
    Y = np.empty(X.shape, dtype=object)
    for i, j in itertools.product(range(n), range(f)):
        line = [X[k, j] for k in range(n)] if axis == 0 else [X[i, k] for k in range(f)]
        mean = sp.Add(*line) / len(line)
        var = sp.Add(*[(x - mean) ** 2 for x in line]) / len(line)
        Y[i, j] = gamma[j] * (X[i, j] - mean) / sp.sqrt(var + EPS) + beta[j]
    return Y


def numeric_stats(X, axis):
    mean = X.mean(axis=axis, keepdims=True)
    var = ((X - mean) ** 2).mean(axis=axis, keepdims=True)
    r = 1 / np.sqrt(var + float(EPS))
    return (X - mean) * r, r


@pytest.mark.parametrize("axis,shape", [(0, (3, 2)), (1, (2, 3)), (0, (2, 2)), (1, (2, 4))])
def test_norm_vjp_equals_sympy_diff(axis, shape):
    X, G = symbols("x", shape), symbols("g", shape)
    gamma = np.array(sp.symbols(f"c:{shape[1]}", real=True))
    beta = np.array(sp.symbols(f"b:{shape[1]}", real=True))
    L = sp.Add(*(G * textbook_norm(X, gamma, beta, axis)).ravel())
    rng = np.random.default_rng(axis + shape[0])
    point = {s: sp.Rational(int(rng.integers(-9, 10)), 7)
             for s in [*X.ravel(), *G.ravel(), *gamma, *beta]}
    Xv = np.array([[float(point[x]) for x in row] for row in X])
    Gv = np.array([[float(point[g]) for g in row] for row in G])
    cv = np.array([float(point[c]) for c in gamma])
    xhat, r = numeric_stats(Xv, axis)
    closed = NormGradInput.scalar(Gv.astype(object), xhat.astype(object), r.astype(object),
                                  cv.astype(object), axis, 0).astype(float)
    dgamma = AxisSum.scalar((Gv * xhat).astype(object), 0, 0).astype(float)
    for (i, j), x in np.ndenumerate(X):
        assert float(sp.diff(L, x).subs(point)) == pytest.approx(closed[i, j], rel=1e-12,
                                                                 abs=1e-12)
    for j, c in enumerate(gamma):
        assert float(sp.diff(L, c).subs(point)) == pytest.approx(dgamma[j], rel=1e-12)
        assert float(sp.diff(L, beta[j]).subs(point)) == pytest.approx(Gv[:, j].sum())


@pytest.mark.parametrize("axis", [0, 1])
def test_closed_form_equals_staged(axis):
    assert closed_form_proof(axis, 3)
    assert closed_form_proof(axis, 2)


def test_a_wrong_closed_form_is_caught():
    """The identity check can fail: drop the sum(g) term and it no longer holds."""
    X, G = symbols("x", (2, 3)), symbols("g", (2, 3))
    gamma = np.array(sp.symbols("c:3", real=True))
    r = np.array(sp.symbols("r:2", positive=True)).reshape(-1, 1)
    staged, xc = _staged_scalar(G, X, gamma, r, 1)
    g = G * gamma.reshape(1, -1)
    wrong = r * (g - xc * r * (g * xc * r).sum(axis=1, keepdims=True) / 3)
    assert any(sp.expand(a - b) != 0 for a, b in zip(staged.ravel(), wrong.ravel()))


@pytest.mark.parametrize("ids", [[[0, 2], [2, 2]], [[1], [1]], [[3, 0, 3], [1, 3, 3]]])
def test_embedding_vjp_equals_sympy_diff(ids):
    ids = np.array(ids)
    vocab, dim = 4, 2
    E = symbols("e", (vocab, dim))
    G = symbols("g", (ids.shape[0], ids.shape[1] * dim))
    forward = np.empty(G.shape, dtype=object)
    for n, t, d in itertools.product(range(ids.shape[0]), range(ids.shape[1]), range(dim)):
        forward[n, t * dim + d] = E[ids[n, t], d]  # the textbook lookup
    assert (Embedding.scalar(ids, E, vocab) == forward).all()
    L = sp.Add(*(G * forward).ravel())
    grad = EmbeddingGrad.scalar(ids, G, vocab)
    for (v, d), e in np.ndenumerate(E):
        assert sp.expand(sp.diff(L, e) - grad[v, d]) == 0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernels_equal_scalar_forms(dtype):
    rng = np.random.default_rng(3)
    for axis in (0, 1):
        X, G = rng.normal(size=(4, 3)).astype(dtype), rng.normal(size=(4, 3)).astype(dtype)
        gamma = rng.normal(size=3).astype(dtype)
        xhat, r = numeric_stats(X, axis)
        got = K._norm_grad_input(G, xhat.astype(dtype), r.astype(dtype), gamma, axis)
        want = NormGradInput.scalar(G.astype(object), xhat.astype(object), r.astype(object),
                                    gamma.astype(object), axis, 0).astype(float)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=1e-4 if dtype == np.float32 else 1e-12,
                                   atol=1e-5 if dtype == np.float32 else 1e-12)
    ids = np.array([[1, 1, 0], [2, 1, 1]])
    E = rng.normal(size=(3, 2)).astype(dtype)
    G = rng.normal(size=(2, 6)).astype(dtype)
    assert K._embedding(ids, E).dtype == dtype
    np.testing.assert_array_equal(K._embedding(ids, E),
                                  Embedding.scalar(ids, E.astype(object), 3).astype(dtype))
    dE = K._embedding_grad(ids, G, 3)
    assert dE.dtype == dtype
    np.testing.assert_allclose(dE, EmbeddingGrad.scalar(ids, G.astype(object), 3)
                               .astype(float), rtol=1e-6)
    # W[idx] += g drops repeated ids; the kernel does not
    naive = np.zeros_like(dE)
    naive[ids.reshape(-1)] += G.reshape(-1, 2)
    assert not np.allclose(naive, dE)


def test_dropout_mask_seeded_scaled_float32():
    a = K._dropout_mask(np.random.default_rng(5), (400, 50), 0.25, np.float32)
    b = K._dropout_mask(np.random.default_rng(5), (400, 50), 0.25, np.float32)
    assert a.dtype == np.float32 and (a == b).all()
    assert set(np.unique(a)) == {0.0, np.float32(1 / 0.75)}
    assert (a == 0).mean() == pytest.approx(0.25, abs=0.02)
    assert a.mean() == pytest.approx(1.0, abs=0.03)
    assert (K._dropout_mask(np.random.default_rng(0), (3, 3), 0.0, np.float64) == 1).all()


def test_numpy_views():
    p = ArrayCodePrinter()
    G, x, r, c, ids, E = sp.symbols("delta2 xhat2 rstd2 gamma2 X E1")
    assert p.doprint(NormGradInput(G, x, r, c, 0, 0)) == "_norm_grad_input(delta2, xhat2, rstd2, gamma2, 0)"
    assert p.doprint(Embedding(ids, E, 9)) == "_embedding(X, E1)"
    assert p.doprint(EmbeddingGrad(ids, G, 9)) == "_embedding_grad(X, delta2, 9)"
    assert p.doprint(AxisSum(G * x, 0, 0)) == "(delta2*xhat2).sum(axis=0)"
    assert p.helpers == {"_norm_grad_input", "_embedding", "_embedding_grad"}


torch = pytest.importorskip("torch")
F = torch.nn.functional


def test_torch_layer_and_batch_norm_agree_with_kernels():
    rng = np.random.default_rng(7)
    X, G = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    gamma, beta = rng.normal(size=5), rng.normal(size=5)
    for axis in (0, 1):
        x = torch.tensor(X, requires_grad=True)
        g_, b_ = torch.tensor(gamma, requires_grad=True), torch.tensor(beta, requires_grad=True)
        if axis == 1:
            y = F.layer_norm(x, (5,), g_, b_, eps=float(EPS))
        else:
            y = F.batch_norm(x, None, None, g_, b_, training=True, eps=float(EPS))
        y.backward(torch.tensor(G))
        xhat, r = numeric_stats(X, axis)
        np.testing.assert_allclose(gamma * xhat + beta, y.detach().numpy(), rtol=1e-12,
                                   atol=1e-12)
        np.testing.assert_allclose(K._norm_grad_input(G, xhat, r, gamma, axis),
                                   x.grad.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose((G * xhat).sum(axis=0), g_.grad.numpy(), rtol=1e-10)
        np.testing.assert_allclose(G.sum(axis=0), b_.grad.numpy(), rtol=1e-12)


def test_torch_embedding_with_repeated_ids():
    ids = np.array([[3, 3, 1], [0, 3, 3]])
    rng = np.random.default_rng(8)
    E, G = rng.normal(size=(5, 4)), rng.normal(size=(2, 12))
    e = torch.tensor(E, requires_grad=True)
    out = F.embedding(torch.tensor(ids), e).reshape(2, -1)
    out.backward(torch.tensor(G))
    np.testing.assert_array_equal(K._embedding(ids, E), out.detach().numpy())
    np.testing.assert_allclose(K._embedding_grad(ids, G, 5), e.grad.numpy(), rtol=1e-12)


def test_torch_dropout_with_fixed_mask():
    rng = np.random.default_rng(9)
    A, G = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    mask = K._dropout_mask(np.random.default_rng(1), A.shape, 0.5, A.dtype)
    a = torch.tensor(A, requires_grad=True)
    keep = torch.tensor(mask != 0)
    y = torch.where(keep, a / (1 - 0.5), torch.zeros_like(a))  # torch's inverted dropout
    y.backward(torch.tensor(G))
    np.testing.assert_allclose(mask * A, y.detach().numpy(), rtol=1e-15)
    np.testing.assert_allclose(G * mask, a.grad.numpy(), rtol=1e-15)
