"""Custom expressions cost a bounded time and are always finite real functions, or are refused."""

from __future__ import annotations

import json
import signal
import threading
import time

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from symgrad import primitives
from symgrad.codegen import generate_module_source, load_module
from symgrad.exprparse import MAX_DEPTH, MAX_NODES, ExpressionError
from symgrad.exprparse import parse_expression as _parse_only
from symgrad.spec import SpecError, loads_spec
from symgrad.symbolic import TooCostly, bounded, budget, stabilize


def parse_expression(text, variables):
    """Parse as the spec does: bounded, and checked as an activation or a loss."""
    if tuple(variables) == ("x",):
        return primitives.parse_activation(text)
    if tuple(variables) == ("y", "t"):
        return primitives.parse_loss(text)
    return _parse_only(text, variables)


HANG = 30.0  # seconds: a hang detector, not a performance assertion
ACTIVATION, LOSS = ("x",), ("y", "t")

# (variables, text, words the one-line reason must contain)
HOSTILE = [
    (ACTIVATION, "9**9**9**9", ["exponent", "too large"]),
    (ACTIVATION, "x**(10**100)", ["exponent", "too large"]),
    (ACTIVATION, "(x+1)**1000", ["exponent 1000"]),
    (ACTIVATION, "x**2.5e-320", ["out of range"]),
    (ACTIVATION, "x**x", ["exponent of x must be a constant"]),
    (ACTIVATION, "+".join(["x"] * 1000), ["too large"]),
    (ACTIVATION, "-" * 1500 + "x", ["nested too deeply"]),
    (ACTIVATION, "-" * 1999 + "x", ["nested too deeply"]),
    (ACTIVATION, "exp(" * 300 + "x" + ")" * 300, ["not a valid expression"]),
    (ACTIVATION, "exp(x, x)", ["'exp' takes 1 argument, got 2"]),
    (ACTIVATION, "atan(x, 1)", ["'atan' takes 1 argument, got 2"]),
    (ACTIVATION, "max(x)", ["'max' takes 2 to 8 arguments, got 1"]),
    (ACTIVATION, "min(" + ", ".join(["x"] * 9) + ")", ["'min' takes 2 to 8 arguments, got 9"]),
    (ACTIVATION, "exp(*x)", ["positional arguments only"]),
    (ACTIVATION, "1/0", ["division by zero"]),
    (ACTIVATION, "x/(x-x)", ["division by zero"]),
    (ACTIVATION, "log(0)*x", ["division by zero or an infinite value"]),
    (ACTIVATION, "1e400*x", ["out of range"]),
    (ACTIVATION, "x*1e301", ["out of range"]),
    (ACTIVATION, "x*1e-301", ["out of range"]),
    (ACTIVATION, "1234567890123456*x", ["more than 15 digits"]),
    (ACTIVATION, "1e300*1e300*x", ["overflows a float64"]),
    (ACTIVATION, "1e-300*1e-300*x", ["underflows a float64"]),
    (ACTIVATION, "(1e300*x)**2", ["overflows a float64"]),
    (ACTIVATION, "exp(800)*x", ["overflows a float64"]),
    (ACTIVATION, "0**x", ["not finite"]),
    (ACTIVATION, "x*10**5000", ["exponent 5000"]),
    (ACTIVATION, "1", ["does not depend on x"]),
    (ACTIVATION, "x*0", ["does not depend on x"]),
    (ACTIVATION, "x - x + pi", ["does not depend on x"]),
    (ACTIVATION, "max(-5/2, min(-x, -log(1000)))", ["constant", "-2.5 at every sample point"]),
    (ACTIVATION, "log(-1)*x", ["complex"]),
    (ACTIVATION, "sqrt(-2)*x", ["complex"]),
    (ACTIVATION, "log(1 - pi)*x", ["complex"]),
    (ACTIVATION, "log(log(1/2))*x", ["complex"]),
    (ACTIVATION, "sqrt(-1 - x**2)", ["not a finite real number at any"]),
    (ACTIVATION, "log(-x**2 - 10)", ["not a finite real number at any"]),
    (ACTIVATION, "(-2)**x", ["derivative is complex"]),
    (LOSS, "t**2", ["does not depend on the output y"]),
    (LOSS, "x*y", ["unknown name 'x'"]),
    (LOSS, "sqrt(-1 - y**2) + t", ["not a finite real number at any"]),
    (LOSS, "log(-1 - t**2)*y**2", ["not a finite real number at any"]),
]


@pytest.mark.parametrize("variables,text,words", HOSTILE,
                         ids=[f"{i}:{text[:24]}" for i, (_, text, _) in enumerate(HOSTILE)])
def test_hostile_expression_is_refused_quickly(variables, text, words):
    start = time.monotonic()
    with pytest.raises(ExpressionError) as info:
        parse_expression(text, variables)
    assert time.monotonic() - start < HANG
    message = str(info.value)
    assert "\n" not in message and len(message) < 200, message
    for word in words:
        assert word in message, (word, message)


def _spec(text: str, variables: tuple[str, ...]) -> str:
    """A small TOML spec using ``text`` as the custom activation or loss."""
    expr = json.dumps(text)
    if variables == ACTIVATION:
        return (f'name = "h"\ninputs = 2\n\n[[layers]]\nunits = 2\n'
                f'activation = {{ expr = {expr} }}\n\n[[layers]]\nunits = 1\n'
                f'activation = "sigmoid"\n')
    return f'name = "h"\ninputs = 2\n\n[[layers]]\nunits = 1\nactivation = "sigmoid"\n\n' \
           f'[loss]\nexpr = {expr}\n'


@pytest.mark.parametrize("variables,text,words", HOSTILE[::3],
                         ids=[f"{i}:{text[:24]}" for i, (_, text, _) in enumerate(HOSTILE[::3])])
def test_hostile_expression_fails_the_spec_at_load_time(variables, text, words):
    start = time.monotonic()
    with pytest.raises(SpecError) as info:
        loads_spec(_spec(text, variables), path="hostile.toml")
    assert time.monotonic() - start < HANG
    line, field = (6, "layers[1].activation.expr") if variables == ACTIVATION else \
        (9, "loss.expr")
    assert str(info.value).startswith(f"hostile.toml:{line}: {field}: "), str(info.value)
    assert words[0] in str(info.value)


@pytest.mark.parametrize("variables,text", [
    (ACTIVATION, "x * tanh(log(1 + exp(x)))"),
    (ACTIVATION, "sqrt(x)"),  # real on half the line is enough
    (ACTIVATION, "log(x)"),
    (ACTIVATION, "x**64 / 1e300"),
    (ACTIVATION, "x**-64 + x"),
    (ACTIVATION, "2**x + e**x"),
    (ACTIVATION, "x * 1e300 + 1e-300"),
    (ACTIVATION, "999999999999999 * x"),
    (ACTIVATION, "max(x, 0.1*x, -1, x/2, 3*x, x-1, x+1, 0)"),
    (ACTIVATION, "x" + "+x" * ((MAX_NODES - 1) // 2)),  # exactly at the node limit
    (ACTIVATION, "-" * (MAX_DEPTH - 1) + "x"),  # exactly at the depth limit
    (ACTIVATION, "sinh(" * 12 + "x" + ")" * 12),
    (ACTIVATION, "(x + 1)**64"),
    (LOSS, "(y - t)**2 / 2"),
    (LOSS, "y*t"),
    (LOSS, "-(t*log(y) + (1 - t)*log(1 - y))"),
    (LOSS, "abs(y - t) + max(y - t, 0)"),
])
def test_reasonable_expression_is_accepted(variables, text):
    start = time.monotonic()
    expr = parse_expression(text, variables)
    assert time.monotonic() - start < HANG
    assert expr.free_symbols


def test_limits_are_sharp():
    with pytest.raises(ExpressionError, match="too large"):
        parse_expression("x" + "+x" * ((MAX_NODES + 1) // 2), ACTIVATION)
    with pytest.raises(ExpressionError, match="nested too deeply"):
        parse_expression("-" * MAX_DEPTH + "x", ACTIVATION)
    with pytest.raises(ExpressionError, match="exponent 65"):
        parse_expression("x**65", ACTIVATION)
    with pytest.raises(ExpressionError, match="exponent -65"):
        parse_expression("x**-65", ACTIVATION)


def test_a_long_flat_sum_is_not_deep():
    x = sp.Symbol("x", real=True)
    terms = (MAX_NODES - 1) // 4  # 50 terms of x*k: deeper than MAX_DEPTH if nesting counted
    text = " + ".join(f"{k}*x" for k in range(1, terms + 1))
    assert parse_expression(text, ACTIVATION) == sum(range(1, terms + 1)) * x


# ----------------------------------------------------------------------------- the time budget

def test_budget_interrupts_a_busy_step():
    start = time.monotonic()
    with pytest.raises(TooCostly), budget(0.05):
        while True:
            pass
    assert time.monotonic() - start < 5
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.default_int_handler,
                                                None, signal.SIG_IGN)


def test_bounded_falls_back_and_nests():
    def spin():
        while True:
            pass

    with budget(5.0):
        assert bounded(spin, lambda: "fallback", seconds=0.05) == "fallback"
        assert bounded(lambda: "done", lambda: "fallback") == "done"
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    # an outer budget shorter than the inner one still ends the step
    start = time.monotonic()
    with pytest.raises(TooCostly), budget(0.05):
        bounded(spin, lambda: spin(), seconds=10.0)
    assert time.monotonic() - start < 5


def test_budget_keeps_a_foreign_alarm():
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(True))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with budget(5.0):
            pass
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 0 < remaining <= 0.3
        time.sleep(0.5)
        assert fired == [True]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_budget_off_the_main_thread_is_no_limit():
    result = []
    thread = threading.Thread(target=lambda: result.append(
        bounded(lambda: sp.diff(sp.Symbol("u") ** 2), lambda: None, seconds=0.01)))
    thread.start()
    thread.join()
    assert result == [2 * sp.Symbol("u")]


# ----------------------------------------------------------------------------- random trees

FUNCTION_NAMES = ["exp", "log", "sqrt", "tanh", "sinh", "cosh", "sin", "cos", "atan", "erf",
                  "abs", "sigmoid", "softplus", "max", "min", "foo"]
NUMBERS = st.one_of(
    st.integers(-3, 3).map(str),
    st.sampled_from(["0.5", "2.5", "1e300", "1e-300", "1e-320", "1e400", "10**5000", "65",
                     "1234567890123456", "pi", "e", "0"]),
)


def _trees(variables: tuple[str, ...], *, valid: bool = False):
    """Expression text over the grammar (and, unless ``valid``, beyond it), bounded in size."""
    numbers = st.one_of(st.integers(-3, 3).map(str),
                        st.sampled_from(["0.5", "2.5", "pi", "e", "1e-3", "64"])) if valid \
        else NUMBERS
    names = [name for name in FUNCTION_NAMES if name not in ("foo", "max", "min")] if valid \
        else FUNCTION_NAMES
    leaves = st.one_of(st.sampled_from(variables), numbers)

    def extend(inner):
        return st.one_of(
            st.tuples(st.sampled_from(["+", "-", "*", "/", "**"]), inner, inner)
            .map(lambda p: f"({p[1]}) {p[0]} ({p[2]})"),
            inner.map(lambda u: f"-({u})"),
            st.tuples(st.sampled_from(names), st.lists(inner, min_size=1, max_size=1 if valid else 3))
            .map(lambda p: f"{p[0]}({', '.join(p[1])})"),
            st.tuples(st.sampled_from(["max", "min"]), st.lists(inner, min_size=2, max_size=3))
            .map(lambda p: f"{p[0]}({', '.join(p[1])})"),
        )

    return st.recursive(leaves, extend, max_leaves=10)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_trees(ACTIVATION))
def test_random_activation_derives_or_is_refused(text):
    start = time.monotonic()
    try:
        forward = parse_expression(text, ACTIVATION)
    except ExpressionError as exc:
        assert "\n" not in str(exc)
        return
    derivative = primitives.activation_derivative(forward)
    primitives.in_forward_terms(forward)
    stabilize(derivative)
    assert time.monotonic() - start < HANG
    # accepted: a real function of x with a derivative finite somewhere
    assert primitives.x in forward.free_symbols
    assert not derivative.has(sp.zoo, sp.nan, sp.I)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_trees(LOSS))
def test_random_loss_derives_or_is_refused(text):
    start = time.monotonic()
    try:
        per_output = parse_expression(text, LOSS)
    except ExpressionError as exc:
        assert "\n" not in str(exc)
        return
    derivative = primitives.loss_derivative(per_output)
    primitives.fused_delta(per_output, primitives.activation("sigmoid").forward)
    assert time.monotonic() - start < HANG
    assert primitives.y in per_output.free_symbols
    assert derivative.is_finite is not False  # a constant dl/dy (a linear loss) is fine


def _module_runs(text: str, variables: tuple[str, ...]) -> None:
    """Generate the module for an accepted expression and run loss_and_grad once."""
    module = load_module(generate_module_source(loads_spec(_spec(text, variables))))
    rng = np.random.default_rng(0)
    params = module.init_params(0)
    with np.errstate(all="ignore"):
        loss, grads = module.loss_and_grad(params, rng.normal(size=(4, 2)),
                                           rng.uniform(size=(4, 1)))
    assert isinstance(loss, float)
    assert {name: g.shape for name, g in grads.items()} == \
        {name: p.shape for name, p in params.items()}
    assert all(g.dtype == np.float64 for g in grads.values())


@pytest.mark.parametrize("variables,text", [
    (ACTIVATION, "max(x, -sigmoid(3))"),  # a constant sigmoid is not rewritten into Sigmoid(3)
    (ACTIVATION, "x * softplus(2) + sqrt(x)"),
    (ACTIVATION, "(x + 1)**64 / 1e20"),
    (ACTIVATION, "sinh(" * 12 + "x" + ")" * 12),
    (LOSS, "y*t + y**2"),
    (LOSS, "log(cosh(y - t))"),
])
def test_accepted_expression_gives_a_working_module(variables, text):
    _module_runs(text, variables)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(_trees(ACTIVATION, valid=True).map(lambda u: (ACTIVATION, u)),
                      _trees(LOSS, valid=True).map(lambda u: (LOSS, u))))
def test_random_accepted_expression_gives_a_working_module(text):
    variables, text = text
    try:
        parse_expression(text, variables)
    except ExpressionError:
        return
    _module_runs(text, variables)


@pytest.mark.parametrize("text", ["y", "2*y - t", "-y", "y + t**2"])
def test_a_loss_linear_in_y_gives_a_working_module(text):
    """dl/dy is a constant: the generated backward pass still gets a whole array."""
    import numpy as np

    from symgrad.codegen import generate_module_source, load_module
    from symgrad.spec import loads_spec

    spec = loads_spec(f'inputs = 2\n[[layers]]\nunits = 3\nactivation = "tanh"\n'
                      f'[[layers]]\nunits = 2\n[loss]\nexpr = "{text}"\nreduction = "mean"\n')
    module = load_module(generate_module_source(spec), name="linear_loss")
    params = module.init_params(seed=1)
    rng = np.random.default_rng(0)
    X, T = rng.normal(size=(4, 2)), rng.normal(size=(4, 2))
    value, grads = module.loss_and_grad(params, X, T)
    h = 1e-6
    for name, grad in grads.items():
        flat = params[name].reshape(-1)
        for i in range(flat.size):
            keep = flat[i]
            flat[i] = keep + h
            up = module.loss(params, X, T)
            flat[i] = keep - h
            down = module.loss(params, X, T)
            flat[i] = keep
            assert grad.reshape(-1)[i] == pytest.approx((up - down) / (2 * h), abs=1e-7)
