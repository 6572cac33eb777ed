"""MACH head (Merged-Averaged Classifiers via Hashing): R small B-bucket classifiers instead of one
L-way layer.

Labels are mapped to buckets by R independent 2-universal hashes (p = 2^31 - 1, a Mersenne prime
> L; a_r in [1, p), b_r in [0, p) drawn from the seed):

    h_r(l) = ((a_r · l + b_r) mod p) mod B                 bucket_of: (R, L) int64

One Linear(d, R·B) gives every repetition its bucket logits, so memory is O(d·R·B), not O(d·L):

    Z[n, r, :] = h[n] · V_rᵀ + c_r                          Z: (N, R, B)
    T[n, r, j] = 1  iff  some true label l of point n has h_r(l) = j     (multi-label targets)
    loss       = (1/N) Σ_n Σ_r Σ_j BCE(Z[n, r, j], T[n, r, j])
    score[n, l] = (1/R) Σ_r σ(Z[n, r, h_r(l)])              decoding: (N, L)

With `members` = E > 1 the R repetitions form E independent models (the MACH paper's setting): h is
E blocks of d units side by side, one per member's own encoder, and rep r reads block r // (R/E).

Top-k is exact over the decoded scores, computed in label chunks so that no (N, L) matrix is held
when L is large.
"""

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .group_shared import check_block, drawn_rows, linear_init

PRIME = 2_147_483_647          # 2^31 - 1; a·l + b < 2^62 fits int64


def universal_hashes(n_labels, n_buckets, n_reps, seed=0):
    """bucket_of (n_reps, n_labels) int64, row r = ((a_r·l + b_r) mod p) mod n_buckets, and the
    (a, b) arrays (n_reps,) drawn from `seed`. Prior validation is assumed."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, PRIME, n_reps, dtype=np.int64)
    b = rng.integers(0, PRIME, n_reps, dtype=np.int64)
    labels = np.arange(n_labels, dtype=np.int64)
    bucket_of = ((a[:, None] * labels[None, :] + b[:, None]) % PRIME) % n_buckets   # (R, L)
    return bucket_of, a, b


def _label_pairs(Y, n_labels):
    """(rows, labels) int64 of the nonzero entries of a batch Y: scipy sparse or dense (N, L)."""
    if sp.issparse(Y):
        Y = Y.tocsr()
        if Y.shape[1] != n_labels:
            raise ValueError(f"Y has {Y.shape[1]} labels, the head has {n_labels}")
        if not Y.data.all():                                           # stored zeros are not labels
            Y = Y.copy()
            Y.eliminate_zeros()
        rows = np.repeat(np.arange(Y.shape[0], dtype=np.int64), np.diff(Y.indptr))
        return torch.from_numpy(rows), torch.from_numpy(Y.indices.astype(np.int64))
    Y = torch.as_tensor(Y)
    if Y.dim() != 2 or Y.shape[1] != n_labels:
        raise ValueError(f"Y has shape {tuple(Y.shape)}, expected (N, {n_labels})")
    rows, labels = torch.nonzero(Y, as_tuple=True)
    return rows, labels


DECODE_CHUNK = 1 << 20          # decoded scores per chunk of decoded_topk (N × labels of a chunk)


class MachHead(nn.Module):
    """R repetitions of a B-bucket classifier on the hidden layer; labels hashed to buckets.

    `linear`: Linear(in_features, n_reps·n_buckets); `bucket_of`: (n_reps, n_labels) int64 buffer.
    forward(h) gives bucket logits (N, R, B); loss(logits, Y) the BCE against bucket targets;
    scores(logits) the decoded (N, L) label scores; topk(h, k) the best k labels. With
    block=(r0, r1): repetitions r0..r1-1 of the head (their hashes and weights, the whole head's
    numbers; with members, whole members)."""

    def __init__(self, in_features, n_labels, n_buckets, n_reps, seed=0, bias=True, members=1, block=None):
        super().__init__()
        for name, v, lo in (("in_features", in_features, 1), ("n_labels", n_labels, 1),
                            ("n_buckets", n_buckets, 2), ("n_reps", n_reps, 1), ("members", members, 1)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ConfigError(f"{name}={v!r}: expected an integer >= {lo}")
        if n_reps % members:
            raise ConfigError(f"members={members} must divide n_reps={n_reps}")
        if n_labels >= PRIME:
            raise ConfigError(f"n_labels={n_labels}: the hash family needs n_labels < p = {PRIME}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"seed={seed!r}: expected an integer >= 0")
        d, L, B, R = int(in_features), int(n_labels), int(n_buckets), int(n_reps)
        r0, r1 = check_block(block, R, "repetitions")
        per_member = R // members
        if members > 1 and (r0 % per_member or r1 % per_member):
            raise ConfigError(f"block {block} of repetitions splits a member ({per_member} repetitions each)")
        self.n_members = max(1, members * (r1 - r0) // R)
        self.in_features, self.n_labels, self.n_buckets, self.n_reps, self.seed = d, L, B, r1 - r0, int(seed)
        bucket_of, a, b = (v[r0:r1] for v in universal_hashes(L, B, R, seed))
        self.register_buffer("bucket_of", torch.from_numpy(np.ascontiguousarray(bucket_of)))   # (R, L) int64
        self.register_buffer("hash_a", torch.from_numpy(np.ascontiguousarray(a)))              # (R,)
        self.register_buffer("hash_b", torch.from_numpy(np.ascontiguousarray(b)))              # (R,)
        linear_init(d, R * B, (0, 0), bias)        # draws what nn.Linear(d, R·B) draws from the global
        gen = torch.Generator().manual_seed(int(seed))    # generator (and keeps none of it), as ever
        bound = d ** -0.5                                                  # nn.Linear's init, seeded
        uniform = lambda t: t.uniform_(-bound, bound, generator=gen)
        self.linear = nn.Linear(d, (r1 - r0) * B, bias=bias, device="meta")
        self.linear.weight = nn.Parameter(drawn_rows(R * B, (d,), (r0 * B, r1 * B), uniform))
        if bias:
            self.linear.bias = nn.Parameter(drawn_rows(R * B, (), (r0 * B, r1 * B), uniform))

    @property
    def weight(self):                                                  # (R·B, d)
        return self.linear.weight

    @property
    def bias(self):                                                    # (R·B,) or None
        return self.linear.bias

    def forward(self, h):                                              # (N, E·d) -> (N, R, B)
        E, d, N = self.n_members, self.in_features, h.shape[0]
        if h.shape[-1] != E * d:
            raise ValueError(f"input has {h.shape[-1]} features, the head expects {E} × {d}")
        if E == 1:
            return self.linear(h).view(N, self.n_reps, self.n_buckets)
        V = self.linear.weight.view(E, -1, d)                           # member e: its R/E reps' buckets
        z = torch.einsum("ned,ejd->nej", h.view(N, E, d), V).reshape(N, -1)
        if self.bias is not None:
            z = z + self.bias
        return z.view(N, self.n_reps, self.n_buckets)

    def bucket_targets(self, Y, dtype=torch.float32):
        """(N, R, B) 0/1 targets: bucket j of rep r is positive iff a true label of the point
        hashes to it. Y: scipy sparse or dense (N, L), nonzero = true."""
        rows, labels = _label_pairs(Y, self.n_labels)
        N, R, B = Y.shape[0], self.n_reps, self.n_buckets
        dev = self.bucket_of.device
        rows, labels = rows.to(dev), labels.to(dev)
        T = torch.zeros(N, R * B, dtype=dtype, device=dev)
        flat = self.bucket_of[:, labels].T + torch.arange(R, device=dev) * B   # (nnz, R) in [0, R·B)
        T[rows[:, None].expand_as(flat), flat] = 1
        return T.view(N, R, B)

    def loss(self, logits, Y):
        """BCE with logits over all buckets and reps, summed, averaged over the batch."""
        T = self.bucket_targets(Y, logits.dtype)
        if T.shape != logits.shape:
            raise ValueError(f"logits have shape {tuple(logits.shape)}, targets {tuple(T.shape)}")
        return F.binary_cross_entropy_with_logits(logits, T, reduction="sum") / max(logits.shape[0], 1)

    @torch.no_grad()
    def init_bucket_prior(self, Y_train):
        """Start each bucket's bias at the log-odds of its frequency in Y_train (the bucket
        targets' mean, smoothed as (n + ½) / (N + 1)), as XMCModel.init_label_prior does for
        labels. Y_train: scipy sparse (N, L)."""
        if self.bias is None:
            return
        rows, labels = _label_pairs(Y_train, self.n_labels)
        N, R, B = Y_train.shape[0], self.n_reps, self.n_buckets
        flat = (self.bucket_of.cpu()[:, labels].T + torch.arange(R) * B).numpy()   # (nnz, R)
        key = np.unique(rows.numpy()[:, None] * (R * B) + flat)              # distinct (point, bucket)
        n = np.bincount(key % (R * B), minlength=R * B).astype(np.float64)
        p = (n + 0.5) / (N + 1)
        self.bias.copy_(torch.from_numpy(np.log(p / (1 - p))).to(self.bias.device))

    def scores(self, logits):
        """Decoded label scores (N, L): the mean over reps of the sigmoid of the label's bucket."""
        return decode(torch.sigmoid(logits), self.bucket_of, torch.arange(self.n_labels, device=logits.device))

    @torch.no_grad()
    def topk(self, h, k, chunk_elems=DECODE_CHUNK):
        """Ids (N, k) int64 of the k best labels by decoded score, best first (decoded_topk)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= self.n_labels:
            raise ConfigError(f"k={k!r}: expected an integer in [1, n_labels={self.n_labels}]")
        return decoded_topk(torch.sigmoid(self.forward(h)), self.bucket_of, int(k), chunk_elems)

    def extra_repr(self):
        return (f"in_features={self.in_features}, n_labels={self.n_labels}, "
                f"n_buckets={self.n_buckets}, n_reps={self.n_reps}, members={self.n_members}, seed={self.seed}, "
                f"bias={self.bias is not None}")


def decode(probs, bucket_of, labels):
    """Mean over reps of probs[:, r, h_r(l)] for the label ids `labels`: (N, len(labels)).
    probs (N, R, B) bucket probabilities, bucket_of (R, L). Holds two (N, len(labels)) buffers."""
    out = probs[:, 0, :][:, bucket_of[0, labels]]
    for r in range(1, bucket_of.shape[0]):
        out += probs[:, r, :][:, bucket_of[r, labels]]
    return out.div_(bucket_of.shape[0])


def decoded_topk(probs, bucket_of, k, chunk_elems=DECODE_CHUNK):
    """Ids (N, k) int64 of the k best labels by decoded score, best first; exact, computed in
    label chunks of about chunk_elems / N labels so that no (N, L) matrix is held: a chunk's k best
    are merged with the k best so far, (N, 2k). Prior validation is assumed (1 <= k <= L)."""
    N, L = probs.shape[0], bucket_of.shape[1]
    step = max(k, chunk_elems // max(N, 1))
    best_s = torch.full((N, 0), -1.0, dtype=probs.dtype, device=probs.device)
    best_i = torch.zeros((N, 0), dtype=torch.int64, device=probs.device)
    for l0 in range(0, L, step):
        labels = torch.arange(l0, min(L, l0 + step), device=probs.device)
        chunk_s, chunk_i = torch.topk(decode(probs, bucket_of, labels), min(k, len(labels)), dim=1)
        s, i = torch.cat([best_s, chunk_s], 1), torch.cat([best_i, chunk_i + l0], 1)   # (N, <= 2k)
        best_s, pos = torch.topk(s, min(k, s.shape[1]), dim=1)
        best_i = torch.gather(i, 1, pos)
    return best_i
