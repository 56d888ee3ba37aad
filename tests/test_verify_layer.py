"""verify-layer: one layer's backward against the registry's VJP.

Oracles: PyTorch autograd (a backward written with torch must pass, and the same
with one entry changed must fail at exactly that entry) and hand-written NumPy
loops written here from the textbook, sharing no code with symgrad.  Every
planted mistake must be named; a mistake is named only at two batch sizes and on
enough entries.
"""

from __future__ import annotations

import numpy as np
import pytest

from symgrad.cli import main
from symgrad.verify import VerifyInputError
from symgrad.verify_layer import verify_layer

torch = pytest.importorskip("torch")


def codes(report) -> dict:
    return {g: [d.code for d in v.diagnoses] for g, v in report.grads.items()}


def _t(a, grad=True):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def _autograd(forward, dout, *arrays):
    ts = [_t(a) for a in arrays]
    out = forward(*ts)
    out.backward(torch.tensor(dout))
    return tuple(t.grad.numpy() for t in ts)


# --------------------------------------------------------------------------- torch oracle


def torch_dense(dout, x, w, b):
    return _autograd(lambda x, w, b: x @ w.T + b, dout, x, w, b)


def torch_conv(dout, x, w, b, conv_param):
    s, p = conv_param["stride"], conv_param["pad"]
    return _autograd(lambda x, w, b: torch.nn.functional.conv2d(x, w, b, stride=s, padding=p),
                     dout, x, w, b)


def torch_pool(kind):
    def backward(dout, x, pool_param):
        k, s = pool_param["pool_height"], pool_param["stride"]
        op = getattr(torch.nn.functional, kind)
        return _autograd(lambda x: op(x, k, s), dout, x)[0]

    return backward


TORCH_ACTIVATIONS = {
    "relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
    "leaky_relu": lambda x: torch.nn.functional.leaky_relu(x, 0.01),
    "elu": torch.nn.functional.elu, "softplus": torch.nn.functional.softplus,
    "gelu": torch.nn.functional.gelu, "silu": torch.nn.functional.silu,
    "softmax": lambda x: torch.softmax(x, dim=1),
}


def torch_ce(reduction):
    def loss(x, y):
        t = _t(x)
        value = torch.nn.functional.cross_entropy(t, torch.tensor(y), reduction=reduction)
        value.backward()
        return value.item(), t.grad.numpy()

    return loss


@pytest.mark.parametrize("kind", sorted(TORCH_ACTIVATIONS))
def test_activations_equal_torch(kind):
    f = TORCH_ACTIVATIONS[kind]
    report = verify_layer(kind, lambda dout, x: _autograd(f, dout, x)[0])
    assert report.passed, str(report)


@pytest.mark.parametrize("options", [{}, {"stride": 2, "padding": 1, "shape": "3,7,9"},
                                     {"kernel": "2", "units": 1, "stride": 3}])
def test_conv2d_equals_torch(options):
    assert verify_layer("conv2d", torch_conv, **options).passed


@pytest.mark.parametrize("kind", ["maxpool2d", "avgpool2d"])
@pytest.mark.parametrize("options", [{}, {"kernel": 3, "stride": 1, "shape": "2,5,5"}])
def test_pooling_equals_torch(kind, options):
    name = "max_pool2d" if kind == "maxpool2d" else "avg_pool2d"
    assert verify_layer(kind, torch_pool(name), **options).passed


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_softmax_ce_equals_torch(reduction):
    assert verify_layer("softmax_ce", torch_ce(reduction), reduction=reduction).passed


def test_dense_equals_torch_and_one_changed_entry_is_the_mask():
    assert verify_layer("dense", torch_dense).passed

    def off_by_one_entry(dout, x, w, b):
        dx, dw, db = torch_dense(dout, x, w, b)
        dw = dw.copy()
        dw[1, 2] += 0.5
        return dx, dw, db

    report = verify_layer("dense", off_by_one_entry)
    assert report.failed == ["dw"]
    dw = report["dw"]
    assert np.argwhere(dw.mismatch).tolist() == [[1, 2]]
    assert codes(report)["dw"] == ["no_known_pattern"]
    # message and mask from the same data
    assert "1 of 12 entries wrong" in dw.diagnoses[0].message


# --------------------------------------------------------------------------- conventions


def test_cache_tuple_and_weight_layout_in_out():
    def affine_backward(dout, cache):  # CS231n: W is (D, M)
        x, w, b = cache
        return dout @ w.T, x.T @ dout, dout.sum(axis=0)

    assert verify_layer("dense", affine_backward, args="dout,(x,w,b)",
                        layout={"w": "in,out"}).passed
    wrong = verify_layer("dense", affine_backward, args="dout,(x,w,b)", units=4)
    assert not wrong.passed  # without the layout W is (out, in): shapes do not fit


def test_conv_layout_hwio_and_returns_order():
    def conv_hwio(dout, x, w, b, stride, pad):  # w (kh, kw, C, F)
        dx, dw, db = torch_conv(dout, x, w.transpose(3, 2, 0, 1), b,
                                {"stride": stride, "pad": pad})
        return db, dx, dw.transpose(2, 3, 1, 0)

    report = verify_layer("conv2d", conv_hwio, args="dout,x,w,b,stride,pad",
                          layout="w=kh,kw,C,F", returns="db,dx,dw", padding=1, stride=2)
    assert report.passed, str(report)


def test_returns_skip_and_dict():
    def as_dict(dout, x, w, b):
        dx, dw, db = torch_dense(dout, x, w, b)
        return {"dw": dw, "db": db, "dx": dx}

    assert verify_layer("dense", as_dict).passed
    assert verify_layer("sigmoid", lambda d, a: (None, d * a * (1 - a)), args="dout,out",
                        returns="_,dx").passed


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "lstmm"}, "unknown layer kind"),
    ({"args": "dout,(x,w"}, "unbalanced"),
    ({"args": "dout,q"}, "no value 'q'"),
    ({"layout": {"w": "in,banana"}}, "expected an order"),
    ({"returns": "dx,dw"}, "returned 3 value"),
    ({"shape": "3,4"}, "takes one size"),
    ({"returns": "dx,dq,db"}, "no gradient dq"),
])
def test_bad_input_is_one_line(kwargs, message):
    kind = kwargs.pop("kind", "dense")
    with pytest.raises(VerifyInputError, match=message) as info:
        verify_layer(kind, torch_dense, **kwargs)
    assert "\n" not in str(info.value)


def test_user_exception_is_bad_input():
    def broken(dout, x, w, b):
        raise ZeroDivisionError("oops")

    with pytest.raises(VerifyInputError, match="raised ZeroDivisionError: oops"):
        verify_layer("dense", broken)


# --------------------------------------------------------------------------- planted mistakes


def _conv_loops(dout, x, w, b, conv_param, *, flip=True, dw_mode="sum", db_mode="sum",
                swap=False):
    """A textbook loop implementation with switches that plant one mistake each."""
    s, p = conv_param["stride"], conv_param["pad"]
    n_, c_, h, wd = x.shape
    f_, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    ho, wo = dout.shape[2:]
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    kernel = w if flip else w[:, :, ::-1, ::-1]  # the mistake: rot180 "undone"
    for n in range(n_):
        for i in range(ho):
            for j in range(wo):
                window = xp[n, :, i * s:i * s + kh, j * s:j * s + kw]
                for f in range(f_):
                    dxp[n, :, i * s:i * s + kh, j * s:j * s + kw] += kernel[f] * dout[n, f, i, j]
                    if dw_mode == "sum" or (dw_mode == "first_sample" and n == 0) or \
                            (dw_mode == "first_position" and i == j == 0):
                        dw[f] += window * dout[n, f, i, j]
                    elif dw_mode == "overwrite":
                        dw[f] = window * dout[n, f, i, j]
    db = {"sum": dout.sum(axis=(0, 2, 3)), "batch_only": dout.sum(axis=0),
          "last_position": dout[:, :, -1, -1].sum(axis=0)}[db_mode]
    if swap:
        dw = dw.transpose(1, 0, 2, 3)
    return dxp[:, :, p:p + h, p:p + wd], dw, db


@pytest.mark.parametrize("switch, grad, code", [
    ({}, None, None),
    ({"flip": False}, "dx", "kernel_not_flipped"),
    ({"swap": True}, "dw", "dw_axes_swapped"),
    ({"dw_mode": "first_sample"}, "dw", "dw_not_accumulated_batch"),
    ({"dw_mode": "first_position"}, "dw", "dw_not_accumulated_positions"),
    ({"dw_mode": "overwrite"}, "dw", "dw_not_accumulated"),
    ({"db_mode": "batch_only"}, "db", "db_not_summed_positions"),
    ({"db_mode": "last_position"}, "db", "db_not_summed_positions"),
])
def test_conv_mistakes_named(switch, grad, code):
    report = verify_layer("conv2d", lambda *a: _conv_loops(*a, **switch), padding=1,
                          shape="2,4,5", units=3)
    if grad is None:
        assert report.passed
        return
    assert report.failed == [grad]
    assert codes(report)[grad][0] == code


def _dense_np(dout, x, w, b, mode=None):
    dx, dw, db = dout @ w, dout.T @ x, dout.sum(axis=0)
    if mode == "transposed":
        dw = dw.T
    elif mode == "one_sample":
        dw = np.outer(dout[-1], x[-1])
    elif mode == "db_rows":
        db = dout
    return dx, dw, db


@pytest.mark.parametrize("mode, grad, code", [
    ("transposed", "dw", "dw_transposed"), ("one_sample", "dw", "dw_not_accumulated"),
    ("db_rows", "db", "db_not_summed")])
def test_dense_mistakes_named(mode, grad, code):
    report = verify_layer("dense", lambda *a: _dense_np(*a, mode=mode))
    assert codes(report)[grad][0] == code


def _pool_loops(dout, x, pool_param, mode):
    k, s = pool_param["pool_height"], pool_param["stride"]
    dx = np.zeros_like(x)
    for n, c, i, j in np.ndindex(*dout.shape):
        window = x[n, c, i * s:i * s + k, j * s:j * s + k]
        if mode == "argmax":
            u, v = np.unravel_index(np.argmax(window), window.shape)
            dx[n, c, i * s + u, j * s + v] += dout[n, c, i, j]
        else:
            share = dout[n, c, i, j] / (k * k if mode == "mean" else 1)
            dx[n, c, i * s:i * s + k, j * s:j * s + k] += share
    return dx


def test_pool_mistakes_named():
    assert verify_layer("maxpool2d", lambda *a: _pool_loops(*a, "argmax")).passed
    assert codes(verify_layer("maxpool2d", lambda *a: _pool_loops(*a, "every")))["dx"] == \
        ["maxpool_spread"]
    assert verify_layer("avgpool2d", lambda *a: _pool_loops(*a, "mean")).passed
    assert codes(verify_layer("avgpool2d", lambda *a: _pool_loops(*a, "every")))["dx"] == \
        ["avgpool_not_divided"]


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


@pytest.mark.parametrize("kind, fn, code", [
    ("relu", lambda d, x: d * (x <= 0), "relu_mask_inverted"),
    ("sigmoid", lambda d, x: d * x * (1 - x), "derivative_in_z"),
    ("sigmoid", lambda d, x: d * _sigmoid(_sigmoid(x)) * (1 - _sigmoid(_sigmoid(x))),
     "derivative_at_output"),
    ("tanh", lambda d, x: d * (1 - x ** 2), "derivative_in_z"),
    ("gelu", lambda d, x: d, "activation_derivative_missing"),
])
def test_activation_mistakes_named(kind, fn, code):
    assert codes(verify_layer(kind, fn))["dx"] == [code]


def test_softmax_ce_mistakes_named():
    def ce(x, y, *, mean=True, subtract=True):
        p = np.exp(x - x.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        if subtract:
            p[np.arange(len(y)), y] -= 1
        return 0.0, p / len(y) if mean else p

    assert verify_layer("softmax_ce", ce).passed
    assert codes(verify_layer("softmax_ce", lambda x, y: ce(x, y, mean=False)))["dx"] == \
        ["ce_mean_missing"]
    assert codes(verify_layer("softmax_ce", lambda x, y: ce(x, y, subtract=False)))["dx"] == \
        ["ce_label_not_subtracted"]
    # the label mistake differs from the reference on N entries: at N = 1, 2 too few
    few = verify_layer("softmax_ce", lambda x, y: ce(x, y, subtract=False), batch_sizes=(1, 2))
    assert codes(few)["dx"] == ["no_known_pattern"]


def test_a_mistake_needs_two_batch_sizes():
    def inverted(d, x):
        return d * (x <= 0)

    one = verify_layer("relu", inverted, batch_sizes=(4,))
    assert codes(one)["dx"] == ["no_known_pattern"]
    assert "two batch sizes" in one["dx"].diagnoses[0].message
    assert codes(verify_layer("relu", inverted, batch_sizes=(4, 6)))["dx"] == \
        ["relu_mask_inverted"]


# --------------------------------------------------------------------------- command line


GRADS = '''
import numpy as np


def affine_backward(dout, cache):
    x, w, b = cache
    return dout @ w.T, x.T @ dout, dout.sum(axis=0)


def relu_wrong(dout, x):
    return dout * (x < 0)


def slow(dout, x):
    while True:
        pass


def exits(dout, x):
    raise SystemExit(3)
'''


@pytest.fixture
def grads(tmp_path):
    path = tmp_path / "grads.py"
    path.write_text(GRADS)
    return path


def test_cli_exit_codes(grads, capsys):
    assert main(["verify-layer", "dense", "--grad", f"{grads}:affine_backward",
                 "--args", "dout,(x,w,b)", "--layout", "w=in,out"]) == 0
    assert "RESULT: CORRECT" in capsys.readouterr().out
    assert main(["verify-layer", "relu", "--grad", f"{grads}:relu_wrong", "--json"]) == 1
    assert '"relu_mask_inverted"' in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["dense", "--grad", "{g}:affine_backward"], "name them with --args"),
    (["dense", "--grad", "{g}:nothing"], "no function 'nothing'"),
    (["relu", "--grad", "{g}:slow", "--timeout", "0.5"], "did not finish"),
    (["relu", "--grad", "{g}:exits"], "SystemExit"),
    (["conv9", "--grad", "{g}:slow"], "unknown layer kind"),
    (["relu", "--grad", "{g}:relu_wrong", "--batch-sizes", "x"], "--batch-sizes"),
])
def test_cli_bad_input_exit_2(grads, capsys, argv, message):
    argv = [a.replace("{g}", str(grads)) for a in argv]
    assert main(["verify-layer", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


# --------------------------------------------------------------------------- recurrent, norm,
# embedding, dropout: torch's autograd passes, textbook NumPy with one planted mistake is named


def torch_recurrent(kind):
    """torch.nn.RNN / LSTM / GRU with the weights copied in, bias_hh = 0, h_0 = 0."""
    def backward(dout, x, wx, wh, b):
        units = wh.shape[1]
        cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind]
        net = cls(x.shape[2], units, batch_first=True).double()
        with torch.no_grad():
            net.weight_ih_l0.copy_(torch.tensor(wx))
            net.weight_hh_l0.copy_(torch.tensor(wh))
            net.bias_ih_l0.copy_(torch.tensor(b))
            net.bias_hh_l0.zero_()
        xt = _t(x)
        out = net(xt)[0]
        out.backward(torch.tensor(dout))
        return (xt.grad.numpy(), net.weight_ih_l0.grad.numpy(), net.weight_hh_l0.grad.numpy(),
                net.bias_ih_l0.grad.numpy())

    return backward


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_recurrent_equals_torch(kind):
    if kind != "rnn":
        pytest.importorskip("symgrad.ops.gated")
    report = verify_layer(kind, torch_recurrent(kind))
    assert report.passed, str(report)


def torch_norm(kind):
    def backward(dout, x, gamma):
        xt, g, b = _t(x), _t(gamma), _t(np.zeros_like(gamma))
        if kind == "batchnorm":
            y = F.batch_norm(xt, None, None, g, b, training=True, eps=1e-5)
        else:
            y = F.layer_norm(xt, (x.shape[1],), g, b, eps=1e-5)
        y.backward(torch.tensor(dout))
        return xt.grad.numpy(), g.grad.numpy(), b.grad.numpy()

    return backward


F = torch.nn.functional


@pytest.mark.parametrize("kind", ["batchnorm", "layernorm"])
def test_norm_equals_torch(kind):
    assert verify_layer(kind, torch_norm(kind)).passed


def test_embedding_and_dropout_equal_torch():
    def embedding(dout, x, w):
        wt = _t(w)
        F.embedding(torch.tensor(x), wt).backward(torch.tensor(dout))
        return wt.grad.numpy()

    def dropout(dout, mask):
        xt = _t(np.ones_like(mask))
        (xt * torch.tensor(mask)).backward(torch.tensor(dout))
        return xt.grad.numpy()

    assert verify_layer("embedding", embedding).passed
    assert verify_layer("dropout", dropout).passed


def _rnn_loops(dout, x, wx, wh, b, *, mode=None):
    """Textbook BPTT for tanh (h_t = tanh(x_t Wx^T + h_(t-1) Wh^T + b)), one switch a mistake."""
    n, steps, _ = x.shape
    h = np.zeros((n, steps + 1, wh.shape[0]))  # h[:, 0] = h_0 = 0
    for t in range(steps):
        h[:, t + 1] = np.tanh(x[:, t] @ wx.T + h[:, t] @ wh.T + b)
    dx, dwx, dwh, db = np.zeros_like(x), np.zeros_like(wx), np.zeros_like(wh), np.zeros_like(b)
    carry = np.zeros((n, wh.shape[0]))
    for t in reversed(range(steps)):
        delta = (dout[:, t] + (0 if mode == "no_recurrence" else carry)) * (1 - h[:, t + 1] ** 2)
        dx[:, t] = delta @ wx
        state = h[:, t + 1] if mode == "wrong_state" else h[:, t]
        if mode == "overwrite":
            dwx, dwh, db = delta.T @ x[:, t], delta.T @ state, delta.sum(axis=0)
        else:
            dwx += delta.T @ x[:, t]
            dwh += delta.T @ state
            db += delta.sum(axis=0)
        carry = delta @ wh
    return dx, dwx, dwh, db


@pytest.mark.parametrize("mode, expected", [
    (None, {}),
    ("no_recurrence", {g: "bptt_recurrent_term_dropped" for g in ("dx", "dwx", "dwh", "db")}),
    ("overwrite", {g: "bptt_not_accumulated" for g in ("dwx", "dwh", "db")}),
    ("wrong_state", {"dwh": "dwh_wrong_state"}),
])
def test_rnn_mistakes_named(mode, expected):
    report = verify_layer("rnn", lambda *a: _rnn_loops(*a, mode=mode))
    assert {g: c[0] for g, c in codes(report).items() if c} == expected, str(report)


def test_gated_recurrent_term_dropped_named():
    """LSTM: a backward pass that carries nothing from step t+1 (here torch, one step at a time)."""
    pytest.importorskip("symgrad.ops.gated")
    def cut(dout, x, wx, wh, b):
        units = wh.shape[1]
        cell = torch.nn.LSTMCell(x.shape[2], units).double()
        with torch.no_grad():
            cell.weight_ih.copy_(torch.tensor(wx))
            cell.weight_hh.copy_(torch.tensor(wh))
            cell.bias_ih.copy_(torch.tensor(b))
            cell.bias_hh.zero_()
        xt = _t(x)
        h = c = torch.zeros(len(x), units, dtype=torch.float64)
        total = 0
        for t in range(x.shape[1]):
            h, c = cell(xt[:, t], (h.detach(), c.detach()))  # the state entering t: a constant
            total = total + (h * torch.tensor(dout[:, t])).sum()
        total.backward()
        return (xt.grad.numpy(), cell.weight_ih.grad.numpy(), cell.weight_hh.grad.numpy(),
                cell.bias_ih.grad.numpy())

    report = verify_layer("lstm", cut)
    assert {g: c[0] for g, c in codes(report).items()} == \
        {g: "bptt_recurrent_term_dropped" for g in ("dx", "dwx", "dwh", "db")}, str(report)


def _norm_np(dout, x, gamma, *, axis=0, mode=None):
    """Batch norm (axis 0) or layer norm (axis 1) backward from the staged chain rule."""
    mu = x.mean(axis=axis, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axis, keepdims=True)
    if mode == "wrong_axis":
        return _norm_np(dout, x, gamma, axis=1 - axis)[0], None, None
    d = x.shape[axis]
    xhat = (x - mu) / np.sqrt(var + 1e-5)
    dxhat = dout * (1.0 if mode == "no_gamma" else gamma)
    dvar = (dxhat * (x - mu)).sum(axis=axis, keepdims=True) * -0.5 * (var + 1e-5) ** -1.5
    dmu = -dxhat.sum(axis=axis, keepdims=True) / np.sqrt(var + 1e-5)
    dx = dxhat / np.sqrt(var + 1e-5)
    if mode != "no_variance":
        dx = dx + dvar * 2 * (x - mu) / d
    if mode != "no_mean":
        dx = dx + dmu / d
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)


@pytest.mark.parametrize("kind, axis", [("batchnorm", 0), ("layernorm", 1)])
@pytest.mark.parametrize("mode, code", [
    (None, None), ("no_mean", "norm_mean_term_missing"),
    ("no_variance", "norm_variance_term_missing"), ("no_gamma", "norm_gamma_forgotten"),
    ("wrong_axis", "norm_wrong_axis")])
def test_norm_mistakes_named(kind, axis, mode, code):
    def backward(dout, x, gamma):
        dx, dgamma, dbeta = _norm_np(dout, x, gamma, axis=axis, mode=mode)
        right = _norm_np(dout, x, gamma, axis=axis)
        return dx, right[1] if dgamma is None else dgamma, right[2] if dbeta is None else dbeta

    report = verify_layer(kind, backward, shape=5)
    if code is None:
        assert report.passed, str(report)
    else:
        assert report.failed == ["dx"] and codes(report)["dx"] == [code], str(report)


def test_embedding_repeats_dropped_named():
    def fancy(dout, x, w):
        dw = np.zeros_like(w)
        dw[x.reshape(-1)] += dout.reshape(-1, w.shape[1])  # a repeated id: the last row wins
        return dw

    def loops(dout, x, w):
        dw = np.zeros_like(w)
        for n, t in np.ndindex(*x.shape):
            dw[x[n, t]] += dout[n, t]
        return dw

    assert verify_layer("embedding", loops).passed
    assert codes(verify_layer("embedding", fancy))["dw"] == ["embedding_repeats_dropped"]


@pytest.mark.parametrize("fn, code", [
    (lambda dout, mask: dout * mask, None),
    (lambda dout, mask: dout, "dropout_mask_not_applied"),
    (lambda dout, mask: dout * (mask > 0), "dropout_not_rescaled"),
])
def test_dropout_mistakes_named(fn, code):
    report = verify_layer("dropout", fn)
    assert report.passed if code is None else codes(report)["dx"] == [code], str(report)


def test_new_kinds_from_the_command_line(tmp_path, capsys):
    path = tmp_path / "grads.py"
    path.write_text("import numpy as np\n\n\ndef bn(dout, x, gamma):\n"
                    "    xhat = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)\n"
                    "    return dout * gamma / np.sqrt(x.var(0) + 1e-5), (dout * xhat).sum(0), "
                    "dout.sum(0)\n")
    assert main(["verify-layer", "batchnorm", "--grad", f"{path}:bn", "--shape", "3"]) == 1
    assert "norm_statistics_constant" in capsys.readouterr().out
