"""A first correct Triton kernel: ``y = (x * act_pre_scale) @ dequantize(W).T``.

Weight layout is awq_ao's canonical one (see ``awq_ao/quant.py``):
``qdata`` uint8 [N, K_pad / 2] (column 2j in the low nibble of byte j),
``scale`` [N, K_pad / G] in the activation dtype, ``zero_point`` uint8
[N, K_pad / G]. Dequantization ``(q - z) * s`` is fused into a tiled ``tl.dot``
with fp32 accumulation; tails in M, N and K are masked.

This is the correctness baseline; the fast split-K GEMV / autotuned GEMM are a
separate piece of work.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl


@triton.jit
def _int4_linear_kernel(
    x_ptr, q_ptr, s_ptr, z_ptr, pre_ptr, y_ptr,
    M, N, K,
    stride_xm, stride_q, stride_s, stride_ym,
    GROUP_SIZE: tl.constexpr,
    HAS_PRE_SCALE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        x = tl.load(
            x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :],
            mask=mask_m[:, None] & mask_k[None, :], other=0.0,
        ).to(tl.float32)
        if HAS_PRE_SCALE:
            pre = tl.load(pre_ptr + offs_k, mask=mask_k, other=0.0).to(tl.float32)
            x = x * pre[None, :]
        mask_w = mask_n[:, None] & mask_k[None, :]
        byte = tl.load(q_ptr + offs_n[:, None] * stride_q + offs_k[None, :] // 2, mask=mask_w, other=0)
        q = ((byte >> ((offs_k[None, :] % 2) * 4)) & 0xF).to(tl.float32)
        g = offs_k[None, :] // GROUP_SIZE
        s = tl.load(s_ptr + offs_n[:, None] * stride_s + g, mask=mask_w, other=0.0).to(tl.float32)
        z = tl.load(z_ptr + offs_n[:, None] * stride_s + g, mask=mask_w, other=0).to(tl.float32)
        w = (q - z) * s  # [BLOCK_N, BLOCK_K]; masked entries are 0
        xin = x.to(y_ptr.dtype.element_ty)
        win = w.to(y_ptr.dtype.element_ty)
        acc += tl.dot(xin, tl.trans(win), out_dtype=tl.float32)
    y = acc.to(y_ptr.dtype.element_ty)
    tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :], y, mask=mask_m[:, None] & mask_n[None, :])


def int4_linear(
    x: torch.Tensor,
    qdata: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    group_size: int,
    in_features: int,
    act_pre_scale: Optional[torch.Tensor] = None,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Launch the kernel. x: [M, K] (fp16 / bf16 / fp32, contiguous rows); returns [M, N] in x.dtype.

    Runs on CUDA, or on CPU tensors under ``TRITON_INTERPRET=1``.
    """
    m, k = x.shape
    n = qdata.shape[0]
    if k != in_features:
        raise ValueError(f"x has {k} features, the weight expects {in_features}")
    if x.stride(1) != 1:
        x = x.contiguous()
    y = torch.empty((m, n), dtype=x.dtype, device=x.device) if out is None else out
    launch_int4_linear(x, qdata, scale, zero_point, act_pre_scale, y, group_size, in_features)
    return y


def launch_int4_linear(x, qdata, scale, zero_point, act_pre_scale, y, group_size, in_features, launcher=None):
    """Launch ``_int4_linear_kernel`` into ``y``; ``launcher`` wraps the kernel (e.g. ``torch.library.wrap_triton``)."""
    m = x.shape[0]
    n = qdata.shape[0]
    block_m = 16 if m <= 16 else 32
    block_n = 32
    block_k = 32
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, block_n))
    kernel = _int4_linear_kernel if launcher is None else launcher(_int4_linear_kernel)
    has_pre = act_pre_scale is not None
    kernel[grid](
        x, qdata, scale, zero_point, act_pre_scale if has_pre else scale, y,
        m, n, in_features,
        x.stride(0), qdata.stride(0), scale.stride(0), y.stride(0),
        GROUP_SIZE=group_size, HAS_PRE_SCALE=has_pre,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
    )
