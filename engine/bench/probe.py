"""Peak memory of full training steps, measured in a fresh process per (provider, L).

    python -m engine.bench.probe '{"kind": "group-shared", "batch": 256, "in_features": 512, ...}'

The process builds the batch and reads its resident memory (`base_rss_mb`: interpreter, torch,
numba); runs one step of a tiny head of the same provider, so that its kernels are loaded
(`warm_rss_mb`); resets the high-water mark VmHWM (/proc/self/clear_refs); builds the head and
runs a first step (Adam state allocated: `ready_rss_mb` after it), resets VmHWM again and reads
it after a second step (`steady_peak_rss_mb`). `peak_rss_mb` is the process's high-water mark
over its whole life (imports, kernels, both steps); `step_mb` what the head and its steps added
to the warm process at their peak: what the memory model (engine.memory) counts, plus what the
allocator keeps of freed buffers.
"""

import json
import subprocess
import sys
from pathlib import Path

import torch

from ..heads import cpu
from .providers import make_provider, random_labels
from .timing import make_step

WARM_ROWS = 4                     # the warm-up step's batch


def rss_mb(field):
    """VmRSS, VmHWM, ... of /proc/self/status in MB (nan where absent)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak():
    """VmHWM := VmRSS; False where the mark cannot be reset."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def probe_memory(spec):
    """Run in a fresh process: the memory of full training steps (see the module docstring)."""
    torch.set_num_threads(spec["threads"])
    B, d, L, k, m = (spec[key] for key in ("batch", "in_features", "n_labels", "fanin", "group_size"))
    x = torch.randn(B, d, generator=torch.Generator().manual_seed(spec["seed"])).requires_grad_()
    indptr, labels = random_labels(B, L, spec["labels_per_row"], spec["seed"])
    base = rss_mb("VmRSS")
    warm_labels = random_labels(WARM_ROWS, 2 * m, 1, spec["seed"])
    make_step(make_provider(spec["kind"], d, 2 * m, k, m, spec["seed"]), x[:WARM_ROWS].detach().requires_grad_(),
              *warm_labels)()
    cpu.release_output_buffers()
    warm, life = rss_mb("VmRSS"), rss_mb("VmHWM")
    reset = reset_peak()
    head = make_provider(spec["kind"], d, L, k, m, spec["seed"])
    step = make_step(head, x, indptr, labels)
    step()                                                             # allocates grads and Adam state
    first, ready = rss_mb("VmHWM"), rss_mb("VmRSS")
    reset = reset_peak() and reset
    step()
    steady = rss_mb("VmHWM")
    return {"base_rss_mb": base, "warm_rss_mb": warm, "ready_rss_mb": ready,
            "peak_rss_mb": max(life, first, steady), "steady_peak_rss_mb": steady,
            "step_mb": max(first, steady) - warm if reset else None, "hwm_reset": reset}


def probe_spec(kind, batch, in_features, n_labels, fanin, group_size, seed=0, labels_per_row=5):
    """The probe's settings: provider `kind` at one shape, the label batch, this process's threads."""
    return {"kind": kind, "batch": batch, "in_features": in_features, "n_labels": n_labels, "fanin": fanin,
            "group_size": group_size, "seed": seed, "labels_per_row": labels_per_row,
            "threads": torch.get_num_threads()}


def measure_memory(spec, timeout=900):
    """probe_memory(spec) in a fresh process: its dict, or {"error": the last line of stderr}."""
    cmd = [sys.executable, "-m", "engine.bench.probe", json.dumps(spec)]
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=root)
    if out.returncode:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(probe_memory(json.loads(sys.argv[1]))))
