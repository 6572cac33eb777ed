"""The layer drawn: dense, fixed fan-in and group-shared side by side at a small shape, every
connection, the groups, the bytes each reads per batch; a DST run's connection changes replayed."""

import numpy as np
import pandas as pd
import streamlit as st

from engine import LAYERS, XMCError, forward_reads, index_history, small_layer

from app import analysis, datasets, layer_figures, models, registry, teaching, text
from app.sidebar import train_config

teaching.intro(
    "The layer drawn",
    "Three output layers at a size you can see: every line is a connection, a weight the layer stores and a "
    "product it computes. **Dense** joins every input to every label. **Fixed fan-in** gives each label k inputs "
    "of its own: each label gathers its k values from every point of the batch. **Group-shared** gives one set "
    "of k inputs to a group of m labels: the group gathers them once (the square block) and all m labels reuse "
    "the block, so the gathers and the index fall m times. That is why it is faster on the same fan-in.",
    r"\text{reads per batch} = \underbrace{4\,P}_{\text{weights}} + \underbrace{4\,G k}_{\text{index}} + "
    r"\underbrace{4\,B\,G k}_{\text{gathered inputs}}, \qquad G = \lceil L/m \rceil \;(\text{fixed fan-in: } G = L)",
)
ss = st.session_state
ds, ref = datasets.dataset_or_stop()
try:
    config = train_config(ref)
except XMCError as e:
    st.error(f"The sidebar settings are not valid: {text.md(e)}")
    st.stop()

c = st.columns(5)
d = c[0].number_input("inputs d", 2, 24, 12, key="layer_d", bind="query-params")
L = c[1].number_input("labels L", 2, 32, 16, key="layer_L", bind="query-params")
k = c[2].number_input("fan-in k", 1, 24, 3, key="layer_k", bind="query-params")
m = c[3].number_input("group size m", 1, 32, 4, key="layer_m", bind="query-params")
B = c[4].number_input("batch B", 1, 4096, config.batch_size, key="layer_B", bind="query-params")
try:
    layers = [small_layer(h, d, L, k, m, seed=config.model.seed, batch_size=B) for h in LAYERS]
except XMCError as e:
    st.error(f"This layer cannot be drawn: {text.md(e)}")
    st.stop()
st.plotly_chart(layer_figures.layer_diagram(layers), key="layer_diagram")

rows = []
for head, cfg in analysis.head_variants(config).items():
    if head in LAYERS:
        r = forward_reads(cfg.model_config(ds.n_features, ds.n_labels), config.batch_size)
        rows.append({"layer": layer_figures.TITLES[head], **{part: teaching.fmt_bytes(v) for part, v in r.items()}})
mc = config.model_config(ds.n_features, ds.n_labels)
st.markdown(f"**The same layers at the current settings** (d = {mc.head_in:,} inputs, L = {ds.n_labels:,} labels, "
            f"k = {config.model.head.fanin if mc.sparse else mc.head_in}, m = {mc.group_labels}, "
            f"B = {config.batch_size}): the bytes one forward pass reads")
st.dataframe(pd.DataFrame(rows), hide_index=True, key="layer_reads")
teaching.note(
    "Weights and index are what the layer holds; the inputs are what it gathers from the batch: the whole "
    "row for dense, k values per label for fixed fan-in, k values per group for group-shared. With m labels "
    "per group the gathers fall m-fold while each label keeps its own k weights."
)

# ---------------------------------------------------------------------------------------------
st.subheader("Dynamic sparse training, replayed")
store = registry.jobs().store
dst_runs = []
for rid in registry.runs_with_checkpoint():
    try:
        if store.get(rid).config.dst != "none":
            dst_runs.append(rid)
    except XMCError:
        pass                                                           # a broken run: listed on the Train page
if not dst_runs:
    st.info("No stored run trained with dynamic sparse training. Start one on the Train page (preset "
            "'group-shared + dynamic sparse training'); its recorded connection changes replay here.")
    st.stop()
rid = st.selectbox("Run", dst_runs, key="layer_run", bind="query-params")
try:
    run = store.get(rid)
    model = models.model_for("", run.config.data, rid)
    updates = [r for r in run.records() if r.get("kind") == "dst"]
    if model is None or model.sparse is None or not updates:
        st.info(f"Run {text.md(rid)} has no sparse layer or no recorded update yet.")
        st.stop()
    G, m_run = model.sparse.n_groups, model.sparse.group_size
    n = max(1, min(G, 16 // m_run))
    g0 = st.number_input(f"First group (the view shows {n})", 0, G - n, 0, key="layer_group", bind="query-params")
    groups = np.arange(g0, g0 + n)
    history = index_history(analysis.head_index(model), run.checkpoint_step(), updates, groups)   # (U+1, n, k)
except XMCError as e:
    st.error(f"Run {text.md(rid)} cannot be replayed: {text.md(e)}")
    st.stop()
u = st.slider("Update", 1, len(updates), 1, key="layer_update")
used = np.unique(history)
run_ds = datasets.dataset_by_ref(run.config.data) or ds
inputs, names = analysis.input_names(model, run_ds.feature_names), run_ds.label_names
slots = np.concatenate([model.group_slots(int(g)) for g in groups])
label_names = [("(padding)" if l < 0 else names[l] if names else f"label {l}") for l in slots.tolist()]
st.plotly_chart(layer_figures.replay_diagram(history[u - 1], history[u], m_run, used, [inputs[i] for i in used],
                                             label_names), key="dst_replay")
moved = int((history[u - 1] != history[u]).sum())
st.caption(f"Update {u} of {len(updates)}, at step {updates[u - 1]['step']}: {moved} of these {n} groups' "
           f"{n * history.shape[2]} connections moved (all groups: {updates[u - 1].get('dropped', 0):,}); "
           f"drawn: the {len(used)} inputs they read at some update.")
