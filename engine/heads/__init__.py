"""Output heads and their kernels (one autograd Function per op, a backend per device).

    DenseHead            nn.Linear(in_features, n_labels)
    GroupSharedHead      labels in groups of m sharing k inputs; m = 1: fixed fan-in
    MachHead             R hashed classifiers of B buckets, decoded by averaging
    group_shared_linear  the functional form, backend = "auto" | "cpu" | "cuda" | "reference"
    fused_bce_loss       forward + BCE against sparse labels + backward, without the (B, L) logits
    fused_topk           the best k labels per row, without the (B, L) logits

The backend contract. Each backend (`backend=` "reference" | "cpu" | "cuda"; "auto" picks cpu
or cuda) is a module of these six functions, with these names and this argument order:

    forward(X, idx, W, bias=None, n_labels=None)                                  -> Z
    backward(dZ, X, idx, W, need_input=True, need_weight=True, need_bias=False)   -> (dX, dW, dbias)
    grad_input(dZ, idx, W, d)                                                     -> dX
    grad_weight(dZ, X, idx, m=None)                                               -> dW
    group_shared_bce(X, idx, W, bias, y_indptr, y_slots, slot_mask=None, n_labels=None,
                     scale=None, need_grad=True)                              -> (loss, dX, dW, dbias)
    group_shared_topk(X, idx, W, bias, K, slot_mask=None, n_labels=None)          -> (scores, slots)

    X (B, d), idx (G, k) int32 (distinct per row), W (G, m, k), bias (L,) or None;
    L = n_labels, default G·m, (G-1)·m < L <= G·m: the last group's padding is never returned;
    Z, dZ (B, L); dX (B, d); dW (G, m, k) (0 on padded slots); dbias (L,);
    y_indptr (B+1,), y_slots: the positive slots of each row, sorted, distinct, in [0, L);
    slot_mask (>= L,) bool or None (all real): a False slot has no loss and no gradient, and
    is never among the top K; scale defaults to 1/B; slots (B, K) int64, (-inf, -1) where a
    row has fewer than K real slots; a result not asked for (need_*) is None.

Arrays in, arrays out: numpy for tensors on the CPU, CuPy for tensors on a GPU (the cuda
backend hands numpy arrays to the cpu one: the backend follows the arrays' device). Results
have the inputs' dtype (float32 or float64); the reference computes and returns float64.
Inputs are validated before a backend is called (group_shared_linear, GroupSharedHead,
fused_bce_loss, fused_topk); a backend assumes them valid.
"""

from .fused import fused_bce_loss, fused_topk, slot_labels
from .group_shared import DenseHead, GroupSharedHead, group_shared_linear
from .mach import MachHead

__all__ = ["DenseHead", "GroupSharedHead", "MachHead", "fused_bce_loss", "fused_topk",
           "group_shared_linear", "slot_labels"]
