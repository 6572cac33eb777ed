"""Training as a generator of records.

    trainer = Trainer(TrainConfig(data="sample_data", head="group_shared", fanin=64))
    for record in trainer.run():      # stop at any record: just stop iterating
        print(record)

Step records:  {"kind": "step", "step", "epoch", "loss", "step_time"}
Eval records:  {"kind": "eval", "step", "epoch", "P@1", ..., "nDCG@5", "PSP@5", "cov@5", "eval_time"}

The loss is binary cross-entropy with logits against the sparse label matrix, summed over the
labels and averaged over the batch:  loss = -(1/B) Σ_b Σ_l [y log σ(z) + (1-y) log(1-σ(z))].
The same config and seed give the same numbers on the CPU.
"""

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import metrics
from .data import Dataset, load_dataset, normalize_rows
from .errors import ConfigError
from .model import ModelConfig, SparseInput, XMCModel

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"


@dataclass
class TrainConfig:
    data: str = "sample"        # dataset directory (XC format), or "sample" for the bundled one
    head: str = "dense"         # dense | fixed_fanin | group_shared
    hidden: int = 512
    intermediate: int = 0       # penultimate layer width; 0 = none
    fanin: int = 64
    group_size: int = 32
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
        for name in ("epochs", "batch_size", "eval_k"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_every < 0:
            raise ConfigError(f"eval_every must be >= 0 (0 = once per epoch), got {self.eval_every}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**d)

    def to_dict(self):
        return dataclasses.asdict(self)

    def model_config(self, n_features, n_labels):
        return ModelConfig(n_features=n_features, n_labels=n_labels, hidden=self.hidden,
                           intermediate=self.intermediate, head=self.head, fanin=self.fanin,
                           group_size=self.group_size, dropout=self.dropout,
                           backend=self.backend, seed=self.seed)


def resolve_data(data):
    """Load the dataset a config names ("sample" is the bundled one)."""
    return load_dataset(SAMPLE_DATA if data == "sample" else data)


class Trainer:
    def __init__(self, config: TrainConfig, dataset: Dataset | None = None):
        self.config = c = config
        self.dataset = ds = dataset if dataset is not None else resolve_data(c.data)
        model_config = c.model_config(ds.n_features, ds.n_labels)   # validates before allocating
        prep = normalize_rows if c.normalize else (lambda X: X)
        self.X_train, self.X_test = prep(ds.X_train), prep(ds.X_test)
        self.inv_propensity = metrics.inv_propensity(ds.Y_train)
        torch.manual_seed(c.seed)
        self.model = XMCModel(model_config)
        self.model.init_label_prior(np.asarray(ds.Y_train.sum(axis=0)).ravel(), ds.n_train)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=c.lr)
        self.step = 0
        self.epoch = 0

    @property
    def steps_per_epoch(self):
        return -(-self.dataset.n_train // self.config.batch_size)

    @property
    def total_steps(self):
        return self.steps_per_epoch * self.config.epochs

    def run(self):
        """Train for the configured epochs, yielding a record per step and per evaluation."""
        c = self.config
        rng = np.random.default_rng(c.seed)
        eval_every = c.eval_every or self.steps_per_epoch
        while self.epoch < c.epochs:
            order = rng.permutation(self.dataset.n_train)
            for start in range(0, len(order), c.batch_size):
                rows = np.sort(order[start:start + c.batch_size])
                yield self.train_step(rows)
                if self.step % eval_every == 0 or self.step == self.total_steps:
                    yield self.eval_record()
            self.epoch += 1

    def train_step(self, rows):
        t0 = time.perf_counter()
        self.model.train()
        x = SparseInput(self.X_train[rows])
        y = torch.from_numpy(self.dataset.Y_train[rows].toarray())          # (B, L)
        logits = self.model(x)                                               # (B, L)
        loss = F.binary_cross_entropy_with_logits(logits, y, reduction="sum") / len(rows)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return {"kind": "step", "step": self.step, "epoch": self.epoch + 1,
                "loss": loss.item(), "step_time": time.perf_counter() - t0}

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
        out = [torch.topk(self.model(SparseInput(X[s:s + batch_size])), k).indices.numpy()
               for s in range(0, X.shape[0], batch_size)]
        return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)

    def evaluate(self):
        """P@k, nDCG@k, PSP@k and coverage@k on the test split, for k = 1, 3, ..., eval_k."""
        ks = tuple(range(1, self.config.eval_k + 1, 2))
        top = self.predict(self.X_test, max(ks))
        ks = tuple(k for k in ks if k <= top.shape[1])
        return metrics.evaluate(self.dataset.Y_test, top, ks=ks, inv_propensity=self.inv_propensity)
