"""Markdown tables from a pytest-benchmark JSON file (`make bench` writes bench-results.json).

    python -m bench.report bench-results.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def matmul_table(rows) -> str:
    by = defaultdict(dict)
    for r in rows:
        by[(r["shape"], r["n"], r["k"], r["m"])][r["impl"]] = r
    out = [
        "| layer (N x K) | M | heal us | fp16 us | bf16 us | tf32 us | fp32 us "
        "| heal / fp16 | fp32 / heal | heal TFLOP/s | heal GB/s | heal frac. HBM | heal frac. MMA |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (shape, n, k, m), d in sorted(by.items(), key=lambda kv: (kv[0][1] * kv[0][2], kv[0][0], kv[0][3])):
        h = d.get("heal")
        if not h:
            continue

        def us(impl):
            return f"{d[impl]['us']:.1f}" if impl in d else "-"

        out.append(
            f"| {shape} ({n} x {k}) | {m} | {us('heal')} | {us('fp16')} | {us('bf16')} "
            f"| {us('tf32')} | {us('fp32')} | {h['us'] / d['fp16']['us']:.2f} | {d['fp32']['us'] / h['us']:.2f} "
            f"| {h['tflops']:.0f} | {h['gbs']:.0f} | {h['frac_hbm']:.2f} | {h['frac_mma_peak']:.2f} |"
        )
    return "\n".join(out)


def rowop_table(rows) -> str:
    by = defaultdict(dict)
    for r in rows:
        by[(r["op"], r["m"])][r["impl"]] = r
    out = ["| op | M | heal us | torch fp32 us | heal GB/s | heal frac. HBM |",
           "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for (op, m), d in sorted(by.items()):
        h, t = d.get("heal"), d.get("torch_fp32")
        if h and t:
            out.append(f"| {op} | {m} | {h['us']:.1f} | {t['us']:.1f} | {h['gbs']:.0f} | {h['frac_hbm']:.2f} |")
    return "\n".join(out)


def attention_table(rows) -> str:
    by = {}
    for r in rows:
        key = (r["op"], r.get("bs", 1), r.get("ctx", r.get("tokens")))
        by.setdefault(key, {})[r["impl"]] = r
    out = ["| op | batch | context / tokens | heal us | sglang bf16 us | torch fp32 us | heal / bf16 "
           "| heal GB/s | heal frac. HBM | heal TFLOP/s |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for (op, bs, n), d in sorted(by.items()):
        h, b, f = d.get("heal"), d.get("sglang_bf16"), d.get("torch_fp32")
        if not h:
            continue
        gbs = f"{h['gbs']:.0f} | {h['frac_hbm']:.2f}" if "gbs" in h else "- | -"
        out.append(f"| {op} | {bs} | {n} | {h['us']:.1f} | {b['us'] if b else float('nan'):.1f} "
                   f"| {f['us'] if f else float('nan'):.1f} | {h['us'] / b['us'] if b else float('nan'):.2f} "
                   f"| {gbs} | {h['tflops']:.0f} |")
    return "\n".join(out)


def main(path: str) -> None:
    data = json.load(open(path))
    rows = [b["extra_info"] for b in data["benchmarks"]]
    info = data.get("machine_info", {})
    dev = next((r.get("device") for r in rows if r.get("device")), "?")
    ceil = next((r for r in rows if "ceiling_copy_gbs" in r), None)
    print(f"device: {dev}; python {info.get('python_version', '?')}; run {data.get('datetime', '?')}")
    if ceil:
        print(f"measured ceilings: copy {ceil['ceiling_copy_gbs']:.0f} GB/s, "
              f"fp16 matmul {ceil['ceiling_fp16_tflops']:.0f} TFLOP/s\n")
    mm = [r for r in rows if r.get("op") == "matmul"]
    if mm:
        print(matmul_table(mm) + "\n")
    ro = [r for r in rows if r.get("op") in ("add_rmsnorm", "silu_and_mul", "rope")]
    if ro:
        print(rowop_table(ro) + "\n")
    at = [r for r in rows if r.get("op") in ("attn_decode", "attn_prefill")]
    if at:
        print(attention_table(at))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench-results.json")
