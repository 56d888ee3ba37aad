"""Built-in training tasks for ``symgrad train SPEC --task NAME``.

The tasks reproduce the problems of Rumelhart, Hinton & Williams, "Learning
representations by back-propagating errors" (Nature 323, 1986) and of PDP
volume 1, chapter 8 ("Learning internal representations by error
propagation"), plus one modern data set for comparison.

Contract
--------
``load_task(name, *, seed=0)`` returns a :class:`Task`, a frozen record holding

* ``X`` -- float64 inputs, shape ``(N, n_inputs)``;
* ``T`` -- float64 targets, shape ``(N, n_outputs)``, values in ``[0, 1]``;
* ``X_test``/``T_test`` -- an optional held-out set (``None`` when absent);
* ``input_labels``/``output_labels`` -- optional tuples of strings;
* ``classes`` -- whether argmax accuracy is meaningful (one-hot targets);
* ``tolerance`` -- the 1986 success criterion: every output ``y`` of every
  pattern must satisfy ``|y - t| < tolerance``.  ``0.5`` means "on the right
  side of 0.5"; ``0.2`` means "above 0.8 where the target is 1 and below 0.2
  where it is 0".

All arrays are read-only.  ``Task.solved(Y)`` applies the criterion to the
training set; ``Task.accuracy(Y, T)`` gives the fraction of patterns right
(argmax for ``classes`` tasks, the tolerance criterion otherwise).

Task names (one registry row each, see :data:`REGISTRY`):

``xor``             the 4 XOR patterns (2 inputs, 1 output).
``parity:N``        all ``2**N`` N-bit patterns; output 1 when the number of
                    ones is odd.
``encoder:K-H-K``   K one-hot patterns mapped to themselves (H only names the
                    bottleneck of the intended network).
``symmetry:N``      all ``2**N`` patterns (N even); output 1 when the pattern
                    is a mirror image about its centre (1986: N = 6).
``family-trees``    Hinton's two isomorphic family trees, 104 triples
                    (person1, relationship) -> {person2}; the seed holds out 4
                    triples as the test set (tolerance 0.2).
``digits[:F]``      scikit-learn's bundled 8x8 digits, scaled to [0, 1],
                    one-hot targets, stratified held-out fraction F (0.5).

A name ending in ``.npz`` is read with :func:`load_npz`.  Every problem with a
name or a file raises :class:`TaskError` (a ``ValueError``) with a one-line
message.
"""

from __future__ import annotations

import difflib
import math
import os
import pickle
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import numpy as np

from .errors import BadInput

__all__ = [
    "REGISTRY",
    "RELATIONSHIPS",
    "Task",
    "TaskError",
    "TaskSpec",
    "available_tasks",
    "family_tree_people",
    "family_tree_triples",
    "load_npz",
    "load_task",
    "save_npz",
]


class TaskError(BadInput):
    """A task name, task file or task array that cannot be used."""


# ---------------------------------------------------------------------------
# The Task record
# ---------------------------------------------------------------------------


def _as_matrix(name: str, a: object) -> np.ndarray:
    """Return ``a`` as a read-only float64 2-D array, or raise TaskError."""
    try:
        arr = np.array(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TaskError(f"array {name!r} is not numeric: {exc}") from None
    if arr.ndim != 2:
        raise TaskError(f"array {name!r} must be 2-D (patterns x units), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise TaskError(f"array {name!r} is empty, shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise TaskError(f"array {name!r} contains NaN or infinite values")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Task:
    """A training set (and optional held-out set) with its success criterion.

    >>> t = Task("and", X=[[0, 0], [0, 1], [1, 0], [1, 1]], T=[[0], [0], [0], [1]])
    >>> t.n_patterns, t.n_inputs, t.n_outputs, t.X.dtype
    (4, 2, 1, dtype('float64'))
    >>> t.solved([[0.1], [0.2], [0.3], [0.9]])
    True
    >>> t.accuracy([[0.1], [0.6], [0.3], [0.9]])
    0.75
    """

    name: str
    X: np.ndarray
    T: np.ndarray
    X_test: np.ndarray | None = None
    T_test: np.ndarray | None = None
    input_labels: tuple[str, ...] | None = None
    output_labels: tuple[str, ...] | None = None
    classes: bool = False
    tolerance: float = 0.5
    description: str = ""

    def __post_init__(self) -> None:
        """Validate and freeze the arrays (one-line TaskError on failure)."""
        put = object.__setattr__
        X = _as_matrix("X", self.X)
        T = _as_matrix("T", self.T)
        if X.shape[0] != T.shape[0]:
            raise TaskError(f"X has {X.shape[0]} patterns but T has {T.shape[0]}")
        put(self, "X", X)
        put(self, "T", T)
        if (self.X_test is None) != (self.T_test is None):
            raise TaskError("X_test and T_test must be given together")
        if self.X_test is not None:
            Xt = _as_matrix("X_test", self.X_test)
            Tt = _as_matrix("T_test", self.T_test)
            if Xt.shape[0] != Tt.shape[0]:
                raise TaskError(f"X_test has {Xt.shape[0]} patterns but T_test has {Tt.shape[0]}")
            if Xt.shape[1] != X.shape[1] or Tt.shape[1] != T.shape[1]:
                raise TaskError(
                    f"held-out arrays have {Xt.shape[1]} inputs/{Tt.shape[1]} outputs, "
                    f"training arrays {X.shape[1]}/{T.shape[1]}"
                )
            put(self, "X_test", Xt)
            put(self, "T_test", Tt)
        for field, width in (("input_labels", X.shape[1]), ("output_labels", T.shape[1])):
            labels = getattr(self, field)
            if labels is not None:
                labels = tuple(str(s) for s in labels)
                if len(labels) != width:
                    raise TaskError(f"{field} has {len(labels)} entries, expected {width}")
                put(self, field, labels)
        tol = float(self.tolerance)
        if not 0.0 < tol <= 1.0:
            raise TaskError(f"tolerance must lie in (0, 1], got {self.tolerance!r}")
        put(self, "tolerance", tol)
        put(self, "classes", bool(self.classes))

    @property
    def n_patterns(self) -> int:
        """Number of training patterns."""
        return int(self.X.shape[0])

    @property
    def n_inputs(self) -> int:
        """Number of input units."""
        return int(self.X.shape[1])

    @property
    def n_outputs(self) -> int:
        """Number of output units."""
        return int(self.T.shape[1])

    @property
    def has_test(self) -> bool:
        """Whether a held-out set is present."""
        return self.X_test is not None

    def _pair(self, Y: object, T: object | None) -> tuple[np.ndarray, np.ndarray]:
        """Return (Y, T) as float arrays of equal shape; T defaults to self.T."""
        Tm = self.T if T is None else np.asarray(T, dtype=np.float64)
        Ym = np.asarray(Y, dtype=np.float64)
        if Ym.shape != Tm.shape:
            raise TaskError(f"outputs have shape {Ym.shape}, targets {Tm.shape}")
        return Ym, Tm

    def correct(self, Y: object, T: object | None = None) -> np.ndarray:
        """Boolean per pattern: every output within ``tolerance`` of its target.

        >>> load_task("xor").correct([[0.4], [0.6], [0.6], [0.1]]).tolist()
        [True, True, True, True]
        """
        Ym, Tm = self._pair(Y, T)
        return np.all(np.abs(Ym - Tm) < self.tolerance, axis=1)

    def solved(self, Y: object, T: object | None = None) -> bool:
        """True when every output of every pattern is within ``tolerance``.

        ``T`` defaults to the training targets.

        >>> load_task("xor").solved([[0.4], [0.6], [0.6], [0.5]])
        False
        """
        return bool(np.all(self.correct(Y, T)))

    def accuracy(self, Y: object, T: object | None = None) -> float:
        """Fraction of patterns right: argmax match if ``classes``, else tolerance.

        ``T`` defaults to the training targets.

        >>> load_task("encoder:4-2-4").accuracy(np.eye(4)[[0, 1, 2, 0]] * 0.7)
        0.75
        """
        Ym, Tm = self._pair(Y, T)
        if self.classes:
            return float(np.mean(np.argmax(Ym, axis=1) == np.argmax(Tm, axis=1)))
        return float(np.mean(self.correct(Ym, Tm)))


# ---------------------------------------------------------------------------
# Small synthetic tasks
# ---------------------------------------------------------------------------


def _bits(n: int) -> np.ndarray:
    """All 2**n binary patterns of length n in counting order (first bit most significant)."""
    return np.array(list(product((0.0, 1.0), repeat=n)), dtype=np.float64).reshape(2**n, n)


def _int_arg(name: str, text: str, lo: int, hi: int) -> int:
    """Parse an integer argument of a task name and check lo <= value <= hi."""
    try:
        value = int(text)
    except ValueError:
        raise TaskError(f"task {name!r}: expected an integer, got {text!r}") from None
    if not lo <= value <= hi:
        raise TaskError(f"task {name!r}: {value} is out of range [{lo}, {hi}]")
    return value


def _xor(name: str, arg: str | None, seed: int) -> Task:
    """XOR: 4 patterns, 2 inputs, 1 output."""
    if arg is not None:
        raise TaskError(f"task 'xor' takes no argument, got {name!r}")
    X = _bits(2)
    T = (X.sum(axis=1) % 2)[:, None]
    return Task("xor", X, T, input_labels=("x1", "x2"), output_labels=("xor",),
                description="exclusive-or of two bits")


def _parity(name: str, arg: str | None, seed: int) -> Task:
    """N-bit parity over all 2**N patterns."""
    if arg is None:
        raise TaskError("task 'parity' needs a size, e.g. 'parity:4'")
    n = _int_arg(name, arg, 1, 20)
    X = _bits(n)
    T = (X.sum(axis=1) % 2)[:, None]
    return Task(f"parity:{n}", X, T, input_labels=tuple(f"x{i + 1}" for i in range(n)),
                output_labels=("odd",), description=f"{n}-bit parity (1 when the count of ones is odd)")


def _encoder(name: str, arg: str | None, seed: int) -> Task:
    """K one-hot patterns mapped to themselves."""
    if arg is None:
        raise TaskError("task 'encoder' needs a shape, e.g. 'encoder:8-3-8'")
    parts = arg.split("-")
    if len(parts) != 3:
        raise TaskError(f"task {name!r}: expected 'encoder:K-H-K', e.g. 'encoder:8-3-8'")
    k = _int_arg(name, parts[0], 2, 4096)
    h = _int_arg(name, parts[1], 1, 4096)
    k2 = _int_arg(name, parts[2], 2, 4096)
    if k != k2:
        raise TaskError(f"task {name!r}: input and output sizes differ ({k} vs {k2})")
    X = np.eye(k)
    labels = tuple(f"p{i + 1}" for i in range(k))
    return Task(f"encoder:{k}-{h}-{k}", X, X.copy(), input_labels=labels, output_labels=labels,
                classes=True, description=f"{k} one-hot patterns through a {h}-unit bottleneck")


def _symmetry(name: str, arg: str | None, seed: int) -> Task:
    """All 2**N patterns; output 1 when the pattern is a mirror image about its centre."""
    if arg is None:
        raise TaskError("task 'symmetry' needs an even size, e.g. 'symmetry:6'")
    n = _int_arg(name, arg, 2, 20)
    if n % 2:
        raise TaskError(f"task {name!r}: the size must be even, got {n}")
    X = _bits(n)
    T = np.all(X == X[:, ::-1], axis=1).astype(np.float64)[:, None]
    return Task(f"symmetry:{n}", X, T, input_labels=tuple(f"x{i + 1}" for i in range(n)),
                output_labels=("symmetric",),
                description=f"mirror symmetry of {n} bits about the centre")


# ---------------------------------------------------------------------------
# Hinton's family trees
# ---------------------------------------------------------------------------
#
# Each tree is encoded as its structure only: people with their sex, the
# marriages (husband, wife), and each couple's children.  Every relationship
# is then derived by rule (see _relatives), never listed by hand.

#: The 12 relationships in Hinton's (1986) order.
RELATIONSHIPS: tuple[str, ...] = (
    "father", "mother", "husband", "wife", "son", "daughter",
    "uncle", "aunt", "brother", "sister", "nephew", "niece",
)

_ENGLISH = {
    "people": (  # (name, sex) in the order of the 12 person units
        ("Christopher", "m"), ("Penelope", "f"), ("Andrew", "m"), ("Christine", "f"),
        ("Margaret", "f"), ("Arthur", "m"), ("Victoria", "f"), ("James", "m"),
        ("Jennifer", "f"), ("Charles", "m"), ("Colin", "m"), ("Charlotte", "f"),
    ),
    "marriages": (  # (husband, wife)
        ("Christopher", "Penelope"), ("Andrew", "Christine"), ("Arthur", "Margaret"),
        ("James", "Victoria"), ("Charles", "Jennifer"),
    ),
    "children": (  # ((father, mother), children)
        (("Christopher", "Penelope"), ("Arthur", "Victoria")),
        (("Andrew", "Christine"), ("James", "Jennifer")),
        (("James", "Victoria"), ("Colin", "Charlotte")),
    ),
}

_ITALIAN = {
    "people": (
        ("Roberto", "m"), ("Maria", "f"), ("Pierro", "m"), ("Francesca", "f"),
        ("Gina", "f"), ("Emilio", "m"), ("Lucia", "f"), ("Marco", "m"),
        ("Angela", "f"), ("Tomaso", "m"), ("Alfonso", "m"), ("Sophia", "f"),
    ),
    "marriages": (
        ("Roberto", "Maria"), ("Pierro", "Francesca"), ("Emilio", "Gina"),
        ("Marco", "Lucia"), ("Tomaso", "Angela"),
    ),
    "children": (
        (("Roberto", "Maria"), ("Emilio", "Lucia")),
        (("Pierro", "Francesca"), ("Marco", "Angela")),
        (("Marco", "Lucia"), ("Alfonso", "Sophia")),
    ),
}

_TREES = (_ENGLISH, _ITALIAN)


def family_tree_people() -> tuple[str, ...]:
    """The 24 people in input/output unit order: 12 English, then 12 Italian.

    >>> p = family_tree_people()
    >>> len(p), p[0], p[12]
    (24, 'Christopher', 'Roberto')
    """
    return tuple(name for tree in _TREES for name, _ in tree["people"])


def _relatives(tree: dict) -> dict[tuple[str, str], frozenset[str]]:
    """Derive every (person, relationship) -> answers of one tree by rule.

    Rules (as in Hinton 1986; "male"/"female" select by sex):
      father/mother     = male/female parents
      husband/wife      = the spouse (male/female)
      son/daughter      = male/female children
      brother/sister    = male/female siblings (sharing a parent, excluding self)
      uncle/aunt        = male/female among the parents' siblings and the
                          spouses of the parents' siblings (so "uncle" is a
                          parent's brother or the husband of a parent's sister)
      nephew/niece      = male/female children of one's siblings and of one's
                          spouse's siblings
    Pairs with no answer are omitted.
    """
    sex = dict(tree["people"])
    spouse: dict[str, str] = {}
    for h, w in tree["marriages"]:
        if sex[h] != "m" or sex[w] != "f":
            raise AssertionError(f"marriage {h}={w} must be (husband, wife)")
        spouse[h], spouse[w] = w, h
    parents: dict[str, set[str]] = {p: set() for p in sex}
    children: dict[str, set[str]] = {p: set() for p in sex}
    for couple, kids in tree["children"]:
        for parent in couple:
            for kid in kids:
                parents[kid].add(parent)
                children[parent].add(kid)

    def spouses(people: set[str]) -> set[str]:
        return {spouse[p] for p in people if p in spouse}

    def siblings(p: str) -> set[str]:
        return {s for par in parents[p] for s in children[par]} - {p}

    def kin(p: str, rel: str) -> set[str]:
        if rel in ("father", "mother"):
            base = parents[p]
        elif rel in ("husband", "wife"):
            base = spouses({p})
        elif rel in ("son", "daughter"):
            base = children[p]
        elif rel in ("brother", "sister"):
            base = siblings(p)
        elif rel in ("uncle", "aunt"):
            parent_sibs = {s for par in parents[p] for s in siblings(par)}
            base = parent_sibs | spouses(parent_sibs)
        else:  # nephew, niece
            sibs = siblings(p) | {s for sp in spouses({p}) for s in siblings(sp)}
            base = {c for s in sibs for c in children[s]}
        want = "m" if rel in ("father", "husband", "son", "brother", "uncle", "nephew") else "f"
        return {q for q in base if sex[q] == want}

    out: dict[tuple[str, str], frozenset[str]] = {}
    for p, _ in tree["people"]:
        for rel in RELATIONSHIPS:
            answers = kin(p, rel)
            if answers:
                out[(p, rel)] = frozenset(answers)
    return out


def family_tree_triples() -> list[tuple[str, str, frozenset[str]]]:
    """All (person1, relationship, {person2, ...}) triples of both trees.

    Ordered by tree, then person (unit order), then relationship (unit order).

    >>> triples = family_tree_triples()
    >>> len(triples)
    104
    >>> sorted(dict(((p, r), a) for p, r, a in triples)[("Colin", "aunt")])
    ['Jennifer', 'Margaret']
    """
    triples = []
    for tree in _TREES:
        rel = _relatives(tree)
        for p, _ in tree["people"]:
            for r in RELATIONSHIPS:
                if (p, r) in rel:
                    triples.append((p, r, rel[(p, r)]))
    return triples


def _family_trees(name: str, arg: str | None, seed: int) -> Task:
    """Encode the 104 triples; hold out 4 chosen by seed as the test set."""
    if arg is not None:
        raise TaskError(f"task 'family-trees' takes no argument, got {name!r}")
    people = family_tree_people()
    pidx = {p: i for i, p in enumerate(people)}
    triples = family_tree_triples()
    n_p, n_r = len(people), len(RELATIONSHIPS)
    X = np.zeros((len(triples), n_p + n_r))
    T = np.zeros((len(triples), n_p))
    for row, (p, r, answers) in enumerate(triples):
        X[row, pidx[p]] = 1.0
        X[row, n_p + RELATIONSHIPS.index(r)] = 1.0
        T[row, [pidx[a] for a in answers]] = 1.0
    rng = np.random.default_rng(seed)
    test = np.sort(rng.choice(len(triples), size=4, replace=False))
    train = np.setdiff1d(np.arange(len(triples)), test)
    return Task(
        "family-trees", X[train], T[train], X_test=X[test], T_test=T[test],
        input_labels=people + RELATIONSHIPS, output_labels=people, tolerance=0.2,
        description="Hinton's English and Italian family trees: 100 training and 4 held-out triples",
    )


# ---------------------------------------------------------------------------
# scikit-learn digits
# ---------------------------------------------------------------------------


def _stratified_split(labels: np.ndarray, test_fraction: float, seed: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) index arrays with each class split in the same proportion."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = round(test_fraction * len(idx))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _digits(name: str, arg: str | None, seed: int) -> Task:
    """sklearn 8x8 digits in [0, 1], one-hot targets, stratified held-out split."""
    frac = 0.5
    if arg is not None:
        try:
            frac = float(arg)
        except ValueError:
            raise TaskError(f"task {name!r}: expected a test fraction, e.g. 'digits:0.5'") from None
        if not 0.0 < frac < 1.0:
            raise TaskError(f"task {name!r}: the test fraction must lie in (0, 1), got {frac}")
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise TaskError(
            "task 'digits' needs scikit-learn: pip install symgrad[digits]"
        ) from None
    data = load_digits()
    X = np.asarray(data.data, dtype=np.float64) / 16.0
    y = np.asarray(data.target, dtype=np.int64)
    T = np.eye(10)[y]
    train, test = _stratified_split(y, frac, seed)
    return Task(
        "digits" if arg is None else f"digits:{frac:g}", X[train], T[train],
        X_test=X[test], T_test=T[test],
        input_labels=tuple(f"px{r}{c}" for r in range(8) for c in range(8)),
        output_labels=tuple(str(d) for d in range(10)), classes=True,
        description=f"scikit-learn 8x8 digits, {len(train)} training / {len(test)} held-out",
    )


# ---------------------------------------------------------------------------
# Registry and loaders
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSpec:
    """One registry row: the name pattern, an example, a summary and its loader."""

    pattern: str
    example: str
    summary: str
    loader: Callable[[str, str | None, int], Task]


#: One row per task family, keyed by the part of the name before ``:``.
REGISTRY: dict[str, TaskSpec] = {
    "xor": TaskSpec("xor", "xor", "XOR, 4 patterns", _xor),
    "parity": TaskSpec("parity:N", "parity:4", "N-bit parity, all 2^N patterns", _parity),
    "encoder": TaskSpec("encoder:K-H-K", "encoder:8-3-8",
                        "K one-hot patterns mapped to themselves", _encoder),
    "symmetry": TaskSpec("symmetry:N", "symmetry:6",
                         "mirror symmetry of N bits (N even)", _symmetry),
    "family-trees": TaskSpec("family-trees", "family-trees",
                             "Hinton's family trees, 100 train + 4 held-out triples",
                             _family_trees),
    "digits": TaskSpec("digits[:F]", "digits",
                       "sklearn 8x8 digits, stratified held-out fraction F (0.5)", _digits),
}


def available_tasks() -> list[str]:
    """The name patterns of all built-in tasks, in registry order.

    >>> available_tasks()
    ['xor', 'parity:N', 'encoder:K-H-K', 'symmetry:N', 'family-trees', 'digits[:F]']
    """
    return [spec.pattern for spec in REGISTRY.values()]


def _unknown(name: str) -> TaskError:
    """A TaskError for an unknown task name, suggesting the nearest valid one."""
    candidates = [s.example for s in REGISTRY.values()] + list(REGISTRY)
    head = name.split(":", 1)[0].strip().lower()
    close = difflib.get_close_matches(name.lower(), candidates, n=1, cutoff=0.5)
    close = close or difflib.get_close_matches(head, list(REGISTRY), n=1, cutoff=0.5)
    hint = f"; did you mean {REGISTRY[close[0].split(':')[0]].example!r}?" if close else ""
    return TaskError(f"unknown task {name!r}{hint} (known: {', '.join(available_tasks())})")


def load_task(name: str, *, seed: int = 0) -> Task:
    """Build the task called ``name``; ``seed`` fixes any held-out split.

    >>> t = load_task("encoder:8-3-8")
    >>> t.X.shape, t.T.shape, t.classes
    ((8, 8), (8, 8), True)
    >>> load_task("parity:3").T.ravel().tolist()
    [0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    >>> load_task("xorr")
    Traceback (most recent call last):
    ...
    symgrad.tasks.TaskError: unknown task 'xorr'; did you mean 'xor'? (known: ...)
    """
    if not isinstance(name, str) or not name.strip():
        raise TaskError(f"task name must be a non-empty string, got {name!r}")
    name = name.strip()
    if name.lower().endswith(".npz"):
        return load_npz(name)
    head, sep, arg = name.partition(":")
    spec = REGISTRY.get(head.lower())
    if spec is None:
        raise _unknown(name)
    return spec.loader(name, arg if sep else None, int(seed))


_NPZ_OPTIONAL = ("X_test", "T_test", "input_labels", "output_labels", "classes", "tolerance")
_NPZ_DATA = ("X", "T", "X_test", "T_test")
MAX_NPZ_BYTES = 2 << 30      # the arrays of an .npz file unpack to at most 2 GiB
MAX_NPZ_MEMBERS = 1000


def _check_npz_archive(p: Path) -> None:
    """Refuse a file that is not a zip archive, or whose members would unpack too large.

    The sizes checked are those declared in the zip directory and in every
    ``.npy`` header (which ``np.load`` allocates before reading), so a zip
    bomb or a lying header is refused before anything is decompressed.
    """
    with open(p, "rb") as f:
        magic = f.read(6)
    if magic == b"\x93NUMPY":
        raise TaskError(f"{p.name}: not an .npz archive (a single array); use np.savez(X=..., T=...)")
    try:
        archive = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise TaskError(f"{p.name}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    with archive:
        members = archive.infolist()
        if len(members) > MAX_NPZ_MEMBERS:
            raise TaskError(f"{p.name}: {len(members):,} archive members; at most {MAX_NPZ_MEMBERS:,}")
        total = sum(member.file_size for member in members)
        if total > MAX_NPZ_BYTES:
            raise TaskError(f"{p.name}: the archive would unpack to {total:,} bytes; "
                            f"at most {MAX_NPZ_BYTES:,}")
        for member in members:
            if not member.filename.endswith(".npy"):
                continue
            name = member.filename[:-4]
            try:
                with archive.open(member) as fp:
                    version = np.lib.format.read_magic(fp)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
                    else:
                        raise ValueError(f"unsupported .npy format version {version}")
            except (ValueError, OSError, EOFError, RuntimeError, zipfile.BadZipFile) as exc:
                raise TaskError(f"{p.name}: array {name!r} is not readable "
                                f"({type(exc).__name__}: {exc})") from None
            if dtype.hasobject:
                raise TaskError(f"{p.name}: array {name!r} holds Python objects; only numeric "
                                "and string arrays are read (no pickles)")
            declared = math.prod(shape) * dtype.itemsize
            if declared > member.file_size:
                raise TaskError(f"{p.name}: array {name!r} declares shape {shape} "
                                f"({declared:,} bytes) but holds {member.file_size:,} bytes")


def _check_numeric(key: str, array: np.ndarray) -> None:
    """Refuse data arrays that are not bool, integer or float (complex, strings, ...)."""
    if array.dtype.kind not in "biuf":
        raise TaskError(f"array {key!r} is not numeric (dtype {array.dtype}); "
                        "expected bool, integer or float values")


def load_npz(path: str | os.PathLike, *, input_shape: Sequence[int] | None = None,
             n_classes: int | None = None, label_steps: int | None = None) -> Task:
    """Read a task from an ``.npz`` file with arrays ``X`` and ``T``.

    Optional arrays: ``X_test``/``T_test`` (together), ``input_labels``,
    ``output_labels`` (string arrays), ``classes`` (bool scalar; by default
    true when every row of ``T`` is one-hot with at least two outputs) and
    ``tolerance`` (scalar, default 0.5).  The task is named after the file.
    With ``input_shape`` (C, H, W) of an image network, ``X`` (and ``X_test``)
    may be (N, C, H, W) and is flattened, in C order, to (N, C*H*W).  Data
    arrays must be numeric and finite; an archive that would unpack to more
    than 2 GiB is refused before it is decompressed.  With ``n_classes`` K (a
    softmax output), integer class labels ``T`` (and ``T_test``) of shape (N,)
    in [0, K) become one-hot rows (N, K); with ``label_steps`` S (per-step
    outputs), labels (N, S) become rows (N, S*K).  A label out of range is refused.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> np.savez(d / "and.npz", X=[[0, 0], [0, 1], [1, 0], [1, 1]], T=[[0], [0], [0], [1]])
    >>> t = load_npz(d / "and.npz")
    >>> t.name, t.X.shape, t.classes, t.tolerance
    ('and', (4, 2), False, 0.5)
    >>> np.savez(d / "bad.npz", X=[[0, 0]])
    >>> load_npz(d / "bad.npz")
    Traceback (most recent call last):
    ...
    symgrad.tasks.TaskError: bad.npz: missing array 'T' (found: X)
    >>> np.savez(d / "img.npz", X=np.zeros((5, 1, 2, 2)), T=np.zeros((5, 1)))
    >>> load_npz(d / "img.npz", input_shape=(1, 2, 2)).X.shape
    (5, 4)
    >>> load_npz(d / "img.npz", input_shape=(2, 2, 1))
    Traceback (most recent call last):
    ...
    symgrad.tasks.TaskError: img.npz: array 'X' has shape (5, 1, 2, 2) but the network takes (N, 2, 2, 1)
    >>> np.savez(d / "labels.npz", X=np.zeros((3, 2)), T=[2, 0, 1])
    >>> load_npz(d / "labels.npz", n_classes=3).T.tolist()
    [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    >>> load_npz(d / "labels.npz", n_classes=2)
    Traceback (most recent call last):
    ...
    symgrad.tasks.TaskError: labels.npz: array 'T': class label 2 is out of range; labels are in [0, 2)
    """
    p = Path(path)
    if not p.is_file():
        raise TaskError(f"{p}: no such task file")
    _check_npz_archive(p)
    bad = (OSError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError)
    try:
        z = np.load(p, allow_pickle=False)
    except bad as exc:
        raise TaskError(f"{p.name}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise TaskError(f"{p.name}: not an .npz archive (a single array); use np.savez(X=..., T=...)")
    try:
        with z:
            arrays = {k: z[k] for k in z.files}
    except bad as exc:
        raise TaskError(f"{p.name}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    for key in ("X", "T"):
        if key not in arrays:
            found = ", ".join(sorted(arrays)) or "nothing"
            raise TaskError(f"{p.name}: missing array {key!r} (found: {found})")
    try:
        for key in _NPZ_DATA:
            if key in arrays:
                _check_numeric(key, arrays[key])
        if input_shape is not None:
            shape = tuple(int(n) for n in input_shape)
            for key in ("X", "X_test"):
                if key in arrays:
                    arrays[key] = _flatten_images(key, arrays[key], shape)
        if n_classes is not None:
            for key in ("T", "T_test"):
                if key in arrays:
                    arrays[key] = _one_hot(key, arrays[key], int(n_classes), label_steps)
    except TaskError as exc:
        raise TaskError(f"{p.name}: {exc}") from None
    kwargs: dict = {}
    try:
        for key in ("input_labels", "output_labels"):
            if key in arrays:
                kwargs[key] = tuple(str(s) for s in np.ravel(arrays[key]))
        if "tolerance" in arrays:
            kwargs["tolerance"] = float(np.asarray(arrays["tolerance"]).reshape(()))
        T = _as_matrix("T", arrays["T"])
        if "classes" in arrays:
            kwargs["classes"] = bool(np.asarray(arrays["classes"]).reshape(()))
        else:
            kwargs["classes"] = bool(
                T.shape[1] >= 2 and np.all((T == 0) | (T == 1)) and np.all(T.sum(axis=1) == 1)
            )
        return Task(p.stem, arrays["X"], T, X_test=arrays.get("X_test"),
                    T_test=arrays.get("T_test"), **kwargs)
    except TaskError as exc:
        raise TaskError(f"{p.name}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise TaskError(f"{p.name}: bad optional array ({exc})") from None


def _one_hot(key: str, array: np.ndarray, classes: int, steps: int | None) -> np.ndarray:
    """Integer class labels (N,) -- or (N, steps) -- as one-hot rows; anything else passes."""
    labels = array.dtype.kind in "iu" and (
        array.ndim == 1 if not steps else
        array.ndim == 2 and array.shape[1] == steps != steps * classes)
    if not labels:
        return array
    bad = (array < 0) | (array >= classes)
    if bad.any():
        raise TaskError(f"array {key!r}: class label {array[bad].flat[0]} is out of range; "
                        f"labels are in [0, {classes})")
    return np.eye(classes)[array].reshape(len(array), -1)


def _flatten_images(key: str, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(N, C, H, W) -> (N, C*H*W) in C order; (N, C*H*W) passes; anything else is refused."""
    if array.ndim == 2 and array.shape[1] == math.prod(shape):
        return array
    if array.ndim != 1 + len(shape) or tuple(array.shape[1:]) != shape:
        wanted = ", ".join(str(n) for n in shape)
        raise TaskError(f"array {key!r} has shape {tuple(array.shape)} but the network takes "
                        f"(N, {wanted})")
    return array.reshape(array.shape[0], -1)


def save_npz(task: Task, path: str | os.PathLike) -> None:
    """Write ``task`` to ``path`` in the format :func:`load_npz` reads.

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "xor.npz"
    >>> save_npz(load_task("xor"), f)
    >>> load_npz(f).T.ravel().tolist()
    [0.0, 1.0, 1.0, 0.0]
    """
    arrays: dict[str, np.ndarray] = {
        "X": task.X, "T": task.T,
        "classes": np.asarray(task.classes), "tolerance": np.asarray(task.tolerance),
    }
    if task.X_test is not None:
        arrays["X_test"], arrays["T_test"] = task.X_test, task.T_test
    for key in ("input_labels", "output_labels"):
        labels: Sequence[str] | None = getattr(task, key)
        if labels is not None:
            arrays[key] = np.asarray(labels, dtype=str)
    np.savez(Path(path), **arrays)
