"""Per-process numerics mode, fixed when SGLang builds its ModelRunner.

The FP32 op hooks and the quantization methods read it; it never changes once a
model is built.  ``None`` means stock SGLang: every hook passes straight through.
"""

from __future__ import annotations

import torch

HEAL = "heal"
LAYERCAST = "layercast"
FP32 = "fp32"

_mode: str | None = None
_weight_dtype: torch.dtype = torch.bfloat16
_row_shards: int = 1

ROW_SHARDS_ENV = "HEAL_ROW_SHARDS"
# "nccl" sums the row-parallel partials with SGLang's all-reduce instead of the ordered
# gather + tree: for measuring what the ordering costs only; outputs then depend on TP.
TP_REDUCE_ENV = "HEAL_TP_REDUCE"


_tp_reduce = "ordered"


def tp_reduce() -> str:
    return _tp_reduce


def tp_reduce_from_env(environ=None) -> str:
    import os

    v = (environ if environ is not None else os.environ).get(TP_REDUCE_ENV, "ordered")
    if v not in ("ordered", "nccl"):
        raise ValueError(f"{TP_REDUCE_ENV}={v!r}: expected 'ordered' (default) or 'nccl'")
    return v


def mode() -> str | None:
    return _mode


def fp32_ops() -> bool:
    """True when activations are FP32 and the 16-bit-only sgl_kernel ops must be replaced."""
    return _mode is not None


def weight_dtype() -> torch.dtype:
    """The 16-bit dtype heal and layercast keep weights in (the checkpoint's own)."""
    return _weight_dtype


def row_shards() -> int:
    """K shards of every row-parallel layer (o_proj, down_proj), summed in a fixed tree.

    The same value on TP = 1, 2, 4 ... (each a divisor) gives bitwise-identical outputs.
    """
    return _row_shards


def row_shards_from_env(environ=None) -> int:
    import os

    raw = (environ if environ is not None else os.environ).get(ROW_SHARDS_ENV, "1")
    try:
        v = int(raw)
    except ValueError:
        v = 0
    if v < 1 or v & (v - 1):
        raise ValueError(f"{ROW_SHARDS_ENV}={raw!r}: must be a power of two (1, 2, 4, 8)")
    return v


def mode_for(quantization: str | None, dtype: torch.dtype | str | None) -> str | None:
    if quantization == HEAL:
        return HEAL
    if quantization == "layercast":
        return LAYERCAST
    if dtype in (torch.float32, "float32", "fp32"):
        return FP32
    return None


def set_mode(m: str | None, checkpoint_dtype: torch.dtype | None = None, row_shards: int = 1) -> None:
    global _mode, _weight_dtype, _row_shards, _tp_reduce
    if m not in (None, HEAL, LAYERCAST, FP32):
        raise ValueError(f"unknown heal_sglang mode {m!r}")
    _mode = m
    _row_shards = row_shards
    _tp_reduce = tp_reduce_from_env()  # read once per process, not on every row-parallel forward
    # An FP32 checkpoint is stored as bf16: HEAL's weights are 16-bit by design.
    _weight_dtype = checkpoint_dtype if checkpoint_dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
