"""Triton primitives shared by more than one kernel module.

Tile split (_split_tile; heal_matmul's activations, attention's P):

    e = floor(log2 max |x|) over a row of the tile
    xs = x * 2**(ROW_TOP - e)          (exact; the tile max lands in [2**14, 2**15))
    hi = fp16(xs),  lo = fp16(xs - hi)  (xs - hi is exact; hi + lo keeps 22+ bits)

Scaling each tile by a power of two keeps FP16 away from overflow (65504) and from
its subnormals whatever the magnitude of the values; the scale is undone exactly on
the FP32 side.

INT16 quantization of a row r (_quantize_rows; the KV store and attention's Q):

    s = max|r| / QMAX (1 for an all-zero row),  q = round_half_up(r / s) clamped to +-QMAX
    (a row holding NaN or Inf: q = 0, s = NaN or +Inf)

QMAX = 32639 = 127 * 256 + 127, so q = hi * 256 + lo splits into two int8 parts (_split16).
"""

from __future__ import annotations

import triton
import triton.language as tl

ROW_TOP = tl.constexpr(14)

QMAX = 32639  # the one definition: heal_kernels.kv_int16 and heal_kernels.reference import it
# QMAX as the fp32 constant the quantization divides and clamps by (a constexpr 32639.0)
QMAX_F32 = tl.constexpr(float(QMAX))


@triton.jit
def _pow2(e):
    """2**e as fp32, exactly, for integer e in [-126, 127]."""
    return ((e + 127) << 23).to(tl.float32, bitcast=True)


@triton.jit
def _split_tile(x):
    """x [R, BLOCK_K] fp32 -> (hi fp16, lo fp16, 2**-shift fp32 [R]) with x == (hi + lo) * 2**-shift.

    The max is exact and every step elementwise, so a tile's parts depend on that
    tile of that row alone, in whichever kernel and program they are computed (the
    attention kernels split P this way too).
    """
    m = tl.max(tl.abs(x), axis=1)
    exp = ((m.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127  # floor(log2 m); -127 for 0 / subnormal
    # Non-finite tiles keep scale 1 so inf/nan propagate as in an FP32 matmul.
    shift = tl.where((m > 0.0) & (exp < 128), ROW_TOP - exp, 0)
    shift = tl.minimum(tl.maximum(shift, -126), 126)
    xs = x * _pow2(shift)[:, None]
    hi = xs.to(tl.float16)
    lo = (xs - hi.to(tl.float32)).to(tl.float16)
    return hi, lo, _pow2(-shift)


@triton.jit
def _split_row_tiles(x_ptr, hi_ptr, lo_ptr, ts_ptr, t0, K, KT, TILES: tl.constexpr, BLOCK_K: tl.constexpr):
    """K tiles t0 .. t0 + TILES - 1 of one row through _split_tile, into heal_matmul's split buffers.

    x_ptr, hi_ptr and lo_ptr point at the row's first element, ts_ptr at its first tile scale; columns
    at or past K are zero (the last tile may be partial) and tiles at or past KT are not written.
    """
    t = t0 + tl.arange(0, TILES)
    cols = t[:, None] * BLOCK_K + tl.arange(0, BLOCK_K)[None, :]
    mask = cols < K
    x = tl.load(x_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    hi, lo, inv = _split_tile(x)
    tl.store(hi_ptr + cols, hi, mask=mask)
    tl.store(lo_ptr + cols, lo, mask=mask)
    tl.store(ts_ptr + t, inv, mask=t < KT)


@triton.jit
def _dot2(a_hi, a_lo, b, EXACT: tl.constexpr):
    """a_hi . b + a_lo . b as one fp32 MMA chain.

    EXACT (the CPU interpreter only): in float64, so the sum does not depend on the
    row's place in the tile as numpy's float32 matmul does; on the GPU each element
    of an MMA is computed the same way wherever its row sits.
    """
    if EXACT:
        b64 = b.to(tl.float64)
        lo = tl.dot(a_lo.to(tl.float64), b64, out_dtype=tl.float64)
        return tl.dot(a_hi.to(tl.float64), b64, lo, out_dtype=tl.float64).to(tl.float32)
    return tl.dot(a_hi, b, tl.dot(a_lo, b))


@triton.jit
def _split16(x):
    """int32 in [-32639, 32639] -> (hi, lo) int32 in [-128, 127] with x == hi * 256 + lo."""
    lo = ((x + 128) & 255) - 128
    hi = (x - lo) >> 8
    return hi, lo


@triton.jit
def _quantize_rows(x):
    """x [R, D] fp32 -> (q [R, D] int32 in [-QMAX, QMAX], scale [R] fp32).

    A row holding NaN or +-Inf is stored as q = 0 with scale NaN (NaN in the row) or +Inf (Inf
    only), so every score or value read from it is non-finite, as in FP32 attention; a NaN must
    not vanish into a finite scale (tl.max drops NaN) or an Inf be clamped to a finite step.
    """
    ax = tl.abs(x)
    finite = ax < float("inf")  # False for NaN too
    bad = tl.max(tl.where(finite, 0, 1), axis=1) > 0
    has_nan = tl.max(tl.where(x != x, 1, 0), axis=1) > 0
    amax = tl.max(tl.where(finite, ax, 0.0), axis=1)
    scale = tl.where(amax > 0.0, tl.div_rn(amax, QMAX_F32), 1.0)
    # A subnormal scale keeps few bits: rounded down, the row's max would need a step above QMAX
    # and be clamped (~10% off), and below 2^-150 it is 0. One ulp up fixes both; a normal
    # scale is within 2^-24 of amax / QMAX, never bumped, and keeps its bits.
    bump = tl.div_rn(amax, scale) >= QMAX_F32 + 0.5
    scale = tl.where(bump, (scale.to(tl.int32, bitcast=True) + 1).to(tl.float32, bitcast=True), scale)
    q = tl.floor(tl.div_rn(x, scale[:, None]) + 0.5)
    q = tl.minimum(tl.maximum(q, -QMAX_F32), QMAX_F32)
    q = tl.where(bad[:, None], 0.0, q)
    scale = tl.where(bad, tl.where(has_nan, float("nan"), float("inf")), scale)
    return q.to(tl.int32), scale
