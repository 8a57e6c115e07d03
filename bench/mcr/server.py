"""MCR-Bench clients for a live server: SGLang's native ``/generate`` (``--api sglang``) or any
OpenAI-compatible ``/v1/completions`` (``--api openai``: SGLang, vLLM, ...).

Both return, per prompt, ``(output_ids, logprobs, text)``: the generated tokens, the chosen
tokens' logprobs and the text, as the in-process engine does, so their result records are the
same in structure and the metrics mean the same on them.

The OpenAI path asks for ``logprobs`` (the chosen tokens' logprobs come back in
``choices[i].logprobs.token_logprobs``) and for the token ids with ``return_token_ids`` (SGLang
0.5.17 and vLLM return them in ``choices[i].token_ids``; other servers ignore the field or
refuse it, and then it is not sent again). A server that returns no ids is compared on the
generated tokens' texts (``logprobs.tokens``) instead: the records then carry
``"tokens_as": "text"``, positions (Div_Index, output length, common prefix) count those tokens,
and two different ids that decode to the same text count as the same. ``temperature`` 0 and a
fixed ``seed`` are sent with every request.

Every request is retried a bounded number of times (``retries``, with doubling waits from
``backoff`` seconds) when the server cannot be reached, drops the connection, does not answer
within ``timeout`` seconds, or answers 502/503/504; after that ``ConnectionError`` names the URL
and the cause, and the run keeps what it has (resumable). Other HTTP errors are not retried.

A server's flags must be the mode's: SGLang's ``/server_info`` (``/get_server_info`` before it)
is read and a server started otherwise is refused, naming what it serves and what the mode
needs. A server without that endpoint (vLLM, ...) cannot be checked: a warning says so.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import sys
import time
import urllib.error
import urllib.request

# What SGLang's /server_info must say for a server to serve each mode.
SERVER_FLAGS = {
    "bf16": {"quantization": None, "enable_deterministic_inference": False},
    "det": {"quantization": None, "enable_deterministic_inference": True},
    "fp32": {"quantization": None, "dtype": "float32"},
    "layercast": {"quantization": "layercast"},
    "heal": {"quantization": "heal", "attention_backend": "heal"},
}
# What a refusal reports of the server, whatever the mode checks.
REPORTED = ("quantization", "dtype", "attention_backend", "enable_deterministic_inference", "tp_size")
RETRY_STATUS = (502, 503, 504)
SEED = 0


def sampling(max_new: int) -> dict:
    return {"temperature": 0.0, "max_new_tokens": max_new}


def parse_native(o: dict) -> tuple[list[int], list[float], str]:
    """(ids, logprobs, text) of one output of sglang.Engine.generate or the native /generate."""
    lp = (o.get("meta_info") or {}).get("output_token_logprobs") or []
    ids = o.get("output_ids")
    if ids is None:
        ids = [t[1] for t in lp]
    return list(ids), [t[0] for t in lp], o.get("text", "")


class HttpError(Exception):
    """An HTTP error answer that is not retried (its status and the server's message)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


class _Http:
    """JSON over HTTP with a bounded retry; the subclasses speak one API."""

    api = ""

    def __init__(self, url: str, timeout: float = 600.0, retries: int = 3, backoff: float = 1.0):
        self.url, self.timeout, self.retries, self.backoff = url.rstrip("/"), timeout, retries, backoff

    def _request(self, path: str, body: dict | None = None, timeout: float | None = None, raw: bool = False):
        data = None if body is None else json.dumps(body).encode()
        timeout = self.timeout if timeout is None else timeout
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=timeout) as r:
                    text = r.read()
                return text.decode(errors="replace") if raw else json.loads(text)
            except urllib.error.HTTPError as e:
                msg = _message(e)
                if e.code not in RETRY_STATUS:
                    raise HttpError(e.code, msg) from None
                last = f"HTTP {e.code}: {msg}"
            except (TimeoutError, socket.timeout):
                last = f"no answer to {path} within {timeout:g} s"
            except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
                last = str(getattr(e, "reason", None) or e) or type(e).__name__
        tries = f"{self.retries + 1} attempt{'s' if self.retries else ''}"
        raise ConnectionError(f"the server at {self.url} is unreachable ({last}; {tries})") from None

    def server_info(self) -> dict | None:
        """SGLang's /server_info (or /get_server_info, its name before 0.5), or None without either."""
        for path in ("/server_info", "/get_server_info"):
            try:
                return self._request(path, timeout=min(self.timeout, 30.0))
            except HttpError as e:
                if e.status not in (404, 405):
                    raise ConnectionError(f"the server at {self.url} answered {path} with {e}") from None
        return None

    def check_mode(self, mode: str, info: dict | None) -> None:
        if info is None:
            print(f"[mcr] warning: the server at {self.url} has no /server_info (not an SGLang server?): it cannot "
                  f"be checked that it serves mode {mode}; its results are recorded as mode {mode} as given",
                  file=sys.stderr, flush=True)
            return
        want = SERVER_FLAGS[mode]
        got = {k: info.get(k) for k in want}
        if got != want:
            has = {k: info.get(k) for k in dict.fromkeys((*want, *REPORTED)) if k in info or k in want}
            raise ValueError(f"the server at {self.url} was not started for mode {mode}: it serves "
                             f"{', '.join(f'{k}={v}' for k, v in has.items())}; mode {mode} needs "
                             f"{', '.join(f'{k}={v}' for k, v in want.items())}")

    def generate_concurrent(self, prompts: list[str], max_new: list[int], clients: int, seed: int):
        rng = random.Random(seed)
        delays = [rng.uniform(0.0, 0.05) for _ in prompts]

        def one(args):
            p, n, d = args
            time.sleep(d)
            return self.generate([p], [n])[0]

        return _threads(one, list(zip(prompts, max_new, delays, strict=True)), clients)

    def close(self) -> None:
        pass


class ServerClient(_Http):
    """A live SGLang server through its native /generate; its flags must be the mode's."""

    api = "sglang"

    def __init__(self, url: str, mode: str, timeout: float = 600.0, retries: int = 3, backoff: float = 1.0):
        super().__init__(url, timeout, retries, backoff)
        info = self.server_info()
        if info is None:
            raise ValueError(f"the server at {self.url} has no /server_info or /get_server_info: it is not an "
                             "SGLang server, whose native /generate --api sglang uses; use --api openai")
        self.check_mode(mode, info)
        self.device = info.get("device_name") or info.get("gpu_name") or "server"

    def flush(self) -> None:
        self._request("/flush_cache", {}, raw=True)  # answers plain text

    def generate(self, prompts: list[str], max_new: list[int]):
        outs = self._request("/generate", {"text": prompts, "sampling_params": [sampling(n) for n in max_new],
                                           "return_logprob": True})
        return [parse_native(o) for o in (outs if isinstance(outs, list) else [outs])]


class OpenAIClient(_Http):
    """Any OpenAI-compatible server through /v1/completions (greedy, seeded, with logprobs)."""

    api = "openai"

    def __init__(self, url: str, mode: str, timeout: float = 600.0, retries: int = 3, backoff: float = 1.0,
                 model: str | None = None, seed: int = SEED):
        super().__init__(url, timeout, retries, backoff)
        self.seed, self.token_ids, self._flush_warned = seed, True, False
        info = self.server_info()
        self.sglang = info is not None
        self.check_mode(mode, info)
        self.device = (info or {}).get("device_name") or (info or {}).get("gpu_name") or "server"
        if model is None:
            try:
                models = self._request("/v1/models", timeout=min(self.timeout, 30.0)).get("data") or []
            except HttpError as e:
                raise ValueError(f"the server at {self.url} does not list its models (/v1/models: {e}); "
                                 "pass --served-model") from None
            if not models:
                raise ValueError(f"the server at {self.url} lists no model at /v1/models; pass --served-model")
            model = models[0]["id"]
        self.model = model

    def flush(self) -> None:
        """SGLang's /flush_cache, or vLLM's /reset_prefix_cache (served in its dev mode); else a warning."""
        for path in ("/flush_cache",) if self.sglang else ("/reset_prefix_cache", "/flush_cache"):
            try:
                self._request(path, {}, raw=True)
                return
            except HttpError:
                continue
        if not self._flush_warned:
            self._flush_warned = True
            print(f"[mcr] warning: the server at {self.url} offers no way to empty its prefix cache "
                  "(/flush_cache, /reset_prefix_cache): b1 and radix-warm start from whatever it holds",
                  file=sys.stderr, flush=True)

    def _body(self, prompts: list[str], max_new: int) -> dict:
        body = {"model": self.model, "prompt": prompts, "max_tokens": max_new, "temperature": 0.0,
                "seed": self.seed, "logprobs": 1, "n": 1, "stream": False}
        if self.token_ids:
            body["return_token_ids"] = True
        return body

    def _complete(self, prompts: list[str], max_new: int):
        try:
            resp = self._request("/v1/completions", self._body(prompts, max_new))
        except HttpError as e:
            if not (self.token_ids and e.status in (400, 422) and "return_token_ids" in e.message):
                raise RuntimeError(f"the server at {self.url} refused /v1/completions ({e})") from None
            print(f"[mcr] warning: the server at {self.url} refuses return_token_ids: outputs are compared on "
                  "the tokens' texts", file=sys.stderr, flush=True)
            self.token_ids = False
            resp = self._request("/v1/completions", self._body(prompts, max_new))
        return parse_openai(resp, len(prompts), self.url)

    def generate(self, prompts: list[str], max_new: list[int]):
        """All prompts in flight together: one request per distinct max_tokens, sent at once."""
        groups: dict[int, list[int]] = {}
        for i, n in enumerate(max_new):
            groups.setdefault(n, []).append(i)
        out: list = [None] * len(prompts)

        def one(item):
            n, idx = item
            return idx, self._complete([prompts[i] for i in idx], n)

        for idx, parsed in _threads(one, list(groups.items()), len(groups)):
            for i, p in zip(idx, parsed, strict=True):
                out[i] = p
        return out


def parse_openai(resp: dict, n: int, url: str = "the server") -> list[tuple[list, list[float], str]]:
    """Per prompt, (ids, logprobs, text) of a /v1/completions answer for ``n`` prompts (n = 1 each).

    ids: ``choices[i].token_ids`` when the server returns them, else the tokens' texts
    (``logprobs.tokens``); logprobs: ``logprobs.token_logprobs``."""
    choices = resp.get("choices") if isinstance(resp, dict) else None
    if not isinstance(choices, list) or len(choices) != n:
        got = f"{len(choices)} choices" if isinstance(choices, list) else f"no choices ({str(resp)[:200]})"
        raise RuntimeError(f"the server at {url} answered /v1/completions for {n} prompt(s) with {got}")
    out = []
    for c in sorted(choices, key=lambda c: c.get("index", 0)):
        lp = c.get("logprobs") or {}
        logprobs = lp.get("token_logprobs")
        if logprobs is None:
            raise RuntimeError(f"the server at {url} returned no logprobs (choices[].logprobs.token_logprobs): "
                               "MCR-Bench needs the chosen tokens' logprobs")
        ids = c.get("token_ids")
        if ids is None:
            ids = lp.get("tokens")
            if ids is None:
                raise RuntimeError(f"the server at {url} returned neither token_ids nor logprobs.tokens")
        out.append((list(ids), list(logprobs), c.get("text") or ""))
    return out


def tokens_as(parsed_ids: list) -> str | None:
    """"text" when the ids are the tokens' texts (a server without token ids), else None."""
    return "text" if any(isinstance(t, str) for t in parsed_ids) else None


def _message(e: urllib.error.HTTPError) -> str:
    try:
        body = e.read().decode(errors="replace")
    except Exception:  # noqa: BLE001 - the status alone then
        return e.reason or ""
    try:
        j = json.loads(body)
        err = j.get("error", j) if isinstance(j, dict) else j
        msg = err.get("message") or err.get("detail") if isinstance(err, dict) else err
        return str(msg or body)[:500]
    except ValueError:
        return body[:500]


def _threads(fn, items: list, workers: int) -> list:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(1, workers)) as ex:
        return list(ex.map(fn, items))
