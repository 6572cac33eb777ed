"""Pure computations behind the app's views (no Streamlit here): label maps, connectivity, memory,
the records of a run.

Everything takes engine objects or arrays and returns arrays, dicts or tables, so tests call it
directly. Thin on top of the engine's public API: what a model is made of, its label vectors and
groups are methods of the model (XMCModel).
"""

import time

import numpy as np
import scipy.sparse as sp
import torch

from engine import TrainConfig, XMCModel

MAX_MAP_LABELS = 5000           # labels drawn in a label map; more are sampled (and the view says so)
MAX_HEATMAP_GROUPS = 200        # rows of the groups x inputs heatmap; more are sampled


# ---------------------------------------------------------------------------------------------
# label embeddings and the 2-D map

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


def label_weight_vectors(model):
    """(L, d) each label's weights over the head's inputs (XMCModel.label_vectors; csr for heads
    with a sparse part, whose rows are mostly zeros), or None (MACH: no vector per label)."""
    if model.mach is not None:
        return None
    return model.label_vectors(sparse=model.sparse is not None)[0]


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


# ---------------------------------------------------------------------------------------------
# connectivity: the index sets of a model's sparse part

def head_index(model):
    """(G, k) int32 input sets of the sparse part, or None (dense, MACH)."""
    return None if model.sparse is None else model.sparse.idx.detach().cpu().numpy()


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
    head = model.sparse
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
    from engine import head_memory
    mc = _model_config(config, n_features, n_labels)
    return dict(head_memory(mc, batch_size=config.batch_size))


PERSISTENT = ("params", "index", "grads", "optimizer")     # the parts that outlive a step


def measure_memory(config: TrainConfig, n_features, n_labels, seed=0):
    """Bytes of the head's tensors that persist after one Adam step of its training loss
    (XMCModel.head_loss, the fused loss for sparse parts) on a random batch of h and labels:
    parameters, index buffers, gradients, Adam state. The step's transient buffers (logits, the
    fused loss's) are the analytic model's alone: engine.bench measures them in its peaks."""
    mc = _model_config(config, n_features, n_labels)
    torch.manual_seed(seed)
    model = XMCModel(mc)
    heads = model.head_parts()
    params = [p for h in heads for p in h.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3)
    rng = np.random.default_rng(seed)
    h = torch.randn(config.batch_size, mc.head_in)
    Y = sp.random(config.batch_size, n_labels, density=min(1.0, 5 / n_labels), format="csr", random_state=rng)
    Y.data[:] = 1
    model.head_loss(h, Y).backward()
    opt.step()
    nbytes = lambda t: t.numel() * t.element_size()                       # noqa: E731
    out = {"params": sum(nbytes(p) for p in params),
           "index": sum(nbytes(b) for hd in heads for name, b in hd.named_buffers() if "idx" in name
                        or "index" in name),
           "grads": sum(nbytes(p.grad) for p in params if p.grad is not None),
           "optimizer": sum(nbytes(v) for s in opt.state.values() for v in s.values()
                            if torch.is_tensor(v) and v.dim() > 0)}
    out["total"] = sum(out.values())
    return out


def head_variants(config: TrainConfig):
    """The current config and its siblings with the other basic heads, for a memory comparison."""
    out = {}
    for head in ("dense", "fixed_fanin", "group_shared"):
        out[head] = TrainConfig.of(**{**config.flat(), "head": head})
    out.setdefault(config.model.head.name, config)
    return out


def run_bench(label_counts, progress=None, **kw):
    """run_heads_bench over several label counts; progress(i, n, text) after each. Rows with n_labels."""
    from engine import run_heads_bench
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


def run_device(records):
    """(device, why) of a run from its records: its last "device" record's (the device the run, or
    its latest resumed part, trains on), why naming the devices of earlier parts when it moved; for a
    run recorded before runs had device records, ("cpu", why: the trainer had no other device then);
    None before its first record."""
    devices = [r for r in records if r.get("kind") == "device"]
    if not devices:
        return ("cpu", "recorded before device records (runs trained on the CPU only then)") if records else None
    last = devices[-1]
    earlier = sorted({r["device"] for r in devices[:-1]} - {last["device"]})
    moved = f" (resumed; earlier parts on {', '.join(earlier)})" if earlier else ""
    return last["device"], last.get("why", "") + moved


def training_curve(records, metric="P@1"):
    """[(training seconds so far, score)] at each evaluation of a run's records that has `metric`: the
    step records' step_time summed up to the evaluation's step (evaluation time not counted). A run
    that restored its best weights at the end (best_step) ends with their score, at its last second."""
    curve, seconds = [], 0.0
    for r in records:
        if r.get("kind") == "step":
            seconds += r.get("step_time", 0.0)
        elif r.get("kind") == "eval" and metric in r:
            curve.append((seconds, r[metric]))
    return curve


def split_records(records):
    """(step records, eval records, other records by kind)."""
    steps = [r for r in records if r.get("kind") == "step"]
    evals = [r for r in records if r.get("kind") == "eval"]
    other = {}
    for r in records:
        if r.get("kind") not in ("step", "eval"):
            other.setdefault(r.get("kind"), []).append(r)
    return steps, evals, other
