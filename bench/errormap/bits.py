"""Round FP32 values to k explicit significand bits (round to nearest, ties to even).

k = 23 is FP32 itself, k = 10 FP16's significand and k = 7 BF16's; the exponent range stays
FP32's, so k = 7 is BF16 exactly wherever BF16 has no overflow or subnormal of its own."""

from __future__ import annotations

import torch

FP32_BITS = 23


def round_to_bits(x: torch.Tensor, k: int) -> torch.Tensor:
    """x (float32) with its significand rounded to ``k`` bits (0..23); NaN and Inf unchanged, and a
    value that rounds past FP32's max becomes Inf of its sign, as a hardware rounding would."""
    if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= FP32_BITS:
        raise ValueError(f"k (significand bits) must be an int in [0, {FP32_BITS}], got {k!r}")
    if x.dtype != torch.float32:
        raise ValueError(f"x must be float32, got {x.dtype}")
    if k == FP32_BITS:
        return x.clone()
    shift = FP32_BITS - k
    b = x.contiguous().view(torch.int32)
    # ties to even: add half an ulp of the kept part, minus one unless the kept part is odd
    bias = (1 << (shift - 1)) - 1 + ((b >> shift) & 1)
    r = ((b + bias) >> shift) << shift  # carries into the exponent where the significand overflows
    out = r.view(torch.float32).view(x.shape)
    return torch.where(torch.isfinite(x), out, x)
