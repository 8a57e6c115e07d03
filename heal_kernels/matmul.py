"""heal_matmul: FP32 activations x 16-bit weights on FP16 tensor cores, near-FP32 error.

    out = x @ w.T (+ bias), x float32 [M, K], w [N, K] 16-bit, out float32 [M, N]

Each 64-wide K tile of each row of x is scaled by a power of two (from its max |x|)
and split into FP16 parts hi + lo (22+ significant bits).  Both parts are multiplied
by the weight on the tensor cores in one fresh MMA chain per tile; the tile results
leave the MMA (whose internal sum truncates) and are added in ascending K order to
an FP32 accumulator with round-to-nearest, which is what brings the error down to an
FP32 matmul's (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass

import torch

from heal_kernels import configs
from heal_kernels._kernels.matmul import _heal_matmul_kernel, _split_kernel
from heal_kernels._launch import launch_kernel
from heal_kernels._runtime import (
    arch_key,
    cdiv,
    check_contiguous,
    check_positive_int,
    check_shape,
    check_tensor,
    is_capturing,
    next_power_of_2,
    out_buffer,
)
from heal_kernels.reduce import shard_sum

WEIGHT_DTYPES = (torch.bfloat16, torch.float16)
# A converted weight's channel max lands in [2**14, 2**15), like the activations.
_W_TOP = 14
_SPLIT_TILES = 16  # K tiles per program of the split kernel
# HEAL_MATMUL_WS=0 keeps the Triton kernel at every M on Hopper (same bits; for A/B timing).
WS_ENV = "HEAL_MATMUL_WS"
# K shard counts heal_matmul sums (_shard_sum_kernel's tree goes up to 8); HEAL_ROW_SHARDS is one of them
K_SHARDS = (1, 2, 4, 8)


@dataclass(frozen=True)
class HealWeight:
    """A weight converted once, at load time, to FP16 with a power-of-two scale per output channel.

    ``weight`` is [N, K] float16 (2 bytes per element, like the bf16 it replaces);
    ``scale`` is [N] float32, each an exact power of two: w[n, k] == weight[n, k] * scale[n]
    for every bf16 weight within 2**29 of its channel's largest magnitude.
    """

    weight: torch.Tensor
    scale: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        return self.weight.shape


def prepare_weight(w: torch.Tensor, *, inplace: bool = False, rows_per_chunk: int = 4096) -> HealWeight:
    """Convert a [N, K] bf16/fp16 weight to a HealWeight.

    With ``inplace=True`` the FP16 values are written into ``w``'s own storage
    (``w`` must be contiguous) in chunks of rows, so no second full copy exists.
    """
    check_tensor("w", w, dtypes=WEIGHT_DTYPES, ndim=2, last_contiguous=False)
    check_positive_int("rows_per_chunk", rows_per_chunk)
    if inplace:
        check_contiguous("w", w)
    wf_absmax = torch.empty(w.shape[0], dtype=torch.float32, device=w.device)
    for r0 in range(0, w.shape[0], rows_per_chunk):
        wf_absmax[r0:r0 + rows_per_chunk] = w[r0:r0 + rows_per_chunk].float().abs().amax(dim=1)
    if not torch.isfinite(wf_absmax).all():
        raise ValueError("w contains inf or nan; a heal weight must be finite")
    # frexp: absmax = mant * 2**exp with mant in [0.5, 1); a zero row keeps scale 1.
    _, exp = torch.frexp(wf_absmax)
    shift = torch.where(wf_absmax > 0, _W_TOP + 1 - exp, torch.zeros_like(exp)).clamp(-126, 126)
    up = torch.ldexp(torch.ones_like(wf_absmax), shift)
    scale = torch.ldexp(torch.ones_like(wf_absmax), -shift)
    out = w.view(torch.float16) if inplace else torch.empty(w.shape, dtype=torch.float16, device=w.device)
    for r0 in range(0, w.shape[0], rows_per_chunk):
        rows = slice(r0, r0 + rows_per_chunk)
        out[rows] = (w[rows].float() * up[rows, None]).to(torch.float16)
    return HealWeight(out, scale)


@dataclass(frozen=True)
class SplitX:
    """FP32 activations split the way heal_matmul's kernels split them (``split_tiles``).

    x[m, k] == ts[m, k // block_k] * (hi[m, k] + lo[m, k]); hi, lo [M, K] float16, ts
    [M, cdiv(K, block_k)] float32 powers of two.  A producer of x (RMSNorm, the gated
    activations) can write these beside x, so the matmul that consumes x needs no split
    launch: the parts of a tile depend on that tile of that row alone, so they are the
    same bits wherever they are computed.
    """

    hi: torch.Tensor
    lo: torch.Tensor
    ts: torch.Tensor
    block_k: int


def empty_split(m: int, k: int, block_k: int, device: torch.device) -> SplitX:
    """Uninitialised SplitX buffers for an [m, k] activation."""
    return SplitX(
        torch.empty((m, k), dtype=torch.float16, device=device),
        torch.empty((m, k), dtype=torch.float16, device=device),
        torch.empty((m, cdiv(k, block_k)), dtype=torch.float32, device=device),
        block_k,
    )


def check_split_k(split_k) -> None:
    """A producer's ``split_k``: 0 (no split) or a power-of-two K tile of at least 16."""
    if not isinstance(split_k, int) or isinstance(split_k, bool) or split_k < 0 or (
            split_k and (split_k < 16 or split_k & (split_k - 1))):
        raise ValueError(f"split_k must be 0 (no split) or a power of two >= 16, got {split_k!r}")


def check_split(name: str, split: SplitX, m: int, k: int, block_k: int, device: torch.device) -> None:
    """A SplitX of an [m, k] activation made with K tile block_k (raises ValueError naming `name`)."""
    if not isinstance(split, SplitX):
        raise ValueError(f"{name} must be a heal_kernels.matmul.SplitX, got {type(split).__name__}")
    if split.block_k != block_k:
        raise ValueError(f"{name} was split with {split.block_k}-wide K tiles but this matmul's numerics use "
                         f"{block_k}")
    for part, t, dtype, shape in (("hi", split.hi, torch.float16, (m, k)), ("lo", split.lo, torch.float16, (m, k)),
                                  ("ts", split.ts, torch.float32, (m, cdiv(k, block_k)))):
        check_tensor(f"{name}.{part}", t, dtypes=(dtype,), ndim=2, device=device)
        check_shape(f"{name}.{part}", t, shape)
    if split.hi.stride() != split.lo.stride():
        raise ValueError(f"{name}.hi and {name}.lo must have the same strides, got {split.hi.stride()} and "
                         f"{split.lo.stride()}")


def split_tiles(x: torch.Tensor, block_k: int) -> SplitX:
    """x's SplitX: x[m, k] == ts[m, k // block_k] * (hi[m, k] + lo[m, k]) to ~2**-22 relative."""
    m, k = x.shape
    kt = cdiv(k, block_k)
    split = empty_split(m, k, block_k, x.device)
    if m > 0 and k > 0:
        tiles = min(_SPLIT_TILES, next_power_of_2(kt))
        launch_kernel(_split_kernel, (m, cdiv(kt, tiles)),
            x, split.hi, split.lo, split.ts, k, kt, x.stride(0), split.hi.stride(0), split.ts.stride(0),
            BLOCK_K=block_k, TILES=tiles, num_warps=4,
        )
    return split


def heal_matmul(
    x: torch.Tensor,
    w: torch.Tensor | HealWeight,
    bias: torch.Tensor | None = None,
    *,
    out: torch.Tensor | None = None,
    tiles: configs.MatmulTiles | None = None,
    numerics: configs.MatmulNumerics | None = None,
    k_shards: int = 1,
    x_split: SplitX | None = None,
) -> torch.Tensor:
    """x float32 [M, K] @ w[N, K].T + bias -> float32 [M, N].

    ``w`` is a HealWeight from prepare_weight (exact for any finite weight), or a bf16 or
    fp16 tensor as loaded, which is converted by prepare_weight on every call (same bits,
    a copy of the weight and a host sync each time, so not inside CUDA-graph capture;
    convert once for speed).  A 16-bit weight cast to FP16 as it stands would overflow
    above 65504 and lose bits below 2**-14.  ``tiles``/``numerics`` override the pinned
    configs, for tests and benchmarks only.  ``out``: optional float32 [M, N] destination.

    ``k_shards`` (1, 2, 4, 8) cuts K into that many equal runs of whole K tiles whose
    sums are added in ``heal_kernels.reduce.tree_sum``'s pairwise order: a row-parallel
    layer's HEAL_ROW_SHARDS tree, which is what lets TP ranks compute slices of it.  It is
    part of the numerics (the caller fixes it per layer, never per batch); whether the
    shards run in separate programs or one is a launch choice that never changes a bit.

    ``x_split``: x already split (``SplitX``, written by x's producer or ``split_tiles``) with
    this matmul's K tile; the kernel reads it instead of splitting x (same bits, no split
    launch).  It must be x's split: it is not checked against x's values.

    On Hopper with triton 3.6, one or two shards and the M, N, shards of configs.matmul_ws (M > 16) run
    a warp-specialized Gluon kernel (_kernels/matmul_ws.py) with the same bits; ``tiles`` or
    HEAL_MATMUL_WS=0 keep the Triton kernel.
    """
    check_tensor("x", x, dtypes=(torch.float32,), ndim=2)
    dev = x.device
    if isinstance(w, HealWeight):
        wt, wscale = w.weight, w.scale
        check_tensor("w.weight", wt, dtypes=(torch.float16,), ndim=2, device=dev)
        check_tensor("w.scale", wscale, dtypes=(torch.float32,), ndim=1, device=dev)
        check_shape("w.scale", wscale, (wt.shape[0],))
    else:
        check_tensor("w", w, dtypes=WEIGHT_DTYPES, ndim=2, device=dev)
        if is_capturing(dev):
            raise ValueError("w is a raw 16-bit weight, converted on every call with a host sync, which CUDA-graph "
                             "capture cannot hold; pass prepare_weight(w) instead")
        w = prepare_weight(w)  # raises, naming w, on inf or nan
        wt, wscale = w.weight, w.scale
    m, k = x.shape
    n, kw = wt.shape
    if kw != k:
        raise ValueError(f"w has K={kw} (shape {tuple(wt.shape)}) but x has K={k} (shape {tuple(x.shape)})")
    if bias is not None:
        check_tensor("bias", bias, dtypes=(torch.float32, torch.bfloat16, torch.float16), ndim=1, device=dev)
        check_shape("bias", bias, (n,))
    arch = arch_key(dev)
    numerics = numerics or configs.matmul_numerics(arch, wt.dtype, n, k)
    kt = cdiv(k, numerics.block_k)
    if not isinstance(k_shards, int) or k_shards not in K_SHARDS:
        raise ValueError(f"k_shards must be a power of two up to 8 {K_SHARDS}, got {k_shards!r}")
    if k % (k_shards * numerics.block_k) and k_shards > 1:
        raise ValueError(
            f"K={k} does not split into k_shards={k_shards} shards of whole {numerics.block_k}-wide K tiles"
        )
    # Outside CUDA-graph capture every launch costs host time: small batches split x in the kernel.
    eager = not is_capturing(dev)
    shard_grid = configs.matmul_shard_grid(arch, m, k_shards, eager=eager)
    tiles_given = tiles is not None  # a caller's tiles (tests, benchmarks) pin the Triton kernel
    tiles = tiles or configs.matmul_tiles(arch, m, n, k_shards=k_shards, shard_grid=shard_grid, eager=eager)
    if k_shards > 1 and not shard_grid and tiles.n_halves != 1:  # the in-program sum holds two accumulators
        raise ValueError(f"two shards summed in the program need tiles with n_halves=1, got {tiles}")
    if x_split is not None:
        check_split("x_split", x_split, m, k, numerics.block_k, dev)
        if tiles.split_x:  # the parts are there: the same tile reading them (same bits, less work)
            tiles = _reading_split(tiles)
    out = out_buffer("out", out, (m, n), dev)
    if m == 0 or n == 0:
        return out
    if k == 0:
        return out.zero_() if bias is None else out.copy_(bias.float().expand(m, n))
    ws = configs.matmul_ws(arch, m, n, k_shards) if not tiles_given and _ws_enabled() else None
    # TMA reads 16-byte aligned rows: the weight's, and the split's (a split made here has row stride K; a
    # caller's split that TMA cannot read goes to the Triton kernel)
    if (ws is not None and numerics.block_k == 64 and _tma_rows(wt) and k % 8 == 0
            and (x_split is None or (_tma_rows(x_split.hi) and _tma_rows(x_split.lo)))):
        _matmul_ws(x_split if x_split is not None else split_tiles(x, numerics.block_k), wt, wscale, bias, out,
                   k_shards, ws)
        return out
    if tiles.split_x:  # the kernel splits x's tiles itself: no split launch, no hi / lo / ts buffers
        hi, lo, ts = x, x, x
    else:
        split = x_split if x_split is not None else split_tiles(x, numerics.block_k)
        hi, lo, ts = split.hi, split.lo, split.ts
    # The shards' sums go to partials, summed by _shard_sum_kernel, when they are spread over programs.
    part = torch.empty((k_shards, m, n), dtype=torch.float32, device=dev) if shard_grid else out
    grid = (cdiv(m, tiles.block_m) * cdiv(n, tiles.block_n), k_shards if shard_grid else 1)
    launch_kernel(_heal_matmul_kernel, grid,
        hi, lo, ts, wt, wscale, bias if bias is not None else ts, part,
        m, n, k, kt, hi.stride(0), ts.stride(0), wt.stride(0), n if shard_grid else out.stride(0), m * n,
        HAS_BIAS=bias is not None,
        BLOCK_M=tiles.block_m, BLOCK_N=tiles.block_n, BLOCK_K=numerics.block_k, GROUP_M=tiles.group_m,
        K_UNROLL=tiles.k_unroll, N_HALVES=tiles.n_halves, SHARDS=k_shards, SHARD_GRID=shard_grid,
        SPLIT_X=tiles.split_x,
        EXACT=arch == "interpret", num_warps=tiles.num_warps, num_stages=tiles.num_stages,
    )
    if shard_grid:
        shard_sum(part, bias, out)
    return out


@functools.lru_cache(maxsize=256)  # MatmulTiles is frozen; dataclasses.replace costs microseconds per eager launch
def _reading_split(tiles: configs.MatmulTiles) -> configs.MatmulTiles:
    return dataclasses.replace(tiles, split_x=False)


def _tma_rows(t: torch.Tensor) -> bool:
    """Whether TMA can read t's 16-bit rows: contiguous along K, 16-byte aligned start and row stride."""
    return t.stride(1) == 1 and t.stride(0) % 8 == 0 and t.data_ptr() % 16 == 0


def _ws_enabled() -> bool:
    raw = os.environ.get(WS_ENV, "1")
    if raw not in ("0", "1"):
        raise ValueError(f"{WS_ENV}={raw!r}: must be 0 (Triton kernel only) or 1 (default)")
    return raw == "1"


def _matmul_ws(split: SplitX, wt: torch.Tensor, wscale: torch.Tensor, bias: torch.Tensor | None,
               out: torch.Tensor, k_shards: int, ws: configs.MatmulWs) -> None:
    """heal_matmul through the warp-specialized Gluon kernel (Hopper): the same bits as the Triton kernel."""
    if ws.n_parts == 2 and k_shards != 1:
        raise ValueError(f"a MatmulWs with n_parts=2 sums one K shard only, got k_shards={k_shards}")
    grid_shards = ws.shard_grid and k_shards > 1
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    from heal_kernels._kernels.matmul_ws import _heal_matmul_ws_kernel

    hi, lo, ts = split.hi, split.lo, split.ts
    (m, k), n = hi.shape, wt.shape[0]
    x_layout = gl.NVMMASharedLayout.get_default_for([64, 64], gl.float16)
    w_layout = gl.NVMMASharedLayout.get_default_for([ws.block_n, 64], gl.float16)
    hi_desc = TensorDescriptor(hi, [m, k], list(hi.stride()), [64, 64], x_layout)
    lo_desc = TensorDescriptor(lo, [m, k], list(lo.stride()), [64, 64], x_layout)
    w_desc = TensorDescriptor(wt, [n, k], list(wt.stride()), [ws.block_n, 64], w_layout)
    # The shards' sums go to partials, summed by _shard_sum_kernel, when they are spread over programs.
    part = torch.empty((k_shards, m, n), dtype=torch.float32, device=out.device) if grid_shards else out
    tiles = cdiv(m, 64 * ws.consumers) * cdiv(n, ws.block_n)
    launch_kernel(_heal_matmul_ws_kernel, (tiles, k_shards if grid_shards else 1),
        hi_desc, lo_desc, w_desc, ts, wscale, bias if bias is not None else ts, part,
        m, n, ts.shape[1], ts.stride(0), n if grid_shards else out.stride(0),
        HAS_BIAS=bias is not None, SHARDS=k_shards, GROUP_M=ws.group_m, STAGES=ws.stages,
        CONSUMER_REGS=ws.consumer_regs, N_PARTS=ws.n_parts, CONSUMERS=ws.consumers, SHARD_GRID=grid_shards,
        num_warps=4,
    )
    if grid_shards:
        shard_sum(part, bias, out)
