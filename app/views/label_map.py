"""Label map: labels in 2-D (UMAP of PIFA embeddings or trained weights), coloured by group."""

import time

import numpy as np
import streamlit as st

from engine import XMCError, pifa

from app import analysis, datasets, figures, models, registry, teaching, text, warmup

teaching.intro(
    "Label map",
    "Each label gets a vector: its **PIFA** embedding is the average of the feature vectors of the training "
    "points that carry it, so labels used by similar points get similar vectors. UMAP lays these vectors out "
    "in 2-D so that neighbours stay neighbours. Colours are the groups of the head: labels in one group share "
    "one set of inputs, so a good grouping puts similar labels together.",
    r"\mathrm{PIFA}(l) = \frac{\sum_{i:\,y_{il}=1} x_i}{\big\|\sum_{i:\,y_{il}=1} x_i\big\|_2}",
)
ss = st.session_state
ds, ref = datasets.dataset_or_stop()
store = registry.jobs().store

c = st.columns([2, 1, 1])
source = models.pick_model(c[0], "Groups from", "map_model",
                          help="the head whose label groups colour the map: the sidebar settings, or a stored run")
vectors = c[1].radio("Label vectors", ["PIFA", "trained weights"], key="vectors", bind="query-params",
                     horizontal=True, help="trained weights: each label's row of the head (needs a run)")
method = c[2].radio("Layout", ["umap", "pca"], key="method", bind="query-params", horizontal=True,
                    help="umap: neighbours stay neighbours (seconds); pca: the two main directions (instant)")


@st.cache_resource(show_spinner=False, max_entries=4)
def pifa_of(data_ref, _ds):
    return pifa(_ds.X_train, _ds.Y_train, dense=False)                  # (L, D) csr


@st.cache_data(show_spinner=False, max_entries=16)
def layout(_E, key, method, seed):
    return analysis.embed_2d(_E, method, seed=seed)


def pick_from_map():
    """Callback of a click on the map: highlight the clicked label's group."""
    event, traces = ss.get("label_map"), ss.get("map_traces")
    points = (event or {}).get("selection", {}).get("points", []) if isinstance(event, dict) else \
        getattr(getattr(event, "selection", None), "points", [])
    if not points or not traces:
        return
    p = points[0]
    curve, i = p.get("curve_number", 0), p.get("point_index", p.get("point_number"))
    if curve < len(traces) and i is not None and i < len(traces[curve]) and traces[curve][i] >= 0:
        ss["highlight"] = int(traces[curve][i])


try:
    if source == models.CURRENT:
        model = models.current_model(ref)
    else:
        run = store.get(source)
        if run.config.data != ref:
            st.warning(f"Run {text.md(source)} was trained on another dataset ({text.md(run.config.data)}); "
                       "showing it on that one.")
            ds = datasets.dataset_by_ref(run.config.data)
            if ds is None:
                st.error(f"The dataset of run {text.md(source)} is gone: {text.md(run.config.data)}")
                st.stop()
        model = models.model_for("", run.config.data, source)
except XMCError as e:
    st.error(f"No model for these settings: {text.md(e)}")
    st.stop()

labels = analysis.sample_labels(ds.n_labels, seed=int(ss.get("seed", 0)))
if vectors == "trained weights":
    if source == models.CURRENT:
        st.info("Untrained weights are random: choose a stored run in 'Groups from' to map trained weights. "
                "Showing PIFA instead.")
        vectors = "PIFA"
    else:
        W = analysis.label_weight_vectors(model)
        if W is None:
            st.info("This head has no per-label weights (MACH); showing PIFA instead.")
            vectors = "PIFA"
E = pifa_of(ds.name + ref, ds) if vectors == "PIFA" else W
groups = model.label_groups()
freq = np.asarray(ds.Y_train.sum(axis=0)).ravel().astype(int)
names = ds.label_names or [f"label {i}" for i in range(ds.n_labels)]

t0 = time.perf_counter()
key = f"{ref}|{vectors}|{source}|{len(labels)}"
with st.spinner(f"Laying out {len(labels):,} labels ({method.upper()}) ..."):
    if method == "umap":
        warmup.wait_for_warm_up()
    xy = layout(E[labels], key, method, int(ss.get("seed", 0)))
g = None if groups is None else groups[labels]
n_groups = None if groups is None else int(groups.max()) + 1
pick = st.columns([1, 3])[0].number_input("Highlight group (-1: none)", -1, (n_groups or 1) - 1, -1, key="highlight",
                                          bind="query-params", disabled=groups is None)
fig = figures.label_map(xy, [names[i] for i in labels], freq[labels], g, highlight=None if pick < 0 else pick)
if g is not None:                                        # group of each point, trace by trace, for clicks
    ss.map_traces = [g.tolist()] if pick < 0 else [g[g != pick].tolist(), g[g == pick].tolist()]
st.plotly_chart(fig, key="label_map", on_select=pick_from_map if g is not None else "ignore",
                selection_mode="points")
elapsed = time.perf_counter() - t0
shown = f"all {ds.n_labels:,} labels" if len(labels) == ds.n_labels else \
    f"{len(labels):,} of {ds.n_labels:,} labels (a uniform sample, seed {int(ss.get('seed', 0))})"
st.caption(f"Showing {shown}, {vectors} vectors, {method.upper()} layout; map ready in {elapsed:.1f} s"
           + (" (cached). " if elapsed < 0.05 else ". ")
           + ("Colour: the head's group; click a label to highlight its group." if groups is not None else "This head has no groups (colour: none)."))
if groups is not None and pick >= 0:
    members = analysis.group_labels(groups, pick)
    st.markdown(f"**Group {pick}** ({len(members)} labels): " + ", ".join(text.md(names[i]) for i in members[:40]) +
                (" ..." if len(members) > 40 else ""))
teaching.note(
    "Point size grows with label frequency. With *random* groups the colours are scattered all over the map; "
    "with *clustered* groups (sidebar, Label groups) each colour sits in one region: the labels of a group are "
    "used by similar points, so sharing one input set costs them little."
)
