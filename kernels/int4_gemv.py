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
``w & (0xF << 4p)`` read as a float, is ``q * 16**p * 2**-149``, exactly: any
bit pattern below 2**24 reads as itself times 2**-149 (a subnormal, or for
bit 23 set a normal float of the lowest exponent, whose steps are the same
2**-149); fp32 FMAs keep subnormals (Triton does not flush them), so
``x * 2**(64 - 4p)`` times that float is ``x * q * 2**-85``, rounded once as a
normal float (no overflow below |x| = 2**64, no underflow above 2**-41). Nibbles
0..5 are masked in place, 6 and 7 after one shift of the word by 8 bits, to
bits 16..23 (a nibble shifted down to bits 0..3 and masked with 0xF, ptxas
turns into a second shift and a bit-field extract: 0.13 instructions per
weight more). The
zero point and the scale leave the inner sum: a word's 8 columns share one group, so
``sum_k x_k (q_k - z) s = (s * 2**85) * sum_k x_k q_k 2**-85 - (s z) * sum_k x_k``
per word, summed over the words once at the end.
Everything accumulates in fp32. EVEN_K (K == K_pad) drops the activation masks.

A program handles ROWS activation rows (1, 2 or 4; ``KernelConfig.block_m``):
the weight tile is loaded and unpacked once and each nibble plane costs one
FFMA per row, each row with its own 2-d sums (written out row by row: a 3-d
[ROWS, BLOCK_N, BLOCK_K8] tile cost sm_90 layout conversions through shared
memory, 6.3 and 11.9 instructions per weight at 2 and 4 rows).

The weight words reach registers by plain loads, optionally PREFETCH tiles
ahead, or (LOOP_STAGES >= 3) through a shared-memory ring filled by
asynchronous copies, LOOP_STAGES - 1 tiles ahead of use.

Grid: (cdiv(N, BLOCK_N), SPLIT_K, cdiv(M, ROWS)). With SPLIT_K == 1 the program
stores its output rows in the activation dtype; otherwise it stores fp32
partial sums into ``out[split, m, :]``, which ``splitk._splitk_reduce_kernel``
adds in a second launch or, with FUSED_SPLITS (the split count, a constexpr),
the tile's last program adds into ``y`` (``splitk.py``; ``counter_ptr`` holds
one zeroed int32 per (row block, N block)).
"""

from __future__ import annotations

import triton
import triton.language as tl

from awq_ao.kernels import pdl, splitk
from awq_ao.kernels.ptx import prefetch_tiles_l2


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
def _load_x(x_row, k, live, pre, K, HAS_PRE_SCALE: tl.constexpr, EVEN_K: tl.constexpr, EVEN_M: tl.constexpr):
    """fp32 ``x[row, k] * pre`` [BLOCK_K8] (``pre`` the fp32 pre-scale of k, used only with HAS_PRE_SCALE);
    ``live`` (the row exists) is a [BLOCK_K8] mask, used unless EVEN_M."""
    if EVEN_K and EVEN_M:
        xi = tl.load(x_row + k).to(tl.float32)
    elif EVEN_K:
        xi = tl.load(x_row + k, mask=live, other=0.0).to(tl.float32)
    else:
        xi = tl.load(x_row + k, mask=live & (k < K), other=0.0).to(tl.float32)
    if HAS_PRE_SCALE:
        xi = xi * pre
    return xi


@triton.jit
def _scaled_add(acc, dot, x_sum, s_big, s_zero):
    """``acc + s_big * dot - s_zero * x_sum`` as two FMAs into the accumulator (one instruction per term, not
    a multiply, a fused multiply-subtract and an add)."""
    acc = acc + s_big * dot
    return acc - s_zero * x_sum[None, :]


@triton.jit
def _row_step(dot, x_sum, xi, q_tiny, factor):
    """One nibble plane of one activation row: ``dot += (x * 2**(64-4p)) q_tiny``, ``x_sum += x``."""
    return dot + (xi * factor)[None, :] * q_tiny, x_sum + xi


@triton.jit
def _int4_gemv_kernel(
    x_ptr, q_ptr, s_ptr, z_ptr, pre_ptr, out_ptr, y_ptr, counter_ptr,
    M, N, K, TILES, TILES_PER_SPLIT,
    stride_xm, stride_q, stride_s, stride_om, stride_osplit, stride_qblock, stride_qtile,
    GROUP_SIZE: tl.constexpr,
    HAS_PRE_SCALE: tl.constexpr,
    EVEN_K: tl.constexpr,
    EVEN_M: tl.constexpr,
    PREFETCH: tl.constexpr,
    ROWS: tl.constexpr,
    TILED: tl.constexpr,
    FUSED_SPLITS: tl.constexpr,
    LOOP_STAGES: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    L2_TILES: tl.constexpr = 0,
    PDL: tl.constexpr = 0,
):
    pid_n = tl.program_id(0)
    pid_split = tl.program_id(1)
    pid_m = tl.program_id(2)
    t_start = pid_split * TILES_PER_SPLIT
    t_end = tl.minimum(t_start + TILES_PER_SPLIT, TILES)
    if L2_TILES > 0:  # ask L2 for the program's first L2_TILES weight tiles before anything waits (the weight does
        # not depend on the kernel ahead; ``KernelConfig.l2_prefetch``); the requests return 0, added to t_start
        t_start += prefetch_tiles_l2(q_ptr, pid_n * BLOCK_N + tl.arange(0, BLOCK_N), N, stride_q, t_start, t_end,
                                     L2_TILES, BLOCK_K)
    if PDL:  # programmatic dependent launch (pdl.py; never in the source Inductor re-emits, which lacks ``pdl``)
        pdl.prologue(PDL)
    BLOCK_K8: tl.constexpr = BLOCK_K // 8
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    offs_j = tl.arange(0, BLOCK_K8)
    # Rows r = 0 .. ROWS-1 of this program, each with its own 2-d [BLOCK_N, BLOCK_K8] sums (a 3-d tile
    # would cost layout conversions through shared memory on sm_90); rows past ROWS are never defined.
    row0 = pid_m * ROWS
    x0 = x_ptr + row0 * stride_xm
    live0 = (offs_j * 0 + row0) < M
    if ROWS >= 2:
        live1 = (offs_j * 0 + row0 + 1) < M
    if ROWS >= 4:
        live2 = (offs_j * 0 + row0 + 2) < M
        live3 = (offs_j * 0 + row0 + 3) < M
    acc0 = tl.zeros((BLOCK_N, BLOCK_K8), dtype=tl.float32)
    if ROWS >= 2:
        acc1 = tl.zeros((BLOCK_N, BLOCK_K8), dtype=tl.float32)
    if ROWS >= 4:
        acc2 = tl.zeros((BLOCK_N, BLOCK_K8), dtype=tl.float32)
        acc3 = tl.zeros((BLOCK_N, BLOCK_K8), dtype=tl.float32)
    q_block = q_ptr + pid_n * stride_qblock
    # PREFETCH tiles ahead in registers (0, 1 or 2): tile t + PREFETCH loads while tile t computes. Or
    # LOOP_STAGES (3 or more; None: a plain loop): Triton's pipeliner streams the weight words through shared
    # memory with asynchronous copies (cp.async), LOOP_STAGES - 1 tiles ahead, so no warp waits for its own
    # loads (Marlin's way of keeping HBM busy); the scale, zero and activation loads (2-byte gathers) stay plain
    if PREFETCH >= 1:
        next_words, next_s, next_z = _load_tile(
            q_ptr, q_block, s_ptr, z_ptr, offs_n, offs_j, mask_n, t_start, t_end,
            stride_q, stride_qtile, stride_s, BLOCK_K, GROUP_SIZE, TILED)
    if PREFETCH >= 2:
        next2_words, next2_s, next2_z = _load_tile(
            q_ptr, q_block, s_ptr, z_ptr, offs_n, offs_j, mask_n, t_start + 1, t_end,
            stride_q, stride_qtile, stride_s, BLOCK_K, GROUP_SIZE, TILED)
    for t in tl.range(t_start, t_end, num_stages=LOOP_STAGES):
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
        high = words >> 8  # nibbles 6 and 7 now in bits 16..23, still below 2**24
        dot0 = tl.zeros((BLOCK_N, BLOCK_K8), dtype=tl.float32)
        sum0 = tl.zeros((BLOCK_K8,), dtype=tl.float32)
        if ROWS >= 2:
            dot1 = tl.zeros((BLOCK_N, BLOCK_K8), dtype=tl.float32)
            sum1 = tl.zeros((BLOCK_K8,), dtype=tl.float32)
        if ROWS >= 4:
            dot2 = tl.zeros((BLOCK_N, BLOCK_K8), dtype=tl.float32)
            sum2 = tl.zeros((BLOCK_K8,), dtype=tl.float32)
            dot3 = tl.zeros((BLOCK_N, BLOCK_K8), dtype=tl.float32)
            sum3 = tl.zeros((BLOCK_K8,), dtype=tl.float32)
        for i in tl.static_range(8):
            k = k0 + offs_j * 8 + i
            if i < 6:
                q_tiny = (words & (0xF << (4 * i))).to(tl.float32, bitcast=True)
                factor = 18446744073709551616.0 / (1 << (4 * i))  # 2**(64 - 4i)
            else:
                q_tiny = (high & (0xF << (4 * (i - 2)))).to(tl.float32, bitcast=True)
                factor = 18446744073709551616.0 / (1 << (4 * (i - 2)))
            pre = 0.0  # read only with HAS_PRE_SCALE
            if HAS_PRE_SCALE:  # one load of the pre-scale for every row
                if EVEN_K:
                    pre = tl.load(pre_ptr + k).to(tl.float32)
                else:
                    pre = tl.load(pre_ptr + k, mask=k < K, other=0.0).to(tl.float32)
            xi = _load_x(x0, k, live0, pre, K, HAS_PRE_SCALE, EVEN_K, EVEN_M)
            dot0, sum0 = _row_step(dot0, sum0, xi, q_tiny, factor)
            if ROWS >= 2:
                xi = _load_x(x0 + stride_xm, k, live1, pre, K, HAS_PRE_SCALE, EVEN_K, EVEN_M)
                dot1, sum1 = _row_step(dot1, sum1, xi, q_tiny, factor)
            if ROWS >= 4:
                xi = _load_x(x0 + 2 * stride_xm, k, live2, pre, K, HAS_PRE_SCALE, EVEN_K, EVEN_M)
                dot2, sum2 = _row_step(dot2, sum2, xi, q_tiny, factor)
                xi = _load_x(x0 + 3 * stride_xm, k, live3, pre, K, HAS_PRE_SCALE, EVEN_K, EVEN_M)
                dot3, sum3 = _row_step(dot3, sum3, xi, q_tiny, factor)
        acc0 = _scaled_add(acc0, dot0, sum0, s_big, s_zero)
        if ROWS >= 2:
            acc1 = _scaled_add(acc1, dot1, sum1, s_big, s_zero)
        if ROWS >= 4:
            acc2 = _scaled_add(acc2, dot2, sum2, s_big, s_zero)
            acc3 = _scaled_add(acc3, dot3, sum3, s_big, s_zero)
    out = out_ptr + pid_split * stride_osplit + row0 * stride_om + offs_n
    dtype = out_ptr.dtype.element_ty
    tl.store(out, tl.sum(acc0, axis=1).to(dtype), mask=mask_n)
    if ROWS >= 2:
        tl.store(out + stride_om, tl.sum(acc1, axis=1).to(dtype), mask=mask_n & ((offs_n * 0 + row0 + 1) < M))
    if ROWS >= 4:
        tl.store(out + 2 * stride_om, tl.sum(acc2, axis=1).to(dtype), mask=mask_n & ((offs_n * 0 + row0 + 2) < M))
        tl.store(out + 3 * stride_om, tl.sum(acc3, axis=1).to(dtype), mask=mask_n & ((offs_n * 0 + row0 + 3) < M))
    if FUSED_SPLITS > 1:  # the last split to finish this tile adds the partials (splitk.py); y has out's row stride
        counter = counter_ptr + pid_m * tl.num_programs(0) + pid_n
        if splitk.last_to_arrive(counter, FUSED_SPLITS):
            part = out_ptr + row0 * stride_om + offs_n
            y = y_ptr + row0 * stride_om + offs_n
            for r in tl.static_range(ROWS):
                live = mask_n & ((offs_n * 0 + row0 + r) < M)
                total = splitk.sum_splits(part + r * stride_om, live, stride_osplit, FUSED_SPLITS)
                tl.store(y + r * stride_om, total.to(y_ptr.dtype.element_ty), mask=live)
            splitk.reset_counter(counter)
