"""FP32 replacements for SGLang's 16-bit-only CUDA ops (RMSNorm, SiLU/GELU-and-mul, rotary).

Installed as AROUND hooks on the ops' ``forward_cuda``.  They act only when the
process serves heal, layercast or ``--dtype float32`` (``state.fp32_ops()``) and
the input is FP32; otherwise the stock kernel runs untouched.  sgl_kernel's
RMSNorm has no FP32 path, which is why stock ``--dtype float32`` crashes.
"""

from __future__ import annotations

import torch

from heal_kernels import configs
from heal_kernels._runtime import arch_key, is_capturing
from heal_kernels.activation import gelu_tanh_and_mul, silu_and_mul
from heal_kernels.matmul import SplitX
from heal_kernels.norm import rms_norm
from heal_kernels.rope import apply_rotary
from heal_sglang import state


class _CheckedPositions:
    """The batch's positions and their range, checked once by heal's attention backend (eager batches).

    Every layer's rotary then launches with validate=False when its cos/sin cache covers that range:
    a per-layer check is a host sync, 32+ per step, each stalling the launch queue.
    """

    positions: torch.Tensor | None = None
    lo = 0
    hi = -1


def note_checked_positions(positions: torch.Tensor | None) -> None:
    """Called by the backend once per batch, before any layer runs (None: forget, e.g. for CUDA graphs)."""
    _CheckedPositions.positions = None
    if positions is None or positions.numel() == 0 or is_capturing(positions.device):
        return
    lo, hi = (int(v) for v in positions.aminmax())
    _CheckedPositions.positions, _CheckedPositions.lo, _CheckedPositions.hi = positions, lo, hi


def _positions_checked(positions: torch.Tensor, cache_len: int) -> bool:
    c = _CheckedPositions
    return positions is c.positions and c.lo >= 0 and c.hi < cache_len


class _Presplit:
    """The last FP32 activation a heal-mode producer wrote together with its heal_matmul split.

    RMSNorm (the hidden-size norms: their output feeds qkv, gate_up and the lm_head), the
    gated activations (feeding down_proj) and decode attention's merge (feeding o_proj) write the
    split of their output in the same kernel;
    the linear layer that receives exactly that tensor takes the split (``take_presplit``) and
    launches no split kernel.  The entry holds the tensor itself, so its memory cannot be reused
    by another tensor while the entry lives; a write to it (any view) bumps its version, and the
    entry no longer matches.  One entry: every producer's consumer is the next linear layer.
    """

    tensor: torch.Tensor | None = None
    version = -1
    split: SplitX | None = None


PRESPLIT_ATTR = "_heal_presplit"  # set by the post-load audit on the RMSNorm modules whose output feeds a linear


def forget_presplit() -> None:
    _Presplit.tensor, _Presplit.split, _Presplit.version = None, None, -1


def note_presplit(t: torch.Tensor, split: SplitX) -> None:
    """Record that t's producer wrote `split` with it (the attention backend does, for o_proj)."""
    _Presplit.tensor, _Presplit.split, _Presplit.version = t, split, t._version


def take_presplit(x: torch.Tensor) -> SplitX | None:
    """The split written with x by its producer, if x is that very tensor, unmodified; else None."""
    t = _Presplit.tensor
    if (t is None or x.data_ptr() != t.data_ptr() or x.shape != t.shape or x.stride() != t.stride()
            or x.device != t.device or x._version != _Presplit.version):
        return None
    split = _Presplit.split
    forget_presplit()
    return split


def _split_k(x: torch.Tensor) -> int:
    return presplit_k(x.shape[-1], x.device)


def presplit_k(width: int, device: torch.device) -> int:
    """The K tile heal's matmuls split an input `width` wide with (0: not in heal mode: no heal matmul reads it)."""
    if state.mode() != state.HEAL:
        return 0
    return configs.matmul_numerics(arch_key(device), torch.float16, 0, width).block_k


def _active(x: torch.Tensor) -> bool:
    return state.fp32_ops() and x.dtype == torch.float32


def rmsnorm_forward_cuda(orig, self, x, residual=None, post_residual_addition=None):
    if not _active(x):
        return orig(self, x, residual, post_residual_addition)
    if (self.variance_size_override is not None or self.cast_x_before_out_mul or post_residual_addition is not None
            or not self.has_weight):
        if state.mode() == state.HEAL:
            # the post-load audit refuses models with these variants; reaching here is a bug, not a fallback
            raise NotImplementedError("heal's FP32 RMSNorm does not compute this variant (partial variance, cast "
                                      "before the weight, post-residual addition or no weight)")
        # FP32 and LayerCast baselines: SGLang's own FP32 torch path is their numerics
        return self.forward_native(x, residual, post_residual_addition)
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    split_k = _split_k(x) if getattr(self, PRESPLIT_ATTR, False) else 0
    if residual is None:
        res = rms_norm(x2, self.weight, self.variance_epsilon, split_k=split_k)
        out, split = res if split_k else (res, None)
    else:
        r2 = residual.view(-1, shape[-1])
        if residual.dtype != torch.float32:
            raise ValueError(f"RMSNorm residual is {residual.dtype}; the FP32 residual stream must stay float32")
        res = rms_norm(x2, self.weight, self.variance_epsilon, r2, residual_out=r2, split_k=split_k)
        out, split = res[0], (res[2] if split_k else None)
    if split is not None:
        note_presplit(out, split)
    return out.view(shape) if residual is None else (out.view(shape), residual)


def silu_and_mul_forward_cuda(orig, self, x):
    if not _active(x):
        return orig(self, x)
    return _gated(silu_and_mul, x)


def _gated(fn, x: torch.Tensor) -> torch.Tensor:
    """fn (silu_and_mul / gelu_tanh_and_mul) over x's rows; in heal mode with the split of its output."""
    shape = x.shape
    split_k = _split_k(x)
    res = fn(x.reshape(-1, shape[-1]), split_k=split_k)
    out = res[0] if split_k else res
    if split_k:
        note_presplit(out, res[1])
    return out.view(*shape[:-1], shape[-1] // 2)


def gelu_and_mul_forward_cuda(orig, self, x):
    if not _active(x):
        return orig(self, x)
    if self.approximate != "tanh":
        # exact erf GELU: SGLang's FP32 torch path, elementwise (so batch invariant); no served family uses it
        return self.forward_native(x)
    return _gated(gelu_tanh_and_mul, x)


def rotary_forward_cuda(orig, self, positions, query, key, offsets=None, fused_set_kv_buffer_arg=None):
    if not _active(query):
        return orig(self, positions, query, key, offsets, fused_set_kv_buffer_arg)
    if offsets is not None or fused_set_kv_buffer_arg is not None:
        raise NotImplementedError("FP32 rotary does not take offsets or a fused KV-cache write")
    cache = self.cos_sin_cache
    if cache.dtype != torch.float32:
        cache = cache.float()
    return apply_rotary(positions, query, key, cache, self.head_size, self.is_neox_style,
                        validate=not _positions_checked(positions, cache.shape[0]))
