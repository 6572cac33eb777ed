"""Label-sharded training (engine.distributed): the shards add up to the whole model, and a run on
2 processes under torchrun (gloo) gives the loss curve and P@k of one process."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.__main__ import main
from engine.data import generate
from engine.distributed import DistributedError, DistributedTrainer, bounds, shard_members
from engine.heads.mach import decoded_topk
from engine.errors import ConfigError
from engine.model import SparseInput
from engine import TrainConfig, Trainer

TORCHRUN = Path(sys.executable).with_name("torchrun")
HEADS = {
    "group_shared": dict(head="group_shared", fanin=16, group_size=8, groups="clustered"),
    "fixed_fanin": dict(head="fixed_fanin", fanin=16, index_init="centroid"),
    "dense": dict(head="dense"),
    "no_encoder": dict(head="group_shared", hidden=0, fanin=16, group_size=8, groups="clustered", index_init="centroid"),
    "dense_sparse": dict(head="dense_sparse", fanin=16, group_size=8, head_size=30, intermediate=48),
    "mach": dict(head="mach", mach_reps=3, mach_buckets=20),
    "mach_members": dict(head="mach", mach_reps=4, mach_buckets=20, mach_members=2),
}


@pytest.fixture(scope="module")
def tiny():
    # 171 labels: ragged groups of 8 (the last one padded), blocks that differ in size
    return generate(n_points=600, n_features=120, n_labels=171, n_clusters=9, seed=3)


def trainer_for(tiny, head, block=None, **kw):
    aux = {} if head == "mach_members" else dict(aux=1.0, aux_clusters=8)   # members: no shared layer
    return Trainer(TrainConfig.of(**{**dict(hidden=64, epochs=1, batch_size=64), **aux, **HEADS[head], **kw}), tiny,
                   block=block)


def shard(tiny, head, rank, world):
    """Rank's part of the model, as a DistributedTrainer builds it (without a process group)."""
    model = trainer_for(tiny, head, block=(rank, world)).model
    if model.config.members > 1:
        shard_members(model, rank, world)
    return model


def test_bounds_cover_every_item_once():
    for n in (5, 8, 171):
        for world in (1, 2, 3, 5):
            blocks = [bounds(n, r, world) for r in range(world)]
            assert blocks[0][0] == 0 and blocks[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
            assert max(hi - lo for lo, hi in blocks) - min(hi - lo for lo, hi in blocks) <= 1


@pytest.mark.parametrize("head", [h for h in HEADS if h != "mach_members"])
@pytest.mark.parametrize("world", [2, 3])
def test_shards_add_up_to_the_whole_head(tiny, head, world):
    # each rank builds its block of the head only, with the whole head's numbers there (state
    # concatenated = the whole state); Σ over ranks of the shards' head losses and gradients = the
    # whole head's, on one hidden batch; the merged top-k lists = the whole model's top-k (MACH:
    # decoding the concatenated buckets)
    whole = trainer_for(tiny, head).model
    shards = [shard(tiny, head, r, world) for r in range(world)]
    rows = np.arange(40)
    h = torch.randn(40, whole.config.head_in, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    Y = tiny.Y_train[rows]

    def loss_and_grad(model):
        x = h.clone().requires_grad_(True)
        torch.manual_seed(1)                  # the dense part's dropout mask: the same draw on every rank
        loss = model.head_loss(x, Y)
        loss.backward()
        return loss.item(), x.grad

    loss, grad = loss_and_grad(whole)
    parts = [loss_and_grad(s) for s in shards]
    assert sum(p[0] for p in parts) == pytest.approx(loss, rel=1e-5)
    torch.testing.assert_close(sum(p[1] for p in parts), grad, rtol=1e-4, atol=1e-6)
    part_names = {"dense", "sparse", "mach"}
    for name, t in whole.state_dict().items():
        pieces = [s.state_dict()[name] for s in shards]
        if name.split(".")[0] in part_names:
            torch.testing.assert_close(torch.cat(pieces), t)
        else:
            assert all(torch.equal(p, t) for p in pieces), name
    with torch.no_grad():
        for model in (whole, *shards):
            model.eval()
        want = whole.mach.topk(h, 5) if whole.mach is not None else whole.scored_topk(h, 5)[1]
        if whole.mach is not None:
            probs = torch.cat([torch.sigmoid(s.mach(h)) for s in shards], dim=1)
            got = decoded_topk(probs, whole.mach.bucket_of, 5)
        else:
            scores, labels = (torch.cat(p, 1) for p in zip(*[s.scored_topk(h, 5) for s in shards]))
            got = labels.gather(1, torch.topk(scores, 5).indices)
    assert torch.equal(got, want)


@pytest.mark.parametrize("world", [1, 2])
def test_independent_mach_members_are_whole_models(tiny, world):
    # each rank keeps its members' encoder columns: its loss needs no other rank, the losses add up,
    # its dropout draw is its columns of the whole draw, and the gathered probabilities decode alike
    whole = trainer_for(tiny, "mach_members").model
    shards = [shard(tiny, "mach_members", r, world) for r in range(world)]
    x, Y = SparseInput(tiny.X_train[:40]), tiny.Y_train[:40]
    state = torch.get_rng_state()
    h = whole.train().encode(x)
    for r, s in enumerate(shards):
        torch.set_rng_state(state)
        c0, c1 = 64 * 2 * r // world, 64 * 2 * (r + 1) // world
        torch.testing.assert_close(s.train().encode(x), h[:, c0:c1])
    with torch.no_grad():
        for m in [whole, *shards]:
            m.eval()
        loss = whole.loss(x, Y)[0].item()
        assert sum(s.loss(x, Y)[0].item() for s in shards) == pytest.approx(loss, rel=1e-5)
        probs = torch.cat([torch.sigmoid(s.mach(s.encode(x))) for s in shards], dim=1)
        assert torch.equal(decoded_topk(probs, whole.mach.bucket_of, 5), whole.topk(x, 5))


def test_independent_members_split_evenly(tiny):
    with pytest.raises(ConfigError, match="mach_members=2 independent models do not split evenly over 3"):
        shard(tiny, "mach_members", 0, 3)
    with pytest.raises(ConfigError, match="mach_members must divide mach_reps=4"):
        Trainer(TrainConfig.of(head="mach", mach_reps=4, mach_members=3), tiny)
    with pytest.raises(ConfigError, match="takes no intermediate layer"):
        Trainer(TrainConfig.of(head="mach", mach_reps=4, mach_members=2, intermediate=32), tiny)


def test_shard_refuses_more_ranks_than_parts(tiny):
    with pytest.raises(ConfigError, match="4 processes need at least 4 MACH repetitions to share, the model has 3"):
        shard(tiny, "mach", 0, 4)


def test_distributed_needs_torchrun(monkeypatch, capsys):
    for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(v, raising=False)
    assert main(["train", "--data", "sample", "--epochs", "1", "--distributed"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --distributed runs under torchrun (RANK, WORLD_SIZE") and len(err.splitlines()) == 1
    with pytest.raises(DistributedError, match="needs a process group"):
        DistributedTrainer(TrainConfig())
    with pytest.raises(ConfigError, match="dst .* is not available with --distributed"):
        DistributedTrainer(TrainConfig.of(head="group_shared", dst="random"))


def records(run_dir):
    """The run's training records (without the device records of its starts)."""
    out = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in out if r["kind"] != "device"]


def assert_same_records(got, want, rel=1e-4):
    """The records of a run on several processes are one process's, to float rounding (fused Adam
    rounds an element by the SIMD lane it falls in, which a shard boundary shifts: the losses drift
    apart by ~1e-5 in a few dozen steps, more over a long run at a high learning rate)."""
    assert [r["kind"] for r in got] == [r["kind"] for r in want]
    for g, w in zip(got, want):
        if g["kind"] == "step":
            assert g["loss"] == pytest.approx(w["loss"], rel=rel), g["step"]
        else:
            for key in ("P@1", "P@3", "P@5", "nDCG@5", "PSP@5"):
                assert g[key] == pytest.approx(w[key], abs=1.5e-3), (g["step"], key)   # a near-tie may flip


@pytest.mark.slow
@pytest.mark.parametrize("head", ["group_shared", "mach", "mach_members"])
def test_two_processes_train_like_one(tmp_path, head):
    # the same config and seed: one process in-process, two under torchrun (gloo, 1 thread each)
    settings = dict(data="sample", epochs=3, hidden=128, lr=1e-2, batch_size=128, **HEADS[head])
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    out = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "engine", "train",
                          *flags, "--distributed", "--runs", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (run_dir,) = tmp_path.iterdir()
    trainer = Trainer(TrainConfig.of(**settings))
    want = list(trainer.run())
    assert_same_records(records(run_dir), want)
    assert want[-1]["P@1"] > 0.5                                    # it learned: not a trivial curve
    ranks = json.loads((run_dir / "ranks.json").read_text())
    assert [r["rank"] for r in ranks] == [0, 1]
    assert sum(r["head_params"] for r in ranks) == trainer.model.head_params()
    # the gathered checkpoint is an ordinary one: `eval` reads it and gets the run's last scores
    assert main(["eval", "--run", str(run_dir)]) == 0


def descendants(pid):
    """The pids of every process below `pid` (Linux /proc)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):               # a process that just ended
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


@pytest.mark.slow
@pytest.mark.parametrize("procs", [2, 1])
def test_a_killed_distributed_run_resumes_on_any_process_count(tmp_path, procs):
    # SIGKILL a 2-process run after its first checkpoint, resume it on `procs` processes: the
    # records are an uninterrupted one-process run's (the checkpoint is the one one process writes)
    settings = dict(data="sample", epochs=6, hidden=128, lr=1e-2, batch_size=128, **HEADS["dense_sparse"])
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    first = subprocess.Popen([str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "engine", "train",
                              *flags, "--distributed", "--runs", str(tmp_path)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob("*/model.safetensors")) and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.02)
    for pid in descendants(first.pid) + [first.pid]:   # torchrun starts each worker in a session of its own
        os.kill(pid, signal.SIGKILL)
    first.wait()
    (run_dir,) = tmp_path.iterdir()
    trainer = Trainer(TrainConfig.of(**settings))
    want = list(trainer.run())
    assert 0 < len(records(run_dir)) < len(want)                     # it died mid-run
    launch = ([str(TORCHRUN), "--standalone", f"--nproc_per_node={procs}", "-m", "engine"] if procs > 1
              else [sys.executable, "-m", "engine"])
    out = subprocess.run([*launch, "train", "--resume", str(run_dir), *(["--distributed"] if procs > 1 else [])],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resuming run" in out.stdout
    assert_same_records(records(run_dir), want, rel=1e-3)             # 6 epochs at lr 1e-2


@pytest.mark.slow
def test_bench_distributed_reports_steps_and_memory_per_rank(tmp_path, capsys):
    out = tmp_path / "distributed.json"
    assert main(["bench-distributed", "--procs", "1", "2", "--labels", "640", "--heads", "group_shared",
                 "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    one, two = report["rows"]
    assert (one["procs"], two["procs"]) == (1, 2) and one["speedup"] == 1.0
    assert two["head_state_mb_per_rank"] == pytest.approx(one["head_state_mb_per_rank"] / 2, rel=0.05)
    assert two["P@1"] == pytest.approx(one["P@1"], abs=1e-3)     # the same computation on 1 and 2 ranks
    assert all(r["steps_per_s"] > 0 and r["peak_rss_mb_per_rank"] > 0 for r in report["rows"])
    assert "| group_shared | 2 |" in out.with_suffix(".md").read_text()


def test_bench_distributed_refuses_bad_counts():
    assert main(["bench-distributed", "--procs", "0", "2"]) == 2


@pytest.mark.slow
def test_the_across_machines_launch_of_the_readme(tmp_path):
    # two torchrun "nodes" of one process each, meeting at a master address (both on 127.0.0.1 here)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    nodes = [subprocess.Popen([str(TORCHRUN), "--nnodes=2", "--nproc_per_node=1", f"--node_rank={r}",
                               "--master_addr=127.0.0.1", "--master_port=29517", "-m", "engine", "train",
                               "--data=sample", "--head=group_shared", "--epochs=1", "--distributed",
                               "--runs", str(tmp_path / f"node{r}")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in (0, 1)]
    logs = [p.communicate(timeout=600)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], logs
    (run_dir,) = (tmp_path / "node0").iterdir()                   # rank 0 writes the run store
    assert not (tmp_path / "node1").exists()
    assert [r["rank"] for r in json.loads((run_dir / "ranks.json").read_text())] == [0, 1]
