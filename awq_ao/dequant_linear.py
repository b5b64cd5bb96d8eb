"""``F.linear`` on an int4 weight on CPU, dequantized a block of output rows at a time into reused buffers.

Dequantizing the whole weight first (``quant.dequantize``, the reference) writes a fresh N x K tensor per call:
at 4096 x 4096 in bf16 32 MiB, which the allocator takes from the OS and the first write page-faults in, so
most of the 27-57 ms it took at M = 1 to 512 on 2 cores went to memory that was new, not to arithmetic
(`python benchmarks/bench_cpu_linear.py --crossover`: column "whole-weight dequant+bf16" against this path's
"dequant+bf16", 9-30 ms). Here each block of about
``BLOCK_BYTES`` of dequantized weight is written in place into the same two buffers, in cache, then multiplied;
the values are the reference's bit for bit (``(q - z) * s`` with one rounding to the activation dtype), and each
output element is the same K-long dot product.
"""

from __future__ import annotations

import torch
from torch import Tensor

# dequantized weight per block: in a 32 MiB L3 with the activation and the block's codes beside it
BLOCK_BYTES = 4 << 20
_NIBBLE_SHIFTS = {}  # device -> uint8 tensor [0, 4]: low nibble first, as quant.pack_int4 stores them


def _shifts(device: torch.device) -> Tensor:
    if device not in _NIBBLE_SHIFTS:
        _NIBBLE_SHIFTS[device] = torch.tensor([0, 4], dtype=torch.uint8, device=device)
    return _NIBBLE_SHIFTS[device]


def dequantize_rows_into(qdata: Tensor, scale: Tensor, zero_point: Tensor, group_size: int, codes: Tensor,
                         out: Tensor) -> Tensor:
    """``quant.dequantize(quant.unpack_int4(qdata), scale, zero_point, group_size, dtype=out.dtype)`` written into
    ``out`` without allocating a weight-sized tensor.

    qdata: uint8 [R, K_pad / 2]; scale [R, K_pad / group_size] (bf16 / fp16 / fp32); zero_point uint8, same shape;
    codes: uint8 [R, K_pad] scratch; out: [R, K_pad] in the activation dtype. Returns ``out``.
    """
    rows, k_pad = out.shape
    torch.bitwise_right_shift(qdata.unsqueeze(-1), _shifts(qdata.device), out=codes.view(rows, k_pad // 2, 2))
    codes.bitwise_and_(0x0F)
    diff = codes.view(torch.int8).view(rows, k_pad // group_size, group_size)
    diff.sub_(zero_point.view(torch.int8).unsqueeze(-1))  # q - z: exact small integers
    grouped = out.view(rows, k_pad // group_size, group_size)
    grouped.copy_(diff)
    grouped.mul_(scale.unsqueeze(-1))  # computed in fp32 where the dtypes differ, rounded once to out's dtype
    return out


def blocks_pay(qdata: Tensor, dtype: torch.dtype) -> bool:
    """Whether the dequantized weight (qdata uint8 [N, K_pad / 2] in ``dtype``) is larger than one block; at one
    block or less (SmolLM2's shapes) dequantizing it whole was as fast."""
    return qdata.shape[0] * qdata.shape[1] * 2 * dtype.itemsize > BLOCK_BYTES


def linear_by_row_blocks(x2d: Tensor, qdata: Tensor, scale: Tensor, zero_point: Tensor, group_size: int,
                         in_features: int) -> Tensor:
    """``x2d @ dequantize(W).T``: x2d [M, in_features] -> [M, N] in x2d's dtype (the weight's N x K_pad codes
    dequantized ``rows`` at a time)."""
    n, k_pad = qdata.shape[0], qdata.shape[1] * 2
    rows = max(16, BLOCK_BYTES // (k_pad * x2d.element_size()))
    codes = torch.empty(rows, k_pad, dtype=torch.uint8, device=x2d.device)
    block = torch.empty(rows, k_pad, dtype=x2d.dtype, device=x2d.device)
    y = torch.empty(x2d.shape[0], n, dtype=x2d.dtype, device=x2d.device)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        w = dequantize_rows_into(qdata[start:stop], scale[start:stop], zero_point[start:stop], group_size,
                                 codes[: stop - start], block[: stop - start])
        torch.mm(x2d, w[:, :in_features].t(), out=y[:, start:stop])
    return y
