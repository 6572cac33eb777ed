"""app/jobs.py: training off the script thread. A job's records reach the run store, the first
evaluation comes at once, Stop, Pause and Step take effect between two records, a failed job says
why, and a run left live by a dead server reads as interrupted."""

import time

import pytest

from engine import Run, RunStore, TrainConfig
from engine.errors import RunWriteError

from app.jobs import JobLimitError, JobRegistry, read_status, write_status
from apptest import tiny, wait_for  # noqa: F401  (tiny: a fixture)


def test_job_records_reach_the_store_and_stop_is_quick(tiny, tmp_path):
    ds, path = tiny
    reg = JobRegistry(tmp_path, max_jobs=1)
    cfg = TrainConfig.of(data=str(path), head="group_shared", hidden=32, fanin=8, group_size=8, epochs=500,
                      batch_size=32, eval_every=3)
    job = reg.start(cfg, ds)
    try:
        assert wait_for(lambda: len(job.run.records()) >= 5)
        where, first = job.run.records()[:2]
        assert where["kind"] == "device" and where["device"] == "cpu"
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
    cfg = TrainConfig.of(data=str(path), head="fixed_fanin", hidden=32, fanin=8, epochs=300, batch_size=32)
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
    job = reg.start(TrainConfig.of(data=str(path), head="fixed_fanin", hidden=16, fanin=64), ds)   # fanin > d
    job.thread.join(10)
    assert reg.state(job.run) == "failed" and "fanin" in read_status(job.run.path)["error"]


def test_a_run_left_live_by_a_dead_server_is_interrupted(tmp_path):
    reg = JobRegistry(tmp_path)
    run = reg.store.create(TrainConfig())
    write_status(run.path, state="running")
    assert reg.state(run) == "interrupted"


def test_a_status_of_the_wrong_types_reads_as_no_status(tmp_path):
    run = RunStore(tmp_path).create(TrainConfig())
    (run.path / "status.json").write_text('{"total_steps": "x", "state": 5, "error": ["a"], "updated": true}')
    assert read_status(run.path) == {}
    (run.path / "status.json").write_text('{"total_steps": 40, "state": "running", "other": 1}')
    assert read_status(run.path) == {"total_steps": 40, "state": "running"}


def test_a_status_that_cannot_be_written_leaves_the_old_one(tmp_path, monkeypatch, capsys):
    run = RunStore(tmp_path).create(TrainConfig())
    write_status(run.path, state="running")

    def full(*a, **kw):
        raise RunWriteError("status.json: not written (No space left on device)")
    monkeypatch.setattr(Run, "write_json", full)
    write_status(run.path, state="done")                              # no exception in the job's thread
    assert read_status(run.path)["state"] == "running"
    assert "No space left on device" in capsys.readouterr().err
