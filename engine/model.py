"""The XMC network: sparse features -> dense encoder -> [intermediate layer] -> output head.

    h = dropout(relu(X · E + e))          X: (B, D) sparse,  E: (D, hidden)
    h = dropout(relu(h · U + u))          optional intermediate layer, U: (hidden, intermediate)
    Z = head(h)                           Z: (B, L) logits

The head is one of `DenseHead` (h · Wᵀ, O(d·L) memory) or `GroupSharedHead` with fan-in k and
group size m (O(k·L) memory; m = 1 is the plain fixed fan-in layer).
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .errors import ConfigError
from .heads import DenseHead, GroupSharedHead

HEADS = ("dense", "fixed_fanin", "group_shared")


@dataclass
class ModelConfig:
    n_features: int
    n_labels: int
    hidden: int = 512          # width of the encoder's hidden layer
    intermediate: int = 0      # width of the penultimate layer before the head; 0 = none
    head: str = "dense"        # one of HEADS
    fanin: int = 64            # k: inputs per label (sparse heads)
    group_size: int = 32       # m: labels sharing one input set ("group_shared" only)
    dropout: float = 0.3
    backend: str = "auto"      # kernel backend of the sparse heads
    seed: int = 0              # seeds the random index sets of the sparse heads

    def __post_init__(self):
        if self.head not in HEADS:
            raise ConfigError(f"head must be one of {HEADS}, got {self.head!r}")
        for name in ("n_features", "n_labels", "hidden"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.intermediate < 0:
            raise ConfigError(f"intermediate must be >= 0 (0 = none), got {self.intermediate}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.head != "dense" and not 1 <= self.fanin <= self.head_in:
            raise ConfigError(f"fanin must be in [1, {self.head_in}] (the head's input width), got {self.fanin}")
        if self.head == "group_shared" and self.group_size < 1:
            raise ConfigError(f"group_size must be >= 1, got {self.group_size}")

    @property
    def head_in(self):
        """Width of the layer the head reads."""
        return self.intermediate or self.hidden


class SparseInput:
    """A batch of CSR rows in the (indices, offsets, weights) form nn.EmbeddingBag takes."""

    def __init__(self, X):
        self.n_rows = X.shape[0]
        self.indices = torch.from_numpy(X.indices.astype(np.int64))
        self.offsets = torch.from_numpy(X.indptr[:-1].astype(np.int64))
        self.weights = torch.from_numpy(X.data.astype(np.float32))


class XMCModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = c = config
        self.embed = nn.EmbeddingBag(c.n_features, c.hidden, mode="sum")   # E: (D, hidden)
        self.embed_bias = nn.Parameter(torch.empty(c.hidden))
        bound = c.n_features ** -0.5                                        # as nn.Linear(D, hidden)
        nn.init.uniform_(self.embed.weight, -bound, bound)
        nn.init.uniform_(self.embed_bias, -bound, bound)
        self.intermediate = nn.Linear(c.hidden, c.intermediate) if c.intermediate else None
        self.drop = nn.Dropout(c.dropout)
        if c.head == "dense":
            self.head = DenseHead(c.head_in, c.n_labels)
        else:
            m = c.group_size if c.head == "group_shared" else 1
            self.head = GroupSharedHead(c.head_in, c.n_labels, c.fanin, group_size=m,
                                        seed=c.seed, backend=c.backend)

    def encode(self, x: SparseInput):
        """Hidden representation h: (B, head_in) fed to the head."""
        h = self.embed(x.indices, x.offsets, per_sample_weights=x.weights) + self.embed_bias
        h = self.drop(torch.relu(h))                                          # (B, hidden)
        if self.intermediate is not None:
            h = self.drop(torch.relu(self.intermediate(h)))                   # (B, intermediate)
        return h

    def forward(self, x: SparseInput):
        return self.head(self.encode(x))                                      # (B, L)

    @torch.no_grad()
    def init_label_prior(self, label_counts, n_points):
        """Start each label's bias at the log-odds of its training frequency,
        b_l = log(p_l / (1 - p_l)) with p_l = (N_l + ½) / (N + 1), so that the first steps learn
        features, not the ~-log L offset every rare label needs."""
        p = (torch.as_tensor(label_counts, dtype=torch.float64) + 0.5) / (n_points + 1)
        self.head.bias.copy_(torch.log(p / (1 - p)))

    def head_params(self):
        return self.head.n_params()
