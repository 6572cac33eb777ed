"""The cuda backend (engine/heads/cuda.py) and its registration, without a GPU.

- CuPy stays optional: importing the backend needs no CuPy, using it without CuPy raises a
  clear CudaBackendError, and backend="auto" takes "cpu" then (and says why).
- The backend's glue (argument order, dtypes, options, file per kernel, host fallback) runs end
  to end against a stand-in for CuPy whose RawModule builds the same .cu with the options it
  is given and runs it in the CPU emulation (engine/cuda/emulate): numpy arrays marked as
  device arrays play CuPy's.
"""

import contextlib
import sys
import types

import numpy as np
import pytest
import torch

from engine.cuda import SOURCES, read_source
from engine.cuda import reference_fused as RF
from engine.cuda.emulate import EmuModule
from engine.cuda.launch import Tiles
from engine.heads import cpu
from engine.heads import cuda as C
from engine.heads import group_shared as GS
from engine.heads import reference as R

SMALL = Tiles(nt=16, tb=4, mt=4, kt=8, kmax=8, minb=1)     # the emulation tests' "t16" tiles


class DevArray(np.ndarray):
    """A numpy array that says it lives on device 0 (it has __cuda_array_interface__)."""

    @property
    def __cuda_array_interface__(self):
        return {}

    @property
    def device(self):
        return types.SimpleNamespace(id=0)


def dev(a):
    return np.ascontiguousarray(a).view(DevArray)


class FakeRawModule:
    """CuPy's RawModule, emulated: the options' -D defines select the build."""
    built = []

    def __init__(self, code, options=()):
        self.code, self.options = code, tuple(options)

    def compile(self):
        name = next(s for s in SOURCES if read_source(s) == self.code)
        defines = {}
        for o in self.options:
            if o.startswith("-D"):
                k, _, v = o[2:].partition("=")
                defines[k] = v or None
        assert "--std=c++17" in self.options and "-ftz=true" in self.options
        self.emu = EmuModule(name, defines)
        FakeRawModule.built.append((name, self.options))

    def get_function(self, name):
        return lambda grid, block, args: self.emu.launch(name, grid, block, *args)


def fake_cupy():
    cp = types.ModuleType("cupy")
    cp.__version__ = "fake"
    cp.ndarray = DevArray
    cp.asarray = lambda a: a if isinstance(a, DevArray) else dev(a)
    cp.ascontiguousarray = lambda a, dtype=None: dev(np.asarray(a, dtype))
    cp.zeros = lambda shape, dtype=float: dev(np.zeros(shape, dtype))
    cp.empty = lambda shape, dtype=float: dev(np.empty(shape, dtype))
    cp.RawModule = FakeRawModule
    cp.cuda = types.SimpleNamespace(Device=lambda i: contextlib.nullcontext(),
                                    ExternalStream=lambda p: contextlib.nullcontext())
    return cp


@pytest.fixture
def fake(monkeypatch):
    import shutil
    from engine.cuda.emulate import CXX
    if shutil.which(CXX) is None:
        pytest.skip(f"no host C++ compiler {CXX!r} for the emulated RawModule")
    cp = fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", cp)
    monkeypatch.setattr(C, "TILES", SMALL)
    monkeypatch.setattr(C, "_torch_stream", lambda cp, i: contextlib.nullcontext())
    C._module.cache_clear()
    yield cp
    C._module.cache_clear()


def data(dt=np.float32, B=5, d=30, G=4, m=3, k=11, pad=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((B, d)).astype(dt)
    idx = np.stack([rng.choice(d, k, replace=False) for _ in range(G)]).astype(np.int32)
    W = rng.standard_normal((G, m, k)).astype(dt)
    L = G * m - pad
    bias = rng.standard_normal(L).astype(dt)
    return X, idx, W, bias, L


def close(got, ref, tol=1e-5):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= tol * max(np.abs(ref).max(), 1e-30)


# ---------------------------------------------------------------------------------------------
# CuPy optional

def test_import_without_cupy_and_clear_error_on_use(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)                 # "import cupy" fails
    ok, why = C.available()
    assert not ok and "CuPy is not installed" in why
    X, idx, W, bias, L = data()
    with pytest.raises(C.CudaBackendError, match=r"needs CuPy: pip install '\.\[gpu\]'"):
        C.fused_bce(dev(X), idx, dev(W), None, np.array([0] * 6, np.int32), np.zeros(0, np.int32), L)


def test_auto_takes_cpu_without_cupy_and_says_why(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setattr(GS, "_auto_choice", None)
    with caplog.at_level("INFO", logger=GS.__name__):
        assert GS.resolve_backend("auto") == "cpu"
    assert GS.auto_backend() == ("cpu", "CuPy is not installed")
    assert "backend='auto' took 'cpu' (CuPy is not installed)" in caplog.text
    assert GS.resolve_backend("cuda") == "cuda" and GS.get_backend("cuda") is C


def test_auto_takes_cuda_when_cupy_sees_a_gpu(monkeypatch, fake):
    fake.__version__ = "13.6"
    fake.cuda.runtime = types.SimpleNamespace(getDeviceCount=lambda: 1,
                                              getDeviceProperties=lambda i: {"name": b"NVIDIA H100"})
    monkeypatch.setattr(GS, "_auto_choice", None)
    assert GS.resolve_backend("auto") == "cuda"
    assert GS.auto_backend()[1] == "CuPy sees a GPU: NVIDIA H100 (CuPy 13.6, 1 device(s))"


def test_cpu_tensors_go_to_the_cpu_backend(monkeypatch):
    # numpy in (a CPU tensor): handed to the cpu backend, no CuPy needed (the reference module
    # stands in for engine.heads.cpu: same signatures, no numba compile in this test)
    assert C._cpu() is cpu
    monkeypatch.setattr(C, "_cpu", lambda: R)
    X, idx, W, bias, L = data()
    np.testing.assert_array_equal(C.forward(X, idx, W, bias, L), R.forward(X, idx, W, bias, L))
    dZ = np.random.default_rng(1).standard_normal((X.shape[0], L)).astype(np.float32)
    for a, b in zip(C.backward(dZ, X, idx, W, True, True, True), R.backward(dZ, X, idx, W, True, True, True)):
        np.testing.assert_array_equal(a, b)
    out = GS.group_shared_linear(torch.from_numpy(X), torch.from_numpy(idx), torch.from_numpy(W),
                                 torch.from_numpy(bias), backend="cuda", n_labels=L)
    close(out.numpy(), R.forward(X, idx, W, bias, L))


# ---------------------------------------------------------------------------------------------
# the backend's glue, through the emulated RawModule

@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["f32", "f64"])
def test_backend_functions_through_emulated_rawmodule(fake, dt):
    X, idx, W, bias, L = data(dt)
    B, d = X.shape
    G, m, k = W.shape
    tol = 1e-5 if dt == np.float32 else 1e-12
    Z = C.forward(dev(X), idx, dev(W), dev(bias), L)                 # idx from the host: uploaded
    assert isinstance(Z, DevArray)
    close(Z, R.forward(X, idx, W, bias, L), tol)
    dZ = np.random.default_rng(1).standard_normal((B, L)).astype(dt)
    dX, dW, db = C.backward(dev(dZ), dev(X), dev(idx), dev(W), True, True, True)
    rdX, rdW, rdb = R.backward(dZ, X, idx, W, True, True, True)
    close(dX, rdX, tol), close(dW, rdW, tol), close(db, rdb, tol)
    close(C.grad_input(dev(dZ), idx, dev(W), d), rdX, tol)
    close(C.grad_weight(dev(dZ), dev(X), idx, m), rdW, tol)
    indptr = np.array([0, 1, 1, 3, 4, 4], np.int32)
    indices = np.array([2, 0, L - 1, 5], np.int32)
    loss, fdX, fdW, fdb = C.fused_bce(dev(X), idx, dev(W), dev(bias), indptr, indices, L, 1.0 / B)
    rl, rfdX, rfdW, rfdb = RF.fused_bce(X, idx, W, bias, indptr, indices, L, 1.0 / B)
    assert abs(loss - rl) <= tol * abs(rl)
    close(fdX, rfdX, tol), close(fdW, rfdW, tol), close(fdb, rfdb, tol)
    v, lab = C.topk(dev(X), idx, dev(W), dev(bias), L, 3, 2)
    rv, rlab = RF.topk(X, idx, W, bias, L, 3)
    np.testing.assert_array_equal(lab, rlab)
    close(v, rv, tol)
    close(C.slot_magnitude(dev(W), L), RF.slot_magnitude(W, L), tol)
    built = {(name, o) for name, opts in FakeRawModule.built for o in opts if o.startswith("-DGS_NT")}
    assert {("group_shared.cu", "-DGS_NT=16"), ("dst.cu", "-DGS_NT=16")} <= built


def test_regrow_updates_weights_in_place(fake):
    rng = np.random.default_rng(5)
    G, m, k, d = 6, 2, 5, 14
    idx = np.stack([rng.choice(d, k, replace=False) for _ in range(G)]).astype(np.int32)
    W = rng.standard_normal((G, m, k)).astype(np.float32)
    slots = np.stack([rng.choice(k, 2, replace=False) for _ in range(G)]).astype(np.int32)
    cand = rng.integers(0, d, (G, 6)).astype(np.int32)
    Wd = dev(W.copy())
    new, filled = C.regrow(idx, Wd, slots, cand, d)
    rnew, rW, rfilled = RF.regrow(idx, W, slots, cand, d)
    np.testing.assert_array_equal(new, rnew)
    np.testing.assert_array_equal(filled, rfilled)
    close(Wd, rW)


def test_launch_errors_name_the_kernel_and_geometry(fake, monkeypatch):
    def boom(grid, block, args):
        raise RuntimeError("CUDA_ERROR_INVALID_VALUE")
    monkeypatch.setattr(FakeRawModule, "get_function", lambda self, name: boom)
    X, idx, W, bias, L = data()
    with pytest.raises(C.CudaBackendError, match=r"launch of gs_forward_v2 failed: grid \(4, 2\), "
                                                 r"block \(16,\).*CUDA_ERROR_INVALID_VALUE"):
        C.forward(dev(X), idx, dev(W), dev(bias), L)


def test_gpu_benchmark_validation_runs_on_the_emulator(fake, capsys):
    # bench_gpu's validation step (run before any timing on a GPU), on CPU tensors + fake CuPy
    from engine.cuda import bench_gpu
    fake.from_dlpack = lambda t: dev(t.numpy())
    fake.asnumpy = np.asarray
    bench_gpu.validate(C, fake, device="cpu", shape=(5, 20, 23, 3, 7))
    assert "All results match" in capsys.readouterr().out


def test_gpu_benchmark_without_gpu_says_why(monkeypatch):
    from engine.cuda import bench_gpu
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(SystemExit, match="bench_gpu needs a GPU with CuPy and torch CUDA: CuPy is not installed"):
        bench_gpu.main([])


def test_backward_takes_the_weights_dtype_when_dz_differs(fake):
    # dZ in float64 against a float32 layer: the float32 kernels run, dZ is cast once
    X, idx, W, bias, L = data(np.float32)
    dZ = np.random.default_rng(1).standard_normal((X.shape[0], L))
    dX, dW, db = C.backward(dev(dZ), dev(X), idx, dev(W), True, True, False)
    assert dX.dtype == dW.dtype == np.float32 and db is None
    rdX, rdW, _ = R.backward(dZ, X, idx, W, True, True, False)
    close(dX, rdX), close(dW, rdW)
