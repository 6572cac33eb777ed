"""The shared sidebar and the state it holds: dataset and model settings, each a widget of the
entrypoint bound to a URL query parameter of the same name, so a link reproduces the view on any
page; `train_config` turns that state (plus a page's own settings) into a TrainConfig. The device
setting is a control only where this machine has a GPU to choose (engine.gpu_status)."""

import streamlit as st

from engine import GeneratorConfig, TrainConfig, gpu_status, used_by

from app import settings, text


def train_config(data, **overrides):
    """The TrainConfig of the controls' state (sidebar and Train page) plus overrides; ConfigError on bad values."""
    return TrainConfig.of(data=data, **settings.settings_from(st.session_state, **overrides))


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
            gen = GeneratorConfig()                     # the generator's defaults
            st.slider("Labels", 100, 20000, gen.n_labels, 100, key="labels", bind="query-params")
            st.slider("Features", 50, 20000, gen.n_features, 50, key="features", bind="query-params")
            st.slider("Points", 200, 50000, gen.n_points, 100, key="points", bind="query-params")
            st.slider("Label clusters", 1, 500, gen.n_clusters, key="clusters", bind="query-params")
            st.slider("Power-law exponent α", 0.0, 2.0, gen.alpha, 0.1, key="alpha",
                      bind="query-params", help="label popularity ∝ rank^-α; 0 = all labels equally popular")
            st.number_input("Generator seed", 0, 10**6, gen.seed, key="gseed", bind="query-params")
    elif source == "folder":
        s.text_input("Folder (train.txt, test.txt, optional labels.txt / features.txt)", key="path",
                     bind="query-params", placeholder="/path/to/dataset")
    s.subheader("Model")
    classroom = st.session_state.get("classroom", False)
    head = st.session_state.get("head", settings.default("head"))
    for name in settings.SIDEBAR:
        if used_by(head, name) and not (classroom and name in settings.ADVANCED):
            settings.control(s, name)
    device_control(s)


def device_control(container):
    """The device setting (auto | cpu | cuda) where there is a choice, a GPU that torch and CuPy both
    see; else one line saying why runs train on the CPU, the setting left at its default ("auto",
    whatever an imported config said)."""
    ok, why = gpu_status()
    if ok:
        settings.control(container, "device")
    else:
        st.session_state["device"] = settings.default("device")
        container.caption(f"Trains on the CPU: {text.md(why)}")
