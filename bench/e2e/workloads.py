"""The end-to-end workloads of ``make bench`` and the figures derived from them (no GPU needed)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Workload:
    # decode: ms per token of one sequence; step: ms per decode step of the whole batch;
    # throughput: output tok/s, prefill included; ttft: time to the first token; prefill: seconds
    kind: str
    batch: int
    prompt_len: int
    new_tokens: int


WORKLOADS = {
    "decode_b1_ctx128": Workload("decode", 1, 128, 129),
    "decode_b1_ctx8192": Workload("decode", 1, 8192, 129),
    "step_b16_ctx4096": Workload("step", 16, 4096, 33),
    "tput_64x128x128": Workload("throughput", 64, 128, 128),
    "tput_256x512x256": Workload("throughput", 256, 512, 256),
    "ttft_4096": Workload("ttft", 1, 4096, 1),
    "ttft_16384": Workload("ttft", 1, 16384, 1),
    "prefill_16x4096": Workload("prefill", 16, 4096, 1),
}
# `make bench BENCH=quick`: one GPU call of about 8 minutes (BF16, FP32 and HEAL on the 8B shape).
QUICK = {"models": ["llama-8b"], "modes": ["bf16", "fp32", "heal"], "variants": ["default"],
         "workloads": ["decode_b1_ctx128", "step_b16_ctx4096", "tput_64x128x128", "ttft_4096"]}
FULL = {"models": ["llama-8b", "llama-1b"], "modes": ["bf16", "det", "fp32", "layercast", "heal"],
        "variants": ["default"], "workloads": list(WORKLOADS)}

# The figure each kind reports, and whether larger is better.
METRIC = {"decode": ("ms_per_token", False), "step": ("ms_per_step", False), "throughput": ("tok_per_s", True),
          "ttft": ("ttft_ms", False), "prefill": ("prefill_s", False)}


def fits(wl: Workload, context_length: int | None) -> bool:
    return context_length is None or wl.prompt_len + wl.new_tokens <= context_length


def kv_bytes_per_token(model_path: str, mode: str) -> int:
    """KV-cache bytes one token takes over all layers in `mode` (heal: INT16 values + fp32 scales)."""
    with open(os.path.join(model_path, "config.json")) as f:
        cfg = json.load(f)
    heads = cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    layers = cfg["num_hidden_layers"]
    if mode.startswith("heal"):
        from heal_kernels.kv_int16 import bytes_per_token

        return layers * bytes_per_token(heads, head_dim)
    elem = 4 if mode in ("fp32", "layercast") else 2
    return layers * 2 * heads * head_dim * elem
