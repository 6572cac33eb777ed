"""The tail: where stored runs find their correct labels, bin by bin of label frequency, and PSP@k
recomputed with the propensity constants of a chosen kind of dataset."""

import pandas as pd
import streamlit as st

from engine import PROPENSITY_CONSTANTS, XMCError, evaluate, inv_propensity, predict_run, tail_by_frequency

from app import datasets, figures, registry, teaching, text

K = 5                                   # the predictions kept per test point: the table's P@k, PSP@k for k <= K

teaching.intro(
    "Tail",
    "Most labels of an extreme classification set are rare: a few hundred frequent labels carry most of the "
    "(point, label) pairs. P@k rewards finding those, so a model can score well and never predict a rare label. "
    "Here the labels are sorted by their **training frequency** and cut into ten bins of equal size, as XMC "
    "papers draw it: bin 1 is the most frequent tenth, bin 10 the rarest. For each run, the share of its correct "
    "top-k predictions that falls in each bin, and the recall of each bin's labels.",
    r"\text{share}_b = \frac{\#\{(i,l): l \in \text{top}_k(i) \cap y_i,\ b(l) = b\}}{\#\{(i,l): l \in "
    r"\text{top}_k(i) \cap y_i\}}, \qquad \text{recall}_b = \frac{\#\{(i,l): l \in \text{top}_k(i) \cap y_i,\ "
    r"b(l) = b\}}{\#\{(i,l): y_{il} = 1,\ b(l) = b\}}",
)


@st.cache_data(show_spinner="Predicting the test split ...", max_entries=16)
def predictions(root, run_id, stamp):
    """(N_test, K) top label ids of run_id's checkpoint (stamp: its mtime, so a newer one is predicted)."""
    run = registry.jobs().store.get(run_id)
    return predict_run(run, K, dataset=datasets.dataset_by_ref(run.config.data))


runs = registry.runs_with_checkpoint()
if not runs:
    st.info("No trained model yet: train two heads (say dense and group-shared) on the Train page, then compare "
            "their tails here.")
    st.stop()
c = st.columns([3, 1])
chosen = c[0].multiselect("Runs", runs, default=runs[:2], key="tail_runs", bind="query-params",
                          help="stored runs with a checkpoint; runs on another dataset than the first are left out")
k = c[1].select_slider("k", [1, 3, 5], 5, key="tail_k", bind="query-params")
if not chosen:
    st.info("Choose one or more runs.")
    st.stop()

ds, data, tops, names = None, None, {}, {}
for run_id in chosen:
    try:
        run = registry.jobs().store.get(run_id)
        config = run.config
        if data is not None and config.data != data:
            st.warning(text.md(f"{run_id} is left out: it was trained on {config.data}, not on {data}."))
            continue
        run_ds = datasets.dataset_by_ref(config.data)
        if run_ds is None:
            st.warning(text.md(f"{run_id} is left out: its dataset {config.data} is gone."))
            continue
        tops[run_id] = predictions(str(registry.runs_root()), run_id, run.checkpoint_path.stat().st_mtime_ns)
    except (XMCError, OSError) as e:
        st.error(f"{text.md(run_id)} is left out: {text.md(e)}")
        continue
    ds, data, names[run_id] = run_ds, config.data, f"{run_id} ({config.model.head.name})"
if not tops:
    st.stop()

reports = {names[r]: tail_by_frequency(ds.Y_train, ds.Y_test, top, k=k) for r, top in tops.items()}
st.plotly_chart(figures.tail_bins(reports, k), key="tail_bins")
rows = next(iter(reports.values()))
st.caption(text.md(f"{ds.name}: {ds.n_labels:,} labels in bins of {rows[-1]['labels']:,} to {rows[0]['labels']:,}, "
                   f"{ds.n_test:,} test points, {sum(r['test_pairs'] for r in rows):,} test (point, label) pairs."))
table = pd.DataFrame({"bin": [r["bin"] for r in rows],
                      "training counts": [f"{r['min_count']:,} - {r['max_count']:,}" for r in rows],
                      "test pairs": [r["test_pairs"] for r in rows]})
for name, rs in reports.items():
    table[f"{name}: share %"] = [round(100 * r["hit_share"], 1) for r in rs]
    table[f"{name}: recall %"] = [round(100 * r["recall"], 1) for r in rs]
with st.expander("The numbers"):
    st.dataframe(table, hide_index=True, key="tail_table")
teaching.note(
    "Where a run's bar stands below the dashed line, it finds that bin's labels less often than the test holds "
    "them. A model trained with plain BCE usually draws most of its hits from the first bins and little recall "
    "from the rare ones: compare heads to see which carries more of its recall into the tail. Labels with no "
    "training point at all sit in the last bin."
)

# --- PSP@k ------------------------------------------------------------------------------------
st.subheader("PSP@k: precision that counts the tail more")
st.markdown(
    "Propensity-scored precision weighs each correct label by 1/p_l, the inverse of the chance that an annotator "
    "would have tagged it at all (Jain, Prabhu and Varma, 2016). A label seen N_l times in training has the "
    "propensity below, with N the number of training points; **A** sets how fast p_l grows with N_l and **B** "
    "shifts the count, so that the rarest labels weigh most. Each kind of dataset has its standard constants."
)
st.latex(r"\mathrm{PSP@}k = \frac{\sum_i \sum_{r \le k} y_{i,\mathrm{top}_r(i)} / p_{\mathrm{top}_r(i)}}"
         r"{\sum_i \max_{|S| = k,\ S \subseteq y_i} \sum_{l \in S} 1/p_l}, \qquad "
         r"p_l = \frac{1}{1 + C\, e^{-A \log(N_l + B)}}, \quad C = (\log N - 1)\,(B + 1)^A")
sets = list(PROPENSITY_CONSTANTS)
chosen_set = st.selectbox("Constants", sets, index=sets.index("others"), key="psp_set", bind="query-params",
                          format_func=lambda s: "{}: A = {}, B = {}".format(s, *PROPENSITY_CONSTANTS[s]))
A, B = PROPENSITY_CONSTANTS[chosen_set]
weights = inv_propensity(ds.Y_train, A, B)
scores = [{"run": names[r], **evaluate(ds.Y_test, top, ks=(1, 3, 5), inv_propensity=weights)} for r, top in tops.items()]
columns = ["run", "P@1", "P@3", "P@5", "PSP@1", "PSP@3", "PSP@5"]
st.dataframe(pd.DataFrame(scores)[columns].round(4), hide_index=True, key="psp_table")
counts = ds.Y_train.getnnz(axis=0)
st.plotly_chart(figures.propensity_weights(counts, {s: inv_propensity(ds.Y_train, *ab) for s, ab in
                                                    PROPENSITY_CONSTANTS.items()}, chosen_set), key="psp_weights")
st.caption(f"N = {ds.n_train:,} training points; with A = {A}, B = {B} the rarest label ({counts.min():,} training "
           f"points) weighs {weights.max():.1f}, the most frequent ({counts.max():,}) {weights.min():.2f}. The Train "
           "page's PSP@k uses the default constants (others).")
