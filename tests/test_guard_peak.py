"""The memory guard's estimate (engine.memory.estimate_bytes) against the measured peak of real
runs: building the trainer (label grouping, centroid sets, the model), training and evaluating, on
wide synthetic sets, each in a fresh process (tests/peak_memory.py). The estimate counts live
tensors; the allowance is what the allocator keeps of freed buffers and its per-thread arenas."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SLACK_MB = 48
WIDE = dict(n_labels=6000, n_features=6000, n_points=3000, seed=0)
CASES = [   # (id, flat settings, generate()'s)
    ("clustered-groups-centroid-sets", dict(head="group_shared", hidden=64, fanin=16, groups="clustered",
                                            index_init="centroid", batch_size=128), WIDE),
    ("auxiliary-clusters", dict(head="group_shared", hidden=64, fanin=16, aux=1.0, aux_clusters=64), WIDE),
    ("dense-many-labels", dict(head="dense", hidden=64, batch_size=128), {**WIDE, "n_labels": 20000,
                                                                          "n_features": 2000}),
    ("mach-many-labels", dict(head="mach", hidden=64, mach_buckets=1024, mach_reps=4), {**WIDE, "n_labels": 50000,
                                                                                      "n_features": 2000}),
    ("no-encoder-wide-features", dict(head="fixed_fanin", hidden=0, fanin=16, lr=0.01), {**WIDE, "n_features": 20000}),
]


def measured(config, data):
    spec = json.dumps({"config": {**config, "epochs": 1}, "data": data})
    out = subprocess.run([sys.executable, str(Path(__file__).with_name("peak_memory.py")), spec],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if "error" in result:
        pytest.skip(result["error"])
    return result


@pytest.mark.slow
@pytest.mark.parametrize("config, data", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_guard_counts_what_a_run_allocates(config, data):
    r = measured(config, data)
    print(f"peak {r['peak_mb']:.0f} MB, estimate {r['estimate_mb']:.0f} MB", r["parts"])
    assert r["peak_mb"] <= 1.15 * r["estimate_mb"] + SLACK_MB, r        # nothing a run allocates is missed
    assert r["estimate_mb"] <= 3 * r["peak_mb"] + SLACK_MB, r            # nor a run that fits refused
