"""The memory model: analytic bytes of training a model in float32 with Adam, by part.

    head_memory(model_config, batch_size)           -> {"params", "index", "grads", "optimizer",
                                                        "logits", "loss", "total"}
    estimate_bytes(train_config, (n_features, n_labels), shards=1)
                                                    -> {"encoder", "head", "activations", "eval",
                                                        "grouping", "total"}
    lss_bytes(L, d, n_train, n_test, n_tables), label_map_bytes(X, Y, n_drawn), pifa_bytes(X, Y)
                                                    -> bytes of an analysis of a model (the guard
                                                       checks them before it runs: engine.guard.check_bytes)

One model for the memory guard (engine.guard), the benchmark (engine.bench) and the app. Sizes:
d the head's input width (ModelConfig.head_in), L labels, n_dense labels of a dense part, k the
fan-in, m the group size, G = ⌈(L - n_dense)/m⌉ groups, R·N MACH's repetitions × buckets, B the
batch, T the kernels' threads (per-thread buffers: min(T, G)), D the input features.

Head (head_memory):
    params     dense part (d + 1)·n_dense + sparse part G·m·(k + 1), or MACH (d + 1)·R·N (float32)
    index      the sparse part's sets G·k int32
    grads      = params;   optimizer = 2 · params (Adam's two moments)
    logits     the unfused loss (dense part, MACH): logits, the dense targets, the loss's elementwise
               terms, the logits' gradient and autograd's copy of it: 5·B·(n_dense | R·N) at the
               step's peak (measured: tests/test_guard_peak.py). The sparse part trains with the
               fused loss: no (B, L) logits
    loss       the fused loss's own: the gradients it computes in forward and holds until backward,
               while autograd copies them into .grad (one more of the sparse part's params), and its
               (B, d) buffers: h transposed, T partial dh, dh, the dh handed down: (T + 3)·B·d; per
               slot a mask byte and two int64 offsets (the batch's labels by slot): 17·G·m bytes

Whole run (estimate_bytes):
    encoder      (D·hidden + hidden [+ hidden·intermediate + intermediate] [+ (d + 1)·aux clusters])
                 × 4 copies (weights, gradients, Adam's two moments)
    head         head_memory
    activations  a batch's hidden layers and their gradients, ReLU and dropout masks:
                 4·B·(hidden + intermediate + 2·aux clusters [+ d, a dense layer's dropped-out
                 input]); with no encoder (hidden = 0) the densified input batch takes hidden's
                 place: 4·B·D
    eval         one prediction batch of 1024 rows: the unfused logits (1024 × n_dense | R·N; MACH
                 twice, logits and probabilities, and its decoded top-k's chunks: 6 buffers of
                 min(1024·L, DECODE_CHUNK) scores), the fused top-k's transposed input (1024 × d),
                 the densified rows (1024 × D, no encoder)
    grouping     before training, for clustered groups or the auxiliary clusters: PIFA label
                 embeddings kept sparse, e entries (e ≤ min(L·D, Σ_i |y_i|·|x_i|): pifa_entries;
                 L·D when the data is not given), the larger of two steps. Building them:
                 PIFA_BUILD bytes per entry (the float64 copies of X and Y, the float64 sums, their
                 squares, the float32 CSR). Clustering them (engine.grouping.balanced_groups): the
                 CSR (8·e + 8·L) and 3 copies in the format the clustering reads (the clustered
                 rows, their normalised and shuffled copies: the CSR, or dense 4·L·D when at least
                 a quarter filled, then at most twice the CSR), LABEL_BYTES per label of the
                 split's order and score arrays, and the split's dense centroid blocks: c0, c1,
                 their sums and differences, 3 × min(G·D, CHUNK) floats (G groups, CHUNK elements
                 a block), and for CSR the threads' partial sums of the top levels' few nodes,
                 min(T × min(8T, G) × D, CHUNK) floats. No L·D term for sparse embeddings.
                 Centroid input sets of a head on a hidden layer (grouping.centroid_index):
                 the hidden rows of at most CENTROID_POINTS training points, float32 and a float64
                 copy, 12·n·d, the G·k int32 sets it makes, and one block of r groups at a time
                 (r·m·d ≤ CHUNK/4, grouping.groups_per_block): its labels' PIFA rows in the
                 head's space (float64 sums, their scaled copy, the float32 rows: 20 bytes an
                 entry) and its (r, d) centroids with their top-k's temporaries (TOPK_BYTES an
                 entry); centroid_index_memory. No L·d term (with no encoder it is sparse: not
                 counted)
    total        the larger of the two phases: grouping, then training (the rest); it frees its
                 memory before the model trains
A rank of a label-sharded run (engine.distributed) holds 1/shards of the head and of the eval
logits and a replica of the rest. The counts are of live tensors: a process's resident memory
adds its interpreter and kernels, and what the allocator keeps of freed buffers.
"""

from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp

from .config import GROUPED_HEADS, ModelConfig
from .grouping import _CHUNK as CHUNK, CENTROID_POINTS, groups_per_block
from .heads.mach import DECODE_CHUNK

FLOAT, INDEX = 4, 4
EVAL_BATCH = 1024
UNFUSED_BUFFERS = 5                            # (B, n_dense | R·N) buffers at the unfused loss's peak
DECODE_BUFFERS = 6                             # chunks of MACH's decoded scores alive in its top-k
PIFA_BUILD = 40                                # bytes per PIFA entry while grouping.pifa builds it
LABEL_BYTES = 160                              # per label: the 2-means split's order and score arrays
CENTROID_BYTES = 8 + 8 + 4                     # per (label, input) of a block's PIFA rows in the head's space
TOPK_BYTES = 40                                # per (group, input) of a centroid block while its top-k is drawn


@dataclass(frozen=True)
class HeadShape:
    """What a head's training memory depends on: counts of parameters and slots, bytes of indices."""
    in_features: int          # d: the width of the layer the head reads
    params: int               # weights and biases, float32
    index_bytes: int          # index sets (the groups' int32 sets, torch.sparse's int64 CSR indices)
    unfused: int              # logits per point the unfused loss holds (dense part, MACH buckets)
    fused_slots: int = 0      # G·m slots of the part trained with the fused loss (0: none)
    fused_groups: int = 0     # its G groups
    fused_params: int = 0     # its weights and biases


def head_shape(c: ModelConfig) -> HeadShape:
    """The HeadShape of a model config's head."""
    d, L = c.head_in, c.n_labels
    if c.head.name == "mach":
        width = c.head.reps * c.head.buckets
        return HeadShape(d, (d + 1) * width, 0, width)
    n_dense = c.n_dense
    if not c.sparse:
        return HeadShape(d, (d + 1) * n_dense, 0, n_dense)
    m = c.group_labels
    G = -(-(L - n_dense) // m)
    sparse = G * m * (c.head.fanin + 1)
    return HeadShape(d, (d + 1) * n_dense + sparse, INDEX * G * c.head.fanin, n_dense, G * m, G, sparse)


def head_params(c: ModelConfig):
    """Parameters of the config's head (weights and biases of every part; not the auxiliary classifier)."""
    return head_shape(c).params


def step_memory(s: HeadShape, batch_size, threads=None):
    """Bytes a head of shape `s` holds at the peak of a training step (see the module docstring);
    threads: the kernels' threads (default numba's)."""
    B, P = batch_size, s.params
    out = {"params": P * FLOAT, "index": s.index_bytes, "grads": P * FLOAT, "optimizer": 2 * P * FLOAT,
           "logits": UNFUSED_BUFFERS * B * s.unfused * FLOAT, "loss": 0}
    if s.fused_slots:
        T = min(numba.get_num_threads() if threads is None else threads, s.fused_groups)
        out["loss"] = s.fused_params * FLOAT + (T + 3) * B * s.in_features * FLOAT + 17 * s.fused_slots
    out["total"] = sum(out.values())
    return out


def head_memory(c: ModelConfig, batch_size=256):
    """Bytes of the config's head in training: parameters, indices, gradients, Adam state, the
    unfused loss's logits and the fused loss's buffers (step_memory of head_shape)."""
    return step_memory(head_shape(c), batch_size)


def pifa_entries(X, Y):
    """A bound on the stored entries of sparse PIFA embeddings of (X (N, D), Y (N, L)):
    min(L·D, Σ_i |y_i|·|x_i|), label l's row being the sum of its points' feature rows."""
    bound = int((np.diff(sp.csr_matrix(Y).indptr) * np.diff(sp.csr_matrix(X).indptr)).sum())
    return min(Y.shape[1] * X.shape[1], bound)


def clustering_memory(n_labels, n_features, n_groups, entries, threads=None):
    """Bytes of building sparse PIFA embeddings (L, D) of `entries` entries and clustering them
    into `n_groups` groups (see the module docstring); threads: numba's by default."""
    L, D, G = n_labels, n_features, n_groups
    e = min(entries, L * D)
    T = numba.get_num_threads() if threads is None else threads
    csr = 8 * e + 8 * L
    dense = e >= L * D // 4                                          # as grouping._dense_enough
    blocks = 3 * min(G * D, CHUNK) + (0 if dense else min(T * min(8 * T, G) * D, CHUNK))
    clustering = csr + 3 * (L * D * FLOAT if dense else csr) + LABEL_BYTES * L + blocks * FLOAT
    return max(PIFA_BUILD * e, clustering)


def centroid_index_memory(n_labels, d, n_points, group_size, fanin):
    """Bytes of the centroid input sets of n_labels labels in groups of group_size on a hidden layer
    of width d, from n_points points' hidden rows (grouping.centroid_index; see the module docstring):
    12·n·d for the rows, the G·k int32 sets made, and one block of groups, at most CHUNK/4 entries
    of PIFA rows whatever the labels."""
    L, m = n_labels, group_size
    G = -(-L // m)
    r = min(G, groups_per_block(m, d, d))                            # groups a block (dense rows)
    return 12 * n_points * d + INDEX * G * fanin + CENTROID_BYTES * min(L, r * m) * d + TOPK_BYTES * r * d


def grouping_memory(mc: ModelConfig, pifa_nnz=None):
    """Bytes of the label grouping and the centroid input sets of a model config; pifa_nnz: a bound
    on the PIFA embeddings' entries (pifa_entries of the data), None for the dense L·D."""
    L, D = mc.n_labels, mc.n_features
    e = L * D if pifa_nnz is None else pifa_nnz
    clustered = mc.head.name in GROUPED_HEADS and mc.head.groups == "clustered"
    out = 0
    if clustered:
        out = clustering_memory(L, D, -(-(L - mc.n_dense) // mc.group_labels), e)
    if mc.aux_clusters:
        out = max(out, clustering_memory(L, D, mc.aux_clusters, e))
    if mc.sparse and mc.head.index_init == "centroid" and mc.hidden:
        out = max(out, centroid_index_memory(L - mc.n_dense, mc.head_in, CENTROID_POINTS, mc.group_labels,
                                                  mc.head.fanin))
    return out


def estimate_bytes(config, dataset_shape, shards=1, pifa_nnz=None):
    """Analytic bytes a TrainConfig needs to train on data of shape (n_features, n_labels); with
    shards > 1, what one rank of a label-sharded run needs (see the module docstring); pifa_nnz:
    a bound on the data's PIFA entries (pifa_entries), None for the dense bound.

    `dataset_shape` may also be (n_points, n_features, n_labels); the point count is not used
    (the data is loaded already when this is called). Raises ConfigError for a bad config."""
    n_features, n_labels = tuple(dataset_shape)[-2:]
    mc = config.model_config(int(n_features), int(n_labels))
    B = config.batch_size
    enc = mc.n_features * mc.encoder_width + mc.encoder_width
    if mc.intermediate:
        enc += mc.hidden * mc.intermediate + mc.intermediate
    if mc.aux_clusters:
        enc += (mc.head_in + 1) * mc.aux_clusters
    shape = head_shape(mc)
    dense_x = 0 if mc.hidden else mc.n_features                     # no encoder: X densified per batch
    fused_x = mc.head_in if shape.fused_slots else 0
    dense_drop = mc.head_in if mc.n_dense and mc.dense_dropout else 0    # the dense layer's dropped-out input
    unfused = -(-shape.unfused // shards)
    decode = 0
    if mc.head.name == "mach":                          # logits and probabilities, decoded chunks
        unfused, decode = 2 * unfused, DECODE_BUFFERS * min(EVAL_BATCH * mc.n_labels, DECODE_CHUNK)
    out = {
        "encoder": 4 * enc * FLOAT,
        "head": -(-step_memory(shape, B)["total"] // shards),
        "activations": 4 * B * (mc.encoder_width + dense_x + mc.intermediate + 2 * mc.aux_clusters + dense_drop) * FLOAT,
        "eval": (EVAL_BATCH * (unfused + fused_x + dense_x) + decode) * FLOAT,
        # early stopping keeps a copy of the best evaluation's weights (engine.validation)
        "best weights": (enc + -(-head_params(mc) // shards)) * FLOAT if config.val_fraction else 0,
    }
    out["grouping"] = grouping_memory(mc, pifa_nnz)
    out["total"] = max(out["grouping"], sum(v for k, v in out.items() if k != "grouping"))
    return out


# ------------------------------------------------------------------------ analyses of a model

def pifa_bytes(X, Y):
    """Bytes of sparse PIFA embeddings of (X, Y) (grouping.pifa(dense=False)): Yᵀ·X in float64
    CSR, its duplicates summed and its float32 copy, 3 copies of at most min(L·D, Σ_i |y_i|·|x_i|)
    entries of 12 bytes (value and column index)."""
    return 3 * 12 * pifa_entries(X, Y)


def label_map_bytes(X, Y, n_drawn):
    """Bytes of the app's label map: sparse PIFA of every label, the drawn labels' rows reduced to
    50 dimensions (the SVD's float64 workspace: 4 × 60 per row), their 15-nearest-neighbour graph
    and UMAP's (64 per row)."""
    return pifa_bytes(X, Y) + 8 * n_drawn * (4 * 60 + 64)


def lss_bytes(n_labels, d, n_train, n_test, n_tables, batch=512):
    """Bytes of lss.compare_hash_indexes on a model whose head reads d inputs: the label vectors
    (L, d + 2) twice (the model's and the index's), the hidden rows of the train and test points
    twice, the exact scoring's (batch, L) scores and their top-k, and the tables' codes and their
    sorted copies (4 int64 per label per table), float32."""
    rows = 2 * n_labels * (d + 2) + 2 * (n_train + n_test) * (d + 2) + 2 * batch * n_labels
    return rows * FLOAT + 32 * n_tables * n_labels
