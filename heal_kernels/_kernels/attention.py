"""Triton code of HEAL's paged attention on an INT16 KV cache.

Scores.  Q (quantized per row in registers) and K are int16 values split into int8
parts: q = hi * 256 + lo with lo in [-128, 127] (_split16), k = hi * 256 + (lo - 128) + 128
from its two bytes (_k_bytes), the + 128 of every k added once per q row as 128 * sum(q)
(in the accumulators' initial values); the three int8 MMAs (hi.hi, hi.lo + lo.hi, lo.lo)
are exact int32 sums, whose exact combination is rounded once to fp32 (_score_f32: as an
int64 -> fp32 conversion would), then scaled by q_scale * sm_scale and k_scale.  No score
depends on accumulation order or on the GPU.

Softmax.  Online softmax in FP32 over KV blocks of BLOCK_N tokens aligned to absolute
positions, in ascending order, inside splits of SPLIT tokens.  Each split starts from
an empty state; split states are folded in ascending order with one formula
(_fold), in registers (extend) or by the merge kernel (decode).  Masked keys and
empty blocks or splits are exact identities, so a query token's output is the same
whichever path, batch, chunk or page placement computes it.  Row sums are taken from
an MMA (each element's value does not depend on the tile's layout), maxima by tl.max.

P.V.  p * v_scale is split per row and block into FP16 hi + lo with a power-of-two
scale (_split_tile); V's int16 values split into int8 parts that FP16 holds exactly;
four FP16 MMAs in two fresh chains, combined and added to the FP32 accumulator by two
explicit fmas (_pv_add).

Kernels are launched with enable_fp_fusion=False so that every fp32 expression is
evaluated as written in both paths; the fmas are written out (tl.fma).
"""

from __future__ import annotations

import triton
import triton.language as tl

from heal_kernels._kernels.primitives import _dot2, _quantize_rows, _split16, _split_row_tiles, _split_tile

LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def _qk_acc(qh, ql, kh_t, kl_t, hh, mix, ll):
    """q.k for int16 values given as int8 parts (q [R, D], k^T [D, N]) added to the int32 accumulators
    (hh, mix, ll) [R, N]: q.k == hh * 65536 + mix * 256 + ll, every MMA an exact integer sum."""
    hh = tl.dot(qh, kh_t, hh, out_dtype=tl.int32)
    mix = tl.dot(ql, kh_t, tl.dot(qh, kl_t, mix, out_dtype=tl.int32), out_dtype=tl.int32)
    ll = tl.dot(ql, kl_t, ll, out_dtype=tl.int32)
    return hh, mix, ll


@triton.jit
def _q_offset(q_int):
    """The accumulators' initial (mix, ll) [R] for 128 * sum(q) per row (the 128 _k_bytes leaves out of
    each K value): 128 * S == (S >> 1) * 256 + (S & 1) * 128, an integer sum, exact in any order."""
    total = tl.sum(q_int, axis=1)
    return total >> 1, (total & 1) * 128


@triton.jit
def _i2f_small(x):
    """int32 x with |x| <= 2**22 -> fp32, exactly: x added to the bits of 1.5 * 2**23 (where fp32's step
    is 1) and the 1.5 * 2**23 taken off again, two full-rate ops where a conversion issues at a fraction."""
    return (x + 0x4B400000).to(tl.float32, bitcast=True) - 12582912.0


@triton.jit
def _score_f32(hh, mix, ll, HEAD_DIM: tl.constexpr):
    """The exact integer hh * 65536 + mix * 256 + ll rounded once to fp32 (the bits of int64 -> fp32).

    t = hh * 256 + mix, then t = th * 256 + (t & 255): the integer is th * 65536 + b with
    b = (t & 255) * 256 + ll, both parts exact in fp32 and th * 65536 exact, so one fma rounds the exact
    sum once.  Bounds (|q's parts . k's parts| <= 2**14 per product, 128 * sum(q) in the initial values):
    HEAD_DIM 128: |t| < 2**30, |th| and |b| < 2**22 (_i2f_small); 256: |t| < 2**31, |th| and |b| < 2**23
    (a conversion, exact below 2**24).
    """
    t = hh * 256 + mix
    th = t >> 8
    b = (t & 255) * 256 + ll
    if HEAD_DIM <= 128:
        return tl.fma(_i2f_small(th), 65536.0, _i2f_small(b))
    return tl.fma(th.to(tl.float32), 65536.0, b.to(tl.float32))


@triton.jit
def _fold(M, L, ACC, m, ls, acc):
    """Merge softmax state (m, ls, acc) into (M, L, ACC); an empty state (-inf, 0, 0) is an exact identity."""
    m_new = tl.maximum(M, m)
    empty = m_new == float("-inf")
    a = tl.where(empty, 1.0, tl.exp2(M - m_new))
    b = tl.where(empty, 0.0, tl.exp2(m - m_new))
    return m_new, L * a + ls * b, ACC * a[:, None] + acc * b[:, None]


@triton.jit
def _load_cols(ptr, slots, ok, kvh, stride_cs, stride_ch, c0, W: tl.constexpr):
    """Columns [c0, c0 + W) of the block's K or V rows (0 where not ok)."""
    c = c0 + tl.arange(0, W)
    return tl.load(ptr + slots[:, None] * stride_cs + kvh * stride_ch + c[None, :], mask=ok[:, None], other=0)


@triton.jit
def _slots(idx_ptr, kv_base, b0, seq_len, BLOCK_N: tl.constexpr):
    """The cache slots of the sequence's positions [b0, b0 + BLOCK_N) (0 at or past seq_len)."""
    j = tl.arange(0, BLOCK_N)
    return tl.load(idx_ptr + (kv_base + b0) + j, mask=j < seq_len - b0, other=0).to(tl.int64)


@triton.jit
def _load_scales(ptr, slots, ok, kvh, stride_ss, BLOCK_N: tl.constexpr, WIDE: tl.constexpr):
    """The block's K or V scales [BLOCK_N] (0 where not ok).

    WIDE: loaded as column 0 of a [BLOCK_N, 8] tile whose other columns are masked to 0 and summed
    away (x + 0 is x, NaN and inf included).  A plain [BLOCK_N] load lives in the slots' 1-D layout,
    and where the score tile needs it Triton rematerializes the slots and the load in the MMA's layout
    every block; the reduction of a 2-D tile lands in a layout it converts cheaply.  Fewer instructions
    per block in the extend loop without the mask (bench.kernels.sass_mix), more where the mask's
    work follows, so only there.
    """
    if WIDE:
        c = tl.arange(0, 8)
        x = tl.load(ptr + (slots * stride_ss + kvh)[:, None] + c[None, :], mask=ok[:, None] & (c == 0)[None, :],
                    other=0.0)
        return tl.sum(x, axis=1)
    return tl.load(ptr + slots * stride_ss + kvh, mask=ok, other=0.0)


@triton.jit
def _load_kv(b0, limit, slots, kc_ptr, ks_ptr, vc_ptr, vs_ptr, kvh, stride_cs, stride_ch, stride_ss, d0,
             HEAD_DIM: tl.constexpr, DV: tl.constexpr, BLOCK_N: tl.constexpr, HALVES: tl.constexpr,
             WIDE: tl.constexpr = False):
    """The block at b0 (0 past `limit`): K in HALVES column runs (k0, k1), V's columns [d0, d0 + DV)
    likewise (v0, v1), and the scales (WIDE: _load_scales).  With HALVES = 1, k1 and v1 are k0 and v0
    (unused)."""
    # one scalar subtraction, where b0 + arange would add to every lane (and compare in 64 bits)
    ok = tl.arange(0, BLOCK_N) < limit - b0
    KW: tl.constexpr = HEAD_DIM // HALVES
    VW: tl.constexpr = DV // HALVES
    k0 = _load_cols(kc_ptr, slots, ok, kvh, stride_cs, stride_ch, 0, KW)
    v0 = _load_cols(vc_ptr, slots, ok, kvh, stride_cs, stride_ch, d0, VW)
    if HALVES == 2:
        k1 = _load_cols(kc_ptr, slots, ok, kvh, stride_cs, stride_ch, KW, KW)
        v1 = _load_cols(vc_ptr, slots, ok, kvh, stride_cs, stride_ch, d0 + VW, VW)
    else:
        k1 = k0
        v1 = v0
    sk = _load_scales(ks_ptr, slots, ok, kvh, stride_ss, BLOCK_N, WIDE)
    sv = _load_scales(vs_ptr, slots, ok, kvh, stride_ss, BLOCK_N, WIDE)
    return k0, k1, v0, v1, sk, sv


@triton.jit
def _k_bytes(k, EXACT: tl.constexpr):
    """K's int16 tile -> its bytes as int8 (hi, lo - 128): k == hi * 256 + (lo - 128) + 128.

    On the GPU one byte permute per part and four values (and one xor for lo) instead of a
    sign-extension, add, mask and shift per value; the + 128 of every value is folded into the
    scores once per q row (_q_offset).  EXACT (the interpreter, which runs no PTX): the same
    bytes in Triton ops.
    """
    if EXACT:
        k32 = k.to(tl.int32)
        return (k32 >> 8).to(tl.int8), ((k32 & 255) - 128).to(tl.int8)
    return tl.inline_asm_elementwise(
        asm="""{
        prmt.b32 $0, $2, $3, 0x7531;
        prmt.b32 $1, $2, $3, 0x6420;
        xor.b32 $1, $1, 0x80808080;
        }""",
        constraints="=r,=r,r,r", args=[k], dtype=(tl.int8, tl.int8), is_pure=True, pack=4)


@triton.jit
def _qk_tile(qh, ql, k, hh, mix, ll, EXACT: tl.constexpr):
    """_qk_acc of q's int8 parts and a K tile of int16 values [N, W] over the same W columns, less
    128 * (the sum of q's values over the W columns): _k_bytes' parts leave out 128 per value."""
    kh, kl = _k_bytes(k, EXACT)
    return _qk_acc(qh, ql, tl.trans(kh), tl.trans(kl), hh, mix, ll)


@triton.jit
def _v_parts(v, EXACT: tl.constexpr):
    """V's int16 tile -> (hi, lo) FP16 with v == hi * 256 + lo, lo in [-128, 127] (_split16's parts).

    On the GPU from the bytes of v + 128 (two 16-bit lanes per register, added without a carry
    between them) placed under FP16's exponent for 1024 (0x64XX == 1024 + XX, exact) and one
    packed FP16 subtraction of 1152 per two values: no int -> float conversions, which issue at a
    quarter of the ALU rate.  EXACT (the interpreter): _split16.
    """
    if EXACT:
        vh, vl = _split16(v.to(tl.int32))
        return vh.to(tl.float16), vl.to(tl.float16)
    return tl.inline_asm_elementwise(
        asm="""{
        .reg .b32 t<2>, m, c;
        mov.b32 m, 0x64806480;
        and.b32 t0, $4, 0x7fff7fff;
        add.u32 t0, t0, 0x00800080;
        and.b32 c, $4, 0x80008000;
        xor.b32 t0, t0, c;
        xor.b32 t0, t0, 0x80008000;
        and.b32 t1, $5, 0x7fff7fff;
        add.u32 t1, t1, 0x00800080;
        and.b32 c, $5, 0x80008000;
        xor.b32 t1, t1, c;
        xor.b32 t1, t1, 0x80008000;
        prmt.b32 $0, t0, 0x64646464, 0x4341;
        prmt.b32 $1, t1, 0x64646464, 0x4341;
        prmt.b32 $2, t0, 0x64646464, 0x4240;
        prmt.b32 $3, t1, 0x64646464, 0x4240;
        sub.f16x2 $0, $0, m;
        sub.f16x2 $1, $1, m;
        sub.f16x2 $2, $2, m;
        sub.f16x2 $3, $3, m;
        }""",
        constraints="=r,=r,=r,=r,r,r", args=[v], dtype=(tl.float16, tl.float16), is_pure=True, pack=4)


@triton.jit
def _pv(acc, alpha, p_hi, p_lo, p_inv, v, EXACT: tl.constexpr):
    """acc * alpha + (P.V over v's columns): V's int16 values as int8 parts (exact in FP16), four FP16 MMAs.

    _pv_add's arithmetic (shared with _block_t, so decode and extend round alike)."""
    vh, vl = _v_parts(v, EXACT)
    pv_h = _dot2(p_hi, p_lo, vh, EXACT)
    pv_l = _dot2(p_hi, p_lo, vl, EXACT)
    return _pv_add(acc * alpha[:, None], pv_h, pv_l, p_inv[:, None])


@triton.jit
def _pv_add(acc, pv_h, pv_l, p_inv):
    """acc + (pv_h * 256 + pv_l) * p_inv: two fmas.  pv_h * 256 is exact, and so is the product with p_inv (a
    power of two) unless it falls below FP32's normal range, so each fma rounds what a multiply and an add
    would, except that a product under 2**-126 is not rounded before it is added."""
    return tl.fma(tl.fma(pv_h, 256.0, pv_l), p_inv, acc)


@triton.jit
def _block(
    m_i, l_i, acc0, acc1, qh0, ql0, qh1, ql1, q_mix, q_ll, qs, pos_q, row_ok, b0, seq_len, k0, k1, v0, v1, sk, sv,
    window, cap, ones,
    BLOCK_N: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_CAP: tl.constexpr, EXACT: tl.constexpr,
    HALVES: tl.constexpr, HEAD_DIM: tl.constexpr, MASKED: tl.constexpr = True,
):
    """One KV block [b0, b0 + BLOCK_N) of one sequence into the online-softmax state (log2 domain).

    K, V and their scales come from _load_kv (zero past the sequence's end).  Scores use all
    HEAD_DIM columns of K; P.V only the DV columns of V it was given (acc0, acc1: its HALVES column
    runs): each output column's MMA sums the same products whichever columns share the tile.
    HALVES = 2 computes the scores as two exact integer halves over K's columns (their int64 sum
    is the same integer) and P.V one half of the columns after the other: the bits of HALVES = 1,
    with fewer registers live at once.  MASKED = False, for a block every row of the program sees whole
    (inside the sequence, at or before every row's position, no window), leaves out the visibility mask,
    an identity there: the same bits with fewer instructions.
    """
    # the exact integer q.k: the tiles' parts, and 128 * sum(q) for the 128 they leave out of each K value
    R: tl.constexpr = qh0.shape[0]
    hh, mix, ll = _qk_tile(qh0, ql0, k0, tl.zeros([R, BLOCK_N], tl.int32),
                           tl.broadcast_to(q_mix[:, None], [R, BLOCK_N]), tl.broadcast_to(q_ll[:, None], [R, BLOCK_N]),
                           EXACT)
    if HALVES == 2:
        hh, mix, ll = _qk_tile(qh1, ql1, k1, hh, mix, ll, EXACT)
    # the scales multiply first: the exact integer score times q's scale alone overflows for a
    # q row near FP32's max, where the score itself (times k's scale) is finite
    s = _score_f32(hh, mix, ll, HEAD_DIM) * (qs[:, None] * sk[None, :])
    if HAS_CAP:
        # cap * tanh(s / cap), tanh(y) = 1 - 2 / (exp(2y) + 1). The tensor goes left of the
        # constexpr: Triton 3.8's interpreter keeps `constexpr * tensor` a constexpr, which exp2 refuses.
        s = cap * (1.0 - 2.0 / (tl.exp2((s / cap) * (2.0 * LOG2E)) + 1.0))
    s = s * LOG2E
    if MASKED:
        pos_k = b0 + tl.arange(0, BLOCK_N)
        visible = (pos_k < seq_len)[None, :] & (pos_k[None, :] <= pos_q[:, None]) & row_ok[:, None]
        if HAS_WINDOW:
            visible = visible & (pos_q[:, None] - pos_k[None, :] <= window)
        s = tl.where(visible, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    empty = m_new == float("-inf")
    alpha = tl.where(empty, 1.0, tl.exp2(m_i - m_new))
    p = tl.where(empty[:, None], 0.0, tl.exp2(s - m_new[:, None]))
    pv = p * sv[None, :]
    if MASKED:
        # a hidden key adds exactly 0, also when its V row is non-finite (0 * inf would be NaN)
        pv = tl.where(visible, pv, 0.0)
    p_hi, p_lo, p_inv = _split_tile(pv)
    acc0 = _pv(acc0, alpha, p_hi, p_lo, p_inv, v0, EXACT)
    if HALVES == 2:
        acc1 = _pv(acc1, alpha, p_hi, p_lo, p_inv, v1, EXACT)
    # Row sum of p from an MMA (every column of `ones` is 1, so every output column holds
    # the sum; tl.max picks it exactly), not tl.sum, whose order follows the tile layout.
    s_hi, s_lo, s_inv = _split_tile(p)
    p_sum = tl.max(_dot2(s_hi, s_lo, ones, EXACT), axis=1) * s_inv
    l_i = l_i * alpha + p_sum
    return m_new, l_i, acc0, acc1


@triton.jit
def _halves(x, R: tl.constexpr, W: tl.constexpr):
    """x [R, 2 W] -> (x[:, :W], x[:, W:])."""
    return tl.split(tl.permute(tl.reshape(x, [R, 2, W]), [0, 2, 1]))


@triton.jit
def _attn_kernel(
    q_ptr, out_ptr,
    qo_indptr_ptr, kv_indptr_ptr, idx_ptr,
    kc_ptr, ks_ptr, vc_ptr, vs_ptr,
    sm_scale, window, cap,
    stride_qt, stride_qh, stride_ot, stride_oh,
    stride_cs, stride_ch, stride_ss,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    SPLIT: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_CAP: tl.constexpr,
    EXACT: tl.constexpr, PREFETCH: tl.constexpr = False, HALVES: tl.constexpr = 1,
):
    """Extend.  Rows of a program: (token, q head of the kv head's group), token-major.

    Grid (kv heads, sequences, q tiles), the last q tile first: a tile's work grows with its position
    (causal), and the GPU starts programs in grid order, so the longest start first and the short ones
    fill in behind them.  Every split up to the tile's last position, folded in registers, output
    written.  HALVES (1 or 2): see _block; a launch choice, like PREFETCH.  Decode is _decode_kernel
    (the same blocks and splits, so the same bits).
    """
    VW: tl.constexpr = HEAD_DIM // HALVES
    kvh = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1).to(tl.int64)
    tile = tl.num_programs(2) - 1 - tl.program_id(2)
    kv_base = tl.load(kv_indptr_ptr + b).to(tl.int64)
    seq_len = (tl.load(kv_indptr_ptr + b + 1) - kv_base).to(tl.int32)
    q_start = tl.load(qo_indptr_ptr + b).to(tl.int64)
    ext_len = (tl.load(qo_indptr_ptr + b + 1) - q_start).to(tl.int32)
    TOKENS: tl.constexpr = BLOCK_M // GROUP
    if tile * TOKENS >= ext_len:
        return
    r = tl.arange(0, BLOCK_M)
    tok = tile * TOKENS + r // GROUP
    head = kvh * GROUP + r % GROUP
    row_ok = (tok < ext_len) & (r < TOKENS * GROUP)
    pos_q = seq_len - ext_len + tok
    d = tl.arange(0, HEAD_DIM)
    q_rows = q_ptr + (q_start + tok.to(tl.int64))[:, None] * stride_qt + head[:, None] * stride_qh + d[None, :]
    q = tl.load(q_rows, mask=row_ok[:, None], other=0.0).to(tl.float32)
    q_int, q_scale = _quantize_rows(q)
    q_mix, q_ll = _q_offset(q_int)
    if HALVES == 2:
        q_a, q_b = _halves(q_int, BLOCK_M, HEAD_DIM // 2)
        qh0, ql0 = _split16(q_a)
        qh1, ql1 = _split16(q_b)
        qh1 = qh1.to(tl.int8)
        ql1 = ql1.to(tl.int8)
    else:
        qh0, ql0 = _split16(q_int)
    qh0 = qh0.to(tl.int8)
    ql0 = ql0.to(tl.int8)
    if HALVES == 1:
        qh1 = qh0
        ql1 = ql0
    qs = q_scale * sm_scale
    ones = tl.full([BLOCK_N, 16], 1.0, tl.float16)

    NEG_INF: tl.constexpr = float("-inf")
    M = tl.full([BLOCK_M], NEG_INF, tl.float32)
    L = tl.zeros([BLOCK_M], tl.float32)
    ACC0 = tl.zeros([BLOCK_M, VW], tl.float32)
    ACC1 = tl.zeros([BLOCK_M, VW], tl.float32)
    end = tl.minimum(seq_len - ext_len + (tile + 1) * TOKENS, seq_len)  # one past the tile's last position
    # blocks ending at or before full_end are seen whole by every row of the tile (none with a sliding window)
    full_end = -1 if HAS_WINDOW else tl.minimum(seq_len - ext_len + tile * TOKENS + 1, seq_len)
    for s in range(0, tl.cdiv(end, SPLIT)):
        m_i = tl.full([BLOCK_M], NEG_INF, tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc0 = tl.zeros([BLOCK_M, VW], tl.float32)
        acc1 = tl.zeros([BLOCK_M, VW], tl.float32)
        b_end = tl.minimum((s + 1) * SPLIT, end)
        slots = _slots(idx_ptr, kv_base, s * SPLIT, seq_len, BLOCK_N)
        if PREFETCH:
            k0, k1, v0, v1, sk, sv = _load_kv(s * SPLIT, seq_len, slots, kc_ptr, ks_ptr, vc_ptr, vs_ptr, kvh,
                                              stride_cs, stride_ch, stride_ss, 0, HEAD_DIM, HEAD_DIM, BLOCK_N, HALVES,
                                              True)
        # the blocks seen whole by every row first, without the mask, then the rest (the same order)
        mid = tl.maximum(tl.minimum((full_end // BLOCK_N) * BLOCK_N, b_end), s * SPLIT)
        for phase in tl.static_range(2):
            for b0 in range(s * SPLIT if phase == 0 else mid, mid if phase == 0 else b_end, BLOCK_N):
                # the next block's slots (and with PREFETCH its K and V) are fetched before this block's work
                slots_next = _slots(idx_ptr, kv_base, b0 + BLOCK_N, seq_len, BLOCK_N)
                if PREFETCH:
                    k0_next, k1_next, v0_next, v1_next, sk_next, sv_next = _load_kv(
                        b0 + BLOCK_N, tl.minimum(b_end, seq_len), slots_next, kc_ptr, ks_ptr, vc_ptr, vs_ptr,
                        kvh, stride_cs, stride_ch, stride_ss, 0, HEAD_DIM, HEAD_DIM, BLOCK_N, HALVES, phase == 0)
                else:
                    k0, k1, v0, v1, sk, sv = _load_kv(b0, seq_len, slots, kc_ptr, ks_ptr, vc_ptr, vs_ptr, kvh,
                                                      stride_cs, stride_ch, stride_ss, 0, HEAD_DIM, HEAD_DIM, BLOCK_N,
                                                      HALVES, phase == 0)
                m_i, l_i, acc0, acc1 = _block(
                    m_i, l_i, acc0, acc1, qh0, ql0, qh1, ql1, q_mix, q_ll, qs, pos_q, row_ok, b0, seq_len, k0, k1, v0,
                    v1, sk, sv, window, cap, ones, BLOCK_N, HAS_WINDOW, HAS_CAP, EXACT, HALVES, HEAD_DIM,
                    phase == 1,
                )
                slots = slots_next
                if PREFETCH:
                    k0, k1, v0, v1, sk, sv = k0_next, k1_next, v0_next, v1_next, sk_next, sv_next
        M_new, L_new, ACC0 = _fold(M, L, ACC0, m_i, l_i, acc0)
        if HALVES == 2:
            _, _, ACC1 = _fold(M, L, ACC1, m_i, l_i, acc1)
        M, L = M_new, L_new
    o_rows = out_ptr + (q_start + tok.to(tl.int64))[:, None] * stride_ot + head[:, None] * stride_oh
    cols = tl.arange(0, VW)
    tl.store(o_rows + cols[None, :], ACC0 / L[:, None], mask=row_ok[:, None])
    if HALVES == 2:
        tl.store(o_rows + (cols + VW)[None, :], ACC1 / L[:, None], mask=row_ok[:, None])


@triton.jit
def _dot2_left(a, b_hi, b_lo, EXACT: tl.constexpr):
    """a . b_hi + a . b_lo as one fp32 MMA chain: _dot2 with its operands' roles swapped (each output
    element sums the same products in the same order as _dot2 of the transposes)."""
    if EXACT:
        a64 = a.to(tl.float64)
        lo = tl.dot(a64, b_lo.to(tl.float64), out_dtype=tl.float64)
        return tl.dot(a64, b_hi.to(tl.float64), lo, out_dtype=tl.float64).to(tl.float32)
    return tl.dot(a, b_hi, tl.dot(a, b_lo))


@triton.jit
def _split_cols(x):
    """_split_tile of each column of x [N, R] (the rows of x^T): (hi, lo [N, R], 2**-shift [R])."""
    hi, lo, inv = _split_tile(tl.trans(x))
    return tl.trans(hi), tl.trans(lo), inv


@triton.jit
def _block_t(
    m_i, l_i, acc, qh_t, ql_t, q_mix, q_ll, qs, pos_q, row_ok, b0, seq_len, k, v, sk, sv, window, cap, ones_t,
    BLOCK_N: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_CAP: tl.constexpr, EXACT: tl.constexpr,
    HEAD_DIM: tl.constexpr,
):
    """_block for one decode token, transposed: keys along the MMA's M side, the group's q heads along N.

    Scores s^T [BLOCK_N, R] = K . q^T and P.V's output acc^T [DV, R] = V^T . P^T: the same exact integer
    scores, the same elementwise steps and splits (per q head, over the block's keys) and the same
    products summed in the same order per output element as _block's, so the same bits.  With a
    group of 4 to 8 q heads the MMAs' N = 8 holds them where _block's M = 16 did, half the MMAs and
    half the accumulator.
    """
    pos_k = b0 + tl.arange(0, BLOCK_N)
    in_seq = pos_k < seq_len
    kh, kl = _k_bytes(k, EXACT)
    R: tl.constexpr = qh_t.shape[1]
    hh, mix, ll = _qk_acc(kh, kl, qh_t, ql_t, tl.zeros([BLOCK_N, R], tl.int32),
                          tl.broadcast_to(q_mix[None, :], [BLOCK_N, R]), tl.broadcast_to(q_ll[None, :], [BLOCK_N, R]))
    s = _score_f32(hh, mix, ll, HEAD_DIM) * (qs[None, :] * sk[:, None])
    if HAS_CAP:
        s = cap * (1.0 - 2.0 / (tl.exp2((s / cap) * (2.0 * LOG2E)) + 1.0))
    s = s * LOG2E
    visible = in_seq[:, None] & (pos_k[:, None] <= pos_q) & row_ok[None, :]
    if HAS_WINDOW:
        visible = visible & (pos_q - pos_k[:, None] <= window)
    s = tl.where(visible, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=0))
    empty = m_new == float("-inf")
    alpha = tl.where(empty, 1.0, tl.exp2(m_i - m_new))
    p = tl.where(empty[None, :], 0.0, tl.exp2(s - m_new[None, :]))
    p_hi, p_lo, p_inv = _split_cols(tl.where(visible, p * sv[:, None], 0.0))
    vh, vl = _v_parts(v, EXACT)
    pv_h = _dot2_left(tl.trans(vh), p_hi, p_lo, EXACT)
    pv_l = _dot2_left(tl.trans(vl), p_hi, p_lo, EXACT)
    acc = _pv_add(acc * alpha[None, :], pv_h, pv_l, p_inv[None, :])
    s_hi, s_lo, s_inv = _split_cols(p)
    p_sum = tl.max(_dot2_left(ones_t, s_hi, s_lo, EXACT), axis=0) * s_inv
    l_i = l_i * alpha + p_sum
    return m_new, l_i, acc


@triton.jit
def _decode_kernel(
    q_ptr, pm_ptr, pl_ptr, pacc_ptr, kv_indptr_ptr, idx_ptr,
    kc_ptr, ks_ptr, vc_ptr, vs_ptr,
    sm_scale, window, cap,
    stride_qt, stride_qh, stride_cs, stride_ch, stride_ss, stride_pb, stride_ph, stride_ps,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
    SPLIT: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_CAP: tl.constexpr, EXACT: tl.constexpr,
    D_PARTS: tl.constexpr = 1, PREFETCH: tl.constexpr = False,
):
    """Decode, one token per sequence, with _block_t: the bits of _attn_kernel's row for that token.

    Grid (programs x D_PARTS, sequences, kv heads); ROWS (a power of two >= GROUP) q heads of the kv
    head's group; program p computes the sequence's splits p, p + programs, ... and writes each
    split's state to the partials for _merge_kernel.  With D_PARTS > 1 (few sequences: more
    programs for the GPU) each of D_PARTS programs computes the same scores and P.V for its
    HEAD_DIM / D_PARTS columns of V only; the bits are those of one program doing all columns.
    Splits past the sequence's end are neither computed nor written: the merge stops at the
    sequence's last split, and an empty split would be an exact identity of the fold anyway.
    """
    DV: tl.constexpr = HEAD_DIM // D_PARTS
    pid0 = tl.program_id(0) // D_PARTS
    d0 = (tl.program_id(0) % D_PARTS) * DV
    b = tl.program_id(1).to(tl.int64)
    kvh = tl.program_id(2).to(tl.int64)
    kv_base = tl.load(kv_indptr_ptr + b).to(tl.int64)
    seq_len = (tl.load(kv_indptr_ptr + b + 1) - kv_base).to(tl.int32)
    if pid0 * SPLIT >= seq_len:
        return  # no split of this sequence is this program's: leave before loading anything
    r = tl.arange(0, ROWS)
    head = kvh * GROUP + r
    row_ok = r < GROUP
    pos_q = seq_len - 1
    d = tl.arange(0, HEAD_DIM)
    q = tl.load(q_ptr + b * stride_qt + head[:, None] * stride_qh + d[None, :], mask=row_ok[:, None], other=0.0)
    q_int, q_scale = _quantize_rows(q.to(tl.float32))
    q_mix, q_ll = _q_offset(q_int)
    qh, ql = _split16(q_int)
    qh_t = tl.trans(qh.to(tl.int8))
    ql_t = tl.trans(ql.to(tl.int8))
    qs = q_scale * sm_scale
    ones_t = tl.full([16, BLOCK_N], 1.0, tl.float16)
    for s in range(pid0, tl.cdiv(seq_len, SPLIT), tl.num_programs(0) // D_PARTS):
        m_i = tl.full([ROWS], float("-inf"), tl.float32)
        l_i = tl.zeros([ROWS], tl.float32)
        acc = tl.zeros([DV, ROWS], tl.float32)
        b_end = tl.minimum((s + 1) * SPLIT, seq_len)
        slots = _slots(idx_ptr, kv_base, s * SPLIT, seq_len, BLOCK_N)
        if PREFETCH:
            k, _, v, _, sk, sv = _load_kv(s * SPLIT, seq_len, slots, kc_ptr, ks_ptr, vc_ptr, vs_ptr, kvh,
                                          stride_cs, stride_ch, stride_ss, d0, HEAD_DIM, DV, BLOCK_N, 1)
        for b0 in range(s * SPLIT, b_end, BLOCK_N):
            slots_next = _slots(idx_ptr, kv_base, b0 + BLOCK_N, seq_len, BLOCK_N)
            if PREFETCH:
                k_next, _, v_next, _, sk_next, sv_next = _load_kv(
                    b0 + BLOCK_N, b_end, slots_next, kc_ptr, ks_ptr, vc_ptr, vs_ptr,
                    kvh, stride_cs, stride_ch, stride_ss, d0, HEAD_DIM, DV, BLOCK_N, 1)
            else:
                k, _, v, _, sk, sv = _load_kv(b0, seq_len, slots, kc_ptr, ks_ptr, vc_ptr, vs_ptr, kvh,
                                              stride_cs, stride_ch, stride_ss, d0, HEAD_DIM, DV, BLOCK_N, 1)
            m_i, l_i, acc = _block_t(m_i, l_i, acc, qh_t, ql_t, q_mix, q_ll, qs, pos_q, row_ok, b0, seq_len, k, v, sk,
                                     sv, window, cap, ones_t, BLOCK_N, HAS_WINDOW, HAS_CAP, EXACT, HEAD_DIM)
            slots = slots_next
            if PREFETCH:
                k, v, sk, sv = k_next, v_next, sk_next, sv_next
        part = b * stride_pb + head * stride_ph + s * stride_ps
        tl.store(pm_ptr + part, m_i, mask=row_ok & (d0 == 0))
        tl.store(pl_ptr + part, l_i, mask=row_ok & (d0 == 0))
        cols = d0 + tl.arange(0, DV)
        tl.store(pacc_ptr + part[None, :] * HEAD_DIM + cols[:, None], acc, mask=row_ok[None, :])


@triton.jit
def _merge_kernel(
    pm_ptr, pl_ptr, pacc_ptr, out_ptr, kv_indptr_ptr, hi_ptr, lo_ptr, ts_ptr,
    stride_pb, stride_ph, stride_ps, stride_ot, stride_oh, stride_h, stride_t, K, KT,
    SPLIT: tl.constexpr, HEADS_PER_PROG: tl.constexpr, HEAD_DIM: tl.constexpr,
    SPLIT_OUT: tl.constexpr = False, BLOCK_K: tl.constexpr = 64,
):
    """Fold the decode splits of HEADS_PER_PROG (sequence, head) rows in ascending split order.

    SPLIT_OUT: also heal_matmul's split (BLOCK_K tiles) of the program's columns of the sequence's
    output row (heads contiguous, K = heads x HEAD_DIM), read back from what was stored, for the
    o_proj that consumes it.
    """
    b = tl.program_id(0).to(tl.int64)
    seq_len = tl.load(kv_indptr_ptr + b + 1) - tl.load(kv_indptr_ptr + b)
    h = tl.program_id(1).to(tl.int64) * HEADS_PER_PROG + tl.arange(0, HEADS_PER_PROG)
    d = tl.arange(0, HEAD_DIM)
    M = tl.full([HEADS_PER_PROG], float("-inf"), tl.float32)
    L = tl.zeros([HEADS_PER_PROG], tl.float32)
    ACC = tl.zeros([HEADS_PER_PROG, HEAD_DIM], tl.float32)
    for s in range(0, tl.cdiv(seq_len, SPLIT)):
        part = b * stride_pb + h * stride_ph + s * stride_ps
        m = tl.load(pm_ptr + part)
        l_ = tl.load(pl_ptr + part)
        acc = tl.load(pacc_ptr + part[:, None] * HEAD_DIM + d[None, :])
        M, L, ACC = _fold(M, L, ACC, m, l_, acc)
    tl.store(out_ptr + b * stride_ot + h[:, None] * stride_oh + d[None, :], ACC / L[:, None])
    if SPLIT_OUT:
        tl.debug_barrier()
        TILES: tl.constexpr = HEADS_PER_PROG * HEAD_DIM // BLOCK_K
        _split_row_tiles(out_ptr + b * stride_ot, hi_ptr + b * stride_h, lo_ptr + b * stride_h, ts_ptr + b * stride_t,
                         tl.program_id(1) * TILES, K, KT, TILES, BLOCK_K)
