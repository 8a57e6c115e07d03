"""SGLang plugin entry point (group ``sglang.srt.plugins``): ``register()``.

SGLang calls ``register`` in the launcher, the Engine and every scheduler process,
and only logs what a plugin raises.  So ``register`` applies its hooks at once and
checks every registry entry and hook itself (``report()``); ``python -m
heal_sglang.check`` prints the same report and fails loudly.

Server arguments: SGLang 0.5.17 resolves them in ``ServerArgs.__post_init__`` (an AROUND
hook); 0.5.23 in ``resolve_once``'s pipeline of named steps, where heal wraps the first
and the last step (``_resolution_hooks``), and the record keeps the raw input: every hook
here reads server arguments through ``compat.resolved_args``.
"""

from __future__ import annotations

import inspect
import pkgutil

from heal_sglang.state import HEAL, LAYERCAST

ATTENTION_BACKEND = HEAL
QUANT_METHODS = (HEAL, LAYERCAST)

_registered = False


# -- hooks (imports stay lazy: register() runs before SGLang parses arguments) --------

def _server_args_post_init(orig, self, *a, **k):
    """0.5.17: ServerArgs resolves in __post_init__; heal's rewrites go before it, its checks after."""
    from heal_sglang import args

    args.prepare(self)
    result = orig(self, *a, **k)
    args.validate(self)
    return result


def _resolution_prepare(server_args, previous):
    """0.5.23, around the pipeline's first step: heal's rewrites, declared to SGLang as a plugin's
    decisions (the record is sealed; a write must be a declaration)."""
    from heal_sglang import args, compat

    compat.lookup(compat.RECORD_FOREIGN_DEFAULTS)(server_args, "heal_sglang.args.prepare", args.prepare)
    previous(server_args)


def _resolution_validate(server_args, previous):
    """0.5.23, around the pipeline's last step: heal's checks on the resolved arguments."""
    from heal_sglang import args, compat

    previous(server_args)
    args.validate(compat.resolved_args(server_args))


def _resolution_hooks():
    from heal_sglang import compat

    return [(compat.PREPARE_STEP, _resolution_prepare), (compat.VALIDATE_STEP, _resolution_validate)]


def _bind(fn, a, k) -> dict:
    return inspect.signature(fn).bind_partial(*a, **k).arguments


def _model_runner_init(*a, **k):
    from sglang.srt.model_executor.model_runner import ModelRunner

    from heal_sglang import args, state

    bound = _bind(ModelRunner.__init__.__wrapped__, a, k)
    server_args, model_config = bound.get("server_args"), bound.get("model_config")
    if server_args is None or model_config is None:
        # never skip silently: without them no mode is set and heal's checks would not run
        from heal_sglang.compat import CompatError, sglang_version

        raise CompatError(f"ModelRunner.__init__ of SGLang {sglang_version()} was called without server_args or "
                          "model_config; heal_sglang cannot set its numerics mode")
    from heal_sglang.compat import resolved_args

    server_args = resolved_args(server_args)
    args.validate_model(server_args, model_config)
    hf = model_config.hf_text_config
    ckpt = getattr(hf, "torch_dtype", None) or getattr(hf, "dtype", None)
    if isinstance(ckpt, str):
        import torch

        ckpt = getattr(torch, ckpt, None)
    m = state.mode_for(server_args.quantization, model_config.dtype)
    state.fix(state.numerics(m, ckpt, state.row_shards_from_env() if m == state.HEAL else 1))
    return None


def _model_runner_load_model(result, self, *a, **k):
    from heal_sglang import state

    if state.mode() == state.HEAL:
        check_heal_model(self.model, getattr(self.model_config.hf_config, "architectures", None))
    return result


def check_heal_model(model, architectures) -> None:
    """Every linear layer, embedding and lm_head must compute with heal's methods, and every
    norm, activation and rotary module with heal's FP32 kernels (heal_sglang.families)."""
    from heal_sglang.families import audit

    unowned = audit(model, architectures)
    if unowned:
        raise RuntimeError("--quantization heal: these modules would run on SGLang's 16-bit path: "
                           + "; ".join(unowned[:8]) + (f" and {len(unowned) - 8} more" if len(unowned) > 8 else ""))
    from sglang.srt.layers.linear import LinearBase
    from sglang.srt.layers.vocab_parallel_embedding import VocabParallelEmbedding

    from heal_sglang.quant import HealEmbeddingMethod, HealLinearMethod

    bad = []
    for name, mod in model.named_modules():
        qm = getattr(mod, "quant_method", None)
        if isinstance(mod, VocabParallelEmbedding) and not isinstance(qm, HealEmbeddingMethod):
            bad.append(f"{name} ({type(qm).__name__})")
        elif isinstance(mod, LinearBase) and not isinstance(qm, HealLinearMethod):
            bad.append(f"{name} ({type(qm).__name__})")
    from heal_sglang.tp import summed_outside

    outside = summed_outside(model)
    if outside:
        raise RuntimeError(
            "--quantization heal with --tp-size > 1: this model sums these row-parallel outputs outside the layer "
            f"(reduce_results=False, e.g. in a fused all-reduce), in an order heal cannot fix: {', '.join(outside[:4])}"
        )
    if bad:
        raise RuntimeError(
            "--quantization heal: these layers were built without heal's quant methods (the model does not pass "
            "quant_config to them) and would compute at other numerics: " + ", ".join(bad[:8])
            + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
        )
    mark_presplit_norms(model)


def mark_presplit_norms(model) -> None:
    """The hidden-size RMSNorms (input, post-attention, final: they feed qkv, gate_up and the lm_head)
    write their output's heal_matmul split too (heal_sglang.ops); per-head norms (Qwen3's q/k norms)
    feed no linear layer and do not."""
    from sglang.srt.layers.layernorm import RMSNorm

    from heal_sglang.ops import PRESPLIT_ATTR

    hidden = getattr(getattr(model, "config", None), "hidden_size", None)
    if hidden is None:
        return
    for mod in model.modules():
        if isinstance(mod, RMSNorm) and mod.weight.numel() == hidden:
            setattr(mod, PRESPLIT_ATTR, True)


def _row_parallel_forward(orig, self, *a, **k):
    from heal_sglang import state
    from heal_sglang.tp import rank_size, row_parallel_forward

    if state.mode() != state.HEAL or rank_size(self)[1] == 1:
        return orig(self, *a, **k)

    return row_parallel_forward(self, *a, **k)


def _uses_heal_pool(server_args) -> bool:
    from heal_sglang.compat import resolved_args

    return resolved_args(server_args).attention_backend == ATTENTION_BACKEND


def _build_mha_kv_pool(orig, self, *a, **k):
    if not _uses_heal_pool(self.server_args):
        return orig(self, *a, **k)
    from heal_sglang.kv_cache import Int16KVCacheMethod

    if k.get("quant_method") is not None:
        raise ValueError("--attention-backend heal keeps its own INT16 KV cache; drop --kv-cache-dtype")
    k["quant_method"] = Int16KVCacheMethod()
    return orig(self, *a, **k)


def _compute_cell_size(orig, self, kvc, num_layers, *a, **k):
    if not _uses_heal_pool(kvc.server_args):
        return orig(self, kvc, num_layers, *a, **k)
    from sglang.srt.runtime_context import get_parallel

    from heal_kernels.kv_int16 import bytes_per_token

    heads = kvc.model_config.get_num_kv_heads(get_parallel().attn_tp_size)
    return num_layers * bytes_per_token(heads, kvc.model_config.head_dim)


def _op_hook(name):
    def hook(orig, *a, **k):
        from heal_sglang import ops

        return getattr(ops, name)(orig, *a, **k)

    hook.__name__ = hook.__qualname__ = f"heal_{name}"
    return hook


def _hooks():
    """(target, hook, kind) for SGLang's HookRegistry, for the installed SGLang release."""
    from sglang.srt.plugins.hook_registry import HookType

    from heal_sglang import compat

    resolution = ([("sglang.srt.server_args.ServerArgs.__post_init__", _server_args_post_init, HookType.AROUND)]
                  if compat.installed() == compat.SGLANG_0517 else [])  # 0.5.23: _resolution_hooks()
    return resolution + [
        ("sglang.srt.model_executor.model_runner.ModelRunner.__init__", _model_runner_init, HookType.BEFORE),
        ("sglang.srt.model_executor.model_runner.ModelRunner.load_model", _model_runner_load_model, HookType.AFTER),
        ("sglang.srt.mem_cache.kv_cache_configurator.KVCacheConfigurator._build_mha_kv_pool", _build_mha_kv_pool,
         HookType.AROUND),
        ("sglang.srt.model_executor.pool_configurator.DefaultPoolConfigurator._compute_cell_size",
         _compute_cell_size, HookType.AROUND),
        ("sglang.srt.layers.linear.RowParallelLinear.forward", _row_parallel_forward, HookType.AROUND),
        ("sglang.srt.layers.layernorm.RMSNorm.forward_cuda", _HOOK_RMSNORM, HookType.AROUND),
        ("sglang.srt.layers.activation.SiluAndMul.forward_cuda", _HOOK_SILU, HookType.AROUND),
        ("sglang.srt.layers.activation.GeluAndMul.forward_cuda", _HOOK_GELU, HookType.AROUND),
        ("sglang.srt.layers.rotary_embedding.base.RotaryEmbedding.forward_cuda", _HOOK_ROPE, HookType.AROUND),
        # seeded sampling (heal_sglang.sampling)
        ("sglang.srt.sampling.sampling_batch_info.SamplingBatchInfo.adjusted_from_schedule_batch", _seeds_hook,
         HookType.AFTER),
        ("sglang.srt.layers.sampler.top_k_top_p_min_p_sampling_from_probs_torch", _min_p_hook, HookType.AROUND),
        ("sglang.srt.layers.sampler.Sampler.__init__", _logprob_hook, HookType.AFTER),
    ]


_HOOK_RMSNORM = _op_hook("rmsnorm_forward_cuda")
_HOOK_SILU = _op_hook("silu_and_mul_forward_cuda")
_HOOK_GELU = _op_hook("gelu_and_mul_forward_cuda")
_HOOK_ROPE = _op_hook("rotary_forward_cuda")


def _seeds_hook(result, *a, **k):
    from heal_sglang.sampling import fill_seeds

    return fill_seeds(result, *a, **k)


def _logprob_hook(result, *a, **k):
    from heal_sglang.sampling import logprobs_by_log_softmax

    return logprobs_by_log_softmax(result, *a, **k)


def _min_p_hook(orig, *a, **k):
    from heal_sglang.sampling import min_p_then_seeded

    return min_p_then_seeded(orig, *a, **k)


def _attention_factory(model_runner):
    from heal_sglang.backend import HealAttnBackend

    return HealAttnBackend(model_runner)


# -- registration -------------------------------------------------------------------

def register() -> None:
    """Register backend ``heal``, quantization methods ``heal``/``layercast`` and the hooks; idempotent."""
    global _registered
    from heal_sglang import compat

    compat.check()  # the SGLang version and every name below, before anything is touched
    from sglang.srt import server_args as sa
    from sglang.srt.layers import quantization
    from sglang.srt.layers.attention.attention_registry import ATTENTION_BACKENDS
    from sglang.srt.plugins.hook_registry import HookRegistry

    from heal_sglang.quant import HealConfig, LayerCastConfig

    ATTENTION_BACKENDS[ATTENTION_BACKEND] = _attention_factory
    for lst, add in ((sa.ATTENTION_BACKEND_CHOICES, sa.add_attention_backend_choices),
                     (sa.DETERMINISTIC_ATTENTION_BACKEND_CHOICES, sa.add_deterministic_attention_backend_choices),
                     (sa.RADIX_SUPPORTED_DETERMINISTIC_ATTENTION_BACKEND,
                      sa.add_radix_supported_deterministic_attention_backend_choices)):
        if ATTENTION_BACKEND not in lst:
            add([ATTENTION_BACKEND])
    quantization.QUANTIZATION_METHODS[HealConfig.name] = HealConfig
    quantization.QUANTIZATION_METHODS[LayerCastConfig.name] = LayerCastConfig
    missing = [m for m in QUANT_METHODS if m not in sa.QUANTIZATION_CHOICES]
    if missing:
        sa.add_quantization_method_choices(missing)
    if not _registered:
        for target, hook, kind in _hooks():
            HookRegistry.register(target, hook, kind)
        if compat.installed() == compat.SGLANG_0523:
            register_step = compat.lookup(compat.REGISTER_RESOLUTION_HOOK)
            for step, hook in _resolution_hooks():
                register_step(step)(hook)
        _registered = True
    HookRegistry.apply_hooks()  # SGLang applies them after all plugins; apply now so we can check them
    problems = [line for ok, line in report() if not ok]
    if problems:
        raise RuntimeError("heal_sglang plugin registration is incomplete:\n  " + "\n  ".join(problems))


def _hook_installed(target: str, hook) -> bool:
    obj_path, attr = target.rsplit(".", 1)
    try:
        obj = pkgutil.resolve_name(obj_path)
    except (ImportError, AttributeError):
        return False
    fn = inspect.getattr_static(obj, attr, None)
    fn = getattr(fn, "__func__", fn)
    seen = 0
    while fn is not None and seen < 64:
        cells = getattr(fn, "__closure__", None) or ()
        if any(getattr(c, "cell_contents", None) is hook for c in cells):
            return True
        fn, seen = getattr(fn, "__wrapped__", None), seen + 1
    return False


def report() -> list[tuple[bool, str]]:
    """(ok, description) for every registry entry and hook the plugin installed (the SGLang
    names themselves: ``compat.report()``)."""
    from sglang.srt import server_args as sa
    from sglang.srt.layers import quantization
    from sglang.srt.layers.attention.attention_registry import ATTENTION_BACKENDS

    rows = [
        (ATTENTION_BACKENDS.get(ATTENTION_BACKEND) is _attention_factory, "attention backend 'heal' registered"),
        (ATTENTION_BACKEND in sa.ATTENTION_BACKEND_CHOICES, "--attention-backend accepts 'heal'"),
        (ATTENTION_BACKEND in sa.DETERMINISTIC_ATTENTION_BACKEND_CHOICES,
         "deterministic-inference backends list 'heal'"),
        (ATTENTION_BACKEND in sa.RADIX_SUPPORTED_DETERMINISTIC_ATTENTION_BACKEND,
         "radix-cache-safe deterministic backends list 'heal'"),
    ]
    for m in QUANT_METHODS:
        rows.append((m in quantization.QUANTIZATION_METHODS, f"quantization method '{m}' registered"))
        rows.append((m in sa.QUANTIZATION_CHOICES, f"--quantization accepts '{m}'"))
    for target, hook, _ in _hooks():
        rows.append((_hook_installed(target, hook), f"hook on {target}"))
    from heal_sglang import compat

    if compat.installed() == compat.SGLANG_0523:
        registered = compat.lookup(compat.RESOLUTION_HOOKS)
        for step, hook in _resolution_hooks():
            rows.append((hook in registered.get(step, ()), f"resolution hook on {step}"))
    return rows
