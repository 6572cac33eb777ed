"""Fast inference: a trained model's labels in hash tables, SimHash against learned hashes, against exact scoring."""

import pandas as pd
import streamlit as st

from engine import XMCError, compare_hash_indexes

from app import datasets, figures, models, registry, teaching, text

# compare_hash_indexes row field -> table column
COLUMNS = {"index": "index", "cand_mean": "candidates", "cand_pct": "% of labels", "recall": "recall of true labels",
           "P@1": "P@1", "P@1_ratio": "share of exact P@1", "fit_s": "build (s)", "search_s": "search (s)",
           "exact_s": "exact (s)", "speedup": "speed-up"}

teaching.intro(
    "Fast inference",
    "Exact inference scores every label, h·w_l + b_l for all L of them: O(d·L) work per point. A hash index "
    "scores only the **candidates**, the labels that share a bucket with the point in at least one of T tables "
    "of 2^K buckets. Point and labels are first mapped to unit vectors whose inner product ranks the labels as "
    "the score does. **SimHash** cuts that space with random hyperplanes; the **learned** index trains the "
    "hyperplanes on the training points so that a point lands where its true labels are, with a penalty on "
    "crowded buckets (label superior sampling).",
    r"\mathcal{C}(h) = \bigcup_{t=1}^{T} \big\{\, l : \mathrm{code}_t(x_l) = \mathrm{code}_t(q_h) \big\}, \qquad "
    r"\mathrm{code}_t(x) = \sum_{k=1}^{K} 2^{k-1}\,\big[P_{t,k}\cdot x + c_{t,k} > 0\big], \qquad "
    r"\hat y = \operatorname*{top-5}_{l \in \mathcal{C}(h)}\; h\cdot w_l + b_l",
)
ss = st.session_state
runs = registry.runs_with_checkpoint()
if not runs:
    st.info("No trained model yet: train one on the Train page, then build its indexes here.")
    st.stop()
run_id = st.selectbox("Model", runs, key="inf_model", bind="query-params")

try:
    run = registry.jobs().store.get(run_id)
    model = models.model_for("", run.config.data, run_id)
    ds = datasets.dataset_by_ref(run.config.data)
except XMCError as e:
    st.error(f"No model for this run: {text.md(e)}")
    st.stop()

if model.config.head.name == "mach":
    st.info("A MACH head has no weight vector per label: a label scores by the buckets it hashes to, so there is "
            "nothing to put in hash tables. Choose a run with a dense or sparse head.")
    st.stop()

c = st.columns(3)
n_tables = c[0].slider("Tables T", 1, 32, 16, key="inf_tables", bind="query-params")
n_bits = c[1].slider("Bits per table K", 2, 16, 8, key="inf_bits", bind="query-params",
                     help="2^K buckets per table: more bits, smaller buckets, fewer candidates")
epochs = c[2].slider("Fit epochs", 1, 20, 2, key="inf_epochs", bind="query-params",
                     help="passes of the learned hashes over the training (point, true label) pairs")
result_key = (run_id, n_tables, n_bits, epochs)
if st.button("Build the indexes", key="build", type="primary"):
    bar = st.progress(0.0, text="starting ...")
    try:
        ss.lss_result = (result_key, compare_hash_indexes(
            model, ds, n_tables=n_tables, n_bits=n_bits, fit_epochs=epochs, seed=run.config.model.seed,
            progress=lambda i, n, text: bar.progress(i / n, text=text)))
    except XMCError as e:
        st.error(f"The indexes could not be built: {text.md(e)}")
rows = ss.lss_result[1] if ss.get("lss_result") and ss.lss_result[0] == result_key else None
if rows:
    st.dataframe(pd.DataFrame(rows)[list(COLUMNS)].rename(columns=COLUMNS), hide_index=True, key="lss_table")
    st.plotly_chart(figures.lss_bars(rows), key="lss_bars")
    st.caption(f"{rows[0]['n_queries']:,} test points, L = {rows[0]['n_labels']:,} labels, top-5; times on this "
               "machine's CPU, after a warm-up.")
teaching.note(
    "**Candidates** are the labels a point's buckets hold: the work of the search. **Recall** is the share of "
    "the true (point, label) pairs whose label is a candidate, a bound on what any scoring of the candidates can "
    "find; **share of exact P@1** compares P@1 of the search with P@1 of scoring all labels. The learned index "
    "should reach a higher recall with fewer candidates than SimHash at the same T and K. With a few thousand "
    "labels one matrix product over all of them is hard to beat; the speed-up shows at 100k labels and more "
    "(`python -m engine lss`)."
)
