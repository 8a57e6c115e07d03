"""The INT16 K/V cache as an SGLang KV-cache quant method.

SGLang's MHATokenToKVPool owns per-layer buffers and delegates quantized
layouts to a ``KVCacheQuantMethodBase``.  This one keeps int16 values
[slots, H, D] plus an fp32 scale per slot and head (heal_kernels.kv_int16), so
the stock pool class, allocator, radix cache and memory accounting all work.
Only the heal attention backend can read it: it declares no plain access rule.
"""

from __future__ import annotations

import torch
from sglang.srt.layers.quantization.fp4_kv_cache_quant_method import KVCacheQuantMethodBase

from heal_kernels.kv_int16 import Int16KV, bytes_per_token, new_int16_kv, store_kv
from heal_kernels.reference import dequantize


class Int16KVCacheMethod(KVCacheQuantMethodBase):
    name = "heal_int16"
    SCALE_BLOCK_SIZE = 1  # one scale per (token, head), i.e. per head_dim values
    # The batch's out_cache_loc whose slot range heal's backend checked in init_forward_metadata:
    # every layer stores to it, so its range is checked once per batch rather than once per layer.
    validated_loc: torch.Tensor | None = None

    def attention_accesses(self):
        return ()  # read only through heal's own kernels, never dequantized for another backend

    def create_buffers(self, size, head_num, head_dim, layer_num, device) -> dict:
        caches = [new_int16_kv(size, head_num, head_dim, device) for _ in range(layer_num)]
        return {
            "k_buffer": [c.k for c in caches],
            "v_buffer": [c.v for c in caches],
            "k_scale_buffer": [c.k_scale for c in caches],
            "v_scale_buffer": [c.v_scale for c in caches],
            "dq_k_buffer": None,
            "dq_v_buffer": None,
            "store_dtype": torch.int16,
        }

    def quantize_and_store(
        self, k_buffer, v_buffer, k_scale_buffer, v_scale_buffer, loc, cache_k, cache_v, k_scale=None, v_scale=None
    ) -> None:
        if k_scale is not None or v_scale is not None:
            raise ValueError("heal's INT16 KV cache computes its own scales; the layer must not pass k_scale/v_scale")
        h, d = k_buffer.shape[1], k_buffer.shape[2]
        store_kv(Int16KV(k_buffer, k_scale_buffer, v_buffer, v_scale_buffer), loc,
                 cache_k.view(-1, h, d), cache_v.view(-1, h, d), validate=loc is not self.validated_loc)

    def dequantize_prev_kv(self, k, k_scales, v, v_scales, layer_id):
        return dequantize(k, k_scales, torch.float32), dequantize(v, v_scales, torch.float32)

    def compute_cell_size(self, head_num: int, head_dim: int, num_layers: int, kv_size: int) -> int:
        return num_layers * bytes_per_token(head_num, head_dim)


def layer_cache(pool, layer_id: int) -> Int16KV:
    """One layer's Int16KV view of a pool built with Int16KVCacheMethod."""
    i = layer_id - pool.start_layer
    return Int16KV(pool.k_buffer[i], pool.k_scale_buffer[i], pool.v_buffer[i], pool.v_scale_buffer[i])


def is_int16_pool(pool) -> bool:
    return isinstance(getattr(pool, "quant_method", None), Int16KVCacheMethod)
