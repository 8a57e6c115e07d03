"""GPU timing for the pytest-benchmark suites: CUDA-graph replays, medians, roofline fractions.

A benchmark captures `reps` calls of the op in one CUDA graph (so Python and launch
overhead stay out, as they do when SGLang replays its decode graphs) and lets
pytest-benchmark time graph replays; the per-call median is the replay median / reps.
Given a list of calls (the same op on different copies of its inputs), consecutive
calls rotate through them, so inputs that fit in L2 are not served from it.
"""

from __future__ import annotations

import torch
import triton.testing


def capture(fn, reps: int) -> torch.cuda.CUDAGraph:
    fns = fn if isinstance(fn, (list, tuple)) else [fn]
    for f in fns:
        f()  # compile / warm up outside the graph
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fns[0]()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(reps):
            fns[i % len(fns)]()
    torch.cuda.synchronize()
    return g


def _reps_for(fn, target_ms: float = 2.0) -> int:
    n = len(fn) if isinstance(fn, (list, tuple)) else 1
    g = capture(fn, 4)
    ms = triton.testing.do_bench(g.replay, warmup=5, rep=30, return_mode="median") / 4
    reps = int(min(200, max(4, target_ms / max(ms, 1e-4))))
    return max(n, reps - reps % n)


def run(benchmark, fn, *, flops: float = 0.0, nbytes: float = 0.0, ceilings: dict | None = None, **info) -> float:
    """Time fn (a call, or a list of calls to rotate through) with pytest-benchmark over graph
    replays; record us, TFLOP/s, GB/s and roofline fractions in extra_info."""
    reps = _reps_for(fn)
    g = capture(fn, reps)

    def replay():
        g.replay()
        torch.cuda.synchronize()

    benchmark.pedantic(replay, rounds=25, warmup_rounds=3, iterations=1)
    sec = benchmark.stats.stats.median / reps
    extra = {"us": sec * 1e6, "reps_per_round": reps, **info}
    if flops:
        extra["tflops"] = flops / sec / 1e12
    if nbytes:
        extra["gbs"] = nbytes / sec / 1e9
    if ceilings:
        extra["ceiling_copy_gbs"] = ceilings["copy_gbs"]
        extra["ceiling_fp16_tflops"] = ceilings["fp16_tflops"]
        if flops:
            extra["frac_mma_peak"] = extra["tflops"] / ceilings["fp16_tflops"]
        if nbytes:
            extra["frac_hbm"] = extra["gbs"] / ceilings["copy_gbs"]
    benchmark.extra_info.update(extra)
    return sec


def measure_ceilings() -> dict:
    n = 1 << 28  # 1 GiB of fp32 each way
    src = torch.randn(n, device="cuda")
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=10, rep=100, return_mode="median")
    copy_gbs = 2 * n * 4 / (ms * 1e-3) / 1e9
    s = 8192
    x = torch.randn(s, s, device="cuda", dtype=torch.float16)
    y = torch.randn(s, s, device="cuda", dtype=torch.float16)
    ms = triton.testing.do_bench(lambda: x @ y, warmup=10, rep=100, return_mode="median")
    return {"copy_gbs": copy_gbs, "fp16_tflops": 2 * s**3 / (ms * 1e-3) / 1e12, "device": torch.cuda.get_device_name()}
