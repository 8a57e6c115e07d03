"""Pinned launch configurations. No autotuning on any shipped path.

A matmul configuration has two parts:

* ``MatmulNumerics`` fixes every choice that can change an output bit: the K tile
  (where the tensor-core partial products are handed to the FP32 accumulator) and
  how those partials are summed.  It is keyed by arch, weight dtype, N and K only,
  never by M, so a row's value cannot depend on how many rows share the launch.
* ``MatmulTiles`` (BLOCK_M, BLOCK_N, warps, stages) only decides how the output is
  cut into programs.  It may follow M for speed because every output element is
  still reduced over the same K tiles in the same order; ``tests/kernels/
  test_matmul_gpu.py::test_every_tile_config_gives_identical_rows`` proves on the
  GPU that each shipped tile set gives bitwise-identical rows.

Row kernels (norm, rotary, activations) use one program per row; their block is a
function of the row width only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

# Partial products of each BLOCK_K slice are summed outside the MMA accumulator.
ACC_FOLDED = 0  # acc += dot(a, b): MMA-internal accumulation (truncating); kept for probes
ACC_OUTSIDE = 1  # p = dot(a, b); acc = RN(acc + p)
ACC_TWOSUM = 2  # as OUTSIDE, plus the rounding error of every addition kept (Knuth TwoSum); probes only


@dataclass(frozen=True)
class MatmulNumerics:
    block_k: int
    acc_mode: int


@dataclass(frozen=True)
class MatmulTiles:
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    group_m: int = 8


@dataclass(frozen=True)
class RowConfig:
    block: int
    num_warps: int


# One numerics setting for every shape: the K tile and the summation must not change
# with the batch.  Chosen on the H100 (docs/BENCHMARKS.md, "Choosing the numerics"):
# adding each 64-wide tile outside the MMA gives 1.35x FP32's error at M=1 (the worst
# case: cuBLAS's FP32 GEMV is very accurate) for 4% over the naive kernel's time;
# TwoSum would reach 0.8x FP32 but costs 1.6x at M=4096.
_NUMERICS = MatmulNumerics(block_k=64, acc_mode=ACC_OUTSIDE)

# Tiles by M bucket (upper bound inclusive).  Every entry here is exercised by the
# GPU bitwise test; adding one means adding it to that test's sweep automatically.
_GPU_TILES: tuple[tuple[int, MatmulTiles], ...] = (
    (16, MatmulTiles(block_m=16, block_n=32, num_warps=4, num_stages=6)),
    (64, MatmulTiles(block_m=64, block_n=32, num_warps=4, num_stages=4)),
    (256, MatmulTiles(block_m=128, block_n=64, num_warps=4, num_stages=4)),
    (1 << 62, MatmulTiles(block_m=128, block_n=128, num_warps=8, num_stages=3)),
)
# The interpreter's tl.dot is numpy's matmul, whose summation order follows the tile
# shape, so on the CPU a single tile serves every M.
_INTERPRET_TILES: tuple[tuple[int, MatmulTiles], ...] = (
    (1 << 62, MatmulTiles(block_m=32, block_n=32, num_warps=4, num_stages=1)),
)


def matmul_numerics(arch: str, w_dtype: torch.dtype, n: int, k: int) -> MatmulNumerics:
    """The numerics of heal_matmul; by design it takes no M argument."""
    del arch, w_dtype, n, k  # one setting everywhere: outputs agree across GPUs of one family too
    return _NUMERICS


def matmul_tile_table(arch: str) -> tuple[tuple[int, MatmulTiles], ...]:
    return _INTERPRET_TILES if arch == "interpret" else _GPU_TILES


def matmul_tiles(arch: str, m: int, n: int) -> MatmulTiles:
    for bound, tiles in matmul_tile_table(arch):
        if m <= bound:
            return tiles
    raise AssertionError("unreachable: last bucket is unbounded")


def row_config(arch: str, width: int) -> RowConfig:
    """One program per row; the whole row in one block so the reduction tree is fixed by width."""
    block = max(16, triton.next_power_of_2(width))
    if arch == "interpret":
        return RowConfig(block=block, num_warps=1)
    return RowConfig(block=block, num_warps=min(16, max(1, block // 512)))
