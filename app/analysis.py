"""Pure computations behind the app's views (no Streamlit here): label maps, connectivity, memory,
learned-hash inference.

Everything takes engine objects or arrays and returns arrays, dicts or tables, so tests call it
directly. Thin on top of the engine's public API; where the engine has a piece (PIFA in
engine.grouping, analytic memory in engine.memory) it is used, else a few lines stand in.
"""

import dataclasses
import time

import numpy as np
import scipy.sparse as sp
import torch

from engine import ConfigError, TrainConfig, Trainer, lss
from engine.model import SparseInput

SPARSE_HEADS = ("fixed_fanin", "group_shared", "dense_sparse")
MAX_MAP_LABELS = 5000           # labels drawn in a label map; more are sampled (and the view says so)
MAX_HEATMAP_GROUPS = 200        # rows of the groups x inputs heatmap; more are sampled


# ---------------------------------------------------------------------------------------------
# label embeddings and the 2-D map

def pifa(X, Y):
    """(L, D) sparse PIFA embeddings: row l is the l2-normalised mean of label l's positive rows."""
    try:
        from engine.grouping import pifa as engine_pifa
        return sp.csr_matrix(engine_pifa(X, Y, dense=False))
    except ImportError:                                   # before engine.grouping landed
        P = sp.csr_matrix(Y, dtype=np.float64, copy=True)
        P.data[:] = 1.0
        S = sp.csr_matrix(P.T @ sp.csr_matrix(X, dtype=np.float64))
        norm = np.sqrt(np.asarray(S.multiply(S).sum(axis=1)).ravel())
        inv = np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)
        return sp.csr_matrix(sp.diags(inv) @ S, dtype=np.float32)


def sample_labels(n_labels, max_labels=MAX_MAP_LABELS, seed=0):
    """Sorted label ids to draw: all of them, or a seeded uniform sample of max_labels."""
    if n_labels <= max_labels:
        return np.arange(n_labels)
    return np.sort(np.random.default_rng(seed).choice(n_labels, max_labels, replace=False))


def embed_2d(E, method="umap", seed=0, n_neighbors=15):
    """2-D layout (n, 2) float32 of the rows of E (dense or sparse), cosine geometry.

    Rows are l2-normalised and reduced to at most 50 dimensions by a truncated SVD; "pca" stops
    at the first two components (instant), "umap" runs UMAP on the reduced rows with a
    precomputed exact k-nearest-neighbour graph (sklearn), seeded."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.preprocessing import normalize
    n = E.shape[0]
    if n < 3:
        return np.zeros((n, 2), np.float32)
    E = normalize(sp.csr_matrix(E, dtype=np.float32) if sp.issparse(E) else np.asarray(E, np.float32))
    dims = max(2, min(50, E.shape[1] - 1, n - 1))
    R = TruncatedSVD(dims, random_state=seed).fit_transform(E) if E.shape[1] > 2 else np.asarray(
        E.toarray() if sp.issparse(E) else E)
    R = np.asarray(R, np.float32)
    if method == "pca" or n <= n_neighbors + 1:
        out = R[:, :2] if R.shape[1] >= 2 else np.pad(R, ((0, 0), (0, 2 - R.shape[1])))
        return np.ascontiguousarray(out, np.float32)
    if method != "umap":
        raise ValueError(f"method must be 'umap' or 'pca', got {method!r}")
    import warnings
    from sklearn.neighbors import NearestNeighbors
    Rn = normalize(R)
    dist, ind = NearestNeighbors(n_neighbors=n_neighbors).fit(Rn).kneighbors(Rn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import umap
        _cache_umap_kernels()
        xy = umap.UMAP(n_neighbors=n_neighbors, min_dist=0.5, init="random", n_epochs=200,
                       random_state=seed, precomputed_knn=(ind, dist, None)).fit_transform(Rn)
    return np.asarray(xy, np.float32)


_UMAP_PATCHED = []


def _cache_umap_kernels():
    """Let numba cache UMAP's three hot kernels on disk (umap-learn compiles them without cache=True,
    ~10 s at every server start): the same functions and options, re-jitted with cache=True. Falls
    back silently to umap's own kernels if its internals differ."""
    if _UMAP_PATCHED:
        return
    _UMAP_PATCHED.append(True)
    try:
        import numba
        import umap.layouts as layouts
        import umap.umap_ as umap_

        def cached(disp):
            opts = {k: v for k, v in disp.targetoptions.items() if k not in ("nopython", "boundscheck")}
            return numba.njit(cache=True, locals=dict(disp.locals), **opts)(disp.py_func)

        new = (cached(umap_.smooth_knn_dist), cached(umap_.compute_membership_strengths),
               cached(layouts._nb_optimize_layout_euclidean_single_epoch))
        (umap_.smooth_knn_dist, umap_.compute_membership_strengths,
         layouts._nb_optimize_layout_euclidean_single_epoch) = new
    except (ImportError, AttributeError, TypeError):
        pass


def warm_up_training():
    """Load the heads' numba kernels and torch's first-call paths on a tiny problem (a few hundred
    ms warm, seconds cold), so the first real Start shows metrics at once."""
    from engine import generate
    ds = generate(n_points=200, n_features=50, n_labels=40, n_clusters=4, seed=0, name="warm-up")
    for head in ("group_shared", "dense"):
        trainer = Trainer(TrainConfig(data="warm-up", head=head, hidden=16, fanin=4, group_size=4, epochs=1,
                                      batch_size=64), dataset=ds)
        trainer.eval_record()
        next(iter(trainer.run()))


def warm_up_umap():
    """Compile UMAP's numba functions on a tiny problem, so the first real map is quick."""
    rng = np.random.default_rng(0)
    embed_2d(rng.random((60, 8)).astype(np.float32), "umap", seed=0)


# ---------------------------------------------------------------------------------------------
# models: build (untrained, from a config) or load (a run's checkpoint); read their structure

def build_trainer(config: TrainConfig, dataset):
    """A Trainer (and its freshly initialised, seeded model) for a config and loaded dataset."""
    return Trainer(config, dataset=dataset)


def load_run_model(run, dataset):
    """The model of a stored run at its latest checkpoint (None when it has no checkpoint yet)."""
    if not (run.path / "model.safetensors").exists():
        return None
    trainer = Trainer(run.config, dataset=dataset)
    run.load_checkpoint(trainer.model)
    return trainer.model


def head_modules(model):
    """The output-head modules of a model (dense and/or sparse part, or MACH)."""
    parts = [getattr(model, name, None) for name in ("dense", "sparse", "mach")]
    parts = [p for p in parts if isinstance(p, torch.nn.Module)]
    return parts or [model.head]


def sparse_head(model):
    """The group-shared / fixed fan-in part of a model's head, or None (dense, MACH)."""
    head = getattr(model, "sparse", None) if hasattr(model, "sparse") else model.head
    return head if head is not None and hasattr(head, "idx") else None


def label_slots(model):
    """(L,) slot of each label in the head's output (identity for the plain heads)."""
    slots = getattr(model, "slot_of_label", None)
    L = model.config.n_labels
    return np.arange(L) if slots is None else np.asarray(slots.detach().cpu().numpy(), np.int64)


def label_groups(model):
    """(L,) group id of each label in the sparse head (-1: the dense part), or None without one.

    Group g holds the slots g·m .. g·m+m-1 of the sparse part; for fixed fan-in every label is
    its own group."""
    head = sparse_head(model)
    if head is None:
        return None
    dense = getattr(model, "dense", None)
    n_dense = dense.n_labels if (dense is not None and head is not dense and hasattr(model, "sparse")) else 0
    s = label_slots(model) - n_dense
    return np.where(s >= 0, s // head.group_size, -1)


def head_index(model):
    """(G, k) int32 input sets of the sparse head, or None."""
    head = sparse_head(model)
    return None if head is None else head.idx.detach().cpu().numpy()


def group_labels(groups, g):
    """Label ids of group g, ascending."""
    return np.flatnonzero(groups == g)


def reuse_counts(idx, n_inputs):
    """(n_inputs,) how many groups read each input."""
    return np.bincount(np.asarray(idx).ravel(), minlength=n_inputs)


def connectivity_matrix(idx, n_inputs, max_groups=MAX_HEATMAP_GROUPS, seed=0):
    """Binary groups x inputs matrix for a heatmap: (rows, M (rows, n_inputs) uint8, sampled)."""
    G = idx.shape[0]
    rows = np.arange(G) if G <= max_groups else np.sort(
        np.random.default_rng(seed).choice(G, max_groups, replace=False))
    M = np.zeros((len(rows), n_inputs), np.uint8)
    M[np.repeat(np.arange(len(rows)), idx.shape[1]), idx[rows].ravel()] = 1
    return rows, M, G > max_groups


def feature_name(feature_names, f):
    return feature_names[f] if feature_names is not None else f"feature {f}"


def input_names(model, feature_names=None):
    """Names of the head's inputs: hidden units h0, h1, ..., or the input features themselves when
    the model has no encoder (hidden = 0)."""
    d = model.config.head_in
    if model.embed is None:
        return [feature_name(feature_names, f) for f in range(d)]
    return [f"h{i}" for i in range(d)]


def group_inputs_table(model, g, feature_names=None, top_features=5):
    """Rows describing the inputs group g reads: the input (hidden unit, or feature with no encoder),
    how many groups share it, mean |w| of the group's labels on it, and for a hidden unit the input
    features that drive it most (the first layer's weights, with feature names)."""
    head = sparse_head(model)
    idx = head.idx.detach().cpu().numpy()
    counts = reuse_counts(idx, head.in_features)
    W = head.weight.detach()[g].abs().mean(0).numpy()                        # (k,)
    first_layer = model.embed is not None and model.config.intermediate == 0
    E = model.embed.weight.detach().numpy() if first_layer else None         # (D, hidden)
    inputs = input_names(model, feature_names)
    rows = []
    for t, unit in enumerate(idx[g].tolist()):
        row = {"input": inputs[unit], "read by groups": int(counts[unit]), "mean |w|": float(W[t])}
        if E is not None:
            top = np.argsort(-E[:, unit])[:top_features]
            row["strongest features (first layer)"] = ", ".join(feature_name(feature_names, f) for f in top.tolist())
        rows.append(row)
    rows.sort(key=lambda r: -r["mean |w|"])
    return rows


# ---------------------------------------------------------------------------------------------
# memory: analytic and measured

def _model_config(config: TrainConfig, n_features, n_labels):
    return config.model_config(n_features, n_labels)


def memory_estimate(config: TrainConfig, n_features, n_labels):
    """Analytic bytes of the head: params, index, grads, optimizer (Adam), logits (+ their grad)."""
    mc = _model_config(config, n_features, n_labels)
    B = config.batch_size
    try:
        from engine.memory import head_memory
        return dict(head_memory(mc, batch_size=B))
    except ImportError:
        d, L = mc.head_in, mc.n_labels
        if mc.head == "dense":
            weights, index = (d + 1) * L, 0
        else:
            m = mc.group_size if mc.head == "group_shared" else 1
            G = -(-L // m)
            weights, index = G * m * (mc.fanin + 1), G * mc.fanin
        out = {"params": 4 * weights, "index": 4 * index, "grads": 4 * weights,
               "optimizer": 8 * weights, "logits": 2 * 4 * B * L}
        out["total"] = sum(out.values())
        return out


def measure_memory(config: TrainConfig, n_features, n_labels, seed=0):
    """Bytes of the real tensors of the head after one Adam step on a random batch of h:
    parameters, index buffers, gradients, Adam state, logits and their gradient."""
    from engine import XMCModel
    mc = _model_config(config, n_features, n_labels)
    torch.manual_seed(seed)
    model = XMCModel(mc)
    heads = head_modules(model)
    params = [p for h in heads for p in h.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3)
    h = torch.randn(config.batch_size, mc.head_in)
    mach = getattr(model, "mach", None)
    if mach is not None:
        Z = mach(h)                                                       # (B, R, buckets)
    else:
        Z = model.slot_logits(h) if hasattr(model, "slot_logits") else model.head(h)
    dZ = torch.randn_like(Z)
    Z.backward(dZ)
    opt.step()
    nbytes = lambda t: t.numel() * t.element_size()                       # noqa: E731
    out = {"params": sum(nbytes(p) for p in params),
           "index": sum(nbytes(b) for hd in heads for name, b in hd.named_buffers() if "idx" in name
                        or "index" in name),
           "grads": sum(nbytes(p.grad) for p in params if p.grad is not None),
           "optimizer": sum(nbytes(v) for s in opt.state.values() for v in s.values()
                            if torch.is_tensor(v) and v.dim() > 0),
           "logits": nbytes(Z) + nbytes(dZ)}
    out["total"] = sum(out.values())
    return out


def head_variants(config: TrainConfig):
    """The current config and its siblings with the other basic heads, for a memory comparison."""
    out = {}
    for head in ("dense", "fixed_fanin", "group_shared"):
        out[head] = dataclasses.replace(config, head=head)
    if config.head not in out:
        out[config.head] = config
    return out


def run_bench(label_counts, progress=None, **kw):
    """run_heads_bench over several label counts; progress(i, n, text) after each. Rows with n_labels."""
    from engine.bench import run_heads_bench
    rows = []
    for i, L in enumerate(label_counts):
        if progress:
            progress(i, len(label_counts), f"L = {L:,}")
        t0 = time.perf_counter()
        for r in run_heads_bench(n_labels=int(L), progress=False, **kw):
            r["wall_s"] = time.perf_counter() - t0
            rows.append(r)
    if progress:
        progress(len(label_counts), len(label_counts), "done")
    return rows


# ---------------------------------------------------------------------------------------------
# runs

def last_eval(records):
    evals = [r for r in records if r.get("kind") == "eval"]
    return evals[-1] if evals else None


def split_records(records):
    """(step records, eval records, other records by kind)."""
    steps = [r for r in records if r.get("kind") == "step"]
    evals = [r for r in records if r.get("kind") == "eval"]
    other = {}
    for r in records:
        if r.get("kind") not in ("step", "eval"):
            other.setdefault(r.get("kind"), []).append(r)
    return steps, evals, other


def label_weight_vectors(model):
    """(L, d) each label's weights over the head's inputs (csr for heads with a sparse part), or
    None (MACH)."""
    if model.config.head == "mach":
        return None
    return label_vectors(model, sparse=sparse_head(model) is not None)[0]


def _slot_weights(part):
    """(n_slots, d) csr weights of one head part over its inputs, in its slot order: a dense part's
    rows; for a group-shared part, slot g·m+j holds W[g, j, t] at column idx[g, t] (the slots past
    n_labels, padding, dropped: no label's slot_of_label picks them)."""
    W = part.weight.detach().cpu().numpy()
    if not hasattr(part, "idx"):
        return sp.csr_matrix(W)
    G, m, k = W.shape
    cols = np.repeat(part.idx.detach().cpu().numpy().astype(np.int64)[:, None, :], m, axis=1)   # (G, m, k)
    rows = np.repeat(np.arange(G * m), k)
    return sp.csr_matrix((W.ravel(), (rows, cols.ravel())), shape=(G * m, part.in_features))[:part.n_labels]


def label_vectors(model, sparse=False):
    """(W (L, d), b (L,)) float32: each label's weights over the head's inputs and its bias, in
    label order, so that the model's logits are

        z_l = h · W[l] + b[l] = slot_logits(h)[slot_of_label[l]]

    The parts' slots stacked (the dense part first, then the sparse groups), rows picked by
    slot_of_label; W as a csr matrix with sparse=True. MACH has no vector per label (a label scores
    by the buckets it hashes to): ConfigError."""
    if model.config.head == "mach":
        raise ConfigError("a MACH head has no weight vector per label (a label's score sums the buckets it "
                          "hashes to), so there is nothing to index: choose a run with a dense or sparse head")
    parts = [p for p in (model.dense, model.sparse) if p is not None]
    W = sp.vstack([_slot_weights(p) for p in parts], format="csr")               # (n_slots, d)
    b = np.concatenate([np.zeros(p.n_labels, np.float32) if p.bias is None else p.bias.detach().cpu().numpy()
                        for p in parts])                                         # (n_slots,)
    slots = label_slots(model)
    W = W[slots].astype(np.float32)
    return (W if sparse else W.toarray()), np.ascontiguousarray(b[slots], np.float32)


# ---------------------------------------------------------------------------------------------
# fast inference: learned-hash candidates (engine.lss) on a trained model

def hidden_layer(model, X, batch_size=4096):
    """(N, d) float32: the hidden representation h the head reads, for every row of X (CSR), with
    dropout off (eval mode, restored after); the densified features when there is no encoder."""
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            H = [model.encode(SparseInput(X[s:s + batch_size])) for s in range(0, X.shape[0], batch_size)]
    finally:
        model.train(training)
    return torch.cat(H).numpy()


def lss_comparison(model, dataset, n_tables=16, n_bits=8, epochs=5, k=5, seed=0, progress=None):
    """The same T×K hash index over a trained model's label vectors, untrained (SimHash: Gaussian
    hyperplanes, fit with 0 epochs) and learned from the training points' (h, true label) pairs,
    each scoring only its candidates on the test split, as engine.lss.run_lss_experiment does for
    a fresh dense model. Exact scoring h·Wᵀ + b of all L labels is run and timed once, after both
    fits, and shared by both reports. progress(i, n, text) before each stage.

    Returns one engine.lss.report dict per index (candidates, recall, P@1 and its share of exact
    P@1, times, speed-up), with "index" its name and "fit_s" its build time in seconds."""
    step = progress or (lambda i, n, text: None)
    step(0, 5, "the hidden layer of the train and test points")
    W, b = label_vectors(model)
    H_train, H_test = hidden_layer(model, dataset.X_train), hidden_layer(model, dataset.X_test)
    indexes, fit_s = {}, {}
    for i, (name, n_epochs) in enumerate((("SimHash", 0), ("learned", epochs))):
        step(1 + i, 5, f"building the {name} index")
        t0 = time.perf_counter()
        indexes[name] = lss.LearnedHashIndex(n_tables, n_bits, seed=seed).fit(W, H_train, dataset.Y_train, bias=b,
                                                                              epochs=n_epochs)
        fit_s[name] = time.perf_counter() - t0
    step(3, 5, f"exact scoring of all {W.shape[0]:,} labels")
    k = min(k, W.shape[0])
    lss.exact_topk(H_test[:8], W, b, k)                                           # warm up
    t0 = time.perf_counter()
    exact_top = lss.exact_topk(H_test, W, b, k)
    exact_s = time.perf_counter() - t0
    step(4, 5, "searching the candidates")
    rows = [{"index": name, "fit_s": fit_s[name],
             **lss.report(index, H_test, W, b, dataset.Y_test, k=k, exact_top=exact_top, exact_time=exact_s)}
            for name, index in indexes.items()]
    step(5, 5, "done")
    return rows
