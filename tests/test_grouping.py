"""Tests of engine/grouping.py: PIFA by hand, group invariants, clustering quality, index init, errors."""

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

from engine.data import generate, load_dataset
from engine.errors import ConfigError
from engine import grouping
from engine.grouping import (LabelGroups, PifaRows, balanced_groups, centroid_index, group_centroids, group_index,
                             labels_without_positives, pifa, random_groups, top_inputs)
from engine import TrainConfig
from engine.grouping import label_layout

from shared_data import DATASETS


# ---------------------------------------------------------------------------------------------
# PIFA

def test_pifa_by_hand():
    # 3 points x 4 features, 3 labels; label 2 has no positives
    X = sp.csr_matrix(np.array([[1, 0, 2, 0],
                                [0, 3, 0, 0],
                                [1, 1, 0, 2]], np.float32))
    Y = sp.csr_matrix(np.array([[1, 0, 0],
                                [1, 1, 0],
                                [0, 1, 0]], np.float32))
    s0 = np.array([1, 3, 2, 0.])                                       # rows 0 + 1
    s1 = np.array([1, 4, 0, 2.])                                       # rows 1 + 2
    want = np.stack([s0 / np.linalg.norm(s0), s1 / np.linalg.norm(s1), np.zeros(4)])
    E = pifa(X, Y)
    assert E.dtype == np.float32 and E.shape == (3, 4)
    np.testing.assert_allclose(E, want, rtol=1e-6)
    np.testing.assert_allclose(pifa(X, Y, dense=False).toarray(), want, rtol=1e-6)
    np.testing.assert_array_equal(labels_without_positives(Y), [False, False, True])
    Y2 = Y.copy()
    Y2.data[:] = 5.0                                                   # values are ignored
    np.testing.assert_allclose(pifa(X, Y2), want, rtol=1e-6)
    np.testing.assert_allclose(pifa(X.toarray(), Y), want, rtol=1e-6)       # dense per-point vectors
    S = pifa(X, Y, dense=False)
    assert S.has_canonical_format and (S.data != 0).all() and S.dtype == np.float32


def test_pifa_errors():
    X, Y = sp.csr_matrix((3, 4)), sp.csr_matrix((2, 5))
    with pytest.raises(ConfigError, match="3 rows"):
        pifa(X, Y)
    with pytest.raises(ConfigError, match="Y must be"):
        pifa(np.zeros((3, 4)), np.zeros((3, 5)))


# ---------------------------------------------------------------------------------------------
# groups: invariants

def check_groups(g, L, m):
    """Every label exactly once, slots distinct and in range, sizes ⌊L/G⌋ or ⌈L/G⌉, helpers agree."""
    G = -(-L // m)
    assert (g.n_labels, g.group_size, g.n_groups, g.n_slots) == (L, m, G, G * m)
    s = g.slot_of_label
    assert s.dtype == np.int64 and s.shape == (L,)
    assert s.min() >= 0 and s.max() < G * m and np.unique(s).size == L
    sizes = g.group_sizes
    assert sizes.sum() == L and set(sizes.tolist()) <= {L // G, -(-L // G)}
    np.testing.assert_array_equal(g.group_of_label, s // m)
    lab = g.label_of_slot
    np.testing.assert_array_equal(lab[s], np.arange(L))
    assert g.padded_slots.sum() == G * m - L and (lab[g.padded_slots] == -1).all()
    members = np.concatenate([g.labels_of_group(i) for i in range(G)])
    np.testing.assert_array_equal(np.sort(members), np.arange(L))
    assert all((g.group_of_label[g.labels_of_group(i)] == i).all() for i in range(G))


SHAPES = [(1, 1), (7, 1), (7, 3), (10, 10), (10, 32), (97, 8), (1000, 32), (1001, 32), (513, 2)]


@pytest.mark.parametrize("L,m", SHAPES, ids=[f"L{L}-m{m}" for L, m in SHAPES])
@pytest.mark.parametrize("kind", ["random", "dense", "sparse"])
def test_group_invariants(kind, L, m):
    rng = np.random.default_rng(L * 31 + m)
    if kind == "random":
        g = random_groups(L, m, seed=3)
    else:
        E = rng.standard_normal((L, 16)).astype(np.float32)
        E[rng.random(L) < 0.1] = 0                                     # labels without positives
        g = balanced_groups(sp.csr_matrix(E) if kind == "sparse" else E, m, seed=3)
    check_groups(g, L, m)


def test_groups_deterministic_per_seed():
    E = np.random.default_rng(0).standard_normal((300, 20))
    a, b, c = balanced_groups(E, 8, seed=1), balanced_groups(E, 8, seed=1), balanced_groups(E, 8, seed=2)
    np.testing.assert_array_equal(a.slot_of_label, b.slot_of_label)
    assert not np.array_equal(a.slot_of_label, c.slot_of_label)
    np.testing.assert_array_equal(random_groups(300, 8, 5).slot_of_label,
                                  random_groups(300, 8, 5).slot_of_label)
    assert not np.array_equal(random_groups(300, 8, 5).slot_of_label, random_groups(300, 8, 6).slot_of_label)


def test_zero_embeddings_do_not_break_anything():
    # all-zero embeddings, one nonzero label, and dense vs sparse input of the same matrix
    check_groups(balanced_groups(np.zeros((50, 4)), 6), 50, 6)
    E = np.zeros((50, 4))
    E[7, 2] = 1.0
    check_groups(balanced_groups(E, 6), 50, 6)
    check_groups(balanced_groups(sp.csr_matrix((50, 4)), 6), 50, 6)


def test_clustered_groups_are_purer_than_random():
    # 400 labels in 20 latent clusters of 20; groups of 10 can be perfectly pure
    ds = generate(n_points=3000, n_features=500, n_labels=400, n_clusters=20, seed=0)
    cluster = np.array([int(name[1:name.index("_")]) for name in ds.label_names])

    def purity(g):
        return np.mean([np.bincount(cluster[g.labels_of_group(i)]).max() / g.group_sizes[i]
                        for i in range(g.n_groups)])

    E = pifa(ds.X_train, ds.Y_train)
    clustered, rand = purity(balanced_groups(E, 10)), purity(random_groups(400, 10))
    assert clustered > 0.9 and rand < 0.4, (clustered, rand)
    assert purity(balanced_groups(sp.csr_matrix(E), 10)) > 0.9


def mean_within_group(S, group_of_label):
    """Mean of S[a, b] over the pairs a != b of labels that share a group."""
    same = group_of_label[:, None] == group_of_label[None, :]
    np.fill_diagonal(same, False)
    return S[same].mean()


@pytest.mark.parametrize("name", ["delicious", "bibtex"])
def test_clustered_slots_hold_similar_labels_on_real_data(name):
    # the slots the trainer builds (label_layout), not only balanced_groups: labels that share a
    # clustered group have closer PIFA vectors and co-occur more (cosine of their Y columns)
    if not (DATASETS / name).exists():
        pytest.skip(f"{DATASETS / name} not present")
    ds = load_dataset(DATASETS / name)
    configs = {groups: TrainConfig.of(head="group_shared", group_size=32, groups=groups, dense_share=0).model_config(
        ds.n_features, ds.n_labels) for groups in ("clustered", "random")}
    E = pifa(ds.X_train, ds.Y_train)
    Yb = sp.csc_matrix(ds.Y_train, dtype=np.float64)
    Yb.data[:] = 1.0
    cooc = (Yb.T @ Yb).toarray()
    norm = np.sqrt(np.diag(cooc)).clip(1e-12)
    similarity = {"pifa": E @ E.T, "cooc": cooc / np.outer(norm, norm)}
    within = {}
    for groups in ("clustered", "random"):
        slot_of_label, _ = label_layout(configs[groups], ds.X_train, ds.Y_train)
        group_of_label = slot_of_label // 32
        within[groups] = {k: mean_within_group(S, group_of_label) for k, S in similarity.items()}
    assert within["clustered"]["pifa"] > within["random"]["pifa"] + 0.03, within
    assert within["clustered"]["cooc"] > 2.5 * within["random"]["cooc"], within


@pytest.mark.parametrize("n_features", [40, 3000], ids=["dense-pifa", "sparse-pifa"])
@pytest.mark.parametrize("aux_clusters", [0, 8])
def test_label_layout_keeps_pifa_sparse_with_the_groups_of_dense_pifa(n_features, aux_clusters):
    # label_layout builds sparse PIFA (no (L, D) array) and clusters it in the format balanced_groups
    # reads a dense PIFA in (dense when a quarter filled, else CSR): the same slots, exactly
    ds = generate(n_points=2000, n_features=n_features, n_labels=300, n_clusters=15, seed=1)
    aux = dict(aux=1.0, aux_clusters=aux_clusters) if aux_clusters else {}
    mc = TrainConfig.of(head="dense_sparse", head_size=20, group_size=8, groups="clustered", seed=4,
                        **aux).model_config(ds.n_features, ds.n_labels)
    slot_of_label, cluster_of_label = label_layout(mc, ds.X_train, ds.Y_train)
    E = pifa(ds.X_train, ds.Y_train)
    tail = np.sort(np.argsort(-np.asarray(ds.Y_train.sum(axis=0)).ravel(), kind="stable")[20:])
    np.testing.assert_array_equal(slot_of_label[tail] - 20, balanced_groups(E[tail], 8, seed=4).slot_of_label)
    if aux_clusters:
        np.testing.assert_array_equal(cluster_of_label, balanced_groups(E, -(-300 // 8), seed=4).group_of_label)


def test_label_groups_validation():
    LabelGroups(5, 2, np.array([0, 1, 2, 4, 5]))                       # sizes 2, 1, 2: fine
    with pytest.raises(ConfigError, match="distinct"):
        LabelGroups(3, 2, np.array([0, 0, 2]))
    with pytest.raises(ConfigError, match="out of range"):
        LabelGroups(3, 2, np.array([0, 1, 4]))
    with pytest.raises(ConfigError, match="differ by at most one"):
        LabelGroups(5, 4, np.array([0, 1, 2, 3, 4]))                   # sizes 4 and 1
    with pytest.raises(ConfigError, match="shape"):
        LabelGroups(3, 2, np.array([0, 1]))
    with pytest.raises(ConfigError, match="group_size"):
        LabelGroups(3, 0, np.array([0, 1, 2]))
    with pytest.raises(ConfigError, match="permutation"):
        LabelGroups.from_order([0, 0, 1], 2)
    g = random_groups(10, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.group_size = 2
    with pytest.raises(ValueError):
        g.slot_of_label[0] = 1                                         # read-only
    with pytest.raises(ConfigError, match="out of range"):
        g.labels_of_group(4)


@pytest.mark.parametrize("call,match", [
    (lambda: balanced_groups(np.ones((4, 2)), 0), "group_size=0"),
    (lambda: balanced_groups(np.ones((4, 2)), True), "group_size=True"),
    (lambda: balanced_groups(np.ones((4, 2)), 2, seed=-1), "seed=-1"),
    (lambda: balanced_groups(np.ones((4, 2)), 2, n_iter=0), "n_iter=0"),
    (lambda: balanced_groups(np.ones(4), 2), "shape"),
    (lambda: balanced_groups(np.full((4, 2), np.nan), 2), "NaN"),
    (lambda: balanced_groups([[1.0]], 2), "ndarray"),
    (lambda: random_groups(0, 2), "n_labels=0"),
    (lambda: random_groups(5, 2.5), "group_size=2.5"),
])
def test_grouping_errors(call, match):
    with pytest.raises(ConfigError, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# initial input sets

def check_index(idx, G, k, d):
    assert idx.dtype == np.int32 and idx.shape == (G, k)
    assert idx.min() >= 0 and idx.max() < d
    assert (np.diff(idx, axis=1) > 0).all()                            # sorted, hence distinct


def test_group_index_centroid_is_top_k():
    rng = np.random.default_rng(0)
    L, m, d, k = 50, 4, 30, 6
    S = rng.random((L, d))                                             # distinct values: no ties
    g = random_groups(L, m, seed=1)
    idx = group_index(g, S, k)
    check_index(idx, g.n_groups, k, d)
    for i in range(g.n_groups):
        c = S[g.labels_of_group(i)].sum(0)
        np.testing.assert_array_equal(idx[i], np.sort(np.argsort(-c)[:k]))
    np.testing.assert_array_equal(group_index(g, sp.csr_matrix(S), k), idx)   # sparse input
    np.testing.assert_allclose(group_centroids(g, S)[2], S[g.labels_of_group(2)].sum(0), rtol=1e-6)


def test_group_index_ties_filled_at_random():
    # group 0: two nonzero inputs then ties; group 1: zero centroid; k = 5 of d = 40
    C = np.zeros((2, 40))
    C[0, [3, 17]] = [2.0, 1.0]
    idx = top_inputs(C, 5, seed=0)
    check_index(idx, 2, 5, 40)
    assert {3, 17} <= set(idx[0].tolist())
    assert not np.array_equal(idx[1], np.arange(5))                    # not simply the first ones
    np.testing.assert_array_equal(top_inputs(C, 5, seed=0), idx)       # deterministic per seed
    many = np.stack([top_inputs(np.zeros((1, 40)), 5, seed=s)[0] for s in range(200)])
    counts = np.bincount(many.ravel(), minlength=40)
    assert counts.min() > 5                                            # every input gets drawn
    assert (top_inputs(np.zeros((3, 5)), 5) == np.arange(5)).all()     # k = d: all of them


def test_group_index_equals_top_inputs_of_centroids():
    # integer scores with many ties and zero rows: the chunked path draws the same tie-breaks
    rng = np.random.default_rng(1)
    S = rng.integers(0, 3, (60, 25)) * (rng.random((60, 1)) < 0.7)
    g = random_groups(60, 5, seed=2)
    idx = group_index(g, S, 7, seed=3)
    check_index(idx, g.n_groups, 7, 25)
    np.testing.assert_array_equal(idx, top_inputs(group_centroids(g, S), 7, seed=3))


def test_group_index_random():
    g = random_groups(100, 8)
    idx = group_index(g, 64, 10, how="random", seed=4)
    check_index(idx, g.n_groups, 10, 64)
    np.testing.assert_array_equal(group_index(g, np.zeros((100, 64)), 10, how="random", seed=4), idx)


@pytest.mark.parametrize("call,match", [
    (lambda g: group_index(g, np.ones((10, 4)), 5), "fanin=5 > in_features=4"),
    (lambda g: group_index(g, np.ones((10, 4)), 0), "fanin=0"),
    (lambda g: group_index(g, np.ones((10, 4)), 2, how="best"), "how='best'"),
    (lambda g: group_index(g, np.ones((9, 4)), 2), "9 rows"),
    (lambda g: group_index("groups", np.ones((10, 4)), 2), "LabelGroups"),
    (lambda g: group_index(g, np.full((10, 4), np.inf), 2), "NaN or inf"),
])
def test_group_index_errors(call, match):
    with pytest.raises(ConfigError, match=match):
        call(random_groups(10, 3))


# ---------------------------------------------------------------------------------------------
# a model's centroid input sets: PIFA in the hidden space, a block of groups at a time

def hidden_problem(seed, n=300, L=230, d=37, n_dense=11, m=6):
    """ReLU hidden rows H (n, d), mostly exact zeros (ties in the centroids), labels Y (n, L) of
    which a tenth, and every label of groups 0 and 5, have no positive point (zero PIFA rows, zero
    centroids), and a model's slots: n_dense labels in the dense part, the rest in random groups of m
    whose last ones are padded (230 - 11 = 219 labels in 37 groups of 6)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(L)                                         # labels in slot order
    slot_of_label = np.empty(L, np.int64)
    slot_of_label[order[:n_dense]] = np.arange(n_dense)
    slot_of_label[order[n_dense:]] = n_dense + random_groups(L - n_dense, m, seed=seed).slot_of_label
    group = (slot_of_label - n_dense) // m
    used = np.flatnonzero((group != 0) & (group != 5) & (rng.random(L) < 0.9))
    H = np.maximum(rng.standard_normal((n, d)), 0).astype(np.float32) * (rng.random((n, d)) < 0.06)
    rows = [rng.choice(used, size=rng.integers(1, 4), replace=False) for _ in range(n)]
    Y = sp.csr_matrix((np.ones(sum(map(len, rows)), np.float32), np.concatenate(rows),
                       np.cumsum([0] + [len(r) for r in rows])), shape=(n, L))
    Y.sort_indices()
    return H, Y, slot_of_label


def centroid_index_reference(H, Y, slot_of_label, n_dense, m, k, seed):
    """centroid_index by its definition, with the whole (L, d) PIFA at once: each label's positives'
    hidden rows added point by point in float64, l2-normalised, rounded to float32; each group's
    float64 sum of its labels' rows in slot order; its k largest entries, ties at the k-th value broken
    by one uniform draw per (group, input), drawn group after group."""
    (n, d), L = H.shape, Y.shape[1]
    S = np.zeros((L, d))
    for i in range(n):
        S[Y.indices[Y.indptr[i]:Y.indptr[i + 1]]] += H[i].astype(np.float64)
    norm = np.sqrt(np.einsum("ij,ij->i", S, S))
    E = (S * np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)[:, None]).astype(np.float32)
    G = -(-(L - n_dense) // m)
    label_of_slot = np.full(n_dense + G * m, -1)
    label_of_slot[slot_of_label] = np.arange(L)
    C = np.zeros((G, d))
    for g in range(G):
        for label in label_of_slot[n_dense + g * m:n_dense + (g + 1) * m]:
            if label >= 0:
                C[g] += E[label]
    u = np.random.default_rng(seed).random((G, d))
    out = np.empty((G, k), np.int64)
    for g in range(G):
        t = np.sort(C[g])[-k]
        key = np.where(C[g] > t, 2.0, np.where(C[g] == t, u[g], -1.0))
        out[g] = np.sort(np.argsort(-key)[:k])
    return out, E, C


@pytest.mark.parametrize("chunk", [None, 1 << 11, 1 << 8], ids=["one-block", "blocks-of-2-groups", "a-group-a-block"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_centroid_index_equals_the_dense_formula(monkeypatch, chunk, seed):
    # the same index sets, bit for bit, as the (L, d) PIFA computed all at once, whatever the blocks
    # (a small _CHUNK: 2 groups or 1 group a block): ragged groups, a dense part, ties at zero
    if chunk:
        monkeypatch.setattr(grouping, "_CHUNK", chunk)
    H, Y, slot_of_label = hidden_problem(seed)
    k = 10
    want, E, C = centroid_index_reference(H, Y, slot_of_label, 11, 6, k, seed)
    assert np.array_equal(E, pifa(H, Y))                               # the reference is pifa's formula
    assert (C == 0).all(axis=1).any() and ((C > 0).sum(axis=1) < k).sum() > 5   # zero groups, ties
    idx = centroid_index(H, Y, slot_of_label, 11, 6, k, seed)
    check_index(idx, 37, k, 37)
    np.testing.assert_array_equal(idx, want)
    # the same through the dense (L, d) scores: today's path, and the same centroids bit for bit
    tail = np.argsort(slot_of_label)[11:]
    groups = LabelGroups(len(tail), 6, slot_of_label[tail] - 11)
    np.testing.assert_array_equal(group_index(groups, pifa(H, Y[:, tail]), k, seed=seed), want)
    assert np.array_equal(group_centroids(groups, PifaRows(H, Y[:, tail])), C.astype(np.float32))


def test_centroid_index_never_makes_all_pifa_rows_at_once(monkeypatch):
    # PifaRows makes each label's row once, a block of groups' labels at a time
    monkeypatch.setattr(grouping, "_CHUNK", 1 << 12)                   # 1024 entries: 4 groups of 6 x 37
    made = []
    rows = PifaRows.rows
    monkeypatch.setattr(PifaRows, "rows", lambda self, labels: (made.append(labels), rows(self, labels))[1])
    H, Y, slot_of_label = hidden_problem(3, n=200, L=500, d=37)
    idx = centroid_index(H, Y, slot_of_label, 11, 6, 5, 0)
    np.testing.assert_array_equal(idx, centroid_index_reference(H, Y, slot_of_label, 11, 6, 5, 0)[0])
    assert max(map(len, made)) == 4 * 6 and len(made) == -(-82 // 4)   # 489 labels in 82 groups
    assert np.array_equal(np.sort(np.concatenate(made)), np.arange(489))


def test_pifa_rows_are_pifas_rows():
    H, Y, _ = hidden_problem(4)
    E, P = pifa(H, Y), PifaRows(H, Y)
    assert P.shape == E.shape and P.ndim == 2
    for labels in (np.arange(230), np.array([3]), np.array([0, 7, 8, 229])):
        assert np.array_equal(P.rows(labels), E[labels])
    with pytest.raises(ConfigError, match="dense ndarray"):
        PifaRows(sp.csr_matrix(H), Y)
    with pytest.raises(ConfigError, match="rows"):
        PifaRows(H[:10], Y)


def test_centroid_index_sparse_features_and_bad_hidden_rows():
    # no encoder: the sparse features' PIFA (sparse), as group_index of it; NaN rows are refused
    H, Y, slot_of_label = hidden_problem(5)
    tail = np.argsort(slot_of_label)[11:]
    groups = LabelGroups(len(tail), 6, slot_of_label[tail] - 11)
    X = sp.csr_matrix(H)
    np.testing.assert_array_equal(centroid_index(X, Y, slot_of_label, 11, 6, 8, 1),
                                  group_index(groups, pifa(X, Y[:, tail], dense=False), 8, seed=1))
    H[np.flatnonzero(np.diff(Y[:, tail].indptr))[0], 3] = np.nan     # a point of a grouped label
    with pytest.raises(ConfigError, match="NaN or inf"):
        centroid_index(H, Y, slot_of_label, 11, 6, 8, 1)
