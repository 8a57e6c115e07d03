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

from heal_kernels._kernels.primitives import _dot2, _split_tile


@triton.jit
def _split_kernel(
    x_ptr, hi_ptr, lo_ptr, ts_ptr,
    K, KT, stride_xm, stride_hm, stride_tm,
    BLOCK_K: tl.constexpr, TILES: tl.constexpr,
):
    """One program per (row, TILES consecutive K tiles): hi, lo [M, K] fp16 and ts [M, KT] fp32."""
    row = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1) * TILES + tl.arange(0, TILES)
    cols = t[:, None] * BLOCK_K + tl.arange(0, BLOCK_K)[None, :]
    mask = cols < K
    x = tl.load(x_ptr + row * stride_xm + cols, mask=mask, other=0.0).to(tl.float32)
    hi, lo, inv = _split_tile(x)
    tl.store(hi_ptr + row * stride_hm + cols, hi, mask=mask)
    tl.store(lo_ptr + row * stride_hm + cols, lo, mask=mask)
    tl.store(ts_ptr + row * stride_tm + t, inv, mask=t < KT)


@triton.jit
def _tile_product(hi_ptrs, lo_ptrs, b_ptrs, mask_a, mask_b, W_BF16: tl.constexpr, EXACT: tl.constexpr):
    """One tile's lo . w + hi . w as one fresh MMA chain (FP32 result)."""
    b = tl.load(b_ptrs, mask=mask_b, other=0.0)
    if W_BF16:
        b = b.to(tl.float16)  # exact for |w| in [2**-14, 65504]
    a_hi = tl.load(hi_ptrs, mask=mask_a, other=0.0)
    a_lo = tl.load(lo_ptrs, mask=mask_a, other=0.0)
    return _dot2(a_hi, a_lo, b, EXACT)


@triton.jit
def _epilogue(acc, offs_m, offs_n, mask_m, N, wscale_ptr, bias_ptr, out_ptr, stride_om,
              HAS_WSCALE: tl.constexpr, HAS_BIAS: tl.constexpr):
    mask_n = offs_n < N
    if HAS_WSCALE:
        acc = acc * tl.load(wscale_ptr + offs_n, mask=mask_n, other=1.0)[None, :]
    if HAS_BIAS:
        acc = acc + tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + offs_m[:, None] * stride_om + offs_n[None, :], acc, mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _heal_matmul_kernel(
    hi_ptr, lo_ptr, ts_ptr, w_ptr, wscale_ptr, bias_ptr, out_ptr,
    M, N, K, KT,
    stride_hm, stride_tm, stride_wn, stride_om,
    HAS_BIAS: tl.constexpr, HAS_WSCALE: tl.constexpr, W_BF16: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    K_UNROLL: tl.constexpr, N_HALVES: tl.constexpr, EXACT: tl.constexpr,
):
    """out[m, n] = wscale[n] * sum_t ts[m, t] * (lo_t . w_t + hi_t . w_t) + bias[n].

    K is walked in ascending BLOCK_K tiles t.  Each tile's lo and hi products are
    summed by one fresh MMA chain (its internal sum truncates, but over 2 x 64
    products only); the tile result is then scaled by its exact power of two and
    added to the FP32 accumulator with round-to-nearest: an fma, so the compiler
    cannot fold the add back into the MMA accumulator.  No split-K, no atomics.

    K_UNROLL tiles are loaded per loop iteration and N_HALVES = 2 computes the
    BLOCK_N columns as two halves, each with its own accumulator: both only change
    how the work is cut (bigger loads; a wide tile without a second full-width
    product in registers), never which tiles are summed in which order.
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
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    hi_ptrs = hi_ptr + offs_m[:, None] * stride_hm + offs_k[None, :]
    lo_ptrs = lo_ptr + offs_m[:, None] * stride_hm + offs_k[None, :]
    b0_ptrs = w_ptr + offs_n0[None, :] * stride_wn + offs_k[:, None]
    b1_ptrs = w_ptr + offs_n1[None, :] * stride_wn + offs_k[:, None]
    ts_ptrs = ts_ptr + offs_m * stride_tm

    acc0 = tl.zeros([BLOCK_M, HALF_N], dtype=tl.float32)
    acc1 = tl.zeros([BLOCK_M, HALF_N], dtype=tl.float32)
    for t0 in range(0, KT, K_UNROLL):
        for u in tl.static_range(K_UNROLL):
            t = t0 + u
            mask_k = (t * BLOCK_K + offs_k) < K  # all false past the last tile: p = 0, acc unchanged
            mask_a = mask_m[:, None] & mask_k[None, :]
            inv = tl.load(ts_ptrs + u, mask=mask_m & (t < KT), other=1.0)[:, None]
            p0 = _tile_product(hi_ptrs + u * BLOCK_K, lo_ptrs + u * BLOCK_K, b0_ptrs + u * BLOCK_K,
                               mask_a, mask_k[:, None] & (offs_n0 < N)[None, :], W_BF16, EXACT)
            acc0 = tl.fma(p0, inv, acc0)  # p * inv is exact: one rounding, to nearest
            if N_HALVES == 2:
                p1 = _tile_product(hi_ptrs + u * BLOCK_K, lo_ptrs + u * BLOCK_K, b1_ptrs + u * BLOCK_K,
                                   mask_a, mask_k[:, None] & (offs_n1 < N)[None, :], W_BF16, EXACT)
                acc1 = tl.fma(p1, inv, acc1)
        hi_ptrs += BLOCK_K * K_UNROLL
        lo_ptrs += BLOCK_K * K_UNROLL
        b0_ptrs += BLOCK_K * K_UNROLL
        b1_ptrs += BLOCK_K * K_UNROLL
        ts_ptrs += K_UNROLL

    _epilogue(acc0, offs_m, offs_n0, mask_m, N, wscale_ptr, bias_ptr, out_ptr, stride_om, HAS_WSCALE, HAS_BIAS)
    if N_HALVES == 2:
        _epilogue(acc1, offs_m, offs_n1, mask_m, N, wscale_ptr, bias_ptr, out_ptr, stride_om, HAS_WSCALE, HAS_BIAS)
