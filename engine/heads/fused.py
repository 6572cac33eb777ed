"""Fused BCE loss and fused top-k of a GroupSharedHead: no (B, L) logits, ever.

    loss = scale · Σ_b Σ_{real slots s} softplus(Z[b,s]) - Y[b,s]·Z[b,s]      (scale = 1/B)
    dZ   = scale · (σ(Z) - Y) on real slots, 0 on padding;  dh, dW, dbias from dZ as in the layer

Z = head(h) (B, L) in the head's slot space; Y given per row as CSR (y_indptr (B+1,), y_slots
sorted distinct slot ids); slot_mask (>= L,) bool marks the real (non-padding) slots. Equal to
`F.binary_cross_entropy_with_logits(head(h), y, weight=mask, reduction="sum") / B`, with its
gradients, at O(G·m·k + B·d + L) memory instead of the logits' O(B·L) (686 MB at B=256,
L=670,091 in float32, and as much again for dZ and the dense targets).

    loss = fused_bce_loss(h, head, y_indptr, y_slots, slot_mask)    # scalar; loss.backward()
    scores, slots = fused_topk(h, head, k, slot_mask)              # (B, k), (B, k) best first
    y_indptr, y_slots = slot_labels(Y, slot_of_label)              # scipy CSR labels -> slots

The Function computes loss and gradients in one pass in forward (the loss needs the logits,
and so do the gradients: one pass instead of two) and hands them out scaled by the incoming
gradient in backward. Kernels: group_shared_bce / group_shared_topk of the head's backend
(the backend contract of engine/heads/__init__.py: cpu, cuda, or reference in float64).
"""

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from .group_shared import _from_backend, _to_backend, get_backend

# ---------------------------------------------------------------------------------------------
# autograd


class FusedBCEFunction(torch.autograd.Function):
    """loss = fused BCE of group_shared(h, idx, W, bias) against Y; backward gives dh, dW, dbias.

    Forward computes the gradients too (when any is needed and grad mode is on) and keeps them
    until backward: O(B·d + G·m·k + L) memory, the size of h and the parameters."""

    @staticmethod
    def forward(ctx, h, W, bias, idx, y_indptr, y_slots, slot_mask, n_labels, scale, backend):
        need = any(ctx.needs_input_grad[:3])
        loss, dh, dW, db = get_backend(backend).group_shared_bce(
            _to_backend(h), _to_backend(idx), _to_backend(W), _to_backend(bias), y_indptr, y_slots,
            slot_mask, n_labels, scale, need)
        ctx.grads = (_from_backend(dh, h.dtype), _from_backend(dW, W.dtype),
                     _from_backend(db, W.dtype)) if need else (None, None, None)
        return torch.tensor(float(loss), dtype=h.dtype, device=h.device)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        grads = ctx.grads
        unit = bool(g == 1)                                            # the usual case: no copy
        out = [None if t is None or not need else (t if unit else t * g)
               for t, need in zip(grads, ctx.needs_input_grad[:3])]
        return (*out, None, None, None, None, None, None, None)


# ---------------------------------------------------------------------------------------------
# functional form: checks, then launch


def fused_bce_loss(h, head, y_indptr, y_slots, slot_mask=None, scale=None):
    """Scalar BCE-with-logits loss of `head` (a GroupSharedHead) on h (B, d) against sparse
    targets, without the (B, L) logits; loss.backward() fills h's gradient (through autograd)
    and head.weight.grad / head.bias.grad.

    y_indptr (B+1,), y_slots (nnz,): per row the sorted, distinct slots (in [0, head.n_labels))
    that are positive; numpy arrays or tensors. slot_mask: (>= n_labels,) bool, True for real
    slots (False: padding, no loss, no gradient); None = all real. scale defaults to 1/B:

        fused_bce_loss(h, head, y_indptr, y_slots, mask)
          == F.binary_cross_entropy_with_logits(head(h), Y, weight=mask, reduction="sum") / B"""
    if h.dim() != 2 or h.shape[1] != head.in_features:
        raise ValueError(f"h has shape {tuple(h.shape)}, the head expects (B, {head.in_features})")
    if h.dtype != head.weight.dtype:
        raise TypeError(f"h ({h.dtype}) and the head's weight ({head.weight.dtype}) must share one dtype")
    B, L = h.shape[0], head.n_labels
    y_indptr, y_slots = check_labels(y_indptr, y_slots, B, L)
    mask = check_mask(slot_mask, L)
    scale = 1.0 / max(B, 1) if scale is None else float(scale)
    return FusedBCEFunction.apply(h, head.weight, head.bias, head.idx, y_indptr, y_slots, mask, L,
                                  scale, head.backend)


@torch.no_grad()
def fused_topk(h, head, k, slot_mask=None):
    """(scores (B, k), slots (B, k) int64): the k largest logits of head(h) per row among the
    real slots, larger first (ties: the smaller slot first), without the (B, L) logits.
    Rows with fewer than k real slots end in (-inf, -1)."""
    if h.dim() != 2 or h.shape[1] != head.in_features:
        raise ValueError(f"h has shape {tuple(h.shape)}, the head expects (B, {head.in_features})")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k={k!r}: expected an integer >= 1")
    L = head.n_labels
    mask = check_mask(slot_mask, L)
    W = head.weight.detach()
    vals, slots = get_backend(head.backend).group_shared_topk(
        _to_backend(h.detach().to(W.dtype)), _to_backend(head.idx), _to_backend(W),
        _to_backend(head.bias), int(k), mask, L)
    return _from_backend(vals, W.dtype), _from_backend(slots, torch.int64)


def check_labels(y_indptr, y_slots, B, L):
    """(indptr int64 (B+1,), slots int64 (nnz,)) as numpy, checked: indptr starts at 0, never
    decreases, ends at nnz; each row's slots ascend strictly and lie in [0, L)."""
    p = np.asarray(y_indptr.cpu() if isinstance(y_indptr, torch.Tensor) else y_indptr, np.int64)
    s = np.asarray(y_slots.cpu() if isinstance(y_slots, torch.Tensor) else y_slots, np.int64).reshape(-1)
    if p.shape != (B + 1,):
        raise ValueError(f"y_indptr has shape {p.shape}, expected ({B + 1},) for a batch of {B}")
    if p[0] != 0 or p[-1] != len(s) or (np.diff(p) < 0).any():
        raise ValueError(f"y_indptr must rise from 0 to len(y_slots) = {len(s)}; "
                         f"got {p[0]} .. {p[-1]}{' (decreasing somewhere)' if (np.diff(p) < 0).any() else ''}")
    if len(s):
        bad = np.flatnonzero((s < 0) | (s >= L))
        if len(bad):
            row = int(np.searchsorted(p, bad[0], side="right") - 1)
            raise ValueError(f"y_slots: row {row} has slot {s[bad[0]]}, outside [0, {L})")
        step = np.diff(s) <= 0
        step[p[1:-1][(p[1:-1] > 0) & (p[1:-1] < len(s))] - 1] = False    # a new row may start lower
        if step.any():
            at = int(np.flatnonzero(step)[0]) + 1
            row = int(np.searchsorted(p, at, side="right") - 1)
            raise ValueError(f"y_slots: row {row} is not sorted and distinct ({s[at - 1]} then {s[at]})")
    return p, s


def check_mask(slot_mask, L):
    """slot_mask as a bool numpy array (L,), or None (all real)."""
    if slot_mask is None:
        return None
    a = slot_mask.detach().cpu().numpy() if isinstance(slot_mask, torch.Tensor) else np.asarray(slot_mask)
    if a.ndim != 1 or a.shape[0] < L:
        raise ValueError(f"slot_mask has shape {a.shape}, expected ({L},) (one flag per slot)")
    return np.ascontiguousarray(a[:L], np.bool_)


def slot_labels(Y, slot_of_label, offset=0, n_slots=None):
    """(y_indptr (B+1,), y_slots (nnz,)) int64 numpy: the CSR labels Y (B, n_labels) (scipy)
    moved to slot space, slot = slot_of_label[label] - offset, keeping the slots in
    [0, n_slots) (n_slots None: all >= 0), sorted per row. offset = the dense part's width
    when the sparse head comes after one (dense_sparse)."""
    sol = (slot_of_label.cpu().numpy() if isinstance(slot_of_label, torch.Tensor)
           else np.asarray(slot_of_label)).astype(np.int64)
    B = Y.shape[0]
    rows = np.repeat(np.arange(B, dtype=np.int64), np.diff(Y.indptr))
    slots = sol[np.asarray(Y.indices, np.int64)] - int(offset)
    keep = (slots >= 0) if n_slots is None else (slots >= 0) & (slots < n_slots)
    rows, slots = rows[keep], slots[keep]
    order = np.lexsort((slots, rows))
    rows, slots = rows[order], slots[order]
    indptr = np.zeros(B + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=B), out=indptr[1:])
    return indptr, slots
