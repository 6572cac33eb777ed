"""The check that stands between a wrong kernel and a timing: every provider against a dense emulation.

    validate(name, head, x, dz)                        # logits, input, weight and bias gradients
    validate_loss(name, head, x, indptr, labels)       # fused loss against the unfused BCE

Sparse heads are checked against the same layer as a dense (L, d) matrix through torch.mm (Z,
dX, dW at the nonzeros, dbias), and the fused loss against F.binary_cross_entropy_with_logits on
head(h) (loss, dh, dW, dbias). A mismatch raises AssertionError naming the provider, the tensor,
the worst index, both values and the max difference relative to the tensor's magnitude.
"""

import numpy as np
import torch
import torch.nn.functional as F

from ..heads.fused import fused_bce_loss
from .providers import dense_labels, nonzeros


def check(name, key, got, want, rtol):
    """max |got - want| / max |want| of one tensor; AssertionError over rtol."""
    diff = (got - want).abs()
    scale = want.abs().max().item() or 1.0
    at = int(diff.argmax()) if diff.numel() else 0
    err = diff.reshape(-1)[at].item() / scale if diff.numel() else 0.0
    if not err <= rtol:
        pos = [int(i) for i in np.unravel_index(at, tuple(want.shape))]
        raise AssertionError(f"{name}: {key}{pos} = {got.reshape(-1)[at].item():.6g}, expected "
                             f"{want.reshape(-1)[at].item():.6g}; max |diff| {err:.2e} of max |{key}| > {rtol:g}")
    return err


def validate(name, head, x, dz, rtol=1e-4):
    """Check head's logits and gradients against the same layer as a dense matrix.

    Raises AssertionError naming the provider, the tensor, the worst index, both values and
    the max difference; returns the largest error relative to each tensor's magnitude."""
    rows, cols, values, grad = nonzeros(head)
    rows, cols = rows.to(x.device), cols.to(x.device)
    with torch.no_grad():
        Wd = torch.zeros(head.n_labels, head.in_features, dtype=x.dtype, device=x.device)
        Wd[rows, cols] = values().detach()
        bias = head.bias.detach() if head.bias is not None else torch.zeros(head.n_labels, device=x.device)
        want = {"Z": torch.addmm(bias, x, Wd.t()), "dX": dz @ Wd,
                "dW": (dz.t() @ x)[rows, cols], "dbias": dz.sum(0)}
        del Wd
    for p in head.parameters():
        p.grad = None
    xg = x.detach().clone().requires_grad_()
    Z = head(xg)
    Z.backward(torch.empty_like(Z).copy_(dz))
    got = {"Z": Z.detach(), "dX": xg.grad, "dW": grad(), "dbias": head.bias.grad}
    worst = max(check(name, key, got[key], w, rtol) for key, w in want.items())
    for p in head.parameters():
        p.grad = None
    return worst


def validate_loss(name, head, x, indptr, labels, rtol=1e-4):
    """Check the fused loss of a GroupSharedHead against the unfused one on head(x): loss, dh,
    dW, dbias. Returns the largest relative error; raises AssertionError like validate."""
    B, L = x.shape[0], head.n_labels
    keep = labels < L
    rows = np.repeat(np.arange(B), np.diff(indptr))[keep]
    ip = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=B))])
    lab = labels[keep]
    got, want = {}, {}
    for out, fused in ((got, True), (want, False)):
        for p in head.parameters():
            p.grad = None
        xg = x.detach().clone().requires_grad_()
        if fused:
            loss = fused_bce_loss(xg, head, ip, lab)
        else:
            loss = F.binary_cross_entropy_with_logits(head(xg), dense_labels(ip, lab, L, x.device),
                                                      reduction="sum") / B
        loss.backward()
        out.update(loss=loss.detach(), dh=xg.grad, dW=head.weight.grad, dbias=head.bias.grad)
    for p in head.parameters():
        p.grad = None
    return max(check(name + " (fused loss)", key, got[key], w, rtol) for key, w in want.items())
