"""Property tests (issue 12, section 3): special values through every public kernel give an honest result.

Hypothesis puts NaN, +-Inf, +-1e38, subnormals (+-1e-40) and zeros at positions of its choosing, and
picks out-of-range slot indices and rotary positions.  Honest means, per kernel:

- NaN and Inf match the float64 torch reference (heal_kernels.reference) class for class (NaN where it
  gives NaN, the same signed Inf where it gives Inf), or follow the kernel's documented behaviour
  (heal_matmul and attention: an Inf makes the rows it reaches NaN; tests/kernels/test_nonfinite.py);
- finite inputs give the reference's value within a bound far below any plausible bug, saturating to
  the same signed Inf only where the float64 value is beyond FP32's range;
- a row (token, head, partial) that holds no injected value is bitwise what it is without the
  injected values elsewhere in the batch;
- a refused call raises ValueError naming its argument and leaves the cache (and the outputs given to
  it) bitwise untouched.

Known dishonest behaviours are strict xfails that assert the honest result, so a fix flips them to
XPASS, which fails until the mark is removed.  Still open (issue 12): a finite row near FP32's max in
heal_matmul.  Fixed (the marks removed): raw bf16 weights outside FP16's range; found by this file,
rms_norm of a row above ~1.8e19 coming out zeros, a subnormal K/V row dequantizing ~9% off, a q row
near 1e38 giving NaN attention; NaN in K/V stored as 0 and NaN in q/K/V giving finite attention, an
Inf in K scored as a finite step, an Inf in V turning earlier tokens' rows NaN.
"""

import math
import re

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from heal_kernels import (
    apply_rotary,
    attention_decode,
    attention_extend,
    gelu_tanh_and_mul,
    heal_matmul,
    new_int16_kv,
    prepare_weight,
    reference,
    rms_norm,
    silu_and_mul,
    split_tiles,
    store_kv,
)
from heal_kernels.kv_int16 import QMAX
from heal_kernels.reduce import tree_sum, tree_sum_stacked
from tests.conftest import ON_GPU
from tests.helpers import names_argument

DEV = "cuda" if ON_GPU else "cpu"
NAN, INF = float("nan"), float("inf")
NONFINITE = (NAN, INF, -INF)
HUGE = (1e38, -1e38)
TINY = (1e-40, -1e-40, 0.0)  # 1e-40 is an FP32 subnormal
SPECIALS = NONFINITE + HUGE + TINY
F32_TINY = 2.0**-149  # FP32's smallest subnormal: the absolute floor of every bound

# No shrinking: under the interpreter it takes minutes, and a failing example is reported as drawn.  For
# the strict xfails the first failing example settles it.
PROPS = settings(max_examples=12, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
                 report_multiple_bugs=False, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(PROPS, max_examples=6)


def xfail_known(reason: str):
    """A strict xfail that only an AssertionError satisfies: a fix flips it to XPASS, a broken test errors."""
    return pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)


def _inject(data, shape, values, max_size=3):
    """Hypothesis-chosen (index, value) pairs: 1 to max_size of them, values from `values`."""
    index = st.tuples(*(st.integers(0, n - 1) for n in shape))
    return data.draw(st.lists(st.tuples(index, st.sampled_from(values)), min_size=1, max_size=max_size))


def _poisoned(x, hits):
    y = x.clone()
    for idx, v in hits:
        y[idx] = v
    return y


def _bits_equal(a, b) -> bool:
    """Bitwise equal where both are numbers; NaN wherever either is NaN (a NaN's payload is not compared)."""
    a, b = a.float(), b.float()
    nan = a.isnan()
    return torch.equal(nan, b.isnan()) and torch.equal(a[~nan].view(torch.int32), b[~nan].view(torch.int32))


def _assert_matches_reference(out, ref64, rel):
    """NaN where the reference is NaN, its signed Inf where it is Inf in FP32, else within rel * |ref|."""
    ref = ref64.float()  # beyond FP32's range the honest FP32 answer is Inf
    assert torch.equal(out.isnan(), ref.isnan()), "NaN positions differ from the float64 reference"
    inf = ref.isinf()
    assert torch.equal(out.isinf(), inf) and torch.equal(out[inf], ref[inf]), "Inf differs from the reference"
    fin = ~(ref.isnan() | inf)
    err = (out.double() - ref64)[fin].abs()
    assert (err <= rel * ref64[fin].abs() + F32_TINY).all(), f"max error {err.max().item():.3e}"


# ---------------------------------------------------------------- heal_matmul, split_tiles

def _matmul_case(seed, k, raw=False):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4, k, generator=gen).to(DEV)
    w = (torch.randn(24, k, generator=gen) * 0.05).bfloat16().to(DEV)
    return x, (w if raw else prepare_weight(w))


@PROPS
@given(seed=st.integers(0, 2**16), k=st.integers(1, 200), raw=st.booleans(), data=st.data())
def test_matmul_nan_inf_poison_their_row_only_and_tiny_values_are_exact(seed, k, raw, data):
    """NaN or Inf in a row of x: that row is all NaN (Inf too: documented, the tile split's lo part is
    inf - inf); a row with only subnormals or zeros is FP32-accurate; other rows are bitwise unchanged."""
    x, w = _matmul_case(seed, k, raw)
    hits = _inject(data, x.shape, NONFINITE + TINY)
    bad = _poisoned(x, hits)
    clean, out = heal_matmul(x, w), heal_matmul(bad, w)
    hit_rows = {idx[0] for idx, _ in hits}
    ref = reference.matmul_ref(bad, w)
    err32 = reference.rel_err(reference.matmul_ref(bad, w, dtype=torch.float32), ref)
    for r in range(x.shape[0]):
        if r not in hit_rows:
            assert _bits_equal(out[r], clean[r]), f"row {r} changed by values injected in rows {hit_rows}"
        elif not torch.isfinite(bad[r]).all():
            assert torch.isnan(out[r]).all(), f"row {r} holds {bad[r][~torch.isfinite(bad[r])].tolist()}"
        else:
            assert reference.rel_err(out[r], ref[r]) <= 2.0 * err32 + 2.0**-22


@xfail_known("known: a finite row near FP32's max overflows in the K-tile "
             "accumulator before the weight scale (issue 12)")
@FEW
@given(seed=st.integers(0, 2**16), k=st.integers(1, 200), data=st.data())
def test_matmul_rows_near_fp32_max_are_accurate(seed, k, data):
    x, w = _matmul_case(seed, k)
    bad = _poisoned(x, _inject(data, x.shape, HUGE, max_size=1))
    out, ref = heal_matmul(bad, w), reference.matmul_ref(bad, w)
    assert torch.isfinite(ref).all()
    assert reference.rel_err(out, ref) <= 2.0**-20


@FEW
@given(seed=st.integers(0, 2**16), data=st.data())
def test_matmul_raw_weight_outside_fp16_range_is_accurate_or_refused(seed, data):
    x, w = _matmul_case(seed, 64, raw=True)
    n = data.draw(st.integers(0, w.shape[0] - 1))
    w = w.clone()
    if data.draw(st.booleans()):
        w[n, data.draw(st.integers(0, 63))] = data.draw(st.sampled_from((1e5, -1e5, 3e38)))
    else:
        w[n] = (w[n].float() * 2e-5).bfloat16()  # a row of ~1e-6: FP16 subnormals
    try:
        out = heal_matmul(x, w)
    except ValueError as e:
        assert re.search(names_argument("w"), str(e)), e
        return
    ref = reference.matmul_ref(x, w)[:, n]
    # a true value beyond FP32's range (x . 3e38) overflows to +-inf, as in an FP32 matmul
    big = ref.abs() > torch.finfo(torch.float32).max
    assert torch.equal(out[:, n][big], (ref[big].sign() * math.inf).float())
    if (~big).any():
        assert reference.rel_err(out[:, n][~big], ref[~big]) <= 2.0**-20


@PROPS
@given(seed=st.integers(0, 2**16), k=st.integers(1, 300), block_k=st.sampled_from([16, 64]), data=st.data())
def test_split_tiles_keeps_finite_tiles_exact_and_poisoned_tiles_visible(seed, k, block_k, data):
    """x == ts * (hi + lo) to 2^-22 of the tile's max for finite tiles, any magnitude (+-1e38, subnormals);
    NaN and Inf come back as NaN (Inf: hi = inf, lo = inf - inf; its tile keeps scale 1)."""
    gen = torch.Generator().manual_seed(seed)
    x = _poisoned(torch.randn(3, k, generator=gen).to(DEV), _inject(data, (3, k), SPECIALS))
    s = split_tiles(x, block_k)
    hi, lo, ts = s.hi, s.lo, s.ts
    back = ts.double().repeat_interleave(block_k, dim=1)[:, :k] * (hi.double() + lo.double())
    for t in range(ts.shape[1]):
        cols = slice(t * block_k, min(k, (t + 1) * block_k))
        xt, bt = x[:, cols].double(), back[:, cols]
        for r in range(3):
            if torch.isfinite(xt[r]).all():
                bound = 2.0**-22 * xt[r].abs().max() + F32_TINY
                assert ((bt[r] - xt[r]).abs() <= bound).all(), f"tile {t} of row {r}"
            else:
                assert ts[r, t] == 1.0 or not torch.isinf(xt[r]).any()
                assert bt[r][~torch.isfinite(xt[r])].isnan().all()


# ---------------------------------------------------------------- rms_norm, silu/gelu_and_mul

@PROPS
@given(seed=st.integers(0, 2**16), n=st.integers(1, 300), with_res=st.booleans(), data=st.data())
def test_rms_norm_matches_torch_on_nan_inf_and_tiny_values(seed, n, with_res, data):
    """NaN -> NaN row; +-Inf -> NaN at the Inf and 0 elsewhere, as torch (inf * rsqrt(inf)); subnormals
    exact; the residual sum is FP32's; rows without injected values are bitwise unchanged."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4, n, generator=gen).to(DEV)
    w = torch.randn(n, generator=gen).to(DEV)
    res = torch.randn(4, n, generator=gen).to(DEV) if with_res else None
    hits = _inject(data, x.shape, NONFINITE + TINY)
    bad = _poisoned(x, hits)
    clean, out = rms_norm(x, w, 1e-6, res), rms_norm(bad, w, 1e-6, res)
    if with_res:
        (clean, _), (out, res_out) = clean, out
        assert _bits_equal(res_out, bad + res)
        ref, _ = reference.rms_norm_ref(bad, w, 1e-6, res)
    else:
        ref = reference.rms_norm_ref(bad, w, 1e-6)
    _assert_matches_reference(out, ref, 2.0**-20)
    hit_rows = {idx[0] for idx, _ in hits}
    for r in set(range(4)) - hit_rows:
        assert _bits_equal(out[r], clean[r])


@FEW
@given(seed=st.integers(0, 2**16), n=st.integers(1, 300), data=st.data())
def test_rms_norm_rows_near_fp32_max_are_accurate(seed, n, data):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, n, generator=gen).to(DEV)
    w = torch.randn(n, generator=gen).to(DEV)
    bad = _poisoned(x, _inject(data, x.shape, HUGE))
    _assert_matches_reference(rms_norm(bad, w, 1e-6), reference.rms_norm_ref(bad, w, 1e-6), 2.0**-20)


@FEW
@given(seed=st.integers(0, 2**16), n=st.integers(4, 300), big=st.sampled_from([2e19, 1e25, 3.4e38]),
       with_res=st.booleans())
def test_rms_norm_rows_whose_squares_overflow_are_accurate(seed, n, big, with_res):
    """Every element of row 0 is +-big, so its sum of squares overflows FP32 even where each square
    does not (2e19); row 1 is ordinary and keeps the bits it has without row 0."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, n, generator=gen).to(DEV)
    w = torch.randn(n, generator=gen).to(DEV)
    res = torch.zeros(2, n, device=DEV) if with_res else None
    bad = x.clone()
    bad[0] = torch.where(x[0] < 0, -big, big)
    out = rms_norm(bad, w, 1e-6, res)
    out = out[0] if with_res else out
    _assert_matches_reference(out, reference.rms_norm_ref(bad, w, 1e-6), 2.0**-20)
    alone = rms_norm(x[1:], w, 1e-6, None if res is None else res[1:])
    assert _bits_equal(out[1], (alone[0] if with_res else alone)[0])


@PROPS
@given(seed=st.integers(0, 2**16), d=st.integers(1, 1100), gelu=st.booleans(), data=st.data())
def test_gated_activations_match_torch_on_every_special_value(seed, d, gelu, data):
    """silu/gelu_tanh(a) * b, elementwise: the float64 torch value class for class (silu(-inf) = NaN,
    inf * 0 = NaN, 1e38 * 4 = inf), and every element whose a and b are clean is bitwise unchanged."""
    op, ref_op = (gelu_tanh_and_mul, reference.gelu_tanh_and_mul_ref) if gelu else (
        silu_and_mul, reference.silu_and_mul_ref)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 2 * d, generator=gen).to(DEV)
    hits = _inject(data, x.shape, SPECIALS, max_size=4)
    bad = _poisoned(x, hits)
    out = op(bad)
    _assert_matches_reference(out, ref_op(bad), 2.0**-18)
    touched = torch.zeros(3, d, dtype=torch.bool, device=DEV)
    for (r, c), _ in hits:
        touched[r, c % d] = True
    assert _bits_equal(out[~touched], op(x)[~touched])


# ---------------------------------------------------------------- apply_rotary

MAX_POS, HEAD = 40, 64


def _rope_case(seed, rot):
    gen = torch.Generator().manual_seed(seed)
    cs = reference.rope_cos_sin_cache(MAX_POS, rot, device=DEV)
    pos = torch.randint(0, MAX_POS, (4,), generator=gen).to(DEV)
    q = torch.randn(4, 2 * HEAD, generator=gen).to(DEV)
    k = torch.randn(4, HEAD, generator=gen).to(DEV)
    return cs, pos, q, k


@PROPS
@given(seed=st.integers(0, 2**16), rot=st.sampled_from([32, 64]), neox=st.booleans(), data=st.data())
def test_rotary_matches_torch_on_every_special_value(seed, rot, neox, data):
    """Each pair rotates as torch's float64 rotation of the same values (inf * sin -> NaN included; +-1e38
    stays finite); tokens without injected values are bitwise unchanged."""
    cs, pos, q, k = _rope_case(seed, rot)
    hq, hk = _inject(data, q.shape, SPECIALS), _inject(data, k.shape, SPECIALS)
    bq, bk = _poisoned(q, hq), _poisoned(k, hk)
    oq, ok = apply_rotary(pos, bq, bk, cs, HEAD, neox)
    cq, ck = apply_rotary(pos, q, k, cs, HEAD, neox)
    for out, x, clean, hits in ((oq, bq, cq, hq), (ok, bk, ck, hk)):
        ref = reference.rope_ref(pos, x, cs, HEAD, neox)
        # a rotated pair's error is bounded by its inputs' size, not its own (x1 cos - x2 sin may cancel)
        scale = x.double().nan_to_num(0.0, 0.0, 0.0).abs().reshape(4, -1, HEAD).amax(dim=-1, keepdim=True)
        scale = scale.expand(4, x.shape[1] // HEAD, HEAD).reshape(x.shape)
        r32 = ref.float()
        assert torch.equal(out.isnan(), r32.isnan()) and torch.equal(out.isinf(), r32.isinf())
        assert torch.equal(out[r32.isinf()], r32[r32.isinf()])
        fin = torch.isfinite(r32)
        assert ((out.double() - ref)[fin].abs() <= 2.0**-22 * scale[fin] + F32_TINY).all()
        for t in set(range(4)) - {idx[0] for idx, _ in hits}:
            assert _bits_equal(out[t], clean[t])


_BAD_POSITION = st.one_of(st.integers(-2**40, -1), st.integers(MAX_POS, 2**40), st.sampled_from([MAX_POS, 10**6]))


@PROPS
@given(seed=st.integers(0, 2**16), where=st.integers(0, 3), bad=_BAD_POSITION, int32=st.booleans())
def test_rotary_refuses_positions_outside_the_cache_and_writes_nothing(seed, where, bad, int32):
    cs, pos, q, k = _rope_case(seed, 64)
    if int32:
        bad = max(min(bad, 2**31 - 1), -(2**31))
    pos = pos.to(torch.int32 if int32 else torch.int64)
    pos[where] = bad
    q_out, k_out = torch.full_like(q, 7.0), torch.full_like(k, 7.0)
    kept = cs.clone()
    with pytest.raises(ValueError, match=names_argument("positions")):
        apply_rotary(pos, q, k, cs, HEAD, q_out=q_out, k_out=k_out)
    assert (q_out == 7.0).all() and (k_out == 7.0).all() and torch.equal(cs, kept)


# ---------------------------------------------------------------- store_kv (kv_int16)

H, D, SLOTS = 2, 64, 16


def _kv_rows(seed, t):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(t, H, D, generator=gen).to(DEV), torch.randn(t, H, D, generator=gen).to(DEV),
            torch.randperm(SLOTS, generator=gen)[:t].to(DEV))


def _cache_state(cache):
    return [t.clone() for t in (cache.k, cache.k_scale, cache.v, cache.v_scale)]


def _cache_equal(cache, state) -> bool:
    return all(torch.equal(a, b) for a, b in zip((cache.k, cache.k_scale, cache.v, cache.v_scale), state,
                                                 strict=True))


@PROPS
@given(seed=st.integers(0, 2**16), t=st.integers(1, 6), data=st.data())
def test_store_kv_finite_rows_exact_inf_rows_visible_other_rows_untouched(seed, t, data):
    """A finite row (+-1e38, subnormals and zeros among normal values) is stored as reference.quantize
    stores it, within one step of its max; a row holding +-Inf gets scale inf, so it dequantizes to
    non-finite values; rows without injected values are stored bitwise as without them."""
    k, v, loc = _kv_rows(seed, t)
    hk = _inject(data, k.shape, (INF, -INF) + HUGE + TINY)
    hv = _inject(data, v.shape, (INF, -INF) + HUGE + TINY)
    bk, bv = _poisoned(k, hk), _poisoned(v, hv)
    clean, cache = new_int16_kv(SLOTS, H, D, DEV), new_int16_kv(SLOTS, H, D, DEV)
    store_kv(clean, loc, k, v)
    store_kv(cache, loc, bk, bv)
    for x, vals, scale, hits, cvals, cscale in ((bk, cache.k, cache.k_scale, hk, clean.k, clean.k_scale),
                                                (bv, cache.v, cache.v_scale, hv, clean.v, clean.v_scale)):
        hit = {idx[:2] for idx, _ in hits}
        for i in range(t):
            for h in range(H):
                s = int(loc[i])
                row = x[i, h]
                if (i, h) not in hit:
                    assert torch.equal(vals[s, h], cvals[s, h]) and torch.equal(scale[s, h], cscale[s, h])
                elif torch.isinf(row).any():
                    assert scale[s, h] == INF
                    assert not torch.isfinite(reference.dequantize(vals[s, h], scale[s, h])).any()
                    q_ref, s_ref = reference.quantize(row)  # the torch reference stores it the same way
                    assert torch.equal(vals[s, h], q_ref) and torch.equal(scale[s, h], s_ref)
                else:
                    q_ref, s_ref = reference.quantize(row)
                    assert torch.equal(vals[s, h], q_ref) and torch.equal(scale[s, h], s_ref)
                    err = (reference.dequantize(vals[s, h], scale[s, h]) - row.double()).abs().max()
                    assert err <= row.double().abs().max() / QMAX


@FEW
@given(seed=st.integers(0, 2**16), t=st.integers(1, 4), into_v=st.booleans(), data=st.data())
def test_store_kv_nan_is_stored_visibly_or_refused(seed, t, into_v, data):
    k, v, loc = _kv_rows(seed, t)
    hits = _inject(data, k.shape, (NAN,), max_size=1)
    k, v = (k, _poisoned(v, hits)) if into_v else (_poisoned(k, hits), v)
    cache = new_int16_kv(SLOTS, H, D, DEV)
    state = _cache_state(cache)
    try:
        store_kv(cache, loc, k, v)
    except ValueError as e:
        assert re.search(names_argument("v" if into_v else "k"), str(e)) and _cache_equal(cache, state)
        return
    (i, h, _), _ = hits[0]
    vals, scale = (cache.v, cache.v_scale) if into_v else (cache.k, cache.k_scale)
    s = int(loc[i])
    assert not torch.isfinite(reference.dequantize(vals[s, h], scale[s, h])).all()
    # the torch reference stores a NaN row as the kernel does: values 0, scale NaN
    q_ref, s_ref = reference.quantize((v if into_v else k)[i, h])
    assert torch.equal(vals[s, h], q_ref) and scale[s, h].isnan() and s_ref.isnan()


@FEW
@given(seed=st.integers(0, 2**16), tiny=st.sampled_from([1e-40, 3e-41, 1e-39, 1e-41, 1e-44, 1e-36]))
def test_store_kv_subnormal_rows_within_one_step(seed, tiny):
    k, v, loc = _kv_rows(seed, 2)
    k = k / k.abs().amax(dim=-1, keepdim=True) * tiny  # every element subnormal, max exactly tiny
    cache = new_int16_kv(SLOTS, H, D, DEV)
    store_kv(cache, loc, k, v)
    deq = reference.dequantize(cache.k[loc], cache.k_scale[loc])
    assert ((deq - k.double()).abs() <= k.double().abs().amax(dim=-1, keepdim=True) / QMAX).all()


_BAD_SLOT = st.one_of(st.integers(-2**40, -1), st.integers(SLOTS, 2**40))


@PROPS
@given(seed=st.integers(0, 2**16), t=st.integers(1, 6), bad=_BAD_SLOT, int32=st.booleans(),
       value=st.sampled_from(SPECIALS), data=st.data())
def test_store_kv_refuses_slots_outside_the_cache_and_writes_nothing(seed, t, bad, int32, value, data):
    """Whatever k and v hold, a slot index outside [0, slots) raises naming loc before any row is written."""
    k, v, loc = _kv_rows(seed, t)
    cache = new_int16_kv(SLOTS, H, D, DEV)
    store_kv(cache, torch.arange(SLOTS, device=DEV) % SLOTS, *(torch.randn(SLOTS, H, D).to(DEV),) * 2)
    state = _cache_state(cache)
    if int32:
        bad = max(min(bad, 2**31 - 1), -(2**31))
    loc = loc.to(torch.int32 if int32 else torch.int64)
    loc[data.draw(st.integers(0, t - 1))] = bad
    k = _poisoned(k, _inject(data, k.shape, (value,), max_size=1))
    with pytest.raises(ValueError, match=names_argument("loc")):
        store_kv(cache, loc, k, v)
    assert _cache_equal(cache, state)


# ---------------------------------------------------------------- attention_extend / attention_decode

S = 5  # one sequence of S tokens, all new (extend) or the last one decoded


def _attn_case(seed, group):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(S, H * group, D, generator=gen).to(DEV)
    k, v = torch.randn(S, H, D, generator=gen).to(DEV), torch.randn(S, H, D, generator=gen).to(DEV)
    slots = torch.randperm(SLOTS, generator=gen)[:S].to(DEV)
    return q, k, v, slots


def _attend(q, k, v, slots):
    """(extend's output for all S tokens, decode's output for the last one, the cache)."""
    cache = new_int16_kv(SLOTS, H, D, DEV)
    store_kv(cache, slots, k, v)
    ind = torch.tensor([0, S], device=DEV)
    ext = attention_extend(q, cache, ind, ind, slots, sm_scale=0.125)
    dec = attention_decode(q[-1:], cache, ind, slots, sm_scale=0.125)
    return ext, dec, cache


def _reached(group, q_hits, kv_hits):
    """[S, Hq] bool: the (token, head) rows whose inputs hold an injected value (causal, GQA)."""
    reach = torch.zeros(S, H * group, dtype=torch.bool)
    for (t, h, _), _ in q_hits:
        reach[t, h] = True
    for (j, hk, _), _ in kv_hits:
        reach[j:, hk * group:(hk + 1) * group] = True
    return reach


@PROPS
@given(seed=st.integers(0, 2**16), group=st.sampled_from([1, 2]), src=st.sampled_from("qv"), data=st.data())
def test_attention_inf_poisons_what_it_reaches_and_nothing_else(seed, group, src, data):
    _check_inf_reach(seed, group, src, data)


@PROPS
@given(seed=st.integers(0, 2**16), group=st.sampled_from([1, 2]), data=st.data())
def test_attention_inf_in_keys_poisons_what_it_reaches_and_nothing_else(seed, group, data):
    _check_inf_reach(seed, group, "k", data)


def _check_inf_reach(seed, group, src, data):
    """+-Inf in q, K or V: every (token, head) row it reaches is non-finite, or torch's finite value where
    torch has one (-inf in K: NaN under Triton 3.6's interpreter, torch's
    value under Triton 3.8's); decode's row is extend's; other rows are bitwise as without it, or FP32-accurate
    where a subnormal or a zero went in.  Not checked here: rows of earlier tokens of the same KV head, which
    an Inf in V also turns NaN (the strict xfail below)."""
    q, k, v, slots = _attn_case(seed, group)
    x = {"q": q, "k": k, "v": v}[src]
    hits = _inject(data, x.shape, (INF, -INF), max_size=2)
    tiny = _inject(data, x.shape, TINY, max_size=2)
    args = {"q": q, "k": k, "v": v}
    args[src] = _poisoned(x, tiny)
    ref = reference.attention_ref(args["q"], args["k"], args["v"], torch.arange(S, device=DEV), sm_scale=0.125)
    args[src] = _poisoned(args[src], hits)
    ref_inf = reference.attention_ref(args["q"], args["k"], args["v"], torch.arange(S, device=DEV), sm_scale=0.125)
    ext, dec, _ = _attend(args["q"], args["k"], args["v"], slots)
    clean, _, _ = _attend(q, k, v, slots)
    reach = _reached(group, hits if src == "q" else [], hits if src != "q" else [])
    tiny_reach = _reached(group, tiny if src == "q" else [], tiny if src != "q" else [])
    earlier = torch.zeros_like(reach)  # same KV head, before the Inf in V
    for (j, hk, _), _ in hits if src == "v" else []:
        earlier[:j, hk * group:(hk + 1) * group] = True
    assert _bits_equal(dec[0], ext[-1])
    for t in range(S):
        for h in range(H * group):
            if reach[t, h]:  # visible, or torch's own finite answer (-inf in K: that key's weight is 0)
                honest = not torch.isfinite(ext[t, h]).all() or (
                    torch.isfinite(ref_inf[t, h]).all() and reference.rel_err(ext[t, h], ref_inf[t, h]) <= 2.0**-12)
                assert honest, f"row ({t}, {h}) reached by {hits}"
            elif earlier[t, h]:
                continue
            elif tiny_reach[t, h]:
                assert reference.rel_err(ext[t, h], ref[t, h]) <= 2.0**-12
            else:
                assert _bits_equal(ext[t, h], clean[t, h]), f"row ({t}, {h}) changed by {hits} {tiny}"


@FEW
@given(seed=st.integers(0, 2**16), data=st.data())
def test_attention_inf_in_a_later_value_leaves_earlier_tokens_alone(seed, data):
    q, k, v, slots = _attn_case(seed, 1)
    j = data.draw(st.integers(1, S - 1))
    bad = v.clone()
    bad[j, data.draw(st.integers(0, H - 1)), data.draw(st.integers(0, D - 1))] = data.draw(st.sampled_from((INF, -INF)))
    ext, _, _ = _attend(q, k, bad, slots)
    clean, _, _ = _attend(q, k, v, slots)
    assert _bits_equal(ext[:j], clean[:j])


@PROPS
@given(seed=st.integers(0, 2**16), group=st.sampled_from([1, 2]), into_v=st.booleans(), data=st.data())
def test_attention_with_huge_keys_or_values_is_accurate(seed, group, into_v, data):
    """+-1e38 in K or V: the scores and the value tiles scale by powers of two, so every row stays finite
    and within the INT16 cache's error of the float64 truth (normwise per row: a value tile is split
    relative to its largest entry, so entries far below a 1e38 in the same row are lost)."""
    q, k, v, slots = _attn_case(seed, group)
    if into_v:
        v = _poisoned(v, _inject(data, v.shape, HUGE, max_size=2))
    else:
        k = _poisoned(k, _inject(data, k.shape, HUGE, max_size=2))
    ext, dec, _ = _attend(q, k, v, slots)
    ref = reference.attention_ref(q, k, v, torch.arange(S, device=DEV), sm_scale=0.125)
    assert _bits_equal(dec[0], ext[-1])
    for t in range(S):
        for h in range(H * group):
            assert reference.rel_err(ext[t, h], ref[t, h]) <= 2.0**-12, f"row ({t}, {h})"


@FEW
@given(seed=st.integers(0, 2**16), group=st.sampled_from([1, 2]), data=st.data())
def test_attention_with_a_huge_query_is_accurate(seed, group, data):
    q, k, v, slots = _attn_case(seed, group)
    q = _poisoned(q, _inject(data, q.shape, HUGE, max_size=1))
    ext, _, _ = _attend(q, k, v, slots)
    ref = reference.attention_ref(q, k, v, torch.arange(S, device=DEV), sm_scale=0.125)
    assert torch.isfinite(ref).all() and reference.rel_err(ext, ref) <= 2.0**-12


@pytest.mark.parametrize("src", ["q", "k", "v"])
@FEW
@given(seed=st.integers(0, 2**16), data=st.data())
def test_attention_nan_reaches_every_row_it_touches(src, seed, data):
    q, k, v, slots = _attn_case(seed, 1)
    args = {"q": q, "k": k, "v": v}
    hits = _inject(data, args[src].shape, (NAN,), max_size=1)
    args[src] = _poisoned(args[src], hits)
    ext, dec, _ = _attend(args["q"], args["k"], args["v"], slots)
    reach = _reached(1, hits if src == "q" else [], hits if src != "q" else [])
    assert all(not torch.isfinite(ext[t, h]).all() for t, h in reach.nonzero().tolist())


_BAD_INDEX = st.one_of(st.integers(-2**40, -1), st.integers(SLOTS, 2**40))


@PROPS
@given(seed=st.integers(0, 2**16), where=st.integers(0, S - 1), bad=_BAD_INDEX, decode=st.booleans(),
       int32=st.booleans())
def test_attention_refuses_kv_indices_outside_the_cache_and_writes_nothing(seed, where, bad, decode, int32):
    q, k, v, slots = _attn_case(seed, 1)
    cache = new_int16_kv(SLOTS, H, D, DEV)
    store_kv(cache, slots, k, v)
    state = _cache_state(cache)
    if int32:
        bad = max(min(bad, 2**31 - 1), -(2**31))
    idx = slots.to(torch.int32 if int32 else torch.int64)
    idx[where] = bad
    ind = torch.tensor([0, S], device=DEV)
    out = torch.full((1 if decode else S, H, D), 7.0, device=DEV)
    with pytest.raises(ValueError, match=names_argument("kv_indices")):
        if decode:
            attention_decode(q[-1:], cache, ind, idx, sm_scale=0.125, out=out)
        else:
            attention_extend(q, cache, ind, ind, idx, sm_scale=0.125, out=out)
    assert _cache_equal(cache, state) and (out == 7.0).all()


@PROPS
@given(sm_scale=st.sampled_from([INF, -INF, NAN, 0.0, -0.125]), logit_cap=st.sampled_from([0.0, INF, NAN, -1.0]),
       decode=st.booleans())
def test_attention_refuses_nonfinite_or_nonpositive_scales(sm_scale, logit_cap, decode):
    """sm_scale must be finite and > 0; logit_cap finite and >= 0 (each error names its argument)."""
    q, k, v, slots = _attn_case(0, 1)
    cache = new_int16_kv(SLOTS, H, D, DEV)
    store_kv(cache, slots, k, v)
    state = _cache_state(cache)
    ind = torch.tensor([0, S], device=DEV)
    name = "sm_scale" if not (0 < sm_scale < INF) else "logit_cap"
    if name == "logit_cap" and 0 <= logit_cap < INF:
        sm_scale = INF  # keep the call a refused one: bad sm_scale, named
        name = "sm_scale"
    with pytest.raises(ValueError, match=names_argument(name)):
        if decode:
            attention_decode(q[-1:], cache, ind, slots, sm_scale=sm_scale, logit_cap=logit_cap)
        else:
            attention_extend(q, cache, ind, ind, slots, sm_scale=sm_scale, logit_cap=logit_cap)
    assert _cache_equal(cache, state)


def test_attention_decode_refuses_an_empty_sequence(device):
    cache = new_int16_kv(SLOTS, H, D, device)
    state = _cache_state(cache)
    with pytest.raises(ValueError, match=names_argument("kv_indptr")):
        attention_decode(torch.randn(1, H, D, device=device), cache, torch.tensor([0, 0], device=device),
                         torch.zeros(0, dtype=torch.int64, device=device), sm_scale=0.125)
    assert _cache_equal(cache, state)


# ---------------------------------------------------------------- reduce.tree_sum / tree_sum_stacked

@PROPS
@given(seed=st.integers(0, 2**16), shards=st.sampled_from([1, 2, 4, 8]), with_bias=st.booleans(),
       data=st.data())
def test_tree_sums_follow_ieee_on_every_special_value(seed, shards, with_bias, data):
    """tree_sum_stacked is the torch tree's bits with NaN, +-Inf (inf - inf = NaN), +-1e38 (1e38 + 1e38 is
    finite, more saturates to Inf as FP32 does) and subnormals in the partials and the bias."""
    gen = torch.Generator().manual_seed(seed)
    parts = torch.randn(shards, 3, 5, generator=gen).to(DEV)
    parts = _poisoned(parts, _inject(data, parts.shape, SPECIALS + (3e38, -3e38), max_size=4))
    bias = None
    if with_bias:
        bias = _poisoned(torch.randn(5, generator=gen).to(DEV), _inject(data, (5,), SPECIALS, max_size=1))
    out = tree_sum_stacked(parts, bias)
    want = tree_sum(parts.unbind(0))
    want = want if bias is None else want + bias
    assert _bits_equal(out, want)
    ref = parts.double().sum(0) + (0 if bias is None else bias.double())
    # the tree may overflow where the float64 sum does not (3e38 + 3e38 - 3e38): then it is Inf, visibly
    fin = torch.isfinite(ref.float()) & torch.isfinite(out)
    size = parts.double().abs().sum(0) + (0 if bias is None else bias.double().abs())
    assert out[ref.isnan()].isnan().all(), "a NaN of the partials or the bias did not come out"
    assert ((out.double() - ref)[fin].abs() <= 2.0**-21 * size[fin] + F32_TINY).all()
    assert not (torch.isfinite(out) & ~torch.isfinite(ref)).any(), "a non-finite sum came out finite"
