"""The Streamlit pages through AppTest: every page renders without exceptions, the main widgets
drive the engine (a config imports as JSON, a run starts and stops, the maps, connectivity, compare
and fast inference show a model). The live refresh (st.fragment(run_every=...)) needs a real
browser: tests/test_app_browser.py. Bad input through the pages: tests/test_app_bad_input.py."""

import json

import pytest

from engine import RunStore, TrainConfig, load_dataset, save_dataset

from app import sidebar
from app.jobs import JobRegistry, read_status
from app.settings import CONTROLLED
from apptest import (app, app_env, assert_clean, assert_error_box, finished_dst_run, import_config, own_runs_dir, page,  # noqa: F401
                     runs_dir, shown, tiny, upload_dataset, wait_for)


@pytest.mark.parametrize("head", ["group_shared", "dense", "mach"])
def test_every_page_renders(head):
    at = app(head=head, hidden=64, fanin=16, group_size=16, method="pca")
    assert_clean(at)
    for name, title in [("data", "Data"), ("train", "Train"), ("label_map", "Label map"),
                        ("connectivity", "Connectivity"), ("compare", "Compare"), ("inference", "Fast inference")]:
        page(at, name)
        assert_clean(at)
        assert at.title[0].value == title


def test_classroom_mode_hides_advanced_controls_and_shows_explanations():
    at = page(app(classroom="true"), "train")
    assert_clean(at)
    assert not [w for w in at.slider if w.key == "dropout"] and at.info           # explanation shown in place
    at = page(app(), "train")
    assert [w for w in at.slider if w.key == "dropout"]


def test_a_config_imports_as_json():
    at = page(app(), "train")
    cfg = TrainConfig.of(head="fixed_fanin", hidden=128, fanin=8, epochs=7).to_dict()
    import_config(at, json.dumps(cfg).encode())
    assert_clean(at)
    assert at.session_state["head"] == "fixed_fanin" and at.session_state["fanin"] == 8
    assert at.slider(key="epochs").value == 7
    assert_error_box(import_config(at, b"{not json"), "not a run configuration")


def test_an_import_sets_every_setting_with_a_control():
    # what the page has controls for comes in whole: DST, the dense part, MACH (nothing dropped)
    cfgs = [TrainConfig.of(head="dense_sparse", head_size=40, dst="random", dst_every=30, dst_zeta=0.5),
            TrainConfig.of(head="mach", mach_buckets=64, mach_reps=6, mach_members=3)]
    for cfg in cfgs:
        at = import_config(page(app(), "train"), json.dumps(cfg.to_dict()).encode())
        assert_clean(at)
        assert not at.error, [e.value for e in at.error]
        flat = cfg.flat()
        for name in (n for n in CONTROLLED if n in flat):
            assert at.session_state[name] == flat[name], name


def test_data_page_shows_the_sample_and_generates_from_the_url():
    at = page(app(), "data")
    assert_clean(at)
    assert [m.value for m in at.metric][:4] == ["3,000", "1,000", "1,000", "2,000"]
    at = page(app(data="synthetic", labels=300, points=600, features=200, clusters=10), "data")
    assert_clean(at)
    assert at.metric[3].value == "300" and at.metric[0].value == "450"


def test_data_page_takes_a_good_upload(tiny):
    _, path = tiny
    files = {n: (path / n).read_bytes() for n in ("train.txt", "test.txt", "labels.txt")}
    at = upload_dataset(page(app(), "data"), files)
    assert_clean(at)
    assert not at.error and at.session_state["data"] == "folder" and at.metric[3].value == "120"


def test_data_page_offers_the_fetched_datasets(tiny, tmp_path, monkeypatch):
    # a dataset in the fetch cache is one click away; the sidebar then names its folder
    ds, _ = tiny
    monkeypatch.setenv("XMC_DATA_HOME", str(tmp_path))
    save_dataset(ds, tmp_path / "bibtex")
    at = page(app(), "data")
    assert_clean(at)
    assert at.selectbox(key="fetched").options == ["bibtex"]
    at.button(key="use_fetched").click().run()
    assert_clean(at)
    assert at.session_state["data"] == "folder" and at.session_state["path"] == str(tmp_path / "bibtex")
    assert at.metric[3].value == str(ds.n_labels)


def test_train_page_starts_and_stops_a_run(runs_dir):
    at = page(app(head="group_shared", hidden=64, fanin=16, group_size=16), "train")
    assert_clean(at)
    # head parameters, before starting: a dense part for the 200 most frequent labels (10 %), the other
    # 1,800 in 113 groups of 16 slots (the last padded), k + 1 numbers a slot
    assert at.metric[0].value == f"{200 * 65 + 113 * 16 * 17:,}"
    at.button(key="start").click().run()
    assert_clean(at)
    run_id = at.session_state["run"]
    run_dir = runs_dir / run_id
    assert json.loads((run_dir / "config.json").read_text())["model"]["head"]["name"] == "group_shared"
    assert wait_for(lambda: len((run_dir / "metrics.jsonl").read_text().splitlines()) >= 3
                    if (run_dir / "metrics.jsonl").exists() else False, timeout=30)
    at.run()
    assert_clean(at)
    assert any(run_id in shown(m.value) and "evaluations" in m.value for m in at.markdown)
    at.button(key="stop").click().run()
    assert wait_for(lambda: read_status(run_dir).get("state") == "stopped", timeout=5)
    at.run()
    assert_clean(at)
    assert any("stopped" in m.value for m in at.markdown)


def test_without_a_gpu_the_sidebar_says_why_and_offers_no_device(monkeypatch):
    monkeypatch.setattr(sidebar, "gpu_status", lambda: (False, "torch sees no GPU (test)"))
    at = app(device="cuda")                                 # a link from a GPU machine changes nothing
    assert_clean(at)
    assert [shown(c.value) for c in at.sidebar.caption if c.value.startswith("Trains on the CPU")] == \
        ["Trains on the CPU: torch sees no GPU (test)"]
    assert not [w for w in at.sidebar.radio if w.key == "device"]
    assert at.session_state["device"] == "auto"


def test_with_a_gpu_the_sidebar_offers_the_device(monkeypatch):
    monkeypatch.setattr(sidebar, "gpu_status", lambda: (True, "fake GPU"))
    at = app()
    assert_clean(at)
    assert at.radio(key="device").options == ["auto", "cpu", "cuda"] and at.radio(key="device").value == "auto"
    assert not [c for c in at.sidebar.caption if c.value.startswith("Trains on the CPU")]
    at.radio(key="device").set_value("cpu").run()
    assert_clean(at)
    assert at.session_state["device"] == "cpu"
    at = page(at, "train").selectbox(key="preset").set_value("fixed fan-in").run()    # a recipe, not a machine
    assert_clean(at)
    assert at.session_state["head"] == "fixed_fanin" and at.session_state["device"] == "cpu"


def test_train_page_shows_the_device_a_run_trains_on(own_runs_dir):
    store = RunStore(own_runs_dir)
    step = {"kind": "step", "step": 1, "epoch": 1, "loss": 0.5, "step_time": 0.01}
    new, old = store.create(TrainConfig.of(epochs=1)), store.create(TrainConfig.of(epochs=2))
    new.append({"kind": "device", "step": 0, "device": "cuda:0", "why": "torch and CuPy see a fake GPU"})
    for run in (new, old):
        run.append(step)
    at = page(app(run=new.path.name), "train")
    assert_clean(at)
    assert "Device: **cuda:0** · torch and CuPy see a fake GPU" in [shown(c.value) for c in at.main.caption]
    at = page(app(run=old.path.name), "train")
    assert_clean(at)
    assert any(shown(c.value).startswith("Device: **cpu** · recorded before device records") for c in at.main.caption)


def test_train_page_shows_bad_settings_as_an_error():
    at = page(app(hidden=64, fanin=200, head="fixed_fanin"), "train")   # fanin > hidden
    assert_clean(at)
    assert "fanin" in at.error[0].value


def test_label_map_and_connectivity_pages():
    at = page(app(head="group_shared", hidden=64, fanin=16, group_size=16, method="pca"), "label_map")
    assert_clean(at)
    assert "all 2,000 labels" in at.caption[0].value
    at.number_input(key="highlight").set_value(3).run()
    assert_clean(at)
    assert any(m.value.startswith("**Group 3**") for m in at.markdown)
    page(at, "connectivity")
    assert_clean(at)
    assert len(at.dataframe) >= 1 and "113 groups" in at.caption[0].value
    at.number_input(key="conn_group").set_value(7).run()
    assert_clean(at)
    at = page(app(head="dense"), "connectivity")
    assert_clean(at)
    assert "no index sets" in at.info[0].value


def test_maps_of_a_trained_run(runs_dir):
    done = [p.name for p in sorted(runs_dir.iterdir()) if (p / "model.safetensors").exists()
            and read_status(p).get("state") in ("stopped", "done")]
    if not done:
        pytest.skip("no stored run with a checkpoint (test_train_page_starts_and_stops_a_run makes one)")
    at = page(app(method="pca", vectors="trained weights", map_model=done[-1]), "label_map")
    assert_clean(at)
    assert "trained weights" in at.caption[0].value
    at = page(app(conn_model=done[-1]), "connectivity")
    assert_clean(at)
    assert not at.error and len(at.dataframe) >= 1


def test_connectivity_shows_dynamic_sparse_training(runs_dir):
    at = page(app(conn_model=finished_dst_run(runs_dir)), "connectivity")
    assert_clean(at)
    assert any(h.value == "Dynamic sparse training" for h in at.subheader)
    at.slider(key="dst_update").set_value(1).run()
    assert_clean(at)
    assert any(m.value.startswith("Update 1 at step 2") for m in at.markdown)


def test_fast_inference_page(tiny, own_runs_dir):
    ds, path = tiny
    at = page(app(), "inference")
    assert_clean(at)
    assert "train one on the Train page" in at.info[0].value
    reg = JobRegistry(own_runs_dir)
    runs = {}
    for kw in ({"head": "group_shared", "fanin": 8, "group_size": 8},
               {"head": "mach", "mach_buckets": 16, "mach_reps": 2}):
        job = reg.start(TrainConfig.of(data=str(path), hidden=32, epochs=1, eval_every=0, **kw), ds)
        job.thread.join(60)
        assert reg.state(job.run) == "done", read_status(job.run.path)
        runs[kw["head"]] = job.id
    at = page(app(inf_model=runs["group_shared"], inf_tables=2, inf_bits=4, inf_epochs=1), "inference")
    assert_clean(at)
    at.button(key="build").click().run()
    assert_clean(at)
    assert not at.error, [e.value for e in at.error]
    assert at.dataframe[0].value["index"].tolist() == ["SimHash", "learned"] and len(at.get("plotly_chart")) == 1
    at = page(app(inf_model=runs["mach"]), "inference")
    assert_clean(at)
    assert "MACH head has no weight vector" in at.info[0].value


def test_a_head_on_the_features_names_them():
    # hidden width "none" (0; the URL holds the shown value): the head reads the input features, and
    # the pages name them, not h0, h1, ...
    sample = load_dataset("sample")
    features = sample.feature_names or [f"feature {f}" for f in range(sample.n_features)]
    at = page(app(head="group_shared", hidden="none", fanin=16, group_size=16, index_init="centroid"), "connectivity")
    assert_clean(at)
    table = at.dataframe[0].value
    assert set(table["input"]) <= set(features) and "strongest features (first layer)" not in table.columns
    at = page(app(hidden="none", fanin=16, group_size=16, bench_L=1000, bench_B=16, bench_reps=1), "compare")
    assert_clean(at)
    at.button(key="measure").click().run()
    assert_clean(at)


def test_compare_page_measures_and_benchmarks():
    at = page(app(hidden=64, fanin=16, group_size=16, bench_L=1000, bench_B=16, bench_reps=1), "compare")
    assert_clean(at)
    at.button(key="measure").click().run()
    assert_clean(at)
    table = at.dataframe[0].value
    assert (table["measured / analytic persistent"].astype(float) == 1.0).all()     # exact: the same tensors
    at.button(key="run_bench").click().run()
    assert_clean(at)
    assert set(at.dataframe[1].value["provider"]) >= {"nn.Linear", "torch.sparse"}


def test_the_cli_and_the_app_left_at_their_defaults_build_the_same_model(own_runs_dir):
    # the CLI's config of `train --data sample`, and the app's of its untouched controls (the Train
    # page's config box shows the current settings)
    from engine.__main__ import build_parser, train_settings
    cli = TrainConfig.of(**train_settings(build_parser().parse_args(["train", "--data", "sample"])))
    at = page(app(), "train")
    assert_clean(at)
    shown = TrainConfig.from_dict(json.loads(at.code[0].value))
    assert shown == cli
    ds = load_dataset("sample")
    assert shown.model_config(ds.n_features, ds.n_labels) == cli.model_config(ds.n_features, ds.n_labels)
