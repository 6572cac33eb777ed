"""Training as a generator of records.

    trainer = Trainer(TrainConfig.of(data="sample", head="group_shared", fanin=64))
    for record in trainer.run():      # stop at any record: just stop iterating
        print(record)

Device record: {"kind": "device", "step", "device", "why"}  where the run trains and why; the first
               record each time a run starts or resumes (Trainer.recorded)
Step records:  {"kind": "step", "step", "epoch", "loss", "head_loss", ["aux_loss"], "lr", "step_time"}
Eval records:  {"kind": "eval", "step", "epoch", "P@1", ..., "nDCG@5", "PSP@5", "cov@5", ["val_nDCG@5"],
               ["best_step"], "eval_time"}  test scores; with a validation split its score, and the
               last record of a run whose best evaluation came before its end, after restoring the
               best weights, says which step they are from (engine.validation)
DST records:   {"kind": "dst", "step", ...}  one per dynamic-sparsity update (engine.dst)
Error record:  {"kind": "error", "error": "divergence", "step", "epoch", "message"}  the last record of a
               run whose loss became NaN or inf (the bad step is not applied: the weights are those
               of the last good step), or whose weights or Adam moments are not finite at an
               evaluation (found before it and its checkpoint); run() then raises DivergenceError

The batch order of an epoch depends only on (seed, epoch), the dropout masks on torch's RNG,
whose state (one per Trainer) is part of `checkpoint_state()`, so a run resumed from a checkpoint (`restore`)
yields the same records as the uninterrupted run from that point.

The loss is binary cross-entropy with logits against the sparse label matrix, summed over the
labels and averaged over the batch:  loss = -(1/B) Σ_b Σ_l [y log σ(z) + (1-y) log(1-σ(z))],
plus w_aux(t) · (the same over label clusters) with the auxiliary objective, where w_aux decays
linearly from `aux` to 0 at the fraction `aux_until` of training. Adam's learning rate at step t
(0-based) of T is lr · (t + 1) / W over the W = warmup · T warm-up steps, then lr · s(p) with
p = (t - W) / (T - W) the progress after the warm-up and s = 1 (decay "none"), 1 - p ("linear") or
(1 + cos πp) / 2 ("cosine"): a function of the step alone, so a resumed run goes on with it.
The same config and seed give the same numbers on the CPU. On a GPU (device "cuda") the model is
built on the CPU, so its initial weights are the CPU's, then moved; each step seeds the GPU's dropout
generator from the trainer's own (CPU) RNG, so a GPU run too resumes with the same draws.
"""

import itertools
import math
import threading
import time

import numpy as np
import torch

from . import grouping, metrics
from .checkpoint import decode_trainer_state, encode_trainer_state
from .config import TrainConfig
from .data import Dataset, load_dataset, normalize_rows
from .device import resolve_device
from .validation import SCORE, SCORE_K, BestWeights, validation_rows, validation_score
from .errors import CheckpointError, DivergenceError
from .heads.group_shared import require_backend
from .model import SparseInput, XMCModel

# torch's default RNG (model init, dropout masks) is one per process: each Trainer keeps its own state
# and swaps it in, under this lock, around what draws from it, so two trainers in two threads (two app
# sessions) neither disturb each other's numbers nor the checkpointed RNG state.
_TORCH_RNG = threading.Lock()


class Trainer:
    """Trains a model of `config` on `dataset` (default: the config's data). block=(rank, world):
    build only rank's block of the head (engine.distributed.DistributedTrainer)."""

    def __init__(self, config: TrainConfig, dataset: Dataset | None = None, block=None):
        self.config = c = config
        self.placement = resolve_device(c.device, c.model.backend, self.device_index())   # before any work
        self.dataset = ds = dataset if dataset is not None else load_dataset(c.data)
        model_config = c.model_config(ds.n_features, ds.n_labels)   # validates before allocating
        require_backend(c.model.backend)                                  # one this machine can run
        from .guard import check_memory
        from .memory import pifa_entries
        check_memory(c, ds.n_features, ds.n_labels, shards=1 if block is None else block[1],
                     ranks_here=self.ranks_here(),                      # refuses what does not fit
                     pifa_nnz=pifa_entries(ds.X_train, ds.Y_train))     # (the grouping's PIFA)
        prep = normalize_rows if c.normalize else (lambda X: X)
        X, self.X_test = prep(ds.X_train), prep(ds.X_test)
        self.inv_propensity = metrics.inv_propensity(ds.Y_train)       # propensities of the whole training set
        fit, val = validation_rows(ds.n_train, c.val_fraction, c.model.seed)
        self.X_train, self.Y_train = (X[fit], ds.Y_train[fit]) if len(val) else (X, ds.Y_train)   # trained on
        self.X_val, self.Y_val = X[val], ds.Y_train[val]                                          # held out
        self.best = BestWeights(c.patience) if len(val) else None
        slot_of_label, cluster_of_label = grouping.label_layout(model_config, self.X_train, self.Y_train)
        with _TORCH_RNG:
            torch.manual_seed(c.model.seed)
            self.model = XMCModel(model_config, slot_of_label=slot_of_label, cluster_of_label=cluster_of_label,
                                  block=block)
            self.model.init_label_prior(np.asarray(self.Y_train.sum(axis=0)).ravel(), self.n_train)
            if self.model.mach is not None:
                self.model.mach.init_bucket_prior(self.Y_train)
            if model_config.sparse and model_config.head.index_init == "centroid":
                self.model.sparse.set_index(self.centroid_index())
            self.rng_state = torch.get_rng_state()   # this trainer's dropout draws continue from here
        self.model = self.place_model(self.model).to(self.device)
        # fused: one kernel over all the parameters, ~10x faster on the CPU than the per-tensor loop
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=c.lr, fused=True)
        self.dst = None
        if c.dst != "none":
            from .dst import DynamicSparsity
            n_dense = 0 if self.model.dense is None else self.model.dense.n_labels
            padded = (self.model.label_of_slot[n_dense:] < 0).cpu().numpy()
            self.dst = DynamicSparsity(self.model.sparse, c.dst_config(), self.total_steps, padded=padded)
        self.step = 0
        self.epoch = 0

    @torch.no_grad()
    def centroid_index(self, max_points=grouping.CENTROID_POINTS):
        """(G, k) input sets of the sparse part from PIFA centroids in the space the head reads
        (grouping.centroid_index), over at most `max_points` training points, at initialisation."""
        model, n = self.model, min(self.n_train, max_points)
        # (n, D) sparse: the features themselves with no encoder, else (n, d) the encoded points
        H = self.X_train[:n] if model.embed is None else model.encode_all(self.X_train[:n])
        index = grouping.centroid_index(H, self.Y_train[:n], model.slot_of_label.numpy(),
                                        model.config.n_dense, model.sparse.group_size, model.sparse.fanin,
                                        self.config.model.seed)
        g0 = (model.sparse_first - model.config.n_dense) // model.sparse.group_size
        return index[g0:g0 + model.sparse.n_groups]

    @property
    def device(self):
        """The torch.device this trainer's model and batches live on."""
        return self.placement.device

    def device_index(self):
        """Which GPU this process takes when it trains on one: torch's current device (a rank of a
        distributed run takes its local rank's)."""
        return None

    def batch(self, X):
        """A batch of CSR feature rows as the model's input, on the trainer's device."""
        return SparseInput(X).to(self.device)

    @property
    def n_train(self):
        """Training points trained on (the training split less the validation rows)."""
        return self.X_train.shape[0]

    @property
    def steps_per_epoch(self):
        return -(-self.n_train // self.config.batch_size)

    @property
    def total_steps(self):
        return self.steps_per_epoch * self.config.epochs

    def lr_at(self, step):
        """Adam's learning rate for the step after `step` steps (see the module docstring)."""
        c = self.config
        warm = c.warmup * self.total_steps
        if step < warm:
            return c.lr * (step + 1) / warm
        p = (step - warm) / max(self.total_steps - warm, 1)
        return c.lr * {"none": 1.0, "linear": 1.0 - p, "cosine": 0.5 * (1.0 + math.cos(math.pi * p))}[c.decay]

    def aux_weight(self):
        """w_aux(t): linear decay from `aux` to 0 at the fraction `aux_until` of training."""
        c = self.config
        return c.aux * max(0.0, 1.0 - self.step / (c.aux_until * self.total_steps))

    def batch_orders(self, first_epoch=0):
        """The permutations of the training points of epochs first_epoch, first_epoch + 1, ...: the
        e-th permutation drawn from default_rng(seed), a function of (seed, epoch) only, so a resumed
        run redraws the same batches (skipping e permutations costs e shuffles, no training)."""
        rng = np.random.default_rng(self.config.model.seed)
        for _ in range(first_epoch):
            rng.permutation(self.n_train)
        while True:
            yield rng.permutation(self.n_train)

    def run(self):
        """Train for the configured epochs, yielding a record per step and per evaluation.

        Starts where `self.step` is (0, or a restored checkpoint's step). A NaN or inf loss yields
        an error record and raises DivergenceError. With a validation split it stops when the
        patience is spent, and ends with the best evaluation's weights and an eval record of them."""
        yield from self.epochs()
        if self.best is not None and not self.best.in_place(self.step):
            self.best.restore(self.model)
            yield {**self.eval_record(), "best_step": self.best.step}

    @property
    def finished(self):
        """Whether run() has nothing left to do: every step trained (or the patience spent), and the
        best weights in place."""
        done = self.step >= self.total_steps or self.patience_spent
        return done and (self.best is None or self.best.in_place(self.step))

    @property
    def patience_spent(self):
        """Whether early stopping ends the training now (engine.validation.BestWeights.spent)."""
        return self.best is not None and self.best.spent

    def epochs(self):
        """run()'s training: the steps and their evaluations, until the last epoch or the patience ends."""
        c = self.config
        eval_every = c.eval_every or self.steps_per_epoch
        self.epoch, done = divmod(self.step, self.steps_per_epoch)
        orders = self.batch_orders(self.epoch)
        while self.epoch < c.epochs and not self.patience_spent:
            order = next(orders)
            for start in range(done * c.batch_size, len(order), c.batch_size):
                rows = np.sort(order[start:start + c.batch_size])
                try:
                    record = self.train_step(rows)
                except DivergenceError as e:
                    yield self.divergence_record(e, self.step + 1)
                    raise
                yield record
                if self.dst is not None:
                    record = self.dst.update(self.step, self.optimizer, self.model.last_h, self.model.last_dZ)
                    self.model.last_h = self.model.last_dZ = None
                    if record is not None:
                        yield {"kind": "dst", **record}
                if self.step % eval_every == 0 or self.step == self.total_steps:
                    try:
                        self.check_finite_state()
                    except DivergenceError as e:
                        yield self.divergence_record(e, self.step)
                        raise
                    yield self.eval_record()
                    if self.patience_spent:
                        return
            self.epoch += 1
            done = 0

    def recorded(self, run, first_eval=False):
        """run()'s records, each appended to `run` (a runs.Run; None on a process that does not write)
        as it is yielded, with a checkpoint at every evaluation: the one loop of the CLI and the app's
        jobs. first_eval: an evaluation before the first step (metrics at step 0)."""
        records = self.run()
        if first_eval:
            records = itertools.chain([self.eval_record()], records)
        records = itertools.chain([self.device_record()], records)
        for record in records:
            if run is not None:
                run.append(record)
            if record["kind"] == "eval":
                self.save_checkpoint(run)
            yield record

    def device_record(self):
        """The record that says where this run (or this resumed part of it) trains, and why."""
        return {"kind": "device", "step": self.step, "device": str(self.device), "why": self.placement.why}

    def divergence_record(self, error, step):
        """The error record that ends a diverged run at `step` (run() raises the error after it)."""
        return {"kind": "error", "error": "divergence", "step": step, "epoch": self.epoch + 1,
                "message": str(error)}

    @torch.no_grad()
    def check_finite_state(self):
        """DivergenceError naming the first parameter or Adam moment that holds a NaN or inf: run at
        every evaluation, before it and its checkpoint, so that a kept checkpoint is always finite
        (a finite loss can still leave non-finite weights or moments behind)."""
        names = {id(p): name for name, p in self.model.named_parameters()}
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                tensors = {"weights": p, **{k: v for k, v in self.optimizer.state.get(p, {}).items()
                                            if torch.is_tensor(v) and v.is_floating_point()}}
                for what, t in tensors.items():
                    if not bool(torch.isfinite(t).all()):
                        raise DivergenceError(
                            f"training diverged by step {self.step} (epoch {self.epoch + 1}): "
                            f"{names.get(id(p), 'a parameter')} has non-finite {what}; try a smaller lr than "
                            f"{self.config.lr:g} (the run's last good checkpoint, if any, is kept)")

    def place_model(self, model):
        """The part of the freshly initialised model this trainer trains: all of it (a rank of a
        distributed run keeps its shard, engine.distributed)."""
        return model

    def batch_loss(self, rows):
        """(loss to backpropagate, {"loss": its value, "head_loss", ["aux_loss"]}) of the
        training points `rows` (sorted), drawing this batch's dropout masks."""
        x, Y = self.batch(self.X_train[rows]), self.Y_train[rows]
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
            if self.device.type == "cuda":                    # the GPU's dropout draws, from ours
                torch.cuda.manual_seed(int(torch.randint(2**62, (1,))))
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
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return {"kind": "step", "step": self.step, "epoch": self.epoch + 1, **parts, "lr": lr,
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
        """What resuming needs beyond the model's weights: (tensors, meta), engine.checkpoint's codec,
        with the best weights so far (engine.validation) under "best/" and their state as meta["best"]."""
        tensors, meta = encode_trainer_state(self.optimizer, self.rng_state, self.step, self.epoch, self.config)
        if self.best is not None:
            best_tensors, meta["best"] = self.best.state()
            tensors.update(best_tensors)
        return tensors, meta

    def restore(self, tensors, meta):
        """Continue from a checkpoint_state() (the model's weights are loaded separately)."""
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        state, rng, step = decode_trainer_state(tensors, meta, params, self.config, self.total_steps)
        try:
            self.optimizer.load_state_dict({"state": state,
                                            "param_groups": self.optimizer.state_dict()["param_groups"]})
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"optimizer state does not fit this model: {e}") from None
        if rng is not None:
            self.rng_state = rng.clone()
        if self.best is not None:
            self.best.load(tensors, meta.get("best"), self.model)
        self.step = step
        self.epoch = step // self.steps_per_epoch

    def eval_record(self):
        """The test scores now; with a validation split, its score too (counted by self.best)."""
        t0 = time.perf_counter()
        scores = self.evaluate()
        if self.best is not None:
            val = validation_score(self.Y_val, self.predict(self.X_val, SCORE_K))
            scores["val_" + SCORE] = val
            if not self.best.restored:
                self.best.update(self.step, val, self.model)
        return {"kind": "eval", "step": self.step, "epoch": self.epoch + 1, **scores,
                "eval_time": time.perf_counter() - t0}

    @torch.no_grad()
    def predict(self, X, k, batch_size=1024):
        """Top-k label ids (N, k), best first, for feature rows X (already normalised)."""
        self.model.eval()
        k = min(k, self.dataset.n_labels)
        out = [self.batch_topk(self.batch(X[s:s + batch_size]), k).cpu().numpy()
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
