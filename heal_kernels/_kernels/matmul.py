"""Triton code of heal_matmul: the tile split and the compensated GEMM.

Split of FP32 activations, per row and per BLOCK_K tile of K (t):

    e[m, t] = floor(log2 max_k |x[m, k]|) over the tile
    xs = x * 2**(ROW_TOP - e)          (exact; the tile max lands in [2**14, 2**15))
    hi = fp16(xs),  lo = fp16(xs - hi)  (xs - hi is exact; hi + lo keeps 22+ bits)

Scaling each tile by a power of two keeps FP16 away from overflow (65504) and from
its subnormals whatever the magnitude of the activations (massive activations of
1e5, or tiny ones); the scale is undone exactly on the FP32 side.  The split itself
(_split_tile) and the two-part MMA (_dot2) are in primitives, shared with attention.
"""

from __future__ import annotations

import triton
import triton.language as tl

from heal_kernels._kernels.primitives import _dot2, _split_row_tiles, _split_tile


@triton.jit
def _split_kernel(
    x_ptr, hi_ptr, lo_ptr, ts_ptr,
    K, KT, stride_xm, stride_hm, stride_tm,
    BLOCK_K: tl.constexpr, TILES: tl.constexpr,
):
    """One program per (row, TILES consecutive K tiles): hi, lo [M, K] fp16 and ts [M, KT] fp32."""
    row = tl.program_id(0).to(tl.int64)
    _split_row_tiles(x_ptr + row * stride_xm, hi_ptr + row * stride_hm, lo_ptr + row * stride_hm,
                     ts_ptr + row * stride_tm, tl.program_id(1) * TILES, K, KT, TILES, BLOCK_K)


@triton.jit
def _tile_product(hi_ptrs, lo_ptrs, ts_ptrs, b_ptrs, mask_a, mask_ts, mask_b, SPLIT_X: tl.constexpr,
                  EXACT: tl.constexpr):
    """One tile's lo . w + hi . w as one fresh MMA chain (FP32 result), and the tile's 2**-shift [BLOCK_M, 1].

    SPLIT_X: hi_ptrs address the FP32 activations, split here.  _split_tile of a tile depends on
    that tile alone, so the parts, and the bits, are the ones _split_kernel would have written;
    every program along N repeats the split of its rows.  A masked-off tile is all zero: p = 0,
    shift 1.
    """
    if not SPLIT_X:
        inv = tl.load(ts_ptrs, mask=mask_ts, other=1.0)[:, None]
    b = tl.load(b_ptrs, mask=mask_b, other=0.0)
    if SPLIT_X:
        x = tl.load(hi_ptrs, mask=mask_a, other=0.0).to(tl.float32)
        a_hi, a_lo, inv = _split_tile(x)
        inv = inv[:, None]
    else:
        a_hi = tl.load(hi_ptrs, mask=mask_a, other=0.0)
        a_lo = tl.load(lo_ptrs, mask=mask_a, other=0.0)
    return _dot2(a_hi, a_lo, b, EXACT), inv


@triton.jit
def _scaled(acc, offs_n, N, wscale_ptr):
    """acc * wscale[n] (an exact power of two: no rounding)."""
    return acc * tl.load(wscale_ptr + offs_n, mask=offs_n < N, other=1.0)[None, :]


@triton.jit
def _store(acc, offs_m, offs_n, mask_m, N, bias_ptr, out_ptr, stride_om, HAS_BIAS: tl.constexpr):
    mask_n = offs_n < N
    if HAS_BIAS:
        acc = acc + tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + offs_m[:, None] * stride_om + offs_n[None, :], acc, mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _k_tiles(
    t_begin, t_end, hi_ptr, lo_ptr, ts_ptr, w_ptr, offs_m, offs_n0, offs_n1, mask_m, N, K, stride_hm, stride_tm,
    stride_wn, BLOCK_M: tl.constexpr, HALF_N: tl.constexpr, BLOCK_K: tl.constexpr,
    K_UNROLL: tl.constexpr, N_HALVES: tl.constexpr, SPLIT_X: tl.constexpr, EXACT: tl.constexpr,
):
    """sum over K tiles t in [t_begin, t_end), ascending, of ts[m, t] * (lo_t . w_t + hi_t . w_t), from zero.

    SPLIT_X: hi_ptr is the FP32 activations (row stride stride_hm) and each program splits its tiles.
    """
    offs_k = tl.arange(0, BLOCK_K)
    k0 = t_begin * BLOCK_K
    hi_ptrs = hi_ptr + offs_m[:, None] * stride_hm + (k0 + offs_k)[None, :]
    lo_ptrs = lo_ptr + offs_m[:, None] * stride_hm + (k0 + offs_k)[None, :]
    b0_ptrs = w_ptr + offs_n0[None, :] * stride_wn + (k0 + offs_k)[:, None]
    b1_ptrs = w_ptr + offs_n1[None, :] * stride_wn + (k0 + offs_k)[:, None]
    ts_ptrs = ts_ptr + offs_m * stride_tm + t_begin
    acc0 = tl.zeros([BLOCK_M, HALF_N], dtype=tl.float32)
    acc1 = tl.zeros([BLOCK_M, HALF_N], dtype=tl.float32)
    for t0 in range(t_begin, t_end, K_UNROLL):
        for u in tl.static_range(K_UNROLL):
            t = t0 + u
            # all false past the range's last tile: p = 0, acc unchanged
            mask_k = ((t * BLOCK_K + offs_k) < K) & (t < t_end)
            mask_a = mask_m[:, None] & mask_k[None, :]
            mask_ts = mask_m & (t < t_end)
            p0, inv = _tile_product(hi_ptrs + u * BLOCK_K, lo_ptrs + u * BLOCK_K, ts_ptrs + u, b0_ptrs + u * BLOCK_K,
                                    mask_a, mask_ts, mask_k[:, None] & (offs_n0 < N)[None, :], SPLIT_X, EXACT)
            acc0 = tl.fma(p0, inv, acc0)  # p * inv is exact: one rounding, to nearest
            if N_HALVES == 2:
                p1, _ = _tile_product(hi_ptrs + u * BLOCK_K, lo_ptrs + u * BLOCK_K, ts_ptrs + u,
                                      b1_ptrs + u * BLOCK_K, mask_a, mask_ts,
                                      mask_k[:, None] & (offs_n1 < N)[None, :], SPLIT_X, EXACT)
                acc1 = tl.fma(p1, inv, acc1)
        hi_ptrs += BLOCK_K * K_UNROLL
        lo_ptrs += BLOCK_K * K_UNROLL
        b0_ptrs += BLOCK_K * K_UNROLL
        b1_ptrs += BLOCK_K * K_UNROLL
        ts_ptrs += K_UNROLL
    return acc0, acc1


@triton.jit
def _heal_matmul_kernel(
    hi_ptr, lo_ptr, ts_ptr, w_ptr, wscale_ptr, bias_ptr, out_ptr,
    M, N, K, KT,
    stride_hm, stride_tm, stride_wn, stride_om, stride_part,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    K_UNROLL: tl.constexpr, N_HALVES: tl.constexpr, SHARDS: tl.constexpr, SHARD_GRID: tl.constexpr,
    SPLIT_X: tl.constexpr, EXACT: tl.constexpr,
):
    """out[m, n] = tree_s(wscale[n] * sum_{t in shard s} ts[m, t] * (lo_t . w_t + hi_t . w_t)) + bias[n].

    K is cut into SHARDS equal runs of whole BLOCK_K tiles (1: no cut).  Within a
    shard, K tiles are walked in ascending order; each tile's lo and hi products are
    summed by one fresh MMA chain (its internal sum truncates, but over 2 x 64
    products only); the tile result is then scaled by its exact power of two and
    added to the FP32 accumulator with round-to-nearest: an fma, so the compiler
    cannot fold the add back into the MMA accumulator.  Shard sums are added in the
    fixed pairwise tree of heal_kernels.reduce.tree_sum.  No atomics.

    How the work is cut never changes a bit: K_UNROLL tiles per loop iteration,
    N_HALVES = 2 (two accumulators for a wide tile), and where the shards are summed:
    SHARD_GRID, one program per (tile, shard) writing its shard's sum to the partials
    at out_ptr + s * stride_part for _shard_sum_kernel (small M: more programs),
    or in this program (SHARDS = 2 only: two accumulators, no partials traffic).
    """
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    group = GROUP_M * num_pid_n
    first_m = (pid // group) * GROUP_M
    size_m = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group) % size_m
    pid_n = (pid % group) // size_m

    HALF_N: tl.constexpr = BLOCK_N // N_HALVES
    offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n0 = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, HALF_N)
    offs_n1 = offs_n0 + HALF_N
    mask_m = offs_m < M
    kt_shard = KT // SHARDS
    if SHARD_GRID:
        s = tl.program_id(1)
        t_begin = s * kt_shard
        out_ptr += s.to(tl.int64) * stride_part
    else:
        t_begin = 0
    acc0, acc1 = _k_tiles(t_begin, t_begin + kt_shard, hi_ptr, lo_ptr, ts_ptr, w_ptr, offs_m, offs_n0, offs_n1,
                          mask_m, N, K, stride_hm, stride_tm, stride_wn, BLOCK_M, HALF_N, BLOCK_K,
                          K_UNROLL, N_HALVES, SPLIT_X, EXACT)
    acc0 = _scaled(acc0, offs_n0, N, wscale_ptr)
    if N_HALVES == 2:
        acc1 = _scaled(acc1, offs_n1, N, wscale_ptr)
    if SHARDS == 2 and not SHARD_GRID:
        b0, b1 = _k_tiles(kt_shard, KT, hi_ptr, lo_ptr, ts_ptr, w_ptr, offs_m, offs_n0, offs_n1,
                          mask_m, N, K, stride_hm, stride_tm, stride_wn, BLOCK_M, HALF_N, BLOCK_K,
                          K_UNROLL, N_HALVES, SPLIT_X, EXACT)
        acc0 = acc0 + _scaled(b0, offs_n0, N, wscale_ptr)
        if N_HALVES == 2:
            acc1 = acc1 + _scaled(b1, offs_n1, N, wscale_ptr)
    _store(acc0, offs_m, offs_n0, mask_m, N, bias_ptr, out_ptr, stride_om, HAS_BIAS and not SHARD_GRID)
    if N_HALVES == 2:
        _store(acc1, offs_m, offs_n1, mask_m, N, bias_ptr, out_ptr, stride_om, HAS_BIAS and not SHARD_GRID)


@triton.jit
def _shard_sum_kernel(part_ptr, bias_ptr, out_ptr, MN, N, stride_part,
                      SHARDS: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr):
    """out = tree_sum(partials) + bias, elementwise, in tree_sum's pairwise order."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < MN
    p = part_ptr + offs
    a = tl.load(p, mask=mask) + tl.load(p + stride_part, mask=mask)
    if SHARDS >= 4:
        a = a + (tl.load(p + 2 * stride_part, mask=mask) + tl.load(p + 3 * stride_part, mask=mask))
    if SHARDS == 8:
        b = tl.load(p + 4 * stride_part, mask=mask) + tl.load(p + 5 * stride_part, mask=mask)
        b = b + (tl.load(p + 6 * stride_part, mask=mask) + tl.load(p + 7 * stride_part, mask=mask))
        a = a + b
    if HAS_BIAS:
        a = a + tl.load(bias_ptr + offs % N, mask=mask).to(tl.float32)
    tl.store(out_ptr + offs, a, mask=mask)
