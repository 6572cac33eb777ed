"""check_op: one op of a backend against the float64 reference, the forward, then every gradient.

    check_op("layer", "cpu", (B, d, G, k, m, L), np.float32)
    check_op("bce", "cuda", shape, np.float64, masked=False)     # cuda: the backend, emulated
    check_op("topk", "reference", shape, np.float32, K=40)

The ops are those of the backend contract (engine/heads/__init__.py): "layer" (forward with
and without bias, backward with dZ in C and F order, grad_input, grad_weight, dW alone), "bce"
(group_shared_bce with and without need_grad) and "topk" (group_shared_topk). The backends
are "reference", "cpu", "cuda" (engine/heads/cuda.py on the emulated CuPy of
tests/fake_cupy.py: the .cu kernels run on the CPU) and "cuda-gpu" (the same on the real CuPy
and GPU: marked `gpu`, skipped without one; `make gpu-check` runs them). The inputs are seeded (`make_case`): a
ragged shape (the last group padded when L < G·m), index rows distinct but unsorted, label
rows with none, a random slot mask. Three passes, each output with its own tolerance, a
failure naming backend, op, dtype, pass and output ("cuda bce float32 gradient: dW[3, 0, 1]
...", from `close`):
  1. forward: the op's values against engine/heads/reference.py (the top-K slots exactly);
  2. gradient: every gradient against the reference;
  3. gradcheck (float64): every gradient against central differences of the backend's own
     forward along a random direction, so the reference is checked too.
"""

import contextlib
from dataclasses import dataclass, replace

import numpy as np
import pytest

from engine.device import gpu_status
from engine.heads import reference
from engine.heads.group_shared import get_backend, random_index

GPU_OK, GPU_WHY = gpu_status()
BACKENDS = [pytest.param("reference"), pytest.param("cpu"), pytest.param("cuda", id="cuda-emu"),
            pytest.param("cuda-gpu", marks=[pytest.mark.gpu, pytest.mark.skipif(not GPU_OK, reason=f"no GPU: {GPU_WHY}")])]
DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]

# relative to the largest reference value: float32 per op and output; float64 for every one
TOL32 = {"layer": 1e-5, "bce": 2e-5, "topk": 1e-5}
TOL64 = 1e-12
GRADCHECK_EPS, GRADCHECK_TOL = 1e-6, 1e-6
EMULATED_MAX_WORK = 10**6   # B·L·k past which the emulated cuda backend is skipped (a barrier
                            # costs an OS context switch there: the benchmark shape takes minutes)


def close(name, got, want, rtol):
    """got ≈ want to rtol of want's magnitude; the failure names the tensor, index and values."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    if want.size == 0:
        return
    diff = np.abs(got - want)
    scale = max(np.abs(want).max(), 1e-30)
    at = np.unravel_index(int(diff.argmax()), diff.shape)
    assert diff[at] <= rtol * scale, (f"{name}{list(at)}: got {got[at]!r}, want {want[at]!r}, "
                                      f"max |diff| {diff[at]:.3g} > {rtol:g} * {scale:.3g}")


# ---------------------------------------------------------------------------------------------
# seeded inputs

@dataclass(frozen=True)
class Case:
    X: np.ndarray            # (B, d)
    idx: np.ndarray          # (G, k) int32, distinct per row, unsorted
    W: np.ndarray            # (G, m, k)
    bias: np.ndarray         # (L,) or None
    dZ: np.ndarray           # (B, L)
    y_indptr: np.ndarray     # (B+1,) int64
    y_slots: np.ndarray      # (nnz,) int64, sorted per row
    mask: np.ndarray         # (G·m,) bool or None
    L: int
    K: int


def labels(B, L, rng, per_row=5, empty_every=3):
    """CSR labels: up to per_row sorted distinct slots per row; every empty_every-th row none."""
    rows = [np.zeros(0, np.int64) if b % empty_every == 1 else
            np.sort(rng.choice(L, size=int(rng.integers(1, min(L, per_row) + 1)), replace=False))
            for b in range(B)]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    return indptr, np.concatenate([np.zeros(0, np.int64), *rows]).astype(np.int64)


def make_case(shape, dtype, seed=0, masked=True, with_bias=True, K=7, wscale=0.5):
    """The inputs of every op on shape (B, d, G, k, m, L), seeded; K is capped at L."""
    B, d, G, k, m, L = shape
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((B, d)).astype(dtype)
    idx = np.ascontiguousarray(rng.permuted(random_index(G, d, k, seed), axis=1))
    W = (wscale * rng.standard_normal((G, m, k))).astype(dtype)
    bias = rng.standard_normal(L).astype(dtype) if with_bias else None
    dZ = rng.standard_normal((B, L)).astype(dtype)
    y_indptr, y_slots = labels(B, L, rng)
    mask = rng.random(G * m) > 0.2 if masked else None
    return Case(X, idx, W, bias, dZ, y_indptr, y_slots, mask, L, min(K, L))


# ---------------------------------------------------------------------------------------------
# the ops: (forward outputs, gradient outputs) of a backend, and the scalar their gradients are of

def _layer(be, c):
    G, m, k = c.W.shape
    d = c.X.shape[1]
    has_b = c.bias is not None
    dX, dW, db = be.backward(c.dZ, c.X, c.idx, c.W, True, True, has_b)
    fX, fW, fb = be.backward(np.asfortranarray(c.dZ), c.X, c.idx, c.W, True, True, has_b)
    alone = be.backward(c.dZ, c.X, c.idx, c.W, False, True, False)
    assert alone[0] is None and alone[2] is None, "backward(need_input=False, need_bias=False)"
    assert (db is None) == (not has_b), "dbias"
    grads = {"dX": dX, "dW": dW, "dX (dZ F-order)": fX, "dW (dZ F-order)": fW, "dW (alone)": alone[1],
             "grad_input": be.grad_input(c.dZ, c.idx, c.W, d), "grad_weight": be.grad_weight(c.dZ, c.X, c.idx, m)}
    if has_b:
        grads.update({"dbias": db, "dbias (dZ F-order)": fb})
    fwd = {"Z": be.forward(c.X, c.idx, c.W, c.bias, c.L), "Z (no bias)": be.forward(c.X, c.idx, c.W, None, c.L)}
    return fwd, grads


def _layer_scalar(be, c):
    return float(np.sum(np.asarray(be.forward(c.X, c.idx, c.W, c.bias, c.L), np.float64) * c.dZ))


def _bce(be, c):
    loss, dX, dW, db = be.group_shared_bce(c.X, c.idx, c.W, c.bias, c.y_indptr, c.y_slots, c.mask, c.L)
    only = be.group_shared_bce(c.X, c.idx, c.W, c.bias, c.y_indptr, c.y_slots, c.mask, c.L, None, False)
    assert only[1:] == (None, None, None), "group_shared_bce(need_grad=False) returned gradients"
    assert (db is None) == (c.bias is None), "dbias"
    grads = {"dX": dX, "dW": dW} | ({} if db is None else {"dbias": db})
    return {"loss": loss, "loss (no grad)": only[0]}, grads


def _bce_scalar(be, c):
    return be.group_shared_bce(c.X, c.idx, c.W, c.bias, c.y_indptr, c.y_slots, c.mask, c.L, None, False)[0]


def _topk(be, c):
    scores, slots = be.group_shared_topk(c.X, c.idx, c.W, c.bias, c.K, c.mask, c.L)
    assert np.asarray(slots).dtype == np.int64, f"slots have dtype {np.asarray(slots).dtype}"
    return {"scores": scores, "slots": slots}, {}


OPS = {"layer": (_layer, _layer_scalar), "bce": (_bce, _bce_scalar), "topk": (_topk, None)}
WRT = {"dX": "X", "dW": "W", "dbias": "bias"}              # gradient -> the input it is of


# ---------------------------------------------------------------------------------------------
# backends

class OnDevice:
    """A backend module called with its array arguments on the (fake or real) device; to_host, if
    given, brings each array of a result back to numpy."""

    def __init__(self, module, to_device, to_host=None):
        self.module, self.to_device, self.to_host = module, to_device, to_host

    def __getattr__(self, name):
        fn = getattr(self.module, name)
        return lambda *a: self._host(fn(*[self.to_device(x) if isinstance(x, np.ndarray) else x for x in a]))

    def _host(self, out):
        if isinstance(out, tuple):
            return tuple(self._host(x) for x in out)
        return self.to_host(out) if self.to_host and hasattr(out, "__cuda_array_interface__") else out


@contextlib.contextmanager
def backend(name, tiles=None):
    """The kernel module of backend `name`; "cuda" runs on the emulated CuPy (with `tiles`),
    "cuda-gpu" on the real one (its default tiles)."""
    if name == "cuda-gpu":
        import cupy
        yield OnDevice(get_backend("cuda"), cupy.asarray, cupy.asnumpy)
        return
    if name != "cuda":
        yield get_backend(name)
        return
    from fake_cupy import SMALL, dev, emulated_cuda
    with emulated_cuda(tiles or SMALL):
        yield OnDevice(get_backend("cuda"), dev)


# ---------------------------------------------------------------------------------------------
# the check

def check_op(op, backend_name, shape, dtype, tiles=None, tol=None, **case_kw):
    """Backend `backend_name`'s op on seeded inputs of shape (B, d, G, k, m, L) in `dtype`
    against the float64 reference: forward, every gradient, then (float64) gradcheck.
    tiles: the emulated cuda backend's; tol: instead of TOL32 / TOL64; case_kw: make_case's."""
    dtype = np.dtype(dtype).type
    B, d, G, k, m, L = shape
    if backend_name == "cuda" and B * L * k > EMULATED_MAX_WORK:
        pytest.skip(f"B·L·k = {B * L * k:,} is too much work for the emulated kernels")
    c = make_case(shape, dtype, **case_kw)
    run, scalar = OPS[op]
    label = f"{backend_name} {op} {np.dtype(dtype).name}"
    tol = tol or (TOL64 if dtype == np.float64 else TOL32[op])
    out_dtype = np.float64 if backend_name == "reference" else dtype
    want_fwd, want_grads = run(reference, c)
    with backend(backend_name, tiles) as be:
        got_fwd, got_grads = run(be, c)
        _compare(f"{label} forward", got_fwd, want_fwd, tol, out_dtype)
        _compare(f"{label} gradient", got_grads, want_grads, tol, out_dtype)
        if dtype == np.float64 and scalar is not None:
            _gradcheck(f"{label} gradcheck", be, c, scalar, got_grads)


def _compare(label, got, want, tol, out_dtype):
    assert got.keys() == want.keys(), f"{label}: outputs {sorted(got)} != {sorted(want)}"
    for name, w in want.items():
        g = got[name]
        if name == "slots":
            np.testing.assert_array_equal(g, w, err_msg=f"{label}: slots")
            continue
        if isinstance(w, np.ndarray):
            assert g.dtype == out_dtype, f"{label}: {name} has dtype {g.dtype}, expected {np.dtype(out_dtype)}"
        if name == "scores":                                  # -inf pads rows with fewer real slots
            fin = np.isfinite(w)
            assert (np.isfinite(g) == fin).all(), f"{label}: scores finite where the reference's are not"
            g, w = np.where(fin, g, 0), np.where(fin, w, 0)
        close(f"{label}: {name}", g, w, tol)


def _gradcheck(label, be, c, scalar, grads):
    """<grad, V> == (f(x + εV) - f(x - εV)) / 2ε for a random direction V per input."""
    rng = np.random.default_rng(1)
    for gname, arg in WRT.items():
        if gname not in grads:
            continue
        x = getattr(c, arg)
        V = rng.standard_normal(x.shape)
        f = lambda t: scalar(be, replace(c, **{arg: x + t * V}))     # noqa: E731
        numeric = (f(GRADCHECK_EPS) - f(-GRADCHECK_EPS)) / (2 * GRADCHECK_EPS)
        terms = np.asarray(grads[gname], np.float64) * V
        analytic, scale = float(terms.sum()), float(np.abs(terms).sum())
        assert abs(numeric - analytic) <= GRADCHECK_TOL * max(scale, 1e-30), (
            f"{label}: {gname} along a random direction: {analytic!r}, central differences "
            f"{numeric!r}, |diff| {abs(numeric - analytic):.3g} > {GRADCHECK_TOL:g} * {scale:.3g}")
