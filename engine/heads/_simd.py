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

Beyond loads, stores and FMAs: lane-wise vsub/vmul/vdiv/vmax/vabs/vselect_nonneg, vexp and
vlog1p_unit (the fused BCE loss; float32 by polynomials, float64 by libm per lane), vgt_bits
(a compare as a bit mask: the fused top-k), vstore_sums4x4 (16 horizontal sums by one
shuffle-add tree: the end of a dot-product tile).

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


# ---------------------------------------------------------------------------------------------
# lane-wise arithmetic and the transcendental functions of the fused BCE loss

def _binary(op):
    def typer(typingctx, a, b):
        if not (isinstance(a, SimdType) and a == b):
            return None

        def codegen(context, builder, sig, args):
            return op(builder, args[0], args[1])
        return a(a, b), codegen
    return typer


vsub = intrinsic(_binary(lambda bd, a, b: bd.fsub(a, b)))
vsub.__doc__ = "a - b, lane by lane."
vmul = intrinsic(_binary(lambda bd, a, b: bd.fmul(a, b)))
vmul.__doc__ = "a · b, lane by lane."
vdiv = intrinsic(_binary(lambda bd, a, b: bd.fdiv(a, b)))
vdiv.__doc__ = "a / b, lane by lane (IEEE division)."
vmax = intrinsic(_binary(lambda bd, a, b: bd.select(bd.fcmp_ordered("<", a, b), b, a)))
vmax.__doc__ = "b where a < b, else a (a NaN in a stays)."


def _fabs(builder, x):
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(x.type, [x.type]),
                                        f"llvm.fabs.{_suffix_of(x.type)}")
    return builder.call(fn, [x])


def _suffix_of(vty):
    bits = 32 if isinstance(vty.element, ir.FloatType) else 64
    return f"v{vty.count}f{bits}"


@intrinsic
def vabs(typingctx, a):
    """|a|, lane by lane."""
    if not isinstance(a, SimdType):
        return None

    def codegen(context, builder, sig, args):
        return _fabs(builder, args[0])
    return a(a), codegen


@intrinsic
def vselect_nonneg(typingctx, c, a, b):
    """a where c >= 0, else b, lane by lane (b where c is NaN)."""
    if not (isinstance(c, SimdType) and c == a == b):
        return None

    def codegen(context, builder, sig, args):
        zero = ir.Constant(args[0].type, None)
        return builder.select(builder.fcmp_ordered(">=", args[0], zero), args[1], args[2])
    return a(c, a, b), codegen


@intrinsic
def vkeep(typingctx, v, n):
    """v in the first n lanes, zeros after (n <= V)."""
    if not isinstance(v, SimdType):
        return None

    def codegen(context, builder, sig, args):
        m = _mask(builder, v.lanes, context.cast(builder, args[1], sig.args[1], types.int64))
        return builder.select(m, args[0], ir.Constant(args[0].type, None))
    return v(v, n), codegen


@intrinsic
def vgt_bits(typingctx, a, b):
    """The lanes where a > b as the bits of an integer (bit i: lane i; false where NaN)."""
    if not (isinstance(a, SimdType) and a == b):
        return None

    def codegen(context, builder, sig, args):
        bits = builder.bitcast(builder.fcmp_ordered(">", args[0], args[1]), ir.IntType(a.lanes))
        return builder.zext(bits, ir.IntType(64))
    return types.uint64(a, b), codegen


def _splat(vty, c):
    return ir.Constant(vty, float(c))


def _poly(builder, x, coefs):
    """Horner: coefs[0] + x·(coefs[1] + x·(...)), with fused multiply-adds."""
    vty = x.type
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3),
                                         f"llvm.fma.{_suffix_of(vty)}")
    acc = _splat(vty, coefs[-1])
    for c in coefs[-2::-1]:
        acc = builder.call(fma, [acc, x, _splat(vty, c)])
    return acc


def _per_lane(builder, x, name):
    """A libm function `name` (double -> double) applied lane by lane (float64 vectors)."""
    fn = cgutils.get_or_insert_function(builder.module,
                                        ir.FunctionType(ir.DoubleType(), [ir.DoubleType()]), name)
    out = ir.Constant(x.type, ir.Undefined)
    for i in range(x.type.count):
        out = builder.insert_element(out, builder.call(fn, [builder.extract_element(x, _I32(i))]), _I32(i))
    return out


# exp, float32: Cephes' expf. x = n·ln2 + r, |r| <= ln2/2, e^r by a degree-6 polynomial (relative
# error ~1 ulp), 2^n put in the exponent bits. Below -87.33 (2^-126) the result is 0.
_EXP_F32 = (1.0, 1.0, 5.0000001201e-1, 1.6666665459e-1, 4.1665795894e-2, 8.3334519073e-3,
            1.3981999507e-3, 1.9875691500e-4)


def _exp_f32(builder, x):
    vty = x.type
    ity = ir.VectorType(ir.IntType(32), vty.count)
    lo, hi = -87.33654, 88.3762626647949
    small = builder.fcmp_ordered("<", x, _splat(vty, lo))
    xc = builder.select(small, _splat(vty, lo), x)
    xc = builder.select(builder.fcmp_ordered(">", xc, _splat(vty, hi)), _splat(vty, hi), xc)
    rint = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty]),
                                          f"llvm.rint.{_suffix_of(vty)}")
    n = builder.call(rint, [builder.fmul(xc, _splat(vty, 1.44269504088896341))])
    r = builder.fsub(xc, builder.fmul(n, _splat(vty, 0.693359375)))
    r = builder.fsub(r, builder.fmul(n, _splat(vty, -2.12194440e-4)))
    p = _poly(builder, r, _EXP_F32)
    e = builder.shl(builder.add(builder.fptosi(n, ity), ir.Constant(ity, 127)), ir.Constant(ity, 23))
    y = builder.fmul(p, builder.bitcast(e, vty))
    return builder.select(small, ir.Constant(vty, None), y)


@intrinsic
def vexp(typingctx, a):
    """e^a, lane by lane. float32: a polynomial (~1 ulp; 0 below -87.33, e^88.38 above 88.38);
    float64: libm's exp per lane."""
    if not isinstance(a, SimdType):
        return None

    def codegen(context, builder, sig, args):
        if a.dtype == types.float32:
            return _exp_f32(builder, args[0])
        return _per_lane(builder, args[0], "exp")
    return a(a), codegen


def _log1p_unit_coefs(degree=9):
    """P(t) ≈ log1p(u)/u for u in [0, 1], t = 2u - 1, as power-series coefficients in t
    (Chebyshev interpolation; float32 result u·P within ~1.4e-7 relative of log1p(u))."""
    import numpy as np
    from numpy.polynomial import chebyshev as C
    t = np.cos(np.pi * (np.arange(200) + 0.5) / 200)
    u = (t + 1) / 2
    return tuple(C.cheb2poly(C.chebfit(t, np.log1p(u) / u, degree)))


_LOG1P_F32 = _log1p_unit_coefs()


@intrinsic
def vlog1p_unit(typingctx, a):
    """log(1 + a), lane by lane, for a in [0, 1] (float32: u·P(2u-1), no division, ~1 ulp;
    float64: libm's log1p per lane, any a)."""
    if not isinstance(a, SimdType):
        return None

    def codegen(context, builder, sig, args):
        x = args[0]
        if a.dtype == types.float32:
            t = builder.fsub(builder.fmul(x, _splat(x.type, 2.0)), _splat(x.type, 1.0))
            return builder.fmul(x, _poly(builder, t, _LOG1P_F32))
        return _per_lane(builder, x, "log1p")
    return a(a), codegen


# ---------------------------------------------------------------------------------------------
# many horizontal sums at once: the end of a register tile of dot products

def _sum_tree(builder, vecs):
    """The lane sums of each vector in `vecs` (a power-of-two count), as a list of vectors whose
    lanes, in order, are those sums in the order of `vecs`. A tree of shuffles and adds: two
    vectors of S blocks of w lanes become one of 2S blocks of w/2 (the halves of each block
    added), so 16 sums of 16 lanes take 15 adds and 30 shuffles instead of 16 × 4 of each."""
    V = vecs[0].type.count
    w = V
    while w > 1:
        half = w // 2
        S = V // w
        lo = [blk * w + i for blk in range(S) for i in range(half)]
        hi = [blk * w + half + i for blk in range(S) for i in range(half)]
        if len(vecs) > 1:
            out = []
            for x, y in zip(vecs[0::2], vecs[1::2]):
                mlo = ir.Constant(ir.VectorType(_I32, V), lo + [V + i for i in lo])
                mhi = ir.Constant(ir.VectorType(_I32, V), hi + [V + i for i in hi])
                out.append(builder.fadd(builder.shuffle_vector(x, y, mlo), builder.shuffle_vector(x, y, mhi)))
            vecs = out
        else:                                                           # one vector: halve its length
            x = vecs[0]
            vecs = [builder.fadd(builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(_I32, len(lo)), lo)),
                                 builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(_I32, len(hi)), hi)))]
            V = len(lo)
        w = half
    return vecs


def _store_sums(context, builder, sig, args, n_rows):
    """rows r_a[s0 + b] = Σ lanes of c[a·4 + b]   (a < n_rows, b < 4)."""
    rows, s0, cs = args[:n_rows], args[n_rows], args[n_rows + 1:]
    sums = _sum_tree(builder, list(cs))
    n = sums[0].type.count
    elt = sums[0].type.element
    v4 = ir.VectorType(elt, 4)
    for a in range(n_rows):
        first = 4 * a
        x = sums[first // n]
        lane = first % n
        if n >= 4:
            part = builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(_I32, 4), list(range(lane, lane + 4))))
        else:                                                           # fewer than 4 lanes per vector
            part = ir.Constant(v4, ir.Undefined)
            for b in range(4):
                y = sums[(first + b) // n]
                part = builder.insert_element(part, builder.extract_element(y, _I32((first + b) % n)), _I32(b))
        p = _ptr(context, builder, sig.args[a], rows[a], sig.args[n_rows], s0, v4)
        builder.store(part, p, align=4 if isinstance(elt, ir.FloatType) else 8)
    return context.get_dummy_value()


def _sums_typer(n_rows):
    def typer(typingctx, *args):
        rows, s0, cs = args[:n_rows], args[n_rows], args[n_rows + 1:]
        if len(cs) != 4 * n_rows or not isinstance(cs[0], SimdType) or any(c != cs[0] for c in cs):
            return None
        if any(_row_type(r) != cs[0] for r in rows) or cs[0].lanes > 16:
            return None

        def codegen(context, builder, sig, a):
            return _store_sums(context, builder, sig, a, n_rows)
        return types.none(*args), codegen
    return typer


@intrinsic
def vstore_sums4x4(typingctx, r0, r1, r2, r3, s0, c00, c01, c02, c03, c10, c11, c12, c13,
                   c20, c21, c22, c23, c30, c31, c32, c33):
    """r_a[s0 + b] = Σ lanes of c_ab for a, b < 4 (rows: 1-D C-contiguous; 4 values each)."""
    return _sums_typer(4)(typingctx, r0, r1, r2, r3, s0, c00, c01, c02, c03, c10, c11, c12, c13,
                          c20, c21, c22, c23, c30, c31, c32, c33)


@intrinsic
def vstore_sums1x4(typingctx, r0, s0, c0, c1, c2, c3):
    """r0[s0 + b] = Σ lanes of c_b for b < 4."""
    return _sums_typer(1)(typingctx, r0, s0, c0, c1, c2, c3)
