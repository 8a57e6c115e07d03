"""heal_matmul's warp-specialized Gluon launches (Hopper, configs.matmul_ws): when each is chosen (CPU),
that it compiles for sm_90 as designed (CPU, offline), and that it gives the Triton kernel's bits (GPU)."""

import dataclasses
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import triton

from heal_kernels import configs, reference
from heal_kernels.matmul import WS_ENV, _matmul_ws, heal_matmul, prepare_weight, split_tiles

ON_36 = triton.__version__.startswith(configs.WS_TRITON)


def test_ws_is_chosen_on_hopper_by_m_n_and_shards(monkeypatch):
    monkeypatch.setattr(triton, "__version__", configs.WS_TRITON + "0")
    pick = functools.partial(configs.matmul_ws, "sm90")
    wide, narrow = configs.WS_WIDE_N, configs.WS_WIDE_N - 1
    assert pick(4096, narrow, 1) == pick(4096, narrow, 2) == pick(512, 4096, 2) == configs.WS_LAUNCH
    assert pick(4096, wide, 1) == pick(65, wide, 1) == configs.WS_WIDE
    assert pick(4096, wide, 2) == configs.WS_LAUNCH  # two N parts hold one shard's accumulator only
    assert pick(100, 4096, 1) == configs.WS_ONE_128
    assert pick(64, 6144, 1) == pick(17, 6144, 1) == configs.WS_ONE_64
    # two shards below M = 512: on the grid, as the Triton kernel runs them
    assert pick(511, 4096, 2) == pick(129, 14336, 2) == configs.WS_GRID
    assert pick(128, 4096, 2) == pick(65, 4096, 2) == configs.WS_ONE_128_GRID
    assert pick(64, 4096, 2) == pick(17, 4096, 2) == configs.WS_ONE_64_GRID
    assert all(w.shard_grid for w in (configs.WS_GRID, configs.WS_ONE_128_GRID, configs.WS_ONE_64_GRID))
    for m, n, shards in ((16, 6144, 1), (1, 4096, 1), (16, 4096, 2), (64, wide, 1), (4096, 4096, 4)):
        assert pick(m, n, shards) is None, (m, n, shards)  # the Triton kernel (its shard grid, its tree)
    assert configs.WS_BOUNDARIES == (17, 65, 129, 512)  # the Gluon launches serve M >= 17
    for arch in ("interpret", "sm80", "sm89", "sm100", "sm120"):
        assert configs.matmul_ws(arch, 4096, 4096, 1) is None, arch
    monkeypatch.setattr(triton, "__version__", "3.8.0")
    assert pick(4096, 4096, 1) is None  # Gluon's API moves: only the verified Triton


def test_ws_switch_is_checked(monkeypatch, device):
    w = prepare_weight(torch.randn(8, 64).bfloat16().to(device))
    x = torch.randn(2, 64, device=device)
    monkeypatch.setenv(WS_ENV, "yes")
    with pytest.raises(ValueError, match=WS_ENV):
        heal_matmul(x, w)
    monkeypatch.setenv(WS_ENV, "0")
    assert torch.isfinite(heal_matmul(x, w)).all()


@pytest.mark.skipif(not ON_36, reason=f"the Gluon kernel is built for triton {configs.WS_TRITON}x")
def test_ws_kernel_compiles_for_sm90_as_designed():
    """Offline sm_90 compile (a real compile, not the interpreter): two consumer warpgroups x two MMA chains x
    four k16 steps per K loop (two loops with two shards), one tensor-core wait per tile and consumer, no
    wgmma serialization, no spills with one shard (two shards hold a second accumulator: a few bytes, once)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-m", "bench.kernels.sass_matmul_ws", "--json"],
                         cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [json.loads(ln) for ln in res.stdout.strip().splitlines()]
    assert [r["shards"] for r in rows] == [1, 2]
    for r in rows:
        s = r["shards"]
        assert (r["hgmma"], r["waits"]) == (16 * s, 2 * s), r
        assert "C7510" not in r["ptxas"] and "C7515" not in r["ptxas"], r
        assert r["shared"] <= 227 * 1024, r
    assert "0 bytes spill stores" in rows[0]["ptxas"], rows[0]


@pytest.mark.skipif(not ON_36, reason=f"the Gluon kernel is built for triton {configs.WS_TRITON}x")
def test_ws_shard_grid_compiles_to_one_k_loop_per_program():
    """MatmulWs.shard_grid: with two shards each program runs one shard's K loop (one consumer: two MMA
    chains x four k16 steps, one wait per tile), as with one shard, and nothing spills."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-m", "bench.kernels.sass_matmul_ws", "--json", "--grid"],
                         cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [json.loads(ln) for ln in res.stdout.strip().splitlines()]
    assert [(r["shards"], r["hgmma"], r["waits"]) for r in rows] == [(1, 8, 1), (2, 8, 1)], rows
    for r in rows:
        assert "0 bytes spill stores" in r["ptxas"] and "C7510" not in r["ptxas"], r


def _case(m, n, k, seed=0):
    gen = torch.Generator().manual_seed(m + n + k + seed)
    hw = prepare_weight((torch.randn(n, k, generator=gen) * 0.02).bfloat16().cuda())
    x = reference.heavy_tailed_activations(m, k, generator=gen, device="cuda")
    bias = torch.randn(n, generator=gen).cuda()
    return hw, x, bias


def _triton(x, hw, bias, shards):
    """The Triton kernel at the tiles and shard placement it serves at this M."""
    m, n = x.shape[0], hw.weight.shape[0]
    grid = configs.matmul_shard_grid("sm90", m, shards)
    tiles = configs.matmul_tiles("sm90", m, n, k_shards=shards, shard_grid=grid)
    return heal_matmul(x, hw, bias, k_shards=shards, tiles=tiles)


def _gpu_ws():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if configs.matmul_ws(f"sm{''.join(map(str, torch.cuda.get_device_capability()))}", 4096, 4096, 1) is None:
        pytest.skip("the Gluon launch is not used on this GPU / triton")


@pytest.mark.gpu
@pytest.mark.parametrize("m,n,k", [(4096, 6144, 4096), (4096, 4096, 14336), (1100, 1000, 200), (1024, 28672, 4096),
                                   (1031, 130, 4160)], ids=lambda v: str(v))
@pytest.mark.parametrize("shards", [1, 2])
def test_ws_gives_the_triton_kernels_bits(m, n, k, shards):
    _gpu_ws()
    if shards == 2 and k % 128:
        pytest.skip("K does not split into two shards of whole tiles")
    hw, x, bias = _case(m, n, k)
    for b in (bias, bias.bfloat16(), None):
        want = _triton(x, hw, b, shards)
        got = torch.full_like(want, float("nan"))
        heal_matmul(x, hw, b, k_shards=shards, out=got)
        assert torch.equal(got, want), (b is None)
        split = split_tiles(x, 64)
        assert torch.equal(heal_matmul(x, hw, b, k_shards=shards, x_split=split), want)


@pytest.mark.gpu
@pytest.mark.parametrize("n,shards", [(4096, 1), (4096, 2), (configs.WS_WIDE_N, 1)], ids=["narrow", "2-shards", "wide"])
def test_rows_do_not_change_across_the_ws_launches(n, shards):
    """Each M boundary of configs.matmul_ws changes the launch (the Triton kernel, one or two consumers, N
    parts): every row the same bits as in one large launch."""
    _gpu_ws()
    hw, x, bias = _case(1100, n, 4096, seed=shards)
    full = heal_matmul(x, hw, bias, k_shards=shards)
    ms = sorted({1, 16, *(b + d for b in configs.WS_BOUNDARIES for d in (-1, 0, 1)), 1024})
    seen = set()
    for m in ms:
        seen.add(configs.matmul_ws("sm90", m, n, shards))
        assert torch.equal(heal_matmul(x[:m], hw, bias, k_shards=shards), full[:m]), m
    assert torch.equal(heal_matmul(x[-600:], hw, bias, k_shards=shards), full[-600:])
    assert None in seen and len(seen) >= 2, seen


@pytest.mark.gpu
def test_ws_switch_off_gives_the_same_bits(monkeypatch):
    _gpu_ws()
    hw, x, bias = _case(2048, 4096, 4096, seed=5)
    on = heal_matmul(x, hw, bias)
    monkeypatch.setenv(WS_ENV, "0")
    assert torch.equal(heal_matmul(x, hw, bias), on)


@pytest.mark.gpu
def test_ws_propagates_nonfinite_activations():
    _gpu_ws()
    hw, x, bias = _case(1500, 512, 256, seed=7)
    x[3, 5] = float("nan")
    x[1200, 17] = float("inf")
    want = _triton(x, hw, bias, 1)
    got = heal_matmul(x, hw, bias)
    assert torch.equal(got.isnan(), want.isnan()) and torch.equal(torch.nan_to_num(got), torch.nan_to_num(want))
    assert got[3].isnan().all() and not got[2].isnan().any()


@pytest.mark.gpu
@pytest.mark.parametrize("n,shards", [(6144, 1), (4096, 2)], ids=["one-shard", "2-shards-grid"])
def test_ws_launch_replays_in_a_cuda_graph(n, shards):
    """A decode batch from configs.WS_BOUNDARIES[0] up captures a Gluon launch: its TMA descriptors are kernel
    arguments, so a replay must read the buffers' new contents (two shards: also the partials and their sum)."""
    _gpu_ws()
    m = 64
    assert configs.matmul_ws("sm90", m, n, shards) is not None
    hw, x, bias = _case(m, n, 4096, seed=9)
    _, x2, _ = _case(m, n, 4096, seed=10)
    split = split_tiles(x, 64)
    out = torch.empty(m, n, device="cuda")
    heal_matmul(x, hw, bias, x_split=split, out=out, k_shards=shards)  # compile outside the capture
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        heal_matmul(x, hw, bias, x_split=split, out=out, k_shards=shards)
    for xs in (x, x2):
        new = split_tiles(xs, 64)
        for dst, src in ((split.hi, new.hi), (split.lo, new.lo), (split.ts, new.ts)):
            dst.copy_(src)
        out.fill_(float("nan"))
        g.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, _triton(xs, hw, bias, shards))


# Every launch heal_matmul may pick, and ones a probe compares that it does not: a wider ring, and each
# one-part launch with its shards placed the other way (on the grid, or summed in the program).
LAUNCHES = list(dict.fromkeys([
    *configs.ws_launches(), dataclasses.replace(configs.WS_ONE_128, stages=6),
    *(dataclasses.replace(w, shard_grid=not w.shard_grid) for w in configs.ws_launches() if w.n_parts == 1)]))


@pytest.mark.gpu
@pytest.mark.parametrize("m,n,k", [(4096, 6144, 4096), (1100, 1000, 200), (1031, 130, 4160), (1, 4096, 4096),
                                   (64, 1000, 14336), (300, 6144, 4096)], ids=lambda v: str(v))
@pytest.mark.parametrize("ws", LAUNCHES, ids=lambda w: f"n{w.block_n}-s{w.stages}-p{w.n_parts}-c{w.consumers}"
                                                    f"{'-grid' if w.shard_grid else ''}")
def test_every_ws_launch_gives_the_triton_kernels_bits(m, n, k, ws):
    _gpu_ws()
    hw, x, bias = _case(m, n, k, seed=11)
    for shards in (1, 2) if ws.n_parts == 1 and k % 128 == 0 else (1,):
        for b in (bias, None):
            want = _triton(x, hw, b, shards)
            got = torch.full_like(want, float("nan"))
            _matmul_ws(split_tiles(x, 64), hw.weight, hw.scale, b, got, shards, ws)
            assert torch.equal(got, want), (shards, b is None)


def test_ws_in_n_parts_refuses_two_shards(device):
    with pytest.raises(ValueError, match="k_shards=2"):
        _matmul_ws(split_tiles(torch.randn(4, 128, device=device), 64),
                   torch.zeros(8, 128, dtype=torch.float16, device=device), torch.ones(8, device=device), None,
                   torch.empty(4, 8, device=device), 2, configs.WS_WIDE)
