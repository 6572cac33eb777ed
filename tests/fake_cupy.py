"""A stand-in for CuPy that runs the cuda backend (engine/heads/cuda.py) on the CPU emulation.

Numpy arrays marked as device arrays (DevArray: they have __cuda_array_interface__) play CuPy's;
`RawModule` builds the .cu source it is given, with the -D defines of its options, in the CPU
emulation (engine/cuda/emulate). Inside `emulated_cuda(tiles)` the backend sees this CuPy, the
given tile sizes and no torch stream:

    with emulated_cuda(SMALL) as cp:
        Z = cuda.forward(dev(X), idx, dev(W), dev(bias), L)
"""

import contextlib
import shutil
import sys
import types
from unittest import mock

import numpy as np
import pytest

from engine.cuda import SOURCES, read_source
from engine.cuda.emulate import CXX, EmuModule
from engine.cuda.launch import Tiles
from engine.heads import cuda as C

SMALL = Tiles(nt=16, tb=4, mt=4, kt=8, kmax=8, minb=1)     # the emulation tests' "t16" tiles


class DevArray(np.ndarray):
    """A numpy array that says it lives on device 0 (it has __cuda_array_interface__)."""

    @property
    def __cuda_array_interface__(self):
        return {}

    @property
    def device(self):
        return types.SimpleNamespace(id=0)


def dev(a):
    return np.ascontiguousarray(a).view(DevArray)


class FakeRawModule:
    """CuPy's RawModule, emulated: the options' -D defines select the build."""
    built = []

    def __init__(self, code, options=()):
        self.code, self.options = code, tuple(options)

    def compile(self):
        name = next(s for s in SOURCES if read_source(s) == self.code)
        defines = {}
        for o in self.options:
            if o.startswith("-D"):
                k, _, v = o[2:].partition("=")
                defines[k] = v or None
        assert "--std=c++17" in self.options and "-ftz=true" in self.options
        self.emu = EmuModule(name, defines)
        FakeRawModule.built.append((name, self.options))

    def get_function(self, name):
        return lambda grid, block, args: self.emu.launch(name, grid, block, *args)


def fake_cupy():
    cp = types.ModuleType("cupy")
    cp.__version__ = "fake"
    cp.ndarray = DevArray
    cp.asarray = lambda a: a if isinstance(a, DevArray) else dev(a)
    cp.ascontiguousarray = lambda a, dtype=None: dev(np.asarray(a, dtype))
    cp.zeros = lambda shape, dtype=float: dev(np.zeros(shape, dtype))
    cp.ones = lambda shape, dtype=float: dev(np.ones(shape, dtype))
    cp.empty = lambda shape, dtype=float: dev(np.empty(shape, dtype))
    cp.RawModule = FakeRawModule
    cp.cuda = types.SimpleNamespace(Device=lambda i: contextlib.nullcontext(),
                                    ExternalStream=lambda p: contextlib.nullcontext())
    return cp


@contextlib.contextmanager
def emulated_cuda(tiles=SMALL):
    """The cuda backend on the fake CuPy with `tiles`; skips the test without a host compiler."""
    if shutil.which(CXX) is None:
        pytest.skip(f"no host C++ compiler {CXX!r} for the emulated RawModule")
    cp = fake_cupy()
    with mock.patch.dict(sys.modules, {"cupy": cp}), mock.patch.object(C, "TILES", tiles), \
            mock.patch.object(C, "_torch_stream", lambda cp, i: contextlib.nullcontext()):
        C._module.cache_clear()
        try:
            yield cp
        finally:
            C._module.cache_clear()
