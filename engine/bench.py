"""Speed of the output heads: nn.Linear vs torch.sparse vs fixed fan-in vs group-shared.

    python -m engine bench          (wired by the CLI; or: python -m engine.bench)

Providers, one process, one shape (defaults: B=256, d=512, L=100,000, k=32, m=32, float32):
- nn.Linear      dense (L, d) weight: the baseline every ratio is taken against
- torch.sparse   a CSR weight with the same L·k nonzeros as the fixed fan-in head,
                 torch.sparse.addmm forward, gradient for the nonzero values
- fixed fan-in   GroupSharedHead(group_size=1), cpu backend
- group-shared   GroupSharedHead(group_size=m), cpu backend

Each sparse provider is first checked against a dense emulation (the same layer as a dense
(L, d) matrix through torch.mm): logits, input gradient, weight gradient at the nonzeros, bias
gradient. Only then is it timed: forward, and forward + backward (gradients for the input, the
weights and the bias), median of `repeats` runs after a warm-up (numba compiles there). The
backward gets a fixed random dZ laid out like the provider's output (as an elementwise loss
would give it); gradients are reset to None between runs, outside the timed region.
"""

import time
import warnings

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .heads import DenseHead, GroupSharedHead

# ---------------------------------------------------------------------------------------------
# providers


class TorchSparseHead(nn.Module):
    """The fixed fan-in layer as a torch CSR matrix (L, d): values are the parameters."""

    def __init__(self, idx, weight, bias, n_labels, in_features):
        super().__init__()
        L, k = n_labels, idx.shape[1]
        self.n_labels, self.in_features = L, in_features
        self.register_buffer("crow", torch.arange(0, L * k + 1, k, dtype=torch.int64))
        self.register_buffer("col", idx[:L].reshape(-1).to(torch.int64))
        self.values = nn.Parameter(weight.detach().reshape(-1, k)[:L].reshape(-1).clone())
        self.bias = nn.Parameter(bias.detach().clone())

    def forward(self, h):                                              # (B, d) -> (B, L)
        with warnings.catch_warnings():                                # "CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            W = torch.sparse_csr_tensor(self.crow, self.col, self.values,
                                        (self.n_labels, self.in_features), check_invariants=False)
        B = h.shape[0]
        return torch.sparse.addmm(self.bias.unsqueeze(1).expand(self.n_labels, B), W, h.t()).t()


def _nonzeros(head):
    """(rows (nnz,), cols (nnz,), weight values (nnz,) getter, its grad getter) of a sparse head."""
    if isinstance(head, TorchSparseHead):
        rows = torch.repeat_interleave(torch.arange(head.n_labels), head.crow.diff())
        return rows, head.col, lambda: head.values, lambda: head.values.grad
    G, m, k = head.weight.shape
    L = head.n_labels
    rows = torch.arange(L).repeat_interleave(k)
    cols = head.idx.to(torch.int64).repeat_interleave(m, 0)[:L].reshape(-1)
    return (rows, cols, lambda: head.weight.reshape(G * m, k)[:L].reshape(-1),
            lambda: head.weight.grad.reshape(G * m, k)[:L].reshape(-1))


# ---------------------------------------------------------------------------------------------
# validation against a dense emulation


def validate(name, head, x, dz, rtol=1e-4):
    """Check head's logits and gradients against the same layer as a dense matrix.

    Raises AssertionError naming the provider, the tensor, the worst index, both values and
    the max difference; returns the largest error relative to each tensor's magnitude."""
    rows, cols, values, grad = _nonzeros(head)
    with torch.no_grad():
        Wd = torch.zeros(head.n_labels, head.in_features, dtype=x.dtype)
        Wd[rows, cols] = values().detach()
        bias = head.bias.detach() if head.bias is not None else torch.zeros(head.n_labels)
        want = {"Z": torch.addmm(bias, x, Wd.t()), "dX": dz @ Wd,
                "dW": (dz.t() @ x)[rows, cols], "dbias": dz.sum(0)}
        del Wd
    for p in head.parameters():
        p.grad = None
    xg = x.detach().clone().requires_grad_()
    Z = head(xg)
    Z.backward(torch.empty_like(Z).copy_(dz))
    got = {"Z": Z.detach(), "dX": xg.grad, "dW": grad(), "dbias": head.bias.grad}
    worst = 0.0
    for key, w in want.items():
        g = got[key]
        diff = (g - w).abs()
        scale = w.abs().max().item() or 1.0
        at = int(diff.argmax())
        err = diff.reshape(-1)[at].item() / scale
        if not err <= rtol:
            pos = np.unravel_index(at, tuple(w.shape))
            raise AssertionError(f"{name}: {key}{list(pos)} = {g.reshape(-1)[at].item():.6g}, dense emulation "
                                 f"{w.reshape(-1)[at].item():.6g}; max |diff| {err:.2e} of max |{key}| > {rtol:g}")
        worst = max(worst, err)
    for p in head.parameters():
        p.grad = None
    return worst


# ---------------------------------------------------------------------------------------------
# timing


def _time_provider(head, x, dz, repeats, tick):
    fwd, fwd_bwd = [], []
    for r in range(repeats + 1):                                       # run 0: warm-up
        t0 = time.perf_counter()
        Z = head(x)
        t1 = time.perf_counter()
        del Z
        g = dz(head)
        for p in head.parameters():
            p.grad = None
        x.grad = None
        t2 = time.perf_counter()
        Z = head(x)
        Z.backward(g)
        t3 = time.perf_counter()
        del Z, g
        if r:
            fwd.append(t1 - t0)
            fwd_bwd.append(t3 - t2)
        tick()
    return float(np.median(fwd)), float(np.median(fwd_bwd))


def run_heads_bench(batch=256, in_features=512, n_labels=100_000, fanin=32, group_size=32,
                    repeats=5, progress=True, seed=0):
    """Time forward and forward+backward of each provider; validate the sparse ones first.

    Returns one dict per provider: provider, forward_s, fwd_bwd_s, ratio_to_dense (nn.Linear's
    fwd_bwd_s / this one's), max_rel_err (validation; None for nn.Linear), and the shape:
    batch, in_features, n_labels, fanin, group_size, nnz, threads."""
    torch.manual_seed(seed)
    B, d, L, k, m = batch, in_features, n_labels, fanin, group_size
    ffi = GroupSharedHead(d, L, k, group_size=1, seed=seed, backend="cpu")
    providers = [
        ("nn.Linear", DenseHead(d, L)),
        ("torch.sparse", TorchSparseHead(ffi.idx, ffi.weight, ffi.bias, L, d)),
        (f"fixed fan-in (k={k})", ffi),
        (f"group-shared (k={k}, m={m})", GroupSharedHead(d, L, k, group_size=m, seed=seed + 1, backend="cpu")),
    ]
    x = torch.randn(B, d)
    dz = torch.randn(B, L)
    steps = sum(repeats + 1 + (name != "nn.Linear") for name, _ in providers)
    bar = tqdm(total=steps, desc="heads bench", disable=not progress, leave=False)
    results = []
    for name, head in providers:
        bar.set_postfix_str(name)
        err = None
        if name != "nn.Linear":
            err = validate(name, head, x, dz)
            bar.update()
        xr = x.clone().requires_grad_()
        out_like = {}

        def grad_like(h):                                              # dZ in the output's layout
            if "g" not in out_like:
                with torch.no_grad():
                    out_like["g"] = torch.empty_like(h(x)).copy_(dz)
            return out_like["g"]

        f, fb = _time_provider(head, xr, grad_like, repeats, bar.update)
        nnz = d * L if name == "nn.Linear" else L * k
        results.append({"provider": name, "forward_s": f, "fwd_bwd_s": fb, "max_rel_err": err,
                        "batch": B, "in_features": d, "n_labels": L, "fanin": k, "group_size": m,
                        "nnz": nnz, "threads": torch.get_num_threads()})
        del head, out_like
    bar.close()
    dense = results[0]["fwd_bwd_s"]
    for r in results:
        r["ratio_to_dense"] = dense / r["fwd_bwd_s"]
    return results


def format_table(results):
    """The results of run_heads_bench as a plain-text table."""
    r0 = results[0]
    lines = [f"B={r0['batch']} d={r0['in_features']} L={r0['n_labels']:,} k={r0['fanin']} "
             f"m={r0['group_size']} float32, {r0['threads']} threads; median times",
             f"{'provider':<28}{'forward':>12}{'fwd+bwd':>12}{'vs nn.Linear':>14}{'nnz':>14}{'check':>10}"]
    for r in results:
        check = "-" if r["max_rel_err"] is None else f"{r['max_rel_err']:.0e}"
        lines.append(f"{r['provider']:<28}{r['forward_s'] * 1e3:>9.1f} ms{r['fwd_bwd_s'] * 1e3:>9.1f} ms"
                     f"{r['ratio_to_dense']:>13.1f}x{r['nnz']:>14,}{check:>10}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(format_table(run_heads_bench()))
