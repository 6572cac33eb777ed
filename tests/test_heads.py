"""Tests of engine/heads: kernels against the float64 reference, autograd, index sets, settings.

Each backend's layer ops (forward, backward, grad_input, grad_weight) are checked by one helper,
check_op (tests/checks.py): seeded inputs, the forward and every gradient against the float64
reference, gradcheck in float64; each shape case is then one line per backend and dtype.
"""

import time

import numpy as np
import pytest
import torch

from engine.errors import ConfigError
from engine.heads import DenseHead, GroupSharedHead, group_shared_linear
from engine.heads import cpu, reference
from engine.heads.group_shared import random_index, resolve_backend

from checks import BACKENDS, DTYPES, check_op, close as _close, make_case

SHAPES = [  # B, d, G, k, m, L
    (1, 13, 5, 5, 3, 14),          # one row; L = 14 pads the last of 5 groups of 3
    (7, 13, 4, 13, 1, 4),          # k = d, m = 1: plain fixed fan-in
    (7, 13, 9, 1, 4, 33),          # k = 1; L = 33 of 36
    (33, 40, 11, 5, 3, 31),        # k = 5, batch 33: vector tails everywhere
    (17, 64, 4, 32, 32, 100),      # m = 32 with 28 padded labels
    (70, 50, 10, 7, 6, 60),        # B = 64 + 6 (float32: a full 4-vector tile and a tail)
    (64, 50, 13, 6, 5, 63),        # B = 64: aligned rows, non-temporal stores for float32
    (256, 512, 40, 32, 32, 1250),  # the benchmark's group shape, 40 groups
    (9, 20, 1, 3, 7, 7),           # one group: fewer groups than threads
    (5, 300, 50, 33, 2, 99),       # k = 33 (tile remainders), d > B
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=[f"B{s[0]}-d{s[1]}-G{s[2]}-k{s[3]}-m{s[4]}-L{s[5]}" for s in SHAPES])
def test_layer_matches_reference(shape, backend, dtype):
    check_op("layer", backend, shape, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_random_shapes(backend):
    # a handful of random ragged shapes beyond the hand-picked ones
    rng = np.random.default_rng(123)
    for _ in range(8):
        B, d = int(rng.integers(1, 90)), int(rng.integers(1, 70))
        k, m = int(rng.integers(1, d + 1)), int(rng.integers(1, 9))
        L = int(rng.integers(1, 60))
        check_op("layer", backend, (B, d, -(-L // m), k, m, L), np.float32)


def _inputs(B, d, G, k, m, L, dtype):
    c = make_case((B, d, G, k, m, L), dtype)
    return c.X, c.idx, c.W, c.bias, c.dZ


def test_cpu_backward_is_deterministic():
    # per-thread dX buffers are summed in a fixed order: bitwise equal reruns
    X, idx, W, bias, dZ = _inputs(64, 40, 30, 8, 4, 120, np.float32)
    a = cpu.backward(dZ, X, idx, W, True, True, True)
    b = cpu.backward(dZ, X, idx, W, True, True, True)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)


def test_cpu_forward_returns_transposed_view():
    # Z is ZT.T: F-ordered, so a loss that keeps the layout hands back a dZ read in place
    X, idx, W, bias, dZ = _inputs(8, 10, 3, 4, 2, 6, np.float32)
    Z = cpu.forward(X, idx, W, bias, 6)
    assert Z.flags.f_contiguous and Z.T.flags.c_contiguous


# ---------------------------------------------------------------------------------------------
# autograd


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("L,m", [(6, 2), (5, 2), (4, 1)], ids=["L6m2", "L5m2-padded", "L4m1"])
def test_gradcheck_functional(backend, bias, L, m):
    torch.manual_seed(0)
    d, k, G = 6, 3, -(-L // m)
    idx = torch.from_numpy(random_index(G, d, k, seed=1))
    X = torch.randn(3, d, dtype=torch.float64, requires_grad=True)
    W = torch.randn(G, m, k, dtype=torch.float64, requires_grad=True)
    b = torch.randn(L, dtype=torch.float64, requires_grad=True) if bias else None
    args = (X, W) + ((b,) if bias else ())

    def f(X, W, b=None):
        return group_shared_linear(X, idx, W, b, backend=backend, n_labels=L)
    assert torch.autograd.gradcheck(f, args)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_gradcheck_head(backend, bias):
    # the module in float64 (10 labels in groups of 4: 2 padded), then module == functional
    head = GroupSharedHead(7, 10, 3, group_size=4, bias=bias, seed=2, backend=backend).double()
    h = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    W = head.weight.detach().clone().requires_grad_()
    b = head.bias.detach().clone().requires_grad_() if bias else None

    def f(h, W, b=None):
        return group_shared_linear(h, head.idx, W, b, backend=backend, n_labels=head.n_labels)
    assert torch.autograd.gradcheck(f, (h, W) + ((b,) if bias else ()))
    Z = head(h)
    Z.backward(torch.ones_like(Z))
    Zf = f(h.detach(), W, b)
    Zf.backward(torch.ones_like(Zf))
    torch.testing.assert_close(Z, Zf)
    torch.testing.assert_close(head.weight.grad, W.grad)
    if bias:
        torch.testing.assert_close(head.bias.grad, b.grad)


def test_backends_agree_through_autograd():
    torch.manual_seed(0)
    heads = {be: GroupSharedHead(12, 23, 5, group_size=3, seed=4, backend=be) for be in ("cpu", "reference")}
    h = torch.randn(9, 12)
    out = {}
    for be, head in heads.items():
        x = h.clone().requires_grad_()
        Z = head(x)
        (Z.sigmoid() * torch.arange(23.0)).sum().backward()           # a dZ in C order
        out[be] = (Z.detach(), x.grad, head.weight.grad, head.bias.grad)
    for a, b in zip(out["cpu"], out["reference"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_head_output_layout_and_grad_layouts():
    # the cpu head returns an F-ordered (B, L) view; backward accepts either layout
    head = GroupSharedHead(16, 40, 4, group_size=8, seed=1)
    x = torch.randn(5, 16)
    Z = head(x)
    assert Z.shape == (5, 40) and Z.t().is_contiguous()
    g = torch.randn(5, 40)
    grads = []
    for dz in (g, g.t().contiguous().t()):
        head.zero_grad()
        head(x).backward(dz)
        grads.append(head.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_padded_labels_have_no_effect():
    head = GroupSharedHead(10, 7, 3, group_size=4, seed=0)              # G = 2: 8 slots, 7 labels
    assert head.n_groups == 2 and head.weight.shape == (2, 4, 3)
    x = torch.randn(6, 10, requires_grad=True)
    Z = head(x)
    assert Z.shape == (6, 7)
    Z.backward(torch.randn(6, 7))
    assert torch.all(head.weight.grad[1, 3] == 0)                      # label 7 does not exist
    with torch.no_grad():
        head.weight[1, 3] = 1e6
    torch.testing.assert_close(head(x), Z)


def test_head_leading_dims_and_dtype():
    head = GroupSharedHead(8, 9, 2, group_size=3, seed=0)
    h = torch.randn(2, 3, 8)
    assert head(h).shape == (2, 3, 9)
    with pytest.raises(ValueError, match="features"):
        head(torch.randn(4, 7))


# ---------------------------------------------------------------------------------------------
# index sets


def test_random_index_invariants():
    idx = random_index(500, 40, 9, seed=3)
    assert idx.shape == (500, 9) and idx.dtype == np.int32
    assert idx.min() >= 0 and idx.max() < 40
    assert np.all(np.diff(idx, axis=1) > 0)                            # sorted, hence distinct
    assert np.array_equal(idx, random_index(500, 40, 9, seed=3))       # deterministic per seed
    assert not np.array_equal(idx, random_index(500, 40, 9, seed=4))
    counts = np.bincount(idx.ravel(), minlength=40)                    # roughly uniform
    assert counts.min() > 0.7 * counts.mean() and counts.max() < 1.3 * counts.mean()
    assert np.array_equal(random_index(3, 5, 5), np.tile(np.arange(5, dtype=np.int32), (3, 1)))  # k = d


def test_random_index_independent_of_chunking():
    a = random_index(1000, 64, 8, seed=5)
    b = random_index(1000, 64, 8, seed=5, chunk_elems=64 * 7)          # 7 rows per chunk
    assert np.array_equal(a, b)


def test_huge_group_count_init_is_fast():
    t = time.perf_counter()
    idx = random_index(670_091, 512, 32, seed=0)
    dt = time.perf_counter() - t
    assert idx.shape == (670_091, 32) and np.all(np.diff(idx[::997], axis=1) > 0)
    assert dt < 10, f"random_index took {dt:.1f} s for 670,091 groups"


def test_head_index_buffer():
    head = GroupSharedHead(20, 50, 6, group_size=5, seed=7)
    idx = head.idx
    assert idx.dtype == torch.int32 and tuple(idx.shape) == (10, 6)
    assert "idx" in dict(head.named_buffers())
    assert torch.all(idx[:, 1:] > idx[:, :-1]) and idx.min() >= 0 and idx.max() < 20
    assert torch.equal(idx, GroupSharedHead(20, 50, 6, group_size=5, seed=7).idx)
    assert torch.equal(head.weight, GroupSharedHead(20, 50, 6, group_size=5, seed=7).weight)


def test_head_given_index_is_sorted_and_used():
    given = np.array([[3, 0, 2], [1, 4, 5]])
    head = GroupSharedHead(6, 4, 3, group_size=2, idx=given)
    assert head.idx.tolist() == [[0, 2, 3], [1, 4, 5]]


def test_set_index_replaces_and_keeps_order():
    head = GroupSharedHead(10, 6, 3, group_size=2, seed=0)
    new = np.array([[9, 1, 4], [0, 8, 2], [5, 6, 7]])
    head.set_index(new)
    assert head.idx.tolist() == new.tolist() and head.idx.dtype == torch.int32
    x = torch.randn(4, 10)
    want = reference.forward(x.numpy(), new, head.weight.detach().numpy(), head.bias.detach().numpy(), 6)
    _close("Z after set_index", head(x).detach().numpy(), want, 1e-5)
    with pytest.raises(ConfigError, match="repeats"):
        head.set_index([[1, 1, 2], [0, 8, 2], [5, 6, 7]])
    with pytest.raises(ConfigError, match="shape"):
        head.set_index(new[:2])
    assert head.idx.tolist() == new.tolist()                           # unchanged after a refusal


# ---------------------------------------------------------------------------------------------
# settings


@pytest.mark.parametrize("kwargs,match", [
    (dict(fanin=0), "fanin=0"),
    (dict(fanin=33), "fanin=33 > in_features=32"),
    (dict(group_size=0), "group_size=0"),
    (dict(n_labels=0), "n_labels=0"),
    (dict(in_features=0, fanin=1), "in_features=0"),
    (dict(fanin=2.5), "fanin=2.5"),
    (dict(group_size=True), "group_size=True"),
    (dict(backend="gpu"), "backend='gpu'"),
    (dict(idx=np.zeros((5, 4), np.int64)), r"idx has shape \(5, 4\), expected \(25, 4\)"),
    (dict(idx=np.full((25, 4), 0.5)), "integer dtype"),
    (dict(idx=np.tile([0, 1, 2, 32], (25, 1))), r"idx\[0, 3\] = 32 is out of range"),
    (dict(idx=np.tile([-1, 1, 2, 3], (25, 1))), "out of range"),
    (dict(idx=np.tile([0, 1, 1, 3], (25, 1))), "row 0 repeats input 1"),
])
def test_config_errors(kwargs, match):
    args = dict(in_features=32, n_labels=100, fanin=4, group_size=4)
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        GroupSharedHead(**args)


def test_config_error_before_allocation():
    # checks come first: a huge label count with a bad setting fails at once, allocating nothing
    t = time.perf_counter()
    with pytest.raises(ConfigError):
        GroupSharedHead(512, 10**12, 0)
    with pytest.raises(ConfigError):
        GroupSharedHead(512, 10**12, 32, backend="nope")
    with pytest.raises(ConfigError):
        DenseHead(512, 0)
    assert time.perf_counter() - t < 1


def test_backend_resolution():
    assert resolve_backend("auto") == "cpu"
    assert GroupSharedHead(4, 4, 2).backend == "cpu"
    assert GroupSharedHead(4, 4, 2, backend="reference").backend == "reference"
    with pytest.raises(ConfigError, match="backend"):
        group_shared_linear(torch.randn(2, 4), torch.tensor([[0, 1]], dtype=torch.int32),
                            torch.randn(1, 1, 2), backend="tpu")


def test_functional_checks_inputs():
    X, W = torch.randn(3, 5), torch.randn(2, 2, 3)
    good = torch.tensor([[0, 1, 2], [2, 3, 4]], dtype=torch.int32)
    assert group_shared_linear(X, good, W).shape == (3, 4)
    with pytest.raises(ConfigError, match="out of range"):
        group_shared_linear(X, good + 1, W)
    with pytest.raises(ValueError, match="idx"):
        group_shared_linear(X, good[:1], W)
    with pytest.raises(TypeError, match="dtype"):
        group_shared_linear(X.double(), good, W)


def test_head_attributes_and_repr():
    head = GroupSharedHead(64, 1000, 8, group_size=16, seed=0)
    assert (head.n_labels, head.n_groups, head.fanin, head.group_size, head.in_features) == (1000, 63, 8, 16, 64)
    assert sum(p.numel() for p in head.parameters()) == 63 * 16 * 8 + 1000
    r = repr(head)
    for s in ("n_labels=1000", "fanin=8", "group_size=16", "n_groups=63", "backend='cpu'"):
        assert s in r
    w = head.weight.detach()
    assert w.abs().max() <= 1 / np.sqrt(8) and w.view(-1, 8)[1000:].abs().sum() == 0


def test_dense_head():
    head = DenseHead(12, 30)
    assert head.n_labels == 30 and head.in_features == 12
    assert sum(p.numel() for p in head.parameters()) == 12 * 30 + 30
    h = torch.randn(4, 12)
    torch.testing.assert_close(head(h), h @ head.linear.weight.t() + head.linear.bias)
    assert head.weight is head.linear.weight and head.bias is head.linear.bias
    assert DenseHead(12, 30, bias=False).bias is None
    assert "n_labels=30" in repr(head)


# ---------------------------------------------------------------------------------------------
# benchmark (a tiny shape: the wiring, the validation, the table)


def test_bench_small():
    from engine.bench.heads import run_heads_bench
    from engine.bench.report import format_table
    res = run_heads_bench(batch=8, in_features=16, n_labels=50, fanin=4, group_size=4, repeats=1, progress=False)
    assert [r["provider"].split(" (")[0] for r in res] == ["nn.Linear", "torch.sparse", "fixed fan-in", "group-shared"]
    for r in res:
        assert r["forward_s"] > 0 and r["fwd_bwd_s"] > 0 and r["ratio_to_dense"] > 0
    assert res[0]["ratio_to_dense"] == 1.0 and res[0]["max_rel_err"] is None
    assert all(r["max_rel_err"] < 1e-4 for r in res[1:])
    table = format_table(res)
    assert "nn.Linear" in table and "group-shared" in table


def test_output_buffers_are_reused_only_when_free():
    X, idx, W, bias, dZ = _inputs(16, 10, 3, 4, 2, 6, np.float32)
    addr = lambda a: a.__array_interface__["data"][0]
    Z1 = cpu.forward(X, idx, W, bias, 6)
    a1, keep = addr(Z1), torch.from_numpy(Z1)[:, 1:]                   # a view outlives Z1
    del Z1
    Z2 = cpu.forward(X, idx, 2 * W, bias, 6)
    assert addr(Z2) != a1                                              # still referenced: not reused
    want = reference.forward(X, idx, W, bias, 6)[:, 1:]
    _close("kept view", keep.numpy(), want, 1e-5)
    del keep
    Z3 = cpu.forward(X, idx, W, None, 6)
    assert addr(Z3) == a1                                              # free now: reused
    _close("Z3", Z3, reference.forward(X, idx, W, None, 6), 1e-5)
    _close("Z2", Z2, reference.forward(X, idx, 2 * W, bias, 6), 1e-5)
    cpu.release_output_buffers()


def test_empty_batch():
    X, idx, W, bias, dZ = _inputs(0, 10, 3, 4, 2, 6, np.float32)
    assert cpu.forward(X, idx, W, bias, 6).shape == (0, 6)
    dX, dW, db = cpu.backward(dZ, X, idx, W, True, True, True)
    assert dX.shape == (0, 10) and np.all(dW == 0) and np.all(db == 0)
