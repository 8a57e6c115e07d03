"""SGLang's own Triton BF16 attention kernels as timed calls: the baseline the attention benchmarks
(test_bench_attention.py) and probes (probe_attention.py --vs-sglang) compare HEAL with.  Needs SGLang
on the path (`source .device/env.sh` on the GPU machine); the import happens at the first call."""

from __future__ import annotations

import torch

SPLITS = 8  # SGLang's default --triton-attention-num-kv-splits


def kernels():
    """(decode_attention_fwd, extend_attention_fwd); ImportError without SGLang."""
    from sglang.kernels.ops.attention.decode_attention import decode_attention_fwd
    from sglang.kernels.ops.attention.extend_attention import extend_attention_fwd

    return decode_attention_fwd, extend_attention_fwd


def decode_call(q, k, v, kv_indptr, kv_indices, sm_scale):
    """Decode of q [B, Hq, D] over the paged k, v [slots, Hk, D] (bf16): (a call running SGLang's kernel,
    the output it writes)."""
    decode_attention_fwd = kernels()[0]
    bs, hq, d = q.shape
    o = torch.empty_like(q)
    logits = torch.empty(bs, hq, SPLITS, d, device=q.device)
    lse = torch.empty(bs, hq, SPLITS, device=q.device)
    nsplit = torch.full((bs,), SPLITS, device=q.device, dtype=torch.int32)
    kvi = kv_indices.long()
    return lambda: decode_attention_fwd(q, k, v, o, kv_indptr, kvi, logits, lse, nsplit, SPLITS, sm_scale, 1.0,
                                        1.0), o


def extend_call(q, k, v, sm_scale, k_prefix=None, v_prefix=None):
    """Causal extend of one sequence: q, k, v [T, H, D] (bf16) its new tokens, after the cached
    k_prefix, v_prefix [P, Hk, D] (none: no prefix): (a call running SGLang's kernel, the output it writes)."""
    extend_attention_fwd = kernels()[1]
    t = q.shape[0]
    o = torch.empty_like(q)
    qo = torch.tensor([0, t], device=q.device, dtype=torch.long)
    prefix = 0 if k_prefix is None else k_prefix.shape[0]
    kv_indptr = torch.tensor([0, prefix], device=q.device, dtype=torch.int32)
    kv_indices = torch.arange(prefix, device=q.device, dtype=torch.long)
    # without a prefix the buffers are never read (no indices): the new tokens' K and V stand in
    kb, vb = (k, v) if k_prefix is None else (k_prefix, v_prefix)
    return lambda: extend_attention_fwd(q, k, v, o, kb, vb, qo, kv_indptr, kv_indices, None, True, None, t,
                                        1.0, 1.0, sm_scale=sm_scale), o
