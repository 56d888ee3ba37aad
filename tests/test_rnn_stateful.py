"""Stateful online learning for networks whose first layer is an Elman rnn.

update() keeps the stream's last hidden state in state["hidden"] and starts the next call
from it, with truncated BPTT of one call's length (h0 is a constant).  Checked: (a) a
sequence fed in chunks through update() (learning rate 0) gives the hidden states and
losses of the whole sequence run at once; (b) with h0 given, loss_and_grad equals torch
autograd of the same network started from h0 (detached); (c) reset_state starts over.
LSTM/GRU first layers stay stateless.
"""

from __future__ import annotations

import numpy as np
import pytest

from symgrad.codegen import generate_module_source, load_module
from symgrad.spec import Network

torch = pytest.importorskip("torch")

FEATURES, UNITS, FULL = 2, 3, 6
F_TORCH = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid,
           "identity": lambda x: x}


def per_step(steps, act="tanh", bias=True, bptt=0):
    net = (Network(f"stream{steps}", inputs=(steps, FEATURES))
           .rnn(UNITS, act, sequences=True, bias=bias).dense(2, "sigmoid").loss("sse"))
    return net.training(bptt=bptt) if bptt else net


def last_step(steps, act="tanh"):
    return (Network(f"last{steps}", inputs=(steps, FEATURES)).rnn(UNITS, act)
            .dense(2, "identity").loss("sse"))


def module(spec):
    return load_module(generate_module_source(spec.build()))


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_stream_in_chunks_matches_whole_sequence(chunk):
    """(a) update() with learning rate 0 over chunks = the whole sequence at once."""
    whole, part = module(per_step(FULL)), module(per_step(chunk))
    params = whole.init_params(seed=1)
    rng = np.random.default_rng(0)
    X, T = rng.normal(size=(1, FULL, FEATURES)), rng.uniform(size=(1, FULL, 2))
    (H,) = whole._rnn_forward(X, params["Wx1"], params["Wh1"], params["b1"], 0)
    state = part.init_state(params)
    assert state["hidden"] is None
    for start in range(0, FULL, chunk):
        steps = slice(start, start + chunk)
        value = part.update(params, state, X[0, steps], T[0, steps], learning_rate=0.0)
        mask = np.zeros((1, FULL))
        mask[0, steps] = 1
        assert value == pytest.approx(whole.loss(params, X, T, mask=mask), rel=1e-12)
        np.testing.assert_allclose(state["hidden"], H[:, start + chunk - 1], rtol=1e-12)


def test_last_step_network_streams_to_the_whole_sequence_output():
    """(a) A last-step network fed in two halves: the second call's loss is the whole one's."""
    whole, half = module(last_step(FULL, "relu")), module(last_step(FULL // 2, "relu"))
    params = whole.init_params(seed=2)
    rng = np.random.default_rng(1)
    X, T = rng.normal(size=(1, FULL, FEATURES)), rng.normal(size=(1, 2))
    state = half.init_state(params)
    half.update(params, state, X[0, :FULL // 2], T[0], learning_rate=0.0)
    value = half.update(params, state, X[0, FULL // 2:], T[0], learning_rate=0.0)
    assert value == pytest.approx(whole.loss(params, X, T), rel=1e-12)


def torch_loss(spec, params, X, T, h0):
    """The network by hand in torch, its rnn started from h0 (a constant)."""
    rnn, dense = spec.layers
    f = F_TORCH[rnn.activation.kind]
    h, chunk, states = h0, spec.training.bptt or X.shape[1], []
    for t in range(X.shape[1]):
        if t and t % chunk == 0:
            h = h.detach()  # truncated BPTT inside the call too
        h = f(X[:, t] @ params["Wx1"].T + h @ params["Wh1"].T
              + (params["b1"] if "b1" in params else 0))
        states.append(h)
    a = torch.stack(states, dim=1) if len(rnn.shape) == 2 else h
    y = F_TORCH[dense.activation.kind](a @ params["W2"].T + params["b2"])
    return 0.5 * ((y - T.reshape(y.shape)) ** 2).sum()


@pytest.mark.parametrize("spec", [per_step(4), per_step(4, "sigmoid", bias=False),
                                  per_step(4, "identity", bptt=2), last_step(4, "relu")],
                         ids=["tanh", "sigmoid_nobias", "identity_bptt2", "last_relu"])
def test_gradient_from_h0_matches_torch(spec):
    """(b) loss_and_grad(..., h0=h0) = torch autograd of the network started from h0, detached."""
    built = spec.build()
    gen = load_module(generate_module_source(built))
    params = gen.init_params(seed=3)
    rng = np.random.default_rng(2)
    X = rng.normal(size=(3, 4, FEATURES))
    T = rng.uniform(size=(3, 4, 2) if len(built.layers[0].shape) == 2 else (3, 2))
    h0 = rng.uniform(0.1, 0.9, size=(3, UNITS))  # positive: relu's slope is defined
    value, grads = gen.loss_and_grad(params, X, T, h0=h0)
    theirs = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    start = torch.tensor(h0, requires_grad=True)
    expected = torch_loss(built, theirs, torch.tensor(X), torch.tensor(T), start.detach())
    expected.backward()
    assert value == pytest.approx(expected.item(), rel=1e-12)
    for name, tensor in theirs.items():
        np.testing.assert_allclose(grads[name], tensor.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert start.grad is None  # no gradient flows into h0
    # h0 matters (the dW_hh term of the first step), and None is the zero state.
    _, zero = gen.loss_and_grad(params, X, T)
    _, none = gen.loss_and_grad(params, X, T, h0=np.zeros(UNITS))
    assert not np.allclose(zero["Wh1"], grads["Wh1"])
    np.testing.assert_allclose(zero["Wh1"], none["Wh1"], rtol=0, atol=0)


def test_update_is_one_sgd_step_from_the_stored_state():
    gen = module(per_step(2))
    params = gen.init_params(seed=4)
    state = gen.init_state(params)
    rng = np.random.default_rng(3)
    x, t = rng.normal(size=(2, 2, FEATURES)), rng.uniform(size=(2, 2, 2))
    gen.update(params, state, x[0], t[0], learning_rate=0.1)
    h0 = state["hidden"].copy()
    before = {k: v.copy() for k, v in params.items()}
    _, grads = gen.loss_and_grad(before, x[1:], t[1:], h0=h0)
    gen.update(params, state, x[1], t[1], learning_rate=0.1)
    for name in params:
        np.testing.assert_allclose(params[name], before[name] - 0.1 * grads[name], rtol=1e-12)
    (H,) = gen._rnn_forward(x[1:], before["Wx1"], before["Wh1"], before["b1"], 0, h0=h0)
    np.testing.assert_allclose(state["hidden"], H[:, -1], rtol=1e-12)


def test_reset_state_starts_over():
    """(c) After reset_state the stream begins from zeros again."""
    gen = module(per_step(2))
    params = gen.init_params(seed=5)
    state = gen.init_state(params)
    rng = np.random.default_rng(4)
    x, t = rng.normal(size=(2, FEATURES)), rng.uniform(size=(2, 2))
    first = gen.update(params, state, x, t, learning_rate=0.0)
    carried = gen.update(params, state, x, t, learning_rate=0.0)
    assert carried != pytest.approx(first, rel=1e-9)  # the state was carried in
    hidden = state["hidden"].copy()
    gen.reset_state(state)
    assert state["hidden"] is None
    assert gen.update(params, state, x, t, learning_rate=0.0) == pytest.approx(first, rel=1e-15)
    assert not np.allclose(state["hidden"], hidden)
    with pytest.raises(ValueError, match="h0: expected shape"):
        gen.loss_and_grad(params, x[None], t[None], h0=np.zeros(UNITS + 1))


def test_only_an_elman_first_layer_carries_state():
    lstm = generate_module_source(Network("lstm", inputs=(3, FEATURES))
                                  .rnn(UNITS, kind="lstm", sequences=True)
                                  .dense(1, "identity").loss("sse").build())
    assert "update() is stateless" in lstm and "reset_state" not in lstm
    assert "h0=h0" not in lstm
    dense = generate_module_source(Network("plain", inputs=2).dense(1, "sigmoid").build())
    assert "h0" not in dense and "reset_state" not in dense
    stacked = generate_module_source(Network("stacked", inputs=(3, FEATURES))
                                     .rnn(UNITS, sequences=True).rnn(2, sequences=True)
                                     .dense(1, "identity").loss("sse").build())
    calls = [line.strip() for line in stacked.splitlines()
             if line.strip().startswith(("tape", "bptt")) and "h0=h0" in line]
    assert calls == ["tape1 = _rnn_forward(X, Wx1, Wh1, b1, 0, h0=h0)",
                     "bptt1 = _rnn_backward(dL_da1, X, tape1, Wx1, Wh1, b1, 0, 0, h0=h0)"]
