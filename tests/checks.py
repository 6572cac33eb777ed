"""Comparison helper shared by the kernel tests."""

import numpy as np


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
