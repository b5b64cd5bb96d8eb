"""The int4 GEMV for M = 1 and 2 with its activation staged once per program, in Gluon (bf16 / fp16 / fp32;
offered on sm_90, where the Gluon GEMM runs).

Why (``benchmarks/results/kernel_notes.md``, "Eleventh session"): the Triton GEMV (``int4_gemv.py``) is
bound by its own instructions (15.1 us from L2 against 17.6 from HBM at 8192 x 8192 on the H200; 0.60
instructions per scheduler per cycle), and its largest overhead and largest stall are the activation: each
thread loads every activation value it needs from global memory (2-byte loads, 19-162 instructions before
use: 30% of the stall samples wait on global loads), converts it, multiplies it by its nibble plane's factor
and adds it into its word's sum, 4 instructions per value at 8 rows per value: 0.5 per weight of 3.34.

Here each program first stages its split's activation in shared memory, already in the form the loop
uses: ``x * pre * 2**(64 - 4p)`` for each column (p its nibble's place, as in ``int4_gemv.py``, whose
arithmetic this kernel keeps: one AND and one FFMA per weight, exact products of the subnormal-read
nibbles), laid out plane by plane, and each chunk's plain sum (a chunk: 4 words, 32 columns, one
thread's share of a row in a tile). In the loop a thread reads a plane's 4 values with one 16-byte shared
load, and a tile's 8 planes and its chunk sums with 9; the per-word scale step becomes one per chunk
(the 4 words' products are added first: 3 FADD, then 2 FFMA per row and chunk instead of 8).

Layout (explicit, ``L3``): a K tile of 256 columns is [BLOCK_N rows, 8 chunks, 4 words]; a thread holds 4
consecutive words (one 16-byte load) of BLOCK_N / (4 * num_warps) rows, a warp 4 rows x 8 chunks.

Scope: one or two activation rows per program (``KernelConfig.block_m``; grid (N / BLOCK_N, SPLIT,
cdiv(M, ROWS)); with two, each unpacked weight serves both rows' FFMAs), K_pad a multiple of 256 split
evenly, N a multiple of BLOCK_N, groups a multiple of 32 (a chunk lies in one group); ``fits`` says
whether a shape qualifies. Splits go to fp32 partials and the split-K reduce launch (the in-kernel sum
was slower inside a CUDA graph on the H200, kernel_notes.md).
"""

from __future__ import annotations

import torch
import triton

from awq_ao.kernels import pdl, ptx
from awq_ao.kernels.splitk import add_splits

try:  # Triton >= 3.5 ships Gluon; without it this path is never chosen
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    HAVE_GLUON = True
except ImportError:  # pragma: no cover - depends on the installed Triton
    HAVE_GLUON = False

BLOCK_K = 256  # columns per K tile: 8 chunks of 4 words
SMEM_BYTES = 64 * 1024  # most shared memory a program may take (the split grows to fit)


def shared_bytes(tiles: int, rows: int = 1) -> int:
    """Shared memory of a program staging ``tiles`` K tiles of ``rows`` activation rows: per tile and row 8 planes
    of 32 fp32 values and 8 chunk sums."""
    return rows * tiles * (8 * 32 + 8) * 4


def fits(n: int, k_pad: int, group_size: int, block_n: int, split: int) -> bool:
    """Whether this kernel takes a weight of N rows, K_pad columns and groups of ``group_size`` with this tile
    and split: whole tiles of rows and of 256 columns, the tiles split evenly, a 32-column chunk in one group."""
    tiles = k_pad // BLOCK_K
    return (HAVE_GLUON and n % block_n == 0 and k_pad % BLOCK_K == 0 and split >= 1 and tiles % split == 0
            and group_size % 32 == 0)


if HAVE_GLUON:
    _cta_barrier = getattr(gl, "thread_barrier", None) or gl.barrier  # renamed in Triton 3.9

    @gluon.jit
    def _stage_tile(x_smem, xsum_smem, slot, x_row, pre_ptr, col0, t, HAS_PRE_SCALE: gl.constexpr,
                    XL: gl.constexpr):
        """Tile t of an activation row (columns col0 + 256 t ...) into shared memory at ``slot``:
        x_smem[8 slot + i] [8 chunks, 4 words] fp32 ``x * pre * 2**(64 - 4p)`` of plane i, and xsum_smem[slot]
        [8 chunks] the chunks' plain sums. Column 8w + i of the tile (word w = 4c + e) is plane i of word w;
        planes 6 and 7 are read from the word shifted right by 8, so their factors are those of places 4 and 5."""
        c = gl.arange(0, 8, layout=gl.SliceLayout(1, XL))
        e = gl.arange(0, 4, layout=gl.SliceLayout(0, XL))
        word_col = col0 + t * 256 + gl.expand_dims(c, 1) * 32 + gl.expand_dims(e, 0) * 8
        x_sum = gl.zeros([8, 4], gl.float32, XL)
        for i in gl.static_range(8):
            xv = gl.load(x_row + word_col + i).to(gl.float32)
            if HAS_PRE_SCALE:
                xv = xv * gl.load(pre_ptr + word_col + i).to(gl.float32)
            x_sum = x_sum + xv
            if i < 6:
                x_smem.index(slot * 8 + i).store(xv * (18446744073709551616.0 / (1 << (4 * i))))  # 2**(64 - 4p)
            else:
                x_smem.index(slot * 8 + i).store(xv * (18446744073709551616.0 / (1 << (4 * (i - 2)))))
        xsum_smem.index(slot).store(gl.sum(x_sum, axis=1))

    @gluon.jit
    def _plane_dot(dot, words, high, x_smem, slot, L3: gl.constexpr):
        """``dot`` [BLOCK_N, 8, 4] plus each weight's masked nibble times its staged activation value: the 8
        planes of one tile (``slot`` its staged activation) for one activation row."""
        for i in gl.static_range(8):
            if i < 6:
                q_tiny = (words & (0xF << (4 * i))).to(gl.float32, bitcast=True)
            else:
                q_tiny = (high & (0xF << (4 * (i - 2)))).to(gl.float32, bitcast=True)
            plane = x_smem.index(slot * 8 + i).load(gl.SliceLayout(0, L3))  # [8, 4]: this thread's 4 values
            dot = dot + gl.expand_dims(plane, 0) * q_tiny
        return dot

    @gluon.jit
    def _scale_step(acc, dot, s_big, s_zero, xsum_smem, slot, L2: gl.constexpr):
        """``acc`` [BLOCK_N, 8] plus one tile's row sums: sum_k x (q - z) s = (s 2**85) sum_k (x 2**(64-4p))
        (q 2**(4p) 2**-149) - (s z) sum_k x, per row and chunk (the chunk's 4 words added first)."""
        x_sum = xsum_smem.index(slot).load(gl.SliceLayout(0, L2))
        acc = acc + s_big * gl.sum(dot, axis=2)
        return acc - s_zero * gl.expand_dims(x_sum, 0)

    @gluon.jit
    def _int4_gemv_staged_kernel(
        x_ptr, q_ptr, s_ptr, z_ptr, pre_ptr, out_ptr, M,
        stride_xm, stride_q, stride_s, stride_om, stride_osplit,
        GROUP_SIZE: gl.constexpr, HAS_PRE_SCALE: gl.constexpr, TILES: gl.constexpr, PREFETCH: gl.constexpr,
        SPLIT_OUT: gl.constexpr, ROWS: gl.constexpr, BLOCK_N: gl.constexpr, WARPS: gl.constexpr,
        L2_TILES: gl.constexpr = 0, PDL: gl.constexpr = 0,
    ):
        pid_n = gl.program_id(0)
        pid_split = gl.program_id(1)
        pid_m = gl.program_id(2)
        if L2_TILES > 0:  # the split's first L2_TILES weight tiles asked of L2 before the wait and the staging, whose
            # loads would otherwise come first (``KernelConfig.l2_prefetch``, at most the split's TILES)
            word0 = pid_split * TILES * 32  # (32 words: a 256-column tile of a row)
            ptx.gluon_prefetch_l2(q_ptr, pid_n * BLOCK_N, pid_n * BLOCK_N + BLOCK_N, stride_q, word0,
                                  word0 + TILES * 32, BLOCK_N, WARPS, 32, L2_TILES)
        if PDL:  # programmatic dependent launch (pdl.py): the kernel ahead finishes first
            pdl.gluon_prologue(PDL)
        L3: gl.constexpr = gl.BlockedLayout([1, 1, 4], [4, 8, 1], [WARPS, 1, 1], [2, 1, 0])
        XL: gl.constexpr = gl.BlockedLayout([1, 1], [8, 4], [WARPS, 1], [1, 0])  # a plane [8 chunks, 4 words]
        L2: gl.constexpr = gl.SliceLayout(2, L3)  # [rows, chunks]: per-chunk sums, scales, the accumulator
        XS: gl.constexpr = gl.SwizzledSharedLayout(vec=4, per_phase=1, max_phase=1, order=[1, 0])  # a plane
        S2: gl.constexpr = gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[0])
        col0 = pid_split * TILES * 256  # the split's first column
        row0 = pid_m * ROWS  # this program's first activation row (ROWS 1 or 2; a second past M reads row M - 1)

        # 1. the split's activation, staged once: row r's tile t at slot r * TILES + t
        x_smem = gl.allocate_shared_memory(gl.float32, [ROWS * TILES * 8, 8, 4], XS)  # [row, tile, plane]
        xsum_smem = gl.allocate_shared_memory(gl.float32, [ROWS * TILES, 8], S2)
        for r in gl.static_range(ROWS):
            x_row = x_ptr + gl.minimum(row0 + r, M - 1) * stride_xm
            for t in range(TILES):
                _stage_tile(x_smem, xsum_smem, r * TILES + t, x_row, pre_ptr, col0, t, HAS_PRE_SCALE, XL)
        _cta_barrier()

        # 2. the weight tiles: words [BLOCK_N, 8, 4], scales and zeros [BLOCK_N, 8] (each chunk's group)
        n = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, L2))
        c = gl.arange(0, 8, layout=gl.SliceLayout(0, L2))
        e = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(1, L3)))
        rows2 = gl.expand_dims(pid_n * BLOCK_N + n, 1)
        c2 = gl.expand_dims(c, 0)
        q_ptrs = (q_ptr + gl.expand_dims(rows2, 2) * stride_q + col0 // 8 + gl.expand_dims(c2, 2) * 4
                  + gl.expand_dims(gl.expand_dims(e, 0), 1))
        sz_ptrs = rows2 * stride_s + (col0 + c2 * 32) // GROUP_SIZE  # tile 0's; tile t adds 256 t / G
        acc0 = gl.zeros([BLOCK_N, 8], gl.float32, L2)
        acc1 = acc0  # (ROWS 2)
        if PREFETCH:
            next_words = gl.load(q_ptrs)
        for t in range(TILES):
            if PREFETCH:
                words = next_words
                if t + 1 < TILES:
                    next_words = gl.load(q_ptrs + (t + 1) * 32)
            else:
                words = gl.load(q_ptrs + t * 32)
            group = sz_ptrs + (t * 256) // GROUP_SIZE
            s = gl.load(s_ptr + group).to(gl.float32)
            s_zero = s * gl.load(z_ptr + group).to(gl.float32)
            s_big = s * 38685626227668133590597632.0  # s * 2**85
            high = words >> 8  # nibbles 6 and 7 in bits 16..23, below 2**24
            dot = _plane_dot(gl.zeros([BLOCK_N, 8, 4], gl.float32, L3), words, high, x_smem, t, L3)
            acc0 = _scale_step(acc0, dot, s_big, s_zero, xsum_smem, t, L2)
            if ROWS == 2:
                dot = _plane_dot(gl.zeros([BLOCK_N, 8, 4], gl.float32, L3), words, high, x_smem, TILES + t, L3)
                acc1 = _scale_step(acc1, dot, s_big, s_zero, xsum_smem, TILES + t, L2)

        # 3. each row's sums -> y (or the split's fp32 partials)
        ptrs = out_ptr + pid_split * stride_osplit + row0 * stride_om + pid_n * BLOCK_N + n
        _store_row(ptrs, gl.sum(acc0, axis=1), n >= 0, SPLIT_OUT)
        if ROWS == 2:
            _store_row(ptrs + stride_om, gl.sum(acc1, axis=1), (n * 0 + row0 + 1) < M, SPLIT_OUT)

    @gluon.jit
    def _store_row(ptrs, total, live, SPLIT_OUT: gl.constexpr):
        """One output row [BLOCK_N]: fp32 partials (SPLIT_OUT) or y in its dtype, where ``live``."""
        if SPLIT_OUT:
            gl.store(ptrs, total, mask=live)
        else:
            gl.store(ptrs, total.to(ptrs.dtype.element_ty), mask=live)


def staged_gemv_linear(x, words, scale, zero_point, pre, has_pre, y, group_size, config) -> torch.Tensor:
    """Launch the kernel for x [M, K_pad-covering K] (``fits`` holds for ``config``'s tile and split); y [M, N].

    words: int32 [N, K_pad / 8]; scale [N, K_pad / G] in x's dtype; zero_point uint8 [N, K_pad / G]; pre [K]
    (read only when ``has_pre``). x must have K_pad columns (the launcher pads it when K < K_pad). With more
    than one split the fp32 partials are added by the split-K reduce launch. A config's ``max_registers`` caps
    the kernel's registers per thread (ptxas ``maxnreg``).
    """
    m, n = x.shape[0], words.shape[0]
    if y is None:
        y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    tiles = words.shape[1] * 8 // BLOCK_K
    split = config.split_k
    out = y if split == 1 else torch.empty((split, m, n), dtype=torch.float32, device=x.device)
    grid = (n // config.block_n, split, triton.cdiv(m, config.block_m))
    _int4_gemv_staged_kernel[grid](
        x, words, scale, zero_point, pre, out, m,
        x.stride(0), words.stride(0), scale.stride(0), out.stride(-2), out.stride(0) if split > 1 else 0,
        GROUP_SIZE=group_size, HAS_PRE_SCALE=has_pre, TILES=tiles // split, PREFETCH=config.prefetch >= 1,
        SPLIT_OUT=split > 1, ROWS=config.block_m, BLOCK_N=config.block_n, WARPS=config.num_warps,
        num_warps=config.num_warps, maxnreg=config.max_registers or None,
        L2_TILES=min(config.l2_prefetch, tiles // split) if ptx.runs_ptx(x) else 0,
        **pdl.options(x.device, release=split > 1),
    )
    if split > 1:
        add_splits(out, y)
    return y
