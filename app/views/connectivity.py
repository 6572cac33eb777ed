"""Connectivity: which inputs each group reads, how often inputs are shared, the group's weights."""

import pandas as pd
import streamlit as st

from engine import XMCError

from app import analysis, datasets, figures, models, registry, teaching, text

teaching.intro(
    "Connectivity",
    "In a sparse head a group g of m labels reads only k of the d hidden units: the **index set** idx[g]. "
    "Each label of the group has its own k weights on those shared inputs. Hidden units have no names, so "
    "for each one the table shows the input features that drive it most in the first layer. With no "
    "encoder (hidden width: none) the head reads the input features themselves.",
    r"z_{g m + j} = \sum_{t=1}^{k} W_{g,j,t}\; h_{\mathrm{idx}[g,t]} \qquad "
    r"\text{reuse}(i) = \big|\{(g,t) : \mathrm{idx}[g,t] = i\}\big| \approx \frac{G\,k}{d}",
)
ss = st.session_state
ds, ref = datasets.dataset_or_stop()
store = registry.jobs().store
source = models.pick_model(st, "Model", "conn_model")


try:
    if source == models.CURRENT:
        model = models.current_model(ref)
    else:
        run = store.get(source)
        ds = datasets.dataset_by_ref(run.config.data) or ds
        model = models.model_for("", run.config.data, source)
except XMCError as e:
    st.error(f"No model for these settings: {text.md(e)}")
    st.stop()

head = model.sparse
if head is None:
    st.info(f"The {model.config.head.name} head has no index sets: every label reads all {model.config.head_in} inputs "
            "(dense) or hashed buckets (MACH). Choose a fixed fan-in or group-shared head in the sidebar, or a "
            "run that used one.")
    st.stop()

idx = analysis.head_index(model)                                        # (G, k)
groups = model.label_groups()
G, k = idx.shape
d = head.in_features
inputs = analysis.input_names(model, ds.feature_names)
names = ds.label_names or [f"label {i}" for i in range(ds.n_labels)]
st.caption(f"{G:,} groups of up to {head.group_size} labels, each reading k = {k} of d = {d} inputs "
           f"({100 * k / d:.1f}% of the connections of a dense layer).")

c = st.columns([1, 2])
label = c[1].selectbox("... or find a label", range(ds.n_labels), index=None, key="conn_label",
                       format_func=lambda i: names[i], placeholder="type a label name")
if label is not None and groups[label] >= 0:
    g = int(groups[label])
    c[0].metric("Group", g)
else:
    g = c[0].number_input("Group", 0, G - 1, 0, key="conn_group", bind="query-params")
members = analysis.group_labels(groups, g)
st.markdown(f"**Group {g}**: labels " + ", ".join(text.md(names[i]) for i in members[:32]) +
            (" ..." if len(members) > 32 else ""))

left, right = st.columns([3, 2])
with left:
    st.markdown(f"**The {k} inputs group {g} reads** (strongest first)")
    st.dataframe(pd.DataFrame(analysis.group_inputs_table(model, g, ds.feature_names)), hide_index=True,
                 key="inputs_table", height=320)
with right:
    W = head.weight.detach()[g].numpy()                                 # (m, k)
    n_real = max(min(len(members), W.shape[0]), 1)
    slot_labels = model.group_slots(g)                                  # (m,) label of each row of W, -1: padding
    st.plotly_chart(figures.group_weights(W[:n_real], [inputs[i] for i in idx[g]],
                                          [names[l] if l >= 0 else f"(padding {j})"
                                           for j, l in enumerate(slot_labels[:n_real].tolist())]),
                    key="group_weights")

rows, M, sampled = analysis.connectivity_matrix(idx, d, seed=int(ss.get("seed", 0)))
h1, h2 = st.columns([3, 2])
h1.plotly_chart(figures.connectivity_heatmap(rows, M, sampled, inputs), key="heatmap")
if sampled:
    h1.caption(f"Showing {len(rows)} of {G:,} groups, sampled at random (seed {int(ss.get('seed', 0))}).")
counts = analysis.reuse_counts(idx, d)
h2.plotly_chart(figures.reuse_histogram(counts, expected=G * k / d), key="reuse")
h2.caption(f"{int((counts == 0).sum())} of {d} inputs are read by no group; the busiest by {int(counts.max())}.")
teaching.note(
    "Random index sets spread the inputs evenly: each is read by about G·k/d groups (the dashed line). "
    "Data-driven sets (clustered groups, dynamic sparse training) concentrate on the inputs that matter, "
    "so the histogram grows a tail."
)

# dynamic sparse training: the updates a stored run recorded
if source != models.CURRENT:
    try:
        records = store.get(source).records()
    except XMCError as e:
        st.error(f"The run's records do not read: {text.md(e)}")
        records = []
    _, _, other = analysis.split_records(records)
    updates = other.get("dst", [])
    if updates:
        st.subheader("Dynamic sparse training")
        st.plotly_chart(figures.dst_changes(updates), key="dst_changes")
        i = st.slider("Update", 1, len(updates), len(updates), key="dst_update")
        u = updates[i - 1]
        mine = [(t, o, n) for gg, t, o, n in zip(u.get("group", []), u.get("slot", []), u.get("old_input", []),
                                                 u.get("new_input", [])) if gg == g]
        st.markdown(f"Update {i} at step {u['step']}: {u.get('dropped', 0):,} connections moved "
                    f"(drop fraction {u.get('zeta', 0):.3f}); group {g} moved {len(mine)}.")
        if mine:
            st.dataframe(pd.DataFrame(mine, columns=["slot", "old input", "new input"]), hide_index=True,
                         key="dst_moves")
