"""Run MCR-Bench prompts under precision modes and serving variants, against an in-process
``sglang.Engine`` or a live server (SGLang's native ``/generate``), greedy, with logprobs.

A variant is what changes under real serving while the prompt stays the same:

| variant | engine flags | how the prompts are sent |
| --- | --- | --- |
| ``b1`` | defaults | one at a time, radix cache flushed before each |
| ``all`` | defaults | all together (the reference for the distance to FP32) |
| ``chunk64`` | ``--chunked-prefill-size 64`` | all together |
| ``radix-warm`` | defaults | all together twice; the second pass, on a warm radix cache, is recorded |
| ``clients32`` | defaults | 32 concurrent clients, each request after a random 0-50 ms delay |
| ``tp2`` | ``--tp-size 2`` (heal: ``HEAL_ROW_SHARDS=4``) | all together |
| ``flashinfer`` | ``--attention-backend flashinfer`` (not heal) | all together |

Against a server only the send patterns apply (``b1``, ``all``, ``radix-warm``,
``clients32``); the server's own flags must match the mode (checked through
``/get_server_info``).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from bench.mcr import results

CONTEXT_LENGTH = 4096


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
# What /get_server_info must say for a server to serve each mode.
SERVER_FLAGS = {
    "bf16": {"quantization": None, "enable_deterministic_inference": False},
    "det": {"quantization": None, "enable_deterministic_inference": True},
    "fp32": {"quantization": None, "dtype": "float32"},
    "layercast": {"quantization": "layercast"},
    "heal": {"quantization": "heal", "attention_backend": "heal"},
}


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


def _sampling(max_new: int) -> dict:
    return {"temperature": 0.0, "max_new_tokens": max_new}


def _parse(o: dict) -> tuple[list[int], list[float], str]:
    lp = (o.get("meta_info") or {}).get("output_token_logprobs") or []
    ids = o.get("output_ids")
    if ids is None:
        ids = [t[1] for t in lp]
    return list(ids), [t[0] for t in lp], o.get("text", "")


class EngineClient:
    """An in-process sglang.Engine for one mode and engine configuration."""

    def __init__(self, model_path: str, mode: str, engine: dict):
        from bench.e2e import engines

        flags = {"context_length": CONTEXT_LENGTH, "mem_fraction_static": 0.7, **engine}
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

        loop = asyncio.new_event_loop()
        try:
            return [_parse(o) for o in loop.run_until_complete(all_())]
        finally:
            loop.close()

    def close(self) -> None:
        self.eng.shutdown()


class ServerClient:
    """A live SGLang server; its flags must be the mode's."""

    def __init__(self, url: str, mode: str, timeout: float = 600.0):
        self.url, self.timeout = url.rstrip("/"), timeout
        info = self._get("/get_server_info")
        want = SERVER_FLAGS[mode]
        got = {k: info.get(k) for k in want}
        if got != want:
            raise ValueError(f"the server at {self.url} was not started for mode {mode}: it has "
                             f"{', '.join(f'{k}={v}' for k, v in got.items())}; mode {mode} needs "
                             f"{', '.join(f'{k}={v}' for k, v in want.items())}")
        self.device = info.get("device_name") or info.get("gpu_name") or "server"

    def _get(self, path: str) -> dict:
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as r:
                return json.loads(r.read())
        except (urllib.error.URLError, OSError) as e:
            raise ConnectionError(f"the SGLang server at {self.url} is unreachable ({e})") from None

    def _post(self, path: str, body: dict):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return json.loads(r.read())
        except (urllib.error.URLError, OSError) as e:
            raise ConnectionError(f"the SGLang server at {self.url} is unreachable ({e})") from None

    def flush(self) -> None:
        self._post("/flush_cache", {})

    def generate(self, prompts: list[str], max_new: list[int]):
        outs = self._post("/generate", {"text": prompts, "sampling_params": [_sampling(n) for n in max_new],
                                        "return_logprob": True})
        return [_parse(o) for o in (outs if isinstance(outs, list) else [outs])]

    def generate_concurrent(self, prompts: list[str], max_new: list[int], clients: int, seed: int):
        from concurrent.futures import ThreadPoolExecutor

        rng = random.Random(seed)
        delays = [rng.uniform(0.0, 0.05) for _ in prompts]

        def one(args):
            p, n, d = args
            time.sleep(d)
            return self.generate([p], [n])[0]

        with ThreadPoolExecutor(clients) as ex:
            return list(ex.map(one, zip(prompts, max_new, delays, strict=True)))

    def close(self) -> None:
        pass


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


def run_variant(client, mode: str, variant: str, examples, tasks: dict, out: str, meta: dict) -> int:
    """Run one variant's missing examples; returns how many records were written."""
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
        return {"mode": mode, "variant": variant, "task": e.task, "id": e.id, "gold": e.gold, "answer": answer,
                "correct": task.is_correct(answer, e.gold), "output_ids": ids, "logprobs": lps, "text": text,
                "device": client.device, **meta}

    prompts = [e.prompt for e in todo]
    max_new = [tasks[e.task].max_new_tokens for e in todo]
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
        server: str | None = None, meta: dict | None = None) -> int:
    """Every (mode, variant) over ``examples``; engines are grouped by their flags, one at a time."""
    check_variants(variants, modes, server is not None)
    if server and len(modes) != 1:
        raise ValueError("a server serves one mode: pass --modes with the server's mode only")
    meta = dict(meta or {})
    os.makedirs(out, exist_ok=True)
    # With a TP variant, every engine of the run (TP=1 ones too) reduces row-parallel layers in the
    # same HEAL_ROW_SHARDS tree, or heal's TP=1 and TP=2 bits could not agree; 4 serves TP 1, 2, 4.
    env = {}
    if any(VARIANTS[v].engine.get("tp_size", 1) > 1 for v in variants):
        env = {"HEAL_ROW_SHARDS": os.environ.get("HEAL_ROW_SHARDS", "4")}
        meta["heal_row_shards"] = env["HEAL_ROW_SHARDS"]
    written = 0
    for mode in modes:
        groups: dict[str, list[str]] = {}
        for v in variants:
            if mode == "heal" and VARIANTS[v].engine.get("attention_backend", "heal") != "heal":
                print(f"[mcr] {mode}: variant {v} skipped (heal has its own attention backend)", file=sys.stderr)
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
                client = ServerClient(server, mode)
            else:
                from bench.e2e.engines import environ

                with environ(env):
                    client = EngineClient(model_path, mode, flags)
            try:
                for v in pending:
                    written += run_variant(client, mode, v, examples, tasks, out, meta)
            finally:
                client.close()
    return written
