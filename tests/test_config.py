"""Tests for engine/config.py: the nested settings, their flat names, config.json's two forms."""

import json

import pytest

from engine import (HEADS, SETTINGS, ConfigError, DenseSettings, GroupSharedSettings, MachSettings, ModelConfig,
                    ModelSettings, TrainConfig, used_by)
from engine.config import HEAD_SETTINGS, head_fields

FLAT = {"dense": dict(head="dense"),
        "fixed_fanin": dict(head="fixed_fanin", fanin=8, index_init="centroid"),
        "group_shared": dict(head="group_shared", fanin=8, group_size=4, groups="clustered"),
        "dense_sparse": dict(head="dense_sparse", fanin=8, group_size=4, head_size=10),
        "mach": dict(head="mach", mach_buckets=16, mach_reps=4, mach_members=2)}


@pytest.mark.parametrize("head", HEADS)
def test_each_head_round_trips_through_both_forms(head):
    c = TrainConfig.of(**FLAT[head], hidden=32, epochs=3, dst="random" if head in ("fixed_fanin",) else "none")
    assert type(c.model.head) is HEAD_SETTINGS[head]
    assert TrainConfig.of(**c.flat()) == c
    assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert c.to_dict()["model"]["head"]["name"] == head
    assert set(c.flat()) == {name for name in SETTINGS if used_by(head, name)} >= set(head_fields(head))


def test_a_head_holds_only_its_own_settings():
    c = TrainConfig.of(head="dense", fanin=3, group_size=7, mach_buckets=99)     # other heads' settings: ignored
    assert c.model.head == DenseSettings() and "fanin" not in c.flat()
    assert TrainConfig.of(head="group_shared", fanin=3).model.head == GroupSharedSettings(fanin=3)
    assert TrainConfig.of(head="mach", mach_reps=2).model.head == MachSettings(reps=2)
    assert used_by("fixed_fanin", "fanin") and not used_by("fixed_fanin", "group_size")
    assert used_by("dense", "hidden") and not used_by("dense", "index_init")


def test_the_flat_form_older_runs_stored_is_read():
    old = {"head": "group_shared", "hidden": 64, "intermediate": 0, "fanin": 16, "group_size": 8,
           "head_size": 100, "mach_buckets": 256, "mach_reps": 4, "mach_members": 1, "dropout": 0.3,
           "backend": "auto", "seed": 3, "data": "sample", "groups": "clustered", "index_init": "random",
           "epochs": 2}
    c = TrainConfig.from_dict(old)
    # stored before group-shared heads had a dense part: none, whatever today's default
    assert c.model.head == GroupSharedSettings(fanin=16, group_size=8, groups="clustered", dense_share=0)
    assert (c.model.hidden, c.model.seed, c.epochs, c.model.dense_dropout) == (64, 3, 2, 0)


def test_a_group_shared_config_stored_before_the_dense_part_has_none():
    new = TrainConfig.of(head="group_shared", fanin=16).to_dict()
    assert new["model"]["head"]["dense_share"] == 0.1 == TrainConfig.from_dict(new).model.head.dense_share
    del new["model"]["head"]["dense_share"]
    assert TrainConfig.from_dict(new).model.head.dense_share == 0
    assert TrainConfig.from_dict({"head": "dense_sparse", "head_size": 5}).model.head.head_size == 5


@pytest.mark.parametrize("head", ["dense", "group_shared", "mach"])
def test_a_config_stored_before_the_dense_layer_dropout_has_none(head):
    new = TrainConfig.of(head=head).to_dict()
    assert new["model"]["dense_dropout"] == 0.4 == TrainConfig.from_dict(new).model.dense_dropout
    del new["model"]["dense_dropout"]
    assert TrainConfig.from_dict(new).model.dense_dropout == 0
    flat = TrainConfig.of(head=head).flat()
    assert TrainConfig.from_dict(flat).model.dense_dropout == 0.4
    del flat["dense_dropout"]
    assert TrainConfig.from_dict(flat).model.dense_dropout == 0


def test_flat_names_are_unique_and_are_the_cli_flags():
    from engine.__main__ import build_parser
    args = vars(build_parser().parse_args(["train"]))
    assert set(SETTINGS) <= set(args)
    for head, cls in HEAD_SETTINGS.items():
        assert cls.name == head
        assert all(name in SETTINGS for name in head_fields(head))


@pytest.mark.parametrize("d, words", [
    ({"model": []}, "model must be a JSON object"),
    ({"model": {"head": "dense"}}, "model.head must be a JSON object"),
    ({"model": {"head": {"name": "huge"}}}, "model.head.name must be one of"),
    ({"model": {"head": {"fanin": 8}}}, "model.head.name must be"),
    ({"model": {"head": {"name": 5}}}, "model.head.name must be a str"),
    ({"model": {"head": {"name": "dense", "fanin": 8}}}, "unknown config keys: model.head.fanin"),
    ({"model": {"head": {"name": "group_shared", "fanin": 0}}}, "fanin must be >= 1"),
    ({"model": {"head": {"name": "mach", "reps": 3, "members": 2}}}, "mach_members must divide mach_reps=3"),
    ({"model": {"hidden": -1}}, "hidden must be >= 0"),
    ({"model": {"widht": 3}}, "unknown config keys: model.widht"),
    ({"model": {}, "fanin": 8}, "unknown config keys: fanin"),
    ({"model": {"head": {"name": "mach", "members": 2}, "hidden": 0}}, "needs hidden >= 1"),
])
def test_a_bad_nested_config_is_a_config_error_naming_the_setting(d, words):
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict(d)
    assert words in str(e.value)


def test_a_model_config_checks_the_settings_against_the_dataset_shape():
    ModelConfig.of(n_features=30, n_labels=50, hidden=16, **FLAT["dense_sparse"])
    with pytest.raises(ConfigError, match="head_size must be in"):
        ModelConfig.of(n_features=30, n_labels=10, hidden=16, **FLAT["dense_sparse"])
    with pytest.raises(ConfigError, match="fanin must be in"):
        ModelConfig(ModelSettings(head=GroupSharedSettings(fanin=40)).head, hidden=16, n_features=30, n_labels=50)
