"""The results table: every method on a dataset, one row per configuration, in one process.

    python -m engine results --data ../shared/datasets/delicious ../shared/datasets/bibtex

Rows: test P@1/P@3/P@5 after training, analytic head memory (parameters + indices) and seconds
per epoch (training only). All rows share the encoder (512 hidden units), optimiser, epochs and
seed; only the head and its method change. The "on the features" rows have no encoder
(hidden = 0): the head reads the input features, with a larger step (lr 1e-2) as linear models
need, and data-driven index sets (each group's k strongest features of its PIFA centroid).
"""


from tqdm import tqdm

from ..config import TrainConfig
from ..data import load_dataset
from ..memory import head_memory
from ..train import Trainer

K, M = 64, 32     # fan-in hidden/8 and group size of every sparse row
SPARSE = dict(fanin=K, group_size=M, dense_share=0)      # the sparse layer alone, no dense part
DST = dict(dst="random", dst_every=50, dst_zeta=0.3, dst_until=0.75)
LINEAR = dict(hidden=0, lr=1e-2)                     # no encoder: the head reads the input features
BASE = dict(lr=1e-3)                                  # the table's step size (the README's numbers), not the defaults
ON_FEATURES = dict(head="group_shared", index_init="centroid", **SPARSE)

CONFIGS = {
    "dense": dict(head="dense"),
    "fixed fan-in": dict(head="fixed_fanin", fanin=K),
    "fixed fan-in + DST": dict(head="fixed_fanin", fanin=K, **DST),
    "group-shared, random groups": dict(head="group_shared", groups="random", **SPARSE),
    "group-shared, clustered groups": dict(head="group_shared", groups="clustered", **SPARSE),
    "group-shared, clustered + DST": dict(head="group_shared", groups="clustered", **SPARSE, **DST),
    "fixed fan-in + intermediate": dict(head="fixed_fanin", fanin=K, intermediate=512),
    "group-shared, random + intermediate": dict(head="group_shared", groups="random", intermediate=512, **SPARSE),
    "group-shared, clustered + intermediate": dict(head="group_shared", groups="clustered", intermediate=512, **SPARSE),
    "group-shared, clustered + DST + intermediate": dict(head="group_shared", groups="clustered",
                                                          intermediate=512, **SPARSE, **DST),
    "group-shared, clustered + auxiliary": dict(head="group_shared", groups="clustered", aux=1.0, **SPARSE),
    "dense head + group-shared tail": dict(head="dense_sparse", groups="clustered", head_size=100, **SPARSE),
    "group-shared with its default dense part (top 10 %)": dict(head="group_shared", fanin=K, group_size=M),
    "MACH": dict(head="mach", mach_reps=4, mach_buckets=0),    # buckets: L/16, so R·B = L/4
    "dense on the features": dict(**LINEAR, head="dense"),
    "group-shared on the features, random groups": dict(**LINEAR, **ON_FEATURES, groups="random"),
    "group-shared on the features, clustered groups": dict(**LINEAR, **ON_FEATURES, groups="clustered"),
    "group-shared on the features, clustered + gradient DST": dict(**LINEAR, **ON_FEATURES, groups="clustered",
                                                                   **{**DST, "dst": "gradient"}),
}


def mach_buckets_for(n_labels):
    """B = L/16 buckets (at least 2), so that R = 4 repetitions give R·B = L/4."""
    return max(2, n_labels // 16)


def config_for(name, data, epochs, seed, n_labels):
    kw = dict(CONFIGS[name])
    if kw.get("head") == "mach" and not kw["mach_buckets"]:
        kw["mach_buckets"] = mach_buckets_for(n_labels)
    return TrainConfig.of(data=data, epochs=epochs, seed=seed, **{**BASE, **kw})


def run_row(config, dataset):
    trainer = Trainer(config, dataset)
    train_time = 0.0
    for record in trainer.run():
        if record["kind"] == "step":
            train_time += record["step_time"]
    scores = trainer.evaluate()
    mem = head_memory(trainer.model.config)
    return {"P@1": scores["P@1"], "P@3": scores["P@3"], "P@5": scores["P@5"],
            "head_mb": (mem["params"] + mem["index"]) / 2**20, "s_per_epoch": train_time / config.epochs,
            "trainer": trainer}


def run_results(datasets, names=None, epochs=30, seed=0):
    """{(dataset name, config name): row} for every dataset directory and configuration."""
    names = list(names or CONFIGS)
    rows = {}
    with tqdm(total=len(datasets) * len(names), unit="run") as bar:
        for data in datasets:
            ds = load_dataset(data)
            for name in names:
                bar.set_postfix_str(f"{ds.name}: {name}")
                rows[ds.name, name] = run_row(config_for(name, data, epochs, seed, ds.n_labels), ds)
                bar.update(1)
    return rows


COLUMNS = [("P@1", lambda r: f"{100 * r['P@1']:.2f}"), ("P@3", lambda r: f"{100 * r['P@3']:.2f}"),
           ("P@5", lambda r: f"{100 * r['P@5']:.2f}"), ("head memory", lambda r: f"{r['head_mb']:.2f} MB"),
           ("s/epoch", lambda r: f"{r['s_per_epoch']:.2f}")]


def format_table(rows, columns):
    """A markdown table: one line per {(dataset, configuration): row}, then a cell per (header, cell(row))."""
    lines = ["| dataset | configuration | " + " | ".join(h for h, _ in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for (ds, name), r in rows.items():
        lines.append(f"| {ds} | {name} | " + " | ".join(cell(r) for _, cell in columns) + " |")
    return "\n".join(lines)


def format_results(rows):
    return format_table(rows, COLUMNS)
