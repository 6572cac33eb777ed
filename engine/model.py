"""The XMC network: sparse features -> dense encoder -> [intermediate layer] -> output head.

    h = dropout(relu(X · E + e))          X: (B, D) sparse,  E: (D, hidden)
    h = dropout(relu(h · U + u))          optional intermediate layer, U: (hidden, intermediate)
    Z = head(h)                           Z: (B, L) logits

A dense output layer (the dense head, a dense part) reads dropout(h) with a further `dense_dropout`:
it scores the frequent labels, which over-fit first, while the sparse part's labels read h.

With hidden = 0 there is no encoder: h = dropout(X), densified per batch, and the head reads the
D input features themselves (a linear model). There a group's index set is a set of features,
so which labels share it decides which features each label can see at all.

Heads (`ModelConfig.head`, a HeadSettings of engine.config):
    dense          DenseHead: h · Wᵀ, O(d·L) memory
    fixed_fanin    GroupSharedHead with m = 1: every label reads its own k inputs, O(k·L)
    group_shared   a DenseHead for the `dense_share` most frequent labels (a share of L; 0 = none) + a
                   GroupSharedHead with m labels per group sharing one set of k inputs for the others
    dense_sparse   the same with the dense part's size given in labels, `head_size`
    mach           MachHead: R hashed classifiers of B buckets each, O(d·R·B); with mach_members = E > 1
                   the R repetitions form E independent models, each with its own encoder (E blocks
                   of `hidden` units side by side), as in the MACH paper

Sparse heads work in *slot* space: label l's logit sits in slot `slot_of_label[l]` of the head's
output (the dense part first, then group g's m slots g·m .. g·m+m-1). Label groups decide the
slots; slots no label holds (padding) are masked out of the loss and of the top-k.

Optional auxiliary objective: a dense classifier over label clusters (a point is positive for a
cluster when one of its labels is in it) on the head's input, so that gradients reach the
encoder through a dense path while the sparse head is still poor:
    loss = BCE(Z, Y) + w_aux(t) · BCE(h · Aᵀ + a, Y_meta)
"""

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .errors import ConfigError
from .heads import DenseHead, GroupSharedHead, fused_bce_loss, fused_topk, slot_labels


class SparseInput:
    """A batch of CSR rows in the (indices, offsets, weights) form nn.EmbeddingBag takes."""

    def __init__(self, X):
        self.n_rows = X.shape[0]
        self.csr = X
        self.indices = torch.from_numpy(X.indices.astype(np.int64))
        self.offsets = torch.from_numpy(X.indptr[:-1].astype(np.int64))
        self.weights = torch.from_numpy(X.data.astype(np.float32))

    def to(self, device):
        """This batch with its tensors on `device` (in place; returns self)."""
        self.indices, self.offsets, self.weights = (t.to(device) for t in (self.indices, self.offsets, self.weights))
        return self

    def dense(self):
        """(B, D) float32 rows, on the batch's device."""
        return torch.from_numpy(self.csr.toarray().astype(np.float32, copy=False)).to(self.weights.device)


def dense_targets(Y, columns, n_columns):
    """(B, n_columns) float32 0/1 targets from a CSR label batch Y; label l -> column columns[l]
    (columns: an int64 tensor, whose device the targets take)."""
    dev = columns.device
    y = torch.zeros(Y.shape[0], n_columns, device=dev)
    rows = np.repeat(np.arange(Y.shape[0]), np.diff(Y.indptr))
    y[torch.from_numpy(rows).to(dev), columns[torch.from_numpy(Y.indices.astype(np.int64)).to(dev)]] = 1.0
    return y


def bounds(n, rank, world):
    """The block [lo, hi) of n items that rank `rank` of `world` owns."""
    return n * rank // world, n * (rank + 1) // world


def _block_of(n, block, what):
    """rank's block of n parts, for block = (rank, world); world processes need n >= world."""
    rank, world = block
    if n < world:
        raise ConfigError(f"{world} processes need at least {world} {what} to share, the model has {n}")
    return bounds(n, rank, world)


class XMCModel(nn.Module):
    """Encoder and head. `slot_of_label` (L,) places each label in the head's output (sparse
    heads; identity otherwise); `index` (G, k) optionally gives the sparse part's input sets;
    `cluster_of_label` (L,) gives the auxiliary classifier's meta-labels (with aux_clusters).
    With block=(rank, world) the model holds rank's block of each head part (contiguous whole
    groups, dense labels, MACH repetitions; engine.distributed), with the numbers the whole model
    has there, and never builds the whole head."""

    def __init__(self, config: ModelConfig, slot_of_label=None, index=None, cluster_of_label=None, block=None):
        super().__init__()
        self.config = c = config
        L = c.n_labels
        self.embed = self.embed_bias = None                                 # hidden = 0: no encoder
        if c.hidden:
            self.embed = nn.EmbeddingBag(c.n_features, c.encoder_width, mode="sum")   # E: (D, members·hidden)
            self.embed_bias = nn.Parameter(torch.empty(c.encoder_width))
            bound = c.n_features ** -0.5                                    # as nn.Linear(D, hidden)
            nn.init.uniform_(self.embed.weight, -bound, bound)
            nn.init.uniform_(self.embed_bias, -bound, bound)
        self.intermediate = nn.Linear(c.hidden, c.intermediate) if c.intermediate else None
        self.drop = nn.Dropout(c.dropout)

        slot_of_label = np.arange(L) if slot_of_label is None else np.array(slot_of_label, dtype=np.int64)
        n_dense = c.n_dense
        n_slots = int(slot_of_label.max()) + 1 if c.sparse else L
        m = c.group_labels
        n_slots = n_dense + -(-(n_slots - n_dense) // m) * m                 # whole groups
        sizes = {"dense part": n_dense, "groups": (n_slots - n_dense) // m if c.sparse else 0,
                 "MACH repetitions": c.head.reps if c.head.name == "mach" else 0}
        if block is not None and c.members > 1 and c.members % block[1]:
            raise ConfigError(f"mach_members={c.members} independent models do not split evenly over {block[1]} "
                              f"processes: use a multiple of {block[1]}")
        part = {name: (0, n) if block is None else _block_of(n, block, name) for name, n in sizes.items() if n}
        self.dense = (DenseHead(c.head_in, n_dense, block=part["dense part"], dropout=c.dense_dropout)
                      if n_dense else None)
        self.sparse = (GroupSharedHead(c.head_in, n_slots - n_dense, c.head.fanin, group_size=m, idx=index, seed=c.seed,
                                       backend=c.backend, block=part["groups"]) if c.sparse else None)
        self.mach = None
        if c.head.name == "mach":
            from .heads.mach import MachHead
            self.mach = MachHead(c.head_in, L, c.head.buckets, c.head.reps, seed=c.seed, members=c.members,
                                 block=part["MACH repetitions"])
        self.n_slots = n_slots
        # the global slots of this model's first dense and first sparse slot: 0 and n_dense for the
        # whole model, the first of its blocks for a rank of a distributed run
        self.dense_first = part["dense part"][0] if n_dense else 0
        self.sparse_first = n_dense + part["groups"][0] * m if self.sparse is not None else n_dense
        self.encoder_columns = None    # a rank's block of independent MACH members: (first unit, all units)
        self.register_buffer("slot_of_label", torch.from_numpy(slot_of_label))  # saved with checkpoints

        # the auxiliary classifier's meta-label of each label: moves with the model, not saved (the
        # grouping recomputes it)
        self.register_buffer("cluster_of_label", None if cluster_of_label is None else
                             torch.as_tensor(cluster_of_label, dtype=torch.int64), persistent=False)
        self.aux = nn.Linear(c.head_in, c.aux_clusters) if c.aux_clusters else None
        self.capture_sparse_grad = False     # set by dynamic sparse training before a gradient regrowth
        self.last_h = self.last_dZ = None

    @property
    def label_of_slot(self):
        """(n_slots,) the label in each slot, -1 for padding."""
        dev = self.slot_of_label.device
        out = torch.full((self.n_slots,), -1, dtype=torch.int64, device=dev)
        out[self.slot_of_label] = torch.arange(len(self.slot_of_label), device=dev)
        return out

    @property
    def device(self):
        """The torch.device the model's buffers (and parameters) are on."""
        return self.slot_of_label.device

    @property
    def head(self):
        """The main head: the sparse part when there is one, else the dense or MACH head."""
        return self.sparse or self.dense or self.mach

    def encode(self, x: SparseInput):
        """Hidden representation h: (B, head_in) fed to the head."""
        if self.embed is None:
            return self.drop(x.dense())                                       # (B, D)
        h = self.embed(x.indices, x.offsets, per_sample_weights=x.weights) + self.embed_bias
        h = self.dropout(torch.relu(h))                                       # (B, members·hidden)
        if self.intermediate is not None:
            h = self.drop(torch.relu(self.intermediate(h)))                   # (B, intermediate)
        return h

    def dropout(self, h):
        """nn.Dropout. A rank holding a block of independent MACH members draws the whole encoder's
        mask (nn.Dropout's draw for the same RNG state) and keeps its columns, as one process would."""
        p = self.drop.p
        if self.encoder_columns is None or not self.training or p == 0:
            return self.drop(h)
        first, width = self.encoder_columns
        keep = torch.empty(h.shape[0], width, dtype=h.dtype, device=h.device).bernoulli_(1 - p)[:, first:first + h.shape[1]]
        return h * keep.div_(1 - p)

    def slot_logits(self, h):
        """Logits in slot order (B, n_slots): the dense part, then the sparse groups."""
        parts = []
        if self.dense is not None:
            parts.append(self.dense(h))
        if self.sparse is not None:
            z = self.sparse(h)
            if self.capture_sparse_grad and z.requires_grad:
                self.last_h = h.detach()
                z.register_hook(lambda g: setattr(self, "last_dZ", g))
            parts.append(z)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def loss(self, x: SparseInput, Y, aux_weight=0.0):
        """Training loss of a batch: BCE summed over labels, mean over points (+ auxiliary term).
        Y: (B, L) scipy CSR labels. Returns (loss, parts) with parts a dict of floats."""
        return self.loss_of(self.encode(x), Y, aux_weight)

    def loss_of(self, h, Y, aux_weight=0.0):
        """loss() from the hidden batch h (B, head_in)."""
        head_loss = self.head_loss(h, Y)
        parts = {"head_loss": head_loss.item()}
        loss = head_loss
        if self.aux is not None and aux_weight > 0:
            y_meta = dense_targets(Y, self.cluster_of_label, self.aux.out_features)
            aux_loss = F.binary_cross_entropy_with_logits(self.aux(h), y_meta, reduction="sum") / h.shape[0]
            parts["aux_loss"] = aux_loss.item()
            loss = loss + aux_weight * aux_loss
        return loss, parts

    def head_loss(self, h, Y):
        """BCE of the head's slots against Y (B, L), summed over slots, mean over the batch. Sparse
        parts by the fused kernel, which never holds the (B, n_slots) logits, except while dynamic
        sparse training captures dZ for a gradient regrowth."""
        B = h.shape[0]
        if self.mach is not None:
            return self.mach.loss(self.mach(h), Y)
        if self.capture_sparse_grad:
            z = self.slot_logits(h)                                           # (B, n_slots)
            y = dense_targets(Y, self.slot_of_label, z.shape[1])
            mask = (self.label_of_slot >= 0).to(z.dtype)                      # padding
            return F.binary_cross_entropy_with_logits(z, y, weight=mask, reduction="sum") / B
        loss = 0.0
        if self.dense is not None:
            nd = self.dense.n_labels
            indptr, slots = slot_labels(Y, self.slot_of_label, self.dense_first, nd)
            y = torch.zeros(B, nd, device=h.device)
            y[torch.from_numpy(np.repeat(np.arange(B), np.diff(indptr))).to(h.device),
              torch.from_numpy(slots).to(h.device)] = 1.0
            loss = F.binary_cross_entropy_with_logits(self.dense(h), y, reduction="sum") / B
        if self.sparse is not None:
            indptr, slots = slot_labels(Y, self.slot_of_label, self.sparse_first, self.sparse.n_labels)
            loss = loss + fused_bce_loss(h, self.sparse, indptr, slots, self.sparse_mask)
        return loss

    @property
    def sparse_mask(self):
        """(sparse.n_labels,) bool: the sparse part's slots that hold a label (False: padding)."""
        return (self.label_of_slot >= 0)[self.sparse_first:self.sparse_first + self.sparse.n_labels]

    @property
    def n_dense(self):
        return 0 if self.dense is None else self.dense.n_labels

    @torch.no_grad()
    def topk(self, x: SparseInput, k):
        """The k best label ids per point (B, k), best first; sparse heads by the fused top-k."""
        h = self.encode(x)
        if self.mach is not None:
            return self.mach.topk(h, k)
        return self.scored_topk(h, k)[1]

    @torch.no_grad()
    def scored_topk(self, h, k):
        """(scores, labels) (B, k') of the k' = min(k, slots held) best slots of the dense and sparse
        parts, best first; label -1 where a row has fewer real slots. Not for MACH."""
        parts = []
        if self.dense is not None:
            scores, slots = torch.topk(self.dense(h), min(k, self.dense.n_labels))
            parts.append((scores, slots + self.dense_first))
        if self.sparse is not None:
            scores, slots = fused_topk(h, self.sparse, k, self.sparse_mask)
            parts.append((scores, torch.where(slots >= 0, slots + self.sparse_first, slots)))
        scores, slots = (torch.cat(p, 1) for p in zip(*parts))
        if len(parts) > 1:
            scores, order = torch.topk(scores, min(k, scores.shape[1]))
            slots = slots.gather(1, order)
        return scores, torch.where(slots >= 0, self.label_of_slot[slots.clamp(min=0)], -1)

    @torch.no_grad()
    def init_label_prior(self, label_counts, n_points):
        """Start each label's bias at the log-odds of its training frequency,
        b_l = log(p_l / (1 - p_l)) with p_l = (N_l + ½) / (N + 1), so that the first steps learn
        features, not the ~-log L offset every rare label needs. (MACH's buckets hold many labels
        each: MachHead.init_bucket_prior does the same per bucket.)"""
        if self.mach is not None:
            return
        p = (torch.as_tensor(label_counts, dtype=torch.float64) + 0.5) / (n_points + 1)
        prior = torch.zeros(len(self.label_of_slot), dtype=torch.float64)
        prior[self.slot_of_label] = torch.log(p / (1 - p))
        if self.dense is not None:
            self.dense.bias.copy_(prior[self.dense_first:self.dense_first + self.dense.n_labels])
        if self.sparse is not None:
            self.sparse.bias.copy_(prior[self.sparse_first:self.sparse_first + self.sparse.n_labels])

    def head_params(self):
        """Parameters of the output layer (all parts; not the auxiliary classifier)."""
        return sum(p.numel() for part in self.head_parts() for p in part.parameters())

    # -- introspection: what the app, the LSS index and the grouping read off a model -------------

    def head_parts(self):
        """The modules of the output layer it has, in slot order: the dense part, the sparse part,
        or the MACH head."""
        return [p for p in (self.dense, self.sparse, self.mach) if p is not None]

    @torch.no_grad()
    def encode_all(self, X, batch_size=4096):
        """(N, head_in) float32 ndarray: the hidden representation h the head reads, for every row
        of X (N, D) scipy CSR, `batch_size` rows at a time, with dropout off (eval mode; the mode
        is restored). With no encoder (hidden = 0): the densified features."""
        if X.shape[1] != self.config.n_features:
            raise ConfigError(f"X has {X.shape[1]} features, the model reads {self.config.n_features}")
        training = self.training
        self.eval()
        try:
            H = [self.encode(SparseInput(X[s:s + batch_size]).to(self.device)) for s in range(0, X.shape[0], batch_size)]
        finally:
            self.train(training)
        return torch.cat(H).cpu().numpy()

    def label_vectors(self, sparse=False):
        """(W (L, head_in), b (L,)) float32: each label's weights over the head's inputs and its
        bias, in label order, so that the model's logits are

            z_l = h · W[l] + b[l] = slot_logits(h)[:, slot_of_label[l]]

        The parts' slots stacked (the dense part first, then the sparse groups), rows picked by
        slot_of_label; W as a csr matrix with sparse=True. MACH has no vector per label (a label
        scores by the buckets it hashes to): ConfigError."""
        if self.mach is not None:
            raise ConfigError("a MACH head has no weight vector per label (a label's score sums the buckets it "
                              "hashes to), so there is nothing to index: choose a run with a dense or sparse head")
        blocks = [] if self.dense is None else [sp.csr_matrix(self.dense.weight.detach().cpu().numpy())]
        if self.sparse is not None:
            blocks.append(self._group_weights())
        W = sp.vstack(blocks, format="csr")                                      # (n_slots, d)
        b = torch.cat([p.bias.detach() for p in self.head_parts()]).cpu().numpy()   # (n_slots,)
        slots = self.slot_of_label.cpu().numpy()
        W = W[slots].astype(np.float32)
        return (W if sparse else W.toarray()), np.ascontiguousarray(b[slots], np.float32)

    def _group_weights(self):
        """(n_slots of the sparse part, d) csr: slot g·m+j holds W[g, j, t] at column idx[g, t]."""
        W = self.sparse.weight.detach().cpu().numpy()                            # (G, m, k)
        G, m, k = W.shape
        cols = np.repeat(self.sparse.idx.cpu().numpy().astype(np.int64)[:, None, :], m, axis=1)   # (G, m, k)
        rows = np.repeat(np.arange(G * m), k)
        return sp.csr_matrix((W.ravel(), (rows, cols.ravel())), shape=(G * m, self.sparse.in_features))

    def label_groups(self):
        """(L,) int64 group of each label in the sparse part, -1 for a label of the dense part; None
        without a sparse part (dense, MACH). Group g holds the slots n_dense + g·m ... + m-1; with
        fixed fan-in (m = 1) every label is its own group."""
        if self.sparse is None:
            return None
        s = self.slot_of_label.cpu().numpy() - self.n_dense
        return np.where(s >= 0, s // self.sparse.group_size, -1)

    def group_slots(self, g):
        """(m,) int64: the label in each of group g's m slots (row j of sparse.weight[g]), -1 where
        the slot is padding."""
        if self.sparse is None or not 0 <= g < self.sparse.n_groups:
            raise ConfigError(f"group {g!r}: the model has {0 if self.sparse is None else self.sparse.n_groups} "
                              "groups")
        m = self.sparse.group_size
        first = self.sparse_first + int(g) * m
        return self.label_of_slot[first:first + m].cpu().numpy()
