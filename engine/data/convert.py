"""The formats fetched datasets come in, each read into a Dataset (then saved in the XC layout).

    ds = convert(source, {"train": path, "test": path, ...}, scratch)    # files by role

    mulan-arff  train, test: ARFF; labels: MULAN's XML label list (engine.data.arff)
    libsvm      train, test: bzip2 multi-label LibSVM text, one point a line: "l1,l2 f:v f:v ...",
                features from 1 (feature f is column f-1), labels any non-negative ids: they are
                renumbered 0.. in increasing order and their ids kept as the label names
    pecos-npz   archive: a tar.gz of PECOS's xmc-base, read under source.member_root:
                tfidf-attnxml/X.{trn,tst}.npz (features), Y.{trn,tst}.npz (labels, nonzero = on),
                output-items.txt (label names, optional)

Every reader validates what it reads; DatasetFormatError names the file (an archive's member
as ``archive:member``), the line where there is one, and the problem.
"""

import bz2
import re
import zipfile

import numpy as np
import scipy.sparse as sp

from ..errors import DatasetFormatError
from ..files import DATASET_FILE_LIMIT
from .archive import extract_members
from .arff import read_arff, read_label_names
from .dataset import Dataset
from .download import CHUNK
from .xc import MAX_DIM, read_names

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_VAL = r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_SVM_LINE = re.compile(rf" *(?:[0-9]{{1,18}}(?: *, *[0-9]{{1,18}})*)?(?: +[0-9]{{1,18}}:{_VAL})* *"
                       rf"|[0-9]{{1,18}}:{_VAL}(?: +[0-9]{{1,18}}:{_VAL})* *")
_FIRST_FEATURE = re.compile(r"(?:^| )[0-9]+:")


def convert(source, files, scratch):
    """Read the downloaded files of `source` ({role: path}) into a Dataset named source.name;
    `scratch` is an empty folder for members taken out of an archive."""
    return CONVERTERS[source.format][1](source, files, scratch)


# ---------------------------------------------------------------------------------------------
# mulan-arff

def _mulan(source, files, scratch):
    names = read_label_names(files["labels"])
    train, test = read_arff(files["train"], names), read_arff(files["test"], names)
    if test.columns != train.columns:
        raise DatasetFormatError(files["test"], None, "its @attribute header differs from the train file's")
    return Dataset(source.name, train.X, train.Y, test.X, test.Y, names, train.feature_names)


# ---------------------------------------------------------------------------------------------
# libsvm

def read_libsvm(path):
    """A bzip2 multi-label LibSVM file -> (X, Y): X csr (N, max feature id) float32, features from 1
    as columns from 0; Y a (label ids, per point) pair (ids, indptr) of int64 arrays."""
    name = str(path)
    lines = _read_bz2_lines(path)
    for i, line in enumerate(lines):
        if not line.strip():
            raise DatasetFormatError(name, i + 1, "empty line")
        if not _SVM_LINE.fullmatch(line):
            raise DatasetFormatError(name, i + 1, f"not 'l1,l2 f:v f:v ...': {line[:60]!r}")
    labels, features = zip(*(_split_svm(line) for line in lines))
    label_ids = [lab.replace(" ", "").split(",") if lab.strip() else [] for lab in labels]
    for i, ids in enumerate(label_ids):
        if len(set(ids)) != len(ids):
            raise DatasetFormatError(name, i + 1, "a label id appears twice")
    y_ptr = np.cumsum([0] + [len(ids) for ids in label_ids])
    y_ids = np.array([t for ids in label_ids for t in ids], dtype=np.int64)
    pairs = " ".join(features).replace(":", " ").split()
    x_ptr = np.cumsum([0] + [f.count(":") for f in features])
    fids, vals = np.array(pairs[0::2], dtype=np.int64), np.array(pairs[1::2], dtype=np.float64)
    _check_ids(name, fids, x_ptr, 1, "feature")
    _check_ids(name, y_ids, y_ptr, 0, "label")
    if vals.size and np.abs(vals).max() > _FLOAT32_MAX:
        raise DatasetFormatError(name, _row_of(x_ptr, np.argmax(np.abs(vals) > _FLOAT32_MAX)) + 1,
                                 "a value out of float32 range")
    X = sp.csr_matrix((vals.astype(np.float32), fids - 1, x_ptr), shape=(len(lines), int(fids.max(initial=0))))
    X.sort_indices()
    _check_no_repeats(name, X.indptr, X.indices)
    X.eliminate_zeros()
    return X, (y_ids, y_ptr)


def _read_bz2_lines(path):
    name = str(path)
    chunks, size = [], 0
    try:
        with bz2.open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                size += len(chunk)
                if size > DATASET_FILE_LIMIT:
                    raise DatasetFormatError(name, None, f"decompresses to over {DATASET_FILE_LIMIT:,} bytes")
                chunks.append(chunk)
    except (OSError, EOFError, ValueError) as e:
        raise DatasetFormatError(name, None, f"not a bzip2 file, or a damaged one ({e})") from None
    data = b"".join(chunks)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as e:
        raise DatasetFormatError(name, data.count(b"\n", 0, e.start) + 1, "not ASCII text") from None
    lines = text.replace("\r\n", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()
    if not lines:
        raise DatasetFormatError(name, None, "no points")
    return lines


def _split_svm(line):
    """'l1,l2 f:v ...' -> ('l1,l2', 'f:v ...')."""
    m = _FIRST_FEATURE.search(line)
    return (line, "") if m is None else (line[:m.start()], line[m.start():])


def _row_of(indptr, k):
    """The row that holds entry k of a csr layout."""
    return int(np.searchsorted(indptr, k, side="right") - 1)


def _check_ids(name, ids, indptr, low, kind):
    if ids.size and (ids.min() < low or ids.max() >= MAX_DIM + low):
        k = int(np.argmax((ids < low) | (ids >= MAX_DIM + low)))
        raise DatasetFormatError(name, _row_of(indptr, k) + 1, f"{kind} id {ids[k]} out of range "
                                 f"[{low}, {MAX_DIM + low})")


def _check_no_repeats(name, indptr, indices):
    """Raise naming the first line (row) where a sorted csr row repeats a feature."""
    same = np.flatnonzero(np.diff(indices) == 0)
    rows = [r for k in same if (r := _row_of(indptr, k)) == _row_of(indptr, k + 1)]
    if rows:
        raise DatasetFormatError(name, rows[0] + 1, "a feature id appears twice")


def _libsvm(source, files, scratch):
    (X_trn, (y_trn, p_trn)), (X_tst, (y_tst, p_tst)) = read_libsvm(files["train"]), read_libsvm(files["test"])
    D = max(X_trn.shape[1], X_tst.shape[1], 1)
    ids = np.unique(np.concatenate([y_trn, y_tst]))
    if not ids.size:
        raise DatasetFormatError(files["train"], None, "no point has a label, in train or test")
    Y_trn, Y_tst = (sp.csr_matrix((np.ones(y.size, np.float32), np.searchsorted(ids, y), ptr),
                                  shape=(len(ptr) - 1, ids.size)) for y, ptr in ((y_trn, p_trn), (y_tst, p_tst)))
    Y_trn.sort_indices()
    Y_tst.sort_indices()
    X_trn.resize(X_trn.shape[0], D)
    X_tst.resize(X_tst.shape[0], D)
    return Dataset(source.name, X_trn, Y_trn, X_tst, Y_tst, [str(i) for i in ids.tolist()])


# ---------------------------------------------------------------------------------------------
# pecos-npz

_PECOS_MEMBERS = {"X_trn": "tfidf-attnxml/X.trn.npz", "X_tst": "tfidf-attnxml/X.tst.npz",
                  "Y_trn": "Y.trn.npz", "Y_tst": "Y.tst.npz", "names": "output-items.txt"}


def _pecos(source, files, scratch):
    archive = files["archive"]
    member = {key: f"{source.member_root}/{path}" for key, path in _PECOS_MEMBERS.items()}
    local = {key: scratch / f"{key}.{path.rsplit('.', 1)[-1]}" for key, path in _PECOS_MEMBERS.items()}
    found = extract_members(archive, {member[k]: local[k] for k in member})
    for key in ("X_trn", "X_tst", "Y_trn", "Y_tst"):
        if member[key] not in found:
            raise DatasetFormatError(archive, None, f"no member {member[key]}")
    shown = {k: f"{archive}:{member[k]}" for k in member}
    X_trn, X_tst = (_read_npz(local[k], shown[k]) for k in ("X_trn", "X_tst"))
    Y_trn, Y_tst = (_binary(_read_npz(local[k], shown[k])) for k in ("Y_trn", "Y_tst"))
    for X, Y, kx, ky in ((X_trn, Y_trn, "X_trn", "Y_trn"), (X_tst, Y_tst, "X_tst", "Y_tst")):
        if X.shape[0] != Y.shape[0]:
            raise DatasetFormatError(shown[ky], None, f"{Y.shape[0]} rows, {member[kx]} has {X.shape[0]}")
    if X_tst.shape[1] != X_trn.shape[1] or Y_tst.shape[1] != Y_trn.shape[1]:
        raise DatasetFormatError(shown["X_tst"], None, f"test shapes {X_tst.shape}, {Y_tst.shape} do not match "
                                 f"train's {X_trn.shape}, {Y_trn.shape}")
    try:
        names = read_names(local["names"], Y_trn.shape[1], "label") if member["names"] in found else None
    except DatasetFormatError as e:
        raise DatasetFormatError(shown["names"], e.line, e.problem) from None
    return Dataset(source.name, X_trn, Y_trn, X_tst, Y_tst, names)


def _read_npz(path, shown):
    """A scipy sparse matrix saved with save_npz (no pickles) -> float32 csr with sorted indices."""
    try:
        M = sp.load_npz(path)
    except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile, NotImplementedError) as e:
        raise DatasetFormatError(shown, None, f"not a scipy sparse .npz ({e})") from None
    if M.ndim != 2 or max(M.shape) > MAX_DIM:
        raise DatasetFormatError(shown, None, f"shape {M.shape}: expected 2-D, each side at most {MAX_DIM}")
    M = sp.csr_matrix(M, dtype=np.float32)
    if not np.all(np.isfinite(M.data)):
        raise DatasetFormatError(shown, None, "non-finite values (or out of float32 range)")
    M.sum_duplicates()
    M.eliminate_zeros()
    return M


def _binary(Y):
    """Ones where Y is nonzero."""
    Y = Y.copy()
    Y.data[:] = 1
    return Y


CONVERTERS = {                          # format -> (the roles of its files, converter)
    "mulan-arff": (("train", "test", "labels"), _mulan),
    "libsvm": (("train", "test"), _libsvm),
    "pecos-npz": (("archive",), _pecos),
}
