"""Accuracy of the CPU int4 kernel path against a float64 truth, per bit width.

    python benchmarks/cpu_kernel_accuracy.py

For random bf16 weights 256x576 (group 64) and 20 random bf16 inputs per bit
width, prints the worst relative L2 error against ``x @ dequantize(W).T`` in
float64 of: the awq_ao op (CPU int4 kernel, centred codes), the same kernel fed
uncentred codes (``zero = (8 - z) * s``, the naive conversion), and a dense bf16
``F.linear`` on the dequantized weight.
"""

import torch
import torch.nn.functional as F

from awq_ao import AWQInt4Tensor, quant


def rel(y, truth):
    return ((y.double() - truth).norm() / truth.norm()).item()


def uncentred(x, qw):
    codes = quant.unpack_int4(qw.qdata).to(torch.int32)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
    s = qw.scale.float()
    sz = torch.stack([s.t(), ((8.0 - qw.zero_point.float()) * s).t()], -1).to(torch.bfloat16).contiguous()
    return torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, qw.group_size, sz)


def main():
    torch.manual_seed(0)
    print("| bits | awq_ao op (centred) | kernel, uncentred codes | dense bf16 on dequantized W |")
    print("|---|---|---|---|")
    for bits in (4, 3, 2):
        worst = [0.0, 0.0, 0.0]
        for _ in range(20):
            qw = AWQInt4Tensor.from_float(torch.randn(256, 576, dtype=torch.bfloat16), bits, 64)
            x = torch.randn(1, 576, dtype=torch.bfloat16)
            truth = x.double() @ qw.dequantize(torch.float64).t()
            errs = [rel(F.linear(x, qw), truth), rel(uncentred(x, qw), truth), rel(F.linear(x, qw.dequantize()), truth)]
            worst = [max(a, b) for a, b in zip(worst, errs)]
        print(f"| {bits} | {worst[0]:.2e} | {worst[1]:.2e} | {worst[2]:.2e} |")


if __name__ == "__main__":
    main()
