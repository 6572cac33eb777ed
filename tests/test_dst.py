"""Tests of engine/dst.py: schedule, invariants, what is dropped and regrown, optimizer state, learning."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.data import generate
from engine.dst import DSTConfig, DynamicSparsity, drop_fraction, sample_absent
from engine.errors import ConfigError
from engine.grouping import random_groups
from engine.heads import DenseHead, GroupSharedHead

BACKEND = "reference"       # DST does not depend on the kernels; float64 numpy is quickest on tiny shapes


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny shapes: one intra-op thread (two threads on a busy machine cost ~10 ms per op)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_head(d=40, L=30, k=8, m=4, seed=0):
    """A head with random weights and a filled Adam state (one step on a random loss)."""
    head = GroupSharedHead(d, L, k, group_size=m, seed=seed, backend=BACKEND)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(16, d, generator=gen)
    head(h).square().mean().backward()
    opt.step()
    return head, opt


def grads(head, seed=0, B=16):
    gen = torch.Generator().manual_seed(seed + 100)
    return torch.randn(B, head.in_features, generator=gen), torch.randn(B, head.n_labels, generator=gen)


def check_index(head):
    idx = head.idx.numpy()
    assert idx.dtype == np.int32 and idx.shape == (head.n_groups, head.fanin)
    assert idx.min() >= 0 and idx.max() < head.in_features
    assert (np.diff(np.sort(idx, axis=1), axis=1) > 0).all()           # distinct per group


# ---------------------------------------------------------------------------------------------
# config and schedule

@pytest.mark.parametrize("kw,match", [
    (dict(zeta=0.0), "zeta=0.0"), (dict(zeta=1.0), "zeta=1.0"), (dict(zeta=-0.1), "zeta"),
    (dict(zeta=float("nan")), "zeta"), (dict(zeta=True), "zeta"),
    (dict(every=0), "every=0"), (dict(every=2.5), "every=2.5"),
    (dict(stop_fraction=0.0), "stop_fraction=0.0"), (dict(stop_fraction=1.5), "stop_fraction"),
    (dict(regrow="magnitude"), "regrow='magnitude'"), (dict(seed=-1), "seed=-1"),
])
def test_config_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        DSTConfig(**kw)


def test_dynamic_sparsity_errors():
    head, _ = make_head()
    with pytest.raises(ConfigError, match="total_steps=0"):
        DynamicSparsity(head, DSTConfig(), 0)
    with pytest.raises(ConfigError, match="GroupSharedHead"):
        DynamicSparsity(DenseHead(4, 3), DSTConfig(), 10)
    with pytest.raises(ConfigError, match="nothing to regrow"):
        DynamicSparsity(GroupSharedHead(8, 5, 8), DSTConfig(), 10)
    with pytest.raises(ConfigError, match="padded"):
        DynamicSparsity(head, DSTConfig(), 10, padded=np.zeros(5, bool))
    dst = DynamicSparsity(head, DSTConfig(every=1, regrow="gradient"), 10)
    with pytest.raises(ValueError, match="needs h"):
        dst.update(1)
    with pytest.raises(ValueError, match="dZ has shape"):
        dst.update(1, h=torch.zeros(4, 40), dZ=torch.zeros(4, 7))


def test_schedule_shape():
    cfg = DSTConfig(zeta=0.4, stop_fraction=0.5)
    T = 1000
    z = np.array([drop_fraction(t, T, cfg) for t in range(T + 1)])
    assert z[0] == pytest.approx(0.4) and z[250] == pytest.approx(0.2)
    assert (np.diff(z[:500]) < 0).all()                                # cosine decay
    assert (z[500:] == 0).all()                                        # nothing from the stop on
    np.testing.assert_allclose(z[:500], 0.2 * (1 + np.cos(np.pi * np.arange(500) / 500)))


def test_no_updates_after_stop_fraction():
    head, opt = make_head()
    dst = DynamicSparsity(head, DSTConfig(every=7, zeta=0.5, stop_fraction=0.6), total_steps=100)
    steps = dst.update_steps()
    assert steps and all(t % 7 == 0 and t < 60 for t in steps)
    for t in range(0, 101):
        rec = dst.update(t, opt)
        assert (rec is not None) == (t in steps)
        if rec:
            assert rec["step"] == t and rec["zeta"] == pytest.approx(drop_fraction(t, 100, dst.cfg))
            assert rec["n_per_group"] == round(rec["zeta"] * head.fanin)


# ---------------------------------------------------------------------------------------------
# one update: invariants and what changes

@pytest.mark.parametrize("regrow", ["random", "gradient"])
@pytest.mark.parametrize("m", [1, 4])
def test_invariants_after_many_updates(regrow, m):
    head, opt = make_head(d=24, L=30, k=10, m=m)
    dst = DynamicSparsity(head, DSTConfig(every=1, zeta=0.9, stop_fraction=1.0, regrow=regrow), 60)
    h, dZ = grads(head)
    for t in range(1, 60):
        rec = dst.update(t, opt, h=h, dZ=dZ)
        if rec is None:
            continue
        check_index(head)
        G, n = head.n_groups, rec["n_per_group"]
        assert rec["dropped"] == rec["added"] == G * n == len(rec["new_input"])
        assert rec["churn"] == [n] * G
        assert not set(zip(rec["group"], rec["old_input"])) & set(zip(rec["group"], rec["new_input"]))
    assert dst.drift().max() > 0 and (dst.drift() <= head.fanin).all()
    json.dumps(rec)                                                    # records go to the run store


@pytest.mark.parametrize("regrow", ["random", "gradient"])
def test_update_drops_smallest_zeroes_new_weights_and_adam_state(regrow):
    head, opt = make_head(d=40, L=30, k=8, m=4)                         # 8 groups, 2 padded slots
    G, m, k = head.n_groups, head.group_size, head.fanin
    with torch.no_grad():
        head.weight.view(G * m, k)[head.n_labels:] = 100.0             # padding must not count
    W0, idx0 = head.weight.detach().clone(), head.idx.numpy().copy()
    state0 = {key: v.clone() for key, v in opt.state[head.weight].items() if torch.is_tensor(v)}
    dst = DynamicSparsity(head, DSTConfig(every=5, zeta=0.5, regrow=regrow), total_steps=100)
    h, dZ = grads(head)
    rec = dst.update(5, opt, h=h, dZ=dZ)
    n = rec["n_per_group"]
    assert n == round(drop_fraction(5, 100, dst.cfg) * k) > 0
    g, t = np.array(rec["group"]), np.array(rec["slot"])
    np.testing.assert_array_equal(np.array(rec["old_input"]), idx0[g, t])
    np.testing.assert_array_equal(head.idx.numpy()[g, t], rec["new_input"])
    real = torch.ones(G * m)
    real[head.n_labels:] = 0
    mag = (W0.abs() * real.view(G, m, 1)).sum(1).numpy()               # (G, k)
    changed = np.zeros((G, k), bool)
    changed[g, t] = True
    assert (changed.sum(1) == n).all()
    for i in range(G):                                                 # dropped = the n smallest
        assert mag[i, changed[i]].max() <= mag[i, ~changed[i]].min()
    W1 = head.weight.detach()
    mask = torch.from_numpy(changed)[:, None, :].expand(G, m, k)
    assert (W1[mask] == 0).all() and torch.equal(W1[~mask], W0[~mask])
    np.testing.assert_array_equal(head.idx.numpy()[~changed], idx0[~changed])
    for key in ("exp_avg", "exp_avg_sq"):
        v = opt.state[head.weight][key]
        assert (v[mask] == 0).all() and torch.equal(v[~mask], state0[key][~mask]), key
    assert torch.equal(opt.state[head.weight]["step"], state0["step"])


@pytest.mark.parametrize("m,L", [(1, 12), (3, 13)])
def test_gradient_regrowth_matches_brute_force(m, L):
    head, opt = make_head(d=20, L=L, k=5, m=m)
    h, dZ = grads(head, B=9)
    idx0 = head.idx.numpy().copy()
    dst = DynamicSparsity(head, DSTConfig(every=1, zeta=0.5, regrow="gradient"), total_steps=10)
    rec = dst.update(1, opt, h=h, dZ=dZ)
    n = rec["n_per_group"]
    dense = np.abs(dZ.double().numpy().T @ h.double().numpy())         # (L, d): the dense dW
    dense = np.concatenate([dense, np.zeros((head.n_groups * m - L, 20))])
    score = dense.reshape(head.n_groups, m, 20).sum(1)                 # (G, d)
    new = np.array(rec["new_input"]).reshape(head.n_groups, n)
    for i in range(head.n_groups):
        score[i, idx0[i]] = -np.inf
        assert set(new[i].tolist()) == set(np.argsort(-score[i])[:n].tolist())
    # the same from a function handing out dZ by group chunk
    head2, opt2 = make_head(d=20, L=L, k=5, m=m)
    dZpad = F.pad(dZ, (0, head.n_groups * m - L))
    dst2 = DynamicSparsity(head2, DSTConfig(every=1, zeta=0.5, regrow="gradient"), total_steps=10)
    rec2 = dst2.update(1, opt2, h=h, dZ=lambda g0, g1: dZpad[:, g0 * m:g1 * m])
    assert rec2["new_input"] == rec["new_input"]


def test_random_regrowth_is_uniform_over_absent_inputs():
    # rows with inputs {0, 3, 4, 9} of d = 10: 6 absent inputs, each drawn with probability n/6
    rng = np.random.default_rng(0)
    idx = np.tile(np.array([9, 3, 0, 4]), (30000, 1))
    new = sample_absent(idx, 10, 2, rng)
    assert (new[:, 0] != new[:, 1]).all()
    freq = np.bincount(new.ravel(), minlength=10) / idx.shape[0]
    np.testing.assert_array_equal(freq[[0, 3, 4, 9]], 0)
    np.testing.assert_allclose(freq[[1, 2, 5, 6, 7, 8]], 2 / 6, atol=0.015)
    pairs = np.bincount((new.min(1) * 10 + new.max(1)), minlength=100)
    assert (pairs > 0).sum() == 15                                     # every pair of the 6 occurs
    full = sample_absent(np.array([[5, 1]]), 6, 4, rng)                # n = every absent input
    assert sorted(full[0].tolist()) == [0, 2, 3, 4]


def test_padded_slots_from_label_groups():
    # groups spread the padding: slot 3 of group 0 is padded, its huge weights must not count
    groups = random_groups(7, 4, seed=0)                               # sizes 4, 3
    head, opt = make_head(d=30, L=groups.n_slots, k=6, m=4)
    with torch.no_grad():
        head.weight.view(-1, 6)[torch.from_numpy(groups.padded_slots)] = torch.arange(6.0) * 100
    dst = DynamicSparsity(head, DSTConfig(every=1, zeta=0.5), 10, padded=groups.padded_slots)
    W0 = head.weight.detach().clone()
    rec = dst.update(1, opt)
    keep = torch.from_numpy(~groups.padded_slots).view(2, 4, 1)
    mag = (W0.abs() * keep).sum(1)
    for i in range(2):
        dropped = [t for g, t in zip(rec["group"], rec["slot"]) if g == i]
        kept = sorted(set(range(6)) - set(dropped))
        assert mag[i, dropped].max() <= mag[i, kept].min()


def test_deterministic_per_seed():
    def run(seed):
        head, opt = make_head()
        dst = DynamicSparsity(head, DSTConfig(every=2, zeta=0.5, seed=seed), 40)
        for t in range(1, 40):
            dst.update(t, opt)
        return head.idx.numpy().copy()
    np.testing.assert_array_equal(run(0), run(0))
    assert not np.array_equal(run(0), run(1))


# ---------------------------------------------------------------------------------------------
# training

@pytest.mark.parametrize("regrow", ["random", "gradient"])
def test_training_with_dst_learns(regrow):
    ds = generate(n_points=600, n_features=120, n_labels=48, n_clusters=6, seed=1)
    X = torch.from_numpy(ds.X_train.toarray())
    Y = torch.from_numpy(ds.Y_train.toarray())
    torch.manual_seed(0)
    head = GroupSharedHead(120, 48, fanin=12, group_size=4, seed=0, backend=BACKEND)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    T = 80
    dst = DynamicSparsity(head, DSTConfig(every=5, zeta=0.3, stop_fraction=0.8, regrow=regrow), T)
    gen = np.random.default_rng(0)
    losses, n_updates = [], 0
    for t in range(1, T + 1):
        rows = torch.from_numpy(gen.choice(X.shape[0], 64, replace=False))
        h = X[rows]
        logits = head(h)
        logits.retain_grad()
        loss = F.binary_cross_entropy_with_logits(logits, Y[rows], reduction="sum") / len(rows)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        n_updates += dst.update(t, opt, h=h, dZ=logits.grad) is not None
        check_index(head)
    assert n_updates == len(dst.update_steps()) >= 8
    first, last = np.mean(losses[:5]), np.mean(losses[-10:])
    assert last < 0.6 * first, (first, last)
