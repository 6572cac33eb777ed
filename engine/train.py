"""Training as a generator of records.

    trainer = Trainer(TrainConfig(data="sample", head="group_shared", fanin=64))
    for record in trainer.run():      # stop at any record: just stop iterating
        print(record)

Step records:  {"kind": "step", "step", "epoch", "loss", "head_loss", ["aux_loss"], "step_time"}
Eval records:  {"kind": "eval", "step", "epoch", "P@1", ..., "nDCG@5", "PSP@5", "cov@5", "eval_time"}
DST records:   {"kind": "dst", "step", ...}  one per dynamic-sparsity update (engine.dst)
Error record:  {"kind": "error", "error": "divergence", "step", "epoch", "message"}  the last record of a
               run whose loss became NaN or inf; run() then raises DivergenceError (the weights are
               those of the last good step: the bad step is not applied)

The batch order of an epoch depends only on (seed, epoch), the dropout masks on torch's RNG,
whose state (one per Trainer) is part of `checkpoint_state()`, so a run resumed from a checkpoint (`restore`)
yields the same records as the uninterrupted run from that point.

The loss is binary cross-entropy with logits against the sparse label matrix, summed over the
labels and averaged over the batch:  loss = -(1/B) Σ_b Σ_l [y log σ(z) + (1-y) log(1-σ(z))],
plus w_aux(t) · (the same over label clusters) with the auxiliary objective, where w_aux decays
linearly from `aux` to 0 at the fraction `aux_until` of training.
The same config and seed give the same numbers on the CPU.
"""

import dataclasses
import math
import numbers
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import metrics
from .data import Dataset, load_dataset, normalize_rows
from .errors import ConfigError, XMCError
from .model import HEADS, SPARSE_HEADS, ModelConfig, SparseInput, XMCModel

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"
CHOICES = {"groups": ("random", "clustered"), "index_init": ("random", "centroid"),
           "dst": ("none", "random", "gradient")}
CHECKPOINT_FORMAT = 1
# torch's default RNG (model init, dropout masks) is one per process: each Trainer keeps its own state
# and swaps it in, under this lock, around what draws from it, so two trainers in two threads (two app
# sessions) neither disturb each other's numbers nor the checkpointed RNG state.
_TORCH_RNG = threading.Lock()


class DivergenceError(XMCError):
    """The loss became NaN or inf: training stopped; the last good checkpoint is kept."""


def _check_types(config):
    """Each field has its declared type (ints for int fields, finite numbers for float fields, ...):
    a bad value raises ConfigError naming the key, not a TypeError somewhere later."""
    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        if f.type is bool:
            ok = isinstance(v, (bool, np.bool_))
            if ok:
                setattr(config, f.name, bool(v))
        elif f.type is int:
            ok = isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))
            if ok:
                setattr(config, f.name, int(v))
        elif f.type is float:
            ok = isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))
            if ok:
                if not math.isfinite(v):
                    raise ConfigError(f"{f.name} must be a finite number, got {v!r}")
                setattr(config, f.name, float(v))
        elif f.type is str:
            ok = isinstance(v, str)
        else:                                                   # pragma: no cover - no such fields
            ok = True
        if not ok:
            raise ConfigError(f"{f.name} must be {'an' if f.type is int else 'a'} {f.type.__name__}, "
                              f"got {type(v).__name__} {v!r}")


@dataclass
class TrainConfig:
    data: str = "sample"        # dataset directory (XC format), or "sample" for the bundled one
    head: str = "dense"         # dense | fixed_fanin | group_shared | dense_sparse | mach
    hidden: int = 512           # encoder width; 0 = no encoder: the head reads the input features
    intermediate: int = 0       # penultimate layer width; 0 = none
    fanin: int = 64             # k, sparse heads
    group_size: int = 32        # m, group_shared and dense_sparse
    groups: str = "random"      # label groups: random | clustered (balanced 2-means on PIFA)
    index_init: str = "random"  # a group's first inputs: random, or the k largest of its centroid in h-space
    head_size: int = 100        # dense_sparse: the most frequent labels get a dense head
    mach_buckets: int = 256     # mach: B
    mach_reps: int = 4          # mach: R
    mach_members: int = 1       # mach: independent models (own encoders) the R repetitions form; 1 = shared
    aux: float = 0.0            # initial weight of the auxiliary cluster objective; 0 = off
    aux_clusters: int = 64      # meta-labels of the auxiliary objective
    aux_until: float = 0.5      # fraction of training after which the auxiliary weight is 0
    dst: str = "none"           # dynamic sparse training: none | random (SET) | gradient (RigL-style regrowth)
    dst_every: int = 100        # ΔT: steps between connectivity updates
    dst_zeta: float = 0.3       # ζ: initial fraction of each set's connections swapped (cosine decay)
    dst_until: float = 0.75     # fraction of training after which connectivity is frozen
    dropout: float = 0.3
    backend: str = "auto"
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    eval_every: int = 0         # steps between test evaluations; 0 = once per epoch
    eval_k: int = 5             # metrics at 1, 3, ..., eval_k
    normalize: bool = False     # l2-normalise the feature rows (raw values train better on bibtex/delicious)
    seed: int = 0

    def __post_init__(self):
        _check_types(self)
        if self.head not in HEADS:                    # the model's own settings, checked here too so that a
            raise ConfigError(f"head must be one of {HEADS}, got {self.head!r}")   # config is refused on import
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        used = {"hidden": 0, "intermediate": 0}
        used.update({"fanin": 1} if self.head in SPARSE_HEADS else {})
        used.update({"group_size": 1} if self.head in ("group_shared", "dense_sparse") else {})
        used.update({"head_size": 1} if self.head == "dense_sparse" else {})
        used.update({"mach_buckets": 2, "mach_reps": 1, "mach_members": 1} if self.head == "mach" else {})
        for name, low in used.items():
            if getattr(self, name) < low:
                raise ConfigError(f"{name} must be >= {low}, got {getattr(self, name)}")
        for name in ("epochs", "batch_size", "eval_k"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_every < 0:
            raise ConfigError(f"eval_every must be >= 0 (0 = once per epoch), got {self.eval_every}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.aux < 0:
            raise ConfigError(f"aux must be >= 0 (0 = off), got {self.aux}")
        if self.aux and self.aux_clusters < 1:
            raise ConfigError(f"aux_clusters must be >= 1, got {self.aux_clusters}")
        if not 0 < self.aux_until <= 1:
            raise ConfigError(f"aux_until must be in (0, 1], got {self.aux_until}")
        if self.dst != "none":
            if self.head not in SPARSE_HEADS:
                raise ConfigError(f"dst needs a sparse head {SPARSE_HEADS}, got head={self.head!r}")
            self.dst_config()                                   # validates every, zeta, until

    def dst_config(self):
        from .dst import DSTConfig
        return DSTConfig(every=self.dst_every, zeta=self.dst_zeta, stop_fraction=self.dst_until,
                         regrow=self.dst, seed=self.seed)

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a JSON object (a dict), got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**d)

    def to_dict(self):
        return dataclasses.asdict(self)

    def model_config(self, n_features, n_labels):
        fields = {f.name for f in dataclasses.fields(ModelConfig)}
        kw = {k: v for k, v in self.to_dict().items() if k in fields}
        kw["aux_clusters"] = min(self.aux_clusters, n_labels) if self.aux else 0
        mc = ModelConfig(n_features=n_features, n_labels=n_labels, **kw)
        if self.dst != "none" and self.fanin >= mc.head_in:
            raise ConfigError(f"dst needs fanin < the head's input width {mc.head_in}, "
                              f"got fanin={self.fanin}: there is nothing to regrow")
        return mc


def resolve_data(data):
    """Load the dataset a config names ("sample" is the bundled one)."""
    return load_dataset(SAMPLE_DATA if data == "sample" else data)


def label_layout(config: ModelConfig, X, Y, groups, seed):
    """(slot_of_label (L,), cluster_of_label (L,) or None) for a model config and training data.

    Sparse parts place labels group by group: `groups` "random" or "clustered" (balanced
    hierarchical 2-means on PIFA embeddings); dense_sparse puts the `head_size` most frequent
    labels first, in the dense part."""
    from . import grouping
    L = config.n_labels
    needs_pifa = config.aux_clusters or (groups == "clustered" and config.head in ("group_shared", "dense_sparse"))
    emb = grouping.pifa(X, Y) if needs_pifa else None
    cluster_of_label = None
    if config.aux_clusters:
        size = -(-L // config.aux_clusters)
        cluster_of_label = grouping.balanced_groups(emb, size, seed=seed).group_of_label
    if config.head not in ("group_shared", "dense_sparse"):
        return None, cluster_of_label
    counts = np.asarray(Y.sum(axis=0)).ravel()
    n_dense = config.head_size if config.head == "dense_sparse" else 0
    by_frequency = np.argsort(-counts, kind="stable")
    dense_labels, tail = by_frequency[:n_dense], np.sort(by_frequency[n_dense:])
    if groups == "clustered":
        tail_groups = grouping.balanced_groups(emb[tail], config.group_size, seed=seed)
    else:
        tail_groups = grouping.random_groups(len(tail), config.group_size, seed=seed)
    slot_of_label = np.empty(L, dtype=np.int64)
    slot_of_label[dense_labels] = np.arange(n_dense)
    slot_of_label[tail] = n_dense + tail_groups.slot_of_label
    return slot_of_label, cluster_of_label


class Trainer:
    """Trains a model of `config` on `dataset` (default: the config's data). block=(rank, world):
    build only rank's block of the head (engine.distributed.DistributedTrainer)."""

    def __init__(self, config: TrainConfig, dataset: Dataset | None = None, block=None):
        self.config = c = config
        self.dataset = ds = dataset if dataset is not None else resolve_data(c.data)
        model_config = c.model_config(ds.n_features, ds.n_labels)   # validates before allocating
        from .guard import check_memory
        check_memory(c, ds.n_features, ds.n_labels, shards=1 if block is None else block[1],
                     ranks_here=self.ranks_here())                      # refuses what does not fit
        prep = normalize_rows if c.normalize else (lambda X: X)
        self.X_train, self.X_test = prep(ds.X_train), prep(ds.X_test)
        self.inv_propensity = metrics.inv_propensity(ds.Y_train)
        slot_of_label, cluster_of_label = label_layout(model_config, self.X_train, ds.Y_train, c.groups, c.seed)
        with _TORCH_RNG:
            torch.manual_seed(c.seed)
            self.model = XMCModel(model_config, slot_of_label=slot_of_label, cluster_of_label=cluster_of_label,
                                  block=block)
            self.model.init_label_prior(np.asarray(ds.Y_train.sum(axis=0)).ravel(), ds.n_train)
            if self.model.mach is not None:
                self.model.mach.init_bucket_prior(ds.Y_train)
            if c.index_init == "centroid" and self.model.sparse is not None:
                self.model.sparse.set_index(self.centroid_index())
            self.rng_state = torch.get_rng_state()   # this trainer's dropout draws continue from here
        self.model = self.place_model(self.model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=c.lr)
        self.dst = None
        if c.dst != "none":
            from .dst import DynamicSparsity
            n_dense = 0 if self.model.dense is None else self.model.dense.n_labels
            padded = (self.model.label_of_slot[n_dense:] < 0).numpy()
            self.dst = DynamicSparsity(self.model.sparse, c.dst_config(), self.total_steps, padded=padded)
        self.step = 0
        self.epoch = 0

    @torch.no_grad()
    def centroid_index(self, max_points=20_000):
        """(G, k) input sets of the sparse part: the k largest entries of each group's centroid of
        PIFA embeddings in h-space (the hidden layer the head reads, at initialisation; with no
        encoder, the input features themselves; PIFA over at most `max_points` training points).
        The rows of the model's block of groups, where it holds one."""
        from .grouping import LabelGroups, group_index, pifa
        model, n = self.model, min(self.dataset.n_train, max_points)
        model.eval()
        if model.embed is None:
            H = self.X_train[:n]                                       # (n, D) sparse: the features
        else:
            H = torch.cat([model.encode(SparseInput(self.X_train[s:min(s + 4096, n)]))
                           for s in range(0, n, 4096)]).numpy()
        n_dense, m = model.config.n_dense, model.sparse.group_size
        slots = model.slot_of_label.numpy()
        tail = np.flatnonzero(slots >= n_dense)
        tail = tail[np.argsort(slots[tail])]
        groups = LabelGroups(len(tail), m, slots[tail] - n_dense)
        scores = pifa(H, self.dataset.Y_train[:n][:, tail], dense=model.embed is not None)
        index = group_index(groups, scores, model.sparse.fanin, how="centroid", seed=self.config.seed)
        g0 = (model.sparse_first - n_dense) // m
        return index[g0:g0 + model.sparse.n_groups]

    @property
    def steps_per_epoch(self):
        return -(-self.dataset.n_train // self.config.batch_size)

    @property
    def total_steps(self):
        return self.steps_per_epoch * self.config.epochs

    def aux_weight(self):
        """w_aux(t): linear decay from `aux` to 0 at the fraction `aux_until` of training."""
        c = self.config
        return c.aux * max(0.0, 1.0 - self.step / (c.aux_until * self.total_steps))

    def batch_orders(self, first_epoch=0):
        """The permutations of the training points of epochs first_epoch, first_epoch + 1, ...: the
        e-th permutation drawn from default_rng(seed), a function of (seed, epoch) only, so a resumed
        run redraws the same batches (skipping e permutations costs e shuffles, no training)."""
        rng = np.random.default_rng(self.config.seed)
        for _ in range(first_epoch):
            rng.permutation(self.dataset.n_train)
        while True:
            yield rng.permutation(self.dataset.n_train)

    def run(self):
        """Train for the configured epochs, yielding a record per step and per evaluation.

        Starts where `self.step` is (0, or a restored checkpoint's step). A NaN or inf loss yields
        an error record and raises DivergenceError."""
        c = self.config
        eval_every = c.eval_every or self.steps_per_epoch
        self.epoch, done = divmod(self.step, self.steps_per_epoch)
        orders = self.batch_orders(self.epoch)
        while self.epoch < c.epochs:
            order = next(orders)
            for start in range(done * c.batch_size, len(order), c.batch_size):
                rows = np.sort(order[start:start + c.batch_size])
                try:
                    record = self.train_step(rows)
                except DivergenceError as e:
                    yield {"kind": "error", "error": "divergence", "step": self.step + 1,
                           "epoch": self.epoch + 1, "message": str(e)}
                    raise
                yield record
                if self.dst is not None:
                    record = self.dst.update(self.step, self.optimizer, self.model.last_h, self.model.last_dZ)
                    self.model.last_h = self.model.last_dZ = None
                    if record is not None:
                        yield {"kind": "dst", **record}
                if self.step % eval_every == 0 or self.step == self.total_steps:
                    yield self.eval_record()
            self.epoch += 1
            done = 0

    def place_model(self, model):
        """The part of the freshly initialised model this trainer trains: all of it (a rank of a
        distributed run keeps its shard, engine.distributed)."""
        return model

    def batch_loss(self, rows):
        """(loss to backpropagate, {"loss": its value, "head_loss", ["aux_loss"]}) of the
        training points `rows` (sorted), drawing this batch's dropout masks."""
        x, Y = SparseInput(self.X_train[rows]), self.dataset.Y_train[rows]
        loss, parts = self.model.loss(x, Y, aux_weight=self.aux_weight())
        return loss, {"loss": loss.item(), **parts}

    def train_step(self, rows):
        t0 = time.perf_counter()
        self.model.train()
        self.model.capture_sparse_grad = (self.dst is not None and self.config.dst == "gradient"
                                          and self.dst.n_swap(self.step + 1) > 0)
        with _TORCH_RNG:                              # the forward draws the dropout masks
            outer = torch.get_rng_state()
            torch.set_rng_state(self.rng_state)
            try:
                loss, parts = self.batch_loss(rows)
            finally:
                self.rng_state = torch.get_rng_state()
                torch.set_rng_state(outer)
        value = parts["loss"]
        if not math.isfinite(value):
            bad = {k: v for k, v in parts.items() if k != "loss" and not math.isfinite(v)}
            raise DivergenceError(f"training diverged at step {self.step + 1} (epoch {self.epoch + 1}): loss is "
                                  f"{value}{' (' + ', '.join(f'{k} {v}' for k, v in bad.items()) + ')' if bad else ''}"
                                  f"; try a smaller lr than {self.config.lr:g} (the run's last good checkpoint, if any, is kept)")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return {"kind": "step", "step": self.step, "epoch": self.epoch + 1, **parts,
                "step_time": time.perf_counter() - t0}

    def save_checkpoint(self, run):
        """Write the model and what resuming needs to `run` (a runs.Run)."""
        run.save_checkpoint(self.model, self)

    def ranks_here(self):
        """Processes sharing this machine's memory (for the memory guard): 1 here."""
        return 1

    def own_state(self, state):
        """The part of a whole model's state dict that this trainer's model holds: all of it (a
        distributed trainer keeps its rank's block)."""
        return state

    def checkpoint_state(self):
        """What resuming needs beyond the model's weights: (tensors, meta).

        tensors: Adam's state per parameter ("optim/<i>/<name>") and torch's RNG state ("rng/torch");
        meta: a JSON-able dict (format, step, epoch, config, non-tensor optimizer state)."""
        tensors, scalars = {}, {}
        for i, state in self.optimizer.state_dict()["state"].items():
            for name, v in state.items():
                if torch.is_tensor(v):
                    tensors[f"optim/{i}/{name}"] = v.detach().cpu().contiguous()
                else:
                    scalars[f"{i}/{name}"] = v
        tensors["rng/torch"] = self.rng_state.clone()
        meta = {"format": CHECKPOINT_FORMAT, "step": self.step, "epoch": self.epoch,
                "config": self.config.to_dict(), "optim_scalars": scalars}
        return tensors, meta

    def restore(self, tensors, meta):
        """Continue from a checkpoint_state() (the model's weights are loaded separately)."""
        from .runs import CheckpointError
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"checkpoint format {meta.get('format')!r} is not {CHECKPOINT_FORMAT}")
        if meta.get("config") != self.config.to_dict():
            raise CheckpointError("the checkpoint was written by another config; resume with the run's own config")
        step = meta.get("step")
        if type(step) is not int or not 0 <= step <= self.total_steps:
            raise CheckpointError(f"checkpoint step {step!r} is not in [0, {self.total_steps}]")
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        state = {}
        try:
            for key, v in tensors.items():
                if key.startswith("optim/"):
                    _, i, name = key.split("/", 2)
                    state.setdefault(int(i), {})[name] = v
            for key, v in dict(meta.get("optim_scalars", {})).items():
                i, name = key.split("/", 1)
                state.setdefault(int(i), {})[name] = v
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"malformed optimizer state in the checkpoint ({e})") from None
        for i, st in state.items():
            if not 0 <= i < len(params):
                raise CheckpointError(f"optimizer state for parameter {i}, the model has {len(params)}")
            for name, v in st.items():
                if torch.is_tensor(v) and v.dim() and v.shape != params[i].shape:
                    raise CheckpointError(f"optimizer state {name} of parameter {i} has shape {tuple(v.shape)}, "
                                          f"the parameter {tuple(params[i].shape)}")
        rng = tensors.get("rng/torch")
        if rng is not None and (rng.dtype != torch.uint8 or rng.shape != torch.get_rng_state().shape):
            raise CheckpointError(f"torch RNG state in the checkpoint has dtype {rng.dtype} and shape "
                                  f"{tuple(rng.shape)}, expected uint8 {tuple(torch.get_rng_state().shape)}")
        try:
            self.optimizer.load_state_dict({"state": state,
                                            "param_groups": self.optimizer.state_dict()["param_groups"]})
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"optimizer state does not fit this model: {e}") from None
        if rng is not None:
            self.rng_state = rng.clone()
        self.step = step
        self.epoch = step // self.steps_per_epoch

    def eval_record(self):
        t0 = time.perf_counter()
        scores = self.evaluate()
        return {"kind": "eval", "step": self.step, "epoch": self.epoch + 1, **scores,
                "eval_time": time.perf_counter() - t0}

    @torch.no_grad()
    def predict(self, X, k, batch_size=1024):
        """Top-k label ids (N, k), best first, for feature rows X (already normalised)."""
        self.model.eval()
        k = min(k, self.dataset.n_labels)
        out = [self.batch_topk(SparseInput(X[s:s + batch_size]), k).numpy()
               for s in range(0, X.shape[0], batch_size)]
        return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)

    def batch_topk(self, x, k):
        """(B, k) label ids of a batch of feature rows (a distributed run merges its ranks')."""
        return self.model.topk(x, k)

    def evaluate(self):
        """P@k, nDCG@k, PSP@k and coverage@k on the test split, for k = 1, 3, ..., eval_k."""
        ks = tuple(range(1, self.config.eval_k + 1, 2))
        top = self.predict(self.X_test, max(ks))
        ks = tuple(k for k in ks if k <= top.shape[1])
        return metrics.evaluate(self.dataset.Y_test, top, ks=ks, inv_propensity=self.inv_propensity)
