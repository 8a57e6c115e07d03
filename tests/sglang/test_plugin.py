"""Registration through SGLang's plugin loader: complete, verified and idempotent."""

import subprocess
import sys
from importlib.metadata import entry_points


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

    from heal_sglang.plugin import _hooks, register

    hooks_before = {t: len(HookRegistry._hooks[t]) for t, _, _ in _hooks()}
    factory = ATTENTION_BACKENDS["heal"]
    register()
    register()
    assert {t: len(HookRegistry._hooks[t]) for t, _, _ in _hooks()} == hooks_before
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
    from heal_sglang.plugin import report

    r = subprocess.run([sys.executable, "-m", "heal_sglang.check"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "MISSING" not in r.stdout
    n = len(report()) + 1  # + the entry point
    assert f"heal_sglang: {n}/{n} in place" in r.stdout
