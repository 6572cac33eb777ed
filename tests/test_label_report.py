"""engine.label_report: one label's numbers, checked on hand-worked cases and on a model."""

import numpy as np
import pytest
import scipy.sparse as sp

from engine import ConfigError, TrainConfig, Trainer, generate, label_report, label_scores, nearest_labels


def test_label_scores_by_hand():
    # 3 test points, 4 labels, top-2 lists (-1: no label)
    Y = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 0, 1], [1, 0, 0, 0]]))
    top = np.array([[0, 2], [3, 0], [1, -1]])
    s = label_scores(Y, top)
    assert s["positives"].tolist() == [2, 2, 0, 1]
    assert s["predicted"].tolist() == [2, 1, 1, 1]
    assert s["hits"].tolist() == [1, 0, 0, 1]
    assert s["precision"].tolist() == [0.5, 0.0, 0.0, 1.0]
    assert s["recall"][[0, 1, 3]].tolist() == [0.5, 0.0, 1.0] and np.isnan(s["recall"][2])
    with pytest.raises(ConfigError, match="one list per test point"):
        label_scores(Y, top[:2])


@pytest.mark.parametrize("dense", [True, False], ids=["dense", "csr"])
def test_nearest_labels_by_cosine(dense):
    E = np.array([[1.0, 0, 0], [2.0, 0.1, 0], [0, 1.0, 0], [0, 0, 0], [-1.0, 0, 0]])
    E = E if dense else sp.csr_matrix(E)
    ids, cos = nearest_labels(E, 0, n=3)
    assert ids.tolist() == [1, 2, 4] and cos[0] == pytest.approx(2 / np.hypot(2, 0.1)) and cos[2] == -1
    assert len(nearest_labels(E, 3)[0]) == 0                          # a zero row has no neighbours


@pytest.fixture(scope="module")
def trained():
    ds = generate(n_points=300, n_features=60, n_labels=40, n_clusters=4, seed=3, name="small")
    trainer = Trainer(TrainConfig.of(head="group_shared", hidden=16, fanin=4, group_size=4, epochs=1), dataset=ds)
    return trainer, ds, trainer.predict(trainer.X_test, 3)


def test_label_report_agrees_with_the_model_and_the_scores(trained):
    trainer, ds, top = trained
    model = trainer.model
    freq = np.asarray(ds.Y_test.sum(0)).ravel()
    assert label_report(model, ds, int(np.argmax(freq)), top)["group"] is None    # in the dense part
    label = int(np.argmax(np.where(model.label_groups() >= 0, freq, -1)))        # the sparse part's most frequent
    r = label_report(model, ds, label, top, embeddings=np.eye(40) + 0.01, max_missed=2)
    s = label_scores(ds.Y_test, top)
    assert r["test_freq"] == s["positives"][label] == freq[label]
    assert r["train_freq"] == int(ds.Y_train[:, label].sum())
    assert (r["hits"], r["predicted"]) == (s["hits"][label], s["predicted"][label])
    assert r["recall"] == pytest.approx(s["recall"][label]) and r["k"] == 3
    assert r["n_missed"] == r["test_freq"] - r["hits"] and len(r["missed"]) == min(2, r["n_missed"])
    assert all(ds.Y_test[i, label] and label not in top[i] for i in r["missed"])
    g = model.label_groups()[label]
    assert r["group"] == g and label in r["group_labels"] and len(r["group_labels"]) == 4
    slots = model.group_slots(g)
    j = int(np.flatnonzero(slots == label)[0])
    want = dict(zip(model.sparse.idx[g].tolist(), model.sparse.weight[g, j].tolist()))
    assert dict(zip(r["inputs"].tolist(), r["weights"].tolist())) == pytest.approx(want)   # its k inputs
    assert np.all(np.diff(np.abs(r["weights"])) <= 0) and label not in r["neighbours"]


@pytest.mark.parametrize("label", [-1, 40, 2.0, True, "3"])
def test_a_label_that_is_not_one_is_a_named_error(trained, label):
    trainer, ds, top = trained
    with pytest.raises(ConfigError, match=r"label id in \[0, 40\)"):
        label_report(trainer.model, ds, label, top)
    with pytest.raises(ConfigError, match="one list per test point"):
        label_report(trainer.model, ds, 0, top[:5])
