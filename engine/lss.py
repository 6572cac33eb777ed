"""Learned-hash inference ("label superior sampling"): score only the labels that share a hash
bucket with the query, with hash functions trained so that a query lands where its TRUE labels are.

Both sides are mapped to unit vectors whose inner product orders labels as the head's score
h·w_l + b_l does (the MIPS-to-cosine reduction of Neyshabur and Srebro, 2015, with the bias as one
more coordinate), so that untrained random hyperplanes are the standard SimHash baseline:

    query  q   = [h, 1, 0] / ||[h, 1]||
    label  x_l = [w_l, b_l - mean(b), r_l] / M,   M = max_l ||[w_l, b_l - mean(b)]||,  ||x_l|| = 1
    table t, K bits:  code_t(x) = Σ_k 2^k · [P_t,k · x + c_t,k > 0]        (2^K buckets per table)

P (T, K, d+2) starts Gaussian and c at 0: that is SimHash. Learning (`fit`) trains P and c on soft
codes u = tanh(P·x + c), where two vectors collide in table t with probability
pc_t = Π_k (1 + u_k·v_k)/2 (bits agreeing independently), and in some table with
1 - Π_t (1 - pc_t). The loss pulls each (query, true label) pair together and pushes all labels
away on average, weighing the two by what they cost at inference (a missed label, a larger
candidate set):

    loss = - mean_(q,l) log P(q, l collide in some table)
           + λ · mean_q E_(l uniform) Σ_t pc_t(q, l)        (>= expected candidates / L)

The second term is exact in the soft codes at the cost of a (T, 2^(K/2), 2^(K/2)) moment matrix of
the sampled labels, since Π_k (1 + u_k·v_k) is bilinear in the bit-subset products of u and v.

Labels are rehashed with the trained functions, then each table maps bucket -> label ids.
At inference the candidates of a query are the union over tables of its buckets' labels, scored
exactly (numba, parallel over queries, fused: no candidate list is materialised).

    index = LearnedHashIndex(n_tables=16, n_bits=8).fit(W, H_train, Y_train, bias=b)
    top = index.search(H_test, W, b, k=5)                    # (N, 5) ids, -1 = fewer candidates
    report(index, H_test, W, b, Y_test)                      # candidates, recall, P@1, times
    compare_hash_indexes(model, dataset)                     # SimHash vs learned on a trained model
    run_lss_experiment()                                     # 100k labels: learned vs SimHash
"""

import math
import time

import numba
import numpy as np
import scipy.sparse as sp
import torch
from numba import njit, prange

from . import metrics
from .errors import ConfigError
from .guard import check_bytes
from .memory import lss_bytes

MAX_BITS = 24


def _check_int(name, v, lo, hi=None):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo or (hi is not None and v > hi):
        rule = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
        raise ConfigError(f"{name}={v!r}: expected {rule}")


def _check_real(name, v, lo, strict=True):
    ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)
    if not ok or (v <= lo if strict else v < lo):
        raise ConfigError(f"{name}={v!r}: expected a number {'>' if strict else '>='} {lo}")


def _as_matrix(name, A, d=None):
    A = A.detach().cpu().numpy() if isinstance(A, torch.Tensor) else np.asarray(A)
    if A.ndim != 2 or (d is not None and A.shape[1] != d):
        want = "(n, d)" if d is None else f"(n, {d})"
        raise ConfigError(f"{name} must have shape {want}, got {A.shape}")
    return np.ascontiguousarray(A, np.float32)


def _positive_pairs_matrix(Y):
    """Y as CSR without stored zeros (nonzero = true label)."""
    Y = Y.tocsr()
    if not Y.data.all():
        Y = Y.copy()
        Y.eliminate_zeros()
    return Y


def _as_bias(bias, L):
    if bias is None:
        return np.zeros(L, np.float32)
    b = bias.detach().cpu().numpy() if isinstance(bias, torch.Tensor) else np.asarray(bias)
    if b.shape != (L,):
        raise ConfigError(f"bias must have shape ({L},) (one per label), got {b.shape}")
    return np.ascontiguousarray(b, np.float32)


def label_vectors(W, bias):
    """The labels' side of the hashes, float32 (L, d+2): [w_l, b_l - mean(b), r_l] / M with M the
    largest norm of [w, b - mean(b)] and r_l = sqrt(1 - ||[w_l, b_l - mean(b)]||² / M²), so every
    row has norm 1 and a query's inner product with it orders labels as h·w_l + b_l does (the
    shared offset mean(b) ranks nothing). A common MIPS-to-cosine reduction (Neyshabur and
    Srebro, 2015)."""
    L, d = W.shape
    X = np.zeros((L, d + 2), np.float32)
    X[:, :d] = W
    X[:, d] = bias - bias.mean()
    norms = np.linalg.norm(X[:, :d + 1], axis=1)
    X /= max(float(norms.max()), 1e-12)
    X[:, d + 1] = np.sqrt(np.clip(1.0 - (norms / max(float(norms.max()), 1e-12)) ** 2, 0.0, 1.0))
    return X


def query_vectors(H):
    """The queries' side, float32 (N, d+2): [h, 1, 0] / ||[h, 1]||."""
    N, d = H.shape
    X = np.zeros((N, d + 2), np.float32)
    X[:, :d] = H
    X[:, d] = 1.0
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X


# ---------------------------------------------------------------------------------------------
# kernels (numba); prior validation is assumed

@njit(parallel=True, cache=True)
def _candidates(codes, ptr, ids, n_labels, n_chunks, indptr, out, fill):
    """Per query n, the distinct labels of its buckets in order of first visit: counted into
    indptr[n + 1] (fill False), or written to out[indptr[n]:indptr[n + 1]] (fill True)."""
    N, T = codes.shape
    for c in prange(n_chunks):
        mark = np.full(n_labels, -1, np.int64)
        for n in range(c * N // n_chunks, (c + 1) * N // n_chunks):
            p = indptr[n] if fill else 0
            for t in range(T):
                b = codes[n, t]
                for j in range(ptr[t, b], ptr[t, b + 1]):
                    l = ids[t, j]
                    if mark[l] != n:
                        mark[l] = n
                        if fill:
                            out[p] = l
                        p += 1
            if not fill:
                indptr[n + 1] = p


@njit(parallel=True, fastmath=True, cache=True)
def _search(H, codes, ptr, ids, W, bias, k, n_chunks, top_ids, top_scores, n_cand):
    """Per query: walk its buckets, score each new label h·w_l + b_l, keep the k best (insertion
    into a sorted row of top_scores, pre-filled with -inf; top_ids pre-filled with -1)."""
    N, T = codes.shape
    L, d = W.shape
    for c in prange(n_chunks):
        mark = np.full(L, -1, np.int64)
        for n in range(c * N // n_chunks, (c + 1) * N // n_chunks):
            cnt = 0
            for t in range(T):
                b = codes[n, t]
                for j in range(ptr[t, b], ptr[t, b + 1]):
                    l = ids[t, j]
                    if mark[l] == n:
                        continue
                    mark[l] = n
                    cnt += 1
                    s = bias[l]
                    for i in range(d):
                        s += H[n, i] * W[l, i]
                    if s > top_scores[n, k - 1]:
                        p = k - 1
                        while p > 0 and top_scores[n, p - 1] < s:
                            top_scores[n, p] = top_scores[n, p - 1]
                            top_ids[n, p] = top_ids[n, p - 1]
                            p -= 1
                        top_scores[n, p] = s
                        top_ids[n, p] = l
            n_cand[n] = cnt


def _n_chunks(N):
    return max(1, min(N, 8 * numba.get_num_threads()))


def subset_products(u):
    """φ(u) (..., 2^k) for u (..., k): Π_{i in S} u_i for every subset S of the k bits (bit i of
    the position says whether i is in S), so that Π_i (1 + u_i·v_i) = φ(u)·φ(v)."""
    phi = torch.ones(*u.shape[:-1], 1, dtype=u.dtype)
    for i in range(u.shape[-1]):
        phi = torch.cat([phi, phi * u[..., i:i + 1]], -1)
    return phi


def mean_soft_collision(u, v):
    """(B, T): mean over the M rows of v of Π_k (1 + u_k·v_k)/2, for soft codes u (B, T, K) and
    v (M, T, K). With the bits split in halves, Π_k (1 + u_k·v_k) = φ_lo(u)ᵀ [φ_lo(v) φ_hi(v)ᵀ]
    φ_hi(u): the mean over v is one (T, 2^(K/2), 2^(K/2)) matrix and no (B, M, T, K) or
    (B, T, 2^K) tensor is formed. Past 16 bits: pairwise, over the first 128 rows of v."""
    K = u.shape[-1]
    if K > 16:
        v = v[:128]
        return torch.exp(torch.log1p((u[:, None] * v[None]).clamp(min=-1 + 1e-6))
                         .sub(math.log(2.0)).sum(-1)).mean(1)
    K1 = K // 2
    moments = torch.einsum("mtx,mty->txy", subset_products(v[..., :K1]),
                           subset_products(v[..., K1:])) / v.shape[0]               # (T, 2^K1, 2^K2)
    return torch.einsum("ntx,txy,nty->nt", subset_products(u[..., :K1]), moments,
                        subset_products(u[..., K1:])) / 2 ** K


# ---------------------------------------------------------------------------------------------
# the index

class LearnedHashIndex:
    """T hash tables of 2^K buckets over the label vectors of a trained head.

    After `fit`: `proj` (T, K, d+2) and `offset` (T, K) float32 (the hash functions),
    `label_codes` (L, T) int64, and per table the labels sorted by bucket: `ids` (T, L) int32
    with bucket j of table t at ids[t, ptr[t, j]:ptr[t, j+1]], `ptr` (T, 2^K + 1) int64.
    `history` holds the training loss per epoch."""

    def __init__(self, n_tables=16, n_bits=8, seed=0):
        _check_int("n_tables", n_tables, 1)
        _check_int("n_bits", n_bits, 1, MAX_BITS)
        _check_int("seed", seed, 0)
        self.n_tables, self.n_bits, self.seed = int(n_tables), int(n_bits), int(seed)
        self.proj = self.offset = self.ids = self.ptr = self.label_codes = None
        self.n_labels = self.dim = None
        self.history = []

    def __repr__(self):
        state = f"n_labels={self.n_labels}" if self.ids is not None else "not fitted"
        return f"LearnedHashIndex(n_tables={self.n_tables}, n_bits={self.n_bits}, seed={self.seed}, {state})"

    # -- hashing ---------------------------------------------------------------------------

    def codes(self, X):
        """Bucket of each row of X (n, d+2) (query_vectors / label_vectors) in each table: (n, T) int64."""
        T, K = self.n_tables, self.n_bits
        weights = (1 << np.arange(K, dtype=np.int64))
        out = np.empty((X.shape[0], T), np.int64)
        P = self.proj.reshape(T * K, -1).T                                 # (d+2, T·K)
        c = self.offset.reshape(-1)
        for s in range(0, X.shape[0], 1 << 15):
            bits = (X[s:s + (1 << 15)] @ P + c) > 0                        # (n, T·K)
            out[s:s + (1 << 15)] = bits.reshape(-1, T, K) @ weights
        return out

    def query_codes(self, H):
        """(N, T) buckets of queries H (N, d)."""
        H = _as_matrix("H", H, self.dim)
        return self.codes(query_vectors(H))

    def _build(self, W, bias):
        self.label_codes = self.codes(label_vectors(W, bias))                    # (L, T)
        T, L, nb = self.n_tables, W.shape[0], 1 << self.n_bits
        self.ids = np.empty((T, L), np.int32)
        self.ptr = np.empty((T, nb + 1), np.int64)
        for t in range(T):
            self.ids[t] = np.argsort(self.label_codes[:, t], kind="stable")
            self.ptr[t, 0] = 0
            np.cumsum(np.bincount(self.label_codes[:, t], minlength=nb), out=self.ptr[t, 1:])

    # -- training --------------------------------------------------------------------------

    def fit(self, W, H_train=None, Y_train=None, bias=None, epochs=5, lr=0.01, batch_size=512,
            n_negatives=1024, neg_weight=20.0, max_pairs=None, verbose=False, device="cpu"):
        """Learn the hash functions from (query, true label) pairs, then build the tables.

        W (L, d) label vectors, bias (L,) or None; H_train (N, d) the hidden layer of training
        points and Y_train (N, L) scipy sparse their labels. epochs=0 (or H_train None) keeps the
        random Gaussian projections: plain SimHash. Each step takes `batch_size` positive pairs
        and `n_negatives` labels drawn uniformly; neg_weight is λ above (larger: fewer
        candidates, lower recall). max_pairs caps the pairs used per epoch (None: all). The hash
        functions learn on `device` (a trained model's: XMCModel.device), drawing their batches and
        negatives from the same CPU generator there as here. Returns self."""
        W = _as_matrix("W", W)
        L, d = W.shape
        b = _as_bias(bias, L)
        _check_int("epochs", epochs, 0)
        _check_real("lr", lr, 0.0)
        _check_int("batch_size", batch_size, 1)
        _check_int("n_negatives", n_negatives, 1)
        _check_real("neg_weight", neg_weight, 0.0, strict=False)
        learn = epochs > 0 and H_train is not None
        if learn:
            H_train = _as_matrix("H_train", H_train, d)
            if not sp.issparse(Y_train) or Y_train.shape != (H_train.shape[0], L):
                shape = getattr(Y_train, "shape", None)
                raise ConfigError(f"Y_train must be a scipy sparse ({H_train.shape[0]}, {L}) matrix, "
                                  f"got {type(Y_train).__name__} of shape {shape}")
        self.n_labels, self.dim = L, d
        T, K = self.n_tables, self.n_bits
        gen = torch.Generator().manual_seed(self.seed)
        proj = torch.randn(T, K, d + 2, generator=gen)                     # SimHash
        offset = torch.zeros(T, K)
        self.history = []
        if learn:
            X_lab = torch.from_numpy(label_vectors(W, b)).to(device)                   # (L, d+2)
            X_q = torch.from_numpy(query_vectors(H_train)).to(device)                  # (N, d+2)
            proj, offset = self._train(proj.to(device), offset.to(device), X_lab, X_q,
                                       _positive_pairs_matrix(Y_train), epochs, lr, batch_size, n_negatives,
                                       neg_weight, max_pairs, gen, verbose)
        self.proj = proj.cpu().numpy().astype(np.float32)
        self.offset = offset.cpu().numpy().astype(np.float32)
        self._build(W, b)
        return self

    def _train(self, proj, offset, X_lab, X_q, Y, epochs, lr, batch_size, n_negatives, neg_weight,
               max_pairs, gen, verbose):
        L, dev = X_lab.shape[0], X_lab.device
        rows = torch.from_numpy(np.repeat(np.arange(Y.shape[0]), np.diff(Y.indptr))).to(dev)
        labels = torch.from_numpy(Y.indices.astype(np.int64)).to(dev)
        proj, offset = proj.clone().requires_grad_(), offset.clone().requires_grad_()
        opt = torch.optim.Adam([proj, offset], lr=lr)

        def soft(X):                                                       # (n, T, K) in (-1, 1)
            return torch.tanh(torch.einsum("nd,tkd->ntk", X, proj) + offset)

        def log_miss(u, v):
            """log P(no table collides) = Σ_t log(1 - pc_t), pc_t = Π_k (1 + u·v)/2: (B,)."""
            log_pc = torch.log1p((u * v).clamp(min=-1 + 1e-6)).sub(math.log(2.0)).sum(-1)   # (B, T)
            return torch.log1p(-torch.exp(log_pc).clamp(max=1 - 1e-6)).sum(-1)

        t0 = time.perf_counter()
        for epoch in range(epochs):
            order = torch.randperm(rows.numel(), generator=gen)
            if max_pairs is not None:
                order = order[:max_pairs]
            total, n = 0.0, 0
            for s in range(0, order.numel(), batch_size):
                pick = order[s:s + batch_size].to(dev)
                u = soft(X_q[rows[pick]])                                  # (B, T, K)
                v = soft(X_lab[labels[pick]])                              # (B, T, K)
                neg = soft(X_lab[torch.randint(0, L, (n_negatives,), generator=gen).to(dev)])   # (M, T, K)
                hit = -torch.log((-torch.expm1(log_miss(u, v))).clamp(min=1e-12))       # (B,)
                # E_l Σ_t pc_t(q, l), l uniform: the expected bucket sizes summed over tables / L,
                # a bound on the candidate share (union bound); exact in the soft codes
                pc = mean_soft_collision(u, neg)                                        # (B, T)
                false = pc.sum(-1)                                                      # (B,)
                loss = hit.mean() + neg_weight * false.mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total, n = total + loss.item() * len(pick), n + len(pick)
            self.history.append(total / max(n, 1))
            if verbose:
                print(f"lss fit epoch {epoch + 1}: loss {self.history[-1]:.4f} "
                      f"({time.perf_counter() - t0:.1f} s)", flush=True)
        return proj.detach(), offset.detach()

    # -- inference -------------------------------------------------------------------------

    def _check_fitted(self):
        if self.ids is None:
            raise ConfigError("the index is not fitted: call fit(W, ...) first")

    def candidates(self, H):
        """The candidate labels of each query: the union over tables of its buckets' labels.
        Returns (indptr (N+1,) int64, ids int32) in CSR layout, ids in order of first visit."""
        self._check_fitted()
        codes = self.query_codes(H)
        nc = _n_chunks(codes.shape[0])
        indptr = np.zeros(codes.shape[0] + 1, np.int64)
        out = np.empty(0, np.int32)
        _candidates(codes, self.ptr, self.ids, self.n_labels, nc, indptr, out, False)   # the counts
        np.cumsum(indptr, out=indptr)
        out = np.empty(indptr[-1], np.int32)
        _candidates(codes, self.ptr, self.ids, self.n_labels, nc, indptr, out, True)
        return indptr, out

    def search(self, H, W, bias=None, k=5, return_counts=False):
        """Top-k labels (N, k) int64 by h·w_l + b_l over the candidates only, best first, padded
        with -1 when a query has fewer than k candidates. return_counts: also the number of
        candidates of each query (N,)."""
        self._check_fitted()
        W = _as_matrix("W", W, self.dim)
        if W.shape[0] != self.n_labels:
            raise ConfigError(f"W has {W.shape[0]} labels, the index was built on {self.n_labels}")
        b = _as_bias(bias, self.n_labels)
        _check_int("k", k, 1, self.n_labels)
        H = _as_matrix("H", H, self.dim)
        codes = self.codes(query_vectors(H))
        N = H.shape[0]
        top_ids = np.full((N, k), -1, np.int64)
        top_scores = np.full((N, k), -np.inf, np.float32)
        n_cand = np.zeros(N, np.int64)
        _search(H, codes, self.ptr, self.ids, W, b, int(k), _n_chunks(N), top_ids, top_scores, n_cand)
        return (top_ids, n_cand) if return_counts else top_ids


# ---------------------------------------------------------------------------------------------
# exact scoring, report, experiment

def exact_topk(H, W, bias=None, k=5, batch_size=512):
    """Top-k (N, k) int64 by full scoring H·Wᵀ + b (torch matmul and topk, in query batches)."""
    H, W = torch.from_numpy(_as_matrix("H", H)), torch.from_numpy(_as_matrix("W", W, H.shape[1]))
    b = torch.from_numpy(_as_bias(bias, W.shape[0]))
    out = [torch.topk(torch.addmm(b, H[s:s + batch_size], W.T), k, dim=1).indices
           for s in range(0, H.shape[0], batch_size)]
    return torch.cat(out).numpy()


def report(index, H, W, bias, Y_true, k=5, exact_top=None, exact_time=None):
    """How the index does on queries H with true labels Y_true (scipy sparse (N, L)):

    cand_mean, cand_pct (of L), recall (share of true (query, label) pairs whose label is among
    the candidates), top1_recall (share of queries whose exact top-1 is a candidate), P@1 and
    P@k of search and of exact scoring, P@1_ratio, and times of search and exact full scoring
    (seconds, after a warm-up) with their ratio. exact_top / exact_time: reuse a previous exact
    run (the same for every index compared)."""
    W = _as_matrix("W", W, index.dim)
    b = _as_bias(bias, W.shape[0])
    H = _as_matrix("H", H, index.dim)
    Y = sp.csr_matrix(Y_true)
    index.search(H[:8], W, b, k)                                           # compile / warm up
    t0 = time.perf_counter()
    top, n_cand = index.search(H, W, b, k, return_counts=True)
    t_search = time.perf_counter() - t0
    if exact_top is None:
        exact_topk(H[:8], W, b, k)
        t0 = time.perf_counter()
        exact_top = exact_topk(H, W, b, k)
        exact_time = time.perf_counter() - t0
    indptr, cand = index.candidates(H)
    C = sp.csr_matrix((np.ones(cand.size, np.float32), cand, indptr), shape=Y.shape)
    true_pairs = Y.nnz
    recall = float(Y.multiply(C).nnz / true_pairs) if true_pairs else 0.0
    top1_in = np.asarray(C[np.arange(H.shape[0]), exact_top[:, 0]]).ravel() > 0
    p1, p1_exact = metrics.precision_at_k(Y, top, 1), metrics.precision_at_k(Y, exact_top, 1)
    return {
        "n_tables": index.n_tables, "n_bits": index.n_bits, "n_queries": int(H.shape[0]),
        "n_labels": int(W.shape[0]),
        "cand_mean": float(n_cand.mean()), "cand_pct": float(100 * n_cand.mean() / W.shape[0]),
        "cand_max": int(n_cand.max()) if n_cand.size else 0,
        "recall": recall, "top1_recall": float(top1_in.mean()),
        "P@1": p1, "P@1_exact": p1_exact, "P@1_ratio": p1 / p1_exact if p1_exact else float("nan"),
        f"P@{k}": metrics.precision_at_k(Y, top, k), f"P@{k}_exact": metrics.precision_at_k(Y, exact_top, k),
        "search_s": t_search, "exact_s": exact_time,
        "speedup": exact_time / t_search if t_search > 0 else float("inf"),
    }


def train_dense_model(dataset, hidden=128, epochs=3, batch_size=512, lr=2e-3, dropout=0.2, seed=0,
                      verbose=False):
    """A dense-head model trained with engine.train.Trainer on `dataset`; returns (model, the
    last eval record). A quick model of a few epochs: light dropout, none of the dense layer's own."""
    from .config import TrainConfig
    from .train import Trainer
    config = TrainConfig.of(data=dataset.name, head="dense", hidden=hidden, epochs=epochs,
                            batch_size=batch_size, lr=lr, dropout=dropout, dense_dropout=0.0, seed=seed)
    trainer = Trainer(config, dataset=dataset)
    last = None
    for record in trainer.run():
        if record["kind"] == "eval":
            last = record
            if verbose:
                print(f"dense model epoch {record['epoch']}: P@1 {record['P@1']:.4f}", flush=True)
    return trainer.model, last


def compare_hash_indexes(model, dataset, n_tables=16, n_bits=8, fit_epochs=3, lr=0.01, neg_weight=20.0, k=5,
                         seed=0, progress=None, verbose=False):
    """The same T×K hash index over a trained model's label vectors (XMCModel.label_vectors),
    untrained (SimHash: Gaussian hyperplanes, fit with 0 epochs) and learned from the training
    points' (h, true label) pairs (learned on the model's device), each scoring only its candidates
    on the test split of `dataset`. Both are fitted first, then timed (numba's idle threads slow
    torch down); exact scoring h·Wᵀ + b of all L labels is run and timed once, after a warm-up, and
    shared by both reports. The race runs on the CPU, exact scoring included: the candidates'
    search is numba's, and a fair race runs both on one device. progress(i, n, text) before each stage.

    Returns [SimHash row, learned row]: each a `report` dict (candidates, recall, P@1 and its
    share of exact P@1, times, speed-up, at k' = min(k, L)) with "index" its name and "fit_s"
    its build time in seconds."""
    check_bytes(lss_bytes(model.config.n_labels, model.config.head_in, dataset.n_train, dataset.n_test, n_tables),
                "the hash-index comparison")
    step = progress or (lambda i, n, text: None)
    step(0, 5, "the hidden layer of the train and test points")
    W, b = model.label_vectors()
    H_train, H_test = model.encode_all(dataset.X_train), model.encode_all(dataset.X_test)
    indexes, fit_s = {}, {}
    for i, (name, epochs) in enumerate((("SimHash", 0), ("learned", fit_epochs))):
        step(1 + i, 5, f"building the {name} index")
        t0 = time.perf_counter()
        indexes[name] = LearnedHashIndex(n_tables, n_bits, seed=seed).fit(
            W, H_train, dataset.Y_train, bias=b, epochs=epochs, lr=lr, neg_weight=neg_weight, verbose=verbose,
            device=model.device)
        fit_s[name] = time.perf_counter() - t0
    step(3, 5, f"exact scoring of all {W.shape[0]:,} labels")
    k = min(k, W.shape[0])
    exact_topk(H_test[:8], W, b, k)                                              # warm up
    t0 = time.perf_counter()
    exact_top = exact_topk(H_test, W, b, k)
    exact_time = time.perf_counter() - t0
    step(4, 5, "searching the candidates")
    rows = []
    for name, index in indexes.items():
        rows.append({"index": name, "fit_s": fit_s[name],
                     **report(index, H_test, W, b, dataset.Y_test, k=k, exact_top=exact_top, exact_time=exact_time)})
        if verbose:
            print(name, rows[-1], flush=True)
    step(5, 5, "done")
    return rows


def run_lss_experiment(n_labels=100_000, n_points=60_000, n_features=5_000, n_clusters=500,
                       hidden=128, model_epochs=3, n_tables=16, n_bits=8, fit_epochs=3, lr=0.01,
                       neg_weight=20.0, k=5, seed=0, verbose=False):
    """The issue-3 bar for learned-hash inference: a dense model on a synthetic set of n_labels
    labels, then compare_hash_indexes (SimHash against learned, both against exact scoring).

    Returns {"data": summary, "model": {...}, "simhash": row, "learned": row,
             "bar": {"cand_pct<=10", "P@1_ratio>=0.95", "faster"}}."""
    from .data import generate
    ds = generate(n_points=n_points, n_features=n_features, n_labels=n_labels,
                  n_clusters=n_clusters, seed=seed, name=f"lss{n_labels}")
    out = {"data": ds.summary()}
    t0 = time.perf_counter()
    model, rec = train_dense_model(ds, hidden=hidden, epochs=model_epochs, seed=seed, verbose=verbose)
    out["model"] = {"head": "dense", "hidden": hidden, "epochs": model_epochs,
                    "train_s": time.perf_counter() - t0, "P@1": rec["P@1"] if rec else None}
    out["simhash"], out["learned"] = compare_hash_indexes(
        model, ds, n_tables=n_tables, n_bits=n_bits, fit_epochs=fit_epochs, lr=lr, neg_weight=neg_weight, k=k,
        seed=seed, verbose=verbose)
    r = out["learned"]
    out["bar"] = {"cand_pct<=10": r["cand_pct"] <= 10, "P@1_ratio>=0.95": r["P@1_ratio"] >= 0.95,
                  "faster": r["search_s"] < r["exact_s"]}
    return out
