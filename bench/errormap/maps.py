"""The error map's arithmetic: per (kernel, layer), a mode's own error and the error it carries.

For an op y = f(x) at one boundary, with the mode's inputs x_hat and output y_hat, and y the
float64 model's value at the same boundary:

- own (arithmetic) error: eps = y_hat - f64(f)(x_hat), the op recomputed in float64 from the
  very inputs the mode gave it;
- total error: y_hat - y;
- ratio = E[eps^2] / E[(y_hat - y)^2]: near 1 where this kernel makes the error, near 0 where it
  only carries what came in.

Attention is also split by recomputing it in float64 with each of Q, K and V rounded the way
the INT16 cache rounds it (per token and head, amax / QMAX with QMAX = 32639) and the others exact.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch

from heal_kernels import reference

KERNELS = ("embed", "input_norm", "qkv_proj", "qk_norm", "rotary", "attention", "o_proj", "residual", "post_norm",
           "gate_up", "activation", "down_proj", "final_norm", "logits")


def recompute64(kernel: str, inputs: dict, eps: float) -> torch.Tensor | None:
    """``kernel`` in float64 from ``inputs`` (None for the embedding, which is exact)."""
    d = {k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in inputs.items()}
    if kernel == "embed":
        return None
    if kernel in ("qkv_proj", "o_proj", "gate_up", "down_proj", "logits"):
        return reference.matmul_ref(d["x"], d["w"], d["b"])
    if kernel in ("input_norm", "post_norm", "final_norm", "qk_norm"):
        return reference.rms_norm_ref(d["x"], d["w"], eps)
    if kernel == "residual":
        return d["x"] + d["residual"]
    if kernel == "rotary":
        return reference.rope_ref(d["pos"], d["x"], d["cos_sin"], d["cos_sin"].shape[1])  # the whole head rotates
    if kernel == "attention":
        return _attn(d["q"], d["k"], d["v"], d["sm_scale"]).reshape(d["q"].shape[0], -1)
    if kernel == "activation":
        return reference.silu_and_mul_ref(d["x"])
    raise ValueError(f"unknown kernel {kernel!r}")


def _attn(q, k, v, sm_scale):
    t = q.shape[0]
    return reference.attention_ref(q, k, v, torch.arange(t, device=q.device), sm_scale=sm_scale)


def int16_round(x: torch.Tensor) -> torch.Tensor:
    """x [..., D] through the INT16 cache's rounding (per row of D), back in float64."""
    return reference.dequantize(*reference.quantize(x))


class Stats:
    """Sums of squares per (kernel, layer): of the float64 value, of the total and of the own error."""

    def __init__(self):
        self.sums = defaultdict(lambda: [0.0, 0.0, 0.0, 0])  # ref^2, total^2, own^2, n
        self.attn = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0, 0.0])  # exact^2, q, k, v, arithmetic

    def add(self, kernel: str, layer: int, y_hat: torch.Tensor, y_ref: torch.Tensor, y_own: torch.Tensor | None):
        s = self.sums[(kernel, layer)]
        yh, yr = y_hat.double(), y_ref.double()
        s[0] += float((yr * yr).sum())
        s[1] += float(((yh - yr) ** 2).sum())
        s[2] += float(((yh - y_own) ** 2).sum()) if y_own is not None else 0.0
        s[3] += yr.numel()

    def add_attention(self, layer: int, inputs: dict, y_hat: torch.Tensor):
        q, k, v = (inputs[n].double() for n in "qkv")
        sm = inputs["sm_scale"]
        exact = _attn(q, k, v, sm)
        qr, kr, vr = int16_round(q), int16_round(k), int16_round(v)
        a = self.attn[layer]
        a[0] += float((exact * exact).sum())
        for i, parts in enumerate(((qr, k, v), (q, kr, v), (q, k, vr)), start=1):
            a[i] += float(((_attn(*parts, sm) - exact) ** 2).sum())
        a[4] += float(((y_hat.double().reshape(exact.shape) - _attn(qr, kr, vr, sm)) ** 2).sum())

    def table(self) -> dict:
        """{kernel: [{layer, rel_total, rel_own, ratio, n}]} (relative: RMS over RMS of the float64 value)."""
        out: dict = defaultdict(list)
        for (kernel, layer), (ref, tot, own, n) in sorted(self.sums.items(), key=lambda kv: (
                KERNELS.index(kv[0][0]), kv[0][1])):
            den = ref if ref > 0 else math.nan
            out[kernel].append({"layer": layer, "rel_total": math.sqrt(tot / den), "rel_own": math.sqrt(own / den),
                                "ratio": own / tot if tot > 0 else (math.nan if own == 0 else math.inf), "n": n})
        return dict(out)

    def attention_split(self) -> dict:
        """{layer: {q, k, v, arithmetic}}: each RMS error relative to the exact attention's RMS."""
        return {layer: {name: math.sqrt(a[i] / a[0]) if a[0] > 0 else math.nan
                        for i, name in enumerate(("q", "k", "v", "arithmetic"), start=1)}
                for layer, a in sorted(self.attn.items())}


class Recorder:
    """Collects a float64 run's boundary values, then compares a mode's run against them, call by call."""

    def __init__(self, eps: float, split_attention: bool = False):
        self.eps, self.split = eps, split_attention
        self.ref: list[tuple[str, int, torch.Tensor]] = []
        self.stats = Stats()
        self._i = 0

    def reference(self, kernel, layer, inputs, y):
        self.ref.append((kernel, layer, y.detach().to("cpu")))

    def compare(self, kernel, layer, inputs, y):
        rk, rl, ry = self.ref[self._i]
        if (rk, rl) != (kernel, layer):  # the two runs must call the same kernels in the same order
            raise RuntimeError(f"boundary {self._i}: float64 run had {rk}/{rl}, this mode {kernel}/{layer}")
        self._i += 1
        own = recompute64(kernel, inputs, self.eps)
        self.stats.add(kernel, layer, y.detach().cpu(), ry, None if own is None else own.cpu())
        if kernel == "attention" and self.split:
            self.stats.add_attention(layer, inputs, y.detach())

    def check_complete(self, mode: str) -> None:
        """The mode passed every boundary the float64 run did (a missing one would go unmapped)."""
        if self._i != len(self.ref):
            raise RuntimeError(f"mode {mode} passed {self._i} boundaries, the float64 run {len(self.ref)}")

    def next_sequence(self, ref: list | None = None):
        """Start a new sequence, against ``ref`` (another recorder's float64 values) or a fresh run."""
        self.ref, self._i = ([] if ref is None else ref), 0
