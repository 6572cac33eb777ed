"""engine.layer_view (the three layers drawn small, the bytes a forward pass reads) and
engine.dst.index_history (a DST run's connection changes replayed from its records)."""

import numpy as np
import pytest

from engine import ConfigError, DSTConfig, DynamicSparsity, GroupSharedHead, TrainConfig, forward_reads, \
    index_history, small_layer


def test_small_layers_have_the_engine_sets_and_hand_counted_reads():
    # d = 12, L = 16, k = 3, m = 4, B = 2: counted by hand from the module docstring (4 bytes each)
    dense, fixed, shared = (small_layer(h, batch_size=2) for h in ("dense", "fixed_fanin", "group_shared"))
    assert dense.idx is None and (dense.k, dense.m) == (12, 1)
    assert dense.reads == {"weights": 4 * 13 * 16, "index": 0, "inputs": 4 * 2 * 12, "total": 4 * (208 + 24)}
    assert fixed.idx.shape == (16, 3) and fixed.m == 1
    assert fixed.reads == {"weights": 4 * 4 * 16, "index": 4 * 16 * 3, "inputs": 4 * 2 * 16 * 3,
                           "total": 4 * (64 + 48 + 96)}
    assert shared.idx.shape == (4, 3) and shared.n_groups == 4
    assert shared.reads["index"] == 4 * 4 * 3 and shared.reads["inputs"] == 4 * 2 * 4 * 3   # m times fewer
    head = GroupSharedHead(12, 16, 3, group_size=4, seed=0)
    assert np.array_equal(shared.idx, head.idx.numpy())                # the sets the engine draws


def test_forward_reads_of_the_group_shared_layer_fall_with_the_group_size():
    reads = {m: forward_reads(TrainConfig.of(group_size=m, dense_share=0).model_config(1000, 2000), 256)
             for m in (1, 8, 32)}
    assert reads[1]["inputs"] == 8 * reads[8]["inputs"] == 8 * 4 * 256 * 250 * 64    # G = L / m gathers of k
    assert reads[32]["inputs"] == 4 * 256 * 63 * 64 and reads[32]["index"] == 4 * 63 * 64     # G = 63 groups
    dense = forward_reads(TrainConfig.of(head="dense").model_config(1000, 2000), 256)
    assert dense["weights"] == 4 * 513 * 2000 and dense["inputs"] == 4 * 256 * 512


@pytest.mark.parametrize("kw, words", [(dict(head="mach"), "draws one of"), (dict(head="group_shared", k=13), "fanin"),
                                       (dict(head="dense", d=0), "n_features"),
                                       (dict(head="fixed_fanin", k=0), "fanin")])
def test_a_shape_the_layer_cannot_have_is_a_named_error(kw, words):
    with pytest.raises(ConfigError, match=words):
        small_layer(**kw)


@pytest.mark.parametrize("batch", [0, -1, 2.5, True, "8"])
def test_a_batch_that_is_not_one_is_a_named_error(batch):
    with pytest.raises(ConfigError, match="batch_size"):
        small_layer("dense", batch_size=batch)


def _trained_dst(G=6, m=2, k=3, d=10, updates=5):
    """A head whose sets DST moved `updates` times, with the records and the sets after each."""
    head = GroupSharedHead(d, G * m, k, group_size=m, seed=1)
    dst = DynamicSparsity(head, DSTConfig(every=1, zeta=0.6, stop_fraction=1.0, seed=2), total_steps=2 * updates)
    snaps, records = [head.idx.numpy().copy()], []
    for step in range(1, updates + 1):
        head.weight.data.normal_()                                   # magnitudes pick what drops
        records.append(dst.update(step))
        snaps.append(head.idx.numpy().copy())
    return snaps, records


def test_index_history_replays_the_recorded_updates_from_any_checkpoint():
    snaps, records = _trained_dst()
    groups = [4, 0, 5]
    want = np.stack([s[groups] for s in snaps])                      # (U + 1, 3, k)
    for at in (0, 2, 5):                                              # a checkpoint before, amid, after them
        assert np.array_equal(index_history(snaps[at], at, records, groups), want)


def test_index_history_refuses_records_of_other_sets():
    snaps, records = _trained_dst()
    other = snaps[-1].copy()
    other[0] = (other[0] + 1) % 10
    with pytest.raises(ConfigError, match=r"DST update at step \d+: group 0 slot \d holds input"):
        index_history(other, 5, records, [0])
    bad = [dict(records[0], slot=[99] * len(records[0]["slot"]))]
    with pytest.raises(ConfigError, match="slot 99 is not in"):
        index_history(snaps[0], 0, bad, [0])
    for rec in ({"step": 1}, {"step": "1", "group": [], "slot": [], "old_input": [], "new_input": []},
                dict(records[0], new_input=["x"] * len(records[0]["slot"])), "not a record"):
        with pytest.raises(ConfigError, match="DST record"):
            index_history(snaps[0], 0, [rec], [0])
    with pytest.raises(ConfigError, match="groups"):
        index_history(snaps[0], 0, records, [6])
    with pytest.raises(ConfigError, match="checkpoint's step"):
        index_history(snaps[0], None, records, [0])
