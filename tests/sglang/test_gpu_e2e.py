"""End to end on the GPU: stock SGLang server and engines with the heal plugin.

Synthetic checkpoints of real architectures (std-0.02 init) are created on the
machine (bench.e2e.models).  ``HEAL_RESULTS=<dir>`` keeps the matrix's JSON.
"""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.gpu

ROOT = os.environ.get("HEAL_MODELS", "/tmp/heal-models")


def _model(name):
    from bench.e2e import models

    return models.make(name, f"{ROOT}/{name}")


def _post(url, body):
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


@contextlib.contextmanager
def _server(path, flags):
    """`python -m sglang.launch_server` with `flags`, healthy; yields its base URL."""
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", path, *flags, "--port", str(port),
           "--context-length", "2048", "--cuda-graph-max-bs-decode", "16", "--mem-fraction-static", "0.5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 420
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server {flags} exited:\n" + proc.stdout.read()[-4000:])
            try:
                with urllib.request.urlopen(base + "/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, "server did not become healthy in 420 s"
            time.sleep(2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _serve_and_query(path, flags):
    """Start a server with `flags`, query /generate twice and /v1/completions."""
    with _server(path, flags) as base:
        prompt = " ".join(f"t{i * 37 % 500}" for i in range(60))
        body = {"text": prompt, "return_logprob": True,
                "sampling_params": {"temperature": 0, "max_new_tokens": 24, "ignore_eos": True}}
        g1, g2 = _post(base + "/generate", body), _post(base + "/generate", body)
        c = _post(base + "/v1/completions", {"model": path, "prompt": prompt, "max_tokens": 24, "temperature": 0,
                                             "ignore_eos": True})
        return g1, g2, c


def test_design_command_serves_the_same_bits_as_quantization_heal():
    """`--attention-backend heal` alone (the design's command) and `--quantization heal` are one server."""
    path = _model("llama-small")
    runs = {}
    for label, flags in (("attention-backend", ["--attention-backend", "heal"]),
                         ("quantization", ["--quantization", "heal"])):
        g1, g2, c = _serve_and_query(path, flags)
        assert g1["meta_info"]["completion_tokens"] == 24 and g1["text"].strip()
        assert g1["text"] == g2["text"] and g1["meta_info"]["output_token_logprobs"] == \
            g2["meta_info"]["output_token_logprobs"]
        assert c["choices"][0]["text"] == g1["text"]
        assert c["usage"]["completion_tokens"] == 24
        runs[label] = g1
    a, q = runs["attention-backend"], runs["quantization"]
    assert a["text"] == q["text"]
    # (logprob, token id, text) per token: the same tokens and bitwise the same logprobs
    assert a["meta_info"]["output_token_logprobs"] == q["meta_info"]["output_token_logprobs"]


def _repro(tmp_path, name, args, timeout):
    """bench.e2e.repro on llama-small in heal mode; its summary rows (results under HEAL_RESULTS if set)."""
    out = os.path.join(os.environ.get("HEAL_RESULTS") or str(tmp_path), name)
    cmd = [sys.executable, "-m", "bench.e2e.repro", "--model-path", _model("llama-small"), "--modes", "heal",
           *args, "--out", out]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    with open(os.path.join(out, "summary.json")) as f:
        return json.load(f)["summary"]["heal"]


def test_heal_outputs_are_bitwise_identical_across_the_matrix(tmp_path):
    """32 prompts of 32-512 tokens, 256 new tokens: batch, chunked prefill 64/512/off, radix warm/cold, graphs."""
    rows = _repro(tmp_path, "repro-heal-llama-small", ["--parallel", "4"], timeout=900)
    assert len(rows) == 5
    for label, row in rows.items():
        assert row["n"] >= 32
        assert row["identical"] == row["n"], f"{label}: {row}"


def test_heal_seeded_sampling_is_bitwise_identical_across_the_matrix(tmp_path):
    """temperature 0.7, top-p 0.9, one sampling_seed per prompt, top-5 logprobs: 16 prompts of 32-512
    tokens, 64 new tokens; batch 1 vs all, radix warm vs cold, chunked prefill 64 vs off, graphs off vs on.
    Tokens, their logprobs and the top-5 (ids and logprobs) must be bitwise the same."""
    rows = _repro(tmp_path, "repro-heal-seeded-llama-small",
                  ["--variants", "base,chunk64,nograph", "--sampling", "seeded", "--prompts", "16", "--new", "64",
                   "--parallel", "3"], timeout=600)
    assert set(rows) == {"seeded: batch 1 vs all", "seeded: radix warm vs cold (batch 1)",
                         "seeded: chunked prefill 64 vs off", "seeded: CUDA graph off vs on"}
    for label, row in rows.items():
        assert row["n"] >= 16
        assert row["identical"] == row["n"], f"{label}: {row}"


def test_openai_seed_reproduces_a_sampled_completion():
    """/v1/completions with `seed` samples the same text twice; another seed another text (the
    mapping seed -> sampling_seed is SGLang's)."""
    path = _model("llama-small")
    prompt = " ".join(f"t{i * 37 % 500}" for i in range(60))
    body = {"model": path, "prompt": prompt, "max_tokens": 32, "temperature": 1.0, "ignore_eos": True,
            "logprobs": 5}
    with _server(path, ["--attention-backend", "heal"]) as base:
        a, b = (_post(base + "/v1/completions", dict(body, seed=7)) for _ in range(2))
        c = _post(base + "/v1/completions", dict(body, seed=8))
    assert a["choices"][0]["text"] == b["choices"][0]["text"]
    assert a["choices"][0]["logprobs"] == b["choices"][0]["logprobs"]
    assert a["choices"][0]["text"] != c["choices"][0]["text"]


@pytest.mark.parametrize("name", ["qwen2-small", "qwen3-small", "mistral-small", "llama-1b"])
def test_heal_serves_each_family_batch_invariantly(name):
    from bench.e2e import engines
    from bench.e2e.repro import _gen, prompts
    from bench.mcr.metrics import common_prefix

    path = _model(name)
    from transformers import AutoConfig

    ps = prompts(AutoConfig.from_pretrained(path).vocab_size, 12)["plain"]
    eng = engines.start(path, "heal", mem_fraction_static=0.5, context_length=2048)
    try:
        together = _gen(eng, ps, 64)
        single = []
        for p in ps:
            eng.flush_cache()
            single += _gen(eng, [p], 64)
    finally:
        eng.shutdown()
    assert all(len(t) == 64 for t in together)
    diff = [(i, common_prefix(t, s)) for i, (t, s) in enumerate(zip(together, single, strict=True)) if t != s]
    assert not diff, f"{name}: prompts (index, first differing token) batched vs alone: {diff}"


@pytest.mark.parametrize("mode", ["layercast", "fp32"])
def test_baselines_start_and_serve(mode):
    from bench.e2e import engines
    from bench.e2e.repro import _gen, prompts

    path = _model("llama-small")
    ps = prompts(32000, 4)["plain"]
    eng = engines.start(path, mode, mem_fraction_static=0.5, context_length=2048)
    try:
        outs = _gen(eng, ps, 16)
    finally:
        eng.shutdown()
    assert [len(o) for o in outs] == [16] * 4
