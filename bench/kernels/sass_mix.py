"""Instruction mix of heal's attention kernel for sm_90, compiled on any machine (no GPU needed).

    python -m bench.kernels.sass_mix [--arch 90]

Compiles the attention kernels (``_decode_kernel``, ``_attn_kernel``) the
way ``attention_decode`` / ``attention_extend`` launch them on an 8B-shaped layer (GROUP 4, head_dim 128,
the shipped launches and a few others), with the
16-byte divisibility the JIT gives pointers and strides at launch (without it every K/V load
is a scalar 16-bit load and the counts mislead), disassembles the cubin with Triton's bundled
``cuobjdump`` and prints its instruction count, that of its largest loop (extend: a split, which holds
the loop over its KV blocks once) and of its block loop (the smallest loop holding MMAs: one KV block
per turn), and the block loop's most frequent opcodes.  A proxy for where a latency-bound kernel
spends its issue slots, to compare code variants before a GPU run; times come from the GPU probes only.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import inspect
import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from heal_kernels import configs
from heal_kernels._kernels.attention import _attn_kernel, _decode_kernel

_PTR = {"q_ptr": "*fp32", "out_ptr": "*fp32", "pm_ptr": "*fp32", "pl_ptr": "*fp32", "pacc_ptr": "*fp32",
        "qo_indptr_ptr": "*i32", "kv_indptr_ptr": "*i32", "idx_ptr": "*i32",
        "kc_ptr": "*i16", "ks_ptr": "*fp32", "vc_ptr": "*i16", "vs_ptr": "*fp32"}
# strides that are not multiples of 16 elements on an 8-kv-head layer (the scales: one per kv head)
_NOT_ALIGNED = ("stride_ss", "stride_ps")


@dataclasses.dataclass(frozen=True)
class Mix:
    total: int  # instructions of the whole kernel
    loop: int  # instructions of its largest loop body
    block: int  # instructions of its smallest loop body holding MMAs (one KV block per turn)
    ops: collections.Counter  # opcodes of the block loop


def compile_attn(launch: configs.AttentionLaunch, *, decode: bool, arch: int = 90, group: int = 4,
                 head_dim: int = 128):
    """The compiled attention kernel for one launch (its constexprs and options as the launchers set them)."""
    numerics = configs.attention_numerics("sm90")
    common = dict(GROUP=group, HEAD_DIM=head_dim, BLOCK_N=numerics.kv_block, SPLIT=numerics.split_tokens,
                  HAS_WINDOW=False, HAS_CAP=False, EXACT=False, PREFETCH=launch.prefetch)
    if decode:
        fn, const = _decode_kernel, dict(common, ROWS=configs.decode_rows(group), D_PARTS=launch.d_parts or 1)
    else:
        fn, const = _attn_kernel, dict(common, BLOCK_M=configs.extend_block_m(launch.rows, group),
                                       HALVES=launch.halves)
    params = list(inspect.signature(fn.fn).parameters)
    sig = {}
    for p in params:
        if p in const:
            sig[p] = "constexpr"
        elif p in _PTR:
            sig[p] = _PTR[p]
        else:
            sig[p] = "fp32" if p in ("sm_scale", "cap") else "i32"
    aligned = [p for p in params if sig[p].startswith("*") or (p.startswith("stride") and p not in _NOT_ALIGNED)]
    src = ASTSource(fn=fn, signature=sig,
                    constexprs={(params.index(k),): v for k, v in const.items()},
                    attrs={(params.index(p),): [["tt.divisibility", 16]] for p in aligned})
    opts = {"num_warps": launch.num_warps, "num_stages": launch.num_stages, "enable_fp_fusion": False}
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=opts)


def sass(kernel) -> list[tuple[int, str]]:
    """(address, instruction) of the kernel's SASS, from Triton's bundled cuobjdump."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        with open(path, "wb") as f:
            f.write(kernel.asm["cubin"])
        text = subprocess.run([tool, "-sass", path], capture_output=True, text=True, check=True).stdout
    out = []
    for line in text.splitlines():
        m = re.match(r"\s+/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", line)
        if m:
            out.append((int(m.group(1), 16), m.group(2)))
    return out


def mix(kernel) -> Mix:
    """The kernel's size, its largest loop and its block loop (loops: backward branches' spans), the
    block loop by opcode."""
    ins = sass(kernel)
    index = {a: i for i, (a, _) in enumerate(ins)}
    loops: list[list[str]] = []
    for i, (a, text) in enumerate(ins):
        m = re.search(r"BRA\b.*?0x([0-9a-f]+)", text)
        if m and int(m.group(1), 16) < a and int(m.group(1), 16) in index:
            loops.append([t for _, t in ins[index[int(m.group(1), 16)]:i + 1]])
    largest = max(loops, key=len, default=[])
    block = min((lp for lp in loops if any("MMA" in t for t in lp)), key=len, default=[])
    ops = collections.Counter(re.sub(r"^@!?U?P\w+\s+", "", t).split()[0] for t in block)
    return Mix(len(ins), len(largest), len(block), ops)


def launches() -> list[tuple[str, configs.AttentionLaunch, bool]]:
    b16 = configs.attention_decode_launch("sm90", 16, 8, 128)
    return [
        ("decode, batch 1 (shipped)", configs.attention_decode_launch("sm90", 1, 8, 128), True),
        ("decode, batch 16 (shipped)", b16, True),
        ("decode, batch 16, one warp, no prefetch", dataclasses.replace(b16, num_warps=1, prefetch=False), True),
        ("extend (shipped)", configs.attention_launch("sm90", "extend"), False),
    ]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, default=90)
    a = ap.parse_args(argv)
    for label, launch, decode in launches():
        m = mix(compile_attn(launch, decode=decode, arch=a.arch))
        mma = collections.Counter()
        for op, c in m.ops.items():
            if "MMA" in op:
                mma[op.split(".")[0]] += c
        top = ", ".join(f"{op} {c}" for op, c in m.ops.most_common(10))
        kinds = ", ".join(f"{op} {c}" for op, c in sorted(mma.items()))
        print(f"{label}: {m.total} instructions, largest loop {m.loop}, block loop {m.block} (MMA: {kinds}) | {top}",
              flush=True)


if __name__ == "__main__":
    main()
