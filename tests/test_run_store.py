"""The run store against malformed files and failing writes (engine/runs.py, engine/files.py):
a stored file that does not read is an error naming the file (and line) and the problem, a broken
run is listed with its error beside the others, a failed write (disk full) is one clear error that
keeps what was stored, and the temp files of killed writers go when the run is next opened."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from engine import (CheckpointError, ConfigError, Run, RunNotFoundError, RunStore, RunWriteError, TrainConfig,
                    Trainer, load_dataset)
from engine import files
from engine.__main__ import main

from apptest import app, app_env, assert_clean, assert_error_box, own_runs_dir, page, runs_dir, shown  # noqa: F401
from timeout import alarm

REPO = Path(__file__).resolve().parents[1]
STEP = {"kind": "step", "step": 1, "epoch": 1, "loss": 0.5, "head_loss": 0.5, "step_time": 0.01}
EVAL = {"kind": "eval", "step": 1, "epoch": 1, "P@1": 0.25, "nDCG@5": 0.5, "eval_time": 0.1}
RANK = {"rank": 0, "slots": 10, "mach_reps": 0, "head_params": 100, "rss_mb": 12.5, "peak_rss_mb": 13.0}
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture(autouse=True)
def no_hang():
    """A test that would block fails after 60 s instead of hanging the suite."""
    with alarm(60, "blocked"):
        yield


def config(**kw):
    return TrainConfig.from_dict({"head": "dense", "hidden": 8, "epochs": 1, **kw})


def good_run(root, records=(STEP, EVAL)):
    run = RunStore(root).create(config())
    for r in records:
        run.append(r)
    return run


def lines(*records):
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records)


# ----------------------------------------------------------------------------
# class 2: malformed stored files

# (id, a line of metrics.jsonl, words of the error)
BAD_LINES = [
    ("not-utf8", b'{"kind": "step", "step": 1, "note": "\xff\xfe"}', "not UTF-8"),
    ("not-json", b'{"kind": "step", step: 1}', "not valid JSON"),
    ("blank", b"", "not valid JSON"),
    ("array", b"[1, 2]", "a record must be a JSON object, got list"),
    ("number", b"3", "got int"),
    ("string", b'"step"', "got str"),
    ("null", b"null", "got NoneType"),
    ("nan", b'{"kind": "eval", "step": 1, "P@1": NaN}', "NaN is not a JSON number"),
    ("infinity", b'{"kind": "step", "step": 1, "loss": -Infinity, "step_time": 1}', "-Infinity is not a JSON number"),
    ("float-overflow", b'{"kind": "step", "step": 1, "loss": 1e400, "step_time": 1}', "1e400 is out of the float64 range"),
    ("huge-int", b'{"kind": "step", "step": ' + b"9" * 5000 + b"}", "out of the int64 range"),
    ("deep", b'{"kind": "note", "a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested deeper than 64"),
    ("no-kind", b'{"step": 1}', 'a record needs a "kind" string'),
    ("kind-not-text", b'{"kind": ["step"], "step": 1}', 'a record needs a "kind" string'),
    ("no-step", b'{"kind": "eval", "P@1": 0.5}', "a record of kind 'eval' needs 'step'"),
    ("step-without-loss", b'{"kind": "step", "step": 1, "step_time": 0.1}', "a record of kind 'step' needs 'loss'"),
    ("step-without-time", b'{"kind": "step", "step": 1, "loss": 0.1}', "needs 'step_time'"),
    ("step-text", b'{"kind": "step", "step": "1", "loss": 1, "step_time": 1}', "'step' must be a non-negative integer"),
    ("step-negative-any-kind", b'{"kind": "note", "step": -1}', "'step' must be a non-negative integer"),
    ("step-bool", b'{"kind": "eval", "step": true}', "'step' must be a non-negative integer"),
    ("loss-null", b'{"kind": "step", "step": 1, "loss": null, "step_time": 1}', "'loss' must be a number"),
    ("score-text", b'{"kind": "eval", "step": 1, "P@1": "0.5"}', "'P@1' must be a number"),
    ("dst-list", b'{"kind": "dst", "step": 1, "group": [0, "a"]}', "'group' must be a list of non-negative"),
    ("error-message", b'{"kind": "error", "step": 1, "message": {}}', "'message' must be a string"),
]


@pytest.mark.parametrize("line, words", [c[1:] for c in BAD_LINES], ids=[c[0] for c in BAD_LINES])
def test_a_bad_line_in_the_middle_is_an_error_naming_file_and_line(tmp_path, line, words):
    run = good_run(tmp_path)
    (run.path / "metrics.jsonl").write_bytes(lines(STEP, line, EVAL))
    with pytest.raises(ConfigError) as e:
        run.records()
    assert "metrics.jsonl line 2: " in str(e.value) and words in str(e.value)
    assert len(str(e.value)) < 300 + len(str(run.path))           # a megabyte line is not quoted whole


@pytest.mark.parametrize("line", [c[1] for c in BAD_LINES], ids=[c[0] for c in BAD_LINES])
def test_a_torn_last_line_is_ignored_whatever_it_holds(tmp_path, line):
    run = good_run(tmp_path)
    (run.path / "metrics.jsonl").write_bytes(lines(STEP, EVAL) + line)    # no line end: a crash mid-write
    assert run.records() == [STEP, EVAL]


def test_records_read_back_exactly_with_any_line_end(tmp_path):
    run = good_run(tmp_path)
    assert run.records() == [STEP, EVAL]
    (run.path / "metrics.jsonl").write_bytes(lines(STEP, EVAL).replace(b"\n", b"\r\n"))
    assert run.records() == [STEP, EVAL]
    other = {"kind": "note", "text": "a front end's own record", "nested": {"a": [1, 2.5]}}
    run.append(other)
    assert run.records()[-1] == other


# (id, config.json bytes, words)
BAD_CONFIGS = [
    ("list", b"[]", "a config must be a JSON object"),
    ("number", b"3", "a config must be a JSON object"),
    ("null", b"null", "a config must be a JSON object"),
    ("empty", b"", "not valid JSON"),
    ("nan", b'{"lr": NaN}', "NaN is not a JSON number"),
    ("not-utf8", b'{"data": "\xc3\x28"}', "not UTF-8"),
    ("utf16", '{"epochs": 1}'.encode("utf-16"), "not UTF-8"),
    ("wrong-type", b'{"epochs": [1]}', "epochs must be an int"),
    ("unknown-key", b'{"epochs": 1, "shell": "rm -rf /"}', "unknown config keys: shell"),
    ("huge-int", b'{"epochs": 1' + b"0" * 400 + b"}", "out of the int64 range"),
    ("deep", b'{"data": ' + b"[" * 200 + b"]" * 200 + b"}", "nested deeper than 64"),
]


@pytest.mark.parametrize("content, words", [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_a_bad_config_json_is_an_error_naming_it(tmp_path, content, words):
    run = good_run(tmp_path)
    (run.path / "config.json").write_bytes(content)
    with pytest.raises(ConfigError, match="config.json: ") as e:
        Run(run.path).config
    assert words in str(e.value)
    (entry,) = RunStore(tmp_path).entries()
    assert entry.config is None and "config.json" in entry.error and words in entry.error


def test_a_config_json_with_a_byte_order_mark_reads(tmp_path):
    run = good_run(tmp_path)
    path = run.path / "config.json"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert run.config == config()


# (id, ranks.json bytes, words)
BAD_RANKS = [
    ("object", json.dumps(RANK).encode(), "must be a JSON list, got dict"),
    ("entry-not-object", b"[1]", "entry 0: not a JSON object"),
    ("missing-field", json.dumps([RANK, {"rank": 1}]).encode(), "entry 1: missing slots"),
    ("wrong-type", json.dumps([{**RANK, "rss_mb": "12"}]).encode(), "'rss_mb' must be a number"),
    ("nan", json.dumps([RANK]).replace("12.5", "NaN").encode(), "NaN is not a JSON number"),
]


@pytest.mark.parametrize("content, words", [c[1:] for c in BAD_RANKS], ids=[c[0] for c in BAD_RANKS])
def test_a_bad_ranks_json_is_an_error_naming_it(tmp_path, content, words):
    run = good_run(tmp_path)
    run.save_ranks([RANK])
    assert run.ranks() == [RANK]
    (run.path / "ranks.json").write_bytes(content)
    with pytest.raises(ConfigError, match="ranks.json: ") as e:
        run.ranks()
    assert words in str(e.value)


@pytest.mark.parametrize("header, words", [("{not json", "not valid JSON"), ("[1]", "not a JSON object"),
                                           ('{"step": NaN}', "NaN is not a JSON number")])
def test_bad_checkpoint_metadata_is_a_checkpoint_error(tmp_path, header, words):
    run = good_run(tmp_path)
    save_file({"w": torch.zeros(2)}, str(run.checkpoint_path), metadata={"xmc_trainer": header})
    with pytest.raises(CheckpointError, match="bad metadata") as e:
        run.checkpoint_step()
    assert words in str(e.value)


def spoil_config(path, how):
    """config.json of the run at `path` as something that is not a readable config."""
    target = path / "config.json"
    target.unlink()
    if how == "loop":
        target.symlink_to("config.json")
    elif how == "fifo":
        os.mkfifo(target)
    elif how == "directory":
        target.mkdir()
    else:
        target.write_bytes(how)


def test_the_store_lists_every_run_and_a_broken_one_with_its_error(tmp_path):
    good = good_run(tmp_path)
    broken = {}
    for name, how in [("config-not-json", b"{"), ("config-list", b"[]"), ("config-loop", "loop"),
                      ("config-fifo", "fifo"), ("config-directory", "directory")]:
        broken[name] = tmp_path / name
        shutil.copytree(good.path, broken[name])
        spoil_config(broken[name], how)
    for name, file, content in [("records-nan", "metrics.jsonl", lines(STEP, b'{"kind": "eval", "step": NaN}', EVAL)),
                                ("records-binary", "metrics.jsonl", b"\x00\x01\x02\n" + lines(STEP)),
                                ("ranks-not-a-list", "ranks.json", b"{}")]:
        broken[name] = tmp_path / name
        shutil.copytree(good.path, broken[name])
        (broken[name] / file).write_bytes(content)
    (tmp_path / "no-config").mkdir()                               # not a run: not listed
    (tmp_path / "no-config" / "metrics.jsonl").write_bytes(lines(STEP))
    (tmp_path / "a-file").write_text("not a run")

    store = RunStore(tmp_path)
    entries = {e.run.id: e for e in store.entries()}
    assert sorted(entries) == sorted([good.id, *broken]) == [r.id for r in store.list()]
    assert entries[good.id].error is None and entries[good.id].config == config()
    assert entries[good.id].records == [STEP, EVAL]
    for name in broken:
        e = entries[name]
        assert e.config is None and e.records is None and e.error, name
        assert ("ranks.json" if "ranks" in name else "metrics.jsonl" if "records" in name else "config.json") in e.error
    assert "symlink loop" in entries["config-loop"].error and "is a FIFO" in entries["config-fifo"].error
    assert "line 2" in entries["records-nan"].error and "line 1" in entries["records-binary"].error


@pytest.mark.parametrize("run_id", ["", ".", "..", "../x", "a/b", "/etc", "a\x00b", "no-such-run"])
def test_get_takes_only_the_name_of_a_run_directory(tmp_path, run_id):
    run = good_run(tmp_path / "runs")
    assert RunStore(tmp_path / "runs").get(run.id).path == run.path
    with pytest.raises(RunNotFoundError, match="no run"):
        RunStore(tmp_path / "runs").get(run_id)


def test_a_runs_root_that_is_not_a_directory_is_a_clear_error(tmp_path):
    (tmp_path / "runs").write_text("a file")
    store = RunStore(tmp_path / "runs")
    with pytest.raises(RunNotFoundError, match="not a directory of runs"):
        store.list()
    with pytest.raises(RunWriteError, match="cannot hold runs"):
        store.create(config())
    assert RunStore(tmp_path / "nothing").list() == []


# ----------------------------------------------------------------------------
# class 4: faults while writing

def fail_writes_to(monkeypatch, name, after=0):
    """os.write to a file called `name` writes `after` bytes, then fails with ENOSPC (a full disk)."""
    real = os.write
    state = {"left": after}

    def write(fd, data):
        if not os.readlink(f"/proc/self/fd/{fd}").endswith(name):
            return real(fd, data)
        if state["left"] <= 0:
            raise ENOSPC
        n = real(fd, bytes(data[:state["left"]]))
        state["left"] -= n
        return n
    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("after", [0, 7], ids=["nothing-written", "part-written"])
def test_a_full_disk_while_appending_keeps_the_complete_lines(tmp_path, monkeypatch, after):
    run = good_run(tmp_path)
    before = (run.path / "metrics.jsonl").read_bytes()
    with monkeypatch.context() as m:
        fail_writes_to(m, "metrics.jsonl", after)
        with pytest.raises(RunWriteError, match="metrics.jsonl: not written \\(No space left on device\\)"):
            run.append({**STEP, "step": 2})
    assert (run.path / "metrics.jsonl").read_bytes() == before   # no part of the line is left
    run.append({**STEP, "step": 3})                                # the disk has room again
    assert run.records() == [STEP, EVAL, {**STEP, "step": 3}]


def test_a_torn_last_line_is_dropped_before_the_next_append(tmp_path):
    run = good_run(tmp_path)
    with open(run.path / "metrics.jsonl", "ab") as f:
        f.write(b'{"kind": "step", "st')                            # a writer killed mid-line
    run.append({**STEP, "step": 2})
    assert run.records() == [STEP, EVAL, {**STEP, "step": 2}]


def test_a_record_that_is_not_finite_is_not_written(tmp_path):
    run = good_run(tmp_path)
    with pytest.raises(RunWriteError, match="metrics.jsonl: not written"):
        run.append({**EVAL, "P@1": float("nan")})
    assert run.records() == [STEP, EVAL]


def test_appending_to_a_fifo_is_refused_without_waiting(tmp_path):
    run = good_run(tmp_path)
    (run.path / "metrics.jsonl").unlink()
    os.mkfifo(run.path / "metrics.jsonl")
    with pytest.raises(RunWriteError, match="is a FIFO"):
        run.append(STEP)


def test_a_full_disk_while_writing_the_config_leaves_no_run(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    good = store.create(config())
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(ENOSPC))
    with pytest.raises(RunWriteError, match="config.json: not written \\(No space left on device\\)"):
        store.create(config())
    assert [r.id for r in store.list()] == [good.id] and sorted(p.name for p in tmp_path.iterdir()) == [good.id]
    with pytest.raises(RunWriteError, match="ranks.json: not written"):
        good.save_ranks([RANK])
    assert not (good.path / "ranks.json").exists() and sorted(p.name for p in good.path.iterdir()) == ["config.json"]


@pytest.mark.parametrize("fault", [ENOSPC, SafetensorError("Error while serializing: I/O error: No space left on "
                                                           "device (os error 28)")], ids=["oserror", "safetensors"])
def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch, fault):
    trainer = Trainer(config(), load_dataset("sample"))
    run = RunStore(tmp_path).create(trainer.config)
    run.save_checkpoint(trainer.model, trainer)
    saved = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(1.0)

    def full_disk(state, path, metadata=None):
        Path(path).write_bytes(b"\x00" * 100)                       # a part of the file, then the disk is full
        raise fault
    monkeypatch.setattr("engine.runs.save_file", full_disk)
    with pytest.raises(RunWriteError, match="model.safetensors: not written .*No space left on device"):
        run.save_checkpoint(trainer.model, trainer)
    assert sorted(p.name for p in run.path.iterdir()) == ["config.json", "model.safetensors"]   # no temp left
    fresh = Trainer(config(), load_dataset("sample"))
    run.load_checkpoint(fresh.model)
    assert all(torch.equal(fresh.model.state_dict()[k], v) for k, v in saved.items())
    assert run.checkpoint_step() == 0


@pytest.mark.parametrize("fault", ["config.json", "metrics.jsonl", "model.safetensors"])
def test_a_full_disk_in_the_cli_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, fault):
    data, runs = tmp_path / "tiny", tmp_path / "runs"
    assert main(["generate", "--out", str(data), "--n-points", "200", "--n-features", "30", "--n-labels", "20",
                 "--n-clusters", "3", "--seed", "1"]) == 0
    if fault == "config.json":
        monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(ENOSPC))
    elif fault == "metrics.jsonl":
        fail_writes_to(monkeypatch, "metrics.jsonl", after=3)
    else:
        monkeypatch.setattr("engine.runs.save_file", lambda *a, **k: (_ for _ in ()).throw(ENOSPC))
    capsys.readouterr()
    assert main(["train", "--data", str(data), "--runs", str(runs), "--head", "dense", "--hidden", "8",
                 "--epochs", "1"]) == 2
    err = capsys.readouterr().err                                  # the progress bar, then the one line
    last = err.rstrip("\n").split("\n")[-1]
    assert last.startswith("error: ") and "Traceback" not in err
    assert f"{fault}: not written (No space left on device)" in last
    monkeypatch.undo()
    for run in RunStore(runs).list():                                # what was stored still reads
        assert run.config and all(r["kind"] in ("device", "step", "eval") for r in run.records())
        assert [p.name for p in run.path.iterdir() if p.name.endswith(".tmp")] == []


# ----------------------------------------------------------------------------
# temp files of killed writers

def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temps_are_removed_when_the_run_is_opened(tmp_path):
    run = good_run(tmp_path)
    old = time.time() - 2 * files.TEMP_MAX_AGE_S
    host = files._HOST
    stale = [f"model.safetensors.{host}.{dead_pid()}.0123abcd.tmp", "config.json.tmp", ".tmpAb12Cd"]
    kept = [f"metrics.jsonl.{host}.{os.getpid()}.0123abcd.tmp",     # a live writer's: this process
            "status.json.tmp",                                      # a fresh one of another naming
            "notes.txt"]                                            # not a temp file
    (run.path / stale[0]).mkdir()
    (run.path / stale[0] / ".tmpXyZ123").write_bytes(b"half a checkpoint")
    for name in stale[1:] + kept:
        (run.path / name).write_bytes(b"x")
    for name in stale[1:] + ["notes.txt"]:
        os.utime(run.path / name, (old, old))
    outside = tmp_path / "not-a-run"                                # no config.json: never touched
    outside.mkdir()
    (outside / "config.json.tmp").write_bytes(b"x")
    os.utime(outside / "config.json.tmp", (old, old))

    RunStore(tmp_path).list()
    Run(outside)
    assert sorted(p.name for p in run.path.iterdir()) == sorted(["config.json", "metrics.jsonl", *kept])
    assert (outside / "config.json.tmp").exists()


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
import engine.runs
from engine import Run, Trainer, load_dataset
run = Run(sys.argv[1])
trainer = Trainer(run.config, load_dataset("sample"))
run.save_checkpoint(trainer.model, trainer)
def killed(state, path, metadata=None):
    Path(path).write_bytes(b"half a checkpoint")
    os.kill(os.getpid(), signal.SIGKILL)
engine.runs.save_file = killed
run.save_checkpoint(trainer.model, trainer)
"""


def test_a_writer_killed_mid_checkpoint_leaves_a_temp_the_next_open_removes(tmp_path):
    run = RunStore(tmp_path).create(config())
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(run.path)], cwd=REPO, timeout=50,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    temps = [p for p in run.path.iterdir() if p.name.endswith(".tmp")]
    assert len(temps) == 1 and temps[0].name.startswith("model.safetensors.")
    Run(run.path)                                                   # opened again: the temp goes
    assert sorted(p.name for p in run.path.iterdir()) == ["config.json", "model.safetensors"]
    assert run.checkpoint_step() == 0                               # the checkpoint before the kill


def test_two_writers_never_share_a_temp(tmp_path):
    path = tmp_path / "ranks.json"
    meet = threading.Barrier(2, timeout=10)
    temps, errors = [], []

    def writer(text):
        def write(temp):
            temps.append(temp)
            temp.write_text(text)
            meet.wait()                                             # both temps exist at once
        try:
            files.atomic_write(path, write, RunWriteError)
        except Exception as e:                                      # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=writer, args=(t,)) for t in ("[1]", "[2]")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors and len(set(temps)) == 2 and path.read_text() in ("[1]", "[2]")
    assert [p.name for p in tmp_path.iterdir()] == ["ranks.json"]


# ----------------------------------------------------------------------------
# the app: a broken run is a row or a warning, never a page down

# (id, file of the run spoiled, its bytes; "loop": a symlink to itself)
BROKEN_RUNS = [
    ("config-not-json", "config.json", b"{"),
    ("config-list", "config.json", b"[1]"),
    ("config-loop", "config.json", "loop"),
    ("records-not-utf8", "metrics.jsonl", lines(STEP, b"\xff\xfe", EVAL)),
    ("records-nan", "metrics.jsonl", lines(STEP, b'{"kind": "eval", "step": 1, "P@1": NaN}')),
    ("records-not-objects", "metrics.jsonl", lines(b"[]", b"[]")),
    ("records-bad-step", "metrics.jsonl", lines(STEP, b'{"kind": "step", "step": "x", "loss": 1, "step_time": 1}')),
    ("records-no-step-time", "metrics.jsonl", lines(STEP, b'{"kind": "step", "step": 2, "loss": 1}')),
    ("records-deep", "metrics.jsonl", lines(b'{"kind": "x", "a": ' + b"[" * 5000 + b"]" * 5000 + b"}")),
    ("ranks-not-a-list", "ranks.json", b"{}"),
]


def stored_runs(root):
    """A good trained run on the sample data, and beside it a copy of it with each of BROKEN_RUNS
    and one with a checkpoint that is not safetensors (its files read: only its model does not)."""
    from app.warmup import warm_up_training
    warm_up_training()
    good = RunStore(root).create(TrainConfig.from_dict({"data": "sample", "head": "group_shared", "hidden": 32,
                                                        "fanin": 8, "group_size": 16, "epochs": 1,
                                                        "batch_size": 1024}))
    for _ in Trainer(good.config, load_dataset("sample")).recorded(good):
        pass
    for name, file, content in BROKEN_RUNS + [("checkpoint-garbage", "model.safetensors", b"\xff" * 64)]:
        path = root / f"{good.id}-{name}"
        shutil.copytree(good.path, path)
        (path / file).unlink(missing_ok=True)
        if content == "loop":
            (path / file).symlink_to(file)
        else:
            (path / file).write_bytes(content)
    return good.id


def test_every_page_works_with_broken_runs_beside_a_good_one(own_runs_dir):
    signal.alarm(600)                                   # AppTest pages: longer than the other tests here
    good = stored_runs(own_runs_dir)
    at = app()
    for name in ("home", "data", "label_map", "connectivity", "compare", "inference", "train"):
        page(at, name)                                  # the pickers' default, Train's run: a broken one
        assert_clean(at)
    (table,) = [d.value for d in at.dataframe if "run" in d.value.columns]
    state = dict(zip(table["run"], table["state"]))
    assert not state[good].startswith("broken") and not state[f"{good}-checkpoint-garbage"].startswith("broken")
    for name, file, _ in BROKEN_RUNS:
        assert state[f"{good}-{name}"].startswith("broken: ") and file in state[f"{good}-{name}"], name

    at = page(at, "compare")
    assert_clean(at)
    warning = " ".join(shown(w.value) for w in at.warning)
    assert all(f"{good}-{name}" in warning for name, _, _ in BROKEN_RUNS), warning
    assert not any("No evaluated runs" in i.value for i in at.info)        # the good run is drawn

    at = page(app(conn_model=good), "connectivity")
    assert_clean(at)
    assert not at.error and at.dataframe
    assert_error_box(page(app(conn_model=f"{good}-records-nan"), "connectivity"), "records do not read", "NaN")
    assert_error_box(page(app(conn_model=f"{good}-config-list"), "connectivity"), "No model", "config.json")
    at = page(app(inf_model=good), "inference")
    assert_clean(at)
    assert not at.error
    assert_error_box(page(app(inf_model=f"{good}-checkpoint-garbage"), "inference"), "No model", "safetensors")
    at = page(app(map_model=good, method="pca"), "label_map")
    assert_clean(at)
    assert not at.error


def test_a_full_disk_in_the_app_is_an_error_box(own_runs_dir, monkeypatch):
    from app.jobs import read_status
    from apptest import wait_for
    signal.alarm(600)
    at = page(app(head="dense", hidden=64, epochs=1), "train")
    with monkeypatch.context() as m:                    # the run's config.json cannot be written
        m.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(ENOSPC))
        at.button(key="start").click().run()
    assert_error_box(at, "config.json: not written (No space left on device)")
    assert RunStore(own_runs_dir).list() == []
    with monkeypatch.context() as m:                    # the job's first checkpoint cannot be written
        m.setattr("engine.runs.save_file", lambda *a, **k: (_ for _ in ()).throw(ENOSPC))
        at.button(key="start").click().run()
        (run,) = RunStore(own_runs_dir).list()
        assert wait_for(lambda: read_status(run.path).get("state") == "failed", timeout=60), read_status(run.path)
    at.run()
    assert_error_box(at, "The run failed", "model.safetensors: not written (No space left on device)")
    assert [r["kind"] for r in run.records()][:2] == ["device", "eval"]    # what was stored still reads
