"""MCR-Bench command line (also `make mcr MCR_ARGS="..."`).

    python -m bench.mcr run --model llama-8b --out runs/8b                 # synthetic checkpoint (GPU)
    python -m bench.mcr run --model-path /models/Llama-3.1-8B --modes bf16,heal --out runs/llama
    python -m bench.mcr run --server http://127.0.0.1:30000 --modes heal --variants b1,all --out runs/srv
    python -m bench.mcr run --server http://127.0.0.1:8000 --api openai --modes bf16 --variants b1,all --out runs/v
    python -m bench.mcr merge runs/h100 runs/h200 --out runs/both        # devices become variants
    python -m bench.mcr report runs/both --out runs/both/report
    python -m bench.mcr tasks                                            # the registered tasks

A run is resumable: run the same command again and it continues where it stopped.
``--user-task spec.json`` adds a task from a JSONL file: the spec holds
``bench.mcr.tasks.load_jsonl_task``'s arguments (name, path, template, choices or pattern, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _examples(a):
    from bench.mcr import tasks

    for spec in a.user_task or []:
        with open(spec) as f:
            tasks.register(tasks.load_jsonl_task(**json.load(f)))
    chosen = tasks.select(a.tasks)
    return chosen, [e for t in chosen for e in t.examples(a.n, a.seed)]


def _checkpoint(name: str, root: str, corpus: list[str]) -> str:
    """The synthetic checkpoint ``name`` with a tokenizer trained on ``corpus``, made once per corpus.

    Its folder is named by the corpus's hash (another task set gets its own tokenizer) and made
    under a lock and renamed into place when complete, so that several runs started side by side
    (one per GPU) make it once and never read a half-written one."""
    import fcntl
    import hashlib
    import shutil

    from bench.e2e import models

    digest = hashlib.sha256("\0".join(corpus).encode()).hexdigest()[:10]
    path = os.path.join(root, f"{name}-mcr-{digest}")
    os.makedirs(root, exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(os.path.join(path, "config.json")):
            tmp = f"{path}.tmp{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            models.make(name, tmp, corpus=corpus)
            os.replace(tmp, path)
    return path


def _fingerprint(path: str) -> str:
    """A short hash of a checkpoint (config, tokenizer, weight sizes and ends): a run folder is only
    continued with the checkpoint it was started with."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if name.endswith(".safetensors"):
            size = os.path.getsize(full)
            with open(full, "rb") as f:
                head = f.read(1 << 22)
                f.seek(max(0, size - (1 << 22)))
                tail = f.read()
            h.update(f"{name}:{size}".encode() + head + tail)
        elif name in ("config.json", "tokenizer.json"):
            with open(full, "rb") as f:
                h.update(name.encode() + f.read())
    return h.hexdigest()[:16]


def _check_folder(out: str, meta: dict) -> None:
    """Record the run's model in ``out/run.json``, or refuse to continue a folder made with another."""
    path = os.path.join(out, "run.json")
    keep = {k: meta[k] for k in ("model", "checkpoint") if k in meta}
    if os.path.exists(path):
        with open(path) as f:
            was = json.load(f)
        if {k: was.get(k) for k in keep} != keep:
            raise ValueError(f"{out} holds results of another model or checkpoint ({was}); this run has {keep}: "
                             "use another --out")
        return
    os.makedirs(out, exist_ok=True)
    with open(path, "w") as f:
        json.dump(keep, f)


def cmd_run(a) -> int:
    from bench.mcr import report, results, runner

    sources = [x for x in (a.model, a.model_path, a.server) if x]
    if len(sources) != 1:
        raise ValueError("give exactly one of --model (synthetic), --model-path or --server")
    modes, variants = a.modes.split(","), a.variants.split(",")
    runner.check_variants(variants, modes, a.server is not None)
    chosen, examples = _examples(a)
    meta = {"model": a.model or a.model_path or a.server, "synthetic": bool(a.model)}
    path = a.model_path
    if a.model:
        path = _checkpoint(a.model, a.root, [e.prompt for e in examples])
    if path:
        meta["checkpoint"] = _fingerprint(path) if os.path.isdir(path) else path
    _check_folder(a.out, meta)
    memory = {k: v for k, v in (("mem_fraction_static", a.mem_fraction), ("max_total_tokens", a.max_total_tokens))
              if v is not None}
    print(f"[mcr] {len(examples)} examples from {', '.join(t.name for t in chosen)}; modes {', '.join(modes)}; "
          f"variants {', '.join(variants)}; results in {a.out}", file=sys.stderr, flush=True)
    try:
        runner.run(examples, {t.name: t for t in chosen}, modes, variants, a.out, model_path=path, server=a.server,
                   meta=meta, memory=memory, max_new_tokens=a.max_new_tokens, api=a.api,
                   server_opts={"timeout": a.timeout, "retries": a.retries, "model": a.served_model,
                                "seed": a.request_seed})
    finally:
        if not a.no_report and os.path.isdir(os.path.join(a.out, results.RUNS)):
            try:
                for p in report.write(results.load(a.out), os.path.join(a.out, "report"), results.skips(a.out)):
                    print(p)
            except ValueError as e:  # no records yet
                print(f"mcr: no report: {e}", file=sys.stderr)
    return 0


def cmd_report(a) -> int:
    from bench.mcr import report, results

    records = [r for d in a.dirs for r in results.load(d)]
    out = a.out or os.path.join(a.dirs[0], "report")
    paths = report.write(records, out, [s for d in a.dirs for s in results.skips(d)])
    print(open(paths[0]).read())
    return 0


def cmd_merge(a) -> int:
    from bench.mcr import results

    n = results.merge(a.dirs, a.out)
    print(f"merged {n} records into {a.out}")
    return 0


def cmd_tasks(a) -> int:
    from bench.mcr import tasks

    for t in tasks.REGISTRY.values():
        print(f"{t.name:36} {t.domain:10} {t.description}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.mcr", description="MCR-Bench (HEAL paper, arXiv 2606.21023)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="generate under modes and variants (resumable)")
    r.add_argument("--model", help="a synthetic checkpoint of bench/e2e/models.py (llama-8b, llama-1b, qwen3-small...)")
    r.add_argument("--model-path", help="any Hugging Face checkpoint")
    r.add_argument("--server", help="URL of a running server (one mode): SGLang, or with --api openai any "
                   "OpenAI-compatible one")
    r.add_argument("--api", choices=("sglang", "openai"), default="sglang",
                   help="how --server is spoken to: SGLang's native /generate, or /v1/completions (SGLang, vLLM...)")
    r.add_argument("--served-model", default=None, help="--api openai: the model name to request (default: the "
                   "first of the server's /v1/models)")
    r.add_argument("--request-seed", type=int, default=0, help="--api openai: the seed sent with every request")
    r.add_argument("--timeout", type=float, default=600.0, help="--server: seconds to wait for one answer")
    r.add_argument("--retries", type=int, default=3,
                   help="--server: retries of a request the server did not answer (waits 1, 2, 4... s)")
    r.add_argument("--modes", default="bf16,det,fp32,layercast,heal")
    r.add_argument("--variants", default="b1,all,chunk64,radix-warm,clients32")
    r.add_argument("--tasks", default="all", help="task names, domains (medicine, law, finance) or all")
    r.add_argument("--user-task", action="append", help="JSON spec of a task from a JSONL file (repeatable)")
    r.add_argument("--n", type=int, default=None, help="examples per task (default: every one; finance: its default)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--root", default="/tmp/heal-models", help="where synthetic checkpoints are made")
    r.add_argument("--max-new-tokens", type=int, default=None, help="for every task (default: each task's own)")
    r.add_argument("--mem-fraction", type=float, default=None,
                   help="engine --mem-fraction-static (share of the GPU memory free at its start; default 0.7)")
    r.add_argument("--max-total-tokens", type=int, default=None,
                   help="engine KV pool size in tokens: with --mem-fraction, lets several engines share a GPU")
    r.add_argument("--no-report", action="store_true", help="write results only (e.g. one of several parallel runs)")
    r.add_argument("--out", required=True)
    r.set_defaults(fn=cmd_run)
    p = sub.add_parser("report", help="markdown and plots from run folders")
    p.add_argument("dirs", nargs="+")
    p.add_argument("--out", default="")
    p.set_defaults(fn=cmd_report)
    m = sub.add_parser("merge", help="merge run folders (e.g. one per GPU)")
    m.add_argument("dirs", nargs="+")
    m.add_argument("--out", required=True)
    m.set_defaults(fn=cmd_merge)
    t = sub.add_parser("tasks", help="list the registered tasks")
    t.set_defaults(fn=cmd_tasks)
    a = ap.parse_args(argv)
    try:
        return a.fn(a)
    except (ValueError, ConnectionError, FileNotFoundError) as e:
        kept = ""
        if getattr(a, "out", None) and a.cmd == "run":
            kept = f"; results so far are kept in {a.out}"
            if isinstance(e, ConnectionError):
                kept += " (run the same command again to continue)"
        print(f"mcr: {e}{kept}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # some variants failed (runner.run): the rest ran and are kept
        print(f"mcr: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
