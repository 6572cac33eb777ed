"""Label-sharded training on torch.distributed: each process (rank) owns a block of the output layer.

    torchrun --nproc_per_node=2 -m engine train --data ../shared/datasets/delicious \\
        --head group_shared --distributed

Rank r of N owns, as contiguous blocks (bounds n·r//N .. n·(r+1)//N):
    sparse part   whole groups of the group-shared / fixed fan-in head: weights, biases, index sets
    dense part    labels of the dense head (dense, and the dense part of dense_sparse)
    MACH          repetitions: their hashes, bucket weights and biases
and a replica of the encoder (and, on rank 0, of the auxiliary classifier). A step on a batch of
B points, on every rank:

    h      = encode(x)                        the same on every rank (same weights, same dropout draw)
    h      = SumGradients(h)                  identity; backward: dh = all_reduce(Σ_r dL_r/dh)
    loss_r = BCE of rank r's slots on h       (+ w_aux · the auxiliary loss, on rank 0); a dense part's
                                              own dropout mask is the same draw on every rank too
    loss_r.backward(); Adam                   the encoder gets Σ_r dL_r/dh: the same gradient everywhere

With independent MACH members (mach_members = E, a multiple of N) rank r also owns its members'
encoders, so its part is a whole model of its own: a step exchanges nothing but the two floats of
the record's loss, as MACH allows (each member's dropout mask is its columns of the whole draw).

Σ_r loss_r is the one-process loss and the gradients are the one-process gradients, so a run on N
processes gives the loss curve and P@k of one process (to float rounding). What crosses the wire per
step is one (B, d) all-reduce of the hidden layer's gradient (and two floats of loss), not the
encoder's gradients: in XMC the encoder's input is the wide sparse feature space (D·hidden floats),
so its gradient is far larger than the hidden batch's. MACH's repetitions need no communication of
their own: each rank hashes, targets and scores its repetitions locally.
Evaluation: each rank scores the test batch on its slots and the top-k lists are merged with one
all_gather (MACH: the bucket probabilities are gathered, then decoded exactly). Checkpoints gather
the shards, and their Adam moments, into the model.safetensors one process would write: `eval` and
the app read it, and `--resume` continues it on any number of processes (each rank takes its block).

The process group comes from torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, ...): NCCL
when the run trains on GPUs (one per rank: rank r of a machine takes GPU LOCAL_RANK), gloo on CPUs.
The collectives below hand NCCL tensors on the rank's GPU (`wire`) and give results back on the
device of their input.
"""

import os

import torch
import torch.distributed as dist

from .device import resolve_device
from .errors import ConfigError, XMCError
from .heads.mach import decoded_topk
from .model import bounds
from .train import Trainer

SHARDED = ("dense", "sparse", "mach")      # the model's parts that are split over the ranks


class DistributedError(XMCError):
    """A distributed run cannot start (no torchrun environment, a setting it cannot shard)."""


def local_rank():
    """This process's index among the ranks of its machine (torchrun's LOCAL_RANK; 0 without)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_process_group(config):
    """Join the process group torchrun describes for a run of `config` (a TrainConfig): NCCL when
    its device resolves to a GPU (this rank's: LOCAL_RANK), else gloo; returns (rank, world size)."""
    missing = [v for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise DistributedError(f"--distributed runs under torchrun ({', '.join(missing)} not set): "
                               f"torchrun --nproc_per_node=2 -m engine train ... --distributed")
    device = resolve_device(config.device, config.model.backend, local_rank()).device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    threads = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(threads)
    import numba
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    return dist.get_rank(), dist.get_world_size()


def leave_process_group():
    """Wait for every rank, then tear the process group down: a rank that exits while gloo's
    threads still run aborts ("terminate called without an active exception")."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# a rank's part: its block of each head part (XMCModel(block=...)), and of independent encoders

@torch.no_grad()
def shard_members(model, rank, world):
    """Keep rank's block of independent MACH members' encoders (columns of the first layer), in
    place; the model's MACH head holds those members' repetitions already."""
    E, d = model.config.members, model.config.hidden
    c0, c1 = (d * e for e in bounds(E, rank, world))
    embed = torch.nn.EmbeddingBag(model.embed.num_embeddings, c1 - c0, mode="sum")
    embed.weight.copy_(model.embed.weight[:, c0:c1])
    model.embed = embed
    model.embed_bias = torch.nn.Parameter(model.embed_bias[c0:c1].clone())
    model.encoder_columns = (c0, E * d)


def independent(model):
    """True when each rank's part of the model is self-contained (a block of independent MACH
    members): its steps exchange nothing but the loss of the record."""
    return model.encoder_columns is not None


def shard_dim(model, name):
    """The dimension along which the state `name` is split over the ranks, or None (replicated)."""
    if name.split(".")[0] in SHARDED:
        return 0
    if independent(model) and name in ("embed.weight", "embed_bias"):
        return 1 if name == "embed.weight" else 0
    return None


# ---------------------------------------------------------------------------------------------
# collectives

def wire(t):
    """`t` where the process group's backend reads it: the rank's GPU for NCCL, else the CPU."""
    return t.to(torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu")


def rank_counts(n):
    """Every rank's n, in rank order."""
    out = [wire(torch.zeros(1, dtype=torch.int64)) for _ in range(dist.get_world_size())]
    dist.all_gather(out, wire(torch.tensor([n], dtype=torch.int64)))
    return [int(c) for c in out]


def gather_rows(t, to=None):
    """Concatenate along dim 0 the tensors of every rank (their row counts may differ), on every
    rank; with `to`, on rank `to` only (None elsewhere), so the others never hold the whole."""
    n = rank_counts(t.shape[0])
    padded = wire(torch.zeros((max(n),) + t.shape[1:], dtype=t.dtype))
    padded[:t.shape[0]] = t
    if to is None:
        out = [torch.empty_like(padded) for _ in n]
        dist.all_gather(out, padded)
    else:
        out = [torch.empty_like(padded) for _ in n] if dist.get_rank() == to else None
        dist.gather(padded, out, dst=to)
        if out is None:
            return None
    return torch.cat([o[:c] for o, c in zip(out, n)]).to(t.device)


def gather_along(t, dim, to=None):
    """gather_rows along dimension `dim`."""
    whole = gather_rows(t.transpose(0, dim).contiguous(), to)
    return None if whole is None else whole.transpose(0, dim).contiguous()


def own_block(full, mine, dim):
    """This rank's block of `full` (every rank's piece, concatenated along `dim`), where this rank's
    piece is shaped like `mine`. A `full` of another total size is returned whole, for the model's
    load to name the mismatch."""
    n = rank_counts(mine.shape[dim])
    if full.dim() != mine.dim() or full.shape[dim] != sum(n):
        return full
    return full.narrow(dim, sum(n[:dist.get_rank()]), n[dist.get_rank()]).clone()


class SumGradients(torch.autograd.Function):
    """Identity forward; backward sums the incoming gradient over the ranks (every rank's loss reads
    the whole hidden batch, so the encoder's gradient is the sum of theirs)."""

    @staticmethod
    def forward(ctx, h):
        return h.view_as(h)

    @staticmethod
    def backward(ctx, dh):
        dh = dh.contiguous()
        dist.all_reduce(dh)
        return dh


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
        super().__init__(config, dataset, block=(self.rank, self.world))
        mach = self.model.mach                               # every repetition's hashes, for decoding
        self.mach_buckets = None if mach is None else gather_rows(mach.bucket_of)

    def ranks_here(self):
        return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))

    def device_index(self):
        return local_rank()

    def place_model(self, model):
        if model.config.members > 1:
            shard_members(model, self.rank, self.world)
        return model

    def batch_loss(self, rows):
        h = self.model.encode(self.batch(self.X_train[rows]))                           # (B, d)
        if not independent(self.model):
            h = SumGradients.apply(h)
        aux_weight = self.aux_weight() if self.rank == 0 else 0.0
        loss, parts = self.model.loss_of(h, self.Y_train[rows], aux_weight)
        keys = ["head_loss"] + (["aux_loss"] if self.model.aux is not None and self.aux_weight() > 0 else [])
        totals = wire(torch.tensor([parts.get(k, 0.0) for k in keys], dtype=torch.float64))
        dist.all_reduce(totals)
        parts = dict(zip(keys, totals.tolist()))
        value = parts["head_loss"] + self.aux_weight() * parts.get("aux_loss", 0.0)
        return loss, {"loss": value, **parts}

    def batch_topk(self, x, k):
        """(B, k) label ids of the whole model: MACH decodes the gathered bucket probabilities; the
        other heads merge the ranks' own top-k lists (scores, labels), padded to k with (-inf, -1)."""
        h = self.model.encode(x)
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

    def full_state(self, to=None):
        """The whole model's state dict (every rank's shards concatenated, in rank order), as one
        process would save it; a collective: every rank calls it, all get the result (with `to`,
        rank `to` only: the others get None for the sharded tensors)."""
        out = {}
        for name, t in self.model.state_dict().items():
            dim, t = shard_dim(self.model, name), t.detach()
            out[name] = t if dim is None else gather_along(t, dim, to)
        return out

    def own_state(self, state):
        """This rank's block of a whole model's state dict (a collective)."""
        mine, out = self.model.state_dict(), {}
        for name, t in state.items():
            dim = shard_dim(self.model, name) if name in mine else None
            out[name] = t if dim is None else own_block(t, mine[name], dim)
        return out

    def sharded_moments(self, tensors):
        """{key: (dim, this rank's tensor)} of the trainer state in `tensors` that is split over the
        ranks: Adam's moments ("optim/<i>/<name>", as Trainer.checkpoint_state names them) with their
        parameter, the best weights ("best/<name>", engine.validation) with the model's state."""
        sharded = {f"optim/{i}/": (shard_dim(self.model, name), p)
                   for i, (name, p) in enumerate(self.model.named_parameters())
                   if shard_dim(self.model, name) is not None}
        sharded.update({f"best/{name}": (shard_dim(self.model, name), t)
                        for name, t in self.model.state_dict().items() if shard_dim(self.model, name) is not None})
        out = {}
        for key, t in tensors.items():
            owner = sharded.get(key) or sharded.get(key.rpartition("/")[0] + "/")
            if owner is not None and t.dim():
                out[key] = owner
        return out

    def checkpoint_state(self, to=None):
        """Trainer.checkpoint_state with the sharded parameters' Adam moments gathered: what one
        process would write (a collective; with `to`, gathered on rank `to` only)."""
        tensors, meta = super().checkpoint_state()
        sharded = self.sharded_moments(tensors)
        return {k: gather_along(t, sharded[k][0], to) if k in sharded else t for k, t in tensors.items()}, meta

    def restore(self, tensors, meta):
        """Trainer.restore from a whole run's checkpoint: this rank keeps its block of the moments."""
        sharded = self.sharded_moments(tensors)
        super().restore({k: own_block(t, sharded[k][1], sharded[k][0]) if k in sharded else t
                         for k, t in tensors.items()}, meta)

    def save_checkpoint(self, run):
        """The gathered weights and optimizer state, written by rank 0 (a collective)."""
        state, trainer_state = self.full_state(to=0), self.checkpoint_state(to=0)
        if self.rank == 0:
            run.save_state(state, trainer_state)

    def rank_report(self):
        """Per rank: slots or MACH repetitions held, head parameters, resident memory now and at its
        peak (MB); a collective."""
        m = self.model
        slots = sum(p.n_labels for p in (m.dense, m.sparse) if p is not None)
        reps = m.mach.n_reps if m.mach is not None else 0
        mine = torch.tensor([[self.rank, slots, reps, m.head_params(), *resident_mb()]], dtype=torch.float64)
        return [{"rank": int(r), "slots": int(s), "mach_reps": int(n), "head_params": int(p),
                 "rss_mb": round(now, 1), "peak_rss_mb": round(peak, 1)}
                for r, s, n, p, now, peak in gather_rows(mine).tolist()]


def resident_mb():
    """(now, peak) resident memory of this process in MB (Linux: VmRSS, VmHWM of /proc/self/status)."""
    with open("/proc/self/status") as f:
        kb = dict(line.split(":", 1) for line in f if line.startswith(("VmRSS", "VmHWM")))
    return tuple(int(kb[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))
