"""End to end through ``sglang.Engine``: what HEAL costs against BF16, SGLang's deterministic
mode, FP32 and LayerCast on the workloads users serve (GPU; ``make bench``).

One engine per (model, mode, serving variant), started once and shared by that mode's
workloads; modes run one after another, never side by side on the GPU. Every workload is a
pytest-benchmark benchmark timed over ``ROUNDS`` rounds that each do the same work.
``extra_info`` carries the figure a user reads (ms/token, tok/s, TTFT, prefill seconds)
with the raw times, plus the engine's KV capacity and bytes per token. Options
(bench/conftest.py): ``--e2e-set``, ``--e2e-models``, ``--model-path``, ``--e2e-modes``,
``--e2e-variants``, ``--e2e-workloads``.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time

import pytest

from bench.e2e import engines, models
from bench.e2e.workloads import WORKLOADS, fits, kv_bytes_per_token

ROUNDS = 3


def _gen(eng, ids, new):
    sp = {"temperature": 0.0, "max_new_tokens": new, "ignore_eos": True}
    out = eng.generate(input_ids=ids, sampling_params=sp)
    assert all(len(o["output_ids"]) == new for o in out), "an engine returned fewer tokens than asked"
    return out


def _timed(eng, ids, new, flush=True) -> float:
    if flush:
        eng.flush_cache()
    t0 = time.perf_counter()
    _gen(eng, ids, new)
    return time.perf_counter() - t0


class _Engines:
    """Keeps one engine alive at a time: a new (model, mode, variant) shuts the previous one down."""

    def __init__(self, root):
        self.root, self.key, self.eng, self.info = root, None, None, {}

    def get(self, model, model_path, mode, variant):
        key = (model, model_path, mode, variant)
        if key != self.key:
            self.close()
            path = model_path or models.make(model, f"{self.root}/{model}")
            print(f"\n[bench e2e] starting {mode} engine ({variant}) on {model_path or model}", file=sys.stderr,
                  flush=True)
            t0 = time.time()
            self.eng = engines.start(path, mode, variant=variant, mem_fraction_static=0.8)
            self.key = key
            si = self.eng.get_server_info()
            self.info = {"start_s": time.time() - t0, "path": path,
                         "max_total_num_tokens": si.get("max_total_num_tokens"),
                         "context_length": si.get("context_length") or engines.VARIANTS[variant].get("context_length"),
                         "kv_bytes_per_token": kv_bytes_per_token(path, mode)}
        return self.eng, self.info

    def close(self):
        if self.eng is not None:
            self.eng.shutdown()
            self.eng, self.key = None, None


@pytest.fixture(scope="session")
def e2e_engines(request):
    pool = _Engines(request.config.getoption("--e2e-root"))
    yield pool
    pool.close()


def _gpu() -> dict:
    import torch

    free, total = torch.cuda.mem_get_info()
    return {"device": torch.cuda.get_device_name(), "gpu_mem_used_gib": (total - free) / 2**30}


def test_e2e(benchmark, e2e_engines, e2e_case):
    model, model_path, variant, mode, workload = e2e_case
    wl = WORKLOADS[workload]
    eng, info = e2e_engines.get(model, model_path, mode, variant)
    if not fits(wl, info["context_length"]):
        pytest.skip(f"{workload} needs {wl.prompt_len + wl.new_tokens} tokens; context is {info['context_length']}")
    rng = random.Random(0)
    prompts = [[rng.randrange(10, 30000) for _ in range(wl.prompt_len)] for _ in range(wl.batch)]
    # Decode figures are (t(N tokens) - t(H tokens)) / (N - H), H = (N + 1) // 2, with the prompt in the
    # radix cache (warmed here), so neither run holds a prefill, and both hold the same first step (the
    # cached prompt's last token, an eager extend), which cancels.  A one-token baseline did not cancel
    # it: its time moved by up to 100 ms from run to run (docs/BENCHMARKS.md, 2026-11-27, eleventh
    # session).  The others flush the cache before every round.
    decode = wl.kind in ("decode", "step")
    half = (wl.new_tokens + 1) // 2
    _timed(eng, prompts, wl.new_tokens)  # warm-up: kernels compiled and graphs replayed at these shapes
    if decode:
        _timed(eng, prompts, half, flush=False)  # warm-up of the cached-prompt path: its eager first step
    base = [_timed(eng, prompts, half, flush=False) for _ in range(ROUNDS)] if decode else []
    print(f"[bench e2e] {model_path or model} {variant} {mode}: {workload}", file=sys.stderr, flush=True)

    def flush():  # pytest-benchmark would take a setup's return value for the target's arguments
        eng.flush_cache()

    benchmark.pedantic(_gen, args=(eng, prompts, wl.new_tokens), setup=None if decode else flush,
                       rounds=ROUNDS, iterations=1, warmup_rounds=0)
    t = benchmark.stats.stats.median
    extra = {"op": "e2e", "model": model_path or model, "variant": variant, "mode": mode, "workload": workload,
             "batch": wl.batch, "prompt_len": wl.prompt_len, "new_tokens": wl.new_tokens, "kind": wl.kind,
             "seconds": t, **_gpu(), **info,
             "env": {k: os.environ[k] for k in ("HEAL_ROW_SHARDS", "HEAL_TP_REDUCE") if k in os.environ}}
    extra.pop("path", None)
    if wl.kind in ("decode", "step"):
        th = statistics.median(base)
        extra["seconds_half"], extra["half_tokens"] = th, half
        extra["ms_per_token" if wl.kind == "decode" else "ms_per_step"] = (t - th) / (wl.new_tokens - half) * 1e3
    elif wl.kind == "throughput":
        extra["tok_per_s"] = wl.batch * wl.new_tokens / t
    elif wl.kind == "ttft":
        extra["ttft_ms"] = t * 1e3
    elif wl.kind == "prefill":
        extra["prefill_s"] = t
    benchmark.extra_info.update(extra)
