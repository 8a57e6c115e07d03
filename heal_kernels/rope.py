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

from heal_kernels._kernels.rope import _rope_kernel
from heal_kernels._runtime import FLOAT_DTYPES, arch_key, check_index_range, check_tensor, out_buffer


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
    # past the cos/sin cache the kernel would read out of bounds
    check_index_range("positions", positions, cos_sin_cache.shape[0], "values", "the cos_sin_cache")
    return (
        _rope_one("q", positions, q, cos_sin_cache, head_dim, rot // 2, bool(is_neox), q_out),
        _rope_one("k", positions, k, cos_sin_cache, head_dim, rot // 2, bool(is_neox), k_out),
    )
