"""bench.kernels.sglang_attention, the SGLang baseline of the attention benchmarks and probes: its calls
give SGLang's kernels the arguments that mean what the docstrings say (a cached prefix, scattered pages),
checked against float64 attention.  float32 inputs: the interpreter does not run SGLang's kernels on
bf16 (its outputs stay unwritten), the GPU runs them either way."""

import pytest
import torch

from bench.kernels import sglang_attention

HQ, HK, D = 4, 2, 64


def _reference(q, k, v, first):
    """float64 causal attention: q [T, HQ, D] rows see keys [0, first + row] of k, v [N, HK, D]."""
    g = HQ // HK
    q, k, v = q.double(), k.repeat_interleave(g, 1).double(), v.repeat_interleave(g, 1).double()
    s = torch.einsum("thd,nhd->htn", q, k) * D**-0.5
    seen = torch.arange(k.shape[0])[None, :] <= (first + torch.arange(q.shape[0]))[:, None]
    return torch.einsum("htn,nhd->thd", s.masked_fill(~seen, float("-inf")).softmax(-1), v)


@pytest.fixture
def kernels():
    try:
        sglang_attention.kernels()
    except Exception as e:  # noqa: BLE001 - any import failure means: no SGLang here
        pytest.skip(f"SGLang's Triton attention kernels are not importable: {e}")


@pytest.mark.parametrize("prefix", [0, 40])
def test_extend_call_is_causal_attention_after_the_prefix(device, kernels, prefix):
    g = torch.Generator().manual_seed(prefix)
    t = 24
    q, k, v = (torch.randn(t, h, D, generator=g).to(device) for h in (HQ, HK, HK))
    kp, vp = (torch.randn(prefix, HK, D, generator=g).to(device) for _ in range(2))
    call, out = sglang_attention.extend_call(q, k, v, D**-0.5, *((kp, vp) if prefix else ()))
    out.fill_(float("nan"))
    call()
    ref = _reference(q.cpu(), torch.cat([kp, k]).cpu(), torch.cat([vp, v]).cpu(), prefix)
    # fp32 kernel on O(1) values: measured 5e-7 on the interpreter
    torch.testing.assert_close(out.cpu().double(), ref, rtol=0, atol=1e-5)


def test_decode_call_reads_each_sequence_through_its_pages(device, kernels):
    g = torch.Generator().manual_seed(1)
    bs, ctx = 3, 50
    k, v = (torch.randn(bs * ctx, HK, D, generator=g).to(device) for _ in range(2))
    q = torch.randn(bs, HQ, D, generator=g).to(device)
    kv_indptr = torch.arange(0, bs * ctx + 1, ctx, dtype=torch.int32).to(device)
    kv_indices = torch.randperm(bs * ctx, generator=g).to(device)
    call, out = sglang_attention.decode_call(q, k, v, kv_indptr, kv_indices, D**-0.5)
    out.fill_(float("nan"))
    call()
    for b in range(bs):
        pages = kv_indices[b * ctx:(b + 1) * ctx].cpu()
        ref = _reference(q[b:b + 1].cpu(), k.cpu()[pages], v.cpu()[pages], ctx - 1)
        torch.testing.assert_close(out[b:b + 1].cpu().double(), ref, rtol=0, atol=1e-5)
