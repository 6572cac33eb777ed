"""Label map: labels in 2-D (UMAP of PIFA embeddings or trained weights), coloured by group, cluster,
frequency or a run's recall; a click inspects a label (views/label.py)."""

import time

import numpy as np
import streamlit as st

from engine import XMCError, balanced_groups, check_bytes, label_map_bytes

from app import analysis, datasets, figures, label_data, models, registry, teaching, text, warmup

teaching.intro(
    "Label map",
    "Each label gets a vector: its **PIFA** embedding is the average of the feature vectors of the training "
    "points that carry it, so labels used by similar points get similar vectors. UMAP lays these vectors out "
    "in 2-D so that neighbours stay neighbours. Colour them by the head's groups (labels in one group share "
    "one set of inputs, so a good grouping puts similar labels together), by clusters of the vectors, by how "
    "often they occur, or by how well a run finds them (its recall on the test set).",
    r"\mathrm{PIFA}(l) = \frac{\sum_{i:\,y_{il}=1} x_i}{\big\|\sum_{i:\,y_{il}=1} x_i\big\|_2}",
)
ss = st.session_state
ds, ref = datasets.dataset_or_stop()
store = registry.jobs().store

CLUSTERS = 16                    # "cluster" colours: balanced 2-means of the drawn labels' vectors
c = st.columns([2, 1, 1, 2])
source = models.pick_model(c[0], "Groups from", "map_model",
                          help="the head whose label groups (and test recall) colour the map: the sidebar settings, "
                               "or a stored run")
vectors = c[1].radio("Label vectors", ["PIFA", "trained weights"], key="vectors", bind="query-params",
                     horizontal=True, help="trained weights: each label's row of the head (needs a run)")
method = c[2].radio("Layout", ["umap", "pca"], key="method", bind="query-params", horizontal=True,
                    help="umap: neighbours stay neighbours (seconds); pca: the two main directions (instant)")
colour = c[3].radio("Colour by", ["group", "cluster", "frequency", "recall"], key="map_color", bind="query-params",
                    horizontal=True, help=f"group: the head's; cluster: {CLUSTERS} balanced clusters of the label "
                                          "vectors; frequency: log10 training points; recall: the run's recall@5")


@st.cache_data(show_spinner=False, max_entries=16)
def layout(_E, key, method, seed):
    return analysis.embed_2d(_E, method, seed=seed)


@st.cache_data(show_spinner="Clustering the labels ...", max_entries=8)
def clusters_of(_E, key, seed):
    """(n,) cluster of each row of _E: CLUSTERS balanced clusters (engine.balanced_groups)."""
    size = -(-_E.shape[0] // CLUSTERS)
    return balanced_groups(_E, size, seed=seed).slot_of_label // size


def pick_from_map():
    """Callback of a click on the map: the clicked label (to inspect), and its group highlighted
    when the colours are the groups. ss.map_traces: the drawn label of each point, trace by trace;
    ss.map_groups: each drawn label's group (None without groups)."""
    event, traces = ss.get("label_map"), ss.get("map_traces")
    points = (event or {}).get("selection", {}).get("points", []) if isinstance(event, dict) else \
        getattr(getattr(event, "selection", None), "points", [])
    if not points or not traces:
        return
    p = points[0]
    curve, i = p.get("curve_number", 0), p.get("point_index", p.get("point_number"))
    if curve < len(traces) and i is not None and i < len(traces[curve]):
        ss["map_label"] = int(traces[curve][i])
        group = None if ss.get("map_groups") is None else ss.map_groups[ss["map_label"]]
        if ss.get("map_color") == "group" and group is not None and group >= 0:
            ss["highlight"] = int(group)


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
try:
    check_bytes(label_map_bytes(ds.X_train, ds.Y_train, len(labels)), "The label map")
except XMCError as e:
    st.error(text.md(e))
    st.stop()
E = label_data.pifa_of(ds.name + ref, ds) if vectors == "PIFA" else W
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
                                          bind="query-params", disabled=groups is None or colour != "group")
if colour == "recall" and source == models.CURRENT:
    st.info("Recall needs a trained model: choose a stored run in 'Groups from'. Colouring by frequency instead.")
    colour = "frequency"
try:
    if colour == "cluster":
        cat, category, values, value_name = clusters_of(E[labels], key, int(ss.get("seed", 0))), "cluster", None, None
    elif colour == "group":
        cat, category, values, value_name = g, "group", None, None
    elif colour == "frequency":
        cat, category, values, value_name = g, "group", np.log10(1 + freq[labels]), "log10 training points"
    else:
        cat, category, values, value_name = g, "group", label_data.scores(source, 5)["recall"][labels], "recall@5"
except XMCError as e:
    st.error(f"The map cannot be coloured by {colour}: {text.md(e)}")
    st.stop()
fig = figures.label_map(xy, [names[i] for i in labels], freq[labels], cat, values=values, value_name=value_name,
                        category=category, highlight=None if pick < 0 or colour != "group" else pick)
ss.map_traces = [labels[t.customdata[:, 3].astype(int)].tolist() for t in fig.data]    # for clicks
ss.map_groups = groups
st.plotly_chart(fig, key="label_map", on_select=pick_from_map, selection_mode="points")
elapsed = time.perf_counter() - t0
shown = f"all {ds.n_labels:,} labels" if len(labels) == ds.n_labels else \
    f"{len(labels):,} of {ds.n_labels:,} labels (a uniform sample, seed {int(ss.get('seed', 0))})"
told = {"group": "the head's group" if groups is not None else "none (this head has no groups)",
        "cluster": f"{CLUSTERS} balanced clusters of the drawn labels' {vectors} vectors",
        "frequency": "log10 of the training points",
        "recall": "the run's recall@5 on the test set (grey: no test point)"}
st.caption(f"Showing {shown}, {vectors} vectors, {method.upper()} layout; map ready in {elapsed:.1f} s"
           + (" (cached). " if elapsed < 0.05 else ". ") + f"Colour: {told[colour]}. Size: frequency. "
           + "Click a label to inspect it" + (" and highlight its group." if colour == "group" and groups is not None
                                              else "."))
if ss.get("map_label") is not None and ss["map_label"] < ds.n_labels:
    st.page_link("views/label.py", label=f"Inspect {text.md(names[ss['map_label']])}", icon=":material/label:",
                 query_params={"label": str(ss["map_label"]), **({} if source == models.CURRENT else
                                                                  {"label_model": source})})
if groups is not None and pick >= 0 and colour == "group":
    members = analysis.group_labels(groups, pick)
    st.markdown(f"**Group {pick}** ({len(members)} labels): " + ", ".join(text.md(names[i]) for i in members[:40]) +
                (" ..." if len(members) > 40 else ""))
teaching.note(
    "Point size grows with label frequency. With *random* groups the colours are scattered all over the map; "
    "with *clustered* groups (sidebar, Label groups) each colour sits in one region: the labels of a group are "
    "used by similar points, so sharing one input set costs them little."
)
