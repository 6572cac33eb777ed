"""The memory guard's estimate (engine.memory.estimate_bytes) against the measured peak of real
runs: building the trainer (label grouping, centroid sets, the model), training and evaluating, on
wide synthetic sets, each in a fresh process (tests/peak_memory.py). The estimate counts live
tensors; the allowance is what the allocator keeps of freed buffers and its per-thread arenas."""

import pytest

from fresh_process import measure_in_fresh_process

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


def measured(config, data, **analysis):
    return measure_in_fresh_process("peak_memory.py", {"config": {**config, "epochs": 1}, "data": data, **analysis})


@pytest.mark.slow
@pytest.mark.parametrize("config, data", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_guard_counts_what_a_run_allocates(config, data):
    r = measured(config, data)
    print(f"peak {r['peak_mb']:.0f} MB, estimate {r['estimate_mb']:.0f} MB", r["parts"])
    assert r["peak_mb"] <= 1.15 * r["estimate_mb"] + SLACK_MB, r        # nothing a run allocates is missed
    assert r["estimate_mb"] <= 3 * r["peak_mb"] + SLACK_MB, r            # nor a run that fits refused


ANALYSES = [   # (analysis of tests/peak_memory.py, generate()'s)
    ("lss", {**WIDE, "n_labels": 50000, "n_features": 2000}),
    ("label_map", {**WIDE, "n_labels": 20000, "n_features": 5000, "n_points": 10000}),
]


@pytest.mark.slow
@pytest.mark.parametrize("analysis, data", ANALYSES, ids=[a[0] for a in ANALYSES])
def test_the_guard_counts_what_an_analysis_allocates(analysis, data):
    r = measured(dict(head="group_shared", hidden=64, fanin=16), data, analysis=analysis)
    print(f"{analysis}: peak {r['peak_mb']:.0f} MB, estimate {r['estimate_mb']:.0f} MB")
    assert r["peak_mb"] <= 1.15 * r["estimate_mb"] + SLACK_MB, r
    assert r["estimate_mb"] <= 3 * r["peak_mb"] + SLACK_MB, r


def test_an_analysis_over_the_budget_is_refused_before_it_runs(monkeypatch):
    from engine import MemoryBudgetError, compare_hash_indexes, load_dataset, Trainer, TrainConfig
    ds = load_dataset("sample")
    trainer = Trainer(TrainConfig.of(head="group_shared", hidden=16, fanin=8, epochs=1), dataset=ds)
    monkeypatch.setenv("XMC_MEMORY_BUDGET_MB", "1")
    with pytest.raises(MemoryBudgetError, match="the hash-index comparison needs an estimated"):
        compare_hash_indexes(trainer.model, ds, fit_epochs=1)


def test_the_app_shows_an_analysis_over_the_budget_as_an_error_box(monkeypatch):
    from apptest import app, assert_error_box, page
    at = page(app(head="group_shared", hidden=64, fanin=16, group_size=16, method="pca"), "label_map")
    monkeypatch.setenv("XMC_MEMORY_BUDGET_MB", "0.001")
    assert_error_box(at.run(), "The label map needs an estimated", "over the budget")
