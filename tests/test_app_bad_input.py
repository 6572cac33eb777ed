"""Bad input through the pages: every case of the corpus in tests/test_bad_input.py that can reach a
page shows as an error box (no traceback), and nothing of a refused config is set."""

import json

import pytest

from engine import RunStore, TrainConfig

from app.settings import CONTROLLED, default
from apptest import (app, app_env, assert_clean, assert_error_box, import_config, own_runs_dir, page,  # noqa: F401
                     runs_dir, upload_dataset)
from test_bad_input import (CHECKPOINT_CASES, CONFIG_CASES, DATASET_CASES, LAYOUT_CASES, NOT_OBJECTS,
                            STORED_CONFIG_CASES, bad_layout, dataset_dir)


@pytest.mark.parametrize("name, content, words", [c[1:] for c in DATASET_CASES], ids=[c[0] for c in DATASET_CASES])
def test_a_bad_dataset_file_is_an_error_box_on_the_data_page(tmp_path, name, content, words):
    root = dataset_dir(tmp_path, name, content)
    at = page(app(data="folder", path=str(root)), "data")
    assert_error_box(at, "could not be loaded", name, words)                        # typed as a folder path
    at = upload_dataset(at, {p.name: p.read_bytes() for p in root.iterdir()})
    assert_error_box(at, "were not loaded", name, words)                            # uploaded


@pytest.mark.parametrize("layout, words", LAYOUT_CASES, ids=[c[0] for c in LAYOUT_CASES])
def test_a_bad_dataset_folder_is_an_error_box(tmp_path, layout, words):
    assert_error_box(page(app(data="folder", path=str(bad_layout(tmp_path, layout))), "data"), words)


# configs the engine takes but the page's widgets cannot hold (a slider would raise, a select slider
# silently keep its default): refused on import, nothing set
UNSETTABLE_CONFIGS = [
    ("epochs-above-the-slider", {"epochs": 500}, "epochs=500 is outside [1, 200]"),
    ("fanin-above-the-slider", {"head": "fixed_fanin", "hidden": 512, "fanin": 600}, "fanin=600 is outside [1, 512]"),
    ("dropout-above-the-slider", {"dropout": 0.95}, "dropout=0.95 is outside [0.0, 0.9]"),
    ("hidden-no-option", {"hidden": 100}, "hidden=100 is not one of [0, 64, 128, 256, 512]"),
    ("lr-no-option", {"lr": 0.5}, "lr=0.5 is not one of"),
    ("seed-above-the-input", {"seed": 10**7}, "seed=10000000 is outside [0, 1000000]"),
    ("reps-above-the-slider", {"head": "mach", "mach_reps": 32}, "mach_reps=32 is outside [1, 16]"),
    ("intermediate-no-control", {"intermediate": 512}, "intermediate=512 has no control on this page"),
    ("members-above-the-slider", {"head": "mach", "mach_reps": 32, "mach_members": 32},
     "mach_members=32 is outside [1, 16]"),
    ("aux-no-control", {"aux": 0.5}, "aux=0.5 has no control on this page"),
]
IMPORT_CASES = CONFIG_CASES + UNSETTABLE_CONFIGS + [
    (f"not-an-object-{type(d).__name__}", d, "a config must be a JSON object") for d in NOT_OBJECTS]


@pytest.mark.parametrize("d, words", [c[1:] for c in IMPORT_CASES], ids=[c[0] for c in IMPORT_CASES])
def test_a_bad_config_import_is_an_error_box(own_runs_dir, d, words):
    at = import_config(page(app(head="dense"), "train"), json.dumps(d).encode())
    assert_error_box(at, words)
    assert at.session_state["head"] == "dense" and at.slider(key="epochs").value == default("epochs")     # nothing imported


# the cases of the settings the Train page has a widget for, bound to the URL (the others cannot come
# from the URL: aux_until has no widget, a URL parameter that names no setting is ignored)
URL_CASES = [c for c in CONFIG_CASES if set(c[1]) <= set(CONTROLLED)]


@pytest.mark.parametrize("d", [c[1] for c in URL_CASES], ids=[c[0] for c in URL_CASES])
def test_a_bad_setting_in_the_url_never_reaches_a_config(own_runs_dir, d):
    """Cannot be an error box, by design: the widget bound to the parameter refuses the value (Streamlit
    drops the parameter and the widget keeps its default), so no TrainConfig is made from it."""
    (field, value), = d.items()
    key = field
    at = page(app(**{key: value}), "train")
    assert_clean(at)
    assert not at.error and key not in at.query_params and at.session_state[key] != value


@pytest.mark.parametrize("name, content, words",
                         [("config.json", c[1].encode(), c[3]) for c in STORED_CONFIG_CASES if c[1] is not None] +
                         [("model.safetensors", *c[1:]) for c in CHECKPOINT_CASES],
                         ids=[f"config-{c[0]}" for c in STORED_CONFIG_CASES if c[1] is not None] +
                             [f"checkpoint-{c[0]}" for c in CHECKPOINT_CASES])
@pytest.mark.parametrize("view, key", [("label_map", "map_model"), ("connectivity", "conn_model"),
                                       ("inference", "inf_model")])
def test_a_broken_stored_run_is_an_error_box(own_runs_dir, view, key, name, content, words):
    """A run directory without config.json is no run (the store does not list it): that case cannot reach the app."""
    run = RunStore(own_runs_dir).create(TrainConfig.of(head="group_shared", hidden=64, fanin=16, group_size=16))
    run.checkpoint_path.write_bytes(b"")                                 # listed as a run with a checkpoint
    (run.path / name).write_bytes(content)
    assert_error_box(page(app(**{key: run.id}, method="pca"), view), "No model", name, words)
