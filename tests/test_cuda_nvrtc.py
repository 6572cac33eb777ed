"""Every kernel of engine/cuda/*.cu compiles with NVRTC for sm_80 and sm_90, without spills.

No GPU needed: cuda-python's NVRTC bindings and the nvidia-cuda-nvrtc wheel (the test extra).
Options: engine.cuda.options() (what CuPy's RawModule passes: -ftz=true and the arch; C++17 is
ours) plus -Xptxas=-v for ptxas' resource report. Both the default tiles (the GPU build) and the
float64 build are compiled.
"""

import re

import numpy as np
import pytest

pytest.importorskip("cuda.bindings.nvrtc", reason="cuda-python (test extra) not installed")

from engine.cuda import ARCHS, SOURCES, read_source  # noqa: E402
from engine.cuda.emulate import kernel_signatures  # noqa: E402
from engine.cuda.launch import Tiles  # noqa: E402
from engine.cuda.nvrtc import NVRTCError, compile_cu, parse_ptxas_log  # noqa: E402


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("src", SOURCES)
def test_kernels_compile_without_spills(src, arch, dtype):
    res = compile_cu(src, arch, Tiles().defines(dtype))
    assert res.cubin[:4] == b"\x7fELF", "NVRTC returned no cubin"
    expected = set(kernel_signatures(read_source(src)))
    assert set(res.kernels) == expected, f"ptxas reported {sorted(res.kernels)}, source has {sorted(expected)}"
    for name, u in res.kernels.items():
        assert u["spill_stores"] == 0 and u["spill_loads"] == 0, f"{name} spills on {arch}: {u}"
        assert u["registers"] and u["registers"] <= 255, f"{name}: {u}"
        assert u["smem_bytes"] <= 48 * 1024, f"{name} needs {u['smem_bytes']} bytes of static shared memory"


def test_every_version_is_kept():
    # versions are added, not overwritten: every kernel name ends in _v<N>
    for src in SOURCES:
        for name in kernel_signatures(read_source(src)):
            assert re.search(r"_v\d+$", name), f"{src}: kernel {name} has no version suffix"


def test_compile_error_names_the_file_and_options(monkeypatch):
    import engine.cuda.nvrtc as nv
    monkeypatch.setattr(nv, "read_source", lambda name: 'extern "C" __global__ void f() { undefined_x = 1; }')
    with pytest.raises(NVRTCError, match=r"(?s)broken\.cu.*sm_80.*undefined_x"):
        nv.compile_cu("broken.cu", "sm_80")


def test_ptxas_log_parser():
    log = """ptxas info    : Compiling entry function 'k_v1' for 'sm_90'
ptxas info    : Function properties for k_v1
ptxas         .     8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 8448 bytes smem
"""
    assert parse_ptxas_log(log) == {"k_v1": {"registers": 40, "smem_bytes": 8448, "stack_bytes": 8,
                                             "spill_stores": 4, "spill_loads": 4}}


def test_report_renders(tmp_path):
    from engine.cuda import report
    rows = [("group_shared.cu", "sm_90", "float32", "gs_forward_v1",
             {"registers": 40, "smem_bytes": 8448, "stack_bytes": 0, "spill_stores": 0, "spill_loads": 0})]
    text, spills = report.render(rows)
    assert "**Spills: none.**" in text and "| `gs_forward_v1` | sm_90 |" in text and not spills


def test_emulated_tile_configurations_are_valid_cuda():
    # the tiny tiles the emulation tests run must be valid CUDA too: same source, same checks
    from test_cuda_emulate import TILES
    for name, tiles in TILES.items():
        for src in SOURCES:
            res = compile_cu(src, "sm_80", tiles.defines())
            assert set(res.kernels) == set(kernel_signatures(read_source(src))), name
