"""The memory model: analytic bytes of training a model in float32 with Adam, by part.

    head_memory(model_config, batch_size)           -> {"params", "index", "grads", "optimizer",
                                                        "logits", "loss", "total"}
    estimate_bytes(train_config, (n_features, n_labels), shards=1)
                                                    -> {"encoder", "head", "activations", "eval",
                                                        "grouping", "total"}

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
                 4·B·(hidden + intermediate + 2·aux clusters); with no encoder (hidden = 0) the
                 densified input batch takes hidden's place: 4·B·D
    eval         one prediction batch of 1024 rows: the unfused logits (1024 × n_dense | R·N; MACH
                 twice, logits and probabilities, and its decoded top-k's chunks: 6 buffers of
                 min(1024·L, DECODE_CHUNK) scores), the fused top-k's transposed input (1024 × d),
                 the densified rows (1024 × D, no encoder)
    grouping     before training: PIFA label embeddings (L, D) float32 for clustered groups or the
                 auxiliary clusters, with the clustering's copies (4 with clustered groups: the
                 embeddings, the grouped labels' rows, their normalised and shuffled copies; 3 for
                 the auxiliary clusters alone); an upper bound, reached when the embeddings are
                 dense (sparse ones are clustered as CSR). Centroid input sets of a head on a hidden
                 layer: the (L, d) PIFA in the head's space, float64 sums, their scaled copy and the
                 float32 result, 20·L·d (with no encoder it is sparse: not counted)
    total        the larger of the two phases: grouping, then training (the rest); it frees its
                 memory before the model trains
A rank of a label-sharded run (engine.distributed) holds 1/shards of the head and of the eval
logits and a replica of the rest. The counts are of live tensors: a process's resident memory
adds its interpreter and kernels, and what the allocator keeps of freed buffers.
"""

from dataclasses import dataclass

import numba

from .config import GROUPED_HEADS, ModelConfig
from .heads.mach import DECODE_CHUNK

FLOAT, INDEX = 4, 4
EVAL_BATCH = 1024
UNFUSED_BUFFERS = 5                            # (B, n_dense | R·N) buffers at the unfused loss's peak
DECODE_BUFFERS = 6                             # chunks of MACH's decoded scores alive in its top-k
PIFA_COPIES = {"clustered": 4, "aux": 3}      # (L, D) float32 embeddings alive at the clustering's peak
CENTROID_BYTES = 8 + 8 + 4                     # per (label, input) of the PIFA in the head's space


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


def grouping_memory(mc: ModelConfig):
    """Bytes of the label grouping and the centroid input sets of a model config."""
    clustered = mc.head.name in GROUPED_HEADS and mc.head.groups == "clustered"
    copies = PIFA_COPIES["clustered"] if clustered else PIFA_COPIES["aux"] if mc.aux_clusters else 0
    out = copies * mc.n_labels * mc.n_features * FLOAT
    if mc.sparse and mc.head.index_init == "centroid" and mc.hidden:
        out = max(out, CENTROID_BYTES * mc.n_labels * mc.head_in)
    return out


def estimate_bytes(config, dataset_shape, shards=1):
    """Analytic bytes a TrainConfig needs to train on data of shape (n_features, n_labels); with
    shards > 1, what one rank of a label-sharded run needs (see the module docstring).

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
    unfused = -(-shape.unfused // shards)
    decode = 0
    if mc.head.name == "mach":                          # logits and probabilities, decoded chunks
        unfused, decode = 2 * unfused, DECODE_BUFFERS * min(EVAL_BATCH * mc.n_labels, DECODE_CHUNK)
    out = {
        "encoder": 4 * enc * FLOAT,
        "head": -(-step_memory(shape, B)["total"] // shards),
        "activations": 4 * B * (mc.encoder_width + dense_x + mc.intermediate + 2 * mc.aux_clusters) * FLOAT,
        "eval": (EVAL_BATCH * (unfused + fused_x + dense_x) + decode) * FLOAT,
    }
    out["grouping"] = grouping_memory(mc)
    out["total"] = max(out["grouping"], sum(v for k, v in out.items() if k != "grouping"))
    return out
