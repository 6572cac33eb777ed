"""Label-sharded training on torch.distributed: each process (rank) owns a block of the output layer.

    torchrun --nproc_per_node=2 -m engine train --data ../shared/datasets/delicious \\
        --head group_shared --distributed

Rank r of N owns, as contiguous blocks (bounds n·r//N .. n·(r+1)//N):
    sparse part   whole groups of the group-shared / fixed fan-in head: weights, biases, index sets
    dense part    labels of the dense head (dense, and the dense part of dense_sparse)
    MACH          repetitions: their hashes, bucket weights and biases
and a replica of the encoder (and, on rank 0, of the auxiliary classifier). A step on a batch of
B points:

    h_r    = encode(x[rows B·r//N .. B·(r+1)//N])   dropout masks: those rows of the whole batch's
    h      = all_gather(h_r)                         (B, d) everywhere; backward sums dh over ranks
    loss_r = BCE of rank r's slots on h              (+ w_aux · the auxiliary loss, on rank 0)
    loss_r.backward(); all_reduce(Σ) of the encoder's gradients; Adam on every rank

Σ_r loss_r is the one-process loss and the gradients are the one-process gradients, so a run on N
processes gives the loss curve and P@k of one process (to float rounding). MACH's repetitions need
no communication of their own: each rank hashes, targets and scores its repetitions locally; the
shared encoder's gradient all-reduce is the only exchange, as for the other heads.
Evaluation: each rank scores the test batch on its slots and the top-k lists are merged with one
all_gather (MACH: the bucket probabilities are gathered, then decoded exactly). Checkpoints gather
the shards into one ordinary model.safetensors (weights only), which `eval` and the app read.

The process group comes from torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, ...): gloo,
since the trainer keeps its tensors on the CPU.
"""

import os
import resource

import numpy as np
import torch
import torch.distributed as dist

from .errors import ConfigError, XMCError
from .heads import DenseHead, GroupSharedHead, MachHead
from .heads.mach import decoded_topk, universal_hashes
from .model import SparseInput
from .train import Trainer

SHARDED = ("dense", "sparse", "mach")      # the model's parts that are split over the ranks


class DistributedError(XMCError):
    """A distributed run cannot start (no torchrun environment, a setting it cannot shard)."""


def init_process_group():
    """Join the process group torchrun describes (gloo); returns (rank, world size)."""
    missing = [v for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise DistributedError(f"--distributed runs under torchrun ({', '.join(missing)} not set): "
                               f"torchrun --nproc_per_node=2 -m engine train ... --distributed")
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    threads = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(threads)
    import numba
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    return dist.get_rank(), dist.get_world_size()


def bounds(n, rank, world):
    """The block [lo, hi) of n items that rank `rank` of `world` owns."""
    return n * rank // world, n * (rank + 1) // world


# ---------------------------------------------------------------------------------------------
# shards: a rank's block of each head, sliced from the whole (identically initialised) head

@torch.no_grad()
def shard_group_shared(head, g0, g1):
    """Groups g0 .. g1-1 of a GroupSharedHead, as a GroupSharedHead of (g1-g0)·m slots."""
    part = GroupSharedHead(head.in_features, (g1 - g0) * head.group_size, head.fanin, head.group_size,
                           bias=head.bias is not None, idx=head.idx[g0:g1].numpy(), backend=head.backend)
    part.idx.copy_(head.idx[g0:g1])                       # unsorted rows stay with their weights
    part.weight.copy_(head.weight[g0:g1])
    if head.bias is not None:
        part.bias.copy_(head.bias[g0 * head.group_size:g1 * head.group_size])
    return part


@torch.no_grad()
def shard_dense(head, l0, l1):
    """Labels l0 .. l1-1 of a DenseHead."""
    part = DenseHead(head.in_features, l1 - l0, bias=head.bias is not None)
    part.weight.copy_(head.weight[l0:l1])
    if head.bias is not None:
        part.bias.copy_(head.bias[l0:l1])
    return part


@torch.no_grad()
def shard_mach(head, r0, r1):
    """Repetitions r0 .. r1-1 of a MachHead (their hashes, bucket weights and biases)."""
    part = MachHead(head.in_features, head.n_labels, head.n_buckets, r1 - r0, seed=head.seed,
                    bias=head.bias is not None)
    B = head.n_buckets
    for name in ("bucket_of", "hash_a", "hash_b"):
        getattr(part, name).copy_(getattr(head, name)[r0:r1])
    part.weight.copy_(head.weight[r0 * B:r1 * B])
    if head.bias is not None:
        part.bias.copy_(head.bias[r0 * B:r1 * B])
    return part


def shard_model(model, rank, world):
    """Replace each head part of an XMCModel by rank's block of it, in place; returns the model."""
    what = {"dense part": model.n_dense, "groups": model.sparse and model.sparse.n_groups,
            "MACH repetitions": model.mach and model.mach.n_reps}
    for name, n in what.items():
        if n and n < world:
            raise ConfigError(f"{world} processes need at least {world} {name} to share, the model has {n}")
    if model.dense is not None:
        l0, l1 = bounds(model.dense.n_labels, rank, world)
        model.dense_first += l0
        model.dense = shard_dense(model.dense, l0, l1)
    if model.sparse is not None:
        g0, g1 = bounds(model.sparse.n_groups, rank, world)
        model.sparse_first += g0 * model.sparse.group_size
        model.sparse = shard_group_shared(model.sparse, g0, g1)
    if model.mach is not None:
        model.mach = shard_mach(model.mach, *bounds(model.mach.n_reps, rank, world))
    return model


# ---------------------------------------------------------------------------------------------
# collectives

def gather_rows(t):
    """Concatenate along dim 0 the tensors of every rank (their row counts may differ)."""
    counts = torch.tensor([t.shape[0]])
    all_counts = [torch.zeros_like(counts) for _ in range(dist.get_world_size())]
    dist.all_gather(all_counts, counts)
    n = [int(c) for c in all_counts]
    padded = torch.zeros((max(n),) + t.shape[1:], dtype=t.dtype)
    padded[:t.shape[0]] = t
    out = [torch.empty_like(padded) for _ in n]
    dist.all_gather(out, padded.contiguous())
    return torch.cat([o[:c] for o, c in zip(out, n)])


class GatherRows(torch.autograd.Function):
    """h = all ranks' row blocks, in rank order; the gradient of a rank's block is the sum over the
    ranks of dL_r/dh at its rows (every rank's loss reads every row)."""

    @staticmethod
    def forward(ctx, h_local, start):
        ctx.rows = (start, start + h_local.shape[0])
        return gather_rows(h_local)

    @staticmethod
    def backward(ctx, dh):
        dh = dh.contiguous()
        dist.all_reduce(dh)
        return dh[ctx.rows[0]:ctx.rows[1]], None


# ---------------------------------------------------------------------------------------------
# the trainer

class DistributedTrainer(Trainer):
    """Trainer on one rank of a label-sharded run; every rank runs the same config and data.

    Records (loss, P@k) are the whole run's on every rank; rank 0 writes the run store."""

    def __init__(self, config, dataset=None):
        if config.dst != "none":
            raise ConfigError("dst (dynamic sparse training) is not available with --distributed yet: "
                              "its regrowth would draw per rank; use --dst none")
        if not dist.is_initialized():
            raise DistributedError("DistributedTrainer needs a process group: call init_process_group() first")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        super().__init__(config, dataset)
        self.mach_buckets = None
        if self.model.mach is not None:                    # every repetition's hashes, for decoding
            c = self.model.mach
            self.mach_buckets = torch.from_numpy(
                universal_hashes(c.n_labels, c.n_buckets, self.model.config.mach_reps, c.seed)[0])

    @property
    def encoder_params(self):
        """The replicated parameters every rank's loss reaches (not the heads, not the auxiliary)."""
        m = self.model
        return [p for name, p in m.named_parameters() if name.split(".")[0] not in SHARDED + ("aux",)]

    def place_model(self, model):
        return shard_model(model, self.rank, self.world)

    def batch_loss(self, rows):
        B = len(rows)
        lo, hi = bounds(B, self.rank, self.world)
        h_local = self.model.encode(SparseInput(self.X_train[rows[lo:hi]]), rows=(lo, B))
        h = GatherRows.apply(h_local, lo)                                    # (B, d)
        aux_weight = self.aux_weight() if self.rank == 0 else 0.0
        loss, parts = self.model.loss_of(h, self.dataset.Y_train[rows], aux_weight)
        keys = ["head_loss"] + (["aux_loss"] if self.model.aux is not None and self.aux_weight() > 0 else [])
        totals = torch.tensor([parts.get(k, 0.0) for k in keys], dtype=torch.float64)
        dist.all_reduce(totals)
        parts = dict(zip(keys, totals.tolist()))
        value = parts["head_loss"] + self.aux_weight() * parts.get("aux_loss", 0.0)
        return loss, {"loss": value, **parts}

    def reduce_gradients(self):
        params = [p for p in self.encoder_params if p.grad is not None]
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat)
        for p, g in zip(params, flat.split([p.numel() for p in params])):
            p.grad.copy_(g.view_as(p.grad))

    @torch.no_grad()
    def predict(self, X, k, batch_size=1024):
        """Top-k label ids (N, k) of the whole model: every rank's candidates, merged."""
        self.model.eval()
        k = min(k, self.dataset.n_labels)
        out = [self.merged_topk(self.model.encode(SparseInput(X[s:s + batch_size])), k).numpy()
               for s in range(0, X.shape[0], batch_size)]
        return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)

    def merged_topk(self, h, k):
        """(B, k) label ids: MACH decodes the gathered bucket probabilities; the other heads merge
        the ranks' own top-k lists (scores, labels), padded to k with (-inf, -1)."""
        if self.model.mach is not None:
            probs = torch.sigmoid(self.model.mach(h))                             # (B, R_r, buckets)
            probs = gather_rows(probs.transpose(0, 1).contiguous()).transpose(0, 1)   # (B, R, buckets)
            return decoded_topk(probs.contiguous(), self.mach_buckets, k)
        scores, labels = self.model.scored_topk(h, k)
        pad = k - scores.shape[1]
        scores = torch.nn.functional.pad(scores, (0, pad), value=-float("inf"))
        labels = torch.nn.functional.pad(labels, (0, pad), value=-1)
        scores = gather_rows(scores.T.contiguous()).T                              # (B, N·k)
        labels = gather_rows(labels.T.contiguous()).T
        best = torch.topk(scores, k, dim=1).indices
        return labels.gather(1, best)

    def full_state(self):
        """The whole model's state dict (every rank's shards concatenated, in rank order), as one
        process would save it; a collective: every rank calls it, all get the result."""
        out = {}
        for name, t in self.model.state_dict().items():
            out[name] = gather_rows(t.detach()) if name.split(".")[0] in SHARDED else t.detach()
        return out

    def save_checkpoint(self, run):
        """The gathered weights, written by rank 0 (weights only: a distributed run does not resume)."""
        state = self.full_state()
        if self.rank == 0:
            run.save_state(state)

    def rank_report(self):
        """Per rank: slots or MACH repetitions held, head parameters, peak resident memory (MB); a
        collective."""
        m = self.model
        slots = sum(p.n_labels for p in (m.dense, m.sparse) if p is not None)
        reps = m.mach.n_reps if m.mach is not None else 0
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024            # Linux: KiB
        mine = torch.tensor([[self.rank, slots, reps, m.head_params(), rss_mb]], dtype=torch.float64)
        return [{"rank": int(r), "slots": int(s), "mach_reps": int(n), "head_params": int(p),
                 "peak_rss_mb": round(mb, 1)} for r, s, n, p, mb in gather_rows(mine).tolist()]
