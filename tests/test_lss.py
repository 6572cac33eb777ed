"""Tests of engine/lss.py: the MIPS-to-cosine vectors, the tables, candidates against a brute-force
union, search against exact scoring restricted to the candidates, learning against SimHash, errors."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from engine import TrainConfig, Trainer
from engine.data import generate
from engine.errors import ConfigError
from engine.lss import (LearnedHashIndex, compare_hash_indexes, exact_topk, label_vectors, mean_soft_collision,
                        query_vectors, report, run_lss_experiment, subset_products,
                        train_dense_model)


def _random_head(L=300, d=12, N=40, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((L, d)).astype(np.float32)
    b = rng.standard_normal(L).astype(np.float32)
    H = np.maximum(rng.standard_normal((N, d)), 0).astype(np.float32)
    return W, b, H


@pytest.fixture
def one_thread():
    """Small torch ops: extra threads only cost (and the cores are shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained():
    """A small dense model trained on synthetic data: (dataset, W, b, H_train, H_test)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ds = generate(n_points=4000, n_features=1000, n_labels=2000, n_clusters=50, seed=0)
        model, _ = train_dense_model(ds, hidden=64, epochs=3, batch_size=256, lr=3e-3)
        W, b = model.label_vectors()
        H_train, H_test = model.encode_all(ds.X_train), model.encode_all(ds.X_test)
    finally:
        torch.set_num_threads(threads)
    return ds, W, b, H_train, H_test


def test_vectors_unit_norm_and_order_preserving():
    # every hashed vector has norm 1, and q·x_l ranks labels as h·w_l + b_l does
    W, b, H = _random_head()
    X, Q = label_vectors(W, b), query_vectors(H)
    assert np.allclose(np.linalg.norm(X, axis=1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(Q, axis=1), 1, atol=1e-5)
    for n in range(5):
        assert (np.argsort(-(Q[n] @ X.T))[:10] == np.argsort(-(H[n] @ W.T + b))[:10]).all()


@pytest.mark.parametrize("K", [1, 5, 8, 18])                          # odd split; > 16: pairwise
def test_soft_collision_mean_equals_brute_force(K):
    # the training's negative term: mean over labels of Π_k (1 + u_k·v_k)/2, without the (B, M, T, K)
    g = torch.Generator().manual_seed(K)
    u = torch.rand(6, 3, K, generator=g, dtype=torch.float64) * 2 - 1
    v = torch.rand(50, 3, K, generator=g, dtype=torch.float64) * 2 - 1
    want = ((1 + u[:, None] * v[None]) / 2).prod(-1).mean(1)            # (6, 3)
    assert torch.allclose(mean_soft_collision(u, v), want, rtol=1e-4 if K > 16 else 1e-10)
    if K >= 3:
        phi = subset_products(u[..., :3])
        assert phi.shape == (6, 3, 8) and torch.allclose(phi[..., 0b101], u[..., 0] * u[..., 2])


def test_tables_hold_every_label_once_per_table():
    W, b, H = _random_head()
    index = LearnedHashIndex(n_tables=5, n_bits=4, seed=1).fit(W, bias=b, epochs=0)
    assert index.ids.shape == (5, 300) and index.ptr.shape == (5, 17)
    for t in range(5):
        assert (np.sort(index.ids[t]) == np.arange(300)).all()          # each label exactly once
        assert index.ptr[t, 0] == 0 and index.ptr[t, -1] == 300
        for j in range(16):                                             # bucket j holds code j
            members = index.ids[t, index.ptr[t, j]:index.ptr[t, j + 1]]
            assert (index.label_codes[members, t] == j).all()


def test_candidates_are_the_union_of_the_query_buckets():
    W, b, H = _random_head()
    index = LearnedHashIndex(n_tables=4, n_bits=5, seed=2).fit(W, bias=b, epochs=0)
    indptr, cand = index.candidates(H)
    codes = index.query_codes(H)
    for n in range(H.shape[0]):
        want = {l for t in range(4) for l in np.flatnonzero(index.label_codes[:, t] == codes[n, t])}
        got = cand[indptr[n]:indptr[n + 1]]
        assert len(got) == len(set(got.tolist())) and set(got.tolist()) == want


@pytest.mark.parametrize("n_bits", [3, 9])                              # large / tiny candidate sets
def test_search_equals_exact_topk_over_candidates(n_bits):
    W, b, H = _random_head()
    k = 5
    index = LearnedHashIndex(n_tables=3, n_bits=n_bits, seed=0).fit(W, bias=b, epochs=0)
    top, n_cand = index.search(H, W, b, k, return_counts=True)
    indptr, cand = index.candidates(H)
    assert (n_cand == np.diff(indptr)).all()
    scores = H.astype(np.float64) @ W.T.astype(np.float64) + b          # (N, L) reference
    for n in range(H.shape[0]):
        c = cand[indptr[n]:indptr[n + 1]]
        want = c[np.argsort(-scores[n, c], kind="stable")][:k]
        got = top[n]
        assert (got[len(want):] == -1).all()                            # padding when < k candidates
        assert np.allclose(scores[n, got[:len(want)]], scores[n, want], atol=1e-5)
    # with every label a candidate (one bit, both sides of it taken by some table), search is exact
    if n_bits == 3:
        everyone = LearnedHashIndex(n_tables=1, n_bits=1, seed=0)
        everyone.fit(W, bias=b, epochs=0)
        everyone.ptr[0] = [0, 0, W.shape[0]]                            # all labels in bucket 1 ...
        everyone.ids[0] = np.arange(W.shape[0])
        everyone.proj[:] = 0
        everyone.offset[:] = 1                                          # ... and every query too
        got = everyone.search(H, W, b, k)
        full = exact_topk(H, W, b, k)
        assert np.allclose(np.take_along_axis(scores, got, 1), np.take_along_axis(scores, full, 1), atol=1e-5)


def test_learning_beats_simhash(trained, one_thread):
    # same T, K: the learned hashes find more of the true labels with fewer candidates
    ds, W, b, H_train, H_test = trained
    simhash = LearnedHashIndex(8, 6, seed=0).fit(W, H_train, ds.Y_train, bias=b, epochs=0)
    learned = LearnedHashIndex(8, 6, seed=0).fit(W, H_train, ds.Y_train, bias=b, epochs=2)
    assert learned.history[-1] < learned.history[0]
    r0 = report(simhash, H_test, W, b, ds.Y_test)
    r1 = report(learned, H_test, W, b, ds.Y_test, exact_top=exact_topk(H_test, W, b, 5), exact_time=1.0)
    assert r1["recall"] > r0["recall"] + 0.1, (r0, r1)               # measured: 0.32 vs 0.14
    assert r1["top1_recall"] > r0["top1_recall"] + 0.2, (r0, r1)     # 0.92 vs 0.47
    assert r1["cand_pct"] < r0["cand_pct"], (r0, r1)                 # 1.7% vs 8.3% of the labels
    assert r1["P@1_ratio"] >= 0.95, r1


def test_seeded():
    W, b, H = _random_head()
    codes = [LearnedHashIndex(4, 6, seed=s).fit(W, bias=b, epochs=0).query_codes(H) for s in (3, 3, 4)]
    assert (codes[0] == codes[1]).all() and not (codes[0] == codes[2]).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_tables=0), "n_tables=0"),
    (dict(n_bits=0), "n_bits=0"),
    (dict(n_bits=25), "n_bits=25"),
    (dict(seed=-2), "seed=-2"),
])
def test_bad_settings_raise(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        LearnedHashIndex(**kwargs)


def test_bad_inputs_raise():
    W, b, H = _random_head()
    index = LearnedHashIndex(2, 4)
    with pytest.raises(ConfigError, match="not fitted"):
        index.search(H, W, b)
    with pytest.raises(ConfigError, match="bias must have shape"):
        index.fit(W, bias=b[:-1], epochs=0)
    with pytest.raises(ConfigError, match="lr=0"):
        index.fit(W, H, sp.csr_matrix((40, 300)), bias=b, lr=0)
    with pytest.raises(ConfigError, match="Y_train must be"):
        index.fit(W, H, sp.csr_matrix((40, 299)), bias=b, epochs=1)
    with pytest.raises(ConfigError, match="H_train must have shape"):
        index.fit(W, H[:, :5], sp.csr_matrix((40, 300)), bias=b, epochs=1)
    index.fit(W, bias=b, epochs=0)
    with pytest.raises(ConfigError, match="k=301"):
        index.search(H, W, b, k=301)
    with pytest.raises(ConfigError, match="W has 299 labels"):
        index.search(H, W[:-1], b[:-1])
    with pytest.raises(ConfigError, match="H must have shape"):
        index.candidates(H[:, :3])



def test_compare_hash_indexes_reports_simhash_and_learned(one_thread):
    # on a model's own label vectors (here an untrained group-shared head with padded groups): both
    # indexes, progress from 0 to 1, exact scoring run once and shared by both rows
    ds = generate(n_points=200, n_features=40, n_labels=50, n_clusters=5, seed=2, name="padded")
    model = Trainer(TrainConfig.of(data="padded", head="group_shared", hidden=16, fanin=6, group_size=7),
                    dataset=ds).model
    stages = []
    rows = compare_hash_indexes(model, ds, n_tables=2, n_bits=3, fit_epochs=1,
                                progress=lambda i, n, text: stages.append(i / n))
    assert [r["index"] for r in rows] == ["SimHash", "learned"] and stages[0] == 0 and stages[-1] == 1
    assert rows[0]["exact_s"] == rows[1]["exact_s"] and rows[0]["P@1_exact"] == rows[1]["P@1_exact"]   # timed once
    assert all(r["n_labels"] == 50 and 0 <= r["recall"] <= 1 and r["fit_s"] >= 0 for r in rows)

@pytest.mark.slow
def test_experiment_meets_the_bar_at_small_scale():
    # run_lss_experiment end to end on 20,000 labels (the 100,000-label run takes ~15 min on two
    # shared cores): learned candidates <= 10% of labels, >= 95% of exact P@1, faster than exact
    out = run_lss_experiment(n_labels=20_000, n_points=16_000, n_features=2_000, n_clusters=200,
                             hidden=64, model_epochs=3, n_tables=12, n_bits=7, fit_epochs=2)
    learned, simhash = out["learned"], out["simhash"]
    assert all(out["bar"].values()), out
    assert learned["recall"] > simhash["recall"] and learned["P@1_ratio"] > simhash["P@1_ratio"], out
