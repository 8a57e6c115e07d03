"""Gluon code of heal_matmul's launch above M = 16 on Hopper (sm_90): warp-specialized, same bits.

The numerics are _heal_matmul_kernel's: per 64-wide K tile t a fresh MMA chain of the lo
products then the hi products (the same wgmma k-steps in the same order), its result scaled by
the tile's power of two and added to the FP32 accumulator by one fma, tiles ascending; with two
K shards, each shard's sum is scaled by wscale and shard 1's is added to shard 0's; then the
bias.  tests/kernels/test_matmul_ws.py checks the bits against the Triton kernel on the GPU.

Why Gluon: the Triton kernel waits for the tensor core after each chain and runs its fma with
the MMAs idle, and a plain-Triton rewrite cannot drop those waits (docs/BENCHMARKS.md); a first
Gluon kernel without warp specialization (every warp loading and computing) was no faster,
because every TMA into a slot that both warpgroups read needs a CTA-wide barrier (ten per two
K tiles in its SASS), which keeps the warpgroups in lockstep.  Here one loader warp fills a ring
of K tiles by TMA and two consumer warpgroups, 64 rows each, take a slot on its "ready" mbarrier
and hand it back on its "empty" one: nothing synchronizes the consumers with each other, so one
warpgroup's fma runs under the other's MMAs.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma, warpgroup_mma_wait


@gluon.jit
def _loader(hi_desc, lo_desc, w_desc, hi_s, lo_s, w_s, ready, empty, off_m, off_n, KT, STAGES: gl.constexpr,
            GRID_SHARDS: gl.constexpr):
    """K tile T0 + t into slot t % STAGES once every consumer gave the slot back: x's 64-row halves (one per
    consumer), hi and lo, and the weight tile.  Rows and columns past the tensor's edge arrive as zeros (TMA).
    GRID_SHARDS > 1: this program's shard (program_id(1)) of KT tiles only, T0 its first."""
    HALF_M: gl.constexpr = hi_desc.block_type.shape[0]
    BK: gl.constexpr = hi_desc.block_type.shape[1]
    C: gl.constexpr = hi_s.type.shape[0] // STAGES  # consumer warpgroups: 64-row halves of x per slot
    nbytes: gl.constexpr = 2 * C * hi_desc.block_type.nbytes + w_desc.block_type.nbytes
    if GRID_SHARDS > 1:
        KT = KT // GRID_SHARDS
        T0 = gl.program_id(1) * KT
    else:
        T0 = 0
    for t in range(KT):
        s = t % STAGES
        mbarrier.wait(empty.index(s), ((t // STAGES) & 1) ^ 1)  # a fresh barrier passes parity 1
        bar = ready.index(s)
        mbarrier.expect(bar, nbytes)
        k = (T0 + t) * BK
        tma.async_copy_global_to_shared(hi_desc, [off_m, k], bar, hi_s.index(C * s))
        if C == 2:
            tma.async_copy_global_to_shared(hi_desc, [off_m + HALF_M, k], bar, hi_s.index(C * s + 1))
        tma.async_copy_global_to_shared(lo_desc, [off_m, k], bar, lo_s.index(C * s))
        if C == 2:
            tma.async_copy_global_to_shared(lo_desc, [off_m + HALF_M, k], bar, lo_s.index(C * s + 1))
        tma.async_copy_global_to_shared(w_desc, [off_n, k], bar, w_s.index(s))


@gluon.jit
def _tiles(hi_s, lo_s, w_s, ready, empty, ts_row, mask_m, p, t0, t1, HALF: gl.constexpr, STAGES: gl.constexpr):
    """sum over K tiles t in [t0, t1), ascending, of fma(lo_t . w_t + hi_t . w_t, ts[m, t], .), from zero.
    p: the product's registers (a fresh chain ignores their values)."""
    C: gl.constexpr = hi_s.type.shape[0] // STAGES
    acc = gl.zeros_like(p)
    for t in range(t0, t1):
        s = t % STAGES
        inv = gl.load(ts_row + t, mask=mask_m, other=1.0)  # before the wait: its latency hides under it
        mbarrier.wait(ready.index(s), (t // STAGES) & 1)
        w = w_s.index(s).permute((1, 0))
        p = warpgroup_mma(lo_s.index(C * s + HALF), w, p, use_acc=False, is_async=True)
        p = warpgroup_mma(hi_s.index(C * s + HALF), w, p, is_async=True)
        p = warpgroup_mma_wait(num_outstanding=0, deps=(p,))
        mbarrier.arrive(empty.index(s), count=1)  # the slot's MMAs are done: the loader may refill it
        acc = gl.fma(p, gl.expand_dims(inv, 1), acc)  # p * inv is exact: one rounding, to nearest
    return acc, p


@gluon.jit
def _tiles_in_parts(hi_s, lo_s, w_s, ready, empty, ts_row, mask_m, p, t0, t1, HALF: gl.constexpr,
                    STAGES: gl.constexpr):
    """_tiles for a weight tile twice as wide as p: each K tile's two chains on its first half of N, then
    on its second, into two accumulators (the same MMAs per output element, so the same bits); one
    product live at a time keeps the 64 x 256 accumulators within the registers."""
    PART: gl.constexpr = p.type.shape[1]
    C: gl.constexpr = hi_s.type.shape[0] // STAGES
    acc0 = gl.zeros_like(p)
    acc1 = gl.zeros_like(p)
    for t in range(t0, t1):
        s = t % STAGES
        inv = gl.expand_dims(gl.load(ts_row + t, mask=mask_m, other=1.0), 1)
        mbarrier.wait(ready.index(s), (t // STAGES) & 1)
        w0 = w_s.index(s).slice(0, PART, dim=0).permute((1, 0))
        w1 = w_s.index(s).slice(PART, PART, dim=0).permute((1, 0))
        p = warpgroup_mma(lo_s.index(C * s + HALF), w0, p, use_acc=False, is_async=True)
        p = warpgroup_mma(hi_s.index(C * s + HALF), w0, p, is_async=True)
        p = warpgroup_mma_wait(num_outstanding=0, deps=(p,))
        acc0 = gl.fma(p, inv, acc0)
        p = warpgroup_mma(lo_s.index(C * s + HALF), w1, p, use_acc=False, is_async=True)
        p = warpgroup_mma(hi_s.index(C * s + HALF), w1, p, is_async=True)
        p = warpgroup_mma_wait(num_outstanding=0, deps=(p,))
        mbarrier.arrive(empty.index(s), count=1)
        acc1 = gl.fma(p, inv, acc1)
    return acc0, acc1


@gluon.jit
def _wscale(wscale_ptr, cols, N):
    return gl.expand_dims(gl.load(wscale_ptr + cols, mask=cols < N, other=1.0), 0)


@gluon.jit
def _store(acc, rows, mask_m, cols, N, bias_ptr, out_ptr, stride_om, HAS_BIAS: gl.constexpr):
    """acc (+ bias) into the output's rows x cols."""
    if HAS_BIAS:
        acc = acc + gl.expand_dims(gl.load(bias_ptr + cols, mask=cols < N, other=0.0).to(gl.float32), 0)
    mask = gl.expand_dims(mask_m, 1) & gl.expand_dims(cols < N, 0)
    gl.store(out_ptr + gl.expand_dims(rows.to(gl.int64), 1) * stride_om + gl.expand_dims(cols, 0), acc, mask=mask)


@gluon.jit
def _consumer(hi_s, lo_s, w_s, ready, empty, ts_ptr, wscale_ptr, bias_ptr, out_ptr, off_m, off_n, KT,
              M, N, stride_tm, stride_om, HAS_BIAS: gl.constexpr, SHARDS: gl.constexpr, HALF: gl.constexpr,
              N_PARTS: gl.constexpr):
    """Rows [off_m + HALF * 64, + 64) of the tile, start to store.  With the shards on the grid (the
    kernel's SHARD_GRID) the caller passes this program's run of K tiles as ts_ptr (offset to its first
    tile), KT (its length) and SHARDS = 1, and the partials' slice as out_ptr, with no bias."""
    if N_PARTS == 2:
        _consumer_parts(hi_s, lo_s, w_s, ready, empty, ts_ptr, wscale_ptr, bias_ptr, out_ptr, off_m, off_n, KT,
                        M, N, stride_tm, stride_om, HAS_BIAS, HALF)
    else:
        _consumer_whole(hi_s, lo_s, w_s, ready, empty, ts_ptr, wscale_ptr, bias_ptr, out_ptr, off_m, off_n, KT,
                        M, N, stride_tm, stride_om, HAS_BIAS, SHARDS, HALF)


@gluon.jit
def _consumer_parts(hi_s, lo_s, w_s, ready, empty, ts_ptr, wscale_ptr, bias_ptr, out_ptr, off_m, off_n, KT,
                    M, N, stride_tm, stride_om, HAS_BIAS: gl.constexpr, HALF: gl.constexpr):
    """_consumer with the N tile in two parts (one shard only: two shards' sums would need four accumulators)."""
    STAGES: gl.constexpr = w_s.type.shape[0]
    HALF_M: gl.constexpr = hi_s.type.shape[1]
    PART: gl.constexpr = w_s.type.shape[1] // 2
    layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                     instr_shape=[16, PART, 16])
    rows = off_m + HALF * HALF_M + gl.arange(0, HALF_M, layout=gl.SliceLayout(1, layout))
    cols = off_n + gl.arange(0, PART, layout=gl.SliceLayout(0, layout))
    mask_m = rows < M
    p = gl.zeros([HALF_M, PART], gl.float32, layout)
    a0, a1 = _tiles_in_parts(hi_s, lo_s, w_s, ready, empty, ts_ptr + rows.to(gl.int64) * stride_tm, mask_m, p,
                             0, KT, HALF, STAGES)
    _store(a0 * _wscale(wscale_ptr, cols, N), rows, mask_m, cols, N, bias_ptr, out_ptr, stride_om, HAS_BIAS)
    _store(a1 * _wscale(wscale_ptr, cols + PART, N), rows, mask_m, cols + PART, N, bias_ptr, out_ptr, stride_om,
           HAS_BIAS)


@gluon.jit
def _consumer_whole(hi_s, lo_s, w_s, ready, empty, ts_ptr, wscale_ptr, bias_ptr, out_ptr, off_m, off_n, KT,
                    M, N, stride_tm, stride_om, HAS_BIAS: gl.constexpr, SHARDS: gl.constexpr, HALF: gl.constexpr):
    STAGES: gl.constexpr = w_s.type.shape[0]
    HALF_M: gl.constexpr = hi_s.type.shape[1]
    BLOCK_N: gl.constexpr = w_s.type.shape[1]
    layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                     instr_shape=[16, BLOCK_N, 16])
    rows = off_m + HALF * HALF_M + gl.arange(0, HALF_M, layout=gl.SliceLayout(1, layout))
    cols = off_n + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, layout))
    mask_m = rows < M
    ts_row = ts_ptr + rows.to(gl.int64) * stride_tm
    wscale = _wscale(wscale_ptr, cols, N)
    p = gl.zeros([HALF_M, BLOCK_N], gl.float32, layout)
    kt_shard = KT // SHARDS
    acc, p = _tiles(hi_s, lo_s, w_s, ready, empty, ts_row, mask_m, p, 0, kt_shard, HALF, STAGES)
    acc = acc * wscale  # an exact power of two
    if SHARDS == 2:
        b, p = _tiles(hi_s, lo_s, w_s, ready, empty, ts_row, mask_m, p, kt_shard, KT, HALF, STAGES)
        acc = acc + b * wscale  # tree_sum of two shards
    _store(acc, rows, mask_m, cols, N, bias_ptr, out_ptr, stride_om, HAS_BIAS)


@gluon.jit
def _consumer_1(hi_s, lo_s, w_s, ready, empty, ts_ptr, wscale_ptr, bias_ptr, out_ptr, off_m, off_n, KT,
                M, N, stride_tm, stride_om, HAS_BIAS: gl.constexpr, SHARDS: gl.constexpr, N_PARTS: gl.constexpr):
    _consumer(hi_s, lo_s, w_s, ready, empty, ts_ptr, wscale_ptr, bias_ptr, out_ptr, off_m, off_n, KT,
              M, N, stride_tm, stride_om, HAS_BIAS, SHARDS, 1, N_PARTS)


@gluon.jit
def _heal_matmul_ws_kernel(
    hi_desc, lo_desc, w_desc, ts_ptr, wscale_ptr, bias_ptr, out_ptr,
    M, N, KT, stride_tm, stride_om,
    HAS_BIAS: gl.constexpr, SHARDS: gl.constexpr, GROUP_M: gl.constexpr, STAGES: gl.constexpr,
    CONSUMER_REGS: gl.constexpr, N_PARTS: gl.constexpr, CONSUMERS: gl.constexpr, SHARD_GRID: gl.constexpr,
    num_warps: gl.constexpr,
):
    """One (64 * CONSUMERS) x BLOCK_N output tile per program: rows [0, 64) in the default partition (a
    consumer warpgroup), [64, 128) in a worker consumer warpgroup (CONSUMERS = 2), the loads in a one-warp
    worker.  One consumer: 64-row tiles for small M (half the tiles' x traffic wasted on rows past M).
    SHARD_GRID: one program per (tile, K shard) (program_id(1)), its shard's sum times wscale into the
    partials at out_ptr + shard * M * N (row stride stride_om = N, no bias), summed by the Triton
    _shard_sum_kernel: the Triton kernel's shard grid, so the same bits, with twice the programs."""
    HALF_M: gl.constexpr = hi_desc.block_type.shape[0]
    BLOCK_K: gl.constexpr = hi_desc.block_type.shape[1]
    BLOCK_N: gl.constexpr = w_desc.block_type.shape[0]
    gl.static_assert(num_warps == 4, "the default partition is one consumer warpgroup")
    pid = gl.program_id(0)
    num_pid_m = gl.cdiv(M, CONSUMERS * HALF_M)
    num_pid_n = gl.cdiv(N, BLOCK_N)
    group = GROUP_M * num_pid_n
    first_m = (pid // group) * GROUP_M
    size_m = gl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group) % size_m
    pid_n = (pid % group) // size_m
    off_m = pid_m * CONSUMERS * HALF_M
    off_n = pid_n * BLOCK_N
    # The loader reads KT and finds its shard itself: a value passed to it would take room in the
    # partitions' shared argument space and shift every barrier's address in the shipped launches.
    KT_ALL = KT
    if SHARD_GRID:
        shard = gl.program_id(1)
        KT = KT // SHARDS  # this program's run of K tiles: [shard * KT, (shard + 1) * KT)
        ts_ptr += shard * KT
        out_ptr += shard.to(gl.int64) * M * N  # the partials: [SHARDS, M, N], contiguous
        RUN_SHARDS: gl.constexpr = 1
        RUN_BIAS: gl.constexpr = False
        GRID_SHARDS: gl.constexpr = SHARDS
    else:
        RUN_SHARDS: gl.constexpr = SHARDS
        RUN_BIAS: gl.constexpr = HAS_BIAS
        GRID_SHARDS: gl.constexpr = 1

    hi_s = gl.allocate_shared_memory(hi_desc.dtype, [CONSUMERS * STAGES, HALF_M, BLOCK_K], hi_desc.layout)
    lo_s = gl.allocate_shared_memory(lo_desc.dtype, [CONSUMERS * STAGES, HALF_M, BLOCK_K], lo_desc.layout)
    w_s = gl.allocate_shared_memory(w_desc.dtype, [STAGES, BLOCK_N, BLOCK_K], w_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=CONSUMERS)  # one arrive per consumer warpgroup

    # Argument tuples written out: a tuple held in a variable turns its constexprs into tensors.
    if CONSUMERS == 2:
        gl.warp_specialize([
            (_consumer, (hi_s, lo_s, w_s, ready, empty, ts_ptr, wscale_ptr, bias_ptr, out_ptr, off_m, off_n, KT,
                         M, N, stride_tm, stride_om, RUN_BIAS, RUN_SHARDS, 0, N_PARTS)),
            (_consumer_1, (hi_s, lo_s, w_s, ready, empty, ts_ptr, wscale_ptr, bias_ptr, out_ptr, off_m, off_n, KT,
                           M, N, stride_tm, stride_om, RUN_BIAS, RUN_SHARDS, N_PARTS)),
            (_loader, (hi_desc, lo_desc, w_desc, hi_s, lo_s, w_s, ready, empty, off_m, off_n, KT_ALL, STAGES,
                       GRID_SHARDS)),
        ], [4, 1], [CONSUMER_REGS, 24])
    else:
        gl.warp_specialize([
            (_consumer, (hi_s, lo_s, w_s, ready, empty, ts_ptr, wscale_ptr, bias_ptr, out_ptr, off_m, off_n, KT,
                         M, N, stride_tm, stride_om, RUN_BIAS, RUN_SHARDS, 0, N_PARTS)),
            (_loader, (hi_desc, lo_desc, w_desc, hi_s, lo_s, w_s, ready, empty, off_m, off_n, KT_ALL, STAGES,
                       GRID_SHARDS)),
        ], [1], [24])
