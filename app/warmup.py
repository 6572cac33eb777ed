"""Once per server process, in the background: load the training kernels (so the first Start shows
metrics at once), then compile UMAP (so the first label map draws quickly).

Two threads must not import the same modules at once, so what the warm-up thread uses is imported
here, on the script thread, before it starts: pandas, Plotly, scikit-learn, and the kernel backend
training takes (numba's kernels), through the engine's `get_backend`.
"""

import os
import threading

import numpy as np
import pandas  # noqa: F401  (imported here, on the script thread, before the warm-up thread starts)
import plotly.graph_objects  # noqa: F401
import sklearn.decomposition  # noqa: F401
import sklearn.neighbors  # noqa: F401
import streamlit as st

from engine import TrainConfig, Trainer, generate, get_backend

from app.analysis import embed_2d
from app.jobs import default_threads, limit_threads

get_backend(TrainConfig().model.backend)         # the kernels: imported on the script thread, not raced by threads


def warm_up_training():
    """Load the heads' numba kernels and torch's first-call paths on a tiny problem (a few hundred
    ms warm, seconds cold), so the first real Start shows metrics at once."""
    ds = generate(n_points=200, n_features=50, n_labels=40, n_clusters=4, seed=0, name="warm-up")
    for head in ("group_shared", "dense"):
        trainer = Trainer(TrainConfig.of(data="warm-up", head=head, hidden=16, fanin=4, group_size=4, epochs=1,
                                      batch_size=64), dataset=ds)
        trainer.eval_record()
        next(iter(trainer.run()))


def warm_up_umap():
    """Compile UMAP's numba functions on a tiny problem, so the first real map is quick."""
    rng = np.random.default_rng(0)
    embed_2d(rng.random((60, 8)).astype(np.float32), "umap", seed=0)


class WarmUp(threading.Thread):
    """Background warm-up; `stage` says how far it got: training, umap, done."""

    def __init__(self):
        super().__init__(name="warm-up", daemon=True)
        self.stage = "training"

    def run(self):
        try:
            limit_threads(default_threads())
            warm_up_training()
            self.stage = "umap"
            warm_up_umap()
        finally:
            self.stage = "done"


@st.cache_resource(show_spinner=False)
def _warm_up():
    """The process's warm-up thread, started on first call (None with $XMC_APP_WARMUP=0)."""
    if os.environ.get("XMC_APP_WARMUP", "1") == "0":
        return None
    thread = WarmUp()
    thread.start()
    return thread


def warm_stage():
    """"training" while the training kernels load, "umap" while UMAP compiles, else "done"."""
    thread = _warm_up()
    return "done" if thread is None else thread.stage


def warm_up():
    _warm_up()


def wait_for_warm_up(timeout=60):
    """Before using UMAP on the script thread: let the warm-up finish (two threads must not import
    and compile the same modules at once)."""
    thread = _warm_up()
    if thread is not None:
        thread.join(timeout)
