"""Run in a fresh process (tests/test_grouping_memory.py): the peak memory of clustering labels
(engine.grouping.label_layout) or of a whole run (building the Trainer, training, evaluating).

    python tests/grouping_peak.py '{"data": DIR | {...generate()'s...}, "config": {...flat...}, "phase": P}'

phase "layout": prints {"peak_mb", "added_mb", "estimate_mb"}: peak = VmHWM over label_layout (the
whole process: interpreter, data and all), added = peak less VmRSS before it, estimate = the
grouping term of engine.memory (with the data's PIFA entry bound). phase "run": {"peak_mb"}, VmHWM
over Trainer(...).run() after the data is loaded."""

import json
import sys

from engine import TrainConfig, Trainer, generate, load_dataset
from engine.bench.probe import reset_peak, rss_mb
from engine.grouping import label_layout
from engine.memory import grouping_memory, pifa_entries


def main(spec):
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
