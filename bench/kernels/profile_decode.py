"""GPU: resource report (registers, spills, shared memory) of the attention kernels, and one
decode launch for Nsight Compute:

    python -m bench.kernels.profile_decode
    ncu --clock-control none -k regex:_attn_kernel -c 1 --section SpeedOfLight \\
        --section WarpStateStats python -m bench.kernels.profile_decode --once
"""

from __future__ import annotations

import sys

import torch

from bench.shapes import LLAMA3_8B_HEADS
from heal_kernels import attention, kv_int16
from heal_kernels._attention_kernels import _attn_kernel

HQ, HK, D = LLAMA3_8B_HEADS


def main():
    bs, ctx = 16, 8192
    slots = bs * ctx
    cache = kv_int16.new_int16_kv(slots, HK, D, "cuda")
    kv_int16.store_kv(cache, torch.arange(slots, device="cuda"), torch.randn(slots, HK, D, device="cuda"),
                      torch.randn(slots, HK, D, device="cuda"))
    kvp = torch.arange(0, slots + 1, ctx, device="cuda", dtype=torch.int32)
    kvi = torch.randperm(slots, device="cuda")
    q = torch.randn(bs, HQ, D, device="cuda")
    attention.attention_decode(q, cache, kvp, kvi, sm_scale=D**-0.5, max_seq_len=ctx)
    torch.cuda.synchronize()
    if "--once" in sys.argv:
        return
    for dev_cache in _attn_kernel.device_caches.values():
        for k in dev_cache[0].values():
            k._init_handles()
            print("regs", k.n_regs, "spills", k.n_spills, "shared", k.metadata.shared, "warps", k.metadata.num_warps,
                  "decode", "DECODE" in str(k.src.constants) and k.src.constants)


if __name__ == "__main__":
    main()
