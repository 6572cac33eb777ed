"""One label inspected: frequencies, its group and the group's labels, the inputs it reads and their
weights, its nearest labels (PIFA), its precision and recall at k on the test set, where it was missed."""

import numpy as np
import pandas as pd
import streamlit as st

from engine import XMCError, label_report

from app import analysis, datasets, label_data, layer_figures, models, registry, teaching, text

teaching.intro(
    "One label",
    "Everything about one label: how often it occurs, the group it shares its inputs with, the inputs it reads "
    "and its weights on them, the labels whose PIFA vectors are closest to it, and how the chosen run does on it "
    "on the test set: of the test points whose top k hold it, how many carry it (precision), and of the points "
    "that carry it, how many have it in their top k (recall).",
    r"\mathrm{precision@}k(l) = \frac{|\{i : y_{il} = 1,\ l \in \mathrm{top}_k(i)\}|}"
    r"{|\{i : l \in \mathrm{top}_k(i)\}|}"
    r"\qquad \mathrm{recall@}k(l) = \frac{|\{i : y_{il} = 1,\ l \in \mathrm{top}_k(i)\}|}{|\{i : y_{il} = 1\}|}",
)
ss = st.session_state
ds, ref = datasets.dataset_or_stop()
store = registry.jobs().store
c = st.columns([2, 2, 1])
source = models.pick_model(c[0], "Model", "label_model", help="a stored run gives the test numbers")
data_ref = ref
try:
    if source == models.CURRENT:
        model = models.current_model(ref)
    else:
        run = store.get(source)
        data_ref = run.config.data
        ds = datasets.dataset_by_ref(data_ref) or ds
        model = models.model_for("", run.config.data, source)
except XMCError as e:
    st.error(f"No model for these settings: {text.md(e)}")
    st.stop()
names = ds.label_names or [f"label {i}" for i in range(ds.n_labels)]
if "label" not in ss:                                                   # a link: ?label=<id>
    q = st.query_params.get("label", "")
    ss["label"] = int(q) if q.isdigit() and int(q) < ds.n_labels else None
if ss["label"] is not None and not 0 <= ss["label"] < ds.n_labels:
    ss["label"] = None                                                 # picked on another dataset
label = c[1].selectbox("Label (type to search)", range(ds.n_labels), key="label",
                       format_func=lambda i: names[i], placeholder="type a label name")
k = c[2].number_input("k", 1, 100, 5, key="label_k", bind="query-params")
if label is None:
    st.query_params.pop("label", None)
    st.info("Choose a label above, or click one on the Label map.")
    st.stop()
st.query_params["label"] = str(label)


try:
    top = np.full((ds.n_test, k), -1) if source == models.CURRENT else label_data.test_top(source, k)
    r = label_report(model, ds, int(label), top, embeddings=label_data.pifa_of(ds.name + data_ref, ds))
except XMCError as e:
    st.error(f"Label {text.md(names[label])} cannot be inspected: {text.md(e)}")
    st.stop()

m = st.columns(5)
m[0].metric("training points", f"{r['train_freq']:,}")
m[1].metric("test points", f"{r['test_freq']:,}")
m[2].metric("group", "none" if r["group"] is None else r["group"])
if source == models.CURRENT:
    st.info("Choose a stored run in 'Model' for the test numbers (precision, recall, the points it misses).")
else:
    m[3].metric(f"precision@{r['k']}", "-" if np.isnan(r["precision"]) else f"{r['precision']:.3f}",
                help=f"{r['hits']} of the {r['predicted']} test points whose top {r['k']} hold it carry it")
    m[4].metric(f"recall@{r['k']}", "-" if np.isnan(r["recall"]) else f"{r['recall']:.3f}",
                help=f"{r['hits']} of the {r['test_freq']} test points that carry it have it in their top {r['k']}")
if r["group_labels"] is not None:
    others = [i for i in r["group_labels"] if i != label]
    st.markdown(f"**Its group {r['group']}** shares one set of inputs with: " +
                (", ".join(text.md(names[i]) for i in others[:40]) + (" ..." if len(others) > 40 else "") or "none"))

left, right = st.columns([3, 2])
with left:
    if r["inputs"] is None:
        st.info("A MACH head has no weights per label: a label scores by the buckets it hashes to.")
    else:
        inputs = analysis.input_names(model, ds.feature_names)
        st.plotly_chart(layer_figures.label_weights([inputs[i] for i in r["inputs"]], r["weights"]),
                        key="label_weights")
with right:
    st.markdown("**Nearest labels** (cosine of PIFA vectors)")
    st.dataframe(pd.DataFrame({"label": [names[i] for i in r["neighbours"]], "cosine": r["cosines"].round(3)}),
                 hide_index=True, key="label_neighbours")
if source != models.CURRENT:
    st.markdown(f"**Missed**: {r['n_missed']:,} test points carry it but not in their top {r['k']}"
                + (f" (the first {len(r['missed'])})" if r["n_missed"] > len(r["missed"]) else ""))
    st.dataframe(pd.DataFrame({"test point": r["missed"],
                               f"its top {r['k']} instead": [", ".join(names[j] for j in top[i] if j >= 0)
                                                             for i in r["missed"]]}),
                 hide_index=True, key="label_missed")
