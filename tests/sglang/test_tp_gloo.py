"""Tensor parallelism on gloo, 1, 2 and 4 CPU processes: the sharded linear stack (embedding,
QKV, o_proj, gate_up, down_proj with bias, lm_head) gives the single-process bits on every rank.

Each rank reduces its slice of the HEAL_ROW_SHARDS = 4 K-shard tree; row-parallel partials are
gathered and added in rank order, never summed by the collective.
"""

import socket

import pytest
import torch
import torch.multiprocessing as mp

from tests.sglang import _tp_worker


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("tp")
    configs = ((1, 4, "ordered"), (2, 4, "ordered"), (4, 4, "ordered"), (1, 1, "ordered"), (4, 4, "nccl"))
    for world, shards, reduce in configs:
        mp.start_processes(_tp_worker.run, args=(world, _port(), shards, str(out), reduce), nprocs=world, join=True,
                           start_method="spawn")
    runs = {}
    for w, s, red in configs:
        for r in range(w):
            key = (w, s, r) if red == "ordered" else (w, s, red, r)
            runs[key] = torch.load(out / f"world{w}-shards{s}-{red}-rank{r}.pt")
    return runs


@pytest.mark.parametrize("world", [2, 4])
def test_every_rank_matches_one_process_bitwise(runs, world):
    ref = runs[(1, 4, 0)]
    assert torch.isfinite(ref["logits"]).all()
    for rank in range(world):
        got = runs[(world, 4, rank)]
        assert torch.equal(got["h"], ref["h"]), (world, rank)
        assert torch.equal(got["logits"], ref["logits"]), (world, rank)


def test_the_shard_tree_is_what_makes_them_agree(runs):
    """One process with one K shard sums in another order: different bits (so the test above can fail)."""
    assert not torch.equal(runs[(1, 1, 0)]["h"], runs[(1, 4, 0)]["h"])
    assert (runs[(1, 1, 0)]["h"] - runs[(1, 4, 0)]["h"]).abs().max() < 1e-5


def test_the_collective_sum_switch_still_serves(runs):
    """HEAL_TP_REDUCE=nccl (for measuring what the ordering costs) sums through SGLang's all-reduce."""
    got, ref = runs[(4, 4, "nccl", 0)]["h"], runs[(1, 4, 0)]["h"]
    assert (got - ref).abs().max() < 1e-5
