"""GPU probe of heal_matmul's warp-specialized Gluon launches (Hopper, configs.matmul_ws): at the
Llama-3-8B linear shapes as served (x already split by its producer, o_proj and down_proj in
HEAL_ROW_SHARDS=2 shards), the time of the Triton kernel (its tiles at that M), of the Gluon launch
heal_matmul picks ("shipped"; WS_LAUNCH where it picks the Triton kernel) and of FP16 cuBLAS,
CUDA-graph replay, median; and whether they give the same bits.

    python -m bench.kernels.probe_matmul_ws [--m 4096,1024,512] [--stages 3,4] [--group 8,16] [--parts]

--parts: also 128 x 256 tiles run as two 128-wide halves per consumer (MatmulWs.n_parts=2; one-shard
layers only).  --grid: also the two-shard layers (o_proj, down_proj) with each shard in its own program
and the Triton shard-sum kernel after (MatmulWs.shard_grid; twice the programs at small M).
--one: also one consumer warpgroup (64-row tiles) with 64- and 128-wide N tiles and a
deeper ring, for small M (e.g. --m 16,64,128,256).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools

import torch
import triton.testing

from bench.shapes import LLAMA3_8B_LINEARS
from bench.timing import capture
from heal_kernels import configs
from heal_kernels.matmul import _matmul_ws, heal_matmul, prepare_weight, split_tiles


def us(fn, reps=3):
    g = capture(fn, reps)
    return triton.testing.do_bench(g.replay, warmup=5, rep=50, return_mode="median") * 1e3 / reps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", default="4096,1024")
    ap.add_argument("--stages", default="", help="also these ring depths (comma-separated)")
    ap.add_argument("--group", default="", help="also these GROUP_M (comma-separated)")
    ap.add_argument("--parts", action="store_true", help="also 128 x 256 tiles in two N parts (one shard only)")
    ap.add_argument("--one", action="store_true", help="also one consumer warpgroup (64-row tiles)")
    ap.add_argument("--grid", action="store_true",
                    help="also the two-shard layers' shards in separate programs (MatmulWs.shard_grid)")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    for m in (int(v) for v in a.m.split(",")):
        for name, n, k in LLAMA3_8B_LINEARS:
            if name == "lm_head":  # served at each sequence's last token only, never at prefill M
                continue
            shards = 2 if name in ("o_proj", "down_proj") else 1  # HEAL_ROW_SHARDS's default
            picked = configs.matmul_ws("sm90", m, n, shards)
            shipped = picked or configs.WS_LAUNCH
            variants = [shipped] + [dataclasses.replace(shipped, stages=int(s), group_m=int(g)) for s, g in
                                    itertools.product(a.stages.split(",") if a.stages else [shipped.stages],
                                                      a.group.split(",") if a.group else [shipped.group_m])]
            w = (torch.randn(n, k, device="cuda") * 0.02).bfloat16()
            hw = prepare_weight(w)
            x = torch.randn(m, k, device="cuda")
            split = split_tiles(x, 64)
            grid = configs.matmul_shard_grid("sm90", m, shards)
            tiles = configs.matmul_tiles("sm90", m, n, k_shards=shards, shard_grid=grid)
            want = heal_matmul(x, hw, x_split=split, k_shards=shards, tiles=tiles)
            x16, w16 = x.half(), w.half()
            base = us(lambda: heal_matmul(x, hw, x_split=split, k_shards=shards, tiles=tiles))  # noqa: B023
            cublas = us(lambda: x16 @ w16.T)  # noqa: B023
            print(f"{name:12} M={m} N={n} K={k} shards {shards}: cublas fp16 {cublas:.1f} us, triton kernel "
                  f"{base:.1f} ({base / cublas:.2f}x)", flush=True)
            base_ws = configs.WS_LAUNCH
            extra = [dataclasses.replace(base_ws, block_n=256, n_parts=2, stages=st) for st in (2, 3)]
            one = [dataclasses.replace(base_ws, block_n=bn, stages=st, consumers=1) for bn, st in
                   ((64, 6), (64, 8), (128, 4), (128, 6))]
            grid_ws = [dataclasses.replace(w, shard_grid=True)
                       for w in (configs.WS_ONE_64, configs.WS_ONE_128, base_ws)]
            cands = (variants + (extra if a.parts and shards == 1 else []) + (one if a.one else [])
                     + (grid_ws if a.grid and shards > 1 else []))
            for ws in dict.fromkeys(cands):
                out = torch.full_like(want, float("nan"))
                run = lambda: _matmul_ws(split, hw.weight, hw.scale, None, out, shards, ws)  # noqa: B023, E731
                run()
                same = torch.equal(out, want)
                t = us(run)
                tag = (f"stages {ws.stages} group {ws.group_m} block_n {ws.block_n} parts {ws.n_parts} "
                       f"consumers {ws.consumers}{' shard grid' if ws.shard_grid else ''}")
                if ws == shipped:
                    tag = f"{'shipped' if picked else 'not picked'} ({tag})"
                print(f"    gluon {tag}: {t:.1f} us ({t / cublas:.2f}x cuBLAS, {t / base:.3f} of the triton "
                      f"kernel) same bits {same}", flush=True)


if __name__ == "__main__":
    main()
