"""Speed and memory of the output heads: nn.Linear vs torch.sparse vs fixed fan-in vs group-shared.

    python -m engine bench                                   # L = 10,000 / 100,000 / 670,091
    python -m engine bench --labels 100000 --repeats 3 --out bench/report.json

Providers, one process, same shapes (defaults: B=256, d=512, k=32, m=32, float32):
- nn.Linear      dense (L, d) weight (DenseHead): the baseline every ratio is taken against
- torch.sparse   a CSR weight with the same L·k nonzeros as the fixed fan-in head,
                 torch.sparse.addmm forward, gradient for the nonzero values
- fixed fan-in   GroupSharedHead(group_size=1), cpu backend
- group-shared   GroupSharedHead(group_size=m), cpu backend

What is measured, per label count L and provider (median of `repeats` runs after a warm-up;
fewer, at least one, once a measurement's runs add up to budget_s = 10 s: torch.sparse and
nn.Linear at L = 670,091 take seconds per run; the row's `runs` says how many were timed):
- forward; forward + backward (gradients for the input, the weights, the bias; the backward
  gets a fixed random dZ laid out like the provider's output);
- a full training step: forward, BCE-with-logits loss (summed over labels, mean over the batch)
  against a fixed random sparse label batch (~labels_per_row positives per row), backward, Adam
  step. nn.Linear and torch.sparse build the dense (B, L) targets from the CSR batch inside the
  step, as XMCModel.loss does; the sparse heads use the fused loss (engine/heads/fused.py: no
  logits, no dense targets);
- peak memory of the full step: in a fresh subprocess per (provider, L), a first step runs
  (Adam state allocated, kernels loaded), the process's high-water mark VmHWM is read, reset
  (/proc/self/clear_refs) and read again after a second step: `peak_rss_mb` is the larger, the
  peak resident memory of the whole process (interpreter, torch and numba included) over its
  life; `steady_peak_rss_mb` the second step's alone; beside them the RSS before the head
  existed (`base_rss_mb`) and the analytic bytes of the step.

Every provider is first checked at each L (on the first <= 20,000 labels of the same head):
sparse heads against the same layer as a dense (L, d) matrix through torch.mm (logits, input
gradient, weight gradient at the nonzeros, bias gradient), and the fused loss against the
unfused F.binary_cross_entropy_with_logits on head(h) (loss, dh, dW, dbias). Only then is it timed.

Floors. The machine's peak is measured once per run: FLOP/s by a large fp32 torch.mm
(2·n³ / best time), bandwidth by a large copy ((read + write) bytes / best time). The floor of
an op is max(FLOPs / peak FLOP/s, bytes / bandwidth), summed over the op's phases; "x floor" is
the measured time over it. FLOPs and the bytes each phase must move at least once (s = 4 bytes,
idx entries 4 bytes, torch.sparse column indices 8):
    dense   fwd  2·B·d·L          W + X + Z + b                     (W: L·d)
            bwd  4·B·d·L          dZ + W + X + dX + dW + db
    sparse  fwd  2·B·L·k          W + idx + X + Z + b               (W: L·k, idx: G·k, G = ⌈L/m⌉)
            bwd  4·B·L·k          dZ + W + idx + X + dX + dW + db
    loss (unfused)  0             y written and read, Z read, dZ written: 4·B·L·s
    fused loss      6·B·L·k       W + idx + X + dX + dW + b + db      (no Z, no dZ, no y)
    Adam            0             p, g read; p, m, v read and written: 7·P·s   (P parameters)
A provider whose analytic step memory exceeds the memory limit (default half of MemAvailable)
is not run: its row carries the analytic figures and `skipped` says why.
"""

import json
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .heads import DenseHead, GroupSharedHead

LABEL_COUNTS = (10_000, 100_000, 670_091)       # 670,091: the Amazon-670K size
PROVIDERS = ("nn.Linear", "torch.sparse", "fixed fan-in", "group-shared")
VALIDATE_LABELS = 20_000                        # validation runs on the first labels of each head
BUDGET_S = 10.0                                 # a measurement stops repeating after this many seconds
FLOAT = 4

# ---------------------------------------------------------------------------------------------
# providers


class TorchSparseHead(nn.Module):
    """The fixed fan-in layer as a torch CSR matrix (L, d): values are the parameters."""

    def __init__(self, idx, weight, bias, n_labels, in_features):
        super().__init__()
        L, k = n_labels, idx.shape[1]
        self.n_labels, self.in_features = L, in_features
        self.register_buffer("crow", torch.arange(0, L * k + 1, k, dtype=torch.int64))
        self.register_buffer("col", idx[:L].reshape(-1).to(torch.int64))
        self.values = nn.Parameter(weight.detach().reshape(-1, k)[:L].reshape(-1).clone())
        self.bias = nn.Parameter(bias.detach()[:L].clone())

    def forward(self, h):                                              # (B, d) -> (B, L)
        with warnings.catch_warnings():                                # "CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            W = torch.sparse_csr_tensor(self.crow, self.col, self.values,
                                        (self.n_labels, self.in_features), check_invariants=False)
        B = h.shape[0]
        return torch.sparse.addmm(self.bias.unsqueeze(1).expand(self.n_labels, B), W, h.t()).t()


def make_provider(name, in_features, n_labels, fanin, group_size, seed=0):
    """The head of provider `name` (one of PROVIDERS) at this shape; the same seed gives the
    same head in every process (the memory probes rebuild it)."""
    d, L, k, m = in_features, n_labels, fanin, group_size
    torch.manual_seed(seed)
    if name == "nn.Linear":
        return DenseHead(d, L)
    if name == "torch.sparse":
        ffi = GroupSharedHead(d, L, k, group_size=1, seed=seed, backend="cpu")
        return TorchSparseHead(ffi.idx, ffi.weight, ffi.bias, L, d)
    if name == "fixed fan-in":
        return GroupSharedHead(d, L, k, group_size=1, seed=seed, backend="cpu")
    if name == "group-shared":
        return GroupSharedHead(d, L, k, group_size=m, seed=seed + 1, backend="cpu")
    raise ValueError(f"unknown provider {name!r}; choose from {PROVIDERS}")


def label_name(name, k, m):
    return {"fixed fan-in": f"fixed fan-in (k={k})", "group-shared": f"group-shared (k={k}, m={m})"}.get(name, name)


def is_fused(head):
    """The sparse heads train with the fused loss; nn.Linear and torch.sparse with the unfused."""
    return isinstance(head, GroupSharedHead)


def _prefix(head, n):
    """The same layer restricted to its first n labels (n < L; for GroupSharedHead, whole groups)."""
    if isinstance(head, TorchSparseHead):
        k = head.col.numel() // head.n_labels
        return TorchSparseHead(head.col.reshape(-1, k)[:n].to(torch.int32), head.values.detach().reshape(-1, k)[:n],
                               head.bias.detach()[:n], n, head.in_features)
    if isinstance(head, GroupSharedHead):
        m = head.group_size
        G = -(-n // m)
        sub = GroupSharedHead(head.in_features, G * m, head.fanin, group_size=m, idx=head.idx[:G], backend=head.backend)
        with torch.no_grad():
            sub.idx.copy_(head.idx[:G])                                # keep the order (init sorts)
            sub.weight.copy_(head.weight[:G])
            sub.bias.copy_(head.bias[:G * m])
        return sub
    sub = DenseHead(head.in_features, n)
    with torch.no_grad():
        sub.weight.copy_(head.weight[:n])
        sub.bias.copy_(head.bias[:n])
    return sub


def _nonzeros(head):
    """(rows (nnz,), cols (nnz,), weight values (nnz,) getter, its grad getter) of a sparse head."""
    if isinstance(head, TorchSparseHead):
        rows = torch.repeat_interleave(torch.arange(head.n_labels), head.crow.diff())
        return rows, head.col, lambda: head.values, lambda: head.values.grad
    G, m, k = head.weight.shape
    L = head.n_labels
    rows = torch.arange(L).repeat_interleave(k)
    cols = head.idx.to(torch.int64).repeat_interleave(m, 0)[:L].reshape(-1)
    return (rows, cols, lambda: head.weight.reshape(G * m, k)[:L].reshape(-1),
            lambda: head.weight.grad.reshape(G * m, k)[:L].reshape(-1))


def random_labels(batch, n_labels, per_row=5, seed=0):
    """A fixed random sparse label batch: (indptr (B+1,), labels (nnz,)) int64, ~per_row sorted
    distinct labels per row (Poisson, at least one), uniform over [0, n_labels)."""
    rng = np.random.default_rng(seed)
    counts = np.clip(rng.poisson(per_row, batch), 1, n_labels)
    rows = [np.sort(rng.choice(n_labels, size=c, replace=False)) for c in counts]
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), np.concatenate(rows).astype(np.int64)


def dense_labels(indptr, labels, n_labels):
    """(B, L) float32 0/1 targets from the CSR batch (what the unfused loss needs every step)."""
    B = len(indptr) - 1
    y = torch.zeros(B, n_labels)
    rows = torch.from_numpy(np.repeat(np.arange(B), np.diff(indptr)))
    y[rows, torch.from_numpy(labels)] = 1.0
    return y


# ---------------------------------------------------------------------------------------------
# validation: dense emulation of the layer, unfused loss


def _check(name, key, got, want, rtol):
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
    rows, cols, values, grad = _nonzeros(head)
    with torch.no_grad():
        Wd = torch.zeros(head.n_labels, head.in_features, dtype=x.dtype)
        Wd[rows, cols] = values().detach()
        bias = head.bias.detach() if head.bias is not None else torch.zeros(head.n_labels)
        want = {"Z": torch.addmm(bias, x, Wd.t()), "dX": dz @ Wd,
                "dW": (dz.t() @ x)[rows, cols], "dbias": dz.sum(0)}
        del Wd
    for p in head.parameters():
        p.grad = None
    xg = x.detach().clone().requires_grad_()
    Z = head(xg)
    Z.backward(torch.empty_like(Z).copy_(dz))
    got = {"Z": Z.detach(), "dX": xg.grad, "dW": grad(), "dbias": head.bias.grad}
    worst = max(_check(name, key, got[key], w, rtol) for key, w in want.items())
    for p in head.parameters():
        p.grad = None
    return worst


def validate_loss(name, head, x, indptr, labels, rtol=1e-4):
    """Check the fused loss of a GroupSharedHead against the unfused one on head(x): loss, dh,
    dW, dbias. Returns the largest relative error; raises AssertionError like validate."""
    from .heads.fused import fused_bce_loss
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
            loss = F.binary_cross_entropy_with_logits(head(xg), dense_labels(ip, lab, L), reduction="sum") / B
        loss.backward()
        out.update(loss=loss.detach(), dh=xg.grad, dW=head.weight.grad, dbias=head.bias.grad)
    for p in head.parameters():
        p.grad = None
    return max(_check(name + " (fused loss)", key, got[key], w, rtol) for key, w in want.items())


# ---------------------------------------------------------------------------------------------
# timing


def _median(f, repeats, tick, budget_s=None):
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


def _time_fwd_bwd(head, x, dz_like, repeats, tick, budget_s=None):
    def fwd():
        t0 = time.perf_counter()
        Z = head(x)
        t = time.perf_counter() - t0
        del Z
        return t

    def fwd_bwd():
        g = dz_like()
        for p in head.parameters():
            p.grad = None
        x.grad = None
        t0 = time.perf_counter()
        Z = head(x)
        Z.backward(g)
        t = time.perf_counter() - t0
        del Z
        return t
    return _median(fwd, repeats, tick, budget_s), _median(fwd_bwd, repeats, tick, budget_s)


def make_step(head, x, indptr, labels, lr=1e-3):
    """One full training step of `head` (a closure): zero grads, forward, BCE loss against the
    CSR label batch (fused for the sparse heads), backward, Adam step. Returns the loss."""
    from .heads.fused import fused_bce_loss
    opt = torch.optim.Adam(head.parameters(), lr=lr, fused=True)
    B, L = x.shape[0], head.n_labels
    fused = is_fused(head)

    def step():
        opt.zero_grad(set_to_none=True)
        x.grad = None
        if fused:
            loss = fused_bce_loss(x, head, indptr, labels)
        else:
            y = dense_labels(indptr, labels, L)                        # (B, L), as XMCModel.loss
            loss = F.binary_cross_entropy_with_logits(head(x), y, reduction="sum") / B
        loss.backward()
        opt.step()
        return loss.item()
    return step


def _time_step(step, repeats, tick, budget_s=None):
    def once():
        t0 = time.perf_counter()
        step()
        return time.perf_counter() - t0
    return _median(once, repeats, tick, budget_s)


# ---------------------------------------------------------------------------------------------
# the one-shape benchmark (also what the app runs)


def run_heads_bench(batch=256, in_features=512, n_labels=100_000, fanin=32, group_size=32,
                    repeats=5, progress=True, seed=0, providers=PROVIDERS, step=False,
                    labels_per_row=5, skip=None, bar=None, budget_s=None):
    """Validate, then time forward and forward+backward of each provider at one shape (and the
    full training step with Adam when `step`).

    Returns one dict per provider: provider, forward_s, fwd_bwd_s, step_s (None unless step),
    ratio_to_dense (nn.Linear's fwd_bwd_s / this one's; None without nn.Linear), max_rel_err
    (validation; None for nn.Linear), and the shape: batch, in_features, n_labels, fanin,
    group_size, nnz, threads, runs (the fewest timed runs of a measurement: fewer than
    `repeats` when budget_s cut a slow measurement short). `skip` maps provider names to a reason not to run them (the row
    then has None times and `skipped`)."""
    B, d, L, k, m = batch, in_features, n_labels, fanin, group_size
    skip = skip or {}
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, d, generator=gen)
    indptr, labels = random_labels(B, L, labels_per_row, seed)
    Lv = min(L, VALIDATE_LABELS)
    dz_v = torch.randn(B, Lv, generator=gen)
    per = 2 * (repeats + 1) + (repeats + 1 if step else 0) + 1
    own_bar = bar is None
    if own_bar:
        bar = tqdm(total=per * len(providers), desc="heads bench", disable=not progress, leave=False)
    results = []
    for name in providers:
        shown = label_name(name, k, m)
        row = {"provider": shown, "kind": name, "forward_s": None, "fwd_bwd_s": None, "step_s": None,
               "max_rel_err": None, "batch": B, "in_features": d, "n_labels": L, "fanin": k,
               "group_size": m, "nnz": d * L if name == "nn.Linear" else L * k,
               "threads": torch.get_num_threads(), "skipped": skip.get(name), "runs": 0}
        results.append(row)
        if name in skip:
            bar.update(per)
            continue
        bar.set_postfix_str(f"L={L:,} {shown}")
        head = make_provider(name, d, L, k, m, seed)
        if name != "nn.Linear":
            sub = head if Lv == L else _prefix(head, Lv)
            row["max_rel_err"] = validate(shown, sub, x, dz_v[:, :sub.n_labels])
            if is_fused(sub):
                row["max_rel_err"] = max(row["max_rel_err"], validate_loss(shown, sub, x, indptr, labels))
            del sub
        bar.update()
        xr = x.clone().requires_grad_()
        like = {}

        def dz_like():                                                 # dZ in the output's layout
            if "g" not in like:
                with torch.no_grad():
                    like["g"] = torch.empty_like(head(x)).normal_(generator=torch.Generator().manual_seed(seed + 1))
            return like["g"]

        (row["forward_s"], n1), (row["fwd_bwd_s"], n2) = _time_fwd_bwd(head, xr, dz_like, repeats, bar.update,
                                                                      budget_s)
        row["runs"] = min(n1, n2)
        like.clear()
        for p in head.parameters():
            p.grad = None
        if step:
            row["step_s"], n3 = _time_step(make_step(head, xr, indptr, labels), repeats, bar.update, budget_s)
            row["runs"] = min(row["runs"], n3)
        del head
        _release()
    if own_bar:
        bar.close()
    dense = next((r for r in results if r["kind"] == "nn.Linear" and r["fwd_bwd_s"]), None)
    for r in results:
        r["ratio_to_dense"] = dense["fwd_bwd_s"] / r["fwd_bwd_s"] if dense and r["fwd_bwd_s"] else None
    return results


def _release():
    from .heads import cpu
    cpu.release_output_buffers()


def format_table(results):
    """The results of run_heads_bench as a plain-text table."""
    r0 = results[0]
    lines = [f"B={r0['batch']} d={r0['in_features']} L={r0['n_labels']:,} k={r0['fanin']} "
             f"m={r0['group_size']} float32, {r0['threads']} threads; median times",
             f"{'provider':<28}{'forward':>12}{'fwd+bwd':>12}{'vs nn.Linear':>14}{'nnz':>14}{'check':>10}"]
    for r in results:
        if r["fwd_bwd_s"] is None:
            lines.append(f"{r['provider']:<28}  skipped: {r.get('skipped')}")
            continue
        check = "-" if r["max_rel_err"] is None else f"{r['max_rel_err']:.0e}"
        ratio = "-" if r["ratio_to_dense"] is None else f"{r['ratio_to_dense']:.1f}x"
        lines.append(f"{r['provider']:<28}{r['forward_s'] * 1e3:>9.1f} ms{r['fwd_bwd_s'] * 1e3:>9.1f} ms"
                     f"{ratio:>14}{r['nnz']:>14,}{check:>10}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# machine peaks and floors


def machine_peaks(n=2048, copy_mb=256, repeats=10):
    """Measured peaks: fp32 FLOP/s of a (n × n) torch.mm, and copy bandwidth of a copy_mb MB
    tensor ((read + write) bytes / time); the best of `repeats` runs each."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    c = torch.empty(n, n)
    t = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        t.append(time.perf_counter() - t0)
    flops = 2 * n ** 3 / min(t[1:])
    del a, b, c
    src = torch.ones(copy_mb * 2 ** 20 // 4)
    dst = torch.empty_like(src)
    t = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        dst.copy_(src)
        t.append(time.perf_counter() - t0)
    bw = 2 * src.numel() * 4 / min(t[1:])
    return {"peak_flops": flops, "copy_bytes_per_s": bw, "matmul_n": n, "copy_mb": copy_mb}


def op_costs(kind, B, d, L, k, m, labels_nnz=0):
    """{phase: (FLOPs, bytes)} floors of a provider at one shape (see the module docstring)."""
    s = FLOAT
    if kind == "nn.Linear":
        P = L * d + L
        W, idx = L * d * s, 0
        fl = 2 * B * d * L
    else:
        G = L if kind != "group-shared" else -(-L // m)
        P = (G * m if kind == "group-shared" else L) * k + L
        W = P * s - L * s
        idx = 8 * L * k + 8 * (L + 1) if kind == "torch.sparse" else 4 * G * k
        fl = 2 * B * L * k
    X, Z, b = B * d * s, B * L * s, L * s
    costs = {"fwd": (fl, W + idx + X + Z + b),
             "bwd": (2 * fl, Z + W + idx + X + X + W + b),
             "loss": (0, 4 * B * L * s),
             "fused": (3 * fl, W + idx + X + X + W + 2 * b + 8 * (B + 1 + labels_nnz)),
             "adam": (0, 7 * P * s)}
    return costs, P


def floors(kind, B, d, L, k, m, peaks, labels_nnz=0):
    """Floor times (s) of forward, forward+backward and the full step, and the FLOP/byte counts."""
    costs, P = op_costs(kind, B, d, L, k, m, labels_nnz)
    t = {ph: max(fl / peaks["peak_flops"], by / peaks["copy_bytes_per_s"]) for ph, (fl, by) in costs.items()}
    step = t["fused"] + t["adam"] if kind in ("fixed fan-in", "group-shared") else t["fwd"] + t["loss"] + t["bwd"] + t["adam"]
    return {"fwd_floor_s": t["fwd"], "fwd_bwd_floor_s": t["fwd"] + t["bwd"], "step_floor_s": step,
            "fwd_flops": costs["fwd"][0], "fwd_bytes": costs["fwd"][1], "bwd_flops": costs["bwd"][0],
            "bwd_bytes": costs["bwd"][1], "params": P}


def analytic_step_bytes(kind, B, d, L, k, m):
    """Bytes a full training step holds at its peak, beside the interpreter: parameters, their
    gradients, Adam's two moments, and the (B, L) logits, their gradient and the dense targets
    for the unfused loss (the fused loss holds none of these three)."""
    _, P = op_costs(kind, B, d, L, k, m)
    idx = 0 if kind == "nn.Linear" else (8 * L * k if kind == "torch.sparse" else 4 * (-(-L // (m if kind == "group-shared" else 1))) * k)
    act = 0 if kind in ("fixed fan-in", "group-shared") else 3 * B * L * FLOAT
    return 4 * P * FLOAT + idx + act


# ---------------------------------------------------------------------------------------------
# memory: one fresh process per (provider, L)


def _rss_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def probe_memory(spec):
    """Run in a fresh process: the peak RSS of full training steps (see the module docstring).
    Returns base_rss_mb (before the head), ready_rss_mb (head + grads + Adam state held),
    peak_rss_mb (the process's high-water mark over its whole life: imports, the first step
    that allocates Adam's state, a second step), steady_peak_rss_mb (during the second step
    alone), hwm_reset (False: the mark could not be reset, steady = peak since start)."""
    torch.set_num_threads(spec["threads"])
    B, d, L, k, m = (spec[key] for key in ("batch", "in_features", "n_labels", "fanin", "group_size"))
    x = torch.randn(B, d, generator=torch.Generator().manual_seed(spec["seed"])).requires_grad_()
    indptr, labels = random_labels(B, L, spec["labels_per_row"], spec["seed"])
    if is_fused_kind(spec["kind"]):
        from .heads import fused                                       # noqa: F401  (imports numba)
    base = _rss_mb("VmRSS")
    head = make_provider(spec["kind"], d, L, k, m, spec["seed"])
    step = make_step(head, x, indptr, labels)
    step()                                                             # allocates grads and Adam state
    first = _rss_mb("VmHWM")                                           # since start: imports + step 1
    ready = _rss_mb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")                                               # VmHWM := VmRSS
        reset = True
    except OSError:
        reset = False
    step()
    steady = _rss_mb("VmHWM")
    return {"base_rss_mb": base, "ready_rss_mb": ready, "peak_rss_mb": max(first, steady),
            "steady_peak_rss_mb": steady, "hwm_reset": reset}


def is_fused_kind(kind):
    return kind in ("fixed fan-in", "group-shared")


def _measure_memory(spec, timeout=900):
    cmd = [sys.executable, "-m", "engine.bench", "--probe", json.dumps(spec)]
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=root)
    if out.returncode:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def mem_available():
    """MemAvailable in bytes (Linux), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# ---------------------------------------------------------------------------------------------
# the whole benchmark: label counts × providers, floors, memory, targets, report


def run_bench(label_counts=LABEL_COUNTS, batch=256, in_features=512, fanin=32, group_size=32,
              repeats=5, providers=PROVIDERS, memory=True, mem_limit=None, labels_per_row=5,
              progress=True, seed=0, budget_s=BUDGET_S):
    """Everything `python -m engine bench` measures, as a dict (what report.json holds):
    machine (measured peaks), config, results (one row per L and provider: times, floors,
    ratios, memory), targets (issue 6's bars, measured or None where not run)."""
    B, d, k, m = batch, in_features, fanin, group_size
    avail = mem_available()
    if mem_limit is None:
        mem_limit = avail / 2 if avail else float("inf")
    per = 2 * (repeats + 1) + (repeats + 1) + 1
    total = 1 + len(label_counts) * len(providers) * (per + (1 if memory else 0))
    bar = tqdm(total=total, desc="bench", disable=not progress, dynamic_ncols=True)
    bar.set_postfix_str("machine peaks")
    peaks = machine_peaks()
    bar.update()
    rows = []
    for L in label_counts:
        skip = {}
        for name in providers:
            need = analytic_step_bytes(name, B, d, L, k, m)
            if need > mem_limit:
                skip[name] = (f"needs ~{need / 2**30:.1f} GiB for a training step, over the "
                              f"{mem_limit / 2**30:.1f} GiB limit: analytic figures only")
        res = run_heads_bench(B, d, L, k, m, repeats, progress, seed, providers, step=True,
                              labels_per_row=labels_per_row, skip=skip, bar=bar, budget_s=budget_s)
        nnz = int(round(labels_per_row * B))
        for r in res:
            r.update(floors(r["kind"], B, d, L, k, m, peaks, nnz))
            r["fused_loss"] = is_fused_kind(r["kind"])
            r["analytic_step_mb"] = analytic_step_bytes(r["kind"], B, d, L, k, m) / 2 ** 20
            for key in ("forward", "fwd_bwd", "step"):
                t, fl = r[f"{key}_s"], r[f"{'fwd' if key == 'forward' else key}_floor_s"]
                r[f"{key}_x_floor"] = t / fl if t else None
            r.update(base_rss_mb=None, ready_rss_mb=None, peak_rss_mb=None, hwm_reset=None)
            if memory and not r["skipped"]:
                bar.set_postfix_str(f"L={L:,} {r['provider']}: memory")
                spec = {"kind": r["kind"], "batch": B, "in_features": d, "n_labels": L, "fanin": k,
                        "group_size": m, "seed": seed, "labels_per_row": labels_per_row,
                        "threads": torch.get_num_threads()}
                got = _measure_memory(spec)
                if "error" in got:
                    r["memory_error"] = got["error"]
                else:
                    r.update(got)
            if memory:
                bar.update()
        dense = next((r for r in res if r["kind"] == "nn.Linear" and r["fwd_bwd_s"]), None)
        for r in res:
            for key in ("forward", "fwd_bwd", "step"):
                t = r[f"{key}_s"]
                r[f"{key}_vs_dense"] = dense[f"{key}_s"] / t if dense and t else None
        rows.extend(res)
    bar.close()
    config = {"batch": B, "in_features": d, "fanin": k, "group_size": m, "repeats": repeats,
              "label_counts": list(label_counts), "providers": list(providers), "dtype": "float32",
              "labels_per_row": labels_per_row, "seed": seed, "budget_s": budget_s, "threads": torch.get_num_threads(),
              "mem_limit_bytes": None if mem_limit == float("inf") else mem_limit}
    machine = {**peaks, "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
               "mem_available_bytes": avail, "torch": torch.__version__,
               "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    return {"machine": machine, "config": config, "results": rows, "targets": targets(rows)}


def targets(rows):
    """Issue 6's bars, each {name, value, bar, met}; value None where not measured."""
    def find(kind, L):
        return next((r for r in rows if r["kind"] == kind and r["n_labels"] == L), None)

    out = []

    def add(name, value, bar, higher=True):
        met = None if value is None else (value >= bar if higher else value <= bar)
        out.append({"name": name, "value": value, "bar": bar, "met": met})

    def ratio(a, b, key="fwd_bwd_s"):
        return a[key] / b[key] if a and b and a.get(key) and b.get(key) else None

    d100, s100 = find("nn.Linear", 100_000), find("torch.sparse", 100_000)
    g100, f100 = find("group-shared", 100_000), find("fixed fan-in", 100_000)
    add("L=100,000: group-shared fwd+bwd vs nn.Linear (x faster)", ratio(d100, g100), 8.0)
    add("L=100,000: group-shared fwd+bwd vs torch.sparse (x faster)", ratio(s100, g100), 10.0)
    add("L=100,000: fixed fan-in fwd+bwd vs nn.Linear (x faster)", ratio(d100, f100), 3.0)
    add("L=100,000: group-shared fwd+bwd / its floor", g100 and g100.get("fwd_bwd_x_floor"), 3.0, higher=False)
    g670 = find("group-shared", 670_091)
    add("L=670,091: group-shared full step (Adam) peak process RSS (MB)",
        g670 and g670.get("peak_rss_mb"), 1.5e9 / 2 ** 20, higher=False)
    return out


def _fmt_t(t):
    return "-" if t is None else (f"{t * 1e3:.1f} ms" if t < 10 else f"{t:.1f} s")


def _fmt_x(v, nd=1):
    return "-" if v is None else f"{v:.{nd}f}x"


def format_report(report):
    """The printed table: per L and provider, times, ratios to nn.Linear, distance to the floor,
    peak memory; then the machine's peaks and the targets."""
    c, mach = report["config"], report["machine"]
    lines = [f"B={c['batch']} d={c['in_features']} k={c['fanin']} m={c['group_size']} float32, "
             f"{c['threads']} threads, median of {c['repeats']} (fewer past {c['budget_s']} s); peak {mach['peak_flops'] / 1e9:.0f} GFLOP/s "
             f"(torch.mm {mach['matmul_n']}), {mach['copy_bytes_per_s'] / 1e9:.1f} GB/s (copy)",
             f"{'L':>9}  {'provider':<27}{'fwd':>10}{'fwd+bwd':>10}{'step':>10}{'fb vs lin':>10}"
             f"{'step vs lin':>12}{'fb/floor':>9}{'step/floor':>11}{'peak RSS':>10}{'analytic':>10}{'check':>8}"]
    for r in report["results"]:
        peak = "-" if r.get("peak_rss_mb") is None else f"{r['peak_rss_mb']:.0f} MB"
        check = "-" if r["max_rel_err"] is None else f"{r['max_rel_err']:.0e}"
        head = f"{r['n_labels']:>9,}  {r['provider']:<27}"
        if r["skipped"]:
            lines.append(head + f"{'not run (memory)':>30}{'':>22}{'':>20}{'':>10}{r['analytic_step_mb']:>7.0f} MB{'':>8}")
            continue
        lines.append(head + f"{_fmt_t(r['forward_s']):>10}{_fmt_t(r['fwd_bwd_s']):>10}{_fmt_t(r['step_s']):>10}"
                     f"{_fmt_x(r['fwd_bwd_vs_dense']):>10}{_fmt_x(r['step_vs_dense']):>12}"
                     f"{_fmt_x(r['fwd_bwd_x_floor']):>9}{_fmt_x(r['step_x_floor']):>11}{peak:>10}"
                     f"{r['analytic_step_mb']:>7.0f} MB{check:>8}")
    lines.append("step: forward + BCE loss + backward + Adam (sparse heads: fused loss); peak RSS: the whole "
                 "process during one step, fresh subprocess; analytic: params + grads + Adam (+ logits, dZ, "
                 "targets if unfused)")
    lines.append("targets:")
    for t in report["targets"]:
        v = "not measured" if t["value"] is None else f"{t['value']:.2f}"
        verdict = {True: "met", False: "NOT met", None: "-"}[t["met"]]
        lines.append(f"  {t['name']}: {v} (bar {t['bar']:.2f}) {verdict}")
    return "\n".join(lines)


def write_report(report, path):
    """report.json at `path` and report.html beside it (Plotly; the JavaScript embedded: opens offline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(path)
    html = path.with_suffix(".html")
    html.write_text(report_html(report))
    return path, html


def report_html(report):
    """A self-contained HTML page: time per phase, ratios to the floor, peak memory, the table."""
    import plotly.graph_objects as go
    import plotly.io as pio
    from plotly.subplots import make_subplots
    rows = report["results"]
    kinds = list(dict.fromkeys(r["provider"] for r in rows))
    Ls = list(dict.fromkeys(r["n_labels"] for r in rows))
    fig = make_subplots(rows=2, cols=2, subplot_titles=("forward + backward (s)", "full training step (s)",
                                                        "measured / floor (fwd+bwd)", "peak process RSS of a step (MB)"))
    colors = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3"]
    for i, kind in enumerate(kinds):
        mine = [next((r for r in rows if r["provider"] == kind and r["n_labels"] == L), None) for L in Ls]
        xs = [f"{L:,}" for L in Ls]
        get = lambda key: [None if r is None else r.get(key) for r in mine]
        style = dict(name=kind, marker_color=colors[i % len(colors)], legendgroup=kind)
        fig.add_trace(go.Bar(x=xs, y=get("fwd_bwd_s"), **style), 1, 1)
        fig.add_trace(go.Bar(x=xs, y=get("step_s"), showlegend=False, **style), 1, 2)
        fig.add_trace(go.Bar(x=xs, y=get("fwd_bwd_x_floor"), showlegend=False, **style), 2, 1)
        mem = [r.get("peak_rss_mb") if r and r.get("peak_rss_mb") is not None else (r or {}).get("analytic_step_mb")
               for r in mine]
        pat = ["" if r and r.get("peak_rss_mb") is not None else "/" for r in mine]
        fig.add_trace(go.Bar(x=xs, y=mem, showlegend=False, marker_pattern_shape=pat, **style), 2, 2)
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_yaxes(type="log", row=2, col=2)
    fig.update_xaxes(title_text="labels L")
    fig.update_layout(barmode="group", template="plotly_white", height=800,
                      title="Output heads: time, distance to the floor, memory (hatched: analytic, not run)")
    body = pio.to_html(fig, include_plotlyjs=True, full_html=False)
    table = format_report(report).replace("&", "&amp;").replace("<", "&lt;")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>engine bench</title></head><body>"
            f"<h2>python -m engine bench</h2>{body}<pre>{table}</pre>"
            f"<details><summary>how it is measured</summary><pre>{__doc__}</pre></details></body></html>")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--probe":
        print(json.dumps(probe_memory(json.loads(sys.argv[2]))))
    else:
        print(format_table(run_heads_bench()))
