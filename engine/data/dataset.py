"""The Dataset record (a train/test split of sparse matrices), loading and saving a dataset
directory, and the one resolver of dataset references.

A dataset directory holds ``train.txt``, ``test.txt`` (engine.data.xc's format) and optionally
``labels.txt`` and ``features.txt``. A dataset reference, as a TrainConfig's ``data`` names it,
is "sample" (the bundled ``sample_data/``, as ``engine/sample_data``: a link in a clone, a copy in
the wheel), the name of a fetched dataset ("bibtex": its folder in
the fetch cache, see engine.data.fetch) or a directory::

    ds = load_dataset("sample")
    save_dataset(ds, "copy")
    ds = load_dataset("copy")
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import DatasetFormatError, XMCError

from .registry import SOURCES, fetched_dir
from .xc import read_names, read_xc, write_names, write_xc

SAMPLE = "sample"                                                       # the reference of the bundled dataset
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"        # engine/sample_data -> ../sample_data


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split of an XMC dataset. Matrices are float32 csr with sorted indices."""
    name: str
    X_train: sp.csr_matrix              # (n_train, n_features)
    Y_train: sp.csr_matrix              # (n_train, n_labels), ones
    X_test: sp.csr_matrix               # (n_test, n_features)
    Y_test: sp.csr_matrix               # (n_test, n_labels), ones
    label_names: list[str] | None = None     # n_labels names, or None
    feature_names: list[str] | None = None   # n_features names, or None

    def __post_init__(self):
        shapes = [M.shape for M in (self.X_train, self.Y_train, self.X_test, self.Y_test)]
        (n, d), (n2, l), (m, d2), (m2, l2) = shapes
        if n != n2 or m != m2 or d != d2 or l != l2:
            raise ValueError(f"inconsistent shapes X_train, Y_train, X_test, Y_test: {shapes}")
        for names, count, kind in ((self.label_names, l, "label"), (self.feature_names, d, "feature")):
            if names is not None and len(names) != count:
                raise ValueError(f"{len(names)} {kind} names for {count} {kind}s")

    n_features = property(lambda self: self.X_train.shape[1], doc="D: input features")
    n_labels = property(lambda self: self.Y_train.shape[1], doc="L: labels")
    n_train = property(lambda self: self.X_train.shape[0], doc="training points")
    n_test = property(lambda self: self.X_test.shape[0], doc="test points")

    def summary(self):
        """Counts and densities, for a first look (averages over the training points)."""
        positives = np.diff(self.Y_train.tocsc().indptr)
        return {
            "name": self.name,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "n_features": self.n_features,
            "n_labels": self.n_labels,
            "avg_labels_per_point": self.Y_train.nnz / self.n_train,
            "avg_features_per_point": self.X_train.nnz / self.n_train,
            "labels_without_train_positives": int(np.sum(positives == 0)),
        }


def resolve_dataset(ref):
    """The directory a dataset reference names: "sample" is the bundled sample_data/; the name of a
    fetchable dataset (engine.data.registry) where no such folder is here is its cache folder; any
    other reference (a str or a Path) is a folder, taken as given."""
    if ref == SAMPLE:
        return SAMPLE_DIR
    if isinstance(ref, str) and ref in SOURCES and not os.path.lexists(ref):
        return fetched_dir(ref)
    return Path(ref)


def load_dataset(ref):
    """Load a dataset directory: train.txt, test.txt, optional labels.txt and features.txt.

    Parameters
    ----------
    ref : str or Path
        "sample" (the bundled dataset) or a dataset directory, see resolve_dataset.

    Returns
    -------
    Dataset
        Named after the directory.

    Raises
    ------
    DatasetFormatError
        If the directory or a required file is missing, a file is malformed, or the
        headers of train.txt and test.txt disagree on features or labels.
    """
    root = resolve_dataset(ref)
    if not root.is_dir():
        fetch = f" (fetch it: python -m engine fetch {ref})" if isinstance(ref, str) and ref in SOURCES else ""
        raise DatasetFormatError(str(root), None, "no such dataset directory" + fetch)
    for required in ("train.txt", "test.txt"):
        if not os.path.lexists(root / required):
            raise DatasetFormatError(str(root / required), None, "missing file (a dataset needs train.txt, test.txt)")
    X_train, Y_train = read_xc(root / "train.txt")
    X_test, Y_test = read_xc(root / "test.txt")
    (_, D), (_, L) = X_train.shape, Y_train.shape
    if X_test.shape[1] != D or Y_test.shape[1] != L:
        raise DatasetFormatError(str(root / "test.txt"), 1, f"header has {X_test.shape[1]} features and "
                                 f"{Y_test.shape[1]} labels but train.txt has {D} and {L}")
    # a name file there in any form (a dangling link, a loop, a FIFO) is read, and refused, not skipped
    label_names = read_names(root / "labels.txt", L, "label") if os.path.lexists(root / "labels.txt") else None
    feature_names = (read_names(root / "features.txt", D, "feature") if os.path.lexists(root / "features.txt")
                     else None)
    return Dataset(root.resolve().name, X_train, Y_train, X_test, Y_test, label_names, feature_names)


def save_dataset(dataset, path):
    """Write a dataset in the layout load_dataset reads (creating the directory); XMCError naming
    the path when it cannot be written (a file in the way, no permission, disk full)."""
    root = Path(path)
    try:
        root.mkdir(parents=True, exist_ok=True)
        write_xc(root / "train.txt", dataset.X_train, dataset.Y_train)
        write_xc(root / "test.txt", dataset.X_test, dataset.Y_test)
        if dataset.label_names is not None:
            write_names(root / "labels.txt", dataset.label_names)
        if dataset.feature_names is not None:
            write_names(root / "features.txt", dataset.feature_names)
    except OSError as e:
        raise XMCError(f"{e.filename or root}: cannot write the dataset there ({e.strerror or e})") from None


def normalize_rows(X):
    """Scale each row of X to unit l2 norm (zero rows stay zero).

    Parameters
    ----------
    X : sparse matrix of shape (N, D)

    Returns
    -------
    scipy.sparse.csr_matrix of shape (N, D), float32, a new matrix.
    """
    X = sp.csr_matrix(X, dtype=np.float32, copy=True)
    X.sum_duplicates()
    rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    norms = np.sqrt(np.bincount(rows, weights=X.data.astype(np.float64) ** 2, minlength=X.shape[0]))
    norms[norms == 0] = 1.0
    X.data = (X.data / norms[rows]).astype(np.float32)
    return X
