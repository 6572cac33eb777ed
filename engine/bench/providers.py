"""The benchmark's providers: one output layer four ways, at the same shape and seed.

    nn.Linear        dense (L, d) weight (DenseHead): the baseline every ratio is taken against
    torch.sparse     a CSR weight with the same L·k nonzeros as the fixed fan-in head,
                     torch.sparse.addmm forward, gradient for the nonzero values
    fixed fan-in     GroupSharedHead(group_size=1), cpu backend (or `backend`)
    group-shared     GroupSharedHead(group_size=m), cpu backend (or `backend`)
    nn.Linear(k, L)  FLOP_MATCHED, not in PROVIDERS: a dense (L, k) weight on the first k inputs,
                     the sparse heads' B·L·k multiply-adds as one dense GEMM (the GPU check's bar)

The sparse heads (FUSED) train with the fused loss; the dense ones and torch.sparse with the
unfused one against dense (B, L) targets. Also here: the fixed random label batch of a step, and
each provider's shape in the memory model (engine.memory).
"""

import warnings

import numpy as np
import torch
from torch import nn

from ..config import ModelConfig
from ..heads import DenseHead, GroupSharedHead
from ..memory import HeadShape, head_shape

PROVIDERS = ("nn.Linear", "torch.sparse", "fixed fan-in", "group-shared")
FUSED = ("fixed fan-in", "group-shared")
MODEL_HEADS = {"nn.Linear": "dense", "fixed fan-in": "fixed_fanin", "group-shared": "group_shared"}
FLOP_MATCHED = "nn.Linear(k, L)"
DENSE = ("nn.Linear", FLOP_MATCHED)              # no sparse structure to validate against a dense emulation


class TorchSparseHead(nn.Module):
    """The fixed fan-in layer as a torch CSR matrix (L, d): values are the parameters."""

    def __init__(self, idx, weight, bias, n_labels, in_features):
        super().__init__()
        L, k = n_labels, idx.shape[1]
        self.n_labels, self.in_features = L, in_features
        self.register_buffer("crow", torch.arange(0, L * k + 1, k, dtype=torch.int64))
        self.register_buffer("col", idx[:L].reshape(-1).to(torch.int64))
        self.values = nn.Parameter(weight.detach().reshape(-1, k)[:L].reshape(-1).clone())
        self.bias = nn.Parameter(bias.detach()[:L].clone())

    def forward(self, h):                                              # (B, d) -> (B, L)
        with warnings.catch_warnings():                                # "CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            W = torch.sparse_csr_tensor(self.crow, self.col, self.values,
                                        (self.n_labels, self.in_features), check_invariants=False)
        B = h.shape[0]
        return torch.sparse.addmm(self.bias.unsqueeze(1).expand(self.n_labels, B), W, h.t()).t()


class FlopMatchedHead(nn.Module):
    """nn.Linear(k, L) on the first k of the d inputs: as many multiply-adds as a fan-in-k head."""

    def __init__(self, in_features, n_labels, fanin):
        super().__init__()
        self.in_features, self.n_labels, self.fanin = in_features, n_labels, fanin
        self.linear = nn.Linear(fanin, n_labels)

    def forward(self, h):                                              # (B, d) -> (B, L)
        return self.linear(h[:, :self.fanin])


def make_provider(name, in_features, n_labels, fanin, group_size, seed=0, backend="cpu"):
    """The head of provider `name` (one of PROVIDERS, or FLOP_MATCHED) at this shape, on the CPU;
    the sparse heads run on `backend`. The same seed gives the same head in every process (the
    memory probes rebuild it)."""
    d, L, k, m = in_features, n_labels, fanin, group_size
    torch.manual_seed(seed)
    if name == "nn.Linear":
        return DenseHead(d, L)
    if name == FLOP_MATCHED:
        return FlopMatchedHead(d, L, k)
    if name == "torch.sparse":
        ffi = GroupSharedHead(d, L, k, group_size=1, seed=seed, backend="cpu")
        return TorchSparseHead(ffi.idx, ffi.weight, ffi.bias, L, d)
    if name == "fixed fan-in":
        return GroupSharedHead(d, L, k, group_size=1, seed=seed, backend=backend)
    if name == "group-shared":
        return GroupSharedHead(d, L, k, group_size=m, seed=seed + 1, backend=backend)
    raise ValueError(f"unknown provider {name!r}; choose from {PROVIDERS + (FLOP_MATCHED,)}")


def provider_shape(name, in_features, n_labels, fanin, group_size):
    """The provider's HeadShape in the memory model: a model head's, or for torch.sparse the fixed
    fan-in layer's L·k values and L biases with int64 column indices and row offsets, unfused."""
    d, L, k = in_features, n_labels, fanin
    if name == "torch.sparse":
        return HeadShape(d, L * k + L, 8 * L * k + 8 * (L + 1), L)
    return head_shape(ModelConfig.of(head=MODEL_HEADS[name], hidden=d, fanin=k, group_size=group_size,
                                     dense_share=0, n_features=d, n_labels=L))     # the layer alone


def label_name(name, k, m):
    return {"fixed fan-in": f"fixed fan-in (k={k})", "group-shared": f"group-shared (k={k}, m={m})"}.get(name, name)


def is_fused(head):
    """The sparse heads train with the fused loss; nn.Linear and torch.sparse with the unfused."""
    return isinstance(head, GroupSharedHead)


def prefix(head, n):
    """The same layer restricted to its first n labels (n < L; for GroupSharedHead, whole groups)."""
    if isinstance(head, TorchSparseHead):
        k = head.col.numel() // head.n_labels
        return TorchSparseHead(head.col.reshape(-1, k)[:n].to(torch.int32), head.values.detach().reshape(-1, k)[:n],
                               head.bias.detach()[:n], n, head.in_features)
    if isinstance(head, GroupSharedHead):
        m = head.group_size
        G = -(-n // m)
        sub = GroupSharedHead(head.in_features, G * m, head.fanin, group_size=m, idx=head.idx[:G], backend=head.backend)
        with torch.no_grad():
            sub.idx.copy_(head.idx[:G])                                # keep the order (init sorts)
            sub.weight.copy_(head.weight[:G])
            sub.bias.copy_(head.bias[:G * m])
        return sub
    sub = DenseHead(head.in_features, n)
    with torch.no_grad():
        sub.weight.copy_(head.weight[:n])
        sub.bias.copy_(head.bias[:n])
    return sub


def nonzeros(head):
    """(rows (nnz,), cols (nnz,), weight values (nnz,) getter, its grad getter) of a sparse head."""
    if isinstance(head, TorchSparseHead):
        rows = torch.repeat_interleave(torch.arange(head.n_labels, device=head.crow.device), head.crow.diff())
        return rows, head.col, lambda: head.values, lambda: head.values.grad
    G, m, k = head.weight.shape
    L = head.n_labels
    rows = torch.arange(L).repeat_interleave(k)
    cols = head.idx.to(torch.int64).repeat_interleave(m, 0)[:L].reshape(-1)
    return (rows, cols, lambda: head.weight.reshape(G * m, k)[:L].reshape(-1),
            lambda: head.weight.grad.reshape(G * m, k)[:L].reshape(-1))


def random_labels(batch, n_labels, per_row=5, seed=0):
    """A fixed random sparse label batch: (indptr (B+1,), labels (nnz,)) int64, ~per_row sorted
    distinct labels per row (Poisson, at least one), uniform over [0, n_labels)."""
    rng = np.random.default_rng(seed)
    counts = np.clip(rng.poisson(per_row, batch), 1, n_labels)
    rows = [np.sort(rng.choice(n_labels, size=c, replace=False)) for c in counts]
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), np.concatenate(rows).astype(np.int64)


def dense_labels(indptr, labels, n_labels, device=None):
    """(B, L) float32 0/1 targets from the CSR batch (what the unfused loss needs every step), on
    `device` (default the CPU)."""
    B = len(indptr) - 1
    y = torch.zeros(B, n_labels, device=device)
    rows = torch.from_numpy(np.repeat(np.arange(B), np.diff(indptr))).to(y.device)
    y[rows, torch.from_numpy(labels).to(y.device)] = 1.0
    return y
