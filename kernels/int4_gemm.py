"""Tiled int4 GEMM on tensor cores: ``y = (x * pre) @ dequantize(W).T`` with ``tl.dot``.

Same weight layout as ``int4_gemv.py`` (``qdata.view(int32)`` [N, K_pad / 8],
column 8j+i of a row in bits 4i .. 4i+3 of word j). A program owns a
[BLOCK_M, BLOCK_N] output tile and walks K in tiles of BLOCK_K (which divides
the group size, so a tile has one scale and one zero per row). Per tile:

* load the [BLOCK_N, BLOCK_K / 8] words, turn each of the 8 nibble planes into
  ``(q - z) * 16**p`` exactly (``int4_planes.nibble_plane``: the WIDE scheme
  for bf16 / fp32, pairs for fp16), cast them to the activation dtype (exact:
  at most 4 significant bits) and interleave the planes back into column
  order, in registers;
* scale the activation tile's columns by ``16**-p`` (exact), ``tl.dot`` it
  with the integer tile, fp32 accumulate;
* multiply the partial product by the row's scale and add it to the accumulator.

Triton's pipeliner streams the words and the activation tile through shared
memory ahead of use (``num_stages``), but not the scale, zero and pre-scale
loads, which feed no ``tl.dot``: each tile would wait a full memory round trip
for them. PREFETCH loads them one tile ahead into registers.

SWAP_AB computes ``y.T = W x.T`` instead: the dequantized weight tile becomes
the first (register) operand of the MMA, and a small M becomes its narrow
dimension (Hopper's wgmma takes N = 8 .. 256 but M = 64 per warp group).

Split-K over grid axis 2 (for small M, where the output tiles alone do not fill
the GPU): each split stores an fp32 partial into ``out[split]`` and
``splitk_reduce`` adds them; with SPLIT_K == 1 the tile is stored in the
activation dtype directly. Tails in M, N and K are masked.
"""

from __future__ import annotations

import triton
import triton.language as tl

from awq_ao.kernels.int4_planes import column_factor, nibble_plane


@triton.jit
def _interleave4(a, b, c, d):
    """[..., J] x4 -> [..., 4J] with out[4j + t] = (a, b, c, d)[t][j]."""
    return tl.interleave(tl.interleave(a, c), tl.interleave(b, d))


@triton.jit
def dequant_tile(words, z, magic_bits, DTYPE: tl.constexpr, WIDE: tl.constexpr):
    """words int32 [BN, BK8], z fp32 [BN] -> [BN, 8 * BK8] in DTYPE, column order, ``(q - z) * 16**p``."""
    z = z[:, None]
    even = _interleave4(
        nibble_plane(words, 0, z, magic_bits, WIDE).to(DTYPE), nibble_plane(words, 2, z, magic_bits, WIDE).to(DTYPE),
        nibble_plane(words, 4, z, magic_bits, WIDE).to(DTYPE), nibble_plane(words, 6, z, magic_bits, WIDE).to(DTYPE),
    )
    odd = _interleave4(
        nibble_plane(words, 1, z, magic_bits, WIDE).to(DTYPE), nibble_plane(words, 3, z, magic_bits, WIDE).to(DTYPE),
        nibble_plane(words, 5, z, magic_bits, WIDE).to(DTYPE), nibble_plane(words, 7, z, magic_bits, WIDE).to(DTYPE),
    )
    return tl.interleave(even, odd)


@triton.jit
def _tile_params(s_ptr, z_ptr, pre_ptr, offs_n, mask_n, offs_k, t, t_end, K, stride_s,
                 BLOCK_K: tl.constexpr, GROUP_SIZE: tl.constexpr, HAS_PRE_SCALE: tl.constexpr):
    """K tile t's row scale and zero [BLOCK_N] and act_pre_scale [BLOCK_K] (zeros if t >= t_end), as stored.

    They stay in their stored dtypes (the loop converts them where it uses
    them): converting here would make a prefetching loop wait for the loads in
    the iteration that issues them. Without a pre-scale, ``pre`` is the scale.
    """
    live_n = mask_n & ((offs_n * 0 + t) < t_end)
    g = (t * BLOCK_K) // GROUP_SIZE
    s = tl.load(s_ptr + offs_n * stride_s + g, mask=live_n, other=0.0)
    z = tl.load(z_ptr + offs_n * stride_s + g, mask=live_n, other=0)
    if HAS_PRE_SCALE:
        k = t * BLOCK_K + offs_k
        pre = tl.load(pre_ptr + k, mask=(k < K) & ((offs_k * 0 + t) < t_end), other=0.0)
    else:
        pre = s
    return s, z, pre


@triton.jit
def _int4_gemm_kernel(
    x_ptr, q_ptr, s_ptr, z_ptr, pre_ptr, out_ptr,
    M, N, K, TILES, TILES_PER_SPLIT, magic_bits,
    stride_xm, stride_q, stride_s, stride_om, stride_osplit,
    GROUP_SIZE: tl.constexpr,
    HAS_PRE_SCALE: tl.constexpr,
    EVEN_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    SWAP_AB: tl.constexpr,
    PREFETCH: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_split = tl.program_id(2)
    BLOCK_K8: tl.constexpr = BLOCK_K // 8
    dtype = x_ptr.dtype.element_ty
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    offs_j = tl.arange(0, BLOCK_K8)
    mask_m = offs_m < M
    mask_n = offs_n < N
    WIDE: tl.constexpr = dtype != tl.float16  # fp16 overflows at (q - z) * 16**4
    col_factor = column_factor(offs_k, WIDE)
    if SWAP_AB:
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    t_start = pid_split * TILES_PER_SPLIT
    t_end = tl.minimum(t_start + TILES_PER_SPLIT, TILES)
    if PREFETCH:  # registers hold the next tile's scale, zero and column factor while this tile computes
        next_s, next_z, next_pre = _tile_params(s_ptr, z_ptr, pre_ptr, offs_n, mask_n, offs_k, t_start, t_end,
                                                K, stride_s, BLOCK_K, GROUP_SIZE, HAS_PRE_SCALE)
    for t in range(t_start, t_end):
        if PREFETCH:
            s, z, pre = next_s, next_z, next_pre
            next_s, next_z, next_pre = _tile_params(s_ptr, z_ptr, pre_ptr, offs_n, mask_n, offs_k, t + 1, t_end,
                                                    K, stride_s, BLOCK_K, GROUP_SIZE, HAS_PRE_SCALE)
        else:
            s, z, pre = _tile_params(s_ptr, z_ptr, pre_ptr, offs_n, mask_n, offs_k, t, t_end,
                                     K, stride_s, BLOCK_K, GROUP_SIZE, HAS_PRE_SCALE)
        k0 = t * BLOCK_K
        k = k0 + offs_k
        if EVEN_K:
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + k[None, :], mask=mask_m[:, None], other=0.0)
        else:
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + k[None, :],
                        mask=mask_m[:, None] & (k < K)[None, :], other=0.0)
        factor = col_factor * pre.to(tl.float32) if HAS_PRE_SCALE else col_factor
        x = (x.to(tl.float32) * factor[None, :]).to(dtype)
        words = tl.load(q_ptr + offs_n[:, None] * stride_q + (k0 // 8 + offs_j)[None, :],
                        mask=mask_n[:, None], other=0)
        s = s.to(tl.float32)
        w = dequant_tile(words, z.to(tl.float32), magic_bits, dtype, WIDE)  # [BLOCK_N, BLOCK_K]
        if SWAP_AB:  # y.T = W x.T: the dequantized tile is the register operand, x the small one
            part = tl.dot(w, tl.trans(x), input_precision=DOT_PRECISION, out_dtype=tl.float32)
            acc += part * s[:, None]
        else:
            part = tl.dot(x, tl.trans(w), input_precision=DOT_PRECISION, out_dtype=tl.float32)
            acc += part * s[None, :]
    if SWAP_AB:
        out = out_ptr + pid_split * stride_osplit + offs_m[None, :] * stride_om + offs_n[:, None]
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask_m[None, :] & mask_n[:, None])
    else:
        out = out_ptr + pid_split * stride_osplit + offs_m[:, None] * stride_om + offs_n[None, :]
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])
