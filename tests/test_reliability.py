"""Reliability: crash-safe runs and resume, safe checkpoints, divergence, the memory guard.

The kill-and-resume test starts `python -m engine train` in a subprocess, SIGKILLs it after its
first checkpoint, checks that the run directory still loads, resumes it with `train --resume` and
compares the finished run with an uninterrupted one made in this process.
"""

import itertools
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from engine.__main__ import main
from engine.data import Dataset, generate, save_dataset
from engine.errors import XMCError
from engine.guard import ENV, MemoryBudgetError, check_memory, estimate_bytes
from engine.memory import head_memory
from engine import CheckpointError, Run, RunStore
from engine import DivergenceError, TrainConfig, Trainer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    return generate(n_points=400, n_features=60, n_labels=50, n_clusters=5, mean_labels=3.0,
                    mean_features=8.0, seed=3, name="tiny")


def config(**kw):
    base = dict(hidden=32, fanin=8, group_size=4, epochs=3, batch_size=64, eval_k=5, eval_every=3)
    return TrainConfig.of(**{**base, **kw})


def strip(records):
    """Records without what the machine decides: wall-clock timings, and the device records that say
    where each part of a run trained (Trainer.recorded writes them; run() yields none)."""
    return [{k: v for k, v in r.items() if not k.endswith("_time")} for r in records if r["kind"] != "device"]


def consume(trainer, run, limit=None):
    """What the CLI and the app's jobs do: append every record, checkpoint at every evaluation."""
    out = []
    for record in itertools.islice(trainer.run(), limit):
        run.append(record)
        out.append(record)
        if record["kind"] == "eval":
            run.save_checkpoint(trainer.model, trainer)
    return out


# ----------------------------------------------------------------------------
# checkpoints and resume, in process

def test_checkpoint_holds_optimizer_rng_and_counters_as_tensors(tiny, tmp_path):
    trainer = Trainer(config(head="group_shared"), tiny)
    run = RunStore(tmp_path).create(trainer.config)
    consume(trainer, run, limit=4)                              # 3 steps, then the eval at step 3
    with safe_open(str(run.checkpoint_path), framework="pt") as f:
        keys, meta = set(f.keys()), f.metadata()
    assert set(trainer.model.state_dict()) <= keys
    n_params = len(list(trainer.model.parameters()))
    for i in range(n_params):
        assert {f"trainer/optim/{i}/exp_avg", f"trainer/optim/{i}/exp_avg_sq", f"trainer/optim/{i}/step"} <= keys
    assert "trainer/rng/torch" in keys
    state = json.loads(meta["xmc_trainer"])
    assert state["step"] == 3 and state["config"] == trainer.config.to_dict()
    assert run.checkpoint_step() == 3
    assert sorted(p.name for p in run.path.iterdir()) == ["config.json", "metrics.jsonl", "model.safetensors"]


@pytest.mark.parametrize("settings", [
    dict(head="dense"),
    dict(head="group_shared", eval_every=4, warmup=0.2, decay="cosine"),   # mid-epoch checkpoints (7 steps/epoch)
    dict(head="group_shared", groups="clustered", dst="random", dst_every=2, aux=0.5, aux_clusters=5),
    dict(head="mach", mach_buckets=12, mach_reps=2, dropout=0.5),
    dict(head="group_shared", val_fraction=0.2, patience=2, eval_every=2, lr=0.05, epochs=12, dropout=0.0,
         warmup=0.0, decay="none"),                                     # stops at 32 of 48
], ids=["dense", "mid-epoch", "dst-aux", "mach-dropout", "early-stopping"])
def test_resume_gives_the_records_of_the_uninterrupted_run(tiny, tmp_path, settings):
    reference = list(Trainer(config(**settings), tiny).run())
    first = Trainer(config(**settings), tiny)
    run = RunStore(tmp_path).create(first.config)
    n = next(i for i, r in enumerate(reference) if r["kind"] == "eval" and r["step"] > 4) + 1
    consume(first, run, limit=n + 2)                    # a little past the checkpoint, then "crash"
    step = reference[n - 1]["step"]
    torch.manual_seed(12345)                            # the process's RNG is elsewhere now
    second = Trainer(run.config, tiny)
    assert run.resume(second) == step
    assert strip(run.records()) == strip(reference[:n])    # records after the checkpoint are dropped
    rest = consume(second, run)
    assert strip(rest) == strip(reference[n:])
    assert strip(run.records()) == strip(reference)
    again = Trainer(run.config, tiny)
    run.load_checkpoint(again.model)
    assert again.evaluate() == second.evaluate()


def test_resume_refuses_another_config_and_weights_only_checkpoints(tiny, tmp_path):
    trainer = Trainer(config(head="group_shared"), tiny)
    run = RunStore(tmp_path).create(trainer.config)
    consume(trainer, run, limit=4)
    with pytest.raises(CheckpointError, match="another config"):
        run.resume(Trainer(config(head="group_shared", lr=0.01), tiny))
    run.save_checkpoint(trainer.model)                           # weights only: evaluable, not resumable
    with pytest.raises(CheckpointError, match="weights only"):
        run.resume(Trainer(config(head="group_shared"), tiny))
    other = Trainer(config(head="dense"), tiny)
    with pytest.raises(CheckpointError, match="does not fit the model"):
        run.load_checkpoint(other.model)


@pytest.mark.parametrize("key, value, words", [
    ("sparse.idx", 10_000, "bad index sets"),
    ("slot_of_label", -1, "slot_of_label must be distinct slots"),
    ("trainer/rng/torch", None, "RNG state"),
], ids=["idx-out-of-range", "slot-negative", "rng-wrong-shape"])
def test_tampered_checkpoint_tensors_are_refused(tiny, tmp_path, key, value, words):
    from engine.checkpoint import read_checkpoint
    trainer = Trainer(config(head="group_shared"), tiny)
    run = RunStore(tmp_path).create(trainer.config)
    consume(trainer, run, limit=4)
    tensors, meta = read_checkpoint(run.checkpoint_path)
    if value is None:
        tensors[key] = tensors[key][:10].clone()
    else:
        tensors[key] = tensors[key].clone()
        tensors[key].view(-1)[0] = value
    save_file(tensors, str(run.checkpoint_path), metadata=meta)
    with pytest.raises(CheckpointError, match=words):
        run.resume(Trainer(config(head="group_shared"), tiny))


def _wait_for_checkpoint(proc, run_root, timeout=120):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        for path in run_root.glob("*/model.safetensors"):
            return path.parent
        if proc.poll() is not None:
            raise AssertionError(f"training ended (rc {proc.returncode}) before its first checkpoint: "
                                 f"{proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.01)
    raise AssertionError("no checkpoint after 120 s")


def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(tiny, tmp_path):
    data, runs = tmp_path / "tiny", tmp_path / "runs"
    save_dataset(tiny, data)
    args = ["--data", str(data), "--head", "group_shared", "--hidden", "32", "--fanin", "8", "--group-size", "4",
            "--batch-size", "64", "--epochs", "30", "--eval-every", "5", "--dropout", "0.3"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "engine", "train", "--runs", str(runs), *args],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        run_dir = _wait_for_checkpoint(proc, runs)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    with open(run_dir / "metrics.jsonl", "a") as f:                # as if killed in the middle of a line
        f.write('{"kind": "step", "step": 99')

    # the run directory still loads: config, records (without the torn line), checkpoint
    run = RunStore(runs).get(run_dir.name)
    config = run.config
    records = run.records()
    assert records and all(isinstance(r, dict) for r in records)
    step = run.checkpoint_step()
    total = Trainer(config, tiny).total_steps
    assert step is not None and 5 <= step < total, "killed after the end: make the run longer"
    assert any(r["kind"] == "eval" and r["step"] == step for r in records)
    run.load_checkpoint(Trainer(config, tiny).model)       # the checkpoint loads into a fresh model

    # resume through the CLI, to the end
    assert main(["train", "--resume", str(run_dir)]) == 0
    resumed = run.records()

    # the uninterrupted run, in this process
    reference = list(Trainer(config, tiny).run())
    assert strip(resumed) == strip(reference)
    after = [r for r in reference if r["kind"] == "eval" and r["step"] > step]
    assert after and strip([r for r in resumed if r["kind"] == "eval" and r["step"] > step]) == strip(after)
    assert run.checkpoint_step() == total
    assert main(["train", "--resume", str(run_dir)]) == 0             # complete: nothing to do
    assert strip(run.records()) == strip(reference)


# ----------------------------------------------------------------------------
# no pickle is ever loaded

class _Payload:
    """Unpickling this creates a marker file: code that runs when a pickle is loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickle_bytes(marker):
    return pickle.dumps({"embed.weight": _Payload(marker)}, protocol=2)


def test_the_payload_does_run_code_when_unpickled(tmp_path):
    # control: the crafted file really is dangerous, so the tests below mean something
    marker = tmp_path / "control"
    pickle.loads(_pickle_bytes(marker))
    assert marker.exists()


@pytest.mark.parametrize("kind", ["pickle", "torch-save-zip", "pickle-after-a-fake-header"])
def test_a_pickle_in_place_of_the_checkpoint_is_refused_and_runs_nothing(tiny, tmp_path, capsys, kind):
    trainer = Trainer(config(head="group_shared"), tiny)
    run = RunStore(tmp_path / "runs").create(trainer.config)
    consume(trainer, run, limit=4)
    marker = tmp_path / "pwned"
    payload = _pickle_bytes(marker)
    if kind == "pickle":
        run.checkpoint_path.write_bytes(payload)
    elif kind == "torch-save-zip":                       # the layout torch.save writes
        with zipfile.ZipFile(run.checkpoint_path, "w") as z:
            z.writestr("archive/data.pkl", payload)
            z.writestr("archive/version", "3\n")
    else:                                                # a safetensors-like length prefix, then a pickle
        run.checkpoint_path.write_bytes(len(payload).to_bytes(8, "little") + payload)
    fresh = Trainer(config(head="group_shared"), tiny)
    with pytest.raises(CheckpointError, match="pickle|not a valid safetensors") as e:
        run.load_checkpoint(fresh.model)
    assert str(run.checkpoint_path) in str(e.value)
    with pytest.raises(CheckpointError):
        run.resume(fresh)
    assert main(["eval", "--run", str(run.path)]) == 2
    assert main(["train", "--resume", str(run.path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") and "model.safetensors" in line for line in err)
    assert not marker.exists()


def test_a_checkpoint_whose_header_size_starts_with_the_pickle_byte_loads(tmp_path):
    # safetensors begins with its header's size (8 bytes, little-endian): 1 size in 32 starts with
    # 0x80, the pickle magic; such a checkpoint is safetensors all the same and must load
    from engine.checkpoint import read_checkpoint
    path = tmp_path / "model.safetensors"
    for pad in range(256):
        save_file({"w": torch.ones(3)}, str(path), metadata={"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    tensors, meta = read_checkpoint(path)
    assert torch.equal(tensors["w"], torch.ones(3)) and meta["pad"] == "x" * pad


def test_no_torch_load_or_pickle_in_the_loaders():
    for path in list((REPO / "engine").rglob("*.py")) + list((REPO / "app").rglob("*.py")):
        text = path.read_text()
        assert "torch.load(" not in text and "pickle.load" not in text and "allow_pickle=True" not in text, path


# ----------------------------------------------------------------------------
# divergence

def test_nan_loss_stops_with_an_error_record_and_keeps_the_last_good_checkpoint(tiny, tmp_path):
    trainer = Trainer(config(head="group_shared", eval_every=2), tiny)
    run = RunStore(tmp_path).create(trainer.config)
    records = consume(trainer, run, limit=7)             # steps 1..5 and evals at 2, 4
    assert records[-1] == {**records[-1], "kind": "step", "step": 5}
    with torch.no_grad():
        trainer.model.sparse.weight[0, 0, 0] = float("nan")       # injected: the next loss is NaN
    with pytest.raises(DivergenceError, match=r"diverged at step 6 .*loss is nan"):
        consume(trainer, run)
    last = run.records()[-1]
    assert last["kind"] == "error" and last["error"] == "divergence" and last["step"] == 6
    assert "loss is nan" in last["message"]
    assert trainer.step == 5                             # the bad step was not applied
    assert run.checkpoint_step() == 4
    fresh = Trainer(run.config, tiny)
    run.load_checkpoint(fresh.model)
    assert all(torch.isfinite(p).all() for p in fresh.model.parameters())


def test_huge_lr_diverges_through_the_cli(tiny, tmp_path, capsys):
    data, runs = tmp_path / "tiny", tmp_path / "runs"
    save_dataset(tiny, data)
    argv = ["train", "--data", str(data), "--runs", str(runs), "--head", "dense", "--hidden", "32",
            "--batch-size", "64", "--epochs", "2", "--eval-every", "1", "--lr", "1e20"]
    assert main(argv) == 2
    err = capsys.readouterr().err                        # the progress bar, then one line
    last = err.rstrip("\n").split("\n")[-1]
    assert last.startswith("error: training diverged at step") and "lr" in last
    (run_dir,) = runs.iterdir()
    run = Run(run_dir)
    assert run.records()[-1]["kind"] == "error"
    good = run.checkpoint_step()
    assert good is not None and good < run.records()[-1]["step"]
    model = Trainer(run.config, tiny).model
    run.load_checkpoint(model)
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ----------------------------------------------------------------------------
# memory guard

def _wide_dataset(n_labels, n_features=50, n_points=64):
    rng = np.random.default_rng(0)
    X = sp.random(n_points, n_features, density=0.2, format="csr", dtype=np.float32, random_state=rng)
    Y = sp.csr_matrix((np.ones(n_points, np.float32), (np.arange(n_points), rng.integers(0, n_labels, n_points))),
                      shape=(n_points, n_labels))
    return Dataset("wide", X, Y, X, Y)


def test_a_dense_head_with_10M_labels_is_refused_before_allocation(monkeypatch):
    monkeypatch.setenv(ENV, "4096")
    ds = _wide_dataset(10_000_000)
    t0 = time.perf_counter()
    with pytest.raises(MemoryBudgetError) as e:
        Trainer(TrainConfig.of(head="dense", hidden=512), ds)
    assert time.perf_counter() - t0 < 5
    message = str(e.value)
    assert "10,000,000 labels" in message and "budget of 4,096 MB" in message and ENV in message
    est = estimate_bytes(TrainConfig.of(head="dense", hidden=512), (50, 10_000_000))
    assert f"{est['total'] / 2**20:,.0f} MB" in message
    # with the default budget (the machine's available memory), too, where it is smaller
    monkeypatch.delenv(ENV)
    from engine.guard import available_bytes
    if available_bytes() is not None and available_bytes() < est["total"]:
        with pytest.raises(MemoryBudgetError, match="MemAvailable"):
            Trainer(TrainConfig.of(head="dense", hidden=512), ds)


def test_the_estimate_counts_the_head_encoder_and_batch():
    c = TrainConfig.of(head="group_shared", hidden=64, fanin=8, group_size=4, batch_size=32)
    est = estimate_bytes(c, (1000, 500))
    assert est["head"] == head_memory(c.model_config(1000, 500), 32)["total"]
    assert est["encoder"] == 4 * 4 * (1000 * 64 + 64)
    assert est["total"] == sum(v for k, v in est.items() if k != "total")
    dense = estimate_bytes(TrainConfig.of(head="dense", hidden=64, batch_size=32), (1000, 500))
    assert dense["head"] > est["head"]                                   # the point of sparse heads
    assert estimate_bytes(TrainConfig.of(head="dense", hidden=64, batch_size=64), (1000, 500))["total"] > dense["total"]
    assert check_memory(c, 1000, 500, budget=est["total"]) == est
    with pytest.raises(MemoryBudgetError, match="over the budget"):
        check_memory(c, 1000, 500, budget=est["total"] - 1)
    # one rank of 4 label shards holds a quarter of the head (and of the eval logits), a whole
    # encoder; the 2 ranks on this machine share its budget
    four = estimate_bytes(TrainConfig.of(head="dense", hidden=64, batch_size=32), (1000, 500), shards=4)
    assert four["head"] == -(-dense["head"] // 4) and four["encoder"] == dense["encoder"]
    assert four["eval"] == 1024 * 125 * 4
    sharded = dict(shards=4, ranks_here=2)
    assert check_memory(TrainConfig.of(head="dense", hidden=64, batch_size=32), 1000, 500, budget=2 * four["total"],
                        **sharded) == four
    with pytest.raises(MemoryBudgetError, match=r"per process \(1 of 4 label shards; 2 on this machine\)"):
        check_memory(TrainConfig.of(head="dense", hidden=64, batch_size=32), 1000, 500, budget=2 * four["total"] - 1,
                     **sharded)
    # no encoder: no encoder weights, and the densified input batch (B, D) and eval rows (1024, D)
    linear = estimate_bytes(TrainConfig.of(head="group_shared", hidden=0, fanin=8, group_size=4, batch_size=32,
                                           dense_share=0), (1000, 500))
    assert linear["encoder"] == 0
    assert linear["activations"] == 4 * 32 * 1000 * 4
    # the fused top-k holds no logits: its transposed input (d = D here) and the D features per row
    assert linear["eval"] == 1024 * (1000 + 1000) * 4


@pytest.mark.parametrize("value", ["lots", "-5", "0"])
def test_a_bad_budget_setting_is_named(monkeypatch, tiny, value):
    monkeypatch.setenv(ENV, value)
    with pytest.raises(MemoryBudgetError, match=ENV):
        Trainer(config(), tiny)


def test_the_guard_lets_small_runs_through_and_the_cli_reports_it(monkeypatch, tiny, tmp_path, capsys):
    monkeypatch.setenv(ENV, "1")                         # 1 MB: the tiny model needs more
    save_dataset(tiny, tmp_path / "tiny")
    assert main(["train", "--data", str(tmp_path / "tiny"), "--runs", str(tmp_path / "runs"),
                 "--head", "dense", "--hidden", "256", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: head 'dense' with 50 labels") and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()              # refused before the run was created
    monkeypatch.setenv(ENV, "100000")
    assert isinstance(Trainer(config(), tiny), Trainer)
    assert issubclass(MemoryBudgetError, XMCError)


# ----------------------------------------------------------------------------
# server defaults

def test_the_app_server_defaults_are_safe():
    import tomllib
    server = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())["server"]
    assert server["address"] == "127.0.0.1"                 # this machine only, unless told otherwise
    assert 1 <= server["maxUploadSize"] <= 1024             # MB
    assert server["enableXsrfProtection"] is True and server["enableCORS"] is True


# ----------------------------------------------------------------------------
# concurrent jobs and soak (the app's training backend, app/jobs.py)

def solo_records(cfg, ds=None, n=None):
    """What a job records when it runs alone: a first evaluation at step 0, then the run (its first n records)."""
    trainer = Trainer(cfg, ds)
    return list(itertools.islice(itertools.chain([trainer.eval_record()], trainer.run()), n))


def _wait(predicate, timeout=60):
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("timed out")
        time.sleep(0.005)


def test_two_training_jobs_at_once_do_not_interfere_and_a_third_is_refused(tiny, tmp_path):
    from app.jobs import JobLimitError, JobRegistry
    registry = JobRegistry(tmp_path / "runs", max_jobs=2)
    configs = [config(head="group_shared", epochs=4, dropout=0.5, eval_every=5),
               config(head="dense", epochs=4, dropout=0.3, seed=1, eval_every=5)]
    jobs = []
    for cfg in configs:
        job = registry.start(cfg, tiny)
        job.pause()                                   # hold both until both are running
        jobs.append(job)
    assert len(registry.active()) == 2
    with pytest.raises(JobLimitError, match=r"2 trainings are running already \(at most 2 at once\)"):
        registry.start(config(), tiny)
    for job in jobs:
        job.resume()
    for job in jobs:
        job.thread.join(120)
        assert job.state == "done" and job.error is None
    for job, cfg in zip(jobs, configs):
        assert strip(job.run.records()) == strip(solo_records(cfg, tiny))
        assert job.run.checkpoint_step() == Trainer(cfg, tiny).total_steps
    job = registry.start(config(), tiny)              # a slot is free again
    job.thread.join(120)
    assert job.state == "done"


def _rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_200_start_stop_cycles_leak_less_than_50MB(tiny, tmp_path):
    import gc
    from app.jobs import JobRegistry
    registry = JobRegistry(tmp_path / "runs", max_jobs=1)
    cfg = config(head="group_shared", epochs=50, eval_every=0)

    def cycle():
        job = registry.start(cfg, tiny, first_eval=False)
        _wait(lambda: job.first_record_s is not None or not job.alive)
        job.stop()
        job.thread.join(30)
        assert job.state == "stopped", (job.state, job.error)

    for _ in range(20):                               # warm up: allocator pools, kernels, imports
        cycle()
    gc.collect()
    before = _rss_mb()
    for _ in range(200):
        cycle()
    gc.collect()
    grown = _rss_mb() - before
    print(f"RSS growth over 200 start/stop cycles: {grown:.1f} MB")
    assert grown < 50


@pytest.mark.parametrize("where", ["weights", "exp_avg_sq"])
def test_non_finite_parameters_or_moments_stop_before_the_next_checkpoint(tiny, tmp_path, where):
    # a finite loss can leave NaN in the weights or Adam's moments: the check at each evaluation
    # stops the run before that evaluation, so the checkpoint kept is the last finite one
    trainer = Trainer(config(head="group_shared"), tiny)
    run = RunStore(tmp_path).create(trainer.config)
    step, poisoned = trainer.optimizer.step, trainer.model.sparse.weight

    def poisoning_step(*a, **kw):
        out = step(*a, **kw)
        if trainer.step == 5:                                # the 6th step, just before an evaluation
            target = poisoned if where == "weights" else trainer.optimizer.state[poisoned][where]
            target.data.view(-1)[0] = float("nan")
        return out
    trainer.optimizer.step = poisoning_step
    with pytest.raises(DivergenceError, match=rf"sparse.weight has non-finite {where}"):
        for _ in trainer.recorded(run):
            pass
    records = run.records()
    assert records[-1]["kind"] == "error" and records[-1]["step"] == 6
    assert [r["step"] for r in records if r["kind"] == "eval"] == [3]    # the 6th step's evaluation never ran
    from engine.checkpoint import read_checkpoint
    tensors, _ = read_checkpoint(run.checkpoint_path)
    assert all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point())
