"""CUDA kernels of the sparse heads: the .cu sources and the one list of compile options.

    group_shared.cu   forward, input and weight gradients, fused BCE loss, fused top-k

The same options serve CuPy's RawModule (engine/heads/cuda.py), the NVRTC compile check
(engine/cuda/nvrtc.py, tests/test_cuda_nvrtc.py) and the resource report (python -m
engine.cuda.report); the emulation on the CPU lives in engine/cuda/emulate/.
"""

from pathlib import Path

CUDA_DIR = Path(__file__).resolve().parent
SOURCES = ("group_shared.cu",)
ARCHS = ("sm_80", "sm_90")

# What CuPy's RawModule passes to NVRTC besides the user's options: "-ftz=true" and the
# architecture (-arch=compute_XX for PTX, -arch=sm_XX for a cubin). C++17 is ours.
BASE_OPTIONS = ("--std=c++17", "-ftz=true")


def read_source(name):
    """The text of engine/cuda/<name>."""
    return (CUDA_DIR / name).read_text()


def options(defines=None):
    """Compile options for NVRTC / RawModule: the base options, then -DNAME[=VALUE] per define."""
    return BASE_OPTIONS + tuple(f"-D{k}" if v is None else f"-D{k}={v}"
                                for k, v in sorted((defines or {}).items()))
