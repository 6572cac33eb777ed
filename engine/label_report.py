"""One label inspected: its frequencies, its group, the inputs it reads, its nearest labels, and how
a model does on it on the test set.

    top = predict_run(run, k)                             # (N, k) test predictions (engine.tail)
    scores = label_scores(dataset.Y_test, top)            # (L,) arrays, for every label at once
    report = label_report(model, dataset, label, top, embeddings=pifa(X, Y, dense=False))

Per label l, on the N test points with top-k lists top (N, k):

    positives  n_l = #{i : y_il = 1}                  (the test frequency)
    predicted  p_l = #{i : l ∈ top_i}
    hits       h_l = #{i : y_il = 1 and l ∈ top_i}
    precision@k = h_l / p_l        recall@k = h_l / n_l        (nan where the count is 0)

Missed: the test points with y_il = 1 and l ∉ top_i. Nearest labels: the largest cosines
cos(e_l, e_j) between rows of the embeddings (PIFA or trained weights).
"""

import numpy as np
import scipy.sparse as sp

from .errors import ConfigError


def label_scores(Y, top):
    """Per label on the test set (module docstring): {"positives", "predicted", "hits"} (L,) int64
    and {"precision", "recall"} (L,) float64. Y (N, L) 0/1 csr; top (N, k) label ids, -1 for none."""
    Y = sp.csr_matrix(Y)
    top = np.asarray(top)
    if top.ndim != 2 or top.shape[0] != Y.shape[0]:
        raise ConfigError(f"top has shape {top.shape}, expected ({Y.shape[0]}, k) (one list per test point)")
    L = Y.shape[1]
    rows = np.repeat(np.arange(top.shape[0]), top.shape[1])
    ids = top.ravel()
    real = ids >= 0
    hit = np.asarray(Y[rows[real], ids[real]]).ravel() > 0
    out = {"positives": np.asarray((Y > 0).sum(axis=0)).ravel().astype(np.int64),
           "predicted": np.bincount(ids[real], minlength=L).astype(np.int64),
           "hits": np.bincount(ids[real][hit], minlength=L).astype(np.int64)}
    with np.errstate(invalid="ignore", divide="ignore"):
        out["precision"] = np.where(out["predicted"] > 0, out["hits"] / out["predicted"], np.nan)
        out["recall"] = np.where(out["positives"] > 0, out["hits"] / out["positives"], np.nan)
    return out


def nearest_labels(embeddings, label, n=10):
    """(ids, cosines) of the n labels whose rows of embeddings (L, D) (dense or csr) are closest in
    cosine to label's, most similar first, the label itself left out; a zero row has no neighbours."""
    E = sp.csr_matrix(embeddings, dtype=np.float64) if sp.issparse(embeddings) else np.asarray(embeddings, np.float64)
    e = E[label].toarray().ravel() if sp.issparse(E) else E[label]           # (D,)
    sims = np.asarray(E @ e).ravel()                                          # (L,)
    norms = np.sqrt(np.asarray(E.multiply(E).sum(1) if sp.issparse(E) else (E * E).sum(1)).ravel())
    if norms[label] == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(norms > 0, sims / (norms * norms[label]), -np.inf)
    cos[label] = -np.inf
    order = np.argsort(-cos, kind="stable")[:n]
    order = order[np.isfinite(cos[order])]
    return order.astype(np.int64), cos[order]


def label_inputs(model, label):
    """(inputs, weights) of label's weight vector over the head's inputs (XMCModel.label_vectors):
    the k it reads (sparse part) or all d (dense part), strongest |w| first."""
    W, _ = model.label_vectors(sparse=True)                                    # (L, d) csr
    row = W[label]
    order = np.argsort(-np.abs(row.data), kind="stable")
    return row.indices[order].astype(np.int64), row.data[order].astype(np.float64)


def label_report(model, dataset, label, top, embeddings=None, n_neighbours=10, max_missed=50):
    """What the label-inspection view shows about `label` (an id in [0, L)); top (N_test, k) the
    model's test predictions (engine.tail.predict_run). Returns a dict:
        train_freq, test_freq       points carrying the label in each split
        group, group_labels         its group in the sparse part (None: a dense part or no groups)
                                    and the group's labels (itself included)
        inputs, weights             the inputs it reads, strongest first (None for MACH)
        neighbours, cosines         its nearest labels in `embeddings` (None without)
        k, hits, predicted, precision, recall   on the test set (label_scores at label)
        missed                      test points carrying it where it is not in the top k (at most
                                    max_missed, ascending); n_missed their count"""
    L = dataset.n_labels
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label < L:
        raise ConfigError(f"label={label!r}: expected a label id in [0, {L})")
    if model.config.n_labels != L:
        raise ConfigError(f"the model has {model.config.n_labels} labels, the dataset {L}")
    top = np.asarray(top)
    if top.ndim != 2 or top.shape[0] != dataset.n_test:
        raise ConfigError(f"top has shape {top.shape}, expected ({dataset.n_test}, k): one list per test point")
    label = int(label)
    groups = model.label_groups()
    g = None if groups is None or groups[label] < 0 else int(groups[label])
    col = dataset.Y_test[:, label]
    carriers = np.flatnonzero(np.asarray(col.todense()).ravel() > 0)
    found = (top[carriers] == label).any(axis=1) if len(carriers) else np.zeros(0, bool)
    missed = carriers[~found]
    hits = int(found.sum())
    predicted = int((top == label).any(axis=1).sum())
    inputs = weights = neighbours = cosines = None
    if model.mach is None:
        inputs, weights = label_inputs(model, label)
    if embeddings is not None:
        neighbours, cosines = nearest_labels(embeddings, label, n_neighbours)
    return {"label": label, "train_freq": int(dataset.Y_train[:, label].sum()), "test_freq": len(carriers),
            "group": g, "group_labels": None if g is None else np.flatnonzero(groups == g),
            "inputs": inputs, "weights": weights, "neighbours": neighbours, "cosines": cosines,
            "k": int(top.shape[1]), "hits": hits, "predicted": predicted,
            "precision": hits / predicted if predicted else float("nan"),
            "recall": hits / len(carriers) if len(carriers) else float("nan"),
            "missed": missed[:max_missed], "n_missed": len(missed)}
