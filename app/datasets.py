"""The dataset the sidebar names, loaded once per process (st.cache_resource): the bundled sample, a
seeded synthetic set (saved under the runs directory, so a run can name it as a folder), or a
folder in the XC format; and the dataset of a stored run, by the `data` string of its config."""

import dataclasses
import hashlib
import json
from pathlib import Path

import streamlit as st

from engine import ConfigError, GeneratorConfig, XMCError, generate, load_dataset, resolve_dataset, save_dataset

from app.registry import runs_root
from app.text import md

# the sidebar's generator controls (and URL parameters) -> GeneratorConfig fields
GEN_KEYS = {"labels": "n_labels", "features": "n_features", "points": "n_points", "clusters": "n_clusters",
            "alpha": "alpha", "gseed": "seed"}


def data_root():
    """Generated and uploaded datasets (inside the runs directory, so they stay out of git)."""
    return runs_root() / "_datasets"


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
    p = dataclasses.asdict(GeneratorConfig())
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
    return load_folder(str(resolve_dataset("sample"))), "sample"


def dataset_or_stop():
    """current_dataset(), or an error message and the end of the page."""
    try:
        return current_dataset()
    except XMCError as e:
        st.error(f"The dataset could not be loaded. {md(e)}")
        st.stop()


@st.cache_resource(show_spinner=False, max_entries=8)
def dataset_by_ref(data: str):
    """A dataset by the `data` string of a stored run's config (None if it is gone)."""
    try:
        return load_folder(str(resolve_dataset(data).resolve()))
    except XMCError:
        return None
