"""Recurrent networks end to end: generated loss_and_grad against PyTorch autograd.

The oracle shares no code with symgrad: each spec is rebuilt with
``torch.nn.RNN`` (its weights copied in: ``weight_ih`` = W_xh, ``weight_hh`` =
W_hh, ``bias_ih`` = b, ``bias_hh`` = 0) and ``torch.nn.functional``, the
loss summed over time steps, and differentiated by torch's autograd in
float64.  Truncated BPTT has its own oracle: the same network run in chunks
of k steps with the state detached between chunks.  Also: the generated
module leaves its inputs alone, float32 stays float32, and the spec refuses
bad sequence networks with one line.
"""

from __future__ import annotations

import numpy as np
import pytest

from symgrad.codegen import generate_module_source, load_module
from symgrad.spec import Network, SpecError, loads_spec

torch = pytest.importorskip("torch")
F = torch.nn.functional

STEPS, FEATURES = 5, 3


def per_step():
    return (Network("per_step", inputs=(STEPS, FEATURES)).rnn(4, "tanh", sequences=True)
            .dense(2, "sigmoid").loss("sse"))


def last_step():
    return (Network("last", inputs=(STEPS, FEATURES)).rnn(4, "tanh").dense(3, "softmax")
            .loss("cross_entropy", reduction="mean"))


def stacked():
    return (Network("stacked", inputs=(STEPS, FEATURES)).rnn(4, "relu", sequences=True)
            .rnn(3, "sigmoid", sequences=True).dense(2, "identity").loss("mse",
                                                                          weight_decay=0.01))


def between():
    """A per-step dense layer between two recurrent layers: rows split back into sequences."""
    return (Network("between", inputs=(STEPS, FEATURES)).rnn(3, "identity", sequences=True,
                                                             bias=False)
            .dense(4, "tanh").rnn(2, "tanh").dense(1, "identity").loss("sse"))


def truncated():
    return per_step().training(bptt=2)


def lstm():
    return (Network("lstm", inputs=(STEPS, FEATURES)).rnn(4, kind="lstm", sequences=True)
            .dense(2, "identity").loss("sse"))


def gru_stack():
    return (Network("gru", inputs=(STEPS, FEATURES)).rnn(3, kind="gru", sequences=True)
            .rnn(4, kind="lstm", bias=False).dense(3, "softmax").loss("cross_entropy"))


def gated_truncated():
    return (Network("gated_bptt", inputs=(STEPS, FEATURES)).rnn(3, kind="gru", sequences=True)
            .dense(2, "identity").loss("sse").training(bptt=3))


SPECS = {"per_step": per_step, "last_step": last_step, "stacked": stacked, "between": between,
         "truncated": truncated, "lstm": lstm, "gru_stack": gru_stack,
         "gated_truncated": gated_truncated}
ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid,
               "identity": lambda x: x, "softmax": lambda x: x}


def torch_rnn(layer, params, index, a, bptt):
    """A recurrent layer with torch.nn.RNN, LSTM or GRU (a hand loop for sigmoid, identity)."""
    Wx, Wh = params[f"Wx{index}"], params[f"Wh{index}"]
    b = params.get(f"b{index}")
    kind = layer.activation.kind if layer.kind == "rnn" else layer.kind
    chunk = bptt or a.shape[1]
    outputs, h = [], None
    for start in range(0, a.shape[1], chunk):
        if h is not None:  # truncated BPTT: the state entering a chunk is a constant
            h = tuple(s.detach() for s in h) if isinstance(h, tuple) else h.detach()
        if kind in ("tanh", "relu", "lstm", "gru"):
            units = Wh.shape[1]
            options = dict(batch_first=True, bias=b is not None, dtype=torch.float64)
            rnn = (torch.nn.LSTM(Wx.shape[1], units, **options) if kind == "lstm" else
                   torch.nn.GRU(Wx.shape[1], units, **options) if kind == "gru" else
                   torch.nn.RNN(Wx.shape[1], units, nonlinearity=kind, **options))
            weights = {"weight_ih_l0": Wx, "weight_hh_l0": Wh}
            if b is not None:
                weights.update(bias_ih_l0=b, bias_hh_l0=torch.zeros_like(b))
            out, h = torch.func.functional_call(rnn, weights, (a[:, start:start + chunk], h))
            outputs.append(out)
        else:
            f = ACTIVATIONS[kind]
            state = torch.zeros(len(a), Wx.shape[0], dtype=a.dtype) if h is None else h[0]
            steps = []
            for t in range(start, min(start + chunk, a.shape[1])):
                state = f(a[:, t] @ Wx.T + state @ Wh.T + (0 if b is None else b))
                steps.append(state)
            h = state[None]
            outputs.append(torch.stack(steps, dim=1))
    H = torch.cat(outputs, dim=1)
    return H if len(layer.shape) == 2 else H[:, -1]


def torch_loss(spec, params, X, T):
    a = X.reshape(len(X), *spec.input_shape)
    for index, layer in enumerate(spec.layers, start=1):
        if layer.kind in ("rnn", "lstm", "gru"):
            a = torch_rnn(layer, params, index, a, spec.training.bptt)
        else:
            a = a @ params[f"W{index}"].T
            if f"b{index}" in params:
                a = a + params[f"b{index}"]
            a = ACTIVATIONS[layer.activation.kind](a)
    out = a.reshape(-1, a.shape[-1])
    T = T.reshape(out.shape)
    n = len(X)
    kind = spec.loss.kind
    if kind == "sse":
        loss = 0.5 * ((out - T) ** 2).sum()
    elif kind == "mse":
        loss = ((out - T) ** 2).sum() / out.shape[1]  # (y - t)^2 / K per output
    elif kind == "cross_entropy":
        loss = -(T * F.log_softmax(out, dim=1)).sum()
    if spec.loss.reduction == "mean":
        loss = loss / n
    if spec.loss.weight_decay:
        loss = loss + spec.loss.weight_decay / 2 * sum(
            (v ** 2).sum() for k, v in params.items() if k.startswith("W"))
    return loss


def data(spec, n=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, STEPS, FEATURES))
    k = spec.n_outputs
    shape = (n, STEPS, k) if len(spec.layers[-1].shape) == 2 else (n, k)
    if spec.loss.kind == "cross_entropy":
        T = np.eye(k)[rng.integers(0, k, size=shape[:-1])]
    else:
        T = rng.uniform(0.1, 0.9, size=shape)
    return X, T


@pytest.fixture(scope="module")
def modules():
    built = {}
    for name, make in SPECS.items():
        spec = make().build()
        built[name] = (spec, load_module(generate_module_source(spec), name=f"rnn_{name}"))
    return built


@pytest.mark.parametrize("name", list(SPECS))
def test_gradients_equal_torch_autograd(modules, name):
    spec, module = modules[name]
    params = module.init_params(seed=3)
    for key, value in params.items():  # non-zero biases, so a bias mistake shows
        if key.startswith("b"):
            value += np.random.default_rng(7).normal(scale=0.3, size=value.shape)
    X, T = data(spec)
    X_before, T_before = X.copy(), T.copy()
    value, grads = module.loss_and_grad(params, X, T)
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(T, T_before)
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    tloss = torch_loss(spec, tparams, torch.tensor(X), torch.tensor(T))
    tloss.backward()
    assert value == pytest.approx(tloss.item(), rel=1e-10)
    assert set(grads) == set(params)
    for key in params:
        np.testing.assert_allclose(grads[key], tparams[key].grad.numpy(), rtol=1e-8,
                                   atol=1e-10, err_msg=f"{name}: {key}")


def test_truncation_changes_the_gradient(modules):
    """bptt = 2 cuts real paths: its gradient differs from full BPTT (so the test above bites)."""
    _, full = modules["per_step"]
    _, cut = modules["truncated"]
    params = full.init_params(seed=3)
    X, T = data(per_step().build())
    g_full, g_cut = full.loss_and_grad(params, X, T)[1], cut.loss_and_grad(params, X, T)[1]
    assert not np.allclose(g_full["Wh1"], g_cut["Wh1"])
    np.testing.assert_allclose(g_full["W2"], g_cut["W2"])  # above the recurrence: unchanged


def test_float32_stays_float32(modules):
    spec, module = modules["stacked"]
    params = module.init_params(seed=0, dtype=np.float32)
    X, T = (a.astype(np.float32) for a in data(spec))
    value, grads = module.loss_and_grad(params, X, T)
    assert all(g.dtype == np.float32 for g in grads.values())
    assert module.forward(params, X).dtype == np.float32
    assert module.forward(params, X).shape == (len(X), STEPS, spec.n_outputs)


def test_flat_rows_and_training(modules):
    """X as flat rows gives the same loss; train() lowers the loss of a per-step network."""
    spec, module = modules["per_step"]
    params = module.init_params(seed=1)
    X, T = data(spec, n=8)
    assert module.loss(params, X.reshape(8, -1), T.reshape(8, -1)) == \
        pytest.approx(module.loss(params, X, T))
    history = module.train(params, X, T, epochs=30, learning_rate=0.05)
    assert history[-1] < 0.7 * history[0]
    with pytest.raises(ValueError, match=r"expected X \(N, 5, 3\) and T \(N, 5, 2\)"):
        module.train(params, X, T[:, :, :1], epochs=1)


BAD = [
    ("inputs = 3\n[[layers]]\nkind = \"rnn\"\nunits = 2\n[[layers]]\nunits = 1\n",
     r"<spec>:3: layers\[1\]\.kind: a recurrent layer \(rnn\) needs a sequence input but the input is not a "
     r"sequence"),
    ("inputs = { shape = [4, 2] }\n[[layers]]\nkind = \"rnn\"\nunits = 2\n[[layers]]\n"
     "kind = \"rnn\"\nunits = 2\n[[layers]]\nunits = 1\n",
     r"layers\[2\]\.kind: .*outputs only its last step; give it sequences = true"),
    ("inputs = { shape = [4, 2] }\n[[layers]]\nkind = \"rnn\"\nunits = 2\n[[layers]]\nunits = 1\n"
     "[training]\nbptt = 0\n", r"training\.bptt: must be at least 1"),
    ("inputs = { shape = [\"T\", 2] }\n[[layers]]\nkind = \"rnn\"\nunits = 2\n[[layers]]\n"
     "units = 1\n", r"inputs\.shape: variable-length sequences"),
    ("inputs = { shape = [4, 2] }\n[[layers]]\nkind = \"rnn\"\nunits = 2\nactivation = "
     "\"softplus\"\n[[layers]]\nunits = 1\n", r"layers\[1\]\.activation: an rnn layer supports"),
    ("inputs = { shape = [4, 2] }\n[[layers]]\nkind = \"rnn\"\nunits = 2\nsequences = 1\n"
     "[[layers]]\nunits = 1\n", r"layers\[1\]\.sequences: expected true or false"),
    ("inputs = { shape = [4, 2] }\n[[layers]]\nkind = \"rnn\"\nunits = 2\nname = \"r\"\n"
     "sequences = true\n[[layers]]\nkind = \"rnn\"\nunits = 2\nname = \"s\"\n[[layers]]\n"
     "units = 1\nfrom = [\"r\", \"s\"]\n",
     r"layers\[3\]\.from: a dense layer cannot read sequences and single vectors together"),
]


@pytest.mark.parametrize("text,message", BAD)
def test_bad_sequence_specs_are_one_line_errors(text, message):
    with pytest.raises(SpecError, match=message) as error:
        loads_spec(text)
    assert "\n" not in str(error.value)
