"""GPU benchmark of the CUDA kernels against nn.Linear and torch.sparse, timed with CUDA events.

    python -m engine.bench.gpu                            # the defaults below
    python -m engine.bench.gpu --L=670091 --m=8 --k=64 --B=512

Needs a GPU, torch with CUDA and CuPy (pip install ".[gpu]"). First every kernel is validated
against the float64 reference (engine/heads/reference.py) on a small shape; only then is each one timed (warm-up, then the mean of `iters` runs between two
CUDA events on torch's current stream, the stream the kernels run on). Providers at the same
number of nonzeros B·L·k: cuda (engine/heads/cuda.py), nn.Linear (dense, B·L·d) and
torch.sparse (CSR weight (L, d) with k nonzeros per row). The table gives time, achieved
bandwidth (the bytes each kernel must move, from its header in group_shared.cu) and FLOP rate.
"""

import argparse
import sys

import numpy as np

# -----------------------------------------------------------------------------
B = 256            # batch
d = 512            # input features (the penultimate layer)
L = 100_000        # labels
m = 8              # labels per group (1: fixed fan-in)
k = 64             # inputs per group (fan-in)
K = 5              # top-k
nnz_per_row = 5    # positive labels per row, for the fused loss
warmup = 5
iters = 20
seed = 0
# -----------------------------------------------------------------------------


def cuda_time_ms(fn, warmup=warmup, iters=iters):
    """Mean milliseconds of fn() on the GPU: warm-up, then `iters` runs between two CUDA events."""
    import torch
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / iters


def make(B, d, L, m, k, seed, device):
    """Random X, idx, W, bias (torch, on `device`) and Y (CSR, sorted rows) for the layer."""
    import torch
    from ..heads.group_shared import random_index
    G = -(-L // m)
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(B, d, generator=gen)
    idx = torch.from_numpy(random_index(G, d, k, seed))
    W = torch.randn(G, m, k, generator=gen) / k ** 0.5
    W.view(G * m, k)[L:] = 0
    bias = torch.randn(L, generator=gen) * 0.1
    rng = np.random.default_rng(seed)
    rows = [np.sort(rng.choice(L, min(nnz_per_row, L), replace=False)) for _ in range(B)]
    indptr = torch.tensor(np.concatenate([[0], np.cumsum([len(r) for r in rows])]), dtype=torch.int32)
    indices = torch.from_numpy(np.concatenate(rows).astype(np.int32))
    return [t.to(device) for t in (X, idx, W, bias, indptr, indices)]


VALIDATE_SHAPE = (33, 70, 1001, 3, 37)     # B, d, L, m, k: tails in every tile


def validate(cu, cp, device="cuda", shape=VALIDATE_SHAPE):
    """Every kernel against the float64 reference on a small shape; raises on a mismatch."""
    import torch
    from ..cuda import launch as kl
    from ..heads import reference as R
    Bs, ds, Ls, ms, ks = shape
    X, idx, W, bias, indptr, indices = make(Bs, ds, Ls, ms, ks, seed + 1, device)
    h = [t.cpu().numpy() for t in (X, idx, W, bias, indptr, indices)]
    c = [cp.from_dlpack(t) for t in (X, idx, W, bias, indptr, indices)]
    dZ = torch.randn(Bs, Ls, device=device)
    checks = []
    run = cu._runner(cp, c[0].dtype, c[0].device.id)
    for v in (1, 2):
        checks.append((f"forward Z v{v}", kl.forward(run, cp, cu.TILES, c[0], c[1], c[2], c[3], Ls, v),
                       R.forward(h[0], h[1], h[2], h[3], Ls)))
    rdX, rdW, rdb = R.backward(dZ.cpu().numpy(), h[0], h[1], h[2], True, True, True)
    dX, dW, db = cu.backward(cp.from_dlpack(dZ), c[0], c[1], c[2], True, True, True)
    checks += [("grad_input dX", dX, rdX), ("grad_weight dW", dW, rdW), ("dbias", db, rdb)]
    loss, fdX, fdW, fdb = cu.group_shared_bce(c[0], c[1], c[2], c[3], c[4], c[5], None, Ls, 1.0 / Bs)
    rl, rfdX, rfdW, rfdb = R.group_shared_bce(h[0], h[1], h[2], h[3], h[4], h[5], None, Ls, 1.0 / Bs)
    checks += [("fused loss", np.array([loss]), np.array([rl])), ("fused dX", fdX, rfdX),
               ("fused dW", fdW, rfdW), ("fused dbias", fdb, rfdb)]
    v, lab = cu.group_shared_topk(c[0], c[1], c[2], c[3], K, None, Ls)
    rv, rlab = R.group_shared_topk(h[0], h[1], h[2], h[3], K, None, Ls)
    checks.append((f"top-{K} values", v, rv))
    bad = []
    for name, got, ref in checks:
        got = cp.asnumpy(got) if not isinstance(got, np.ndarray) else got
        err = np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30)
        print(f"  {name:16s} max relative error {err:.2e} {'OK' if err <= 1e-5 else 'NOT OK'}")
        if err > 1e-5:
            i = np.unravel_index(np.argmax(np.abs(got - ref)), ref.shape)
            bad.append(f"{name}: at {i} got {got[i]}, expected {ref[i]}")
    agree = (cp.asnumpy(lab) == rlab).mean()
    print(f"  top-{K} labels     {agree:.4f} agree with the reference")
    if bad or agree < 0.999:
        raise SystemExit("validation failed:\n" + "\n".join(bad))
    print("All results match")


def kernel_rows(cu, cp, Bn=B, dn=d, Ln=L, mn=m, kn=k, Kn=K, n_iters=iters):
    """[(op, provider, ms, GB/s, GFLOP/s)]: each kernel of the cuda backend (engine/heads/cuda.py,
    on CuPy `cp`) and its torch counterparts at shape (B, d, L, m, k), float32, on the GPU."""
    import torch
    import torch.nn.functional as F
    G = -(-Ln // mn)
    X, idx, W, bias, indptr, indices = make(Bn, dn, Ln, mn, kn, seed, "cuda")
    cX, cidx, cW, cb, cptr, cind = (cp.from_dlpack(t) for t in (X, idx, W, bias, indptr, indices))
    dZ = torch.randn(Bn, Ln, device="cuda")
    cdZ = cp.from_dlpack(dZ)
    lin = torch.nn.Linear(dn, Ln, device="cuda")
    Xg = X.clone().requires_grad_(True)
    rows = torch.arange(G * mn, device="cuda").div(mn, rounding_mode="floor")[:Ln]
    cols = idx.long()[rows]                                                # (L, k)
    Wsp = torch.sparse_csr_tensor(torch.arange(0, Ln * kn + 1, kn, device="cuda"), cols.reshape(-1),
                                  W.reshape(G * mn, kn)[:Ln].reshape(-1), size=(Ln, dn))
    Y = torch.zeros(Bn, Ln, device="cuda")
    Y[torch.repeat_interleave(torch.arange(Bn, device="cuda"), indptr.diff().long()), indices.long()] = 1

    def time_ms(fn):
        return cuda_time_ms(fn, warmup, n_iters)

    f4, nnz = 4, Bn * Ln * kn
    xg = Bn * G * kn * f4                                                  # gathered X, once per group
    wb = G * mn * kn * f4
    zb = Bn * Ln * f4
    rows_out = []

    def row(op, provider, ms, nbytes, flops):
        rows_out.append((op, provider, ms, nbytes / ms / 1e6, flops / ms / 1e6))

    from ..cuda import launch as kl
    for v in (1, 2):
        row("forward", f"cuda v{v}", time_ms(lambda: kl.forward(cu._runner(cp, np.float32, X.device.index or 0),
                                                                cp, cu.TILES, cX, cidx, cW, cb, Ln, v)),
            xg + wb + zb, 2 * nnz)
    row("forward", "nn.Linear", time_ms(lambda: lin(X)), (Bn * dn + Ln * dn) * f4 + zb, 2 * Bn * Ln * dn)
    row("forward", "torch.sparse", time_ms(lambda: torch.sparse.mm(Wsp, X.t())),
        Bn * dn * f4 + Ln * kn * 8 + zb, 2 * nnz)
    row("grad_input", "cuda", time_ms(lambda: cu.grad_input(cdZ, cidx, cW, dn)), zb + wb + 2 * xg, 2 * nnz)
    row("grad_weight", "cuda", time_ms(lambda: cu.grad_weight(cdZ, cX, cidx, mn)), zb + xg + wb, 2 * nnz)

    def linear_backward():
        Xg.grad = None
        lin.zero_grad(set_to_none=True)
        lin(Xg).backward(dZ)
    row("backward", "nn.Linear", time_ms(linear_backward), 2 * zb + 2 * Ln * dn * f4, 4 * Bn * Ln * dn)
    row("fused loss", "cuda", time_ms(lambda: cu.group_shared_bce(cX, cidx, cW, cb, cptr, cind, None, Ln, 1.0 / Bn)),
        2 * xg + 3 * wb, 6 * nnz)

    def linear_loss():
        Xg.grad = None
        lin.zero_grad(set_to_none=True)
        (F.binary_cross_entropy_with_logits(lin(Xg), Y, reduction="sum") / Bn).backward()
    row("fused loss", "nn.Linear + BCE", time_ms(linear_loss), 4 * zb + 2 * Ln * dn * f4, 6 * Bn * Ln * dn)
    row(f"top-{Kn}", "cuda", time_ms(lambda: cu.group_shared_topk(cX, cidx, cW, cb, Kn, None, Ln)), xg + wb, 2 * nnz)
    row(f"top-{Kn}", "nn.Linear + topk", time_ms(lambda: torch.topk(lin(X), Kn, dim=1)),
        2 * zb + Ln * dn * f4, 2 * Bn * Ln * dn)
    return rows_out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m engine.bench.gpu", description=__doc__.split("\n")[0])
    for name, v in (("B", B), ("d", d), ("L", L), ("m", m), ("k", k), ("K", K), ("iters", iters)):
        ap.add_argument(f"--{name}", type=int, default=v)
    a = ap.parse_args(argv)
    import torch
    from ..heads import cuda as cu
    ok, why = cu.available()
    if not ok or not torch.cuda.is_available():
        raise SystemExit(f"engine.bench.gpu needs a GPU with CuPy and torch CUDA: {why}; "
                         f"torch.cuda.is_available() = {torch.cuda.is_available()}")
    cp = cu._cupy()
    print(f"device: {torch.cuda.get_device_name()}, {why}")
    print("validating every kernel against the float64 reference (B, d, L, m, k = %s):" % (VALIDATE_SHAPE,))
    validate(cu, cp)
    rows = kernel_rows(cu, cp, a.B, a.d, a.L, a.m, a.k, a.K, a.iters)
    print(f"\nB={a.B} d={a.d} L={a.L} m={a.m} k={a.k} (G={-(-a.L // a.m)}), float32, mean of {a.iters} runs; "
          f"GB/s from the bytes each kernel must move, GFLOP/s from its arithmetic")
    print(f"{'op':14s} {'provider':18s} {'ms':>9s} {'GB/s':>9s} {'GFLOP/s':>9s}")
    for op, prov, ms, gbs, gfs in rows:
        print(f"{op:14s} {prov:18s} {ms:9.3f} {gbs:9.1f} {gfs:9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
