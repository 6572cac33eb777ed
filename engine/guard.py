"""Memory guard: estimate what a training configuration needs and refuse one over the budget,
before anything is allocated.

    check_memory(config, n_features, n_labels)       # MemoryBudgetError when total > budget
    check_memory(config, D, L, shards=8, ranks_here=4)   # one rank of 8 label shards, 4 ranks per machine
    check_bytes(lss_bytes(...), "the hash-index comparison")   # an analysis of a trained model

The estimate is engine.memory.estimate_bytes (encoder, head, activations, eval, grouping); one rank
of a label-sharded run holds 1/shards of the head, and the ranks on one machine share its budget.
The budget is $XMC_MEMORY_BUDGET_MB if set, else the machine's available memory (MemAvailable in
/proc/meminfo); where neither is known the check is skipped.
"""

import os

from .errors import XMCError
from .memory import estimate_bytes

ENV = "XMC_MEMORY_BUDGET_MB"
MB = 2 ** 20


class MemoryBudgetError(XMCError):
    """A configuration needs more memory than the budget allows."""


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


def check_bytes(n_bytes, what, budget=None, advice="use a smaller dataset or set " + ENV):
    """Raise MemoryBudgetError if `what` (an analysis: the app's label map, the hash-index
    comparison, ...) needs more than `budget` bytes (default: memory_budget()); returns n_bytes."""
    source = "the given budget"
    if budget is None:
        budget, source = memory_budget()
    if budget is not None and n_bytes > budget:
        raise MemoryBudgetError(f"{what} needs an estimated {n_bytes / MB:,.0f} MB, over the budget of "
                                f"{budget / MB:,.0f} MB ({source}); {advice}")
    return n_bytes


def check_memory(config, n_features, n_labels, budget=None, shards=1, ranks_here=1, pifa_nnz=None):
    """Raise MemoryBudgetError if the estimate exceeds `budget` bytes (default: memory_budget()):
    for one rank of `shards` label shards, times the `ranks_here` ranks sharing this machine;
    pifa_nnz: the data's bound on PIFA entries for the label grouping (memory.pifa_entries).

    Returns the estimate (a dict, as estimate_bytes: one rank's)."""
    est = estimate_bytes(config, (n_features, n_labels), shards, pifa_nnz)
    source = "the given budget"
    if budget is None:
        budget, source = memory_budget()
    if budget is not None and est["total"] * ranks_here > budget:
        parts = ", ".join(f"{k} {v / MB:,.0f} MB" for k, v in est.items() if k != "total")
        where = "" if shards == 1 else f" per process (1 of {shards} label shards; {ranks_here} on this machine)"
        raise MemoryBudgetError(
            f"head {config.model.head.name!r} with {n_labels:,} labels and {n_features:,} features needs an estimated "
            f"{est['total'] / MB:,.0f} MB{where} ({parts}), over the budget of {budget / MB:,.0f} MB ({source}); "
            f"choose a sparse head, a smaller batch or hidden size, {'more machines, ' if shards > 1 else ''}"
            f"or set {ENV}")
    return est
