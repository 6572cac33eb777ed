"""Compile engine/cuda/*.cu with NVRTC (cuda-python), no GPU needed: cubins and ptxas' report.

    from engine.cuda.nvrtc import compile_cu
    res = compile_cu("group_shared.cu", "sm_90")     # -> Compiled(cubin, log, kernels)
    res.kernels["gs_forward_v1"]                     # {"registers": 40, "spill_stores": 0, ...}

Options are engine.cuda.options() plus `-arch=<arch>` and `-Xptxas=-v` (ptxas' verbose report
of registers, shared memory, stack and spills per kernel, parsed into `kernels`).
A compile error raises NVRTCError with NVRTC's log.
"""

import re
from dataclasses import dataclass, field

from . import options, read_source


class NVRTCError(RuntimeError):
    """NVRTC rejected a source; the message holds the options and the compile log."""


@dataclass
class Compiled:
    source: str
    arch: str
    options: tuple
    cubin: bytes
    log: str
    kernels: dict = field(default_factory=dict)   # name -> resource usage


def _nvrtc():
    try:
        from cuda.bindings import nvrtc
    except ImportError:                           # cuda-python < 12.6 layout
        try:
            from cuda import nvrtc
        except ImportError as e:
            raise ImportError("NVRTC bindings missing: pip install cuda-python nvidia-cuda-nvrtc "
                              "(the test extra)") from e
    return nvrtc


def _check(res, what, nvrtc):
    err = res[0] if isinstance(res, tuple) else res
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise NVRTCError(f"{what}: {err}")
    return res[1:] if isinstance(res, tuple) else ()


def version():
    nvrtc = _nvrtc()
    major, minor = _check(nvrtc.nvrtcVersion(), "nvrtcVersion", nvrtc)
    return major, minor


def compile_cu(name, arch, defines=None):
    """Compile engine/cuda/<name> for `arch` ("sm_80", ...) into a cubin with ptxas' report."""
    nvrtc = _nvrtc()
    src = read_source(name)
    opts = options(defines) + (f"-arch={arch}", "-Xptxas=-v")
    (prog,) = _check(nvrtc.nvrtcCreateProgram(src.encode(), name.encode(), 0, [], []),
                     "nvrtcCreateProgram", nvrtc)
    try:
        res = nvrtc.nvrtcCompileProgram(prog, len(opts), [o.encode() for o in opts])
        (n,) = _check(nvrtc.nvrtcGetProgramLogSize(prog), "log size", nvrtc)
        buf = b" " * n
        _check(nvrtc.nvrtcGetProgramLog(prog, buf), "log", nvrtc)
        log = buf.rstrip(b"\0 ").decode(errors="replace")
        if res[0] != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise NVRTCError(f"NVRTC failed to compile {name} for {arch} with {' '.join(opts)}:\n{log}")
        (n,) = _check(nvrtc.nvrtcGetCUBINSize(prog), "cubin size", nvrtc)
        cubin = b" " * n
        _check(nvrtc.nvrtcGetCUBIN(prog, cubin), "cubin", nvrtc)
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    return Compiled(name, arch, opts, cubin, log, parse_ptxas_log(log))


_ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(\w+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(.*)")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas_log(log):
    """{kernel: {registers, smem_bytes, stack_bytes, spill_stores, spill_loads}} from -Xptxas=-v."""
    out, cur = {}, None
    for line in log.splitlines():
        m = _ENTRY.search(line)
        if m:
            cur = out.setdefault(m.group(1), {"registers": None, "smem_bytes": 0, "stack_bytes": 0,
                                              "spill_stores": 0, "spill_loads": 0})
            continue
        if cur is None:
            continue
        m = _FRAME.search(line)
        if m:
            cur["stack_bytes"], cur["spill_stores"], cur["spill_loads"] = map(int, m.groups())
        m = _USED.search(line)
        if m:
            cur["registers"] = int(m.group(1))
            s = _SMEM.search(m.group(2))
            cur["smem_bytes"] = int(s.group(1)) if s else 0
    return out
