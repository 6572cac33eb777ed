"""The device setting (engine/device.py): what "auto" takes and why, "cuda" refused in one line where
no GPU is, the record that says where a run trains, and checkpoints that resume on another device."""

import dataclasses
import json

import pytest
import torch

from engine import ConfigError, DeviceError, RunStore, TrainConfig, Trainer, generate, resolve_device, save_dataset
from engine import device as D
from engine.__main__ import main
from engine.heads import cuda as C


@pytest.fixture
def gpu(monkeypatch):
    """A machine on which torch and CuPy both see a GPU (as far as resolve_device can tell)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(C, "available", lambda: (True, "CuPy 13.6, 1 device(s)"))


def test_auto_takes_the_cpu_here_and_says_why():
    placement = resolve_device("auto")
    assert placement.device == torch.device("cpu") and "torch sees no GPU" in placement.why
    assert resolve_device("cpu").why == "device='cpu' was asked"


def test_auto_takes_the_gpu_when_torch_and_cupy_see_one(gpu):
    placement = resolve_device("auto")
    assert placement.device == torch.device("cuda", 0)
    assert placement.why == "torch and CuPy see NVIDIA H100 (CuPy 13.6, 1 device(s))"
    assert resolve_device("cuda", index=3).device == torch.device("cuda", 3)          # a rank's GPU
    assert resolve_device("auto", backend="cpu").device == torch.device("cpu")       # numba reads host memory


def test_a_gpu_that_cupy_cannot_use_is_not_taken(gpu, monkeypatch):
    monkeypatch.setattr(C, "available", lambda: (False, "CuPy is not installed"))
    placement = resolve_device("auto")
    assert placement.device.type == "cpu" and "the sparse kernels cannot use it: CuPy is not installed" in placement.why
    with pytest.raises(DeviceError, match="device='cuda' cannot run on this machine: .*CuPy is not installed"):
        resolve_device("cuda")


def test_device_settings_are_checked():
    with pytest.raises(ConfigError, match="device must be one of|device="):
        TrainConfig.of(device="tpu")
    with pytest.raises(ConfigError, match="device='cuda' needs the 'cuda' or 'auto' backend, got backend='cpu'"):
        TrainConfig.of(device="cuda", backend="cpu")
    with pytest.raises(ConfigError, match="device='gpu'"):
        D.resolve_device("gpu")
    assert TrainConfig.of(device="cuda").here().device == "auto"


def test_device_cuda_without_a_gpu_is_one_line_and_exit_2(capsys):
    assert main(["train", "--data", "sample", "--device", "cuda", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: device='cuda' cannot run on this machine: torch sees no GPU")


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny"
    save_dataset(generate(n_points=200, n_features=30, n_labels=20, n_clusters=3, seed=1), path)
    return path


def test_the_run_records_where_it_trains_and_resumes_on_another_device(tiny, tmp_path, capsys):
    # a run stored as a GPU run (device 'cuda'), trained here up to its first checkpoint as a GPU would
    # leave it (checkpoints hold CPU tensors), continues on the CPU with --device cpu only
    config = TrainConfig.of(data=str(tiny), head="group_shared", hidden=8, fanin=4, group_size=4, epochs=2,
                            device="cuda")
    run = RunStore(tmp_path / "runs").create(config)
    for record in Trainer(config.here()).recorded(run):
        if record["kind"] == "eval":
            break
    step = run.checkpoint_step()
    assert main(["train", "--resume", str(run.path)]) == 2                           # no GPU for 'cuda'
    assert "device='cuda' cannot run on this machine" in capsys.readouterr().err
    assert main(["train", "--resume", str(run.path), "--device", "cpu"]) == 0
    assert main(["train", "--resume", str(run.path), "--device", "cpu", "--epochs", "3"]) == 2
    assert "only --device may change); drop --epochs" in capsys.readouterr().err
    devices = [r for r in run.records() if r["kind"] == "device"]
    assert [(r["step"], r["device"]) for r in devices] == [(0, "cpu"), (step, "cpu")]
    assert devices[1]["why"] == "device='cpu' was asked"
    assert json.loads((run.path / "config.json").read_text())["device"] == "cuda"    # the run's own config
    assert run.records()[-1]["kind"] == "eval" and run.checkpoint_step() > step


def test_a_checkpoint_of_another_config_is_still_refused(tiny, tmp_path):
    config = TrainConfig.of(data=str(tiny), head="dense", hidden=8, epochs=1)
    run = RunStore(tmp_path / "runs").create(config)
    for _ in Trainer(config).recorded(run):
        pass
    from engine import CheckpointError
    with pytest.raises(CheckpointError, match="another config"):
        run.resume(Trainer(dataclasses.replace(config, lr=0.5)))
    run.resume(Trainer(dataclasses.replace(config, device="cpu")))                  # the device may differ
