"""Tests of engine/heads/fused.py and the fused kernels: BCE loss + gradients and top-k without logits.

Each backend's group_shared_bce and group_shared_topk are checked by check_op (tests/checks.py)
against the float64 reference on the same seeded inputs (ragged batch, padded and masked slots,
rows without labels): the loss and every gradient, gradcheck in float64, the top-K scores and
slots (K up to L, past the 32 of the old CUDA kernel). The autograd form is checked against
F.binary_cross_entropy_with_logits on head(h), and by gradcheck in float64. Top-k is checked
against torch.topk on the full (masked) logits.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.heads import GroupSharedHead, reference
from engine.heads.fused import (FusedBCEFunction, check_labels, fused_bce_loss, fused_topk,
                                slot_labels)
from engine.heads.group_shared import random_index

from checks import BACKENDS, DTYPES, check_op, close as _close, labels as _labels

SHAPES = [  # B, d, G, k, m, L
    (5, 20, 7, 3, 4, 26),          # padded last group (L < G·m), B < one vector
    (37, 50, 30, 8, 1, 30),        # fixed fan-in (m = 1), ragged batch
    (1, 10, 3, 4, 5, 15),          # B = 1
    (33, 16, 9, 16, 6, 50),        # k = d, ragged everything
    (64, 30, 4, 1, 3, 12),         # k = 1, B a multiple of the vector width
    (256, 512, 40, 32, 32, 1250),  # the benchmark's group shape
]
SHAPE_IDS = ["B{}_d{}_G{}_k{}_m{}_L{}".format(*s) for s in SHAPES]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_fused_bce_matches_reference(shape, backend, dtype):
    check_op("bce", backend, shape, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("masked,with_bias", [(False, True), (True, False)])
def test_fused_bce_without_mask_or_bias(backend, masked, with_bias):
    check_op("bce", backend, (19, 24, 6, 5, 4, 22), np.float32, masked=masked, with_bias=with_bias)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_bce_is_stable_for_large_logits(backend):
    # |z| up to ~1e3: softplus form, no overflow; positives and negatives on both sides
    check_op("bce", backend, (21, 12, 5, 4, 3, 15), np.float32, tol=1e-5, wscale=200.0)


# ---------------------------------------------------------------------------------------------
# autograd: against the unfused path, gradcheck, scaling, validation


def _head_and_batch(B, d, L, k, m, dtype=torch.float32, seed=0):
    head = GroupSharedHead(d, L, k, group_size=m, seed=seed, backend="cpu").to(dtype)
    rng = np.random.default_rng(seed)
    indptr, slots = _labels(B, L, rng)
    mask = torch.from_numpy(rng.random(L) > 0.15)
    h = torch.randn(B, d, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    y = torch.from_numpy(reference.dense_targets(indptr, slots, B, L)).to(dtype)
    return head, h, indptr, slots, mask, y


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("B,d,L,k,m", [(37, 40, 95, 8, 4), (1, 12, 10, 3, 1), (20, 16, 64, 16, 32)])
def test_fused_loss_equals_unfused_torch(B, d, L, k, m, dtype):
    head, h0, indptr, slots, mask, y = _head_and_batch(B, d, L, k, m, dtype)
    tol = 2e-5 if dtype == torch.float32 else 1e-10
    h = h0.clone().requires_grad_()
    loss = fused_bce_loss(h, head, indptr, slots, mask)
    loss.backward()
    got = [loss.detach(), h.grad, head.weight.grad, head.bias.grad]
    head.zero_grad(set_to_none=True)
    h = h0.clone().requires_grad_()
    want = F.binary_cross_entropy_with_logits(head(h), y, weight=mask.to(dtype), reduction="sum") / B
    want.backward()
    for name, g, w in zip(("loss", "dh", "dW", "dbias"), got, [want.detach(), h.grad, head.weight.grad,
                                                                head.bias.grad]):
        assert g.dtype == dtype, name
        _close(name, g.numpy(), w.numpy(), tol)


def test_fused_loss_gradcheck_float64():
    B, d, G, k, m = 6, 9, 4, 3, 3
    L = G * m - 2                                                    # a padded last group
    rng = np.random.default_rng(3)
    idx = torch.from_numpy(np.ascontiguousarray(rng.permuted(random_index(G, d, k, 3), axis=1)))
    indptr, slots = _labels(B, L, rng)
    mask = rng.random(L) > 0.2
    h = torch.randn(B, d, dtype=torch.float64, requires_grad=True)
    W = torch.randn(G, m, k, dtype=torch.float64, requires_grad=True)
    b = torch.randn(L, dtype=torch.float64, requires_grad=True)
    f = lambda h, W, b: FusedBCEFunction.apply(h, W, b, idx, indptr, slots, mask, L, 1.0 / B, "cpu")
    assert torch.autograd.gradcheck(f, (h, W, b))


def test_fused_loss_scales_with_the_incoming_gradient_and_skips_grads_without_grad_mode():
    head, h0, indptr, slots, mask, y = _head_and_batch(8, 10, 20, 4, 4)
    h = h0.clone().requires_grad_()
    (3 * fused_bce_loss(h, head, indptr, slots, mask)).backward()
    g3 = h.grad.clone(), head.weight.grad.clone()
    head.zero_grad(set_to_none=True)
    h = h0.clone().requires_grad_()
    fused_bce_loss(h, head, indptr, slots, mask).backward()
    _close("3·dh", g3[0].numpy(), 3 * h.grad.numpy(), 1e-6)
    _close("3·dW", g3[1].numpy(), 3 * head.weight.grad.numpy(), 1e-6)
    with torch.no_grad():
        loss = fused_bce_loss(h0, head, indptr, slots, mask)
    assert not loss.requires_grad
    want = F.binary_cross_entropy_with_logits(head(h0), y, weight=mask.float(), reduction="sum") / 8
    _close("loss", loss.item(), want.item(), 1e-5)


def test_fused_loss_rejects_bad_labels():
    head, h, indptr, slots, mask, _ = _head_and_batch(4, 10, 20, 4, 4)
    with pytest.raises(ValueError, match="outside"):
        fused_bce_loss(h, head, [0, 1, 1, 1, 1], [20], mask)
    with pytest.raises(ValueError, match="row 2 is not sorted"):
        fused_bce_loss(h, head, [0, 1, 1, 3, 3], [5, 7, 7], mask)
    with pytest.raises(ValueError, match="expected \\(5,\\)"):
        fused_bce_loss(h, head, [0, 1], [5], mask)
    with pytest.raises(ValueError, match="rise from 0"):
        fused_bce_loss(h, head, [0, 2, 1, 3, 3], [5, 7, 8], mask)
    with pytest.raises(ValueError, match="slot_mask"):
        fused_bce_loss(h, head, indptr, slots, mask[:5])
    # rows may start below where the previous ended
    p, s = check_labels([0, 2, 3, 3, 4], [5, 9, 1, 0], 4, 20)
    assert s.tolist() == [5, 9, 1, 0]


def test_slot_labels_moves_labels_to_slots():
    import scipy.sparse as sp
    Y = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 1, 1]], np.float32))
    slot_of_label = np.array([5, 0, 3, 1])
    indptr, slots = slot_labels(Y, slot_of_label)
    assert indptr.tolist() == [0, 2, 2, 5] and slots.tolist() == [3, 5, 0, 1, 3]
    indptr, slots = slot_labels(Y, torch.from_numpy(slot_of_label), offset=1, n_slots=3)   # slots 1..3
    assert indptr.tolist() == [0, 1, 1, 3] and slots.tolist() == [2, 0, 2]


# ---------------------------------------------------------------------------------------------
# top-k


@pytest.mark.parametrize("K", [7, 40], ids=["K7", "K40"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_fused_topk_matches_reference(shape, backend, dtype, K):
    # K = 40 > 32 (the old kernel's bound); K past a row's real slots pads with (-inf, -1)
    check_op("topk", backend, shape, dtype, K=K)


def test_fused_topk_equals_torch_topk_on_the_logits_with_ties():
    B, d, L, k, m = 40, 32, 300, 8, 16
    head = GroupSharedHead(d, L, k, group_size=m, seed=2, backend="cpu")
    with torch.no_grad():
        head.weight[5:9] = 0                                            # 64 labels: score = bias only
        head.bias[80:144] = 0.75                                        # ties across groups
    h = torch.randn(B, d)
    mask = torch.from_numpy(np.random.default_rng(0).random(L) > 0.1)
    z = head(h).detach().masked_fill(~mask, float("-inf"))
    h[::2] *= 0.0                                                       # half the rows: all tied
    z = head(h).detach().masked_fill(~mask, float("-inf"))
    for K in (1, 10, 50):
        vals, slots = fused_topk(h, head, K, mask)
        want = torch.topk(z, K)
        torch.testing.assert_close(vals, want.values)                    # the same score set, sorted
        torch.testing.assert_close(z.gather(1, slots), vals)             # each slot has its score
        assert mask[slots].all()
        assert all(len(set(r.tolist())) == K for r in slots)


def test_fused_topk_pads_when_k_exceeds_the_real_slots():
    head = GroupSharedHead(6, 10, 3, group_size=4, seed=0, backend="cpu")   # 12 slots, 10 labels
    mask = torch.tensor([True, False] * 5)
    vals, slots = fused_topk(torch.randn(3, 6), head, 7, mask)
    assert (slots[:, :5] >= 0).all() and (slots[:, 5:] == -1).all()
    assert torch.isinf(vals[:, 5:]).all() and (slots[:, :5] % 2 == 0).all()
    with pytest.raises(ValueError, match="k=0"):
        fused_topk(torch.randn(3, 6), head, 0)
