"""Output heads: dense baseline and the group-shared fixed fan-in layer (kernels per backend).

    DenseHead            nn.Linear(in_features, n_labels)
    GroupSharedHead      labels in groups of m sharing k inputs; m = 1: fixed fan-in
    group_shared_linear  the functional form, backend = "auto" | "cpu" | "reference"
"""

from .group_shared import DenseHead, GroupSharedHead, group_shared_linear
from .mach import MachHead

__all__ = ["DenseHead", "GroupSharedHead", "MachHead", "group_shared_linear"]
