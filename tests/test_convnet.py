"""Convolutional networks end to end: generated loss_and_grad against PyTorch autograd.

The oracle shares no code with symgrad: each spec is rebuilt layer by layer
with ``torch.nn.functional`` and differentiated by torch's autograd, in
float64.  Also: the generated module leaves its inputs alone, float32 stays
float32, and the sampled finite-difference check passes.
"""

from __future__ import annotations

import numpy as np
import pytest

from symgrad.codegen import generate_module_source, load_module
from symgrad.spec import Network

torch = pytest.importorskip("torch")
F = torch.nn.functional


def lenet():
    return (Network("lenet", inputs=(1, 8, 8)).conv2d(4, 3, "tanh", padding=1).maxpool2d(2)
            .conv2d(6, 3, "relu").flatten().dense(10, "softmax")
            .loss("cross_entropy", reduction="mean"))


def strided():
    return (Network("strided", inputs=(2, 9, 8)).conv2d(3, (3, 2), "sigmoid", stride=2, padding=1)
            .avgpool2d(2, stride=1).flatten().dense(4, "tanh").dense(2, "identity")
            .loss("mse"))


def overlapping():
    return (Network("overlap", inputs=(1, 8, 8)).conv2d(2, 2, "identity", bias=False)
            .maxpool2d(3, stride=2).conv2d(3, 2, "softplus").flatten().dense(3, "sigmoid")
            .loss("bce", weight_decay=0.01))


def image_flat():
    return (Network("flat", inputs=(2, 3, 3)).flatten().dense(3, "relu").dense(2, "softmax")
            .loss("cross_entropy"))


SPECS = {"lenet": lenet, "strided": strided, "overlapping": overlapping, "flat": image_flat}
ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid,
               "identity": lambda x: x, "softplus": F.softplus}


def torch_loss(spec, params, X, T):
    """The spec's loss built from torch.nn.functional, layer by layer."""
    a = X.reshape(len(X), *spec.input_shape)
    for index, layer in enumerate(spec.layers, start=1):
        if layer.kind == "conv2d":
            bias = params.get(f"b{index}")
            a = F.conv2d(a, params[f"K{index}"], bias, stride=layer.stride,
                         padding=layer.padding)
        elif layer.kind == "maxpool2d":
            a = F.max_pool2d(a, layer.kernel, layer.stride)
        elif layer.kind == "avgpool2d":
            a = F.avg_pool2d(a, layer.kernel, layer.stride)
        elif layer.kind == "flatten":
            a = a.reshape(len(a), -1)
            continue
        else:
            a = a @ params[f"W{index}"].T + params[f"b{index}"]
        if layer.activation.kind == "softmax":
            logits = a
            a = torch.softmax(a, dim=1)
        elif layer.kind in ("conv2d", "dense"):
            logits = a
            a = ACTIVATIONS[layer.activation.kind](a)
    n = len(X)
    scale = 1 / n if spec.loss.reduction == "mean" else 1.0
    if spec.loss.kind == "cross_entropy":
        loss = -(T * torch.log_softmax(logits, dim=1)).sum() * scale
    elif spec.loss.kind == "bce":
        loss = F.binary_cross_entropy(a, T, reduction="sum") * scale
    elif spec.loss.kind == "mse":
        loss = ((a - T) ** 2).sum() / T.shape[1] * scale  # mean over outputs
    else:
        loss = 0.5 * ((a - T) ** 2).sum() * scale
    decay = spec.loss.weight_decay
    if decay:
        loss = loss + decay / 2 * sum((p ** 2).sum() for name, p in params.items()
                                      if name[0] in "WK")
    return loss


def data(module, spec, n, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, spec.n_inputs)).astype(dtype)
    if module.CLASSES:
        T = np.eye(spec.n_outputs, dtype=dtype)[rng.integers(spec.n_outputs, size=n)]
    else:
        T = rng.uniform(0.05, 0.95, size=(n, spec.n_outputs)).astype(dtype)
    return X, T


@pytest.fixture(scope="module", params=sorted(SPECS))
def case(request):
    spec = SPECS[request.param]().build()
    return spec, load_module(generate_module_source(spec), name=f"convnet_{spec.name}")


@pytest.mark.parametrize("n", [1, 5])
def test_gradient_matches_torch_autograd(case, n):
    spec, module = case
    params = module.init_params(seed=n)
    for name in params:  # nonzero biases, so a dropped bias term shows
        params[name] = params[name] + 0.1 * np.random.default_rng(7).normal(size=params[name].shape)
    X, T = data(module, spec, n, seed=n)
    value, grads = module.loss_and_grad(params, X, T)
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    expected = torch_loss(spec, tparams, torch.tensor(X), torch.tensor(T))
    expected.backward()
    assert value == pytest.approx(expected.item(), rel=1e-10, abs=1e-12)
    assert set(grads) == set(params)
    for name, grad in grads.items():
        assert grad.shape == params[name].shape, name
        np.testing.assert_allclose(grad, tparams[name].grad.numpy(), rtol=1e-9, atol=1e-11,
                                   err_msg=name)


def test_inputs_unchanged_and_outputs_fresh(case):
    spec, module = case
    params = module.init_params(seed=3)
    X, T = data(module, spec, 4, seed=3)
    before = {k: v.copy() for k, v in params.items()}, X.copy(), T.copy()
    _, grads = module.loss_and_grad(params, X, T)
    module.forward(params, X)
    for name in params:
        np.testing.assert_array_equal(params[name], before[0][name])
    np.testing.assert_array_equal(X, before[1])
    np.testing.assert_array_equal(T, before[2])
    arrays = list(grads.values()) + [X, T] + list(params.values())
    for i, a in enumerate(grads.values()):
        for j, b in enumerate(arrays):
            if i != j:
                assert not np.shares_memory(a, b)


def test_float32_stays_float32(case):
    spec, _ = case
    module = load_module(generate_module_source(spec, dtype="float32"),
                         name=f"convnet32_{spec.name}")
    params = module.init_params(seed=0)
    X, T = data(module, spec, 3, seed=0, dtype=np.float32)
    _, grads = module.loss_and_grad(params, X, T)
    assert all(g.dtype == np.float32 for g in grads.values())
    assert module.forward(params, X).dtype == np.float32


def test_images_accepted_flat_or_shaped(case):
    spec, module = case
    params = module.init_params(seed=1)
    X, T = data(module, spec, 3, seed=1)
    flat = module.loss_and_grad(params, X, T)
    shaped = module.loss_and_grad(params, X.reshape(3, *spec.input_shape), T)
    assert flat[0] == shaped[0]
    for name in params:
        np.testing.assert_array_equal(flat[1][name], shaped[1][name])


def test_kernel_and_input_gradient_text_in_generated_code():
    source = generate_module_source(lenet().build())
    assert "dL_dK3 = _conv2d_grad_kernel(a2, delta3, (1, 1), (0, 0), (3, 3))" in source
    assert "# (18) dL/da2: delta3 fully convolved with K3 rotated 180 degrees" in source
    assert "import" not in source.replace("import numpy as np", "").split('"""', 2)[2] \
        .split("def _main")[0]

