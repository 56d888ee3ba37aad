"""Proof obligations of the convolution family (symgrad.ops.conv and symgrad.ops.kernels).

Table-driven, like JAX's lax_autodiff_test: for every configuration
(a) SymPy differentiates L = sum(G * forward) entry by entry and the result
    equals the VJP class's scalar form, written from the textbook formula;
(b) the NumPy kernels, run from copies of their source made as the code
    generator makes them, equal the scalar forms evaluated numerically, and
    keep float32;
(c) PyTorch's forward ops and autograd agree with the kernels to 1e-10;
(d) repeated maxima follow the stated tie rule, checked against arrays
    written out by hand.
"""

from __future__ import annotations

import inspect
import random
import shutil
import subprocess

import numpy as np
import pytest
import sympy as sp

from symgrad.ops import kernels
from symgrad.ops.conv import (
    AvgPool2d,
    AvgPool2dGrad,
    ChannelSum,
    Conv2d,
    Conv2dGradInput,
    Conv2dGradKernel,
    Flatten,
    MaxPool2d,
    MaxPool2dGrad,
    Unflatten,
)
from symgrad.printing import ArrayCodePrinter

# (N, C, H, W, F, kh, kw, sh, sw, ph, pw, bias)
CONV = [
    (2, 1, 3, 3, 2, 2, 2, 1, 1, 0, 0, True),
    (2, 2, 3, 3, 2, 2, 2, 1, 1, 1, 1, True),
    (2, 1, 5, 5, 2, 3, 3, 2, 2, 1, 1, True),
    (2, 1, 4, 4, 2, 3, 3, 2, 2, 0, 0, False),  # stride 2 leaves the last row and column unread
    (2, 2, 3, 4, 2, 2, 3, 1, 2, 1, 0, True),   # non-square kernel, stride and padding
]
# (N, C, H, W, kh, kw, sh, sw)
POOL = [
    (2, 2, 4, 4, 2, 2, 2, 2),
    (2, 1, 5, 5, 3, 3, 2, 2),  # overlapping windows
    (2, 1, 3, 4, 2, 2, 1, 1),  # overlapping windows
    (2, 1, 5, 3, 2, 2, 2, 2),  # a row and a column no window reads
]


def conv_id(c):
    return "N{}C{}_{}x{}_F{}k{}x{}_s{}{}_p{}{}{}".format(*c[:11], "_b" if c[11] else "")


def pool_id(c):
    return "N{}C{}_{}x{}_k{}x{}_s{}{}".format(*c)


def symbols(name, shape):
    """An object array of distinct SymPy symbols."""
    flat = [sp.Symbol(f"{name}_{'_'.join(map(str, i))}") for i in np.ndindex(*shape)]
    return np.array(flat, dtype=object).reshape(shape)


def rationals(shape, rng, distinct=True):
    """An object array of random rationals, all different when ``distinct``."""
    size = int(np.prod(shape))
    values = rng.sample(range(-10 * size, 10 * size), size) if distinct \
        else [rng.randrange(-3, 4) for _ in range(size)]
    return np.array([sp.Rational(v, 7) for v in values], dtype=object).reshape(shape)


def gradient(L, X):
    """dL/dX entry by entry, by SymPy."""
    return np.vectorize(lambda x: sp.diff(L, x), otypes=[object])(X)


def assert_equal_expr(derived, claimed):
    assert derived.shape == claimed.shape
    for index in np.ndindex(*derived.shape):
        assert sp.expand(derived[index] - claimed[index]) == 0, index


def conv_shapes(c):
    N, C, H, W, F, kh, kw, sh, sw, ph, pw, _ = c
    return (N, C, H, W), (F, C, kh, kw), (F,), Conv2d.shape((N, C, H, W), (F, C, kh, kw),
                                                            (F,), sh, sw, ph, pw)


def helpers(name):
    """The helpers of one expression class, executed from copies of their source."""
    namespace = {"np": np}
    for helper in kernels.HELPERS[name]:
        exec(inspect.getsource(getattr(kernels, helper)), namespace)
    return namespace


def run(expr, **arrays):
    """Evaluate the printed NumPy view of ``expr`` with self-contained helper copies."""
    printer = ArrayCodePrinter()
    code = printer.doprint(expr)
    assert printer.helpers == set(kernels.HELPERS[type(expr).__name__])
    return eval(code, {**helpers(type(expr).__name__), **arrays})


def as_float(array):
    return np.array(array.tolist(), dtype=float)


# ------------------------------------------------------------------ (a) proofs


@pytest.mark.parametrize("c", CONV, ids=conv_id)
def test_conv2d_vjps_are_the_derivatives(c):
    N, C, H, W, F, kh, kw, sh, sw, ph, pw, bias = c
    (a_shape, k_shape, b_shape, z_shape) = conv_shapes(c)
    A, K, G = symbols("a", a_shape), symbols("k", k_shape), symbols("g", z_shape)
    b = symbols("b", b_shape) if bias else None
    L = sp.Add(*(G * Conv2d.scalar(A, K, b, sh, sw, ph, pw)).ravel())
    assert_equal_expr(gradient(L, A), Conv2dGradInput.scalar(G, K, sh, sw, ph, pw, H, W))
    assert_equal_expr(gradient(L, K), Conv2dGradKernel.scalar(A, G, sh, sw, ph, pw, kh, kw))
    if bias:
        assert_equal_expr(gradient(L, b), ChannelSum.scalar(G))


@pytest.mark.parametrize("c", POOL, ids=pool_id)
def test_avgpool2d_vjp_is_the_derivative(c):
    N, C, H, W, kh, kw, sh, sw = c
    A = symbols("a", (N, C, H, W))
    G = symbols("g", AvgPool2d.shape(A.shape, kh, kw, sh, sw))
    L = sp.Add(*(G * AvgPool2d.scalar(A, kh, kw, sh, sw)).ravel())
    assert_equal_expr(gradient(L, A), AvgPool2dGrad.scalar(G, kh, kw, sh, sw, H, W))


@pytest.mark.parametrize("c", POOL, ids=pool_id)
def test_maxpool2d_vjp_is_the_derivative_at_distinct_values(c):
    N, C, H, W, kh, kw, sh, sw = c
    A = symbols("a", (N, C, H, W))
    G = symbols("g", MaxPool2d.shape(A.shape, kh, kw, sh, sw))
    L = sp.Add(*(G * MaxPool2d.scalar(A, kh, kw, sh, sw)).ravel())
    values = dict(zip(A.ravel(), rationals(A.shape, random.Random(sum(c))).ravel()))
    derived = np.vectorize(lambda e: e.xreplace(values), otypes=[object])(gradient(L, A))
    claimed = np.vectorize(lambda e: sp.sympify(e).xreplace(values),
                           otypes=[object])(MaxPool2dGrad.scalar(G, A, kh, kw, sh, sw))
    assert_equal_expr(derived, claimed)
    assert all(e.free_symbols <= set(G.ravel()) for e in derived.ravel())  # Max fully decided


def test_flatten_vjp_is_the_derivative():
    A = symbols("a", (2, 2, 2, 3))
    G = symbols("g", Flatten.shape(A.shape))
    L = sp.Add(*(G * Flatten.scalar(A)).ravel())
    assert_equal_expr(gradient(L, A), Unflatten.scalar(G, 2, 2, 3))


# ------------------------------------------------------------------ (b) kernels = scalar forms


def random_arrays(rng, *shapes, dtype=np.float64):
    return [rng.standard_normal(shape).astype(dtype) for shape in shapes]


@pytest.mark.parametrize("c", CONV, ids=conv_id)
def test_conv2d_kernels_equal_the_scalar_forms(c):
    N, C, H, W, F, kh, kw, sh, sw, ph, pw, bias = c
    a_shape, k_shape, b_shape, z_shape = conv_shapes(c)
    A, K, b, G = random_arrays(np.random.default_rng(1), a_shape, k_shape, b_shape, z_shape)
    x, k, bb, g = sp.symbols("X K1 b1 delta1")
    forward = Conv2d(x, k, bb if bias else sp.S.Zero, sh, sw, ph, pw)
    exprs = {
        forward: Conv2d.scalar(A.astype(object), K.astype(object), b.astype(object)
                               if bias else None, sh, sw, ph, pw),
        Conv2dGradInput(g, k, sh, sw, ph, pw, H, W):
            Conv2dGradInput.scalar(G.astype(object), K.astype(object), sh, sw, ph, pw, H, W),
        Conv2dGradKernel(x, g, sh, sw, ph, pw, kh, kw):
            Conv2dGradKernel.scalar(A.astype(object), G.astype(object), sh, sw, ph, pw, kh, kw),
        ChannelSum(g): ChannelSum.scalar(G.astype(object)),
    }
    arrays = {"X": A, "K1": K, "b1": b, "delta1": G}
    shapes = {x: a_shape, k: k_shape, bb: b_shape, g: z_shape}
    for expr, scalar in exprs.items():
        out = run(expr, **arrays)
        assert out.shape == expr.shape_at(shapes) == scalar.shape
        np.testing.assert_allclose(out, as_float(scalar), rtol=1e-12, atol=1e-12)
        single = run(expr, **{k: v.astype(np.float32) for k, v in arrays.items()})
        assert single.dtype == np.float32
        np.testing.assert_allclose(single, out, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("c", POOL, ids=pool_id)
def test_pool_kernels_equal_the_scalar_forms(c):
    N, C, H, W, kh, kw, sh, sw = c
    p_shape = MaxPool2d.shape((N, C, H, W), kh, kw, sh, sw)
    A, G = random_arrays(np.random.default_rng(2), (N, C, H, W), p_shape)
    a, g = sp.symbols("a1 delta2")
    Ao, Go = A.astype(object), G.astype(object)
    exprs = {
        MaxPool2d(a, kh, kw, sh, sw): MaxPool2d.scalar(Ao, kh, kw, sh, sw),
        MaxPool2dGrad(g, a, kh, kw, sh, sw): MaxPool2dGrad.scalar(Go, Ao, kh, kw, sh, sw),
        AvgPool2d(a, kh, kw, sh, sw): AvgPool2d.scalar(Ao, kh, kw, sh, sw),
        AvgPool2dGrad(g, kh, kw, sh, sw, H, W): AvgPool2dGrad.scalar(Go, kh, kw, sh, sw, H, W),
    }
    shapes = {a: A.shape, g: G.shape}
    for expr, scalar in exprs.items():
        out = run(expr, a1=A, delta2=G)
        assert out.shape == expr.shape_at(shapes) == scalar.shape
        np.testing.assert_allclose(out, as_float(scalar), rtol=1e-12, atol=1e-12)
        single = run(expr, a1=A.astype(np.float32), delta2=G.astype(np.float32))
        assert single.dtype == np.float32
        np.testing.assert_allclose(single, out, rtol=1e-5, atol=1e-6)


def test_flatten_code_equals_the_scalar_forms():
    A = np.random.default_rng(3).standard_normal((2, 3, 2, 4))
    a, g = sp.symbols("a1 dL_da1")
    flat = run(Flatten(a), a1=A)
    np.testing.assert_array_equal(flat, as_float(Flatten.scalar(A.astype(object))))
    back = run(Unflatten(g, 3, 2, 4), dL_da1=flat * 2)
    np.testing.assert_array_equal(back, as_float(Unflatten.scalar((flat * 2).astype(object),
                                                                  3, 2, 4)))
    assert Unflatten(g, 3, 2, 4).shape_at({g: (2, 24)}) == (2, 3, 2, 4)


def test_kernels_neither_alias_nor_change_their_inputs():
    rng = np.random.default_rng(4)
    A, K, b, G = random_arrays(rng, (2, 2, 6, 6), (3, 2, 2, 2), (3,), (2, 3, 3, 3))
    P = rng.standard_normal((2, 2, 3, 3))
    calls = [
        (kernels._conv2d, (A, K, b, (2, 2), (0, 0))),
        (kernels._conv2d_grad_input, (G, K, (2, 2), (0, 0), (6, 6))),
        (kernels._conv2d_grad_kernel, (A, G, (2, 2), (0, 0), (2, 2))),
        (kernels._channel_sum, (G,)),
        (kernels._maxpool2d, (A, (2, 2), (2, 2))),
        (kernels._maxpool2d_grad, (P, A, (2, 2), (2, 2))),
        (kernels._avgpool2d, (A, (2, 2), (2, 2))),
        (kernels._avgpool2d_grad, (P, (2, 2), (2, 2), (6, 6))),
    ]
    for function, args in calls:
        before = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
        out = function(*args)
        assert out.flags.writeable, function.__name__
        for arg, old in zip(args, before):
            if isinstance(arg, np.ndarray):
                assert not np.shares_memory(out, arg), function.__name__
                np.testing.assert_array_equal(arg, old)


def test_shapes_reject_what_does_not_fit():
    with pytest.raises(ValueError):
        Conv2d.shape((2, 3, 8, 8), (4, 2, 3, 3), (4,), 1, 1, 0, 0)  # channels differ
    with pytest.raises(ValueError):
        Conv2d.shape((2, 1, 2, 2), (4, 1, 3, 3), None, 1, 1, 0, 0)  # kernel larger than input
    with pytest.raises(ValueError):
        Conv2dGradInput.shape((2, 4, 5, 5), (4, 1, 3, 3), 1, 1, 0, 0, 8, 8)
    with pytest.raises(ValueError):
        MaxPool2dGrad.shape((2, 1, 3, 3), (2, 1, 8, 8), 2, 2, 2, 2)
    with pytest.raises(ValueError):
        Unflatten.shape((2, 10), 2, 2, 2)
    assert Conv2d.shape((2, 1, 28, 28), (8, 1, 5, 5), None, 1, 1, 0, 0) == (2, 8, 24, 24)
    assert Conv2dGradKernel.shape((2, 3, 9, 9), (2, 4, 5, 5), 2, 2, 1, 1, 3, 3) == (4, 3, 3, 3)


# ------------------------------------------------------------------ (c) PyTorch as oracle


def to_numpy(t):
    return t.detach().numpy()


@pytest.mark.parametrize("c", CONV + [(4, 3, 9, 8, 5, 3, 2, 2, 1, 1, 2, True)], ids=conv_id)
def test_conv2d_kernels_agree_with_torch(c):
    torch = pytest.importorskip("torch")
    N, C, H, W, F, kh, kw, sh, sw, ph, pw, bias = c
    a_shape, k_shape, b_shape, z_shape = conv_shapes(c)
    A, K, b, G = random_arrays(np.random.default_rng(5), a_shape, k_shape, b_shape, z_shape)
    At, Kt, bt = (torch.tensor(x, requires_grad=True) for x in (A, K, b))
    Z = torch.nn.functional.conv2d(At, Kt, bt if bias else None, stride=(sh, sw),
                                   padding=(ph, pw))
    Z.backward(torch.tensor(G))
    mine = kernels._conv2d(A, K, b if bias else None, (sh, sw), (ph, pw))
    np.testing.assert_allclose(mine, to_numpy(Z), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(kernels._conv2d_grad_input(G, K, (sh, sw), (ph, pw), (H, W)),
                               to_numpy(At.grad), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(kernels._conv2d_grad_kernel(A, G, (sh, sw), (ph, pw), (kh, kw)),
                               to_numpy(Kt.grad), rtol=1e-10, atol=1e-10)
    if bias:
        np.testing.assert_allclose(kernels._channel_sum(G), to_numpy(bt.grad),
                                   rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("c", POOL + [(3, 4, 9, 7, 3, 2, 2, 1)], ids=pool_id)
def test_pool_kernels_agree_with_torch(c):
    torch = pytest.importorskip("torch")
    N, C, H, W, kh, kw, sh, sw = c
    A = np.random.default_rng(6).standard_normal((N, C, H, W))
    for pool, forward, backward, extra in [
        (torch.nn.functional.max_pool2d, kernels._maxpool2d, kernels._maxpool2d_grad, (A,)),
        (torch.nn.functional.avg_pool2d, kernels._avgpool2d, kernels._avgpool2d_grad, ()),
    ]:
        At = torch.tensor(A, requires_grad=True)
        P = pool(At, (kh, kw), (sh, sw))
        G = np.random.default_rng(7).standard_normal(tuple(P.shape))
        P.backward(torch.tensor(G))
        np.testing.assert_allclose(forward(A, (kh, kw), (sh, sw)), to_numpy(P),
                                   rtol=1e-10, atol=1e-10)
        size = () if extra else ((H, W),)
        np.testing.assert_allclose(backward(G, *extra, (kh, kw), (sh, sw), *size),
                                   to_numpy(At.grad), rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------ (d) ties


TIES = [
    # A (one channel), kernel, stride, G, the gradient written out by hand
    ([[1, 3], [3, 2]], (2, 2), (2, 2), [[5]], [[0, 5], [0, 0]]),
    ([[4, 4, 4, 4], [4, 4, 4, 4]], (2, 2), (2, 2), [[1, 2]], [[1, 0, 2, 0], [0, 0, 0, 0]]),
    ([[7] * 5] * 5, (3, 3), (2, 2), [[1, 2], [3, 4]],
     [[1, 0, 2, 0, 0], [0] * 5, [3, 0, 4, 0, 0], [0] * 5, [0] * 5]),
    ([[2, 2, 1], [2, 2, 1]], (2, 2), (1, 1), [[1, 10]], [[1, 10, 0], [0, 0, 0]]),
]


@pytest.mark.parametrize("A, kernel, stride, G, expected", TIES)
def test_maxpool_ties_go_to_the_first_maximum(A, kernel, stride, G, expected):
    A, G = (np.array(x, dtype=float)[None, None] for x in (A, G))
    expected = np.array(expected, dtype=float)[None, None]
    np.testing.assert_array_equal(kernels._maxpool2d_grad(G, A, kernel, stride), expected)
    scalar = MaxPool2dGrad.scalar(G.astype(object), A.astype(object), *kernel, *stride)
    np.testing.assert_array_equal(as_float(scalar), expected)


# ------------------------------------------------------------------ views


def views(printer=None):
    from symgrad.latex import DerivationLatexPrinter

    x, k, b, d, a = sp.symbols("X K1 b1 delta1 a1")
    printer = printer or DerivationLatexPrinter(names={"K1": "K", "b1": "b", "delta1": r"\delta",
                                                        "a1": "A"})
    exprs = [Conv2d(x, k, b, 2, 1, 1, 0), Conv2d(x, k, sp.S.Zero, 1, 1, 0, 0),
             Conv2dGradInput(d, k, 2, 2, 1, 1, 9, 9), Conv2dGradInput(d, k, 1, 1, 0, 0, 5, 5),
             Conv2dGradKernel(x, d, 2, 2, 1, 1, 3, 3), ChannelSum(d), MaxPool2d(a, 3, 3, 2, 2),
             MaxPool2dGrad(d, a, 2, 2, 2, 2), AvgPool2d(a, 2, 2, 2, 2),
             AvgPool2dGrad(d, 2, 2, 1, 1, 6, 6), Flatten(a), Unflatten(d, 8, 4, 4)]
    return [printer.doprint(e) for e in exprs]


def test_latex_views_use_textbook_operators():
    text = views()
    assert text[0] == (r"\left(\operatorname{pad}_{1,\,0}\left(X\right) \star K"
                       r"\right)_{\downarrow 2,\,1} + b")
    assert text[1] == r"X \star K"
    assert text[2] == (r"\operatorname{crop}_{1}\left(\operatorname{pad}_{k_h-1,\,k_w-1}"
                       r"\left(\delta_{\uparrow 2}\right) \star \operatorname{rot180}\left(K\right)"
                       r"\right)")
    assert text[4] == r"\left[\operatorname{pad}_{1}\left(X\right) \star \delta_{\uparrow 2}\right]_{3\times 3}"
    assert r"\operatorname{maxpool}_{3\times 3,\,s=2}" in text[6]
    assert r"\arg\max" in text[7] and r"\frac{1}{4}" in text[9]
    assert text[10] == r"\operatorname{vec}\left(A\right)"
    assert text[11] == r"\operatorname{vec}^{-1}_{8\times 4\times 4}\left(\delta\right)"


def test_latex_subscripts_bracket_what_is_not_a_plain_symbol():
    from symgrad.latex import DerivationLatexPrinter

    printer = DerivationLatexPrinter(names={"dL_dz1": r"\frac{\partial L}{\partial Z}",
                                            "K1": "K_{1}"})
    g, k = sp.symbols("dL_dz1 K1")
    assert printer.doprint(ChannelSum(g)) == \
        r"\sum_{n,i,j} \left(\frac{\partial L}{\partial Z}\right)_{n,:,i,j}"
    assert r"\left(K_{1}\right)_{\uparrow 2}" in printer.doprint(
        Conv2dGradKernel(g, k, 2, 2, 0, 0, 3, 3))


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_latex_views_compile_with_amsmath(tmp_path):
    body = "\n".join(rf"\[ {t} \]" for t in views())
    (tmp_path / "ops.tex").write_text("\\documentclass{article}\n\\usepackage{amsmath}\n"
                                      f"\\begin{{document}}\n{body}\n\\end{{document}}\n")
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "ops.tex"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-2000:]
