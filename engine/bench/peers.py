"""The peers: the standard non-neural XMC methods, trained with their defaults on the files our heads read.

    python -m engine peers --data ../shared/datasets/bibtex ../shared/datasets/delicious
    python -m engine peers --data ../shared/datasets/debian-deps --only omikuji --out bench/peers.json

Each peer gets the matrices `engine.data.load_dataset` reads, no tuning, and `threads` threads (1 by
default), and returns its ranked top 5 per test point. The rows are l2-normalised for the one peer whose
documentation prepares them so (PECOS: XR-Linear itself does not normalise, and on bibtex's raw binary
rows it loses 10 points of P@1; napkinXC normalises by default, Omikuji reads them as given). The scores are ours,
`engine.metrics.evaluate` with the propensities of our training runs (A = 0.55, B = 1.5 over the
training labels), so a peer's row and a head's row of `python -m engine results` are the same numbers:

    P@k, nDCG@k, PSP@k (k = 1, 3, 5)    from the (N_test, 5) label ids, best first, -1 = no prediction
    train_s                              the peer's own training call(s), its loading of the file included
    predict_s                            its prediction of the whole test split, conversion included

A peer whose package is missing (or does not import) is skipped with one line naming the pip command;
the others still run. The table is `engine.bench.results`' format; the JSON (`write_peer_results`) is
what the app's Compare page shows beside the runs (`read_peer_results`).
"""

import contextlib
import importlib
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .. import metrics
from ..data import load_dataset, normalize_rows, write_xc
from ..errors import XMCError
from ..files import RUN_FILE_LIMIT, atomic_write, parse_json, read_regular
from .results import format_table

KS = (1, 3, 5)                               # the ranks every score is taken at
K = max(KS)                                  # predictions asked of each peer
PEER_RESULTS_FILE = "bench/peers.json"       # where the command writes, and the app looks
FORMAT = "xmc-lab peers 1"                   # the JSON's kind and version
METRICS = tuple(f"{m}@{k}" for m in ("P", "nDCG", "PSP") for k in KS)
TIMES = ("train_s", "predict_s")
COLUMNS = ([(m, lambda r, m=m: f"{100 * r[m]:.2f}") for m in METRICS if m != "nDCG@1"]     # nDCG@1 = P@1
           + [(t.replace("_s", " s"), lambda r, t=t: f"{r[t]:.2f}") for t in TIMES])


# -----------------------------------------------------------------------------
# the adapters: fit(X, Y, threads, seed, workdir) -> model; topk(model, X, k, threads) -> (N, k) int64
# X: (N, D) float32 csr, Y: (N, L) csr of ones; a peer that reads_file finds X, Y in workdir/TRAIN_FILE.
# Prior validation of the data is assumed.

TRAIN_FILE = "train.txt"


def _padded(ranked, k):
    """(N, k) int64 from per-row lists of label ids, best first; -1 where a row has fewer than k."""
    top = np.full((len(ranked), k), -1, dtype=np.int64)
    for i, labels in enumerate(ranked):
        top[i, :len(labels[:k])] = labels[:k]
    return top


def _pecos_fit(X, Y, threads, seed, workdir):
    from pecos.xmc import Indexer, LabelEmbeddingFactory
    from pecos.xmc.xlinear.model import XLinearModel
    Y = Y.astype(np.float32)
    label_features = LabelEmbeddingFactory.create(Y, X, method="pifa", threads=threads)    # (L, D)
    tree = Indexer.gen(label_features, seed=seed, threads=threads)      # hierarchical k-means, defaults
    return XLinearModel.train(X, Y, C=tree, threads=threads)


def _pecos_topk(model, X, k, threads):
    scores = model.predict(X, only_topk=k, threads=threads).tocsr()    # (N, L), k entries a row
    ranked = []
    for i in range(scores.shape[0]):
        row = slice(scores.indptr[i], scores.indptr[i + 1])
        ranked.append(scores.indices[row][np.argsort(-scores.data[row], kind="stable")])
    return _padded(ranked, k)


def _omikuji_fit(X, Y, threads, seed, workdir):
    import omikuji                                       # its defaults are Parabel's: 3 trees, 2-means
    return omikuji.Model.train_on_data(str(Path(workdir) / TRAIN_FILE), omikuji.Model.default_hyper_param(),
                                       n_threads=threads)


def _omikuji_topk(model, X, k, threads):
    model.init_prediction_thread_pool(threads)
    rows = (zip(X.indices[X.indptr[i]:X.indptr[i + 1]].tolist(), X.data[X.indptr[i]:X.indptr[i + 1]].tolist())
            for i in range(X.shape[0]))
    return _padded([[label for label, _ in model.predict(list(pairs), top_k=k)] for pairs in rows], k)


def _napkinxc_fit(X, Y, threads, seed, workdir):
    from napkinxc.models import PLT
    model = PLT(str(Path(workdir) / "plt"), threads=threads, seed=seed)
    model.fit(X, Y.astype(np.float32))
    return model


def _napkinxc_topk(model, X, k, threads):
    return _padded(model.predict(X, top_k=k), k)


@dataclass(frozen=True)
class Peer:
    title: str                  # the table's row
    package: str                # what pip installs
    module: str                 # what Python imports
    extra: str                  # the project's optional extra that brings it
    fit: Callable
    topk: Callable
    normalize: bool = False     # reads l2-normalised rows, as its documentation prepares them
    reads_file: bool = False    # trains from the XC text file (written before its clock starts)


PEERS = {
    "pecos": Peer("PECOS XR-Linear", "libpecos", "pecos.xmc.xlinear.model", "pecos", _pecos_fit, _pecos_topk,
                  normalize=True),            # XR-Linear does not; its tutorials feed l2-normalised tf-idf
    "omikuji": Peer("Omikuji (Parabel)", "omikuji", "omikuji", "peers", _omikuji_fit, _omikuji_topk,
                    reads_file=True),
    "napkinxc": Peer("napkinXC PLT", "napkinxc", "napkinxc.models", "peers", _napkinxc_fit, _napkinxc_topk),
}


# -----------------------------------------------------------------------------
# the driver


def unavailable(peer):
    """None if `peer`'s package imports; else the one line that says why not and how to install it."""
    try:
        importlib.import_module(peer.module)
    except ModuleNotFoundError:
        return f"{peer.title}: skipped, {peer.package} is not installed: pip install '.[{peer.extra}]' " \
               f"(or pip install {peer.package})"
    except Exception as e:                  # installed, but broken against this environment (a numpy pin)
        return f"{peer.title}: skipped, {peer.package} does not import ({type(e).__name__}: " \
               f"{' '.join(str(e).split())}): pip install '.[{peer.extra}]' into an environment of its own"
    return None


def run_peer(peer, ds, threads=1, seed=0):
    """One peer trained on ds's training split and scored on its test split: {metric: value, train_s, predict_s}."""
    prep = normalize_rows if peer.normalize else (lambda X: X)
    X_train, X_test = prep(ds.X_train), prep(ds.X_test)
    with tempfile.TemporaryDirectory(prefix="xmc-peer-") as workdir, _stdout_to_stderr():
        if peer.reads_file:
            write_xc(Path(workdir) / TRAIN_FILE, X_train, ds.Y_train)
        t0 = time.perf_counter()
        model = peer.fit(X_train, ds.Y_train, threads, seed, workdir)
        t1 = time.perf_counter()
        top = peer.topk(model, X_test, min(K, ds.n_labels), threads)          # (N_test, K)
        t2 = time.perf_counter()
    scores = metrics.evaluate(ds.Y_test, top, ks=tuple(k for k in KS if k <= top.shape[1]),
                              inv_propensity=metrics.inv_propensity(ds.Y_train))
    return {**scores, "train_s": t1 - t0, "predict_s": t2 - t1}


@contextlib.contextmanager
def _stdout_to_stderr():
    """File descriptor 1 pointed at 2 for a while: Omikuji's logger (started by its import) writes to
    stdout, which holds the table."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def check_names(names):
    """The peers' keys, in PEERS' order; XMCError naming any unknown one."""
    unknown = sorted(set(names) - set(PEERS))
    if unknown:
        raise XMCError(f"unknown peer(s) {unknown}; choose from {list(PEERS)}")
    return [n for n in PEERS if n in names]


def run_peers(datasets, names=None, threads=1, seed=0, log=print):
    """{(dataset name, peer title): row} for every dataset directory and available peer; log(line) for
    each peer skipped (package missing) and each row as it is done. XMCError if no peer asked for can run
    (so no empty results are written); every dataset is read, and checked, before the first peer trains."""
    peers = [PEERS[n] for n in check_names(names or PEERS)]
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise XMCError(f"threads must be an integer >= 1, got {threads!r}")
    ready = []
    for peer in peers:
        reason = unavailable(peer)
        if reason:
            log(reason)
        else:
            ready.append(peer)
    if not ready:
        raise XMCError("none of the peers asked for can run here (the lines above say how to install them)")
    datasets = [load_dataset(data) for data in datasets]
    rows = {}
    for ds in datasets:
        for peer in ready:
            rows[ds.name, peer.title] = row = run_peer(peer, ds, threads, seed)
            log(f"{ds.name}: {peer.title}: P@1 {100 * row['P@1']:.2f}, trained in {row['train_s']:.1f} s")
    return rows


def format_peers(rows):
    """The markdown table of `python -m engine results`, with the peers' columns."""
    return format_table(rows, COLUMNS)


# -----------------------------------------------------------------------------
# the stored results: written by the command, read by the app


def write_peer_results(rows, path, command, threads):
    """Write rows (run_peers' dict) as JSON to path, whole or not at all."""
    doc = {"format": FORMAT, "command": command, "threads": threads,
           "rows": [{"dataset": ds, "peer": title, **row} for (ds, title), row in rows.items()]}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda temp: temp.write_text(json.dumps(doc, indent=2) + "\n"),
                 lambda problem: XMCError(f"{path}: {problem}"))


def read_peer_results(path):
    """The stored peers' results at path: {"command", "threads", "rows": [{dataset, peer, metric..., train_s,
    predict_s}]}; XMCError naming the file and the problem for anything else."""
    def error(problem):
        return XMCError(f"{path}: {problem}")
    doc = parse_json(read_regular(Path(path), RUN_FILE_LIMIT, error), error)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise error(f"not a peers' results file (expected \"format\": {FORMAT!r}; written by python -m engine peers)")
    if not isinstance(doc.get("command"), str) or not isinstance(doc.get("rows"), list):
        raise error("needs a \"command\" string and a \"rows\" list")
    for i, row in enumerate(doc["rows"]):
        _check_row(row, lambda problem, i=i: error(f"row {i}: {problem}"))
    return {"command": doc["command"], "threads": doc.get("threads"), "rows": doc["rows"]}


def _check_row(row, error):
    if not isinstance(row, dict):
        raise error(f"expected an object, got {type(row).__name__}")
    for key in ("dataset", "peer"):
        if not isinstance(row.get(key), str) or not row[key]:
            raise error(f"\"{key}\" must be a non-empty string")
    for key in ("P@1", *TIMES):
        if key not in row:
            raise error(f"\"{key}\" is missing")
    for key, value in row.items():
        if key in ("dataset", "peer"):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise error(f"\"{key}\" must be a finite number >= 0, got {value!r}")
        if key not in TIMES and value > 1:
            raise error(f"\"{key}\" is a fraction in [0, 1], got {value!r}")
