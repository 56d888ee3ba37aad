"""Tests for the generated NumPy modules: source form, interface, training, gradients.

Oracles are independent of symgrad's derivation: central finite differences
written here, and the same network written in PyTorch (float64, autograd) by a
small builder that reads the spec's layers and maps activation names to torch
functions.  Nothing in the oracles looks at the generated code.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from symgrad.codegen import generate_module_source, load_module, write_module
from symgrad.derive import derive
from symgrad.interpret import evaluate
from symgrad.spec import Network, load_spec

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

#: Every activation, as written in a spec (leaky_relu with slope 0.1, mish as a custom one).
ACTIVATIONS = {
    "identity": "identity",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "relu": "relu",
    "leaky_relu": {"kind": "leaky_relu", "slope": 0.1},
    "softplus": "softplus",
    "elu": "elu",
    "gelu": "gelu",
    "silu": "silu",
    "softmax": "softmax",
    "mish": {"expr": "x*tanh(log(1+exp(x)))"},
}
LOSSES = ("sse", "mse", "bce", "cross_entropy", "custom")
CUSTOM_LOSS = "(y-t)**4/4"
REDUCTIONS = ("sum", "mean")


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    return env


# --------------------------------------------------------------------------- building specs


def output_activation(hidden: str, loss: str) -> str:
    """The output layer's activation: forced by bce/cross_entropy, else the one under test."""
    return {"bce": "sigmoid", "cross_entropy": "softmax"}.get(loss, hidden)


def with_loss(net: Network, loss: str, reduction: str, weight_decay: float = 0.0) -> Network:
    if loss == "custom":
        return net.loss(expr=CUSTOM_LOSS, reduction=reduction, weight_decay=weight_decay)
    return net.loss(loss, reduction=reduction, weight_decay=weight_decay)


@functools.lru_cache(maxsize=None)
def matrix_spec(activation: str, loss: str, reduction: str):
    """3 inputs -> 4 units of ``activation`` -> 2 outputs, with ``loss``."""
    net = (Network(f"m_{activation}_{loss}_{reduction}", inputs=3)
           .dense(4, ACTIVATIONS[activation])
           .dense(2, ACTIVATIONS[output_activation(activation, loss)]))
    return with_loss(net, loss, reduction).build()


@functools.lru_cache(maxsize=None)
def matrix_module(activation: str, loss: str, reduction: str, dtype: str = "float64"):
    spec = matrix_spec(activation, loss, reduction)
    return load_module(generate_module_source(spec, dtype=dtype),
                       name=f"gen_{spec.name}_{dtype}")


MATRIX = [(a, loss, r) for a in ACTIVATIONS for loss in LOSSES for r in REDUCTIONS]


def skip_spec():
    """A skip connection from the inputs to the output, and one between hidden layers."""
    return (Network("skip", inputs=3)
            .dense(4, "tanh", name="h1")
            .dense(3, "elu", name="h2")
            .dense(2, ACTIVATIONS["mish"], name="h3", sources=["h1", "h2"])
            .dense(2, "sigmoid", sources=["input", "h1", "h3"])
            .loss("bce", reduction="mean", weight_decay=0.01).build())


def groups_spec():
    """Two input groups read by different layers; one layer without a bias."""
    return (Network("groups", inputs={"left": 2, "right": 3})
            .dense(3, "softplus", name="l", sources=["left"])
            .dense(2, "gelu", name="r", sources=["right"], bias=False)
            .dense(4, "relu", name="both", sources=["r", "l", "left"])
            .dense(3, "softmax", sources=["both", "input"])
            .loss("cross_entropy", reduction="sum").build())


@functools.lru_cache(maxsize=None)
def module_of(name: str, dtype: str = "float64"):
    spec = {"skip": skip_spec, "groups": groups_spec}[name]()
    return load_module(generate_module_source(spec, dtype=dtype), name=f"gen_{name}_{dtype}")


def example_module(name: str):
    return load_module(ROOT / "generated" / f"{name}.py", name=f"committed_{name}")


# --------------------------------------------------------------------------- oracles


def random_problem(module, *, batch=5, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    params = {name: (value.astype(np.float64) + rng.uniform(-0.5, 0.5, value.shape)).astype(dtype)
              for name, value in module.init_params(seed, dtype=np.float64).items()}
    X = rng.uniform(-1, 1, (batch, module.N_INPUTS)).astype(dtype)
    if module.CLASSES:
        T = np.eye(module.N_OUTPUTS)[rng.integers(0, module.N_OUTPUTS, batch)]
    else:
        T = rng.uniform(0.05, 0.95, (batch, module.N_OUTPUTS))
    return params, X, T.astype(dtype)


def finite_differences(loss, params, X, T, h=1e-6):
    """Central differences of ``loss`` entry by entry (float64)."""
    params = {k: v.astype(np.float64).copy() for k, v in params.items()}
    grads = {}
    for name, value in params.items():
        grad = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            old = value[index]
            value[index] = old + h
            up = loss(params, X, T)
            value[index] = old - h
            down = loss(params, X, T)
            value[index] = old
            grad[index] = (up - down) / (2 * h)
        grads[name] = grad
    return grads


def relative_error(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want), initial=0.0) / max(np.max(np.abs(want)), 1e-12))


def torch_reference(spec, params, X, T):
    """The loss and gradient of ``spec``'s network, written in PyTorch from the spec."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    custom_names = {"exp": torch.exp, "log": torch.log, "tanh": torch.tanh, "sqrt": torch.sqrt}

    def activation(act, z):
        kind, p = act.kind, dict(act.parameters)
        if kind == "custom":
            return eval(act.expr, {"__builtins__": {}, **custom_names}, {"x": z})  # noqa: S307
        return {
            "identity": lambda: z,
            "sigmoid": lambda: torch.sigmoid(z),
            "tanh": lambda: torch.tanh(z),
            "relu": lambda: torch.relu(z),
            "leaky_relu": lambda: F.leaky_relu(z, p.get("slope", 0.01)),
            "softplus": lambda: torch.logaddexp(z, torch.zeros_like(z)),
            "elu": lambda: F.elu(z, p.get("alpha", 1.0)),
            "gelu": lambda: F.gelu(z),
            "silu": lambda: F.silu(z),
            "softmax": lambda: torch.softmax(z, dim=1),
        }[kind]()

    tp = {k: torch.tensor(np.asarray(v, np.float64), requires_grad=True)
          for k, v in params.items()}
    x = torch.tensor(np.asarray(X, np.float64))
    t = torch.tensor(np.asarray(T, np.float64))
    values, start = {}, 0
    for group, size in spec.inputs:
        values[group] = x[:, start:start + size]
        start += size
    values["input"] = x
    out = None
    for index, layer in enumerate(spec.layers, start=1):
        inp = torch.cat([values[s] for s in layer.sources], dim=1)
        z = inp @ tp[f"W{index}"].T
        if layer.bias:
            z = z + tp[f"b{index}"]
        if index == len(spec.layers):
            out_z = z
        out = values[layer.name] = activation(layer.activation, z)
    loss = spec.loss
    if loss.kind == "custom":
        per = eval(loss.expr, {"__builtins__": {}, **custom_names},  # noqa: S307
                   {"y": out, "t": t})
    elif loss.kind == "sse":
        per = (out - t) ** 2 / 2
    elif loss.kind == "mse":
        per = (out - t) ** 2 / out.shape[1]
    elif loss.kind == "bce":
        per = -(t * torch.log(out) + (1 - t) * torch.log(1 - out))
    else:  # cross_entropy with a softmax output
        per = -t * torch.log_softmax(out_z, dim=1)
    total = per.sum()
    if loss.reduction == "mean":
        total = total / x.shape[0]
    if loss.weight_decay:
        total = total + loss.weight_decay / 2 * sum((w ** 2).sum() for k, w in tp.items()
                                                    if k.startswith("W"))
    total.backward()
    return float(total.detach()), {k: v.grad.numpy() for k, v in tp.items()}


def assert_matches(got: dict, want: dict, tol: float, what: str):
    assert got.keys() == want.keys(), what
    for name in want:
        assert got[name].shape == want[name].shape, (what, name)
        err = relative_error(got[name], want[name])
        assert err < tol, f"{what}: {name} relative error {err:.2e}"


# --------------------------------------------------------------------------- source form


def test_generation_is_deterministic_across_processes(tmp_path):
    specs = [ROOT / "examples" / "skip_mish.toml", ROOT / "examples" / "digits.toml"]
    here = [generate_module_source(load_spec(s)) for s in specs]
    assert here == [generate_module_source(load_spec(s)) for s in specs]
    assert generate_module_source(groups_spec()) == generate_module_source(groups_spec())
    script = ("import sys\nfrom symgrad.codegen import generate_module_source\n"
              "from symgrad.spec import load_spec\n"
              "for path in sys.argv[1:]:\n"
              "    sys.stdout.write(generate_module_source(load_spec(path)) + '\\0')\n")
    for seed in ("0", "4242"):
        env = {**_env(), "PYTHONHASHSEED": seed}
        result = subprocess.run([sys.executable, "-c", script, *map(str, specs)], env=env,
                                capture_output=True, check=True, cwd=tmp_path)
        assert result.stdout.decode("utf-8").split("\0")[:-1] == here


def test_header_names_the_spec_and_the_command():
    spec = load_spec(ROOT / "examples" / "xor.toml")
    source = generate_module_source(spec, spec_path="examples/xor.toml",
                                    output_path="out/xor.py", dtype="float32")
    head = source.split('"""')[1]
    assert "Spec:    examples/xor.toml" in head
    assert "Command: symgrad generate examples/xor.toml -o out/xor.py --dtype float32" in head
    committed = (ROOT / "generated" / "xor.py").read_text()
    assert "Command: symgrad generate examples/xor.toml -o generated/xor.py\n" in committed


def _groups(source: str, function: str) -> list[tuple[int, str, list[str]]]:
    """(equation number, comment, names assigned) of each commented group of a function.

    A group is a ``# (n) ...`` comment and the statements under it, up to the next
    comment; ``return`` in ``loss`` assigns "loss".
    """
    lines = source.splitlines()
    tree = ast.parse(source)
    func = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function)
    groups = []
    for node in func.body:
        match = re.match(r"# \((\d+)\) (.*)", lines[node.lineno - 2].strip())
        if match:
            groups.append((int(match.group(1)), match.group(2), []))
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            names = [node.targets[0].id]
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple) \
                and not isinstance(node.value, ast.Tuple):  # not the unpacking of params
            names = [element.id for element in node.targets[0].elts]
        elif isinstance(node, ast.AugAssign):
            names = [node.target.id]
        elif isinstance(node, ast.Return) and function == "loss":
            names = ["loss"]
        else:
            names = []
        if names and groups:
            groups[-1][2].extend(names)
        elif names and not set(names) <= {"n", "X", "T"}:  # n, and data cast at the boundary
            raise AssertionError(f"{function}: {names} assigned above any numbered comment")
    return groups


@pytest.mark.parametrize("make", [
    lambda: load_spec(ROOT / "examples" / "xor.toml"),
    lambda: load_spec(ROOT / "examples" / "digits.toml"),
    skip_spec, groups_spec,
    lambda: matrix_spec("softmax", "sse", "mean"),
    lambda: matrix_spec("relu", "custom", "sum"),
], ids=["xor", "digits", "skip", "groups", "softmax-hidden", "relu-custom"])
def test_every_line_carries_its_equation_number(make):
    spec = make()
    derivation = derive(spec)
    source = generate_module_source(spec)
    targets = {s.number: ("loss" if s.phase == "loss" else s.target) for s in derivation.steps}
    groups = _groups(source, "loss_and_grad")
    numbers = [number for number, _, _ in groups]
    # Every step of the derivation once, each computed under its own number.
    assert sorted(numbers) == sorted(targets)
    for number, _, names in groups:
        assert targets[number] in names, (number, names)
    # In the derivation's order, except backward steps the loss reuses, computed before it.
    loss_number = derivation.loss_step.number
    loss_comment = next(c for n, c, _ in groups if n == loss_number)
    early = numbers[:numbers.index(loss_number)]
    reused = [n for n in early if n > loss_number]
    for number in reused:
        assert f"reusing {targets[number]} from ({number})" in loss_comment
    assert [n for n in numbers if n not in reused] == sorted(set(targets) - set(reused))
    assert derivation.backward
    for function in ("forward", "loss"):
        for number, _, names in _groups(source, function):
            assert targets[number] in names, (function, number, names)


def test_names_follow_the_mathematics():
    source = (ROOT / "generated" / "xor.py").read_text()
    targets = [name for _, _, names in _groups(source, "loss_and_grad") for name in names]
    for name in ("z1", "a1", "z2", "a2", "loss", "dL_da2", "delta2", "dL_dW2", "dL_db2",
                 "dL_da1", "delta1", "dL_dW1", "dL_db1"):
        assert name in targets
    assert "z1 = X @ W1.T\n    z1 += b1\n" in source
    assert "dL_dW2 = delta2.T @ a1" in source
    assert "dL_db1 = delta1.sum(axis=0)" in source


def _check_imports(source: str):
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.Import):
            assert [a.name for a in node.names] == ["numpy"], ast.unparse(node)
        assert not isinstance(node, ast.ImportFrom), ast.unparse(node)
    for func in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
        for node in ast.walk(func):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                assert func.name == "_main", (func.name, ast.unparse(node))
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module])
                for name in names:
                    assert name.split(".")[0] in sys.stdlib_module_names, name


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_generated_code_imports_nothing_but_numpy(activation):
    _check_imports(generate_module_source(matrix_spec(activation, "sse", "mean")))


def test_generated_code_imports_nothing_but_numpy_for_examples():
    for path in sorted((ROOT / "generated").glob("*.py")):
        _check_imports(path.read_text())
    _check_imports(generate_module_source(skip_spec()))
    _check_imports(generate_module_source(groups_spec(), dtype="float32"))


def _ruff() -> list[str]:
    try:
        import ruff  # noqa: F401

        return [sys.executable, "-m", "ruff"]
    except ImportError:
        if shutil.which("ruff"):
            return ["ruff"]
    pytest.skip("ruff is not installed")


def test_ruff_is_clean_on_every_generated_module(tmp_path):
    for activation, loss, reduction in MATRIX:
        for dtype in ("float64", "float32"):
            spec = matrix_spec(activation, loss, reduction)
            (tmp_path / f"{spec.name}_{dtype}.py").write_text(
                generate_module_source(spec, dtype=dtype))
    (tmp_path / "skip.py").write_text(generate_module_source(skip_spec()))
    (tmp_path / "groups.py").write_text(generate_module_source(groups_spec()))
    config = str(ROOT / "pyproject.toml")
    for target in (tmp_path, ROOT / "generated"):
        result = subprocess.run([*_ruff(), "check", "--no-cache", "--config", config,
                                 str(target)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="float16"):
        generate_module_source(matrix_spec("tanh", "sse", "sum"), dtype="float16")


# --------------------------------------------------------------------------- float32


def _locals_at_return(function, *args, inside=None):
    """Every local variable ``inside`` (default: ``function``) had, line by line.

    ``function(*args)`` is called; the locals are those of the calls of
    ``inside`` made during it: its intermediates, including those it deletes
    once their last reader has run.
    """
    seen = {}
    code = (inside or function).__code__

    def tracer(frame, event, arg):
        if frame.f_code is code:
            if event in ("line", "return"):
                seen.update(frame.f_locals)
            return tracer
        return None

    old = sys.gettrace()
    sys.settrace(tracer)
    try:
        result = function(*args)
    finally:
        sys.settrace(old)
    return result, seen


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("loss", LOSSES)
def test_float32_end_to_end(activation, loss):
    module = matrix_module(activation, loss, "mean", "float32")
    assert module.DTYPE is np.float32
    params = module.init_params(3)
    assert all(v.dtype == np.float32 for v in params.values())
    _, X, T = random_problem(module, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (value, grads), local = _locals_at_return(module.loss_and_grad, params, X, T)
        output = module.forward(params, X)
    assert isinstance(value, float) and np.isfinite(value)
    assert output.dtype == np.float32
    assert grads.keys() == params.keys()
    for name, grad in grads.items():
        assert grad.dtype == np.float32, name
        assert grad.shape == params[name].shape
    arrays = {k: v for k, v in local.items() if isinstance(v, np.ndarray)}
    assert {"z1", "a1", "z2", "a2"} <= arrays.keys()
    wrong = {k: v.dtype for k, v in arrays.items() if v.dtype != np.float32}
    assert not wrong, f"intermediates not float32: {wrong}"


def test_float32_online_update_casts_the_example():
    module = module_of("skip", "float32")
    params = module.init_params(0)
    state = module.init_state(params)
    _, local = _locals_at_return(module.update, params, state, [0.1, -0.2, 0.3], [1, 0],
                                 inside=module.loss_and_grad)
    arrays = {k: v.dtype for k, v in local.items() if isinstance(v, np.ndarray)}
    assert arrays and all(d == np.float32 for d in arrays.values()), arrays
    assert all(v.dtype == np.float32 for v in params.values())
    assert all(v.dtype == np.float32 for v in state["velocity"].values())


def test_float32_trains_in_float32():
    module = module_of("groups", "float32")
    params = module.init_params(0)
    _, X, T = random_problem(module, batch=12, dtype=np.float64)  # float64 data is cast
    history = module.train(params, X, T, mode="minibatch", epochs=5, batch_size=4,
                           learning_rate=0.05, optimizer="adam")
    assert len(history) == 5
    assert all(v.dtype == np.float32 for v in params.values())


def test_float32_gradient_close_to_float64():
    m32, m64 = module_of("skip", "float32"), module_of("skip", "float64")
    params, X, T = random_problem(m64)
    _, g64 = m64.loss_and_grad(params, X, T)
    _, g32 = m32.loss_and_grad({k: v.astype(np.float32) for k, v in params.items()},
                               X.astype(np.float32), T.astype(np.float32))
    for name in g64:
        assert g32[name].dtype == np.float32, name
        assert relative_error(g32[name], g64[name]) < 1e-4, name


# --------------------------------------------------------------------------- interface


def test_param_shapes_and_init_params():
    spec = load_spec(ROOT / "examples" / "xor.toml")
    module = example_module("xor")
    assert module.PARAM_SHAPES == derive(spec).graph.params
    assert (module.N_INPUTS, module.N_OUTPUTS, module.CLASSES) == (2, 1, False)
    params = module.init_params(0)
    assert list(params) == list(module.PARAM_SHAPES)
    for name, value in params.items():
        assert value.shape == module.PARAM_SHAPES[name] and value.dtype == np.float64
        assert np.all(np.abs(value) <= 0.5)  # [init] kind = "uniform", range = 0.5
    again = module.init_params(0)
    assert all(np.array_equal(params[k], again[k]) for k in params)
    other = module.init_params(1)
    assert not all(np.array_equal(params[k], other[k]) for k in params)
    assert module.init_params(0, dtype=np.float32)["W1"].dtype == np.float32


@pytest.mark.parametrize("kind", ["uniform", "xavier", "he"])
def test_init_bounds(kind):
    net = (Network("wide", inputs=40).dense(60, "relu").dense(20, "tanh", init="xavier")
           .dense(3, "sigmoid").init(kind, range=0.1))
    module = load_module(generate_module_source(net.build()))
    params = module.init_params(7)
    limits = {
        "uniform": [0.1, 0.1, 0.1],
        "xavier": [np.sqrt(6 / 100), np.sqrt(6 / 80), np.sqrt(6 / 23)],
        "he": [np.sqrt(6 / 40), np.sqrt(6 / 80), np.sqrt(6 / 20)],
    }[kind]
    limits[1] = np.sqrt(6 / 80)  # the middle layer asks for Xavier itself
    for index, limit in enumerate(limits, start=1):
        weights = params[f"W{index}"]
        assert np.abs(weights).max() <= limit
        assert np.abs(weights).max() > 0.8 * limit  # it is the bound, not just below it
        assert abs(weights.mean()) < 0.2 * limit
        bias = params[f"b{index}"]
        layer_kind = "xavier" if index == 2 else kind
        if layer_kind == "uniform":
            assert np.abs(bias).max() <= limit and np.any(bias != 0)
        else:
            assert np.all(bias == 0)


def test_forward_predict_loss():
    module = module_of("groups")
    params, X, T = random_problem(module, batch=7)
    output = module.forward(params, X)
    assert output.shape == (7, 3)
    np.testing.assert_allclose(output.sum(axis=1), 1.0)
    np.testing.assert_array_equal(module.predict(params, X), output.argmax(axis=1))
    value, grads = module.loss_and_grad(params, X, T)
    assert value == pytest.approx(module.loss(params, X, T), rel=1e-14)
    assert list(grads) == list(params)
    xor = example_module("xor")
    p = xor.init_params(0)
    np.testing.assert_array_equal(xor.predict(p, np.eye(2)), xor.forward(p, np.eye(2)))


XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float)
XOR_T = np.array([[0], [1], [1], [0]], float)
ENC_X = np.eye(8)


@pytest.mark.parametrize("mode", ["batch", "minibatch", "stochastic", "online"])
@pytest.mark.parametrize("example", ["xor", "encoder"])
def test_every_training_mode_decreases_the_loss(example, mode):
    module = example_module(example)
    X, T = (XOR_X, XOR_T) if example == "xor" else (ENC_X, ENC_X)
    params = module.init_params(1)
    start = module.loss(params, X, T)
    history = module.train(params, X, T, mode=mode, epochs=300, batch_size=2,
                           learning_rate=0.5, momentum=0.9)
    assert len(history) == 300
    assert history[-1] < 0.7 * start
    assert module.loss(params, X, T) == pytest.approx(history[-1], rel=0.5)


def test_batch_training_solves_xor():
    module = example_module("xor")
    params = module.init_params(0)
    history = module.train(params, XOR_X, XOR_T)  # the spec's defaults: momentum 0.9
    assert history[-1] < 0.05
    assert np.all(np.abs(module.predict(params, XOR_X) - XOR_T) < 0.5)


def _copy(params):
    return {k: v.copy() for k, v in params.items()}


def test_momentum_is_the_1986_rule():
    """dw(t) = -eps dE/dw(t) + alpha dw(t-1), checked for two steps by hand."""
    module = example_module("xor")
    eps, alpha = 0.3, 0.8
    p0 = module.init_params(2)
    _, g0 = module.loss_and_grad(p0, XOR_X, XOR_T)
    dw1 = {k: -eps * g0[k] for k in p0}
    p1 = {k: p0[k] + dw1[k] for k in p0}
    _, g1 = module.loss_and_grad(p1, XOR_X, XOR_T)
    dw2 = {k: -eps * g1[k] + alpha * dw1[k] for k in p0}
    p2 = {k: p1[k] + dw2[k] for k in p0}

    trained = _copy(p0)
    module.train(trained, XOR_X, XOR_T, mode="batch", epochs=2, learning_rate=eps,
                 momentum=alpha, optimizer="sgd")
    for k in p0:
        np.testing.assert_allclose(trained[k], p2[k], rtol=1e-13, atol=1e-15)

    stepped, state = _copy(p0), module.init_state(p0)
    for _ in range(2):
        _, grads = module.loss_and_grad(stepped, XOR_X, XOR_T)
        module.apply_gradient(stepped, state, grads, learning_rate=eps, momentum=alpha)
    for k in p0:
        np.testing.assert_allclose(stepped[k], p2[k], rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(state["velocity"][k], dw2[k], rtol=1e-13, atol=1e-15)


def test_adam_by_hand():
    module = example_module("xor")
    lr, b1, b2, e = 0.01, 0.9, 0.999, 1e-8
    p = module.init_params(3)
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    want = _copy(p)
    for step in (1, 2, 3):
        _, g = module.loss_and_grad(want, XOR_X, XOR_T)
        for k in want:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            m_hat, v_hat = m[k] / (1 - b1 ** step), v[k] / (1 - b2 ** step)
            want[k] = want[k] - lr * m_hat / (np.sqrt(v_hat) + e)
    got = _copy(p)
    module.train(got, XOR_X, XOR_T, mode="batch", epochs=3, learning_rate=lr,
                 optimizer="adam")
    for k in p:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-15)


def test_online_update():
    module = example_module("encoder")
    params = module.init_params(0)
    before = _copy(params)
    state = module.init_state(params)
    x, t = ENC_X[3], ENC_X[3]
    value, grads = module.loss_and_grad(before, x[None, :], t[None, :])
    returned = module.update(params, state, x, t, learning_rate=0.25, momentum=0.0)
    assert returned == pytest.approx(value, rel=1e-14)
    for k in params:
        np.testing.assert_allclose(params[k], before[k] - 0.25 * grads[k], rtol=1e-14,
                                   atol=1e-16)
    # A stream of single examples learns the encoder.
    losses = []
    for _ in range(400):
        for row in ENC_X:
            module.update(params, state, row, row, learning_rate=0.5, momentum=0.5)
        losses.append(module.loss(params, ENC_X, ENC_X))
    assert losses[-1] < 0.7 * module.loss(before, ENC_X, ENC_X)


def test_training_options():
    module = example_module("xor")
    params = module.init_params(0)
    calls = []
    history = module.train(params, XOR_X, XOR_T, epochs=50,
                           callback=lambda epoch, value, p: calls.append(epoch) or epoch == 4)
    assert len(history) == 5 and calls == [0, 1, 2, 3, 4]
    # A schedule that sets the learning rate to 0 from epoch 2 on freezes the weights.
    params = module.init_params(0)
    module.train(params, XOR_X, XOR_T, epochs=2, momentum=0.0)
    frozen = _copy(params)
    params = module.init_params(0)
    module.train(params, XOR_X, XOR_T, epochs=6, momentum=0.0, schedule=((2, 0.0, None),))
    for k in params:
        np.testing.assert_array_equal(params[k], frozen[k])
    # shrink (1986 weight decay) shrinks every parameter after the change.
    a, b = module.init_params(0), module.init_params(0)
    module.train(a, XOR_X, XOR_T, epochs=1, momentum=0.0, learning_rate=0.0)
    module.train(b, XOR_X, XOR_T, epochs=1, momentum=0.0, learning_rate=0.0,
                 shrink=0.1)
    for k in a:
        np.testing.assert_allclose(b[k], 0.9 * a[k])
    with pytest.raises(ValueError, match="mode"):
        module.train(module.init_params(0), XOR_X, XOR_T, mode="sideways", epochs=1)
    with pytest.raises(ValueError):
        module.train(module.init_params(0), XOR_X, XOR_T[:3], epochs=1)


def test_divergence_stops_naming_the_epoch():
    net = Network("diverge", inputs=2).dense(3, "tanh").dense(1, "identity").loss("sse")
    module = load_module(generate_module_source(net.build()))
    params = module.init_params(0)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(FloatingPointError, match=r"epoch \d+"):
            module.train(params, XOR_X, XOR_T, epochs=100, learning_rate=1e150)


def test_command_line_trains_and_writes_atomically(tmp_path):
    data = tmp_path / "xor.npz"
    np.savez(data, X=XOR_X, T=XOR_T)
    out = tmp_path / "out" / "params.npz"
    out.parent.mkdir()
    result = subprocess.run(
        [sys.executable, str(ROOT / "generated" / "xor.py"), "--data", str(data),
         "--epochs", "200", "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr
    assert "epochs 200" in result.stdout
    assert sorted(p.name for p in out.parent.iterdir()) == ["params.npz"]
    with np.load(out) as saved:
        assert sorted(saved.files) == ["W1", "W2", "b1", "b2"]
        assert saved["W1"].shape == (2, 2)
    # Resume from the saved parameters.
    again = subprocess.run(
        [sys.executable, str(ROOT / "generated" / "xor.py"), "--data", str(data),
         "--epochs", "5", "--params", str(out), "--out", str(out), "--mode", "online"],
        capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert not list(tmp_path.rglob("*.tmp"))
    missing = tmp_path / "bad.npz"
    np.savez(missing, X=XOR_X)
    bad = subprocess.run([sys.executable, str(ROOT / "generated" / "xor.py"), "--data",
                          str(missing)], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr == f"{missing}: T: missing array (the file holds: X)\n"


# --------------------------------------------------------------------------- gradients


def _away_from_kinks(spec, params, X):
    """Whether no pre-activation is within 1e-4 of a ReLU/ELU kink (for FD).

    The pre-activations come from evaluating the derivation (the generated code may
    write a_k over z_k).
    """
    derivation = derive(spec)
    output = derivation.graph.node(derivation.graph.output).size
    arrays = {"X": X, "T": np.zeros((len(X), output)), **params}
    values = evaluate(derivation, {k: np.asarray(v, float).tolist() for k, v in arrays.items()},
                      exact=False, digits=20)
    dense = [step.target for step in derivation.forward if step.rule == "dense"]
    return all(min(abs(float(v)) for v in values[name]) > 1e-4 for name in dense)


@pytest.mark.parametrize(("activation", "loss", "reduction"), MATRIX,
                         ids=["-".join(c) for c in MATRIX])
def test_gradient_matches_finite_differences_and_torch(activation, loss, reduction):
    spec = matrix_spec(activation, loss, reduction)
    module = matrix_module(activation, loss, reduction)
    params, X, T = random_problem(module)
    assert _away_from_kinks(spec, params, X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value, grads = module.loss_and_grad(params, X, T)
    assert_matches(grads, finite_differences(module.loss, params, X, T), 1e-6, "FD")
    ref_value, ref_grads = torch_reference(spec, params, X, T)
    assert value == pytest.approx(ref_value, rel=1e-12)
    assert_matches(grads, ref_grads, 1e-8, "torch")


CUSTOM_ACTIVATIONS = [
    "sin(x)+cos(x)", "atan(x)", "sinh(x)/cosh(x)", "abs(x)", "max(x, 0)", "min(x, 0.5*x)",
    "sqrt(1+x**2)", "erf(x)", "sigmoid(x)", "softplus(x)", "x**3/3 + 2*x", "exp(-x**2)",
    "x/(1+abs(x))", "log(1+exp(-x))", "x*sigmoid(x)", "2/(1+exp(-x))",
    "exp(x)/(exp(x)+1)", "log(1+x**2)",
    "1/(1+exp(-2*x))",
]
CUSTOM_LOSSES = ["abs(y-t)", "log(cosh(y-t))", "(y-t)**2 * t", "max(y-t, 0)**2",
                 "-t*log(y) - (1-t)*log(1-y)"]


@pytest.mark.parametrize("loss", CUSTOM_LOSSES)
@pytest.mark.parametrize("activation", CUSTOM_ACTIVATIONS)
def test_custom_expressions_match_finite_differences_in_float32_too(activation, loss):
    out = "sigmoid" if "log(y)" in loss else "tanh"
    spec = (Network("custom", inputs=3).dense(4, {"expr": activation}).dense(2, out)
            .loss(expr=loss, reduction="mean").build())
    m64 = load_module(generate_module_source(spec))
    params, X, T = random_problem(m64)
    assert _away_from_kinks(spec, params, X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, grads = m64.loss_and_grad(params, X, T)
    assert_matches(grads, finite_differences(m64.loss, params, X, T), 1e-6, "FD")
    m32 = load_module(generate_module_source(spec, dtype="float32"))
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    (_, g32), local = _locals_at_return(m32.loss_and_grad, p32, X.astype(np.float32),
                                        T.astype(np.float32))
    wrong = {k: v.dtype for k, v in local.items()
             if isinstance(v, np.ndarray) and v.dtype != np.float32}
    assert not wrong, f"float32 module computed in another dtype: {wrong}"
    for name in grads:
        assert relative_error(g32[name], grads[name]) < 1e-3, name


@pytest.mark.parametrize("name", ["skip", "groups"])
def test_skip_connections_and_input_groups_match_torch(name):
    spec = {"skip": skip_spec, "groups": groups_spec}[name]()
    module = module_of(name)
    for seed in range(3):
        params, X, T = random_problem(module, batch=6, seed=seed)
        value, grads = module.loss_and_grad(params, X, T)
        ref_value, ref_grads = torch_reference(spec, params, X, T)
        assert value == pytest.approx(ref_value, rel=1e-12)
        assert_matches(grads, ref_grads, 1e-8, f"torch seed {seed}")
    if _away_from_kinks(spec, params, X):
        assert_matches(grads, finite_differences(module.loss, params, X, T), 1e-6, "FD")


@pytest.mark.parametrize("name", ["xor", "encoder", "skip_mish", "digits"])
def test_committed_examples_match_torch(name):
    spec = load_spec(ROOT / "examples" / f"{name}.toml")
    module = example_module(name)
    params, X, T = random_problem(module, batch=4)
    value, grads = module.loss_and_grad(params, X, T)
    ref_value, ref_grads = torch_reference(spec, params, X, T)
    assert value == pytest.approx(ref_value, rel=1e-12)
    assert_matches(grads, ref_grads, 1e-8, name)


HIDDEN = list(ACTIVATIONS)


@st.composite
def architectures(draw):
    grouped = draw(st.booleans())
    if grouped:
        inputs = {"u": draw(st.integers(1, 4)), "v": draw(st.integers(1, 4))}
        known = ["u", "v", "input"]
    else:
        inputs = draw(st.integers(1, 6))
        known = ["input"]
    depth = draw(st.integers(1, 5))
    loss = draw(st.sampled_from(LOSSES))
    reduction = draw(st.sampled_from(REDUCTIONS))
    decay = draw(st.sampled_from([0.0, 0.0, 0.05]))
    net = Network("random", inputs=inputs)
    previous = None
    for index in range(depth):
        last = index == depth - 1
        name = f"h{index + 1}"
        if last:
            activation = output_activation(draw(st.sampled_from(HIDDEN)), loss)
            units = draw(st.integers(2 if activation == "softmax" else 1, 12))
        else:
            activation = draw(st.sampled_from(HIDDEN))
            units = draw(st.integers(1, 12))
        if previous is None:
            sources = [draw(st.sampled_from(known))]
        else:
            extra = draw(st.lists(st.sampled_from(known), unique=True, max_size=2))
            sources = [previous] + [s for s in extra if s != previous]
            sources = draw(st.permutations(sources))
        net.dense(units, ACTIVATIONS[activation], name=name, sources=list(sources),
                  bias=draw(st.booleans()))
        known.append(name)
        previous = name
    return with_loss(net, loss, reduction, decay).build()


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(spec=architectures(), seed=st.integers(0, 2**16))
def test_random_architectures_match_torch(spec, seed):
    module = load_module(generate_module_source(spec), name="gen_random")
    params, X, T = random_problem(module, batch=4, seed=seed)
    value, grads = module.loss_and_grad(params, X, T)
    ref_value, ref_grads = torch_reference(spec, params, X, T)
    assert value == pytest.approx(ref_value, rel=1e-10, abs=1e-12)
    assert_matches(grads, ref_grads, 1e-8, "random architecture")


# --------------------------------------------------------------------------- memory plan


def _plan_modules():
    for activation, loss, reduction in MATRIX[::3]:
        yield f"{activation}-{loss}-{reduction}", matrix_module(activation, loss, reduction)
    for name, make in (("skip", skip_spec), ("groups", groups_spec)):
        yield name, load_module(generate_module_source(make()), name=f"plan_{name}")


@pytest.mark.parametrize(("name", "module"), list(_plan_modules()),
                         ids=[name for name, _ in _plan_modules()])
def test_in_place_code_leaves_inputs_and_parameters_alone(name, module):
    """Arrays written over are the function's own: X, T and params never change, and no
    two gradients (or a gradient and an input) share memory."""
    params, X, T = random_problem(module, batch=7)
    before = {key: value.copy() for key, value in [*params.items(), ("X", X), ("T", T)]}
    value, grads = module.loss_and_grad(params, X, T)
    output = module.forward(params, X)
    assert module.loss(params, X, T) == pytest.approx(value, rel=1e-12)
    for key, value in [*params.items(), ("X", X), ("T", T)]:
        assert np.array_equal(value, before[key]), key
    arrays = [*grads.values(), *params.values(), X, T, output]
    for i, first in enumerate(arrays):
        for second in arrays[i + 1:]:
            assert not np.shares_memory(first, second)
    # Calling again gives the same gradients: nothing leaks from one call to the next.
    _, again = module.loss_and_grad(params, X, T)
    for key in grads:
        assert np.array_equal(grads[key], again[key]), key


def test_in_place_code_is_used_where_the_operand_is_dead():
    source = generate_module_source(matrix_spec("relu", "cross_entropy", "sum"))
    body = source[source.index("def loss_and_grad"):source.index("def init_state")]
    assert "a1 = np.maximum(z1, 0, out=z1)" in body  # z1 is not read again
    assert "delta2 = np.subtract(a2, T, out=a2)" in body  # nor is the output
    assert "delta1 = np.multiply(dL_da1, a1 > 0, out=dL_da1)" in body
    assert "np.heaviside" not in body
    # ELU's derivative reads z1, so z1 is kept and a1 is a new array.
    source = generate_module_source(matrix_spec("elu", "sse", "sum"))
    body = source[source.index("def loss_and_grad"):source.index("def init_state")]
    assert "out=z1" not in body and "z1" in body.split("# Backward pass.")[1]


def test_write_module_is_atomic_and_follows_no_planted_link(tmp_path):
    victim = tmp_path / "victim.py"
    victim.write_text("keep")
    out = tmp_path / "gen" / "tiny.py"
    out.parent.mkdir()
    (out.parent / ".tiny.py.tmp").symlink_to(victim)  # the old, predictable temporary name
    spec = Network("tiny", inputs=2).dense(1, "sigmoid").build()
    write_module(spec, out)
    assert victim.read_text() == "keep"
    assert out.read_text() == generate_module_source(spec, output_path=str(out))
    assert sorted(p.name for p in out.parent.iterdir()) == [".tiny.py.tmp", "tiny.py"]
    assert out.stat().st_mode & 0o777 == 0o644
