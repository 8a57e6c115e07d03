"""HEAL paged attention (INT16 KV) vs SGLang's own Triton BF16 kernels and an FP32 attention.

Decode at batch 1/16/64 x context 1k/8k/32k and a 4k-token prefill, Llama-3-8B heads
(32 q / 8 kv of 128).  SGLang's kernels come from `sglang.kernels.ops.attention`
(needs SGLang on the path: `source .device/env.sh` on the GPU machine); without it
those rows are skipped.
"""

import math

import pytest
import torch

from bench import timing
from bench.kernels import sglang_attention
from bench.shapes import LLAMA3_8B_HEADS
from heal_kernels import kv_int16
from heal_kernels.attention import attention_decode, attention_extend

HQ, HK, D = LLAMA3_8B_HEADS
SM = 1.0 / math.sqrt(D)


def _sglang():
    try:
        sglang_attention.kernels()
    except Exception as e:  # noqa: BLE001 - any import failure means: no SGLang here
        pytest.skip(f"SGLang's Triton attention kernels are not importable: {e}")


@pytest.mark.parametrize("impl", ["heal", "sglang_bf16", "torch_fp32"])
@pytest.mark.parametrize("ctx", [1024, 8192, 32768], ids=lambda c: f"ctx{c}")
@pytest.mark.parametrize("bs", [1, 16, 64], ids=lambda b: f"B{b}")
def test_decode(benchmark, ceilings, bs, ctx, impl):
    torch.manual_seed(0)
    slots = bs * ctx
    if impl == "torch_fp32" and bs * ctx > 16 * 8192:
        pytest.skip("FP32 reference kept to <= 128k tokens of KV (memory)")
    kv_indptr = torch.arange(0, slots + 1, ctx, device="cuda", dtype=torch.int32)
    kv_indices = torch.randperm(slots, device="cuda")  # pages scattered over the pool
    q = torch.randn(bs, HQ, D, device="cuda")
    if impl == "heal":
        cache = kv_int16.new_int16_kv(slots, HK, D, "cuda")
        for a in range(0, slots, 1 << 20):
            n = min(1 << 20, slots - a)
            kv_int16.store_kv(cache, torch.arange(a, a + n, device="cuda"),
                              torch.randn(n, HK, D, device="cuda"), torch.randn(n, HK, D, device="cuda"))
        out = torch.empty(bs, HQ, D, device="cuda")
        fn = lambda: attention_decode(q, cache, kv_indptr, kv_indices, sm_scale=SM, max_seq_len=ctx, out=out)
        nbytes = bs * ctx * kv_int16.bytes_per_token(HK, D)
    elif impl == "sglang_bf16":
        _sglang()
        kb = torch.randn(slots, HK, D, device="cuda", dtype=torch.bfloat16)
        vb = torch.randn(slots, HK, D, device="cuda", dtype=torch.bfloat16)
        fn, _ = sglang_attention.decode_call(q.bfloat16(), kb, vb, kv_indptr, kv_indices, SM)
        nbytes = bs * ctx * 2 * HK * D * 2
    else:
        kf = torch.randn(bs, HK, ctx, D, device="cuda")
        vf = torch.randn(bs, HK, ctx, D, device="cuda")
        qf = q.view(bs, HQ, 1, D)
        fn = lambda: torch.nn.functional.scaled_dot_product_attention(qf, kf, vf, scale=SM, enable_gqa=True)
        nbytes = bs * ctx * 2 * HK * D * 4
    flops = 4.0 * bs * HQ * ctx * D
    timing.run(benchmark, fn, flops=flops, nbytes=nbytes, ceilings=ceilings, op="attn_decode", bs=bs, ctx=ctx,
               impl=impl, device=ceilings["device"])


@pytest.mark.parametrize("impl", ["heal", "sglang_bf16", "torch_fp32"])
def test_prefill_4k(benchmark, ceilings, impl):
    torch.manual_seed(0)
    t = 4096
    q = torch.randn(t, HQ, D, device="cuda")
    k, v = torch.randn(t, HK, D, device="cuda"), torch.randn(t, HK, D, device="cuda")
    qo = torch.tensor([0, t], device="cuda", dtype=torch.int32)
    if impl == "heal":
        cache = kv_int16.new_int16_kv(t, HK, D, "cuda")
        loc = torch.randperm(t, device="cuda")
        kv_int16.store_kv(cache, loc, k, v)
        kvp = torch.tensor([0, t], device="cuda", dtype=torch.int32)
        out = torch.empty(t, HQ, D, device="cuda")
        fn = lambda: attention_extend(q, cache, qo, kvp, loc, sm_scale=SM, max_extend_len=t, out=out)
    elif impl == "sglang_bf16":
        _sglang()
        fn, _ = sglang_attention.extend_call(q.bfloat16(), k.bfloat16(), v.bfloat16(), SM)
    else:
        qf, kf, vf = q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None]
        fn = lambda: torch.nn.functional.scaled_dot_product_attention(qf, kf, vf, is_causal=True, scale=SM,
                                                                      enable_gqa=True)
    flops = 4.0 * HQ * D * t * (t + 1) / 2  # causal
    timing.run(benchmark, fn, flops=flops, ceilings=ceilings, op="attn_prefill", tokens=t, impl=impl,
               device=ceilings["device"])
