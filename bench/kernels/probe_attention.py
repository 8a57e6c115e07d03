"""GPU probe of HEAL attention: time by launch options (warps, stages, rows) and KV block size; accuracy.

    python -m bench.kernels.probe_attention [--accuracy | --blocks | --extend-rows | --decode-shapes
                                            | --decode-launch[=BxCTX,...]
                                            | --merge | --halves | --shipped | --vs-sglang]
"""

from __future__ import annotations

import dataclasses
import itertools
import sys

import torch
import triton.testing

from bench.shapes import LLAMA3_8B_HEADS
from bench.timing import capture
from heal_kernels import attention, configs, kv_int16

HQ, HK, D = LLAMA3_8B_HEADS


def _compiled():
    from heal_kernels._kernels.attention import _attn_kernel, _decode_kernel

    return [k for fn in (_attn_kernel, _decode_kernel) for dc in fn.device_caches.values() for k in dc[0].values()]


def _resources(before: list) -> str:
    """Registers and spills of the attention kernel variants compiled since `before` (_compiled()); a
    variant compiled earlier (another shape or setting) cannot be told apart, so it reports none."""
    new = [k for k in _compiled() if all(k is not b for b in before)]
    for k in new:
        k._init_handles()
    return " ".join(f"regs {k.n_regs} spills {k.n_spills}" for k in new) or "(compiled earlier)"


def us(fn, reps=5):
    g = capture(fn, reps)
    return triton.testing.do_bench(g.replay, warmup=10, rep=100, return_mode="median") * 1e3 / reps


def accuracy():
    """Errors vs float64 (dequantized and unquantized inputs) next to FP32 and BF16 attention."""
    from heal_kernels import reference

    print("accuracy, one sequence of 2048 tokens, last 512 as new tokens, relative Frobenius error")
    for d, outliers in ((64, False), (128, False), (128, True), (256, False)):
        gen = torch.Generator().manual_seed(d)
        n, new, hq, hk = 2048, 512, 8, 2
        q, k, v = (torch.randn(n, h, d, generator=gen) for h in (hq, hk, hk))
        if outliers:
            k[..., : d // 16] *= 20
            v[..., d // 32: d // 16] *= 20
        q, k, v = q.cuda(), k.cuda(), v.cuda()
        cache = kv_int16.new_int16_kv(n, hk, d, "cuda")
        loc = torch.randperm(n, device="cuda")
        kv_int16.store_kv(cache, loc, k, v)
        qo = torch.tensor([0, new], device="cuda")
        kvp = torch.tensor([0, n], device="cuda")
        out = attention.attention_extend(q[n - new:], cache, qo, kvp, loc, sm_scale=d**-0.5)
        pos = torch.arange(n - new, n, device="cuda")
        deq = [reference.dequantize(*reference.quantize(x)) for x in (q[n - new:], k, v)]
        r64 = reference.attention_ref(*deq, pos, sm_scale=d**-0.5)
        r32 = reference.attention_ref(*deq, pos, sm_scale=d**-0.5, dtype=torch.float32)
        t64 = reference.attention_ref(q[n - new:], k, v, pos, sm_scale=d**-0.5)
        b16 = reference.attention_ref(q[n - new:], k, v, pos, sm_scale=d**-0.5, dtype=torch.bfloat16)
        t32 = reference.attention_ref(q[n - new:], k, v, pos, sm_scale=d**-0.5, dtype=torch.float32)
        e = [reference.rel_err(out, r64), reference.rel_err(r32, r64), reference.rel_err(out, t64),
             reference.rel_err(t32, t64), reference.rel_err(b16, t64)]
        print(f"  D{d} outliers={outliers}: vs dequantized: heal {e[0]:.2e} fp32 {e[1]:.2e} | vs unquantized: "
              f"heal {e[2]:.2e} fp32 {e[3]:.2e} bf16 {e[4]:.2e} (bf16/heal {e[4] / e[2]:.0f}x)", flush=True)


def decode_case(bs=16, ctx=8192):
    """A decode call over bs sequences of ctx tokens at scattered slots; returns (call, KV bytes)."""
    torch.manual_seed(0)
    slots = bs * ctx
    cache = kv_int16.new_int16_kv(slots, HK, D, "cuda")
    kv_int16.store_kv(cache, torch.arange(slots, device="cuda"), torch.randn(slots, HK, D, device="cuda"),
                      torch.randn(slots, HK, D, device="cuda"))
    kvp = torch.arange(0, slots + 1, ctx, device="cuda", dtype=torch.int32)
    kvi = torch.randperm(slots, device="cuda")
    q = torch.randn(bs, HQ, D, device="cuda")
    call = lambda max_seq_len=ctx, **kw: attention.attention_decode(q, cache, kvp, kvi, sm_scale=D**-0.5,
                                                                     max_seq_len=max_seq_len, **kw)
    return call, slots * kv_int16.bytes_per_token(HK, D)


def extend_case(t=4096, prefix=0):
    """A t-token prefill after `prefix` cached tokens (a later chunk of a chunked prefill); returns the call."""
    torch.manual_seed(0)
    n = prefix + t
    cache = kv_int16.new_int16_kv(n, HK, D, "cuda")
    kv_int16.store_kv(cache, torch.arange(n, device="cuda"), torch.randn(n, HK, D, device="cuda"),
                      torch.randn(n, HK, D, device="cuda"))
    qx = torch.randn(t, HQ, D, device="cuda")
    qo = torch.tensor([0, t], device="cuda", dtype=torch.int32)
    kvp = torch.tensor([0, n], device="cuda", dtype=torch.int32)
    loc = torch.arange(n, device="cuda")
    return lambda **kw: attention.attention_extend(qx, cache, qo, kvp, loc, sm_scale=D**-0.5, max_extend_len=t, **kw)


def _sweep(label, call, settings, kwargs, reps=5, nbytes=0):
    """Time `call(**kwargs(setting))` for each setting; check the bits never move."""
    ref = None
    for setting in settings:
        kw = kwargs(setting)
        before = _compiled()
        try:
            out = call(**kw)
            t = us(lambda: call(**kw), reps)
        except Exception as e:  # noqa: BLE001 - an out-of-resources setting is reported and skipped
            print(f"  {label} {setting}: {str(e)[:60]}")
            continue
        ref = out if ref is None else ref
        bw = f" {nbytes / (t * 1e-6) / 1e9:.0f} GB/s" if nbytes else ""
        name = setting[0] if isinstance(setting, tuple) and isinstance(setting[0], str) else setting
        print(f"  {label} {name}: {t:.1f} us{bw} same bits {torch.equal(out, ref)} {_resources(before)}", flush=True)


def _launch(path, warps, stages, **kw):
    base = configs.attention_launch("sm90", path)
    return {"launch": dataclasses.replace(base, num_warps=warps, num_stages=stages, **kw)}


def block_sweep():
    """Decode and extend time by KV block size (a numerics choice: both paths must use the same)."""
    dec, nbytes = decode_case()
    ext = extend_case()
    for bn in (64, 32, 16):
        num = configs.AttentionNumerics(kv_block=bn, split_tokens=configs.attention_numerics("sm90").split_tokens)
        _sweep(f"BN{bn} decode", dec, [(nw, 1) for nw in (1, 2, 4)],
               lambda st: {"numerics": num, **_launch("decode", *st)}, nbytes=nbytes)
        _sweep(f"BN{bn} extend", ext, [(nw, 1) for nw in (4, 8)],
               lambda st: {"numerics": num, **_launch("extend", *st)}, reps=2)


def extend_rows():
    """Extend (4k prefill) time by rows per program, warps and stages (not numerics: same bits)."""
    _sweep("extend 4k rows/warps/stages", extend_case(), itertools.product((32, 64, 128), (2, 4, 8), (1, 2)),
           lambda st: _launch("extend", st[1], st[2], rows=st[0]), reps=2)


def launch_sweep():
    """Decode and extend time by warps and stages."""
    dec, nbytes = decode_case()
    _sweep("decode B16 ctx8192 warps/stages", dec, itertools.product((1, 2, 4, 8), (1, 2, 3)),
           lambda st: _launch("decode", *st), nbytes=nbytes)
    _sweep("extend 4k warps/stages", extend_case(), itertools.product((4, 8), (1, 2, 3)),
           lambda st: _launch("extend", *st), reps=2)


def decode_shapes():
    """Decode by batch x context, at the exact bound and at a 131072-token bound (CUDA graphs at the
    model's default context length), by target programs, warps and split size (split size is numerics)."""
    for bs, ctx in ((1, 128), (1, 1024), (1, 8192), (16, 4096), (64, 1024)):
        dec, nbytes = decode_case(bs, ctx)
        _sweep(f"decode B{bs} ctx{ctx} bound/programs/warps/stages", dec,
               [(ctx, 8192, 1, 1), (131072, 8192, 1, 1), (131072, 2048, 1, 1), (ctx, 8192, 2, 1), (ctx, 8192, 1, 2),
                (ctx, 8192, 2, 2), (ctx, 32768, 1, 1)],
               lambda st: {"max_seq_len": st[0], **_launch("decode", st[2], st[3], programs=st[1])}, nbytes=nbytes)
        for split in (64, 128):
            num = configs.AttentionNumerics(kv_block=32, split_tokens=split)
            _sweep(f"decode B{bs} ctx{ctx} split {split}", dec, [(1, 1), (2, 1)],
                   lambda st: {"numerics": num, **_launch("decode", *st)}, nbytes=nbytes)
    for split in (256, 128, 64):
        num = configs.AttentionNumerics(kv_block=32, split_tokens=split)
        _sweep(f"extend 4k split {split}", extend_case(), [(4, 1)],
               lambda st: {"numerics": num, **_launch("extend", *st)}, reps=2)


def halves():
    """Extend 4k: K and V in two column halves (fewer live registers) by warps x rows x prefetch; the
    shipped launch first.  Launch choices: the bits must not move."""
    base = configs.attention_launch("sm90", "extend")
    _sweep("extend 4k", extend_case(),
           [("shipped", base)] + [(f"h{h} w{w} rows{r} f{int(f)}", dataclasses.replace(base, num_warps=w, rows=r,
                                                                                      prefetch=f, halves=h))
                                  for h, w, r, f in itertools.product((1, 2), (4, 8), (64, 128), (False, True))],
           lambda st: {"launch": st[1]}, reps=2)


def merge_launch():
    """Decode kernel + merge by batch x context at a 131072-token bound: the merge kernel's heads per
    program, warps and stages (launch choices: each row's splits fold alone, the bits must not move)."""
    for bs, ctx in ((1, 128), (1, 8192), (16, 4096), (64, 1024)):
        dec, nbytes = decode_case(bs, ctx)
        base = configs.attention_launch("sm90", "merge")
        _sweep(f"decode B{bs} ctx{ctx} merge heads/warps/stages", dec,
               itertools.product((1, 2, 4, 8), (1, 2, 4), (1, 3)),
               lambda st: {"max_seq_len": 131072,
                           "merge_launch": dataclasses.replace(base, rows=st[0], num_warps=st[1], num_stages=st[2])},
               nbytes=nbytes)


def decode_launch(shapes=((1, 128), (1, 1024), (1, 8192), (4, 2048), (8, 1024), (16, 4096), (64, 1024)),
                  extend=True):
    """Decode by batch x context at a 131072-token bound (CUDA graphs): warps x V-column programs x K/V
    prefetch (launch choices: the bits must not move), and extend 4k by warps x prefetch."""
    for bs, ctx in shapes:
        dec, nbytes = decode_case(bs, ctx)
        _sweep(f"decode B{bs} ctx{ctx} warps/d_parts/prefetch", dec,
               itertools.product((1, 2, 4), (1, 2, 4), (False, True)),
               lambda st: {"max_seq_len": 131072, **_launch("decode", st[0], 1, d_parts=st[1], prefetch=st[2])},
               nbytes=nbytes)
    if not extend:
        return
    _sweep("extend 4k warps/rows/prefetch", extend_case(), itertools.product((4, 8), (64, 128), (False, True)),
           lambda st: _launch("extend", st[0], 1, rows=st[1], prefetch=st[2]), reps=2)


def shipped():
    """The shipped launches only (decode at a 131072-token bound, extend 4k): time and a digest of the
    output's bits, to compare two source trees run one after the other on one GPU."""
    import hashlib

    cases = [(f"decode B{bs} ctx{ctx}", *decode_case(bs, ctx), {"max_seq_len": 131072})
             for bs, ctx in ((1, 128), (1, 8192), (16, 4096), (64, 1024))]
    cases.append(("extend 4k", extend_case(), 0, {}))
    for label, call, nbytes, kw in cases:
        out = call(**kw)
        t = us(lambda: call(**kw), 5 if nbytes else 2)
        digest = hashlib.sha256(out.contiguous().view(torch.uint8).cpu().numpy().tobytes()).hexdigest()[:16]
        bw = f" {nbytes / (t * 1e-6) / 1e9:.0f} GB/s" if nbytes else ""
        print(f"  {label}: {t:.1f} us{bw} bits {digest}", flush=True)


def vs_sglang(extends=((4096, 0), (16384, 0), (8192, 0), (8192, 8192))):
    """Extend (one prompt of t new tokens after `prefix` cached ones: a 16k prompt is two 8k chunks where
    --chunked-prefill-size is 8192, an H100's default) and decode, HEAL as shipped against SGLang's Triton
    BF16 kernels on the same shapes: the attention share of the time-to-first-token gap."""
    from bench.kernels import sglang_attention

    def bf16(*shape):
        return torch.randn(*shape, device="cuda", dtype=torch.bfloat16)

    for t, prefix in extends:
        heal = extend_case(t, prefix)
        torch.manual_seed(0)
        pre = (bf16(prefix, HK, D), bf16(prefix, HK, D)) if prefix else (None, None)
        sgl, _ = sglang_attention.extend_call(bf16(t, HQ, D), bf16(t, HK, D), bf16(t, HK, D), D**-0.5, *pre)
        th, tb = us(heal, 2), us(sgl, 2)
        print(f"  extend {t} after {prefix}: heal {th:.1f} us, sglang bf16 {tb:.1f} us, ratio {th / tb:.2f}",
              flush=True)
    for bs, ctx in ((1, 128), (1, 8192), (16, 4096), (64, 256)):
        heal, _ = decode_case(bs, ctx)
        torch.manual_seed(0)
        slots = bs * ctx
        kvp = torch.arange(0, slots + 1, ctx, device="cuda", dtype=torch.int32)
        sgl, _ = sglang_attention.decode_call(bf16(bs, HQ, D), bf16(slots, HK, D), bf16(slots, HK, D), kvp,
                                           torch.randperm(slots, device="cuda"), D**-0.5)
        th, tb = us(lambda: heal(max_seq_len=131072)), us(sgl)
        print(f"  decode B{bs} ctx{ctx}: heal {th:.1f} us, sglang bf16 {tb:.1f} us, ratio {th / tb:.2f}",
              flush=True)


def main():
    if "--shipped" in sys.argv:
        shipped()
    elif "--vs-sglang" in sys.argv:
        vs_sglang()
    elif any(a.startswith("--decode-launch=") for a in sys.argv):  # e.g. --decode-launch=64x128,256x512
        arg = next(a for a in sys.argv if a.startswith("--decode-launch="))
        decode_launch([tuple(int(v) for v in s.split("x")) for s in arg.split("=", 1)[1].split(",")], extend=False)
    elif "--decode-launch" in sys.argv:
        decode_launch()
    elif "--extend-rows" in sys.argv:
        extend_rows()
    elif "--accuracy" in sys.argv:
        accuracy()
    elif "--blocks" in sys.argv:
        block_sweep()
    elif "--merge" in sys.argv:
        merge_launch()
    elif "--halves" in sys.argv:
        halves()
    elif "--decode-shapes" in sys.argv:
        decode_shapes()
    else:
        launch_sweep()


if __name__ == "__main__":
    main()
