"""Model families heal serves, as data, and the post-load audit that holds a loaded model to them.

Each family names, by architecture, the SGLang module classes of its norms, activation and
rotary embedding; linear layers, the embedding and the lm_head must compute with heal's
quantization methods whatever the family. After loading, ``audit`` walks the model and
refuses to serve if any of those modules would run on SGLang's 16-bit path: a norm,
activation or rotary class the family does not list, one whose ``forward_cuda`` is not the
method heal hooks, or an RMSNorm variant heal's kernel does not compute. An architecture
not in the table is refused before the model is built.

To add a family: add a row with its architecture names and module classes, check that
heal's hooks own those classes (their ``forward_cuda`` is the hooked base method), and add
its synthetic shape to ``bench/e2e/models.py`` with a GPU test that it serves batch-invariantly.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    architectures: tuple[str, ...]
    norms: tuple[str, ...]
    activations: tuple[str, ...]
    rotary: tuple[str, ...]


# Rotary classes Llama-style configs resolve to through SGLang's get_rope: plain, llama3,
# linear, dynamic-NTK and YaRN scaling; all keep RotaryEmbedding.forward_cuda (hooked).
_ROPES = ("RotaryEmbedding", "Llama3RotaryEmbedding", "LinearScalingRotaryEmbedding",
          "DynamicNTKScalingRotaryEmbedding", "YaRNScalingRotaryEmbedding")

FAMILIES: tuple[Family, ...] = (
    Family("Llama (3.x)", ("LlamaForCausalLM",), ("RMSNorm",), ("SiluAndMul",), _ROPES),
    Family("Qwen2 / Qwen2.5", ("Qwen2ForCausalLM",), ("RMSNorm",), ("SiluAndMul",), _ROPES),
    Family("Qwen3", ("Qwen3ForCausalLM",), ("RMSNorm",), ("SiluAndMul",), _ROPES),  # QK-norm: RMSNorm too
    # SGLang's MistralForCausalLM is its LlamaForCausalLM (HF layout); a config with a sliding
    # window is refused by args.model_refusals (SGLang's Llama code would not apply it).
    # Gemma-2 does not fit: every other layer is sliding-window (a hybrid pool, refused) and its
    # norms compute x * (1 + w) (GemmaRMSNorm), which heal's RMSNorm kernel does not.
    Family("Mistral", ("MistralForCausalLM",), ("RMSNorm",), ("SiluAndMul",), _ROPES),
)


def supported() -> str:
    return "; ".join(f"{f.name} ({', '.join(f.architectures)})" for f in FAMILIES)


def family_of(architectures) -> Family | None:
    archs = list(architectures or [])
    return next((f for f in FAMILIES for a in archs if a in f.architectures), None)


def check_architecture(architectures) -> Family:
    fam = family_of(architectures)
    if fam is None:
        raise ValueError(f"--quantization heal does not serve {', '.join(architectures or ['(no architecture)'])}: "
                         f"served families are {supported()}")
    return fam


def _kind(mod) -> str | None:
    """'norm', 'activation' or 'rotary' for SGLang's (and torch's) modules of those kinds."""
    import torch
    from sglang.srt.layers import activation, layernorm
    from sglang.srt.layers.rotary_embedding.base import RotaryEmbedding

    cls = type(mod)
    if isinstance(mod, (torch.nn.LayerNorm, torch.nn.RMSNorm)) or cls.__module__ == layernorm.__name__:
        return "norm"
    if cls.__module__ == activation.__name__ or isinstance(mod, (torch.nn.SiLU, torch.nn.GELU)):
        return "activation"
    if isinstance(mod, RotaryEmbedding) or "Rotary" in cls.__name__ or "RoPE" in cls.__name__:
        return "rotary"
    return None


def _hooked_method(cls) -> object | None:
    """The class through which ``cls.forward_cuda`` is resolved by the method heal hooks."""
    from sglang.srt.layers.activation import GeluAndMul, SiluAndMul
    from sglang.srt.layers.layernorm import RMSNorm
    from sglang.srt.layers.rotary_embedding.base import RotaryEmbedding

    for base in (RMSNorm, SiluAndMul, GeluAndMul, RotaryEmbedding):
        if issubclass(cls, base):
            return base
    return None


def _owned(mod, allowed: tuple[str, ...]) -> str | None:
    """None when heal computes this module; else why not."""
    cls = type(mod)
    if cls.__name__ not in allowed:
        return f"{cls.__name__} is not one of this family's {', '.join(allowed)}"
    base = _hooked_method(cls)
    if base is None or cls.forward_cuda is not base.forward_cuda:
        return f"{cls.__name__} overrides forward_cuda, which heal's FP32 kernels do not replace"
    from sglang.srt.layers.layernorm import RMSNorm

    if isinstance(mod, RMSNorm) and (mod.variance_size_override is not None or mod.cast_x_before_out_mul
                                     or not mod.has_weight):
        return ("an RMSNorm variant (partial variance, cast before the weight, or no weight) heal's kernel "
                "does not compute")
    return None


def audit(model, architectures) -> list[str]:
    """Every norm, activation and rotary module of ``model`` that would not run heal's FP32 kernels."""
    fam = check_architecture(architectures)
    allowed = {"norm": fam.norms, "activation": fam.activations, "rotary": fam.rotary}
    bad = []
    for name, mod in model.named_modules():
        kind = _kind(mod)
        if kind is None:
            continue
        why = _owned(mod, allowed[kind])
        if why:
            bad.append(f"{name or '(model)'}: {why}")
    return bad
