"""Tests for engine/data.py: the XC format reader and writer, datasets, the synthetic generator."""

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from engine.data import (SAMPLE_PRESET, Dataset, generate, load_dataset, normalize_rows, read_names, read_xc,
                         save_dataset, write_names, write_xc)
from engine.errors import ConfigError, DatasetFormatError

from shared_data import DATASETS

# ----------------------------------------------------------------------------
# malformed files: (id, file bytes, line named in the error or None, words the message must contain)

OK = b"2 3 2\n0 1:1\n1 2:0.5\n"   # a valid file the cases below spoil one thing at a time
MALFORMED = [
    ("empty", b"", None, "empty file"),
    ("nul-bytes", b"2 3 2\n0 1:1\n\x00\x01\x02\x03\n", 3, "NUL"),
    ("not-utf8", b"2 3 2\n0 1:1\n1 2:0.5 \xff\xfe\n", 3, "not UTF-8"),
    ("blank-header", b"\n0 1:1\n1 2:1\n", 1, "header"),
    ("header-two-ints", b"2 3\n0 1:1\n1 2:1\n", 1, "header"),
    ("header-extra-token", b"2 3 2 9\n0 1:1\n1 2:1\n", 1, "header"),
    ("header-not-int", b"2 3 x\n0 1:1\n1 2:1\n", 1, "num_labels must be a positive integer, got 'x'"),
    ("header-float", b"2 3.0 2\n0 1:1\n1 2:1\n", 1, "num_features must be a positive integer"),
    ("header-zero", b"0 3 2\n", 1, "num_points must be in [1"),
    ("header-negative", b"2 3 -2\n0 1:1\n1 2:1\n", 1, "num_labels must be a positive integer, got '-2'"),
    ("too-few-points", b"3 3 2\n0 1:1\n1 2:1\n", None, "expected 3 points, found 2"),
    ("header-only", b"2 3 2\n", None, "expected 2 points, found 0"),
    ("extra-line", b"2 3 2\n0 1:1\n1 2:1\n\n0 0:1\n", 5, "extra line after the 2 points"),
    ("label-abc", b"2 3 2\n0 1:1\nabc 2:1\n", 3, "bad label id 'abc'"),
    ("label-float", b"2 3 2\n1.5 1:1\n1 2:1\n", 2, "bad label id '1.5'"),
    ("label-negative", b"2 3 2\n0 1:1\n-1 2:1\n", 3, "bad label id '-1'"),
    ("label-empty-id", b"2 3 2\n0,,1 1:1\n1 2:1\n", 2, "bad label id ''"),
    ("labels-missing", b"2 3 2\n0 1:1\n2:1 1:1\n", 3, "a point without labels starts with a space"),
    ("label-out-of-range", b"2 3 2\n0 1:1\n1,2 2:1\n", 3, "label id 2 >= num_labels 2"),
    ("label-duplicate", b"2 3 2\n1,0,1 1:1\n1 2:1\n", 2, "duplicate label id 1"),
    ("feature-no-value", b"2 3 2\n0 1:1\n1 2:\n", 3, "bad value '' in '2:'"),
    ("feature-no-id", b"2 3 2\n0 :1\n1 2:1\n", 2, "bad feature id '' in ':1'"),
    ("feature-no-colon", b"2 3 2\n0 1:1\n1 2\n", 3, "bad feature '2', expected id:value"),
    ("feature-two-colons", b"2 3 2\n0 1:1:2\n1 2:1\n", 2, "bad value '1:2' in '1:1:2'"),
    ("feature-float-id", b"2 3 2\n0 1.5:1\n1 2:1\n", 2, "bad feature id '1.5'"),
    ("feature-negative-id", b"2 3 2\n0 -1:1\n1 2:1\n", 2, "bad feature id '-1'"),
    ("feature-bad-value", b"2 3 2\n0 1:abc\n1 2:1\n", 2, "bad value 'abc' in '1:abc'"),
    ("feature-out-of-range", b"2 3 2\n0 1:1\n1 3:1\n", 3, "feature id 3 >= num_features 3"),
    ("feature-huge-id", b"2 3 2\n0 1:1\n1 99999999999999999999999:1\n", 3, "feature id 99999999999999999999999 >="),
    ("feature-duplicate", b"2 3 2\n0 1:1 2:1 1:0.5\n1 2:1\n", 2, "duplicate feature id 1"),
    ("value-nan", b"2 3 2\n0 1:1\n1 2:nan\n", 3, "value 'nan' in '2:nan' is not finite"),
    ("value-inf", b"2 3 2\n0 1:-inf\n1 2:1\n", 2, "value '-inf' in '1:-inf' is not finite"),
    ("value-float32-overflow", b"2 3 2\n0 1:1e39\n1 2:1\n", 2, "out of float32 range"),
    ("crlf-error", b"2 3 2\r\n0 1:1\r\n1 7:1\r\n", 3, "feature id 7 >= num_features 3"),
    ("first-error-wins", b"3 3 2\n0 1:1\n5 1:1\nabc\n", 3, "label id 5 >= num_labels 2"),
    ("long-line-bad-end", b"1 9000 1\n0 " + b" ".join(b"%d:0.123456789" % i for i in range(8000)) + b" 9:x\n",
     2, "bad value 'x'"),
]


@pytest.mark.parametrize("content, line, words", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_read_xc_rejects_malformed_file(tmp_path, content, line, words):
    # the error names the file, the line (or no line for whole-file problems) and the problem
    path = tmp_path / "train.txt"
    path.write_bytes(content)
    with pytest.raises(DatasetFormatError) as info:
        read_xc(path)
    message = str(info.value)
    assert message.startswith(str(path))
    if line is None:
        assert info.value.line is None and " line " not in message.replace(str(path), "")
    else:
        assert info.value.line == line and f"train.txt line {line}: " in message
    assert words in message


def test_read_xc_accepts_the_valid_base_case(tmp_path):
    # the cases above spoil this file one thing at a time
    (tmp_path / "train.txt").write_bytes(OK)
    X, Y = read_xc(tmp_path / "train.txt")
    assert X.shape == (2, 3) and Y.shape == (2, 2)


# ----------------------------------------------------------------------------
# valid files

def test_read_xc_hand_written_file(tmp_path):
    # CRLF line ends, a point without labels, one without features, one with neither,
    # unsorted features, exponents, trailing blank and whitespace-only lines
    path = tmp_path / "small.txt"
    path.write_bytes(b"5 6 3\r\n0,2 0:1 5:0.5\r\n 1:2 3:0.25\r\n1\r\n2,0 4:1e-3 0:3\r\n\r\n  \r\n\r\n")
    X, Y = read_xc(path)
    assert X.dtype == np.float32 and Y.dtype == np.float32
    assert X.format == "csr" and Y.format == "csr"
    assert X.has_canonical_format and Y.has_canonical_format
    np.testing.assert_array_equal(X.toarray(), np.array([
        [1, 0, 0, 0, 0, 0.5],
        [0, 2, 0, 0.25, 0, 0],
        [0, 0, 0, 0, 0, 0],
        [3, 0, 0, 0, 1e-3, 0],
        [0, 0, 0, 0, 0, 0]], dtype=np.float32))
    np.testing.assert_array_equal(Y.toarray(), [[1, 0, 1], [0, 0, 0], [0, 1, 0], [1, 0, 1], [0, 0, 0]])


def test_read_xc_long_valid_line(tmp_path):
    # an overlong line is fine as long as it is valid
    path = tmp_path / "long.txt"
    path.write_text("1 100000 1\n0 " + " ".join(f"{i}:{i % 7 + 1}" for i in range(100000)) + "\n")
    X, Y = read_xc(path)
    assert X.nnz == 100000 and X[0, 99999] == 99999 % 7 + 1 and Y.nnz == 1


def _tricky_matrices():
    rng = np.random.default_rng(0)
    X = sp.random(30, 40, density=0.2, format="csr", dtype=np.float32, random_state=rng)
    X.data[:7] = [1.0, 0.1, 1e-7, -2.5, 1 / 3, 3e38, 100.0]
    X = sp.csr_matrix(X.toarray() * (np.arange(30) % 5 != 0)[:, None])    # some rows without features
    Y = sp.csr_matrix((rng.random((30, 12)) < 0.2) * (np.arange(30) % 3 != 0)[:, None], dtype=np.float32)
    return X, Y


def test_write_read_round_trip_is_exact(tmp_path):
    # values are written with enough digits to read back as the same float32
    X, Y = _tricky_matrices()
    write_xc(tmp_path / "a.txt", X, Y)
    X2, Y2 = read_xc(tmp_path / "a.txt")
    assert X2.shape == X.shape and Y2.shape == Y.shape
    np.testing.assert_array_equal(X2.toarray(), X.toarray())
    np.testing.assert_array_equal(Y2.toarray(), Y.toarray())


def test_write_xc_is_byte_identical(tmp_path):
    # the same matrices give the same bytes, and rewriting a file read back changes nothing
    X, Y = _tricky_matrices()
    write_xc(tmp_path / "a.txt", X, Y)
    write_xc(tmp_path / "b.txt", X.tocoo(), Y.toarray())
    write_xc(tmp_path / "c.txt", *read_xc(tmp_path / "a.txt"))
    a = (tmp_path / "a.txt").read_bytes()
    assert a == (tmp_path / "b.txt").read_bytes() == (tmp_path / "c.txt").read_bytes()


def test_write_xc_format(tmp_path):
    # the exact text: 1.0 as '1', a point without labels starts with a space, no trailing spaces
    X = sp.csr_matrix(np.array([[1.0, 0, 0.5], [0, 0.25, 0], [0, 0, 0]], dtype=np.float32))
    Y = sp.csr_matrix(np.array([[1, 0], [0, 0], [1, 1]], dtype=np.float32))
    write_xc(tmp_path / "t.txt", X, Y)
    assert (tmp_path / "t.txt").read_text() == "3 3 2\n0 0:1 2:0.5\n 1:0.25\n0,1\n"


def test_write_xc_rejects_mismatched_rows(tmp_path):
    with pytest.raises(ValueError, match="X has 3 rows but Y has 2"):
        write_xc(tmp_path / "t.txt", sp.eye(3, format="csr"), sp.eye(2, format="csr"))


# ----------------------------------------------------------------------------
# names and datasets

def test_names_round_trip(tmp_path):
    names = ["alpha", "two words", "ünïcødé", "x"]
    write_names(tmp_path / "labels.txt", names)
    assert read_names(tmp_path / "labels.txt", 4, "label") == names


def test_read_names_count_mismatch(tmp_path):
    write_names(tmp_path / "labels.txt", ["a", "b"])
    with pytest.raises(DatasetFormatError, match=r"labels\.txt: expected 3 label names, found 2"):
        read_names(tmp_path / "labels.txt", 3, "label")


def test_read_names_rejects_non_utf8(tmp_path):
    (tmp_path / "features.txt").write_bytes(b"a\nb\xe9\n")
    with pytest.raises(DatasetFormatError, match=r"features\.txt line 2: not UTF-8"):
        read_names(tmp_path / "features.txt", 2, "feature")


def _small_dataset():
    X, Y = _tricky_matrices()
    return Dataset("tiny", X[:20], Y[:20], X[20:], Y[20:], [f"label {j}" for j in range(12)], None)


def test_dataset_rejects_inconsistent_parts():
    X, Y = _tricky_matrices()
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


# ----------------------------------------------------------------------------
# generator

SMALL = dict(n_points=600, n_features=300, n_labels=400, n_clusters=12, seed=3)


def _arrays(ds):
    return [a for M in (ds.X_train, ds.Y_train, ds.X_test, ds.Y_test) for a in (M.data, M.indices, M.indptr)]


def test_generate_is_deterministic():
    a, b, c = generate(**SMALL), generate(**SMALL), generate(**{**SMALL, "seed": 4})
    for x, y in zip(_arrays(a), _arrays(b)):
        np.testing.assert_array_equal(x, y)
    assert a.label_names == b.label_names
    assert any(x.shape != z.shape or np.any(x != z) for x, z in zip(_arrays(a), _arrays(c)))


def test_generate_shapes_and_params():
    ds = generate(**SMALL, mean_labels=5.0, mean_features=20.0, test_fraction=0.3, name="toy")
    assert ds.name == "toy"
    assert (ds.n_train, ds.n_test, ds.n_features, ds.n_labels) == (420, 180, 300, 400)
    for M in (ds.X_train, ds.Y_train, ds.X_test, ds.Y_test):
        assert M.format == "csr" and M.dtype == np.float32 and M.has_canonical_format
    s = ds.summary()
    assert 4.0 <= s["avg_labels_per_point"] <= 6.0
    assert 16 <= s["avg_features_per_point"] <= 24
    norms = np.sqrt(ds.X_train.multiply(ds.X_train).sum(1)).A1
    np.testing.assert_allclose(norms[norms > 0], 1, rtol=1e-5)
    assert re.fullmatch(r"c\d\d_label_\d{4}", ds.label_names[0]) and ds.feature_names[42] == "f0042"


def test_generate_sample_preset_is_long_tailed():
    ds = generate(**SAMPLE_PRESET)
    assert (ds.n_train, ds.n_test, ds.n_features, ds.n_labels) == (3000, 1000, 1000, 2000)
    Y = sp.vstack([ds.Y_train, ds.Y_test])
    assert abs(Y.nnz / Y.shape[0] - SAMPLE_PRESET["mean_labels"]) <= 0.2 * SAMPLE_PRESET["mean_labels"]
    freq = np.sort(Y.sum(0).A1)[::-1]
    assert freq[:20].sum() > 2 * freq[1000:].sum()          # top 1% of labels vs bottom 50%
    assert freq[0] > 20 * np.median(freq)


def test_generate_label_names_reveal_clusters():
    # labels of one cluster share their points' features far more than labels of different clusters
    ds = generate(**SMALL)
    cluster = np.array([int(n[1:3]) for n in ds.label_names])
    P = normalize_rows(ds.Y_train.T @ ds.X_train).toarray()             # (L, D) label embeddings
    seen = np.flatnonzero(np.abs(P).sum(1) > 0)
    S, same = P[seen] @ P[seen].T, cluster[seen][:, None] == cluster[seen][None]
    assert S[same].mean() > 5 * S[~same].mean()


BAD_PARAMS = [
    ("n_points", 1), ("n_points", 10.0), ("n_features", 0), ("n_labels", 0), ("n_clusters", 0),
    ("n_clusters", 401), ("alpha", -0.5), ("alpha", float("nan")), ("mean_labels", 0), ("mean_features", 0.5),
    ("test_fraction", 0.0), ("test_fraction", 1.0), ("noise", -0.1), ("noise", 1.5), ("seed", -1),
    ("seed", 1.5), ("name", ""),
]


@pytest.mark.parametrize("param, value", BAD_PARAMS, ids=[f"{p}={v!r}" for p, v in BAD_PARAMS])
def test_generate_rejects_bad_params(param, value):
    with pytest.raises(ConfigError, match=re.escape(f"{param} must be")) as info:
        generate(**{**SMALL, param: value})
    assert repr(value) in str(info.value)


def test_bundled_sample_matches_the_generator(tmp_path):
    # sample_data/ is exactly save_dataset(generate(**SAMPLE_PRESET), "sample_data")
    bundled = Path(__file__).resolve().parents[1] / "sample_data"
    if not (bundled / "train.txt").is_file():
        pytest.skip("sample_data/ not generated yet")
    save_dataset(generate(**SAMPLE_PRESET), tmp_path)
    for f in ("train.txt", "test.txt", "labels.txt", "features.txt"):
        fresh, shipped = (tmp_path / f).read_bytes(), (bundled / f).read_bytes()
        assert hashlib.sha256(fresh).hexdigest() == hashlib.sha256(shipped).hexdigest(), f

