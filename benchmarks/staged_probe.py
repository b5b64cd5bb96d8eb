"""The staged GEMV (``kernels/int4_gemv_staged.py``) against the picks and bf16, on a GPU (sm_90), in one short run:

    python benchmarks/staged_probe.py --out DIR          # the three goal shapes at M = 1 and 2

For each goal shape and M: bf16 ``F.linear`` and the shipped pick (``bench_kernels.bench_shape``, the timing
table's own numbers), then a grid of staged configs wider than the tuner's candidates (BLOCK_N, warps,
prefetch, register cap, split), each checked against the dense fp32 reference and timed as the tuner times
(``configs.time_configs``: CUDA graph over weight copies from HBM). Writes ``staged_probe_<gpu>.md`` (a table
per shape: us and the ratio to bf16 and to the pick) as it goes.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import awq_ao  # noqa: E402,F401
from awq_ao.kernels import KernelConfig, configs, int4_gemv_staged, int4_wgmma  # noqa: E402

GOAL_SHAPES = [(8192, 8192), (14336, 4096), (4096, 14336)]
# (BLOCK_N, warps, prefetch, max_registers) at one activation row; (BLOCK_N, warps) at two. The caps are the
# lowest without spills in sm_90 SASS (Triton 3.6 and 3.9, kernel_notes.md thirteenth session)
GRID_M1 = [(64, 2, 0, 0), (64, 4, 0, 0), (64, 4, 0, 64), (64, 2, 1, 0), (64, 4, 1, 0), (128, 4, 0, 0), (64, 8, 0, 0),
           (32, 1, 0, 0), (32, 2, 0, 0), (32, 2, 0, 64)]
GRID_M2 = [(64, 4), (64, 2), (32, 2)]


def grid(m: int, n: int, k_pad: int, device: torch.device) -> list[KernelConfig]:
    """The staged configs tried for this shape (fitted, distinct): each tile at the tuner's split, half and
    twice it."""
    k_tiles = k_pad // int4_gemv_staged.BLOCK_K
    out = []
    for block_n, warps, prefetch, cap in (GRID_M1 if m == 1 else [(b, w, 0, 0) for b, w in GRID_M2]):
        split = configs._split_for(n // block_n, k_tiles, device, per_sm=max(1, 12 // warps))
        for s in (max(1, split // 2), split, 2 * split):
            cfg = KernelConfig("staged", block_n, int4_gemv_staged.BLOCK_K, split_k=s, block_m=m, num_warps=warps,
                               prefetch=prefetch, max_registers=cap).fitted(128, k_pad)
            if cfg.kind == "staged" and cfg not in out:
                out.append(cfg)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=".", help="folder for staged_probe_<gpu>.md")
    parser.add_argument("--m", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    import bench_kernels
    from awq_ao.kernels.timing import l2_bytes

    device = torch.device("cuda")
    if not int4_wgmma.wgmma_available(device):
        print("error: the staged GEMV runs on sm_90 with Gluon only (int4_wgmma.wgmma_available is False here)")
        return 2
    name = torch.cuda.get_device_name().replace(" ", "_").lower()
    path = os.path.join(args.out, f"staged_probe_{name}.md")
    lines = [f"# Staged GEMV probe on {torch.cuda.get_device_name()}",
             "", "`python benchmarks/staged_probe.py`; us per call from HBM, CUDA graph, median of 10 replays.", ""]
    for m in args.m:
        for n, k in GOAL_SHAPES:
            base = bench_kernels.bench_shape(n, k, m, l2_bytes())
            pick = configs.select_config(m, n, k, 128, device)
            lines += [f"## M = {m}, N = {n}, K = {k}", "",
                      f"bf16 {base['bf16'] * 1e3:.1f} us; pick {pick}: {base['awq_ao'] * 1e3:.1f} us "
                      f"({base['bf16'] / base['awq_ao']:.2f}x bf16)", "",
                      "| config | us | x bf16 | x pick |", "| --- | ---: | ---: | ---: |"]
            for cfg, ms in configs.time_configs(m, n, k, 128, grid(m, n, k, device), verbose=True):
                label = (f"BLOCK_N {cfg.block_n}, {cfg.num_warps} warps, prefetch {cfg.prefetch}, split {cfg.split_k}"
                         + (f", cap {cfg.max_registers} registers" if cfg.max_registers else ""))
                lines.append(f"| {label} | failed | | |" if ms is None else
                             f"| {label} | {ms * 1e3:.1f} | {base['bf16'] / ms:.2f} | {base['awq_ao'] / ms:.2f} |")
            lines.append("")
            with open(path, "w") as f:
                f.write("\n".join(lines) + "\n")
            print("\n".join(lines[-20:]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
