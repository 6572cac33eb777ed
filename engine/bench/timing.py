"""Timing: the median of repeated runs after a warm-up, with a time budget, and one training step.

    (t, runs) = median(f, repeats, tick, budget_s)     # f() returns its own seconds
    step = make_step(head, x, indptr, labels)          # zero grads, forward, BCE, backward, Adam

A measurement repeats `repeats` times after one warm-up run, fewer (at least one) once its timed
runs add up to budget_s seconds; `tick(n)` advances a progress bar by the runs done (or skipped).
On a GPU each time is taken after the device's queued work is done (`clock`); a step ends with
`loss.item()`, which waits for it.
"""

import time

import numpy as np
import torch
import torch.nn.functional as F

from ..heads.fused import fused_bce_loss
from .providers import dense_labels, is_fused


def median(f, repeats, tick, budget_s=None):
    """(median, runs): f() run once to warm up, then `repeats` times, or fewer (at least one)
    once the timed runs add up to budget_s seconds."""
    times = []
    for r in range(repeats + 1):                                       # run 0: warm-up
        times.append(f())
        tick()
        if r and budget_s is not None and sum(times[1:]) > budget_s:
            tick(repeats - r)
            break
    return float(np.median(times[1:])), len(times) - 1


def clock(device):
    """Seconds now (perf_counter), once the work queued on `device` is done (CUDA runs asynchronously)."""
    if device.type != "cuda":
        return time.perf_counter

    def now():
        torch.cuda.synchronize(device)
        return time.perf_counter()
    return now


def time_fwd_bwd(head, x, dz_like, repeats, tick, budget_s=None):
    """((forward median, runs), (forward + backward median, runs)); the backward gets dz_like()."""
    now = clock(x.device)

    def fwd():
        t0 = now()
        Z = head(x)
        t = now() - t0
        del Z
        return t

    def fwd_bwd():
        g = dz_like()
        for p in head.parameters():
            p.grad = None
        x.grad = None
        t0 = now()
        Z = head(x)
        Z.backward(g)
        t = now() - t0
        del Z
        return t
    return median(fwd, repeats, tick, budget_s), median(fwd_bwd, repeats, tick, budget_s)


def make_step(head, x, indptr, labels, lr=1e-3):
    """One full training step of `head` (a closure): zero grads, forward, BCE loss against the
    CSR label batch (fused for the sparse heads), backward, Adam step. Returns the loss."""
    opt = torch.optim.Adam(head.parameters(), lr=lr, fused=True)
    B, L = x.shape[0], head.n_labels
    fused = is_fused(head)

    def step():
        opt.zero_grad(set_to_none=True)
        x.grad = None
        if fused:
            loss = fused_bce_loss(x, head, indptr, labels)
        else:
            y = dense_labels(indptr, labels, L, x.device)              # (B, L), as XMCModel.loss
            loss = F.binary_cross_entropy_with_logits(head(x), y, reduction="sum") / B
        loss.backward()
        opt.step()
        return loss.item()
    return step


def time_step(step, repeats, tick, budget_s=None):
    """(median seconds of step(), runs)."""
    def once():
        t0 = time.perf_counter()
        step()
        return time.perf_counter() - t0
    return median(once, repeats, tick, budget_s)
