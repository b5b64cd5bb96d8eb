"""Tiled int4 GEMM on tensor cores: ``y = (x * pre) @ dequantize(W).T`` with ``tl.dot``.

Same weight layout as ``int4_gemv.py`` (``qdata.view(int32)`` [N, K_pad / 8],
column 8j+i of a row in bits 4i .. 4i+3 of word j). A program owns a
[BLOCK_M, BLOCK_N] output tile and walks K in tiles of BLOCK_K (which divides
the group size, so a tile has one scale and one zero per row). Per tile:

* load the [BLOCK_N, BLOCK_K / 8] words and turn them into ``q - z`` exactly,
  in registers. bf16 and fp16 (PACKED16): two weights per 32-bit operation,
  straight in the activation dtype (``int4_planes.scaled_pair16``; on CUDA
  in PTX: a shift per nibble pair, then per weight half a LOP3 and half a
  packed FMA), in "pair order" (columns 0, 4, 1, 5, 2, 6, 3, 7 of each word,
  so a pair never leaves its register); the launcher passes the activation
  already pre-scaled, in that order and zero-padded to K_pad
  (``_gemm_x_kernel``), so the pipelined shared-memory tile is the MMA's
  operand as loaded. Or (NATURAL, ``KernelConfig.natural_order``) in column
  order, each pair a byte's two nibbles (a byte permute instead of the shift,
  and one shift per word): the activation is then read as the caller gave it,
  with no launch before the GEMM unless there is an ``act_pre_scale``. fp32: each of the 8 nibble planes as ``(q - z) * 16**p``
  (``int4_planes.nibble_plane``) interleaved back into column order, and the
  activation tile's columns scaled by ``16**-p`` (exact);
* multiply by the row's scale: bf16 / fp16 ``(q - z) * s`` rounded once in the
  activation dtype (as a dense dequantized weight is), fp32 exactly so;
* ``tl.dot`` the activation tile with it into the fp32 accumulator the loop
  carries (so Hopper's asynchronous MMA of one tile overlaps the unpacking of
  the next; a fresh ``tl.dot`` per tile, scaled after, waited for every MMA).

Triton's pipeliner streams the words and the activation tile through shared
memory ahead of use (``num_stages``), but not the scale, zero and pre-scale
loads, which feed no ``tl.dot``: each tile would wait a full memory round trip
for them. PREFETCH loads them one tile ahead into registers.

SWAP_AB computes ``y.T = W x.T`` instead: the dequantized weight tile becomes
the first (register) operand of the MMA, and a small M becomes its narrow
dimension (Hopper's wgmma takes N = 8 .. 256 but M = 64 per warp group).

Split-K over grid axis 2 (for small M, where the output tiles alone do not fill
the GPU): each split stores an fp32 partial into ``out[split]``, added by a
second launch or, with FUSED_SPLITS, by the tile's last program into ``y``
(``splitk.py``: ``counter_ptr`` holds one zeroed int32 per output tile); with SPLIT_K
== 1 the tile is stored in the activation dtype directly. Tails in M, N and K
are masked.
"""

from __future__ import annotations

import triton
import triton.language as tl

from awq_ao.kernels import pdl, splitk
from awq_ao.kernels.int4_planes import column_factor, nibble_plane, pair_ptx, scaled_pair16
from awq_ao.kernels.ptx import prefetch_tiles_l2


@triton.jit
def _interleave4(a, b, c, d):
    """[..., J] x4 -> [..., 4J] with out[4j + t] = (a, b, c, d)[t][j]."""
    return tl.interleave(tl.interleave(a, c), tl.interleave(b, d))


_PAIR_PTX_BF16 = tl.constexpr(pair_ptx("bf16x2"))
_PAIR_PTX_FP16 = tl.constexpr(pair_ptx("f16x2"))


@triton.jit
def _pair_asm(w, neg_zero_magic, scale, magic_pair, DTYPE: tl.constexpr):
    """PTX for ``scaled_pair16`` on words already shifted: LOP3 ``(w & 0x000F000F) | magic``, then two packed
    FMAs: ``t * 1 - (magic + z)`` (exact) and ``(q - z) * s + (-0)`` (one rounding; an FMA, not ``mul.bf16x2``,
    which sm_80 lacks)."""
    if DTYPE == tl.bfloat16:
        ptx: tl.constexpr = _PAIR_PTX_BF16
    else:
        ptx: tl.constexpr = _PAIR_PTX_FP16
    return tl.inline_asm_elementwise(ptx, "=h,=h,r,h,h,r", [w, neg_zero_magic, scale, magic_pair],
                                     dtype=(scale.dtype, scale.dtype), is_pure=True, pack=1)


_BYTE_PAIR_PTX_BF16 = tl.constexpr(pair_ptx("bf16x2", byte_permute=True))
_BYTE_PAIR_PTX_FP16 = tl.constexpr(pair_ptx("f16x2", byte_permute=True))


@triton.jit
def _byte_pair_asm(words, high_nibbles, i: tl.constexpr, neg_zero_magic, scale, magic_pair, DTYPE: tl.constexpr):
    """PTX for ``scaled_pair16`` in column order (``int4_planes.byte_pair16``): columns 8j+2i and 8j+2i+1.

    ``high_nibbles`` is ``words >> 4`` (one shift per word, shared by its 4 pairs). ``PRMT`` takes byte i of
    the word into byte 0 and byte i of ``words >> 4`` into byte 2 (selector ``i, i, 4+i, 4+i``); the
    LOP3 keeps bits 0..3 and 16..19 (the byte's low and high nibble) and sets the magic, then the two
    packed FMAs of ``_pair_asm``. One PRMT per pair where the pair order has one shift: +1 instruction per
    word in all (the shift to ``words >> 4``).
    """
    if DTYPE == tl.bfloat16:
        ptx: tl.constexpr = _BYTE_PAIR_PTX_BF16
    else:
        ptx: tl.constexpr = _BYTE_PAIR_PTX_FP16
    select = words * 0 + (i | (i << 4) | ((4 + i) << 8) | ((4 + i) << 12))  # a constant: ptxas folds it in
    return tl.inline_asm_elementwise(ptx, "=h,=h,r,h,h,r,r,r",
                                     [words, neg_zero_magic, scale, high_nibbles, select, magic_pair],
                                     dtype=(scale.dtype, scale.dtype), is_pure=True, pack=1)


@triton.jit
def dequant_tile16(words, z, s, magic_pair, DTYPE: tl.constexpr, USE_ASM: tl.constexpr, NATURAL: tl.constexpr):
    """words int32 [BN, BK8], z and s fp32 [BN] -> [BN, 8 * BK8] bf16 / fp16 ``(q - z) * s``, in pair order
    or (NATURAL) in column order.

    ``q - z`` is exact in 16 bits; the product with the row's scale (itself
    rounded to DTYPE) is rounded once, as a dequantized weight in DTYPE is.
    Scaling the tile, not the MMA's result, lets the loop carry its fp32
    accumulator through ``tl.dot``, so a tile's MMA overlaps the next tile's
    unpacking instead of being waited for before the scale.

    The unpacking makes 32-bit pairs of 16-bit weights, and pair p of a word
    fills its positions 2p and 2p + 1, so each pair stays one register of the
    MMA operand. Pair order: pair p is columns p and p + 4 (one shift and one
    LOP3 per pair), so each 8 columns come as (0, 4, 1, 5, 2, 6, 3, 7) and the
    launcher permutes the activation to match (``_gemm_x_kernel``). NATURAL:
    pair p is columns 2p and 2p + 1 (byte p's nibbles: one PRMT and one LOP3
    per pair, and one shift per word), so the activation is read as it is,
    with no launch of its own unless there is an ``act_pre_scale``. USE_ASM
    (CUDA): the pairs in PTX, two packed FMAs each; else the same arithmetic
    in Triton ops (the interpreter runs no PTX).
    """
    zero_magic = (z + (128.0 if DTYPE == tl.bfloat16 else 1024.0)).to(DTYPE)[:, None]
    scale = s.to(DTYPE)[:, None]
    bn: tl.constexpr = words.shape[0]
    j: tl.constexpr = words.shape[1]
    if USE_ASM:
        neg = -zero_magic
        if NATURAL:
            high_nibbles = words >> 4
            c0, c1 = _byte_pair_asm(words, high_nibbles, 0, neg, scale, magic_pair, DTYPE)
            c2, c3 = _byte_pair_asm(words, high_nibbles, 1, neg, scale, magic_pair, DTYPE)
            c4, c5 = _byte_pair_asm(words, high_nibbles, 2, neg, scale, magic_pair, DTYPE)
            c6, c7 = _byte_pair_asm(words, high_nibbles, 3, neg, scale, magic_pair, DTYPE)
        else:
            c0, c1 = _pair_asm(words, neg, scale, magic_pair, DTYPE)
            c2, c3 = _pair_asm(words >> 4, neg, scale, magic_pair, DTYPE)
            c4, c5 = _pair_asm(words >> 8, neg, scale, magic_pair, DTYPE)
            c6, c7 = _pair_asm(words >> 12, neg, scale, magic_pair, DTYPE)
    else:
        c0, c1 = scaled_pair16(words, 0, zero_magic, scale, magic_pair, DTYPE, NATURAL)
        c2, c3 = scaled_pair16(words, 1, zero_magic, scale, magic_pair, DTYPE, NATURAL)
        c4, c5 = scaled_pair16(words, 2, zero_magic, scale, magic_pair, DTYPE, NATURAL)
        c6, c7 = scaled_pair16(words, 3, zero_magic, scale, magic_pair, DTYPE, NATURAL)
    # c[2p], c[2p + 1]: pair p's halves, for positions 2p and 2p + 1 of each word's 8
    low = tl.permute(tl.join(tl.join(c0, c1), tl.join(c2, c3)), (0, 1, 3, 2))  # [BN, J, s0, h]
    high = tl.permute(tl.join(tl.join(c4, c5), tl.join(c6, c7)), (0, 1, 3, 2))
    w = tl.permute(tl.join(low, high), (0, 1, 4, 2, 3))  # [BN, J, s1, s0, h]: position 8j + 4 s1 + 2 s0 + h
    return tl.reshape(w, (bn, 8 * j))


@triton.jit
def _gemm_x_kernel(x_ptr, pre_ptr, out_ptr, counter_ptr, K, K_PAD, stride_xm, N_COUNTERS,
                   HAS_PRE_SCALE: tl.constexpr, PAIR_ORDER: tl.constexpr, BLOCK: tl.constexpr,
                   PDL: tl.constexpr = 0):
    """out [M, K_PAD] = ``x * pre``, zeros past K; with PAIR_ORDER each 8 columns as (0, 4, 1, 5, 2, 6, 3, 7).

    The bf16 / fp16 GEMM's activation operand. Grid (M, cdiv(max(K_PAD, N_COUNTERS), BLOCK)). In pair
    order, position p of a row holds column 8 (p // 8) + 4 (p % 2) + (p % 8) // 2. The pre-scaled product
    is rounded to x's dtype, as the dense path's ``x * pre`` is. Row 0's programs also zero the GEMM's
    N_COUNTERS split-K tile counters (``splitk.py``; none when 0), so the fused reduce costs no launch of
    its own.
    """
    if PDL:  # programmatic dependent launch (pdl.py; never in the source Inductor re-emits, which lacks ``pdl``)
        pdl.prologue(PDL)
    row = tl.program_id(0)
    p = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    if N_COUNTERS > 0:
        tl.store(counter_ptr + p, p * 0, mask=(p < N_COUNTERS) & (p * 0 + row == 0))
    if PAIR_ORDER:
        col = (p // 8) * 8 + (p % 2) * 4 + (p % 8) // 2
    else:
        col = p
    live = col < K
    x = tl.load(x_ptr + row * stride_xm + col, mask=live, other=0.0)
    if HAS_PRE_SCALE:
        pre = tl.load(pre_ptr + col, mask=live, other=0.0)
        x = (x.to(tl.float32) * pre.to(tl.float32)).to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + row * K_PAD + p, x, mask=p < K_PAD)


@triton.jit
def dequant_tile(words, z, magic_bits):
    """words int32 [BN, BK8], z fp32 [BN] -> [BN, 8 * BK8] fp32, column order, ``(q - z) * 16**p``."""
    z = z[:, None]
    even = _interleave4(nibble_plane(words, 0, z, magic_bits), nibble_plane(words, 2, z, magic_bits),
                        nibble_plane(words, 4, z, magic_bits), nibble_plane(words, 6, z, magic_bits))
    odd = _interleave4(nibble_plane(words, 1, z, magic_bits), nibble_plane(words, 3, z, magic_bits),
                       nibble_plane(words, 5, z, magic_bits), nibble_plane(words, 7, z, magic_bits))
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
    x_ptr, q_ptr, s_ptr, z_ptr, pre_ptr, out_ptr, y_ptr, counter_ptr,
    M, N, K, TILES, TILES_PER_SPLIT, magic_bits,
    stride_xm, stride_q, stride_s, stride_om, stride_osplit, stride_qblock, stride_qtile,
    GROUP_SIZE: tl.constexpr,
    HAS_PRE_SCALE: tl.constexpr,
    EVEN_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    SWAP_AB: tl.constexpr,
    PREFETCH: tl.constexpr,
    PACKED16: tl.constexpr,
    USE_ASM: tl.constexpr,
    NATURAL: tl.constexpr,
    TILED: tl.constexpr,
    FUSED_SPLITS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    L2_TILES: tl.constexpr = 0,
    PDL: tl.constexpr = 0,
):
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_split = tl.program_id(2)
    t_start = pid_split * TILES_PER_SPLIT
    t_end = tl.minimum(t_start + TILES_PER_SPLIT, TILES)
    if L2_TILES > 0:  # ask L2 for the program's first L2_TILES weight tiles before anything waits (as the GEMV)
        t_start += prefetch_tiles_l2(q_ptr, pid_n * BLOCK_N + tl.arange(0, BLOCK_N), N, stride_q, t_start, t_end,
                                     L2_TILES, BLOCK_K)
    if PDL:  # programmatic dependent launch (pdl.py; never in the source Inductor re-emits, which lacks ``pdl``)
        pdl.prologue(PDL)
    BLOCK_K8: tl.constexpr = BLOCK_K // 8
    dtype = x_ptr.dtype.element_ty
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    offs_j = tl.arange(0, BLOCK_K8)
    mask_m = offs_m < M
    mask_n = offs_n < N
    if not PACKED16:
        col_factor = column_factor(offs_k)
    if SWAP_AB:
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
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
        if not PACKED16:
            factor = col_factor * pre.to(tl.float32) if HAS_PRE_SCALE else col_factor
            x = (x.to(tl.float32) * factor[None, :]).to(dtype)
        # PACKED16: x is the MMA's operand as loaded (the pipeliner's shared-memory copy of the tile), so the MMA
        # runs async: in pair order, pre-scaled and zero-padded to K_pad by the launcher (_gemm_x_kernel), or
        # (NATURAL) as given, or pre-scaled by that launch in column order when there is an act_pre_scale
        if TILED:  # bench_layout.py's copy with each [BLOCK_N, BLOCK_K] tile contiguous (see int4_gemv._load_tile)
            rows = tl.arange(0, BLOCK_N)
            words = tl.load(q_ptr + pid_n * stride_qblock + t * stride_qtile + rows[:, None] * stride_q
                            + offs_j[None, :], mask=mask_n[:, None], other=0)
        else:
            words = tl.load(q_ptr + offs_n[:, None] * stride_q + (k0 // 8 + offs_j)[None, :],
                            mask=mask_n[:, None], other=0)
        if PACKED16:  # [BLOCK_N, BLOCK_K] (q - z) * s in the activation dtype
            w = dequant_tile16(words, z.to(tl.float32), s.to(tl.float32), magic_bits, dtype, USE_ASM, NATURAL)
        else:
            w = dequant_tile(words, z.to(tl.float32), magic_bits) * s.to(tl.float32)[:, None]
        if SWAP_AB:  # y.T = W x.T: the dequantized tile is the register operand, x the small one
            acc = tl.dot(w, tl.trans(x), acc, input_precision=DOT_PRECISION, out_dtype=tl.float32)
        else:
            acc = tl.dot(x, tl.trans(w), acc, input_precision=DOT_PRECISION, out_dtype=tl.float32)
    if SWAP_AB:
        offs_out = offs_m[None, :] * stride_om + offs_n[:, None]
        mask_out = mask_m[None, :] & mask_n[:, None]
    else:
        offs_out = offs_m[:, None] * stride_om + offs_n[None, :]
        mask_out = mask_m[:, None] & mask_n[None, :]
    tl.store(out_ptr + pid_split * stride_osplit + offs_out, acc.to(out_ptr.dtype.element_ty), mask=mask_out)
    if FUSED_SPLITS > 1:  # the last split to finish this tile adds the partials (splitk.py); y has out's row stride
        counter = counter_ptr + pid_m * tl.num_programs(0) + pid_n
        if splitk.last_to_arrive(counter, FUSED_SPLITS):
            total = splitk.sum_splits(out_ptr + offs_out, mask_out, stride_osplit, FUSED_SPLITS)
            tl.store(y_ptr + offs_out, total.to(y_ptr.dtype.element_ty), mask=mask_out)
            splitk.reset_counter(counter)
