"""Numerical verification of hand-written gradients.

Contract
--------
``check_gradient(loss_fn, grad_fn, params, *args, method=...)`` compares the
gradient returned by ``grad_fn(params, *args)`` (a dict ``name -> ndarray``)
with a numerical derivative of the scalar ``loss_fn(params, *args)``, entry by
entry, and returns a :class:`GradientReport`.  The caller's arrays are never
modified (all perturbations are applied to private copies).

Every entry ends in exactly one state:

* ``ok``        analytic and numerical values agree within tolerance;
* ``mismatch``  they disagree: a wrong gradient (counts as a failure);
* ``kink``      the loss is not smooth there (ReLU, leaky ReLU, ``abs``,
  ``max``...): the finite difference straddles a slope jump and the analytic
  value equals one of the one-sided derivatives; reported, never a failure;
* ``nonfinite`` NaN or inf in the analytic value or in the numerical one;
  always a failure with its own message, never masked.

Methods
-------
``"central"``     ``(L(w+h) - L(w-h)) / 2h`` with ``h = eps * max(1, |w|)``
                  rounded to a power of two (so that ``w +- h`` is exact).
                  Error O(h^2) + O(u/h); ``eps = cbrt(u)`` balances the two.
``"richardson"``  Richardson extrapolation of central differences at h, h/2
                  and h/4: ``(64 D(h/4) - 20 D(h/2) + D(h)) / 45``, error O(h^6).
``"complex"``     complex step ``Im L(w + i h) / h`` with ``h = 1e-30``: no
                  subtractive cancellation, machine precision, *if* ``loss_fn``
                  is complex-analytic.  Code that calls ``abs``, ``np.linalg.norm``,
                  ``conj``, ``float()``, writes into real arrays, ... discards or
                  mangles the imaginary part.  symgrad detects this (exceptions,
                  ``ComplexWarning``, a real-valued result, or disagreement with
                  a central difference at a smooth point), says so in
                  ``report.notes`` and falls back to central differences.
                  ``np.maximum``/comparisons order complex numbers by their real
                  part first, so ``np.maximum(x, 0)`` works away from kinks.

Precision and tolerances
------------------------
An entry fails when ``|a - n| > atol * s + rtol * max(|a|, |n|) + floor`` where
``s = max(1, max |n|)`` over the parameter (``atol`` is relative to the
gradient's scale when that exceeds 1) and ``floor = C u |L| / h`` is the
rounding noise of the finite-difference formula (``u`` the machine epsilon of
the evaluation dtype, ``C = 32``; zero for the complex step).

References: PyTorch ``torch.autograd.gradcheck`` uses eps=1e-6, atol=1e-5,
rtol=1e-3 (float64 only); JAX ``jax.test_util.check_grads`` uses eps=1e-4 and
tol=1e-5 for float64 (2e-3 for float32), with atol = rtol = tol.

symgrad's defaults are tighter in float64, because the step is scaled to each
entry, the rounding floor is accounted for explicitly, and every apparent
failure is re-examined before it is reported (see below).  Tight tolerances
catch subtle bugs such as a missing weight-decay term with a small lambda.

==============  ==========  =========  ==========  ===============================
method / dtype  eps         rtol       atol        why
==============  ==========  =========  ==========  ===============================
central f64     6.06e-6     1e-6       1e-8        eps = cbrt(u64): O(h^2)=O(u/h)
richardson f64  2e-3        1e-8       1e-10       ~u64^(1/6): O(h^6) vs O(u/h)
complex f64     1e-30       1e-9       1e-11       exact up to rounding of grad_fn
central f32     4.9e-3      2e-3       1e-4        eps = cbrt(u32); JAX's f32 tol
richardson f32  3e-2        1e-3       1e-5
==============  ==========  =========  ==========  ===============================

float32 parameters: ``grad_fn`` is called on the float32 arrays as given.  The
finite differences are run on float64 copies when ``loss_fn`` accepts them
(it does not raise and its result is not a float32 scalar); then the float64
eps apply and rtol/atol are loosened to at least PyTorch's 1e-3/1e-5 because
the analytic gradient itself carries float32 rounding.  Otherwise the float32
row of the table applies (and a note says so).  Explicit ``eps``, ``rtol`` and
``atol`` arguments override the defaults.

Re-examination of failures
--------------------------
For every entry that fails the first comparison, symgrad evaluates the loss at
``w +- h``, ``w +- h/2``, ``w +- h/4`` (central step) and forms the Richardson
estimate and second-order one-sided estimates (forward and backward, each at
two step sizes).  If they all agree the function is smooth there: for
``central`` the Richardson value replaces the central one (so large third
derivatives do not cause false alarms).  If they disagree the loss has a slope
jump near ``w``; when one side is self-consistent and the analytic value
matches it (or, both sides being clean, lies between them: a subgradient such
as ``sign(0) = 0``), the entry is a kink, otherwise it stays a failure.

Entries that pass are screened for kinks too: when the second difference
``|L(w+h) - 2 L(w) + L(w-h)| / h`` is much larger than the tolerance, the same
examination runs and a non-smooth entry is reported as a kink (it still passes).
A kink whose slope jump is below that threshold goes unreported; it is harmless,
since the values agreed.

For failing parameters, :func:`symgrad.diagnose.diagnose` is run with the
numerical gradient as the reference, and its named findings are attached as
``report[name].diagnoses``.

Example
-------
>>> import numpy as np
>>> loss = lambda p: float(np.sum(p["w"] ** 3))
>>> good = lambda p: {"w": 3 * p["w"] ** 2}
>>> check_gradient(loss, good, {"w": np.array([1.0, -2.0])}).passed
True
>>> bad = lambda p: {"w": -3 * p["w"] ** 2}
>>> rep = check_gradient(loss, bad, {"w": np.array([1.0, -2.0])})
>>> rep.passed, rep["w"].diagnoses[0].code
(False, 'sign_flipped')
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from symgrad.diagnose import Diagnosis
from symgrad.diagnose import diagnose as _diagnose

__all__ = ["DEFAULTS", "METHODS", "GradientReport", "ParamReport", "check_gradient"]

METHODS = ("central", "complex", "richardson")

_U64 = float(np.finfo(np.float64).eps)
_U32 = float(np.finfo(np.float32).eps)
_C_ROUND = 32.0  # safety factor on the rounding-noise floor C * u * |L| / h

#: Default (eps, rtol, atol) per (method, evaluation precision).
DEFAULTS: dict[tuple[str, str], tuple[float, float, float]] = {
    ("central", "float64"): (_U64 ** (1 / 3), 1e-6, 1e-8),
    ("richardson", "float64"): (2e-3, 1e-8, 1e-10),
    ("complex", "float64"): (1e-30, 1e-9, 1e-11),
    ("central", "float32"): (_U32 ** (1 / 3), 2e-3, 1e-4),
    ("richardson", "float32"): (3e-2, 1e-3, 1e-5),
    ("complex", "float32"): (1e-30, 1e-3, 1e-5),
}
#: Loosest tolerances forced when the analytic gradient is float32 (PyTorch's).
_F32_GRAD_TOL = (1e-3, 1e-5)

_OK, _MISMATCH, _KINK, _NONFINITE = 0, 1, 2, 3


# --------------------------------------------------------------------------- report


@dataclass
class ParamReport:
    """Result of the check for one parameter."""

    name: str
    shape: tuple
    passed: bool
    max_abs_err: float
    max_rel_err: float
    mismatch: np.ndarray
    kinks: np.ndarray
    nonfinite: np.ndarray
    worst_index: tuple | None
    numerical: np.ndarray
    analytic: np.ndarray
    diagnoses: list[Diagnosis] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: np.ndarray | None = None
    directions: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.checked is None:
            self.checked = np.ones(self.mismatch.shape, dtype=bool)

    @property
    def n_checked(self) -> int:
        """Number of entries compared one by one."""
        return int(np.count_nonzero(self.checked))

    @property
    def sampled(self) -> bool:
        """True when only a random sample of the entries was compared."""
        return self.n_checked < int(np.prod(self.shape, dtype=np.int64))

    @property
    def n_wrong(self) -> int:
        """Number of failing entries (mismatches and non-finite values)."""
        return int(np.count_nonzero(self.mismatch | self.nonfinite))

    @property
    def n_wrong_directions(self) -> int:
        """Number of failing directional derivatives."""
        return sum(d["status"] in ("mismatch", "nonfinite") for d in self.directions)

    def coverage(self) -> str:
        """``W1: 32 of 235200 entries sampled + 4 directional derivatives``."""
        total = int(np.prod(self.shape, dtype=np.int64))
        text = (f"{self.name}: {self.n_checked} of {total} entries sampled" if self.sampled
                else f"{self.name}: all {total} entries")
        nd = sum(d["status"] != "kink" for d in self.directions)
        if self.directions:
            text += f" + {nd} directional derivative{'s' if nd != 1 else ''}"
            nk = len(self.directions) - nd
            if nk:
                text += f" ({nk} more crossed a kink, not counted)"
        return text

    @property
    def n_kinks(self) -> int:
        """Number of entries classified as kinks."""
        return int(np.count_nonzero(self.kinks))

    def mask_picture(self, max_rows: int = 20, max_cols: int = 40) -> str:
        """Compact picture: ``.`` ok, ``X`` wrong, ``k`` kink, ``N`` NaN/inf, ``-`` unchecked."""
        n = max(1, self.mismatch.size)
        shape2 = (1, n) if self.mismatch.ndim <= 1 else (self.mismatch.shape[0], -1)
        grid = np.full(self.mismatch.shape, "-", dtype="<U1")
        grid[self.checked] = "."
        grid[self.kinks] = "k"
        grid[self.mismatch] = "X"
        grid[self.nonfinite] = "N"
        grid = grid.reshape(shape2)
        r, c = grid.shape
        lines = ["".join(row[:max_cols]) for row in grid[:max_rows]]
        if r > max_rows or c > max_cols:
            lines.append(
                f"(showing {min(r, max_rows)} of {r} rows, {min(c, max_cols)} of {c} columns;"
                f" {self.n_wrong} wrong, {self.n_kinks} kinks in total)"
            )
        return "\n".join(lines)

    def to_dict(self, arrays: bool = True) -> dict[str, Any]:
        """JSON-serialisable summary (non-finite floats become strings).

        When only a sample of the entries was checked, ``sampled_indices`` lists
        them and ``numerical``/``analytic`` hold the values at those entries only.
        """
        d: dict[str, Any] = {
            "name": self.name,
            "shape": list(self.shape),
            "passed": bool(self.passed),
            "entries_total": int(np.prod(self.shape, dtype=np.int64)),
            "entries_checked": self.n_checked,
            "sampled": self.sampled,
            "coverage": self.coverage(),
            "max_abs_err": _jsonf(self.max_abs_err),
            "max_rel_err": _jsonf(self.max_rel_err),
            "n_wrong": self.n_wrong,
            "n_kinks": self.n_kinks,
            "worst_index": None if self.worst_index is None else [int(i) for i in self.worst_index],
            "mismatch_indices": np.argwhere(self.mismatch).tolist(),
            "kink_indices": np.argwhere(self.kinks).tolist(),
            "nonfinite_indices": np.argwhere(self.nonfinite).tolist(),
            "diagnoses": [dg.to_dict() for dg in self.diagnoses],
            "notes": list(self.notes),
            "directions": [{k: _jsonf(v) if isinstance(v, float) else v for k, v in dd.items()}
                           for dd in self.directions],
        }
        if self.sampled:
            d["sampled_indices"] = np.argwhere(self.checked).tolist()
        if arrays:
            if self.sampled and self.analytic.shape == self.checked.shape:
                d["numerical"] = _jsonarr(self.numerical[self.checked])
                d["analytic"] = _jsonarr(self.analytic[self.checked])
            elif self.sampled:
                d["numerical"] = _jsonarr(self.numerical[self.checked])
                d["analytic"] = _jsonarr(self.analytic)
            else:
                d["numerical"] = _jsonarr(self.numerical)
                d["analytic"] = _jsonarr(self.analytic)
        return d


@dataclass
class GradientReport:
    """Result of :func:`check_gradient`; index it by parameter name."""

    params: dict[str, ParamReport]
    method: str
    method_used: str
    eps: float
    rtol: float
    atol: float
    eval_dtype: str
    grad_dtype: str
    notes: list[str] = field(default_factory=list)
    loss: float = float("nan")
    seed: int = 0

    @property
    def n_checked(self) -> int:
        """Entries compared one by one plus directional derivatives, over all parameters."""
        return sum(p.n_checked + sum(d["status"] != "kink" for d in p.directions)
                   for p in self.params.values())

    @property
    def passed(self) -> bool:
        """True when every parameter passed (kinks do not count as failures)."""
        return all(p.passed for p in self.params.values())

    @property
    def failed(self) -> list[str]:
        """Names of the failing parameters."""
        return [k for k, p in self.params.items() if not p.passed]

    @property
    def diagnoses(self) -> dict[str, list[Diagnosis]]:
        """Diagnoses of the failing parameters, by name."""
        return {k: p.diagnoses for k, p in self.params.items() if not p.passed}

    def __getitem__(self, name: str) -> ParamReport:
        return self.params[name]

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        head = (
            f"gradient check {'PASSED' if self.passed else 'FAILED'}: method={self.method_used}"
            + (f" (requested {self.method})" if self.method_used != self.method else "")
            + f", eps={self.eps:.3g}, rtol={self.rtol:.3g}, atol={self.atol:.3g},"
            f" evaluated in {self.eval_dtype}, gradient {self.grad_dtype}"
        )
        rows = [("param", "shape", "status", "max_abs_err", "max_rel_err", "wrong", "kinks",
                 "worst entry (analytic vs numerical)")]
        for p in self.params.values():
            worst = "-"
            if p.worst_index is not None and not p.passed:
                i = p.worst_index
                a = p.analytic[i] if p.analytic.shape == p.numerical.shape else float("nan")
                worst = f"{list(i)}: {a:.6g} vs {p.numerical[i]:.6g}"
            rows.append((p.name, str(p.shape), "ok" if p.passed else "FAIL",
                         f"{p.max_abs_err:.2e}", f"{p.max_rel_err:.2e}",
                         f"{p.n_wrong}/{p.n_checked}", str(p.n_kinks), worst))
        widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
        lines = [head, ""]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        if any(p.sampled or p.directions for p in self.params.values()):
            lines += ["", f"checked (random sample, seed {self.seed}):"]
            lines += ["  " + p.coverage() for p in self.params.values()]
        for p in self.params.values():
            if p.passed and not p.n_kinks and not p.notes:
                continue
            lines.append("")
            lines.append(f"{p.name}:")
            for dg in p.diagnoses:
                lines.append(f"  [{dg.code}] {dg.message}")
            for n in p.notes:
                lines.append(f"  note: {n}")
            if p.n_wrong or p.n_kinks:
                lines.append("  mask (. ok, X wrong, k kink, N NaN/inf"
                             + (", - not checked):" if p.sampled else "):"))
                lines += ["    " + ln for ln in p.mask_picture().splitlines()]
        for n in self.notes:
            lines.append(f"note: {n}")
        return "\n".join(lines)

    def to_dict(self, arrays: bool = True) -> dict[str, Any]:
        """JSON-serialisable form of the report (for ``--json``)."""
        return {
            "passed": self.passed,
            "method": self.method,
            "method_used": self.method_used,
            "eps": self.eps,
            "rtol": self.rtol,
            "atol": self.atol,
            "eval_dtype": self.eval_dtype,
            "grad_dtype": self.grad_dtype,
            "notes": list(self.notes),
            "loss": _jsonf(self.loss),
            "seed": self.seed,
            "checked": self.n_checked,
            "params": {k: p.to_dict(arrays) for k, p in self.params.items()},
        }


def _jsonf(x: float) -> Any:
    """A float for JSON: NaN/inf become strings."""
    x = float(x)
    if math.isfinite(x):
        return x
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


def _jsonarr(a: np.ndarray) -> Any:
    """Nested lists for JSON, non-finite values as strings."""
    a = np.asarray(a, dtype=np.float64)
    if np.all(np.isfinite(a)):
        return a.tolist()
    return np.vectorize(_jsonf, otypes=[object])(a).tolist() if a.size else []


# --------------------------------------------------------------------------- engine


def _pow2(x: float) -> float:
    """The power of two nearest to x (in log scale)."""
    return float(2.0 ** round(math.log2(x)))


def _scalar(v: Any) -> complex | float:
    """Reduce a loss value to a Python scalar (complex kept)."""
    a = np.asarray(v)
    if a.size != 1:
        raise ValueError(f"loss_fn must return a scalar, got shape {a.shape}")
    x = a.reshape(()).item()
    return x


class _Evaluator:
    """Evaluates loss_fn with one entry of one parameter perturbed."""

    def __init__(self, loss_fn: Callable, params: dict, args: tuple, dtype: type):
        self.loss_fn, self.args, self.dtype = loss_fn, args, dtype
        self.work = {k: np.array(v, dtype=dtype, copy=True) for k, v in params.items()}
        self.flat = {k: v.reshape(-1) for k, v in self.work.items()}
        self.u = float(np.finfo(dtype).eps)

    def base(self) -> float:
        """Loss at the unperturbed point."""
        return float(np.real(_scalar(self.loss_fn(self.work, *self.args))))

    def at(self, name: str, i: int, delta: float) -> tuple[float, float]:
        """(loss, actual step) with entry i of `name` shifted by delta."""
        f = self.flat[name]
        old = f[i]
        f[i] = old + self.dtype(delta)
        step = float(f[i]) - float(old)
        try:
            val = float(np.real(_scalar(self.loss_fn(self.work, *self.args))))
        except (FloatingPointError, OverflowError, ZeroDivisionError):
            val = float("nan")
        finally:
            f[i] = old
        return val, step


class _Entry:
    """Lazily evaluated loss samples L(w + m h) around one entry."""

    def __init__(self, ev: _Evaluator, name: str, i: int, h: float, L0: float):
        self.ev, self.name, self.i, self.h, self.L0 = ev, name, i, h, L0
        self.cache: dict[float, tuple[float, float]] = {}
        self.primary_floor = 0.0

    def L(self, m: float) -> float:
        """Loss at w + m h."""
        if m == 0:
            return self.L0
        if m not in self.cache:
            self.cache[m] = self.ev.at(self.name, self.i, m * self.h)
        return self.cache[m][0]

    def lscale(self) -> float:
        """Largest |L| among the samples taken (for the rounding floor)."""
        vals = [abs(self.L0)] + [abs(v) for v, _ in self.cache.values()]
        return max(vals)

    def central(self) -> float:
        """Central difference with the actually realised steps."""
        lp, lm = self.L(1), self.L(-1)
        sp, sm = self.cache[1][1], self.cache[-1][1]
        return (lp - lm) / (sp - sm)

    def richardson(self) -> float:
        """Richardson extrapolation of central differences at h, h/2, h/4."""
        h = self.h
        d1 = (self.L(1) - self.L(-1)) / (2 * h)
        d2 = (self.L(0.5) - self.L(-0.5)) / h
        d4 = (self.L(0.25) - self.L(-0.25)) / (h / 2)
        return (64 * d4 - 20 * d2 + d1) / 45

    def one_sided(self) -> tuple[float, float, float, float]:
        """Second-order forward/backward estimates at h/2 and h/4: (f1, f2, b1, b2)."""
        h, L0 = self.h, self.L0
        f1 = (-3 * L0 + 4 * self.L(0.5) - self.L(1)) / h
        f2 = (-3 * L0 + 4 * self.L(0.25) - self.L(0.5)) / (h / 2)
        b1 = (3 * L0 - 4 * self.L(-0.5) + self.L(-1)) / h
        b2 = (3 * L0 - 4 * self.L(-0.25) + self.L(-0.5)) / (h / 2)
        return f1, f2, b1, b2


def _complex_probe(loss_fn: Callable, params: dict, args: tuple) -> str | None:
    """None if loss_fn evaluates on complex128 params, else the reason it cannot."""
    cp = {k: np.array(v, dtype=np.complex128) for k, v in params.items()}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", np.exceptions.ComplexWarning)
            v = loss_fn(cp, *args)
            a = np.asarray(v)
    except np.exceptions.ComplexWarning:
        return "loss_fn casts complex values to real (ComplexWarning: imaginary part discarded)"
    except Exception as exc:  # noqa: BLE001 - any failure means unusable
        return f"loss_fn raised {type(exc).__name__} on complex input ({exc})"
    if a.size != 1:
        return f"loss_fn returned shape {a.shape} on complex input"
    if not np.iscomplexobj(a):
        return ("loss_fn returned a real value for complex input"
                " (imaginary part discarded, e.g. by abs/norm/float())")
    return None


def _complex_step(loss_fn: Callable, cparams: dict, cflat: dict, args: tuple, name: str,
                  i: int, h: float) -> float:
    """Im L(w + i h) / h."""
    f = cflat[name]
    old = f[i]
    f[i] = old + 1j * h
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", np.exceptions.ComplexWarning)
            v = complex(_scalar(loss_fn(cparams, *args)))
    finally:
        f[i] = old
    return v.imag / h


# --------------------------------------------------------------------------- main


def check_gradient(
    loss_fn: Callable[..., Any],
    grad_fn: Callable[..., dict],
    params: dict[str, np.ndarray],
    *args: Any,
    method: str = "central",
    rtol: float | None = None,
    atol: float | None = None,
    eps: float | None = None,
    batch_size: int | None = None,
    context: dict | None = None,
    diagnose: bool = True,
    entries: int | None = None,
    directions: int = 0,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    eval_dtype: str | None = None,
) -> GradientReport:
    """Compare ``grad_fn(params, *args)`` with a numerical derivative of ``loss_fn``.

    ``method`` is ``"central"``, ``"complex"`` or ``"richardson"``; ``eps``,
    ``rtol``, ``atol`` override the defaults of the module docstring.
    ``batch_size`` and ``context`` are passed to :func:`symgrad.diagnose.diagnose`
    (``context["params"]`` defaults to ``params``); ``diagnose=False`` skips it.

    ``entries=K`` compares only K entries per parameter, drawn at random
    (``seed``), when it has more; ``directions=D`` adds, per parameter, D
    directional derivatives along random unit vectors v, comparing
    ``<grad, v>`` with ``(L(p + h v) - L(p - h v)) / 2h``: one wrong entry
    anywhere changes them, sampled or not.  ``progress(done, total)`` is
    called after every entry and direction.  Diagnoses need every entry:
    they are given for parameters checked in full.

    ``eval_dtype`` (``"float32"`` or ``"float64"``) forces the precision of
    the finite differences; ``None`` chooses as the module docstring says.
    ``"float32"`` uses the float32 rows of the table (``eps = cbrt(u32)``,
    rtol/atol loosened for a float32 gradient), so that a loss computed in
    float32 throughout is checked in its own precision.

    A wrong entry that the sample misses is caught by the directions:

    >>> w = {"w": np.linspace(-1, 1, 10000)}
    >>> wrong = lambda p: {"w": 2 * p["w"] + (np.arange(10000) == 1234)}
    >>> rep = check_gradient(lambda p: np.sum(p["w"] ** 2), wrong, w, entries=16,
    ...                      directions=4)
    >>> rep.passed, rep["w"].n_checked, rep["w"].n_wrong, rep["w"].n_wrong_directions
    (False, 16, 0, 4)

    A scalar function of a one-element array:

    >>> import numpy as np
    >>> f = lambda p: np.exp(p["x"][0]) / np.sqrt(np.sin(p["x"][0])**3 + np.cos(p["x"][0])**3)
    >>> g = lambda p: {"x": np.array([4.053427893898621])}
    >>> rep = check_gradient(f, g, {"x": np.array([1.5])}, method="complex")
    >>> rep.passed, bool(abs(rep["x"].numerical[0] - 4.053427893898621) < 1e-14)
    (True, True)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(params, dict) or not params:
        raise TypeError("params must be a non-empty dict name -> ndarray")
    params = {k: np.asarray(v) for k, v in params.items()}
    for k, v in params.items():
        if not (np.issubdtype(v.dtype, np.floating)):
            raise TypeError(f"parameter {k!r} must be a floating-point array, got {v.dtype}")
    if eval_dtype not in (None, "float32", "float64"):
        raise ValueError(f"eval_dtype must be None, 'float32' or 'float64', got {eval_dtype!r}")
    notes: list[str] = []
    low = any(v.dtype.itemsize < 8 for v in params.values())
    grad_dtype = "float32" if low else "float64"

    # analytic gradient, on copies of the user's arrays as given
    raw = grad_fn({k: v.copy() for k, v in params.items()}, *args)
    if not isinstance(raw, dict):
        raise TypeError(f"grad_fn must return a dict name -> ndarray, got {type(raw).__name__}")
    extra = sorted(set(raw) - set(params))
    if extra:
        notes.append(f"grad_fn returned keys that are not parameters: {extra}")

    # evaluation precision
    ev_type: type = np.float64
    if eval_dtype == "float32":
        ev_type, low = np.float32, True
        notes.append("finite differences run in float32, as requested (float32 eps and"
                     " tolerances)")
    elif eval_dtype == "float64":
        if low:
            notes.append("float32 parameters: finite differences run on float64 copies, as"
                         " requested; tolerances loosened for a float32 analytic gradient")
    elif low:
        up = {k: v.astype(np.float64) for k, v in params.items()}
        try:
            val = loss_fn(up, *args)
            ok = np.asarray(val).dtype.itemsize >= 8 and np.isfinite(float(np.real(_scalar(val))))
        except Exception:  # noqa: BLE001
            ok = False
        if ok:
            notes.append("float32 parameters: finite differences run on float64 copies;"
                         " tolerances loosened for a float32 analytic gradient")
        else:
            ev_type = np.float32
            notes.append("float32 parameters: loss_fn does not run in float64, finite"
                         " differences run in float32 (larger eps, looser tolerances)")
    ekey = "float64" if ev_type is np.float64 else "float32"

    def tolerances(m: str) -> tuple[float, float, float]:
        e0, r0, a0 = DEFAULTS[(m, ekey)]
        if low:
            r0, a0 = max(r0, _F32_GRAD_TOL[0]), max(a0, _F32_GRAD_TOL[1])
        return e0, r0, a0

    method_used = method
    if method == "complex":
        reason = _complex_probe(loss_fn, params, args)
        if reason is not None:
            method_used = "central"
            notes.append(f"complex step unusable: {reason}; fell back to central differences")

    if entries is not None and (isinstance(entries, bool) or int(entries) < 1):
        raise ValueError(f"entries must be None or at least 1, got {entries!r}")
    if isinstance(directions, bool) or int(directions) < 0:
        raise ValueError(f"directions must be at least 0, got {directions!r}")
    sampling = dict(entries=entries, directions=int(directions), seed=seed, progress=progress)
    results, base_loss = _run(loss_fn, params, args, raw, method_used, ev_type, tolerances,
                              eps, rtol, atol, **sampling)
    if results is None:  # complex step disagreed with central differences at a smooth point
        method_used = "central"
        notes.append("complex step unusable: loss_fn is not complex-analytic (imaginary part"
                     " discarded or mangled, e.g. by abs/norm/conj/relu); fell back to central"
                     " differences")
        results, base_loss = _run(loss_fn, params, args, raw, method_used, ev_type,
                                  tolerances, eps if method != "complex" else None, rtol, atol,
                                  **sampling)
    e_used, r_used, a_used = tolerances(method_used)
    if eps is not None and not (method == "complex" and method_used == "central"):
        e_used = eps
    r_used = r_used if rtol is None else rtol
    a_used = a_used if atol is None else atol

    reports = results
    for p in reports.values():
        if not p.passed and p.sampled:
            p.notes.append("diagnosis needs every entry: check this parameter in full"
                           " (entries=None, --entries all) to name the mistake")
    if diagnose and any(not p.passed and not p.sampled for p in reports.values()):
        ctx = dict(context or {})
        ctx.setdefault("params", params)
        expected = {}
        for k, p in reports.items():
            if p.sampled:
                continue
            e = p.numerical.copy()
            if p.analytic.shape == e.shape and p.kinks.any():
                e[p.kinks] = p.analytic[p.kinks]  # valid one-sided value at kinks
            expected[k] = e
        got = {k: np.asarray(raw[k]) for k in expected if k in raw}
        drtol = max(10 * r_used, 1e-6 if not low and ekey == "float64" else 1e-3)
        found = _diagnose(expected, got, batch_size=batch_size, context=ctx, rtol=drtol)
        for k, p in reports.items():
            if not p.passed and not p.sampled:
                p.diagnoses = found.get(k, [])

    return GradientReport(params=reports, method=method, method_used=method_used,
                          eps=float(e_used), rtol=float(r_used), atol=float(a_used),
                          eval_dtype=ekey, grad_dtype=grad_dtype, notes=notes,
                          loss=float(base_loss), seed=int(seed))


def _sample(n: int, entries: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted flat indices to check: all of them, or ``entries`` drawn without replacement."""
    if entries is None or n <= entries:
        return np.arange(n)
    return np.sort(rng.choice(n, size=entries, replace=False))


def _run(loss_fn, params, args, raw, method, eval_dtype, tolerances, eps, rtol, atol,
         entries=None, directions=0, seed=0, progress=None):
    """Check every parameter with one method; None if the complex step proves unusable."""
    e_m, r_m, a_m = tolerances(method)
    e_c, r_c, a_c = tolerances("central")
    if eps is not None:
        e_m = eps
    if rtol is not None:
        r_m = rtol
    if atol is not None:
        a_m = atol
    # tolerance used to judge smoothness/kinks: never tighter than central's
    r_s, a_s = max(r_m, r_c), max(a_m, a_c)

    ev = _Evaluator(loss_fn, params, args, eval_dtype)
    L0 = ev.base()
    u = ev.u
    if method == "complex":
        cparams = {k: np.array(v, dtype=np.complex128) for k, v in params.items()}
        cflat = {k: v.reshape(-1) for k, v in cparams.items()}

    rng = np.random.default_rng(seed)
    picks = {name: _sample(int(w.size), entries, rng) for name, w in params.items()}
    total = sum(len(ix) + (directions if w.size else 0)
                for ix, w in zip(picks.values(), params.values()))
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    out: dict[str, ParamReport] = {}
    for name, w in params.items():
        notes: list[str] = []
        shape = w.shape
        wf = ev.flat[name]
        n = wf.size
        idx = picks[name]
        checked = np.zeros(n, dtype=bool)
        checked[idx] = True
        a_raw = raw.get(name)
        shape_ok = a_raw is not None and np.shape(a_raw) == shape
        if a_raw is None:
            notes.append("grad_fn returned no gradient for this parameter")
            A = np.full(n, np.nan)
        elif not shape_ok:
            notes.append(f"analytic gradient has shape {np.shape(a_raw)}, expected {shape}")
            A = np.full(n, np.nan)
        else:
            A = np.asarray(a_raw, dtype=np.float64).reshape(-1)

        num = np.full(n, np.nan)
        ents: dict[int, _Entry] = {}
        for i in idx:
            i = int(i)
            wi = float(wf[i])
            hk = _pow2(e_c * max(1.0, abs(wi)))
            ent = _Entry(ev, name, i, hk, L0)
            ents[i] = ent
            if not math.isfinite(L0):
                num[i] = float("nan")
            elif method == "central":
                num[i] = ent.central()
            elif method == "richardson":
                er = _Entry(ev, name, i, _pow2(e_m * max(1.0, abs(wi))), L0)
                num[i] = er.richardson()
                ent.primary_floor = 6.6 * _C_ROUND * u * er.lscale() / er.h
            else:
                try:
                    num[i] = _complex_step(loss_fn, cparams, cflat, args, name, i, e_m)
                except Exception:  # noqa: BLE001
                    return None, L0
            tick()
        finite_num = num[np.isfinite(num)]
        gscale = max(1.0, float(np.max(np.abs(finite_num))) if finite_num.size else 1.0)

        status = np.zeros(n, dtype=np.int8)
        for i, ent in ents.items():
            a, x = A[i], num[i]
            if not (math.isfinite(a) and math.isfinite(x)):
                status[i] = _NONFINITE
                continue
            if method == "central":
                floor = _C_ROUND * u * ent.lscale() / ent.h
            elif method == "richardson":
                floor = ent.primary_floor
            else:
                floor = 0.0
                # verify the complex step against a central difference
                c = ent.central()
                tol_c = a_s * gscale + r_s * max(abs(c), abs(x)) + \
                    _C_ROUND * u * ent.lscale() / ent.h
                if math.isfinite(c) and abs(c - x) > tol_c:
                    smooth, rk, _ = _examine(ent, u, a_s * gscale, r_s, x)
                    if smooth and abs(rk - x) > a_s * gscale + r_s * abs(rk) + \
                            6.6 * _C_ROUND * u * ent.lscale() / ent.h:
                        return None, L0
            status[i], rk, note = _judge(ent, a, x, u, floor, gscale, method,
                                         (r_m, a_m), (r_s, a_s), L0)
            if rk is not None:
                num[i] = rk
            if note:
                notes.append(f"entry {np.unravel_index(i, shape)} {note}")

        dirs = []
        if directions and n and shape_ok and math.isfinite(L0):
            dirs = _directions(ev, name, A, directions, rng, e_c, u, gscale, (r_s, a_s), L0,
                               tick)
            bad_dirs = [d for d in dirs if d["status"] in ("mismatch", "nonfinite")]
            if bad_dirs:
                d = bad_dirs[0]
                notes.append(f"{len(bad_dirs)} of {len(dirs)} directional derivatives disagree:"
                             f" <grad, v> = {d['analytic']:.6g} vs"
                             f" (L(p + h v) - L(p - h v)) / 2h = {d['numerical']:.6g}")
        elif directions and n:
            for _ in range(directions):
                tick()

        mismatch = (status == _MISMATCH).reshape(shape)
        kinks = (status == _KINK).reshape(shape)
        nonfinite = (status == _NONFINITE).reshape(shape)
        if not shape_ok:
            mismatch = np.ones(shape, dtype=bool)
            nonfinite = np.zeros(shape, dtype=bool)
            kinks = np.zeros(shape, dtype=bool)
        else:
            nf_a = int(np.sum(~np.isfinite(A[checked])))
            nf_n = int(np.sum(~np.isfinite(num[checked])))
            if nf_a:
                notes.append(f"analytic gradient has {nf_a} NaN/inf entries")
            if nf_n:
                notes.append(f"numerical gradient has {nf_n} NaN/inf entries"
                             " (loss_fn not finite near the point)")
        nk = int(kinks.sum())
        if nk:
            notes.append(f"{nk} {'entry is at a kink' if nk == 1 else 'entries are at kinks'}"
                         " (loss not differentiable there): not counted as failures")
        considered = checked & (status != _KINK) & np.isfinite(A) & np.isfinite(num)
        err = np.where(considered, np.abs(A - np.where(considered, num, 0.0)), 0.0)
        den = np.maximum(np.maximum(np.abs(A), np.abs(num)), a_m * gscale)
        rel = np.where(considered, err / np.where(considered, den, 1.0), 0.0)
        bad = (mismatch | nonfinite).reshape(-1)
        if bad.any():
            cand = np.where(bad, np.where(np.isfinite(err), err, np.inf), -1.0)
            cand = np.where(bad & (~np.isfinite(A) | ~np.isfinite(num)), np.inf, cand)
            worst = tuple(int(j) for j in np.unravel_index(int(np.argmax(cand)), shape))
        elif idx.size:
            worst = tuple(int(j) for j in np.unravel_index(int(np.argmax(
                np.where(checked, err, -1.0))), shape))
        else:
            worst = None
        dirs_ok = not any(d["status"] in ("mismatch", "nonfinite") for d in dirs)
        out[name] = ParamReport(
            name=name, shape=tuple(shape),
            passed=not bool(bad.any()) and shape_ok and dirs_ok,
            max_abs_err=float(err.max()) if n else 0.0,
            max_rel_err=float(rel.max()) if n else 0.0,
            mismatch=mismatch, kinks=kinks, nonfinite=nonfinite, worst_index=worst,
            numerical=num.reshape(shape),
            analytic=_analytic_out(A, a_raw, shape, shape_ok),
            notes=notes, checked=checked.reshape(shape), directions=dirs,
        )
    return out, L0


def _judge(ent, a, x, u, floor, gscale, method, tol_m, tol_s, L0, extra=0.0):
    """(status, replacement numerical value or None, note) for one finite entry."""
    r_m, a_m = tol_m
    r_s, a_s = tol_s
    tol = a_m * gscale + r_m * max(abs(a), abs(x)) + floor + extra
    if abs(a - x) <= tol:
        # cheap kink screen: a slope jump shows in the second difference
        if method != "complex" or 1 in ent.cache:
            jump = abs(ent.L(1) - 2 * L0 + ent.L(-1)) / ent.h
            tol_j = a_s * gscale + r_s * max(abs(a), abs(x)) + \
                16 * _C_ROUND * u * ent.lscale() / ent.h
            if jump > 10 * tol_j and not _examine(ent, u, a_s * gscale, r_s, a)[0]:
                return _KINK, None, ""
        return _OK, None, ""
    # re-examine the apparent failure
    smooth, rk, sides = _examine(ent, u, a_s * gscale, r_s, a)
    tol_s = a_s * gscale + r_s * max(abs(a), abs(rk)) + 16 * _C_ROUND * u * \
        ent.lscale() / ent.h + extra
    if not all(math.isfinite(v) for v in (rk, *sides)):
        return _MISMATCH, None, ""
    if smooth:
        if method == "central":
            floor_r = 6.6 * _C_ROUND * u * ent.lscale() / ent.h
            ok = abs(a - rk) <= a_m * gscale + r_m * max(abs(a), abs(rk)) + floor_r + extra
            return (_OK if ok else _MISMATCH), rk, ""
        if abs(x - rk) > tol_s:  # the coarse primary step crossed a kink
            return (_KINK if abs(a - rk) <= tol_s else _MISMATCH), rk, ""
        return _MISMATCH, None, ""
    f1, f2, b1, b2 = sides
    fwd_clean = abs(f1 - f2) <= tol_s
    bwd_clean = abs(b1 - b2) <= tol_s
    lo, hi = min(f2, b2) - tol_s, max(f2, b2) + tol_s
    if (fwd_clean and abs(a - f2) <= tol_s) or (bwd_clean and abs(a - b2) <= tol_s) \
            or (fwd_clean and bwd_clean and lo <= a <= hi):
        # a one-sided derivative, or a subgradient between them (relu'(0) = 0.5)
        return _KINK, None, ""
    return _MISMATCH, None, "sits near a kink and matches neither one-sided derivative"


class _Line:
    """The loss along one direction of one parameter: at(name, 0, t) = L(p + t v)."""

    def __init__(self, ev: _Evaluator, name: str, v: np.ndarray):
        self.ev, self.name, self.v = ev, name, v
        self.u = ev.u

    def at(self, name: str, i: int, delta: float) -> tuple[float, float]:
        """(loss, step) with the parameter moved by delta along v."""
        f = self.ev.flat[name]
        saved = f.copy()
        f += (delta * self.v).astype(f.dtype)
        try:
            val = float(np.real(_scalar(self.ev.loss_fn(self.ev.work, *self.ev.args))))
        except (FloatingPointError, OverflowError, ZeroDivisionError):
            val = float("nan")
        finally:
            f[...] = saved
        return val, delta


def _directions(ev, name, A, count, rng, e_c, u, gscale, tol, L0, tick):
    """Compare <grad, v> with (L(p + h v) - L(p - h v)) / 2h for random unit vectors v."""
    r_s, a_s = tol
    n = A.size
    out: list[dict[str, Any]] = []
    spare = count  # directions that cross a kink are replaced, up to `count` times
    while len(out) - sum(d["status"] == "kink" for d in out) < count:
        v = rng.standard_normal(n)
        v /= float(np.linalg.norm(v)) or 1.0
        a = float(np.dot(A, v))
        # rounding of the analytic dot product, summed with random signs
        rss = float(np.sqrt(np.sum((A * v) ** 2))) if np.all(np.isfinite(A)) else 0.0
        ent = _Entry(_Line(ev, name, v), name, 0, _pow2(e_c), L0)
        x = ent.central()
        if not (math.isfinite(a) and math.isfinite(x)):
            status, x_out = "nonfinite", x
        else:
            floor = _C_ROUND * u * ent.lscale() / ent.h
            st, rk, _ = _judge(ent, a, x, u, floor, gscale, "central",
                               (r_s, a_s), (r_s, a_s), L0, extra=4 * r_s * rss)
            status = {_OK: "ok", _MISMATCH: "mismatch", _KINK: "kink"}[int(st)]
            x_out = x if rk is None else rk
        out.append({"analytic": a, "numerical": float(x_out), "status": status})
        if status == "kink":
            if spare == 0:
                break
            spare -= 1
        else:
            tick()
    return out


def _analytic_out(A, a_raw, shape, shape_ok):
    """The analytic array to store in the report."""
    if shape_ok:
        return A.reshape(shape)
    if a_raw is None:
        return np.full(shape, np.nan)
    return np.asarray(a_raw, dtype=np.float64)


def _examine(ent: _Entry, u: float, atol: float, rtol: float, a: float):
    """(smooth, richardson estimate, one-sided estimates) around one entry."""
    rk = ent.richardson()
    sides = ent.one_sided()
    ests = (rk, *sides)
    if not all(math.isfinite(v) for v in ests):
        return False, rk, sides
    tol = atol + rtol * max(abs(a), abs(rk)) + 16 * _C_ROUND * u * ent.lscale() / ent.h
    smooth = (max(ests) - min(ests)) <= 2 * tol
    return smooth, rk, sides
