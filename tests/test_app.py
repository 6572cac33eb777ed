"""The Streamlit app: every page renders through AppTest without exceptions, the main widgets drive
the engine, bad input shows as an error box (every case of the corpus in tests/test_bad_input.py that
can reach a page); the figure functions, the analyses and the job registry are tested directly. The live refresh (st.fragment(run_every=...)) needs a real browser:
tests/test_app_browser.py."""

import json
import time
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
import scipy.sparse as sp
import torch

from engine import ConfigError, RunStore, TrainConfig, Trainer, generate, save_dataset

from app import analysis, figures
from app.common import IMPORTED_KEYS
from app.jobs import JobLimitError, JobRegistry, read_status, write_status
from test_bad_input import (CHECKPOINT_CASES, CONFIG_CASES, DATASET_CASES, LAYOUT_CASES, NOT_OBJECTS,
                            STORED_CONFIG_CASES, bad_layout, dataset_dir)

APP = Path(__file__).resolve().parents[1] / "app" / "Home.py"
TIMEOUT = 60


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(autouse=True)
def app_env(runs_dir, monkeypatch):
    monkeypatch.setenv("XMC_RUNS_DIR", str(runs_dir))
    monkeypatch.setenv("XMC_APP_WARMUP", "0")          # no background UMAP compile inside the tests


@pytest.fixture
def own_runs_dir(tmp_path, monkeypatch):
    """A run store of the test's own, empty at first (the Train page then draws no runs: quicker)."""
    monkeypatch.setenv("XMC_RUNS_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small dataset on disk: 300 points, 120 labels; the kernels compiled, as the server's warm-up
    does, so that the job tests time the jobs, not numba's one-time compilation (20-30 s cold here)."""
    analysis.warm_up_training()
    ds = generate(n_points=300, n_features=80, n_labels=120, n_clusters=6, seed=1, name="tiny")
    path = tmp_path_factory.mktemp("tiny")
    save_dataset(ds, path)
    return ds, path


def wait_for(pred, timeout=20.0, every=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(every)
    return False


def app(**params):
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params.update({k: str(v) for k, v in params.items()})
    return at.run()


def page(at, name):
    return at.switch_page(f"views/{name}.py").run()


def assert_clean(at):
    assert not at.exception, [e.message for e in at.exception]


def assert_error_box(at, *words):
    """The page shows an st.error holding all the words, and no exception (no traceback)."""
    assert_clean(at)
    assert any(all(w in e.value for w in words) for e in at.error), [e.value for e in at.error]


def upload_dataset(at, files):
    """On the Data page: upload files ({name: bytes}) and press "Use these files"."""
    at.file_uploader(key="upload").set_value([(n, b, "text/plain") for n, b in files.items()]).run()
    return at.button[0].click().run()


def import_config(at, text):
    """On the Train page: upload text (bytes) as config.json."""
    return at.file_uploader(key="config_file").set_value(("config.json", text, "application/json")).run()


# ---------------------------------------------------------------------------------------------
# figures: data in, Plotly figure out

def test_figures_return_plotly_figures():
    rng = np.random.default_rng(0)
    steps = [{"step": i, "loss": 10.0 / i, "step_time": 0.01} for i in range(1, 6)]
    evals = [{"step": i, "P@1": 0.1 * i, "P@3": 0.05 * i} for i in (0, 2, 4)]
    figs = [
        figures.label_frequency(rng.integers(0, 50, 100)),
        figures.histogram(rng.integers(0, 5, 100), "t", "x"),
        figures.training_curves(steps, evals, ["P@1", "P@3"]),
        figures.step_times(steps),
        figures.overlay({"a": evals, "b": evals[:2]}, "P@1"),
        figures.label_map(rng.random((10, 2)), [f"l{i}" for i in range(10)], np.arange(10), np.arange(10) // 3),
        figures.label_map(rng.random((10, 2)), [f"l{i}" for i in range(10)], np.arange(10), np.arange(10) // 3,
                          highlight=1),
        figures.connectivity_heatmap(np.arange(3), np.eye(3, 8, dtype=np.uint8), sampled=True),
        figures.reuse_histogram(rng.integers(0, 9, 32), expected=4.0),
        figures.group_weights(rng.standard_normal((2, 3)), ["h1", "h2", "h3"], ["a", "b"]),
        figures.dst_changes([{"step": 10, "dropped": 5}, {"step": 20, "dropped": 3}]),
        figures.memory_bars({"dense": {"params": 10, "total": 10}}, {"dense": {"total": 11}}),
        figures.bench_lines([{"provider": "p", "n_labels": 1000, "fwd_bwd_s": 0.01}]),
        figures.pareto([{"run": "r", "head": "dense", "memory": 2**20, "p1": 0.3}]),
        figures.lss_bars([{"index": "SimHash", "cand_pct": 40.0, "recall": 0.7, "P@1_ratio": 0.8},
                          {"index": "learned", "cand_pct": 10.0, "recall": 0.9, "P@1_ratio": float("nan")}]),
    ]
    assert all(isinstance(f, go.Figure) for f in figures_ok(figs))


def figures_ok(figs):
    for f in figs:
        f.to_dict()                                   # serialisable, as st.plotly_chart needs
    return figs


def test_training_curves_have_one_point_per_record():
    steps = [{"step": i, "loss": 1.0, "step_time": 0.01} for i in range(1, 8)]
    evals = [{"step": 0, "P@1": 0.1}, {"step": 4, "P@1": 0.2}]
    fig = figures.training_curves(steps, evals, ["P@1"])
    assert len(fig.data[0].x) == 7 and list(fig.data[1].x) == [0, 4]


def test_label_map_highlight_splits_the_group():
    fig = figures.label_map(np.zeros((6, 2)), list("abcdef"), np.ones(6), np.array([0, 0, 1, 1, 2, 2]), highlight=1)
    assert [len(t.x) for t in fig.data] == [4, 2]
    assert list(fig.data[1].customdata[:, 0]) == ["c", "d"]        # hover: name, frequency, group


# ---------------------------------------------------------------------------------------------
# analyses

def test_pifa_is_the_normalised_mean_of_positive_rows():
    X = sp.csr_matrix(np.array([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0]], np.float32))
    Y = sp.csr_matrix(np.array([[1, 0], [1, 0], [0, 0]], np.float32))
    P = analysis.pifa(X, Y).toarray()
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
    cfg = TrainConfig(data="x", head="group_shared", hidden=32, fanin=8, group_size=8, epochs=1)
    model = analysis.build_trainer(cfg, ds).model
    groups, idx = analysis.label_groups(model), analysis.head_index(model)
    assert idx.shape == (15, 8) and groups.shape == (120,)
    assert np.bincount(groups).max() <= 8                          # at most m labels per group
    rows = analysis.group_inputs_table(model, 0, ds.feature_names)
    assert len(rows) == 8 and rows[0]["input"].startswith("h") and "f0" in rows[0]["strongest features (first layer)"]
    W = analysis.label_weight_vectors(model)
    assert W.shape == (120, 32) and W.getnnz(axis=1).max() <= 8
    dense = analysis.build_trainer(TrainConfig(data="x", head="dense", hidden=32, epochs=1), ds).model
    assert analysis.label_groups(dense) is None and analysis.head_index(dense) is None


@pytest.mark.parametrize("head", ["dense", "fixed_fanin", "group_shared", "dense_sparse", "mach"])
def test_measured_memory_matches_the_analytic_estimate(head):
    from engine.model import HEADS
    if head not in HEADS:
        pytest.skip(f"the engine has no {head} head")
    cfg = TrainConfig(head=head, hidden=64, fanin=16, group_size=10, batch_size=32)   # no padded slots
    a = analysis.memory_estimate(cfg, 100, 1000)
    m = analysis.measure_memory(cfg, 100, 1000)
    for part in ("params", "grads", "optimizer", "logits"):
        assert m[part] == a[part], (part, m[part], a[part])
    assert m["index"] == a.get("index", 0)


@pytest.fixture(scope="module")
def padded():
    """50 labels: groups of 7 leave padded slots in the last group."""
    return generate(n_points=200, n_features=40, n_labels=50, n_clusters=5, seed=2, name="padded")


def padded_model(dataset, **kw):
    """An untrained model on `padded` (random weights, label-prior biases, labels shuffled into slots)."""
    config = TrainConfig(data="padded", **{"hidden": 16, "fanin": 6, "group_size": 7, **kw})
    return Trainer(config, dataset=dataset).model


@pytest.mark.parametrize("kw", [{"head": "dense"}, {"head": "group_shared"}, {"head": "fixed_fanin"},
                                {"head": "dense_sparse", "head_size": 10}, {"head": "group_shared", "hidden": 0}],
                         ids=["dense", "group_shared", "fixed_fanin", "dense_sparse", "group_shared-no-encoder"])
def test_label_vectors_score_as_the_model(padded, kw):
    # h·Wᵀ + b in label order equals the model's own logits, slot_logits(h)[:, slot_of_label]
    model = padded_model(padded, **kw)
    W, b = analysis.label_vectors(model)
    H = analysis.hidden_layer(model, padded.X_test)
    assert W.shape == (50, model.config.head_in) and b.shape == (50,) and model.training      # mode restored
    with torch.no_grad():
        logits = model.slot_logits(torch.from_numpy(H))[:, model.slot_of_label].numpy()
    np.testing.assert_allclose(H @ W.T + b, logits, rtol=1e-4, atol=1e-5)


def test_label_vectors_refuse_mach(padded):
    with pytest.raises(ConfigError, match="MACH head has no weight vector per label"):
        analysis.label_vectors(padded_model(padded, head="mach", mach_buckets=8, mach_reps=2))


def test_lss_comparison_reports_simhash_and_learned(padded):
    stages = []
    rows = analysis.lss_comparison(padded_model(padded, head="group_shared"), padded, n_tables=2, n_bits=3, epochs=1,
                                   progress=lambda i, n, text: stages.append(i / n))
    assert [r["index"] for r in rows] == ["SimHash", "learned"] and stages[0] == 0 and stages[-1] == 1
    assert rows[0]["exact_s"] == rows[1]["exact_s"] and rows[0]["P@1_exact"] == rows[1]["P@1_exact"]   # timed once
    assert all(r["n_labels"] == 50 and 0 <= r["recall"] <= 1 for r in rows)


# ---------------------------------------------------------------------------------------------
# jobs: training off the script thread

def test_job_records_reach_the_store_and_stop_is_quick(tiny, tmp_path):
    ds, path = tiny
    reg = JobRegistry(tmp_path, max_jobs=1)
    cfg = TrainConfig(data=str(path), head="group_shared", hidden=32, fanin=8, group_size=8, epochs=500,
                      batch_size=32, eval_every=3)
    job = reg.start(cfg, ds)
    try:
        assert wait_for(lambda: len(job.run.records()) >= 5)
        first = job.run.records()[0]
        assert first["kind"] == "eval" and first["step"] == 0            # the first point comes at once
        with pytest.raises(JobLimitError, match="at most 1"):
            reg.start(cfg, ds)
        t0 = time.monotonic()
        job.stop()
        job.thread.join(5)
        assert not job.alive and time.monotonic() - t0 < 1.0
    finally:
        reg.stop_all()
    assert reg.state(job.run) == "stopped"
    assert (job.run.path / "model.safetensors").exists()
    assert read_status(job.run.path)["first_eval_s"] is not None


def test_job_pause_step_resume(tiny, tmp_path):
    ds, path = tiny
    reg = JobRegistry(tmp_path)
    cfg = TrainConfig(data=str(path), head="fixed_fanin", hidden=32, fanin=8, epochs=300, batch_size=32)
    job = reg.start(cfg, ds)
    try:
        assert wait_for(lambda: len(job.run.records()) >= 3)
        job.pause()
        assert wait_for(lambda: reg.state(job.run) == "paused")
        n = len(job.run.records())
        time.sleep(0.3)
        assert len(job.run.records()) == n                             # paused: nothing moves
        job.step()
        assert wait_for(lambda: len(job.run.records()) > n)
        job.resume()
        assert wait_for(lambda: len(job.run.records()) > n + 5)
    finally:
        reg.stop_all()


def test_a_failed_job_says_why(tiny, tmp_path):
    ds, path = tiny
    reg = JobRegistry(tmp_path)
    job = reg.start(TrainConfig(data=str(path), head="fixed_fanin", hidden=16, fanin=64), ds)   # fanin > d
    job.thread.join(10)
    assert reg.state(job.run) == "failed" and "fanin" in read_status(job.run.path)["error"]


def test_a_run_left_live_by_a_dead_server_is_interrupted(tmp_path):
    reg = JobRegistry(tmp_path)
    run = reg.store.create(TrainConfig())
    write_status(run.path, state="running")
    assert reg.state(run) == "interrupted"


# ---------------------------------------------------------------------------------------------
# pages, through AppTest

@pytest.mark.parametrize("head", ["group_shared", "dense", "mach"])
def test_every_page_renders(head):
    at = app(head=head, hidden=64, fanin=16, group=16, method="pca")
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
    cfg = TrainConfig(head="fixed_fanin", hidden=128, fanin=8, epochs=7).to_dict()
    import_config(at, json.dumps(cfg).encode())
    assert_clean(at)
    assert at.session_state["head"] == "fixed_fanin" and at.session_state["fanin"] == 8
    assert at.slider(key="epochs").value == 7
    assert_error_box(import_config(at, b"{not json"), "not a run configuration")


def test_an_import_sets_every_setting_with_a_control():
    # what the page has controls for comes in whole: DST, the dense part, MACH (nothing dropped)
    cfgs = [TrainConfig(head="dense_sparse", head_size=40, dst="random", dst_every=30, dst_zeta=0.5),
            TrainConfig(head="mach", mach_buckets=64, mach_reps=6, mach_members=3)]
    for cfg in cfgs:
        at = import_config(page(app(), "train"), json.dumps(cfg.to_dict()).encode())
        assert_clean(at)
        assert not at.error, [e.value for e in at.error]
        for field, key in IMPORTED_KEYS.items():
            assert at.session_state[key] == getattr(cfg, field), field


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


def test_train_page_starts_and_stops_a_run(runs_dir):
    at = page(app(head="group_shared", hidden=64, fanin=16, group=16), "train")
    assert_clean(at)
    assert at.metric[0].value == f"{2000 * 17:,}"                    # head parameters, before starting
    at.button(key="start").click().run()
    assert_clean(at)
    run_id = at.session_state["run"]
    run_dir = runs_dir / run_id
    assert json.loads((run_dir / "config.json").read_text())["head"] == "group_shared"
    assert wait_for(lambda: len((run_dir / "metrics.jsonl").read_text().splitlines()) >= 3
                    if (run_dir / "metrics.jsonl").exists() else False, timeout=30)
    at.run()
    assert_clean(at)
    assert any(run_id in m.value and "evaluations" in m.value for m in at.markdown)
    at.button(key="stop").click().run()
    assert wait_for(lambda: read_status(run_dir).get("state") == "stopped", timeout=5)
    at.run()
    assert_clean(at)
    assert any("stopped" in m.value for m in at.markdown)


def test_train_page_shows_bad_settings_as_an_error():
    at = page(app(hidden=64, fanin=200, head="fixed_fanin"), "train")   # fanin > hidden
    assert_clean(at)
    assert "fanin" in at.error[0].value


def test_label_map_and_connectivity_pages():
    at = page(app(head="group_shared", hidden=64, fanin=16, group=16, method="pca"), "label_map")
    assert_clean(at)
    assert "all 2,000 labels" in at.caption[0].value
    at.number_input(key="highlight").set_value(3).run()
    assert_clean(at)
    assert any(m.value.startswith("**Group 3**") for m in at.markdown)
    page(at, "connectivity")
    assert_clean(at)
    assert len(at.dataframe) >= 1 and "125 groups" in at.caption[0].value
    at.number_input(key="conn_group").set_value(7).run()
    assert_clean(at)
    at = page(app(head="dense"), "connectivity")
    assert_clean(at)
    assert "no index sets" in at.info[0].value


def test_maps_of_a_trained_run(runs_dir):
    from app.jobs import read_status
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
    if "dst" not in {f for f in TrainConfig.__dataclass_fields__}:
        pytest.skip("the engine has no dynamic sparse training yet")
    from app import common
    reg = JobRegistry(runs_dir)
    cfg = TrainConfig(data="sample", head="group_shared", hidden=32, fanin=8, group_size=16, epochs=1,
                      eval_every=0, dst="random", dst_every=2)
    job = reg.start(cfg, common.load_folder.__wrapped__(str(common.SAMPLE_DIR)))
    job.thread.join(120)
    assert reg.state(job.run) == "done", read_status(job.run.path)
    at = page(app(conn_model=job.id), "connectivity")
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
        job = reg.start(TrainConfig(data=str(path), hidden=32, epochs=1, eval_every=0, **kw), ds)
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
    from engine.train import resolve_data
    features = resolve_data("sample").feature_names or [f"feature {f}" for f in range(resolve_data("sample").n_features)]
    at = page(app(head="group_shared", hidden="none", fanin=16, group=16, init="centroid"), "connectivity")
    assert_clean(at)
    table = at.dataframe[0].value
    assert set(table["input"]) <= set(features) and "strongest features (first layer)" not in table.columns
    at = page(app(hidden="none", fanin=16, group=16, bench_L=1000, bench_B=16, bench_reps=1), "compare")
    assert_clean(at)
    at.button(key="measure").click().run()
    assert_clean(at)


def test_compare_page_measures_and_benchmarks():
    at = page(app(hidden=64, fanin=16, group=16, bench_L=1000, bench_B=16, bench_reps=1), "compare")
    assert_clean(at)
    at.button(key="measure").click().run()
    assert_clean(at)
    table = at.dataframe[0].value
    assert "measured / analytic" in table.columns
    at.button(key="run_bench").click().run()
    assert_clean(at)
    assert set(at.dataframe[1].value["provider"]) >= {"nn.Linear", "torch.sparse"}


# ---------------------------------------------------------------------------------------------
# bad input through the pages: the corpus of tests/test_bad_input.py, each case an error box

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
    ("members-above-the-slider", {"head": "mach", "mach_reps": 16, "mach_members": 32},
     "mach_members=32 is outside [1, 16]"),
    ("aux-no-control", {"aux": 0.5}, "aux=0.5 has no control on this page"),
]
IMPORT_CASES = CONFIG_CASES + UNSETTABLE_CONFIGS + [
    (f"not-an-object-{type(d).__name__}", d, "a config must be a JSON object") for d in NOT_OBJECTS]


@pytest.mark.parametrize("d, words", [c[1:] for c in IMPORT_CASES], ids=[c[0] for c in IMPORT_CASES])
def test_a_bad_config_import_is_an_error_box(own_runs_dir, d, words):
    at = import_config(page(app(head="dense"), "train"), json.dumps(d).encode())
    assert_error_box(at, words)
    assert at.session_state["head"] == "dense" and at.slider(key="epochs").value == 40     # nothing imported


# the cases of the settings the Train page has a widget for, bound to the URL (the others cannot come
# from the URL: aux_until has no widget, a URL parameter that names no setting is ignored)
URL_CASES = [c for c in CONFIG_CASES if set(c[1]) <= set(IMPORTED_KEYS)]


@pytest.mark.parametrize("d", [c[1] for c in URL_CASES], ids=[c[0] for c in URL_CASES])
def test_a_bad_setting_in_the_url_never_reaches_a_config(own_runs_dir, d):
    """Cannot be an error box, by design: the widget bound to the parameter refuses the value (Streamlit
    drops the parameter and the widget keeps its default), so no TrainConfig is made from it."""
    (field, value), = d.items()
    key = IMPORTED_KEYS[field]
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
    run = RunStore(own_runs_dir).create(TrainConfig(head="group_shared", hidden=64, fanin=16, group_size=16))
    run.checkpoint_path.write_bytes(b"")                                 # listed as a run with a checkpoint
    (run.path / name).write_bytes(content)
    assert_error_box(page(app(**{key: run.id}, method="pca"), view), "No model", name, words)
