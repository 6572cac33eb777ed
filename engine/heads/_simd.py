"""Explicit SIMD vectors for numba kernels: 512-bit (AVX-512) or 256-bit float vectors as LLVM values.

LLVM's loop vectoriser keeps accumulators in memory (load, FMA, store per step) and, tuned for
this CPU, stops at 256 bits. These intrinsics let a kernel hold a register tile of
accumulators (a GEMM micro-kernel) instead:

    acc = vzero(row)                        # 0 in every lane (V lanes of row's dtype)
    acc = vfma(vsplat(w), vload(row, b), acc)
    vstore(out_row, b, acc)

V = vwidth(row) = 16 for float32, 8 for float64 with AVX-512 (half that without). Arrays
passed in must be 1-D and C-contiguous (a row of a C-ordered 2-D array is). Loads and stores assume nothing about alignment except
vstore_nt (non-temporal, address aligned to the vector size, caller checks). The _m forms touch only the
first n lanes (masked): tails of a row without reading or writing past its end. Elsewhere
(other CPUs, other widths) LLVM splits or widens the vectors as needed; results are the same.

numba's on-disk cache (cache=True in cpu.py) does not notice edits to this file: after changing
it, delete engine/heads/__pycache__/*.nbi and *.nbc.
"""

from llvmlite import ir
from llvmlite.binding import get_host_cpu_features, get_process_triple
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model


def _vector_bits():
    """512 where the CPU has AVX-512 (32 vector registers), else 256: a 4 × 4 tile of
    accumulators then still fits the register file."""
    try:
        return 512 if get_host_cpu_features().get("avx512f", False) else 256
    except Exception:                                                   # no feature query here
        return 256


_BITS = _vector_bits()
_I32 = ir.IntType(32)
_X86 = get_process_triple().startswith(("x86_64", "i386", "i686"))


class SimdType(types.Type):
    """A vector of `lanes` values of `dtype` (float32 or float64)."""

    def __init__(self, dtype, lanes):
        self.dtype, self.lanes = dtype, lanes
        super().__init__(name=f"Simd({dtype}x{lanes})")


@register_model(SimdType)
class _SimdModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        elt = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(elt, fe_type.lanes))


def _vec_type(dtype):
    if dtype not in (types.float32, types.float64):
        return None
    return SimdType(dtype, _BITS // dtype.bitwidth)


def _row_type(arr):
    """The vector type for a 1-D C-contiguous float array, else None (typing then fails)."""
    if isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C":
        return _vec_type(arr.dtype)
    return None


def _ptr(context, builder, arrty, arr, ity, i, vty):
    a = context.make_array(arrty)(context, builder, arr)
    ii = context.cast(builder, i, ity, types.intp)
    return builder.bitcast(builder.gep(a.data, [ii]), vty.as_pointer())


def _mask(builder, lanes, n):
    """<lanes x i1>: lane < n."""
    i64 = ir.IntType(64)
    lane = ir.Constant(ir.VectorType(i64, lanes), list(range(lanes)))
    nv = builder.insert_element(ir.Constant(ir.VectorType(i64, lanes), ir.Undefined), n, _I32(0))
    nv = builder.shuffle_vector(nv, nv, ir.Constant(ir.VectorType(_I32, lanes), [0] * lanes))
    return builder.icmp_unsigned("<", lane, nv)


def _suffix(vt):
    return f"v{vt.lanes}f{vt.dtype.bitwidth}"


@intrinsic
def vwidth(typingctx, arr):
    """V, the number of lanes of a vector of arr's dtype (a compile-time constant)."""
    vt = _vec_type(arr.dtype)
    if vt is None:
        return None

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, vt.lanes)
    return types.intp(arr), codegen


@intrinsic
def vzero(typingctx, arr):
    """A vector of zeros of arr's dtype."""
    vt = _vec_type(arr.dtype)
    if vt is None:
        return None

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(vt), None)
    return vt(arr), codegen


@intrinsic
def vsplat(typingctx, x):
    """x in every lane."""
    vt = _vec_type(x)
    if vt is None:
        return None

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(vt)
        v = builder.insert_element(ir.Constant(vty, ir.Undefined), args[0], _I32(0))
        return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, vt.lanes), [0] * vt.lanes))
    return vt(x), codegen


@intrinsic
def vload(typingctx, arr, i):
    """arr[i : i+V]."""
    vt = _row_type(arr)
    if vt is None:
        return None

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(vt)
        p = _ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1], vty)
        return builder.load(p, align=vt.dtype.bitwidth // 8)
    return vt(arr, i), codegen


@intrinsic
def vload_m(typingctx, arr, i, n):
    """arr[i : i+n] in the first n lanes (n <= V), zeros after; reads nothing past i+n."""
    vt = _row_type(arr)
    if vt is None:
        return None

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(vt)
        p = _ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1], vty)
        m = _mask(builder, vt.lanes, context.cast(builder, args[2], sig.args[2], types.int64))
        fnty = ir.FunctionType(vty, [vty.as_pointer(), _I32, m.type, vty])
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.load.{_suffix(vt)}.p0")
        return builder.call(fn, [p, _I32(vt.dtype.bitwidth // 8), m, ir.Constant(vty, None)])
    return vt(arr, i, n), codegen


def _store_typer(arr, i, v, nontemporal):
    vt = _row_type(arr)
    if vt is None or vt != v:
        return None

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(vt)
        p = _ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1], vty)
        nbytes = vt.lanes * vt.dtype.bitwidth // 8
        st = builder.store(args[2], p, align=nbytes if nontemporal else vt.dtype.bitwidth // 8)
        if nontemporal:
            st.set_metadata("nontemporal", builder.module.add_metadata([_I32(1)]))
        return context.get_dummy_value()
    return types.none(arr, i, v), codegen


@intrinsic
def vstore(typingctx, arr, i, v):
    """arr[i : i+V] = v."""
    return _store_typer(arr, i, v, False)


@intrinsic
def vstore_nt(typingctx, arr, i, v):
    """arr[i : i+V] = v, bypassing the caches; arr's data + i must be aligned to the vector size."""
    return _store_typer(arr, i, v, True)


@intrinsic
def vstore_m(typingctx, arr, i, v, n):
    """arr[i : i+n] = the first n lanes of v (n <= V); writes nothing past i+n."""
    vt = _row_type(arr)
    if vt is None or vt != v:
        return None

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(vt)
        p = _ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1], vty)
        m = _mask(builder, vt.lanes, context.cast(builder, args[3], sig.args[3], types.int64))
        fnty = ir.FunctionType(ir.VoidType(), [vty, vty.as_pointer(), _I32, m.type])
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.store.{_suffix(vt)}.p0")
        builder.call(fn, [args[2], p, _I32(vt.dtype.bitwidth // 8), m])
        return context.get_dummy_value()
    return types.none(arr, i, v, n), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    """a · b + c, fused, lane by lane."""
    if not (isinstance(c, SimdType) and a == b == c):
        return None

    def codegen(context, builder, sig, args):
        vty = args[2].type
        fnty = ir.FunctionType(vty, [vty, vty, vty])
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.fma.{_suffix(c)}")
        return builder.call(fn, list(args))
    return c(a, b, c), codegen


@intrinsic
def vadd(typingctx, a, b):
    """a + b, lane by lane."""
    if not (isinstance(a, SimdType) and a == b):
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])
    return a(a, b), codegen


@intrinsic
def vsum(typingctx, v):
    """The sum of the lanes (a halving tree: V/2 + V/4 + ... adds)."""
    if not isinstance(v, SimdType):
        return None

    def codegen(context, builder, sig, args):
        x, n = args[0], v.lanes
        while n > 1:
            h = n // 2
            lo = builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(_I32, h), list(range(h))))
            hi = builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(_I32, h), list(range(h, n))))
            x, n = builder.fadd(lo, hi), h
        return builder.extract_element(x, _I32(0))
    return v.dtype(v), codegen


@intrinsic
def prefetch(typingctx, arr, i):
    """Hint: arr[i]'s cache line will be read soon (1-D C-contiguous arr)."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C"):
        return None

    def codegen(context, builder, sig, args):
        a = context.make_array(sig.args[0])(context, builder, args[0])
        ii = context.cast(builder, args[1], sig.args[1], types.intp)
        i8p = ir.IntType(8).as_pointer()
        p = builder.bitcast(builder.gep(a.data, [ii]), i8p)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, _I32, _I32, _I32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [p, _I32(0), _I32(3), _I32(1)])
        return context.get_dummy_value()
    return types.none(arr, i), codegen


@intrinsic
def store_fence(typingctx):
    """Order earlier non-temporal stores before later stores (sfence on x86)."""
    def codegen(context, builder, sig, args):
        if _X86:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                "llvm.x86.sse.sfence")
            builder.call(fn, [])
        else:
            builder.fence("seq_cst")
        return context.get_dummy_value()
    return types.none(), codegen
