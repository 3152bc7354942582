"""fp32 and bf16 matmul speed on this CPU, as it is and restricted to AVX2 kernels.

On a CPU without AVX512-BF16/AMX, bf16 matmuls are emulated and run far slower than fp32; that is
why no slimbert test or default depends on bf16. Run it twice to see both sides on an AVX-512
machine:

    python benchmarks/matmul_isa.py
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/matmul_isa.py
"""

from __future__ import annotations

import argparse

import torch
import torch.utils.benchmark as tb

from slimbert.hardware import detect_machine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=1024, help="n of the n x n x n product (default: 1024)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = args.size
    print(detect_machine().line())
    speeds = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        timer = tb.Timer("a @ b", globals={"a": a, "b": b}, num_threads=args.threads)
        speeds[dtype] = 2 * n ** 3 / timer.blocked_autorange(min_run_time=2).median / 1e9
        print(f"{str(dtype).replace('torch.', ''):>9}: {speeds[dtype]:7.1f} GFLOP/s")
    print(f"bf16 / fp32: {speeds[torch.bfloat16] / speeds[torch.float32]:.3f}x")


if __name__ == "__main__":
    main()
