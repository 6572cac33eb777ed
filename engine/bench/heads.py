"""Speed and memory of the output heads: nn.Linear vs torch.sparse vs fixed fan-in vs group-shared.

    python -m engine bench                                   # L = 10,000 / 100,000 / 670,091
    python -m engine bench --labels 100000 --repeats 3 --out bench/report.json

Providers (engine/bench/providers.py), one process, same shapes (defaults: B=256, d=512, k=32,
m=32, float32): nn.Linear (the baseline every ratio is taken against), torch.sparse (a CSR weight
with the fixed fan-in head's L·k nonzeros), fixed fan-in and group-shared (cpu backend).

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
- peak memory of the full step (engine/bench/probe.py): in a fresh subprocess per (provider, L),
  `peak_rss_mb` the peak resident memory of the whole process (interpreter, torch and numba
  included) over its life, `steady_peak_rss_mb` the second step's alone, `base_rss_mb` the RSS
  before the head existed, `step_mb` what the head and its steps added to a process whose kernels
  were loaded; beside them `analytic_step_mb`, the memory model's bytes of the step
  (engine/memory.py: parameters, gradients, Adam, the unfused loss's logits, the fused loss's
  buffers).

Every provider is first checked at each L (on the first <= 20,000 labels of the same head;
engine/bench/validation.py) against the same layer as a dense matrix, and the fused loss against
the unfused one. Only then is it timed. Floors and "x floor": engine/bench/roofline.py.
A provider whose analytic step memory exceeds the memory limit (default half of MemAvailable)
is not run: its row carries the analytic figures and `skipped` says why.
"""

import os
import platform

import torch
from tqdm import tqdm

from ..guard import available_bytes
from ..heads import cpu
from ..memory import step_memory
from .probe import measure_memory, probe_spec
from .providers import (DENSE, FUSED, PROVIDERS, is_fused, label_name, make_provider, prefix, provider_shape,
                        random_labels)
from .roofline import floors, machine_peaks
from .timing import make_step, time_fwd_bwd, time_step
from .validation import validate, validate_loss

LABEL_COUNTS = (10_000, 100_000, 670_091)       # 670,091: the Amazon-670K size
VALIDATE_LABELS = 20_000                        # validation runs on the first labels of each head
BUDGET_S = 10.0                                 # a measurement stops repeating after this many seconds


def run_heads_bench(batch=256, in_features=512, n_labels=100_000, fanin=32, group_size=32,
                    repeats=5, progress=True, seed=0, providers=PROVIDERS, step=False,
                    labels_per_row=5, skip=None, bar=None, budget_s=None, device="cpu"):
    """Validate, then time forward and forward+backward of each provider at one shape (and the
    full training step with Adam when `step`), on `device` ("cuda": the sparse heads on the cuda
    backend); `providers` may include FLOP_MATCHED, nn.Linear(k, L).

    Returns one dict per provider: provider, forward_s, fwd_bwd_s, step_s (None unless step),
    ratio_to_dense (nn.Linear's fwd_bwd_s / this one's; None without nn.Linear), max_rel_err
    (validation; None for nn.Linear), and the shape: batch, in_features, n_labels, fanin,
    group_size, nnz, threads, runs (the fewest timed runs of a measurement: fewer than
    `repeats` when budget_s cut a slow measurement short). `skip` maps provider names to a reason not to run them (the row
    then has None times and `skipped`)."""
    B, d, L, k, m = batch, in_features, n_labels, fanin, group_size
    skip = skip or {}
    device = torch.device(device)
    backend = "cuda" if device.type == "cuda" else "cpu"
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, d, generator=gen).to(device)
    indptr, labels = random_labels(B, L, labels_per_row, seed)
    Lv = min(L, VALIDATE_LABELS)
    dz_v = torch.randn(B, Lv, generator=gen).to(device)
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
        head = make_provider(name, d, L, k, m, seed, backend).to(device)
        if name not in DENSE:
            sub = head if Lv == L else prefix(head, Lv).to(device)
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
                    draw = torch.Generator().manual_seed(seed + 1)           # on the CPU, then moved
                    like["g"] = torch.empty_like(head(x), device="cpu").normal_(generator=draw).to(device)
            return like["g"]

        (row["forward_s"], n1), (row["fwd_bwd_s"], n2) = time_fwd_bwd(head, xr, dz_like, repeats, bar.update,
                                                                      budget_s)
        row["runs"] = min(n1, n2)
        like.clear()
        for p in head.parameters():
            p.grad = None
        if step:
            row["step_s"], n3 = time_step(make_step(head, xr, indptr, labels), repeats, bar.update, budget_s)
            row["runs"] = min(row["runs"], n3)
        del head
        cpu.release_output_buffers()
    if own_bar:
        bar.close()
    dense = next((r for r in results if r["kind"] == "nn.Linear" and r["fwd_bwd_s"]), None)
    for r in results:
        r["ratio_to_dense"] = dense["fwd_bwd_s"] / r["fwd_bwd_s"] if dense and r["fwd_bwd_s"] else None
    return results


def run_bench(label_counts=LABEL_COUNTS, batch=256, in_features=512, fanin=32, group_size=32,
              repeats=5, providers=PROVIDERS, memory=True, mem_limit=None, labels_per_row=5,
              progress=True, seed=0, budget_s=BUDGET_S):
    """Everything `python -m engine bench` measures, as a dict (what report.json holds):
    machine (measured peaks), config, results (one row per L and provider: times, floors,
    ratios, memory), targets (issue 6's bars, measured or None where not run)."""
    B, d, k, m = batch, in_features, fanin, group_size
    avail = available_bytes()
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
        need = {name: step_memory(provider_shape(name, d, L, k, m), B)["total"] for name in providers}
        skip = {name: f"needs ~{need[name] / 2**30:.1f} GiB for a training step, over the "
                      f"{mem_limit / 2**30:.1f} GiB limit: analytic figures only"
                for name in providers if need[name] > mem_limit}
        res = run_heads_bench(B, d, L, k, m, repeats, progress, seed, providers, step=True,
                              labels_per_row=labels_per_row, skip=skip, bar=bar, budget_s=budget_s)
        nnz = int(round(labels_per_row * B))
        for r in res:
            r.update(floors(r["kind"], B, d, L, k, m, peaks, nnz))
            r["fused_loss"] = r["kind"] in FUSED
            r["analytic_step_mb"] = need[r["kind"]] / 2 ** 20
            for key in ("forward", "fwd_bwd", "step"):
                t, fl = r[f"{key}_s"], r[f"{'fwd' if key == 'forward' else key}_floor_s"]
                r[f"{key}_x_floor"] = t / fl if t else None
            r.update(base_rss_mb=None, warm_rss_mb=None, ready_rss_mb=None, peak_rss_mb=None,
                     steady_peak_rss_mb=None, step_mb=None, hwm_reset=None)
            if memory and not r["skipped"]:
                bar.set_postfix_str(f"L={L:,} {r['provider']}: memory")
                got = measure_memory(probe_spec(r["kind"], B, d, L, k, m, seed, labels_per_row))
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
