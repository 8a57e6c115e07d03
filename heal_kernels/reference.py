"""Torch references shared by tests and benchmarks.

``*_ref(..., dtype=torch.float64)`` computes the op in that dtype from the same
inputs (upcast first), so one function gives the float64 ground truth, the FP32
baseline and the BF16 baseline.  Weights given as HealWeight are dequantised
exactly (fp16 value times a power of two).
"""

from __future__ import annotations

import math

import torch

from heal_kernels._kernels.primitives import QMAX
from heal_kernels.matmul import HealWeight


def dense_weight(w) -> torch.Tensor:
    """The exact weight a heal kernel multiplies by, in float64."""
    if isinstance(w, HealWeight):
        return w.weight.double() * w.scale.double()[:, None]
    return w.double()


def matmul_ref(x, w, bias=None, dtype=torch.float64) -> torch.Tensor:
    """x @ w.T + bias computed in ``dtype`` (float64 truth, float32, bfloat16, float16)."""
    wd = dense_weight(w).to(dtype)
    y = x.to(dtype) @ wd.T
    if bias is not None:
        y = y + bias.to(dtype)
    return y


def rms_norm_ref(x, weight, eps, residual=None, dtype=torch.float64):
    h = x.to(dtype)
    if residual is not None:
        h = h + residual.to(dtype)
    out = h * torch.rsqrt(h.pow(2).mean(dim=-1, keepdim=True) + eps) * weight.to(dtype)
    return out if residual is None else (out, h)


def silu_and_mul_ref(x, dtype=torch.float64):
    x = x.to(dtype)
    d = x.shape[-1] // 2
    return torch.nn.functional.silu(x[..., :d]) * x[..., d:]


def gelu_tanh_and_mul_ref(x, dtype=torch.float64):
    x = x.to(dtype)
    d = x.shape[-1] // 2
    return torch.nn.functional.gelu(x[..., :d], approximate="tanh") * x[..., d:]


def rope_cos_sin_cache(max_pos: int, rotary_dim: int, base: float = 10000.0, device="cpu") -> torch.Tensor:
    """SGLang's layout: [max_pos, rotary_dim] float32, cos | sin (computed in float64, rounded once)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim))
    freqs = torch.arange(max_pos, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return torch.cat([freqs.cos(), freqs.sin()], dim=-1).to(torch.float32).to(device)


def rope_ref(positions, x, cos_sin_cache, head_dim, is_neox=True, dtype=torch.float64):
    """Rotate x [T, H*D] or [T, H, D]; cos/sin taken from the same fp32 cache the kernel reads."""
    shape = x.shape
    x = x.to(dtype).reshape(x.shape[0], -1, head_dim)
    rot = cos_sin_cache.shape[1]
    cs = cos_sin_cache.to(dtype)[positions.long()]
    cos, sin = cs[:, None, : rot // 2], cs[:, None, rot // 2:]
    out = x.clone()
    if is_neox:
        x1, x2 = x[..., : rot // 2], x[..., rot // 2: rot]
        out[..., : rot // 2] = x1 * cos - x2 * sin
        out[..., rot // 2: rot] = x2 * cos + x1 * sin
    else:
        x1, x2 = x[..., 0:rot:2], x[..., 1:rot:2]
        out[..., 0:rot:2] = x1 * cos - x2 * sin
        out[..., 1:rot:2] = x2 * cos + x1 * sin
    return out.reshape(shape)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64 (inf if out has a non-finite element)."""
    out64 = out.double()
    if not torch.isfinite(out64).all():
        return math.inf
    return ((out64 - ref.double()).norm() / ref.double().norm()).item()


def heavy_tailed_activations(m: int, k: int, *, outlier_cols: int = 8, factor: float = 100.0,
                             generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """Normal activations with a few columns `factor` times larger, as real LLM hidden states have."""
    x = torch.randn(m, k, generator=generator, dtype=torch.float32)
    cols = torch.randperm(k, generator=generator)[:outlier_cols]
    scale = torch.empty(outlier_cols).uniform_(factor / 2, factor, generator=generator)
    x[:, cols] *= scale
    return x.to(device)


def attention_ref(q, k, v, q_pos, *, sm_scale, sliding_window=-1, logit_cap=0.0, dtype=torch.float64):
    """Attention of q [T, Hq, D] at positions q_pos [T] over one sequence's k, v [S, Hk, D] (positions 0..S-1).

    Computed in ``dtype``: float64 (truth), float32, or bfloat16 (inputs, scores and
    probabilities rounded to bf16, softmax in fp32, as 16-bit attention does).
    """
    t, hq, d = q.shape
    hk = k.shape[1]
    g = hq // hk
    qd, kd, vd = (x.to(dtype) for x in (q, k, v))
    kd = kd.repeat_interleave(g, dim=1)  # [S, Hq, D]
    vd = vd.repeat_interleave(g, dim=1)
    s = torch.einsum("thd,shd->hts", qd, kd).to(torch.float64 if dtype == torch.float64 else torch.float32)
    s = s * sm_scale
    if logit_cap > 0:
        s = logit_cap * torch.tanh(s / logit_cap)
    pos_k = torch.arange(k.shape[0], device=q.device)
    qp = q_pos.to(q.device).long()
    visible = pos_k[None, :] <= qp[:, None]
    if sliding_window >= 0:
        visible &= (qp[:, None] - pos_k[None, :]) <= sliding_window
    s = s.masked_fill(~visible[None], float("-inf"))
    p = torch.softmax(s, dim=-1).to(dtype)
    return torch.einsum("hts,shd->thd", p, vd)


def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference quantization in torch (same arithmetic as the kernels): x [..., D] -> (int16, fp32 scale)."""
    x = x.float()
    finite = x.abs() < float("inf")
    bad, has_nan = ~finite.all(dim=-1), x.isnan().any(dim=-1)
    amax = torch.where(finite, x.abs(), 0.0).amax(dim=-1)
    # tensor / tensor: on CUDA, torch divides by a Python scalar through its reciprocal
    scale = torch.where(amax > 0, amax / torch.full_like(amax, QMAX), torch.ones_like(amax))
    # a subnormal scale that rounded down (or to 0) goes one ulp up, as in the kernels
    scale = torch.where(amax / scale >= QMAX + 0.5, torch.nextafter(scale, torch.full_like(scale, math.inf)), scale)
    q = torch.floor(x / scale[..., None] + 0.5).clamp(-QMAX, QMAX)
    # a row holding NaN or Inf: q = 0, scale NaN (NaN) or +Inf (Inf only), as the kernels store it
    q = torch.where(bad[..., None], 0.0, q)
    scale = torch.where(bad, torch.where(has_nan, float("nan"), float("inf")), scale)
    return q.to(torch.int16), scale


def dequantize(q: torch.Tensor, scale: torch.Tensor, dtype=torch.float64) -> torch.Tensor:
    return q.to(dtype) * scale.to(dtype)[..., None]
