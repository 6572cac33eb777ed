"""Run in a fresh process (tests/test_guard_peak.py): the peak memory of building and training a
TrainConfig on a synthetic set, or of an analysis of its model, against the guard's estimate.

    python tests/peak_memory.py '{"config": {...flat settings...}, "data": {...generate()'s...}}'
    python tests/peak_memory.py '{"config": ..., "data": ..., "analysis": "lss" | "label_map"}'

prints {"peak_mb", "estimate_mb", "parts"}: peak = VmHWM over the Trainer's construction (label
grouping, centroid sets, the model) and its training and evaluations, or over the analysis of the
built model, less VmRSS before it (the data and a warm-up run of the kernels are loaded then)."""

import json
import sys

from engine import TrainConfig, Trainer, compare_hash_indexes, estimate_bytes, generate, label_map_bytes, pifa
from engine.bench.probe import reset_peak, rss_mb
from engine.memory import lss_bytes, pifa_entries


def warm_up(dataset):
    """Compile the kernels and fill the allocator's pools with a small run of every kind used."""
    small = TrainConfig.of(head="group_shared", hidden=16, fanin=4, group_size=4, epochs=1, batch_size=32,
                           index_init="centroid", aux=1.0, aux_clusters=4, groups="clustered")
    list(Trainer(small, dataset=dataset).run())


def lss(trainer, ds):
    compare_hash_indexes(trainer.model, ds, n_tables=16, n_bits=8, fit_epochs=1)


def label_map(trainer, ds):
    from app.analysis import embed_2d, sample_labels
    embed_2d(pifa(ds.X_train, ds.Y_train, dense=False)[sample_labels(ds.n_labels)], "umap")


ANALYSES = {  # name: (run it on a built trainer and its data, its estimate in bytes)
    "lss": (lss, lambda t, ds: lss_bytes(ds.n_labels, t.model.config.head_in, ds.n_train, ds.n_test, 16)),
    "label_map": (label_map, lambda t, ds: label_map_bytes(ds.X_train, ds.Y_train, min(ds.n_labels, 5000))),
}


def analysis_peak(spec):
    run, estimate = ANALYSES[spec["analysis"]]
    small = generate(**{**spec["data"], "n_labels": 64, "n_features": 200, "n_points": 400})
    run(Trainer(TrainConfig.of(**spec["config"]), dataset=small), small)            # warm-up
    ds = generate(**spec["data"])
    trainer = Trainer(TrainConfig.of(**spec["config"]), dataset=ds)
    base = rss_mb("VmRSS")
    if not reset_peak():
        return {"error": "cannot reset VmHWM"}
    run(trainer, ds)
    return {"peak_mb": rss_mb("VmHWM") - base, "estimate_mb": estimate(trainer, ds) / 2 ** 20, "parts": {}}


def main(spec):
    if "analysis" in spec:
        print(json.dumps(analysis_peak(spec)))
        return
    ds = generate(**spec["data"])
    config = TrainConfig.of(**spec["config"])
    warm_up(generate(**{**spec["data"], "n_labels": 64, "n_features": 200, "n_points": 400}))
    est = estimate_bytes(config, (ds.n_features, ds.n_labels), pifa_nnz=pifa_entries(ds.X_train, ds.Y_train))
    base = rss_mb("VmRSS")
    if not reset_peak():
        print(json.dumps({"error": "cannot reset VmHWM"}))
        return
    list(Trainer(config, dataset=ds).run())
    print(json.dumps({"peak_mb": rss_mb("VmHWM") - base, "estimate_mb": est["total"] / 2 ** 20,
                      "parts": {k: v / 2 ** 20 for k, v in est.items()}}))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
