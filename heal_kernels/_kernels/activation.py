"""Triton code of silu_and_mul and gelu_tanh_and_mul (ACT 0 and 1); the maths: heal_kernels.activation."""

from __future__ import annotations

import triton
import triton.language as tl

from heal_kernels._kernels.primitives import _split_row_tiles


@triton.jit
def _act_and_mul_kernel(
    x_ptr, out_ptr, hi_ptr, lo_ptr, ts_ptr, D, KT, stride_x, stride_o, stride_h, stride_t,
    ACT: tl.constexpr, BLOCK_D: tl.constexpr, SPLIT: tl.constexpr, BLOCK_K: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask = cols < D
    a = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(x_ptr + row * stride_x + D + cols, mask=mask, other=0.0).to(tl.float32)
    if ACT == 0:
        z = a
    else:
        z = 2.0 * 0.7978845608028654 * (a + 0.044715 * a * a * a)
    y = a / (1.0 + tl.exp(-z))
    tl.store(out_ptr + row * stride_o + cols, y * b, mask=mask)
    if SPLIT:  # heal_matmul's split of this block's K tiles, read back from what was stored
        tl.debug_barrier()
        TILES: tl.constexpr = BLOCK_D // BLOCK_K
        _split_row_tiles(out_ptr + row * stride_o, hi_ptr + row * stride_h, lo_ptr + row * stride_h,
                         ts_ptr + row * stride_t, tl.program_id(1) * TILES, D, KT, TILES, BLOCK_K)
