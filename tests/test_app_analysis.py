"""app/analysis.py: the computations behind the views, called directly (no Streamlit): the label
map's vectors and layout, the connectivity of a sparse head, memory analytic against measured, the
device a run trains on."""

import numpy as np
import pytest
import scipy.sparse as sp

from engine import TrainConfig, Trainer, pifa

from app import analysis
from apptest import tiny  # noqa: F401  (fixture)


def test_pifa_is_the_normalised_mean_of_positive_rows():
    # the label map's PIFA vectors: engine.pifa as a csr matrix
    X = sp.csr_matrix(np.array([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0]], np.float32))
    Y = sp.csr_matrix(np.array([[1, 0], [1, 0], [0, 0]], np.float32))
    P = pifa(X, Y, dense=False).toarray()
    np.testing.assert_allclose(P[0], np.array([1, 2, 0]) / np.sqrt(5), rtol=1e-6)
    np.testing.assert_array_equal(P[1], 0)                        # no positives: a zero row


def test_embed_2d_shapes_and_seed():
    E = np.random.default_rng(0).random((40, 12)).astype(np.float32)
    a, b = analysis.embed_2d(E, "pca", seed=3), analysis.embed_2d(E, "pca", seed=3)
    assert a.shape == (40, 2) and np.array_equal(a, b)
    with pytest.raises(ValueError, match="method"):
        analysis.embed_2d(E, "tsne")


def test_sample_labels_says_how_many():
    assert len(analysis.sample_labels(100, 500)) == 100
    s = analysis.sample_labels(10_000, 500, seed=1)
    assert len(s) == 500 and np.all(np.diff(s) > 0)


def test_connectivity_matrix_and_reuse():
    idx = np.array([[0, 2], [1, 2], [2, 3]], np.int32)
    rows, M, sampled = analysis.connectivity_matrix(idx, 5)
    assert not sampled and M.sum(axis=1).tolist() == [2, 2, 2] and M[:, 2].tolist() == [1, 1, 1]
    assert analysis.reuse_counts(idx, 5).tolist() == [1, 1, 3, 1, 0]
    rows, M, sampled = analysis.connectivity_matrix(np.tile(idx, (100, 1)), 5, max_groups=50)
    assert sampled and M.shape == (50, 5)


def test_model_structure_of_a_group_shared_head(tiny):
    ds, _ = tiny
    cfg = TrainConfig.of(data="x", head="group_shared", hidden=32, fanin=8, group_size=8, epochs=1, dense_share=0)
    model = Trainer(cfg, dataset=ds).model
    groups, idx = model.label_groups(), analysis.head_index(model)
    assert idx.shape == (15, 8) and groups.shape == (120,)
    assert np.bincount(groups).max() <= 8                          # at most m labels per group
    rows = analysis.group_inputs_table(model, 0, ds.feature_names)
    assert len(rows) == 8 and rows[0]["input"].startswith("h") and "f0" in rows[0]["strongest features (first layer)"]
    W = analysis.label_weight_vectors(model)
    assert W.shape == (120, 32) and W.getnnz(axis=1).max() <= 8
    dense = Trainer(TrainConfig.of(data="x", head="dense", hidden=32, epochs=1), dataset=ds).model
    assert dense.label_groups() is None and analysis.head_index(dense) is None


@pytest.mark.parametrize("head", ["dense", "fixed_fanin", "group_shared", "dense_sparse", "mach"])
def test_measured_memory_matches_the_analytic_estimate(head):
    cfg = TrainConfig.of(head=head, hidden=64, fanin=16, group_size=10, batch_size=32)   # no padded slots
    a = analysis.memory_estimate(cfg, 100, 1000)
    m = analysis.measure_memory(cfg, 100, 1000)
    for part in analysis.PERSISTENT:
        assert m[part] == a[part], (part, m[part], a[part])


def test_run_device_reads_the_device_records():
    step = {"kind": "step", "step": 1}
    gpu = {"kind": "device", "step": 0, "device": "cuda:0", "why": "torch and CuPy see a GPU"}
    cpu = {"kind": "device", "step": 8, "device": "cpu", "why": "device='cpu' was asked"}
    assert analysis.run_device([]) is None                                        # nothing recorded yet
    assert analysis.run_device([step])[0] == "cpu"                                # before device records
    assert analysis.run_device([gpu, step]) == ("cuda:0", "torch and CuPy see a GPU")
    assert analysis.run_device([gpu, step, cpu, step]) == ("cpu", "device='cpu' was asked (resumed; earlier parts on "
                                                                  "cuda:0)")
    assert analysis.run_device([gpu, step, gpu]) == ("cuda:0", "torch and CuPy see a GPU")


def test_training_curve_sums_the_step_times_up_to_each_evaluation():
    records = [{"kind": "device", "step": 0, "device": "cpu"}, {"kind": "eval", "step": 0, "P@1": 0.1},
               {"kind": "step", "step": 1, "step_time": 0.5}, {"kind": "step", "step": 2, "step_time": 0.25},
               {"kind": "eval", "step": 2, "P@1": 0.4, "eval_time": 9.0}, {"kind": "step", "step": 3, "step_time": 1.0},
               {"kind": "eval", "step": 3, "P@1": 0.3}, {"kind": "eval", "step": 3, "P@1": 0.4, "best_step": 2}]
    assert analysis.training_curve(records) == [(0.0, 0.1), (0.75, 0.4), (1.75, 0.3), (1.75, 0.4)]
    assert analysis.training_curve(records, "P@5") == []
