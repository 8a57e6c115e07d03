"""Property tests over shapes a parametrize table would miss (hypothesis; small shapes for the interpreter)."""

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heal_kernels import kv_int16, reference
from heal_kernels.activation import silu_and_mul
from heal_kernels.attention import attention_decode, attention_extend
from heal_kernels.matmul import heal_matmul, prepare_weight
from heal_kernels.norm import rms_norm
from tests.conftest import ON_GPU
from tests.helpers import poisoned

DEV = "cuda" if ON_GPU else "cpu"
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(m=st.integers(1, 70), n=st.integers(1, 80), k=st.integers(1, 300), seed=st.integers(0, 2**16),
       scale_exp=st.integers(-30, 17))
def test_matmul_any_shape_and_magnitude(m, n, k, seed, scale_exp):
    """Every element written, FP32-level error, rows invariant to the batch, at any shape and scale."""
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(m, k, generator=gen) * 2.0**scale_exp).to(DEV)
    w = prepare_weight((torch.randn(n, k, generator=gen) * 0.05).bfloat16().to(DEV))
    out = heal_matmul(x, w, out=poisoned((m, n), DEV))
    ref = reference.matmul_ref(x, w)
    err32 = reference.rel_err(reference.matmul_ref(x, w, dtype=torch.float32), ref)
    assert torch.isfinite(out).all()
    assert reference.rel_err(out, ref) <= 2.0 * err32 + 2.0**-22
    assert torch.equal(heal_matmul(x[-1:], w), out[-1:])


@SETTINGS
@given(m=st.integers(1, 40), n=st.integers(1, 3000), seed=st.integers(0, 2**16))
def test_row_ops_any_width(m, n, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(m, 2 * n, generator=gen).to(DEV)
    w = torch.randn(2 * n, generator=gen).to(DEV)
    out = rms_norm(x, w, 1e-6, out=poisoned((m, 2 * n), DEV))
    ref = reference.rms_norm_ref(x, w, 1e-6)
    err32 = reference.rel_err(reference.rms_norm_ref(x, w, 1e-6, dtype=torch.float32), ref)
    assert reference.rel_err(out, ref) <= 2.0 * err32 + 2.0**-22
    act = silu_and_mul(x, out=poisoned((m, n), DEV))
    assert torch.isfinite(act).all() and torch.equal(silu_and_mul(x[:1]), act[:1])


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lens=st.lists(st.integers(1, 90), min_size=1, max_size=3), group=st.sampled_from([1, 2, 3, 4]),
       seed=st.integers(0, 2**16), data=st.data())
def test_attention_decode_equals_extend_any_lengths(lens, group, seed, data):
    """For random lengths, GQA groups and prefix/new splits: decode of each last token equals extend's row."""
    gen = torch.Generator().manual_seed(seed)
    hk, d = 2, 64
    hq = hk * group
    cache = kv_int16.new_int16_kv(512, hk, d, DEV)
    slots = torch.randperm(512, generator=gen)[: sum(lens)].to(DEV)
    k, v = torch.randn(sum(lens), hk, d, generator=gen), torch.randn(sum(lens), hk, d, generator=gen)
    kv_int16.store_kv(cache, slots, k.to(DEV), v.to(DEV))
    new = [data.draw(st.integers(1, n)) for n in lens]
    q = torch.randn(sum(new), hq, d, generator=gen).to(DEV)
    qo = torch.tensor([0] + new).cumsum(0).to(DEV)
    kvp = torch.tensor([0] + lens).cumsum(0).to(DEV)
    out = attention_extend(q, cache, qo, kvp, slots, sm_scale=0.125, out=poisoned((sum(new), hq, d), DEV))
    assert torch.isfinite(out).all()
    last = qo[1:] - 1
    dec = attention_decode(q[last], cache, kvp, slots, sm_scale=0.125, out=poisoned((len(lens), hq, d), DEV))
    assert torch.equal(dec, out[last])
