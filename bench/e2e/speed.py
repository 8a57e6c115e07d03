"""End-to-end speed, same run for every mode: ms/token at batch 1 and tok/s at 64 x (128 in, 128 out).

    python -m bench.e2e.speed --model llama-8b --modes bf16,det,layercast,heal --out results.json

ms/token: one 128-token prompt; (time for 257 new tokens - time for 1) / 256, median of 3.
tok/s: 64 prompts of 128 tokens, 128 new tokens each (ignore_eos), output tokens over the
wall time of the whole batch (prefill included), median of 3, radix cache flushed each time.
Each mode runs in its own process, one after another, so none shares the GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from bench.e2e import engines, models
from bench.e2e.repro import _gen


def _timed(eng, ids, new):
    eng.flush_cache()
    t0 = time.perf_counter()
    out = _gen(eng, ids, new)
    dt = time.perf_counter() - t0
    assert all(len(o) == new for o in out)
    return dt


def worker(model_path: str, mode: str, result: str, variant: str = "speed") -> None:
    import random

    rng = random.Random(0)
    one = [[rng.randrange(10, 30000) for _ in range(128)]]
    batch = [[rng.randrange(10, 30000) for _ in range(128)] for _ in range(64)]
    t0 = time.time()
    eng = engines.start(model_path, mode, variant=variant, mem_fraction_static=0.85, context_length=2048)
    start_s = time.time() - t0
    try:
        _timed(eng, one, 257)
        _timed(eng, batch, 128)  # warm-up: kernels compiled, graphs replayed once
        ms = [(_timed(eng, one, 257) - _timed(eng, one, 1)) / 256 * 1e3 for _ in range(3)]
        tps = [64 * 128 / _timed(eng, batch, 128) for _ in range(3)]
    finally:
        eng.shutdown()
    with open(result, "w") as f:
        json.dump({"mode": mode, "start_s": start_s, "ms_per_token": statistics.median(ms), "ms_all": ms,
                   "tok_per_s": statistics.median(tps), "tps_all": tps}, f)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="llama-8b")
    ap.add_argument("--modes", default="bf16,det,layercast,heal")
    ap.add_argument("--root", default="/tmp/heal-models")
    ap.add_argument("--out", required=True)
    ap.add_argument("--deadline", type=float, default=0)
    ap.add_argument("--variant", default="speed", help="engine variant of bench.e2e.engines (e.g. tp2)")
    ap.add_argument("--worker", nargs=4, metavar=("MODEL_PATH", "MODE", "RESULT", "VARIANT"))
    a = ap.parse_args()
    if a.worker:
        worker(*a.worker)
        return 0
    t0 = time.time()
    path = models.make(a.model, f"{a.root}/{a.model}")
    rows = []
    for mode in a.modes.split(","):
        left = a.deadline - (time.time() - t0) if a.deadline else None
        if left is not None and left < 60:
            rows.append({"mode": mode, "error": "not run (deadline)"})
            continue
        res = f"/tmp/speed-{a.model}-{mode}.json"
        try:
            r = subprocess.run([sys.executable, "-m", "bench.e2e.speed", "--out", a.out, "--worker", path, mode, res,
                                a.variant],
                               capture_output=True, text=True, timeout=left)
            ok = r.returncode == 0
        except subprocess.TimeoutExpired:
            ok, r = False, None
        if ok:
            with open(res) as f:
                rows.append(json.load(f))
        else:
            rows.append({"mode": mode, "error": (r.stdout + r.stderr)[-2000:] if r else "timed out"})
    import torch

    meta = {"model": a.model, "device": torch.cuda.get_device_name(), "date": time.strftime("%Y-%m-%d"),
            "torch": torch.__version__, "variant": a.variant,
            "env": {k: os.environ[k] for k in ("HEAL_ROW_SHARDS", "HEAL_TP_REDUCE") if k in os.environ}}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    bf16 = next((r for r in rows if r["mode"] == "bf16" and "error" not in r), None)
    print(f"{a.model} on {meta['device']}")
    print(f"{'mode':10} {'ms/token b1':>12} {'x bf16':>7} {'tok/s 64x128':>13} {'x bf16':>7} {'start s':>8}")
    for r in rows:
        if "error" in r:
            print(f"{r['mode']:10} FAILED: {r['error'][-600:]}")
            continue
        rm = r["ms_per_token"] / bf16["ms_per_token"] if bf16 else float("nan")
        rt = r["tok_per_s"] / bf16["tok_per_s"] if bf16 else float("nan")
        print(f"{r['mode']:10} {r['ms_per_token']:12.2f} {rm:7.2f} {r['tok_per_s']:13.0f} {rt:7.2f} "
              f"{r['start_s']:8.0f}")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
