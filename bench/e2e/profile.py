"""Per-kernel GPU time of one decode step and one prefill chunk through an SGLang engine (GPU).

    python -m bench.e2e.profile --model llama-8b --modes bf16,heal --out DIR

For each mode, one engine (each in its own process) runs two workloads under SGLang's
torch profiler (``engine.start_profile(profile_by_stage=True)``): decode at batch 1 after a
128-token prompt, and 16 prompts of 4096 tokens (their prefill chunks, then decode at batch
16 x ~4k). ``DIR/<mode>/<workload>/`` keeps the traces; ``DIR/breakdown.md`` gets one table
per workload and stage: microseconds per step of each kernel, the modes side by side.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import subprocess
import sys

from bench.e2e import engines, models

# b16x4k first: with profile_by_stage a single prefill step never completes its stage, so b1 goes last.
# b64x128 is the throughput workload's decode (batch 64, short context); its prefill is one or two
# steps, so its prefill table's "per step" figures are the whole prefill divided by STEPS.
WORKLOADS = {"b16x4k": (16, 4096), "b64x128": (64, 128), "b1": (1, 128)}
STEPS = 4


def _gen(eng, ids, new):
    return eng.generate(input_ids=ids, sampling_params={"temperature": 0, "max_new_tokens": new,
                                                         "ignore_eos": True})


def worker(model_path: str, mode: str, out: str, variant: str, context_length: int,
           workloads: list[str]) -> None:
    import random

    rng = random.Random(0)
    extra = {"context_length": context_length} if context_length else {}
    eng = engines.start(model_path, mode, variant=variant, mem_fraction_static=0.8, **extra)
    try:
        for name in workloads:
            bs, n = WORKLOADS[name]
            ids = [[rng.randrange(10, 30000) for _ in range(n)] for _ in range(bs)]
            _gen(eng, ids, 4)  # warm-up: kernels compiled at these shapes
            eng.flush_cache()
            d = os.path.join(out, name)
            os.makedirs(d, exist_ok=True)
            eng.start_profile(output_dir=d, num_steps=STEPS, activities=["GPU"], profile_by_stage=True)
            _gen(eng, ids, 3 * STEPS)
    finally:
        eng.shutdown()


def kernel_times(path: str) -> collections.Counter:
    """Total GPU time (us) per kernel name in a Chrome trace."""
    op = gzip.open if path.endswith(".gz") else open
    with op(path, "rt") as f:
        d = json.load(f)
    tot = collections.Counter()
    for e in d["traceEvents"] if isinstance(d, dict) else d:
        if e.get("ph") == "X" and str(e.get("cat", "")).lower() in ("kernel", "gpu_memcpy", "gpu_memset"):
            tot[re.sub(r"<.*>|\(.*\)", "", e.get("name", "?"))[:70]] += float(e.get("dur", 0))
    return tot


def _stage(path: str) -> str:
    name = os.path.basename(path).upper()
    return "decode" if "DECODE" in name else "prefill" if ("EXTEND" in name or "PREFILL" in name) else "all"


def breakdown(out: str, modes: list[str], workloads: list[str], top: int = 22) -> str:
    lines = []
    for wl in workloads:
        per = {}
        for m in modes:
            for p in glob.glob(os.path.join(out, m, wl, "*.json*")):
                if "TP-0" in os.path.basename(p).upper() or "TP-" not in os.path.basename(p).upper():
                    per.setdefault(_stage(p), {}).setdefault(m, collections.Counter()).update(kernel_times(p))
        for stage, by_mode in sorted(per.items()):
            total = {m: sum(c.values()) / STEPS for m, c in by_mode.items()}
            names = collections.Counter()
            for c in by_mode.values():
                names.update(c)
            lines += [f"\n### {wl}, {stage} (us per step; {STEPS} steps profiled)\n",
                      "| kernel | " + " | ".join(modes) + " |", "| --- |" + " ---: |" * len(modes)]
            for k, _ in names.most_common(top):
                lines.append(f"| `{k}` | " + " | ".join(f"{by_mode.get(m, {}).get(k, 0) / STEPS:.1f}" for m in modes)
                             + " |")
            lines.append("| **total** | " + " | ".join(f"**{total.get(m, 0):.0f}**" for m in modes) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="llama-8b")
    ap.add_argument("--model-path", default=None, help="a real checkpoint instead of a synthetic one")
    ap.add_argument("--modes", default="bf16,heal")
    ap.add_argument("--variant", default="speed")
    ap.add_argument("--context-length", type=int, default=0, help="0: the checkpoint's own")
    ap.add_argument("--root", default="/tmp/heal-models")
    ap.add_argument("--out", required=True)
    ap.add_argument("--workloads", default="b16x4k,b1", help=f"comma-separated, in order, of {list(WORKLOADS)}")
    ap.add_argument("--worker", nargs=2, metavar=("MODEL_PATH", "MODE"))
    a = ap.parse_args()
    workloads = a.workloads.split(",")
    bad = [w for w in workloads if w not in WORKLOADS]
    if bad:
        ap.error(f"--workloads: unknown {bad}; choose from {list(WORKLOADS)}")
    if a.worker:
        worker(a.worker[0], a.worker[1], os.path.join(a.out, a.worker[1]), a.variant, a.context_length, workloads)
        return 0
    path = a.model_path or models.make(a.model, f"{a.root}/{a.model}")
    modes = a.modes.split(",")
    rc = 0
    for m in modes:
        r = subprocess.run([sys.executable, "-m", "bench.e2e.profile", "--out", a.out, "--variant", a.variant,
                            "--context-length", str(a.context_length), "--workloads", a.workloads,
                            "--worker", path, m])
        rc |= r.returncode
    table = breakdown(a.out, modes, workloads)
    with open(os.path.join(a.out, "breakdown.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    return rc


if __name__ == "__main__":
    sys.exit(main())
