"""Offline (no GPU) compile of heal_matmul's warp-specialized Gluon kernel for sm_90: per launch, its
HGMMA and tensor-core wait counts, CTA-wide barriers, shared memory and ptxas's register / spill report
and wgmma serialization warnings (ptxas C7510 / C7515).

    python -m bench.kernels.sass_matmul_ws
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import torch
import triton
from triton.backends.compiler import BaseBackend, GPUTarget

from bench.kernels.sass_mix import sass
from heal_kernels import configs


@dataclass(frozen=True)
class WsSass:
    hgmma: int
    waits: int
    shared: int
    ptxas: str  # ptxas -v's register and spill lines, and any wgmma serialization warning


def compile_ws(ws: configs.MatmulWs, *, shards: int = 1, has_bias: bool = True):
    from triton._C.libtriton import native_specialize_impl
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon._runtime import GluonASTSource
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    from heal_kernels._kernels.matmul_ws import _heal_matmul_ws_kernel

    def desc(block):
        t = torch.zeros(4096, 4096, dtype=torch.float16)
        lay = gl.NVMMASharedLayout.get_default_for(block, gl.float16)
        return native_specialize_impl(BaseBackend, TensorDescriptor(t, list(t.shape), list(t.stride()), block, lay),
                                      False, True, True)[0]

    params = list(inspect.signature(_heal_matmul_ws_kernel.fn).parameters)
    const = dict(HAS_BIAS=has_bias, SHARDS=shards, GROUP_M=ws.group_m, STAGES=ws.stages,
                 CONSUMER_REGS=ws.consumer_regs, N_PARTS=ws.n_parts, CONSUMERS=ws.consumers,
                 SHARD_GRID=ws.shard_grid and shards > 1, num_warps=4)
    sig = {p: "constexpr" if p in const else desc([64, 64]) if p in ("hi_desc", "lo_desc")
           else desc([ws.block_n, 64]) if p == "w_desc" else "*fp32" if p.endswith("_ptr") else "i32" for p in params}
    aligned = [p for p in params if p.endswith("_ptr") or p in ("N", "stride_tm", "stride_om")]  # as the JIT sees them
    src = GluonASTSource(_heal_matmul_ws_kernel, sig, constexprs={(params.index(k),): v for k, v in const.items()},
                         attrs={(params.index(p),): [["tt.divisibility", 16]] for p in aligned})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "num_stages": 1})


def _ptxas(kernel) -> str:
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.ptx")
        with open(path, "w") as f:
            f.write(kernel.asm["ptx"])
        res = subprocess.run([tool, "-arch=sm_90a", "-v", path, "-o", os.path.join(d, "k.cubin")],
                             capture_output=True, text=True, check=True)
    keep = [ln.split("ptxas info    : ")[-1].strip() for ln in res.stderr.splitlines()
            if "C75" in ln or "Used" in ln or "spill" in ln]
    return " | ".join(keep)


def inspect_ws(ws: configs.MatmulWs, *, shards: int = 1) -> WsSass:
    k = compile_ws(ws, shards=shards)
    ops = [t.split()[0] for _, t in sass(k)]
    return WsSass(hgmma=sum(o.startswith("HGMMA") for o in ops),
                  waits=sum(o.startswith("WARPGROUP.DEPBAR") for o in ops), shared=k.metadata.shared, ptxas=_ptxas(k))


def main(argv=None) -> None:
    """One line per shard count; --json: one JSON object per line (for tests); --grid: the one-consumer
    launch with its two shards in separate programs (MatmulWs.shard_grid) instead."""
    args = sys.argv[1:] if argv is None else argv
    as_json = "--json" in args
    ws = dataclasses.replace(configs.WS_ONE_64, shard_grid=True) if "--grid" in args else configs.WS_LAUNCH
    if not triton.__version__.startswith(configs.WS_TRITON):
        raise SystemExit(f"triton {triton.__version__}: the Gluon launch is only used with triton {configs.WS_TRITON}x")
    for shards in (1, 2):
        r = inspect_ws(ws, shards=shards)
        if as_json:
            print(json.dumps(dict(shards=shards, **dataclasses.asdict(r))), flush=True)
        else:
            print(f"{ws} shards {shards}: HGMMA {r.hgmma}, waits {r.waits}, shared {r.shared} B | {r.ptxas}",
                  flush=True)


if __name__ == "__main__":
    main()
