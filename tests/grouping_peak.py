"""Run in a fresh process (tests/test_grouping_memory.py): the peak memory of clustering labels
(engine.grouping.label_layout), of a model's centroid input sets (engine.grouping.centroid_index) or
of a whole run (building the Trainer, training, evaluating).

    python tests/grouping_peak.py '{"data": DIR | {...generate()'s...}, "config": {...flat...}, "phase": P}'
    python tests/grouping_peak.py '{"phase": "centroid", "centroid": {...centroid_problem()'s...}}'

phase "layout": prints {"peak_mb", "added_mb", "estimate_mb"}: peak = VmHWM over label_layout (the
whole process: interpreter, data and all), added = peak less VmRSS before it, estimate = the
grouping term of engine.memory (with the data's PIFA entry bound). phase "centroid": the same three
over centroid_index on synthetic hidden rows H (n, d) and labels (centroid_problem), estimate =
engine.memory.centroid_index_memory, and "seconds" it took. phase "run": {"peak_mb"}, VmHWM over
Trainer(...).run() after the data is loaded."""

import json
import sys
import time

import numpy as np
import scipy.sparse as sp

from engine import TrainConfig, Trainer, generate, load_dataset
from engine.bench.probe import reset_peak, rss_mb
from engine.grouping import centroid_index, label_layout, random_groups
from engine.memory import grouping_memory, pifa_entries


def centroid_problem(n_labels, n_points, d, labels_per_point, n_dense, group_size, seed=0):
    """(H (n, d) float32 ReLU rows, Y (n, L) csr of about labels_per_point distinct labels a point,
    slot_of_label (L,): the n_dense first labels in the dense slots, the rest in random groups)."""
    rng = np.random.default_rng(seed)
    H = np.maximum(rng.standard_normal((n_points, d), dtype=np.float32), 0)
    cols = rng.integers(0, n_labels, (n_points, labels_per_point))
    Y = sp.csr_matrix((np.ones(cols.size, np.float32), cols.ravel(), np.arange(0, cols.size + 1, labels_per_point)),
                      shape=(n_points, n_labels))
    Y.sum_duplicates()
    Y.data[:] = 1.0
    slot_of_label = np.empty(n_labels, np.int64)
    slot_of_label[:n_dense] = np.arange(n_dense)
    slot_of_label[n_dense:] = n_dense + random_groups(n_labels - n_dense, group_size, seed=seed).slot_of_label
    return H, Y, slot_of_label


def centroid_peak(p):
    from engine.memory import centroid_index_memory
    H, Y, slot_of_label = centroid_problem(p["n_labels"], p["n_points"], p["d"], p["labels_per_point"],
                                           p["n_dense"], p["group_size"], p.get("seed", 0))
    base = rss_mb("VmRSS")
    if not reset_peak():
        return {"error": "cannot reset VmHWM"}
    t = time.perf_counter()
    centroid_index(H, Y, slot_of_label, p["n_dense"], p["group_size"], p["fanin"], p.get("seed", 0))
    seconds = time.perf_counter() - t
    peak = rss_mb("VmHWM")
    estimate = centroid_index_memory(p["n_labels"] - p["n_dense"], p["d"], p["n_points"], p["group_size"],
                                     p["fanin"]) / 2 ** 20
    return {"peak_mb": peak, "added_mb": peak - base, "estimate_mb": estimate, "seconds": seconds}


def main(spec):
    if spec["phase"] == "centroid":
        print(json.dumps(centroid_peak(spec["centroid"])))
        return
    data = spec["data"]
    ds = load_dataset(data) if isinstance(data, str) else generate(**data)
    config = TrainConfig.of(**spec["config"])
    mc = config.model_config(ds.n_features, ds.n_labels)
    base = rss_mb("VmRSS")
    if not reset_peak():
        print(json.dumps({"error": "cannot reset VmHWM"}))
        return
    if spec["phase"] == "layout":
        label_layout(mc, ds.X_train, ds.Y_train)
        estimate = grouping_memory(mc, pifa_entries(ds.X_train, ds.Y_train)) / 2 ** 20
        peak = rss_mb("VmHWM")
        print(json.dumps({"peak_mb": peak, "added_mb": peak - base, "estimate_mb": estimate}))
    else:
        list(Trainer(config, dataset=ds).run())
        print(json.dumps({"peak_mb": rss_mb("VmHWM")}))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
