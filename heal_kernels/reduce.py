"""Fixed-order reductions: the same partials always summed in the same order."""

from __future__ import annotations

import torch

from heal_kernels._launch import launch_kernel
from heal_kernels._runtime import cdiv, check_tensor


def tree_sum(parts) -> torch.Tensor:
    """((p0 + p1) + (p2 + p3)) ...: the fixed pairwise order ``k_shards`` uses; len(parts) a power of two."""
    parts = list(parts)
    if not parts or len(parts) & (len(parts) - 1):
        raise ValueError(f"tree_sum needs a power-of-two number of partials, got {len(parts)}")
    while len(parts) > 1:
        parts = [parts[i] + parts[i + 1] for i in range(0, len(parts), 2)]
    return parts[0]


def tree_sum_stacked(parts: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """tree_sum(parts.unbind(0)) + bias in one kernel: the bits of the torch tree, one launch
    instead of len - 1 adds (TP's gathered partials: parts [S, M, N] float32, S in 1, 2, 4, 8)."""
    check_tensor("parts", parts, dtypes=(torch.float32,), ndim=3)
    s, m, n = parts.shape
    if s not in (1, 2, 4, 8):
        raise ValueError(f"parts must stack 1, 2, 4 or 8 partials along dim 0, got {s}")
    if bias is not None:
        check_tensor("bias", bias, dtypes=(torch.float32, torch.bfloat16, torch.float16), ndim=1,
                     device=parts.device)
        if bias.shape[0] != n:
            raise ValueError(f"bias has {bias.shape[0]} elements for partials of width {n}")
    if s == 1:
        return parts[0] if bias is None else parts[0] + bias
    out = torch.empty((m, n), dtype=torch.float32, device=parts.device)
    shard_sum(parts.contiguous(), bias, out)
    return out


def shard_sum(parts: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor) -> None:
    """out[M, N] = tree_sum(parts) + bias for contiguous float32 parts [S, M, N], S in 2, 4, 8 (no checks)."""
    from heal_kernels._kernels.matmul import _shard_sum_kernel

    s, m, n = parts.shape
    if m * n:
        block = 1024
        launch_kernel(_shard_sum_kernel, (cdiv(m * n, block),),
            parts, bias if bias is not None else parts, out, m * n, n, m * n,
            SHARDS=s, HAS_BIAS=bias is not None, BLOCK=block, num_warps=4,
        )
