"""engine.tail: labels binned by training frequency, a run's hits and recall per bin (hand-worked
toy cases), the predictions of a stored run, and bad input refused with a named error."""

import math

import numpy as np
import pytest
import scipy.sparse as sp

from engine import (PROPENSITY_CONSTANTS, ConfigError, RunNotFoundError, RunStore, TrainConfig, Trainer, evaluate,
                    frequency_bins, generate, predict_run, save_dataset, tail_by_frequency)


def csr(rows, L):
    """A 0/1 CSR matrix (len(rows), L) whose row i holds the labels rows[i]."""
    data = [(i, l) for i, labels in enumerate(rows) for l in labels]
    i, l = zip(*data) if data else ((), ())
    return sp.csr_matrix((np.ones(len(data)), (i, l)), shape=(len(rows), L))


# training frequencies 3, 2, 1, 0 for labels 0..3
Y_TRAIN = csr([[0, 1, 2], [0, 1], [0]], 4)


def test_labels_are_binned_most_frequent_first_ties_by_id():
    assert frequency_bins(Y_TRAIN, 2).tolist() == [0, 0, 1, 1]
    assert frequency_bins(Y_TRAIN, 4).tolist() == [0, 1, 2, 3]
    # counts 1, 2, 2, 0, 1: order 1, 2, 0, 4, 3; 5 labels in 2 bins of 3 and 2
    Y = csr([[0, 1, 2, 4], [1, 2]], 5)
    assert frequency_bins(Y, 2).tolist() == [0, 0, 0, 1, 1]
    assert frequency_bins(Y, 1).tolist() == [0] * 5


def test_hit_share_recall_and_pair_share_by_hand():
    # test: point 0 holds {0, 2}, point 1 holds {3}; top 2: [0, 1] finds 0, [3, 2] finds 3
    Y_test = csr([[0, 2], [3]], 4)
    rows = tail_by_frequency(Y_TRAIN, Y_test, np.array([[0, 1], [3, 2]]), k=2, n_bins=2)
    assert rows == [
        {"bin": 1, "labels": 2, "min_count": 2, "max_count": 3, "test_pairs": 1, "hits": 1, "hit_share": 0.5,
         "recall": 1.0, "pair_share": 1 / 3},
        {"bin": 2, "labels": 2, "min_count": 0, "max_count": 1, "test_pairs": 2, "hits": 1, "hit_share": 0.5,
         "recall": 0.5, "pair_share": 2 / 3},
    ]
    # at k = 1 point 1's first guess, 3, still hits; -1 (no prediction) never does
    rows = tail_by_frequency(Y_TRAIN, Y_test, np.array([[1, -1], [3, -1]]), k=2, n_bins=2)
    assert [r["hits"] for r in rows] == [0, 1] and [r["hit_share"] for r in rows] == [0.0, 1.0]


def test_nothing_to_divide_by_is_nan():
    # no hit at all: no share; bin 2 (labels 2, 3) has no test pair: no recall
    rows = tail_by_frequency(Y_TRAIN, csr([[0], [1]], 4), np.array([[2], [3]]), k=1, n_bins=2)
    assert all(math.isnan(r["hit_share"]) for r in rows)
    assert rows[0]["recall"] == 0.0 and math.isnan(rows[1]["recall"])


@pytest.mark.parametrize("n_bins", [0, 5, -1, 2.0, True, "10"])
def test_a_bin_count_outside_1_to_L_is_refused(n_bins):
    with pytest.raises(ConfigError, match=r"n_bins must be an integer in \[1, L=4\]"):
        frequency_bins(Y_TRAIN, n_bins)


@pytest.mark.parametrize("Y_test, top, k, message", [
    (csr([[0]], 5), np.array([[0]]), 1, "Y_train has 4 labels but Y_test has 5"),
    (csr([[0]], 4), np.array([[0], [1]]), 1, r"top must have shape \(N=1, K\)"),
    (csr([[0]], 4), np.array([[0]]), 2, r"k must be an integer in \[1, K=1\]"),
    (csr([[0]], 4), np.array([[4]]), 1, r"label id 4, outside \[-1, L=4\)"),
    (csr([[0]], 4), np.array([[0.0]]), 1, "integer label ids"),
    (np.ones((1, 4)), np.array([[0]]), 1, "Y_true must be a scipy.sparse matrix"),
])
def test_bad_predictions_are_refused(Y_test, top, k, message):
    with pytest.raises(ConfigError, match=message):
        tail_by_frequency(Y_TRAIN, Y_test, top, k=k, n_bins=2)


def test_the_standard_propensity_constants():
    assert PROPENSITY_CONSTANTS == {"Amazon": (0.6, 2.6), "Wikipedia": (0.5, 0.4), "others": (0.55, 1.5)}


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory):
    """A run of 2 epochs on a small generated set, stored with its checkpoint, and its trainer."""
    path = tmp_path_factory.mktemp("tail_data")
    save_dataset(generate(n_points=300, n_features=80, n_labels=120, n_clusters=6, seed=1, name="tiny"), path)
    config = TrainConfig.of(data=str(path), head="group_shared", hidden=32, fanin=8, group_size=8, epochs=2)
    run = RunStore(tmp_path_factory.mktemp("tail_runs")).create(config)
    trainer = Trainer(config)
    records = list(trainer.recorded(run))
    return run, trainer, [r for r in records if r["kind"] == "eval"][-1]


def test_a_stored_run_predicts_as_its_evaluation_did(stored_run):
    run, trainer, last = stored_run
    top = predict_run(run, k=5)
    assert top.shape == (trainer.dataset.n_test, 5)
    assert np.array_equal(top, trainer.predict(trainer.X_test, 5))
    scores = evaluate(trainer.dataset.Y_test, top, ks=(1, 5), inv_propensity=trainer.inv_propensity)
    assert scores["P@1"] == last["P@1"] and scores["PSP@5"] == last["PSP@5"]
    rows = tail_by_frequency(trainer.dataset.Y_train, trainer.dataset.Y_test, top, k=5)
    assert [r["bin"] for r in rows] == list(range(1, 11)) and sum(r["labels"] for r in rows) == 120
    assert sum(r["hits"] for r in rows) == round(scores["P@5"] * 5 * trainer.dataset.n_test)


def test_a_run_without_a_checkpoint_is_refused(tmp_path, stored_run):
    run = RunStore(tmp_path).create(stored_run[0].config)
    with pytest.raises(RunNotFoundError, match="no checkpoint"):
        predict_run(run)
