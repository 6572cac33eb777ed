"""The GPU check: what issue 16 asks of a machine with one NVIDIA GPU, as one command.

    make gpu-check                                   # a venv with torch's CUDA build and CuPy, then:
    python -m engine.bench.gpu_check [--minutes 5] [--out engine/cuda/REPORT.md]

Five parts, each in a process of its own with a time limit (a part that hangs or crashes costs its
own time, never the others' results); what a part has measured when it is stopped is kept:

    tests    pytest -m gpu: the backends' checks (tests/checks.py, backend "cuda-gpu") on the device
    kernels  engine.bench.gpu: every kernel against the float64 reference, then timed at L = 670,091
    heads    engine.bench.heads on the GPU at L = 100,000 and 670,091 (B = 256, d = 512, k = 32, m = 32):
             forward, forward + backward, training step with Adam (the sparse heads' fused), of
             group-shared and fixed fan-in against nn.Linear(d, L), torch.sparse, nn.Linear(k, L)
    memory   peak GPU memory of a full training step with Adam at L = 670,091 (the recipe's head)
    train    the sample trained by the Trainer with device "cuda", then "cpu": P@1, P@5 and time

The time left is split among the parts still to run by their SHARES, so the whole stays within
--minutes (default 5) plus a few seconds. The results are printed as markdown and written into
REPORT.md's "gpu-check" section (engine.cuda.report.with_section; the rest of the file is kept).
Exit 0 when every part ran to the end, 1 when one failed or ran out of time, 2 without a GPU (one
line saying why).
"""

import argparse
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from ..cuda.report import OUT, with_section
from .providers import FLOP_MATCHED, random_labels

REPO = Path(__file__).resolve().parents[2]
MODULE = "engine.bench.gpu_check"   # (run as `python -m`, __name__ is "__main__")
SECTION = "gpu-check"
MINUTES = 5.0
SHARES = {"tests": 3, "kernels": 1, "heads": 3, "memory": 1, "train": 2}   # of the time left, in this order
TITLES = {"tests": "CUDA tests on the device", "kernels": "Kernels (engine.bench.gpu)",
          "heads": "Heads: forward, forward + backward, training step",
          "memory": "Peak GPU memory of a group-shared training step with Adam",
          "train": "The sample trained on the GPU and on the CPU"}
MIN_PART_S = 10.0                   # a part given less is not started
SHAPE = dict(batch=256, in_features=512, fanin=32, group_size=32)
LABEL_COUNTS = (100_000, 670_091)   # 670,091: Amazon-670K's labels
AMAZON_FEATURES = 135_909           # ... and features, for the memory part's encoder
FEATURES_PER_ROW = 76               # ~ Amazon-670K's mean
MEMORY_BAR = 4e9                    # seed 003: 670K labels on a 4 GB GPU
SPEEDUP_BAR, FLOP_MATCHED_BAR = 4.0, 1.2


# ---------------------------------------------------------------------------------------------
# pure parts: the time budget, the tables

def allot(shares, part, left_s):
    """Seconds for `part`: the `left_s` seconds left, split among it and the parts after it (in the
    order of `shares`) in proportion to their shares."""
    names = list(shares)
    rest = names[names.index(part):]
    return max(0.0, left_s) * shares[part] / sum(shares[n] for n in rest)


def md_table(header, rows):
    """A markdown table: a header row, then one row per sequence of cells (None shows as "-")."""
    def line(cells):
        return "| " + " | ".join("-" if c is None else str(c) for c in cells) + " |"
    return "\n".join([line(header), "|" + "---|" * len(header)] + [line(r) for r in rows])


def fmt(value, spec):
    """`value` formatted by `spec`, or None (a "-" cell) when there is no value."""
    return None if value is None else format(value, spec)


def heads_markdown(rows):
    """The heads part's table (rows of engine.bench.heads.run_heads_bench, several L) and its targets."""
    def ms(r, key):
        return fmt(r[key] and 1e3 * r[key], ".2f")

    def vs(r, kind):
        ref = next((x for x in rows if x["kind"] == kind and x["n_labels"] == r["n_labels"]), None)
        return ref and ref["fwd_bwd_s"] and r["fwd_bwd_s"] and ref["fwd_bwd_s"] / r["fwd_bwd_s"]
    table = md_table(
        ["L", "provider", "forward ms", "fwd + bwd ms", "step ms", "fwd + bwd: x faster than nn.Linear(d, L)",
         "x faster than nn.Linear(k, L)", "validation (max rel. error)"],
        [[f"{r['n_labels']:,}", r["provider"], ms(r, "forward_s"), ms(r, "fwd_bwd_s"), ms(r, "step_s"),
          fmt(vs(r, "nn.Linear"), ".2f"), fmt(vs(r, FLOP_MATCHED), ".2f"), fmt(r["max_rel_err"], ".1e")]
         for r in rows])
    return table + "\n\n" + targets_markdown(rows)


def targets_markdown(rows):
    """Issue 16's bars at L = 670,091 on the heads part's rows: measured, bar, met."""
    def fwd_bwd(kind):
        return next((r["fwd_bwd_s"] for r in rows if r["kind"] == kind and r["n_labels"] == LABEL_COUNTS[-1]), None)
    gs, dense, matched = fwd_bwd("group-shared"), fwd_bwd("nn.Linear"), fwd_bwd(FLOP_MATCHED)
    speedup = dense / gs if gs and dense else None
    ratio = gs / matched if gs and matched else None
    return md_table(["target (L = 670,091)", "measured", "bar", "met"], [
        ["group-shared fwd + bwd, x faster than nn.Linear(d, L)", fmt(speedup, ".2f"), f">= {SPEEDUP_BAR}",
         met(speedup, speedup and speedup >= SPEEDUP_BAR)],
        ["group-shared fwd + bwd time / nn.Linear(k, L)'s", fmt(ratio, ".2f"), f"<= {FLOP_MATCHED_BAR}",
         met(ratio, ratio and ratio <= FLOP_MATCHED_BAR)]])


def met(value, ok):
    return "not measured" if value is None else "yes" if ok else "no"


def memory_markdown(m):
    """The memory part's table from its byte counts (dict) and its target line."""
    peak = m["torch_peak"] + m["cupy_pool"]
    mib = lambda b: f"{b / 2**20:,.0f}"                                # noqa: E731
    return f"At Amazon-670K's shape (D = 135,909, L = 670,091), hidden 512, k = 32, m = 32, B = 256:\n\n" + md_table(
        ["what", "MiB"], [
        ["torch's peak allocation (torch.cuda.max_memory_allocated): weights, gradients, Adam, activations",
         mib(m["torch_peak"])],
        ["CuPy's memory pool (the kernels' outputs and buffers)", mib(m["cupy_pool"])],
        ["**peak, both**", f"**{mib(peak)}**"],
        ["device memory in use after the steps (cudaMemGetInfo: CUDA context and caches included)",
         mib(m["device_used"])],
        ["analytic (engine/memory.py: encoder, head, activations)", mib(m["analytic"])],
    ]) + f"\n\nTarget <= {MEMORY_BAR / 1e9:g} GB: {peak / 1e9:.2f} GB, met: {met(peak, peak <= MEMORY_BAR)}."


def train_markdown(rows):
    """The train part's table (one row per device) and the P@1 difference."""
    table = md_table(["device", "why", "steps", "setup s", "train s", "ms / step", "P@1", "P@5"], [
        [r["device"], r["why"], f"{r['steps']} of {r['total_steps']}" + (" (time limit)" if r["stopped"] else ""),
         f"{r['setup_s']:.1f}", f"{r['train_s']:.1f}", fmt(r["steps"] and 1e3 * r["train_s"] / r["steps"], ".1f"),
         fmt(r["P@1"] and 100 * r["P@1"], ".2f"), fmt(r["P@5"] and 100 * r["P@5"], ".2f")] for r in rows])
    p1 = [r["P@1"] for r in rows]
    if len(p1) == 2 and None not in p1:
        table += f"\n\nP@1 {rows[0]['device']} - {rows[1]['device']}: {100 * (p1[0] - p1[1]):+.2f} points."
    return table


def pytest_markdown(returncode, output):
    """The tests part's text from pytest's exit code and output (-q -rfE): its summary line and the
    failures it lists."""
    lines = output.strip().splitlines()
    summary = lines[-1].strip("= ") if lines else "no output"
    failed = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))]
    more = [f"... {len(failed) - 20} more"] if len(failed) > 20 else []
    return f"`pytest -m gpu tests`: {summary} (exit code {returncode})." + "".join(f"\n- {ln}" for ln in failed[:20] + more)


def section(header, parts):
    """The REPORT.md section: a title, the header line, then each part's title and text."""
    body = [f"## GPU check\n\n{header}"]
    body += [f"### {TITLES[name]}\n\n{text}" for name, text in parts]
    return "\n\n".join(body) + "\n"


# ---------------------------------------------------------------------------------------------
# the parts (on the GPU): part(deadline) yields (ok, its markdown so far) as it goes; its process is
# stopped at the deadline, so only the parts that split their time among steps read it

def tests_part(deadline):
    """pytest -m gpu on tests/: its summary and failures."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "-rfE", "tests"]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    yield p.returncode == 0, pytest_markdown(p.returncode, p.stdout + p.stderr)


def kernels_part(deadline):
    """engine.bench.gpu: every kernel validated against the float64 reference, then its table at L = 670,091."""
    from ..heads import cuda as cu
    from . import gpu
    cp = cu._cupy()
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            gpu.validate(cu, cp)
    except SystemExit as e:
        yield False, f"Validation against the float64 reference failed:\n\n```\n{log.getvalue()}{e}\n```"
        return
    ok = f"Every kernel matches the float64 reference (B, d, L, m, k = {gpu.VALIDATE_SHAPE})."
    yield True, ok
    shape = (SHAPE["batch"], SHAPE["in_features"], LABEL_COUNTS[-1], SHAPE["group_size"], SHAPE["fanin"])
    rows = gpu.kernel_rows(cu, cp, *shape)
    yield True, (f"{ok} Timed at B, d, L, m, k = {shape}, float32, mean of {gpu.iters} runs (CUDA events):\n\n" +
                 md_table(["op", "provider", "ms", "GB/s", "GFLOP/s"],
                          [[op, prov, f"{ms:.3f}", f"{gbs:.1f}", f"{gfs:.1f}"] for op, prov, ms, gbs, gfs in rows]))


def heads_part(deadline):
    """engine.bench.heads on the GPU at each of LABEL_COUNTS: the table and the targets."""
    from .heads import run_heads_bench
    providers = ("nn.Linear", "torch.sparse", FLOP_MATCHED, "fixed fan-in", "group-shared")
    rows = []
    for L in LABEL_COUNTS:
        rows += run_heads_bench(n_labels=L, repeats=5, progress=False, providers=providers, step=True,
                                budget_s=2.0, device="cuda", **SHAPE)
        yield True, ("Median of 5 runs after a warm-up, each after torch.cuda.synchronize(); float32, "
                     "TF32 off (torch's default); the step: loss, backward and Adam.\n\n" + heads_markdown(rows))


def memory_part(deadline):
    """Two training steps (loss, backward, Adam) of the whole model, encoder and the recipe's
    group-shared head (with its dense part), at Amazon-670K's shape on the GPU: the peak memory of
    torch's allocator and of CuPy's pool."""
    import cupy
    import torch
    from ..config import ModelConfig, TrainConfig
    from ..memory import estimate_bytes
    from ..model import SparseInput, XMCModel
    settings = dict(head="group_shared", hidden=512, fanin=SHAPE["fanin"], group_size=SHAPE["group_size"])
    D, L, B = AMAZON_FEATURES, LABEL_COUNTS[-1], SHAPE["batch"]
    torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    model = XMCModel(ModelConfig.of(backend="cuda", n_features=D, n_labels=L, **settings)).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)   # as the Trainer
    X, Y = random_rows(B, D, FEATURES_PER_ROW), csr(*random_labels(B, L), L)
    for _ in range(2):                                                 # the second with Adam's state
        loss, _ = model.loss(SparseInput(X).to("cuda"), Y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    analytic = estimate_bytes(TrainConfig.of(batch_size=B, **settings), (D, L))
    yield True, memory_markdown({"torch_peak": torch.cuda.max_memory_allocated(), "device_used": total - free,
                                 "cupy_pool": cupy.get_default_memory_pool().total_bytes(),
                                 "analytic": sum(analytic[k] for k in ("encoder", "head", "activations"))})


def csr(indptr, columns, n_columns):
    """(len(indptr) - 1, n_columns) scipy CSR float32 matrix of ones at the given sorted columns."""
    import numpy as np
    import scipy.sparse as sp
    return sp.csr_matrix((np.ones(len(columns), np.float32), columns, indptr), shape=(len(indptr) - 1, n_columns))


def random_rows(n_rows, n_columns, per_row, seed=0):
    """(n_rows, n_columns) CSR rows of `per_row` distinct random columns each (a feature batch)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    cols = np.concatenate([np.sort(rng.choice(n_columns, per_row, replace=False)) for _ in range(n_rows)])
    return csr(np.arange(0, n_rows * per_row + 1, per_row), cols, n_columns)


def train_part(deadline, devices=("cuda", "cpu"), **overrides):
    """The sample trained on each device (overrides: TrainConfig settings), each within its share of the time left."""
    rows = []
    for i, device in enumerate(devices):
        rows.append(train_once(device, (deadline - time.monotonic()) / (len(devices) - i), **overrides))
        yield True, train_markdown(rows)


def train_once(device, seconds, **overrides):
    """One training of the sample on `device` through the Trainer, stopped after `seconds`: its row."""
    from ..config import TrainConfig
    from ..train import Trainer
    t0 = time.perf_counter()
    trainer = Trainer(TrainConfig.of(data="sample", device=device, **overrides))
    setup = time.perf_counter() - t0
    last, stopped = {}, False
    for record in trainer.run():
        last = record if record["kind"] == "eval" else last
        if time.perf_counter() - t0 > seconds:
            stopped = True
            break
    return {"device": str(trainer.device), "why": trainer.placement.why, "steps": trainer.step,
            "total_steps": trainer.total_steps, "setup_s": setup, "train_s": time.perf_counter() - t0 - setup,
            "P@1": last.get("P@1"), "P@5": last.get("P@5"), "stopped": stopped}


PARTS = {"tests": tests_part, "kernels": kernels_part, "heads": heads_part, "memory": memory_part, "train": train_part}


# ---------------------------------------------------------------------------------------------
# running the parts

def run_here(name, seconds, result):
    """Run part `name` in this process, writing each (ok, markdown) it yields to the JSON file
    `result`; an exception ends it as a failure with its traceback's last lines."""
    text = ""
    try:
        for ok, text in PARTS[name](time.monotonic() + seconds):
            write_result(result, ok, text)
    except Exception:
        tail = "".join(traceback.format_exc().splitlines(keepends=True)[-12:])
        write_result(result, False, f"{text}\n\nFailed:\n\n```\n{tail}```".strip())
        return 1
    return 0


def write_result(path, ok, markdown):
    """A part's result so far, replaced whole (a part stopped while writing leaves the previous one)."""
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps({"ok": ok, "markdown": markdown}))
    os.replace(tmp, path)


def run_part(cmd, seconds, result):
    """(ok, markdown) of a part run as `cmd` in a process group of its own, killed with its
    children after `seconds`; `result`: the JSON file the part writes as it goes."""
    p = subprocess.Popen(cmd, cwd=REPO, start_new_session=True)
    stopped = False
    try:
        p.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        stopped = True
    finally:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    got = json.loads(result.read_text()) if result.exists() else {"ok": False, "markdown": ""}
    if stopped:
        return False, f"{got['markdown']}\n\n**Stopped at its time limit ({seconds:.0f} s).**".strip()
    if p.returncode and got["ok"]:
        return False, f"{got['markdown']}\n\n**Exited with code {p.returncode}.**"
    return got["ok"], got["markdown"] or f"**Exited with code {p.returncode} before a result (see its output above).**"


def header(elapsed_s, budget_s):
    """The section's first line: when, on what GPU, with which torch and CUDA, in how long."""
    import torch
    from ..device import gpu_status
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")
    return (f"`make gpu-check` ({MODULE}) on {when} UTC: {gpu_status()[1]}; torch {torch.__version__} "
            f"(CUDA {torch.version.cuda}). {elapsed_s:.0f} s for the parts, of a {budget_s:.0f} s budget.")


def check(minutes, out):
    """Run every part within `minutes`, print each part's markdown, write the section into `out`;
    the exit status (0: all ran to the end; 1: not)."""
    budget = 60 * minutes
    start, parts, all_ok = time.monotonic(), [], True
    with tempfile.TemporaryDirectory() as tmp:
        for name in PARTS:
            seconds = allot(SHARES, name, budget - (time.monotonic() - start))
            if seconds < MIN_PART_S:
                ok, text = False, f"**Not run: {seconds:.0f} s were left.**"
            else:
                result = Path(tmp) / f"{name}.json"
                print(f"gpu-check: {name} (up to {seconds:.0f} s)", flush=True)
                cmd = [sys.executable, "-m", MODULE, "--part", name, "--seconds", str(seconds),
                       "--result", str(result)]
                ok, text = run_part(cmd, seconds, result)
            print(f"\n### {TITLES[name]}\n\n{text}\n", flush=True)
            parts.append((name, text))
            all_ok &= ok
    out.write_text(with_section(out.read_text() if out.exists() else "", SECTION,
                                section(header(time.monotonic() - start, budget), parts)))
    print(f"gpu-check: wrote {out}; {'every part ran to the end' if all_ok else 'a part failed or ran out of time'}")
    return 0 if all_ok else 1


def main(argv=None):
    ap = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=MINUTES, help="the time budget of the parts")
    ap.add_argument("--out", type=Path, default=OUT, help="the markdown file whose gpu-check section is written")
    ap.add_argument("--part", choices=list(PARTS), help=argparse.SUPPRESS)       # a part's own process
    ap.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.part:
        return run_here(a.part, a.seconds, a.result)
    from ..device import gpu_status
    ok, why = gpu_status()
    if not ok:
        print(f"gpu-check needs an NVIDIA GPU that torch and CuPy see: {why}", file=sys.stderr)
        return 2
    return check(a.minutes, a.out)


if __name__ == "__main__":
    sys.exit(main())
