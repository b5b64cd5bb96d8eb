"""The one reference for awq_ao's quantization math.

Group-wise quantization of a weight ``w`` of shape ``[N, K]`` (out, in) along
its input dimension, AWQ's convention (llm-awq ``pseudo_quantize_tensor``):

* asymmetric (``zero_point=True``), per group of ``group_size`` input channels::

      s = clamp(max - min, 1e-5) / (2**bits - 1)
      z = clamp(round(-min / s), 0, 2**bits - 1)
      q = clamp(round(w / s) + z, 0, 2**bits - 1)
      w ~= (q - z) * s

* symmetric (``zero_point=False``): ``s = clamp(max|w|, 1e-5) / (2**(bits-1) - 1)``
  and ``q_signed = clamp(round(w / s), -2**(bits-1), 2**(bits-1) - 1)``; it is
  stored as ``q = q_signed + 2**(bits-1)`` with ``z = 2**(bits-1)``, so both
  variants dequantize with the same ``(q - z) * s``.

A clip ratio ``r`` (a float, or a tensor broadcastable to ``[N, n_groups]``)
clamps each group to ``[-r * max|w|, r * max|w|]`` before min and max are taken.

``K`` need not be a multiple of ``group_size``: the weight is padded to
``K_pad = ceil(K / group_size) * group_size``; the padding takes no part in any
min/max and is stored as ``q = z`` (it dequantizes to exactly 0).

Scales are computed in fp32, rounded once to ``scale_dtype`` and the integer
codes are computed against the rounded scale, so ``dequantize`` reproduces
exactly what the codes were chosen for.

Storage: codes are uint8 in ``[0, 15]`` (bits 2, 3 and 4 all use a 4-bit
container); ``pack_int4`` puts column ``2j`` in the low nibble and ``2j + 1`` in
the high nibble of byte ``j``.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch

SUPPORTED_BITS = (2, 3, 4)
MIN_GROUP_SIZE = 8
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_bits_and_group_size(bits: int, group_size: int) -> None:
    """Raise ValueError naming the argument when bits or group_size is unsupported.

    bits must be one of 2, 3, 4; group_size a power of two >= 8 (smaller groups
    spend more memory on scales than on the weights themselves).
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got bits={bits!r}")
    if (
        isinstance(group_size, bool)
        or not isinstance(group_size, int)
        or group_size < MIN_GROUP_SIZE
        or group_size & (group_size - 1) != 0
    ):
        raise ValueError(
            f"group_size must be a power of two >= {MIN_GROUP_SIZE}, got group_size={group_size!r}"
        )


def check_weight(w: torch.Tensor, name: str = "weight") -> None:
    """Raise ValueError unless ``w`` is a finite 2-D floating-point tensor."""
    if not isinstance(w, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(w).__name__}")
    if w.ndim != 2:
        raise ValueError(f"{name} must be 2-D [out_features, in_features], got shape {tuple(w.shape)}")
    if w.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float32, float16 or bfloat16, got {w.dtype}")
    if w.numel() and not torch.isfinite(w).all():
        raise ValueError(f"{name} holds NaN or inf values; refusing to quantize it")


def padded_in_features(in_features: int, group_size: int) -> int:
    """``in_features`` rounded up to a multiple of ``group_size``."""
    return math.ceil(in_features / group_size) * group_size


def qmax(bits: int) -> int:
    """Largest unsigned code, ``2**bits - 1``."""
    return 2**bits - 1


def _grouped(w: torch.Tensor, group_size: int, fill: float) -> torch.Tensor:
    """[N, K] -> [N, n_groups, group_size] fp32, padding the tail with ``fill``."""
    n, k = w.shape
    k_pad = padded_in_features(k, group_size)
    w = w.float()
    if k_pad != k:
        w = torch.nn.functional.pad(w, (0, k_pad - k), value=fill)
    return w.view(n, k_pad // group_size, group_size)


def choose_qparams(
    w: torch.Tensor,
    bits: int = 4,
    group_size: int = 128,
    zero_point: bool = True,
    clip_ratio: Optional[Union[float, torch.Tensor]] = None,
    scale_dtype: Optional[torch.dtype] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scales and zero points for ``w`` [N, K].

    ``clip_ratio`` (float, or [N, n_groups]) caps each group's range at that
    fraction of its max |w| on both sides; [N, n_groups, 2] gives the low and
    the high side their own fractions.
    Returns ``scale`` [N, n_groups] in ``scale_dtype`` (default: ``w.dtype``) and
    ``zero_point`` [N, n_groups] uint8.
    """
    check_bits_and_group_size(bits, group_size)
    check_weight(w)
    scale_dtype = w.dtype if scale_dtype is None else scale_dtype
    grouped_max = _grouped(w, group_size, -math.inf).amax(dim=-1)
    grouped_min = _grouped(w, group_size, math.inf).amin(dim=-1)
    if clip_ratio is not None:
        ratio = _as_ratio(clip_ratio, w)
        low, high = (ratio[..., 0], ratio[..., 1]) if ratio.dim() == 3 else (ratio, ratio)
        absmax = torch.maximum(grouped_max.abs(), grouped_min.abs())
        grouped_max = torch.minimum(grouped_max, absmax * high)
        grouped_min = torch.maximum(grouped_min, -absmax * low)
    if zero_point:
        scale = (grouped_max - grouped_min).clamp(min=1e-5) / qmax(bits)
    else:
        absmax = torch.maximum(grouped_max.abs(), grouped_min.abs())
        scale = absmax.clamp(min=1e-5) / (2 ** (bits - 1) - 1)
    scale = _round_scale(scale, scale_dtype)
    if zero_point:
        zero = torch.round(-grouped_min / scale.float()).clamp(0, qmax(bits))
    else:
        zero = torch.full_like(scale, 2 ** (bits - 1), dtype=torch.float32)
    return scale, zero.to(torch.uint8)


def _as_ratio(clip_ratio: Union[float, torch.Tensor], w: torch.Tensor) -> torch.Tensor:
    ratio = torch.as_tensor(clip_ratio, dtype=torch.float32, device=w.device)
    if not torch.isfinite(ratio).all() or (ratio <= 0).any():
        raise ValueError("clip_ratio must be finite and > 0")
    return ratio


def _round_scale(scale: torch.Tensor, scale_dtype: torch.dtype) -> torch.Tensor:
    """Round fp32 scales to their storage dtype, refusing overflow."""
    if scale_dtype not in FLOAT_DTYPES:
        raise ValueError(f"scale_dtype must be a float dtype, got {scale_dtype}")
    rounded = scale.to(scale_dtype)
    if not torch.isfinite(rounded).all():
        raise ValueError(
            f"weight range too large for {scale_dtype} scales (max scale {scale.max().item():.3g})"
        )
    # a scale that underflows to 0 would divide by zero: keep the smallest positive value
    tiny = torch.finfo(scale_dtype).tiny
    return rounded.clamp(min=tiny)


def quantize_with_qparams(
    w: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    bits: int,
    group_size: int,
) -> torch.Tensor:
    """Codes ``q`` uint8 [N, K_pad] for ``w`` [N, K] under given qparams.

    Padding columns get ``q = z`` so they dequantize to exactly 0.
    """
    n, k = w.shape
    grouped = _grouped(w, group_size, 0.0)
    s = scale.float().unsqueeze(-1)
    z = zero_point.float().unsqueeze(-1)
    q = (torch.round(grouped / s) + z).clamp(0, qmax(bits)).view(n, -1)
    k_pad = q.shape[1]
    if k_pad != k:
        pad_codes = zero_point.float().repeat_interleave(group_size, dim=1)[:, k:]
        q[:, k:] = pad_codes
    return q.to(torch.uint8)


def quantize(
    w: torch.Tensor,
    bits: int = 4,
    group_size: int = 128,
    zero_point: bool = True,
    clip_ratio: Optional[Union[float, torch.Tensor]] = None,
    scale_dtype: Optional[torch.dtype] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize ``w`` [N, K] group-wise.

    Returns ``(q, scale, zero_point)``: q uint8 [N, K_pad] (unpacked codes),
    scale [N, n_groups] in ``scale_dtype`` (default ``w.dtype``), zero_point
    uint8 [N, n_groups].
    """
    scale, zero = choose_qparams(w, bits, group_size, zero_point, clip_ratio, scale_dtype)
    return quantize_with_qparams(w, scale, zero, bits, group_size), scale, zero


def dequantize(
    q: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    group_size: int,
    in_features: Optional[int] = None,
    dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """``(q - z) * s``, cut to ``in_features`` columns, in ``dtype``.

    q: uint8 [N, K_pad] codes; scale, zero_point: [N, K_pad / group_size].
    Returns [N, in_features] in ``dtype`` (default ``scale.dtype``).

    ``q - z`` is an exact small integer and its product with a bf16 / fp16 /
    fp32 scale is exact in fp32, so computing in ``scale.dtype`` (one rounding)
    gives bit-for-bit the fp32 result rounded to that dtype, and is faster.
    """
    n, k_pad = q.shape
    in_features = k_pad if in_features is None else in_features
    dtype = scale.dtype if dtype is None else dtype
    codes = q.view(torch.int8).reshape(n, k_pad // group_size, group_size)
    diff = codes - zero_point.view(torch.int8).unsqueeze(-1)
    if dtype == scale.dtype:
        w = diff * scale.unsqueeze(-1)
    else:
        w = (diff.float() * scale.float().unsqueeze(-1)).to(dtype)
    w = w.view(n, k_pad)
    return w if in_features == k_pad else w[:, :in_features]


def fake_quantize(
    w: torch.Tensor,
    bits: int = 4,
    group_size: int = 128,
    zero_point: bool = True,
    clip_ratio: Optional[Union[float, torch.Tensor]] = None,
    scale_dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """Quantize then dequantize ``w`` [N, K]; returns [N, K] in ``w.dtype``."""
    q, scale, zero = quantize(w, bits, group_size, zero_point, clip_ratio, scale_dtype)
    return dequantize(q, scale, zero, group_size, w.shape[1], w.dtype)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Pack uint8 codes [N, K] (K even, values < 16) into uint8 [N, K / 2].

    Byte j holds column 2j in its low nibble and column 2j + 1 in its high nibble.
    """
    if q.dtype != torch.uint8 or q.ndim != 2 or q.shape[1] % 2:
        raise ValueError(f"pack_int4 takes uint8 [N, even K], got {q.dtype} {tuple(q.shape)}")
    return q[:, 0::2] | (q[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of ``pack_int4``: uint8 [N, K / 2] -> uint8 [N, K]."""
    if packed.dtype != torch.uint8 or packed.ndim != 2:
        raise ValueError(f"unpack_int4 takes uint8 [N, K/2], got {packed.dtype} {tuple(packed.shape)}")
    low = packed & 0x0F
    high = packed >> 4
    return torch.stack([low, high], dim=-1).view(packed.shape[0], -1)
