"""GPU-only: bitwise invariance where tensor-core numerics are real, at Llama-3-8B shapes."""

import pytest
import torch

from heal_kernels import configs, reference
from heal_kernels.activation import gelu_tanh_and_mul, silu_and_mul
from heal_kernels.matmul import heal_matmul, prepare_weight
from heal_kernels.norm import rms_norm
from heal_kernels.rope import apply_rotary
from tests.helpers import BATCH_SIZES, assert_rows_invariant

pytestmark = pytest.mark.gpu

LLAMA_SHAPES = [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336), (128256, 4096)]


@pytest.mark.parametrize("n,k", LLAMA_SHAPES, ids=lambda v: str(v))
def test_every_tile_config_gives_identical_rows(n, k):
    """Tiles follow M for speed; every shipped tile set must give the same bits for every row."""
    gen = torch.Generator().manual_seed(n + k)
    w = prepare_weight((torch.randn(n, k, generator=gen) * 0.02).bfloat16().cuda())
    x = reference.heavy_tailed_activations(300, k, generator=gen, device="cuda")
    outs = {t: heal_matmul(x, w, tiles=t) for t in configs.matmul_tile_table("sm90")}
    first = next(iter(outs.values()))
    for t, o in outs.items():
        assert torch.equal(o, first), f"tiles {t} change the result"


@pytest.mark.parametrize("n,k", [(4096, 4096), (4096, 14336)], ids=lambda v: str(v))
def test_matmul_batch_invariance_at_llama_shapes(n, k):
    gen = torch.Generator().manual_seed(1)
    w = prepare_weight((torch.randn(n, k, generator=gen) * 0.02).bfloat16().cuda())
    x = reference.heavy_tailed_activations(max(BATCH_SIZES), k, generator=gen, device="cuda")
    assert_rows_invariant(lambda xs: heal_matmul(xs, w), x)


def test_row_ops_batch_invariance_at_llama_shapes():
    gen = torch.Generator().manual_seed(2)
    m, h, inter = max(BATCH_SIZES), 4096, 14336
    x = (torch.randn(m, h, generator=gen) * 3).cuda()
    res = torch.randn(m, h, generator=gen).cuda()
    w = torch.randn(h, generator=gen).bfloat16().cuda()
    assert_rows_invariant(lambda xs: rms_norm(xs, w, 1e-5, res[: xs.shape[0]]), x)
    gu = torch.randn(m, 2 * inter, generator=gen).cuda()
    assert_rows_invariant(silu_and_mul, gu)
    assert_rows_invariant(gelu_tanh_and_mul, gu)
    cache = reference.rope_cos_sin_cache(131072, 128, base=500000.0, device="cuda")
    pos = torch.randint(0, 131072, (m,), generator=gen).cuda()
    q = torch.randn(m, 32 * 128, generator=gen).cuda()
    k = torch.randn(m, 8 * 128, generator=gen).cuda()
    assert_rows_invariant(lambda qs: apply_rotary(pos[: qs.shape[0]], qs, k[: qs.shape[0]], cache, 128), q)


def test_matmul_repeatable_run_to_run():
    gen = torch.Generator().manual_seed(3)
    w = prepare_weight((torch.randn(4096, 4096, generator=gen) * 0.02).bfloat16().cuda())
    x = torch.randn(4096, 4096, generator=gen).cuda()
    first = heal_matmul(x, w)
    for _ in range(3):
        assert torch.equal(heal_matmul(x, w), first)


@pytest.mark.parametrize("shards", [2, 4])
@pytest.mark.parametrize("n,k", [(4096, 4096), (4096, 14336)], ids=lambda v: str(v))
def test_k_shards_match_the_shard_tree_and_do_not_depend_on_the_batch(n, k, shards):
    """A sharded matmul (HEAL_ROW_SHARDS) runs its shards in separate programs at small M and,
    for two shards, inside one program above it: every batch size gives the bits of the tree
    of single-shard products, and a row's bits do not depend on how many rows share the launch."""
    from heal_kernels.matmul import HealWeight
    from heal_kernels.reduce import tree_sum

    gen = torch.Generator().manual_seed(k + shards)
    w = prepare_weight((torch.randn(n, k, generator=gen) * 0.02).bfloat16().cuda())
    x = reference.heavy_tailed_activations(max(BATCH_SIZES), k, generator=gen, device="cuda")
    ks = k // shards
    w_parts = [HealWeight(w.weight[:, i * ks:(i + 1) * ks].contiguous(), w.scale) for i in range(shards)]
    for m in (1, 16, 64, 65, 300):
        want = tree_sum([heal_matmul(x[:m, i * ks:(i + 1) * ks].contiguous(), w_parts[i]) for i in range(shards)])
        assert torch.equal(heal_matmul(x[:m], w, k_shards=shards), want), m
    assert_rows_invariant(lambda xs: heal_matmul(xs, w, k_shards=shards), x)
