"""Run MCR-Bench prompts under precision modes and serving variants, against an in-process
``sglang.Engine`` or a live server (SGLang's native ``/generate``, or any OpenAI-compatible
``/v1/completions``: bench/mcr/server.py), greedy, with logprobs.

A variant is what changes under real serving while the prompt stays the same:

| variant | engine flags | how the prompts are sent |
| --- | --- | --- |
| ``b1`` | defaults | one at a time, radix cache flushed before each |
| ``all`` | defaults | all together (the reference for the distance to FP32) |
| ``chunk64`` | ``--chunked-prefill-size 64`` | all together |
| ``radix-warm`` | defaults | all together twice; the second pass, on a warm radix cache, is recorded |
| ``clients32`` | defaults | 32 concurrent clients, each request after a random 0-50 ms delay |
| ``tp2`` | ``--tp-size 2`` (heal: the default ``HEAL_ROW_SHARDS``, 2, serves TP 1 and 2) | all together |
| ``flashinfer`` | ``--attention-backend flashinfer`` (bf16 and det only) | all together |

A variant that cannot run here is skipped and the reason written next to the results
(``results.write_skip``): ``flashinfer`` without FlashInfer's prebuilt kernels (its JIT would
compile them with nvcc at first use, for minutes; ``MCR_FLASHINFER_JIT=1`` tries anyway), or
an engine that fails to start (e.g. heal refusing ``--tp-size 2`` for a model that sums
row-parallel outputs outside the layer). The other variants go on.

Against a server only the send patterns apply (``b1``, ``all``, ``radix-warm``,
``clients32``); the server's own flags must match the mode (checked through SGLang's
``/server_info``; a server without it, e.g. vLLM, is run with a warning that it cannot be checked).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from dataclasses import dataclass

from bench.mcr import results
from bench.mcr.server import SERVER_FLAGS, OpenAIClient, ServerClient, tokens_as  # noqa: F401 - re-exported
from bench.mcr.server import parse_native as _parse
from bench.mcr.server import sampling as _sampling

CONTEXT_LENGTH = 4096
# Engine memory: a share of the GPU's free memory at start-up and a fixed KV pool, so several
# engines can start side by side on one GPU (bench/e2e/repro.py does the same).
MEM_FRACTION = 0.7


@dataclass(frozen=True)
class Variant:
    engine: dict  # engine flags on top of the mode's
    send: str  # b1 | all | warm | clients
    whole: bool  # written whole (outputs depend on what else is in flight)


VARIANTS = {
    "b1": Variant({}, "b1", False),
    "all": Variant({}, "all", True),
    "chunk64": Variant({"chunked_prefill_size": 64}, "all", True),
    "radix-warm": Variant({}, "warm", True),
    "clients32": Variant({}, "clients", True),
    "tp2": Variant({"tp_size": 2}, "all", True),
    "flashinfer": Variant({"attention_backend": "flashinfer"}, "all", True),
}
MODES = ("bf16", "det", "fp32", "layercast", "heal")


def check_variants(names: list[str], modes: list[str], server: bool) -> None:
    bad = [v for v in names if v not in VARIANTS]
    if bad:
        raise ValueError(f"unknown variant(s) {', '.join(bad)}; known: {', '.join(VARIANTS)}")
    badm = [m for m in modes if m not in MODES]
    if badm:
        raise ValueError(f"unknown mode(s) {', '.join(badm)}; known: {', '.join(MODES)}")
    if server:
        fixed = [v for v in names if VARIANTS[v].engine]
        if fixed:
            raise ValueError(f"variant(s) {', '.join(fixed)} change the server's flags; run them with an engine "
                             "(--model-path) or start a server with those flags and run variant 'all' against it")


class EngineClient:
    """An in-process sglang.Engine for one mode and engine configuration."""

    def __init__(self, model_path: str, mode: str, engine: dict, memory: dict | None = None):
        from bench.e2e import engines

        flags = {"context_length": CONTEXT_LENGTH, "mem_fraction_static": MEM_FRACTION, **(memory or {}), **engine,
                 # a scheduler that fails to start signals SIGQUIT; SGLang's own handler would kill this
                 # process too, losing the run's other variants: ours only reports it, and the
                 # engine's start then raises (see _start_failed)
                 "custom_sigquit_handler": _child_failed}
        if mode == "heal" and engine.get("attention_backend", "heal") != "heal":
            raise ValueError(f"mode heal serves with its own attention backend; variant flags {engine} do not apply")
        self.eng = engines.start(model_path, mode, variant="speed", **flags)
        self.device = _device()

    def flush(self) -> None:
        self.eng.flush_cache()

    def generate(self, prompts: list[str], max_new: list[int]):
        outs = self.eng.generate(prompt=prompts, sampling_params=[_sampling(n) for n in max_new],
                                 return_logprob=True)
        return [_parse(o) for o in outs]

    def generate_concurrent(self, prompts: list[str], max_new: list[int], clients: int, seed: int):
        rng = random.Random(seed)
        delays = [rng.uniform(0.0, 0.05) for _ in prompts]

        async def one(sem, p, n, delay):
            async with sem:
                await asyncio.sleep(delay)
                return await self.eng.async_generate(prompt=p, sampling_params=_sampling(n), return_logprob=True)

        async def all_():
            sem = asyncio.Semaphore(clients)
            jobs = zip(prompts, max_new, delays, strict=True)
            return await asyncio.gather(*(one(sem, p, n, d) for p, n, d in jobs))

        # on the engine's own loop: its tokenizer manager receives every response in a task of
        # that loop, so requests awaited on another loop would never complete
        return [_parse(o) for o in self.eng.loop.run_until_complete(all_())]

    def close(self) -> None:
        self.eng.shutdown()


def _child_failed(signum, frame) -> None:
    print("[mcr] an engine subprocess failed (its error is above); this variant is recorded as failed",
          file=sys.stderr, flush=True)


def _kill_children() -> None:
    """What a failed engine start leaves behind (its scheduler and detokenizer processes)."""
    try:
        from sglang.srt.utils import kill_process_tree

        kill_process_tree(os.getpid(), include_parent=False, wait_timeout=60)
    except Exception as e:  # noqa: BLE001 - best effort; the run goes on
        print(f"[mcr] could not stop the failed engine's processes: {e}", file=sys.stderr)


def flashinfer_unavailable() -> str | None:
    """Why FlashInfer attention cannot be assumed here, or None (checked without importing it)."""
    import importlib.util

    if os.environ.get("MCR_FLASHINFER_JIT") == "1":
        return None
    spec = importlib.util.find_spec("flashinfer")
    if spec is None:
        return "flashinfer is not installed"
    if importlib.util.find_spec("flashinfer_jit_cache") is not None:
        return None
    aot = os.path.join(os.path.dirname(spec.origin), "data", "aot")
    if os.path.isdir(aot) and os.listdir(aot):
        return None
    return ("FlashInfer's prebuilt kernels are not installed (no flashinfer-jit-cache package, no " + aot + "); "
            "its JIT would compile the attention kernels with nvcc at first use, for minutes, and needs the CUDA "
            "toolkit. Install flashinfer-jit-cache, or set MCR_FLASHINFER_JIT=1 to compile them")


def skip_reason(mode: str, variant: str) -> str | None:
    """Why (mode, variant) is not run on this machine, or None."""
    backend = VARIANTS[variant].engine.get("attention_backend")
    if backend == "flashinfer":
        if mode not in ("bf16", "det"):
            return f"mode {mode} runs FP32 attention, which FlashInfer's kernels do not compute"
        return flashinfer_unavailable()
    return None


def _device() -> str:
    try:
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "unknown"


def _progress(total: int, desc: str):
    try:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, file=sys.stderr)
    except ImportError:  # plain lines when tqdm is missing
        class _P:
            n = 0

            def update(self, k):
                self.n += k
                print(f"{desc}: {self.n}/{total}", file=sys.stderr, flush=True)

            def close(self):
                pass

        return _P()


def run_variant(client, mode: str, variant: str, examples, tasks: dict, out: str, meta: dict,
                max_new_tokens: int | None = None) -> int:
    """Run one variant's missing examples; returns how many records were written.
    ``max_new_tokens`` overrides every task's own."""
    v = VARIANTS[variant]
    have = results.done(out, mode, variant)
    todo = [e for e in examples if (e.task, e.id) not in have]
    if not todo:
        return 0
    if v.whole and have:  # a whole variant is redone whole: its outputs depend on the batch
        todo = list(examples)
    bar = _progress(len(todo), f"{mode} {variant}")

    def record(e, parsed):
        ids, lps, text = parsed
        task = tasks[e.task]
        answer = task.extract(text)
        r = {"mode": mode, "variant": variant, "task": e.task, "id": e.id, "gold": e.gold, "answer": answer,
             "correct": task.is_correct(answer, e.gold), "output_ids": ids, "logprobs": lps, "text": text,
             "device": client.device, **meta}
        if tokens_as(ids):  # a server that returned no token ids: its tokens' texts stand for them
            r["tokens_as"] = tokens_as(ids)
        return r

    prompts = [e.prompt for e in todo]
    max_new = [max_new_tokens or tasks[e.task].max_new_tokens for e in todo]
    try:
        if v.send == "b1":
            for e, p, n in zip(todo, prompts, max_new, strict=True):
                client.flush()
                results.append(out, [record(e, client.generate([p], [n])[0])])
                bar.update(1)
            return len(todo)
        client.flush()
        if v.send == "warm":
            client.generate(prompts, max_new)  # every prompt is now in the radix cache
        if v.send == "clients":
            parsed = client.generate_concurrent(prompts, max_new, clients=32, seed=0)
        else:
            parsed = client.generate(prompts, max_new)
        recs = [record(e, p) for e, p in zip(todo, parsed, strict=True)]
        results.write_whole(out, mode, variant, recs)
        bar.update(len(recs))
        return len(recs)
    finally:
        bar.close()


def run(examples, tasks: dict, modes: list[str], variants: list[str], out: str, *, model_path: str | None = None,
        server: str | None = None, meta: dict | None = None, memory: dict | None = None,
        max_new_tokens: int | None = None, api: str = "sglang", server_opts: dict | None = None) -> int:
    """Every (mode, variant) over ``examples``; engines are grouped by their flags, one at a time.

    ``memory``: engine flags for its memory (mem_fraction_static, max_total_tokens). A variant
    that cannot run here, or whose engine fails to start or serve, is recorded as skipped or
    failed (results.write_skip) and the others go on; RuntimeError at the end names them.

    ``api``: how a ``server`` is spoken to, ``sglang`` (native /generate) or ``openai``
    (/v1/completions); ``server_opts``: the client's timeout, retries, backoff (and for openai:
    model, seed). An unreachable server raises ConnectionError, naming it, with what was written kept."""
    if api not in ("sglang", "openai"):
        raise ValueError(f"unknown api {api!r}; known: sglang, openai")
    check_variants(variants, modes, server is not None)
    if server and len(modes) != 1:
        raise ValueError("a server serves one mode: pass --modes with the server's mode only")
    meta = dict(meta or {})
    if max_new_tokens:
        meta["max_new_tokens"] = max_new_tokens
    os.makedirs(out, exist_ok=True)
    # heal's row-parallel layers reduce in HEAL_ROW_SHARDS shards: TP=1 and TP=2 agree with the
    # default (2), TP=4 needs 4. Every process of a run must see the same value (set it in the
    # environment of all of them), so it is recorded with each record.
    meta["heal_row_shards"] = os.environ.get("HEAL_ROW_SHARDS", "default")
    written, failed = 0, []
    for mode in modes:
        groups: dict[str, list[str]] = {}
        for v in variants:
            if mode == "heal" and VARIANTS[v].engine.get("attention_backend", "heal") != "heal":
                print(f"[mcr] {mode}: variant {v} skipped (heal has its own attention backend)", file=sys.stderr)
                continue
            why = None if server else skip_reason(mode, v)
            if why:
                print(f"[mcr] {mode}: variant {v} skipped: {why}", file=sys.stderr, flush=True)
                results.write_skip(out, mode, v, why, kind="skipped")
                continue
            groups.setdefault(json.dumps(VARIANTS[v].engine, sort_keys=True), []).append(v)
        for engine_flags, vs in groups.items():
            pending = [v for v in vs if len(results.done(out, mode, v)) < len(examples)]
            if not pending:
                continue
            flags = json.loads(engine_flags)
            print(f"[mcr] {mode}: starting {'server client' if server else 'engine'} for {', '.join(pending)}",
                  file=sys.stderr, flush=True)
            if server:
                opts = dict(server_opts or {})
                if api == "sglang":
                    opts = {k: v for k, v in opts.items() if k in ("timeout", "retries", "backoff")}
                client = (OpenAIClient if api == "openai" else ServerClient)(server, mode, **opts)
            else:
                t0 = time.time()
                try:
                    client = EngineClient(model_path, mode, flags, memory)
                except Exception as e:  # noqa: BLE001 - recorded, and the other engines go on
                    _kill_children()
                    why = f"the engine did not start ({type(e).__name__}: {e}); its log has the cause"
                    print(f"[mcr] {mode}: {', '.join(pending)} failed: {why}", file=sys.stderr, flush=True)
                    for v in pending:
                        results.write_skip(out, mode, v, why, kind="failed")
                    failed += [f"{mode}/{v}" for v in pending]
                    continue
                print(f"[mcr] {mode}: engine started in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
            try:
                for v in pending:
                    try:
                        written += run_variant(client, mode, v, examples, tasks, out, meta, max_new_tokens)
                        results.clear_skip(out, mode, v)
                    except ConnectionError:
                        raise
                    except Exception as e:  # noqa: BLE001
                        why = f"generation failed ({type(e).__name__}: {e})"
                        print(f"[mcr] {mode}: {v} {why}", file=sys.stderr, flush=True)
                        results.write_skip(out, mode, v, why, kind="failed")
                        failed.append(f"{mode}/{v}")
            finally:
                client.close()
    if failed:
        raise RuntimeError(f"{len(failed)} variant(s) failed: {', '.join(failed)} (reasons in {out}/{results.RUNS}/"
                           "*.skip.json); the others' results are kept")
    return written
