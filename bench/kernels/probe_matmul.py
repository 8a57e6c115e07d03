"""GPU probe behind the choice of heal_matmul's numerics (configs.MatmulNumerics).

For each K tile: error vs float64 (normal and heavy-tailed
activations, M = 1, 16, 4096, K = 4096) next to torch FP32 and BF16, and the time of a
4096^3 product (CUDA-graph replay, median).

    python -m bench.kernels.probe_matmul        (GPU machine)
"""

from __future__ import annotations

import torch
import triton.testing

from bench.timing import capture
from heal_kernels import configs, reference
from heal_kernels.matmul import heal_matmul, prepare_weight

ERR_TILES = configs.MatmulTiles(64, 64, 4, 2)  # fits every K tile tried here


def main():
    torch.manual_seed(0)
    k = 4096
    hw = prepare_weight((torch.randn(4096, k, device="cuda") * 0.02).bfloat16())
    print("errors vs float64 (relative Frobenius norm)")
    for m in (1, 16, 4096):
        for kind in ("normal", "heavy"):
            x = torch.randn(m, k, device="cuda") if kind == "normal" else reference.heavy_tailed_activations(
                m, k, device="cuda")
            ref = reference.matmul_ref(x, hw)
            row = [f"fp32={reference.rel_err(reference.matmul_ref(x, hw, dtype=torch.float32), ref):.2e}",
                   f"bf16={reference.rel_err(reference.matmul_ref(x, hw, dtype=torch.bfloat16), ref):.2e}"]
            for bk in (32, 64, 128):
                out = heal_matmul(x, hw, numerics=configs.MatmulNumerics(bk), tiles=ERR_TILES)
                row.append(f"heal-bk{bk}={reference.rel_err(out, ref):.2e}")
            print(f"M{m} {kind}: " + " ".join(row), flush=True)
    print("\n4096^3 time (us), pinned tiles")
    x = torch.randn(4096, k, device="cuda")
    for bk in (32, 64):
        nm = configs.MatmulNumerics(bk)
        g = capture(lambda: heal_matmul(x, hw, numerics=nm), 5)
        print(f"heal-bk{bk}: {triton.testing.do_bench(g.replay, return_mode='median') * 1e3 / 5:.1f}")


if __name__ == "__main__":
    main()
