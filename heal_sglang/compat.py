"""The SGLang boundary: every SGLang name heal_sglang reaches into, with the versions it was
verified on, checked at ``register()``.

A version drift must fail loudly at start-up, never fall back to 16-bit numerics: the
installed SGLang must be in ``SUPPORTED`` and every target must resolve, and where heal's
code binds arguments by name, the target's signature must still have those parameters.
``check()`` raises ``CompatError`` naming the target and the installed version;
``report()`` gives one row per target for ``python -m heal_sglang.check``.
"""

from __future__ import annotations

import inspect
import pkgutil
from dataclasses import dataclass

# Versions of SGLang the plugin was verified on (GPU and CPU suites), inclusive range.
SUPPORTED = ("0.5.17", "0.5.17")
VERIFIED = "0.5.17"


class CompatError(RuntimeError):
    pass


@dataclass(frozen=True)
class Target:
    path: str  # module.attr[.attr]
    what: str  # why heal needs it
    params: tuple[str, ...] = ()  # parameter names heal's code relies on (callables)


_HOOKS = "hook target"
TARGETS: tuple[Target, ...] = (
    # hook targets (plugin._hooks)
    Target("sglang.srt.server_args.ServerArgs.__post_init__", _HOOKS),
    Target("sglang.srt.model_executor.model_runner.ModelRunner.__init__", _HOOKS, ("server_args", "model_config")),
    Target("sglang.srt.model_executor.model_runner.ModelRunner.load_model", _HOOKS),
    Target("sglang.srt.mem_cache.kv_cache_configurator.KVCacheConfigurator._build_mha_kv_pool", _HOOKS),
    Target("sglang.srt.model_executor.pool_configurator.DefaultPoolConfigurator._compute_cell_size", _HOOKS,
           ("kvc", "num_layers")),
    Target("sglang.srt.layers.linear.RowParallelLinear.forward", _HOOKS,
           ("input_", "skip_all_reduce", "forward_batch", "output_tensor")),
    Target("sglang.srt.layers.layernorm.RMSNorm.forward_cuda", _HOOKS, ("x", "residual", "post_residual_addition")),
    Target("sglang.srt.layers.activation.SiluAndMul.forward_cuda", _HOOKS, ("x",)),
    Target("sglang.srt.layers.activation.GeluAndMul.forward_cuda", _HOOKS, ("x",)),
    Target("sglang.srt.layers.rotary_embedding.base.RotaryEmbedding.forward_cuda", _HOOKS,
           ("positions", "query", "key", "offsets", "fused_set_kv_buffer_arg")),
    # registries and the adders that extend the argument choices
    Target("sglang.srt.plugins.hook_registry.HookRegistry", "hook registry"),
    Target("sglang.srt.plugins.hook_registry.HookType", "hook kinds"),
    Target("sglang.srt.layers.attention.attention_registry.ATTENTION_BACKENDS", "attention backend registry"),
    Target("sglang.srt.layers.quantization.QUANTIZATION_METHODS", "quantization registry"),
    Target("sglang.srt.server_args.ATTENTION_BACKEND_CHOICES", "--attention-backend choices"),
    Target("sglang.srt.server_args.DETERMINISTIC_ATTENTION_BACKEND_CHOICES", "deterministic backends"),
    Target("sglang.srt.server_args.RADIX_SUPPORTED_DETERMINISTIC_ATTENTION_BACKEND", "radix-safe backends"),
    Target("sglang.srt.server_args.QUANTIZATION_CHOICES", "--quantization choices"),
    Target("sglang.srt.server_args.add_attention_backend_choices", "adder", ("choices",)),
    Target("sglang.srt.server_args.add_deterministic_attention_backend_choices", "adder", ("choices",)),
    Target("sglang.srt.server_args.add_radix_supported_deterministic_attention_backend_choices", "adder",
           ("choices",)),
    Target("sglang.srt.server_args.add_quantization_method_choices", "adder", ("choices",)),
    Target("sglang.srt.plugins.load_plugins", "plugin loader"),
    Target("sglang.srt.plugins.GENERAL_PLUGINS_GROUP", "entry-point group"),
    # base classes and helpers heal's modules build on
    Target("sglang.srt.layers.attention.base_attn_backend.AttentionBackend", "attention backend base"),
    Target("sglang.srt.layers.quantization.fp4_kv_cache_quant_method.KVCacheQuantMethodBase", "KV-cache layout base"),
    Target("sglang.srt.layers.quantization.base_config.QuantizationConfig", "quantization config base"),
    Target("sglang.srt.layers.quantization.base_config.QuantizationConfig.override_quantization_method",
           "pre-quantized checkpoint refusal", ("hf_quant_cfg", "user_quant")),
    Target("sglang.srt.layers.quantization.base_config.LinearMethodBase", "linear method base"),
    Target("sglang.srt.layers.quantization.base_config.QuantizeMethodBase", "embedding method base"),
    Target("sglang.srt.layers.linear.LinearBase", "linear layers"),
    Target("sglang.srt.layers.linear.RowParallelLinear", "row-parallel layers"),
    Target("sglang.srt.layers.vocab_parallel_embedding.VocabParallelEmbedding", "embedding and lm_head"),
    Target("sglang.srt.utils.set_weight_attrs", "weight loader attributes"),
    Target("sglang.kernels.ops.kvcache.kv_indices.create_flashinfer_kv_indices_triton", "paged KV indices"),
    Target("sglang.srt.configs.model_config.AttentionArch", "MLA refusal"),
    Target("sglang.srt.runtime_context.get_parallel", "attention TP size"),
    Target("sglang.srt.distributed.get_tp_group", "ordered TP gather"),
    Target("sglang.srt.distributed.split_tensor_along_last_dim", "row-parallel input split"),
    Target("sglang.srt.distributed.tensor_model_parallel_all_reduce", "HEAL_TP_REDUCE=nccl"),
    Target("sglang.srt.layers.moe.utils.should_skip_mlp_all_reduce", "fused all-reduce refusal"),
)


def _vtuple(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
        if not part.isdigit():  # 0.5.17rc1, 0.5.17.post1: the numeric release is what counts
            break
    return tuple(out)


def sglang_version() -> str:
    import sglang

    return getattr(sglang, "__version__", "unknown")


def version_ok(v: str) -> bool:
    lo, hi = (_vtuple(x) for x in SUPPORTED)
    t = _vtuple(v)
    return bool(t) and lo <= t[: len(hi)] <= hi


def resolve(target: Target):
    """The object at ``target.path``; CompatError naming it and the installed SGLang otherwise."""
    mod_path, attr = target.path.rsplit(".", 1)
    try:
        obj = pkgutil.resolve_name(mod_path)
        return inspect.getattr_static(obj, attr) if inspect.isclass(obj) else getattr(obj, attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise CompatError(f"SGLang {sglang_version()} has no {target.path} ({target.what}; verified on "
                          f"{VERIFIED}): {e}") from None


def _check_params(target: Target, obj) -> None:
    fn = getattr(obj, "__func__", obj)
    fn = inspect.unwrap(fn)  # past functools.wraps layers (SGLang's hook wrappers keep __wrapped__)
    try:
        names = set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        raise CompatError(f"{target.path} in SGLang {sglang_version()} has no inspectable signature") from None
    missing = [p for p in target.params if p not in names]
    if missing:
        raise CompatError(f"{target.path} in SGLang {sglang_version()} no longer takes {', '.join(missing)} "
                          f"({target.what}; verified on {VERIFIED} with parameters {', '.join(target.params)})")


def check_version() -> None:
    v = sglang_version()
    if not version_ok(v):
        raise CompatError(f"heal-sglang supports SGLang {SUPPORTED[0]}"
                          + ("" if SUPPORTED[0] == SUPPORTED[1] else f" to {SUPPORTED[1]}")
                          + f"; SGLang {v} is installed. Install a supported SGLang (pip install sglang=={VERIFIED}).")


def check_target(target: Target) -> None:
    obj = resolve(target)
    if target.params:
        _check_params(target, obj)


def check() -> None:
    """The installed SGLang version, then every target: the first mismatch raises CompatError."""
    check_version()
    for t in TARGETS:
        check_target(t)


def report() -> list[tuple[bool, str]]:
    v = sglang_version()
    rows = [(version_ok(v), f"SGLang {v} (supported: {SUPPORTED[0]}..{SUPPORTED[1]})")]
    for t in TARGETS:
        try:
            check_target(t)
            rows.append((True, f"{t.path}"))
        except CompatError as e:
            rows.append((False, str(e)))
    return rows
