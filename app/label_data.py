"""What the label views (the label map, one label) compute once per process: the PIFA embeddings of
a dataset (st.cache_resource), a stored run's test predictions and its per-label scores, once per
(run, k) (st.cache_data)."""

import streamlit as st

from engine import label_scores, pifa, predict_run

from app.datasets import dataset_by_ref
from app.registry import jobs


@st.cache_resource(show_spinner="Computing the PIFA embeddings ...", max_entries=4)
def pifa_of(data_ref, _ds):
    """(L, D) csr PIFA embeddings of the dataset `data_ref` names (_ds: the dataset, not hashed)."""
    return pifa(_ds.X_train, _ds.Y_train, dense=False)


@st.cache_data(show_spinner="Predicting the test set ...", max_entries=8)
def test_top(run_id, k):
    """(N_test, k) label ids the run's latest checkpoint predicts on its dataset's test split."""
    run = jobs().store.get(run_id)
    return predict_run(run, k, dataset_by_ref(run.config.data))


@st.cache_data(show_spinner=False, max_entries=8)
def scores(run_id, k):
    """engine.label_scores of the run's test predictions: per label precision@k, recall@k, counts."""
    run = jobs().store.get(run_id)
    return label_scores(dataset_by_ref(run.config.data).Y_test, test_top(run_id, k))
