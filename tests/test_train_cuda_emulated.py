"""The whole trainer on the cuda backend, its kernels run by the CPU emulation (issue 16: proven
without a GPU).

Each run below trains with backend="cuda" while the fake CuPy of tests/fake_cupy.py stands in for
the real one: the head's tensors reach the cuda backend as device arrays (numpy marked as CuPy's),
so every sparse op of the run (the forward and backward of gradient DST, the fused BCE with its slot
mask over a padded last group, the fused top-k of every evaluation) goes through the backend's glue
and launchers to the kernels of engine/cuda/group_shared.cu, built and executed on the CPU. Its
records must match those of the same run on the cpu (numba) backend within float32 tolerance.
"""

import collections

import numpy as np
import pytest
import torch

from engine import TrainConfig, Trainer, generate
from engine.heads import cuda as C
from engine.heads import fused as F
from engine.heads import group_shared as GS

from fake_cupy import dev, emulated_cuda

# 61 labels: groups of 4 leave the last one padded (3 slots of 4 real), fixed fan-in pads nothing
RUNS = {
    "group_shared, padded last group": dict(head="group_shared", group_size=4),
    "fixed fan-in": dict(head="fixed_fanin"),
    "dense head + sparse tail, intermediate layer": dict(head="dense_sparse", head_size=9, group_size=4,
                                                         intermediate=24),
    "group_shared + gradient DST": dict(head="group_shared", group_size=4, dst="gradient", dst_every=2,
                                        dst_zeta=0.5, epochs=4, batch_size=40),
    "fixed fan-in + SET DST, top-40": dict(head="fixed_fanin", dst="random", dst_every=2, dst_zeta=0.5, epochs=4,
                                           batch_size=40, eval_k=40),
}


@pytest.fixture(scope="module")
def small():
    return generate(n_points=240, n_features=50, n_labels=61, n_clusters=5, mean_labels=3.0,
                    mean_features=8.0, seed=5, name="small")


def _device_arrays_for_cpu_tensors(monkeypatch):
    """What torch CUDA tensors are to the real backend, CPU tensors become to the emulated one:
    device arrays in (sharing memory), tensors out."""
    def to_backend(t):
        return None if t is None else dev(t.detach().numpy())

    def from_backend(a, dtype):
        return None if a is None else torch.from_numpy(np.asarray(a).view(np.ndarray).copy()).to(dtype)

    for module in (GS, F):
        monkeypatch.setattr(module, "_to_backend", to_backend)
        monkeypatch.setattr(module, "_from_backend", from_backend)
    monkeypatch.setattr(C, "available", lambda: (True, "the CPU emulation"))
    return _count_calls(monkeypatch)


def _count_calls(monkeypatch):
    """{op: calls} of the cuda backend's ops on device arrays during the test (filled as they run)."""
    calls = collections.Counter()

    def counted(name, op):
        def call(*args, **kw):
            calls[name] += not C._is_host(args[0])
            return op(*args, **kw)
        return call
    for name in ("forward", "backward", "group_shared_bce", "group_shared_topk"):
        monkeypatch.setattr(C, name, counted(name, getattr(C, name)))
    return calls


def records(config, dataset):
    """Every record of a run, without its wall-clock timings."""
    return [{k: v for k, v in r.items() if not k.endswith("_time")} for r in Trainer(config, dataset).run()]


def assert_same_records(got, want):
    assert [r["kind"] for r in got] == [r["kind"] for r in want]
    for g, w in zip(got, want):
        assert g.keys() == w.keys(), (g, w)
        for key, value in w.items():
            if isinstance(value, float):
                assert g[key] == pytest.approx(value, rel=2e-4, abs=1e-5), (key, g, w)
            else:
                assert g[key] == value, (key, g, w)


@pytest.mark.parametrize("name", list(RUNS))
def test_the_trainer_on_the_emulated_cuda_backend_matches_the_cpu_backend(name, small, monkeypatch):
    settings = {**dict(hidden=32, fanin=6, epochs=2, batch_size=60, eval_every=4, lr=1e-2), **RUNS[name]}
    want = records(TrainConfig.of(**settings, backend="cpu"), small)
    with emulated_cuda():
        calls = _device_arrays_for_cpu_tensors(monkeypatch)
        got = records(TrainConfig.of(**settings, backend="cuda"), small)
    n_steps = sum(r["kind"] == "step" for r in want)
    assert calls["group_shared_topk"] >= sum(r["kind"] == "eval" for r in want) >= 2
    if settings.get("dst") == "gradient":                   # the steps before an update: dZ captured
        assert calls["forward"] == calls["backward"] > 0
    assert calls["group_shared_bce"] + calls["forward"] == n_steps      # every step on the kernels
    if "DST" in name:
        assert any(r["kind"] == "dst" and r["dropped"] > 0 for r in want)
    assert_same_records(got, want)
