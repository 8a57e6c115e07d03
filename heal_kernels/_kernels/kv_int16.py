"""Triton code of store_kv: K and V rows quantized to int16 (primitives._quantize_rows) and stored.

The cache format: heal_kernels.kv_int16.
"""

from __future__ import annotations

import triton
import triton.language as tl

from heal_kernels._kernels.primitives import _quantize_rows


@triton.jit
def _kv_store_kernel(
    k_ptr, v_ptr, loc_ptr, kc_ptr, ks_ptr, vc_ptr, vs_ptr,
    H, stride_kt, stride_kh, stride_vt, stride_vh,
    stride_cs, stride_ch, stride_ss,
    HEAD_DIM: tl.constexpr, BLOCK_H: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    slot = tl.load(loc_ptr + t).to(tl.int64)
    h = tl.arange(0, BLOCK_H)
    d = tl.arange(0, HEAD_DIM)
    mask = (h < H)[:, None]
    for which in tl.static_range(2):
        if which == 0:
            src = k_ptr + t * stride_kt + h[:, None] * stride_kh + d[None, :]
            dst, sdst = kc_ptr, ks_ptr
        else:
            src = v_ptr + t * stride_vt + h[:, None] * stride_vh + d[None, :]
            dst, sdst = vc_ptr, vs_ptr
        x = tl.load(src, mask=mask, other=0.0).to(tl.float32)
        q, scale = _quantize_rows(x)
        tl.store(dst + slot * stride_cs + h[:, None] * stride_ch + d[None, :], q.to(tl.int16), mask=mask)
        tl.store(sdst + slot * stride_ss + h, scale, mask=h < H)
