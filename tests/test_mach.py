"""Tests of engine/heads/mach.py: the hash family, bucket targets, decoding, loss gradients, a small
training run against the most-popular-label baseline, and the errors of bad settings."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from engine import metrics
from engine.data import generate
from engine.errors import ConfigError
from engine.heads import MachHead
from engine.heads.mach import PRIME, universal_hashes
from engine.model import SparseInput


def test_hashes_in_range_and_deterministic_per_seed():
    # every bucket in [0, B); the same seed gives the same table, another seed another one
    a = MachHead(8, 1000, 37, 5, seed=3).bucket_of
    assert a.shape == (5, 1000) and a.dtype == torch.int64
    assert int(a.min()) >= 0 and int(a.max()) < 37
    assert torch.equal(a, MachHead(8, 1000, 37, 5, seed=3).bucket_of)
    assert not torch.equal(a, MachHead(8, 1000, 37, 5, seed=4).bucket_of)


def test_hashes_match_formula_and_reps_differ():
    # row r is ((a_r·l + b_r) mod p) mod B, with a_r in [1, p), b_r in [0, p); rows differ
    L, B, R = 5000, 50, 6
    bucket_of, a, b = universal_hashes(L, B, R, seed=0)
    assert ((a >= 1) & (a < PRIME)).all() and ((b >= 0) & (b < PRIME)).all()
    for r in range(R):
        want = [((int(a[r]) * l + int(b[r])) % PRIME) % B for l in range(0, L, 97)]
        assert bucket_of[r, ::97].tolist() == want
    for r in range(R):
        for s in range(r + 1, R):
            # independent hashes: agreement near 1/B, far from 1
            assert (bucket_of[r] == bucket_of[s]).mean() < 0.1
    # buckets roughly balanced: every bucket holds between half and twice its share
    counts = np.bincount(bucket_of[0], minlength=B)
    assert counts.min() > L / B / 2 and counts.max() < 2 * L / B


def test_bucket_targets_by_hand():
    # 2 reps, 3 buckets, 5 labels; the table is set by hand
    head = MachHead(4, 5, n_buckets=3, n_reps=2)
    head.bucket_of.copy_(torch.tensor([[0, 1, 2, 0, 1],
                                       [2, 2, 0, 1, 0]]))
    Y = sp.csr_matrix(np.array([[1, 0, 0, 1, 0],       # labels 0, 3 -> rep0 {0}, rep1 {2, 1}
                                [0, 1, 1, 0, 0],       # labels 1, 2 -> rep0 {1, 2}, rep1 {2, 0}
                                [0, 0, 0, 0, 0]], np.float32))
    want = torch.tensor([[[1, 0, 0], [0, 1, 1]],
                         [[0, 1, 1], [1, 0, 1]],
                         [[0, 0, 0], [0, 0, 0]]], dtype=torch.float32)
    assert torch.equal(head.bucket_targets(Y), want)
    assert torch.equal(head.bucket_targets(torch.from_numpy(Y.toarray())), want)   # dense Y alike
    # loss = summed BCE over reps and buckets, averaged over the batch
    logits = torch.randn(3, 2, 3)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, want, reduction="none")
    assert torch.allclose(head.loss(logits, Y), bce.sum() / 3)


def test_decode_equals_brute_force_loop():
    torch.manual_seed(0)
    head = MachHead(6, 40, n_buckets=7, n_reps=3, seed=1)
    h = torch.randn(5, 6)
    logits = head(h)
    assert logits.shape == (5, 3, 7)
    got = head.scores(logits)
    p = torch.sigmoid(logits)
    want = torch.zeros(5, 40)
    for n in range(5):
        for l in range(40):
            want[n, l] = sum(p[n, r, head.bucket_of[r, l]] for r in range(3)) / 3
    assert torch.allclose(got, want, atol=1e-6)
    # chunked top-k: the same set as top-k over the full score matrix, scores descending
    for chunk in (1 << 22, 5 * 6):                                  # one chunk; chunks of 6 labels
        top = head.topk(h, 4, chunk_elems=chunk)
        assert top.shape == (5, 4)
        s = torch.gather(want, 1, top)
        assert (s[:, :-1] >= s[:, 1:] - 1e-7).all()
        assert torch.allclose(s, torch.topk(want, 4).values, atol=1e-6)


def test_loss_gradcheck_float64():
    torch.manual_seed(0)
    head = MachHead(5, 12, n_buckets=4, n_reps=3).double()
    h = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    Y = sp.random(3, 12, density=0.3, format="csr", random_state=0)
    assert torch.autograd.gradcheck(lambda x: head.loss(head(x), Y), (h,))
    assert torch.autograd.gradcheck(lambda w: head.loss(torch.nn.functional.linear(h, w, head.bias)
                                                        .view(3, 3, 4), Y), (head.weight,))


def test_init_bucket_prior_matches_target_frequency():
    Y = sp.random(50, 30, density=0.1, format="csr", random_state=1)
    head = MachHead(4, 30, n_buckets=5, n_reps=2)
    head.init_bucket_prior(Y)
    n = head.bucket_targets(Y).sum(0).reshape(-1).double()
    p = (n + 0.5) / 51
    assert torch.allclose(head.bias.double(), torch.log(p / (1 - p)), atol=1e-5)


def test_learns_well_above_popularity_baseline():
    # encoder + MACH with R·B = L/4 on synthetic data: P@1 far above "always the most popular"
    torch.manual_seed(0)
    ds = generate(n_points=4000, n_features=1000, n_labels=2000, n_clusters=50, seed=0)
    R, B = 4, ds.n_labels // 16                                      # R·B = L/4
    emb = torch.nn.EmbeddingBag(ds.n_features, 128, mode="sum")
    head = MachHead(128, ds.n_labels, B, R, seed=0)
    head.init_bucket_prior(ds.Y_train)
    opt = torch.optim.Adam([*emb.parameters(), *head.parameters()], lr=3e-3)

    def encode(X):
        x = SparseInput(X)
        return torch.relu(emb(x.indices, x.offsets, per_sample_weights=x.weights))

    rng = np.random.default_rng(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                                         # small ops: threads only cost
    try:
        for _ in range(4):
            for rows in np.array_split(rng.permutation(ds.n_train), ds.n_train // 128):
                rows = np.sort(rows)
                loss = head.loss(head(encode(ds.X_train[rows])), ds.Y_train[rows])
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            top = head.topk(encode(ds.X_test), 1).numpy()
    finally:
        torch.set_num_threads(threads)
    popular = int(np.asarray(ds.Y_train.sum(0)).argmax())
    baseline = metrics.precision_at_k(ds.Y_test, np.full((ds.n_test, 1), popular), 1)
    p1 = metrics.precision_at_k(ds.Y_test, top, 1)
    assert p1 > baseline + 0.3, (p1, baseline)


def test_n_params_and_repr():
    head = MachHead(16, 1000, n_buckets=50, n_reps=4)
    assert sum(p.numel() for p in head.parameters()) == 16 * 200 + 200                          # O(d·R·B), not O(d·L)
    assert "n_buckets=50" in repr(head) and "n_reps=4" in repr(head)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_buckets=1), "n_buckets=1"),
    (dict(n_reps=0), "n_reps=0"),
    (dict(n_labels=0), "n_labels=0"),
    (dict(in_features=0), "in_features=0"),
    (dict(n_buckets=2.5), "n_buckets=2.5"),
    (dict(seed=-1), "seed=-1"),
])
def test_bad_settings_raise_config_error(kwargs, match):
    args = dict(in_features=8, n_labels=100, n_buckets=10, n_reps=2) | kwargs
    with pytest.raises(ConfigError, match=match):
        MachHead(**args)


def test_bad_k_raises():
    head = MachHead(4, 10, n_buckets=3, n_reps=2)
    with pytest.raises(ConfigError, match="k=11"):
        head.topk(torch.randn(2, 4), 11)
