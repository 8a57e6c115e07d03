"""FP32 boundary ops: RMSNorm (+ residual), rotary, SiLU/GELU-and-mul.

Accuracy against float64 relative to torch's own FP32 error, batch invariance
(bitwise), 16-bit inputs, NaN-poisoned outputs and argument checks.
"""

import pytest
import torch

from heal_kernels import reference
from heal_kernels.activation import gelu_tanh_and_mul, silu_and_mul
from heal_kernels.matmul import split_tiles
from heal_kernels.norm import rms_norm
from heal_kernels.rope import apply_rotary
from tests.helpers import BATCH_SIZES, assert_rows_invariant, names_argument, poisoned

# err(ours) <= C * err(torch fp32) + FLOOR, both against float64.  C = 2: the kernels
# do the same FP32 operations as torch, in a fixed order; FLOOR (a few FP32 ulps)
# covers the case where torch's FP32 result happens to be almost exact.
C = 2.0
FLOOR = 2.0**-22


def _check_close(out, ref, ref32):
    err, err32 = reference.rel_err(out, ref), reference.rel_err(ref32, ref)
    assert err <= C * err32 + FLOOR, f"ours {err:.3e} vs torch fp32 {err32:.3e}"


@pytest.mark.parametrize("in_dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("n", [64, 1000, 4096], ids=lambda n: f"N{n}")
def test_rms_norm_accuracy(device, n, in_dtype):
    gen = torch.Generator().manual_seed(n)
    m = 37
    x = (torch.randn(m, n, generator=gen) * 3).to(in_dtype).to(device)
    res = (torch.randn(m, n, generator=gen) * 50).to(device)  # residual stream kept in FP32
    res[:, :4] *= 100  # massive-activation channels
    w = (1 + 0.1 * torch.randn(n, generator=gen)).to(in_dtype).to(device)
    out = rms_norm(x, w, 1e-6, out=poisoned((m, n), device))
    _check_close(out, reference.rms_norm_ref(x, w, 1e-6), reference.rms_norm_ref(x, w, 1e-6, dtype=torch.float32))
    out, h = rms_norm(x, w, 1e-5, res, out=poisoned((m, n), device), residual_out=poisoned((m, n), device))
    ref, ref_h = reference.rms_norm_ref(x, w, 1e-5, res)
    ref32, _ = reference.rms_norm_ref(x, w, 1e-5, res, dtype=torch.float32)
    _check_close(out, ref, ref32)
    assert torch.equal(h, x.float() + res), "the residual sum is one FP32 addition"


def test_rms_norm_in_place_residual(device):
    x = torch.randn(5, 128, device=device)
    res = torch.randn(5, 128, device=device)
    expect = x + res
    w = torch.ones(128, device=device)
    _, h = rms_norm(x, w, 1e-6, res, residual_out=res)
    assert h.data_ptr() == res.data_ptr() and torch.equal(res, expect)


@pytest.mark.parametrize("act", ["silu", "gelu_tanh"])
@pytest.mark.parametrize("in_dtype", [torch.float32, torch.bfloat16], ids=str)
def test_act_and_mul_accuracy(device, act, in_dtype):
    gen = torch.Generator().manual_seed(4)
    m, d = 29, 5000  # D above one block: the kernel loops
    x = (torch.randn(m, 2 * d, generator=gen) * 4).to(in_dtype).to(device)
    fn, ref_fn = ((silu_and_mul, reference.silu_and_mul_ref) if act == "silu"
                  else (gelu_tanh_and_mul, reference.gelu_tanh_and_mul_ref))
    out = fn(x, out=poisoned((m, d), device))
    _check_close(out, ref_fn(x), ref_fn(x, dtype=torch.float32))


@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "interleaved"])
@pytest.mark.parametrize("head_dim,rot", [(128, 128), (64, 32), (256, 256)], ids=lambda v: str(v))
@pytest.mark.parametrize("layout", ["2d", "3d"])
def test_rope_accuracy(device, is_neox, head_dim, rot, layout):
    gen = torch.Generator().manual_seed(head_dim + rot)
    t, hq, hk = 19, 6, 2
    cache = reference.rope_cos_sin_cache(8192, rot, device=device)
    pos = torch.randint(0, 8192, (t,), generator=gen).to(device)
    q = (torch.randn(t, hq, head_dim, generator=gen) * 20).to(device)
    k = torch.randn(t, hk, head_dim, generator=gen).bfloat16().to(device)
    if layout == "2d":
        q, k = q.reshape(t, -1), k.reshape(t, -1)
    qo, ko = apply_rotary(pos, q, k, cache, head_dim, is_neox,
                          q_out=poisoned(q.shape, device), k_out=poisoned(k.shape, device))
    assert qo.shape == q.shape and ko.shape == k.shape
    for o, x in ((qo, q), (ko, k)):
        _check_close(o, reference.rope_ref(pos, x, cache, head_dim, is_neox),
                     reference.rope_ref(pos, x, cache, head_dim, is_neox, dtype=torch.float32))


def test_rope_reads_a_strided_q_slice(device):
    """q and k as column slices of one fused qkv buffer (row stride > width)."""
    t, hq, hk, d = 7, 4, 2, 64
    qkv = torch.randn(t, (hq + 2 * hk) * d, device=device)
    q, k = qkv[:, : hq * d], qkv[:, hq * d: (hq + hk) * d]
    cache = reference.rope_cos_sin_cache(64, d, device=device)
    pos = torch.arange(t, device=device)
    qo, ko = apply_rotary(pos, q, k, cache, d)
    qc, kc = apply_rotary(pos, q.contiguous(), k.contiguous(), cache, d)
    assert torch.equal(qo, qc) and torch.equal(ko, kc)


def test_batch_invariance_all_row_ops(device):
    gen = torch.Generator().manual_seed(9)
    m = max(BATCH_SIZES)
    n = 96
    x = (torch.randn(m, n, generator=gen) * 5).to(device)
    res = torch.randn(m, n, generator=gen).to(device)
    w = torch.randn(n, generator=gen).to(device)
    assert_rows_invariant(lambda xs: rms_norm(xs, w, 1e-6), x)
    assert_rows_invariant(lambda xs: rms_norm(xs, w, 1e-6, res[: xs.shape[0]]), x)
    assert_rows_invariant(silu_and_mul, x)
    assert_rows_invariant(gelu_tanh_and_mul, x)
    cache = reference.rope_cos_sin_cache(8192, 32, device=device)
    pos = torch.randint(0, 8192, (m,), generator=gen).to(device)
    q = x.reshape(m, 3, 32)
    assert_rows_invariant(lambda qs: apply_rotary(pos[: qs.shape[0]], qs, qs[:, :1], cache, 32), q)


def test_bad_arguments_raise_value_error_naming_them(device):
    x = torch.randn(4, 64, device=device)
    w = torch.ones(64, device=device)
    cache = reference.rope_cos_sin_cache(16, 64, device=device)
    pos = torch.zeros(4, dtype=torch.int64, device=device)
    cases = [
        (lambda: rms_norm(x.double(), w, 1e-6), "x"),
        (lambda: rms_norm(x, w[:63], 1e-6), "weight"),
        (lambda: rms_norm(x, w, -1.0), "eps"),
        (lambda: rms_norm(x, w, 1e-6, x[:3]), "residual"),
        (lambda: rms_norm(x, w, 1e-6, out=torch.empty(4, 64, device=device).t()), "out"),
        (lambda: silu_and_mul(x[:, :63]), "x"),
        (lambda: silu_and_mul(x.to(torch.int32)), "x"),
        (lambda: gelu_tanh_and_mul(x, out=torch.empty(4, 64, device=device)), "out"),
        (lambda: apply_rotary(pos.float(), x, x, cache, 64), "positions"),
        (lambda: apply_rotary(pos, x, x, cache.double(), 64), "cos_sin_cache"),
        (lambda: apply_rotary(pos, x, x, cache, 32), "cos_sin_cache"),
        (lambda: apply_rotary(pos, x[:3], x, cache, 64), "q"),
        (lambda: apply_rotary(pos, x, x[:, :48], cache, 64), "k"),
        (lambda: apply_rotary(pos, x, x.reshape(4, 2, 32), cache, 64), "k"),
        (lambda: apply_rotary(pos + 16, x, x, cache, 64), "positions"),  # the cache holds positions 0..15
        (lambda: apply_rotary(pos - 1, x, x, cache, 64), "positions"),
        (lambda: apply_rotary(torch.full((4,), 10**6, device=device), x, x, cache, 64), "positions"),
    ]
    if device == "cuda":
        cases.append((lambda: rms_norm(x, w.cpu(), 1e-6), "weight"))
    for call, name in cases:
        with pytest.raises(ValueError, match=names_argument(name)):
            call()


def _assert_split_equal(split, ref):
    """Bit patterns equal (a row that overflowed to inf splits into inf and NaN parts in both)."""
    for part in ("hi", "lo", "ts"):
        a, b = getattr(split, part), getattr(ref, part)
        bits = torch.int16 if a.dtype == torch.float16 else torch.int32
        assert a.dtype == b.dtype and torch.equal(a.view(bits), b.view(bits)), part


@pytest.mark.parametrize("n", [32, 64, 100, 4096, 5000], ids=lambda n: f"N{n}")
def test_rms_norm_writes_the_split_of_its_output(device, n):
    """split_k: the norm also writes heal_matmul's split of its output, the bits split_tiles gives, and
    its output and residual keep the bits they have without it (N < 64: the split is a separate launch;
    N = 100 and 5000: a partial last tile; rows of 1e30, 1e-30 and zeros)."""
    gen = torch.Generator().manual_seed(n)
    x = (torch.randn(5, n, generator=gen) * 3).to(device)
    x[1] *= 1e30
    x[2] *= 1e-30
    x[3] = 0
    res = torch.randn(5, n, generator=gen).to(device)
    w = torch.randn(n, generator=gen).to(device)
    out, res_out, split = rms_norm(x, w, 1e-6, res.clone(), split_k=64,
                                   out=poisoned((5, n), device), residual_out=poisoned((5, n), device))
    base, base_res = rms_norm(x, w, 1e-6, res.clone())
    assert torch.equal(out, base) and torch.equal(res_out, base_res)
    _assert_split_equal(split, split_tiles(out, 64))
    alone, split1 = rms_norm(x, w, 1e-6, split_k=64)
    assert torch.equal(alone, rms_norm(x, w, 1e-6))
    _assert_split_equal(split1, split_tiles(alone, 64))


@pytest.mark.parametrize("act", [silu_and_mul, gelu_tanh_and_mul], ids=lambda f: f.__name__)
@pytest.mark.parametrize("d", [48, 1024, 1500, 14336], ids=lambda d: f"D{d}")
def test_act_and_mul_writes_the_split_of_its_output(device, act, d):
    gen = torch.Generator().manual_seed(d)
    x = (torch.randn(3, 2 * d, generator=gen) * 4).to(device)
    x[1] *= 1e18
    x[2, :3] *= 1e30  # overflows to inf in the output
    out, split = act(x, split_k=64, out=poisoned((3, d), device))
    assert torch.equal(out.view(torch.int32), act(x).view(torch.int32))
    _assert_split_equal(split, split_tiles(out, 64))
    out16, split16 = act(x, split_k=16)
    _assert_split_equal(split16, split_tiles(out16, 16))


def test_split_k_must_be_a_power_of_two_tile(device):
    x = torch.randn(2, 64, device=device)
    w = torch.ones(64, device=device)
    for bad in (-1, 8, 48, 1.5, True, "64"):
        with pytest.raises(ValueError, match="split_k"):
            rms_norm(x, w, 1e-6, split_k=bad)
        with pytest.raises(ValueError, match="split_k"):
            silu_and_mul(x, split_k=bad)
