"""Host time of heal's launchers with the GPU taken out: a CPU proxy for eager (graph-less) decode.

    python -m bench.kernels.host_dispatch [--calls 2000] [--profile OP]

With CUDA graphs off, a decode step at batch 1 is host time: Python in heal's launchers and in Triton's
dispatch (argument binding, specialisation, cache key, launch).  This tool measures that host code on a
machine without a GPU: the kernels are compiled for sm_90 as on an H100 (Triton's bundled ptxas) and
Triton's driver is replaced by one whose launch does nothing (``driver.set_active``), so everything up
to the CUDA launch call runs for real on CPU tensors, and nothing after it.  The ops and sizes are those
of ``bench.kernels.eager_overhead`` (the GPU's own table), one Llama-3-8B decode layer at batch 1.

It is a proxy: the GPU hosts run Python 3-4x slower than this kind of CPU (a torch ``x + 1``: 8.7-13.2 us
there, ~3 us here), and the CUDA launch itself (~5 us) is not in it.  Use it to compare host code
paths on one machine; GPU figures come from ``eager_overhead`` and the end-to-end suite.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import importlib
import json
import os
import pstats
import time

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    raise SystemExit("host_dispatch times Triton's compiled-kernel dispatch: unset TRITON_INTERPRET")

import torch  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime.driver import driver  # noqa: E402

_ARCH = "sm90"


class _Utils:
    def load_binary(self, name, kernel, shared, device):
        # The "function handle" names the binary, so that recorded launches say which kernel ran.
        function = f"{name}:{hashlib.sha256(kernel).hexdigest()[:16]}"
        return 0, function, 0, 0, 1024  # module, function, n_regs, n_spills, max threads per block

    def get_device_properties(self, device):
        return {"max_shared_mem": 232448, "multiprocessor_count": 132, "max_num_regs": 65536, "warpSize": 32}


class _Launcher:
    """CudaLauncher's Python part (scratch allocation) with a launch that does nothing."""

    record: list | None = None  # when a list, each launch appends (grid, function, packed metadata, kernel args)

    def __init__(self, src, metadata):
        self.global_scratch_size = metadata.global_scratch_size
        self.profile_scratch_size = metadata.profile_scratch_size

    def __call__(self, grid_x, grid_y, grid_z, stream, function, *args):
        if self.global_scratch_size or self.profile_scratch_size:
            raise RuntimeError("scratch allocation is not modelled")
        # args: packed metadata, launch metadata, enter hook, exit hook, then the kernel's arguments; the
        # hooks are called with the launch metadata around the launch, as Triton's C launcher does
        if args[2] is not None:
            args[2](args[1])
        if _Launcher.record is not None:
            _Launcher.record.append(((grid_x, grid_y, grid_z), stream, function, args[0], args[4:]))
        if args[3] is not None:
            args[3](args[1])


class StubDriver:
    """Triton driver for a CUDA device that is not there: device 0, stream 0, sm_90, launches dropped."""

    launcher_cls = _Launcher

    def __init__(self):
        self.utils = _Utils()

    def is_active(self):
        return True

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def set_current_device(self, device):
        pass

    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)

    def get_device_capability(self, device=None):
        return (9, 0)

    def get_active_torch_device(self):
        return torch.device("cpu")

    def get_device_interface(self):
        return torch.cuda

    def get_benchmarker(self):
        raise RuntimeError("no benchmarking without a GPU")


def install() -> None:
    """Stub driver active, and heal's launchers configured as on an H100 (their arch key is sm90)."""
    from heal_kernels import _runtime

    driver.set_active(StubDriver())
    # check_tensor refuses CPU tensors unless interpreting; the stub's "GPU" tensors live on the CPU.  The
    # launchers' own is_interpret stays False (this tool refuses to run under the interpreter).
    _runtime.is_interpret = lambda: True
    for name in ("activation", "attention", "kv_int16", "matmul", "norm", "reduce", "rope"):
        mod = importlib.import_module(f"heal_kernels.{name}")
        if getattr(mod, "arch_key", None) is _runtime.arch_key:
            mod.arch_key = lambda device: _ARCH


def ops(m: int = 1):
    """(name, fn) of one 8B decode layer's launches at batch m, as in eager_overhead (CPU tensors); the last
    ones as SGLang's layers call them (the norm and the attention write their output's split, the matmul
    takes it)."""
    from heal_kernels import (
        apply_rotary,
        attention_decode,
        configs,
        heal_matmul,
        new_int16_kv,
        prepare_weight,
        rms_norm,
        silu_and_mul,
        split_tiles,
        store_kv,
    )

    torch.manual_seed(0)
    h, inter, hq, hk, d = 4096, 14336, 32, 8, 128
    x = torch.randn(m, h)
    hw = prepare_weight((torch.randn(256, h) * 0.02).bfloat16())
    tile = configs.matmul_numerics(_ARCH, torch.float16, 256, h).block_k
    xs = split_tiles(x, tile)
    norm_w = torch.ones(h)
    res = torch.randn(m, h)
    gu = torch.randn(m, 2 * inter)
    pos = torch.full((m,), 100)
    cos_sin = torch.randn(8192, d)
    q = torch.randn(m, hq * d)
    k = torch.randn(m, hk * d)
    cache = new_int16_kv(4096, hk, d, torch.device("cpu"))
    loc = torch.arange(m) + 4000
    kv_indptr = torch.arange(0, 100 * m + 1, 100, dtype=torch.int32)
    kv_indices = torch.arange(100 * m, dtype=torch.int32)
    q3 = q.view(m, hq, d)
    k3 = k.view(m, hk, d)
    sfx = "" if m == 1 else f" b{m}"
    rows = [
        ("torch: x + 1", lambda: x + 1),
        ("torch: torch.empty", lambda: torch.empty(m, h)),
        ("heal_matmul", lambda: heal_matmul(x, hw)),
        ("heal_matmul k_shards=2", lambda: heal_matmul(x, hw, k_shards=2)),
        ("rms_norm + residual", lambda: rms_norm(x, norm_w, 1e-5, res)),
        ("silu_and_mul", lambda: silu_and_mul(gu)),
        ("apply_rotary validate=False", lambda: apply_rotary(pos, q, k, cos_sin, d, validate=False)),
        ("store_kv validate=False", lambda: store_kv(cache, loc, k3, k3, validate=False)),
        ("attention_decode validate=False",
         lambda: attention_decode(q3, cache, kv_indptr, kv_indices, sm_scale=0.088, max_seq_len=8192,
                                  validate=False)),
        ("served: rms_norm + residual, split", lambda: rms_norm(x, norm_w, 1e-5, res, split_k=tile)),
        ("served: heal_matmul x_split", lambda: heal_matmul(x, hw, x_split=xs)),
        ("served: silu_and_mul, split", lambda: silu_and_mul(gu, split_k=tile)),
        ("served: attention_decode, split",
         lambda: attention_decode(q3, cache, kv_indptr, kv_indices, sm_scale=0.088, max_seq_len=8192,
                                  validate=False, split_k=tile)),
    ]
    return [(name + sfx, fn) for name, fn in rows]


def host_us(fns: dict, calls: int, rounds: int = 7) -> dict:
    """Host us per call of each fn (by key): the best of `rounds` timed loops, the fns taking turns in every
    round, so that load from other processes on this CPU falls on all of them alike."""
    from heal_kernels._launch import set_fast_launch

    best = {key: float("inf") for key in fns}
    for _ in range(rounds):
        for key, (mode, fn) in fns.items():
            set_fast_launch(mode)
            for _ in range(10):
                fn()
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            best[key] = min(best[key], (time.perf_counter() - t0) / calls * 1e6)
    return best


def _canonical(record: list) -> list:
    """Launches as comparable values, as the kernel sees them: scalars as they are, a tensor as its dtype,
    16-byte alignment, and where it points: which allocation (numbered by first appearance across the call's
    launches, since buffers a launcher allocates differ from call to call while the aliasing between
    arguments does not), the byte offset into it and its size.  A kernel never sees a tensor's shape or
    strides, only its pointer and the ints passed beside it."""
    seen: dict = {}

    def view(a):
        if isinstance(a, torch.Tensor):
            st = a.untyped_storage()
            buf = seen.setdefault(st.data_ptr(), len(seen))
            return ["tensor", str(a.dtype), a.data_ptr() % 16, buf, a.data_ptr() - st.data_ptr(), st.nbytes()]
        if hasattr(a, "base") and hasattr(a, "block_shape"):  # a TMA tensor descriptor (the Gluon matmul)
            return ["descriptor", view(a.base), list(a.shape), list(a.strides), list(a.block_shape),
                    repr(getattr(a, "layout", None))]
        if isinstance(a, (int, float, str, type(None))):
            return a
        raise TypeError(f"launch argument of type {type(a).__name__}: teach _canonical how the kernel sees it")

    return [[list(g), s, f, list(m), [view(a) for a in args]] for g, s, f, m, args in record]


def launches(fn, mode: str) -> tuple[list, int]:
    """The launches one call of fn makes with HEAL_FAST_LAUNCH=mode, after a call that warmed every cache,
    and how many of them went through Triton's dispatch (JITFunction.run)."""
    from triton.runtime.jit import JITFunction

    from heal_kernels._launch import set_fast_launch

    set_fast_launch(mode)
    fn()
    _Launcher.record = []
    through_triton = 0
    run = JITFunction.run

    def counted(self, *args, **kwargs):
        nonlocal through_triton
        through_triton += 1
        return run(self, *args, **kwargs)

    JITFunction.run = counted
    try:
        fn()
        return _canonical(_Launcher.record), through_triton
    finally:
        JITFunction.run = run
        _Launcher.record = None


def _checked_ops() -> list:
    """The heal ops --check and --record cover: every op of ops() at batch 1, 16 and 64 (64: the Gluon matmul)."""
    return [(name, fn) for m in (1, 16, 64) for name, fn in ops(m) if not name.startswith("torch:")]


def check(against: str | None = None) -> int:
    """Each op's launches by the fast path (verify mode) against Triton's own: the same compiled binary,
    metadata, grid, stream and arguments; with ``against``, Triton's launches also against those recorded
    in that file (``--record``) by another version of the launchers.  Returns the number of ops that differ."""
    recorded = json.loads(open(against).read()) if against else {}
    bad = 0
    for name, fn in _checked_ops():
        (theirs, n_theirs), (ours, n_ours) = launches(fn, "0"), launches(fn, "verify")
        same = theirs == ours and len(theirs) > 0
        note = "same" if same else "DIFFER (fast path)"
        if same and (n_theirs != len(theirs) or n_ours):
            same, note = False, f"dispatch: {n_theirs} and {n_ours} of {len(theirs)} launches through Triton"
        if against:
            if recorded.get(name) != json.loads(json.dumps(theirs)):
                same, note = False, f"DIFFER from {against}"
        bad += not same
        print(f"{name:40s} {len(theirs)} launch(es) {note}", flush=True)
    return bad


def check_edges() -> int:
    """The fast path where Triton's dispatch does something besides the launch: a callable grid, launch hooks
    (a registered one is called; None assigned in place of the chain is accepted), a kernel global changed
    after compilation (Triton raises).  Prints one ``edge:`` line each; returns the number that failed."""
    from triton import knobs

    import heal_kernels.attention as attention
    from heal_kernels import _launch

    captured = {}
    real = attention.launch_kernel

    def capture(kernel, grid, *args, **kwargs):
        captured.setdefault("launch", (kernel, grid, args, kwargs))  # the decode kernel: it reads a global
        return real(kernel, grid, *args, **kwargs)

    attention.launch_kernel = capture
    try:
        dict(ops(4))["attention_decode validate=False b4"]()
    finally:
        attention.launch_kernel = real
    kernel, grid, args, kwargs = captured["launch"]
    results = {}

    def recorded(grid, fast: str) -> tuple[list, int]:
        _launch.set_fast_launch(fast)
        return launches(lambda: _launch.launch_kernel(kernel, grid, *args, **kwargs), fast)

    base = recorded(grid, "0")[0]
    results["callable grid"] = recorded(lambda meta: grid, "verify") == (base, 0)
    seen = []
    runtime = knobs.runtime
    runtime.launch_enter_hook.add(seen.append)
    try:
        got = recorded(grid, "verify")
    finally:
        runtime.launch_enter_hook.remove(seen.append)
    results["registered launch hook"] = got == (base, 1) and len(seen) == 2  # the warm-up call and the recorded one
    chain = runtime.launch_enter_hook
    runtime.launch_enter_hook = None
    try:
        results["hook set to None"] = recorded(grid, "verify") == (base, 1)
    finally:
        runtime.launch_enter_hook = chain
    (name, _), (val, globals_dict) = next(iter(kernel.used_global_vals.items()))
    recorded(grid, "verify")  # the fast path's cache holds the kernel now: the next launch takes it
    globals_dict[name] = object()
    try:
        _launch.launch_kernel(kernel, grid, *args, **kwargs)
        results["changed kernel global"] = False
    except RuntimeError as e:
        results["changed kernel global"] = "has changed since we compiled" in str(e)
    finally:
        globals_dict[name] = val
    _launch.set_fast_launch("0")
    for what, ok in results.items():
        print(f"edge: {what:36s} {'ok' if ok else 'FAILED'}", flush=True)
    return sum(not ok for ok in results.values())


def record(path: str) -> None:
    """Write every op's launches through Triton's dispatch, for a later ``--check --against``."""
    out = {name: launches(fn, "0")[0] for name, fn in _checked_ops()}
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"recorded the launches of {len(out)} ops in {path}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=500, help="calls per timed loop (7 loops per op and mode)")
    ap.add_argument("--batch", type=int, default=1, help="rows (tokens, sequences) of the timed ops")
    ap.add_argument("--profile", metavar="OP", help="cProfile this op (a name from the table) instead")
    ap.add_argument("--fast", choices=("0", "1"), default="0", help="HEAL_FAST_LAUNCH for --profile")
    ap.add_argument("--check", action="store_true",
                    help="check that the fast path makes Triton's launches (exit 1 if any differs)")
    ap.add_argument("--against", metavar="FILE", help="with --check: also compare with launches --record wrote")
    ap.add_argument("--record", metavar="FILE", help="write the launches of every op to FILE (JSON)")
    args = ap.parse_args(argv)
    install()
    if args.record:
        record(args.record)
        return
    if args.check:
        raise SystemExit(1 if check(args.against) + check_edges() else 0)
    from heal_kernels._launch import set_fast_launch

    rows = ops(args.batch)
    if args.profile:
        set_fast_launch(args.fast)
        fn = dict(rows)[args.profile]
        fn()
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.calls):
            fn()
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return
    print(f"{'op (host us/call)':36s} {'Triton':>8s} {'fast':>8s} {'saved':>8s}")
    for name, fn in rows:
        t = host_us({"0": ("0", fn), "1": ("1", fn)}, args.calls)
        print(f"{name:36s} {t['0']:8.2f} {t['1']:8.2f} {t['0'] - t['1']:8.2f}", flush=True)


if __name__ == "__main__":
    main()
