"""Gated activations in FP32: out = act(x[:, :D]) * x[:, D:].

    silu(a)       = a / (1 + exp(-a))
    gelu_tanh(a)  = 0.5 a (1 + tanh(c (a + 0.044715 a**3)))  ==  a / (1 + exp(-2 c (a + 0.044715 a**3)))

(c = sqrt(2/pi); the second form of GELU avoids the cancellation in 1 + tanh.)
Elementwise, one program per (row, block of columns), the same compiled code for every
batch: nothing depends on the batch.  Inputs fp32,
bf16 or fp16; output fp32.
"""

from __future__ import annotations

import torch

from heal_kernels._kernels.activation import _act_and_mul_kernel
from heal_kernels._launch import launch_kernel
from heal_kernels._runtime import FLOAT_DTYPES, cdiv, check_tensor, out_buffer
from heal_kernels.matmul import SplitX, check_split_k, empty_split, split_tiles

_BLOCK_D = 1024
_SILU = 0
_GELU_TANH = 1


def _act_and_mul(x: torch.Tensor, act: int, out: torch.Tensor | None, split_k: int):
    check_tensor("x", x, dtypes=FLOAT_DTYPES, ndim=2)
    check_split_k(split_k)
    m, two_d = x.shape
    if two_d % 2:
        raise ValueError(f"x must have an even last dimension (gate and up halves), got shape {tuple(x.shape)}")
    d = two_d // 2
    out = out_buffer("out", out, (m, d), x.device)
    # A program's column block holds whole K tiles (split_k <= _BLOCK_D, both powers of two).
    fused = 0 < split_k <= _BLOCK_D
    split = empty_split(m, d, split_k, x.device) if fused else None
    if m > 0 and d > 0:
        sp = split if split is not None else SplitX(out, out, out, 1)  # placeholders: no split written
        # Column blocks over programs: at batch 1 a single program per row left the GPU idle
        # (8B shape, H200: 7.5 us per call, 32 calls per token).
        launch_kernel(_act_and_mul_kernel, (m, cdiv(d, _BLOCK_D)),
            x, out, sp.hi, sp.lo, sp.ts, d, sp.ts.shape[1], x.stride(0), out.stride(0), sp.hi.stride(0),
            sp.ts.stride(0), ACT=act, BLOCK_D=_BLOCK_D, SPLIT=fused, BLOCK_K=max(split_k, 1), num_warps=4)
    if split_k > 0 and not fused:
        split = split_tiles(out, split_k)
    return (out, split) if split_k > 0 else out


def silu_and_mul(x: torch.Tensor, *, out: torch.Tensor | None = None, split_k: int = 0):
    """silu(x[:, :D]) * x[:, D:] in FP32 (``out``: optional float32 [M, D] destination).

    ``split_k`` > 0 returns (out, out's ``heal_kernels.matmul.SplitX`` with that K tile), for
    the matmul that consumes out (no split launch there); out's bits do not depend on it.
    """
    return _act_and_mul(x, _SILU, out, split_k)


def gelu_tanh_and_mul(x: torch.Tensor, *, out: torch.Tensor | None = None, split_k: int = 0):
    """gelu_tanh(x[:, :D]) * x[:, D:] in FP32 (``out``, ``split_k``: as silu_and_mul)."""
    return _act_and_mul(x, _GELU_TANH, out, split_k)
