"""Dequantize an int4 weight to a dense matrix, for the large-M path (dense matmul after).

Above a few dozen activation rows the fused kernels re-dequantize every weight
tile once per M block, and the tensor cores wait on that integer work. From
M >= 128 it is cheaper to dequantize once (read 0.5 + write 2 bytes per
weight) and hand the dense matrix to cuBLAS; ``int4_matmul.py`` does that for
``KernelConfig(kind="dequant")``.

Same packed layout as the other kernels (``qdata.view(int32)`` [N, K_pad / 8],
column 8j+i of a row in bits 4i .. 4i+3 of word j). A program writes a
[BLOCK_N, BLOCK_K] tile of ``w[n, k] = (q - z) * s (* pre[k])`` for k < K,
computed in fp32 and rounded once to w's dtype: without ``pre`` it is bit for
bit ``awq_ao.quant.dequantize``. The tile is handled as [BLOCK_N, BLOCK_K / 8,
8]: one load per word, one scale and zero per word (its group's, so any
BLOCK_K works with any group), 8 contiguous outputs per word (a 16-byte store
in bf16).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _int4_dequant_kernel(
    q_ptr, s_ptr, z_ptr, pre_ptr, w_ptr,
    N, K,
    stride_q, stride_s, stride_w,
    GROUP_SIZE: tl.constexpr,
    HAS_PRE_SCALE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_j = tl.program_id(1) * (BLOCK_K // 8) + tl.arange(0, BLOCK_K // 8)  # words
    nibble = tl.arange(0, 8)
    mask_nj = (offs_n < N)[:, None] & (offs_j * 8 < K)[None, :]
    words = tl.load(q_ptr + offs_n[:, None] * stride_q + offs_j[None, :], mask=mask_nj, other=0)
    sz = offs_n[:, None] * stride_s + (offs_j * 8 // GROUP_SIZE)[None, :]
    s = tl.load(s_ptr + sz, mask=mask_nj, other=0.0).to(tl.float32)
    z = tl.load(z_ptr + sz, mask=mask_nj, other=0).to(tl.float32)
    q = (words[:, :, None] >> (nibble * 4)[None, None, :]) & 0xF  # [BLOCK_N, BLOCK_K / 8, 8]
    w = (q.to(tl.float32) - z[:, :, None]) * s[:, :, None]
    k = offs_j[None, :, None] * 8 + nibble[None, None, :]  # [1, BLOCK_K / 8, 8]
    if HAS_PRE_SCALE:
        w = w * tl.load(pre_ptr + k, mask=k < K, other=0.0).to(tl.float32)
    mask = (offs_n < N)[:, None, None] & (k < K)
    tl.store(w_ptr + offs_n[:, None, None] * stride_w + k, w.to(w_ptr.dtype.element_ty), mask=mask)
