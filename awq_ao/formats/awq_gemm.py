"""The AWQ "GEMM" tensor layout (AutoAWQ ``WQLinear_GEMM``, loaded by transformers and vLLM), per linear.

For a linear with ``in_features`` K, ``out_features`` N and group size G:

    qweight  int32   [K, N/8]     eight 4-bit codes per int32, columns in the order [0, 2, 4, 6, 1, 3, 5, 7]:
                                  nibble i (bits 4i..4i+3) of word j holds column 8j + ORDER[i]
    qzeros   int32   [K/G, N/8]   the integer zero points, packed the same way
    scales   float16 [K/G, N]
    w[k, n] = (q[k, n] - z[k // G, n]) * s[k // G, n];  y = x @ w

This module converts one ``AWQInt4Tensor`` to and from these three tensors.
The format cannot carry ``act_pre_scale``, bits other than 4, padding of K,
or N not a multiple of 8: those are refused with the fix named.
"""

from __future__ import annotations

import torch

from awq_ao import quant
from awq_ao.tensor import AWQInt4Tensor

ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def pack_columns(values: torch.Tensor) -> torch.Tensor:
    """[R, N] integer codes 0..15 -> int32 [R, N/8] in AWQ's column order."""
    r, n = values.shape
    v = values.to(torch.int64).view(r, n // 8, 8)
    packed = torch.zeros(r, n // 8, dtype=torch.int64, device=values.device)
    for nibble, column in enumerate(ORDER):
        packed |= v[:, :, column] << (4 * nibble)
    return (packed - ((packed >> 31) << 32)).to(torch.int32)  # reinterpret as signed 32-bit


def unpack_columns(packed: torch.Tensor) -> torch.Tensor:
    """int32 [R, N/8] -> uint8 [R, N] codes, undoing ``pack_columns``."""
    words = packed.to(torch.int64) & 0xFFFFFFFF
    out = torch.empty(*packed.shape, 8, dtype=torch.uint8, device=packed.device)
    for nibble, column in enumerate(ORDER):
        out[:, :, column] = ((words >> (4 * nibble)) & 0xF).to(torch.uint8)
    return out.view(packed.shape[0], -1)


def check_exportable(w: AWQInt4Tensor, name: str) -> None:
    if w.act_pre_scale is not None:
        raise ValueError(f"{name}: the AWQ GEMM format cannot hold act_pre_scale; calibrate with gqa='fold' "
                         "(and per_linear=False) to export")
    if w.bits != 4:
        raise ValueError(f"{name}: the AWQ GEMM format holds 4-bit weights only, this one has bits={w.bits}")
    if w.in_features % w.group_size:
        raise ValueError(f"{name}: group size {w.group_size} does not divide in_features {w.in_features}; "
                         "quantize with a group size that does (e.g. 64 for 576)")
    if w.out_features % 8:
        raise ValueError(f"{name}: out_features {w.out_features} is not a multiple of 8, which the format needs")


def to_awq_gemm(w: AWQInt4Tensor, name: str = "weight") -> dict:
    """``{"qweight", "qzeros", "scales"}`` of one quantized weight [N, K] (scales rounded to fp16)."""
    check_exportable(w, name)
    codes = quant.unpack_int4(w.qdata)[:, : w.in_features]  # [N, K]
    return {
        "qweight": pack_columns(codes.t().contiguous()),
        "qzeros": pack_columns(w.zero_point.t().contiguous()),
        "scales": w.scale.t().contiguous().to(torch.float16),
    }


def from_awq_gemm(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int,
                  dtype: torch.dtype = torch.float16, name: str = "weight") -> AWQInt4Tensor:
    """An ``AWQInt4Tensor`` [N, K] in ``dtype`` from one linear's AWQ GEMM tensors; shapes and dtypes checked."""
    if qweight.dtype != torch.int32 or qzeros.dtype != torch.int32:
        raise ValueError(f"{name}: qweight and qzeros must be int32, got {qweight.dtype} and {qzeros.dtype}")
    k, n = qweight.shape[0], qweight.shape[1] * 8
    if k % group_size:
        raise ValueError(f"{name}: group size {group_size} does not divide in_features {k}")
    groups = k // group_size
    if tuple(qzeros.shape) != (groups, n // 8):
        raise ValueError(f"{name}.qzeros has shape {tuple(qzeros.shape)}, expected {(groups, n // 8)}")
    if tuple(scales.shape) != (groups, n):
        raise ValueError(f"{name}.scales has shape {tuple(scales.shape)}, expected {(groups, n)}")
    if not torch.isfinite(scales).all():
        raise ValueError(f"{name}.scales holds NaN or inf")
    codes = unpack_columns(qweight).t().contiguous()  # [N, K]
    zero = unpack_columns(qzeros).t().contiguous()  # [N, groups]
    return AWQInt4Tensor.from_parts(quant.pack_int4(codes), scales.t().contiguous().to(dtype), zero, 4,
                                    group_size, k)
