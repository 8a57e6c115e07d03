"""Kernel launches with less host time: the compiled kernel Triton chose, called directly after the first time.

Without CUDA graphs (prefill, decode batches above ``--cuda-graph-max-bs``, ``--disable-cuda-graph``)
every launch costs host time, and at small batches that time sets the step.  ``kernel[grid](...)``
spends much of it in Triton's dispatch around the launch itself: knob and driver lookups, a cache key
rebuilt from a formatted string, launch metadata, empty launch-hook chains called twice.

``launch_kernel(kernel, grid, *args, **kwargs)`` is ``kernel[grid](*args, **kwargs)``.  With the fast path on
(``HEAL_FAST_LAUNCH=1``; off by default until its GPU A/B is made) it still binds and specialises the
arguments with Triton's own binder (dtypes, 16-byte alignment of pointers, ints equal to 1 or divisible by
16, int width, constexprs, options), and keys its cache on exactly that specialisation, the options and
the device.  The first launch of a key goes through Triton, which compiles or finds the kernel and
launches it; later launches of the key call that same compiled kernel with the same grid, stream and
arguments.  What the fast path leaves out: launch hooks (it steps aside while any is registered, e.g.
under Proton, or a kernel has pre-run hooks) and the launch metadata only hooks read.  Kernels that are
not plain ``JITFunction``s (autotuners, heuristics) always go through Triton.  No kernel, grid or argument
differs from Triton's path, so no bit can.

``HEAL_FAST_LAUNCH=verify`` also looks each fast launch up in Triton's own cache, by Triton's own key,
and raises if Triton would have launched another kernel: the GPU tests run it that way.

Only Triton versions it was checked against take the fast path (``FAST_LAUNCH_TRITON``); others, and the
interpreter, always go through Triton.
"""

from __future__ import annotations

import os

import triton
from triton import knobs
from triton.compiler import CompiledKernel
from triton.runtime.driver import driver
from triton.runtime.jit import JITFunction

try:
    from triton.knobs import HookChain
except ImportError:  # a Triton without hook chains: never the fast path (set_fast_launch)
    HookChain = None

from heal_kernels._runtime import is_interpret

# Triton versions whose dispatch internals (JITFunction.device_caches and its binder, CompiledKernel.run's
# launcher arguments, knobs.runtime's hook chains) the fast path was checked against.
FAST_LAUNCH_TRITON = ("3.6.",)

_MODES = ("0", "1", "verify")
_MISSING = object()
_mode = "0"  # in force: "0" under the interpreter and on unchecked Triton versions, whatever was asked
_caches: dict = {}


def set_fast_launch(mode: str) -> None:
    """'0' (Triton's dispatch), '1' (fast path) or 'verify' (fast path, each launch checked against Triton's cache)."""
    global _mode
    if mode not in _MODES:
        raise ValueError(f"HEAL_FAST_LAUNCH must be one of {', '.join(_MODES)}, got {mode!r}")
    checked = triton.__version__.startswith(FAST_LAUNCH_TRITON) and HookChain is not None
    _mode = "0" if is_interpret() or not checked else mode
    _caches.clear()


def fast_launch_mode() -> str:
    """The mode in force: '0' where the interpreter runs or Triton's version was not checked."""
    return _mode


def launch_kernel(kernel, grid, *args, **kwargs):
    """``kernel[grid](*args, **kwargs)``, by the fast path where it is on (module docstring)."""
    mode = _mode
    if mode == "0" or not isinstance(kernel, JITFunction):  # an Autotuner, Heuristics, ...: Triton's dispatch
        return kernel[grid](*args, **kwargs)
    runtime = knobs.runtime
    enter, leave = runtime.launch_enter_hook, runtime.launch_exit_hook
    # Hooks set (a chain with calls, or a plain function or None assigned in their place): Triton's path.
    if (type(enter) is not HookChain or type(leave) is not HookChain or enter.calls or leave.calls
            or kernel.pre_run_hooks):
        return kernel[grid](*args, **kwargs)
    # The options exactly as JITFunction.run completes them before it binds.
    kwargs["debug"] = kwargs.get("debug", kernel.debug) or runtime.debug
    kwargs["instrumentation_mode"] = knobs.compilation.instrumentation_mode
    active = driver.active
    device = active.get_current_device()
    binder = kernel.device_caches[device][4]
    bound, spec, options = binder(*args, **kwargs)
    try:
        key = (device, *spec, *options.items())
        # By id (hashing a JITFunction hashes its source key, under a lock), holding the kernel so that
        # the id cannot be reused by another.
        entry = _caches.get(id(kernel))
        if entry is None or entry[0] is not kernel:
            entry = _caches[id(kernel)] = (kernel, {})
        cache = entry[1]
        compiled = cache.get(key)
    except TypeError:  # an unhashable constexpr or option: Triton's path
        return kernel.run(*args, grid=grid, warmup=False, **kwargs)
    if compiled is None:
        compiled = kernel.run(*args, grid=grid, warmup=False, **kwargs)
        if isinstance(compiled, CompiledKernel):  # not an async-compile future
            cache[key] = compiled
        return compiled
    if mode == "verify":
        _verify(kernel, device, spec, options, compiled)
    # Triton's check that the globals the kernel read at compile time are unchanged (a dict lookup each).
    for (name, _), (val, globals_dict) in kernel.used_global_vals.items():
        if globals_dict.get(name, _MISSING) != val:
            return kernel.run(*args, grid=grid, warmup=False, **kwargs)  # Triton raises, naming the global
    if callable(grid):
        grid = grid(bound)
    n = len(grid)
    compiled.run(grid[0], grid[1] if n > 1 else 1, grid[2] if n > 2 else 1, active.get_current_stream(device),
                 compiled.function, compiled.packed_metadata, None, None, None, *bound.values())
    return compiled


def _verify(kernel, device, spec, options, compiled) -> None:
    from triton.runtime.jit import compute_cache_key

    kernel_cache, key_cache = kernel.device_caches[device][:2]
    theirs = kernel_cache.get(compute_cache_key(key_cache, spec, options))
    if theirs is not compiled:
        raise RuntimeError(
            f"HEAL_FAST_LAUNCH=verify: {kernel} would launch {theirs!r} through Triton, not {compiled!r} "
            f"(specialisation {spec}, options {options})"
        )


set_fast_launch(os.environ.get("HEAL_FAST_LAUNCH", "0"))
