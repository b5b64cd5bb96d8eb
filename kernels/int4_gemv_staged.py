"""The M = 1 int4 GEMV with its activation staged once per program, in Gluon (sm_80+, bf16 / fp16 / fp32).

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

Scope: one activation row per program (grid (N / BLOCK_N, SPLIT, M)), K_pad a multiple of 256 split
evenly, N a multiple of BLOCK_N, groups a multiple of 32 (a chunk lies in one group); ``fits`` says
whether a shape qualifies. Splits go to fp32 partials and the split-K reduce launch (the in-kernel sum
was slower inside a CUDA graph on the H200, kernel_notes.md).
"""

from __future__ import annotations

import torch

from awq_ao.kernels.splitk import add_splits

try:  # Triton >= 3.5 ships Gluon; without it this path is never chosen
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    HAVE_GLUON = True
except ImportError:  # pragma: no cover - depends on the installed Triton
    HAVE_GLUON = False

BLOCK_K = 256  # columns per K tile: 8 chunks of 4 words
SMEM_BYTES = 64 * 1024  # most shared memory a program may take (the split grows to fit)


def shared_bytes(tiles: int) -> int:
    """Shared memory of a program staging ``tiles`` K tiles: per tile 8 planes of 32 fp32 values and 8 chunk sums."""
    return tiles * (8 * 32 + 8) * 4


def fits(n: int, k_pad: int, group_size: int, block_n: int, split: int) -> bool:
    """Whether this kernel takes a weight of N rows, K_pad columns and groups of ``group_size`` with this tile
    and split: whole tiles of rows and of 256 columns, the tiles split evenly, a 32-column chunk in one group."""
    tiles = k_pad // BLOCK_K
    return (HAVE_GLUON and n % block_n == 0 and k_pad % BLOCK_K == 0 and split >= 1 and tiles % split == 0
            and group_size % 32 == 0)


if HAVE_GLUON:
    _cta_barrier = getattr(gl, "thread_barrier", None) or gl.barrier  # renamed in Triton 3.9

    @gluon.jit
    def _stage_tile(x_smem, xsum_smem, x_row, pre_ptr, col0, t, HAS_PRE_SCALE: gl.constexpr,
                    XL: gl.constexpr):
        """Tile t of the program's activation (columns col0 + 256 t ...) into shared memory: x_smem[8 t + i]
        [8 chunks, 4 words] fp32 ``x * pre * 2**(64 - 4p)`` of plane i, and xsum_smem[t] [8 chunks] the
        chunks' plain sums. Column 8w + i of the tile (word w = 4c + e) is plane i of word w; planes 6 and 7
        are read from the word shifted right by 8, so their factors are those of places 4 and 5."""
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
                x_smem.index(t * 8 + i).store(xv * (18446744073709551616.0 / (1 << (4 * i))))  # 2**(64 - 4p)
            else:
                x_smem.index(t * 8 + i).store(xv * (18446744073709551616.0 / (1 << (4 * (i - 2)))))
        xsum_smem.index(t).store(gl.sum(x_sum, axis=1))

    @gluon.jit
    def _int4_gemv_staged_kernel(
        x_ptr, q_ptr, s_ptr, z_ptr, pre_ptr, out_ptr,
        stride_xm, stride_q, stride_s, stride_om, stride_osplit,
        GROUP_SIZE: gl.constexpr, HAS_PRE_SCALE: gl.constexpr, TILES: gl.constexpr, PREFETCH: gl.constexpr,
        SPLIT_OUT: gl.constexpr, BLOCK_N: gl.constexpr, WARPS: gl.constexpr,
    ):
        pid_n = gl.program_id(0)
        pid_split = gl.program_id(1)
        pid_m = gl.program_id(2)
        L3: gl.constexpr = gl.BlockedLayout([1, 1, 4], [4, 8, 1], [WARPS, 1, 1], [2, 1, 0])
        XL: gl.constexpr = gl.BlockedLayout([1, 1], [8, 4], [WARPS, 1], [1, 0])  # a plane [8 chunks, 4 words]
        L2: gl.constexpr = gl.SliceLayout(2, L3)  # [rows, chunks]: per-chunk sums, scales, the accumulator
        XS: gl.constexpr = gl.SwizzledSharedLayout(vec=4, per_phase=1, max_phase=1, order=[1, 0])  # a plane
        S2: gl.constexpr = gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[0])
        col0 = pid_split * TILES * 256  # the split's first column

        # 1. the split's activation, staged once
        x_smem = gl.allocate_shared_memory(gl.float32, [TILES * 8, 8, 4], XS)  # [tile, plane] -> [8, 4]
        xsum_smem = gl.allocate_shared_memory(gl.float32, [TILES, 8], S2)
        x_row = x_ptr + pid_m * stride_xm
        for t in range(TILES):
            _stage_tile(x_smem, xsum_smem, x_row, pre_ptr, col0, t, HAS_PRE_SCALE, XL)
        _cta_barrier()

        # 2. the weight tiles: words [BLOCK_N, 8, 4], scales and zeros [BLOCK_N, 8] (each chunk's group)
        r = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, L2))
        c = gl.arange(0, 8, layout=gl.SliceLayout(0, L2))
        e = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(1, L3)))
        rows2 = gl.expand_dims(pid_n * BLOCK_N + r, 1)
        c2 = gl.expand_dims(c, 0)
        q_ptrs = (q_ptr + gl.expand_dims(rows2, 2) * stride_q + col0 // 8 + gl.expand_dims(c2, 2) * 4
                  + gl.expand_dims(gl.expand_dims(e, 0), 1))
        sz_ptrs = rows2 * stride_s + (col0 + c2 * 32) // GROUP_SIZE  # tile 0's; tile t adds 256 t / G
        acc = gl.zeros([BLOCK_N, 8], gl.float32, L2)
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
            z = gl.load(z_ptr + group).to(gl.float32)
            high = words >> 8  # nibbles 6 and 7 in bits 16..23, below 2**24
            dot = gl.zeros([BLOCK_N, 8, 4], gl.float32, L3)
            for i in gl.static_range(8):
                if i < 6:
                    q_tiny = (words & (0xF << (4 * i))).to(gl.float32, bitcast=True)
                else:
                    q_tiny = (high & (0xF << (4 * (i - 2)))).to(gl.float32, bitcast=True)
                plane = x_smem.index(t * 8 + i).load(gl.SliceLayout(0, L3))  # [8, 4]: this thread's 4 values
                dot = dot + gl.expand_dims(plane, 0) * q_tiny
            x_sum = xsum_smem.index(t).load(gl.SliceLayout(0, L2))
            # sum_k x (q - z) s = (s 2**85) sum_k (x 2**(64-4p)) (q 2**(4p) 2**-149) - (s z) sum_k x
            acc = acc + (s * 38685626227668133590597632.0) * gl.sum(dot, axis=2)
            acc = acc - (s * z) * gl.expand_dims(x_sum, 0)

        # 3. the row's sums -> y (or the split's fp32 partial)
        total = gl.sum(acc, axis=1)
        ptrs = out_ptr + pid_split * stride_osplit + pid_m * stride_om + pid_n * BLOCK_N + r
        if SPLIT_OUT:
            gl.store(ptrs, total)
        else:
            gl.store(ptrs, total.to(out_ptr.dtype.element_ty))


def staged_gemv_linear(x, words, scale, zero_point, pre, has_pre, y, group_size, config) -> torch.Tensor:
    """Launch the kernel for x [M, K_pad-covering K] (``fits`` holds for ``config``'s tile and split); y [M, N].

    words: int32 [N, K_pad / 8]; scale [N, K_pad / G] in x's dtype; zero_point uint8 [N, K_pad / G]; pre [K]
    (read only when ``has_pre``). x must have K_pad columns (the launcher pads it when K < K_pad). With more
    than one split the fp32 partials are added by the split-K reduce launch.
    """
    m, n = x.shape[0], words.shape[0]
    if y is None:
        y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    tiles = words.shape[1] * 8 // BLOCK_K
    split = config.split_k
    out = y if split == 1 else torch.empty((split, m, n), dtype=torch.float32, device=x.device)
    grid = (n // config.block_n, split, m)
    _int4_gemv_staged_kernel[grid](
        x, words, scale, zero_point, pre, out,
        x.stride(0), words.stride(0), scale.stride(0), out.stride(-2), out.stride(0) if split > 1 else 0,
        GROUP_SIZE=group_size, HAS_PRE_SCALE=has_pre, TILES=tiles // split, PREFETCH=config.prefetch >= 1,
        SPLIT_OUT=split > 1, BLOCK_N=config.block_n, WARPS=config.num_warps, num_warps=config.num_warps,
    )
    if split > 1:
        add_splits(out, y)
    return y
