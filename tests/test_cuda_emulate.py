"""The CUDA kernels (engine/cuda/*.cu) run on the CPU by emulation, against the float64 reference.

The .cu source is built by g++ with engine/cuda/emulate/cuda_emu.h and AddressSanitizer, the
blocks run one after another, each block's threads as real threads meeting at a barrier.
Tiles are tiny, so every shape crosses several tiles and tails: B = 1, L not a multiple of
any tile, k not a multiple of 32 (nor of the k-tile), m = 1 and m > the label tile.
- the cuda backend's ops (the kernel versions its launchers pick: forward v1/v2, fused BCE v2,
  top-k v2 with K past GS_KMAX, slot masks) through check_op (tests/checks.py), on each tile
  configuration: forward and every gradient against engine/heads/reference.py, gradcheck in
  float64;
- every kernel version by its launcher (engine/cuda/launch.py, numpy for cupy), older ones
  included: relative error (max |got - ref| / max |ref|) <= 1e-5 in float32, 1e-12 in float64.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from engine.cuda import launch as K
from engine.cuda.emulate import CXX, EmuError, EmuModule
from engine.heads import reference as R

from checks import check_op

# tile configurations: outputs per thread 1..4, k-tile 4 or 8, label tile 2 or 4
TILES = {
    "t16": K.Tiles(nt=16, tb=4, mt=4, kt=8, kmax=8, minb=1),
    "t8": K.Tiles(nt=8, tb=8, mt=2, kt=4, kmax=4, minb=1),
}
CONFIGS = [("t16", np.float32), ("t8", np.float32), ("t16", np.float64)]
CONFIG_IDS = ["t16-f32", "t8-f32", "t16-f64"]

# (B, d, G, m, k, padding): L = G·m - padding
SHAPES = [
    (1, 37, 5, 1, 13, 0),       # B = 1, fixed fan-in (m = 1)
    (7, 50, 6, 3, 19, 2),       # padded last group
    (9, 64, 4, 5, 33, 4),       # k = 33: several k-tiles and a tail; m > label tile
    (13, 20, 3, 9, 20, 1),      # k = d: every input; B over several batch tiles
    (6, 45, 7, 2, 21, 1),       # m = 2: forward v2 splits k in 2 (t16); last group has 1 label
]
SHAPE_IDS = ["B1-m1", "m3-pad2", "k33-m5", "k=d-m9", "m2-pad1"]


@pytest.fixture(scope="module")
def modules():
    """{(config, dtype or "", file): EmuModule}, built in parallel (cached across runs by source hash)."""
    import shutil
    if shutil.which(CXX) is None:
        pytest.skip(f"no host C++ compiler {CXX!r}: the emulation needs g++ >= 12 (C++20 <barrier>)")
    jobs = {(name, np.dtype(dt).name, "group_shared.cu"): ("group_shared.cu", TILES[name].defines(dt))
            for name, dt in CONFIGS}
    jobs[("self", "", "selftest.cu")] = ("emulate/selftest.cu", {})
    with ThreadPoolExecutor(2) as ex:
        futs = {key: ex.submit(EmuModule, f, d) for key, (f, d) in jobs.items()}
        return {key: f.result() for key, f in futs.items()}


def runner(mod):
    return lambda name, grid, block, args: mod.launch(name, grid, block, *args)


def relerr(got, ref):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    scale = max(np.abs(ref).max(initial=0.0), 1e-30)
    return np.abs(got - ref).max(initial=0.0) / scale


def check(name, got, ref, dt):
    tol = 1e-5 if dt == np.float32 else 1e-12
    err = relerr(got, ref)
    if err > tol:
        g, r = np.asarray(got, np.float64), np.asarray(ref, np.float64)
        i = np.unravel_index(np.argmax(np.abs(g - r)), r.shape)
        pytest.fail(f"{name}: relative error {err:.3g} > {tol:g}; worst at {i}: got {g[i]!r}, "
                    f"expected {r[i]!r}")


def make(shape, dt, seed=0, masked=True):
    B, d, G, m, k, pad = shape
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((B, d)).astype(dt)
    idx = np.stack([rng.choice(d, k, replace=False) for _ in range(G)]).astype(np.int32)
    W = (rng.standard_normal((G, m, k)) / np.sqrt(k)).astype(dt)
    L = G * m - pad
    bias = rng.standard_normal(L).astype(dt)
    rows = [np.sort(rng.choice(L, rng.integers(0, min(L, 4) + 1), replace=False)) for _ in range(B)]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int32)
    indices = (np.concatenate(rows) if rows else np.zeros(0)).astype(np.int32)
    mask = rng.random(L) > 0.25
    return X, idx, W, bias, L, indptr, indices, (mask if masked else None)


def get(modules, cfg, dt, f="group_shared.cu"):
    return modules[(cfg, np.dtype(dt).name, f)]


@pytest.fixture(params=CONFIGS, ids=CONFIG_IDS)
def kernels(request, modules):
    """(tiles, run, dtype) of one tile configuration's emulated build."""
    cfg, dt = request.param
    return TILES[cfg], runner(get(modules, cfg, dt)), dt


each_shape = pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
each_version = pytest.mark.parametrize("version", [1, 2])


# ---------------------------------------------------------------------------------------------
# the cuda backend's ops, on each tile configuration

@pytest.mark.parametrize("op", ["layer", "bce", "topk"])
@pytest.mark.parametrize("cfg,dt", CONFIGS, ids=CONFIG_IDS)
@each_shape
def test_backend_ops_match_reference(cfg, dt, shape, op):
    B, d, G, m, k, pad = shape
    check_op(op, "cuda", (B, d, G, k, m, G * m - pad), dt, tiles=TILES[cfg], K=2 * TILES[cfg].kmax + 1)


# ---------------------------------------------------------------------------------------------
# every kernel version, by its launcher

@each_shape
def test_forward_versions_match_reference(kernels, shape):
    # gs_forward_v1 and _v2 (with and without bias), whichever the launcher would pick
    tiles, run, dt = kernels
    X, idx, W, bias, L, _, _, _ = make(shape, dt)
    G, m, k = W.shape
    for v in (1, 2):
        check(f"Z (v{v})", K.forward(run, np, tiles, X, idx, W, bias, L, v), R.forward(X, idx, W, bias, L), dt)
        check(f"Z (v{v}, no bias)", K.forward(run, np, tiles, X, idx, W, None, L, v),
              R.forward(X, idx, W, None, L), dt)
    dZ = np.random.default_rng(1).standard_normal((X.shape[0], L)).astype(dt)
    dW = K.grad_weight(run, np, tiles, dZ, X, idx, m)
    assert not dW.reshape(G * m, k)[L:].any(), "padded labels got a weight gradient"


@each_version
@each_shape
def test_fused_bce_versions_match_reference(kernels, shape, version):
    # loss, dX, dW, dbias of forward + BCE + backward, never holding the (B, L) logits;
    # v1 without a mask, v2 with one; with and without the gradients
    tiles, run, dt = kernels
    X, idx, W, bias, L, indptr, indices, mask = make(shape, dt, masked=version == 2)
    B = X.shape[0]
    for b in (bias, None):
        got = K.fused_bce(run, np, tiles, X, idx, W, b, indptr, indices, mask, L, 1.0 / B, True, version)
        want = R.group_shared_bce(X, idx, W, b, indptr, indices, mask, L, 1.0 / B)
        for name, g, w in zip(("loss", "dX", "dW", "dbias"), got, want):
            assert (g is None) == (w is None), name
            if w is not None:
                check(name, np.array(g), np.array(w), dt)
        loss, *none = K.fused_bce(run, np, tiles, X, idx, W, b, indptr, indices, mask, L, 1.0 / B, False, version)
        assert none == [None, None, None]
        check("loss (no grad)", np.array([loss]), np.array([want[0]]), dt)


@each_version
@each_shape
def test_fused_topk_versions_match_reference(kernels, shape, version):
    # best K labels per row over chunks of groups (K up to GS_KMAX in v1, past it in v2; K > L
    # pads with -inf / -1); v2 with a slot mask
    tiles, run, dt = kernels
    X, idx, W, bias, L, _, _, mask = make(shape, dt, masked=version == 2)
    Ks = (1, tiles.kmax, 3) if version == 1 else (1, 3 * tiles.kmax, L + 2)
    for Kk, gpc in zip(Ks, (1, 2, None)):
        v, lab = K.topk(run, np, tiles, X, idx, W, bias, Kk, mask, L, gpc, version)
        rv, rlab = R.group_shared_topk(X, idx, W, bias, Kk, mask, L)
        np.testing.assert_array_equal(lab, rlab, err_msg=f"labels, K={Kk}, groups per chunk {gpc}")
        fin = np.isfinite(rv)
        assert (np.isfinite(v) == fin).all()
        check(f"top-{Kk} values", v[fin], rv[fin], dt)


@each_version
def test_fused_topk_breaks_ties_to_the_smaller_label(modules, version):
    # labels 0 and 1 of each group have the same weights: equal logits, smaller label first
    tiles, run = TILES["t16"], runner(get(modules, "t16", np.float32))
    X, idx, W, _, L, _, _, _ = make((6, 30, 5, 3, 11, 0), np.float32, seed=3)
    W[:, 1] = W[:, 0]
    v, lab = K.topk(run, np, tiles, X, idx, W, None, 8, None, L, 2, version)
    rv, rlab = R.group_shared_topk(X, idx, W, None, 8, None, L)
    np.testing.assert_array_equal(lab, rlab)


# ---------------------------------------------------------------------------------------------
# the emulation itself, the launchers' checks, the rule the emulation cannot see

def test_emulation_shares_memory_and_barriers(modules):
    # the harness itself: shared memory per block, __syncthreads, atomicAdd, block/thread ids
    mod = modules[("self", "", "selftest.cu")]
    n, nb = 37, 5
    x = np.arange(n * nb, dtype=np.float32)
    out = np.zeros_like(x)
    mod.launch("self_reverse", (nb,), (n,), x, out, n)
    np.testing.assert_array_equal(out.reshape(nb, n), x.reshape(nb, n)[:, ::-1])
    count, ids = np.zeros(1, np.int32), np.full(3 * 2 * 4 * 2, -1, np.int32)
    mod.launch("self_atomic", (3, 2), (4, 2), count, ids, 50)
    assert count[0] == 3 * 2 * 4 * 2 * 50
    np.testing.assert_array_equal(ids, np.arange(ids.size))


def test_emulation_reports_out_of_bounds(modules):
    # a launch that writes past Z (L too large for the buffer): AddressSanitizer stops it
    mod = get(modules, "t16", np.float32)
    X, idx, W, bias, L, _, _, _ = make(SHAPES[1], np.float32)
    B, d, G, m, k, _ = SHAPES[1]
    Z = np.zeros((B, L - 3), np.float32)
    with pytest.raises(EmuError, match="AddressSanitizer"):
        mod.launch("gs_forward_v1", (G, 2), (16,), X, idx, W, bias, Z, B, d, G, m, k, L)


def test_launchers_check_arguments(modules):
    tiles, run = TILES["t16"], runner(get(modules, "t16", np.float32))
    X, idx, W, bias, L, indptr, indices, mask = make(SHAPES[1], np.float32)
    with pytest.raises(TypeError, match="idx has dtype int64"):
        K.forward(run, np, tiles, X, idx.astype(np.int64), W, bias, L)
    with pytest.raises(TypeError, match="W has dtype float64"):
        K.forward(run, np, tiles, X, idx, W.astype(np.float64), bias, L)
    with pytest.raises(ValueError, match="n_labels=99"):
        K.forward(run, np, tiles, X, idx, W, None, 99)
    with pytest.raises(ValueError, match=r"K=9: gs_topk_partial_v1 takes 1 <= K <= 8"):
        K.topk(run, np, tiles, X, idx, W, bias, 9, None, L, None, 1)
    with pytest.raises(ValueError, match="K=0"):
        K.topk(run, np, tiles, X, idx, W, bias, 0, None, L)
    with pytest.raises(ValueError, match="gs_topk_partial_v1 knows no slot mask"):
        K.topk(run, np, tiles, X, idx, W, bias, 3, mask, L, None, 1)
    with pytest.raises(ValueError, match="gs_fused_bce_v1 knows no slot mask"):
        K.fused_bce(run, np, tiles, X, idx, W, bias, indptr, indices, mask, L, version=1)
    with pytest.raises(ValueError, match=r"slot_mask has shape \(3,\)"):
        K.fused_bce(run, np, tiles, X, idx, W, bias, indptr, indices, mask[:3], L)


def test_cross_block_writes_are_atomic():
    # The emulation runs blocks one after another, so it cannot see a race between blocks.
    # The kernels' rule instead: dX (written by every group that reads an input) is only ever
    # updated with atomicAdd; dW, dbias and Z have one writing block per element.
    src = (K.__file__.rsplit("/", 1)[0] + "/group_shared.cu")
    for n, line in enumerate(open(src).read().splitlines(), 1):
        code = line.split("//")[0]
        if "dX[" in code:
            assert "atomicAdd(&dX[" in code, f"group_shared.cu:{n}: dX written without atomicAdd: {line.strip()}"
