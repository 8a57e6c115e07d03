"""A decoder forward pass (Llama, Mistral, Qwen2, Qwen3 checkpoints) whose every kernel boundary is
visible, in one of several precision modes.

The layer order and the fusions are SGLang's: the residual add is fused into the next RMSNorm,
q, k and v come out of one projection, gate and up out of one, and the row-parallel layers
(o_proj, down_proj) reduce K in ``HEAL_ROW_SHARDS`` shards under heal. Modes:

- ``f64``: every op in float64 from the checkpoint's weights (the truth);
- ``fp32``: every op in float32 (LayerCast too: its BF16 weights upcast per layer are the same
  values, so its GEMMs are FP32's);
- ``bf16``: FP32 arithmetic inside each op and every op's output rounded to BF16, which is what
  16-bit kernels with FP32 accumulators do at their boundaries (SGLang's own BF16 kernels differ
  from torch's in reduction order, not in that rounding);
- ``bits:K``: the same with K significand bits at every boundary (K = 7 is ``bf16``);
- ``heal``: heal_kernels, as the plugin serves them (FP32 boundaries, INT16 K/V cache, the
  compensated matmul).

Every op reports ``(kernel, layer, inputs, output)`` to a recorder, which is how the error map
sees the boundaries. One sequence at a time, prefill only: HEAL's outputs do not depend on the
batch, chunking or prefill/decode split, so a single full forward gives its bits.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass

import torch

from bench.errormap.bits import round_to_bits

FAMILIES = ("llama", "mistral", "qwen2", "qwen3")


@dataclass
class Layer:
    w_qkv: torch.Tensor
    b_qkv: torch.Tensor | None
    w_o: torch.Tensor
    w_gate_up: torch.Tensor
    w_down: torch.Tensor
    in_norm: torch.Tensor
    post_norm: torch.Tensor
    q_norm: torch.Tensor | None
    k_norm: torch.Tensor | None


@dataclass
class Checkpoint:
    n_heads: int
    n_kv: int
    head_dim: int
    eps: float
    embed: torch.Tensor  # bf16 as stored
    layers: list[Layer]
    norm: torch.Tensor
    lm_head: torch.Tensor
    inv_freq: torch.Tensor  # float64
    attn_scaling: float

    @property
    def n_layers(self) -> int:
        return len(self.layers)


def load(path: str, device: str = "cpu") -> Checkpoint:
    """The checkpoint at ``path`` (config.json + *.safetensors), weights kept as stored (16-bit)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    with open(os.path.join(path, "config.json")) as f:
        family = json.load(f).get("model_type")
    if family not in FAMILIES:
        raise ValueError(f"{path}: model_type {family!r} is not one the error map knows ({', '.join(FAMILIES)})")
    cfg = AutoConfig.from_pretrained(path)
    if family == "mistral" and getattr(cfg, "sliding_window", None):
        raise ValueError(f"{path}: a sliding window is not modelled by the error map")
    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not files:
        raise ValueError(f"{path}: no *.safetensors files")
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        sd.update(load_file(f, device=device))

    def get(name):
        if name not in sd:
            raise ValueError(f"{path}: tensor {name} missing")
        return sd[name]

    n_heads, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    layers = []
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        a = p + "self_attn."
        bias = [sd.get(a + f"{n}_proj.bias") for n in "qkv"]
        layers.append(Layer(
            w_qkv=torch.cat([get(a + f"{n}_proj.weight") for n in "qkv"]),
            b_qkv=torch.cat(bias) if all(b is not None for b in bias) else None,
            w_o=get(a + "o_proj.weight"),
            w_gate_up=torch.cat([get(p + "mlp.gate_proj.weight"), get(p + "mlp.up_proj.weight")]),
            w_down=get(p + "mlp.down_proj.weight"),
            in_norm=get(p + "input_layernorm.weight"), post_norm=get(p + "post_attention_layernorm.weight"),
            q_norm=sd.get(a + "q_norm.weight"), k_norm=sd.get(a + "k_norm.weight")))
    embed = get("model.embed_tokens.weight")
    rope_type = (getattr(cfg, "rope_scaling", None) or {}).get("rope_type", "default")
    if rope_type == "default":
        base = getattr(cfg, "rope_theta", 10000.0)
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
        scaling = 1.0
    else:
        inv, scaling = ROPE_INIT_FUNCTIONS[rope_type](cfg, "cpu")
        inv_freq = inv.double()
    return Checkpoint(n_heads=n_heads, n_kv=n_kv, head_dim=head_dim, eps=cfg.rms_norm_eps,
                      embed=embed, layers=layers, norm=get("model.norm.weight"),
                      lm_head=sd.get("lm_head.weight", embed), inv_freq=inv_freq.to(device),
                      attn_scaling=float(scaling))


def cos_sin(ck: Checkpoint, n: int, dtype: torch.dtype) -> torch.Tensor:
    """SGLang's layout [n, head_dim]: cos | sin, computed in float64 and rounded once to ``dtype``."""
    freqs = torch.arange(n, dtype=torch.float64, device=ck.inv_freq.device)[:, None] * ck.inv_freq[None, :]
    return (torch.cat([freqs.cos(), freqs.sin()], dim=-1) * ck.attn_scaling).to(dtype)


def parse_mode(mode: str) -> tuple[str, int | None]:
    """'f64', 'fp32', 'layercast', 'bf16', 'heal' or 'bits:K' -> (kind, K)."""
    if mode in ("f64", "fp32", "heal"):
        return mode, None
    if mode == "layercast":
        return "fp32", None
    if mode == "bf16":
        return "bits", 7
    if mode.startswith("bits:"):
        try:
            k = int(mode[5:])
        except ValueError:
            k = -1
        if 0 <= k <= 23:
            return "bits", k
    raise ValueError(f"unknown mode {mode!r}: f64, fp32, layercast, bf16, heal or bits:K with K in 0..23")


class Ops:
    """One mode's kernels. Each returns its output and calls ``record(kernel, layer, inputs, output)``;
    ``inputs`` are what the kernel read, so the map can recompute it in float64. The heal weights
    are converted once per Ops, so one Ops serves every prompt of a mode."""

    def __init__(self, ck: Checkpoint, mode: str, record=None):
        self.ck = ck
        self.kind, self.bits = parse_mode(mode)
        self.record = record or (lambda *a, **k: None)
        self.dtype = torch.float64 if self.kind == "f64" else torch.float32
        self._weights: dict[int, object] = {}
        if self.kind == "heal":
            from heal_sglang import state

            self.row_shards = state.row_shards_from_env()  # what a server started here would use

    # -- the rounding at a boundary
    def _b(self, y: torch.Tensor) -> torch.Tensor:
        return round_to_bits(y, self.bits) if self.kind == "bits" else y

    def _hw(self, w: torch.Tensor):
        from heal_kernels import prepare_weight

        key = id(w)
        if key not in self._weights:
            self._weights[key] = prepare_weight(w)
        return self._weights[key]

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        y = self.ck.embed[ids].to(self.dtype)  # 16-bit weights: exact in FP32 and float64
        self.record("embed", 0, {}, y)
        return y

    def linear(self, name: str, layer: int, x: torch.Tensor, w: torch.Tensor, b=None, row_parallel=False):
        if self.kind == "heal":
            from heal_kernels import heal_matmul

            # a K that does not split into the shards is refused by heal_matmul, as the plugin refuses it
            shards = self.row_shards if row_parallel else 1
            y = heal_matmul(x, self._hw(w), None if b is None else b.float(), k_shards=shards)
        else:
            # not reference.matmul_ref: it widens the weight to float64 first, 4 GB for an 8B lm_head
            y = x @ w.to(self.dtype).T
            if b is not None:
                y = y + b.to(self.dtype)
            y = self._b(y)
        self.record(name, layer, {"x": x, "w": w, "b": b}, y)
        return y

    def norm(self, name: str, layer: int, x: torch.Tensor, w: torch.Tensor, residual=None):
        """RMSNorm of x (+ residual, fused as SGLang does); returns (out, the new residual)."""
        if self.kind == "heal":
            from heal_kernels import rms_norm

            if residual is None:
                out, r = rms_norm(x, w, self.ck.eps), x
            else:
                out, r = rms_norm(x, w, self.ck.eps, residual)
        else:
            from heal_kernels.reference import rms_norm_ref

            r = x if residual is None else self._b(x + residual)  # the sum is a boundary of its own here
            out = self._b(rms_norm_ref(r, w, self.ck.eps, dtype=self.dtype))
        if residual is not None:
            self.record("residual", layer, {"x": x, "residual": residual}, r)
        self.record(name, layer, {"x": r, "w": w}, out)
        return out, r

    def head_norm(self, name: str, layer: int, x: torch.Tensor, w: torch.Tensor, heads: int):
        """Qwen3's q_norm / k_norm: RMSNorm over each head's head_dim values."""
        t = x.shape[0]
        out, _ = self.norm(name, layer, x.reshape(t * heads, -1), w)
        return out.reshape(t, -1)

    def rotary(self, layer: int, pos: torch.Tensor, q: torch.Tensor, k: torch.Tensor):
        d = self.ck.head_dim
        cs = cos_sin(self.ck, int(pos.max()) + 1, self.dtype)
        if self.kind == "heal":
            from heal_kernels import apply_rotary

            qo, ko = apply_rotary(pos, q, k, cs, d)
        else:
            from heal_kernels.reference import rope_ref

            qo, ko = (self._b(rope_ref(pos, x, cs, d, dtype=self.dtype)) for x in (q, k))
        self.record("rotary", layer, {"pos": pos, "x": q, "cos_sin": cs}, qo)
        self.record("rotary", layer, {"pos": pos, "x": k, "cos_sin": cs}, ko)
        return qo, ko

    def attention(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        ck, t = self.ck, q.shape[0]
        q3 = q.reshape(t, ck.n_heads, ck.head_dim)
        k3, v3 = (x.reshape(t, ck.n_kv, ck.head_dim) for x in (k, v))
        sm = ck.head_dim ** -0.5
        if self.kind == "heal":
            from heal_kernels import attention_extend, new_int16_kv, store_kv

            cache = new_int16_kv(t, ck.n_kv, ck.head_dim, q.device)
            slots = torch.arange(t, device=q.device)
            store_kv(cache, slots, k3.contiguous(), v3.contiguous())
            ends = torch.tensor([0, t], device=q.device, dtype=torch.int32)
            y = attention_extend(q3.contiguous(), cache, ends, ends, slots.to(torch.int32), sm_scale=sm)
        else:
            from heal_kernels.reference import attention_ref

            y = self._b(attention_ref(q3, k3, v3, torch.arange(t, device=q.device), sm_scale=sm, dtype=self.dtype))
        y = y.reshape(t, -1)
        self.record("attention", layer, {"q": q3, "k": k3, "v": v3, "sm_scale": sm}, y)
        return y

    def act(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "heal":
            from heal_kernels import silu_and_mul

            y = silu_and_mul(x)
        else:
            from heal_kernels.reference import silu_and_mul_ref

            y = self._b(silu_and_mul_ref(x, dtype=self.dtype))
        self.record("activation", layer, {"x": x}, y)
        return y


def forward(ck: Checkpoint, ops: Ops, ids: torch.Tensor) -> torch.Tensor:
    """Logits [T, vocab] of the sequence ``ids`` [T] through ``ops``."""
    t = ids.shape[0]
    pos = torch.arange(t, device=ids.device)
    h, residual = ops.embed(ids), None
    qn, kn = ck.n_heads * ck.head_dim, ck.n_kv * ck.head_dim
    for i, ly in enumerate(ck.layers):
        x, residual = ops.norm("input_norm", i, h, ly.in_norm, residual)
        qkv = ops.linear("qkv_proj", i, x, ly.w_qkv, ly.b_qkv)
        q, k, v = qkv[:, :qn], qkv[:, qn:qn + kn], qkv[:, qn + kn:]
        if ly.q_norm is not None:
            q = ops.head_norm("qk_norm", i, q.contiguous(), ly.q_norm, ck.n_heads)
            k = ops.head_norm("qk_norm", i, k.contiguous(), ly.k_norm, ck.n_kv)
        q, k = ops.rotary(i, pos, q.contiguous(), k.contiguous())
        a = ops.attention(i, q, k, v.contiguous())
        h = ops.linear("o_proj", i, a, ly.w_o, row_parallel=True)
        x, residual = ops.norm("post_norm", i, h, ly.post_norm, residual)
        m = ops.act(i, ops.linear("gate_up", i, x, ly.w_gate_up))
        h = ops.linear("down_proj", i, m, ly.w_down, row_parallel=True)
    x, _ = ops.norm("final_norm", ck.n_layers, h, ck.norm, residual)
    return ops.linear("logits", ck.n_layers, x, ck.lm_head)


def greedy(ck: Checkpoint, ops: Ops, ids: list[int], new: int) -> tuple[list[int], list[float]]:
    """``new`` greedy tokens after ``ids`` (each step a full forward: a prefill gives HEAL's decode
    bits too) and their logprobs."""
    seq, toks, lps = list(ids), [], []
    dev = ck.embed.device
    for _ in range(new):
        logits = forward(ck, ops, torch.tensor(seq, device=dev))[-1].double()
        tok = int(torch.argmax(logits))
        toks.append(tok)
        lps.append(float(torch.log_softmax(logits, -1)[tok]))
        seq.append(tok)
    return toks, lps
