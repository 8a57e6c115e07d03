"""heal_kernels: HEAL's pure-Triton kernels with thin torch launchers (no SGLang imports)."""

from heal_kernels.activation import gelu_tanh_and_mul, silu_and_mul
from heal_kernels.matmul import HealWeight, heal_matmul, prepare_weight, split_tiles
from heal_kernels.norm import rms_norm
from heal_kernels.rope import apply_rotary

__all__ = [
    "HealWeight",
    "apply_rotary",
    "gelu_tanh_and_mul",
    "heal_matmul",
    "prepare_weight",
    "rms_norm",
    "silu_and_mul",
    "split_tiles",
]
