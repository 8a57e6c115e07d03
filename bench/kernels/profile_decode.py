"""GPU: resource report (registers, spills, shared memory) of the decode attention kernel, and one
decode launch for Nsight Compute:

    python -m bench.kernels.profile_decode
    ncu --clock-control none -k regex:_decode_kernel -c 1 --section SpeedOfLight \\
        --section WarpStateStats python -m bench.kernels.profile_decode --once
"""

from __future__ import annotations

import sys

import torch

from bench.kernels.probe_attention import decode_case
from heal_kernels._kernels.attention import _decode_kernel


def main():
    call, _ = decode_case()
    call()
    torch.cuda.synchronize()
    if "--once" in sys.argv:
        return
    for dev_cache in _decode_kernel.device_caches.values():
        for k in dev_cache[0].values():
            k._init_handles()
            print("regs", k.n_regs, "spills", k.n_spills, "shared", k.metadata.shared, "warps", k.metadata.num_warps)


if __name__ == "__main__":
    main()
