"""Triton code of heal_matmul: the row split and the compensated GEMM."""

from __future__ import annotations

import triton
import triton.language as tl

# Split of one FP32 value into FP16 parts: x * 2**-e = hi + lo * 2**-LO_SHIFT.
LO_SHIFT = 11
# Rows are scaled so their largest magnitude lands in [2**ROW_TOP, 2**(ROW_TOP+1)):
# far below FP16's 65504 (hi rounds up by at most half an ulp) and 2**29 above its
# smallest normal, so nothing a row's matmul can feel overflows or flushes.
ROW_TOP = 14


@triton.jit
def _pow2(e):
    """2**e as fp32, exactly, for integer e in [-126, 127]."""
    return ((e + 127) << 23).to(tl.float32, bitcast=True)


@triton.jit
def _two_sum_acc(acc, comp, p):
    """acc + p rounded to nearest, with its exact rounding error added to comp (Knuth's TwoSum)."""
    s = acc + p
    bp = s - acc
    comp += (acc - (s - bp)) + (p - bp)
    return s, comp


@triton.jit
def _split_rows_kernel(
    x_ptr, hi_ptr, lo_ptr, rscale_ptr,
    K, stride_xm, stride_hm,
    BLOCK_K: tl.constexpr, LO_SHIFT_C: tl.constexpr, ROW_TOP_C: tl.constexpr,
):
    """Per row: e from the row's max |x|; hi = fp16(x * 2**-e), lo = fp16((x * 2**-e - hi) * 2**LO_SHIFT).

    The max is exact and order-free; hi and lo are elementwise, so a row's parts
    never depend on other rows.
    """
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_xm
    offs = tl.arange(0, BLOCK_K)
    amax = tl.zeros([BLOCK_K], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + offs
        x = tl.load(x_row + cols, mask=cols < K, other=0.0).to(tl.float32)
        amax = tl.maximum(amax, tl.abs(x))
    m = tl.max(amax, axis=0)
    bits = m.to(tl.int32, bitcast=True)
    exp = ((bits >> 23) & 0xFF) - 127  # floor(log2 m) for normal m; -127 for 0 / subnormal
    # Non-finite rows keep scale 1 so inf/nan propagate as in an FP32 matmul.
    shift = tl.where((m > 0.0) & (exp < 128), ROW_TOP_C - exp, 0)
    shift = tl.minimum(tl.maximum(shift, -126), 126)
    up = _pow2(shift)
    tl.store(rscale_ptr + row, _pow2(-shift))
    lo_up = _pow2(tl.full([], LO_SHIFT_C, tl.int32))
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + offs
        mask = cols < K
        x = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32) * up
        hi = x.to(tl.float16)
        lo = ((x - hi.to(tl.float32)) * lo_up).to(tl.float16)
        tl.store(hi_ptr + row * stride_hm + cols, hi, mask=mask)
        tl.store(lo_ptr + row * stride_hm + cols, lo, mask=mask)


@triton.jit
def _heal_matmul_kernel(
    hi_ptr, lo_ptr, rscale_ptr, w_ptr, wscale_ptr, bias_ptr, out_ptr,
    M, N, K,
    stride_hm, stride_wn, stride_om,
    HAS_BIAS: tl.constexpr, HAS_WSCALE: tl.constexpr, W_BF16: tl.constexpr,
    ACC_MODE: tl.constexpr, LO_SHIFT_C: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """out[m, n] = rscale[m] * wscale[n] * (sum_k hi[m,k] w[n,k] + 2**-LO_SHIFT sum_k lo[m,k] w[n,k]) + bias[n].

    K is walked in ascending BLOCK_K tiles.  The hi products of each tile come out
    of a fresh MMA (whose internal sum truncates) and are added to the FP32
    accumulator with round-to-nearest (ACC_MODE 1, shipped), optionally keeping
    the rounding error of every addition in a second accumulator (ACC_MODE 2,
    TwoSum).  ACC_MODE 0 chains every tile in the MMA accumulator (the naive
    kernel, for comparison).  The lo products are 2**-11 smaller, so their tiles
    are always chained in the MMA accumulator.  No split-K, no atomics.
    """
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    group = GROUP_M * num_pid_n
    first_m = (pid // group) * GROUP_M
    size_m = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group) % size_m
    pid_n = (pid % group) // size_m

    offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N
    a_hi_ptrs = hi_ptr + offs_m[:, None] * stride_hm + offs_k[None, :]
    a_lo_ptrs = lo_ptr + offs_m[:, None] * stride_hm + offs_k[None, :]
    b_ptrs = w_ptr + offs_n[None, :] * stride_wn + offs_k[:, None]

    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    comp = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    acc_lo = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        mask_k = (k0 + offs_k) < K
        a_hi = tl.load(a_hi_ptrs, mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        a_lo = tl.load(a_lo_ptrs, mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        if W_BF16:
            b = b.to(tl.float16)  # exact for |w| in [2**-14, 65504]
        if ACC_MODE == 0:
            acc = tl.dot(a_hi, b, acc)
        else:
            p = tl.dot(a_hi, b)
            if ACC_MODE == 1:
                # fma(p, 1, acc) == RN(acc + p); written as an fma so the compiler
                # cannot fold the add back into the MMA's truncating accumulator.
                acc = tl.fma(p, 1.0, acc)
            else:
                acc, comp = _two_sum_acc(acc, comp, p)
        acc_lo = tl.dot(a_lo, b, acc_lo)
        a_hi_ptrs += BLOCK_K
        a_lo_ptrs += BLOCK_K
        b_ptrs += BLOCK_K

    lo_down = _pow2(tl.full([], -LO_SHIFT_C, tl.int32))
    total = acc + (comp + acc_lo * lo_down)
    total = total * tl.load(rscale_ptr + offs_m, mask=mask_m, other=1.0)[:, None]
    if HAS_WSCALE:
        total = total * tl.load(wscale_ptr + offs_n, mask=mask_n, other=1.0)[None, :]
    if HAS_BIAS:
        total = total + tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    tl.store(out_ptrs, total, mask=mask_m[:, None] & mask_n[None, :])
