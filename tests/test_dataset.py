"""Tests for engine/data/dataset.py: the Dataset record, dataset directories, the resolver."""

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from engine.data import Dataset, load_dataset, normalize_rows, resolve_dataset, save_dataset, write_names
from engine.errors import DatasetFormatError

from shared_data import DATASETS
from test_xc import tricky_matrices


def _small_dataset():
    X, Y = tricky_matrices()
    return Dataset("tiny", X[:20], Y[:20], X[20:], Y[20:], [f"label {j}" for j in range(12)], None)


def test_dataset_rejects_inconsistent_parts():
    X, Y = tricky_matrices()
    with pytest.raises(ValueError, match="inconsistent shapes"):
        Dataset("bad", X[:20], Y[:19], X[20:], Y[20:])
    with pytest.raises(ValueError, match="3 label names for 12 labels"):
        Dataset("bad", X[:20], Y[:20], X[20:], Y[20:], label_names=["a", "b", "c"])


def test_save_load_dataset_round_trip(tmp_path):
    ds = _small_dataset()
    save_dataset(ds, tmp_path / "tiny")
    back = load_dataset(tmp_path / "tiny")
    assert back.name == "tiny" and back.label_names == ds.label_names and back.feature_names is None
    for field in ("X_train", "Y_train", "X_test", "Y_test"):
        np.testing.assert_array_equal(getattr(back, field).toarray(), getattr(ds, field).toarray())
    assert (back.n_train, back.n_test, back.n_features, back.n_labels) == (20, 10, 40, 12)


def test_load_dataset_missing_parts(tmp_path):
    with pytest.raises(DatasetFormatError, match="nowhere: no such dataset directory"):
        load_dataset(tmp_path / "nowhere")
    save_dataset(_small_dataset(), tmp_path / "tiny")
    (tmp_path / "tiny" / "test.txt").unlink()
    with pytest.raises(DatasetFormatError, match=r"test\.txt: missing file"):
        load_dataset(tmp_path / "tiny")


def test_load_dataset_header_mismatch(tmp_path):
    save_dataset(_small_dataset(), tmp_path / "tiny")
    (tmp_path / "tiny" / "test.txt").write_text("1 40 13\n0 1:1\n")
    with pytest.raises(DatasetFormatError, match=r"test\.txt line 1: header has 40 features and 13 labels but "
                                                 r"train\.txt has 40 and 12"):
        load_dataset(tmp_path / "tiny")


def test_load_dataset_names_count_mismatch(tmp_path):
    save_dataset(_small_dataset(), tmp_path / "tiny")
    write_names(tmp_path / "tiny" / "labels.txt", ["only", "three", "names"])
    with pytest.raises(DatasetFormatError, match=r"labels\.txt: expected 12 label names, found 3"):
        load_dataset(tmp_path / "tiny")


def test_resolve_dataset():
    # "sample" is the bundled dataset; any other reference is a folder, as given (a Path never means the sample)
    assert resolve_dataset("sample").resolve() == Path(__file__).resolve().parents[1] / "sample_data"
    assert resolve_dataset("runs/_datasets/x") == Path("runs/_datasets/x")
    assert resolve_dataset(Path("sample")) == Path("sample")


def test_load_dataset_sample():
    # load_dataset takes a reference: "sample" loads the bundled sample_data/
    ds = load_dataset("sample")
    assert ds.name == "sample_data"
    assert (ds.n_train, ds.n_test, ds.n_features, ds.n_labels) == (3000, 1000, 1000, 2000)


@pytest.mark.parametrize("name, shape", [("delicious", (12920, 3185, 500, 983)), ("bibtex", (4880, 2515, 1836, 159))])
def test_load_real_dataset(name, shape):
    if not (DATASETS / name).is_dir():
        pytest.skip(f"{DATASETS / name} not present")
    ds = load_dataset(DATASETS / name)
    assert ds.name == name
    assert (ds.n_train, ds.n_test, ds.n_features, ds.n_labels) == shape
    assert len(ds.label_names) == ds.n_labels and len(ds.feature_names) == ds.n_features
    assert ds.summary()["labels_without_train_positives"] == 0


def test_summary():
    s = _small_dataset().summary()
    Y = _small_dataset().Y_train
    assert s["n_train"] == 20 and s["n_test"] == 10 and s["n_labels"] == 12 and s["n_features"] == 40
    assert s["avg_labels_per_point"] == pytest.approx(Y.nnz / 20)
    assert s["labels_without_train_positives"] == int(np.sum(Y.toarray().sum(0) == 0))


def test_normalize_rows():
    X = sp.csr_matrix(np.array([[3, 0, 4], [0, 0, 0], [0, -2, 0]], dtype=np.float64))
    Z = normalize_rows(X)
    assert Z.dtype == np.float32 and Z.format == "csr"
    np.testing.assert_allclose(Z.toarray(), [[0.6, 0, 0.8], [0, 0, 0], [0, -1, 0]], rtol=1e-6)
    assert X[0, 0] == 3                         # the input is left alone
