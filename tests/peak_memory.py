"""Run in a fresh process (tests/test_guard_peak.py): the peak memory of building and training a
TrainConfig on a synthetic set, against the guard's estimate.

    python tests/peak_memory.py '{"config": {...flat settings...}, "data": {...generate()'s...}}'

prints {"peak_mb", "estimate_mb", "parts"}: peak = VmHWM over the Trainer's construction (label
grouping, centroid sets, the model) and its training and evaluations, less VmRSS before it (the
data and a warm-up run of the kernels are loaded then)."""

import json
import sys

from engine import TrainConfig, Trainer, estimate_bytes, generate
from engine.bench.probe import reset_peak, rss_mb


def warm_up(dataset):
    """Compile the kernels and fill the allocator's pools with a small run of every kind used."""
    small = TrainConfig.of(head="group_shared", hidden=16, fanin=4, group_size=4, epochs=1, batch_size=32,
                           index_init="centroid", aux=1.0, aux_clusters=4, groups="clustered")
    list(Trainer(small, dataset=dataset).run())


def main(spec):
    ds = generate(**spec["data"])
    config = TrainConfig.of(**spec["config"])
    warm_up(generate(**{**spec["data"], "n_labels": 64, "n_features": 200, "n_points": 400}))
    est = estimate_bytes(config, (ds.n_features, ds.n_labels))
    base = rss_mb("VmRSS")
    if not reset_peak():
        print(json.dumps({"error": "cannot reset VmHWM"}))
        return
    list(Trainer(config, dataset=ds).run())
    print(json.dumps({"peak_mb": rss_mb("VmHWM") - base, "estimate_mb": est["total"] / 2 ** 20,
                      "parts": {k: v / 2 ** 20 for k, v in est.items()}}))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
