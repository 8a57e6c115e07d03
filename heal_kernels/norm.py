"""RMSNorm with optional fused residual add, FP32 in the residual stream.

    h = x + residual (FP32);  out = h * rsqrt(mean(h**2) + eps) * weight

One program per row; the sum of squares is one tl.sum over a block the width of the
row (a fixed tree for a given hidden size), so a row's result never depends on the
batch.  Inputs may be fp32, bf16 or fp16; outputs are fp32.
"""

from __future__ import annotations

import torch

from heal_kernels import configs
from heal_kernels._kernels.norm import _rmsnorm_kernel
from heal_kernels._launch import launch_kernel
from heal_kernels._runtime import FLOAT_DTYPES, arch_key, check_shape, check_tensor, out_buffer
from heal_kernels.matmul import SplitX, check_split_k, empty_split, split_tiles


def rms_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    residual: torch.Tensor | None = None,
    *,
    out: torch.Tensor | None = None,
    residual_out: torch.Tensor | None = None,
    split_k: int = 0,
) -> torch.Tensor | tuple:
    """RMSNorm over the last dimension of x [M, N].

    Without ``residual`` returns out; with it returns (out, x + residual), both fp32.
    ``out`` / ``residual_out``: optional float32 [M, N] destinations (``residual_out``
    may be ``residual`` itself for an in-place update).

    ``split_k`` > 0 also returns out's ``heal_kernels.matmul.SplitX`` with that K tile, last
    in the tuple ((out, split) or (out, x + residual, split)): the matmul that consumes out
    then needs no split launch.  out's bits do not depend on it.
    """
    check_tensor("x", x, dtypes=FLOAT_DTYPES, ndim=2)
    m, n = x.shape
    check_tensor("weight", weight, dtypes=FLOAT_DTYPES, ndim=1, device=x.device)
    check_shape("weight", weight, (n,))
    if not (isinstance(eps, (int, float)) and eps >= 0):
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")
    if residual is not None:
        check_tensor("residual", residual, dtypes=FLOAT_DTYPES, ndim=2, device=x.device)
        check_shape("residual", residual, (m, n))
    check_split_k(split_k)
    cfg = configs.row_config(arch_key(x.device), n)
    out = out_buffer("out", out, (m, n), x.device)
    res_out = out_buffer("residual_out", residual_out, (m, n), x.device) if residual is not None else None
    # The row's block must hold whole K tiles; narrower rows (N < split_k) are split by a launch of their own.
    fused = split_k > 0 and cfg.block % split_k == 0
    split = empty_split(m, n, split_k, x.device) if fused else None
    if m > 0 and n > 0:
        r = residual if residual is not None else x
        ro = res_out if res_out is not None else out
        sp = split if split is not None else SplitX(out, out, out, 1)  # placeholders: no split written
        launch_kernel(_rmsnorm_kernel, (m,),
            x, r, weight, out, ro, sp.hi, sp.lo, sp.ts, n, sp.ts.shape[1], x.stride(0), r.stride(0), out.stride(0),
            ro.stride(0), sp.hi.stride(0), sp.ts.stride(0), float(eps),
            HAS_RESIDUAL=residual is not None, BLOCK_N=cfg.block, SPLIT=fused, BLOCK_K=max(split_k, 1),
            num_warps=cfg.num_warps,
        )
    if split_k > 0 and not fused:
        split = split_tiles(out, split_k)
    result = (out,) if res_out is None else (out, res_out)
    if split_k > 0:
        result += (split,)
    return result[0] if len(result) == 1 else result
