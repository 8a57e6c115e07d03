"""Per-process numerics (one frozen ``Numerics``), fixed when SGLang builds its ModelRunner.

The FP32 op hooks and the quantization methods read it; it never changes once a
model is built.  ``None`` means stock SGLang: every hook passes straight through.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from heal_kernels.matmul import K_SHARDS

HEAL = "heal"
LAYERCAST = "layercast"
FP32 = "fp32"

ROW_SHARDS_ENV = "HEAL_ROW_SHARDS"
# Two K shards by default: --tp-size 1 and 2 then give the same bits with no setting, and at small
# batch the shards run in parallel programs (faster decode, slightly slower prefill: README,
# docs/BENCHMARKS.md).  4 also serves --tp-size 4; 1 is the fastest prefill.
DEFAULT_ROW_SHARDS = 2
# "nccl" sums the row-parallel partials with SGLang's all-reduce instead of the ordered
# gather + tree: for measuring what the ordering costs only; outputs then depend on TP.
TP_REDUCE_ENV = "HEAL_TP_REDUCE"


@dataclass(frozen=True)
class Numerics:
    """How this process computes: fixed once, when SGLang builds its ModelRunner."""

    mode: str | None = None  # None: stock SGLang, every hook passes straight through
    weight_dtype: torch.dtype = torch.bfloat16  # the checkpoint's 16-bit dtype heal and layercast keep
    row_shards: int = 1  # K shards of every row-parallel layer, summed in a fixed tree (TP = any divisor)
    tp_reduce: str = "ordered"  # or "nccl" (HEAL_TP_REDUCE, benchmarks only)

    def __post_init__(self):
        if self.mode not in (None, HEAL, LAYERCAST, FP32):
            raise ValueError(f"unknown heal_sglang mode {self.mode!r}")
        if self.row_shards not in K_SHARDS:
            raise ValueError(f"row_shards must be a power of two up to 8 {K_SHARDS}, got {self.row_shards}")
        if self.tp_reduce not in ("ordered", "nccl"):
            raise ValueError(f"tp_reduce must be 'ordered' or 'nccl', got {self.tp_reduce!r}")


STOCK = Numerics()
_current = STOCK


def current() -> Numerics:
    return _current


def tp_reduce() -> str:
    return _current.tp_reduce


def tp_reduce_from_env(environ=None) -> str:
    import os

    v = (environ if environ is not None else os.environ).get(TP_REDUCE_ENV, "ordered")
    if v not in ("ordered", "nccl"):
        raise ValueError(f"{TP_REDUCE_ENV}={v!r}: expected 'ordered' (default) or 'nccl'")
    return v


def mode() -> str | None:
    return _current.mode


def fp32_ops() -> bool:
    """True when activations are FP32 and the 16-bit-only sgl_kernel ops must be replaced."""
    return _current.mode is not None


def weight_dtype() -> torch.dtype:
    """The 16-bit dtype heal and layercast keep weights in (the checkpoint's own)."""
    return _current.weight_dtype


def row_shards() -> int:
    """K shards of every row-parallel layer (o_proj, down_proj), summed in a fixed tree.

    The same value on TP = 1, 2, 4 ... (each a divisor) gives bitwise-identical outputs.
    """
    return _current.row_shards


def row_shards_from_env(environ=None) -> int:
    import os

    raw = (environ if environ is not None else os.environ).get(ROW_SHARDS_ENV, str(DEFAULT_ROW_SHARDS))
    try:
        v = int(raw)
    except ValueError:
        v = 0
    if v not in K_SHARDS:
        raise ValueError(f"{ROW_SHARDS_ENV}={raw!r}: must be a power of two up to 8 {K_SHARDS}")
    return v


def mode_for(quantization: str | None, dtype: torch.dtype | str | None) -> str | None:
    if quantization == HEAL:
        return HEAL
    if quantization == LAYERCAST:
        return LAYERCAST
    if dtype in (torch.float32, "float32", "fp32"):
        return FP32
    return None


def numerics(m: str | None, checkpoint_dtype: torch.dtype | None = None, row_shards: int = 1) -> Numerics:
    """The Numerics of mode ``m``; HEAL_TP_REDUCE is read here, once per process."""
    # An FP32 checkpoint is stored as bf16: HEAL's weights are 16-bit by design.
    wd = checkpoint_dtype if checkpoint_dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
    return Numerics(m, wd, row_shards, tp_reduce_from_env())


def fix(n: Numerics) -> None:
    """Set this process's numerics, once (SGLang builds one ModelRunner per process); a second,
    different setting is a bug and raises rather than silently changing how layers compute."""
    global _current
    if _current is not STOCK and _current != n:
        raise RuntimeError(f"heal_sglang numerics are already fixed in this process ({_current}); refusing {n}")
    _current = n


def set_mode(m: str | None, checkpoint_dtype: torch.dtype | None = None, row_shards: int = 1) -> None:
    """Replace this process's numerics unconditionally: for tests and tools that switch modes in one process."""
    global _current
    _current = numerics(m, checkpoint_dtype, row_shards)
