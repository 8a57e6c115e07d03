"""Seeded sampling on heal servers: every draw depends only on (seed, position, token id).

SGLang already has the sampler: ``sglang.srt.layers.sampler.multinomial_with_seed`` draws with
the Gumbel-max trick, its noise a murmur3 hash of (request seed, position of the last token,
vocabulary column), so a row's draw does not depend on the other rows of the batch. It runs for
every sampled row whenever ``SamplingBatchInfo.sampling_seed`` is a tensor, and SGLang 0.5.17
and 0.5.23 build that tensor only under ``--enable-deterministic-inference`` (which also swaps
torch's matmuls, log_softmax and mean for its batch-invariant kernels process-wide, and fills
seed 42 for requests without one). Heal's logits are batch-invariant already, so heal turns on
the sampler alone:

- ``fill_seeds`` (after ``SamplingBatchInfo.adjusted_from_schedule_batch``, SGLang's own
  extension point) builds the seed tensor for every batch of a heal process: the request's
  ``sampling_seed`` (the OpenAI ``seed``), or, without one, a seed hashed from the request id,
  which is random per request (not reproducible, as without heal) and the same on every TP rank;
- ``args.prepare`` selects ``--sampling-backend pytorch``: FlashInfer's top-k/top-p kernels
  draw from the global generator and SGLang refuses a seed there;
- ``min_p_then_seeded`` (around ``top_k_top_p_min_p_sampling_from_probs_torch``) applies min-p
  before SGLang's top-k/top-p filter, where SGLang asserts that no seed is set: the kept set is
  the same (the min-p threshold is the largest probability times min_p, in either order);
- ``logprobs_by_log_softmax`` (after ``Sampler.__init__``): SGLang returns a greedy request's
  logprobs as ``log_softmax(logits)`` when every request of the batch is greedy and as
  ``log(softmax(logits / 1))`` when a sampled request shares the batch, and the two differ in the
  last bits, so a greedy request's logprobs changed with its neighbours (found by the stress
  test: every greedy + logprob request batched with a sampled one).  SGLang's deterministic mode
  takes ``log_softmax(logits / T)`` in both branches; heal sets that flag on the sampler alone.
"""

from __future__ import annotations

import hashlib

_INT64 = 1 << 64


def _as_int64(seed: int) -> int:
    """The low 64 bits as a signed int64 (seeds in int64 range are unchanged, as SGLang passes them)."""
    return (int(seed) + (1 << 63)) % _INT64 - (1 << 63)


def unseeded_seed(rid) -> int:
    """The seed of a request that carries none: a hash of its id (random per request, the same on
    every TP rank; Python's hash() is salted per process and would desynchronise the ranks)."""
    digest = hashlib.blake2b(str(rid).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def seed_of(req) -> int:
    s = req.sampling_params.sampling_seed
    return _as_int64(s) if s is not None else unseeded_seed(req.rid)


def fill_seeds(result, info, batch, *a, **k):
    """AFTER ``SamplingBatchInfo.adjusted_from_schedule_batch``: one int64 seed per request, in a
    heal process, unless SGLang set them (``--enable-deterministic-inference``)."""
    from heal_sglang import state

    if info.sampling_seed is None and state.mode() == state.HEAL:
        import torch

        seeds = torch.tensor([seed_of(r) for r in batch.reqs], dtype=torch.int64)
        info.sampling_seed = seeds.to(info.device, non_blocking=True)
    return result


def logprobs_by_log_softmax(result, sampler, *a, **k):
    """AFTER ``Sampler.__init__``: in a heal process, returned logprobs come from log_softmax in every
    batch (the sampler's ``enable_deterministic`` selects only that, the RL on-policy path, which
    needs ``rl_on_policy_target`` too, and on 0.5.23 torch's softmax for the probabilities)."""
    from heal_sglang import state

    if state.mode() == state.HEAL:
        if not hasattr(sampler, "enable_deterministic"):
            from heal_sglang.compat import CompatError, sglang_version

            raise CompatError(f"SGLang {sglang_version()}'s Sampler has no enable_deterministic attribute; "
                              "heal cannot make returned logprobs independent of the batch")
        sampler.enable_deterministic = True
    return result


def min_p_then_seeded(orig, *a, **k):
    """AROUND ``top_k_top_p_min_p_sampling_from_probs_torch``: with a seed and min-p, zero the
    probabilities under max(p) * min_p first and let SGLang filter top-k/top-p and draw."""
    import inspect

    import torch

    bound = inspect.signature(orig).bind(*a, **k)
    args = bound.arguments
    if args.get("sampling_seed") is None or not args.get("need_min_p_sampling"):
        return orig(*a, **k)
    probs = args["probs"]
    threshold = probs.max(dim=-1, keepdim=True).values * args["min_ps"].view(-1, 1)
    args["probs"] = torch.where(probs < threshold, torch.zeros_like(probs), probs)
    args["need_min_p_sampling"] = False
    return orig(*bound.args, **bound.kwargs)
