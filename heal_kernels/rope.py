"""Rotary position embedding in FP32 (neox and interleaved styles).

``cos_sin_cache`` is SGLang's layout: [max_position, rotary_dim] float32, cos in the
first rotary_dim/2 columns and sin in the rest.  For pair i of a head
(neox: elements i and i + rotary_dim/2; interleaved: 2i and 2i+1):

    out_1 = x_1 cos_i - x_2 sin_i,    out_2 = x_2 cos_i + x_1 sin_i

Columns past rotary_dim are copied.  One program per (token, q or k); elementwise, so no
result depends on the batch.  Inputs fp32, bf16 or fp16; outputs fp32.
"""

from __future__ import annotations

import torch

from heal_kernels._kernels.rope import _rope_kernel
from heal_kernels._launch import launch_kernel
from heal_kernels._runtime import FLOAT_DTYPES, arch_key, check_index_range, check_tensor, next_power_of_2, out_buffer


def _rope_view(name: str, positions, x, head_dim, out) -> tuple[torch.Tensor, torch.Tensor]:
    """x and its fp32 destination as [T, H, head_dim] views, after checking them."""
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
    out = out_buffer(f"{name}_out", out, tuple(x.shape), x.device)
    return x3, out


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
    validate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q [T, Hq*D] (or [T, Hq, D]) and k likewise at ``positions`` [T]; returns fp32 tensors
    (``q_out`` / ``k_out``: optional float32 destinations shaped like q / k).

    ``validate=False`` skips only the range check of ``positions`` (a host sync), for a caller that
    checked them against this cache already (a serving engine: once per batch, not per layer)."""
    check_tensor("positions", positions, dtypes=(torch.int64, torch.int32), ndim=1)
    check_tensor("cos_sin_cache", cos_sin_cache, dtypes=(torch.float32,), ndim=2, device=positions.device)
    rot = cos_sin_cache.shape[1]
    if rot % 2 or rot == 0 or rot > head_dim:
        raise ValueError(f"cos_sin_cache has rotary_dim={rot}; it must be even and in [2, head_dim={head_dim}]")
    if head_dim <= 0:
        raise ValueError(f"head_dim must be positive, got {head_dim}")
    # past the cos/sin cache the kernel would read out of bounds
    if validate:
        check_index_range("positions", positions, cos_sin_cache.shape[0], "values", "the cos_sin_cache")
    q3, q_out = _rope_view("q", positions, q, head_dim, q_out)
    k3, k_out = _rope_view("k", positions, k, head_dim, k_out)
    t, hq, hk = q3.shape[0], q3.shape[1], k3.shape[1]
    if t > 0 and max(hq, hk) > 0:
        half = rot // 2
        # The destinations are new or checked contiguous, shaped like q and k: as [T, H, D] views their
        # strides are (H * D, D).  q and k in one launch (axis 1): every launch costs host time in eager batches.
        qs, ks = q3.stride(), k3.stride()
        launch_kernel(_rope_kernel, (t, 2),
            positions, q3, q_out, k3, k_out, cos_sin_cache, hq, hk,
            qs[0], qs[1], hq * head_dim, head_dim,
            ks[0], ks[1], hk * head_dim, head_dim, cos_sin_cache.stride(0),
            HEAD_DIM=head_dim, HALF_ROT=half, IS_NEOX=bool(is_neox),
            BLOCK_H=min(16, next_power_of_2(max(hq, hk))), BLOCK_R=next_power_of_2(half),
            BLOCK_D=next_power_of_2(max(head_dim - 2 * half, 1)),
            num_warps=1 if arch_key(positions.device) == "interpret" else 4,
        )
    return q_out, k_out
