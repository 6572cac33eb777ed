"""Model, Trainer and run store on a tiny generated dataset."""

import itertools
import json
import math

import numpy as np
import pytest
import torch

from engine.data import generate
from engine import ConfigError, ModelConfig, Run, RunStore, TrainConfig, Trainer, XMCModel
from engine.model import SparseInput


@pytest.fixture(scope="module")
def tiny():
    return generate(n_points=400, n_features=60, n_labels=50, n_clusters=5, mean_labels=3.0,
                    mean_features=8.0, seed=3, name="tiny")


def config(**kw):
    base = dict(hidden=32, fanin=8, group_size=4, epochs=2, batch_size=64, eval_k=5)
    return TrainConfig.of(**{**base, **kw})


@pytest.mark.parametrize("settings", [
    dict(head="dense"),
    dict(head="fixed_fanin"),
    dict(head="group_shared"),
    dict(head="group_shared", groups="clustered"),
    dict(head="dense_sparse", head_size=10, groups="clustered"),
    dict(head="mach", mach_buckets=12, mach_reps=2),
    dict(head="group_shared", hidden=0, groups="clustered", index_init="centroid", lr=1e-2),
], ids=lambda s: "-".join(map(str, s.values())))
def test_records_and_learning(tiny, settings):
    # one step record per batch, an eval record per epoch, and the loss goes down
    trainer = Trainer(config(epochs=4, **settings), tiny)
    records = list(trainer.run())
    steps = [r for r in records if r["kind"] == "step"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert len(steps) == trainer.total_steps == 4 * 5
    assert len(evals) == 4 and evals[-1]["step"] == trainer.total_steps
    assert set(steps[0]) == {"kind", "step", "epoch", "loss", "head_loss", "lr", "step_time"}
    for key in ("P@1", "P@3", "P@5", "nDCG@5", "PSP@5", "cov@5", "eval_time"):
        assert key in evals[-1]
    assert 0.0 <= evals[-1]["P@1"] <= 1.0
    assert np.mean([r["loss"] for r in steps[-5:]]) < np.mean([r["loss"] for r in steps[:5]])


def test_same_seed_same_numbers(tiny):
    # determinism on the CPU: the same config and seed give identical losses and metrics
    a = list(Trainer(config(head="group_shared"), tiny).run())
    b = list(Trainer(config(head="group_shared"), tiny).run())
    strip = lambda rs: [{k: v for k, v in r.items() if not k.endswith("_time")} for r in rs]
    assert strip(a) == strip(b)
    c = list(Trainer(config(head="group_shared", seed=1), tiny).run())
    assert strip(a) != strip(c)


def test_auxiliary_weight_decays_to_zero(tiny):
    trainer = Trainer(config(head="group_shared", aux=0.5, aux_clusters=5, aux_until=0.5, epochs=4), tiny)
    steps = [r for r in trainer.run() if r["kind"] == "step"]
    assert steps[0]["aux_loss"] > 0
    half = trainer.total_steps // 2
    assert all("aux_loss" in r for r in steps[:half]) and not any("aux_loss" in r for r in steps[half + 1:])
    assert trainer.model.cluster_of_label.max() == 4


def test_sparse_slots_cover_every_label_once(tiny):
    # whatever the grouping, each label owns one slot of the head; padding slots hold no label
    for settings in (dict(head="group_shared", group_size=7, groups="clustered"),
                     dict(head="dense_sparse", head_size=10, group_size=7)):
        model = Trainer(config(**settings), tiny).model
        slots = model.slot_of_label.numpy()
        assert sorted(slots) == sorted(set(slots)) and len(slots) == 50
        assert (model.label_of_slot >= 0).sum() == 50 and model.n_slots % 7 == model.n_dense % 7
    # dense_sparse: the 10 most frequent labels sit in the dense part
    counts = tiny.Y_train.sum(axis=0).A1
    assert set(np.flatnonzero(slots < 10)) == set(np.argsort(-counts, kind="stable")[:10])


@pytest.mark.parametrize("regrow", ["random", "gradient"])
def test_dynamic_sparse_training_moves_connections(tiny, regrow):
    # updates every 5 steps until 3/4 of training; fan-in stays k; records are JSON-able
    trainer = Trainer(config(head="group_shared", groups="clustered", dst=regrow, dst_every=5,
                             dst_zeta=0.3, epochs=6), tiny)
    before = trainer.model.sparse.idx.clone()
    records = list(trainer.run())
    dst = [r for r in records if r["kind"] == "dst"]
    assert [r["step"] for r in dst] == trainer.dst.update_steps() and len(dst) >= 3
    assert all(r["step"] <= 0.75 * trainer.total_steps for r in dst)
    idx = trainer.model.sparse.idx
    assert idx.shape == before.shape and not torch.equal(idx, before)
    assert all(len(set(row)) == 8 for row in idx.tolist())
    json.dumps(dst)
    steps = [r for r in records if r["kind"] == "step"]
    assert np.mean([r["loss"] for r in steps[-5:]]) < np.mean([r["loss"] for r in steps[:5]])


@pytest.mark.parametrize("head", ["fixed_fanin", "group_shared", "dense_sparse"])
def test_centroid_index_init(tiny, head):
    # each group's first inputs are the k largest entries of its centroid in h-space
    trainer = Trainer(config(head=head, head_size=10, groups="clustered", index_init="centroid"), tiny)
    idx = trainer.model.sparse.idx.numpy()
    assert all(len(set(row)) == 8 for row in idx) and idx.min() >= 0 and idx.max() < 32
    random = Trainer(config(head=head, head_size=10, groups="clustered"), tiny).model.sparse.idx.numpy()
    assert not np.array_equal(np.sort(idx, axis=1), np.sort(random, axis=1))
    assert list(trainer.run())[-1]["kind"] == "eval"


@pytest.mark.parametrize("settings", [dict(head="fixed_fanin"), dict(head="group_shared", group_size=7),
                                      dict(head="dense_sparse", head_size=10, group_size=7)],
                         ids=lambda s: s["head"])
def test_fused_loss_and_topk_match_the_unfused_path(tiny, settings):
    # the model's fused path (no (B, L) logits) gives the loss, gradients and top-k of the plain one
    model = Trainer(config(dropout=0.0, dense_dropout=0.0, groups="clustered", **settings), tiny).model
    x, Y = SparseInput(tiny.X_train[:40]), tiny.Y_train[:40]
    grads = []
    for unfused in (False, True):
        model.zero_grad()
        model.capture_sparse_grad = unfused             # capturing dZ takes the unfused path
        loss, _ = model.loss(x, Y)
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (fused, g_fused), (plain, g_plain) = grads
    assert fused == pytest.approx(plain, rel=1e-5)
    for a, b in zip(g_fused, g_plain):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    model.capture_sparse_grad = False
    z = model.slot_logits(model.encode(x)).masked_fill(model.label_of_slot < 0, float("-inf"))
    expected = model.label_of_slot[torch.topk(z, 5).indices]
    assert torch.equal(model.topk(x, 5), expected)


def test_caller_can_stop_at_any_record(tiny):
    trainer = Trainer(config(), tiny)
    first = list(itertools.islice(trainer.run(), 3))
    assert [r["step"] for r in first] == [1, 2, 3]
    assert trainer.step == 3


def test_no_encoder_the_head_reads_the_features(tiny):
    # hidden = 0: h = X (densified; dropout only in training), and a group's centroid inputs are the
    # k largest entries of its labels' summed PIFA rows over the features themselves
    from engine.grouping import LabelGroups, group_index, pifa
    trainer = Trainer(config(head="group_shared", hidden=0, groups="clustered", index_init="centroid",
                             dense_share=0), tiny)
    model = trainer.model
    assert model.embed is None and model.config.head_in == tiny.n_features == model.sparse.in_features
    model.eval()
    x = SparseInput(tiny.X_train[:30])
    torch.testing.assert_close(model.encode(x), torch.from_numpy(tiny.X_train[:30].toarray()).float())
    slots = model.slot_of_label.numpy()
    groups = LabelGroups(tiny.n_labels, 4, slots)
    want = group_index(groups, pifa(trainer.X_train, tiny.Y_train), 8, how="centroid", seed=0)
    assert np.array_equal(model.sparse.idx.numpy(), want)
    assert not any(name.startswith("embed") for name, _ in model.named_parameters())


def test_intermediate_layer_feeds_the_head(tiny):
    trainer = Trainer(config(head="group_shared", intermediate=16, fanin=16), tiny)
    assert trainer.model.head.weight.shape[-1] == 16
    assert list(trainer.run())[-1]["kind"] == "eval"


@pytest.mark.parametrize("kw, match", [
    (dict(head="nope"), "head must be one of"),
    (dict(head="fixed_fanin", fanin=33), "fanin must be in"),
    (dict(head="group_shared", intermediate=8, fanin=9), "fanin must be in"),
    (dict(head="group_shared", group_size=0), "group_size"),
    (dict(epochs=0), "epochs"),
    (dict(batch_size=0), "batch_size"),
    (dict(lr=0.0), "lr"),
    (dict(dropout=1.0), "dropout"),
    (dict(eval_every=-1), "eval_every"),
    (dict(groups="kmeans"), "groups must be one of"),
    (dict(head="dense_sparse", head_size=50), "head_size must be in"),
    (dict(head="mach", mach_buckets=1), "mach_buckets must be >= 2"),
    (dict(head="mach", mach_reps=0), "mach_reps must be >= 1"),
    (dict(aux=-1.0), "aux must be >= 0"),
    (dict(aux_until=0.0), "aux_until"),
    (dict(head="dense", dst="random"), "dst needs a sparse head"),
    (dict(head="group_shared", dst="random", dst_zeta=1.5), "zeta"),
    (dict(head="group_shared", dst="random", dst_every=0), "every"),
    (dict(head="group_shared", dst="random", fanin=32), "nothing to regrow"),
    (dict(head="group_shared", hidden=0, dst="random", fanin=60), r"input width 60, got fanin=60: there is nothing"),
    (dict(head="group_shared", hidden=0, fanin=61), r"fanin must be in \[1, 60\]"),
    (dict(hidden=-1), "hidden must be >= 0"),
    (dict(hidden=0, intermediate=16), "intermediate=16 needs an encoder"),
    (dict(head="mach", hidden=0, mach_reps=2, mach_members=2), "needs hidden >= 1"),
    (dict(dst="magic"), "dst must be one of"),
    (dict(index_init="best"), "index_init must be one of"),
])
def test_bad_settings_raise_before_training(tiny, kw, match):
    with pytest.raises(ConfigError, match=match):
        Trainer(config(**kw), tiny)


def test_config_dict_round_trip():
    c = config(head="group_shared")
    assert TrainConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="unknown config keys: bogus"):
        TrainConfig.from_dict({**c.to_dict(), "bogus": 1})


def test_empty_feature_rows_encode_to_bias(tiny):
    model = XMCModel(ModelConfig.of(n_features=60, n_labels=50, head="dense", hidden=8, dropout=0.0))
    X = tiny.X_train[:3].copy()
    X.data[:] = 0
    X.eliminate_zeros()
    h = model.encode(SparseInput(X))
    assert torch.allclose(h, torch.relu(model.embed_bias).expand(3, -1))


def test_run_store_round_trip(tiny, tmp_path):
    store = RunStore(tmp_path / "runs")
    trainer = Trainer(config(head="group_shared"), tiny)
    run = store.create(trainer.config)
    for record in trainer.run():
        run.append(record)
    run.save_checkpoint(trainer.model)
    assert [r.id for r in store.list()] == [run.id]
    again = store.get(run.id)
    assert again.config == trainer.config
    assert again.records()[-1]["P@1"] == trainer.evaluate()["P@1"]
    fresh = Trainer(config(head="group_shared", seed=9), tiny)   # other weights and index sets
    again.load_checkpoint(fresh.model)
    assert fresh.evaluate() == trainer.evaluate()
    assert not any(p.suffix == ".pkl" for p in run.path.iterdir())


def test_torn_last_metrics_line_is_ignored(tmp_path):
    run = RunStore(tmp_path).create(config())
    run.append({"kind": "step", "step": 1, "loss": 0.5, "step_time": 0.01})
    with open(run.path / "metrics.jsonl", "a") as f:
        f.write('{"kind": "st')                       # a crash mid-write
    assert run.records() == [{"kind": "step", "step": 1, "loss": 0.5, "step_time": 0.01}]


def test_two_runs_in_the_same_second_get_distinct_ids(tmp_path):
    store = RunStore(tmp_path)
    assert store.create(config()).id != store.create(config()).id
    assert len(store.list()) == 2


@pytest.mark.parametrize("decay", ["none", "linear", "cosine"])
def test_the_learning_rate_warms_up_then_decays_by_the_step(tiny, decay):
    # lr (t + 1) / W over the W warm-up steps, then lr · s(p): the step records say which lr each step took
    trainer = Trainer(config(head="dense", epochs=4, lr=0.01, warmup=0.25, decay=decay), tiny)
    T = trainer.total_steps
    W = 0.25 * T
    lrs = [r["lr"] for r in trainer.run() if r["kind"] == "step"]
    assert len(lrs) == T and lrs[0] == pytest.approx(0.01 / W)
    p = [(t - W) / (T - W) for t in range(T)]
    s = {"none": lambda p: 1.0, "linear": lambda p: 1 - p, "cosine": lambda p: (1 + math.cos(math.pi * p)) / 2}[decay]
    want = [0.01 * (t + 1) / W if t < W else 0.01 * s(p[t]) for t in range(T)]
    assert lrs == pytest.approx(want)
    assert max(lrs) == pytest.approx(0.01)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(want[-1])
