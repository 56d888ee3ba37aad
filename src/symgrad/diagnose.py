"""Name what is wrong with a hand-written gradient.

Contract
--------
``diagnose(expected, got, *, batch_size=None, context=None, rtol=None)`` takes a
trusted reference gradient ``expected`` (from the symbolic derivation or from
finite differences) and the user's gradient ``got``, both dicts
``name -> ndarray``.  For every *failing* parameter (shape differs, NaN/inf, or
``||got - expected|| > rtol * ||expected||``) it returns a list of
:class:`Diagnosis` (``code``: short machine id, ``message``: one sentence),
strongest first; parameters that agree are absent from the result, so an empty
dict means "nothing wrong".

Hypotheses are rows of the table :data:`HYPOTHESES` (code, test, message
template), tried in order; the order *is* the strength ranking.  A test gets a
:class:`Case` and returns ``None`` (no match), a dict of template fields, or a
list of such dicts; a dict may override ``code`` and ``message``.  Rows marked
``final`` stop the search (nothing else is meaningful after them); the
fallback rows ``partial``, ``shape`` and ``unknown`` only speak when no row
before them has matched.  To add a pattern, append a row with
:func:`hypothesis`.

Codes: ``nan_inf``, ``zero``, caller-supplied alternatives (``wrong_point``,
``wrong_activation_derivative``, ...), ``transposed``, ``sign_flipped``,
``swapped``, ``bias_not_summed``, ``weight_decay_missing``,
``weight_decay_extra``, ``weight_decay_wrong``, ``scaled`` (of the whole gradient, or
of the data term alone when a weight decay term is present), ``partial``,
``shape``, ``unknown``.

``context`` (all keys optional):

* ``"params"``: ``{name: W}`` parameter values (weight-decay hypotheses);
* ``"weight_decay"``: lambda, a float or ``{name: float}``; the reference is
  assumed to contain the term ``lambda * W``;
* ``"per_sample"``: ``{name: array (N, *shape)}`` per-sample contributions to
  the gradient (e.g. bias rows), to recognise a single sample or the mean;
* ``"alternatives"``: ``{code: {name: array}}`` gradients the caller computed
  under a specific mistake (e.g. ``sigma'(a)`` instead of ``sigma'(z)``);
* ``"alternative_messages"``: ``{code: sentence}`` for those;
* ``"biases"``: names to treat as biases (default: the 1-D parameters);
* ``"layout"``: ``"out_in"`` (default; rows are output units, columns inputs)
  or ``"in_out"``; used to name rows and columns in ``partial``.

Matching is ``||got - candidate|| <= rtol * max(||got||, ||candidate||)``
(2-norms) with ``rtol`` 1e-6 in float64 and 1e-4 when either array is float32.

>>> import numpy as np
>>> e = {"W": np.array([[1.0, 2.0], [3.0, 4.0]])}
>>> [d.code for d in diagnose(e, {"W": e["W"].T})["W"]]
['transposed']
>>> diagnose(e, {"W": e["W"] / 8}, batch_size=8)["W"][0].message
'W: gradient is the reference divided by N=8 (x1/N): mean versus sum over the batch'
>>> diagnose(e, {"W": e["W"].copy()})
{}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["HYPOTHESES", "Case", "Diagnosis", "Hypothesis", "diagnose", "hypothesis"]


@dataclass(frozen=True)
class Diagnosis:
    """One named finding: ``code`` (machine id), ``message`` (one sentence)."""

    code: str
    message: str
    detail: dict = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {"code": self.code, "message": self.message,
                "detail": {k: _plain(v) for k, v in self.detail.items()}}


def _plain(v: Any) -> Any:
    """Numpy scalars/arrays/tuples to plain Python for JSON."""
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    return v


@dataclass
class Case:
    """Everything a hypothesis test may look at, for one parameter."""

    name: str
    e: np.ndarray
    g: np.ndarray
    expected: dict[str, np.ndarray]
    got: dict[str, np.ndarray]
    batch_size: int | None
    context: dict
    rtol: float

    @property
    def same_shape(self) -> bool:
        """True when got has the reference's shape."""
        return self.g.shape == self.e.shape

    def close(self, x: np.ndarray, y: np.ndarray | None = None) -> bool:
        """``x ~ y`` (default y = got) in relative 2-norm."""
        y = self.g if y is None else y
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if x.shape != y.shape or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            return False
        scale = max(float(np.linalg.norm(x)), float(np.linalg.norm(y)))
        return float(np.linalg.norm(x - y)) <= self.rtol * scale + 1e-300

    def fit(self, x: np.ndarray) -> float | None:
        """Least-squares c with got ~ c x, or None if no constant fits."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape != self.g.shape:
            return None
        xx = float(np.vdot(x, x))
        if xx == 0.0:
            return None
        c = float(np.vdot(self.g, x)) / xx
        return c if c != 0.0 and self.close(c * x) else None

    def label(self, axis: int) -> str:
        """What rows (axis 0) or columns (axis 1) stand for."""
        out_in = self.context.get("layout", "out_in") == "out_in"
        return ("unit" if out_in else "input") if axis == 0 else ("input" if out_in else "unit")


Test = Callable[[Case], "dict | list[dict] | None"]


@dataclass(frozen=True)
class Hypothesis:
    """A row of the table: code, test, message template."""

    code: str
    test: Test
    message: str
    final: bool = False
    explains_all: bool = True


HYPOTHESES: list[Hypothesis] = []


def hypothesis(code: str, message: str, *, final: bool = False, explains_all: bool = True):
    """Decorator appending a test function to :data:`HYPOTHESES`."""

    def register(test: Test) -> Test:
        HYPOTHESES.append(Hypothesis(code, test, message, final, explains_all))
        return test

    return register


def _isclose(c: float, k: float, tol: float) -> bool:
    """Relative closeness of two scalars."""
    return abs(c - k) <= tol * max(abs(k), 1e-300)


def _idx(ix: Any) -> str:
    """An index for humans: 3 or (1, 2)."""
    return str(int(ix[0])) if len(ix) == 1 else str(tuple(int(i) for i in ix))


# --------------------------------------------------------------------------- the table


@hypothesis("nan_inf", "{name}: {what}", final=True)
def _nan_inf(c: Case):
    """NaN/inf in got (or in the reference)."""
    if not np.all(np.isfinite(c.e)):
        return {"what": "the reference gradient has NaN/inf entries; cannot compare"}
    if np.all(np.isfinite(c.g)):
        return None
    nn, ni = int(np.isnan(c.g).sum()), int(np.isinf(c.g).sum())
    first = np.argwhere(~np.isfinite(c.g))[0]
    return {"what": f"gradient has {nn} NaN and {ni} inf entries (first at index"
                    f" {_idx(first)}): overflow, 0/0 or log of a non-positive number",
            "n_nan": nn, "n_inf": ni, "first": tuple(int(i) for i in first)}


@hypothesis("zero", "{name}: gradient is identically zero (no backward path, or an"
                    " overwritten/never-filled buffer)", final=True)
def _zero(c: Case):
    """got == 0 while the reference is not."""
    return {} if c.same_shape and not np.any(c.g) and np.any(c.e) else None


_ALT_MESSAGES = {
    "wrong_point": "derivative evaluated at the wrong point (e.g. sigma'(a) instead of"
                   " sigma'(z))",
    "wrong_activation_derivative": "derivative of a different activation used (e.g. tanh'"
                                   " for a sigmoid)",
}


@hypothesis("alternative", "{name}: {text}")
def _alternatives(c: Case):
    """got equals a caller-computed gradient under a specific mistake."""
    alts = c.context.get("alternatives") or {}
    msgs = c.context.get("alternative_messages") or {}
    out = []
    for code, grads in alts.items():
        cand = grads.get(c.name) if isinstance(grads, dict) else None
        if cand is None:
            continue
        cand = np.asarray(cand, dtype=np.float64)
        if c.close(cand) and not c.close(cand, c.e):
            text = msgs.get(code) or _ALT_MESSAGES.get(code) or f"matches the '{code}' variant"
            out.append({"code": code, "text": text})
    return out or None


@hypothesis("transposed", "{name}: gradient is transposed{how}")
def _transposed(c: Case):
    """got == c * expected.T (c = 1 usually)."""
    if c.e.ndim != 2 or c.g.shape != c.e.T.shape:
        return None
    k = c.fit(c.e.T)
    if k is None or c.close(c.e.T, c.e):
        return None
    how = "" if _isclose(k, 1, 1e-3) else (
        " and sign-flipped" if _isclose(k, -1, 1e-3) else f" and scaled by {k:.6g}")
    if c.g.shape != c.e.shape:
        how += f" (shape {c.g.shape}, expected {c.e.shape})"
    else:
        how += " (rows and columns swapped)"
    return {"how": how, "factor": k}


@hypothesis("sign_flipped", "{name}: gradient has the wrong sign (got = -expected): e.g."
                            " (t - y) instead of (y - t), or ascent instead of descent")
def _sign(c: Case):
    """got == -expected."""
    return {} if c.close(-c.e) else None


@hypothesis("swapped", "{name}: got the gradient of {other}{how}: gradient of another"
                       " layer swapped in")
def _swapped(c: Case):
    """got[p] == expected[q] for another parameter q."""
    out = []
    for q, eq in c.expected.items():
        if q == c.name:
            continue
        eq = np.asarray(eq, dtype=np.float64)
        if eq.shape == c.g.shape and c.close(eq) and not c.close(eq, c.e):
            out.append({"other": q, "how": ""})
        elif eq.ndim == 2 and eq.T.shape == c.g.shape and c.close(eq.T) \
                and not c.close(eq.T, c.e):
            out.append({"other": q, "how": " (transposed)"})
    return out or None


def _is_bias(c: Case) -> bool:
    """Whether the parameter is a bias (context['biases'] or 1-D)."""
    biases = c.context.get("biases")
    return c.name in biases if biases is not None else c.e.ndim == 1


def _batch_wide(c: Case, factor: float) -> bool:
    """True if every other failing parameter is also got = factor * expected."""
    others = [q for q in c.expected if q != c.name and q in c.got]
    sub = Case(c.name, c.e, c.g, c.expected, c.got, c.batch_size, c.context, c.rtol)
    seen = False
    for q in others:
        eq = np.asarray(c.expected[q], np.float64)
        gq = np.asarray(c.got[q], np.float64)
        if gq.shape != eq.shape or sub.close(gq, eq):
            continue
        if not sub.close(factor * eq, gq):
            return False
        seen = True
    return seen


@hypothesis("bias_not_summed", "{name}: bias gradient {how}")
def _bias(c: Case):
    """Bias gradient = one sample's row, the mean, or unsummed rows."""
    ps = (c.context.get("per_sample") or {}).get(c.name)
    if ps is not None:
        ps = np.asarray(ps, dtype=np.float64)
        if ps.shape[1:] == c.e.shape and c.same_shape:
            for i in range(ps.shape[0]):
                if c.close(ps[i]) and not c.close(ps[i], c.e):
                    return {"how": f"is the contribution of sample {i} only, not the sum"
                                   f" over the batch of {ps.shape[0]}", "sample": i}
            if ps.shape[0] > 1 and c.close(ps.mean(axis=0)) \
                    and not _batch_wide(c, 1.0 / ps.shape[0]):
                return {"how": f"is the mean instead of the sum over the batch"
                               f" (N={ps.shape[0]})", "sample": None}
    if c.g.ndim == c.e.ndim + 1 and c.g.shape[1:] == c.e.shape and c.close(c.g.sum(0), c.e):
        return {"how": f"is not summed over the batch: per-sample rows of shape {c.g.shape}"
                       " returned"}
    n = c.batch_size or (ps.shape[0] if ps is not None else None)
    if n and n > 1 and _is_bias(c) and c.same_shape and c.close(c.e / n) \
            and not _batch_wide(c, 1.0 / n):
        return {"how": f"is the mean instead of the sum over the batch (x1/N, N={n})"}
    return None


@hypothesis("weight_decay", "{name}: {how}")
def _weight_decay(c: Case):
    """got - expected == k W for the parameter values W."""
    w = (c.context.get("params") or {}).get(c.name)
    if w is None or not c.same_shape:
        return None
    w = np.asarray(w, dtype=np.float64)
    if w.shape != c.e.shape or not np.any(w):
        return None
    d = c.g - c.e
    k = float(np.vdot(d, w)) / float(np.vdot(w, w))
    scale = max(float(np.linalg.norm(c.g)), float(np.linalg.norm(c.e)))
    if abs(k) * float(np.linalg.norm(w)) <= c.rtol * scale:
        return None
    if float(np.linalg.norm(d - k * w)) > c.rtol * scale:
        return None
    lam = c.context.get("weight_decay")
    if isinstance(lam, dict):
        lam = lam.get(c.name)
    ktol = 1e-2 + 10 * c.rtol * scale / (abs(k) * float(np.linalg.norm(w)))
    if lam:
        if _isclose(k, -lam, ktol):
            return {"code": "weight_decay_missing",
                    "how": f"weight decay term lambda*W (lambda={lam:g}) is missing", "k": k}
        if _isclose(k, lam, ktol):
            return {"code": "weight_decay_extra",
                    "how": f"weight decay term lambda*W (lambda={lam:g}) is counted twice",
                    "k": k}
        return {"code": "weight_decay_wrong",
                "how": f"weight decay coefficient is {lam + k:.6g} instead of lambda={lam:g}"
                       " (e.g. lambda vs 2*lambda from (lambda/2)||W||^2 vs lambda||W||^2)",
                "k": k}
    if k < 0:
        return {"code": "weight_decay_missing",
                "how": f"a weight decay term {-k:.6g}*W is missing", "k": k}
    return {"code": "weight_decay_extra",
            "how": f"an extra weight decay term {k:.6g}*W is added (the loss has none)",
            "k": k}


@hypothesis("scaled", "{name}: the data term is {what}; the weight decay term lambda*W is"
                      " right")
def _data_scaled(c: Case):
    """got - lambda W == k (expected - lambda W): the data term alone scaled (x N, x 1/N, ...)."""
    w = (c.context.get("params") or {}).get(c.name)
    lam = c.context.get("weight_decay")
    if isinstance(lam, dict):
        lam = lam.get(c.name)
    if w is None or not lam or not c.same_shape:
        return None
    w = np.asarray(w, dtype=np.float64)
    if w.shape != c.e.shape or w.size < 2:
        return None
    data_e, data_g = c.e - lam * w, c.g - lam * w
    sub = Case(c.name, data_e, data_g, {}, {}, c.batch_size, c.context, c.rtol)
    k = sub.fit(data_e)
    if k is None or _isclose(k, 1, 10 * c.rtol):
        return None
    what = "sign-flipped" if _isclose(k, -1, 1e-3) else \
        _factor_name(k, c.batch_size, max(1e-3, 10 * c.rtol))
    return {"what": what, "factor": k}


def _factor_name(k: float, n: int | None, tol: float) -> str:
    """Human name of a scale factor."""
    if _isclose(k, 2, tol):
        return ("twice the reference (x2): e.g. the 1/2 of (1/2)(y - t)^2 dropped, or a term"
                " counted twice")
    if _isclose(k, 0.5, tol):
        return "half the reference (x1/2): e.g. a spurious factor 1/2"
    if n and n > 1 and _isclose(k, 1.0 / n, tol):
        return f"the reference divided by N={n} (x1/N): mean versus sum over the batch"
    if n and n > 1 and _isclose(k, float(n), tol):
        return f"N={n} times the reference (xN): sum versus mean over the batch"
    if _isclose(k, -2, tol) or _isclose(k, -0.5, tol):
        return f"{k:g} times the reference: wrong sign and a factor {abs(k):g}"
    return f"a constant {k:.6g} times the reference (least-squares fit; consistent ratio)"


@hypothesis("scaled", "{name}: gradient is {what}")
def _scaled(c: Case):
    """got == k * expected with a constant k != +-1."""
    k = c.fit(c.e)
    if k is None or _isclose(k, 1, 10 * c.rtol) or _isclose(k, -1, 10 * c.rtol):
        return None
    return {"what": _factor_name(k, c.batch_size, max(1e-3, 10 * c.rtol)), "factor": k}


@hypothesis("partial", "{name}: {what}", explains_all=False)
def _partial(c: Case):
    """Only some rows/columns/entries differ; name them."""
    if not c.same_shape or c.e.size < 2:
        return None
    tol = c.rtol * max(float(np.max(np.abs(c.e))), float(np.max(np.abs(c.g))))
    bad = np.abs(c.g - c.e) > tol
    if bad.all() or not bad.any():
        return None
    idx = np.argwhere(bad)
    if c.e.ndim == 1:
        ents = [int(i) for i in idx[:, 0]]
        shown = ", ".join(map(str, ents[:8])) + (", ..." if len(ents) > 8 else "")
        what = (f"only entr{'y' if len(ents) == 1 else 'ies'} {shown} differ"
                f"{'s' if len(ents) == 1 else ''} ({c.label(0)}{'s' if len(ents) > 1 else ''}"
                f" {shown})")
        info = {"entries": ents}
    else:
        b2 = bad.reshape(bad.shape[0], -1)
        rows = sorted({int(i) for i in np.nonzero(b2.any(axis=1))[0]})
        cols = sorted({int(j) for j in np.nonzero(b2.any(axis=0))[0]})
        nr, nc = b2.shape
        full = b2.all(axis=1).any() or b2.all(axis=0).any()
        if len(idx) <= 4 and not full:
            ents = [_idx(i) for i in idx]
            what = (f"only entr{'y' if len(ents) == 1 else 'ies'} {', '.join(ents)}"
                    f" differ{'s' if len(ents) == 1 else ''}")
            info = {"entries": [tuple(int(j) for j in i) for i in idx]}
        elif len(rows) < nr and (len(rows) <= len(cols) or len(cols) == nc):
            what, info = _lines("row", rows, c.label(0)), {"rows": rows}
        elif len(cols) < nc:
            what, info = _lines("column", cols, c.label(1)), {"columns": cols}
        else:
            ents = [_idx(i) for i in idx[:8]]
            what = f"only entries {', '.join(ents)}{', ...' if len(idx) > 8 else ''} differ"
            info = {"entries": [tuple(int(j) for j in i) for i in idx]}
    eb, gb = c.e[bad], c.g[bad]
    sub = Case(c.name, eb, gb, {}, {}, c.batch_size, c.context, max(c.rtol, 1e-6))
    k = sub.fit(eb) if np.any(eb) else None
    if not np.any(gb):
        what += "; there it is zero"
    elif eb.size == 1:
        what += f"; got {gb[0]:.6g} instead of {eb[0]:.6g}"
    elif k is not None:
        what += "; there it is sign-flipped" if _isclose(k, -1, 1e-3) else \
            f"; there it is scaled by {k:.6g}"
    return {"what": what, **info}


def _lines(kind: str, ids: list[int], label: str) -> str:
    """'only row 2 differs (unit 2)' / 'only rows 1, 3 differ (units 1, 3)'."""
    shown = ", ".join(map(str, ids[:8])) + (", ..." if len(ids) > 8 else "")
    if len(ids) == 1:
        return f"only {kind} {shown} differs ({label} {shown})"
    return f"only {kind}s {shown} differ ({label}s {shown})"


@hypothesis("shape", "{name}: gradient has shape {got}, expected {exp}{how}",
            explains_all=False)
def _shape(c: Case):
    """Shape mismatch not explained otherwise."""
    if c.same_shape:
        return None
    how = ""
    if c.g.size == c.e.size and c.close(c.e.reshape(c.g.shape)):
        how = " (same values, wrong shape: reshape it)"
    return {"got": c.g.shape, "exp": c.e.shape, "how": how}


@hypothesis("unknown", "{name}: no known pattern; relative error"
                       " ||got - expected|| / ||expected|| = {rel:.3g}", explains_all=False)
def _unknown(c: Case):
    """Fallback: report the relative error."""
    if not c.same_shape:
        return None
    den = float(np.linalg.norm(c.e)) or 1.0
    return {"rel": float(np.linalg.norm(c.g - c.e)) / den}


# --------------------------------------------------------------------------- driver


def diagnose(
    expected: dict[str, np.ndarray],
    got: dict[str, np.ndarray],
    *,
    batch_size: int | None = None,
    context: dict | None = None,
    rtol: float | None = None,
) -> dict[str, list[Diagnosis]]:
    """Diagnoses for each failing parameter, strongest first (see module docstring).

    >>> import numpy as np
    >>> e = {"W1": np.array([[1.0, -2.0], [0.5, 3.0]]), "b1": np.array([0.25, -1.0])}
    >>> g = {"W1": -e["W1"], "b1": e["b1"]}
    >>> out = diagnose(e, g)
    >>> list(out), out["W1"][0].code
    (['W1'], 'sign_flipped')
    >>> g = {"W1": e["W1"], "b1": np.array([0.25, 7.0])}
    >>> diagnose(e, g)["b1"][0].message
    'b1: only entry 1 differs (unit 1); got 7 instead of -1'
    """
    ctx = dict(context or {})
    exp = {k: np.asarray(v) for k, v in expected.items()}
    gt = {k: np.asarray(v) for k, v in got.items()}
    low = any(a.dtype == np.float32 or a.dtype == np.float16 for a in [*exp.values(),
                                                                       *gt.values()])
    rt = rtol if rtol is not None else (1e-4 if low else 1e-6)
    e64 = {k: v.astype(np.float64) for k, v in exp.items()}
    g64 = {k: v.astype(np.float64) for k, v in gt.items()}
    out: dict[str, list[Diagnosis]] = {}
    for name, e in e64.items():
        if name not in g64:
            out[name] = [Diagnosis("missing", f"{name}: no gradient returned for this parameter")]
            continue
        case = Case(name, e, g64[name], e64, g64, batch_size, ctx, rt)
        if case.same_shape and case.close(case.e) and np.all(np.isfinite(case.g)):
            continue
        found: list[Diagnosis] = []
        for row in HYPOTHESES:
            if not row.explains_all and found:
                continue
            res = row.test(case)
            if res is None:
                continue
            for r in (res if isinstance(res, list) else [res]):
                fields = {"name": name, **r}
                code = fields.pop("code", row.code)
                message = fields.pop("message", None) or row.message.format(**fields)
                detail = {k: v for k, v in fields.items() if k not in ("name", "how", "what",
                                                                      "text")}
                found.append(Diagnosis(code, message, detail))
            if row.final:
                break
        out[name] = found
    return out
