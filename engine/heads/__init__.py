"""Output heads and their kernels (one autograd Function per op, a backend per device).

    DenseHead            nn.Linear(in_features, n_labels)
    GroupSharedHead      labels in groups of m sharing k inputs; m = 1: fixed fan-in
    MachHead             R hashed classifiers of B buckets, decoded by averaging
    group_shared_linear  the functional form, backend = "auto" | "cpu" | "cuda" | "reference"
    fused_bce_loss       forward + BCE against sparse labels + backward, without the (B, L) logits
    fused_topk           the best k labels per row, without the (B, L) logits
"""

from .fused import fused_bce_loss, fused_topk, slot_labels
from .group_shared import DenseHead, GroupSharedHead, group_shared_linear
from .mach import MachHead

__all__ = ["DenseHead", "GroupSharedHead", "MachHead", "fused_bce_loss", "fused_topk",
           "group_shared_linear", "slot_labels"]
