"""heal_kernels: HEAL's pure-Triton kernels with thin torch launchers (no SGLang imports)."""

from heal_kernels.activation import gelu_tanh_and_mul, silu_and_mul
from heal_kernels.attention import attention_decode, attention_extend
from heal_kernels.kv_int16 import Int16KV, new_int16_kv, store_kv
from heal_kernels.matmul import HealWeight, heal_matmul, prepare_weight, split_tiles
from heal_kernels.norm import rms_norm
from heal_kernels.rope import apply_rotary

__all__ = [
    "HealWeight",
    "Int16KV",
    "apply_rotary",
    "attention_decode",
    "attention_extend",
    "gelu_tanh_and_mul",
    "heal_matmul",
    "new_int16_kv",
    "prepare_weight",
    "rms_norm",
    "silu_and_mul",
    "split_tiles",
    "store_kv",
]
