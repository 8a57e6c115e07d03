"""Server-argument rules for heal and layercast, applied where SGLang resolves its arguments:
around ``ServerArgs.__post_init__`` on 0.5.17, around the first and last steps of the resolution
pipeline on 0.5.23 (``plugin._resolution_prepare`` / ``_resolution_validate``).

``prepare`` runs before SGLang resolves the arguments (it may still set fields; on 0.5.23 its
writes become declarations); ``validate`` runs after, on the resolved configuration, and
refuses every feature HEAL cannot serve with its own numerics.  Errors name the flag to change.
"""

from __future__ import annotations

from heal_kernels.kv_int16 import HEAD_DIMS
from heal_sglang.state import HEAL, LAYERCAST

FP32_QUANT = (HEAL, LAYERCAST)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def prepare(args) -> None:
    """Fill defaults and reject inconsistent flags before SGLang resolves the arguments."""
    q = args.quantization
    backends = {f: getattr(args, f, None) for f in ("attention_backend", "prefill_attention_backend",
                                                     "decode_attention_backend")}
    heal_attn = [f for f, b in backends.items() if b == HEAL]
    if heal_attn and q is None:
        # the design's own command: --attention-backend heal alone serves HEAL, the same
        # server bit for bit as --quantization heal
        args.quantization = q = HEAL
    elif heal_attn and q != HEAL:
        raise ValueError(
            f"{_flag(heal_attn[0])} heal cannot be combined with --quantization {q}: heal computes the whole model "
            "in HEAL numerics from the checkpoint's 16-bit weights (drop --quantization, or pass --quantization heal)"
        )
    if q == HEAL:
        for f, b in backends.items():
            if b is not None and b != HEAL:
                raise ValueError(
                    f"--quantization heal needs {_flag(f)} heal (got {b}): HEAL's INT16 KV cache is read only "
                    "by heal's attention kernels"
                )
        if args.attention_backend is None:
            args.attention_backend = HEAL
        if getattr(args, "sampling_backend", None) is None:
            # SGLang's seeded sampler (heal_sglang.sampling) runs on the pytorch sampling backend
            args.sampling_backend = "pytorch"
        # The flags alone, before SGLang's own resolution: it reads the model first, so a bad model
        # path (or no GPU) would otherwise hide heal's refusal. validate() checks the resolved values.
        bad = _refusals(args)
        if bad:
            raise ValueError("--quantization heal cannot serve " + "; ".join(bad))
    if q in FP32_QUANT:
        if args.dtype in ("auto", None):
            args.dtype = "float32"
        elif args.dtype not in ("float32", "float", "fp32"):
            raise ValueError(
                f"--quantization {q} keeps 16-bit weights and FP32 activations: drop --dtype {args.dtype} "
                "(or pass --dtype float32)"
            )
        # Prefill graphs run the model under torch.compile, which swaps every op for its
        # native torch form: not the kernels these numerics are defined by.
        prefill = args.cuda_graph_backend_prefill
        if prefill is None:
            args.cuda_graph_backend_prefill = "disabled"
        elif prefill != "disabled":
            raise ValueError(
                f"--quantization {q} does not run prefill CUDA graphs: drop --cuda-graph-backend-prefill {prefill}"
            )
        decode = args.cuda_graph_backend_decode
        if decode not in (None, "full", "disabled"):
            raise ValueError(
                f"--quantization {q} captures full decode CUDA graphs only: got --cuda-graph-backend-decode {decode}"
            )


def _refusals(args) -> list[str]:
    out = []
    if getattr(args, "speculative_algorithm", None):
        out.append(f"speculative decoding (--speculative-algorithm {args.speculative_algorithm})")
    if getattr(args, "disaggregation_mode", "null") not in ("null", None):
        out.append(f"prefill/decode disaggregation (--disaggregation-mode {args.disaggregation_mode})")
    if getattr(args, "enable_mixed_chunk", False):
        out.append("mixed prefill/decode chunks (--enable-mixed-chunk)")
    if getattr(args, "kv_cache_dtype", "auto") not in ("auto", None):
        out.append(f"--kv-cache-dtype {args.kv_cache_dtype} (heal selects its own INT16 KV cache)")
    if getattr(args, "enable_hierarchical_cache", False):
        out.append("the hierarchical (host) KV cache (--enable-hierarchical-cache)")
    if getattr(args, "enable_dp_attention", False):
        out.append("data-parallel attention (--enable-dp-attention)")
    if getattr(args, "attn_dp_size", 1) > 1:  # 0.5.23 resolves --enable-dp-attention into attn_dp_size
        out.append(f"data-parallel attention (--attn-dp-size {args.attn_dp_size})")
    if getattr(args, "enable_layernorm_sp", False):  # 0.5.23: RowParallelLinear reduce-scatters instead
        out.append("sequence-parallel layer norms (--enable-layernorm-sp)")
    from heal_sglang.tp import server_refusal

    tp_rule = server_refusal(getattr(args, "tp_size", 1))
    if tp_rule:
        out.append(tp_rule)
    if getattr(args, "pp_size", 1) > 1:
        out.append(f"pipeline parallelism (--pp-size {args.pp_size})")
    if getattr(args, "enable_torch_compile", False):
        out.append("--enable-torch-compile (it swaps the FP32 kernels for native torch ops)")
    if getattr(args, "flashinfer_allreduce_fusion_backend", None) is not None:
        out.append(f"--flashinfer-allreduce-fusion-backend {args.flashinfer_allreduce_fusion_backend} (its fused "
                   "all-reduce sums in an order heal cannot fix)")
    if getattr(args, "enable_lora", False):
        out.append("LoRA adapters (--enable-lora)")
    if getattr(args, "sampling_backend", None) not in (None, "pytorch"):
        out.append(f"--sampling-backend {args.sampling_backend} (heal samples with SGLang's seeded sampler, which "
                   "runs on the pytorch backend: drop the flag)")
    if getattr(args, "dllm_algorithm", None):
        out.append(f"diffusion LLM decoding (--dllm-algorithm {args.dllm_algorithm})")
    return out


def validate(args) -> None:
    """Refuse, on the resolved arguments, what heal cannot serve faithfully."""
    q = args.quantization
    if q == HEAL:
        bad = _refusals(args)
        if bad:
            raise ValueError("--quantization heal cannot serve " + "; ".join(bad))
    if q in FP32_QUANT:
        cfg = getattr(args, "cuda_graph_config", None)
        if hasattr(cfg, "prefill"):  # resolved (a model-less ServerArgs stops before resolving it)
            if str(cfg.prefill.backend) != "disabled":
                raise ValueError(f"--quantization {q} does not run prefill CUDA graphs (cuda_graph_config sets "
                                 f"prefill backend {cfg.prefill.backend})")
            if str(cfg.decode.backend) not in ("full", "disabled"):
                raise ValueError(f"--quantization {q} captures full decode CUDA graphs only (cuda_graph_config "
                                 f"sets decode backend {cfg.decode.backend})")


def model_refusals(model_config) -> list[str]:
    """Model features HEAL cannot serve: MLA, hybrid sliding-window pools, encoder-decoder, sliding windows."""
    from sglang.srt.configs.model_config import AttentionArch

    from heal_sglang.families import family_of, supported

    out = []
    archs = getattr(model_config.hf_config, "architectures", None) or []
    arch = (archs or ["?"])[0]
    if family_of(archs) is None:
        out.append(f"architecture {', '.join(archs) or '(none in config)'} (served families: {supported()})")
    if getattr(model_config, "attention_arch", None) == AttentionArch.MLA:
        out.append(f"multi-head latent attention (MLA) models ({arch})")
    if getattr(model_config, "is_hybrid_swa", False):
        out.append(f"hybrid sliding-window attention pools ({arch})")
    if getattr(model_config, "is_encoder_decoder", False):
        out.append(f"encoder-decoder models ({arch})")
    hf = model_config.hf_text_config
    # Qwen2/Qwen3 configs carry a window they use only with use_sliding_window; Mistral's has no
    # such switch: a window set is a window the model was trained with.
    if getattr(hf, "sliding_window", None) and getattr(hf, "use_sliding_window", True):
        out.append(f"sliding-window attention (sliding_window={hf.sliding_window}, {arch})")
    if any(getattr(hf, f, None) for f in ("num_experts", "num_local_experts", "n_routed_experts")):
        out.append(f"mixture-of-experts models ({arch})")
    if model_config.head_dim not in HEAD_DIMS:
        out.append(f"head_dim {model_config.head_dim} (heal attention serves {HEAD_DIMS})")
    return out


def validate_model(args, model_config) -> None:
    if args.quantization == HEAL:
        bad = model_refusals(model_config)
        if bad:
            raise ValueError("--quantization heal cannot serve " + "; ".join(bad))
