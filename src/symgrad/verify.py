"""Verify a hand-written gradient against the symbolically derived one.

Contract: :func:`verify_gradient` calls the user's ``grad_fn(params, X, T) ->
{name: array}`` at ``points`` random points for every batch size in
``batch_sizes`` and compares it, entry by entry, with the gradient that the
generated module's ``loss_and_grad`` computes in float64 from the derivation:
an exact reference, with no finite-difference noise.  The result is a
:class:`VerifyReport`: per parameter pass/fail, the largest absolute and
relative errors, a mask of the wrong entries and the diagnoses of
:func:`symgrad.diagnose.diagnose` (what is wrong, in words).

Random points avoid kinks: for units whose activation is not smooth (ReLU,
leaky ReLU, ELU, ``abs``, ``max``...) the samples whose pre-activation lies
within ``1e-3`` of a break point are drawn again, so a hand-written
``(z > 0)`` and ``(z >= 0)`` agree with the reference everywhere tested.

Diagnoses use a context that symgrad builds from the derivation: a small
NumPy backward pass driven by the network graph (:class:`_Model`), run once
as the textbook gradient (it must agree with the reference, or it is not
used) and once per *planted* mistake: the activation derivative evaluated at
``a`` instead of ``z`` (``wrong_point``), another activation's derivative or
none at all (``wrong_activation_derivative``), the output activation's
derivative applied on top of a fused ``y - t`` delta, and, when the loss has
weight decay, the data term alone scaled or negated.  Transposed, sign
flipped, scaled (x2, x1/2, x1/N), bias not summed over the batch, weight
decay missing and another layer's gradient swapped in are recognised by
``diagnose`` itself from the per-sample bias rows, the parameter values and
lambda that verify passes along.

A NaN or inf on either side is always a failure with its own message.  Bad
input (a missing file or function, an import error, a return value that is
not a dict of arrays with the right keys, a gradient of the wrong shape, an
exception inside ``grad_fn``) is reported in one line: ``load_grad_function``
and ``verify_gradient`` raise :class:`VerifyInputError` for what cannot be
compared at all; a gradient of the wrong shape is a failing parameter whose
report also carries ``bad_input`` (the command line exits 2 on it).

>>> import numpy as np
>>> from symgrad.spec import Network
>>> spec = Network("tiny", inputs=2).dense(1, "sigmoid").loss("sse").build()
>>> def grad(params, X, T):
...     a = 1 / (1 + np.exp(-(X @ params["W1"].T + params["b1"])))
...     delta = (a - T) * a * (1 - a)
...     return {"W1": delta.T @ X, "b1": delta.sum(axis=0)}
>>> verify_gradient(spec, grad).passed
True
>>> def bad(params, X, T):
...     g = grad(params, X, T)
...     return {"W1": g["W1"], "b1": -g["b1"]}
>>> report = verify_gradient(spec, bad)
>>> report.passed, report.failed, report["b1"].diagnoses[0].code
(False, ['b1'], 'sign_flipped')
"""

from __future__ import annotations

import dataclasses
import json
import math
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sympy as sp

from . import naming, primitives
from .diagnose import Diagnosis, diagnose
from .errors import BadInput

__all__ = ["VerifyInputError", "VerifyReport", "ParamVerdict", "verify_gradient",
           "load_grad_function", "add_arguments", "run"]

KINK_MARGIN = 1e-3
_KINKY = (sp.Piecewise, sp.Max, sp.Min, sp.Abs, sp.Heaviside, sp.sign)


class VerifyInputError(BadInput):
    """Bad input to verify: one line, no traceback (exit code 2)."""


# --------------------------------------------------------------------------- report


@dataclass
class ParamVerdict:
    """What verify found for one parameter, over every point and batch size."""

    name: str
    shape: tuple
    passed: bool = True
    max_abs_err: float = 0.0
    max_rel_err: float = 0.0
    mismatch: np.ndarray | None = None
    nonfinite: np.ndarray | None = None
    failed_evaluations: int = 0
    evaluations: int = 0
    worst: dict | None = None  # point, batch size, index, got, expected
    shape_error: str | None = None
    diagnoses: list[Diagnosis] = field(default_factory=list)

    @property
    def n_wrong(self) -> int:
        """Entries wrong at one evaluation at least (mismatch or NaN/inf)."""
        if self.mismatch is None:
            return 0
        return int(np.count_nonzero(self.mismatch | self.nonfinite))

    def mask_picture(self, max_rows: int = 20, max_cols: int = 40) -> str:
        """Compact picture: ``.`` right everywhere, ``X`` wrong somewhere, ``N`` NaN/inf."""
        if self.mismatch is None:
            return ""
        grid = np.full(self.mismatch.shape, ".", dtype="<U1")
        grid[self.mismatch] = "X"
        grid[self.nonfinite] = "N"
        grid = grid.reshape(1, -1) if grid.ndim <= 1 else grid.reshape(grid.shape[0], -1)
        rows, cols = grid.shape
        lines = ["".join(row[:max_cols]) for row in grid[:max_rows]]
        if rows > max_rows or cols > max_cols:
            lines.append(f"(showing {min(rows, max_rows)} of {rows} rows, "
                         f"{min(cols, max_cols)} of {cols} columns; {self.n_wrong} wrong)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "name": self.name, "shape": list(self.shape), "passed": self.passed,
            "max_abs_err": _jsonf(self.max_abs_err), "max_rel_err": _jsonf(self.max_rel_err),
            "failed_evaluations": self.failed_evaluations, "evaluations": self.evaluations,
            "n_wrong": self.n_wrong,
            "mismatch_indices": [] if self.mismatch is None
            else np.argwhere(self.mismatch).tolist(),
            "nonfinite_indices": [] if self.nonfinite is None
            else np.argwhere(self.nonfinite).tolist(),
            "worst": None if self.worst is None else {k: _plain(v) for k, v in self.worst.items()},
            "shape_error": self.shape_error,
            "diagnoses": [d.to_dict() for d in self.diagnoses],
        }


@dataclass
class VerifyReport:
    """Result of :func:`verify_gradient`; index it by parameter name."""

    network: str
    function: str
    points: int
    batch_sizes: tuple[int, ...]
    seed: int
    rtol: float
    params: dict[str, ParamVerdict]
    notes: list[str] = field(default_factory=list)
    bad_input: str | None = None

    @property
    def passed(self) -> bool:
        return all(p.passed for p in self.params.values())

    @property
    def failed(self) -> list[str]:
        return [name for name, p in self.params.items() if not p.passed]

    @property
    def diagnoses(self) -> dict[str, list[Diagnosis]]:
        """The diagnoses of every failing parameter."""
        return {name: p.diagnoses for name, p in self.params.items() if not p.passed}

    @property
    def codes(self) -> set[str]:
        """Every diagnosis code of every failing parameter."""
        return {d.code for p in self.params.values() for d in p.diagnoses}

    def __getitem__(self, name: str) -> ParamVerdict:
        return self.params[name]

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        sizes = ", ".join(map(str, self.batch_sizes))
        lines = [f"verify {self.network}: {self.function} against the derived gradient "
                 f"({self.points} points x batch sizes {sizes}; seed {self.seed}; "
                 f"rtol {self.rtol:g})", ""]
        rows = [("param", "shape", "status", "max abs err", "max rel err", "wrong entries",
                 "failed at")]
        for p in self.params.values():
            total = int(np.prod(p.shape)) if p.shape else 1
            rows.append((p.name, str(p.shape), "ok" if p.passed else "WRONG",
                         f"{p.max_abs_err:.2e}", f"{p.max_rel_err:.2e}",
                         "shape" if p.shape_error else f"{p.n_wrong}/{total}",
                         f"{p.failed_evaluations}/{p.evaluations} evaluations"))
        widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                  for r in rows]
        for p in self.params.values():
            if p.passed:
                continue
            lines += ["", f"{p.name}:"]
            if p.shape_error:
                lines.append(f"  {p.shape_error}")
            for d in p.diagnoses:
                lines.append(f"  [{d.code}] {d.message}")
            if p.worst is not None and not p.shape_error:
                w = p.worst
                lines.append(f"  worst entry {list(w['index'])} at point {w['point']}, "
                             f"N={w['batch_size']}: got {w['got']:.6g}, "
                             f"expected {w['expected']:.6g}")
            if p.mismatch is not None and p.n_wrong:
                lines.append("  wrong entries (. right, X wrong, N NaN/inf):")
                lines += ["    " + line for line in p.mask_picture().splitlines()]
        for note in self.notes:
            lines.append(f"note: {note}")
        lines.append("")
        lines.append("RESULT: CORRECT" if self.passed else
                     f"RESULT: WRONG ({', '.join(self.failed)})")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for ``--json``)."""
        return {
            "network": self.network, "function": self.function, "passed": self.passed,
            "failed": self.failed, "points": self.points, "batch_sizes": list(self.batch_sizes),
            "seed": self.seed, "rtol": self.rtol, "bad_input": self.bad_input,
            "notes": list(self.notes),
            "params": {name: p.to_dict() for name, p in self.params.items()},
        }


def _jsonf(x: float) -> Any:
    x = float(x)
    if math.isfinite(x):
        return x
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


def _plain(v: Any) -> Any:
    if isinstance(v, (np.generic, float)):
        return _jsonf(v) if isinstance(v, (float, np.floating)) else v.item()
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    return v


# --------------------------------------------------------------------------- numerics


_MODULES = [{"erf": np.vectorize(math.erf, otypes=[float]),
             "Heaviside": lambda u, h=0.0: np.heaviside(u, 0.0)}, "numpy"]


def _lambdify(args, expr) -> Callable:
    function = sp.lambdify(args, expr, modules=_MODULES)

    def call(*values):
        with np.errstate(all="ignore"):
            out = np.asarray(function(*values), dtype=np.float64)
        return np.broadcast_to(out, np.broadcast_shapes(*(np.shape(v) for v in values))).copy()

    return call


def _breakpoints(forward: sp.Expr) -> list[float]:
    """Where a non-smooth activation has a kink (0 for ReLU)."""
    x = primitives.x
    candidates: list[sp.Expr] = []
    for node in sp.preorder_traversal(forward):
        if isinstance(node, sp.Piecewise):
            candidates += [c.lhs - c.rhs for _, c in node.args
                           if isinstance(c, sp.core.relational.Relational)]
        elif isinstance(node, (sp.Max, sp.Min)):
            args = list(node.args)
            candidates += [a - b for i, a in enumerate(args) for b in args[i + 1:]]
        elif isinstance(node, (sp.Abs, sp.Heaviside, sp.sign)):
            candidates.append(node.args[0])
    points = set()
    for candidate in candidates:
        try:
            for root in sp.solve(candidate, x):
                if root.is_real:
                    points.add(float(root))
        except (NotImplementedError, TypeError, ValueError):
            points.add(0.0)
    return sorted(points) or [0.0]


@dataclass
class _Unit:
    """One activation node, as NumPy functions."""

    layer: int
    kind: str
    vector: bool
    f: Callable | None = None
    df: Callable | None = None  # f'(z)
    slope: Callable | None = None  # f' written in a, when it can be
    identity: bool = False
    kinks: list[float] | None = None


def _unit_functions(kind: str, forward: sp.Expr) -> tuple[Callable, Callable, Callable | None]:
    x, a = primitives.x, primitives.a
    derivative = primitives.activation_derivative(forward)
    slope = primitives.in_forward_terms(forward)
    return (_lambdify(x, forward), _lambdify(x, derivative),
            None if slope is None else _lambdify(a, slope))


_OTHER_CACHE: dict[str, tuple[Callable, Callable, Callable | None]] = {}


def _other(name: str) -> tuple[Callable, Callable, Callable | None]:
    """Another activation's (f, f', f' in a), built on first use (not at import)."""
    if name not in _OTHER_CACHE:
        _OTHER_CACHE[name] = _unit_functions(name, primitives.activation(name).forward)
    return _OTHER_CACHE[name]


class _Model:
    """A layer-level NumPy forward and backward pass, driven by the graph.

    ``backward`` takes switches that plant one mistake, so the diagnosis can
    say "this is what you get with f'(a) instead of f'(z)".
    """

    def __init__(self, derivation):
        self.derivation = derivation
        self.graph = graph = derivation.graph
        self.spec = spec = derivation.spec
        self.units: dict[str, _Unit] = {}
        for node in graph.nodes:
            if node.op != "activation":
                continue
            act = node.activation
            if act.vector:
                self.units[node.name] = _Unit(node.layer, act.kind, True)
                continue
            forward = act.forward()
            f, df, slope = _unit_functions(act.kind, forward)
            kinky = forward.has(*_KINKY)
            self.units[node.name] = _Unit(node.layer, act.kind if act.expr is None else "custom",
                                          False, f, df, slope, forward == primitives.x,
                                          _breakpoints(forward) if kinky else None)
        output = graph.node(graph.output)
        self.output = output
        self.hinge = spec.loss.coupled
        if self.hinge:
            self.dl_dy = _hinge_dl_dy
        else:
            per_output = spec.loss.per_output().subs(primitives.K, output.size)
            self.dl_dy = _lambdify((primitives.y, primitives.t),
                                   primitives.loss_derivative(per_output))
        self.fused_softmax = output.activation.vector and spec.loss.kind == "cross_entropy"
        rules = {s.target: s.rule for s in derivation.steps}
        self.fused = rules.get(naming.delta(output.layer)) in ("fused", "fused_softmax")
        self.mean = spec.loss.reduction == "mean"
        self.decay = float(spec.loss.weight_decay)

    # -- forward

    def forward(self, params: dict, X: np.ndarray) -> dict[str, np.ndarray]:
        values: dict[str, np.ndarray] = {}
        for node in self.graph.nodes:
            if node.op == "input":
                values[node.name] = X
            elif node.op == "slice":
                values[node.name] = X[:, node.start:node.start + node.size]
            elif node.op == "dense":
                inputs = np.hstack([values[s] for s in node.sources])
                z = inputs @ params[node.weight].T
                if node.bias:
                    z = z + params[node.bias]
                values[node.name] = z
            else:
                z = values[node.sources[0]]
                unit = self.units[node.name]
                if unit.vector:
                    shifted = np.exp(z - z.max(axis=1, keepdims=True))
                    values[node.name] = shifted / shifted.sum(axis=1, keepdims=True)
                else:
                    values[node.name] = unit.f(z)
        return values

    def near_kink(self, values: dict, T: np.ndarray | None = None) -> np.ndarray:
        """Rows (samples) with a pre-activation (or a hinge margin) within the margin of a kink."""
        rows = np.zeros(values[naming.INPUT].shape[0], dtype=bool)
        if self.hinge and T is not None:
            rows |= ((np.abs(_hinge_margins(values[self.output.name], T)) < KINK_MARGIN)
                     & (T == 0)).any(axis=1)
        for name, unit in self.units.items():
            if not unit.kinks:
                continue
            z = values[self.graph.node(name).sources[0]]
            for point in unit.kinks:
                rows |= (np.abs(z - point) < KINK_MARGIN).any(axis=1)
        return rows

    # -- backward

    def slope(self, name: str, z, a, mode) -> np.ndarray | float:
        unit = self.units[name]
        if mode is None or mode == "z":
            return unit.df(z)
        if mode == "at_a":
            return unit.df(a)
        if mode == "slope_at_z":
            return unit.slope(z)
        if mode == "none":
            return 1.0
        kind, other = mode
        f, df, slope = _other(other)
        return df(z) if kind == "other" else slope(a)

    def backward(self, values: dict, T: np.ndarray, params: dict, *,
                 modes: dict | None = None, data_factor: float = 1.0,
                 output_extra: bool = False) -> tuple[dict, dict]:
        """Gradients (and each bias's per-sample rows) under the given switches."""
        modes = modes or {}
        n = T.shape[0]
        scale = (1.0 / n if self.mean else 1.0) * data_factor
        grads: dict[str, np.ndarray] = {}
        rows: dict[str, np.ndarray] = {}
        upstream: dict[str, np.ndarray] = {}
        out = self.output
        for node in reversed(self.graph.nodes):
            if node.op == "activation":
                a = values[node.name]
                z = values[node.sources[0]]
                unit = self.units[node.name]
                if node.name == out.name and self.fused_softmax:
                    delta = scale * (a - T)
                    if output_extra:
                        delta = delta * a * (1 - a)
                    upstream[node.sources[0]] = delta
                    continue
                g = upstream.get(node.name)
                if node.name == out.name:
                    g = scale * self.dl_dy(a, T)
                if unit.vector:
                    delta = a * (g - (g * a).sum(axis=1, keepdims=True))
                else:
                    delta = g * self.slope(node.name, z, a, modes.get(node.name))
                    if output_extra and node.name == out.name:
                        delta = delta * unit.df(z)
                upstream[node.sources[0]] = delta
            elif node.op == "dense":
                delta = upstream[node.name]
                inputs = np.hstack([values[s] for s in node.sources])
                grads[node.weight] = delta.T @ inputs + self.decay * params[node.weight]
                if node.bias:
                    grads[node.bias] = delta.sum(axis=0)
                    rows[node.bias] = delta
                for source, start, stop in self.graph.blocks(node):
                    if self.graph.needs_gradient(source):
                        part = delta @ params[node.weight][:, start:stop]
                        upstream[source] = upstream[source] + part if source in upstream \
                            else part
        return grads, rows

    # -- the planted mistakes

    def variants(self) -> list[tuple[str, str, dict]]:
        """(code, message, backward switches) for every planted mistake."""
        out: list[tuple[str, str, dict]] = []
        smooth = {name: u for name, u in self.units.items() if not u.vector and not u.identity}
        output_fused = self.output.name if self.fused else None
        for name, unit in smooth.items():
            if name == output_fused:
                continue
            z, a = f"z{unit.layer}", name
            where = f"layer {unit.layer} ({unit.kind})"
            out.append(("wrong_point", f"{where}: derivative evaluated at the wrong point: "
                        f"f'({a}) instead of f'({z})", {"modes": {name: "at_a"}}))
            if unit.slope is not None:
                out.append(("wrong_point", f"{where}: f' written in terms of the output "
                            f"(as for {unit.kind}) but evaluated at {z} instead of {a}",
                            {"modes": {name: "slope_at_z"}}))
            out.append(("wrong_activation_derivative", f"{where}: the activation derivative "
                        f"f'({z}) is missing (delta{unit.layer} = dL/d{a} alone)",
                        {"modes": {name: "none"}}))
            for other in ("sigmoid", "tanh", "relu"):
                if other == unit.kind:
                    continue
                out.append(("wrong_activation_derivative", f"{where}: derivative of {other} "
                            f"used instead of {unit.kind}'s ({other}'({z}))",
                            {"modes": {name: ("other", other)}}))
                if other != "relu":
                    formula = "a(1 - a)" if other == "sigmoid" else "1 - a^2"
                    out.append(("wrong_activation_derivative", f"{where}: {other}'s derivative "
                                f"formula {formula} applied to {a} ({unit.kind} is not {other})",
                                {"modes": {name: ("other_slope", other)}}))
        # the same mistake in every layer at once
        if len(smooth) > 1:
            for mode, code, text in (("at_a", "wrong_point", "f'(a) instead of f'(z)"),
                                     ("none", "wrong_activation_derivative",
                                      "no activation derivative")):
                modes = {n: mode for n in smooth if n != output_fused}
                if len(modes) > 1:
                    out.append((code, f"every layer: {text}", {"modes": modes}))
        if self.fused:
            kind = self.output.activation.kind
            out.append(("wrong_activation_derivative", f"output layer {self.output.layer}: "
                        f"the {kind} derivative is applied on top of the fused delta (y - t), "
                        "which already contains it", {"output_extra": True}))
        if self.decay:
            for factor, code, text in (
                    (-1.0, "sign_flipped", "the data term has the wrong sign"),
                    (2.0, "scaled", "the data term is twice the reference (x2)"),
                    (0.5, "scaled", "the data term is half the reference (x1/2)"),
                    ("N", "scaled", "the data term is multiplied by N "
                                    "(sum instead of mean over the batch)"),
                    ("1/N", "scaled", "the data term is divided by N "
                                      "(mean instead of sum over the batch)")):
                out.append((code, f"{text}; the weight decay term is right",
                            {"data_factor": factor}))
        return out


# --------------------------------------------------------------------------- sampling


def _draw(model: _Model, rng: np.random.Generator, n: int):
    spec, graph = model.spec, model.graph
    params = {}
    for name, shape in graph.params.items():
        if len(shape) == 2:
            params[name] = rng.normal(0.0, 1.0 / math.sqrt(shape[1]), shape)
        else:
            params[name] = rng.normal(0.0, 0.5, shape)
    X = rng.normal(0.0, 1.0, (n, spec.n_inputs))
    k = spec.n_outputs
    output = graph.node(graph.output)
    if output.activation.vector or spec.loss.coupled:
        T = np.eye(k)[rng.integers(0, k, n)]
    elif spec.loss.kind == "bce" or spec.loss.expr is not None:
        T = rng.uniform(0.05, 0.95, (n, k))
    else:
        T = rng.normal(0.0, 1.0, (n, k))
    for _ in range(200):  # draw again the samples that sit on a kink
        near = model.near_kink(model.forward(params, X), T)
        if not near.any():
            return params, X, T, True
        X[near] = rng.normal(0.0, 1.0, (int(near.sum()), spec.n_inputs))
    return params, X, T, False


def _hinge_margins(a: np.ndarray, T: np.ndarray) -> np.ndarray:
    """``1 + a_j - a_y`` for scores ``a`` and one-hot targets ``T``."""
    return 1 + a - (T * a).sum(axis=1, keepdims=True)


def _hinge_dl_dy(a: np.ndarray, T: np.ndarray) -> np.ndarray:
    """d/da of the multiclass hinge loss, per sample: violated margins, 0 at the kink."""
    violated = (_hinge_margins(a, T) > 0) * (1 - T)
    return violated - T * violated.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- user input


def load_grad_function(target: str) -> tuple[Callable, str]:
    """``path/to/file.py:function`` -> (the function, a label); VerifyInputError if not."""
    path_text, sep, function_name = target.rpartition(":")
    if not sep or not path_text or not function_name:
        raise VerifyInputError(f"--grad {target!r}: expected FILE.py:FUNCTION")
    path = Path(path_text)
    if not path.is_file():
        raise VerifyInputError(f"{path}: no such file")
    from .codegen import load_module

    module_name = f"symgrad_user_grad_{abs(hash(str(path.resolve())))}"
    try:
        module = load_module(path, name=module_name)
    except (Exception, SystemExit) as exc:  # the user's file: report it, no traceback
        raise VerifyInputError(f"{path}: cannot import: {_describe(exc, path)}") from None
    function = getattr(module, function_name, None)
    if function is None:
        names = sorted(n for n, v in vars(module).items() if callable(v) and
                       getattr(v, "__module__", None) == module_name)
        known = f" (functions defined there: {', '.join(names)})" if names else ""
        raise VerifyInputError(f"{path}: no function '{function_name}'{known}")
    if not callable(function):
        raise VerifyInputError(f"{path}: '{function_name}' is not a function")
    return function, f"{path}:{function_name}"


def _describe(exc: BaseException, path: Path | None = None) -> str:
    """``ValueError: message (line 12)``, the line in the user's file when known."""
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    text = text[0] if text else type(exc).__name__
    if isinstance(exc, SyntaxError) and exc.lineno:
        return f"{text.split(' (')[0]} (line {exc.lineno})"
    frames = traceback.extract_tb(exc.__traceback__)
    if path is not None:
        mine = [f for f in frames if Path(f.filename).resolve() == path.resolve()]
        frames = mine or frames
    if frames:
        return f"{text} (line {frames[-1].lineno})"
    return text


def _call(grad_fn: Callable, label: str, params: dict, X: np.ndarray, T: np.ndarray,
          shapes: dict) -> tuple[dict, list[str]]:
    notes: list[str] = []
    copies = {k: v.copy() for k, v in params.items()}
    try:
        out = grad_fn(copies, X.copy(), T.copy())
    except Exception as exc:
        path = Path(label.rpartition(":")[0]) if ":" in label else None
        raise VerifyInputError(f"{label} raised {_describe(exc, path)}") from None
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping):
        out = out[1]
        notes.append("the function returned (loss, grads); the grads were compared")
    if not isinstance(out, Mapping):
        raise VerifyInputError(f"{label} returned {type(out).__name__}, expected a dict "
                               f"name -> array with keys {', '.join(shapes)}")
    missing = [k for k in shapes if k not in out]
    extra = [str(k) for k in out if k not in shapes]
    if extra:
        raise VerifyInputError(f"{label} returned unknown key(s) {', '.join(map(repr, extra))}"
                               f" (the parameters are {', '.join(shapes)})")
    if missing:
        raise VerifyInputError(f"{label} returned no gradient for {', '.join(missing)} "
                               f"(expected keys {', '.join(shapes)})")
    grads = {}
    for name in shapes:
        value = out[name]
        try:
            array = np.asarray(value)
        except Exception:  # pragma: no cover - exotic objects
            array = np.asarray(value, dtype=object)
        if array.dtype.kind not in "biuf":
            what = "complex" if array.dtype.kind == "c" else f"{type(value).__name__}"
            raise VerifyInputError(f"{label}: gradient '{name}' is {what} "
                                   f"(dtype {array.dtype}), expected a real array")
        grads[name] = array
    return grads, notes


# --------------------------------------------------------------------------- verify


def _derivation(spec):
    from .derive import derivation_of

    return derivation_of(spec)


_CACHE: dict[int, tuple[Any, Any, Any]] = {}  # id(derivation) -> (derivation, module, model)


def _reference(derivation) -> tuple[Any, _Model]:
    """The generated module (the reference) and the layer-level model of a derivation."""
    from .codegen import generate_module_source, load_module

    hit = _CACHE.get(id(derivation))
    if hit is not None and hit[0] is derivation:
        return hit[1], hit[2]
    source = generate_module_source(derivation)
    module = load_module(source, name=f"symgrad_verify_{derivation.spec.name}")
    model = _Model(derivation)
    if len(_CACHE) > 32:
        _CACHE.clear()
    _CACHE[id(derivation)] = (derivation, module, model)
    return module, model


def _close(x: np.ndarray, y: np.ndarray, rtol: float) -> bool:
    scale = max(float(np.linalg.norm(x)), float(np.linalg.norm(y)))
    return float(np.linalg.norm(x - y)) <= rtol * scale + 1e-300


def verify_gradient(spec, grad_fn: Callable, *, points: int = 3,
                    batch_sizes: tuple[int, ...] = (1, 3, 5), seed: int = 0,
                    rtol: float | None = None, label: str | None = None) -> VerifyReport:
    """Compare ``grad_fn(params, X, T) -> {name: array}`` with the derived gradient.

    ``spec`` is a :class:`~symgrad.spec.NetworkSpec`, a
    :class:`~symgrad.derive.Derivation` or the path of a TOML spec.  Entry
    ``i`` fails when its relative error ``|got - expected| / (|expected| + 1e-2 * s)``
    exceeds ``rtol`` (``s``, the largest ``|expected|`` of the parameter, keeps
    zero entries from dividing by zero); ``rtol`` is 1e-6, or 2e-4 when
    ``grad_fn`` returns float32 arrays.  ``max_rel_err`` is that relative error.
    """
    if points < 1:
        raise VerifyInputError(f"points must be at least 1, got {points}")
    batch_sizes = tuple(int(b) for b in batch_sizes)
    if not batch_sizes or min(batch_sizes) < 1:
        raise VerifyInputError(f"batch sizes must be at least 1, got {batch_sizes}")
    derivation = _derivation(spec)
    module, model = _reference(derivation)
    shapes = dict(derivation.graph.params)
    label = label or getattr(grad_fn, "__qualname__", repr(grad_fn))
    rng = np.random.default_rng(seed)
    verdicts = {name: ParamVerdict(name, tuple(shape)) for name, shape in shapes.items()}
    notes: list[str] = []
    found: dict[str, list[tuple[int, list[Diagnosis]]]] = {name: [] for name in shapes}
    model_ok = True
    kinks_avoided = True
    user_rtol = rtol
    for n in batch_sizes:
        for point in range(points):
            params, X, T, clear = _draw(model, rng, n)
            kinks_avoided &= clear
            _, expected = module.loss_and_grad(params, X, T)
            expected = {k: np.asarray(v, dtype=np.float64) for k, v in expected.items()}
            got, call_notes = _call(grad_fn, label, params, X, T, shapes)
            for note in call_notes:
                if note not in notes:
                    notes.append(note)
            low = any(g.dtype in (np.float32, np.float16) for g in got.values())
            tol = user_rtol if user_rtol is not None else (2e-4 if low else 1e-6)
            failing = []
            for name, verdict in verdicts.items():
                verdict.evaluations += 1
                if _compare(verdict, got[name], expected[name], tol, point, n):
                    failing.append(name)
            if not failing:
                continue
            context, model_ok = _context(model, params, X, T, expected, model_ok)
            result = diagnose(expected, {k: got[k] for k in shapes}, batch_size=n,
                              context=context, rtol=max(tol, 1e-6))
            for name in failing:
                found[name].append((n, _tidy(result.get(name, []), context)))
    if not model_ok:
        notes.append("symgrad's layer-level model of this network disagrees with the generated "
                     "code; planted-mistake diagnoses are not available")
    if not kinks_avoided:
        notes.append("some samples stay within 1e-3 of a kink (ReLU-like units) after "
                     "200 draws; a mismatch there may be a subgradient choice")
    rtol_used = user_rtol if user_rtol is not None else 1e-6
    for name, verdict in verdicts.items():
        verdict.diagnoses = _choose(found[name], verdict)
    report = VerifyReport(derivation.spec.name, label, points, batch_sizes, seed, rtol_used,
                          verdicts, notes)
    shape_errors = [v for v in verdicts.values() if v.shape_error]
    if shape_errors:
        v = shape_errors[0]
        codes = [d.code for d in v.diagnoses]
        hint = next((_SHAPE_HINTS[c] for c in codes if c in _SHAPE_HINTS), "")
        if not hint and any("reshape" in d.message for d in v.diagnoses):
            hint = "same values, wrong shape: reshape it"
        report.bad_input = f"{label}: {v.shape_error}" + (f" ({hint})" if hint else "")
    return report


_SHAPE_HINTS = {"transposed": "it is the transposed gradient",
                "bias_not_summed": "per-sample rows: the bias gradient is not summed over "
                                   "the batch",
                "swapped": "it is the gradient of another parameter"}


def _compare(verdict: ParamVerdict, got: np.ndarray, expected: np.ndarray, tol: float,
             point: int, n: int) -> bool:
    """Update the verdict with one evaluation; True when the parameter fails it."""
    if got.shape != expected.shape:
        verdict.passed = False
        verdict.failed_evaluations += 1
        verdict.max_abs_err = verdict.max_rel_err = math.inf
        verdict.shape_error = (f"gradient '{verdict.name}' has shape {got.shape}, "
                                   f"expected {expected.shape}")
        return True
    g = got.astype(np.float64)
    e = expected
    nonfinite = ~np.isfinite(g) | ~np.isfinite(e)
    with np.errstate(all="ignore"):
        diff = np.abs(g - e)
        scale = float(np.max(np.abs(np.where(np.isfinite(e), e, 0.0)), initial=0.0))
        rel = np.where(nonfinite, np.inf, diff / (np.abs(e) + 1e-2 * scale + 1e-300))
        bad = (rel > tol) | nonfinite
    if verdict.mismatch is None:
        verdict.mismatch = np.zeros(e.shape, dtype=bool)
        verdict.nonfinite = np.zeros(e.shape, dtype=bool)
    verdict.mismatch |= bad & ~nonfinite
    verdict.nonfinite |= nonfinite
    abs_err = float(np.max(np.where(nonfinite, np.inf, diff), initial=0.0))
    rel_err = float(np.max(rel, initial=0.0))
    if bad.any():
        worst_flat = int(np.argmax(rel))
        index = np.unravel_index(worst_flat, e.shape) if e.shape else ()
        if verdict.worst is None or abs_err > verdict.max_abs_err:
            verdict.worst = {"point": point, "batch_size": n,
                             "index": tuple(int(i) for i in index),
                             "got": float(g[index]), "expected": float(e[index])}
    verdict.max_abs_err = max(verdict.max_abs_err, abs_err)
    verdict.max_rel_err = max(verdict.max_rel_err, rel_err)
    if bad.any():
        verdict.passed = False
        verdict.failed_evaluations += 1
        return True
    return False


def _context(model: _Model, params, X, T, expected, model_ok: bool) -> tuple[dict, bool]:
    """The diagnose context: alternatives from the planted mistakes, per-sample rows, lambda."""
    decay = model.decay
    context: dict[str, Any] = {
        # a one-entry parameter fits "got - expected = k * W" for any k: leave it out
        "params": {name: value for name, value in params.items() if value.size > 1},
        "weight_decay": {name: (decay if len(shape) == 2 else 0.0)
                         for name, shape in model.graph.params.items()},
        "biases": [name for name, shape in model.graph.params.items() if len(shape) == 1],
    }
    if not model_ok:
        return context, False
    try:
        values = model.forward(params, X)
        textbook, rows = model.backward(values, T, params)
    except Exception:  # pragma: no cover - a network the model does not cover
        return context, False
    if not all(_close(textbook[k], expected[k], 1e-8) for k in expected):
        return context, False
    context["per_sample"] = rows
    alternatives, messages = {}, {}
    n = X.shape[0]
    for index, (code, message, switches) in enumerate(model.variants()):
        switches = dict(switches)
        factor = switches.get("data_factor")
        if factor == "N":
            switches["data_factor"] = float(n)
        elif factor == "1/N":
            switches["data_factor"] = 1.0 / n
        if n == 1 and factor in ("N", "1/N"):
            continue
        try:
            grads, _ = model.backward(values, T, params, **switches)
        except Exception:  # pragma: no cover
            continue
        key = f"{code}#{index}"
        alternatives[key] = grads
        messages[key] = message
    context["alternatives"] = alternatives
    context["alternative_messages"] = messages
    return context, True


def _tidy(diagnoses: list[Diagnosis], context: dict) -> list[Diagnosis]:
    """Planted-mistake codes back to their names; one diagnosis per message."""
    out, seen = [], set()
    for d in diagnoses:
        code = d.code.split("#")[0]
        if d.code != code:
            d = dataclasses.replace(d, code=code, detail={**d.detail, "variant": d.code})
        if d.message in seen:
            continue
        seen.add(d.message)
        out.append(d)
    return out


_WEAK = ("partial", "unknown", "shape")
#: Findings that name themselves: no fit, nothing to confirm at another batch size.
_ALWAYS = ("nan_inf", "zero", "missing")
#: Findings with a fitted constant: any one entry fits them, so they need more.
_FITTED = ("scaled", "transposed", "weight_decay_missing", "weight_decay_extra",
           "weight_decay_wrong")
#: Wrong entries a finding with a fitted constant must explain (two for an exact one).
MIN_ENTRIES = 3


def _choose(found: list[tuple[int, list[Diagnosis]]],
            verdict: ParamVerdict | None = None) -> list[Diagnosis]:
    """The diagnoses to report, or a mask-based "no known pattern".

    A named mistake must be found at every failing evaluation, at two batch
    sizes at least, and explain enough wrong entries (:data:`MIN_ENTRIES` for a
    fitted constant, two otherwise); NaN/inf, zero and missing name themselves.
    Otherwise the finding is described from ``verdict``'s mask, the same data
    the report's picture shows.
    """
    if not found:
        return []
    sizes: dict[str, set[int]] = {}
    count: dict[str, int] = {}
    for n, diagnoses in found:
        for code in {d.code for d in diagnoses}:
            sizes.setdefault(code, set()).add(n)
            count[code] = count.get(code, 0) + 1
    ranked = sorted(found, key=lambda item: -item[0])  # larger batches say more
    for _, diagnoses in ranked:
        for d in diagnoses:
            if d.code in _ALWAYS:
                return [d]
    if verdict is None or verdict.shape_error or verdict.mismatch is None:
        return _choose_by_tally(found)
    wrong = verdict.n_wrong

    same: dict[tuple[str, str], int] = {}
    for _, diagnoses in found:
        for d in diagnoses:
            same[(d.code, d.message)] = same.get((d.code, d.message), 0) + 1

    def qualifies(code: str) -> bool:
        if code in _WEAK or count.get(code, 0) < len(found) or len(sizes[code]) < 2:
            return False
        # independent entries: the wrong ones at every evaluation; one wrong entry
        # counts once per evaluation only where the finding (its constant) repeats
        evidence = wrong * count[code] if wrong > 1 else \
            max(k for (c, _), k in same.items() if c == code)
        return evidence >= (MIN_ENTRIES if code in _FITTED else 2)

    for _, diagnoses in ranked:
        chosen = [d for d in diagnoses if qualifies(d.code)]
        if chosen:
            return chosen
    candidates = sorted({d.code for _, ds in found for d in ds} - set(_WEAK))
    return [_from_mask(verdict, candidates, {n for n, _ in found})]


def _choose_by_tally(found: list[tuple[int, list[Diagnosis]]]) -> list[Diagnosis]:
    """The finding most evaluations agree on, larger batches first (shape errors)."""
    tally: dict[str, int] = {}
    for _, diagnoses in found:
        for code in {d.code for d in diagnoses}:
            tally[code] = tally.get(code, 0) + 1

    def score(item):
        diagnoses = item[1]
        if not diagnoses:
            return (0, 0)
        top = diagnoses[0].code
        return (0 if top in _WEAK else 1, tally.get(top, 0))

    return max(sorted(found, key=lambda item: -item[0]), key=score)[1]


def _from_mask(verdict: ParamVerdict, candidates: list[str], sizes: set[int]) -> Diagnosis:
    """"No known pattern", worded from the verdict's mask (what the picture shows)."""
    from .diagnose import _idx, _lines

    bad = verdict.mismatch | verdict.nonfinite
    total = int(bad.size)
    name = verdict.name
    if bad.all() or bad.ndim == 0:
        where = f"all {total} entries are wrong"
        info: dict[str, Any] = {"wrong": total}
    elif bad.ndim == 1:
        ids = [int(i) for i in np.nonzero(bad)[0]]
        where = _lines("entry", ids, "unit").replace("entrys", "entries")
        info = {"entries": ids}
    else:
        b2 = bad.reshape(bad.shape[0], -1)
        rows = [int(i) for i in np.nonzero(b2.any(axis=1))[0]]
        cols = [int(j) for j in np.nonzero(b2.any(axis=0))[0]]
        idx = np.argwhere(bad)
        if len(idx) <= 4:
            where = f"only entr{'y' if len(idx) == 1 else 'ies'} " + \
                ", ".join(_idx(i) for i in idx) + (" differs" if len(idx) == 1 else " differ")
            info = {"entries": [tuple(int(j) for j in i) for i in idx]}
        elif len(rows) < b2.shape[0]:
            where, info = _lines("row", rows, "unit"), {"rows": rows}
        elif len(cols) < b2.shape[1]:
            where, info = _lines("column", cols, "input"), {"columns": cols}
        else:
            where, info = f"{int(bad.sum())} of {total} entries are wrong", {}
    text = f"{name}: no known pattern; {where} (at one evaluation at least)"
    if candidates:
        why = "at two batch sizes" if len(sizes) < 2 else f"on enough entries ({verdict.n_wrong} wrong)" \
            if verdict.n_wrong < MIN_ENTRIES else "at every failing evaluation"
        text += f"; {', '.join(candidates)} fit{'s' if len(candidates) == 1 else ''} " \
                f"some evaluations but not {why}"
    code = "unknown" if bad.all() else "partial"
    return Diagnosis(code, text, {"wrong": int(bad.sum()), **info, "candidates": candidates})


# --------------------------------------------------------------------------- command line


def add_arguments(parser) -> None:
    """Arguments of ``symgrad verify``."""
    parser.add_argument("spec", help="a network spec (.toml)")
    parser.add_argument("--grad", metavar="FILE.py:FUNCTION",
                        help="a hand-written gradient function(params, X, T) -> dict of arrays")
    parser.add_argument("--formula", action="append", default=[], metavar="PARAM=EXPR",
                        help="prove a gradient formula, e.g. 'W2=delta2.T @ a1' (repeatable)")
    from .cli import DEFAULT_TIMEOUT, _seconds, int_at_least, seed_type

    parser.add_argument("--points", type=int_at_least(1, 10_000), default=3,
                        help="random points per batch size")
    parser.add_argument("--batch-sizes", default="1,3,5",
                        help="comma-separated batch sizes (default 1,3,5; a mistake is "
                             "named only when it fits at two)")
    parser.add_argument("--seed", type=seed_type, default=0)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--timeout", type=_seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"give up (exit 2) after this long (default {DEFAULT_TIMEOUT:g})")


def run(args) -> int:
    """``symgrad verify``: exit 0 correct, 1 wrong, 2 bad input."""
    from .cli import user_code

    label = args.grad or "verify"
    with user_code(label, getattr(args, "timeout", None), passthrough=(VerifyInputError,)):
        return _run(args)


def _run(args) -> int:
    """``symgrad verify`` under the time limit: see :func:`run`."""
    from .cli import UsageError
    from .spec import load_spec

    if not args.grad and not args.formula:
        raise UsageError("verify: give --grad FILE.py:FUNCTION and/or --formula PARAM=EXPR")
    try:
        sizes = tuple(int(s) for s in str(args.batch_sizes).split(",") if s.strip())
    except ValueError:
        raise UsageError(f"--batch-sizes {args.batch_sizes!r}: expected integers like 1,5") \
            from None
    if args.points < 1 or not sizes or min(sizes) < 1 or max(sizes) > 100_000:
        raise UsageError("--points and --batch-sizes must be between 1 and 100000")
    spec = load_spec(args.spec)
    derivation = _derivation(spec)
    output: dict[str, Any] = {}
    texts: list[str] = []
    code = 0
    try:
        if args.grad:
            function, label = load_grad_function(args.grad)
            report = verify_gradient(derivation, function, points=args.points,
                                     batch_sizes=sizes, seed=args.seed, label=label)
            output["gradient"] = report.to_dict()
            if report.bad_input:
                if args.json:
                    print(json.dumps(output, indent=2))
                raise UsageError(report.bad_input)
            texts.append(str(report))
            code = max(code, 0 if report.passed else 1)
        if args.formula:
            from .prove import FormulaError, prove_gradient_formula

            proofs = []
            for text in args.formula:
                param, sep, formula = text.partition("=")
                if not sep or not param.strip() or not formula.strip():
                    raise UsageError(f"--formula {text!r}: expected PARAM=EXPR, "
                                     "e.g. 'W2=delta2.T @ a1'")
                try:
                    result = prove_gradient_formula(derivation, param.strip(), formula.strip(),
                                                    seed=args.seed)
                except FormulaError as exc:
                    raise UsageError(f"--formula {text!r}: {exc}") from None
                proofs.append(result.to_dict())
                texts.append(str(result))
                code = max(code, 0 if result.holds else 1)
            output["formulas"] = proofs
    except VerifyInputError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        output["passed"] = code == 0
        print(json.dumps(output, indent=2))
    else:
        print("\n\n".join(texts))
    return code
