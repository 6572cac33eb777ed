"""Tests for engine/metrics.py: hand-worked toy answers, a slow plain-Python cross-check, errors."""

import math

import numpy as np
import pytest
import scipy.sparse as sp

from engine.errors import ConfigError
from engine.metrics import (coverage_at_k, evaluate, inv_propensity, ndcg_at_k, precision_at_k,
                            propensity, psp_at_k, top_k)

# -----------------------------------------------------------------------------
# the toy: 3 points, 6 labels
#   point 0: labels {0, 2}      top [2, 1, 0]   hits [1, 0, 1]
#   point 1: labels {2, 3, 5}   top [4, 2, -1]  hits [0, 1, 0]   (-1 = no prediction)
#   point 2: no labels          top [0, 1, 2]   hits [0, 0, 0]   (counts, contributes 0)
# label 2 is relevant to two points; inverse propensities 1/p_l = l + 1.

L = 6
LABELS = [[0, 2], [2, 3, 5], []]
TOP = np.array([[2, 1, 0], [4, 2, -1], [0, 1, 2]])
INV_P = np.arange(1.0, L + 1)  # [1, 2, 3, 4, 5, 6]
W2, W3 = 1 / math.log2(3), 1 / math.log2(4)  # rank discounts: w_1 = 1, w_2, w_3 = 1/2


def csr(labels, L, dtype=np.float32):
    rows = [i for i, ls in enumerate(labels) for _ in ls]
    cols = [l for ls in labels for l in ls]
    return sp.csr_matrix((np.ones(len(cols), dtype), (rows, cols)), shape=(len(labels), L))


Y = csr(LABELS, L)

EXPECTED = {
    "P@1": 1 / 3,  # (1 + 0 + 0) / 3
    "P@3": (2 / 3 + 1 / 3 + 0) / 3,  # = 1/3
    "nDCG@1": (1 + 0 + 0) / 3,
    # point 0: DCG = 1 + w3 = 1.5, IDCG = 1 + w2 (2 labels)
    # point 1: DCG = w2, IDCG = 1 + w2 + w3 (3 labels)
    "nDCG@3": ((1 + W3) / (1 + W2) + W2 / (1 + W2 + W3) + 0) / 3,
    # numerator: point 0 hits label 2 at rank 1 -> 3
    # denominator: best of {1, 3} + best of {3, 4, 6} = 3 + 6
    "PSP@1": 3 / 9,
    # numerator: point 0 hits labels 2, 0 -> 3 + 1; point 1 hits label 2 -> 3; total 7
    # denominator: point 0 {1, 3} -> 4; point 1 {3, 4, 6} -> 13; point 2 -> 0; total 17
    "PSP@3": 7 / 17,
    # relevant labels {0, 2, 3, 5}; correct at rank 1: {2}; in the top 3: {2, 0}
    # (point 2 predicts 0 and 2 as well, but it has no labels: no credit)
    "cov@1": 1 / 4,
    "cov@3": 2 / 4,
}


def test_toy_each_metric():
    # every public metric against the hand-worked values above
    assert precision_at_k(Y, TOP, 1) == pytest.approx(EXPECTED["P@1"])
    assert precision_at_k(Y, TOP, 3) == pytest.approx(EXPECTED["P@3"])
    assert ndcg_at_k(Y, TOP, 1) == pytest.approx(EXPECTED["nDCG@1"])
    assert ndcg_at_k(Y, TOP, 3) == pytest.approx(EXPECTED["nDCG@3"])
    assert psp_at_k(Y, TOP, 1, INV_P) == pytest.approx(EXPECTED["PSP@1"])
    assert psp_at_k(Y, TOP, 3, INV_P) == pytest.approx(EXPECTED["PSP@3"])
    assert coverage_at_k(Y, TOP, 1) == pytest.approx(EXPECTED["cov@1"])
    assert coverage_at_k(Y, TOP, 3) == pytest.approx(EXPECTED["cov@3"])


def test_toy_evaluate_keys_and_values():
    # key order P, nDCG, PSP, cov; values as above; PSP keys only with inv_propensity
    m = evaluate(Y, TOP, ks=(1, 3), inv_propensity=INV_P)
    assert list(m) == ["P@1", "P@3", "nDCG@1", "nDCG@3", "PSP@1", "PSP@3", "cov@1", "cov@3"]
    assert m == pytest.approx(EXPECTED)
    assert all(isinstance(v, float) for v in m.values())
    assert list(evaluate(Y, TOP, ks=(1, 3))) == ["P@1", "P@3", "nDCG@1", "nDCG@3", "cov@1", "cov@3"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int8, bool])
def test_toy_any_dtype_stored_zeros_and_duplicates(dtype):
    # nonzero = relevant: a stored 0 (point 2, label 0) is not a label; COO duplicates sum
    rows = [0, 0, 1, 1, 1, 2, 0]
    cols = [0, 2, 2, 3, 5, 0, 2]
    vals = np.array([1, 1, 1, 1, 1, 0, 1], dtype=dtype)
    Yz = sp.coo_matrix((vals, (rows, cols)), shape=(3, L))
    assert evaluate(Yz, TOP, ks=(1, 3), inv_propensity=INV_P) == pytest.approx(EXPECTED)
    if dtype is not bool:  # any nonzero value counts as relevant
        Yc = Y.astype(dtype)
        Yc.data[:] = 7
        assert precision_at_k(Yc, TOP, 3) == pytest.approx(EXPECTED["P@3"])


def test_toy_perfect_and_empty_predictions():
    # a ranking that puts the labels first scores 1 on nDCG and PSP (normalised),
    # P@3 = (2/3 + 3/3 + 0) / 3 = 5/9, and all -1 scores 0
    best = np.array([[2, 0, -1], [5, 3, 2], [-1, -1, -1]])
    m = evaluate(Y, best, ks=(3,), inv_propensity=INV_P)
    assert m["P@3"] == pytest.approx(5 / 9)
    assert m["nDCG@3"] == pytest.approx(2 / 3)  # point 2 has no labels: 0 in the mean
    assert m["PSP@3"] == pytest.approx(1.0)
    assert m["cov@3"] == pytest.approx(1.0)
    none = np.full((3, 3), -1)
    assert set(evaluate(Y, none, ks=(1, 3), inv_propensity=INV_P).values()) == {0.0}


def test_toy_top_wider_than_k_and_int32():
    # only the first k columns count; extra columns (even bad ones) are not looked at
    wide = np.hstack([TOP, np.full((3, 2), 99)]).astype(np.int32)
    assert precision_at_k(Y, wide, 3) == pytest.approx(EXPECTED["P@3"])


def test_propensity_hand_worked():
    # N = 100, A = 0.55, B = 1.5; label 0 has N_l = 10 positives, label 1 none, label 2 all 100
    # C = (ln 100 - 1) * 2.5^0.55 = 3.605170 * 1.655263 = 5.967505
    # label 0: 11.5^-0.55 = 0.260985 -> p = 1 / (1 + 5.967505 * 0.260985) = 1 / 2.557432 = 0.391017
    # label 1:  1.5^-0.55 = 0.800110 -> p = 1 / (1 + 4.774662) = 0.173170
    # label 2: 101.5^-0.55 = 0.078785 -> p = 1 / (1 + 0.470145) = 0.680203
    labels = [[0, 2] if i < 10 else [2] for i in range(100)]
    p = propensity(csr(labels, 3))
    assert p.shape == (3,) and p.dtype == np.float64
    np.testing.assert_allclose(p, [0.3910173106, 0.1731703250, 0.6802026944], rtol=1e-9)
    np.testing.assert_allclose(inv_propensity(csr(labels, 3)), 1 / p)
    # other A, B: formula written out
    A, B = 0.6, 2.6
    C = (math.log(100) - 1) * (B + 1) ** A
    assert propensity(csr(labels, 3), A, B)[0] == pytest.approx(1 / (1 + C * (10 + B) ** -A))


# -----------------------------------------------------------------------------
# cross-check against plain Python loops on random data


def slow_metrics(labels, top, k, inv_p, L):
    N = len(labels)
    prec = ndcg = num = den = 0.0
    covered = set()
    for i in range(N):
        y = set(labels[i])
        for r in range(k):
            l = int(top[i][r])
            if l in y:
                prec += 1 / k
                idcg = sum(1 / math.log2(j + 2) for j in range(min(k, len(y))))
                ndcg += 1 / math.log2(r + 2) / idcg
                num += inv_p[l]
                covered.add(l)
        den += sum(sorted((inv_p[l] for l in y), reverse=True)[:k])
    relevant = {l for y in labels for l in y}
    return {f"P@{k}": prec / N, f"nDCG@{k}": ndcg / N, f"PSP@{k}": num / den if den else 0.0,
            f"cov@{k}": len(covered) / len(relevant) if relevant else 0.0}


@pytest.mark.parametrize("seed", range(6))
def test_matches_slow_loops(seed):
    rng = np.random.default_rng(seed)
    N, L, K = 40, 25, 7
    labels = [sorted(rng.choice(L, rng.integers(0, 9), replace=False).tolist()) for _ in range(N)]
    Yr = csr(labels, L)
    # predictions: half the time biased toward the true labels, with some -1 tails
    top = np.stack([rng.permutation(L)[:K] for _ in range(N)])
    for i in range(0, N, 2):
        for r, l in enumerate(labels[i][:3]):
            top[i][top[i] == l] = top[i][r]
            top[i][r] = l
    top[rng.random((N, K)) < 0.1] = -1
    top[rng.random((N, K)) < 0.1] = -1
    Ytrain = csr([rng.choice(L, rng.integers(1, 6), replace=False) for _ in range(200)], L)
    w = inv_propensity(Ytrain)
    ks = (1, 3, 5, 7)
    m = evaluate(Yr, top, ks=ks, inv_propensity=w)
    for k in ks:
        slow = slow_metrics(labels, top, k, w, L)
        for key, value in slow.items():
            assert m[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key
        assert precision_at_k(Yr, top, k) == m[f"P@{k}"]
        assert ndcg_at_k(Yr, top, k) == m[f"nDCG@{k}"]
        assert psp_at_k(Yr, top, k, w) == m[f"PSP@{k}"]
        assert coverage_at_k(Yr, top, k) == m[f"cov@{k}"]
        assert all(0.0 <= m[key] <= 1.0 for key in slow)


def test_propensity_matches_loop():
    rng = np.random.default_rng(0)
    N, L = 300, 50
    labels = [rng.choice(L, rng.integers(0, 6), replace=False) for _ in range(N)]
    p = propensity(csr(labels, L), A=0.5, B=0.4)
    for l in range(L):
        N_l = sum(l in y for y in labels)
        C = (math.log(N) - 1) * (0.4 + 1) ** 0.5
        assert p[l] == pytest.approx(1 / (1 + C * math.exp(-0.5 * math.log(N_l + 0.4))), rel=1e-12)


# -----------------------------------------------------------------------------
# top_k


def test_top_k_numpy_and_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((20, 50))
    ids = top_k(scores, 5)
    assert ids.shape == (20, 5) and ids.dtype == np.int64
    np.testing.assert_array_equal(ids, np.argsort(-scores, axis=1)[:, :5])
    t = top_k(torch.from_numpy(scores), 5)
    assert isinstance(t, torch.Tensor)
    np.testing.assert_array_equal(t.numpy(), ids)
    np.testing.assert_array_equal(top_k(scores, 50), np.argsort(-scores, axis=1))  # k = L
    # metrics accept the torch ids directly
    Yr = sp.csr_matrix((scores > 1.0).astype(np.float32))
    assert precision_at_k(Yr, t, 5) == precision_at_k(Yr, ids, 5)


def test_top_k_hand():
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [3.0, -1.0, 2.0, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(top_k(scores, 3), [[1, 3, 2], [0, 2, 3]])


@pytest.mark.parametrize("k", [0, -1, 5, 2.0, True])
def test_top_k_bad_k(k):
    with pytest.raises(ConfigError, match="k"):
        top_k(np.zeros((2, 4)), k)


def test_top_k_bad_shape():
    with pytest.raises(ConfigError, match="2-D"):
        top_k(np.zeros(4), 1)


# -----------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("k", [0, -2, 4, 1.5, True, None])
def test_bad_k(k):
    with pytest.raises(ConfigError, match=r"k=") as e:
        precision_at_k(Y, TOP, k)
    assert repr(k) in str(e.value)


@pytest.mark.parametrize("fn", [precision_at_k, ndcg_at_k, coverage_at_k])
@pytest.mark.parametrize("top, match", [
    (TOP[:2], r"shape \(N=3, K\)"),  # wrong number of rows
    (TOP[:, 0], r"shape \(N=3, K\)"),  # 1-D
    (TOP.astype(float), "dtype float64"),
    (np.array([[2, 1, 0], [4, 2, 6], [0, 1, 2]]), "label id 6"),  # >= L
    (np.array([[2, 1, 0], [4, 2, -2], [0, 1, 2]]), "label id -2"),
    (np.array([[2, 1, 2], [4, 2, -1], [0, 1, 2]]), "row 0 predicts label 2 more than once"),
])
def test_bad_top(fn, top, match):
    with pytest.raises(ConfigError, match=match):
        fn(Y, top, 1 if top.ndim == 1 else 3)


def test_repeated_minus_one_is_fine():
    # several -1 in a row are not duplicates; P@3 = (1/3 + 0 + 0) / 3
    top = np.array([[2, -1, -1], [-1, -1, -1], [0, -1, -1]])
    assert precision_at_k(Y, top, 3) == pytest.approx(1 / 9)


def test_bad_y_true():
    with pytest.raises(ConfigError, match="scipy.sparse.*ndarray"):
        precision_at_k(Y.toarray(), TOP, 1)
    with pytest.raises(ConfigError, match="N=0"):
        precision_at_k(sp.csr_matrix((0, L)), np.zeros((0, 1), dtype=int), 1)


def test_bad_inv_propensity():
    with pytest.raises(ConfigError, match=r"shape \(L=6,\), got \(5,\)"):
        psp_at_k(Y, TOP, 1, INV_P[:5])
    with pytest.raises(ConfigError, match=r"shape \(L=6,\)"):
        evaluate(Y, TOP, ks=(1,), inv_propensity=np.ones((6, 1)))
    with pytest.raises(ConfigError, match="non-finite"):
        psp_at_k(Y, TOP, 1, np.full(6, np.inf))


@pytest.mark.parametrize("ks", [(), (0, 1), (1, 4), ("1",)])
def test_bad_ks(ks):
    with pytest.raises(ConfigError):
        evaluate(Y, TOP, ks=ks)


def test_bad_propensity_args():
    with pytest.raises(ConfigError, match="N=2"):
        propensity(csr([[0], [1]], 3))
    with pytest.raises(ConfigError, match="B=0"):
        propensity(Y, B=0)
    with pytest.raises(ConfigError, match="scipy.sparse"):
        propensity(np.ones((5, 3)))
