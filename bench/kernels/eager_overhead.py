"""Host time per call of heal's launchers at decode sizes, against the torch ops they replace (GPU).

With CUDA graphs off (a batch above --cuda-graph-max-bs, or --disable-cuda-graph) every layer's
launches cost host time; at batch 1 that time, not the GPU's, sets the step.  Each op runs
`calls` times back to back at batch 1 (its GPU time is a few us, so the loop measures the host),
then once more the same loop is timed with a sync after every call (host + GPU, serialised).

    python -m bench.kernels.eager_overhead        (GPU machine)
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from heal_kernels import (
    apply_rotary,
    attention_decode,
    heal_matmul,
    new_int16_kv,
    prepare_weight,
    rms_norm,
    silu_and_mul,
    split_tiles,
    store_kv,
)


def host_us(fn, calls: int = 300) -> float:
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (t1 - t0) / calls * 1e6


def main() -> None:
    dev = torch.device("cuda")
    torch.manual_seed(0)
    h, inter, hq, hk, d = 4096, 14336, 32, 8, 128
    x = torch.randn(1, h, device=dev)
    w = (torch.randn(256, h, device=dev) * 0.02).bfloat16()  # small N: the GPU part stays a few us
    hw = prepare_weight(w)
    xb, wb = x.bfloat16(), w
    norm_w = torch.ones(h, device=dev)
    res = torch.randn(1, h, device=dev)
    gu = torch.randn(1, 2 * inter, device=dev)
    pos = torch.tensor([100], device=dev)
    cos_sin = torch.randn(8192, d, device=dev)
    q = torch.randn(1, hq * d, device=dev)
    k = torch.randn(1, hk * d, device=dev)
    cache = new_int16_kv(4096, hk, d, dev)
    loc = torch.tensor([99], device=dev)
    store_kv(cache, torch.arange(100, device=dev), torch.randn(100, hk, d, device=dev),
             torch.randn(100, hk, d, device=dev))
    kv_indptr = torch.tensor([0, 100], device=dev)
    kv_indices = torch.arange(100, device=dev)
    q3 = q.view(1, hq, d)
    rows = [
        ("torch: x + 1 (one launch)", lambda: x + 1),
        ("torch: torch.empty", lambda: torch.empty(1, h, device=dev)),
        ("torch: F.linear bf16", lambda: F.linear(xb, wb)),
        ("heal_matmul", lambda: heal_matmul(x, hw)),
        ("heal_matmul k_shards=2", lambda: heal_matmul(x, hw, k_shards=2)),
        ("split_tiles", lambda: split_tiles(x, 64)),
        ("rms_norm + residual", lambda: rms_norm(x, norm_w, 1e-5, res)),
        ("silu_and_mul", lambda: silu_and_mul(gu)),
        ("apply_rotary", lambda: apply_rotary(pos, q, k, cos_sin, d)),
        ("store_kv validate=False", lambda: store_kv(cache, loc, k.view(1, hk, d), k.view(1, hk, d), validate=False)),
        ("store_kv", lambda: store_kv(cache, loc, k.view(1, hk, d), k.view(1, hk, d))),
        ("attention_decode validate=False", lambda: attention_decode(q3, cache, kv_indptr, kv_indices, sm_scale=0.088,
                                                                     max_seq_len=8192, validate=False)),
        ("attention_decode", lambda: attention_decode(q3, cache, kv_indptr, kv_indices, sm_scale=0.088)),
    ]
    print(f"{'op':36s} {'host us/call':>13s} {'synced us/call':>15s}")
    for name, fn in rows:
        def synced():
            fn()
            torch.cuda.synchronize()
        print(f"{name:36s} {host_us(fn):13.1f} {host_us(synced, 100):15.1f}", flush=True)


if __name__ == "__main__":
    main()
