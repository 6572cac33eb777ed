"""Floors: the least time an op can take on this machine, from its FLOPs and the bytes it must move.

    peaks = machine_peaks()                               # FLOP/s of torch.mm, copy bandwidth
    f = floors(kind, B, d, L, k, m, peaks, labels_nnz)    # fwd / fwd+bwd / step floor seconds

The machine's peak is measured once per run: FLOP/s by a large fp32 torch.mm (2·n³ / best time),
bandwidth by a large copy ((read + write) bytes / best time). The floor of an op is
max(FLOPs / peak FLOP/s, bytes / bandwidth), summed over the op's phases; "x floor" is the
measured time over it. FLOPs and the bytes each phase must move at least once (s = 4 bytes,
idx entries 4 bytes, torch.sparse column indices 8):
    dense   fwd  2·B·d·L          W + X + Z + b                     (W: L·d)
            bwd  4·B·d·L          dZ + W + X + dX + dW + db
    sparse  fwd  2·B·L·k          W + idx + X + Z + b               (W: L·k, idx: G·k, G = ⌈L/m⌉)
            bwd  4·B·L·k          dZ + W + idx + X + dX + dW + db
    loss (unfused)  0             y written and read, Z read, dZ written: 4·B·L·s
    fused loss      6·B·L·k       W + idx + X + dX + dW + b + db      (no Z, no dZ, no y)
    Adam            0             p, g read; p, m, v read and written: 7·P·s   (P parameters)
"""

import time

import torch

from .providers import FUSED

FLOAT = 4


def machine_peaks(n=2048, copy_mb=256, repeats=10):
    """Measured peaks: fp32 FLOP/s of a (n × n) torch.mm, and copy bandwidth of a copy_mb MB
    tensor ((read + write) bytes / time); the best of `repeats` runs each."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    c = torch.empty(n, n)
    t = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        t.append(time.perf_counter() - t0)
    flops = 2 * n ** 3 / min(t[1:])
    del a, b, c
    src = torch.ones(copy_mb * 2 ** 20 // 4)
    dst = torch.empty_like(src)
    t = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        dst.copy_(src)
        t.append(time.perf_counter() - t0)
    bw = 2 * src.numel() * 4 / min(t[1:])
    return {"peak_flops": flops, "copy_bytes_per_s": bw, "matmul_n": n, "copy_mb": copy_mb}


def op_costs(kind, B, d, L, k, m, labels_nnz=0):
    """{phase: (FLOPs, bytes)} floors of a provider at one shape (see the module docstring), and
    its parameter count P."""
    s = FLOAT
    if kind == "nn.Linear":
        P = L * d + L
        W, idx = L * d * s, 0
        fl = 2 * B * d * L
    else:
        G = L if kind != "group-shared" else -(-L // m)
        P = (G * m if kind == "group-shared" else L) * k + L
        W = P * s - L * s
        idx = 8 * L * k + 8 * (L + 1) if kind == "torch.sparse" else 4 * G * k
        fl = 2 * B * L * k
    X, Z, b = B * d * s, B * L * s, L * s
    costs = {"fwd": (fl, W + idx + X + Z + b),
             "bwd": (2 * fl, Z + W + idx + X + X + W + b),
             "loss": (0, 4 * B * L * s),
             "fused": (3 * fl, W + idx + X + X + W + 2 * b + 8 * (B + 1 + labels_nnz)),
             "adam": (0, 7 * P * s)}
    return costs, P


def floors(kind, B, d, L, k, m, peaks, labels_nnz=0):
    """Floor times (s) of forward, forward+backward and the full step, and the FLOP/byte counts."""
    costs, P = op_costs(kind, B, d, L, k, m, labels_nnz)
    t = {ph: max(fl / peaks["peak_flops"], by / peaks["copy_bytes_per_s"]) for ph, (fl, by) in costs.items()}
    step = t["fused"] + t["adam"] if kind in FUSED else t["fwd"] + t["loss"] + t["bwd"] + t["adam"]
    return {"fwd_floor_s": t["fwd"], "fwd_bwd_floor_s": t["fwd"] + t["bwd"], "step_floor_s": step,
            "fwd_flops": costs["fwd"][0], "fwd_bytes": costs["fwd"][1], "bwd_flops": costs["bwd"][0],
            "bwd_bytes": costs["bwd"][1], "params": P}
