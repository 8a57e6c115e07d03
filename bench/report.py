"""Markdown tables and PNG plots from pytest-benchmark JSON files (`make bench` writes them).

    python -m bench.report bench/results/<gpu>-<date>.json [more.json ...] [--out PREFIX]

A run's journal (``<gpu>-<date>.partial.jsonl``, bench/journal.py) is read like a result file: the
benchmarks a run cut short had finished.

End to end: each mode's figure, its cost over BF16, and the overhead reduction vs FP32
(t_fp32 - t_bf16) / (t_heal - t_bf16), the HEAL paper's headline. Kernels: times, and
fractions of the measured HBM and MMA ceilings.
"""

from __future__ import annotations

from collections import defaultdict

from bench import journal


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


MODE_ORDER = ["bf16", "det", "fp32", "layercast", "heal", "heal-nccl"]


def _e2e_value(r) -> float | None:
    from bench.e2e.workloads import METRIC

    key, _ = METRIC[r["kind"]]
    return r.get(key)


def _time_like(r) -> float | None:
    """A cost where smaller is better (throughput inverted), for ratios and overhead reduction."""
    v = _e2e_value(r)
    if v is None:
        return None
    return 1.0 / v if r["kind"] == "throughput" else v


def e2e_rows(rows):
    """{(model, variant, workload): {mode: row}}."""
    by = defaultdict(dict)
    for r in rows:
        by[(r["model"], r["variant"], r["workload"])][r["mode"]] = r
    return by


def overhead_reduction(t_fp32: float, t_bf16: float, t_heal: float) -> float:
    """The HEAL paper's headline: how much of FP32's overhead over BF16 HEAL removes,
    (t_fp32 - t_bf16) / (t_heal - t_bf16); inf where HEAL is no slower than BF16."""
    over = t_heal - t_bf16
    return float("inf") if over <= 0 else (t_fp32 - t_bf16) / over


def e2e_table(rows) -> str:
    from bench.e2e.workloads import METRIC

    out = ["| model | variant | workload | mode | figure | x BF16 | FP32 overhead / HEAL overhead | median s (IQR) "
           "| KV tokens | KV B/token |",
           "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for (model, variant, wl), d in sorted(e2e_rows(rows).items()):
        b, f, h = (d.get(m) for m in ("bf16", "fp32", "heal"))
        red = ""
        if b and f and h and None not in (_time_like(b), _time_like(f), _time_like(h)):
            red = f"{overhead_reduction(_time_like(f), _time_like(b), _time_like(h)):.1f}x"
        for mode in sorted(d, key=lambda m: MODE_ORDER.index(m) if m in MODE_ORDER else len(MODE_ORDER)):
            r = d[mode]
            key, _ = METRIC[r["kind"]]
            v, cost = _e2e_value(r), _time_like(r)
            figure = "-" if v is None else f"{v:.4g} {key}"
            ratio = f"{cost / _time_like(b):.2f}" if b and cost is not None and _time_like(b) else "-"
            iqr = r.get("_iqr")
            spread = f"{r['seconds']:.3f}" + (f" ({iqr:.3f})" if iqr is not None else "")
            out.append(f"| {model} | {variant} | {wl} | {mode} | {figure} | {ratio} | {red if mode == 'heal' else ''} "
                       f"| {spread} | {r.get('max_total_num_tokens') or '-'} | {r.get('kv_bytes_per_token') or '-'} |")
    return "\n".join(out)


def _finish_workload_bars(fig, ax, keys, w: float, n_modes: int, ylabel: str, path: str) -> None:
    """Workload labels under groups of n_modes bars of width w, the axis label and legend; saves and closes."""
    import matplotlib.pyplot as plt

    ax.set_xticks([j + w * (n_modes - 1) / 2 for j in range(len(keys))])
    ax.set_xticklabels([f"{k[0]}\n{k[2]}" + ("" if k[1] == "default" else f"\n{k[1]}") for k in keys],
                       fontsize=7, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_overhead(rows, path: str) -> None:
    """Bars per workload: each mode's cost over BF16's (throughput inverted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = e2e_rows(rows)
    keys = [k for k in sorted(by) if "bf16" in by[k]]
    modes = [m for m in MODE_ORDER[1:] if any(m in by[k] for k in keys)]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(keys)), 4))
    w = 0.8 / max(1, len(modes))
    for i, m in enumerate(modes):
        ys = [(_time_like(by[k][m]) / _time_like(by[k]["bf16"])) if m in by[k] else 0 for k in keys]
        ax.bar([j + i * w for j in range(len(keys))], ys, w, label=m)
    ax.axhline(1.0, color="k", lw=0.8)
    _finish_workload_bars(fig, ax, keys, w, len(modes), "cost / BF16 (lower is better)", path)


PAPER_REDUCTION = 7.1  # the HEAL paper's "up to 7.1x" less overhead than FP32


def plot_fp32_reduction(rows, path: str) -> bool:
    """Bars per workload: FP32's overhead over BF16 divided by each mode's, (t_fp32 - t_bf16) / (t_mode - t_bf16),
    on a log axis, with the paper's 7.1x drawn.  A mode no slower than BF16 (infinite reduction) is drawn at the
    top of the axis and labelled.  Returns False (and writes nothing) where no workload has both baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = e2e_rows(rows)
    keys = [k for k in sorted(by) if "bf16" in by[k] and "fp32" in by[k]
            and _time_like(by[k]["fp32"]) > _time_like(by[k]["bf16"])]
    modes = [m for m in MODE_ORDER if m not in ("bf16", "fp32") and any(m in by[k] for k in keys)]
    if not keys or not modes:
        return False
    vals = {(k, m): overhead_reduction(_time_like(by[k]["fp32"]), _time_like(by[k]["bf16"]), _time_like(by[k][m]))
            for k in keys for m in modes if m in by[k]}
    finite = [v for v in vals.values() if v != float("inf") and v > 0]
    top = max(finite + [PAPER_REDUCTION]) * 2
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(keys)), 4))
    w = 0.8 / len(modes)
    for i, m in enumerate(modes):
        xs = [j + i * w for j, k in enumerate(keys) if (k, m) in vals]
        ys = [min(vals[(k, m)], top) for k in keys if (k, m) in vals]
        ax.bar(xs, ys, w, label=m)
        for x, k in zip(xs, [k for k in keys if (k, m) in vals], strict=True):
            if vals[(k, m)] == float("inf"):
                ax.annotate("<= BF16", (x, top), ha="center", va="top", fontsize=6, rotation=90)
    ax.axhline(PAPER_REDUCTION, color="k", lw=0.8, ls="--", label=f"paper: {PAPER_REDUCTION}x")
    ax.axhline(1.0, color="grey", lw=0.6)
    ax.set_yscale("log")
    ax.set_ylim(top=top)
    _finish_workload_bars(fig, ax, keys, w, len(modes), "FP32 overhead / its overhead", path)
    return True


def plot_roofline(rows, path: str) -> None:
    """Fraction of the measured HBM ceiling reached by each HEAL kernel benchmark."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [r for r in rows if r.get("impl") == "heal" and "frac_hbm" in r]
    fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(ks)), 4))
    labels = [f"{r['op']} {r.get('shape', '')} {r.get('m', r.get('bs', ''))}x{r.get('ctx', '')}".strip() for r in ks]
    ax.bar(range(len(ks)), [r["frac_hbm"] for r in ks], label="HBM")
    ax.bar(range(len(ks)), [r.get("frac_mma_peak", 0) for r in ks], alpha=0.6, label="MMA (useful flops)")
    ax.set_xticks(range(len(ks)))
    ax.set_xticklabels(labels, fontsize=6, rotation=90)
    ax.set_ylabel("fraction of measured ceiling")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_rows(path: str) -> tuple[list[dict], dict]:
    """extra_info of every benchmark (with its IQR as ``_iqr``) and the file's header; ``path`` is a
    pytest-benchmark JSON file or a run's journal (bench/journal.py)."""
    data = journal.load_results(path)
    rows = []
    for b in data.get("benchmarks", []):
        r = dict(b.get("extra_info", {}))
        r["_iqr"] = b.get("stats", {}).get("iqr")
        rows.append(r)
    return rows, data


def render(paths: list[str]) -> tuple[str, list[dict]]:
    rows, parts = [], []
    for path in paths:
        rs, data = load_rows(path)
        rows += rs
        info = data.get("machine_info", {})
        dev = next((r.get("device") for r in rs if r.get("device")), info.get("gpu", "?"))
        parts.append(f"`{path}`: device {dev}; python {info.get('python_version', '?')}; "
                     f"run {data.get('datetime', '?')}")
    ceil = next((r for r in rows if "ceiling_copy_gbs" in r), None)
    if ceil:
        parts.append(f"measured ceilings: copy {ceil['ceiling_copy_gbs']:.0f} GB/s, "
                     f"fp16 matmul {ceil['ceiling_fp16_tflops']:.0f} TFLOP/s")
    e2e = [r for r in rows if r.get("op") == "e2e"]
    if e2e:
        parts.append("### End to end\n\n" + e2e_table(e2e))
    mm = [r for r in rows if r.get("op") == "matmul"]
    if mm:
        parts.append("### heal_matmul\n\n" + matmul_table(mm))
    ro = [r for r in rows if r.get("op") in ("add_rmsnorm", "silu_and_mul", "rope")]
    if ro:
        parts.append("### FP32 row ops\n\n" + rowop_table(ro))
    at = [r for r in rows if r.get("op") in ("attn_decode", "attn_prefill")]
    if at:
        parts.append("### Attention\n\n" + attention_table(at))
    return "\n\n".join(parts) + "\n", rows


def main(argv=None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Markdown tables and PNG plots from pytest-benchmark JSON files")
    ap.add_argument("paths", nargs="*", default=["bench-results.json"])
    ap.add_argument("--out", default="", help="write OUT.md and the plots: OUT-overhead.png (cost over BF16), "
                    "OUT-vs-fp32.png (overhead reduction against FP32) and OUT-roofline.png (kernels)")
    a = ap.parse_args(argv)
    text, rows = render(a.paths)
    print(text)
    if a.out:
        with open(a.out + ".md", "w") as f:
            f.write(text)
        if any(r.get("op") == "e2e" for r in rows):
            e2e = [r for r in rows if r.get("op") == "e2e"]
            plot_overhead(e2e, a.out + "-overhead.png")
            plot_fp32_reduction(e2e, a.out + "-vs-fp32.png")
        if any(r.get("impl") == "heal" and "frac_hbm" in r for r in rows):
            plot_roofline(rows, a.out + "-roofline.png")


if __name__ == "__main__":
    main()
