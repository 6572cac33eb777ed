"""Memory guard: estimate what a training configuration needs and refuse one over the budget,
before anything is allocated.

    estimate_bytes(config, (n_features, n_labels))  -> {"encoder", "head", "activations", "eval", "total"}
    check_memory(config, n_features, n_labels)       # MemoryBudgetError when total > budget
    check_memory(config, D, L, shards=8, ranks_here=4)   # one rank of 8 label shards, 4 ranks per machine

The estimate is analytic (float32 training with Adam):
    encoder      (D·hidden + hidden [+ hidden·intermediate + intermediate]) × 4 copies
                 (weights, gradients, Adam's two moments), plus the auxiliary classifier if any
    head         engine.memory.head_memory: weights, indices, gradients, Adam, logits + their gradient
    activations  a batch's hidden layers (and their gradients, ReLU/dropout masks): 4·B·(hidden + intermediate);
                 with no encoder (hidden = 0) the densified input batch takes hidden's place: 4·B·D
    eval         the logits of one prediction batch (1024 rows × the head's logits per point), and its
                 densified input rows (1024 × D) when there is no encoder
A rank of a label-sharded run (engine.distributed) holds 1/shards of the head and of the eval
logits, and a replica of the rest; the ranks on one machine share its budget.
The budget is $XMC_MEMORY_BUDGET_MB if set, else the machine's available memory (MemAvailable in
/proc/meminfo); where neither is known the check is skipped.
"""

import os

from .errors import XMCError
from .memory import FLOAT, head_memory, head_shape

ENV = "XMC_MEMORY_BUDGET_MB"
EVAL_BATCH = 1024
MB = 2 ** 20


class MemoryBudgetError(XMCError):
    """A configuration needs more memory than the budget allows."""


def estimate_bytes(config, dataset_shape, shards=1):
    """Analytic bytes a TrainConfig needs to train on data of shape (n_features, n_labels); with
    shards > 1, what one rank of a label-sharded run needs.

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
    head = head_memory(mc, B)
    _, _, logits_per_point = head_shape(mc)
    dense_x = 0 if mc.hidden else mc.n_features                     # no encoder: X densified per batch
    out = {
        "encoder": 4 * enc * FLOAT,
        "head": -(-head["total"] // shards),
        "activations": 4 * B * (mc.encoder_width + dense_x + mc.intermediate + 2 * mc.aux_clusters) * FLOAT,
        "eval": EVAL_BATCH * (-(-logits_per_point // shards) + dense_x) * FLOAT,
    }
    out["total"] = sum(out.values())
    return out


def available_bytes():
    """MemAvailable from /proc/meminfo, in bytes, or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_budget():
    """(bytes, where it came from): $XMC_MEMORY_BUDGET_MB, else MemAvailable; (None, ...) if unknown."""
    env = os.environ.get(ENV)
    if env not in (None, ""):
        try:
            mb = float(env)
        except ValueError:
            raise MemoryBudgetError(f"{ENV} must be a number of megabytes, got {env!r}") from None
        if not mb > 0:
            raise MemoryBudgetError(f"{ENV} must be > 0, got {env!r}")
        return int(mb * MB), f"${ENV}"
    return available_bytes(), "available memory (MemAvailable)"


def check_memory(config, n_features, n_labels, budget=None, shards=1, ranks_here=1):
    """Raise MemoryBudgetError if the estimate exceeds `budget` bytes (default: memory_budget()):
    for one rank of `shards` label shards, times the `ranks_here` ranks sharing this machine.

    Returns the estimate (a dict, as estimate_bytes: one rank's)."""
    est = estimate_bytes(config, (n_features, n_labels), shards)
    source = "the given budget"
    if budget is None:
        budget, source = memory_budget()
    if budget is not None and est["total"] * ranks_here > budget:
        parts = ", ".join(f"{k} {v / MB:,.0f} MB" for k, v in est.items() if k != "total")
        where = "" if shards == 1 else f" per process (1 of {shards} label shards; {ranks_here} on this machine)"
        raise MemoryBudgetError(
            f"head {config.head!r} with {n_labels:,} labels and {n_features:,} features needs an estimated "
            f"{est['total'] / MB:,.0f} MB{where} ({parts}), over the budget of {budget / MB:,.0f} MB ({source}); "
            f"choose a sparse head, a smaller batch or hidden size, {'more machines, ' if shards > 1 else ''}"
            f"or set {ENV}")
    return est
