"""Tests for the built-in training tasks (symgrad.tasks)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from symgrad.tasks import (
    REGISTRY,
    RELATIONSHIPS,
    Task,
    TaskError,
    available_tasks,
    family_tree_people,
    family_tree_triples,
    load_npz,
    load_task,
    save_npz,
)

ENGLISH_TO_ITALIAN = {
    "Christopher": "Roberto", "Penelope": "Maria", "Andrew": "Pierro", "Christine": "Francesca",
    "Margaret": "Gina", "Arthur": "Emilio", "Victoria": "Lucia", "James": "Marco",
    "Jennifer": "Angela", "Charles": "Tomaso", "Colin": "Alfonso", "Charlotte": "Sophia",
}


def kin() -> dict[tuple[str, str], set[str]]:
    return {(p, r): set(a) for p, r, a in family_tree_triples()}


# --- small synthetic tasks --------------------------------------------------


def test_xor():
    t = load_task("xor")
    assert t.X.shape == (4, 2) and t.T.shape == (4, 1)
    assert t.X.dtype == np.float64 and t.T.dtype == np.float64
    assert t.T.ravel().tolist() == [0, 1, 1, 0]
    assert t.tolerance == 0.5 and not t.classes and not t.has_test


@pytest.mark.parametrize("n", [1, 2, 4, 5])
def test_parity(n):
    t = load_task(f"parity:{n}")
    assert t.X.shape == (2**n, n) and t.T.shape == (2**n, 1)
    assert len({tuple(r) for r in t.X}) == 2**n
    np.testing.assert_array_equal(t.T[:, 0], t.X.sum(axis=1) % 2)


def test_parity4_count():
    t = load_task("parity:4")
    assert t.n_patterns == 16 and t.T.sum() == 8


def test_symmetry6():
    t = load_task("symmetry:6")
    assert t.X.shape == (64, 6) and t.T.shape == (64, 1)
    assert t.T.sum() == 8  # 2**3 mirror-symmetric patterns
    for x, y in zip(t.X, t.T[:, 0]):
        assert y == float(np.array_equal(x, x[::-1]))


def test_encoder():
    t = load_task("encoder:8-3-8")
    assert t.name == "encoder:8-3-8"
    np.testing.assert_array_equal(t.X, np.eye(8))
    np.testing.assert_array_equal(t.T, np.eye(8))
    assert t.classes
    assert np.all(t.X.sum(axis=1) == 1)


def test_arrays_read_only_and_frozen():
    t = load_task("xor")
    with pytest.raises(ValueError):
        t.X[0, 0] = 5.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.name = "other"


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("encoder:8-3-4", "differ"),
        ("encoder:8-3", "K-H-K"),
        ("encoder", "needs a shape"),
        ("symmetry:5", "even"),
        ("parity:x", "integer"),
        ("parity:0", "out of range"),
        ("parity", "needs a size"),
        ("xor:2", "no argument"),
        ("digits:1.5", "fraction"),
        ("", "non-empty"),
    ],
)
def test_bad_arguments(name, fragment):
    with pytest.raises(TaskError, match=fragment):
        load_task(name)


@pytest.mark.parametrize(
    "name, suggestion",
    [("xorr", "xor"), ("parit:4", "parity:4"), ("family_trees", "family-trees"),
     ("symmetri:6", "symmetry:6"), ("digit", "digits"), ("encodr:8-3-8", "encoder:8-3-8")],
)
def test_unknown_suggests(name, suggestion):
    with pytest.raises(TaskError, match=f"did you mean '{suggestion}'"):
        load_task(name)


def test_registry():
    assert len(available_tasks()) == len(REGISTRY)
    for spec in REGISTRY.values():
        if spec.example != "digits":
            assert isinstance(load_task(spec.example), Task)


# --- success criteria -------------------------------------------------------


def test_solved_and_accuracy():
    t = load_task("xor")
    assert t.solved([[0.49], [0.51], [0.9], [0.0]])
    assert not t.solved([[0.5], [0.51], [0.9], [0.0]])
    assert t.accuracy([[0.6], [0.51], [0.9], [0.0]]) == 0.75
    with pytest.raises(TaskError, match="shape"):
        t.solved([[0.1], [0.9]])


def test_family_tolerance_is_02():
    t = load_task("family-trees")
    assert t.tolerance == 0.2
    Y = np.where(t.T == 1, 0.85, 0.15)
    assert t.solved(Y)
    Y[0, np.argmax(t.T[0])] = 0.75  # right side of 0.5 but not above 0.8
    assert not t.solved(Y)
    assert t.accuracy(Y) == pytest.approx(99 / 100)
    assert t.accuracy(np.where(t.T_test == 1, 0.9, 0.1), t.T_test) == 1.0


# --- family trees -----------------------------------------------------------


def test_family_counts():
    triples = family_tree_triples()
    people = family_tree_people()
    assert len(people) == 24 and len(set(people)) == 24
    assert len(triples) == 104
    english = set(people[:12])
    assert sum(p in english for p, _, _ in triples) == 52
    assert {r for _, r, _ in triples} == set(RELATIONSHIPS)
    assert len(RELATIONSHIPS) == 12
    pairs = [(p, r) for p, r, _ in triples]
    assert len(set(pairs)) == 104
    # per tree: father 6, mother 6, husband 5, wife 5, son 6, daughter 6,
    # uncle 2, aunt 2, brother 3, sister 3, nephew 4, niece 4
    per_rel = {r: sum(rr == r for _, rr, _ in triples) for r in RELATIONSHIPS}
    assert per_rel == {
        "father": 12, "mother": 12, "husband": 10, "wife": 10, "son": 12, "daughter": 12,
        "uncle": 4, "aunt": 4, "brother": 6, "sister": 6, "nephew": 8, "niece": 8,
    }


def test_family_isomorphism():
    eng = {(p, r, a) for p, r, a in family_tree_triples() if p in ENGLISH_TO_ITALIAN}
    ita = {(p, r, a) for p, r, a in family_tree_triples() if p not in ENGLISH_TO_ITALIAN}
    m = ENGLISH_TO_ITALIAN
    mapped = {(m[p], r, frozenset(m[x] for x in a)) for p, r, a in eng}
    assert mapped == ita
    people = family_tree_people()
    assert [m[p] for p in people[:12]] == list(people[12:])


@pytest.mark.parametrize(
    "person, rel, answers",
    [
        ("James", "wife", {"Victoria"}),
        ("Victoria", "husband", {"James"}),
        ("Charlotte", "brother", {"Colin"}),
        ("Colin", "sister", {"Charlotte"}),
        ("Colin", "aunt", {"Jennifer", "Margaret"}),  # father's sister; mother's brother's wife
        ("Colin", "uncle", {"Arthur", "Charles"}),  # mother's brother; father's sister's husband
        ("Colin", "father", {"James"}),
        ("Charlotte", "mother", {"Victoria"}),
        ("Christopher", "son", {"Arthur"}),
        ("Christopher", "daughter", {"Victoria"}),
        ("Christine", "son", {"James"}),
        ("Andrew", "daughter", {"Jennifer"}),
        ("Arthur", "father", {"Christopher"}),
        ("Jennifer", "mother", {"Christine"}),
        ("Margaret", "husband", {"Arthur"}),
        ("Charles", "wife", {"Jennifer"}),
        ("Arthur", "nephew", {"Colin"}),
        ("Margaret", "niece", {"Charlotte"}),  # by marriage
        ("Charles", "nephew", {"Colin"}),  # by marriage
        ("Jennifer", "niece", {"Charlotte"}),
        ("Victoria", "son", {"Colin"}),
        ("James", "daughter", {"Charlotte"}),
        ("Jennifer", "brother", {"James"}),
        ("Arthur", "sister", {"Victoria"}),
        ("Sophia", "aunt", {"Angela", "Gina"}),
        ("Alfonso", "uncle", {"Emilio", "Tomaso"}),
        ("Marco", "wife", {"Lucia"}),
    ],
)
def test_family_facts(person, rel, answers):
    assert kin()[(person, rel)] == answers


@pytest.mark.parametrize(
    "person, rel",
    [("Christopher", "father"), ("Margaret", "mother"), ("Colin", "son"),
     ("Colin", "wife"), ("Charles", "brother"),
     ("Penelope", "uncle"), ("Colin", "nephew"), ("Christopher", "nephew")],
)
def test_family_absent_pairs(person, rel):
    assert (person, rel) not in kin()


def test_family_trees_task_encoding():
    t = load_task("family-trees", seed=0)
    assert t.X.shape == (100, 36) and t.T.shape == (100, 24)
    assert t.X_test.shape == (4, 36) and t.T_test.shape == (4, 24)
    assert t.input_labels[:24] == family_tree_people()
    assert t.input_labels[24:] == RELATIONSHIPS
    assert t.output_labels == family_tree_people()
    for X in (t.X, t.X_test):
        assert np.all(X[:, :24].sum(axis=1) == 1) and np.all(X[:, 24:].sum(axis=1) == 1)
    # every row decodes to a true triple
    facts = kin()
    people = family_tree_people()
    for X, T in ((t.X, t.T), (t.X_test, t.T_test)):
        for x, y in zip(X, T):
            p = people[int(np.argmax(x[:24]))]
            r = RELATIONSHIPS[int(np.argmax(x[24:]))]
            assert {people[i] for i in np.flatnonzero(y)} == facts[(p, r)]


def test_family_split_disjoint_and_seeded():
    def rows(a):
        return {tuple(r) for r in a}

    splits = []
    for seed in range(6):
        t = load_task("family-trees", seed=seed)
        train, test = rows(t.X), rows(t.X_test)
        assert len(train) == 100 and len(test) == 4
        assert not train & test
        assert len(train | test) == 104
        splits.append(frozenset(test))
    assert len(set(splits)) > 1
    a, b = load_task("family-trees", seed=3), load_task("family-trees", seed=3)
    np.testing.assert_array_equal(a.X_test, b.X_test)


# --- digits -----------------------------------------------------------------


def test_digits():
    pytest.importorskip("sklearn")
    t = load_task("digits", seed=1)
    assert t.n_patterns + t.X_test.shape[0] == 1797
    assert t.X.shape[1] == 64 and t.T.shape[1] == 10 and t.classes
    assert t.X.min() >= 0.0 and t.X.max() <= 1.0 and t.X.max() == 1.0
    assert np.all(t.T.sum(axis=1) == 1) and np.all(t.T_test.sum(axis=1) == 1)
    assert abs(t.X_test.shape[0] - 1797 / 2) <= 10
    # stratified: per-class counts on each side differ by at most one
    tr, te = t.T.sum(axis=0), t.T_test.sum(axis=0)
    assert np.all(np.abs(tr - te) <= 1)
    np.testing.assert_allclose(te / (tr + te), 0.5, atol=0.01)
    # train + test is exactly the full data set (as a multiset of rows): disjoint and complete
    from sklearn.datasets import load_digits

    def sorted_rows(a):
        return a[np.lexsort(a.T[::-1])]

    full = np.concatenate([t.X, t.X_test])
    np.testing.assert_array_equal(sorted_rows(full), sorted_rows(load_digits().data / 16.0))


def test_digits_fraction_and_seed():
    pytest.importorskip("sklearn")
    t = load_task("digits:0.25", seed=0)
    tr, te = t.T.sum(axis=0), t.T_test.sum(axis=0)
    np.testing.assert_allclose(te / (tr + te), 0.25, atol=0.01)
    a, b = load_task("digits", seed=0), load_task("digits", seed=1)
    assert not np.array_equal(a.X_test, b.X_test)
    np.testing.assert_array_equal(a.X_test, load_task("digits", seed=0).X_test)


def test_digits_without_sklearn(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError("no sklearn")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(TaskError, match=r"pip install symgrad\[digits\]"):
        load_task("digits")


# --- npz files --------------------------------------------------------------


def test_npz_roundtrip(tmp_path):
    src = load_task("family-trees", seed=2)
    f = tmp_path / "fam.npz"
    save_npz(src, f)
    t = load_npz(f)
    assert t.name == "fam" and t.tolerance == 0.2 and not t.classes
    np.testing.assert_array_equal(t.X, src.X)
    np.testing.assert_array_equal(t.T_test, src.T_test)
    assert t.input_labels == src.input_labels
    assert load_task(str(f)).n_patterns == 100


def test_npz_infers_classes(tmp_path):
    f = tmp_path / "onehot.npz"
    np.savez(f, X=np.eye(3), T=np.eye(3))
    assert load_npz(f).classes
    np.savez(f, X=np.eye(3), T=np.ones((3, 1)))
    assert not load_npz(f).classes


@pytest.mark.parametrize(
    "arrays, fragment",
    [
        ({"X": np.zeros((3, 2))}, "missing array 'T'"),
        ({"T": np.zeros((3, 1))}, "missing array 'X'"),
        ({"X": np.zeros((3, 2)), "T": np.zeros((4, 1))}, "3 patterns but T has 4"),
        ({"X": np.zeros(3), "T": np.zeros((3, 1))}, "must be 2-D"),
        ({"X": np.zeros((3, 2)), "T": np.zeros((3, 1, 1))}, "must be 2-D"),
        ({"X": np.array([[0.0, np.nan]]), "T": np.zeros((1, 1))}, "NaN"),
        ({"X": np.zeros((1, 2)), "T": np.array([[np.inf]])}, "NaN or infinite"),
        ({"X": np.zeros((3, 2)), "T": np.zeros((3, 1)), "X_test": np.zeros((1, 2))},
         "together"),
        ({"X": np.zeros((3, 2)), "T": np.zeros((3, 1)), "X_test": np.zeros((1, 3)),
          "T_test": np.zeros((1, 1))}, "inputs"),
        ({"X": np.zeros((3, 2)), "T": np.zeros((3, 1)), "X_test": np.zeros((2, 2)),
          "T_test": np.zeros((1, 1))}, "X_test has 2 patterns"),
        ({"X": np.zeros((3, 2)), "T": np.zeros((3, 1)), "input_labels": np.array(["a"])},
         "input_labels has 1"),
        ({"X": np.array([["a", "b"]]), "T": np.zeros((1, 1))}, "not numeric"),
    ],
)
def test_npz_errors(tmp_path, arrays, fragment):
    f = tmp_path / "bad.npz"
    np.savez(f, **arrays)
    with pytest.raises(TaskError, match=fragment) as info:
        load_npz(f)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("bad.npz: ")


def test_npz_unreadable(tmp_path):
    with pytest.raises(TaskError, match="no such task file"):
        load_npz(tmp_path / "absent.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")
    with pytest.raises(TaskError, match="not a readable"):
        load_npz(junk)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros((2, 2)))
    with pytest.raises(TaskError, match="not an .npz archive"):
        load_npz(single)
    assert issubclass(TaskError, ValueError)
