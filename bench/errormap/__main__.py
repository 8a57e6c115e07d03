"""Error-contribution maps and flip rate against precision (issue 14).

    python -m bench.errormap map --model-path P --modes bf16,heal,fp32 --out DIR        # any checkpoint
    python -m bench.errormap map --model llama-8b --prompts 8 --out DIR                 # synthetic (GPU)
    python -m bench.errormap sweep --model llama-1b --bits 7,8,10,12,14,16,23 --out DIR # flips against FP32

``map`` runs each prompt once in float64 and once per mode, and writes, per kernel and layer,
the mode's own arithmetic error, the total error it carries and their ratio (``map.json``,
``map.md``, ``map-<mode>.png``), plus attention split into Q, K, V rounding and arithmetic.
``sweep`` decodes each prompt greedily in every mode and in FP32 and reports how many outputs
differ from FP32's (``sweep.json``, ``sweep.md``, ``sweep.png``). Prompts are MCR-Bench's
(medicine, law, finance). On a CPU the heal kernels run under the Triton interpreter
(TRITON_INTERPRET=1): only tiny models are practical there.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"


def _prompts(a) -> tuple[str, list[list[int]]]:
    """(checkpoint path, token ids of each prompt, truncated to --max-prompt-tokens from the end)."""
    from transformers import AutoTokenizer

    from bench.mcr import tasks

    chosen = tasks.select(a.tasks)
    per_task = max(1, math.ceil(a.prompts / len(chosen)))
    corpus = [e.prompt for t in chosen for e in t.examples(per_task, a.seed)]
    texts = corpus[: a.prompts]
    path = a.model_path
    if a.model:
        from bench.mcr.__main__ import _checkpoint

        path = _checkpoint(a.model, a.root, corpus)
    tok = AutoTokenizer.from_pretrained(path)
    ids = [tok(t)["input_ids"][-a.max_prompt_tokens:] for t in texts]
    return path, [i for i in ids if i]


def _fmt(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2e}"


def map_markdown(result: dict) -> str:
    lines = ["# Error-contribution map", "",
             f"Model: {result['model']}. Device: {result['device']}. Prompts: {result['prompts']} "
             f"({result['tokens']} tokens). Errors are RMS over the float64 model's RMS at each boundary; "
             "own = the kernel recomputed in float64 from the mode's own inputs; total = against the "
             "float64 model; ratio = E[own^2] / E[total^2].", ""]
    for mode, table in result["modes"].items():
        lines += [f"## {mode}", "", "| kernel | own, mean over layers | total, first layer | total, last layer "
                  "| ratio, median |", "| --- | ---: | ---: | ---: | ---: |"]
        for kernel, rows in table.items():
            own = [r["rel_own"] for r in rows]
            ratios = sorted(r["ratio"] for r in rows if not math.isnan(r["ratio"]))
            med = ratios[len(ratios) // 2] if ratios else math.nan
            lines.append(f"| {kernel} | {_fmt(sum(own) / len(own))} | {_fmt(rows[0]['rel_total'])} | "
                         f"{_fmt(rows[-1]['rel_total'])} | {_fmt(med)} |")
        split = result["attention_split"].get(mode)
        if split:
            lines += ["", f"Attention under {mode}, split (RMS error / RMS of exact attention, per layer):", "",
                      "| layer | Q rounding | K rounding | V rounding | arithmetic |",
                      "| ---: | ---: | ---: | ---: | ---: |"]
            for layer, s in split.items():
                cells = " | ".join(_fmt(s[n]) for n in ("q", "k", "v", "arithmetic"))
                lines.append(f"| {layer} | {cells} |")
        lines.append("")
    return "\n".join(lines)


def map_plots(result: dict, prefix: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    paths = []
    for mode, table in result["modes"].items():
        kernels = list(table)
        layers = sorted({r["layer"] for rows in table.values() for r in rows})
        fig, axes = plt.subplots(1, 2, figsize=(12, 0.35 * len(kernels) + 2), sharey=True)
        for ax, key, title in ((axes[0], "rel_own", "own error"), (axes[1], "rel_total", "total error")):
            grid = np.full((len(kernels), len(layers)), np.nan)
            for i, k in enumerate(kernels):
                for r in table[k]:
                    v = r[key]
                    grid[i, layers.index(r["layer"])] = math.log10(v) if v > 0 else np.nan
            im = ax.imshow(grid, aspect="auto", cmap="viridis")
            ax.set_title(f"{mode}: log10 {title}")
            ax.set_xlabel(f"layer ({layers[-1]}: the final norm and logits)")
            step = max(1, len(layers) // 8)
            ax.set_xticks(range(0, len(layers), step), [str(v) for v in layers[::step]])
            ax.set_yticks(range(len(kernels)), kernels)
            fig.colorbar(im, ax=ax)
        fig.tight_layout()
        paths.append(f"{prefix}-{mode.replace(':', '')}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def cmd_map(a) -> int:
    import torch

    from bench.errormap import maps, model

    modes = a.modes.split(",")
    for m in modes:
        model.parse_mode(m)
    if "f64" in modes:
        raise ValueError("--modes: f64 is the reference every mode is measured against, not a mode to map")
    dev = _device()
    path, prompts = _prompts(a)
    ck = model.load(path, dev)
    result = {"model": a.model or a.model_path, "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
              "prompts": len(prompts), "tokens": sum(map(len, prompts)), "modes": {}, "attention_split": {}}
    recs = {m: maps.Recorder(ck.eps, split_attention=(m == "heal" or a.split_all)) for m in modes}
    truth = maps.Recorder(ck.eps)  # one float64 run per prompt, shared by the modes
    ops = {"f64": model.Ops(ck, "f64", truth.reference), **{m: model.Ops(ck, m, recs[m].compare) for m in modes}}
    t0 = time.time()
    with torch.no_grad():
        for i, ids in enumerate(prompts):
            x = torch.tensor(ids, device=dev)
            truth.next_sequence()
            model.forward(ck, ops["f64"], x)
            for m in modes:
                recs[m].next_sequence(truth.ref)
                model.forward(ck, ops[m], x)
                recs[m].check_complete(m)
            print(f"[errormap] prompt {i + 1}/{len(prompts)} ({len(ids)} tokens), {time.time() - t0:.0f} s",
                  file=sys.stderr, flush=True)
    for m in modes:
        result["modes"][m] = recs[m].stats.table()
        split = recs[m].stats.attention_split()
        if split:
            result["attention_split"][m] = split
    os.makedirs(a.out, exist_ok=True)
    prefix = os.path.join(a.out, "map")
    with open(prefix + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(prefix + ".md", "w") as f:
        f.write(map_markdown(result))
    for p in [prefix + ".json", prefix + ".md", *map_plots(result, prefix)]:
        print(p)
    return 0


def sweep_summary(outputs: dict, reference: str = "fp32") -> dict:
    """{mode: {flip_rate, identical, mean_common_prefix, n}} against ``reference``'s greedy outputs."""
    from bench.mcr.metrics import common_prefix

    ref = outputs[reference]
    out = {}
    for mode, seqs in outputs.items():
        if mode == reference:
            continue
        prefix = [common_prefix(s, r) for s, r in zip(seqs, ref, strict=True)]
        same = sum(s == r for s, r in zip(seqs, ref, strict=True))
        out[mode] = {"n": len(seqs), "identical": same, "flip_rate": 1 - same / len(seqs),
                     "mean_common_prefix": sum(prefix) / len(prefix)}
    return out


def sweep_plot(summary: dict, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.errormap.model import parse_mode

    bits = sorted((parse_mode(m)[1], s["flip_rate"]) for m, s in summary.items() if m.startswith("bits:"))
    fig, ax = plt.subplots(figsize=(7, 4))
    if bits:
        ax.plot([b for b, _ in bits], [f for _, f in bits], "o-", label="k bits at every boundary")
    for i, (m, s) in enumerate((m, s) for m, s in summary.items() if not m.startswith("bits:")):
        ax.axhline(s["flip_rate"], ls="--", color=f"C{i + 1}", label=m)
    ax.set_xlabel("significand bits at each kernel boundary")
    ax.set_ylabel("share of outputs that differ from FP32's")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cmd_sweep(a) -> int:
    import torch

    from bench.errormap import model

    modes = [f"bits:{b}" for b in a.bits.split(",") if b] + [m for m in a.modes.split(",") if m]
    for m in modes:
        model.parse_mode(m)
    dev = _device()
    path, prompts = _prompts(a)
    ck = model.load(path, dev)
    outputs = {}
    with torch.no_grad():
        for m in ["fp32", *[m for m in modes if m != "fp32"]]:
            ops = model.Ops(ck, m)
            outputs[m] = [model.greedy(ck, ops, ids, a.new_tokens)[0] for ids in prompts]
            print(f"[errormap] sweep {m}: done", file=sys.stderr, flush=True)
    summary = sweep_summary(outputs)
    os.makedirs(a.out, exist_ok=True)
    prefix = os.path.join(a.out, "sweep")
    with open(prefix + ".json", "w") as f:
        json.dump({"model": a.model or a.model_path, "prompts": len(prompts), "new_tokens": a.new_tokens,
                   "summary": summary, "outputs": outputs}, f, indent=1)
    lines = ["| mode | identical to FP32 | flip rate | mean common prefix |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {m} | {s['identical']}/{s['n']} | {s['flip_rate']:.1%} | {s['mean_common_prefix']:.1f} |"
              for m, s in summary.items()]
    with open(prefix + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    for p in (prefix + ".json", prefix + ".md", sweep_plot(summary, prefix + ".png")):
        print(p)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.errormap", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, fn in (("map", cmd_map), ("sweep", cmd_sweep)):
        p = sub.add_parser(name)
        p.set_defaults(fn=fn)
        p.add_argument("--model", help="a synthetic checkpoint of bench/e2e/models.py, made with a tokenizer "
                                        "trained on the prompts (as MCR-Bench does)")
        p.add_argument("--model-path", help="any Llama, Mistral, Qwen2 or Qwen3 checkpoint")
        p.add_argument("--tasks", default="all", help="MCR-Bench tasks or domains the prompts come from")
        p.add_argument("--prompts", type=int, default=8)
        p.add_argument("--max-prompt-tokens", type=int, default=256)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--root", default="/tmp/heal-models", help="where synthetic checkpoints are made")
        p.add_argument("--out", required=True)
        if name == "map":
            p.add_argument("--modes", default="bf16,heal,fp32")
            p.add_argument("--split-all", action="store_true", help="split attention's error for every mode, "
                                                                    "not only heal")
        else:
            p.add_argument("--bits", default="7,8,9,10,11,12,14,16,18,20,23")
            p.add_argument("--modes", default="bf16,heal", help="placed beside the bit sweep")
            p.add_argument("--new-tokens", type=int, default=32)
    a = ap.parse_args(argv)
    if bool(a.model) == bool(a.model_path):
        ap.error("give exactly one of --model (synthetic) or --model-path")
    for n in ("prompts", "max_prompt_tokens") + (("new_tokens",) if a.cmd == "sweep" else ()):
        if getattr(a, n) < 1:
            ap.error(f"--{n.replace('_', '-')} must be at least 1")
    try:
        return a.fn(a)
    except ValueError as e:
        print(f"errormap: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
