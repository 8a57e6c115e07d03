"""Triton code of apply_rotary; the maths and the cos/sin cache layout: heal_kernels.rope."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _rope_rows(
    x_ptr, out_ptr, t, H, stride_xt, stride_xh, stride_ot, stride_oh, cos, sin, c1, c2, mask_i,
    HEAD_DIM: tl.constexpr, HALF_ROT: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Rotate the H heads of token t of one tensor (elementwise: no result depends on BLOCK_H)."""
    for h0 in range(0, H, BLOCK_H):
        h = h0 + tl.arange(0, BLOCK_H)
        mask = (h < H)[:, None] & mask_i[None, :]
        xrow = x_ptr + t * stride_xt + h[:, None].to(tl.int64) * stride_xh
        orow = out_ptr + t * stride_ot + h[:, None].to(tl.int64) * stride_oh
        x1 = tl.load(xrow + c1[None, :], mask=mask, other=0.0).to(tl.float32)
        x2 = tl.load(xrow + c2[None, :], mask=mask, other=0.0).to(tl.float32)
        tl.store(orow + c1[None, :], x1 * cos[None, :] - x2 * sin[None, :], mask=mask)
        tl.store(orow + c2[None, :], x2 * cos[None, :] + x1 * sin[None, :], mask=mask)
        if 2 * HALF_ROT < HEAD_DIM:
            d = 2 * HALF_ROT + tl.arange(0, BLOCK_D)
            mask_d = (h < H)[:, None] & (d < HEAD_DIM)[None, :]
            tail = tl.load(xrow + d[None, :], mask=mask_d, other=0.0).to(tl.float32)
            tl.store(orow + d[None, :], tail, mask=mask_d)


@triton.jit
def _rope_kernel(
    pos_ptr, q_ptr, q_out_ptr, k_ptr, k_out_ptr, cs_ptr,
    HQ, HK, stride_qt, stride_qh, stride_qot, stride_qoh, stride_kt, stride_kh, stride_kot, stride_koh, stride_cs,
    HEAD_DIM: tl.constexpr, HALF_ROT: tl.constexpr, IS_NEOX: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """One program per (token, tensor): axis 1 picks q (0) or k (1), so one launch rotates both."""
    t = tl.program_id(0).to(tl.int64)
    pos = tl.load(pos_ptr + t).to(tl.int64)
    i = tl.arange(0, BLOCK_R)
    mask_i = i < HALF_ROT
    cos = tl.load(cs_ptr + pos * stride_cs + i, mask=mask_i, other=0.0)
    sin = tl.load(cs_ptr + pos * stride_cs + HALF_ROT + i, mask=mask_i, other=0.0)
    if IS_NEOX:
        c1 = i
        c2 = i + HALF_ROT
    else:
        c1 = 2 * i
        c2 = 2 * i + 1
    if tl.program_id(1) == 0:
        _rope_rows(q_ptr, q_out_ptr, t, HQ, stride_qt, stride_qh, stride_qot, stride_qoh, cos, sin, c1, c2, mask_i,
                   HEAD_DIM, HALF_ROT, BLOCK_H, BLOCK_D)
    else:
        _rope_rows(k_ptr, k_out_ptr, t, HK, stride_kt, stride_kh, stride_kot, stride_koh, cos, sin, c1, c2, mask_i,
                   HEAD_DIM, HALF_ROT, BLOCK_H, BLOCK_D)
