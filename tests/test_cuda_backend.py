"""The cuda backend (engine/heads/cuda.py) and its registration, without a GPU.

- CuPy stays optional: importing the backend needs no CuPy, using it without CuPy raises a
  clear CudaBackendError, and backend="auto" takes "cpu" then (and says why).
- The backend's glue (argument order, dtypes, options, host arrays to the cpu backend) runs end
  to end against a stand-in for CuPy (tests/fake_cupy.py) whose RawModule builds the same .cu
  with the options it is given and runs it in the CPU emulation (engine/cuda/emulate): numpy
  arrays marked as device arrays play CuPy's. Its ops' numbers are checked by check_op
  (tests/test_heads.py, tests/test_fused.py, tests/test_cuda_emulate.py).
"""

import sys
import types

import numpy as np
import pytest
import torch

from engine.heads import cpu
from engine.heads import cuda as C
from engine.heads import group_shared as GS
from engine.heads import reference as R

from checks import check_op, close as _close
from fake_cupy import DevArray, FakeRawModule, dev, emulated_cuda


@pytest.fixture
def fake():
    with emulated_cuda() as cp:
        yield cp


def data(dt=np.float32, B=5, d=30, G=4, m=3, k=11, pad=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((B, d)).astype(dt)
    idx = np.stack([rng.choice(d, k, replace=False) for _ in range(G)]).astype(np.int32)
    W = rng.standard_normal((G, m, k)).astype(dt)
    L = G * m - pad
    bias = rng.standard_normal(L).astype(dt)
    return X, idx, W, bias, L


def close(got, ref, tol=1e-5):
    _close("result", got, ref, tol)


# ---------------------------------------------------------------------------------------------
# CuPy optional

def test_import_without_cupy_and_clear_error_on_use(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)                 # "import cupy" fails
    ok, why = C.available()
    assert not ok and "CuPy is not installed" in why
    X, idx, W, bias, L = data()
    with pytest.raises(C.CudaBackendError, match=r"needs CuPy: pip install '\.\[gpu\]'"):
        C.group_shared_bce(dev(X), idx, dev(W), None, np.array([0] * 6), np.zeros(0, np.int64), None, L)


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
    # numpy in (a CPU tensor): every function hands the call to the cpu backend, no CuPy needed
    # (the reference module stands in for engine.heads.cpu: same contract, no numba compile here)
    assert C._cpu() is cpu
    monkeypatch.setattr(C, "_cpu", lambda: R)
    X, idx, W, bias, L = data()
    dZ = np.random.default_rng(1).standard_normal((X.shape[0], L)).astype(np.float32)
    y = (np.array([0, 1, 1, 3, 4, 4]), np.array([2, 0, L - 1, 5]))
    mask = np.arange(L) % 3 > 0
    pairs = [(C.forward(X, idx, W, bias, L), R.forward(X, idx, W, bias, L)),
             *zip(C.backward(dZ, X, idx, W, True, True, True), R.backward(dZ, X, idx, W, True, True, True)),
             *zip(C.group_shared_bce(X, idx, W, bias, *y, mask, L), R.group_shared_bce(X, idx, W, bias, *y, mask, L)),
             *zip(C.group_shared_topk(X, idx, W, bias, 4, mask, L), R.group_shared_topk(X, idx, W, bias, 4, mask, L))]
    for a, b in pairs:
        np.testing.assert_array_equal(a, b)
    out = GS.group_shared_linear(torch.from_numpy(X), torch.from_numpy(idx), torch.from_numpy(W),
                                 torch.from_numpy(bias), backend="cuda", n_labels=L)
    close(out.numpy(), R.forward(X, idx, W, bias, L))


# ---------------------------------------------------------------------------------------------
# the backend's glue, through the emulated RawModule

def test_device_arrays_in_device_arrays_out(fake):
    # every function of the contract on device arrays (idx and the labels from the host are
    # uploaded) returns device arrays, built with the backend's tiles as -D options
    X, idx, W, bias, L = data()
    dZ = dev(np.random.default_rng(1).standard_normal((X.shape[0], L)).astype(np.float32))
    y = (np.array([0, 1, 1, 3, 4, 4]), np.array([2, 0, L - 1, 5]))
    X, W, bias = dev(X), dev(W), dev(bias)
    loss, *grads = C.group_shared_bce(X, idx, W, bias, *y, None, L)
    scores, slots = C.group_shared_topk(X, idx, W, bias, 3, None, L)
    outs = [C.forward(X, idx, W, bias, L), *C.backward(dZ, X, idx, W, True, True, True),
            C.grad_input(dZ, idx, W, X.shape[1]), C.grad_weight(dZ, X, idx, W.shape[1]), *grads, scores, slots]
    assert all(isinstance(o, DevArray) for o in outs) and isinstance(loss, float)
    assert slots.dtype == np.int64
    assert ("group_shared.cu", "-DGS_NT=16") in {(n, o) for n, opts in FakeRawModule.built for o in opts}


def test_launch_errors_name_the_kernel_and_geometry(fake, monkeypatch):
    def boom(grid, block, args):
        raise RuntimeError("CUDA_ERROR_INVALID_VALUE")
    monkeypatch.setattr(FakeRawModule, "get_function", lambda self, name: boom)
    X, idx, W, bias, L = data()
    with pytest.raises(C.CudaBackendError, match=r"launch of gs_forward_v2 failed: grid \(4, 2\), "
                                                 r"block \(16,\).*CUDA_ERROR_INVALID_VALUE"):
        C.forward(dev(X), idx, dev(W), dev(bias), L)


def test_gpu_benchmark_validation_runs_on_the_emulator(fake, capsys):
    # the GPU bench's validation step (run before any timing on a GPU), on CPU tensors + fake CuPy
    from engine.bench import gpu as bench_gpu
    fake.from_dlpack = lambda t: dev(t.numpy())
    fake.asnumpy = np.asarray
    bench_gpu.validate(C, fake, device="cpu", shape=(5, 20, 23, 3, 7))
    assert "All results match" in capsys.readouterr().out


@pytest.mark.parametrize("op", ["layer", "bce", "topk"])
def test_the_real_gpu_glue_of_check_op_runs_on_the_emulator(fake, op):
    # backend "cuda-gpu" (what `make gpu-check` runs on a GPU): CuPy's asarray in, asnumpy out
    fake.asnumpy = lambda a: np.asarray(a).view(np.ndarray)
    check_op(op, "cuda-gpu", (9, 13, 4, 5, 3, 11), np.float32)


def test_gpu_benchmark_without_gpu_says_why(monkeypatch):
    from engine.bench import gpu as bench_gpu
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(SystemExit, match="engine.bench.gpu needs a GPU with CuPy and torch CUDA: CuPy is not installed"):
        bench_gpu.main([])


def test_backward_takes_the_weights_dtype_when_dz_differs(fake):
    # dZ in float64 against a float32 layer: the float32 kernels run, dZ is cast once
    X, idx, W, bias, L = data(np.float32)
    dZ = np.random.default_rng(1).standard_normal((X.shape[0], L))
    dX, dW, db = C.backward(dev(dZ), dev(X), idx, dev(W), True, True, False)
    assert dX.dtype == dW.dtype == np.float32 and db is None
    rdX, rdW, _ = R.backward(dZ, X, idx, W, True, True, False)
    close(dX, rdX), close(dW, rdW)
