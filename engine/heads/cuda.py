"""CUDA backend of the group-shared fixed fan-in layer: CuPy RawKernels from engine/cuda/*.cu.

Shapes: X (B, d), idx (G, k) int32, W (G, m, k), Z (B, L) with L <= G·m; label l = g·m + j.

    Z[b, g·m+j] = Σ_t W[g,j,t] · X[b, idx[g,t]]                 (+ bias[l])
    dW[g,j,t]   = Σ_b dZ[b, g·m+j] · X[b, idx[g,t]]
    dX[b, i]    = Σ_{(g,t): idx[g,t]=i} Σ_j dZ[b, g·m+j] · W[g,j,t]

The backend contract of engine/heads/__init__.py (the functions, arguments and results of the
reference and cpu backends), on CuPy arrays: torch CUDA tensors arrive through DLPack, no copy.
The fused loss and top-k run on the GPU whatever the slot mask and K (gs_fused_bce_v2,
gs_topk_partial_v2 + gs_topk_merge_v2). The backend follows the arrays' device: host (numpy)
arrays are handed to the cpu backend, so a head built with backend="auto" on a GPU machine
keeps working on CPU tensors until it is moved to the GPU.

How it runs: each .cu is compiled once per (dtype, device) by CuPy's RawModule with
engine.cuda.options() — the options the NVRTC test compiles with — and launched by the
launchers of engine/cuda/launch.py (the ones the CPU emulation tests run) on torch's current
stream. CuPy is optional (`pip install ".[gpu]"`): it is imported on first use only, and a
missing CuPy or GPU raises CudaBackendError there, not at import.
"""

import functools

import numpy as np

from ..cuda import launch as _launch
from ..cuda import options, read_source

TILES = _launch.Tiles()


class CudaBackendError(RuntimeError):
    """The cuda backend cannot run: no CuPy, no GPU, a compile error or a failed launch."""


# ---------------------------------------------------------------------------------------------
# CuPy, loaded lazily

def _cupy():
    try:
        import cupy
    except ImportError as e:
        raise CudaBackendError("the cuda backend needs CuPy: pip install '.[gpu]' (cupy-cuda12x), "
                               "or use backend='cpu'") from e
    return cupy


def available():
    """(True, "device description") when CuPy imports and sees a GPU, else (False, why not)."""
    try:
        import cupy
    except ImportError:
        return False, "CuPy is not installed"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
        if n < 1:
            return False, "CuPy sees no GPU"
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return True, f"{name} (CuPy {cupy.__version__}, {n} device(s))"
    except Exception as e:                                  # no driver, no device, ...
        return False, f"CuPy cannot use a GPU: {e}"


@functools.lru_cache(maxsize=None)
def _module(src, dtype_name, device_id):
    cp = _cupy()
    opts = options(TILES.defines(np.dtype(dtype_name)))
    with cp.cuda.Device(device_id):
        try:
            mod = cp.RawModule(code=read_source(src), options=opts)
            mod.compile()
        except Exception as e:
            raise CudaBackendError(f"compiling engine/cuda/{src} ({dtype_name}) with "
                                   f"{' '.join(opts)} failed: {e}") from e
    return mod


def _torch_stream(cp, device_id):
    """torch's current stream on `device_id`, as a CuPy stream: kernels queue behind torch's work."""
    import torch
    return cp.cuda.ExternalStream(torch.cuda.current_stream(device_id).cuda_stream)


def _runner(cp, dtype, device_id):
    """run(name, grid, block, args) on torch's current stream of `device_id`."""

    def run(name, grid, block, args):
        fn = _module("group_shared.cu", np.dtype(dtype).name, device_id).get_function(name)
        stream = _torch_stream(cp, device_id)
        try:
            with cp.cuda.Device(device_id), stream:
                fn(tuple(grid), tuple(block), args)
        except Exception as e:
            shapes = [tuple(a.shape) if hasattr(a, "shape") and a.ndim else int(a) for a in args]
            raise CudaBackendError(f"launch of {name} failed: grid {tuple(grid)}, block "
                                   f"{tuple(block)}, arguments {shapes}: {e}") from e
    return run


def _is_host(a):
    """True for host arrays (numpy); device arrays (CuPy) expose __cuda_array_interface__."""
    return a is None or not hasattr(a, "__cuda_array_interface__")


def _prep(*arrays, like=0):
    """(cupy, run, arrays on the device) for the arrays of one call; host arrays are uploaded
    (idx arrives from the CPU when the head's index buffer was never moved). The kernels are
    those compiled for the dtype of arrays[like]."""
    cp = _cupy()
    device_id = next(a for a in arrays if a is not None and not _is_host(a)).device.id
    with cp.cuda.Device(device_id):
        out = [None if a is None else cp.asarray(a) for a in arrays]
    return cp, _runner(cp, out[like].dtype, device_id), out


def _cpu():
    from . import cpu
    return cpu


# ---------------------------------------------------------------------------------------------
# the backend contract (engine/heads/__init__.py), CuPy arrays in and out

def forward(X, idx, W, bias=None, n_labels=None):
    """Z (B, n_labels) = layer(X (B, d)); n_labels defaults to G·m. gs_forward_v2 when m < MT,
    else gs_forward_v1."""
    if _is_host(X):
        return _cpu().forward(X, idx, W, bias, n_labels)
    cp, run, (X, idx, W, bias) = _prep(X, idx, W, bias)
    return _launch.forward(run, cp, TILES, X, idx.astype(np.int32, copy=False), W, bias, n_labels)


def backward(dZ, X, idx, W, need_input=True, need_weight=True, need_bias=False):
    """(dX (B, d) or None, dW (G, m, k) or None, dbias (L,) or None) from dZ (B, L)."""
    if _is_host(dZ):
        return _cpu().backward(dZ, X, idx, W, need_input, need_weight, need_bias)
    cp, run, (dZ, X, idx, W) = _prep(dZ, X, idx, W, like=1)
    idx = idx.astype(np.int32, copy=False)
    dZ = cp.ascontiguousarray(dZ, X.dtype)
    dX = _launch.grad_input(run, cp, TILES, dZ, idx, W, X.shape[1]) if need_input else None
    dW = _launch.grad_weight(run, cp, TILES, dZ, X, idx, W.shape[1]) if need_weight else None
    db = dZ.sum(axis=0) if need_bias else None
    return dX, dW, db


def grad_input(dZ, idx, W, d):
    """dX (B, d) from dZ (B, L), L <= G·m. gs_grad_input_v1 (atomics on dX)."""
    if _is_host(dZ):
        return _cpu().grad_input(dZ, idx, W, d)
    cp, run, (dZ, idx, W) = _prep(dZ, idx, W, like=2)
    return _launch.grad_input(run, cp, TILES, cp.ascontiguousarray(dZ, W.dtype),
                              idx.astype(np.int32, copy=False), W, int(d))


def grad_weight(dZ, X, idx, m=None):
    """dW (G, m, k) from dZ (B, L) and X (B, d); m defaults to L // G. gs_grad_weight_v1."""
    if _is_host(dZ):
        return _cpu().grad_weight(dZ, X, idx, m)
    cp, run, (dZ, X, idx) = _prep(dZ, X, idx, like=1)
    G, L = idx.shape[0], dZ.shape[1]
    if m is None:
        if L % G:
            raise ValueError(f"grad_weight: dZ has {L} columns, not a multiple of G={G}; pass m")
        m = L // G
    return _launch.grad_weight(run, cp, TILES, cp.ascontiguousarray(dZ, X.dtype), X,
                               idx.astype(np.int32, copy=False), int(m))


def group_shared_bce(X, idx, W, bias, y_indptr, y_slots, slot_mask=None, n_labels=None,
                     scale=None, need_grad=True):
    """(loss, dX (B, d), dW (G, m, k), dbias (L,) or None; the three None without need_grad):
    BCE-with-logits of the layer over the real slots (slot_mask (>= L,) bool, None: all) against
    Y (CSR y_indptr (B+1,), y_slots sorted per row), summed over (b, s) times scale (default
    1/B: the trainer's loss), never holding the (B, L) logits. gs_fused_bce_v2."""
    if _is_host(X):
        return _cpu().group_shared_bce(X, idx, W, bias, y_indptr, y_slots, slot_mask, n_labels,
                                       scale, need_grad)
    cp, run, (X, idx, W, bias, y_indptr, y_slots, slot_mask) = _prep(X, idx, W, bias, y_indptr,
                                                                     y_slots, slot_mask)
    scale = 1.0 / max(X.shape[0], 1) if scale is None else float(scale)
    return _launch.fused_bce(run, cp, TILES, X, idx.astype(np.int32, copy=False), W, bias,
                             y_indptr.astype(np.int32, copy=False),
                             y_slots.astype(np.int32, copy=False), slot_mask, n_labels, scale,
                             need_grad)


def group_shared_topk(X, idx, W, bias, K, slot_mask=None, n_labels=None):
    """(scores (B, K), slots (B, K) int64): the K largest logits per row among the real slots,
    larger first, ties to the smaller slot, (-inf, -1) where fewer than K are real; without
    the (B, L) logits, for any K. gs_topk_partial_v2 + gs_topk_merge_v2."""
    if _is_host(X):
        return _cpu().group_shared_topk(X, idx, W, bias, K, slot_mask, n_labels)
    cp, run, (X, idx, W, bias, slot_mask) = _prep(X, idx, W, bias, slot_mask)
    vals, slots = _launch.topk(run, cp, TILES, X, idx.astype(np.int32, copy=False), W, bias, K,
                               slot_mask, n_labels)
    return vals, slots.astype(np.int64)
