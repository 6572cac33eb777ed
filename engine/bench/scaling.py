"""Label-sharded training over 1, 2, 4 processes of one machine: steps per second, memory per rank.

    python -m engine bench-distributed --procs 1 2 4 --labels 100000

For each head and process count N, `torchrun --standalone --nproc_per_node=N -m engine train ...
--distributed` trains one epoch of one synthetic dataset (engine.data.generate, written once). The
step time is the median over the run's step records after `warmup` steps; the memory comes from the
run's ranks.json: each rank's resident set at the end and at its peak (measured), and its share of
the head's parameters, gradients and two Adam moments (analytic, 16 bytes per float32 parameter).
The final P@1 is there as a check: it is the same for every N (the runs are the same computation).
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from ..errors import ConfigError, XMCError
from ..runs import Run
from .results import mach_buckets_for

HEADS = {
    "group_shared": dict(head="group_shared", fanin=32, group_size=32),
    "dense": dict(head="dense"),
    "mach": dict(head="mach", mach_reps=4, mach_buckets=0),          # buckets: L/16, so R·B = L/4
    "mach_members": dict(head="mach", mach_reps=4, mach_buckets=0, mach_members=4),   # 4 own encoders
}
BYTES_PER_PARAM = 16            # float32 weight, gradient, Adam's two moments


def scaling_dataset(n_labels, out, seed=0):
    """Write the benchmark's synthetic dataset (n_labels labels, 12,000 points) to `out`."""
    from ..data import generate, save_dataset
    ds = generate(n_points=12_000, n_features=5_000, n_labels=n_labels, n_clusters=max(1, n_labels // 200),
                  seed=seed, name=f"scaling-{n_labels}")
    save_dataset(ds, out)
    return ds


def train_flags(head, n_labels, batch_size, seed):
    settings = dict(HEADS[head], epochs=1, batch_size=batch_size, lr=1e-3, seed=seed)
    if settings.get("mach_buckets") == 0:
        settings["mach_buckets"] = mach_buckets_for(n_labels)
    return [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]


def run_one(data, head, procs, runs_dir, n_labels, batch_size=256, warmup=3, seed=0):
    """One torchrun of `procs` processes; the row of the table."""
    runs_dir = Path(runs_dir)
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", f"--nproc_per_node={procs}", "-m", "engine", "train",
           f"--data={data}", *train_flags(head, n_labels, batch_size, seed), "--distributed", f"--runs={runs_dir}"]
    before = set(runs_dir.iterdir()) if runs_dir.exists() else set()
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        tail = " | ".join(out.stderr.strip().splitlines()[-3:])
        raise XMCError(f"{head} on {procs} processes failed (exit {out.returncode}): {tail}")
    (path,) = set(runs_dir.iterdir()) - before
    run = Run(path)
    records, ranks = run.records(), run.ranks()
    steps = [r["step_time"] for r in records if r["kind"] == "step"][warmup:]
    step_s = statistics.median(steps)
    return {"head": head, "procs": procs, "step_ms": 1e3 * step_s, "steps_per_s": 1 / step_s,
            "head_state_mb_per_rank": max(r["head_params"] for r in ranks) * BYTES_PER_PARAM / 2**20,
            "rss_mb_per_rank": max(r["rss_mb"] for r in ranks),
            "peak_rss_mb_per_rank": max(r["peak_rss_mb"] for r in ranks),
            "P@1": [r for r in records if r["kind"] == "eval"][-1]["P@1"], "wall_s": wall}


def run_scaling(procs=(1, 2, 4), heads=tuple(HEADS), n_labels=100_000, batch_size=256, seed=0):
    """{"rows": [...], settings}: every head on every process count, one dataset."""
    if not procs or min(procs) < 1:
        raise ConfigError(f"procs must be process counts >= 1, got {list(procs)}")
    if n_labels < 2 or batch_size < 1:
        raise ConfigError(f"need labels >= 2 and batch >= 1, got labels={n_labels}, batch={batch_size}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        ds = scaling_dataset(n_labels, data, seed)
        with tqdm(total=len(heads) * len(procs), unit="run") as bar:
            for head in heads:
                for n in procs:
                    bar.set_postfix_str(f"{head} on {n} processes")
                    rows.append(run_one(data, head, n, Path(tmp) / "runs", n_labels, batch_size, seed=seed))
                    bar.update(1)
    base = {r["head"]: r["steps_per_s"] for r in rows if r["procs"] == min(procs)}
    for r in rows:
        r["speedup"] = r["steps_per_s"] / base[r["head"]]
    return {"rows": rows, "n_labels": n_labels, "n_train": ds.n_train, "n_features": ds.n_features,
            "batch_size": batch_size, "cpu_count": os.cpu_count(),
            "command": "python -m engine " + " ".join(sys.argv[1:])}


def format_scaling(report):
    lines = [f"{report['n_labels']:,} labels, {report['n_features']:,} features, batch {report['batch_size']}, "
             f"{report['cpu_count']} CPU cores (each rank takes cores // processes threads, at least 1)", "",
             "| head | processes | ms/step | steps/s | speed-up | head state per rank | RSS per rank (peak) | P@1 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['head']} | {r['procs']} | {r['step_ms']:.1f} | {r['steps_per_s']:.2f} | "
                     f"{r['speedup']:.2f}x | {r['head_state_mb_per_rank']:.1f} MB | {r['rss_mb_per_rank']:.0f} MB "
                     f"({r['peak_rss_mb_per_rank']:.0f} MB) "
                     f"| {100 * r['P@1']:.2f} |")
    return "\n".join(lines)
