"""MCR-Bench report: a markdown table per run folder(s) and PNG plots (identity and flip rate per
mode, the Div_Index CDF, distance to FP32)."""

from __future__ import annotations

import json

from bench.mcr import metrics

HEADER = """# MCR-Bench (the mission-critical reproducibility benchmark of the HEAL paper, arXiv 2606.21023)

It asks two questions of a serving setup: does the same prompt give the same answer every
time, whatever the batch, chunking, prefix cache, concurrency, TP size or GPU, and how far
are its answers from FP32's? Tasks: medicine (PubMedQA), law (LegalBench hearsay,
personal_jurisdiction, abercrombie) and finance (generated, exact answers in Python
`decimal`). Greedy decoding. Not to be confused with other benchmarks of the same name.
"""

SYNTHETIC_NOTE = """**This model is synthetic** (random std-0.02 weights of a real architecture): its accuracy
means nothing. Its identity, divergence and distance-to-FP32 figures do: they measure the
serving numerics, which do not depend on what the weights know.
"""


def _pct(x) -> str:
    return f"{100 * x:.1f}%" if metrics.finite(x) else "-"


def _num(x, fmt="{:.3g}") -> str:
    return fmt.format(x) if metrics.finite(x) else "-"


def table(summary: dict) -> str:
    rows = ["| mode | examples | variants | identical | identical incl. logprobs | answer flip rate | Std@Acc "
            "(spread) | Avg_Std@Output_Length | Div_Index median (divergent) | mean accuracy | identical to FP32 "
            "| common prefix with FP32 | mean abs. dlogprob vs FP32 |",
            "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for mode in sorted(summary, key=lambda m: metrics_order(m)):
        m = summary[mode]
        d = m["div_index"]
        acc = [a for a in m["accuracy"].values() if metrics.finite(a)]
        to = m.get("to_fp32", {})
        rows.append(
            f"| {mode} | {m['examples']} | {', '.join(m['variants'])} | {_pct(m['identical'])} "
            f"| {_pct(m['identical_logprobs'])} | {_pct(m['flip_rate'])} "
            f"| {_num(m['std_at_acc'])} ({_num(m['acc_spread'])}) | {_num(m['avg_std_at_output_length'])} "
            f"| {d['median'] if d['median'] is not None else '-'} ({d['divergent']}) "
            f"| {_pct(sum(acc) / len(acc)) if acc else '-'} | {_pct(to.get('identical', float('nan')))} "
            f"| {_num(to.get('mean_common_prefix', float('nan')), '{:.1f}')} "
            f"| {_num(to.get('mean_abs_dlogprob', float('nan')))} |")
    return "\n".join(rows)


def metrics_order(mode: str) -> int:
    order = ["bf16", "det", "fp32", "layercast", "heal"]
    return order.index(mode) if mode in order else len(order)


def skipped_table(skips: list[dict]) -> str:
    rows = ["| mode | variant | | why |", "| --- | --- | --- | --- |"]
    for s in sorted(skips, key=lambda s: (metrics_order(s["mode"]), s["mode"], s["variant"])):
        rows.append(f"| {s['mode']} | {s['variant']} | {s.get('kind', 'skipped')} | {s['reason']} |")
    return "\n".join(rows)


def render(records: list[dict], skips: list[dict] | None = None) -> tuple[str, dict]:
    summary = metrics.summarize(records)
    models = sorted({str(r.get("model", "?")) for r in records})
    devices = sorted({str(r.get("device", "?")) for r in records})
    tasks = sorted({r["task"] for r in records})
    parts = [HEADER, f"Model(s): {', '.join(models)}. Device(s): {', '.join(devices)}. Tasks: {', '.join(tasks)}."]
    if any(r.get("synthetic") for r in records):
        parts.append(SYNTHETIC_NOTE)
    parts.append("Identity and divergence are measured across each mode's variants; the distance to FP32 is "
                 "the mode's `all` variant against FP32's `all` (batch = all).\n")
    shards = sorted({str(r["heal_row_shards"]) for r in records if r["mode"] == "heal" and "heal_row_shards" in r})
    if len(shards) > 1:
        parts.append(f"**Warning:** heal's records were made with different HEAL_ROW_SHARDS ({', '.join(shards)}); "
                     "its identity across them is not a fair test.\n")
    parts.append(table(summary))
    done = {(r["mode"], r["variant"]) for r in records}
    skips = [s for s in skips or [] if (s["mode"], s["variant"]) not in done]
    if skips:
        parts.append("Not run (skipped here, or failed; not counted above):\n\n" + skipped_table(skips))
    return "\n\n".join(parts) + "\n", summary


def plots(summary: dict, prefix: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = sorted(summary, key=metrics_order)
    paths = []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = range(len(modes))
    ax.bar([i - 0.2 for i in x], [summary[m]["identical"] for m in modes], 0.4, label="identical across variants")
    ax.bar([i + 0.2 for i in x], [summary[m]["flip_rate"] for m in modes], 0.4, label="answer flip rate")
    ax.set_xticks(list(x))
    ax.set_xticklabels(modes)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(prefix + "-identity.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for m in modes:
        d = summary[m]["div_index"]
        vals, n = d["values"], summary[m]["examples"]
        if n and vals:
            ax.step(vals, [(i + 1) / n for i in range(len(vals))], where="post", label=m)
        else:
            ax.plot([], [], label=f"{m} (no divergence)")
    ax.set_xlabel("Div_Index: first differing token")
    ax.set_ylabel("share of examples diverged by then")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(prefix + "-div-index.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    with_ref = [m for m in modes if "to_fp32" in summary[m]]
    if with_ref:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.bar(with_ref, [summary[m]["to_fp32"]["identical"] for m in with_ref])
        ax.set_ylabel("share identical to FP32 (batch = all)")
        ax.set_ylim(0, 1.05)
        fig.tight_layout()
        paths.append(prefix + "-to-fp32.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


def write(records: list[dict], prefix: str, skips: list[dict] | None = None) -> list[str]:
    text, summary = render(records, skips)
    with open(prefix + ".md", "w") as f:
        f.write(text)
    with open(prefix + ".json", "w") as f:
        json.dump(summary, f, indent=1)
    return [prefix + ".md", prefix + ".json", *plots(summary, prefix)]
