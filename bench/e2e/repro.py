"""Reproducibility matrix: batch, chunked prefill, radix cache and CUDA graphs.

    python -m bench.e2e.repro --model-path /tmp/m --modes heal,bf16,det --out results.json
    python -m bench.e2e.repro --model-path /tmp/m --modes heal --sampling greedy,seeded --out results.json

For each mode, one engine per variant (chunked prefill off / 64 / 512, decode
CUDA graph off) runs in its own process, several at once on the one GPU.  Every
output is compared token by token with the mode's reference run: all prompts
together, chunked prefill off, CUDA graphs on, radix cache cold.

``--sampling`` picks the phases each engine runs: ``greedy`` (temperature 0, the default) and
``seeded`` (temperature 0.7, top-p 0.9, one ``sampling_seed`` per prompt, the sampled token's
logprob and the top-5 logprobs returned); a seeded output matches only if every token, its
logprob and its top-5 (ids and logprobs) are bitwise the same.  Seeded rows are labelled
``seeded: ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time

from bench.e2e import engines


def prompts(vocab: int, n: int, seed: int = 1) -> dict:
    rng = random.Random(seed)
    tok = lambda k: [rng.randrange(10, vocab - 10) for _ in range(k)]  # noqa: E731
    lens = [32 + (480 * i) // max(n - 1, 1) for i in range(n)]  # 32 .. 512 tokens
    rng.shuffle(lens)
    prefix = tok(200)
    return {
        "plain": [tok(k) for k in lens],
        "prefix": prefix,
        "shared": [prefix + tok(32 + (280 * i) // max(n - 1, 1)) for i in range(n)],  # 232 .. 512 tokens
    }


def _gen(engine, ids, new):
    sp = dict(temperature=0.0, max_new_tokens=new, ignore_eos=True)
    return [o["output_ids"] for o in engine.generate(input_ids=ids, sampling_params=sp)]


SEED = 1234  # prompt i of a list samples with sampling_seed SEED + offset + i, in every variant
SHARED_OFFSET = 10_000
SAMPLED = dict(temperature=0.7, top_p=0.9)
TOP_LOGPROBS = 5


def _sample(engine, ids, new, first: int):
    """Seeded sampling; per prompt, per token [token id, logprob, [[logprob, id] x TOP_LOGPROBS]]."""
    sps = [dict(SAMPLED, max_new_tokens=new, ignore_eos=True, sampling_seed=SEED + first + j) for j in range(len(ids))]
    outs = engine.generate(input_ids=ids, sampling_params=sps, return_logprob=True, top_logprobs_num=TOP_LOGPROBS)
    return [sampled_record(o) for o in outs]


def sampled_record(o: dict) -> list:
    meta = o["meta_info"]
    toks = [[t[1], t[0], [[lp, tid] for lp, tid, *_ in top]]
            for t, top in zip(meta["output_token_logprobs"], meta["output_top_logprobs"], strict=True)]
    if [t[0] for t in toks] != list(o["output_ids"]):
        raise RuntimeError("output_token_logprobs do not name the output_ids")
    return toks


def _phase(eng, ps, a, gen, prefix: str) -> dict:
    out = {}
    eng.flush_cache()
    out[prefix + "plain_all"] = gen(eng, ps["plain"], a.new, 0)
    eng.flush_cache()
    _gen(eng, [ps["prefix"]], 1)  # the shared prefix is now in the radix cache
    out[prefix + "shared_warm_all"] = gen(eng, ps["shared"], a.new, SHARED_OFFSET)
    if a.variant == "base":
        b1 = []
        for i, p in enumerate(ps["plain"]):
            eng.flush_cache()
            b1 += gen(eng, [p], a.new, i)
        out[prefix + "plain_b1"] = b1
        cold = []
        for i, p in enumerate(ps["shared"]):
            eng.flush_cache()
            cold += gen(eng, [p], a.new, SHARED_OFFSET + i)
        out[prefix + "shared_cold_b1"] = cold
    return out


PHASES = {"greedy": (lambda eng, ids, new, first: _gen(eng, ids, new), ""),  # (generate, key prefix)
          "seeded": (_sample, "seeded/")}


def worker(a) -> None:
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(a.model_path).vocab_size
    ps = prompts(vocab, a.prompts)
    t0 = time.time()
    # A fixed pool (max_total_tokens) instead of a share of free memory, so several
    # engines can start side by side on one GPU without racing its memory profile.
    eng = engines.start(a.model_path, a.mode, a.variant, mem_fraction_static=a.mem_fraction,
                        max_total_tokens=a.max_tokens, context_length=2048)
    out = {"start_s": time.time() - t0}
    try:
        for phase in a.sampling.split(","):
            gen, prefix = PHASES[phase]
            out.update(_phase(eng, ps, a, gen, prefix))
    finally:
        eng.shutdown()
    out["total_s"] = time.time() - t0
    with open(a.result, "w") as f:
        json.dump(out, f)


def _token(x):
    return x[0] if isinstance(x, list) else x  # a seeded entry [id, logprob, top] or a greedy id


def _diff(ref, got):
    """Outputs (lists of tokens: ids, or seeded [id, logprob, top] entries) equal as a whole, equal in
    their token ids, and the earliest token where any differs."""
    same = sum(r == g for r, g in zip(ref, got, strict=True))
    same_ids = sum([_token(x) for x in r] == [_token(x) for x in g] for r, g in zip(ref, got, strict=True))
    first = [next((i for i, (x, y) in enumerate(zip(r, g, strict=False)) if x != y),
                  None if len(r) == len(g) else min(len(r), len(g)))
             for r, g in zip(ref, got, strict=True)]
    first = [f for f in first if f is not None]
    return {"identical": same, "identical_ids": same_ids, "n": len(ref),
            "first_divergence_min": min(first) if first else None}


VARIANT_ROWS = (("chunk64", "chunked prefill 64 vs off"), ("chunk512", "chunked prefill 512 vs off"),
                ("nograph", "CUDA graph off vs on"), ("tp2", "TP=2 vs TP=1"), ("tp4", "TP=4 vs TP=1"),
                ("tp2-chunk64", "TP=2, chunked prefill 64 vs TP=1"),
                ("tp4-chunk64", "TP=4, chunked prefill 64 vs TP=1"))


def compare(res: dict) -> dict:
    """res[variant] -> outputs; every comparison against base's all-together cold run, for each
    phase the base run has (greedy rows unlabelled, seeded rows 'seeded: ...')."""
    base = res["base"]
    rows = {}
    for prefix, label_prefix in (("", ""), ("seeded/", "seeded: ")):
        if prefix + "plain_all" not in base:
            continue
        k = lambda name: prefix + name  # noqa: E731
        rows[label_prefix + "batch 1 vs all"] = _diff(base[k("plain_all")], base[k("plain_b1")])
        rows[label_prefix + "radix warm vs cold (batch 1)"] = _diff(base[k("shared_cold_b1")],
                                                                    base[k("shared_warm_all")])
        for v, label in VARIANT_ROWS:
            if v in res and k("plain_all") in res[v]:
                rows[label_prefix + label] = _diff(base[k("plain_all")] + base[k("shared_warm_all")],
                                                   res[v][k("plain_all")] + res[v][k("shared_warm_all")])
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-path", required=True)
    ap.add_argument("--modes", default="heal,bf16,det")
    ap.add_argument("--variants", default="base,chunk64,chunk512,nograph")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--sampling", default="greedy", help="phases, comma-separated: greedy, seeded")
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--mem-fraction", type=float, default=0.85)
    ap.add_argument("--max-tokens", type=int, default=60000)
    ap.add_argument("--deadline", type=float, default=0, help="seconds; workers still running then are killed")
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", help="folder for per-engine outputs and logs (default: OUT/work)")
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--mode")
    ap.add_argument("--variant")
    ap.add_argument("--result")
    a = ap.parse_args()
    if a.worker:
        worker(a)
        return 0
    bad = [p for p in a.sampling.split(",") if p not in PHASES]
    if bad:
        ap.error(f"--sampling {','.join(bad)}: expected a comma-separated list of {', '.join(PHASES)}")
    os.makedirs(a.out, exist_ok=True)
    work = a.work or os.path.join(a.out, "work")
    os.makedirs(work, exist_ok=True)
    jobs = [(m, v) for m in a.modes.split(",") for v in a.variants.split(",")]
    running, results, logs = [], {}, {}
    t_start = time.time()
    while jobs or running:
        if a.deadline and time.time() - t_start > a.deadline:
            for m, v, _, p in running:
                p.kill()
                logs[(m, v)] = "killed at deadline"
            for m, v in jobs:
                logs[(m, v)] = "not started (deadline)"
            break
        while jobs and len(running) < a.parallel:
            m, v = jobs.pop(0)
            res = os.path.join(work, f"{m}-{v}.json")
            log = open(os.path.join(work, f"{m}-{v}.log"), "w")
            cmd = [sys.executable, "-m", "bench.e2e.repro", "--worker", "--model-path", a.model_path, "--mode", m,
                   "--variant", v, "--result", res, "--prompts", str(a.prompts), "--new", str(a.new),
                   "--sampling", a.sampling, "--mem-fraction", str(a.mem_fraction), "--max-tokens", str(a.max_tokens),
                   "--out", a.out]
            running.append((m, v, res, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)))
            time.sleep(5)  # stagger the start-ups
        time.sleep(2)
        for job in list(running):
            m, v, res, p = job
            if p.poll() is not None:
                running.remove(job)
                logs[(m, v)] = p.returncode
                if p.returncode == 0:
                    with open(res) as f:
                        results.setdefault(m, {})[v] = json.load(f)
    summary = {}
    for m, res in results.items():
        if "base" in res:
            summary[m] = compare(res)
    failed = {f"{m}-{v}": rc for (m, v), rc in logs.items() if rc}
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump({"summary": summary, "failed": failed}, f, indent=1)
    print(f"{'mode':8} {'comparison':42} identical  (token ids)  first divergence")
    for m, rows in summary.items():
        for label, r in rows.items():
            print(f"{m:8} {label:42} {r['identical']:>3}/{r['n']:<3}    {r['identical_ids']:>3}/{r['n']:<3}"
                  f"      {r['first_divergence_min']}")
    if failed:
        print("failed workers:", failed)
        for (m, v), rc in logs.items():
            if rc:
                with open(os.path.join(work, f"{m}-{v}.log")) as f:
                    print(f"== {m}-{v} log tail ==\n" + f.read()[-1500:])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
