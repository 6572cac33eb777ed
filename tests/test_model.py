"""engine/model.py, what a caller reads off a model: the hidden layer of a whole split (encode_all),
each label's weight vector (label_vectors), the groups of the labels (label_groups, group_slots),
the parts of the head and their parameter count."""

import numpy as np
import pytest
import torch

from engine import ConfigError, TrainConfig, Trainer, generate
from engine.heads import DenseHead
from engine.model import SparseInput


@pytest.fixture(scope="module")
def padded():
    """50 labels: groups of 7 leave padded slots in the last group."""
    return generate(n_points=200, n_features=40, n_labels=50, n_clusters=5, seed=2, name="padded")


def padded_model(dataset, **kw):
    """An untrained model on `padded` (random weights, label-prior biases, labels shuffled into slots)."""
    config = TrainConfig.of(data="padded", **{"hidden": 16, "fanin": 6, "group_size": 7, **kw})
    return Trainer(config, dataset=dataset).model


HEAD_CASES = [{"head": "dense"}, {"head": "group_shared"}, {"head": "fixed_fanin"},
              {"head": "dense_sparse", "head_size": 10}, {"head": "group_shared", "hidden": 0}]
HEAD_IDS = ["dense", "group_shared", "fixed_fanin", "dense_sparse", "group_shared-no-encoder"]


@pytest.mark.parametrize("kw", HEAD_CASES, ids=HEAD_IDS)
def test_label_vectors_score_as_the_model(padded, kw):
    # h·Wᵀ + b in label order equals the model's own logits, slot_logits(h)[:, slot_of_label]
    model = padded_model(padded, **kw)
    W, b = model.label_vectors()
    H = model.encode_all(padded.X_test)
    assert W.shape == (50, model.config.head_in) and b.shape == (50,) and model.training      # mode restored
    model.eval()                                                    # the dense part's dropout off
    with torch.no_grad():
        logits = model.slot_logits(torch.from_numpy(H))[:, model.slot_of_label].numpy()
    np.testing.assert_allclose(H @ W.T + b, logits, rtol=1e-4, atol=1e-5)
    Ws, bs = model.label_vectors(sparse=True)
    assert np.array_equal(Ws.toarray(), W) and np.array_equal(bs, b)


@pytest.mark.parametrize("p", [0.0, 0.4])
def test_the_dense_layer_reads_its_own_dropout_in_training_only(p):
    # Z = dropout_p(h) · Wᵀ + b in training, a mask drawn from torch's RNG; h · Wᵀ + b in eval
    head = DenseHead(12, 5, dropout=p)
    h = torch.randn(7, 12, dtype=torch.float32)
    torch.manual_seed(3)
    z = head(h)
    torch.manual_seed(3)
    mask = torch.nn.functional.dropout(torch.ones_like(h), p)          # 0 or 1/(1-p)
    torch.testing.assert_close(z, torch.nn.functional.linear(h * mask, head.weight, head.bias))
    assert (mask == 0).any() == (p > 0)
    head.eval()
    torch.testing.assert_close(head(h), torch.nn.functional.linear(h, head.weight, head.bias))


@pytest.mark.parametrize("kw", [{"head": "dense"}, {"head": "group_shared"}, {"head": "dense_sparse", "head_size": 10}],
                         ids=["dense", "group_shared", "dense_sparse"])
def test_the_dense_part_takes_the_configs_dense_dropout(padded, kw):
    assert padded_model(padded, dense_dropout=0.25, **kw).dense.drop.p == 0.25
    assert padded_model(padded, dense_dropout=0.0, **kw).dense.drop.p == 0.0


def test_label_vectors_refuse_mach(padded):
    with pytest.raises(ConfigError, match="MACH head has no weight vector per label"):
        padded_model(padded, head="mach", mach_buckets=8, mach_reps=2).label_vectors()


@pytest.mark.parametrize("batch_size", [1, 7, 4096])
def test_encode_all_is_the_eval_mode_encoder_in_batches(padded, batch_size):
    # the same rows as one eval-mode encode of the whole split, whatever the batch; dropout off
    model = padded_model(padded, head="group_shared", dropout=0.5)
    H = model.encode_all(padded.X_train, batch_size=batch_size)
    model.eval()
    with torch.no_grad():
        want = model.encode(SparseInput(padded.X_train)).numpy()
    assert H.shape == (padded.n_train, 16) and H.dtype == np.float32
    np.testing.assert_allclose(H, want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ConfigError, match="X has 39 features, the model reads 40"):
        model.encode_all(padded.X_train[:, :39])


@pytest.mark.parametrize("kw", HEAD_CASES[1:], ids=HEAD_IDS[1:])
def test_groups_and_their_slots_agree(padded, kw):
    # label l is in slot j of group g exactly when group_slots(g)[j] == l; the dense part has no group
    model = padded_model(padded, **kw)
    groups, m = model.label_groups(), model.sparse.group_size
    assert groups.shape == (50,) and (groups >= 0).sum() == 50 - model.n_dense
    seen = []
    for g in range(model.sparse.n_groups):
        slots = model.group_slots(g)
        assert slots.shape == (m,)
        real = slots[slots >= 0]
        assert (groups[real] == g).all() and sorted(real.tolist()) == np.flatnonzero(groups == g).tolist()
        seen += real.tolist()
    assert sorted(seen) == np.flatnonzero(groups >= 0).tolist()            # every sparse label once
    with pytest.raises(ConfigError, match="group"):
        model.group_slots(model.sparse.n_groups)


def test_dense_and_mach_have_no_groups(padded):
    for kw in ({"head": "dense"}, {"head": "mach", "mach_buckets": 8, "mach_reps": 2}):
        model = padded_model(padded, **kw)
        assert model.label_groups() is None
        with pytest.raises(ConfigError, match="the model has 0 groups"):
            model.group_slots(0)


@pytest.mark.parametrize("kw", HEAD_CASES + [{"head": "mach", "mach_buckets": 8, "mach_reps": 2}],
                         ids=HEAD_IDS + ["mach"])
def test_head_params_counts_the_head_parts(padded, kw):
    model = padded_model(padded, **kw)
    parts = model.head_parts()
    assert parts and all(p is not None for p in parts) and model.aux not in parts
    assert model.head_params() == sum(p.numel() for part in parts for p in part.parameters())
