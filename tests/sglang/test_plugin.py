"""Registration through SGLang's plugin loader: complete, verified and idempotent."""

import re
import subprocess
import sys
from importlib.metadata import entry_points

import pytest


def test_entry_point_is_declared():
    eps = [ep for ep in entry_points(group="sglang.srt.plugins") if ep.name == "heal"]
    assert [ep.value for ep in eps] == ["heal_sglang.plugin:register"]


def test_load_plugins_registers_everything(plugin):
    from heal_sglang.plugin import report

    missing = [line for ok, line in report() if not ok]
    assert not missing, missing


def test_register_is_idempotent(plugin):
    from sglang.srt import server_args as sa
    from sglang.srt.layers.attention.attention_registry import ATTENTION_BACKENDS
    from sglang.srt.plugins.hook_registry import HookRegistry

    from heal_sglang import compat
    from heal_sglang.plugin import _hooks, _resolution_hooks, register

    def counts():
        steps = compat.lookup(compat.RESOLUTION_HOOKS) if compat.installed() == compat.SGLANG_0523 else {}
        return ({t: len(HookRegistry._hooks[t]) for t, _, _ in _hooks()},
                {step: len(steps.get(step, ())) for step, _ in _resolution_hooks()})

    hooks_before = counts()
    factory = ATTENTION_BACKENDS["heal"]
    register()
    register()
    assert counts() == hooks_before
    assert ATTENTION_BACKENDS["heal"] is factory
    for lst in (sa.ATTENTION_BACKEND_CHOICES, sa.DETERMINISTIC_ATTENTION_BACKEND_CHOICES,
                sa.RADIX_SUPPORTED_DETERMINISTIC_ATTENTION_BACKEND):
        assert lst.count("heal") == 1
    assert sa.QUANTIZATION_CHOICES.count("heal") == 1 and sa.QUANTIZATION_CHOICES.count("layercast") == 1


def test_a_missing_hook_is_reported(plugin, monkeypatch):
    from sglang.srt.layers.layernorm import RMSNorm

    from heal_sglang.plugin import report

    monkeypatch.setattr(RMSNorm, "forward_cuda", lambda self, x, *a, **k: x)  # someone overwrote our hook
    missing = [line for ok, line in report() if not ok]
    assert missing == ["hook on sglang.srt.layers.layernorm.RMSNorm.forward_cuda"]


def test_check_command_reports_all_in_place(plugin):
    from heal_sglang import compat
    from heal_sglang.plugin import report

    r = subprocess.run([sys.executable, "-m", "heal_sglang.check"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "MISSING" not in r.stdout
    assert f"[ok] SGLang {compat.sglang_version()} (supported: 0.5.17, 0.5.23)" in r.stdout
    for t in compat.targets():  # every target of the installed release, with the releases it applies to
        assert f"[ok] {t.path} ({', '.join(t.versions)})" in r.stdout
    n = len(compat.report()) + len(report()) + 1  # + the entry point
    assert f"heal_sglang: {n}/{n} in place" in r.stdout


def test_a_wrong_sglang_version_fails_register_by_name(plugin, monkeypatch):
    import sglang

    from heal_sglang.compat import CompatError
    from heal_sglang.plugin import register

    for wrong in ("0.5.16", "0.5.20", "0.5.99"):
        monkeypatch.setattr(sglang, "__version__", wrong)
        with pytest.raises(CompatError, match=rf"supports SGLang 0\.5\.17, 0\.5\.23 .*; SGLang {re.escape(wrong)} "
                                              "is installed"):
            register()


@pytest.mark.parametrize("owner, name", [
    ("sglang.srt.server_args", "add_quantization_method_choices"),
    ("sglang.srt.model_executor.model_runner.ModelRunner", "load_model"),
])
def test_a_missing_sglang_name_fails_register_by_name(plugin, monkeypatch, owner, name):
    import pkgutil

    from heal_sglang.compat import CompatError
    from heal_sglang.plugin import register

    monkeypatch.delattr(pkgutil.resolve_name(owner), name)
    from heal_sglang.compat import sglang_version

    with pytest.raises(CompatError, match=rf"SGLang {re.escape(sglang_version())} has no {owner}\.{name} \("):
        register()


def test_a_changed_signature_fails_register_by_name(plugin, monkeypatch):
    from sglang.srt.layers.rotary_embedding.base import RotaryEmbedding

    from heal_sglang.compat import CompatError
    from heal_sglang.plugin import register

    monkeypatch.setattr(RotaryEmbedding, "forward_cuda", lambda self, positions, query, key, offsets=None: None)
    from heal_sglang.compat import sglang_version

    with pytest.raises(CompatError, match=f"RotaryEmbedding.forward_cuda in SGLang {re.escape(sglang_version())} "
                                          "no longer takes fused_set_kv_buffer_arg"):
        register()


def test_version_range_parsing():
    from heal_sglang import compat

    assert compat.SUPPORTED == ("0.5.17", "0.5.23")
    for v in ("0.5.17", "0.5.17.post1", "0.5.23", "0.5.23rc1", "0.5.23.post2"):
        assert compat.version_ok(v), v
    assert compat.release_of("0.5.23.post2") == "0.5.23" and compat.release_of("0.5.17rc1") == "0.5.17"
    # exact releases, not a range: the ones between and around were never verified
    for v in ("0.5.16", "0.5.18", "0.5.20", "0.5.22", "0.5.24", "0.5.171", "0.5", "0.6.17", "unknown", ""):
        assert not compat.version_ok(v), v


def test_the_argument_rules_hook_where_the_installed_sglang_resolves(plugin):
    """0.5.17: around ServerArgs.__post_init__; 0.5.23: around the first and last resolution steps
    (a hook on 0.5.23's __post_init__ would never run: msgspec binds it when the class is made)."""
    from heal_sglang import compat
    from heal_sglang.plugin import report

    lines = {line for ok, line in report() if ok}
    post_init = "hook on sglang.srt.server_args.ServerArgs.__post_init__"
    steps = {f"resolution hook on {compat.PREPARE_STEP}", f"resolution hook on {compat.VALIDATE_STEP}"}
    if compat.installed() == compat.SGLANG_0517:
        assert post_init in lines and not steps & lines
    else:
        assert steps <= lines and post_init not in lines


def test_a_missing_resolution_hook_is_reported(plugin, monkeypatch):
    from heal_sglang import compat
    from heal_sglang.plugin import report

    if compat.installed() != compat.SGLANG_0523:
        pytest.skip("SGLang 0.5.17 resolves in __post_init__ (test_a_missing_hook_is_reported)")
    registered = compat.lookup(compat.RESOLUTION_HOOKS)
    monkeypatch.setitem(registered, compat.VALIDATE_STEP, [])  # someone dropped our validation
    missing = [line for ok, line in report() if not ok]
    assert missing == [f"resolution hook on {compat.VALIDATE_STEP}"]


@pytest.mark.parametrize("release", ["0.5.17", "0.5.23"])
def test_every_looked_up_name_has_one_target_per_release(release):
    from heal_sglang import compat

    names = {compat.KV_INDICES: ("0.5.17", "0.5.23"), compat.RESOLVED_VIEW: ("0.5.23",),
             compat.GROUP_RANK_SIZE: ("0.5.23",), compat.RECORD_FOREIGN_DEFAULTS: ("0.5.23",),
             compat.RESOLUTION_HOOKS: ("0.5.23",), compat.REGISTER_RESOLUTION_HOOK: ("0.5.23",)}
    for what, releases in names.items():
        found = [t for t in compat.targets(release) if t.what == what]
        assert len(found) == (release in releases), (what, found)
    paths = [t.path for t in compat.targets(release)]
    assert len(paths) == len(set(paths))
    assert ("sglang.srt.server_args.ServerArgs.__post_init__" in paths) == (release == "0.5.17")


def test_a_lookup_never_returns_none(plugin, monkeypatch):
    import sglang

    from heal_sglang import compat

    with pytest.raises(compat.CompatError, match="0 targets for 'no such name'"):
        compat.lookup("no such name")
    monkeypatch.setattr(sglang, "__version__", "0.5.20")
    with pytest.raises(compat.CompatError, match=r"SGLang 0\.5\.20 is installed"):
        compat.lookup(compat.KV_INDICES)
