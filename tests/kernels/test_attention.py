"""INT16 KV cache and HEAL paged attention: accuracy vs float64, exact scores, bitwise
invariance across batch, chunking, decode vs extend and page placement, argument checks.

CPU interpreter in CI (small shapes); larger ones on the GPU with `make test-gpu`.
"""

import pytest
import torch

from heal_kernels import kv_int16, reference
from heal_kernels.attention import attention_decode, attention_extend
from tests.conftest import ON_GPU
from tests.helpers import names_argument, poisoned
from tests.kernels.exact_scores import qk_int_scores, score_f32

# err vs float64 over the dequantized inputs <= C_FP32 * (FP32 attention's error on the same
# inputs): the kernel's own arithmetic is at FP32's level.  Against the unquantized inputs
# (int16 rounding included) HEAL must be >= BF16_FACTOR below BF16 attention.
C_FP32 = 2.0
BF16_FACTOR = 50.0
NUM_SLOTS = 32768 if ON_GPU else 1024


class Batch:
    """Sequences with random K/V stored in a paged INT16 cache at shuffled slots."""

    def __init__(self, lens, hq, hk, d, device, *, seed=0, outliers=False, cache=None, slots=None):
        gen = torch.Generator().manual_seed(seed)
        self.hq, self.hk, self.d, self.device = hq, hk, d, device
        self.cache = cache or kv_int16.new_int16_kv(NUM_SLOTS, hk, d, device)
        perm = torch.randperm(self.cache.num_slots, generator=gen)
        perm = slots if slots is not None else perm
        self.k, self.v, self.q, self.slots = [], [], [], []
        off = 0
        for n in lens:
            k, v = torch.randn(n, hk, d, generator=gen), torch.randn(n, hk, d, generator=gen)
            q = torch.randn(n, hq, d, generator=gen)
            if outliers:  # a few channels 20x larger, as real K/V have
                k[..., : d // 16] *= 20
                v[..., d // 32: d // 16] *= 20
            self.k.append(k.to(device))
            self.v.append(v.to(device))
            self.q.append(q.to(device))
            self.slots.append(perm[off: off + n].to(device))
            off += n
        for k, v, s in zip(self.k, self.v, self.slots, strict=True):
            kv_int16.store_kv(self.cache, s, k, v)
        self.lens = list(lens)

    def kv(self, seqs, upto):
        """kv_indptr, kv_indices for sequences `seqs`, each cut to its first upto[i] positions."""
        ind = [self.slots[s][:u] for s, u in zip(seqs, upto, strict=True)]
        indptr = torch.tensor([0] + [len(i) for i in ind], device=self.device).cumsum(0)
        return indptr, torch.cat(ind)

    def extend(self, seqs, starts, ends, **kw):
        """Tokens [starts[i], ends[i]) of each sequence as new tokens over their cached prefix."""
        q = torch.cat([self.q[s][a:b] for s, a, b in zip(seqs, starts, ends, strict=True)])
        qo = torch.tensor([0] + [b - a for a, b in zip(starts, ends, strict=True)], device=self.device).cumsum(0)
        kvp, kvi = self.kv(seqs, ends)
        return attention_extend(q, self.cache, qo, kvp, kvi, sm_scale=self.d**-0.5, **kw)

    def decode(self, seqs, positions, **kw):
        q = torch.stack([self.q[s][p] for s, p in zip(seqs, positions, strict=True)])
        kvp, kvi = self.kv(seqs, [p + 1 for p in positions])
        return attention_decode(q, self.cache, kvp, kvi, sm_scale=self.d**-0.5, **kw)

    def refs(self, s, start, end, **kw):
        """(float64 over dequantized, float32 over dequantized, float64 unquantized, bf16) for one sequence."""
        pos = torch.arange(start, end, device=self.device)
        qq, kk, vv = self.q[s][start:end], self.k[s][:end], self.v[s][:end]
        deq = [reference.dequantize(*reference.quantize(x)) for x in (qq, kk, vv)]
        args = dict(sm_scale=self.d**-0.5, **kw)
        return (reference.attention_ref(*deq, pos, **args),
                reference.attention_ref(*deq, pos, dtype=torch.float32, **args),
                reference.attention_ref(qq, kk, vv, pos, **args),
                reference.attention_ref(qq, kk, vv, pos, dtype=torch.bfloat16, **args))


ACC_CASES = [
    # (head_dim, hq, hk, window, cap, outliers)
    (64, 4, 2, -1, 0.0, False),
    (128, 8, 2, -1, 0.0, True),
    (128, 4, 4, 37, 0.0, False),
    (64, 6, 2, -1, 30.0, True),
    (256, 2, 1, -1, 0.0, False),
]


@pytest.mark.parametrize("d,hq,hk,window,cap,outliers", ACC_CASES,
                         ids=[f"D{c[0]}-H{c[1]}/{c[2]}-W{c[3]}-cap{c[4]:g}-out{int(c[5])}" for c in ACC_CASES])
def test_extend_accuracy(device, d, hq, hk, window, cap, outliers):
    lens = [300, 530]
    b = Batch(lens, hq, hk, d, device, seed=d + hq, outliers=outliers)
    starts = [n // 3 for n in lens]
    t = sum(n - s for n, s in zip(lens, starts, strict=True))
    out = b.extend([0, 1], starts, lens, sliding_window=window, logit_cap=cap, out=poisoned((t, hq, d), device))
    row = 0
    for s, (n, a) in enumerate(zip(lens, starts, strict=True)):
        o = out[row: row + n - a]
        row += n - a
        ref_deq, f32_deq, ref, bf16 = b.refs(s, a, n, sliding_window=window, logit_cap=cap)
        err_deq, err32 = reference.rel_err(o, ref_deq), reference.rel_err(f32_deq, ref_deq)
        assert err_deq <= C_FP32 * err32, f"kernel arithmetic {err_deq:.3e} vs fp32 attention {err32:.3e}"
        err, err16 = reference.rel_err(o, ref), reference.rel_err(bf16, ref)
        assert err * BF16_FACTOR <= err16, f"total {err:.3e} vs bf16 attention {err16:.3e}"


def test_decode_equals_extend_bitwise(device):
    lens = [700, 1500, 33] if ON_GPU else [40, 300, 9]
    b = Batch(lens, 8, 2, 64, device, seed=3)
    full = b.extend([0, 1, 2], [0, 0, 0], lens)
    row = 0
    for s, n in enumerate(lens):
        for p in sorted({0, n // 2, n - 1}):
            dec = b.decode([s], [p], out=poisoned((1, 8, 64), device))
            assert torch.equal(dec[0], full[row + p]), f"seq {s} pos {p}"
        row += n
    # several sequences decoding together, with a larger max_seq_len (more, empty, splits)
    dec = b.decode([0, 1, 2], [n - 1 for n in lens], max_seq_len=max(lens) + 600)
    ends = torch.tensor(lens).cumsum(0) - 1
    assert torch.equal(dec, full[ends.to(device)])


@pytest.mark.parametrize("hq,hk", [(8, 8), (14, 2), (16, 1)], ids=["mha", "group7", "group16"])
def test_decode_equals_extend_bitwise_by_group(device, hq, hk):
    """The decode kernel holds a kv head's q heads along the MMA's N (padded to a power of two >= 8):
    one head, a group that pads, and a group of 16 give extend's rows too."""
    lens = [300, 45] if ON_GPU else [70, 45]
    b = Batch(lens, hq, hk, 128, device, seed=hq + hk)
    full = b.extend([0, 1], [0, 0], lens)
    ends = torch.tensor(lens).cumsum(0) - 1
    dec = b.decode([0, 1], [n - 1 for n in lens], out=poisoned((2, hq, 128), device))
    assert torch.equal(dec, full[ends.to(device)])


@pytest.mark.parametrize("window,cap", [(-1, 0.0), (-1, 20.0)], ids=["plain", "cap"])
def test_launch_choices_do_not_change_bits(device, window, cap):
    """How a path is cut into programs is a launch choice: V's columns over 1-8 decode programs,
    1-4 warps, K/V prefetched one block ahead or not, the merge's heads per program, warps and
    stages, extend rows and warps and K and V in two column halves or one.  Every choice, and
    every launch the shipped policy picks, gives the bits of the default extend path."""
    import dataclasses
    import itertools

    from heal_kernels import configs

    lens = [600, 1300] if ON_GPU else [40, 290]
    b = Batch(lens, 8, 2, 128, device, seed=9)
    kw = dict(sliding_window=window, logit_cap=cap)
    full = b.extend([0, 1], [0, 0], lens, **kw)
    ends = torch.tensor(lens).cumsum(0) - 1
    base = configs.attention_launch("sm90", "decode")
    launches = [configs.attention_decode_launch("sm90", n, 8, 128) for n in configs.DECODE_LAUNCH_PROBES]
    launches += [dataclasses.replace(base, d_parts=p) for p in (1, 2, 4, 8)]
    if cap == 0.0:  # every compiled variant costs seconds on the GPU: the other launch choices once
        warps = (2, 4) if ON_GPU else (1,)
        launches += [dataclasses.replace(base, d_parts=p, num_warps=w, prefetch=f)
                     for p, w, f in itertools.product((1, 2), warps, (False, True))]
    for launch in launches:
        dec = b.decode([0, 1], [n - 1 for n in lens], out=poisoned((2, 8, 128), device), launch=launch, **kw)
        assert torch.equal(dec, full[ends.to(device)]), f"{launch}"
    merge = configs.attention_launch("sm90", "merge")
    for rows, w, st in ((1, 1, 1), (2, 1, 3), (4, 2, 2), (8, 4, 1)):  # the merge: heads per program, warps, stages
        ml = dataclasses.replace(merge, rows=rows, num_warps=w, num_stages=st)
        dec = b.decode([0, 1], [n - 1 for n in lens], out=poisoned((2, 8, 128), device), merge_launch=ml, **kw)
        assert torch.equal(dec, full[ends.to(device)]), f"{ml}"
    ext_base = configs.attention_launch("sm90", "extend")
    if cap == 0.0:
        for rows, w, f, h in ((128, 8, False, 1), (64, 4, True, 1), (64, 4, False, 2), (128, 8, True, 2)):
            launch = dataclasses.replace(ext_base, rows=rows, num_warps=w, prefetch=f, halves=h)
            assert torch.equal(b.extend([0, 1], [0, 0], lens, launch=launch, **kw), full), f"{launch}"
    with pytest.raises(ValueError, match="d_parts"):
        b.decode([0], [5], launch=dataclasses.replace(base, d_parts=3))
    with pytest.raises(ValueError, match="launch.halves"):
        b.decode([0], [5], launch=dataclasses.replace(base, halves=2))  # column halves: an extend launch
    with pytest.raises(ValueError, match="launch.halves"):
        b.decode([0], [5], launch=dataclasses.replace(base, halves=3))
    with pytest.raises(ValueError, match="launch.halves"):
        b.extend([0], [0], [5], launch=dataclasses.replace(ext_base, halves=3))
    with pytest.raises(ValueError, match="merge_launch.rows"):
        b.decode([0], [5], merge_launch=dataclasses.replace(merge, rows=3))


@pytest.mark.parametrize("window,cap", [(-1, 0.0), (50, 0.0), (-1, 20.0)], ids=["plain", "window", "cap"])
def test_batch_invariance(device, window, cap):
    """The same sequence alone and among 1..N others (different lengths): same bits."""
    n_others = [1, 5, 63] if ON_GPU else [1, 3]
    lens = [257] + [int(x) for x in torch.randint(1, 300 if ON_GPU else 80, (max(n_others),))]
    b = Batch(lens, 4, 2, 64, device, seed=5)
    kw = dict(sliding_window=window, logit_cap=cap)
    alone = b.extend([0], [100], [lens[0]], **kw)
    alone_dec = b.decode([0], [lens[0] - 1], **kw)
    for k in n_others:
        seqs = list(range(1, k + 1)) + [0]  # ours last: its rows sit behind everyone else's
        starts = [n // 2 for n in lens[1: k + 1]] + [100]
        ends = lens[1: k + 1] + [lens[0]]
        out = b.extend(seqs, starts, ends, **kw)
        assert torch.equal(out[-(lens[0] - 100):], alone), f"extend among {k} others"
        dec = b.decode(seqs, [e - 1 for e in ends], **kw)
        assert torch.equal(dec[-1], alone_dec[0]), f"decode among {k} others"


def test_chunked_prefill_equals_one_chunk(device):
    n = 1100 if ON_GPU else 150
    b = Batch([n], 8, 2, 64, device, seed=7)
    whole = b.extend([0], [0], [n])
    for chunk in (1, 7, 64, 512) if ON_GPU else (7, 64):
        parts = [b.extend([0], [a], [min(a + chunk, n)]) for a in range(0, n, chunk)]
        assert torch.equal(torch.cat(parts), whole), f"chunks of {chunk}"


def test_index_dtypes_int32_and_int64_mixed(device):
    """SGLang passes int32 kv_indptr with int64 qo_indptr and kv_indices: any mix gives the same bits."""
    b = Batch([40, 9], 4, 2, 64, device, seed=11)
    q = torch.cat([b.q[0][30:40], b.q[1][4:9]])
    kvp, kvi = b.kv([0, 1], [40, 9])
    qo = torch.tensor([0, 10, 15], device=device)
    base = attention_extend(q, b.cache, qo, kvp, kvi, sm_scale=0.125)
    for qd, kd, id_ in ((torch.int64, torch.int32, torch.int64), (torch.int32, torch.int32, torch.int32)):
        out = attention_extend(q, b.cache, qo.to(qd), kvp.to(kd), kvi.to(id_), sm_scale=0.125)
        assert torch.equal(out, base)
    dec = attention_decode(q[[9, 14]], b.cache, kvp.to(torch.int32), kvi, sm_scale=0.125)
    assert torch.equal(dec, base[[9, 14]])


def test_page_placement_does_not_matter(device):
    lens = [600, 90] if ON_GPU else [90, 20]
    a = Batch(lens, 4, 2, 128, device, seed=9)
    perm = torch.randperm(NUM_SLOTS, generator=torch.Generator().manual_seed(123))
    c = Batch(lens, 4, 2, 128, device, seed=9, slots=perm)
    assert not torch.equal(a.slots[0], c.slots[0])
    assert torch.equal(a.extend([0, 1], [0, 0], lens), c.extend([0, 1], [0, 0], lens))
    assert torch.equal(a.decode([0, 1], [n - 1 for n in lens]), c.decode([0, 1], [n - 1 for n in lens]))


@pytest.mark.parametrize("d", [64, 128, 256])
def test_scores_are_exact_integers(device, d):
    gen = torch.Generator().manual_seed(d)
    q = torch.randint(-kv_int16.QMAX, kv_int16.QMAX + 1, (16, d), generator=gen, dtype=torch.int32)
    k = torch.randint(-kv_int16.QMAX, kv_int16.QMAX + 1, (64, d), generator=gen, dtype=torch.int32)
    q[0] = kv_int16.QMAX
    k[0] = kv_int16.QMAX  # the largest possible score
    k[1] = -kv_int16.QMAX
    q16, k16 = q.to(torch.int16).to(device), k.to(torch.int16).to(device)
    assert torch.equal(qk_int_scores(q16, k16).cpu(), q.long() @ k.long().T)


@pytest.mark.parametrize("d", [64, 128, 256])
def test_scores_round_once_from_the_exact_integer(device, d):
    """The kernels' fp32 score is the exact integer q.k rounded once (int64 -> fp32, to nearest even),
    also at the extremes of every int8 part: |hi| and |lo| = 128 where the int16 range allows them."""
    gen = torch.Generator().manual_seed(100 + d)
    q = torch.randint(-kv_int16.QMAX, kv_int16.QMAX + 1, (16, d), generator=gen, dtype=torch.int32)
    k = torch.randint(-kv_int16.QMAX, kv_int16.QMAX + 1, (64, d), generator=gen, dtype=torch.int32)
    # q rows: +-QMAX, lo part -128 with the largest hi (32384 = 127 * 256 - 128), and small values; k rows:
    # +-QMAX, lo byte 0 (lo part -128, the largest lo . lo)
    for i, v in enumerate((kv_int16.QMAX, -kv_int16.QMAX, 32384, -32384, -128, 127)):
        q[i] = v
    for i, v in enumerate((kv_int16.QMAX, -kv_int16.QMAX, 32512, -32512, 0, 128, -1, 255)):
        k[i] = v
    want = (q.long() @ k.long().T).to(torch.float32)
    q16, k16 = q.to(torch.int16).to(device), k.to(torch.int16).to(device)
    assert torch.equal(score_f32(q16, k16, exact=True).cpu(), want)
    if device == "cuda":
        assert torch.equal(score_f32(q16, k16, exact=False).cpu(), want)


def test_store_kv_matches_reference_quantization(device):
    gen = torch.Generator().manual_seed(1)
    cache = kv_int16.new_int16_kv(64, 3, 128, device)
    k = (torch.randn(10, 3, 128, generator=gen) * 5).to(device)
    v = torch.randn(10, 3, 128, generator=gen).bfloat16().to(device)
    k[2] = 0
    loc = torch.randperm(64, generator=gen)[:10].to(device)
    kv_int16.store_kv(cache, loc, k, v)
    kq, ks = reference.quantize(k)
    vq, vs = reference.quantize(v)
    assert torch.equal(cache.k[loc], kq) and torch.equal(cache.k_scale[loc], ks)
    assert torch.equal(cache.v[loc], vq) and torch.equal(cache.v_scale[loc], vs)
    rel = (reference.dequantize(kq, ks) - k.double()).abs().amax(-1) / k.double().abs().amax(-1).clamp_min(1e-30)
    # half a step, plus the fp32 rounding of x / scale before rounding to an integer
    # (up to 2**-24 * QMAX ~ 0.002 of a step)
    assert rel.max() <= 0.502 / kv_int16.QMAX
    bf16_bytes = 2 * 8 * 128 * 2
    assert kv_int16.bytes_per_token(8, 128) <= 1.02 * bf16_bytes


def test_bad_arguments_raise_and_write_nothing(device):
    cache = kv_int16.new_int16_kv(32, 2, 64, device)
    before = [t.clone() for t in (cache.k, cache.k_scale, cache.v, cache.v_scale)]
    k = torch.randn(4, 2, 64, device=device)
    loc = torch.arange(4, device=device)
    cases = [
        (lambda: kv_int16.store_kv(cache, torch.tensor([0, 1, 2, 32], device=device), k, k), "loc"),
        (lambda: kv_int16.store_kv(cache, torch.tensor([0, -1, 2, 3], device=device), k, k), "loc"),
        (lambda: kv_int16.store_kv(cache, loc[:3], k, k), "loc"),
        (lambda: kv_int16.store_kv(cache, loc, k.double(), k), "k"),
        (lambda: kv_int16.store_kv(cache, loc, k, torch.randn(4, 3, 64, device=device)), "v"),
        (lambda: kv_int16.store_kv(cache, loc.float(), k, k), "loc"),
        (lambda: kv_int16.new_int16_kv(8, 2, 96, device), "head_dim"),
        (lambda: kv_int16.new_int16_kv(2.5, 2, 64, device), "num_slots"),
        (lambda: kv_int16.new_int16_kv(8, 0, 64, device), "num_heads"),
    ]
    kvp = torch.tensor([0, 4], device=device)
    qo = torch.tensor([0, 4], device=device)
    q = torch.randn(4, 4, 64, device=device)
    cases += [
        (lambda: attention_extend(torch.randn(4, 3, 64, device=device), cache, qo, kvp, loc, sm_scale=0.1), "heads"),
        (lambda: attention_extend(torch.randn(4, 4, 128, device=device), cache, qo, kvp, loc, sm_scale=0.1),
         "head_dim"),
        (lambda: attention_extend(q.to(torch.int32), cache, qo, kvp, loc, sm_scale=0.1), "q"),
        (lambda: attention_extend(q, cache, qo, kvp[:1], loc, sm_scale=0.1), "kv_indptr"),
        (lambda: attention_extend(q, cache, qo, kvp, loc.float(), sm_scale=0.1), "kv_indices"),
        (lambda: attention_extend(q, cache, qo, kvp, loc, sm_scale=-1.0), "sm_scale"),
        (lambda: attention_extend(q, cache, qo, kvp, loc, sm_scale=0.1, sliding_window=-5), "sliding_window"),
        (lambda: attention_decode(q[:1], cache, kvp, loc, sm_scale=0.1, logit_cap=-1.0), "logit_cap"),
        (lambda: attention_decode(q, cache, kvp, loc, sm_scale=0.1), "kv_indptr"),
        (lambda: attention_extend(q, cache, qo, kvp, torch.tensor([0, 1, 2, 32], device=device), sm_scale=0.1),
         "kv_indices"),
        (lambda: attention_extend(q, cache, qo, torch.tensor([0, 5], device=device), loc, sm_scale=0.1),
         "kv_indices"),
        (lambda: attention_extend(q, cache, torch.tensor([0, 3], device=device), kvp, loc, sm_scale=0.1),
         "qo_indptr"),
        (lambda: attention_extend(q, cache, qo, torch.tensor([0, 2], device=device), loc, sm_scale=0.1),
         "new tokens"),
        (lambda: attention_extend(q, cache, qo, kvp, loc, sm_scale=0.1, max_extend_len=3), "max_extend_len"),
        (lambda: attention_decode(q[:1], cache, kvp, loc, sm_scale=0.1, max_seq_len=2), "max_seq_len"),
        (lambda: attention_extend(q, cache, qo, kvp, loc, sm_scale=float("inf")), "sm_scale"),
        (lambda: attention_decode(q[:1], cache, kvp, loc, sm_scale=float("nan")), "sm_scale"),
        (lambda: attention_decode(q[:1], cache, kvp, loc, sm_scale=0.1, logit_cap=float("inf")), "logit_cap"),
        (lambda: attention_decode(q[:2], cache, torch.tensor([0, 4, 4], device=device), loc, sm_scale=0.1),
         "kv_indptr"),
        (lambda: qk_int_scores(torch.zeros(8, 64, dtype=torch.int16), torch.zeros(16, 64, dtype=torch.int16)),
         "q_int"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=names_argument(name)):
            call()
    for a, b in zip(before, (cache.k, cache.k_scale, cache.v, cache.v_scale), strict=True):
        assert torch.equal(a, b), "a rejected call wrote to the cache"


def test_validate_once_per_batch_then_launch_unchecked(device):
    """validate_batch runs the launches' index checks once (a serving engine: once per batch, not per
    layer); validate=False launches then give the checked launches' bits and need the length bound."""
    from heal_kernels.attention import validate_batch

    lens = [40, 75]
    b = Batch(lens, 8, 2, 64, device, seed=4)
    kvp, kvi = b.kv([0, 1], lens)
    qo = torch.tensor([0, 10, 30], device=device)
    q = torch.cat([b.q[0][30:40], b.q[1][55:75]])
    assert validate_batch(b.cache, kvp, kvi, n_tokens=30, qo_indptr=qo) == 20
    assert validate_batch(b.cache, kvp, kvi, n_tokens=2) == 75
    ext = attention_extend(q, b.cache, qo, kvp, kvi, sm_scale=0.125)
    assert torch.equal(attention_extend(q, b.cache, qo, kvp, kvi, sm_scale=0.125, max_extend_len=20,
                                        validate=False, out=poisoned((30, 8, 64), device)), ext)
    qd = torch.stack([b.q[0][39], b.q[1][74]])
    dec = attention_decode(qd, b.cache, kvp, kvi, sm_scale=0.125)
    assert torch.equal(attention_decode(qd, b.cache, kvp, kvi, sm_scale=0.125, max_seq_len=75, validate=False,
                                        out=poisoned((2, 8, 64), device)), dec)
    with pytest.raises(ValueError, match="max_extend_len"):
        attention_extend(q, b.cache, qo, kvp, kvi, sm_scale=0.125, validate=False)
    with pytest.raises(ValueError, match="max_seq_len"):
        attention_decode(qd, b.cache, kvp, kvi, sm_scale=0.125, validate=False)
    # a bound whose q tiles overflow the grid's third dimension is refused before the launch, naming it
    with pytest.raises(ValueError, match="max_extend_len"):
        attention_extend(q, b.cache, qo, kvp, kvi, sm_scale=0.125, max_extend_len=1 << 26, validate=False)
    bad = kvi.clone()
    bad[3] = b.cache.num_slots
    with pytest.raises(ValueError, match="kv_indices"):
        validate_batch(b.cache, kvp, bad, n_tokens=30, qo_indptr=qo)
    with pytest.raises(ValueError, match="max_extend_len"):
        validate_batch(b.cache, kvp, kvi, n_tokens=30, qo_indptr=qo, max_len=19)
    with pytest.raises(ValueError, match="qo_indptr"):
        validate_batch(b.cache, kvp, kvi, n_tokens=31, qo_indptr=qo)
    # store_kv(validate=False) skips only the slot range check: the same bits as a checked store
    k = torch.randn(5, 2, 64, device=device)
    loc = torch.tensor([3, 9, 1, 0, 7], device=device)
    c1, c2 = kv_int16.new_int16_kv(16, 2, 64, device), kv_int16.new_int16_kv(16, 2, 64, device)
    kv_int16.store_kv(c1, loc, k, k)
    kv_int16.store_kv(c2, loc, k, k, validate=False)
    assert all(torch.equal(x, y) for x, y in zip((c1.k, c1.k_scale, c1.v, c1.v_scale),
                                                  (c2.k, c2.k_scale, c2.v, c2.v_scale), strict=True))
    with pytest.raises(ValueError, match="loc"):
        kv_int16.store_kv(c2, loc[:4], k, k, validate=False)  # shapes are still checked


def test_cache_checks_are_remembered_per_set_of_tensors(device):
    """check_cache runs on every store and attention launch; a cache whose four tensors passed once is not
    checked again (host time per layer), but any other set of tensors is, and a bad one still raises."""
    cache = kv_int16.new_int16_kv(16, 2, 64, device)
    kv_int16.check_cache(cache)
    assert id(cache.k) in kv_int16._CHECKED_CACHES
    kv_int16.check_cache(kv_int16.Int16KV(cache.k, cache.k_scale, cache.v, cache.v_scale))  # same tensors
    bad = kv_int16.Int16KV(cache.k, cache.k_scale, cache.v[:8], cache.v_scale)
    with pytest.raises(ValueError, match="cache.v has shape"):
        kv_int16.check_cache(bad)


def test_decode_writes_o_proj_split(device):
    """split_k: the merge also writes heal_matmul's split of the output rows [B, Hq * D], the bits
    split_tiles gives, with the output unchanged, whatever the merge's heads per program (a
    program's columns hold whole K tiles or the split falls back to split_tiles)."""
    import dataclasses

    from heal_kernels import configs
    from heal_kernels.matmul import split_tiles

    lens = [300, 40, 1]
    b = Batch(lens, 8, 2, 64, device, seed=3)
    pos = [n - 1 for n in lens]
    plain = b.decode([0, 1, 2], pos)
    merge = configs.attention_launch("sm90", "merge")
    for split_k, rows in ((64, 1), (64, 8), (128, 2), (256, 2), (16, 4)):  # (256, 2): a program holds 2 x 64 columns
        ml = dataclasses.replace(merge, rows=rows)
        out, split = b.decode([0, 1, 2], pos, out=poisoned((3, 8, 64), device), merge_launch=ml, split_k=split_k)
        assert torch.equal(out, plain), (split_k, rows)
        ref = split_tiles(plain.reshape(3, 8 * 64), split_k)
        assert split.block_k == split_k
        for part in ("hi", "lo", "ts"):
            assert torch.equal(getattr(split, part), getattr(ref, part)), (split_k, rows, part)
    with pytest.raises(ValueError, match="split_k"):
        b.decode([0], [5], split_k=48)
