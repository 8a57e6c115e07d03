"""MCR-Bench metrics: does a serving setup give the same answer every time, and how far is it from FP32?

Inputs are result records (bench/mcr/results.py): one per (mode, variant, task, example),
with the generated token ids, the chosen tokens' logprobs and the extracted answer.

Across the variants of one mode (LayerCast's definitions, Yuan et al., NeurIPS 2025, so
the figures compare with theirs):
- ``std_at_acc``: sample standard deviation (ddof 1) of accuracy across variants, and the
  max - min spread;
- ``avg_std_at_output_length``: per example, the sample std of the output length across
  variants, averaged over examples;
- ``div_index``: per example, the first token position at which the variants' outputs are
  not all equal (an output that stops earlier differs at its end); examples whose outputs
  all agree have none and are counted apart.
Ours:
- ``identical``: share of examples whose token ids are bitwise identical in every variant
  (and ``identical_logprobs``: token ids and logprobs both);
- ``flip_rate``: share of examples whose extracted answer is not the same in every variant.
Distance to FP32, against the reference run (mode ``fp32``, variant ``all``): share of
examples identical to it, mean common-prefix length, and mean |delta logprob| of the chosen
tokens over the common prefix.

Token positions count the generated tokens. Records from a server that returns no token ids
(an OpenAI-compatible server without ``return_token_ids``, bench/mcr/server.py) carry
``"tokens_as": "text"`` and compare the tokens' texts instead of their ids; such records are
not compared with records of token ids: a mode that mixes them is refused, and its distance to
an FP32 run of the other kind is left out.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

REFERENCE = ("fp32", "all")


def _std(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) >= 2 else 0.0


def common_prefix(a: list, b: list) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def first_divergence(outputs: list[list[int]]) -> int | None:
    """First position where the outputs are not all equal; None when every output is the same."""
    if all(o == outputs[0] for o in outputs[1:]):
        return None
    return min(common_prefix(outputs[0], o) for o in outputs[1:]) if len(outputs) > 1 else None


def tokens_kind(r: dict) -> str:
    """What a record's ``output_ids`` hold: token "ids", or the tokens' "text"."""
    return r.get("tokens_as", "ids")


def by_mode(records) -> dict[str, dict[str, dict[tuple[str, str], dict]]]:
    """{mode: {variant: {(task, id): record}}}."""
    out: dict = defaultdict(lambda: defaultdict(dict))
    for r in records:
        out[r["mode"]][r["variant"]][(r["task"], r["id"])] = r
    return out


def mode_metrics(variants: dict[str, dict[tuple[str, str], dict]]) -> dict:
    """Reproducibility metrics of one mode across its variants, over the examples every variant has."""
    names = sorted(variants)
    keys = sorted(set.intersection(*(set(v) for v in variants.values()))) if variants else []
    acc = {v: (sum(bool(variants[v][k]["correct"]) for k in keys) / len(keys)) if keys else float("nan")
           for v in names}
    identical = identical_lp = flips = 0
    len_stds, divs = [], []
    for k in keys:
        rs = [variants[v][k] for v in names]
        outs = [r["output_ids"] for r in rs]
        d = first_divergence(outs)
        if d is None:
            identical += 1
            identical_lp += all(r.get("logprobs") == rs[0].get("logprobs") for r in rs[1:])
        else:
            divs.append(d)
        flips += len({r["answer"] for r in rs}) > 1
        len_stds.append(_std([len(o) for o in outs]))
    n = len(keys)
    accs = list(acc.values())
    return {
        "variants": names, "examples": n, "accuracy": acc,
        "std_at_acc": _std(accs) if n else float("nan"),
        "acc_spread": (max(accs) - min(accs)) if n and accs else float("nan"),
        "avg_std_at_output_length": statistics.fmean(len_stds) if len_stds else float("nan"),
        "identical": identical / n if n else float("nan"),
        "identical_logprobs": identical_lp / n if n else float("nan"),
        "flip_rate": flips / n if n else float("nan"),
        "div_index": {"divergent": len(divs), "median": statistics.median(divs) if divs else None,
                      "values": sorted(divs)},
    }


def distance_to_reference(run: dict[tuple[str, str], dict], ref: dict[tuple[str, str], dict]) -> dict:
    """How far one (mode, variant) run is from the reference run, over the examples both have."""
    keys = sorted(set(run) & set(ref))
    same, prefixes, dlp = 0, [], []
    for k in keys:
        a, b = run[k], ref[k]
        p = common_prefix(a["output_ids"], b["output_ids"])
        same += a["output_ids"] == b["output_ids"]
        prefixes.append(p)
        la, lb = a.get("logprobs") or [], b.get("logprobs") or []
        dlp += [abs(x - y) for x, y in zip(la[:p], lb[:p], strict=False) if x is not None and y is not None]
    n = len(keys)
    return {"examples": n, "identical": same / n if n else float("nan"),
            "mean_common_prefix": statistics.fmean(prefixes) if prefixes else float("nan"),
            "mean_abs_dlogprob": statistics.fmean(dlp) if dlp else float("nan")}


def summarize(records, reference: tuple[str, str] = REFERENCE) -> dict:
    """{mode: metrics (+ "to_fp32": distance of the mode's reference variant to FP32's)}."""
    modes = by_mode(records)
    ref = modes.get(reference[0], {}).get(reference[1])
    kinds = {mode: {tokens_kind(r) for v in variants.values() for r in v.values()} for mode, variants in modes.items()}
    for mode, ks in kinds.items():
        if len(ks) > 1:
            raise ValueError(f"mode {mode} mixes records of token ids with records compared on the tokens' texts "
                             "(from a server that returned no token ids): their outputs cannot be compared; "
                             "run every variant of a mode through the same API")
    out = {}
    for mode, variants in sorted(modes.items()):
        m = mode_metrics(variants)
        if ref is not None and reference[1] in variants and kinds[mode] == kinds[reference[0]]:
            m["to_fp32"] = distance_to_reference(variants[reference[1]], ref)
        out[mode] = m
    return out


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
