"""bench.e2e.repro's seeded phase and comparison without a GPU: hand-made engine outputs."""

from types import SimpleNamespace

import pytest

from bench.e2e import repro


def _tok(tid, lp, top=((-0.5, 3), (-1.25, 7))):
    return [tid, lp, [list(t) for t in top]]


def _outputs(n, ids=(5, 6, 7)):
    return [[_tok(t + i, -0.25 * (k + 1)) for k, t in enumerate(ids)] for i in range(n)]


def _variant(n, with_b1=False):
    out = {"plain_all": [[1, 2, 3]] * n, "shared_warm_all": [[4, 5]] * n,
           "seeded/plain_all": _outputs(n), "seeded/shared_warm_all": _outputs(n, (8, 9))}
    if with_b1:
        out.update({"plain_b1": [[1, 2, 3]] * n, "shared_cold_b1": [[4, 5]] * n,
                    "seeded/plain_b1": _outputs(n), "seeded/shared_cold_b1": _outputs(n, (8, 9))})
    return out


def test_seeded_rows_compare_tokens_and_logprobs_bitwise():
    n = 4
    res = {"base": _variant(n, with_b1=True), "chunk64": _variant(n), "nograph": _variant(n)}
    # chunk64: one sampled token's logprob differs in the last bit, its id does not
    lp = res["chunk64"]["seeded/plain_all"][2][1][1]
    res["chunk64"]["seeded/plain_all"][2][1][1] = lp + abs(lp) * 2**-52
    # nograph: one top-5 id differs at token 1 of a shared prompt
    res["nograph"]["seeded/shared_warm_all"][1][1][2][1][1] = 99
    rows = repro.compare(res)
    greedy = [k for k in rows if not k.startswith("seeded: ")]
    assert greedy == ["batch 1 vs all", "radix warm vs cold (batch 1)", "chunked prefill 64 vs off",
                      "CUDA graph off vs on"]  # the greedy rows, unchanged
    assert all(rows[k]["identical"] == rows[k]["n"] for k in greedy)
    assert rows["seeded: batch 1 vs all"] == {"identical": n, "identical_ids": n, "n": n, "first_divergence_min": None}
    chunk = rows["seeded: chunked prefill 64 vs off"]
    assert (chunk["identical"], chunk["identical_ids"], chunk["n"], chunk["first_divergence_min"]) == (7, 8, 8, 1)
    graph = rows["seeded: CUDA graph off vs on"]
    assert (graph["identical"], graph["identical_ids"], graph["first_divergence_min"]) == (7, 8, 1)


def test_greedy_only_results_give_the_greedy_rows():
    base = {k: v for k, v in _variant(3, with_b1=True).items() if not k.startswith("seeded/")}
    rows = repro.compare({"base": base, "tp2": {"plain_all": [[1, 2, 3]] * 3, "shared_warm_all": [[4, 5]] * 3}})
    assert list(rows) == ["batch 1 vs all", "radix warm vs cold (batch 1)", "TP=2 vs TP=1"]
    assert rows["TP=2 vs TP=1"]["identical"] == 6 and rows["TP=2 vs TP=1"]["first_divergence_min"] is None
    rows = repro.compare({"base": base, "tp2": {"plain_all": [[1, 2, 3]] * 3, "shared_warm_all": [[4, 9]] * 3}})
    assert rows["TP=2 vs TP=1"] == {"identical": 3, "identical_ids": 3, "n": 6, "first_divergence_min": 1}


class _Engine:
    """Answers Engine.generate with fake seeded outputs; records each request's sampling params."""

    def __init__(self):
        self.calls = []

    def flush_cache(self):
        pass

    def generate(self, input_ids, sampling_params, return_logprob=False, top_logprobs_num=None):
        sps = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(input_ids)
        self.calls.append((input_ids, sps, return_logprob, top_logprobs_num))
        outs = []
        for sp in sps:
            seed = sp.get("sampling_seed", 0)
            ids = [seed % 50 + k for k in range(sp["max_new_tokens"])]
            top = [[(-0.1 * k, t, None) for k, t in enumerate(range(top_logprobs_num or 0))] for _ in ids]
            outs.append({"output_ids": ids, "meta_info": {
                "output_token_logprobs": [(-0.5, t, None) for t in ids], "output_top_logprobs": top}})
        return outs


def test_each_prompt_samples_with_its_own_seed_in_every_run():
    eng = _Engine()
    ps = repro.prompts(1000, 3)
    out = repro._phase(eng, ps, SimpleNamespace(new=4, variant="base"), repro._sample, "seeded/")
    assert set(out) == {"seeded/plain_all", "seeded/shared_warm_all", "seeded/plain_b1", "seeded/shared_cold_b1"}
    # batch 1 and all together give prompt i the same seed, so the fake engine the same record
    assert out["seeded/plain_all"] == out["seeded/plain_b1"]
    assert out["seeded/shared_warm_all"] == out["seeded/shared_cold_b1"]
    sampled = [c for c in eng.calls if c[2]]
    assert all(top == repro.TOP_LOGPROBS for *_, top in sampled)
    seeds = [[sp["sampling_seed"] for sp in c[1]] for c in sampled]
    assert seeds[0] == [repro.SEED, repro.SEED + 1, repro.SEED + 2]
    assert seeds[1] == [repro.SEED + repro.SHARED_OFFSET + i for i in range(3)]
    assert all(sp["temperature"] == 0.7 and sp["top_p"] == 0.9 for c in sampled for sp in c[1])
    rec = out["seeded/plain_all"][0]
    assert rec[0] == [repro.SEED % 50, -0.5, [[-0.0, 0], [-0.1, 1], [-0.2, 2], [-0.30000000000000004, 3],
                                                [-0.4, 4]]]


def test_a_record_whose_logprobs_name_other_tokens_is_refused():
    o = {"output_ids": [1, 2], "meta_info": {"output_token_logprobs": [(-0.5, 1, None), (-0.5, 3, None)],
                                              "output_top_logprobs": [[], []]}}
    with pytest.raises(RuntimeError, match="output_ids"):
        repro.sampled_record(o)
