"""Files that are not regular files, or endless: every file the engine opens is checked first
(engine/files.py), so a FIFO, a device, a directory or a symlink loop is a clear error, never a
hang or a read without end."""

import json
import os

import pytest

from engine import CheckpointError, ConfigError, DatasetFormatError, Run, RunStore, TrainConfig, load_dataset
from engine import files
from engine.checkpoint import read_checkpoint
from engine.data import generate, save_dataset

from app.jobs import read_status
from timeout import alarm


@pytest.fixture(autouse=True)
def no_hang():
    """A test that would block (the bug) fails after 20 s instead of hanging the suite."""
    with alarm(20, "blocked on a file"):
        yield


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "ds"
    save_dataset(generate(n_points=60, n_features=20, n_labels=10, n_clusters=2, seed=0, name="ds"), path)
    return path


def spoil(path, how):
    """Put something that is not a regular file at `path`."""
    if path.exists() or path.is_symlink():
        path.unlink()
    if how == "fifo":
        os.mkfifo(path)
    elif how == "dev-zero":
        path.symlink_to("/dev/zero")
    elif how == "loop":
        path.symlink_to(path.name)                     # a link to itself
    elif how == "directory":
        path.mkdir()


WORDS = {"fifo": "is a FIFO", "dev-zero": "is a character device", "loop": "symlink loop",
         "directory": "is a directory"}
HOWS = sorted(WORDS)


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("name", ["train.txt", "test.txt", "labels.txt", "features.txt"])
def test_a_dataset_file_that_is_not_a_regular_file_is_refused(dataset, name, how):
    spoil(dataset / name, how)
    with pytest.raises(DatasetFormatError, match=WORDS[how]):
        load_dataset(dataset)


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("name", ["config.json", "metrics.jsonl", "ranks.json"])
def test_a_run_file_that_is_not_a_regular_file_is_refused(tmp_path, name, how):
    run = RunStore(tmp_path).create(TrainConfig())
    spoil(run.path / name, how)
    read = {"config.json": lambda: run.config, "metrics.jsonl": run.records, "ranks.json": run.ranks}[name]
    with pytest.raises(ConfigError, match=WORDS[how]):
        read()


@pytest.mark.parametrize("how", HOWS)
def test_a_checkpoint_that_is_not_a_regular_file_is_refused(tmp_path, how):
    spoil(tmp_path / "model.safetensors", how)
    with pytest.raises(CheckpointError, match=WORDS[how]):
        read_checkpoint(tmp_path / "model.safetensors")


@pytest.mark.parametrize("how", HOWS)
def test_a_broken_status_file_reads_as_no_status(tmp_path, how):
    run = RunStore(tmp_path).create(TrainConfig())
    spoil(run.path / "status.json", how)
    assert read_status(run.path) == {}
    (run.path / "status.json").unlink() if how != "directory" else (run.path / "status.json").rmdir()
    (run.path / "status.json").write_text(json.dumps([1, 2]))        # JSON, but not an object
    assert read_status(run.path) == {}


def test_a_file_over_its_limit_is_refused_before_it_is_read(dataset, monkeypatch):
    size = (dataset / "labels.txt").stat().st_size
    monkeypatch.setattr("engine.data.xc.NAMES_FILE_LIMIT", size - 1)
    with pytest.raises(DatasetFormatError, match=f"is {size:,} bytes, over the limit of {size - 1:,}"):
        load_dataset(dataset)


def test_read_regular_reads_a_regular_file_whole(tmp_path):
    (tmp_path / "f").write_bytes(b"x" * 1000)
    assert files.read_regular(tmp_path / "f", 1000, ValueError) == b"x" * 1000
    with pytest.raises(ValueError, match="over the limit of 999"):
        files.read_regular(tmp_path / "f", 999, ValueError)
    with pytest.raises(ValueError, match="no such file"):
        files.read_regular(tmp_path / "nothing", 10, ValueError)
