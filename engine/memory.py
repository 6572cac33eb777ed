"""Analytic memory of an output head, in bytes, for float32 training with Adam.

    params     dense: (d + 1)·L     sparse: G·m·(k + 1) (+ G·k int32 indices)     mach: (d + 1)·R·B
    grads      = params (one gradient per weight)
    optimizer  = 2 · params (Adam's two moments)
    logits     B·L for every head but MACH, B·R·B for MACH (and the same again for their gradient)

Here d is the head's input width, L the labels, k the fan-in, m the group size,
G = ⌈L/m⌉ the groups, R·B MACH's repetitions × buckets, B (batch) the points per step.
"""

from .config import ModelConfig

FLOAT, INDEX = 4, 4


def head_shape(c: ModelConfig):
    """(weights, index entries, logits per point) of the config's head."""
    d, L = c.head_in, c.n_labels
    if c.head == "dense":
        return (d + 1) * L, 0, L
    if c.head == "mach":
        return (d + 1) * c.mach_reps * c.mach_buckets, 0, c.mach_reps * c.mach_buckets
    n_dense = c.head_size if c.head == "dense_sparse" else 0
    m = c.group_labels
    G = -(-(L - n_dense) // m)
    return (d + 1) * n_dense + G * m * (c.fanin + 1), G * c.fanin, L


def head_memory(c: ModelConfig, batch_size=256):
    """Bytes of the head's parameters, indices, gradients, Adam state and logits (+ their gradient)."""
    weights, index, logits = head_shape(c)
    out = {"params": weights * FLOAT, "index": index * INDEX, "grads": weights * FLOAT,
           "optimizer": 2 * weights * FLOAT, "logits": 2 * batch_size * logits * FLOAT}
    out["total"] = sum(out.values())
    return out
