"""Integer class labels at the generated module's boundary, and casting to its dtype.

A softmax output with cross-entropy takes T as integer labels (N,) -- (N, steps)
for per-step sequence outputs -- as well as one-hot rows: ``loss``,
``loss_and_grad``, ``train``, ``update`` and the module's command line one-hot
them, so the loss and gradient are exactly those of the one-hot targets.  A
label out of range is refused: ValueError naming it, or one line and exit 2 on
the command line (and in ``symgrad train --data``).  A float32 module given
float64 data computes in float32.
"""

from __future__ import annotations

import numpy as np
import pytest

from symgrad.cli import main
from symgrad.codegen import generate_module_source, load_module
from symgrad.spec import Network

STEPS, K = 4, 3


def classifier(dtype="float64", reduction="mean"):
    spec = (Network("labels", inputs=5).dense(4, "tanh").dense(K, "softmax")
            .loss("cross_entropy", reduction=reduction).build())
    return load_module(generate_module_source(spec, dtype=dtype), name=f"labels_{dtype}")


def sequence_classifier():
    spec = (Network("labels_seq", inputs=(STEPS, 2)).rnn(4, "tanh", sequences=True)
            .dense(K, "softmax").loss("cross_entropy", reduction="sum").build())
    return load_module(generate_module_source(spec), name="labels_seq")


def data(n=7, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, n)
    return rng.uniform(-1, 1, (n, 5)), labels, np.eye(K)[labels]


def assert_same(a, b):
    (la, ga), (lb, gb) = a, b
    assert la == lb
    assert ga.keys() == gb.keys()
    for name in ga:
        assert np.array_equal(ga[name], gb[name]), name


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8])
def test_labels_give_exactly_the_one_hot_loss_and_gradient(dtype):
    module = classifier()
    params = module.init_params(1)
    X, labels, onehot = data()
    assert module.loss(params, X, labels.astype(dtype)) == module.loss(params, X, onehot)
    assert_same(module.loss_and_grad(params, X, labels.astype(dtype)),
                module.loss_and_grad(params, X, onehot))


def test_labels_per_step_sequences():
    module = sequence_classifier()
    params = module.init_params(0)
    rng = np.random.default_rng(3)
    X = rng.uniform(-1, 1, (5, STEPS, 2))
    labels = rng.integers(0, K, (5, STEPS))
    onehot = np.eye(K)[labels]
    assert module.loss(params, X, labels) == module.loss(params, X, onehot)
    assert_same(module.loss_and_grad(params, X, labels), module.loss_and_grad(params, X, onehot))
    assert_same(module.loss_and_grad(params, X, labels),
                module.loss_and_grad(params, X, onehot.reshape(5, -1)))


def test_labels_train_and_update_as_one_hot():
    module = classifier()
    X, labels, onehot = data(12)
    runs = []
    for T in (labels, onehot):
        params = module.init_params(2)
        history = module.train(params, X, T, mode="minibatch", epochs=3, batch_size=5)
        state = module.init_state(params)
        history.append(module.update(params, state, X[0], T[0]))
        runs.append((history, params))
    assert runs[0][0] == runs[1][0]
    for name in runs[0][1]:
        assert np.array_equal(runs[0][1][name], runs[1][1][name]), name


@pytest.mark.parametrize("bad", [3, -1])
def test_label_out_of_range_is_refused_naming_it(bad):
    module = classifier()
    params = module.init_params(0)
    X, labels, _ = data()
    labels[4] = bad
    for call in (module.loss, module.loss_and_grad, module.train):
        with pytest.raises(ValueError, match=rf"class label {bad} is out of range"):
            call(params, X, labels)
    with pytest.raises(ValueError, match=rf"class label {bad}"):
        module.update(params, module.init_state(params), X[0], bad)


def test_float_targets_are_not_taken_for_labels():
    """Only integer arrays are labels: float (N,) targets stay a shape error, not one-hot."""
    module = classifier()
    X, labels, _ = data()
    with pytest.raises(ValueError):
        module.loss_and_grad(module.init_params(0), X, labels.astype(float))


def test_module_command_line_takes_labels(tmp_path, capsys):
    module = classifier()
    X, labels, _ = data(10)
    np.savez(tmp_path / "ok.npz", X=X, T=labels)
    out = tmp_path / "params.npz"
    assert module._main(["--data", str(tmp_path / "ok.npz"), "--epochs", "2",
                         "--out", str(out)]) == 0
    assert out.exists()
    labels[2] = 9
    np.savez(tmp_path / "bad.npz", X=X, T=labels)
    capsys.readouterr()
    assert module._main(["--data", str(tmp_path / "bad.npz"), "--out",
                         str(tmp_path / "no.npz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "T: class label 9 is out of range" in err, err
    assert not (tmp_path / "no.npz").exists()


def test_symgrad_train_data_with_labels(tmp_path, capsys):
    spec = tmp_path / "net.toml"
    spec.write_text('name = "net"\ninputs = 5\n[[layers]]\nunits = 4\nactivation = "tanh"\n'
                    '[[layers]]\nunits = 3\nactivation = "softmax"\n'
                    '[loss]\nkind = "cross_entropy"\n[training]\nepochs = 3\n')
    X, labels, _ = data(10)
    np.savez(tmp_path / "ok.npz", X=X, T=labels)
    assert main(["train", str(spec), "--data", str(tmp_path / "ok.npz"), "--quiet"]) == 0
    labels[0] = 3
    np.savez(tmp_path / "bad.npz", X=X, T=labels)
    capsys.readouterr()
    assert main(["train", str(spec), "--data", str(tmp_path / "bad.npz"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "class label 3 is out of range" in err, err


def test_float32_module_casts_float64_data():
    module = classifier("float32")
    params = module.init_params(0)
    X, labels, onehot = data()
    assert X.dtype == np.float64
    assert module.forward(params, X).dtype == np.float32
    for T in (labels, onehot):
        value, grads = module.loss_and_grad(params, X, T)
        assert all(g.dtype == np.float32 for g in grads.values()), {
            k: g.dtype for k, g in grads.items()}
        assert value == module.loss_and_grad(params, X.astype(np.float32),
                                             onehot.astype(np.float32))[0]
        assert module.loss(params, X, T) == module.loss(params, X.astype(np.float32),
                                                        onehot.astype(np.float32))
