"""Engine flags for the modes compared end to end (stock SGLang flags only)."""

from __future__ import annotations

import contextlib
import os

MODES = {
    "bf16": dict(attention_backend="triton"),
    "det": dict(attention_backend="triton", enable_deterministic_inference=True),
    "layercast": dict(attention_backend="triton", quantization="layercast"),
    "fp32": dict(attention_backend="triton", dtype="float32"),
    "heal": dict(attention_backend="heal", quantization="heal"),
    # TP only: row-parallel partials summed by NCCL instead of heal's ordered gather + tree,
    # to measure what the ordering costs (outputs then depend on the TP size)
    "heal-nccl": dict(attention_backend="heal", quantization="heal"),
}
# Environment a mode's engine processes start with.
MODE_ENV = {"heal-nccl": {"HEAL_TP_REDUCE": "nccl"}}

VARIANTS = {
    "base": dict(chunked_prefill_size=-1),
    "chunk64": dict(chunked_prefill_size=64),
    "chunk512": dict(chunked_prefill_size=512),
    "nograph": dict(chunked_prefill_size=-1, cuda_graph_backend_decode="disabled"),
    "speed": dict(),  # SGLang's defaults
    # make bench's serving variants: SGLang's defaults, the checkpoint's own context length
    "default": dict(),
    "ctx4096": dict(context_length=4096),
    "eager": dict(cuda_graph_backend_decode="disabled"),  # as a batch above --cuda-graph-max-bs runs
    "tp2-default": dict(tp_size=2),
    "tp4-default": dict(tp_size=4),
    # tensor parallelism (needs HEAL_ROW_SHARDS set alike for every engine compared)
    "tp2": dict(chunked_prefill_size=-1, tp_size=2),
    "tp4": dict(chunked_prefill_size=-1, tp_size=4),
    "tp2-chunk64": dict(chunked_prefill_size=64, tp_size=2),
    "tp4-chunk64": dict(chunked_prefill_size=64, tp_size=4),
}


def engine_kwargs(model_path: str, mode: str, variant: str = "base", **extra) -> dict:
    kw = dict(model_path=model_path, random_seed=0, log_level="error", cuda_graph_max_bs_decode=64,
              cuda_graph_backend_prefill="disabled")
    kw.update(MODES[mode])
    kw.update(VARIANTS[variant])
    kw.update(extra)
    return kw


@contextlib.contextmanager
def environ(overrides: dict):
    """Environment for the scheduler processes SGLang spawns (they inherit it), restored afterwards."""
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def start(model_path: str, mode: str, variant: str = "base", **extra):
    import sglang as sgl

    with environ(MODE_ENV.get(mode, {})):
        return sgl.Engine(**engine_kwargs(model_path, mode, variant, **extra))
