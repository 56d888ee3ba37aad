"""train(epoch_loss="batches") reuses the batches' losses instead of a pass over the whole set."""

from __future__ import annotations

import numpy as np
import pytest

from symgrad.codegen import generate_module_source, load_module
from symgrad.spec import Network


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_batches_loss_equals_full_loss_when_nothing_moves(reduction):
    spec = (Network("e", inputs=3).dense(4, "tanh").dense(2, "sigmoid")
            .loss("bce", reduction=reduction).build())
    module = load_module(generate_module_source(spec), name=f"epoch_{reduction}")
    rng = np.random.default_rng(0)
    X, T = rng.normal(size=(37, 3)), rng.integers(0, 2, size=(37, 2)).astype(float)
    params = module.init_params(0)
    full = module.train(params, X, T, mode="minibatch", batch_size=8, epochs=2,
                        learning_rate=0.0, momentum=0.0)
    batches = module.train(params, X, T, mode="minibatch", batch_size=8, epochs=2,
                           learning_rate=0.0, momentum=0.0, epoch_loss="batches")
    assert batches == pytest.approx(full, rel=1e-12)
    assert full[0] == pytest.approx(module.loss(params, X, T), rel=1e-12)


def test_epoch_loss_does_not_change_training():
    spec = Network("e", inputs=2).dense(3, "tanh").dense(1, "sigmoid").loss("sse").build()
    module = load_module(generate_module_source(spec), name="epoch_same")
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float)
    T = np.array([[0], [1], [1], [0]], float)
    a, b = module.init_params(1), module.init_params(1)
    module.train(a, X, T, mode="online", epochs=20, learning_rate=0.3)
    module.train(b, X, T, mode="online", epochs=20, learning_rate=0.3, epoch_loss="batches")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    with pytest.raises(ValueError, match="epoch_loss"):
        module.train(a, X, T, epochs=1, epoch_loss="sometimes")
