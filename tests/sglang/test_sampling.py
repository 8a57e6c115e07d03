"""Seeded sampling on heal servers (heal_sglang.sampling): SGLang's own seeded sampler on CPU,
the seed tensor heal builds, and the server arguments that select it.

SGLang's ``multinomial_with_seed`` is ``torch.compile``d; its murmur-hash Triton kernel runs here
under the interpreter, which dynamo cannot trace, so the tests run its body eagerly
(``force_eager``): the same ops the GPU runs, uncompiled.
"""

from types import SimpleNamespace

import pytest
import torch

VOCAB = 97


@pytest.fixture(autouse=True)
def eager():
    with torch.compiler.set_stance("force_eager"):
        yield


@pytest.fixture
def draws(plugin):
    """SGLang's seeded sampler on CPU tensors: 0.5.17 hashes with its Triton kernel (interpreted here);
    0.5.23 sends CPU tensors to sgl_kernel's CPU op, which needs a loadable sgl_kernel build."""
    from heal_sglang import compat

    if compat.installed() == compat.SGLANG_0523:
        try:
            import sgl_kernel  # noqa: F401
        except ImportError as e:
            pytest.skip(f"SGLang 0.5.23 hashes CPU tensors in sgl_kernel, which does not load here ({e!s:.60})")
    return True


def _probs(rows: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(rows, VOCAB, generator=g) * 3, dim=-1)


def _seeded(probs, seeds, positions):
    from sglang.srt.layers.sampler import sampling_from_probs_torch

    return sampling_from_probs_torch(probs, torch.tensor(seeds), torch.tensor(positions))


def _filtered(probs, seeds, positions, top_k=VOCAB, top_p=0.9, min_p=0.0):
    from sglang.srt.layers import sampler

    n = probs.shape[0]
    # the module attribute, as Sampler._sample_from_probs calls it: heal's min-p hook included
    return sampler.top_k_top_p_min_p_sampling_from_probs_torch(
        probs.clone(), torch.full((n,), top_k, dtype=torch.int32), torch.full((n,), top_p),
        torch.full((n,), min_p), min_p > 0, torch.tensor(seeds), torch.tensor(positions))


@pytest.mark.parametrize("sample", [_seeded, _filtered], ids=["plain", "top_p"])
def test_a_draw_depends_only_on_its_row_seed_and_position(draws, sample):
    probs = _probs(7)
    seeds, pos = [11, 12, 13, 14, 15, 16, 17], [3, 40, 41, 7, 511, 0, 9]
    together = sample(probs, seeds, pos)
    alone = torch.cat([sample(probs[i:i + 1], seeds[i:i + 1], pos[i:i + 1]) for i in range(7)])
    assert torch.equal(together, alone)
    perm = [4, 0, 6, 2, 5, 1, 3]
    shuffled = sample(probs[perm], [seeds[i] for i in perm], [pos[i] for i in perm])
    assert torch.equal(shuffled, together[perm])
    # other rows in the batch (other prompts, other seeds) change nothing
    other = _probs(5, seed=1)
    mixed = sample(torch.cat([other[:2], probs[:3], other[2:]]), [1, 2] + seeds[:3] + [3, 4, 5],
                   [1, 2] + pos[:3] + [3, 4, 5])
    assert torch.equal(mixed[2:5], together[:3])


def test_seed_and_position_both_change_the_draw(draws):
    probs = torch.full((64, VOCAB), 1.0 / VOCAB)  # uniform: draws differ often
    base = _seeded(probs, [5] * 64, list(range(64)))
    assert len(set(base.tolist())) > 8  # positions give different draws
    assert not torch.equal(_seeded(probs, [6] * 64, list(range(64))), base)  # so does the seed
    assert torch.equal(_seeded(probs, [5] * 64, list(range(64))), base)  # and the same pair the same draw


def test_seeded_draws_follow_the_distribution(draws):
    """4000 seeds at one position: token frequencies within 4 sigma of the probabilities."""
    probs = torch.tensor([[0.5, 0.25, 0.125, 0.0625, 0.0625] + [0.0] * 3])
    n = 4000
    draws = _seeded(probs.expand(n, 8).contiguous(), list(range(n)), [17] * n)
    freq = torch.bincount(draws.long(), minlength=8).double() / n
    sigma = (probs[0].double() * (1 - probs[0].double()) / n).sqrt()
    assert (freq - probs[0].double()).abs().le(4 * sigma + 1e-12).all(), freq
    assert freq[5:].sum() == 0


def test_min_p_with_a_seed_is_served_and_filters(draws):
    """SGLang asserts that min-p has no seed; heal's hook filters min-p first and draws seeded."""
    probs = _probs(6)
    seeds, pos = [1, 2, 3, 4, 5, 6], [10, 20, 30, 40, 50, 60]
    got = _filtered(probs, seeds, pos, top_p=1.0, min_p=0.3)
    kept = probs >= probs.max(dim=-1, keepdim=True).values * 0.3
    assert kept.gather(1, got.long().view(-1, 1)).all()
    assert torch.equal(_filtered(probs[2:3], seeds[2:3], pos[2:3], top_p=1.0, min_p=0.3), got[2:3])
    # without a seed the hook leaves SGLang's path alone (torch.multinomial, min-p after top-p)
    from sglang.srt.layers import sampler

    n = probs.shape[0]
    torch.manual_seed(0)
    unseeded = sampler.top_k_top_p_min_p_sampling_from_probs_torch(
        probs.clone(), torch.full((n,), VOCAB, dtype=torch.int32), torch.ones(n), torch.full((n,), 0.3), True, None,
        torch.tensor(pos))
    assert kept.gather(1, unseeded.long().view(-1, 1)).all()


def _reqs(*seeds):
    return [SimpleNamespace(rid=f"req-{i}", sampling_params=SimpleNamespace(sampling_seed=s))
            for i, s in enumerate(seeds)]


def test_heal_fills_one_seed_per_request(heal_mode):
    from heal_sglang.sampling import fill_seeds, unseeded_seed

    reqs = _reqs(1234, None, -7, 2**64 + 5)
    heal_mode._current = heal_mode.Numerics(mode=heal_mode.HEAL)
    info = SimpleNamespace(sampling_seed=None, device="cpu")
    fill_seeds(None, info, SimpleNamespace(reqs=reqs), 512)
    assert info.sampling_seed.dtype == torch.int64
    assert info.sampling_seed.tolist() == [1234, unseeded_seed("req-1"), -7, 5]
    # an unseeded request: stable for its id (every TP rank agrees), different between ids
    assert unseeded_seed("req-1") == unseeded_seed("req-1") != unseeded_seed("req-2")
    # SGLang's own seeds (--enable-deterministic-inference) are kept
    theirs = torch.tensor([42, 42, 42, 42])
    info = SimpleNamespace(sampling_seed=theirs, device="cpu")
    fill_seeds(None, info, SimpleNamespace(reqs=reqs), 512)
    assert info.sampling_seed is theirs


@pytest.mark.parametrize("mode", [None, "layercast"])
def test_other_modes_keep_sglangs_sampler(heal_mode, mode):
    from heal_sglang.sampling import fill_seeds

    heal_mode._current = heal_mode.Numerics(mode=mode)
    info = SimpleNamespace(sampling_seed=None, device="cpu")
    fill_seeds(None, info, SimpleNamespace(reqs=_reqs(1)), 512)
    assert info.sampling_seed is None


def test_the_hooks_are_installed(plugin):
    from heal_sglang.plugin import report

    rows = [line for ok, line in report() if ok]
    assert any("adjusted_from_schedule_batch" in line for line in rows)
    assert any("top_k_top_p_min_p_sampling_from_probs_torch" in line for line in rows)


@pytest.mark.parametrize("kw", [dict(quantization="heal"), dict(attention_backend="heal")],
                         ids=["quantization", "attention_backend"])
def test_heal_servers_sample_on_the_pytorch_backend(plugin, tiny_model, kw):
    from tests.sglang._sglang import resolved_server_args

    sa = resolved_server_args(model_path=tiny_model, device="cuda", **kw)
    assert sa.sampling_backend == "pytorch"
    assert not sa.enable_deterministic_inference  # the seeded sampler alone, not SGLang's deterministic mode
    sa = resolved_server_args(model_path=tiny_model, device="cuda", sampling_backend="pytorch", **kw)
    assert sa.sampling_backend == "pytorch"


def test_another_sampling_backend_is_refused(plugin, tiny_model):
    from tests.sglang._sglang import resolved_server_args

    with pytest.raises(ValueError, match="--sampling-backend flashinfer"):
        resolved_server_args(model_path=tiny_model, device="cuda", quantization="heal", sampling_backend="flashinfer")
    # layercast and stock servers keep SGLang's choice
    sa = resolved_server_args(model_path=tiny_model, device="cuda", quantization="layercast",
                              attention_backend="triton", sampling_backend="flashinfer")
    assert sa.sampling_backend == "flashinfer"


def _sampler_run(tmp_path, model, mode):
    import socket

    import torch.multiprocessing as mp

    from tests.sglang import _sampler_worker

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / f"{mode}.pt"
    mp.start_processes(_sampler_worker.run, args=(port, mode, model, str(out)), nprocs=1, join=True,
                       start_method="spawn")
    return torch.load(out, weights_only=False)


def test_greedy_logprobs_do_not_depend_on_sampled_neighbours(draws, tmp_path, tiny_model):
    """SGLang's real Sampler: a greedy row's returned logprob and top logprobs, in an all-greedy batch
    and beside a sampled row.  Stock SGLang gives other bits (log_softmax vs log(softmax)); heal the same."""
    stock = _sampler_run(tmp_path, tiny_model, "stock")
    heal = _sampler_run(tmp_path, tiny_model, "heal")
    for r in (stock, heal):  # the greedy rows pick the same tokens either way
        assert r["alone"][0].tolist() == r["mixed"][0][[0, 2]].tolist()
    assert not (torch.equal(stock["alone"][1], stock["mixed"][1][[0, 2]])
                and stock["alone"][2] == [stock["mixed"][2][0], stock["mixed"][2][2]]), \
        "stock SGLang gave the same bits: this test would check nothing"
    assert torch.equal(heal["alone"][1], heal["mixed"][1][[0, 2]])
    assert heal["alone"][2] == [heal["mixed"][2][0], heal["mixed"][2][2]]
