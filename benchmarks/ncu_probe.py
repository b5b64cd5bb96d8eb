"""Two launches (``--once``: one) each of the M=1 and the M=16 int4 linear at 8192 x 8192 (bf16, the configs
select_config picks, or the ones given), for Nsight Compute on a GPU machine (the device machines have
``/usr/local/cuda/bin/ncu``):

    ncu -k regex:int4_gemv --launch-count 1 --section WarpStateStats --section Occupancy --section SchedulerStats \
        python benchmarks/ncu_probe.py
    ncu -k regex:int4_gemm --launch-count 1 --section ... python benchmarks/ncu_probe.py
    # (not regex:gemm: it also matches the GEMM's activation launch, _gemm_x_kernel, which runs first)
    # another config, as KernelConfig's fields in JSON (here the GEMV's shared-memory ring at M=1):
    ncu -k regex:int4_gemv ... python benchmarks/ncu_probe.py --m1 '{"kind": "gemv", "block_n": 64, "block_k": 128,
        "num_warps": 1, "num_stages": 3, "split_k": 8}'
    # one profile of each: the M=1 pick and the M=16 one, whichever kernels they are, and between them the
    # staged GEMV (device_check.sh's way)
    ncu -k 'regex:_int4_(gemv|gemm|wgmma|gemv_staged)_kernel' --launch-count 3 ... python benchmarks/ncu_probe.py \
        --once --also-m1 '{"kind": "staged", "block_n": 64, "block_k": 256, "num_warps": 2, "split_k": 8}'

What it said on the H200 is in ``benchmarks/results/kernel_notes.md`` (occupancy and issue rate).
"""
import argparse
import json

import torch

from awq_ao.kernels import KernelConfig, int4_linear

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--m1", default=None, help="the M=1 config, KernelConfig fields as JSON (default: select_config)")
parser.add_argument("--m16", default=None, help="the M=16 config, likewise")
parser.add_argument("--also-m1", default=None,
                    help="one more M=1 config, launched after the first (KernelConfig fields as JSON)")
parser.add_argument("--once", action="store_true", help="one launch of each, M=1 first")
args = parser.parse_args()

n = k = 8192
q = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, device="cuda")
s = (torch.rand(n, k // 128, device="cuda") * 0.01 + 1e-3).to(torch.bfloat16)
z = torch.randint(0, 16, (n, k // 128), dtype=torch.uint8, device="cuda")
runs = [(1, args.m1)] + ([(1, args.also_m1)] if args.also_m1 else []) + [(16, args.m16)]
for m, given in runs:
    x = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
    config = None if given is None else KernelConfig(**json.loads(given))
    for _ in range(1 if args.once else 2):
        int4_linear(x, q, s, z, 128, k, config=config)
torch.cuda.synchronize()
