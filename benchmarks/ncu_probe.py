"""Two launches each of the M=1 and the M=16 int4 linear at 8192 x 8192 (bf16, the configs select_config
picks), for Nsight Compute on a GPU machine (the device machines have ``/usr/local/cuda/bin/ncu``):

    ncu -k regex:gemv --launch-count 1 --section WarpStateStats --section Occupancy --section SchedulerStats \
        python benchmarks/ncu_probe.py
    ncu -k regex:gemm --launch-count 1 --section ... python benchmarks/ncu_probe.py

What it said on the H200 is in ``benchmarks/results/kernel_notes.md`` (occupancy and issue rate).
"""
import torch

from awq_ao.kernels import int4_linear

n = k = 8192
q = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, device="cuda")
s = (torch.rand(n, k // 128, device="cuda") * 0.01 + 1e-3).to(torch.bfloat16)
z = torch.randint(0, 16, (n, k // 128), dtype=torch.uint8, device="cuda")
for m in (1, 16):
    x = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
    for _ in range(2):
        int4_linear(x, q, s, z, 128, k)
torch.cuda.synchronize()
