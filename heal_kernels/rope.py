"""Rotary position embedding in FP32 (neox and interleaved styles).

``cos_sin_cache`` is SGLang's layout: [max_position, rotary_dim] float32, cos in the
first rotary_dim/2 columns and sin in the rest.  For pair i of a head
(neox: elements i and i + rotary_dim/2; interleaved: 2i and 2i+1):

    out_1 = x_1 cos_i - x_2 sin_i,    out_2 = x_2 cos_i + x_1 sin_i

Columns past rotary_dim are copied.  One program per token; elementwise, so no
result depends on the batch.  Inputs fp32, bf16 or fp16; outputs fp32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from heal_kernels._runtime import FLOAT_DTYPES, arch_key, check_tensor, out_buffer


@triton.jit
def _rope_kernel(
    pos_ptr, x_ptr, out_ptr, cs_ptr,
    H, stride_xt, stride_xh, stride_ot, stride_oh, stride_cs,
    HEAD_DIM: tl.constexpr, HALF_ROT: tl.constexpr, IS_NEOX: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
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


def _rope_one(name: str, positions, x, cos_sin_cache, head_dim, rot_half, is_neox, out) -> torch.Tensor:
    check_tensor(name, x, dtypes=FLOAT_DTYPES, ndim=(2, 3), device=positions.device)
    t = x.shape[0]
    if t != positions.shape[0]:
        raise ValueError(f"{name} has {t} tokens but positions has {positions.shape[0]}")
    if x.dim() == 2:
        if x.shape[1] % head_dim:
            raise ValueError(f"{name} has width {x.shape[1]}, not a multiple of head_dim={head_dim}")
        x3 = x.view(t, x.shape[1] // head_dim, head_dim) if t > 0 else x.reshape(0, x.shape[1] // head_dim, head_dim)
    else:
        if x.shape[2] != head_dim:
            raise ValueError(f"{name} has head size {x.shape[2]}; expected head_dim={head_dim}")
        x3 = x
    out = out_buffer(f"{name}_out", out, tuple(x.shape), x.device).view(x3.shape)
    n_heads = x3.shape[1]
    if t > 0 and n_heads > 0:
        interpret = arch_key(x.device) == "interpret"
        _rope_kernel[(t,)](
            positions, x3, out, cos_sin_cache, n_heads,
            x3.stride(0), x3.stride(1), out.stride(0), out.stride(1), cos_sin_cache.stride(0),
            HEAD_DIM=head_dim, HALF_ROT=rot_half, IS_NEOX=is_neox,
            BLOCK_H=min(16, triton.next_power_of_2(n_heads)), BLOCK_R=triton.next_power_of_2(rot_half),
            BLOCK_D=triton.next_power_of_2(max(head_dim - 2 * rot_half, 1)),
            num_warps=1 if interpret else 4,
        )
    return out.view(x.shape)


def apply_rotary(
    positions: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    head_dim: int,
    is_neox: bool = True,
    *,
    q_out: torch.Tensor | None = None,
    k_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q [T, Hq*D] (or [T, Hq, D]) and k likewise at ``positions`` [T]; returns fp32 tensors
    (``q_out`` / ``k_out``: optional float32 destinations shaped like q / k)."""
    check_tensor("positions", positions, dtypes=(torch.int64, torch.int32), ndim=1)
    check_tensor("cos_sin_cache", cos_sin_cache, dtypes=(torch.float32,), ndim=2, device=positions.device)
    rot = cos_sin_cache.shape[1]
    if rot % 2 or rot == 0 or rot > head_dim:
        raise ValueError(f"cos_sin_cache has rotary_dim={rot}; it must be even and in [2, head_dim={head_dim}]")
    if head_dim <= 0:
        raise ValueError(f"head_dim must be positive, got {head_dim}")
    return (
        _rope_one("q", positions, q, cos_sin_cache, head_dim, rot // 2, bool(is_neox), q_out),
        _rope_one("k", positions, k, cos_sin_cache, head_dim, rot // 2, bool(is_neox), k_out),
    )
