"""The memory model (engine/memory.py): head memory against the parameters the heads really
allocate, the fused loss's buffers, and the whole run's estimate by phase."""

import pytest

from engine import ModelConfig, TrainConfig, XMCModel, estimate_bytes, head_memory, head_params
from engine.grouping import CENTROID_POINTS
from engine.memory import (CHUNK, PIFA_BUILD, centroid_index_memory, clustering_memory, grouping_memory,
                           head_shape, step_memory)


@pytest.mark.parametrize("kw", [
    dict(head="dense"),
    dict(head="fixed_fanin", fanin=8),
    dict(head="group_shared", fanin=8, group_size=4),
    dict(head="group_shared", fanin=8, group_size=7),     # 50 labels: the last group padded
    dict(head="dense_sparse", fanin=8, group_size=4, head_size=10),
    dict(head="mach", mach_buckets=16, mach_reps=2),
])
def test_params_match_the_model(kw):
    c = ModelConfig.of(n_features=30, n_labels=50, hidden=16, **kw)
    model = XMCModel(c)
    mem = head_memory(c, batch_size=8)
    assert head_params(c) == model.head_params()
    assert mem["params"] == 4 * model.head_params() == mem["grads"]
    assert mem["optimizer"] == 2 * mem["params"]
    index = model.sparse.idx.numel() * 4 if model.sparse is not None else 0
    assert mem["index"] == index
    # the unfused loss holds 5 (B, L) buffers at its peak (logits, targets, ...); the fused one no logits
    unfused = {"dense": 50, "group_shared": 5, "dense_sparse": 10, "mach": 2 * 16}.get(c.head.name, 0)
    assert mem["logits"] == 5 * 8 * unfused * 4
    assert mem["total"] == sum(v for k, v in mem.items() if k != "total")


def test_the_fused_loss_holds_its_gradients_and_batch_buffers_not_logits():
    c = ModelConfig.of(n_features=10, n_labels=1000, hidden=64, head="group_shared", fanin=8, group_size=10,
                       dense_share=0)
    s = head_shape(c)
    assert (s.fused_slots, s.fused_groups, s.fused_params) == (1000, 100, 1000 * 9)
    mem = step_memory(s, 32, threads=4)
    assert mem["logits"] == 0
    assert mem["loss"] == 4 * 1000 * 9 + (4 + 3) * 32 * 64 * 4 + 17 * 1000
    # a dense part beside it (dense_sparse) trains unfused: its logits are counted, the tail's are not
    ds = head_shape(ModelConfig.of(n_features=10, n_labels=1000, hidden=64, head="dense_sparse", fanin=8,
                                group_size=10, head_size=100))
    assert ds.unfused == 100 and ds.fused_slots == 900 and ds.params == 65 * 100 + 900 * 9


def test_sparse_is_k_over_d_of_dense():
    dense = head_memory(ModelConfig.of(n_features=10, n_labels=100_000, hidden=512, head="dense"))
    sparse = head_memory(ModelConfig.of(n_features=10, n_labels=100_000, hidden=512, head="group_shared",
                                     fanin=32, group_size=32, dense_share=0))
    assert sparse["params"] / dense["params"] == pytest.approx(33 / 513, rel=1e-3)
    assert sparse["total"] < dense["total"] / 10                          # no (B, L) logits


def test_the_estimate_counts_the_grouping_as_its_own_phase():
    # clustered groups build PIFA embeddings and cluster them before training; the peak is the
    # larger of that phase and training. Without the data's entry bound, the dense one (L·D
    # entries): then building them is the larger step
    D, L = 2000, 5000
    random = estimate_bytes(TrainConfig.of(head="group_shared", hidden=64, fanin=8, group_size=4), (D, L))
    clustered = estimate_bytes(TrainConfig.of(head="group_shared", hidden=64, fanin=8, group_size=4,
                                           groups="clustered"), (D, L))
    assert random["grouping"] == 0 and random["total"] == sum(v for k, v in random.items() if k != "total")
    assert clustered["grouping"] == PIFA_BUILD * L * D
    assert clustered["total"] == max(clustered["grouping"], random["total"]) == clustered["grouping"]
    aux = estimate_bytes(TrainConfig.of(head="fixed_fanin", hidden=64, fanin=8, aux=1.0), (D, L))
    assert aux["grouping"] == PIFA_BUILD * L * D
    # sparse embeddings, 10 entries a label, 1250 groups, 2 threads: build 40·e; clustering the CSR
    # (8·e + 8·L) and 3 copies, 160 per label, centroid blocks 3·G·D + T·8T·D floats
    e = 10 * L
    csr = 8 * e + 8 * L
    assert clustering_memory(L, D, 1250, e, threads=2) == max(40 * e, 4 * csr + 160 * L + 4 * (3 * 1250 * D + 2 * 16 * D))
    sparse = estimate_bytes(TrainConfig.of(head="group_shared", hidden=64, fanin=8, group_size=4,
                                        groups="clustered", dense_share=0), (D, L), pifa_nnz=e)
    assert sparse["grouping"] == clustering_memory(L, D, 1250, e) < L * D * 4      # not one dense copy


def test_clustering_memory_has_no_labels_times_features_term():
    # Amazon-670K's shape (670,091 labels, 135,909 features), 30 PIFA entries a label, groups of
    # 32: a dense (L, D) copy would be 364 GB; the sparse embeddings' grouping stays under 1 GB
    L, D = 670_091, 135_909
    assert clustering_memory(L, D, -(-L // 32), 30 * L, threads=16) < 2 ** 30
    # and it grows with the entries and the labels, not with the features (the blocks are capped)
    G = -(-L // 32)
    assert clustering_memory(L, 2 * D, G, 30 * L, threads=16) == clustering_memory(L, D, G, 30 * L, threads=16)
    # centroid input sets of a head on a hidden layer: the points' hidden rows and one block of
    # groups' PIFA rows (CHUNK/4 entries: 20 bytes each) and top-k, no (L, d) PIFA
    centroid = estimate_bytes(TrainConfig.of(head="fixed_fanin", hidden=64, fanin=8, index_init="centroid"), (D, L))
    assert centroid["grouping"] == centroid_index_memory(L, 64, CENTROID_POINTS, 1, 8)
    G = -(-L // 32)
    assert centroid_index_memory(L, 512, CENTROID_POINTS, 32, 64) == \
        12 * CENTROID_POINTS * 512 + 4 * G * 64 + 20 * (CHUNK // 4) + 40 * (CHUNK // 4 // 32)
    assert centroid_index_memory(L, 512, CENTROID_POINTS, 32, 64) < 2 ** 28   # a float32 (L, d) PIFA: 1.3 GB
    # more labels: only the index sets grow (G·k), not the PIFA rows
    assert centroid_index_memory(2 * L, 512, CENTROID_POINTS, 32, 64) - \
        centroid_index_memory(L, 512, CENTROID_POINTS, 32, 64) == 4 * (-(-2 * L // 32) - G) * 64
    grouped = TrainConfig.of(head="dense_sparse", head_size=1000, hidden=512, fanin=64, group_size=32,
                             index_init="centroid").model_config(D, L)
    assert grouping_memory(grouped) == centroid_index_memory(L - 1000, 512, CENTROID_POINTS, 32, 64)
