"""The SGLang boundary: every SGLang name heal_sglang reaches into, with the SGLang releases
it applies to, checked at ``register()``.

A version drift must fail loudly at start-up, never fall back to 16-bit numerics: the
installed SGLang must be one of the ``SUPPORTED`` releases (each verified on its own; the
releases between them were not) and every target of that release must resolve, and where
heal's code binds arguments by name, the target's signature must still have those
parameters. ``check()`` raises ``CompatError`` naming the target and the installed version;
``report()`` gives one row per target for ``python -m heal_sglang.check``; ``lookup()``
returns the object for a named target of the installed release, or raises.
"""

from __future__ import annotations

import inspect
import pkgutil
import re
from dataclasses import dataclass

# The SGLang releases heal-sglang was verified on, exactly (not a range).
SGLANG_0517 = "0.5.17"
SGLANG_0523 = "0.5.23"  # ServerArgs resolves in a pipeline of named steps; layers hold a tp_group
SUPPORTED = (SGLANG_0517, SGLANG_0523)


class CompatError(RuntimeError):
    pass


@dataclass(frozen=True)
class Target:
    path: str  # module.attr[.attr]
    what: str  # why heal needs it
    params: tuple[str, ...] = ()  # parameter names heal's code relies on (callables)
    versions: tuple[str, ...] = SUPPORTED  # the SGLang releases it applies to
    members: tuple[str, ...] = ()  # items the object must contain (``in``)


# names heal's code looks up with ``lookup()``; each applies to exactly one target per release
KV_INDICES = "paged KV indices"
RESOLVED_VIEW = "resolved server arguments"
GROUP_RANK_SIZE = "a layer's TP rank and size"
RECORD_FOREIGN_DEFAULTS = "heal's argument rewrites declared to SGLang"
RESOLUTION_HOOKS = "registered resolution hooks"
REGISTER_RESOLUTION_HOOK = "resolution hook registration"

# the two resolution steps heal wraps on 0.5.23: the pipeline's first step (prepare) and its last (validate)
PREPARE_STEP = "handle_deprecated_dp_attention"
VALIDATE_STEP = "validate_deepep_v2_dispatch_token_budget"

_HOOKS = "hook target"
_0517 = (SGLANG_0517,)
_0523 = (SGLANG_0523,)
_ADDERS = ("add_attention_backend_choices", "add_deterministic_attention_backend_choices",
           "add_radix_supported_deterministic_attention_backend_choices", "add_quantization_method_choices")
_ARG_GROUPS = "sglang.srt.arg_groups"
TARGETS: tuple[Target, ...] = (
    # hook targets (plugin._hooks)
    # 0.5.17 resolves in __post_init__; on 0.5.23 ServerArgs is a msgspec Struct whose
    # __post_init__ is bound at class creation (a hook on it never runs) and does nothing.
    Target("sglang.srt.server_args.ServerArgs.__post_init__", _HOOKS, versions=_0517),
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
    # seeded sampling (heal_sglang.sampling): SGLang's extension point after a batch's sampling
    # info is built, and the top-k/top-p/min-p sampler whose min-p step asserts that no seed is set
    Target("sglang.srt.sampling.sampling_batch_info.SamplingBatchInfo.adjusted_from_schedule_batch", _HOOKS,
           ("batch",)),
    Target("sglang.srt.layers.sampler.top_k_top_p_min_p_sampling_from_probs_torch", _HOOKS,
           ("probs", "min_ps", "need_min_p_sampling", "sampling_seed")),
    Target("sglang.srt.sampling.sampling_batch_info.SamplingBatchInfo.sampling_seed", "seeded sampling"),
    Target("sglang.srt.layers.sampler.multinomial_with_seed", "seeded sampling"),
    # returned logprobs from log_softmax whatever the batch holds (heal_sglang.sampling.logprobs_by_log_softmax)
    Target("sglang.srt.layers.sampler.Sampler.__init__", _HOOKS),
    # 0.5.23: server arguments resolve in resolve_once(), through named steps plugins may wrap;
    # the record keeps the raw input and the resolved values are declarations over it
    Target("sglang.srt.server_args.ServerArgs.resolve_once", "resolution entry point", versions=_0523),
    Target(f"{_ARG_GROUPS}.resolution_hooks.register_resolution_hook", REGISTER_RESOLUTION_HOOK, ("name",),
           versions=_0523),
    Target(f"{_ARG_GROUPS}.resolution_hooks._OVERRIDABLE_HOOKS", "overridable resolution steps",
           versions=_0523, members=(PREPARE_STEP, VALIDATE_STEP)),
    Target(f"{_ARG_GROUPS}.resolution_hooks._HOOKS", RESOLUTION_HOOKS, versions=_0523),
    Target(f"{_ARG_GROUPS}.overrides.record_foreign_defaults", RECORD_FOREIGN_DEFAULTS,
           ("server_args", "source", "resolve"), versions=_0523),
    Target(f"{_ARG_GROUPS}.overrides.resolved_view", RESOLVED_VIEW, ("server_args",), versions=_0523),
    Target(f"{_ARG_GROUPS}.overrides.resolution_result", "resolved server argument", ("server_args", "field"),
           versions=_0523),
    # registries and the adders that extend the argument choices
    Target("sglang.srt.plugins.hook_registry.HookRegistry", "hook registry"),
    Target("sglang.srt.plugins.hook_registry.HookType", "hook kinds"),
    Target("sglang.srt.layers.attention.attention_registry.ATTENTION_BACKENDS", "attention backend registry"),
    Target("sglang.srt.layers.quantization.QUANTIZATION_METHODS", "quantization registry"),
    Target("sglang.srt.server_args.ATTENTION_BACKEND_CHOICES", "--attention-backend choices"),
    Target("sglang.srt.server_args.DETERMINISTIC_ATTENTION_BACKEND_CHOICES", "deterministic backends"),
    Target("sglang.srt.server_args.RADIX_SUPPORTED_DETERMINISTIC_ATTENTION_BACKEND", "radix-safe backends"),
    Target("sglang.srt.server_args.QUANTIZATION_CHOICES", "--quantization choices"),
    # heal calls the adders with one positional list: a function of `choices` on 0.5.17, the bound
    # `extend` of the choices list on 0.5.23
    *(Target(f"sglang.srt.server_args.{name}", "adder", ("choices",), versions=_0517) for name in _ADDERS),
    *(Target(f"sglang.srt.server_args.{name}", "adder", versions=_0523) for name in _ADDERS),
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
    Target("sglang.kernels.ops.kvcache.kv_indices.create_flashinfer_kv_indices_triton", KV_INDICES, versions=_0517),
    Target("sglang.kernels.ops.attention.kv_indices.create_flashinfer_kv_indices_triton", KV_INDICES,
           versions=_0523),
    Target("sglang.srt.configs.model_config.AttentionArch", "MLA refusal"),
    Target("sglang.srt.runtime_context.get_parallel", "attention TP size"),
    Target("sglang.srt.distributed.get_tp_group", "ordered TP gather"),
    # 0.5.17 layers carry tp_rank/tp_size; 0.5.23 layers carry their group
    Target("sglang.srt.distributed.utils.get_group_rank_size", GROUP_RANK_SIZE, ("group",), versions=_0523),
    Target("sglang.srt.distributed.split_tensor_along_last_dim", "row-parallel input split"),
    Target("sglang.srt.distributed.tensor_model_parallel_all_reduce", "HEAL_TP_REDUCE=nccl"),
    Target("sglang.srt.layers.moe.utils.should_skip_mlp_all_reduce", "fused all-reduce refusal"),
)


def _vtuple(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split("."):
        m = re.match(r"\d+", part)
        if not m:
            break
        out.append(int(m.group()))
        if m.end() < len(part):  # 0.5.17rc1: the numeric release is what counts
            break
    return tuple(out)


def sglang_version() -> str:
    import sglang

    return getattr(sglang, "__version__", "unknown")


def release_of(v: str) -> str | None:
    """The supported release ``v`` is a build of (0.5.17.post1 -> 0.5.17), or None."""
    t = _vtuple(v)
    for s in SUPPORTED:
        if len(t) >= 3 and t[:3] == _vtuple(s):
            return s
    return None


def version_ok(v: str) -> bool:
    return release_of(v) is not None


def _supported_text() -> str:
    return ", ".join(SUPPORTED)


def installed() -> str:
    """The supported release the installed SGLang is (one of ``SUPPORTED``); CompatError otherwise."""
    v = sglang_version()
    rel = release_of(v)
    if rel is None:
        raise CompatError(f"heal-sglang supports SGLang {_supported_text()} (verified releases only); SGLang {v} is "
                          f"installed. Install a supported SGLang (pip install sglang=={SUPPORTED[0]}).")
    return rel


def targets(release: str | None = None) -> tuple[Target, ...]:
    """The targets that apply to ``release`` (the installed one by default)."""
    release = release or installed()
    return tuple(t for t in TARGETS if release in t.versions)


def _versions_text(target: Target) -> str:
    return ", ".join(target.versions)


def resolve(target: Target):
    """The object at ``target.path``; CompatError naming it and the installed SGLang otherwise."""
    mod_path, attr = target.path.rsplit(".", 1)
    try:
        obj = pkgutil.resolve_name(mod_path)
        return inspect.getattr_static(obj, attr) if inspect.isclass(obj) else getattr(obj, attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise CompatError(f"SGLang {sglang_version()} has no {target.path} ({target.what}; verified on "
                          f"{_versions_text(target)}): {e}") from None


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
                          f"({target.what}; verified on {_versions_text(target)} with parameters "
                          f"{', '.join(target.params)})")


def _check_members(target: Target, obj) -> None:
    missing = [m for m in target.members if m not in obj]
    if missing:
        raise CompatError(f"{target.path} in SGLang {sglang_version()} no longer holds {', '.join(missing)} "
                          f"({target.what}; verified on {_versions_text(target)})")


def check_version() -> None:
    installed()


def check_target(target: Target):
    """Resolve ``target`` and check its parameters and members; the object, or CompatError."""
    obj = resolve(target)
    if target.params:
        _check_params(target, obj)
    if target.members:
        _check_members(target, obj)
    return obj


def lookup(what: str):
    """The checked object of the one target named ``what`` for the installed release; CompatError
    if the version is unsupported, no target of that release has that name, or it moved."""
    release = installed()
    found = [t for t in targets(release) if t.what == what]
    if len(found) != 1:
        raise CompatError(f"heal_sglang.compat has {len(found)} targets for {what!r} on SGLang {release} (needs 1)")
    return check_target(found[0])


def resolved_args(server_args):
    """The server arguments as SGLang resolved them. 0.5.17 resolves in place; on 0.5.23 the
    record keeps the raw input (``--quantization heal`` alone leaves ``attention_backend``
    None there) and this is a read-only view of the declarations over it."""
    if installed() == SGLANG_0517:
        return server_args
    return lookup(RESOLVED_VIEW)(server_args)


def check() -> None:
    """The installed SGLang version, then every target of that release: the first mismatch raises CompatError."""
    for t in targets(installed()):
        check_target(t)


def report() -> list[tuple[bool, str]]:
    """One row for the version, then one per target of the installed release (all targets if the
    version is unsupported), each with the releases it applies to."""
    v = sglang_version()
    release = release_of(v)
    rows = [(release is not None, f"SGLang {v} (supported: {_supported_text()})")]
    for t in (targets(release) if release else TARGETS):
        try:
            check_target(t)
            rows.append((True, f"{t.path} ({_versions_text(t)})"))
        except CompatError as e:
            rows.append((False, str(e)))
    return rows
