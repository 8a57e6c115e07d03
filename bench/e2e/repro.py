"""Greedy reproducibility matrix: batch, chunked prefill, radix cache and CUDA graphs.

    python -m bench.e2e.repro --model-path /tmp/m --modes heal,bf16,det --out results.json

For each mode, one engine per variant (chunked prefill off / 64 / 512, decode
CUDA graph off) runs in its own process, several at once on the one GPU.  Every
output is compared token by token with the mode's reference run: all prompts
together, chunked prefill off, CUDA graphs on, radix cache cold.
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
        eng.flush_cache()
        out["plain_all"] = _gen(eng, ps["plain"], a.new)
        eng.flush_cache()
        _gen(eng, [ps["prefix"]], 1)  # the shared prefix is now in the radix cache
        out["shared_warm_all"] = _gen(eng, ps["shared"], a.new)
        if a.variant == "base":
            b1 = []
            for p in ps["plain"]:
                eng.flush_cache()
                b1 += _gen(eng, [p], a.new)
            out["plain_b1"] = b1
            cold = []
            for p in ps["shared"]:
                eng.flush_cache()
                cold += _gen(eng, [p], a.new)
            out["shared_cold_b1"] = cold
    finally:
        eng.shutdown()
    out["total_s"] = time.time() - t0
    with open(a.result, "w") as f:
        json.dump(out, f)


def _diff(ref, got):
    same = sum(r == g for r, g in zip(ref, got, strict=True))
    first = [next((i for i, (x, y) in enumerate(zip(r, g, strict=False)) if x != y), None)
             for r, g in zip(ref, got, strict=True)]
    first = [f for f in first if f is not None]
    return {"identical": same, "n": len(ref), "first_divergence_min": min(first) if first else None}


def compare(res: dict) -> dict:
    """res[variant] -> outputs; every comparison against base's all-together cold run."""
    base = res["base"]
    rows = {
        "batch 1 vs all": _diff(base["plain_all"], base["plain_b1"]),
        "radix warm vs cold (batch 1)": _diff(base["shared_cold_b1"], base["shared_warm_all"]),
    }
    for v, label in (("chunk64", "chunked prefill 64 vs off"), ("chunk512", "chunked prefill 512 vs off"),
                     ("nograph", "CUDA graph off vs on"), ("tp2", "TP=2 vs TP=1"), ("tp4", "TP=4 vs TP=1"),
                     ("tp2-chunk64", "TP=2, chunked prefill 64 vs TP=1"),
                     ("tp4-chunk64", "TP=4, chunked prefill 64 vs TP=1")):
        if v in res:
            rows[label] = _diff(base["plain_all"] + base["shared_warm_all"],
                                res[v]["plain_all"] + res[v]["shared_warm_all"])
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-path", required=True)
    ap.add_argument("--modes", default="heal,bf16,det")
    ap.add_argument("--variants", default="base,chunk64,chunk512,nograph")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--new", type=int, default=256)
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
                   "--mem-fraction", str(a.mem_fraction), "--max-tokens", str(a.max_tokens), "--out", a.out]
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
    print(f"{'mode':8} {'comparison':32} identical  first divergence")
    for m, rows in summary.items():
        for label, r in rows.items():
            print(f"{m:8} {label:32} {r['identical']:>3}/{r['n']:<3}   {r['first_divergence_min']}")
    if failed:
        print("failed workers:", failed)
        for (m, v), rc in logs.items():
            if rc:
                with open(os.path.join(work, f"{m}-{v}.log")) as f:
                    print(f"== {m}-{v} log tail ==\n" + f.read()[-1500:])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
