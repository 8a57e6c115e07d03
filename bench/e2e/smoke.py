"""Start each mode's engine on a synthetic model and generate a little: the quickest end-to-end check.

    python -m bench.e2e.smoke --model llama-small --modes heal,layercast,fp32,bf16
"""

from __future__ import annotations

import argparse
import time
import traceback

from bench.e2e import engines, models
from bench.e2e.repro import _gen, prompts


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="llama-small")
    ap.add_argument("--modes", default="heal,layercast,fp32,bf16")
    ap.add_argument("--root", default="/tmp/heal-models")
    a = ap.parse_args()
    path = models.make(a.model, f"{a.root}/{a.model}")
    from transformers import AutoConfig

    ps = prompts(AutoConfig.from_pretrained(path).vocab_size, 8)["plain"]
    rows = []
    for mode in a.modes.split(","):
        t0 = time.time()
        try:
            eng = engines.start(path, mode, mem_fraction_static=0.3, context_length=2048)
            start = time.time() - t0
            together = _gen(eng, ps, 32)
            single = []
            for p in ps:
                eng.flush_cache()
                single += _gen(eng, [p], 32)
            eng.shutdown()
            same = sum(x == y for x, y in zip(together, single, strict=True))
            rows.append((mode, f"started in {start:.0f}s", f"batch1==batched {same}/{len(ps)}", str(together[0][:8])))
        except Exception:
            traceback.print_exc()
            rows.append((mode, "FAILED", "", ""))
    for r in rows:
        print(" | ".join(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
