"""Fixed-order reductions in torch: the same partials always summed in the same order."""

from __future__ import annotations

import torch


def tree_sum(parts) -> torch.Tensor:
    """((p0 + p1) + (p2 + p3)) ...: the fixed pairwise order ``k_shards`` uses; len(parts) a power of two."""
    parts = list(parts)
    if not parts or len(parts) & (len(parts) - 1):
        raise ValueError(f"tree_sum needs a power-of-two number of partials, got {len(parts)}")
    while len(parts) > 1:
        parts = [parts[i] + parts[i + 1] for i in range(0, len(parts), 2)]
    return parts[0]
