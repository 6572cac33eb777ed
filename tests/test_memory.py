"""Analytic head memory against the parameters the heads really allocate."""

import pytest

from engine.memory import head_memory
from engine import ModelConfig, XMCModel


@pytest.mark.parametrize("kw", [
    dict(head="dense"),
    dict(head="fixed_fanin", fanin=8),
    dict(head="group_shared", fanin=8, group_size=4),
    dict(head="group_shared", fanin=8, group_size=7),     # 50 labels: the last group padded
    dict(head="dense_sparse", fanin=8, group_size=4, head_size=10),
])
def test_params_match_the_model(kw):
    c = ModelConfig(n_features=30, n_labels=50, hidden=16, **kw)
    model = XMCModel(c)
    mem = head_memory(c, batch_size=8)
    assert mem["params"] == 4 * model.head_params()
    assert mem["optimizer"] == 2 * mem["params"]
    assert mem["logits"] == 2 * 8 * 50 * 4
    index = model.sparse.idx.numel() * 4 if model.sparse is not None else 0
    assert mem["index"] == index


def test_sparse_is_k_over_d_of_dense():
    dense = head_memory(ModelConfig(n_features=10, n_labels=100_000, hidden=512, head="dense"))
    sparse = head_memory(ModelConfig(n_features=10, n_labels=100_000, hidden=512, head="group_shared",
                                     fanin=32, group_size=32))
    assert sparse["params"] / dense["params"] == pytest.approx(33 / 513, rel=1e-3)
