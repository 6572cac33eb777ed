"""What the app's tests share: the runs directory the app writes to, a small dataset on disk, and
helpers that run a page through Streamlit's AppTest and check what it shows. The test modules
import the fixtures they use from here (app_env, autouse, with them)."""

import re
import time
from pathlib import Path

import pytest
from streamlit import config as st_config

from engine import generate, save_dataset

from app import server
from app.text import WORD_JOINER
from app.warmup import warm_up_training

APP = Path(__file__).resolve().parents[1] / "app" / "Home.py"
TIMEOUT = 60


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(autouse=True)
def app_env(runs_dir, monkeypatch):
    monkeypatch.setenv("XMC_RUNS_DIR", str(runs_dir))
    monkeypatch.setenv("XMC_APP_WARMUP", "0")          # no background UMAP compile inside the tests
    monkeypatch.delenv(server.ALLOW_REMOTE, raising=False)
    for key, value in server.declared().items():       # the options `python -m app` passes, whatever the cwd
        st_config.set_option(key, value)


@pytest.fixture
def own_runs_dir(tmp_path, monkeypatch):
    """A run store of the test's own, empty at first (the Train page then draws no runs: quicker)."""
    monkeypatch.setenv("XMC_RUNS_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small dataset on disk: 300 points, 120 labels; the kernels compiled, as the server's warm-up
    does, so that the job tests time the jobs, not numba's one-time compilation (20-30 s cold here)."""
    warm_up_training()
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


def shown(markdown):
    """What a reader sees of Markdown whose user text went through app.text.md: the backslash escapes
    undone, the (invisible) word joiners dropped."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown).replace(WORD_JOINER, "")


def assert_error_box(at, *words):
    """The page shows an st.error holding all the words (as a reader sees them), and no exception
    (no traceback)."""
    assert_clean(at)
    assert any(all(w in shown(e.value) for w in words) for e in at.error), [e.value for e in at.error]


def upload_dataset(at, files):
    """On the Data page: upload files ({name: bytes}) and press "Use these files"."""
    at.file_uploader(key="upload").set_value([(n, b, "text/plain") for n, b in files.items()]).run()
    return at.button[0].click().run()


def import_config(at, text):
    """On the Train page: upload text (bytes) as config.json."""
    return at.file_uploader(key="config_file").set_value(("config.json", text, "application/json")).run()


def finished_dst_run(runs_dir):
    """The id of a finished group-shared run on the sample with dynamic sparse training (an update
    every 2 steps), trained by a job of the app's registry in runs_dir."""
    from engine import TrainConfig, load_dataset
    from app.jobs import JobRegistry, read_status
    reg = JobRegistry(runs_dir)
    cfg = TrainConfig.of(data="sample", head="group_shared", hidden=32, fanin=8, group_size=16, epochs=1,
                         eval_every=0, dst="random", dst_every=2)
    job = reg.start(cfg, load_dataset("sample"))
    job.thread.join(120)
    assert reg.state(job.run) == "done", read_status(job.run.path)
    return job.id
