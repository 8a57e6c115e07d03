"""GPU sweep of heal_matmul output tiles (numerics as pinned) at Llama-3-8B shapes.

Prints, per shape and M, the fastest tiles (CUDA-graph replay median) and checks
that every tile gives the same bits.  Used to fill configs._GPU_TILES.

    python -m bench.kernels.sweep_tiles [--small-m | --mid-m | --decode-m | --shipped]   (GPU machine)

--shipped times the tiles and shard placement heal_matmul picks by itself (before/after tables:
run it on both checkouts on one GPU).
"""

from __future__ import annotations

import sys

import torch
import triton.testing

from bench.shapes import LLAMA3_8B_LINEARS
from bench.timing import capture
from heal_kernels import configs
from heal_kernels.matmul import heal_matmul, prepare_weight

T = configs.MatmulTiles
CANDIDATES = {
    1: [T(16, bn, nw, st, k_unroll=u) for bn in (16, 32) for nw in (2, 4) for st in (3, 4, 6) for u in (1, 2, 4)],
    16: [T(16, bn, nw, st, k_unroll=u) for bn in (16, 32) for nw in (2, 4) for st in (3, 4, 6) for u in (1, 2, 4)],
    64: [T(bm, bn, 4, st, k_unroll=u) for bm in (32, 64) for bn in (32, 64) for st in (3, 4) for u in (1, 2)],
    256: [T(bm, bn, nw, st) for bm, bn, nw in ((64, 64, 4), (128, 64, 4), (64, 128, 4), (128, 128, 8))
          for st in (3, 4)] + [T(128, 256, 8, 3, n_halves=2), T(64, 256, 4, 3, n_halves=2)],
    4096: [T(128, 128, 8, 3), T(128, 128, 8, 4), T(128, 256, 8, 3, n_halves=2), T(128, 256, 8, 4, n_halves=2),
           T(256, 128, 8, 3), T(128, 256, 8, 3, n_halves=2, group_m=16), T(64, 256, 4, 3, n_halves=2),
           T(128, 128, 8, 3, k_unroll=2)],
}


def us(fn, reps):
    g = capture(fn, reps)
    return triton.testing.do_bench(g.replay, warmup=10, rep=60, return_mode="median") * 1e3 / reps


SMALL_M = [T(16, bn, nw, st, k_unroll=u) for bn in (32, 64) for nw in (2, 4) for st in (4, 6) for u in (1, 2, 4)]


def small_m():
    """Decode-sized M (1 and 16) with the K shards each layer runs with (row-parallel: HEAL_ROW_SHARDS=2)."""
    torch.manual_seed(0)
    for name, n, k in LLAMA3_8B_LINEARS:
        shards = 2 if name in ("o_proj", "down_proj") else 1
        w = (torch.randn(n, k, device="cuda") * 0.02).bfloat16()
        hw, wh = prepare_weight(w), w.half()
        for m in (1, 16):
            x = torch.randn(m, k, device="cuda")
            xh = x.half()
            base = us(lambda: xh @ wh.T, 20)
            shipped = configs.matmul_tiles("sm90", m, n, k_shards=shards, shard_grid=True)
            cands = [shipped] + [t for t in SMALL_M if t != shipped]
            res, first, same = [], None, True
            for t in cands:
                try:
                    out = heal_matmul(x, hw, tiles=t, k_shards=shards)
                    res.append((us(lambda: heal_matmul(x, hw, tiles=t, k_shards=shards), 20), t))
                except Exception as e:  # noqa: BLE001 - tiles over the shared-memory limit are skipped
                    print(f"  skip {t}: {str(e)[:50]}")
                    continue
                first = out if first is None else first
                same &= torch.equal(out, first)
            best = sorted(res, key=lambda r: r[0])
            top = ", ".join(f"{u:.1f}us {t.block_m}x{t.block_n}w{t.num_warps}s{t.num_stages}u{t.k_unroll}"
                            for u, t in best[:4])
            print(f"{name} M{m} shards {shards}: fp16 {base:.1f}us | shipped {res[0][0]:.1f}us | best {top} | "
                  f"bitwise {same}", flush=True)


def _mid_candidates(m: int) -> list[configs.MatmulTiles]:
    bms = (32, 64) if m <= 64 else (64, 128)
    out = []
    for bm in bms:
        for bn in (32, 64, 128, 256):
            nw = 8 if bn == 256 or bm == 128 else 4
            for st in (3, 4):
                for u in (1, 2):
                    out.append(T(bm, bn, nw, st, k_unroll=u, n_halves=2 if bn == 256 else 1))
    return out


def _tile_name(t: configs.MatmulTiles, grid: bool) -> str:
    return (f"{t.block_m}x{t.block_n}w{t.num_warps}s{t.num_stages}u{t.k_unroll}h{t.n_halves}"
            f"{' grid' if grid else ''}")


def _placement_sweep(layers, ms, candidates, presplit: bool) -> None:
    """Each layer's K shards at each M, both shard placements for the 2-shard layers, the shipped tile
    first, weights rotated through copies (256 MiB in all) so a weight that fits in L2 is still read
    from HBM, as in the served model.  ``candidates(m)``: the tiles to try.  ``presplit``: x arrives
    already split (as its producer hands it over when served), so the split kernel is not timed.
    Every candidate must give the shipped tile's bits."""
    from heal_kernels.matmul import split_tiles

    torch.manual_seed(0)
    grid_choice = configs.matmul_shard_grid
    for name, n, k in layers:
        shards = 2 if name in ("o_proj", "down_proj") else 1
        w = (torch.randn(n, k, device="cuda") * 0.02).bfloat16()
        copies = max(1, (256 << 20) // (n * k * 2))
        hws = [prepare_weight(w) for _ in range(copies)]
        whs = [w.half() for _ in range(copies)]
        for m in ms:
            x = torch.randn(m, k, device="cuda")
            xs = split_tiles(x, configs.matmul_numerics("sm90", torch.float16, n, k).block_k) if presplit else None
            xh = x.half()
            base = us([lambda wh=wh: xh @ wh.T for wh in whs], 2 * copies)
            shipped_grid = grid_choice("sm90", m, shards)
            shipped = configs.matmul_tiles("sm90", m, n, k_shards=shards, shard_grid=shipped_grid)
            places = (False, True) if shards == 2 else (shipped_grid,)
            res, first, same = [], None, True
            for grid in places:
                configs.matmul_shard_grid = lambda arch, mm, ks, eager=False, g=grid: g if ks == 2 else grid_choice(
                    arch, mm, ks, eager=eager)
                cands = candidates(m)
                if grid == shipped_grid:
                    cands = [shipped] + [t for t in cands if t != shipped]
                for t in cands:
                    if shards == 2 and not grid and t.n_halves != 1:
                        continue
                    try:
                        out = heal_matmul(x, hws[0], tiles=t, k_shards=shards, x_split=xs)
                        fns = [lambda hw=hw, t=t: heal_matmul(x, hw, tiles=t, k_shards=shards, x_split=xs)
                               for hw in hws]
                        res.append((us(fns, 2 * copies), t, grid))
                    except Exception as e:  # noqa: BLE001 - tiles over the shared-memory limit are skipped
                        print(f"  skip {t}: {str(e)[:50]}")
                        continue
                    first = out if first is None else first
                    same &= torch.equal(out, first)
            configs.matmul_shard_grid = grid_choice
            shipped_us = next(u for u, t, g in res if t == shipped and g == shipped_grid)
            top = ", ".join(f"{u:.1f}us {_tile_name(t, g)}" for u, t, g in sorted(res, key=lambda r: r[0])[:5])
            print(f"{name} M{m} shards {shards}: fp16 {base:.1f}us | shipped {shipped_us:.1f}us "
                  f"({_tile_name(shipped, shipped_grid)}) | best {top} | bitwise {same}", flush=True)
        del hws, whs


def mid_m():
    """Batched-decode M (64-256), wide N tiles included (_placement_sweep)."""
    _placement_sweep(LLAMA3_8B_LINEARS[:4], (64, 128, 256), _mid_candidates, presplit=False)


def _decode_candidates(m: int) -> list[configs.MatmulTiles]:
    del m
    return [T(16, bn, nw, 4, k_unroll=u) for bn in (16, 32, 64) for nw in (1, 2, 4) for u in (1, 2)]


def decode_m():
    """Decode M (1, 16) as served: x arrives already split, 16- to 64-wide tiles and 1-4 warps
    (_placement_sweep)."""
    _placement_sweep(LLAMA3_8B_LINEARS, (1, 16), _decode_candidates, presplit=True)


def shipped():
    """FP16 cuBLAS and heal_matmul as shipped (its own tiles and shard placement; o_proj and down_proj
    with HEAL_ROW_SHARDS=2) at decode and batched-decode M, weights rotated through 256 MiB of copies."""
    torch.manual_seed(0)
    print("layer M fp16_us heal_us heal/fp16", flush=True)
    for name, n, k in LLAMA3_8B_LINEARS:
        shards = 2 if name in ("o_proj", "down_proj") else 1
        w = (torch.randn(n, k, device="cuda") * 0.02).bfloat16()
        copies = max(1, (256 << 20) // (n * k * 2))
        hws = [prepare_weight(w) for _ in range(copies)]
        whs = [w.half() for _ in range(copies)]
        for m in (1, 16, 32, 64, 128, 256):
            x = torch.randn(m, k, device="cuda")
            xh = x.half()
            base = us([lambda wh=wh: xh @ wh.T for wh in whs], 2 * copies)
            heal = us([lambda hw=hw: heal_matmul(x, hw, k_shards=shards) for hw in hws], 2 * copies)
            print(f"{name} {m} {base:.1f} {heal:.1f} {heal / base:.2f}", flush=True)
        del hws, whs


def main():
    if "--shipped" in sys.argv:
        shipped()
        return
    if "--small-m" in sys.argv:
        small_m()
        return
    if "--mid-m" in sys.argv:
        mid_m()
        return
    if "--decode-m" in sys.argv:
        decode_m()
        return
    torch.manual_seed(0)
    for name, n, k in LLAMA3_8B_LINEARS[:4]:
        w = (torch.randn(n, k, device="cuda") * 0.02).bfloat16()
        hw, wh = prepare_weight(w), w.half()
        for m, cands in CANDIDATES.items():
            x = torch.randn(m, k, device="cuda")
            reps = 20 if m <= 256 else 3
            xh = x.half()
            base = us(lambda: xh @ wh.T, reps)
            res, first, same = [], None, True
            for t in cands:
                try:
                    out = heal_matmul(x, hw, tiles=t)
                    res.append((us(lambda: heal_matmul(x, hw, tiles=t), reps), t))
                except Exception as e:  # noqa: BLE001 - tiles over the shared-memory limit are skipped
                    print(f"  skip {t}: {str(e)[:50]}")
                    continue
                first = out if first is None else first
                same &= torch.equal(out, first)
            res.sort(key=lambda r: r[0])
            top = ", ".join(f"{u:.1f}us {t.block_m}x{t.block_n}w{t.num_warps}s{t.num_stages}"
                            f"u{t.k_unroll}h{t.n_halves}g{t.group_m}" for u, t in res[:3])
            print(f"{name} M{m}: fp16 {base:.1f}us | best {top} | ratio {res[0][0] / base:.2f} | bitwise {same}",
                  flush=True)


if __name__ == "__main__":
    main()
