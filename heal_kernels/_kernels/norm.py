"""Triton code of rms_norm; the maths and why no row depends on the batch: heal_kernels.norm."""

from __future__ import annotations

import triton
import triton.language as tl

from heal_kernels._kernels.primitives import _pow2, _split_row_tiles


@triton.jit
def _rmsnorm_kernel(
    x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr, hi_ptr, lo_ptr, ts_ptr,
    N, KT, stride_x, stride_r, stride_o, stride_ro, stride_h, stride_t, eps,
    HAS_RESIDUAL: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT: tl.constexpr, BLOCK_K: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    h = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        h += tl.load(res_ptr + row * stride_r + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(res_out_ptr + row * stride_ro + cols, h, mask=mask)
    mean_sq = tl.sum(h * h, axis=0) / N
    # An element above ~1.8e19 squares to inf, which would make rstd 0 and the row finite
    # zeros. Such a row (only) is rescaled by a power of two first, which is exact; every
    # other row keeps s = 1, and multiplying by 1 leaves its bits as they were.
    s = tl.full((), 1.0, tl.float32)
    if mean_sq == float("inf"):
        amax = tl.max(tl.abs(h), axis=0)
        if amax < float("inf"):  # an Inf (or NaN) stays as torch has it
            e = ((amax.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127  # floor(log2 amax), 33..127 here
            s = _pow2(32 - e)  # max |h * s| ~ 2^32
            hs = h * s
            mean_sq = tl.sum(hs * hs, axis=0) / N
    rstd = 1.0 / tl.sqrt_rn(mean_sq + eps * s * s)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * stride_o + cols, (h * s) * rstd * w, mask=mask)
    if SPLIT:
        # heal_matmul's split of the row, read back from what was stored (the barrier makes every
        # thread's stores visible): the sum above keeps its own layout and tree, so `out` keeps
        # its bits whether or not the split is asked for.
        tl.debug_barrier()
        _split_row_tiles(out_ptr + row * stride_o, hi_ptr + row * stride_h, lo_ptr + row * stride_h,
                         ts_ptr + row * stride_t, 0, N, KT, BLOCK_N // BLOCK_K, BLOCK_K)
