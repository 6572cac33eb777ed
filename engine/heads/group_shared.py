"""Group-shared fixed fan-in head: L labels in G groups of m; each group reads k of the d inputs.

Shapes: X (B, d) -> Z (B, L), L = n_labels <= G·m, G = ceil(L / m) (the last group is padded).
- idx: (G, k) int32, the k distinct inputs group g reads, each in [0, d)
- W:   (G, m, k), label l = g·m + j has its own k weights
- bias: (L,) optional

    Z[b, g·m+j] = Σ_t W[g,j,t] · X[b, idx[g,t]]                 (+ bias[l])
    dW[g,j,t]   = Σ_b dZ[b, g·m+j] · X[b, idx[g,t]]
    dX[b, i]    = Σ_{(g,t): idx[g,t]=i} Σ_j dZ[b, g·m+j] · W[g,j,t]

m = 1 is the plain fixed fan-in layer (every label its own k inputs): same code path.
Padded labels (l >= L) are never returned and get no gradient.

A head may be built as a block of a larger one (`block`: groups, or labels for DenseHead), for a
rank of a label-sharded run (engine.distributed): the block's numbers are those of the whole head,
drawn chunk by chunk (`drawn_rows`), so the whole head is never held.

Order in this file: backends, the autograd Function (forward and backward side by side), the
functional form (checks, then launch), the nn.Modules, initialisation.
"""

import importlib
import logging
import math

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable

from ..errors import ConfigError

# ---------------------------------------------------------------------------------------------
# backends: the one place where a name becomes a kernel module

# name -> module of the backend contract (engine/heads/__init__.py): the same six functions,
# arrays in, arrays out: numpy for CPU tensors, CuPy for CUDA tensors.
BACKENDS = {
    "reference": "engine.heads.reference",   # float64 numpy, obviously correct; for tests
    "cpu": "engine.heads.cpu",               # numba, parallel; the default
    "cuda": "engine.heads.cuda",             # CuPy RawKernels from engine/cuda/*.cu (pip install ".[gpu]")
}

log = logging.getLogger(__name__)
_auto_choice = None                          # what "auto" resolved to, and why (said once)


def resolve_backend(name):
    """The backend name `name` stands for: "auto" -> "cuda" when CuPy imports and sees a GPU,
    else "cpu" (the choice and its reason are logged once, and kept in `auto_backend()`)."""
    if name == "auto":
        return auto_backend()[0]
    if name not in BACKENDS:
        raise ConfigError(f"backend={name!r}: expected 'auto' or one of {sorted(BACKENDS)}")
    return name


def require_backend(name):
    """resolve_backend(name), refusing "cuda" on a machine where it cannot run (ConfigError saying why)."""
    chosen = resolve_backend(name)
    if chosen == "cuda":
        from . import cuda
        ok, why = cuda.available()
        if not ok:
            raise ConfigError(f"backend='cuda' cannot run on this machine ({why}); use backend 'auto' or 'cpu'")
    return chosen


def auto_backend():
    """(name, reason): the backend "auto" takes on this machine, decided on first use."""
    global _auto_choice
    if _auto_choice is None:
        from . import cuda
        ok, why = cuda.available()
        _auto_choice = ("cuda", f"CuPy sees a GPU: {why}") if ok else ("cpu", why)
        log.info("backend='auto' took %r (%s)", *_auto_choice)
    return _auto_choice


def get_backend(name):
    """The kernel module of backend `name` (imported on first use: numba loads only if needed)."""
    return importlib.import_module(BACKENDS[resolve_backend(name)])


def _to_backend(t):
    """numpy for a CPU tensor; a CuPy array sharing the memory (DLPack) for a CUDA tensor."""
    if t is None:
        return None
    if t.device.type == "cpu":
        return t.detach().numpy()
    if t.device.type == "cuda":
        from .cuda import _cupy
        return _cupy().from_dlpack(t.detach())
    raise ValueError(f"the backends take CPU or CUDA tensors, got one on {t.device}")


def _from_backend(a, dtype):
    if a is None:
        return None
    if isinstance(a, np.ndarray):
        return torch.from_numpy(a).to(dtype)
    return torch.from_dlpack(a).to(dtype)                              # CuPy: no copy


# ---------------------------------------------------------------------------------------------
# autograd

class GroupSharedFunction(torch.autograd.Function):
    """Z = group_shared(X, idx, W, bias); backward gives dX, dW, dbias (one pass over dZ).

    The cpu backend returns Z as a transposed view (F-ordered: Z.t() is contiguous), and reads
    dZ in place in that layout or in the C-ordered one."""

    @staticmethod
    def forward(ctx, X, idx, W, bias, n_labels, backend):
        be = get_backend(backend)
        Z = be.forward(_to_backend(X), _to_backend(idx), _to_backend(W), _to_backend(bias), n_labels)
        ctx.save_for_backward(X, idx, W)
        ctx.backend = backend
        return _from_backend(Z, X.dtype)                                # (B, L)

    @staticmethod
    @once_differentiable
    def backward(ctx, dZ):
        X, idx, W = ctx.saved_tensors
        need_x, _, need_w, need_b = ctx.needs_input_grad[:4]
        if not (need_x or need_w or need_b):
            return None, None, None, None, None, None
        be = get_backend(ctx.backend)
        dX, dW, db = be.backward(_to_backend(dZ), _to_backend(X), _to_backend(idx), _to_backend(W),
                                 need_x, need_w, need_b)
        return (_from_backend(dX, X.dtype), None, _from_backend(dW, W.dtype),
                _from_backend(db, W.dtype), None, None)


# ---------------------------------------------------------------------------------------------
# functional form

def group_shared_linear(X, idx, W, bias=None, backend="cpu", n_labels=None):
    """Z (B, n_labels) = Σ_t W[g,j,t] · X[b, idx[g,t]] (+ bias); n_labels defaults to G·m.

    X (B, d) float; idx (G, k) integer, distinct entries per row in [0, d); W (G, m, k) of X's
    dtype; bias (n_labels,) or None. Checks shapes, dtypes and index ranges on every call
    (O(G·k)); GroupSharedHead checks its index once, when it is set."""
    if X.dim() != 2 or W.dim() != 3 or idx.dim() != 2:
        raise ValueError(f"expected X (B, d), idx (G, k), W (G, m, k); got X {tuple(X.shape)}, "
                         f"idx {tuple(idx.shape)}, W {tuple(W.shape)}")
    G, m, k = W.shape
    if tuple(idx.shape) != (G, k):
        raise ValueError(f"idx has shape {tuple(idx.shape)}, W {tuple(W.shape)}: expected idx ({G}, {k})")
    if X.dtype != W.dtype or not W.dtype.is_floating_point:
        raise TypeError(f"X ({X.dtype}) and W ({W.dtype}) must share one floating dtype")
    L = G * m if n_labels is None else int(n_labels)
    if not (G - 1) * m < L <= G * m:
        raise ValueError(f"n_labels={L} does not fit G={G} groups of m={m}")
    if bias is not None and tuple(bias.shape) != (L,):
        raise ValueError(f"bias has shape {tuple(bias.shape)}, expected ({L},)")
    idx = check_index(idx, X.shape[1], G, k)
    return GroupSharedFunction.apply(X, torch.from_numpy(idx), W, bias, L, resolve_backend(backend))


def check_index(idx, d, G, k, what="idx"):
    """idx as an int32 (G, k) numpy array, checked: shape, integer, in [0, d), distinct per row.
    Raises ConfigError naming the first offence."""
    a = idx.detach().cpu().numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx)
    if a.shape != (G, k):
        raise ConfigError(f"{what} has shape {a.shape}, expected ({G}, {k}) (n_groups, fanin)")
    if a.size == 0:
        return np.ascontiguousarray(a, np.int32)
    if not np.issubdtype(a.dtype, np.integer):
        raise ConfigError(f"{what} has dtype {a.dtype}, expected an integer dtype")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi >= d:
        g, t = np.argwhere((a < 0) | (a >= d))[0]
        raise ConfigError(f"{what}[{g}, {t}] = {a[g, t]} is out of range [0, {d}) (in_features={d})")
    s = np.sort(a, axis=1)
    dup = s[:, 1:] == s[:, :-1]
    if dup.any():
        g, t = np.argwhere(dup)[0]
        raise ConfigError(f"{what} row {g} repeats input {s[g, t]}: a group's inputs must be distinct")
    return np.ascontiguousarray(a, np.int32)


# ---------------------------------------------------------------------------------------------
# modules

class GroupSharedHead(nn.Module):
    """Output head: n_labels labels in groups of `group_size`, each group reading `fanin` inputs.

    group_size=1 is the fixed fan-in head. `idx` (n_groups, fanin) int32 buffer, rows sorted
    at init; `weight` (n_groups, group_size, fanin); `bias` (n_labels,). `backend` holds the
    resolved backend name ("auto" -> "cpu"). With block=(g0, g1) the module holds groups g0..g1-1
    of the head the other arguments describe (`idx`, if given, is that whole head's), with the
    numbers the whole head has there; n_labels and n_groups are then the block's."""

    def __init__(self, in_features, n_labels, fanin, group_size=1, bias=True, idx=None, seed=0,
                 backend="auto", block=None):
        super().__init__()
        for name, v, lo in (("in_features", in_features, 1), ("n_labels", n_labels, 1),
                            ("fanin", fanin, 1), ("group_size", group_size, 1)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ConfigError(f"{name}={v!r}: expected an integer >= {lo}")
        if fanin > in_features:
            raise ConfigError(f"fanin={fanin} > in_features={in_features}: a group reads distinct inputs")
        self.backend = resolve_backend(backend)
        d, L, k, m = int(in_features), int(n_labels), int(fanin), int(group_size)
        G = -(-L // m)
        g0, g1 = check_block(block, G, "groups")
        l0, l1 = g0 * m, min(g1 * m, L)                                # the block's labels
        if idx is None:
            index = random_index(G, d, k, seed)[g0:g1]
        else:
            index = np.sort(check_index(idx, d, G, k)[g0:g1], axis=1)
        self.in_features, self.n_labels, self.fanin, self.group_size, self.n_groups = d, l1 - l0, k, m, g1 - g0
        self.register_buffer("idx", torch.from_numpy(np.ascontiguousarray(index)))   # (G, k) int32
        gen = torch.Generator().manual_seed(int(seed))
        bound = 1.0 / math.sqrt(k)                                     # nn.Linear's, with fan-in k
        uniform = lambda t: t.uniform_(-bound, bound, generator=gen)
        self.weight = nn.Parameter(drawn_rows(G, (m, k), (g0, g1), uniform))
        with torch.no_grad():
            self.weight.view(-1, k)[l1 - l0:] = 0                      # padded labels: never used
        if bias:
            self.bias = nn.Parameter(drawn_rows(L, (), (l0, l1), uniform))
        else:
            self.register_parameter("bias", None)

    def forward(self, h):                                              # (..., d) -> (..., L)
        if h.shape[-1] != self.in_features:
            raise ValueError(f"input has {h.shape[-1]} features, the head expects {self.in_features}")
        lead = h.shape[:-1]
        Z = GroupSharedFunction.apply(h.reshape(-1, self.in_features), self.idx, self.weight,
                                      self.bias, self.n_labels, self.backend)
        return Z if len(lead) == 1 else Z.reshape(*lead, self.n_labels)

    @torch.no_grad()
    def set_index(self, idx):
        """Replace the index sets by `idx` (n_groups, fanin), checked like at init.

        The order within a row is kept (not sorted) so weight[g, :, t] stays with idx[g, t]."""
        index = check_index(idx, self.in_features, self.n_groups, self.fanin)
        self.idx.copy_(torch.from_numpy(index))

    def extra_repr(self):
        return (f"in_features={self.in_features}, n_labels={self.n_labels}, fanin={self.fanin}, "
                f"group_size={self.group_size}, n_groups={self.n_groups}, "
                f"bias={self.bias is not None}, backend={self.backend!r}")


class DenseHead(nn.Module):
    """The dense baseline: nn.Linear(in_features, n_labels) with the heads' attributes (and its
    initialisation, from torch's global generator). With block=(l0, l1): labels l0..l1-1 of it.
    With dropout = p > 0, in training it reads dropout(h) (keeping 1 - p of the inputs, a mask per
    point drawn from torch's RNG; every block of a split head draws the same mask), Z = dropout(h) · Wᵀ + b."""

    def __init__(self, in_features, n_labels, bias=True, block=None, dropout=0.0):
        super().__init__()
        for name, v in (("in_features", in_features), ("n_labels", n_labels)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigError(f"{name}={v!r}: expected an integer >= 1")
        l0, l1 = check_block(block, int(n_labels), "labels")
        self.in_features, self.n_labels = int(in_features), l1 - l0
        self.linear = linear_block(self.in_features, int(n_labels), (l0, l1), bias)
        self.drop = nn.Dropout(dropout)

    @property
    def weight(self):                                                  # (L, d)
        return self.linear.weight

    @property
    def bias(self):                                                    # (L,) or None
        return self.linear.bias

    def forward(self, h):                                              # (B, d) -> (B, L)
        return self.linear(self.drop(h))

    def extra_repr(self):
        return f"in_features={self.in_features}, n_labels={self.n_labels}, dropout={self.drop.p}"


# ---------------------------------------------------------------------------------------------
# index initialisation

def check_block(block, n, what):
    """(lo, hi) of a block of n items; None is all of them."""
    if block is None:
        return 0, n
    lo, hi = (int(v) for v in block)
    if not 0 <= lo < hi <= n:
        raise ConfigError(f"block {block} of {what} is not within [0, {n}) and non-empty")
    return lo, hi


def drawn_rows(n_rows, row_shape, block, draw, chunk_elems=1 << 22):
    """Rows block = (lo, hi) of a tensor (n_rows, *row_shape) filled in place by `draw` (e.g.
    t.uniform_(-b, b, generator=g)), drawn a chunk of rows at a time: the numbers one whole draw
    gives (torch's CPU generators fill a tensor element by element, in order), the generator left
    where the whole draw leaves it, and never more than one chunk held besides the block."""
    lo, hi = block
    step = max(1, chunk_elems // max(1, math.prod(row_shape)))
    out = torch.empty(hi - lo, *row_shape)
    for r0 in range(0, n_rows, step):
        chunk = draw(torch.empty(min(step, n_rows - r0), *row_shape))
        a, b = max(r0, lo), min(r0 + chunk.shape[0], hi)
        if a < b:
            out[a - lo:b - lo] = chunk[a - r0:b - r0]
    return out


def linear_init(in_features, out_features, block, bias=True):
    """(weight, bias or None): output rows block = (lo, hi) of nn.Linear(in_features, out_features)
    as torch initialises it (kaiming-uniform weight, uniform bias), from the global generator."""
    weight = drawn_rows(out_features, (in_features,), block, lambda t: nn.init.kaiming_uniform_(t, a=math.sqrt(5)))
    if not bias:
        return weight, None
    bound = 1 / math.sqrt(in_features)
    return weight, drawn_rows(out_features, (), block, lambda t: t.uniform_(-bound, bound))


def linear_block(in_features, out_features, block, bias=True):
    """The nn.Linear of output rows block = (lo, hi) of nn.Linear(in_features, out_features)."""
    weight, b = linear_init(in_features, out_features, block, bias)
    linear = nn.Linear(in_features, weight.shape[0], bias=bias, device="meta")   # meta: draws nothing
    linear.weight = nn.Parameter(weight)
    if bias:
        linear.bias = nn.Parameter(b)
    return linear


def random_index(n_groups, in_features, fanin, seed=0, chunk_elems=1 << 24):
    """(n_groups, fanin) int32: per row `fanin` distinct inputs drawn uniformly from
    [0, in_features), sorted ascending; depends only on the arguments and the seed.

    Floyd's algorithm, vectorised over a chunk of rows: step i draws t in [0, d-k+i] and takes
    d-k+i instead when t is taken already; memory is a (rows, d) bitmap per chunk, never a
    (G, d) float matrix, so G = 670,091 with d = 512 takes well under a second."""
    G, d, k = int(n_groups), int(in_features), int(fanin)
    rng = np.random.default_rng(seed)
    out = np.empty((G, k), np.int32)
    rows = max(1, min(G, chunk_elems // max(d, 1)))
    for r0 in range(0, G, rows):
        n = min(rows, G - r0)
        u = rng.random((n, k))                                         # same stream for any chunking
        taken = np.zeros((n, d), bool)
        ar = np.arange(n)
        sel = out[r0:r0 + n]
        for i in range(k):
            j = d - k + i
            t = (u[:, i] * (j + 1)).astype(np.int64)                  # uniform in [0, j]
            t = np.where(taken[ar, t], j, t)
            taken[ar, t] = True
            sel[:, i] = t
    out.sort(axis=1)
    return out
