"""Early stopping on a validation split cut from the training set (never from the test split).

    fit, val = validation_rows(n_train, fraction, seed)   # sorted row ids: the points trained on, held out
    best = BestWeights(patience)
    score = validation_score(Y_val, top)  # nDCG@5 of the top-5 predictions (N, 5) on the held-out rows
    best.update(step, score, model)     # a strictly higher score: the model's weights kept (on the CPU)
    best.spent                          # `patience` evaluations in a row without a new best
    best.restore(model)                 # the best weights back into the model
    tensors, meta = best.state()        # for the checkpoint; best.load(tensors, meta) is the inverse

The score is the validation nDCG@5 of each evaluation (`SCORE`): it rewards the top of the ranking
as P@1 does and the next four places too, so it moves less with the draw of a small split. A run
with a validation split ends with the weights of its best evaluation, whether its patience ran out
or its epochs did.
"""

import math

import numpy as np
import torch

from . import metrics
from .errors import CheckpointError, ConfigError

SCORE_K = 5
SCORE = f"nDCG@{SCORE_K}"


def validation_rows(n, fraction, seed):
    """(fit rows, validation rows): sorted int64 ids of the n training points, round(fraction · n) of
    them (at least 1 when fraction > 0) drawn for validation by default_rng((seed, 1)); validation
    rows empty when fraction is 0. ConfigError when the split would leave nothing to train on."""
    n_val = 0 if fraction == 0 else max(1, round(fraction * n))
    if n_val >= n:
        raise ConfigError(f"val_fraction={fraction:g} of {n} training points leaves none to train on")
    val = np.sort(np.random.default_rng([seed, 1]).choice(n, n_val, replace=False)) if n_val else np.zeros(0, np.int64)
    fit = np.setdiff1d(np.arange(n), val, assume_unique=True)
    return fit.astype(np.int64), val.astype(np.int64)


def validation_score(Y, top):
    """The early-stopping score of top-k predictions `top` (N, k), k = SCORE_K (fewer where there
    are fewer labels), against the held-out labels Y (N, L): nDCG@k."""
    k = top.shape[1]
    return metrics.evaluate(Y, top, ks=(k,))[f"nDCG@{k}"]


class BestWeights:
    """The best evaluation so far by validation score: its step, score, the model's weights then
    (CPU copies of the state dict), and how many evaluations have passed without a better one."""

    def __init__(self, patience):
        self.patience = patience
        self.score, self.step, self.waited, self.restored = -math.inf, 0, 0, False
        self.weights = None

    @torch.no_grad()
    def update(self, step, score, model):
        """Count an evaluation at `step` scoring `score`; keep the model's weights when it is a new best."""
        if score > self.score:
            self.score, self.step, self.waited = score, step, 0
            self.weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            self.waited += 1

    @property
    def spent(self):
        """Whether training should stop: patience evaluations in a row without a new best (0: never)."""
        return 0 < self.patience <= self.waited

    def in_place(self, step):
        """Whether the model at `step` holds the best weights (restored, or the best is now)."""
        return self.restored or self.step == step

    @torch.no_grad()
    def restore(self, model):
        model.load_state_dict(self.weights)
        self.restored = True

    def state(self):
        """(tensors "best/<name>", meta) for a checkpoint."""
        meta = {"score": self.score if self.weights is not None else None, "step": self.step,
                "waited": self.waited, "restored": self.restored}
        return {f"best/{k}": v for k, v in (self.weights or {}).items()}, meta

    def load(self, tensors, meta, model):
        """The inverse of state(), from a checkpoint's tensors and its "best" metadata (a dict); the
        best weights must be `model`'s state dict, name for name and shape for shape."""
        try:
            score, step, waited, restored = meta["score"], meta["step"], meta["waited"], meta["restored"]
        except (KeyError, TypeError):
            raise CheckpointError("the checkpoint's early-stopping state is malformed") from None
        weights = {k[len("best/"):]: v for k, v in tensors.items() if k.startswith("best/")}
        if (score is None) != (not weights) or type(step) is not int or type(waited) is not int:
            raise CheckpointError("the checkpoint's early-stopping state is malformed")
        want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in weights.items()}
        if weights and got != want:
            name = min(set(got) ^ set(want) or {k for k in want if got[k] != want[k]})
            raise CheckpointError(f"the checkpoint's best weights do not fit this model: {name!r} is "
                                  f"{got.get(name, 'missing')} there, {want.get(name, 'not in the model')} here")
        self.score = -math.inf if score is None else float(score)
        self.step, self.waited, self.restored, self.weights = step, waited, bool(restored), weights or None
