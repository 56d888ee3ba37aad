"""Measure ``symgrad verify``: planted mistakes in hand-written gradients, and correct variants.

Each network in ``tests/mutants/`` has one correct hand-written backward pass
(``grad``) and a few equivalent implementations.  A mutant is ``grad`` with
one named textual modification (the planted pattern); every mutant must be
caught, and the diagnosis must name the planted pattern for at least 80% of
them.  The correct variants (separate functions, and equivalent rewrites of
``grad``) must never raise a false alarm.  ``pytest -s`` prints the figures.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from symgrad.derive import derive
from symgrad.spec import load_spec
from symgrad.verify import load_grad_function, verify_gradient

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "tests" / "mutants"
SPECS = {
    "sig3": MUTANTS / "sig3.toml",  # sigmoid, tanh, sigmoid; SSE sum
    "softmax_clf": MUTANTS / "softmax_clf.toml",  # tanh, softmax; mean CE; weight decay
    "relu_net": ROOT / "examples" / "relu_net.toml",  # relu, relu, identity; mean MSE
    "skip_bce": MUTANTS / "skip_bce.toml",  # skip connection; sigmoid; mean BCE
}

# (network, mutant id, planted pattern, text in grad, replacement)
MUTATIONS = [
    # sig3: 3-4-4-2
    ("sig3", "transposed_W2", "transposed", "dW2 = delta2.T @ a1", "dW2 = a1.T @ delta2"),
    ("sig3", "transposed_W1", "transposed", "dW1 = delta1.T @ X", "dW1 = X.T @ delta1"),
    ("sig3", "sign_W3", "sign_flipped", "dW3 = delta3.T @ a2", "dW3 = -(delta3.T @ a2)"),
    ("sig3", "sign_error", "sign_flipped", "(a3 - T) * a3", "(T - a3) * a3"),
    ("sig3", "x2_W1", "scaled", "dW1 = delta1.T @ X", "dW1 = 2 * delta1.T @ X"),
    ("sig3", "half_b3", "scaled", "db3 = delta3.sum(axis=0)", "db3 = delta3.sum(axis=0) / 2"),
    ("sig3", "mean_not_sum", "scaled", "delta3 = (a3 - T) * a3 * (1 - a3)",
     "delta3 = (a3 - T) * a3 * (1 - a3) / len(X)"),
    ("sig3", "point_a_layer1", "wrong_point", "delta1 = (delta2 @ W2) * a1 * (1 - a1)",
     "delta1 = (delta2 @ W2) * sigmoid(a1) * (1 - sigmoid(a1))"),
    ("sig3", "point_a_layer2", "wrong_point", "(1 - a2 ** 2)", "(1 - np.tanh(a2) ** 2)"),
    ("sig3", "point_z_output", "wrong_point", "delta3 = (a3 - T) * a3 * (1 - a3)",
     "delta3 = (a3 - T) * z3 * (1 - z3)"),
    ("sig3", "bias_one_sample", "bias_not_summed", "db1 = delta1.sum(axis=0)",
     "db1 = delta1[0]"),
    ("sig3", "bias_unsummed", "bias_not_summed", "db2 = delta2.sum(axis=0)", "db2 = delta2"),
    ("sig3", "bias_mean", "bias_not_summed", "db2 = delta2.sum(axis=0)",
     "db2 = delta2.mean(axis=0)"),
    ("sig3", "swapped_b1", "swapped", '"b1": db1', '"b1": db2'),
    ("sig3", "tanh_deriv_for_sigmoid", "wrong_activation_derivative",
     "delta1 = (delta2 @ W2) * a1 * (1 - a1)", "delta1 = (delta2 @ W2) * (1 - a1 ** 2)"),
    ("sig3", "sigmoid_deriv_missing", "wrong_activation_derivative",
     "delta3 = (a3 - T) * a3 * (1 - a3)", "delta3 = a3 - T"),
    ("sig3", "sigmoid_deriv_for_tanh", "wrong_activation_derivative", "(1 - a2 ** 2)",
     "a2 * (1 - a2)"),
    # softmax_clf: 4-5-3, mean cross-entropy, weight decay 0.01
    ("softmax_clf", "decay_missing_W1", "weight_decay_missing",
     "dW1 = delta1.T @ X + LAM * W1", "dW1 = delta1.T @ X"),
    ("softmax_clf", "decay_missing_W2", "weight_decay_missing",
     "dW2 = delta2.T @ a1 + LAM * W2", "dW2 = delta2.T @ a1"),
    ("softmax_clf", "decay_twice", "weight_decay_extra", "+ LAM * W2", "+ 2 * LAM * W2"),
    ("softmax_clf", "decay_on_bias", "weight_decay_extra", "db1 = delta1.sum(axis=0)",
     "db1 = delta1.sum(axis=0) + LAM * b1"),
    ("softmax_clf", "sum_not_mean", "scaled", "delta2 = (a2 - T) / n", "delta2 = a2 - T"),
    ("softmax_clf", "sign_error", "sign_flipped", "(a2 - T) / n", "(T - a2) / n"),
    ("softmax_clf", "x2_data_W1", "scaled", "dW1 = delta1.T @ X + LAM * W1",
     "dW1 = 2 * delta1.T @ X + LAM * W1"),
    ("softmax_clf", "half_b1", "scaled", "db1 = delta1.sum(axis=0)",
     "db1 = delta1.sum(axis=0) / 2"),
    ("softmax_clf", "transposed_W2", "transposed", "dW2 = delta2.T @ a1 + LAM * W2",
     "dW2 = (delta2.T @ a1 + LAM * W2).T"),
    ("softmax_clf", "point_a", "wrong_point", "(1 - a1 ** 2)", "(1 - np.tanh(a1) ** 2)"),
    ("softmax_clf", "sigmoid_deriv_for_tanh", "wrong_activation_derivative", "(1 - a1 ** 2)",
     "a1 * (1 - a1)"),
    ("softmax_clf", "tanh_deriv_missing", "wrong_activation_derivative",
     "delta1 = (delta2 @ W2) * (1 - a1 ** 2)", "delta1 = delta2 @ W2"),
    ("softmax_clf", "softmax_deriv_on_top", "wrong_activation_derivative",
     "delta2 = (a2 - T) / n", "delta2 = (a2 - T) / n * a2 * (1 - a2)"),
    ("softmax_clf", "bias_last_sample", "bias_not_summed", "db2 = delta2.sum(axis=0)",
     "db2 = delta2[-1]"),
    # relu_net: 3-5-5-1, mean squared error
    ("relu_net", "relu_deriv_missing_1", "wrong_activation_derivative",
     "delta1 = (delta2 @ W2) * (z1 > 0)", "delta1 = delta2 @ W2"),
    ("relu_net", "relu_deriv_missing_2", "wrong_activation_derivative",
     "delta2 = (delta3 @ W3) * (z2 > 0)", "delta2 = delta3 @ W3"),
    ("relu_net", "mask_a_ge_zero", "wrong_activation_derivative", "(z1 > 0)", "(a1 >= 0)"),
    ("relu_net", "sigmoid_slope_for_relu", "wrong_activation_derivative", "(z2 > 0)",
     "a2 * (1 - a2)"),
    ("relu_net", "mse_factor_2_dropped", "scaled", "delta3 = 2 * (y - T) / n",
     "delta3 = (y - T) / n"),
    ("relu_net", "sum_not_mean", "scaled", "delta3 = 2 * (y - T) / n", "delta3 = 2 * (y - T)"),
    ("relu_net", "x2_W3", "scaled", "dW3 = delta3.T @ a2", "dW3 = 2 * delta3.T @ a2"),
    ("relu_net", "transposed_W2", "transposed", "dW2 = delta2.T @ a1", "dW2 = a1.T @ delta2"),
    ("relu_net", "transposed_W1", "transposed", "dW1 = delta1.T @ X", "dW1 = X.T @ delta1"),
    ("relu_net", "swapped_b2", "swapped", '"b2": db2', '"b2": db1'),
    ("relu_net", "sign_W1", "sign_flipped", "dW1 = delta1.T @ X", "dW1 = -delta1.T @ X"),
    ("relu_net", "bias_one_sample", "bias_not_summed", "db3 = delta3.sum(axis=0)",
     "db3 = delta3[0]"),
    ("relu_net", "bias_mean", "bias_not_summed", "db1 = delta1.sum(axis=0)",
     "db1 = delta1.mean(axis=0)"),
    # skip_bce: output reads [X, hidden]; mean binary cross-entropy
    ("skip_bce", "sigmoid_deriv_on_top", "wrong_activation_derivative",
     "delta2 = (a2 - T) / n", "delta2 = (a2 - T) / n * a2 * (1 - a2)"),
    ("skip_bce", "point_a_hidden", "wrong_point", "a1 * (1 - a1)",
     "sigmoid(a1) * (1 - sigmoid(a1))"),
    ("skip_bce", "point_z_hidden", "wrong_point", "a1 * (1 - a1)", "z1 * (1 - z1)"),
    ("skip_bce", "sum_not_mean", "scaled", "delta2 = (a2 - T) / n", "delta2 = a2 - T"),
    ("skip_bce", "sign_error", "sign_flipped", "(a2 - T) / n", "(T - a2) / n"),
    ("skip_bce", "tanh_deriv_for_sigmoid", "wrong_activation_derivative", "a1 * (1 - a1)",
     "(1 - a1 ** 2)"),
    ("skip_bce", "sigmoid_deriv_missing", "wrong_activation_derivative",
     "delta1 = (delta2 @ W2[:, 3:]) * a1 * (1 - a1)", "delta1 = delta2 @ W2[:, 3:]"),
    ("skip_bce", "transposed_W1", "transposed", "dW1 = delta1.T @ X", "dW1 = X.T @ delta1"),
    ("skip_bce", "bias_last_sample", "bias_not_summed", "db2 = delta2.sum(axis=0)",
     "db2 = delta2[-1]"),
    ("skip_bce", "bias_mean", "bias_not_summed", "db1 = delta1.sum(axis=0)",
     "db1 = delta1.mean(axis=0)"),
    ("skip_bce", "x2_W2", "scaled", "dW2 = delta2.T @ h", "dW2 = 2 * (delta2.T @ h)"),
    ("skip_bce", "half_W1", "scaled", "dW1 = delta1.T @ X", "dW1 = delta1.T @ X / 2"),
]

# Correct implementations: other functions of the mutant files, and rewrites of grad.
EQUIVALENT_FUNCTIONS = [
    ("sig3", "grad"), ("sig3", "grad_einsum"), ("sig3", "grad_loop"),
    ("softmax_clf", "grad"), ("softmax_clf", "grad_jacobian"),
    ("softmax_clf", "grad_mean_first"),
    ("relu_net", "grad"), ("relu_net", "grad_masks"), ("relu_net", "grad_loop"),
    ("skip_bce", "grad"), ("skip_bce", "grad_unfused"), ("skip_bce", "grad_blocks"),
]
EQUIVALENT_REWRITES = [
    ("sig3", "transpose_twice", "dW2 = delta2.T @ a1", "dW2 = (a1.T @ delta2).T"),
    ("sig3", "ones_product", "db1 = delta1.sum(axis=0)", "db1 = np.ones(len(X)) @ delta1"),
    ("sig3", "tanh_factored", "(1 - a2 ** 2)", "(1 - a2) * (1 + a2)"),
    ("sig3", "regrouped", "delta1 = (delta2 @ W2) * a1 * (1 - a1)",
     "delta1 = delta2 @ (W2 * 1.0) * (a1 - a1 * a1)"),
    ("softmax_clf", "einsum_decay_first", "dW2 = delta2.T @ a1 + LAM * W2",
     "dW2 = LAM * W2 + np.einsum('ni,nj->ij', delta2, a1)"),
    ("softmax_clf", "split_fraction", "delta2 = (a2 - T) / n", "delta2 = a2 / n - T / n"),
    ("softmax_clf", "sech_squared", "(1 - a1 ** 2)", "(1 / np.cosh(z1) ** 2)"),
    ("relu_net", "mask_from_a", "(z1 > 0)", "(a1 > 0)"),
    ("relu_net", "heaviside", "(z2 > 0)", "np.heaviside(z2, 1.0)"),
    ("relu_net", "factor_regrouped", "delta3 = 2 * (y - T) / n", "delta3 = (y - T) * (2.0 / n)"),
    ("relu_net", "outer_sum", "dW1 = delta1.T @ X",
     "dW1 = sum(np.outer(d, x) for d, x in zip(delta1, X))"),
    ("skip_bce", "hstack_blocks", "dW2 = delta2.T @ h",
     "dW2 = np.hstack([delta2.T @ X, delta2.T @ a1])"),
    ("skip_bce", "sigmoid_product", "a1 * (1 - a1)", "sigmoid(z1) * sigmoid(-z1)"),
    ("skip_bce", "shape_for_n", "delta2 = (a2 - T) / n", "delta2 = (a2 - T) / X.shape[0]"),
]


@functools.lru_cache(maxsize=None)
def derivation(net: str):
    return derive(load_spec(SPECS[net]))


def source(net: str) -> str:
    return (MUTANTS / f"{net}.py").read_text(encoding="utf-8")


def mutate(net: str, old: str, new: str) -> str:
    """Replace ``old`` by ``new`` inside ``grad`` (the text before the first variant)."""
    text = source(net)
    head, sep, tail = text.partition("\ndef grad_")
    assert head.count(old) == 1, f"{net}: {old!r} occurs {head.count(old)} times in grad"
    return head.replace(old, new) + sep + tail


_DIR: list[Path] = []


def workdir(tmp_path_factory) -> Path:
    if not _DIR:
        _DIR.append(tmp_path_factory.mktemp("mutants"))
    return _DIR[0]


@functools.lru_cache(maxsize=None)
def _verify_text(net: str, name: str, text: str, function: str, where: str):
    path = Path(where) / f"{net}__{name}.py"
    path.write_text(text, encoding="utf-8")
    grad_fn, label = load_grad_function(f"{path}:{function}")
    return verify_gradient(derivation(net), grad_fn, label=label)


def run_mutant(tmp_path_factory, mutation):
    net, name, _, old, new = mutation
    return _verify_text(net, name, mutate(net, old, new), "grad", str(workdir(tmp_path_factory)))


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[f"{m[0]}-{m[1]}" for m in MUTATIONS])
def test_mutant_is_caught(tmp_path_factory, mutation):
    report = run_mutant(tmp_path_factory, mutation)
    assert not report.passed, f"{mutation[0]}/{mutation[1]} not caught:\n{report}"


@pytest.mark.parametrize("net,function", EQUIVALENT_FUNCTIONS,
                         ids=[f"{n}-{f}" for n, f in EQUIVALENT_FUNCTIONS])
def test_correct_function_passes(tmp_path_factory, net, function):
    report = _verify_text(net, "original", source(net), function,
                          str(workdir(tmp_path_factory)))
    assert report.passed, str(report)


@pytest.mark.parametrize("rewrite", EQUIVALENT_REWRITES,
                         ids=[f"{r[0]}-{r[1]}" for r in EQUIVALENT_REWRITES])
def test_equivalent_rewrite_passes(tmp_path_factory, rewrite):
    net, name, old, new = rewrite
    report = _verify_text(net, name, mutate(net, old, new), "grad",
                          str(workdir(tmp_path_factory)))
    assert report.passed, str(report)


def test_figures(tmp_path_factory):
    """Caught 100%, the planted pattern named for at least 80%; zero false alarms."""
    networks = {m[0] for m in MUTATIONS}
    assert len(MUTATIONS) >= 40 and len(networks) >= 4
    assert len(EQUIVALENT_FUNCTIONS) + len(EQUIVALENT_REWRITES) >= 20
    caught = named = 0
    misses = []
    for mutation in MUTATIONS:
        report = run_mutant(tmp_path_factory, mutation)
        caught += not report.passed
        codes = {d.code for p in report.params.values() for d in p.diagnoses[:1]}
        if mutation[2] in codes:
            named += 1
        else:
            misses.append(f"{mutation[0]}/{mutation[1]}: planted {mutation[2]}, "
                          f"diagnosed {sorted(codes)}")
    false_alarms = 0
    for net, function in EQUIVALENT_FUNCTIONS:
        false_alarms += not _verify_text(net, "original", source(net), function,
                                         str(workdir(tmp_path_factory))).passed
    for net, name, old, new in EQUIVALENT_REWRITES:
        false_alarms += not _verify_text(net, name, mutate(net, old, new), "grad",
                                         str(workdir(tmp_path_factory))).passed
    total, correct = len(MUTATIONS), len(EQUIVALENT_FUNCTIONS) + len(EQUIVALENT_REWRITES)
    print(f"\nmutants: caught {caught}/{total}, planted pattern named first for "
          f"{named}/{total} ({100 * named / total:.0f}%); correct variants: "
          f"{false_alarms} false alarms in {correct}")
    for miss in misses:
        print(f"  not named: {miss}")
    assert caught == total
    assert named >= 0.8 * total
    assert false_alarms == 0
