"""Test helper: exact int64 q.k scores through the attention kernels' int8 MMA path.

Not part of the package: it checks the claim (heal_kernels/_kernels/attention.py) that
every score of int16 values split into int8 parts is an exact integer.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from heal_kernels._kernels.attention import _k_bytes, _q_offset, _qk_acc, _score_f32
from heal_kernels._kernels.primitives import _split16
from heal_kernels._runtime import check_tensor


@triton.jit
def _qk_int_kernel(q_ptr, k_ptr, out_ptr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Debug/test: exact int64 scores of int16 q [BLOCK_M, D] and k [BLOCK_N, D] through the kernels' MMA path."""
    r = tl.arange(0, BLOCK_M)
    c = tl.arange(0, BLOCK_N)
    d = tl.arange(0, HEAD_DIM)
    qh, ql = _split16(tl.load(q_ptr + r[:, None] * HEAD_DIM + d[None, :]).to(tl.int32))
    kh, kl = _split16(tl.load(k_ptr + c[:, None] * HEAD_DIM + d[None, :]).to(tl.int32))
    zero = tl.zeros([BLOCK_M, BLOCK_N], tl.int32)
    hh, mix, ll = _qk_acc(qh.to(tl.int8), ql.to(tl.int8), tl.trans(kh.to(tl.int8)), tl.trans(kl.to(tl.int8)), zero,
                          zero, zero)
    s = hh.to(tl.int64) * 65536 + mix.to(tl.int64) * 256 + ll.to(tl.int64)
    tl.store(out_ptr + r[:, None] * BLOCK_N + c[None, :], s)


def qk_int_scores(q_int: torch.Tensor, k_int: torch.Tensor) -> torch.Tensor:
    """Exact int64 scores q_int @ k_int.T of int16 rows through the attention kernels' int8 MMA path.

    For tests of the exact-score claim: q_int [16, D], k_int [N, D] (N a power of two >= 16).
    """
    check_tensor("q_int", q_int, dtypes=(torch.int16,), ndim=2)
    check_tensor("k_int", k_int, dtypes=(torch.int16,), ndim=2, device=q_int.device)
    m, d = q_int.shape
    n = k_int.shape[0]
    if k_int.shape[1] != d or m != 16 or n < 16 or n & (n - 1):
        raise ValueError(f"q_int must be [16, D] and k_int [N, D] with N a power of two >= 16; got "
                         f"{tuple(q_int.shape)} and {tuple(k_int.shape)}")
    out = torch.empty((m, n), dtype=torch.int64, device=q_int.device)
    _qk_int_kernel[(1,)](q_int.contiguous(), k_int.contiguous(), out, HEAD_DIM=d, BLOCK_M=m, BLOCK_N=n)
    return out


@triton.jit
def _score_f32_kernel(q_ptr, k_ptr, out_ptr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      EXACT: tl.constexpr):
    """Test: the fp32 scores (before any scale) of the attention kernels' path: q's int8 parts, K's bytes
    (_k_bytes), 128 * sum(q) in the accumulators' initial values (_q_offset), rounded by _score_f32."""
    r = tl.arange(0, BLOCK_M)
    c = tl.arange(0, BLOCK_N)
    d = tl.arange(0, HEAD_DIM)
    q = tl.load(q_ptr + r[:, None] * HEAD_DIM + d[None, :]).to(tl.int32)
    qh, ql = _split16(q)
    kh, kl = _k_bytes(tl.load(k_ptr + c[:, None] * HEAD_DIM + d[None, :]), EXACT)
    q_mix, q_ll = _q_offset(q)
    hh, mix, ll = _qk_acc(qh.to(tl.int8), ql.to(tl.int8), tl.trans(kh), tl.trans(kl),
                          tl.zeros([BLOCK_M, BLOCK_N], tl.int32), tl.broadcast_to(q_mix[:, None], [BLOCK_M, BLOCK_N]),
                          tl.broadcast_to(q_ll[:, None], [BLOCK_M, BLOCK_N]))
    tl.store(out_ptr + r[:, None] * BLOCK_N + c[None, :], _score_f32(hh, mix, ll, HEAD_DIM))


def score_f32(q_int: torch.Tensor, k_int: torch.Tensor, *, exact: bool) -> torch.Tensor:
    """fp32 scores q_int @ k_int.T of int16 rows as the attention kernels round them (no scales applied).

    q_int [16, D], k_int [N, D] (N a power of two >= 16); exact: the Triton ops for K's bytes (the
    interpreter), else the GPU's byte permutes.
    """
    m, d = q_int.shape
    n = k_int.shape[0]
    out = torch.full((m, n), float("nan"), dtype=torch.float32, device=q_int.device)
    _score_f32_kernel[(1,)](q_int.contiguous(), k_int.contiguous(), out, HEAD_DIM=d, BLOCK_M=m, BLOCK_N=n,
                            EXACT=exact)
    return out
