"""Data: the dataset in the sidebar, at a glance; a fetched public dataset, or your own upload in the XC format."""

import hashlib
import shutil

import numpy as np
import streamlit as st

from engine import XMCError, fetched_datasets, load_dataset, resolve_dataset

from app import datasets, figures, teaching, text

teaching.intro(
    "Data",
    "An XMC dataset is a sparse matrix of features X (points x features, tf-idf values) and a sparse "
    "matrix of labels Y (points x labels, ones). Real label sets have a **long tail**: a few labels are "
    "very common, most are rare. On a log-log plot the label frequency falls on a line whose slope is the "
    "power-law exponent.",
    r"\text{frequency}(r) \;\propto\; r^{-\alpha} \qquad (r = \text{rank of the label, most frequent first})",
)


@st.cache_data(show_spinner=False, max_entries=8)
def stats(_ds, key):
    """Per-label, per-point and per-feature counts of the training split (cached per dataset)."""
    return {"label_freq": np.asarray(_ds.Y_train.sum(axis=0)).ravel().astype(int),
            "labels_per_point": np.diff(_ds.Y_train.indptr),
            "features_per_point": np.diff(_ds.X_train.indptr),
            "points_per_feature": np.bincount(_ds.X_train.indices, minlength=_ds.n_features)}


def use_upload():
    """Callback of "Use these files": save, validate, and point the sidebar at the folder."""
    files = {f.name: f.getvalue() for f in (st.session_state.get("upload") or [])}
    st.session_state.upload_error = None
    missing = [n for n in ("train.txt", "test.txt") if n not in files]
    unknown = sorted(set(files) - {"train.txt", "test.txt", "labels.txt", "features.txt"})
    if missing or unknown:
        st.session_state.upload_error = (
            (f"missing {', '.join(missing)}. " if missing else "") +
            (f"unexpected file names {', '.join(unknown)}. " if unknown else "") +
            "A dataset is train.txt and test.txt, optionally labels.txt and features.txt.")
        return
    digest = hashlib.sha1(b"".join(files[n] for n in sorted(files))).hexdigest()[:12]
    folder = datasets.data_root() / f"upload-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    try:
        load_dataset(folder)
    except XMCError as e:
        shutil.rmtree(folder, ignore_errors=True)
        st.session_state.upload_error = str(e).replace(str(folder) + "/", "")
        return
    st.session_state["data"] = "folder"
    st.session_state["path"] = str(folder)


def use_fetched():
    """Callback of "Use this dataset": point the sidebar at the fetched dataset's cache folder."""
    st.session_state["data"] = "folder"
    st.session_state["path"] = str(resolve_dataset(st.session_state["fetched"]))


fetched = fetched_datasets()
with st.expander(f"Fetched public datasets ({len(fetched)})", expanded=False):
    if fetched:
        st.selectbox("Dataset", fetched, key="fetched")
        st.button("Use this dataset", on_click=use_fetched, key="use_fetched")
    st.markdown("`xmc-lab fetch NAME` (or `python -m engine fetch NAME`) downloads a public dataset, checks "
                "its SHA-256 and caches it; `xmc-lab fetch --list` names them all (bibtex, delicious, "
                "EURLex-4K, ...). A fetched dataset appears here.")

with st.expander("Upload a dataset in the XC format", expanded=False):
    st.markdown("`train.txt` and `test.txt`: a header `N D L`, then one point per line, "
                "`l1,l2 f:v f:v` (0-based ids); optionally `labels.txt` and `features.txt`, one name per line.")
    st.file_uploader("Files", type=["txt"], accept_multiple_files=True, key="upload")
    st.button("Use these files", on_click=use_upload, disabled=not st.session_state.get("upload"))
    if st.session_state.get("upload_error"):
        st.error(f"The files were not loaded: {text.md(st.session_state.upload_error)}")

ds, ref = datasets.dataset_or_stop()
s = ds.summary()
st.subheader(text.md(s["name"]))
c = st.columns(6)
c[0].metric("Training points", f"{s['n_train']:,}")
c[1].metric("Test points", f"{s['n_test']:,}")
c[2].metric("Features", f"{s['n_features']:,}")
c[3].metric("Labels", f"{s['n_labels']:,}")
c[4].metric("Labels per point", f"{s['avg_labels_per_point']:.2f}")
c[5].metric("Features per point", f"{s['avg_features_per_point']:.1f}")
if s["labels_without_train_positives"]:
    st.caption(f"{s['labels_without_train_positives']:,} labels have no training point: no model can learn them.")

st_ = stats(ds, ref)
left, right = st.columns(2)
left.plotly_chart(figures.label_frequency(st_["label_freq"]), key="freq")
right.plotly_chart(figures.histogram(st_["labels_per_point"], "Labels per point", "labels of a point"), key="lpp")
left.plotly_chart(figures.histogram(st_["features_per_point"], "Features per point (sparsity)",
                                    "nonzero features of a point"), key="fpp")
right.plotly_chart(figures.histogram(st_["points_per_feature"], "Points per feature", "points using the feature"),
                   key="ppf")
density = s["avg_features_per_point"] / s["n_features"]
teaching.note(
    f"The feature matrix is {100 * density:.2f}% nonzero. The label frequency curve is the reason XMC is hard: "
    "the rare labels in the tail have a handful of examples each, which is why propensity-scored metrics "
    "(PSP@k) reward getting them right."
)
if ds.label_names is not None:
    top = np.argsort(-st_["label_freq"])[:10]
    st.caption("Most frequent labels: " + ", ".join(f"{text.md(ds.label_names[i])} ({st_['label_freq'][i]})"
                                                    for i in top))
