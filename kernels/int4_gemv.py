"""Split-K int4 GEMV on CUDA cores: ``y[m] = (x[m] * pre) @ dequantize(W).T`` for small M.

Weight layout (the canonical one of ``awq_ao/quant.py``, read here as int32):
``qdata.view(int32)`` is [N, K_pad / 8], row n contiguous along K, and word j of
a row holds columns 8j .. 8j+7, column 8j+i in bits 4i .. 4i+3. A program
loads a [BLOCK_N, BLOCK_K / 8] tile of words: each row's words are contiguous,
so a warp reads whole 32-byte sectors with 16-byte vector loads. ``scale`` and
``zero_point`` are [N, K_pad / G]. BLOCK_K either divides G (one scale and zero
per row per tile) or is a multiple of G: the tile's BLOCK_K / G scales and
zeros of a row are loaded once and broadcast to their words (the same
arithmetic and, in sm_90 SASS, about the same instructions per weight as a
one-group tile; more contiguous bytes per row per tile: 128 columns for groups
of 32 and 64, and 256 or 512 for any group).

Dequantization costs one AND per weight. A nibble masked in place,
``w & (0xF << 4p)`` read as a float, is the subnormal ``q * 16**p * 2**-149``,
exactly; fp32 FMAs keep subnormals (Triton does not flush them), so
``x * 2**(64 - 4p)`` times that float is ``x * q * 2**-85``, rounded once as a
normal float (no overflow below |x| = 2**64, no underflow above 2**-41). Nibbles
0..4 are masked in place, 5..7 after one shift of the word by 20 bits. The
zero point and the scale leave the inner sum: a word's 8 columns share one group, so
``sum_k x_k (q_k - z) s = (s * 2**85) * sum_k x_k q_k 2**-85 - (s z) * sum_k x_k``
per word, summed over the words once at the end.
Everything accumulates in fp32. EVEN_K (K == K_pad) drops the activation masks.

A program handles ROWS activation rows (1, 2 or 4; ``KernelConfig.block_m``):
the weight tile is loaded and unpacked once and each nibble plane costs one
FFMA per row.

Grid: (cdiv(N, BLOCK_N), SPLIT_K, cdiv(M, ROWS)). With SPLIT_K == 1 the program
stores its output rows in the activation dtype; otherwise it stores fp32
partial sums into ``out[split, m, :]`` and ``splitk_reduce`` adds the splits.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _load_tile(q_ptr, q_block, s_ptr, z_ptr, offs_n, offs_j, mask_n, t, t_end, stride_q, stride_qtile, stride_s,
               BLOCK_K: tl.constexpr, GROUP_SIZE: tl.constexpr, TILED: tl.constexpr):
    """K tile t (zeros if t >= t_end): words [BLOCK_N, BLOCK_K / 8] int32, scale and zero as stored.

    The stored layout: word j of row n in tile t at ``q_ptr + n * stride_q + t * BLOCK_K / 8 + j``.
    TILED (``benchmarks/bench_layout.py``'s experiment, a copy with each [BLOCK_N, BLOCK_K] tile
    contiguous): word j of row r of the program's block at ``q_block + t * stride_qtile + r *
    stride_q + j``. A constexpr, so the stored layout's code is unchanged.

    Scale and zero are [BLOCK_N, 1] when the tile lies in one group (BLOCK_K <=
    G), else [BLOCK_N, BLOCK_K / 8]: the group of each word. They stay in their
    stored dtypes (the caller converts them where it uses them): converting here
    would make a prefetching loop wait for the load in the iteration that issues it.
    """
    k0 = t * BLOCK_K
    mask = mask_n & ((offs_n * 0 + t) < t_end)
    if TILED:
        rows = tl.arange(0, offs_n.shape[0])  # the program's rows, counted from its block's first
        words = tl.load(q_block + t * stride_qtile + rows[:, None] * stride_q + offs_j[None, :],
                        mask=mask[:, None], other=0)
    else:
        words = tl.load(q_ptr + offs_n[:, None] * stride_q + (k0 // 8 + offs_j)[None, :], mask=mask[:, None],
                        other=0)
    if BLOCK_K <= GROUP_SIZE:
        g = k0 // GROUP_SIZE
        s = tl.load(s_ptr + offs_n * stride_s + g, mask=mask, other=0.0)[:, None]
        z = tl.load(z_ptr + offs_n * stride_s + g, mask=mask, other=0)[:, None]
    else:  # the tile's groups: one load each per row, then each word takes its group's value
        GROUPS: tl.constexpr = BLOCK_K // GROUP_SIZE
        sz = offs_n[:, None] * stride_s + (k0 // GROUP_SIZE + tl.arange(0, GROUPS))[None, :]
        s = tl.load(s_ptr + sz, mask=mask[:, None], other=0.0)
        z = tl.load(z_ptr + sz, mask=mask[:, None], other=0)
        shape: tl.constexpr = (offs_n.shape[0], GROUPS, GROUP_SIZE // 8)
        s = tl.reshape(tl.broadcast_to(s[:, :, None], shape), (offs_n.shape[0], BLOCK_K // 8))
        z = tl.reshape(tl.broadcast_to(z[:, :, None], shape), (offs_n.shape[0], BLOCK_K // 8))
    return words, s, z


@triton.jit
def _load_x(x_rows, pre_ptr, k, mask_r, K, HAS_PRE_SCALE: tl.constexpr, EVEN_K: tl.constexpr, EVEN_M: tl.constexpr):
    """fp32 ``x[rows, k] * pre[k]``: [BLOCK_K8] for one row (x_rows a pointer), [ROWS, BLOCK_K8] for x_rows [ROWS, 1]."""
    if EVEN_K and EVEN_M:
        xi = tl.load(x_rows + k).to(tl.float32)
    elif EVEN_K:
        xi = tl.load(x_rows + k, mask=mask_r, other=0.0).to(tl.float32)
    else:
        xi = tl.load(x_rows + k, mask=mask_r & (k < K), other=0.0).to(tl.float32)
    if HAS_PRE_SCALE:
        if EVEN_K:
            xi = xi * tl.load(pre_ptr + k).to(tl.float32)
        else:
            xi = xi * tl.load(pre_ptr + k, mask=k < K, other=0.0).to(tl.float32)
    return xi


@triton.jit
def _int4_gemv_kernel(
    x_ptr, q_ptr, s_ptr, z_ptr, pre_ptr, out_ptr,
    M, N, K, TILES, TILES_PER_SPLIT,
    stride_xm, stride_q, stride_s, stride_om, stride_osplit, stride_qblock, stride_qtile,
    GROUP_SIZE: tl.constexpr,
    HAS_PRE_SCALE: tl.constexpr,
    EVEN_K: tl.constexpr,
    EVEN_M: tl.constexpr,
    PREFETCH: tl.constexpr,
    ROWS: tl.constexpr,
    TILED: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_split = tl.program_id(1)
    pid_m = tl.program_id(2)
    BLOCK_K8: tl.constexpr = BLOCK_K // 8
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    offs_j = tl.arange(0, BLOCK_K8)
    rows = pid_m * ROWS + tl.arange(0, ROWS)
    # One row keeps 2-d tiles [BLOCK_N, BLOCK_K8]: the 3-d form costs it layout conversions on sm_90.
    if ROWS == 1:
        x_rows = x_ptr + pid_m * stride_xm
        mask_r = (offs_j * 0 + pid_m) < M  # always true (the grid has M programs); a tensor for the masks
        acc = tl.zeros((BLOCK_N, BLOCK_K8), dtype=tl.float32)
    else:
        x_rows = x_ptr + rows[:, None] * stride_xm  # [ROWS, 1]
        mask_r = (rows < M)[:, None]
        acc = tl.zeros((ROWS, BLOCK_N, BLOCK_K8), dtype=tl.float32)
    t_start = pid_split * TILES_PER_SPLIT
    t_end = tl.minimum(t_start + TILES_PER_SPLIT, TILES)
    q_block = q_ptr + pid_n * stride_qblock
    # PREFETCH tiles ahead in registers (0, 1 or 2): tile t + PREFETCH loads while tile t computes
    if PREFETCH >= 1:
        next_words, next_s, next_z = _load_tile(
            q_ptr, q_block, s_ptr, z_ptr, offs_n, offs_j, mask_n, t_start, t_end,
            stride_q, stride_qtile, stride_s, BLOCK_K, GROUP_SIZE, TILED)
    if PREFETCH >= 2:
        next2_words, next2_s, next2_z = _load_tile(
            q_ptr, q_block, s_ptr, z_ptr, offs_n, offs_j, mask_n, t_start + 1, t_end,
            stride_q, stride_qtile, stride_s, BLOCK_K, GROUP_SIZE, TILED)
    for t in range(t_start, t_end):
        k0 = t * BLOCK_K
        if PREFETCH >= 2:
            words, s, z = next_words, next_s, next_z
            next_words, next_s, next_z = next2_words, next2_s, next2_z
            next2_words, next2_s, next2_z = _load_tile(
                q_ptr, q_block, s_ptr, z_ptr, offs_n, offs_j, mask_n, t + 2, t_end,
                stride_q, stride_qtile, stride_s, BLOCK_K, GROUP_SIZE, TILED)
        elif PREFETCH >= 1:
            words, s, z = next_words, next_s, next_z
            next_words, next_s, next_z = _load_tile(
                q_ptr, q_block, s_ptr, z_ptr, offs_n, offs_j, mask_n, t + 1, t_end,
                stride_q, stride_qtile, stride_s, BLOCK_K, GROUP_SIZE, TILED)
        else:
            words, s, z = _load_tile(
                q_ptr, q_block, s_ptr, z_ptr, offs_n, offs_j, mask_n, t, t_end,
                stride_q, stride_qtile, stride_s, BLOCK_K, GROUP_SIZE, TILED)
        s = s.to(tl.float32)
        s_big = s * 38685626227668133590597632.0  # s * 2**85
        s_zero = s * z.to(tl.float32)
        high = words >> 20  # nibbles 5, 6, 7 now in bits 0..11
        dot = tl.zeros(acc.shape, dtype=tl.float32)
        x_sum = tl.zeros((BLOCK_K8,) if ROWS == 1 else (ROWS, BLOCK_K8), dtype=tl.float32)
        for i in tl.static_range(8):
            k = k0 + offs_j * 8 + i
            xi = _load_x(x_rows, pre_ptr, k, mask_r, K, HAS_PRE_SCALE, EVEN_K, EVEN_M)
            x_sum += xi
            if i < 5:
                q_tiny = (words & (0xF << (4 * i))).to(tl.float32, bitcast=True)
                xi = xi * (18446744073709551616.0 / (1 << (4 * i)))  # 2**(64 - 4i)
            else:
                q_tiny = (high & (0xF << (4 * (i - 5)))).to(tl.float32, bitcast=True)
                xi = xi * (18446744073709551616.0 / (1 << (4 * (i - 5))))
            if ROWS == 1:
                dot += xi[None, :] * q_tiny
            else:
                dot += xi[:, None, :] * q_tiny[None, :, :]
        if ROWS == 1:
            acc += s_big * dot - s_zero * x_sum[None, :]
        else:
            acc += s_big[None, :, :] * dot - s_zero[None, :, :] * x_sum[:, None, :]
    out = out_ptr + pid_split * stride_osplit
    if ROWS == 1:
        tl.store(out + pid_m * stride_om + offs_n, tl.sum(acc, axis=1).to(out_ptr.dtype.element_ty), mask=mask_n)
    else:
        y = tl.sum(acc, axis=2)  # [ROWS, BLOCK_N]
        tl.store(out + rows[:, None] * stride_om + offs_n[None, :], y.to(out_ptr.dtype.element_ty),
                 mask=mask_r & mask_n[None, :])


@triton.jit
def _splitk_reduce_kernel(part_ptr, y_ptr, MN, stride_split, SPLIT_K: tl.constexpr, BLOCK: tl.constexpr):
    """y[i] = sum_s part[s, i] (fp32, s in order), stored in y's dtype; part is [SPLIT_K, M*N] contiguous rows.

    SPLIT_K is a compile-time constant so the loop unrolls and every split's load
    is in flight at once (one memory round trip, not SPLIT_K / 4 of them).
    """
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < MN
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in tl.static_range(SPLIT_K):
        acc += tl.load(part_ptr + s * stride_split + offs, mask=mask, other=0.0)
    tl.store(y_ptr + offs, acc.to(y_ptr.dtype.element_ty), mask=mask)
