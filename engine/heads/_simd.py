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

Each intrinsic is a typing rule and a codegen joined by `_simd` (the rule's parameters are the
intrinsic's arguments; types it does not accept fail typing with numba's error naming them);
the lane-wise ops on vectors of one type are one line each through `_lanewise`.

numba's on-disk cache (cache=True in cpu.py) does not notice edits to this file: after changing
it, delete engine/heads/__pycache__/*.nbi and *.nbc.
"""

import inspect

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


# ---------------------------------------------------------------------------------------------
# typing rules: the result type of an intrinsic from its argument types, or None

def _vec_type(dtype):
    """The vector type of a float32 or float64 scalar type, else None."""
    if dtype not in (types.float32, types.float64):
        return None
    return SimdType(dtype, _BITS // dtype.bitwidth)


def _is_row(arr):
    return isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C"


def _row_type(arr):
    """The vector type for a 1-D C-contiguous float array, else None."""
    return _vec_type(arr.dtype) if _is_row(arr) else None


def _of_dtype(arr):
    """The vector type of arr's dtype (any array), else None."""
    return _vec_type(getattr(arr, "dtype", None))


def _same(*vs):
    """The type of vectors vs, all of one SimdType, else None."""
    return vs[0] if isinstance(vs[0], SimdType) and all(v == vs[0] for v in vs) else None


def _stored(arr, v):
    """The rule of a store of v into the row arr: none (no value) when v is arr's vector type."""
    return types.none if v == _row_type(arr) else None


def _signature(names):
    return inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                              for n in names])


def _simd(rule):
    """Decorator: the numba intrinsic named and documented as `codegen(context, builder, sig,
    args)`, which builds its LLVM value, typed by `rule(*argument types)`: the result type, or
    None where the op does not apply to those types. The intrinsic takes rule's parameters."""
    params = list(inspect.signature(rule).parameters)

    def make(codegen):
        def typer(typingctx, *args):
            res = rule(*args) if len(args) == len(params) else None
            return None if res is None else (res(*args), codegen)
        typer.__name__ = typer.__qualname__ = codegen.__name__
        typer.__doc__ = codegen.__doc__
        typer.__signature__ = _signature(["typingctx", *params])        # numba's pysig: no *args
        return intrinsic(typer)
    return make


def _lanewise(emit, name, doc):
    """The intrinsic `name`: emit(builder, a, b, ...) on vectors a, b, ... of one type, the
    result's type too."""
    def rule(*vs):
        return _same(*vs)
    rule.__signature__ = _signature(list(inspect.signature(emit).parameters)[1:])

    def codegen(context, builder, sig, args):
        return emit(builder, *args)
    codegen.__name__, codegen.__doc__ = name, doc
    return _simd(rule)(codegen)


# ---------------------------------------------------------------------------------------------
# codegen helpers

def _suffix(vty):
    """The overload suffix of an LLVM float vector type in intrinsic names: v16f32, v8f64, ..."""
    return f"v{vty.count}f{32 if isinstance(vty.element, ir.FloatType) else 64}"


def _call(builder, name, ret, *args):
    """A call of the function `name` (an LLVM intrinsic or libm), declared as ret(arg types)."""
    fnty = ir.FunctionType(ret, [a.type for a in args])
    return builder.call(cgutils.get_or_insert_function(builder.module, fnty, name), list(args))


def _broadcast(builder, vty, x):
    """The scalar x in every lane of the vector type vty."""
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), x, _I32(0))
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, vty.count), [0] * vty.count))


def _ptr(context, builder, arrty, arr, ity, i, vty):
    a = context.make_array(arrty)(context, builder, arr)
    ii = context.cast(builder, i, ity, types.intp)
    return builder.bitcast(builder.gep(a.data, [ii]), vty.as_pointer())


def _at(context, builder, sig, args, vt):
    """Pointer to arr[i] (the arguments (arr, i, ...)) as a vector of vt."""
    vty = context.get_value_type(vt)
    return _ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1], vty)


def _mask(context, builder, sig, args, at, lanes):
    """<lanes x i1>: lane < n, n = the argument at position `at`."""
    n = context.cast(builder, args[at], sig.args[at], types.int64)
    i64 = ir.IntType(64)
    lane = ir.Constant(ir.VectorType(i64, lanes), list(range(lanes)))
    return builder.icmp_unsigned("<", lane, _broadcast(builder, ir.VectorType(i64, lanes), n))


def _masked(context, builder, sig, args, vt, at):
    """(pointer to arr[i] as a vector of vt, its alignment, the mask of the first n lanes; n =
    the argument at `at`): the operands of llvm.masked.load / llvm.masked.store."""
    p = _at(context, builder, sig, args, vt)
    return p, _I32(vt.dtype.bitwidth // 8), _mask(context, builder, sig, args, at, vt.lanes)


def _store(context, builder, sig, args, nontemporal):
    vt = sig.args[2]
    nbytes = vt.lanes * vt.dtype.bitwidth // 8
    st = builder.store(args[2], _at(context, builder, sig, args, vt),
                       align=nbytes if nontemporal else vt.dtype.bitwidth // 8)
    if nontemporal:
        st.set_metadata("nontemporal", builder.module.add_metadata([_I32(1)]))
    return context.get_dummy_value()


# ---------------------------------------------------------------------------------------------
# vectors: width, constants, loads and stores

@_simd(lambda arr: types.intp if _of_dtype(arr) else None)
def vwidth(context, builder, sig, args):
    """V, the number of lanes of a vector of arr's dtype (a compile-time constant)."""
    return context.get_constant(types.intp, _of_dtype(sig.args[0]).lanes)


@_simd(lambda arr: _of_dtype(arr))
def vzero(context, builder, sig, args):
    """A vector of zeros of arr's dtype."""
    return ir.Constant(context.get_value_type(sig.return_type), None)


@_simd(lambda x: _vec_type(x))
def vsplat(context, builder, sig, args):
    """x in every lane."""
    return _broadcast(builder, context.get_value_type(sig.return_type), args[0])


@_simd(lambda arr, i: _row_type(arr))
def vload(context, builder, sig, args):
    """arr[i : i+V]."""
    vt = sig.return_type
    return builder.load(_at(context, builder, sig, args, vt), align=vt.dtype.bitwidth // 8)


@_simd(lambda arr, i, n: _row_type(arr))
def vload_m(context, builder, sig, args):
    """arr[i : i+n] in the first n lanes (n <= V), zeros after; reads nothing past i+n."""
    vt = sig.return_type
    vty = context.get_value_type(vt)
    p, align, m = _masked(context, builder, sig, args, vt, 2)
    zero = ir.Constant(vty, None)
    return _call(builder, f"llvm.masked.load.{_suffix(vty)}.p0", vty, p, align, m, zero)


@_simd(lambda arr, i, v: _stored(arr, v))
def vstore(context, builder, sig, args):
    """arr[i : i+V] = v."""
    return _store(context, builder, sig, args, False)


@_simd(lambda arr, i, v: _stored(arr, v))
def vstore_nt(context, builder, sig, args):
    """arr[i : i+V] = v, bypassing the caches; arr's data + i must be aligned to the vector size."""
    return _store(context, builder, sig, args, True)


@_simd(lambda arr, i, v, n: _stored(arr, v))
def vstore_m(context, builder, sig, args):
    """arr[i : i+n] = the first n lanes of v (n <= V); writes nothing past i+n."""
    p, align, m = _masked(context, builder, sig, args, sig.args[2], 3)
    _call(builder, f"llvm.masked.store.{_suffix(args[2].type)}.p0", ir.VoidType(), args[2], p, align, m)
    return context.get_dummy_value()


@_simd(lambda v: v.dtype if isinstance(v, SimdType) else None)
def vsum(context, builder, sig, args):
    """The sum of the lanes (a halving tree: V/2 + V/4 + ... adds)."""
    x, n = args[0], sig.args[0].lanes
    while n > 1:
        h = n // 2
        lo = builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(_I32, h), list(range(h))))
        hi = builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(_I32, h), list(range(h, n))))
        x, n = builder.fadd(lo, hi), h
    return builder.extract_element(x, _I32(0))


@_simd(lambda arr, i: types.none if _is_row(arr) else None)
def prefetch(context, builder, sig, args):
    """Hint: arr[i]'s cache line will be read soon (1-D C-contiguous arr)."""
    a = context.make_array(sig.args[0])(context, builder, args[0])
    ii = context.cast(builder, args[1], sig.args[1], types.intp)
    p = builder.bitcast(builder.gep(a.data, [ii]), ir.IntType(8).as_pointer())
    _call(builder, "llvm.prefetch.p0", ir.VoidType(), p, _I32(0), _I32(3), _I32(1))
    return context.get_dummy_value()


@_simd(lambda: types.none)
def store_fence(context, builder, sig, args):
    """Order earlier non-temporal stores before later stores (sfence on x86)."""
    if _X86:
        _call(builder, "llvm.x86.sse.sfence", ir.VoidType())
    else:
        builder.fence("seq_cst")
    return context.get_dummy_value()


# ---------------------------------------------------------------------------------------------
# lane-wise arithmetic and the transcendental functions of the fused BCE loss

def _fabs(builder, x):
    return _call(builder, f"llvm.fabs.{_suffix(x.type)}", x.type, x)


def _select_nonneg(builder, c, a, b):
    return builder.select(builder.fcmp_ordered(">=", c, ir.Constant(c.type, None)), a, b)


vadd = _lanewise(lambda bd, a, b: bd.fadd(a, b), "vadd", "a + b, lane by lane.")
vsub = _lanewise(lambda bd, a, b: bd.fsub(a, b), "vsub", "a - b, lane by lane.")
vmul = _lanewise(lambda bd, a, b: bd.fmul(a, b), "vmul", "a · b, lane by lane.")
vdiv = _lanewise(lambda bd, a, b: bd.fdiv(a, b), "vdiv", "a / b, lane by lane (IEEE division).")
vmax = _lanewise(lambda bd, a, b: bd.select(bd.fcmp_ordered("<", a, b), b, a), "vmax",
                 "b where a < b, else a (a NaN in a stays).")
vfma = _lanewise(lambda bd, a, b, c: _call(bd, f"llvm.fma.{_suffix(c.type)}", c.type, a, b, c),
                 "vfma", "a · b + c, fused, lane by lane.")
vabs = _lanewise(lambda bd, a: _fabs(bd, a), "vabs", "|a|, lane by lane.")
vselect_nonneg = _lanewise(_select_nonneg, "vselect_nonneg",
                           "a where c >= 0, else b, lane by lane (b where c is NaN).")


@_simd(lambda v, n: v if isinstance(v, SimdType) else None)
def vkeep(context, builder, sig, args):
    """v in the first n lanes, zeros after (n <= V)."""
    m = _mask(context, builder, sig, args, 1, sig.args[0].lanes)
    return builder.select(m, args[0], ir.Constant(args[0].type, None))


@_simd(lambda a, b: types.uint64 if _same(a, b) else None)
def vgt_bits(context, builder, sig, args):
    """The lanes where a > b as the bits of an integer (bit i: lane i; false where NaN)."""
    bits = builder.bitcast(builder.fcmp_ordered(">", args[0], args[1]), ir.IntType(sig.args[0].lanes))
    return builder.zext(bits, ir.IntType(64))


def _splat(vty, c):
    return ir.Constant(vty, float(c))


def _poly(builder, x, coefs):
    """Horner: coefs[0] + x·(coefs[1] + x·(...)), with fused multiply-adds."""
    vty = x.type
    acc = _splat(vty, coefs[-1])
    for c in coefs[-2::-1]:
        acc = _call(builder, f"llvm.fma.{_suffix(vty)}", vty, acc, x, _splat(vty, c))
    return acc


def _per_lane(builder, x, name):
    """A libm function `name` (double -> double) applied lane by lane (float64 vectors)."""
    out = ir.Constant(x.type, ir.Undefined)
    for i in range(x.type.count):
        y = _call(builder, name, ir.DoubleType(), builder.extract_element(x, _I32(i)))
        out = builder.insert_element(out, y, _I32(i))
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
    n = builder.fmul(xc, _splat(vty, 1.44269504088896341))
    n = _call(builder, f"llvm.rint.{_suffix(vty)}", vty, n)
    r = builder.fsub(xc, builder.fmul(n, _splat(vty, 0.693359375)))
    r = builder.fsub(r, builder.fmul(n, _splat(vty, -2.12194440e-4)))
    p = _poly(builder, r, _EXP_F32)
    e = builder.shl(builder.add(builder.fptosi(n, ity), ir.Constant(ity, 127)), ir.Constant(ity, 23))
    y = builder.fmul(p, builder.bitcast(e, vty))
    return builder.select(small, ir.Constant(vty, None), y)


def _exp(builder, a):
    if isinstance(a.type.element, ir.FloatType):
        return _exp_f32(builder, a)
    return _per_lane(builder, a, "exp")


vexp = _lanewise(_exp, "vexp", """e^a, lane by lane. float32: a polynomial (~1 ulp; 0 below -87.33,
    e^88.38 above 88.38); float64: libm's exp per lane.""")


def _log1p_unit_coefs(degree=9):
    """P(t) ≈ log1p(u)/u for u in [0, 1], t = 2u - 1, as power-series coefficients in t
    (Chebyshev interpolation; float32 result u·P within ~1.4e-7 relative of log1p(u))."""
    import numpy as np
    from numpy.polynomial import chebyshev as C
    t = np.cos(np.pi * (np.arange(200) + 0.5) / 200)
    u = (t + 1) / 2
    return tuple(C.cheb2poly(C.chebfit(t, np.log1p(u) / u, degree)))


_LOG1P_F32 = _log1p_unit_coefs()


def _log1p_unit(builder, x):
    if isinstance(x.type.element, ir.FloatType):
        t = builder.fsub(builder.fmul(x, _splat(x.type, 2.0)), _splat(x.type, 1.0))
        return builder.fmul(x, _poly(builder, t, _LOG1P_F32))
    return _per_lane(builder, x, "log1p")


vlog1p_unit = _lanewise(_log1p_unit, "vlog1p_unit", """log(1 + a), lane by lane, for a in [0, 1]
    (float32: u·P(2u-1), no division, ~1 ulp; float64: libm's log1p per lane, any a).""")


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


def _sums_rule(n_rows):
    """The rule of vstore_sums<n_rows>x4(r0, ..., s0, c00, c01, ...): the rows 1-D C-contiguous
    arrays of the vectors' type, 4·n_rows vectors of one type of at most 16 lanes."""
    cs = [f"c{b}" for b in range(4)] if n_rows == 1 else [f"c{a}{b}" for a in range(n_rows) for b in range(4)]

    def rule(*args):
        vt = _same(*args[n_rows + 1:])
        if vt is None or vt.lanes > 16 or any(_row_type(r) != vt for r in args[:n_rows]):
            return None
        return types.none
    rule.__signature__ = _signature([f"r{a}" for a in range(n_rows)] + ["s0"] + cs)
    return rule


@_simd(_sums_rule(4))
def vstore_sums4x4(context, builder, sig, args):
    """r_a[s0 + b] = Σ lanes of c_ab for a, b < 4 (rows: 1-D C-contiguous; 4 values each)."""
    return _store_sums(context, builder, sig, args, 4)


@_simd(_sums_rule(1))
def vstore_sums1x4(context, builder, sig, args):
    """r0[s0 + b] = Σ lanes of c_b for b < 4."""
    return _store_sums(context, builder, sig, args, 1)
