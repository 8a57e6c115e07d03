"""Engine flags for the modes compared end to end (stock SGLang flags only)."""

from __future__ import annotations

MODES = {
    "bf16": dict(attention_backend="triton"),
    "det": dict(attention_backend="triton", enable_deterministic_inference=True),
    "layercast": dict(attention_backend="triton", quantization="layercast"),
    "fp32": dict(attention_backend="triton", dtype="float32"),
    "heal": dict(attention_backend="heal", quantization="heal"),
}

VARIANTS = {
    "base": dict(chunked_prefill_size=-1),
    "chunk64": dict(chunked_prefill_size=64),
    "chunk512": dict(chunked_prefill_size=512),
    "nograph": dict(chunked_prefill_size=-1, cuda_graph_backend_decode="disabled"),
    "speed": dict(),  # SGLang's defaults
    # tensor parallelism (needs HEAL_ROW_SHARDS set alike for every engine compared)
    "tp2": dict(chunked_prefill_size=-1, tp_size=2),
    "tp4": dict(chunked_prefill_size=-1, tp_size=4),
    "tp2-chunk64": dict(chunked_prefill_size=64, tp_size=2),
}


def engine_kwargs(model_path: str, mode: str, variant: str = "base", **extra) -> dict:
    kw = dict(model_path=model_path, random_seed=0, log_level="error", cuda_graph_max_bs_decode=64,
              cuda_graph_backend_prefill="disabled")
    kw.update(MODES[mode])
    kw.update(VARIANTS[variant])
    kw.update(extra)
    return kw


def start(model_path: str, mode: str, variant: str = "base", **extra):
    import sglang as sgl

    return sgl.Engine(**engine_kwargs(model_path, mode, variant, **extra))
