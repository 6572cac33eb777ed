"""Early stopping on a validation split (engine/validation.py): the split, the stop, the best weights
kept, a stopped run that stays complete, and its settings checked."""

import math
import re

import numpy as np
import pytest
import torch

from engine import ConfigError, RunStore, TrainConfig, Trainer, generate
from engine.__main__ import main
from engine.validation import BestWeights, validation_rows

STOPS = dict(hidden=32, fanin=8, group_size=4, batch_size=64, val_fraction=0.2, patience=2, eval_every=2,
             lr=0.05, epochs=12, dropout=0.0, warmup=0.0, decay="none", dense_share=0)   # on `tiny`: the best at step 28, stops at 32 of 48


@pytest.fixture(scope="module")
def tiny():
    return generate(n_points=400, n_features=60, n_labels=50, n_clusters=5, mean_labels=3.0,
                    mean_features=8.0, seed=3, name="tiny")


def test_the_split_is_seeded_disjoint_and_whole():
    fit, val = validation_rows(1000, 0.1, seed=4)
    assert len(val) == 100 and len(fit) == 900
    assert np.array_equal(np.union1d(fit, val), np.arange(1000)) and not np.intersect1d(fit, val).size
    assert np.all(np.diff(val) > 0) and np.array_equal(val, validation_rows(1000, 0.1, seed=4)[1])
    assert not np.array_equal(val, validation_rows(1000, 0.1, seed=5)[1])
    assert len(validation_rows(1000, 0.0, seed=4)[1]) == 0
    assert len(validation_rows(7, 0.01, seed=0)[1]) == 1                  # a split holds a point at least
    with pytest.raises(ConfigError, match="leaves none to train on"):
        validation_rows(1, 0.5, seed=0)


def test_settings_are_checked():
    with pytest.raises(ConfigError, match=r"patience=3 \(early stopping\) needs a validation split"):
        TrainConfig.of(patience=3)
    with pytest.raises(ConfigError, match="val_fraction"):
        TrainConfig.of(val_fraction=1.0)


def test_training_stops_when_patience_runs_out_and_keeps_the_best_weights(tiny):
    trainer = Trainer(TrainConfig.of(**STOPS), tiny)
    assert trainer.n_train == 240 and trainer.X_val.shape[0] == 60        # 300 training points, 20 % held out
    records = list(trainer.run())
    evals = [r for r in records if r["kind"] == "eval"]
    *during, last = evals
    best = max(during, key=lambda r: r["val_nDCG@5"])
    assert trainer.step < trainer.total_steps and trainer.finished          # it stopped early
    assert [r["step"] for r in during[-2:]] == [trainer.step - 2, trainer.step]     # two evaluations past the best
    assert all(r["val_nDCG@5"] <= best["val_nDCG@5"] for r in during[-2:])
    assert last["best_step"] == best["step"] < trainer.step and last["step"] == trainer.step
    for key in ("P@1", "P@5", "nDCG@5", "PSP@5", "val_nDCG@5"):             # the best evaluation's model
        assert last[key] == pytest.approx(best[key]), key
    assert list(trainer.run()) == []                                        # nothing left to do


def test_without_a_validation_split_nothing_changes(tiny):
    plain = dict(hidden=32, fanin=8, group_size=4, epochs=2, batch_size=64)
    records = list(Trainer(TrainConfig.of(**plain), tiny).run())
    assert all("val_nDCG@5" not in r and "best_step" not in r for r in records)
    trainer = Trainer(TrainConfig.of(**plain), tiny)
    assert trainer.best is None and trainer.n_train == tiny.n_train


def test_a_stopped_run_is_complete_on_resume_and_its_checkpoint_holds_the_best(tiny, tmp_path, capsys):
    from engine import save_dataset
    save_dataset(tiny, tmp_path / "tiny")
    config = TrainConfig.of(data=str(tmp_path / "tiny"), **STOPS)
    run = RunStore(tmp_path / "runs").create(config)
    records = list(Trainer(config).recorded(run))
    assert records[-1]["best_step"] == 28
    assert main(["train", "--resume", str(run.path)]) == 0
    assert "is complete (32 of 48 steps): nothing to resume" in capsys.readouterr().out
    again = Trainer(config)
    run.load_checkpoint(again.model)
    assert again.evaluate()["P@1"] == pytest.approx(records[-1]["P@1"])


def test_best_weights_state_round_trips_and_bad_state_is_refused():
    model = torch.nn.Linear(3, 2)
    best = BestWeights(patience=2)
    best.update(5, 0.4, model)
    best.update(6, 0.3, model)
    tensors, meta = best.state()
    assert set(tensors) == {"best/weight", "best/bias"} and meta == {"score": 0.4, "step": 5, "waited": 1,
                                                                     "restored": False}
    other = BestWeights(patience=2)
    other.load(tensors, meta, model)
    assert (other.score, other.step, other.waited, other.restored) == (0.4, 5, 1, False)
    assert torch.equal(other.weights["weight"], model.weight)
    from engine import CheckpointError
    for bad in (None, {"score": 0.4}, {**meta, "step": "5"}, {**meta, "score": None}):
        with pytest.raises(CheckpointError, match="early-stopping state is malformed"):
            BestWeights(2).load(tensors, bad, model)
    # best weights of another model: named, nothing loaded
    for other_tensors, name, there, here in [
            ({**tensors, "best/weight": torch.zeros(5, 3)}, "weight", (5, 3), (2, 3)),
            ({"best/weight": tensors["best/weight"]}, "bias", "missing", (2,)),
            ({**tensors, "best/extra": torch.zeros(1)}, "extra", (1,), "not in the model")]:
        target = BestWeights(2)
        with pytest.raises(CheckpointError, match=re.escape(f"{name!r} is {there} there, {here} here")):
            target.load(other_tensors, meta, model)
        assert target.weights is None and target.score == -math.inf
