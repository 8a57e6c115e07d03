"""The runner's paths that a GPU run takes, with stand-ins for sglang.Engine: concurrent clients on
the engine's own event loop, variants skipped or failed without losing the others, skips carried
through merge into the report, the synthetic checkpoint made once under a lock."""

import asyncio
import os
import threading

import pytest

from bench.mcr import report, results, runner


class _LoopBoundEngine:
    """Like sglang.Engine: responses arrive through a task on the loop the engine was made on, so a
    request awaited on any other loop never completes."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.queue = None

    async def _serve(self):
        while True:
            fut, prompt = await self.queue.get()
            fut.set_result({"text": "Answer: yes", "output_ids": [ord(c) for c in prompt[:3]],
                            "meta_info": {"output_token_logprobs": [(-0.1, ord(c), None) for c in prompt[:3]]}})

    async def async_generate(self, prompt, sampling_params, return_logprob):
        if asyncio.get_running_loop() is not self.loop:
            raise AssertionError("awaited on another loop: would hang on a real engine")
        if self.queue is None:
            self.queue = asyncio.Queue()
            self.task = self.loop.create_task(self._serve())
        fut = self.loop.create_future()
        await self.queue.put((fut, prompt))
        return await fut


def test_concurrent_clients_run_on_the_engines_own_loop():
    c = runner.EngineClient.__new__(runner.EngineClient)
    c.eng = _LoopBoundEngine()
    got = {}
    t = threading.Thread(target=lambda: got.update(r=c.generate_concurrent(["abcd", "wxyz"], [3, 3], 2, 0)))
    t.start()
    t.join(10)
    assert not t.is_alive() and got["r"][0][0] == [97, 98, 99] and got["r"][1][1] == [-0.1] * 3
    c.eng.task.cancel()
    c.eng.loop.run_until_complete(asyncio.sleep(0))
    c.eng.loop.close()


def test_flashinfer_is_skipped_without_prebuilt_kernels_and_for_fp32_modes(monkeypatch):
    monkeypatch.delenv("MCR_FLASHINFER_JIT", raising=False)
    assert "FP32" in runner.skip_reason("fp32", "flashinfer")
    assert "FP32" in runner.skip_reason("layercast", "flashinfer")
    why = runner.flashinfer_unavailable()
    if why is not None:
        assert "MCR_FLASHINFER_JIT=1" in why or "not installed" in why
    monkeypatch.setenv("MCR_FLASHINFER_JIT", "1")
    assert runner.skip_reason("bf16", "flashinfer") is None
    assert runner.skip_reason("heal", "tp2") is None


class _Ex:
    def __init__(self, i):
        self.task, self.id, self.prompt, self.gold = "t", str(i), f"p{i}xyz", "yes"


class _Task:
    name, max_new_tokens = "t", 4

    def extract(self, text):
        return "yes" if text and "yes" in text else None

    def is_correct(self, answer, gold):
        return answer == gold


class _FakeClient:
    device = "GPU-A"

    def __init__(self, model_path, mode, engine, memory=None):
        if engine.get("tp_size", 1) > 1:
            raise RuntimeError("Initialization failed. Please see the error messages above.")
        self.memory = memory

    def flush(self):
        pass

    def generate(self, prompts, max_new):
        return [([1] * n, [-0.5] * n, "Answer: yes") for n in max_new]

    def generate_concurrent(self, prompts, max_new, clients, seed):
        return self.generate(prompts, max_new)

    def close(self):
        pass


def test_a_failed_engine_and_a_skipped_variant_keep_the_others(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "EngineClient", _FakeClient)
    monkeypatch.setattr(runner, "_kill_children", lambda: None)
    monkeypatch.delenv("MCR_FLASHINFER_JIT", raising=False)
    monkeypatch.setattr(runner, "flashinfer_unavailable", lambda: "no prebuilt kernels (test)")
    out, exs = str(tmp_path / "a"), [_Ex(i) for i in range(3)]
    with pytest.raises(RuntimeError, match="heal/tp2"):
        runner.run(exs, {"t": _Task()}, ["bf16", "heal"], ["all", "tp2", "flashinfer"], out, model_path="m",
                   max_new_tokens=5, memory={"max_total_tokens": 4096})
    rows = results.load(out)
    assert {(r["mode"], r["variant"]) for r in rows} == {("bf16", "all"), ("heal", "all")}
    assert all(len(r["output_ids"]) == 5 and r["max_new_tokens"] == 5 for r in rows)
    sk = {(s["mode"], s["variant"]): s for s in results.skips(out)}
    assert sk[("bf16", "flashinfer")]["kind"] == "skipped" and "test" in sk[("bf16", "flashinfer")]["reason"]
    assert sk[("heal", "tp2")]["kind"] == "failed" and sk[("bf16", "tp2")]["kind"] == "failed"
    assert ("heal", "flashinfer") not in sk  # heal has its own attention backend: not a variant of it
    # merged with another GPU's folder, the skips travel and the report lists them
    other = str(tmp_path / "b")
    results.append(other, [{**rows[0], "variant": "b1"}])
    merged = str(tmp_path / "m")
    results.merge([out, other], merged)
    assert {(s["mode"], s["variant"]) for s in results.skips(merged)} == set(sk)
    text, _ = report.render(results.load(merged), results.skips(merged))
    assert "| heal | tp2 | failed | the engine did not start" in text
    assert "| bf16 | flashinfer | skipped | no prebuilt kernels (test) |" in text
    # a later run that completes the variant clears its skip
    monkeypatch.setattr(runner, "flashinfer_unavailable", lambda: None)
    runner.run(exs, {"t": _Task()}, ["bf16"], ["flashinfer"], out, model_path="m")
    assert ("bf16", "flashinfer") not in {(s["mode"], s["variant"]) for s in results.skips(out)}


def test_the_synthetic_checkpoint_is_made_once_for_runs_started_side_by_side(tmp_path, monkeypatch):
    from bench.e2e import models
    from bench.mcr import __main__ as cli

    made = []

    def make(name, path, corpus=None):
        made.append(path)
        os.makedirs(path)
        for f in ("config.json", "tokenizer.json"):
            with open(os.path.join(path, f), "w") as fh:
                fh.write(name + f)
        with open(os.path.join(path, "model.safetensors"), "wb") as fh:
            fh.write(b"w" * 100)
        return path

    monkeypatch.setattr(models, "make", make)
    paths = []
    ts = [threading.Thread(target=lambda: paths.append(cli._checkpoint("llama-1b", str(tmp_path), ["a", "b"])))
          for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(made) == 1 and len(set(paths)) == 1 and os.path.exists(os.path.join(paths[0], "config.json"))
    assert cli._checkpoint("llama-1b", str(tmp_path), ["other"]) != paths[0]  # another corpus, another tokenizer
    fp = cli._fingerprint(paths[0])
    out = str(tmp_path / "run")
    cli._check_folder(out, {"model": "llama-1b", "checkpoint": fp})
    cli._check_folder(out, {"model": "llama-1b", "checkpoint": fp})
    with pytest.raises(ValueError, match="another model or checkpoint"):
        cli._check_folder(out, {"model": "llama-1b", "checkpoint": "0" * 16})
