"""The output layer drawn small: dense, fixed fan-in and group-shared at one small shape, their
connections, and the bytes each reads in a forward pass over a batch.

    layer = small_layer("group_shared", d=12, L=16, k=3, m=4, seed=0)
    layer.idx          (G, k) int32: the inputs group g reads (None for dense: every label reads all d)
    layer.reads        forward_reads of the layer at batch_size rows
    forward_reads(model_config, batch_size)  -> {"weights", "index", "inputs", "total"} bytes

Label l = g·m + j (no grouping permutation at this size); fixed fan-in is m = 1, so every label is a
group of its own. The index sets are those GroupSharedHead draws for that shape and seed (random_index).

Reads of one forward pass Z = layer(X) over B rows, in 4-byte values (float32 weights and inputs,
int32 indices), as the kernels make them (engine/cuda/group_shared.cu: a group's gathered block
X[b, idx[g, :]] is staged once and reused by its m labels):

    dense          weights (d + 1)·L       index 0        inputs B·d     (X read once)
    fixed fan-in   weights (k + 1)·L       index L·k      inputs B·L·k   (each label gathers its k)
    group-shared   weights (k + 1)·G·m     index G·k      inputs B·G·k   (one block per group, m uses)

weights and index are the parameters and index sets the head holds (engine.memory's head shape);
a dense part or MACH's buckets read X whole (B·d), a sparse part gathers B·G·k.
"""

from dataclasses import dataclass

import numpy as np

from .config import TrainConfig
from .errors import ConfigError
from .heads.group_shared import random_index
from .memory import FLOAT, head_shape

LAYERS = ("dense", "fixed_fanin", "group_shared")


@dataclass(frozen=True)
class SmallLayer:
    """One layer at a small shape: d inputs, L labels, fan-in k, group size m (1 unless group-shared)."""
    head: str
    d: int
    L: int
    k: int
    m: int
    idx: np.ndarray | None        # (G, k) int32, None for dense
    reads: dict                   # forward_reads at `batch_size` rows

    @property
    def n_groups(self):
        return -(-self.L // self.m)


def forward_reads(model_config, batch_size):
    """Bytes one forward pass of the config's head reads over `batch_size` rows (module docstring):
    {"weights", "index", "inputs", "total"}."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r}: expected an integer >= 1")
    s = head_shape(model_config)
    B = int(batch_size)
    gathered = s.fused_groups * model_config.head.fanin if s.fused_groups else 0
    whole = s.in_features if s.unfused else 0                       # rows of X read whole
    out = {"weights": s.params * FLOAT, "index": s.index_bytes, "inputs": B * (whole + gathered) * FLOAT}
    out["total"] = sum(out.values())
    return out


def small_layer(head, d=12, L=16, k=3, m=4, seed=0, batch_size=1):
    """The layer `head` (one of LAYERS) with d inputs and L labels; k and m as its head uses them
    (dense: neither; fixed fan-in: m = 1). Raises ConfigError for a shape the head cannot have."""
    if head not in LAYERS:
        raise ConfigError(f"head={head!r}: the diagram draws one of {LAYERS}")
    config = TrainConfig.of(head=head, hidden=0, fanin=k, group_size=m, dense_share=0,    # the layer alone
                            seed=seed).model_config(d, L)                                 # validates
    k = config.head.fanin if config.sparse else d
    m = config.group_labels
    idx = random_index(-(-L // m), d, k, seed) if config.sparse else None
    return SmallLayer(head, d, L, k, m, idx, forward_reads(config, batch_size))
