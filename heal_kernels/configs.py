"""Pinned launch configurations. No autotuning on any shipped path.

A matmul configuration has two parts:

* ``MatmulNumerics`` fixes every choice that can change an output bit: the K tile
  (the span of one activation scale and one fresh MMA chain, whose result is handed
  to the FP32 accumulator).  It is keyed by arch, weight dtype, N and K only, never
  by M, so a row's value cannot depend on how many rows share the launch.
* ``MatmulTiles`` (BLOCK_M, BLOCK_N, warps, stages, K unroll, N halves) only decides
  how the output is cut into programs.  It may follow M for speed because every
  output element is still reduced over the same K tiles in the same order;
  ``tests/kernels/test_gpu_invariance.py::test_every_tile_config_gives_identical_rows``
  proves on the GPU that each shipped tile set gives bitwise-identical rows.

Row kernels (norm, rotary, activations) use one program per row; their block is a
function of the row width only.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch
import triton

from heal_kernels._runtime import next_power_of_2


@dataclass(frozen=True)
class MatmulNumerics:
    block_k: int  # K tile: one power-of-two scale per row and tile, one fresh MMA chain per tile


@dataclass(frozen=True)
class MatmulTiles:
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    group_m: int = 8
    k_unroll: int = 1  # K tiles loaded per loop iteration
    n_halves: int = 1  # 2: the N tile is computed as two halves (wide tiles within the register budget)
    split_x: bool = False  # each program splits its own x tiles: no split kernel (eager small batches)


@dataclass(frozen=True)
class MatmulWs:
    """heal_matmul's warp-specialized Gluon launch (Hopper, configs.matmul_ws): (64 * consumers) x block_n tiles."""

    block_n: int
    stages: int  # K tiles in the TMA ring
    group_m: int
    consumer_regs: int  # registers per thread of a worker consumer warpgroup (the loader warp keeps 24)
    n_parts: int = 1  # 2: each consumer runs its 64 x block_n tile as two halves of N per K tile (one shard only)
    consumers: int = 2  # consumer warpgroups, 64 rows each: the program's tile is 64 * consumers rows
    shard_grid: bool = False  # K shards in separate programs (partials + _shard_sum_kernel), not summed in one


@dataclass(frozen=True)
class AttentionNumerics:
    """Every attention choice that can change an output bit; the same for every path, batch and GPU."""

    kv_block: int  # KV tokens per online-softmax step, blocks aligned to absolute positions
    split_tokens: int  # tokens per split: each split starts from an empty state; splits fold in ascending order


@dataclass(frozen=True)
class AttentionLaunch:
    """How one attention path is cut into programs; never changes a bit (decode == extend is tested)."""

    num_warps: int
    num_stages: int
    rows: int = 0  # extend: (token x q head) rows per program; merge: (sequence, q head) rows per program
    programs: int = 0  # decode: target programs per launch; each loops over splits programs apart
    d_parts: int = 0  # decode: programs sharing one split's P.V columns (0: by batch, attention_decode_launch)
    prefetch: bool = False  # load the next KV block before computing this one (more registers, loads overlap)
    halves: int = 1  # extend: 2 = K's head dim and V's columns in two halves, one after the other (fewer registers)
    maxnreg: int = 0  # registers per thread at most (0: the compiler's choice; fewer: more programs per SM)


@dataclass(frozen=True)
class RowConfig:
    block: int
    num_warps: int


# One numerics setting for every shape: the K tile and the summation must not change
# with the batch.  Chosen on the H100 (docs/BENCHMARKS.md, "Choosing the numerics"):
# 64-wide tiles summed outside the MMA land near FP32's error (the worst case is M=1,
# against cuBLAS's very accurate FP32 GEMV).  Keeping each addition's rounding error
# too (TwoSum) would reach 0.8x FP32 but cost 1.5x the time at M=4096.
_NUMERICS = MatmulNumerics(block_k=64)

# Tiles by (M, N) bucket: the first entry with M <= max_m and N >= min_n wins.  Chosen
# on the H100 with `python -m bench.kernels.sweep_tiles` (M <= 16, M = 4096) and on the H200
# with `--mid-m` (M = 17-128, 2026-11-27: wide N tiles read the FP32 activations fewer times;
# docs/BENCHMARKS.md).  Every entry is exercised by the GPU bitwise test (it iterates this
# table), so adding one is covered.
_T = MatmulTiles
_GPU_TILES: tuple[tuple[int, int, MatmulTiles], ...] = (
    # (max_m, min_n, tiles)
    (16, 0, _T(block_m=16, block_n=32, num_warps=2, num_stages=4, k_unroll=2)),
    (64, 16384, _T(block_m=64, block_n=128, num_warps=4, num_stages=3)),
    (64, 6144, _T(block_m=64, block_n=64, num_warps=4, num_stages=4, k_unroll=2)),
    (64, 0, _T(block_m=64, block_n=64, num_warps=4, num_stages=3, k_unroll=2)),
    (256, 16384, _T(block_m=128, block_n=256, num_warps=8, num_stages=3, n_halves=2)),
    (128, 6144, _T(block_m=128, block_n=64, num_warps=8, num_stages=4)),
    (128, 0, _T(block_m=64, block_n=64, num_warps=4, num_stages=3)),
    (256, 0, _T(block_m=64, block_n=128, num_warps=4, num_stages=3)),
    (1 << 62, 0, _T(block_m=128, block_n=256, num_warps=8, num_stages=3, n_halves=2, group_m=16)),
)
# On the CPU interpreter the tile products run in float64 (EXACT), so results do not
# depend on the tile; one small tile keeps the interpreter quick.
_INTERPRET_TILES: tuple[tuple[int, int, MatmulTiles], ...] = (
    (1 << 62, 0, _T(block_m=32, block_n=32, num_warps=4, num_stages=1)),
)


# 32-token blocks (bench/kernels/probe_attention.py --blocks, H100): decode 2x faster than
# 64 (fewer registers spilled), extend unchanged.  256-token splits.
_ATTN_NUMERICS = AttentionNumerics(kv_block=32, split_tokens=256)

# Launch options by path, from the H100 (bench/kernels/probe_attention.py).  Decode programs: one per
# (split, sequence, kv head, V-column part) up to `programs`, beyond which a program takes every
# programs-th split of its sequence.  The decode entry here (_DECODE_LAUNCH's larger-batch launch)
# is the base for probes and tests; attention_decode_launch picks by batch.
# Extend and merge, H200 (`python -m bench.kernels.probe_attention --halves` and `--merge`, 2026-11-27,
# docs/results/2026-11-27-h200-probe-{halves,merge}.txt): extend 4k with 8 warps x 128 rows and K/V in
# column halves 2770 us against 3226 (4 warps x 64 rows, one piece); the merge with one head per
# program (more programs; each row folds alone) B16 x 4k kernel + merge 205.7 against 217.9 us,
# B1 x 8k 68.6 against 80.7.
_ATTN_LAUNCH = {
    "extend": AttentionLaunch(num_warps=8, num_stages=1, rows=128, halves=2),
    "decode": AttentionLaunch(num_warps=2, num_stages=1, programs=2048, prefetch=True),
    "merge": AttentionLaunch(num_warps=1, num_stages=1, rows=1),
}

# Decode launch by the (sequence, kv head) pairs of the batch: the first entry with pairs <= max_pairs.
# A decode program runs its split's 32-token blocks one after another, so at small batch (8 kv
# heads, 1 split at 128 tokens: 8 programs) most of the GPU idles and each block's loads wait.
# Three launch choices, none of which changes a bit (tests/kernels/test_attention.py::
# test_launch_choices_do_not_change_bits): d_parts programs share a split's P.V columns (each
# recomputes the scores, exact int8 MMAs); warps; and prefetch, which loads the next block's K/V
# before this block's work.  H200, _decode_kernel + merge, bound 131072 (CUDA graphs), us,
# (warps, d_parts, prefetch) -- `python -m bench.kernels.probe_attention --transposed` at bca3465,
# docs/results/2026-11-27-h200-probe-decode-transposed-ninth.txt (18 launches per shape):
#   B1 x 128 / 1024 / 8192:  (4, 2, yes) 14.4 / 24.0 / 49.3;  (4, 1, yes) 16.6 / 28.2 / 34.9;
#                            (2, 1, yes) 18.5 / 28.5 / 34.8
#   B4 x 2048 / B8 x 1024 / B16 x 4096 / B64 x 1024:  (2, 1, yes) 32.7 / 32.4 / 124.5 / 123.4;
#   (1, 2, no) 39.0 / 38.9 / 164.3 / 165.2;  (1, 1, no) 46.0 / 45.9 / 132.6 / 132.4.
# Batch 1 keeps two V-column programs: the short context is where it trails BF16 (8k already beats it).
# Chosen from the batch only, never from the lengths (fixed when a CUDA graph is captured).
_DECODE_LAUNCH: tuple[tuple[int, AttentionLaunch], ...] = (
    (8, AttentionLaunch(num_warps=4, num_stages=1, programs=2048, d_parts=2, prefetch=True)),
    (1 << 62, AttentionLaunch(num_warps=2, num_stages=1, programs=2048, d_parts=1, prefetch=True)),
)
# Batch sizes (with 8 kv heads) that select every entry of _DECODE_LAUNCH, for the tests.
DECODE_LAUNCH_PROBES = (1, 2)


def attention_numerics(arch: str) -> AttentionNumerics:
    """One setting everywhere: extend, decode, any batch, any GPU."""
    del arch
    return _ATTN_NUMERICS


def attention_launch(arch: str, path: str) -> AttentionLaunch:
    del arch
    return _ATTN_LAUNCH[path]


@functools.lru_cache(maxsize=4096)  # pure; launchers call it on every launch
def attention_decode_launch(arch: str, n_seqs: int, kv_heads: int, head_dim: int) -> AttentionLaunch:
    """The decode launch for a batch: warps, V-column programs (d_parts) and K/V prefetch."""
    del arch
    pairs = n_seqs * kv_heads
    launch = next(lc for max_pairs, lc in _DECODE_LAUNCH if pairs <= max_pairs)
    parts = launch.d_parts
    while parts > 1 and head_dim // parts < 16:  # an MMA tile is at least 16 columns wide
        parts //= 2
    return dataclasses.replace(launch, d_parts=parts)


def extend_block_m(rows: int, group: int) -> int:
    """Rows of an extend program: launch.rows (token x q head), at least one token's whole group."""
    return max(rows, next_power_of_2(group))


def decode_rows(group: int) -> int:
    """q heads of a decode program (the MMAs' N side): the group, padded to a power of two and to the
    MMA's minimum of 8."""
    return max(8, next_power_of_2(group))


def matmul_numerics(arch: str, w_dtype: torch.dtype, n: int, k: int) -> MatmulNumerics:
    """The numerics of heal_matmul; by design it takes no M argument."""
    del arch, w_dtype, n, k  # one setting everywhere: outputs agree across GPUs of one family too
    return _NUMERICS


# Eager launches (no CUDA graph: prefill chunks, and decode batches above --cuda-graph-max-bs-decode)
# cost host time per launch, and at M <= EAGER_SMALL_M the host, not the GPU, sets the pace (a Triton
# launch costs ~50 us of host time on the H100 machine, a torch op ~13; bench/kernels/eager_overhead.py).
# There each program splits its own x tiles (no split kernel, no hi/lo/ts buffers) and two K shards are
# summed in the program (no partials, no sum kernel).  Both are launch choices with the same bits
# (docs/results/2026-11-26-h100-matmul-split-x.txt: every split-x tile equal to the shipped kernel);
# under CUDA graphs the separate split kernel is faster on the GPU, so graphs keep it.
EAGER_SMALL_M = 16


def matmul_tile_table(arch: str) -> tuple[MatmulTiles, ...]:
    """Every tile set heal_matmul may pick on `arch`."""
    table = _INTERPRET_TILES if arch == "interpret" else _GPU_TILES
    widths = sorted({min_n for _, min_n, _ in table} | {1 << 30})
    eager = (matmul_tiles(arch, m, n, eager=True) for m in (1, EAGER_SMALL_M) for n in widths)
    return tuple(dict.fromkeys([*(t for _, _, t in table), *eager]))


@functools.lru_cache(maxsize=4096)  # pure; launchers call it on every launch
def matmul_tiles(arch: str, m: int, n: int, *, k_shards: int = 1, shard_grid: bool = False,
                 eager: bool = False) -> MatmulTiles:
    table = _INTERPRET_TILES if arch == "interpret" else _GPU_TILES
    tiles = next(t for max_m, min_n, t in table if m <= max_m and n >= min_n)  # the last bucket takes every M, N
    if eager and m <= EAGER_SMALL_M:
        tiles = dataclasses.replace(tiles, split_x=True)
    if k_shards > 1 and not shard_grid and tiles.n_halves > 1:
        # two shards summed in one program hold two accumulators: the wide tile's halves become the tile
        tiles = dataclasses.replace(tiles, block_n=tiles.block_n // tiles.n_halves, n_halves=1)
    return tiles


# The warp-specialized Gluon launch (heal_kernels/_kernels/matmul_ws.py) on sm_90 with one or two K
# shards: the Triton kernel's bits for every launch below (tests/kernels/test_matmul_ws.py), faster where
# measured.  `python -m bench.kernels.probe_matmul_ws --parts --one`, x already split, CUDA-graph replay,
# the Llama-3-8B linears (qkv 6144 x 4096, o_proj 4096 x 4096 in 2 shards, gate_up 28672 x 4096, down_proj
# 4096 x 14336 in 2 shards), time as a fraction of the Triton kernel's (its served tiles and shard grid):
#   H100, 2026-11-27 (...-h100-probe-matmul-ws-tenth.txt), WS_LAUNCH: M = 4096: 0.73-0.93;
#     M = 1024: 0.66-0.89; M = 512: 0.72-0.84.
#   H200, 2026-11-27 (...-h200-probe-matmul-ws-eleventh.txt), best launch per layer (WS_LAUNCH's in brackets):
#     M = 4096: qkv 0.83, o_proj 0.83, gate_up 0.82 wide (0.86), down 0.85
#     M = 1024: qkv 0.63, o_proj 0.74, gate_up 0.83 wide (0.94), down 0.80
#     M = 512:  qkv 0.79 (wide 0.72, but it loses at 256 and 1024), o_proj 0.72, gate_up 0.82 wide (0.86), down 0.86
#     M = 256:  qkv 0.70, o_proj 0.85 one-128 (1.11), gate_up 0.83 wide (0.91), down 0.90 one-128 (1.15)
#     M = 128:  qkv 0.71 one-128 (0.92), o_proj 0.82 one-64 (1.52), gate_up 0.84 wide (0.89), down 0.88 one-64
#     M = 64:   qkv 0.75 one-64 (1.28); o_proj 1.06, gate_up 0.99, down 1.18 at best: the Triton kernel
#     M = 16:   every launch 1.18-2.9: the Triton kernel
# Two shards summed in the program lose to the Triton kernel's shard grid (twice the programs) below
# M = 512; with the shards on the grid too (`--grid`; H100, 2026-11-27, ...-h100-probe-matmul-ws-grid-twelfth.txt),
# o_proj / down_proj as a fraction of the Triton kernel (the launch summing in the program in brackets):
#     M = 256:  0.80 / 0.72 WS_GRID (0.87 / 0.88 one-128)
#     M = 128:  0.81 / 0.76 one-128 on the grid (0.82 / 0.89 one-64)
#     M = 64:   0.82 / 0.81 one-64 on the grid (the Triton kernel before)
#     M = 32:   0.91 / 0.90 one-64 on the grid
#     M = 16:   1.04 / 1.05 at best: the Triton kernel
# Only with the Triton it was verified on (3.6): Gluon is experimental and its API moves between releases.
WS_LAUNCH = MatmulWs(block_n=128, stages=4, group_m=8, consumer_regs=232)  # 128 x 128 tiles, two consumers
WS_WIDE = dataclasses.replace(WS_LAUNCH, block_n=256, n_parts=2, stages=3)  # 128 x 256 in two N parts, one shard
WS_ONE_64 = dataclasses.replace(WS_LAUNCH, block_n=64, stages=6, consumers=1)  # 64 x 64, a deeper ring
WS_ONE_128 = dataclasses.replace(WS_LAUNCH, block_n=128, stages=4, consumers=1)  # 64 x 128
# Two K shards on the grid (one program per tile and shard, then _shard_sum_kernel: the Triton kernel's
# grid and sum) instead of summed in the program: twice the programs where the tiles alone are too few.
WS_GRID = dataclasses.replace(WS_LAUNCH, shard_grid=True)
WS_ONE_64_GRID = dataclasses.replace(WS_ONE_64, shard_grid=True)
WS_ONE_128_GRID = dataclasses.replace(WS_ONE_128, shard_grid=True)
WS_WIDE_N = 16384  # N from which a layer counts as wide (gate_up, lm_head)
# (min_m, k_shards or 0 for either, wide or None for either, launch): the first entry with M >= min_m that
# matches wins; none: the Triton kernel.  Every launch here is in the GPU bitwise tests (ws_launches()).
_WS_TABLE: tuple[tuple[int, int, bool | None, MatmulWs], ...] = (
    (512, 1, True, WS_WIDE),
    (512, 0, None, WS_LAUNCH),
    (129, 1, True, WS_WIDE),
    (129, 1, False, WS_LAUNCH),
    (129, 2, None, WS_GRID),
    (65, 1, True, WS_WIDE),
    (65, 1, False, WS_ONE_128),
    (65, 2, None, WS_ONE_128_GRID),
    (17, 1, False, WS_ONE_64),
    (17, 2, None, WS_ONE_64_GRID),
)
# M at which heal_matmul's choice changes (for the tests of rows across them); the first is the smallest
# M any Gluon launch serves
WS_BOUNDARIES = tuple(sorted({e[0] for e in _WS_TABLE}))
WS_TRITON = "3.6."


def ws_launches() -> tuple[MatmulWs, ...]:
    """Every Gluon launch heal_matmul may pick."""
    return tuple(dict.fromkeys(e[3] for e in _WS_TABLE))


def matmul_ws(arch: str, m: int, n: int, k_shards: int) -> MatmulWs | None:
    """The warp-specialized launch for this matmul, or None for the Triton kernel."""
    if not triton.__version__.startswith(WS_TRITON):
        return None
    return _matmul_ws(arch, m, n, k_shards)


@functools.lru_cache(maxsize=4096)  # pure; heal_matmul asks on every launch
def _matmul_ws(arch: str, m: int, n: int, k_shards: int) -> MatmulWs | None:
    if arch != "sm90" or k_shards > 2:
        return None
    wide = n >= WS_WIDE_N
    return next((launch for min_m, shards, w, launch in _WS_TABLE
                 if m >= min_m and shards in (0, k_shards) and w in (None, wide)), None)


# Two K shards are summed inside each program (two accumulators, no partials) for M in this
# range (exclusive, inclusive), and run one program per (tile, shard) with a pairwise-tree sum
# kernel elsewhere.  The range is empty: at M <= 16 the tiles alone are too few to fill the GPU
# (H200, o_proj / down_proj, M = 1: 17.3 / 62.8 us unsharded, 13.7 / 41.4 on the grid); at
# M = 64 the grid with 64-wide tiles beats the program's sum with 32-wide ones (H200,
# 2026-11-27: 22.3 / 61.4 against 27.8 / 87.8); at M = 4096 the in-program sum needs tiles half
# as wide (578 / 2090 against 560 / 1860).  Eager batches of M <= 16 still sum in the program
# (no partials, no second launch: host time sets their pace).  More than two shards always take
# the grid.
_SHARD_IN_PROGRAM_M = (16, 16)


def matmul_shard_grid(arch: str, m: int, k_shards: int, *, eager: bool = False) -> bool:
    """Whether heal_matmul's K shards run in separate programs (partials + _shard_sum_kernel)."""
    del arch
    lo, hi = _SHARD_IN_PROGRAM_M
    if eager and k_shards == 2 and m <= EAGER_SMALL_M:
        return False
    return k_shards > 2 or (k_shards == 2 and not lo < m <= hi)


@functools.lru_cache(maxsize=4096)  # pure; launchers call it on every launch
def row_config(arch: str, width: int) -> RowConfig:
    """One program per row; the whole row in one block so the reduction tree is fixed by width."""
    block = max(16, next_power_of_2(width))
    if arch == "interpret":
        return RowConfig(block=block, num_warps=1)
    return RowConfig(block=block, num_warps=min(16, max(1, block // 512)))
