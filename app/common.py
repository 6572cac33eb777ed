"""What every page shares: the sidebar state (bound to the URL), cached datasets, the job registry,
and the teaching blocks.

The whole configuration (dataset, head, fan-in, group size, groups, seed) lives in sidebar widgets
of the entrypoint, each bound to a URL query parameter of the same name, so a link reproduces the
view on any page. Datasets are loaded once per process (st.cache_resource); training jobs live in
one registry per runs directory (st.cache_resource), see app/jobs.py.
"""

import dataclasses
import hashlib
import json
import os
import threading
from pathlib import Path

import pandas  # noqa: F401  (imported here, on the script thread, before the warm-up thread starts)
import plotly.graph_objects  # noqa: F401
import sklearn.decomposition  # noqa: F401
import sklearn.neighbors  # noqa: F401
import streamlit as st

import engine.heads.cpu  # noqa: F401  (numba kernels: imported on the script thread, not raced by threads)
import engine.train  # noqa: F401
from engine import ConfigError, TrainConfig, XMCError, generate, load_dataset, save_dataset
from engine.data import SAMPLE_PRESET

from app import analysis
from app.jobs import JobRegistry, default_threads, limit_threads

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO / "sample_data"
try:
    from engine.model import HEADS
except ImportError:                      # pragma: no cover
    HEADS = ("dense", "fixed_fanin", "group_shared")
HEAD_NAMES = {"dense": "dense (nn.Linear)", "fixed_fanin": "fixed fan-in", "group_shared": "group-shared",
              "dense_sparse": "dense head + sparse tail", "mach": "MACH (hashed)"}
TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
# sidebar keys (URL parameter names) of the optional TrainConfig fields, used when the engine has them
OPTIONAL_KEYS = {"groups": "groups", "init": "index_init", "head_size": "head_size", "buckets": "mach_buckets",
                 "reps": "mach_reps", "members": "mach_members"}
GEN_KEYS = {"labels": "n_labels", "features": "n_features", "points": "n_points", "clusters": "n_clusters",
            "alpha": "alpha", "gseed": "seed"}
# the settings a config.json import sets: config field -> widget key (and URL parameter)
IMPORTED_KEYS = {"head": "head", "hidden": "hidden", "fanin": "fanin", "group_size": "group", "groups": "groups",
                 "index_init": "init", "head_size": "head_size", "mach_buckets": "buckets", "mach_reps": "reps",
                 "mach_members": "members",
                 "seed": "seed", "epochs": "epochs", "batch_size": "batch", "lr": "lr", "eval_every": "eval_every",
                 "dropout": "dropout", "normalize": "normalize", "dst": "dst", "dst_every": "dst_every",
                 "dst_zeta": "dst_zeta"}
# what the settings widgets can hold, by key: the (low, high) of a slider or number input, the options of a
# select slider; shared by the widgets and the check of an imported config (a widget given a value outside
# raises, or silently falls back to its default)
RANGES = {"hidden": [0, 64, 128, 256, 512], "fanin": (1, 512), "group": (1, 256), "seed": (0, 10**6),
          "epochs": (1, 200), "lr": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2], "batch": [32, 64, 128, 256, 512, 1024],
          "eval_every": (0, 10000), "dropout": (0.0, 0.9), "head_size": (1, 2000),
          "buckets": [16, 32, 64, 128, 256, 512, 1024], "reps": (1, 16), "members": (1, 16), "dst_every": (1, 10000),
          "dst_zeta": (0.05, 0.9)}


def runs_root():
    """Where runs are stored: $XMC_RUNS_DIR, else runs/ in the repository."""
    return Path(os.environ.get("XMC_RUNS_DIR") or REPO / "runs")


def data_root():
    """Generated and uploaded datasets (inside the runs directory, so they stay out of git)."""
    return runs_root() / "_datasets"


@st.cache_resource(show_spinner=False)
def registry(root: str) -> JobRegistry:
    return JobRegistry(root, max_jobs=int(os.environ.get("XMC_MAX_JOBS", "2")), threads=default_threads())


def jobs():
    return registry(str(runs_root()))


class WarmUp(threading.Thread):
    """Background warm-up; `stage` says how far it got: training, umap, done."""

    def __init__(self):
        super().__init__(name="warm-up", daemon=True)
        self.stage = "training"

    def run(self):
        try:
            limit_threads(default_threads())
            analysis.warm_up_training()
            self.stage = "umap"
            analysis.warm_up_umap()
        finally:
            self.stage = "done"


@st.cache_resource(show_spinner=False)
def _warm_up():
    """Once per process, in the background: load the training kernels (so the first Start shows
    metrics at once), then load UMAP (so the first label map draws quickly)."""
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


# ---------------------------------------------------------------------------------------------
# datasets

@st.cache_resource(show_spinner="Loading the dataset ...", max_entries=6)
def load_folder(path: str):
    return load_dataset(path)


@st.cache_resource(show_spinner="Generating the dataset ...", max_entries=4)
def load_synthetic(params_json: str, root: str):
    """Generate (seeded) and save under the data root, so runs can name it as a folder."""
    params = json.loads(params_json)
    ds = generate(**params)
    path = Path(root) / ("synthetic-" + hashlib.sha1(params_json.encode()).hexdigest()[:10])
    if not (path / "train.txt").exists():
        save_dataset(ds, path)
    return ds, str(path)


def generator_params():
    p = dict(SAMPLE_PRESET, name="synthetic")
    for key, name in GEN_KEYS.items():
        if key in st.session_state:
            p[name] = st.session_state[key]
    p["alpha"] = float(p["alpha"])
    return p


def current_dataset():
    """(Dataset, the `data` string a TrainConfig names it by), from the sidebar state.
    Raises XMCError (DatasetFormatError, ConfigError) on bad input."""
    source = st.session_state.get("data", "sample")
    if source == "synthetic":
        ds, path = load_synthetic(json.dumps(generator_params(), sort_keys=True), str(data_root()))
        return ds, path
    if source == "folder":
        path = (st.session_state.get("path") or "").strip()
        if not path:
            raise ConfigError("no dataset folder given: type a path in the sidebar, or upload files on the Data page")
        return load_folder(str(Path(path).expanduser().resolve())), str(Path(path).expanduser().resolve())
    return load_folder(str(SAMPLE_DIR)), "sample"


def dataset_or_stop():
    """current_dataset(), or an error message and the end of the page."""
    try:
        return current_dataset()
    except XMCError as e:
        st.error(f"The dataset could not be loaded. {e}")
        st.stop()


@st.cache_resource(show_spinner=False, max_entries=8)
def dataset_by_ref(data: str):
    """A dataset by the `data` string of a stored run's config (None if it is gone)."""
    if data == "sample":
        return load_folder(str(SAMPLE_DIR))
    try:
        return load_folder(str(Path(data).resolve()))
    except XMCError:
        return None


def runs_with_checkpoint():
    """Ids of the stored runs that have a checkpoint, newest first."""
    return [r.id for r in reversed(jobs().store.list()) if (r.path / "model.safetensors").exists()]


@st.cache_resource(show_spinner="Building the model ...", max_entries=4)
def model_for(config_json, data_ref, run_id):
    """The untrained model of a config (as JSON), or a stored run's model at its checkpoint."""
    dataset = dataset_by_ref(data_ref) if run_id else current_dataset()[0]
    if run_id:
        return analysis.load_run_model(jobs().store.get(run_id), dataset)
    return analysis.build_trainer(TrainConfig.from_dict(json.loads(config_json)), dataset).model


def current_model(ref):
    """The untrained model of the sidebar settings on dataset `ref`."""
    return model_for(json.dumps(train_config(ref).to_dict(), sort_keys=True), ref, None)


# ---------------------------------------------------------------------------------------------
# configuration

def train_config(data, **overrides):
    """The TrainConfig of the sidebar state plus page settings; ConfigError on bad values."""
    s = st.session_state
    kw = {"data": data, "head": s.get("head", "group_shared"), "hidden": int(s.get("hidden", 256)),
          "fanin": int(s.get("fanin", 32)), "group_size": int(s.get("group", 32)), "seed": int(s.get("seed", 0))}
    for key, name in OPTIONAL_KEYS.items():
        if name in TRAIN_FIELDS and key in s:
            kw[name] = s[key]
    kw.update(overrides)
    return TrainConfig(**{k: v for k, v in kw.items() if k in TRAIN_FIELDS})


def sidebar():
    """The shared controls, each bound to a URL query parameter (the entrypoint draws them)."""
    s = st.sidebar
    s.toggle("Classroom mode", key="classroom", bind="query-params",
             help="Fewer controls, and an explanation beside each view.")
    s.subheader("Dataset")
    source = s.selectbox("Source", ["sample", "synthetic", "folder"], key="data", bind="query-params",
                         help="sample: the bundled one (2,000 labels); synthetic: generated with the settings "
                              "below; folder: a dataset directory in the XC format (or upload on the Data page)")
    if source == "synthetic":
        with s.expander("Generator", expanded=True):
            st.slider("Labels", 100, 20000, SAMPLE_PRESET["n_labels"], 100, key="labels", bind="query-params")
            st.slider("Features", 50, 20000, SAMPLE_PRESET["n_features"], 50, key="features", bind="query-params")
            st.slider("Points", 200, 50000, SAMPLE_PRESET["n_points"], 100, key="points", bind="query-params")
            st.slider("Label clusters", 1, 500, SAMPLE_PRESET["n_clusters"], key="clusters", bind="query-params")
            st.slider("Power-law exponent α", 0.0, 2.0, float(SAMPLE_PRESET["alpha"]), 0.1, key="alpha",
                      bind="query-params", help="label popularity ∝ rank^-α; 0 = all labels equally popular")
            st.number_input("Generator seed", 0, 10**6, 0, key="gseed", bind="query-params")
    elif source == "folder":
        s.text_input("Folder (train.txt, test.txt, optional labels.txt / features.txt)", key="path",
                     bind="query-params", placeholder="/path/to/dataset")
    s.subheader("Model")
    s.selectbox("Head", list(HEADS), index=list(HEADS).index("group_shared"), key="head", bind="query-params",
                help="; ".join(f"{h}: {n}" for h, n in HEAD_NAMES.items() if h in HEADS))
    classroom = st.session_state.get("classroom", False)
    s.select_slider("Hidden width d", RANGES["hidden"], 256, key="hidden", bind="query-params",
                    format_func=lambda v: str(v or "none"), help="width of the layer the head reads; none: no "
                    "encoder, the head reads the input features (a linear model)")
    s.slider("Fan-in k", *RANGES["fanin"], 32, key="fanin", bind="query-params",
             help="inputs each label (group) reads; at most d")
    s.slider("Group size m", *RANGES["group"], 32, key="group", bind="query-params",
             help="labels sharing one input set (group-shared head)")
    head = st.session_state.get("head", "group_shared")
    if "groups" in TRAIN_FIELDS and not classroom:
        s.radio("Label groups", ["random", "clustered"], key="groups", bind="query-params", horizontal=True,
                help="clustered: balanced 2-means on PIFA label embeddings")
    if "index_init" in TRAIN_FIELDS and not classroom:
        s.radio("Index init", ["random", "centroid"], key="init", bind="query-params", horizontal=True,
                help="a group's first k inputs: at random, or the k largest entries of its centroid in h-space")
    if head == "dense_sparse" and "head_size" in TRAIN_FIELDS:
        s.slider("Dense part: most frequent labels", *RANGES["head_size"], 100, key="head_size", bind="query-params")
    if head == "mach" and "mach_buckets" in TRAIN_FIELDS:
        s.select_slider("MACH buckets B", RANGES["buckets"], 256, key="buckets", bind="query-params")
        s.slider("MACH repetitions R", *RANGES["reps"], 4, key="reps", bind="query-params")
        if "mach_members" in TRAIN_FIELDS and not classroom:
            s.slider("MACH members E", *RANGES["members"], 1, key="members", bind="query-params",
                     help="independent models the R repetitions form, each with its own encoder (E must "
                          "divide R); 1 = one encoder shared by all repetitions")
    s.number_input("Seed", *RANGES["seed"], 0, key="seed", bind="query-params")


# ---------------------------------------------------------------------------------------------
# teaching

def intro(title, text, formula=None):
    """A page's opening: title, a plain-language explanation, the formula that matters."""
    st.title(title)
    st.markdown(text)
    if formula:
        st.latex(formula)


def note(text):
    """An explanation beside a view: always in classroom mode, else folded away."""
    if st.session_state.get("classroom"):
        st.info(text)
    else:
        with st.expander("What am I looking at?"):
            st.markdown(text)


def classroom():
    return bool(st.session_state.get("classroom"))


def fmt_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
