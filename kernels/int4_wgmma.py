"""Hopper int4 GEMM for small M with the dequantized weight as wgmma's register operand (Gluon).

``y = (x * pre) @ dequantize(W).T`` for x bf16 / fp16 [M, K], M up to 64, on sm_90, computed
swapped (``y.T = W x.T``): the weight tile is the MMA's A operand (64 rows = one warp group's
M), the activation its B operand (M = the MMA's N: 8 .. 64). Same stored weight layout as the
other kernels (``qdata.view(int32)`` [N, K_pad / 8], column 8j+i in bits 4i .. 4i+3 of word j).

Why a second GEMM: the ``tl.dot`` GEMM (``int4_gemm.py``) unpacks its weight tile in a blocked
layout, and Triton converts it to the MMA's register layout through shared memory (on sm_90, per
128-column tile: 8 stores, 8 ``ldmatrix``, 9 CTA barriers; ``benchmarks/results/kernel_notes.md``).
Here the layouts are explicit (Gluon), and each thread loads exactly the words whose nibbles are
its own A-fragment elements, so the unpacked tile *is* the fragment (``convert_layout(...,
assert_trivial=True)``: the compiler refuses the kernel otherwise) and nothing goes through shared
memory but the activation, which is staged once per program.

How the words line up with the fragment. wgmma's A fragment (bf16 / fp16, ``k_width`` 2) gives
thread ``4g + c`` of warp w rows ``16w + g`` and ``16w + g + 8`` and, in each 16-column step, the
column pairs ``2c, 2c + 1`` and ``2c + 8, 2c + 9``: 32 of each row's 128 columns per tile. The
product does not depend on the order of K inside a tile, so the kernel feeds the MMA a permuted
order (the same for the weight and the activation): thread c takes the row's words ``4c .. 4c + 3``
(one 16-byte load, columns ``32c .. 32c + 31``), and pair p of word ``4c + q`` (its nibbles p and
p + 4, ``int4_gemm._pair_asm``'s order: one shift and one LOP3 per pair) becomes MMA column
``32q + 8p + 2c + b`` (b: the pair's half). In stored-column terms, MMA column
``32q + 16 p1 + 8 p0 + 2c + b`` is column ``32c + 8q + 4b + 2 p1 + p0``: the activation tile is
loaded in stored order (as [m, c, q, b, p1, p0]), its axes permuted (``X_TO_MMA``, free: a
relabelling of registers) and stored to shared memory in MMA order, once per program for its whole
K range.
``mma_column_order`` gives the permutation; ``tests/test_int4_wgmma.py`` checks it, and the
unpacking's join / permute / reshape, with the same constants in PyTorch.

Per 128-column tile a thread then loads two 16-byte words (rows g and g + 8), one scale and one
zero per row (its 32 columns lie in one group: groups of 32 .. any multiple of 32), unpacks 64
weights with 3 shifts, 32 LOP3 and 64 packed FMAs (``(q - z)`` exactly, then times the scale,
rounded once to the dtype, as a dense dequantized weight is), and issues 8 asynchronous wgmma
(k = 16) into the fp32 accumulator, then waits for them (none left in flight while the next tile is
unpacked into registers the MMA may still be reading: ``_mma_tile``); the words, scales and zeros are
loaded a tile ahead, from one
register buffer or (``KernelConfig.prefetch`` 2) two, each refilled for the tile two ahead as soon
as its tile is unpacked (the first loads go out before the activation is staged). Or
(``KernelConfig.num_stages`` >= 3) the words stream through a shared-memory ring by ``cp.async``,
``num_stages - 1`` tiles ahead, each thread's own 16-byte pieces (read back with ``ld.shared``), and
every tile's scales and zeros are staged with the activation: no global load waits in the loop, for
the two CTA barriers per tile that the compiler's shared-memory analysis adds (it cannot know that
each thread reads only what it copied). ``act_pre_scale`` is applied as the activation is staged
(``x * pre`` rounded to the dtype, as the dense path rounds it): no launch before the kernel in any
case.

The same kernel with ``KernelConfig.mma_sync`` issues mma.sync (``HMMA.16816``, the Ampere instruction,
which sm_90 keeps) instead of wgmma: the A fragment of m16n8k16 gives each thread the same elements of its
warp's 16 rows as wgmma's register operand does (the trivial conversion above holds for both), the
accumulator is mma.sync's (BLOCK_M / 8 tiles of n8 per warp), and the activation tile is read from shared
memory into the B fragment (``ldmatrix``) per tile. What it changes: nothing waits for a tile's MMAs. Each
warp runs on its own, and the register scoreboard makes only the instructions that read an MMA's result
wait for it, so the next tile's loads and unpacking overlap the MMAs (the wgmma loop waits for its warp
group's MMAs after each tile: 25-30 us at M = 16 on the H200's goal shapes, 20 us at M = 1 against the
GEMV's 17, kernel_notes.md). In sm_90 SASS: 2.6-3.2 instructions per weight and 49-80 registers at
BLOCK_M 8 and 16 (``benchmarks/compile_report.py --m 1 16``, Triton 3.6 and 3.9). It also compiles for sm_80 (no wgmma there),
which is not enabled: never run on such a GPU.

Split-K over grid axis 2 (the tiles of K are split in contiguous ranges of TILES): each split
stores an fp32 partial, added in split order by ``splitk._splitk_reduce_kernel`` or, with
``fused_reduce``, by the tile's last program (``splitk.py``'s counters and memory ordering: a CTA
barrier, one acquire-release atomic, the partials read through L2); with one split y is stored
directly. Tails in M, N and K are masked. Shared memory per program: ``shared_bytes``
(``KernelConfig.fitted`` raises the split until it is within ``WGMMA_SMEM_BYTES``).

Not traceable by Inductor (it re-emits user kernels as ``@triton.jit`` source), so the
``triton_op``'s body runs it through an opaque custom op (``awq_ao/ops.py``); it needs
``triton.experimental.gluon`` and a GPU of compute capability 9.x (``wgmma_available``).
"""

from __future__ import annotations

import functools
import os

import torch
import triton

from awq_ao.kernels import pdl, ptx
from awq_ao.kernels.int4_planes import MAGIC_PAIR_BF16, MAGIC_PAIR_FP16, pair_ptx
from awq_ao.kernels.splitk import add_splits

try:  # Triton >= 3.5 ships Gluon; without it this path is simply never chosen
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.ampere import async_copy, mma_v2
    from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, warpgroup_mma,
                                                                   warpgroup_mma_wait)
    HAVE_GLUON = True
except ImportError:  # pragma: no cover - depends on the installed Triton
    HAVE_GLUON = False

WGMMA_BLOCK_N = (64, 128)  # weight rows per program: one warp group (4 warps x 16 rows) or two
BLOCK_K = 128  # columns per K tile
WGMMA_BLOCK_M = (8, 16, 32, 64)  # activation rows per program: the MMA's N
WGMMA_SMEM_BYTES = 64 * 1024  # most shared memory a program may take (the split grows to fit)
# Experimental, off unless AWQ_AO_WGMMA_OVERLAP=1 (or set here): the two-buffer loop lets the first tile's
# MMAs run while the second is unpacked (``_mma_two_tiles``); 0 register hazards in the SASS, 96-128
# registers against 80-128, not yet run on a GPU (``benchmarks/wgmma_check.py`` checks and times both ways)
OVERLAP_PAIRS = os.environ.get("AWQ_AO_WGMMA_OVERLAP") == "1"
# The loads keep their masks even where the shape needs none (EVEN, ``wgmma_linear``) if AWQ_AO_GLUON_MASKED=1
# (or set here): without them ptxas issues the one-buffer loads closer to their use, so wgmma_check.py times one
# config both ways
FORCE_MASKED = os.environ.get("AWQ_AO_GLUON_MASKED") == "1"

# The MMA column order of a 128-column tile (see the module docstring). A stored column of the tile is
# 32c + 8q + 4b + 2 p1 + p0: the activation tile is loaded as [m, c, q, b, p1, p0] and permuted by
# X_TO_MMA to [m, q, p1, p0, c, b]; the unpacked weight comes out of the joins as [n, c, q, b, p0, p1] and
# is permuted by A_TO_MMA to the same [n, q, p1, p0, c, b]; both are then reshaped to [rows, 128].
X_TO_MMA = (0, 2, 4, 5, 1, 3)
A_TO_MMA = (0, 2, 5, 4, 1, 3)


def mma_column_order() -> torch.Tensor:
    """int64 [128]: the stored column (within a tile) that MMA column k' holds, as the kernel stages x."""
    cols = torch.arange(BLOCK_K).reshape(1, 4, 4, 2, 2, 2)  # [m, c, q, b, p1, p0] in stored order
    return cols.permute(X_TO_MMA).reshape(BLOCK_K)


@functools.lru_cache(maxsize=None)
def capability_major(device_index: int) -> int:
    return torch.cuda.get_device_capability(device_index)[0]


def shared_bytes(block_m: int, tiles: int, ring: int, block_n: int = 64, late: bool = False) -> int:
    """Shared memory of one program: its staged activation (``tiles`` x BLOCK_M x 128 x 2 bytes; with ``late``,
    late_dequant, and its column sums: 4 bytes per row and tile), and with a ring of ``ring`` stages the ring (a
    tile's words: block_n x 64 bytes a stage) and every tile's scales and zeros ([block_n, 4] x 3 bytes each)."""
    staged = tiles * block_m * (BLOCK_K * 2 + (4 if late else 0))
    return staged + (ring * block_n * BLOCK_K // 2 + tiles * block_n * 4 * 3 if ring else 0)


def wgmma_available(device: torch.device) -> bool:
    """Whether this kernel can run on ``device`` (CUDA, compute capability 9.x, Triton with Gluon), unless
    the environment sets ``AWQ_AO_DISABLE_WGMMA=1`` (``benchmarks/device_check.sh`` does, for the rest of
    its run, if ``wgmma_check.py`` fails)."""
    if not HAVE_GLUON or device.type != "cuda" or os.environ.get("AWQ_AO_DISABLE_WGMMA") == "1":
        return False
    return capability_major(device.index if device.index is not None else torch.cuda.current_device()) == 9


# the pair unpacking's PTX with the zero term and the scale packed once per row and tile (int4_planes.pair_ptx)
PAIR_PTX_BF16 = pair_ptx("bf16x2", packed_operands=True)
PAIR_PTX_FP16 = pair_ptx("f16x2", packed_operands=True)
# late_dequant: the pair as DTYPE ``magic + q`` only (one LOP3: nibbles p and p + 4 into the two halves' low bits,
# OR the magic, ``$3``), for an MMA on the raw nibbles; the zero, the magic and the scale come after it
RAW_PAIR_PTX = "{ .reg .b32 t; lop3.b32 t, $2, 983055, $3, 0xEA; mov.b32 {$0, $1}, t; }"
MAGIC_VALUE = {torch.bfloat16: 128.0, torch.float16: 1024.0}  # MAGIC_PAIR_*'s halves as numbers
# -(magic + z) in both 16-bit halves is NEG_MAGIC_PAIR + z * 0x10001: magic + z (z < 16) is exact with the
# magic's exponent (128.0 = 0x4300 in bf16, 1024.0 = 0x6400 in fp16, whose last mantissa bit is 1), so its
# bits are the magic's plus z, and the sign is bit 15; one integer multiply-add per row and tile (as int32)
NEG_MAGIC_PAIR = {torch.bfloat16: 0xC300C300 - (1 << 32), torch.float16: 0xE400E400 - (1 << 32)}


if HAVE_GLUON:
    _PTX_BF16 = gl.constexpr(PAIR_PTX_BF16)
    _PTX_FP16 = gl.constexpr(PAIR_PTX_FP16)
    _RAW_PTX = gl.constexpr(RAW_PAIR_PTX)
    _X_TO_MMA = gl.constexpr(X_TO_MMA)
    _A_TO_MMA = gl.constexpr(A_TO_MMA)
    _cta_barrier = getattr(gl, "thread_barrier", None) or gl.barrier  # renamed in Triton 3.9
    _async_load = getattr(async_copy, "async_load", None) or async_copy.async_copy_global_to_shared  # likewise

    def words_layout(block_n: int):
        """The words [block_n rows, 4 (c), 4 (q)] as the A fragment wants them: thread 4g + c of warp w holds
        rows 16w + g and 16w + g + 8 (a register bit), and its words 4c .. 4c + 3 (two register bits)."""
        warp_bases = [[16 << i, 0, 0] for i in range(block_n.bit_length() - 5)]  # 64 rows: 2 bits, 128: 3
        return gl.DistributedLinearLayout(
            reg_bases=[[0, 0, 1], [0, 0, 2], [8, 0, 0]],
            lane_bases=[[0, 1, 0], [0, 2, 0], [1, 0, 0], [2, 0, 0], [4, 0, 0]],
            warp_bases=warp_bases, block_bases=[], shape=[block_n, 4, 4])

    @gluon.jit
    def _pair(words, neg_zero2, scale2, magic_pair, DTYPE: gl.constexpr):
        """Pair p of each word (the word already shifted right by 4p) -> columns p and p + 4 as DTYPE
        ``(q - z) * s``. neg_zero2 / scale2: int32, ``-(magic + z)`` and ``s`` in both 16-bit halves."""
        if DTYPE == gl.bfloat16:
            return gl.inline_asm_elementwise(_PTX_BF16, "=h,=h,r,r,r,r", [words, neg_zero2, scale2, magic_pair],
                                             dtype=(gl.bfloat16, gl.bfloat16), is_pure=True, pack=1)
        else:
            return gl.inline_asm_elementwise(_PTX_FP16, "=h,=h,r,r,r,r", [words, neg_zero2, scale2, magic_pair],
                                             dtype=(gl.float16, gl.float16), is_pure=True, pack=1)

    @gluon.jit
    def _raw_pair(words, magic_pair, DTYPE: gl.constexpr):
        """Pair p of each word (shifted right by 4p) -> columns p and p + 4 as DTYPE ``magic + q``, exact."""
        if DTYPE == gl.bfloat16:
            return gl.inline_asm_elementwise(_RAW_PTX, "=h,=h,r,r", [words, magic_pair],
                                             dtype=(gl.bfloat16, gl.bfloat16), is_pure=True, pack=1)
        else:
            return gl.inline_asm_elementwise(_RAW_PTX, "=h,=h,r,r", [words, magic_pair],
                                             dtype=(gl.float16, gl.float16), is_pure=True, pack=1)

    @gluon.jit
    def _both_halves(v, DTYPE: gl.constexpr):
        """DTYPE tensor -> int32 with its 16 bits in both halves (a packed operand of ``_pair``)."""
        bits = v.to(DTYPE).to(gl.int16, bitcast=True).to(gl.int32) & 0xFFFF
        return bits | (bits << 16)

    @gluon.jit
    def _weight_tile(q_ptr, s_ptr, z_ptr, rows, row_live, cs, qs, k, live, K_WORDS, stride_q, stride_s,
                     GROUP_SIZE: gl.constexpr, rows_acc, rows_acc_live, LATE: gl.constexpr, k_last,
                     EVEN: gl.constexpr):
        """The 128-column weight tile at column k: words int32 [64, 4 (c), 4 (q)] (thread c's 16 bytes of each of
        its rows), and uint8 zero / DTYPE scale [64, 4] (its 32 columns lie in one group), or with LATE
        (``late_dequant``: the tile lies in one group) [64] per row in ``rows_acc``'s layout (the accumulator's
        rows); masked off past K, past N and where ``live`` is False (no memory traffic). EVEN (every row and
        every tile of the program's K range exists): no masks; a tile past the range (``live`` False, a load
        ahead at the end) reads the program's last tile again, k_last, which the caches still hold."""
        if EVEN:
            k = gl.minimum(k, k_last)
        ptrs, mask = _word_addresses(q_ptr, rows, row_live, cs, qs, k, live, K_WORDS, stride_q)
        if EVEN:
            words = gl.load(ptrs)
        else:
            words = gl.load(ptrs, mask=mask, other=0)
        scale, zero = _tile_scales(s_ptr, z_ptr, rows, row_live, cs, rows_acc, rows_acc_live, k, live, K_WORDS,
                                   stride_s, GROUP_SIZE, LATE, EVEN)
        return words, scale, zero

    @gluon.jit
    def _tile_scales(s_ptr, z_ptr, rows, row_live, cs, rows_acc, rows_acc_live, k, live, K_WORDS, stride_s,
                     GROUP_SIZE: gl.constexpr, LATE: gl.constexpr, EVEN: gl.constexpr):
        """The scale and zero of the tile at column k as ``_mma_tile`` takes them: [64, 4] per row and thread
        column (``_scale_tile``), or with LATE [64] per row in the accumulator's layout (``_row_scale``)."""
        if LATE:
            return _row_scale(s_ptr, z_ptr, rows_acc, rows_acc_live, k, live, K_WORDS, stride_s, GROUP_SIZE, EVEN)
        else:
            return _scale_tile(s_ptr, z_ptr, rows, row_live, cs, k, live, K_WORDS, stride_s, GROUP_SIZE, EVEN)

    @gluon.jit
    def _row_scale(s_ptr, z_ptr, rows, rows_live, k, live, K_WORDS, stride_s, GROUP_SIZE: gl.constexpr,
                   EVEN: gl.constexpr = False):
        """Scale and zero [rows] of the group of column k (the whole 128-column tile's, with late_dequant)."""
        ptrs = rows * stride_s + k // GROUP_SIZE
        if EVEN:
            return gl.load(s_ptr + ptrs), gl.load(z_ptr + ptrs)
        group_live = rows_live & (k < K_WORDS * 8) & live
        return gl.load(s_ptr + ptrs, mask=group_live, other=0.0), gl.load(z_ptr + ptrs, mask=group_live, other=0)

    @gluon.jit
    def _scale_tile(s_ptr, z_ptr, rows, row_live, cs, k, live, K_WORDS, stride_s, GROUP_SIZE: gl.constexpr,
                    EVEN: gl.constexpr = False):
        """``_weight_tile``'s scale and zero [64, 4] alone."""
        col = k + cs[None, :] * 32
        group = rows[:, None] * stride_s + col // GROUP_SIZE
        if EVEN:
            return gl.load(s_ptr + group), gl.load(z_ptr + group)
        group_live = row_live & (col < K_WORDS * 8) & live
        scale = gl.load(s_ptr + group, mask=group_live, other=0.0)
        zero = gl.load(z_ptr + group, mask=group_live, other=0)
        return scale, zero

    @gluon.jit
    def _word_addresses(q_ptr, rows, row_live, cs, qs, k, live, K_WORDS, stride_q):
        """Pointers and mask [64, 4 (c), 4 (q)] of the words of the 128-column tile at column k (thread c's 16
        bytes of each of its rows); off past K, past N and where ``live`` is False."""
        word = k // 8 + cs[None, :, None] * 4 + qs[None, None, :]
        return q_ptr + rows[:, None, None] * stride_q + word, row_live[:, :, None] & (word < K_WORDS) & live

    @gluon.jit
    def _copy_words(slot, q_ptr, rows, row_live, cs, qs, k, live, K_WORDS, stride_q):
        """Asynchronous copy (``cp.async``, 16 bytes per row per thread) of the words of the 128-column tile at
        column k into ``slot`` [64, 4, 4] int32, laid out as ``_weight_tile``'s words, then a commit. Each
        thread reads back only what it copied itself, so its own ``wait_group`` would suffice; Triton's
        shared-memory analysis adds CTA barriers anyway."""
        ptrs, mask = _word_addresses(q_ptr, rows, row_live, cs, qs, k, live, K_WORDS, stride_q)
        _async_load(slot, ptrs, mask=mask)
        async_copy.commit_group()

    @gluon.jit
    def _fragment(words, scale, zero, magic_pair, DTYPE: gl.constexpr, NEG_MAGIC: gl.constexpr, A_OP: gl.constexpr,
                  LATE: gl.constexpr = False):
        """One weight tile (``_weight_tile``'s words, scales, zeros) unpacked into the MMA's A fragment
        [rows, 128] in MMA column order: ``(q - z) * s``, or with LATE ``magic + q`` (scale and zero unused)."""
        if LATE:
            l0, h0 = _raw_pair(words, magic_pair, DTYPE)
            l1, h1 = _raw_pair(words >> 4, magic_pair, DTYPE)
            l2, h2 = _raw_pair(words >> 8, magic_pair, DTYPE)
            l3, h3 = _raw_pair(words >> 12, magic_pair, DTYPE)
        else:
            scale2 = _both_halves(scale, DTYPE)[:, :, None]
            neg_zero2 = (zero.to(gl.int32) * 0x10001 + NEG_MAGIC)[:, :, None]
            l0, h0 = _pair(words, neg_zero2, scale2, magic_pair, DTYPE)
            l1, h1 = _pair(words >> 4, neg_zero2, scale2, magic_pair, DTYPE)
            l2, h2 = _pair(words >> 8, neg_zero2, scale2, magic_pair, DTYPE)
            l3, h3 = _pair(words >> 12, neg_zero2, scale2, magic_pair, DTYPE)
        # [64, c, q] x (pair p, half b) -> [64, c, q, b, p0, p1] -> MMA order [64, q, p1, p0, c, b]
        a = gl.join(gl.join(gl.join(l0, h0), gl.join(l1, h1)), gl.join(gl.join(l2, h2), gl.join(l3, h3)))
        a = gl.reshape(gl.permute(a, _A_TO_MMA.value), [words.shape[0], 128])
        return gl.convert_layout(a, A_OP, assert_trivial=True)

    @gluon.jit
    def _x_sum(xsum_smem, t, ACC_COL: gl.constexpr, LATE: gl.constexpr):
        """With LATE, tile t's staged column sums [BLOCK_M] in the accumulator's column layout; else 0 (unused)."""
        if LATE:
            return xsum_smem.index(t).load(ACC_COL)
        else:
            return 0

    @gluon.jit
    def _mma_tile(acc, words, scale, zero, x_tile, x_sum, magic_pair, DTYPE: gl.constexpr, NEG_MAGIC: gl.constexpr,
                  A_OP: gl.constexpr, B_OP: gl.constexpr, MMA_SYNC: gl.constexpr, LATE: gl.constexpr,
                  MAGIC: gl.constexpr):
        """Unpack one weight tile into the A fragment and multiply it by the staged activation tile x_tile
        [BLOCK_M, 128].

        wgmma (MMA_SYNC False): 8 asynchronous wgmma, then a wait for them all. No group is left in flight
        across calls: the MMA reads its A registers asynchronously, and with a group pending at the loop's back
        edge ptxas (Triton 3.6) reused them for the next tile's unpacking (the wait's ``deps`` name the
        16-bit values, not the packed registers the MMA reads): wrong products on the H200. The SASS check
        ``compile_report.wgmma_register_hazards`` finds such writes (tests/test_kernel_configs.py).
        mma.sync (MMA_SYNC, B_OP the B fragment's layout): the activation tile read into registers
        (``ldmatrix``), then 8 x BLOCK_M / 8 HMMA m16n8k16 per warp; each warp runs on its own, and the
        hardware's register scoreboard, not a wait, orders the next tile's unpacking after the reads.
        LATE (with mma.sync; the tile lies in one group; scale, zero [rows] as ``_row_scale`` gives them; x_sum
        [BLOCK_M] the fp32 sums of the staged tile's columns, in the accumulator's column layout): the MMA
        multiplies the raw ``magic + q`` into a zeroed accumulator, and
        ``acc += s * (P - (magic + z) * x_sum)`` applies the zero, the magic and the scale once per row and
        tile: one LOP3 per two weights and a shift per pair left in the unpacking."""
        a = _fragment(words, scale, zero, magic_pair, DTYPE, NEG_MAGIC, A_OP, LATE)
        if MMA_SYNC:
            if LATE:
                part = mma_v2(a, x_tile.permute((1, 0)).load(B_OP), gl.zeros_like(acc))
                s = scale.to(gl.float32)
                acc = acc + s[:, None] * part  # two FMAs per element
                acc = acc - (s * (zero.to(gl.float32) + MAGIC))[:, None] * x_sum[None, :]
            else:
                acc = mma_v2(a, x_tile.permute((1, 0)).load(B_OP), acc)
        else:
            acc = warpgroup_mma(a, x_tile.permute((1, 0)), acc, is_async=True)
            acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, a))[0]
        return acc

    @gluon.jit
    def _mma_two_tiles(acc, words_a, scale_a, zero_a, x_a, words_b, scale_b, zero_b, x_b, magic_pair,
                       DTYPE: gl.constexpr, NEG_MAGIC: gl.constexpr, A_OP: gl.constexpr):
        """Two tiles (the two register buffers'): tile a's MMAs run while tile b is unpacked, then one wait
        for both. Both fragments are live to that wait, so ptxas keeps tile a's registers (0 hazards in the
        SASS of every two-buffer variant, Triton 3.6 and 3.9; the loop carries nothing in flight)."""
        a = _fragment(words_a, scale_a, zero_a, magic_pair, DTYPE, NEG_MAGIC, A_OP)
        acc = warpgroup_mma(a, x_a.permute((1, 0)), acc, is_async=True)
        b = _fragment(words_b, scale_b, zero_b, magic_pair, DTYPE, NEG_MAGIC, A_OP)
        acc = warpgroup_mma(b, x_b.permute((1, 0)), acc, is_async=True)
        return warpgroup_mma_wait(num_outstanding=0, deps=(acc, a, b))[0]

    @gluon.jit
    def _int4_wgmma_kernel(
        x_ptr, q_ptr, s_ptr, z_ptr, pre_ptr, out_ptr, y_ptr, counter_ptr,
        M, N, K, K_WORDS, stride_xm, stride_q, stride_s, stride_om, stride_osplit, magic_pair,
        GROUP_SIZE: gl.constexpr, HAS_PRE_SCALE: gl.constexpr, BLOCK_M: gl.constexpr, TILES: gl.constexpr,
        SPLIT_OUT: gl.constexpr, FUSED_SPLITS: gl.constexpr, TWO_BUFFERS: gl.constexpr, OVERLAP: gl.constexpr,
        RING: gl.constexpr, MMA_SYNC: gl.constexpr, LATE: gl.constexpr, MAGIC: gl.constexpr, EVEN: gl.constexpr,
        NEG_MAGIC: gl.constexpr, BLOCK_N: gl.constexpr, WORDS: gl.constexpr, L2_TILES: gl.constexpr = 0,
        PDL: gl.constexpr = 0,
    ):
        """One program (BLOCK_N / 16 warps: one or two warp groups): rows [BLOCK_N pid_n, +BLOCK_N) of W, activation rows [BLOCK_M pid_m, +BLOCK_M), K tiles
        [TILES pid_k, +TILES). out: y [M, N] in x's dtype, or (SPLIT_OUT) fp32 partials [split, M, N]; with
        FUSED_SPLITS (the split count) the last program of each output tile adds them into y [M, N]
        (``splitk.py``'s protocol: counter_ptr holds one zeroed int32 per output tile, left at 0). LATE
        (``late_dequant``, with MMA_SYNC; groups of a multiple of 128): ``_mma_tile`` on raw nibbles, MAGIC the
        magic's value (128.0 bf16, 1024.0 fp16)."""
        DTYPE: gl.constexpr = x_ptr.dtype.element_ty
        # WORDS (``words_layout``): the words [BLOCK_N rows, 4 (c), 4 (q)] as thread 4g + c of warp w holds them
        ROW_C: gl.constexpr = gl.SliceLayout(2, WORDS)  # [BLOCK_N, 4]: a row's scale / zero for a thread's 32 columns
        # the accumulator of wgmma (m64nBLOCK_Mk16 per warp group) or of mma.sync (m16n8k16 per warp); the A
        # fragment of both gives a thread the same elements of its warp's 16 rows (``_fragment`` asserts it)
        if MMA_SYNC:
            ACC: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[BLOCK_N // 16, 1],
                                                          instr_shape=[16, 8])
        else:
            ACC: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[BLOCK_N // 16, 1],
                                                          instr_shape=[16, BLOCK_M, 16])
        A_OP: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=ACC, k_width=2)
        B_OP: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=ACC, k_width=2)
        ACC_ROW: gl.constexpr = gl.SliceLayout(1, ACC)  # [BLOCK_N]: per weight row, as the accumulator holds it
        ACC_COL: gl.constexpr = gl.SliceLayout(0, ACC)  # [BLOCK_M]: per activation row
        # the activation tile [m, c, q, b, p1, p0]: 8 stored-consecutive columns (16 bytes) per thread
        XL: gl.constexpr = gl.BlockedLayout([1, 1, 1, 2, 2, 2], [2, 4, 4, 1, 1, 1], [BLOCK_N // 16, 1, 1, 1, 1, 1],
                                            [5, 4, 3, 2, 1, 0])
        XS: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)
        S1: gl.constexpr = gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[0])  # [TILES, n] rows

        pid_n = gl.program_id(0)
        pid_m = gl.program_id(1)
        pid_k = gl.program_id(2)
        m0 = pid_m * BLOCK_M
        k0 = pid_k * (TILES * 128)
        if L2_TILES > 0:  # the split's first L2_TILES weight tiles asked of L2 before the wait (``l2_prefetch``)
            ptx.gluon_prefetch_l2(q_ptr, pid_n * BLOCK_N, N, stride_q, k0 // 8, K_WORDS, BLOCK_N, BLOCK_N // 16, 16,
                                  L2_TILES)
        if PDL:  # programmatic dependent launch (pdl.py): the kernel ahead finishes first
            pdl.gluon_prologue(PDL)
        k_last = k0 + (TILES - 1) * 128  # (EVEN: where the loads ahead past the range go)

        # 0. the first weight tiles' loads, in flight while the activation is staged
        rows = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, gl.SliceLayout(1, ROW_C))
        cs = gl.arange(0, 4, gl.SliceLayout(0, ROW_C))
        qs = gl.arange(0, 4, gl.SliceLayout(0, gl.SliceLayout(1, WORDS)))
        row_live = rows[:, None] < N
        rows_acc = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, ACC_ROW)  # (LATE: each row's scale and zero)
        rows_acc_live = rows_acc < N
        if RING > 0:  # the words of the first RING - 1 tiles into the ring; scales and zeros staged below
            WS: gl.constexpr = gl.SwizzledSharedLayout(vec=4, per_phase=1, max_phase=1, order=[2, 1, 0])
            ring = gl.allocate_shared_memory(gl.int32, [RING, BLOCK_N, 4, 4], WS)
            for i in gl.static_range(RING - 1):
                _copy_words(ring.index(i), q_ptr, rows, row_live, cs, qs, k0 + i * 128, i < TILES, K_WORDS, stride_q)
        else:
            w_a, s_a, z_a = _weight_tile(q_ptr, s_ptr, z_ptr, rows, row_live, cs, qs, k0, True, K_WORDS, stride_q,
                                         stride_s, GROUP_SIZE, rows_acc, rows_acc_live, LATE, k_last, EVEN)
        if TWO_BUFFERS:
            w_b, s_b, z_b = _weight_tile(q_ptr, s_ptr, z_ptr, rows, row_live, cs, qs, k0 + 128, TILES > 1, K_WORDS,
                                         stride_q, stride_s, GROUP_SIZE, rows_acc, rows_acc_live, LATE, k_last, EVEN)
        acc = gl.zeros([BLOCK_N, BLOCK_M], gl.float32, ACC)

        # 1. the activation of the whole K range, in MMA column order, into shared memory (once); with LATE also
        # each tile's column sums per activation row (fp32, of the values staged)
        x_smem = gl.allocate_shared_memory(DTYPE, [TILES, BLOCK_M, 128], XS)
        if LATE:
            xsum_smem = gl.allocate_shared_memory(gl.float32, [TILES, BLOCK_M], S1)
        else:
            xsum_smem = x_smem  # (never read)
        L5: gl.constexpr = gl.SliceLayout(5, XL)
        L4: gl.constexpr = gl.SliceLayout(4, L5)
        L3: gl.constexpr = gl.SliceLayout(3, L4)
        L2: gl.constexpr = gl.SliceLayout(2, L3)
        mi = gl.arange(0, BLOCK_M, gl.SliceLayout(1, L2))
        ci = gl.arange(0, 4, gl.SliceLayout(0, L2))
        qi = gl.arange(0, 4, gl.SliceLayout(0, gl.SliceLayout(1, L3)))
        bi = gl.arange(0, 2, gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(2, L4))))
        p1i = gl.arange(0, 2, gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, L5)))))
        p0i = gl.arange(0, 2, gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, gl.SliceLayout(4, XL))))))
        rows_x = m0 + mi[:, None, None, None, None, None]
        cols = (ci[None, :, None, None, None, None] * 32 + qi[None, None, :, None, None, None] * 8
                + bi[None, None, None, :, None, None] * 4 + p1i[None, None, None, None, :, None] * 2
                + p0i[None, None, None, None, None, :])
        for t in range(TILES):
            col = k0 + t * 128 + cols
            xt = gl.load(x_ptr + rows_x * stride_xm + col, mask=(rows_x < M) & (col < K), other=0.0)
            if HAS_PRE_SCALE:
                pre = gl.load(pre_ptr + col, mask=col < K, other=0.0)
                xt = (xt.to(gl.float32) * pre.to(gl.float32)).to(DTYPE)
            xt = gl.reshape(gl.permute(xt, _X_TO_MMA.value), [BLOCK_M, 128])
            x_smem.index(t).store(xt)
            if LATE:
                xsum_smem.index(t).store(gl.sum(xt.to(gl.float32), axis=1))
        if RING > 0:  # and every tile's scales and zeros, read from shared memory in the loop
            if LATE:  # one per row and tile
                s_smem = gl.allocate_shared_memory(DTYPE, [TILES, BLOCK_N], S1)
                z_smem = gl.allocate_shared_memory(gl.uint8, [TILES, BLOCK_N], S1)
            else:  # one per row, tile and thread column
                SZ: gl.constexpr = gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[1, 0])
                s_smem = gl.allocate_shared_memory(DTYPE, [TILES, BLOCK_N, 4], SZ)
                z_smem = gl.allocate_shared_memory(gl.uint8, [TILES, BLOCK_N, 4], SZ)
            for t in range(TILES):
                st, zt = _tile_scales(s_ptr, z_ptr, rows, row_live, cs, rows_acc, rows_acc_live, k0 + t * 128, True,
                                      K_WORDS, stride_s, GROUP_SIZE, LATE, False)
                s_smem.index(t).store(st)
                z_smem.index(t).store(zt)
        if not MMA_SYNC:  # (mma.sync reads registers loaded by ldmatrix: the CTA barrier below suffices)
            fence_async_shared()  # the generic-proxy stores before the MMAs' async-proxy reads
        _cta_barrier()

        # 2. the weight tiles, each loaded a tile ahead. TWO_BUFFERS: two at a time from two register buffers
        # (a, b), each refilled right after its tile is unpacked, for the tile two ahead, so the loop carries no
        # copies; else one buffer, rotated. In sm_90 SASS ptxas places the refills after the tile's MMAs and,
        # with one buffer, copies the freshly loaded registers at the top of the next iteration, which waits
        # for the load there (kernel_notes.md); with two, each load has the other tile's work to arrive in
        # (80 registers at BLOCK_M 8 and 16, against 71-72 with one, since each tile's MMAs are waited for; 128 at 64)
        SC: gl.constexpr = ACC_ROW if LATE else ROW_C  # the layout of a tile's scales and zeros
        if RING > 0:  # the words through the ring, RING - 1 tiles ahead: LDGSTS, no registers to wait on
            for t in range(TILES):
                ahead = t + RING - 1
                _copy_words(ring.index(ahead % RING), q_ptr, rows, row_live, cs, qs, k0 + ahead * 128, ahead < TILES,
                            K_WORDS, stride_q)
                async_copy.wait_group(RING - 1)  # this thread's copies of tile t have landed
                words = ring.index(t % RING).load(WORDS)
                acc = _mma_tile(acc, words, s_smem.index(t).load(SC), z_smem.index(t).load(SC), x_smem.index(t),
                                _x_sum(xsum_smem, t, ACC_COL, LATE), magic_pair, DTYPE, NEG_MAGIC, A_OP, B_OP,
                                MMA_SYNC, LATE, MAGIC)
        elif TWO_BUFFERS:
            for pair in range(TILES // 2):
                t = 2 * pair
                if OVERLAP:  # tile t's MMAs in flight while tile t + 1 is unpacked, one wait for both
                    acc = _mma_two_tiles(acc, w_a, s_a, z_a, x_smem.index(t), w_b, s_b, z_b, x_smem.index(t + 1),
                                         magic_pair, DTYPE, NEG_MAGIC, A_OP)
                else:
                    acc = _mma_tile(acc, w_a, s_a, z_a, x_smem.index(t), _x_sum(xsum_smem, t, ACC_COL, LATE),
                                    magic_pair, DTYPE, NEG_MAGIC, A_OP, B_OP, MMA_SYNC, LATE, MAGIC)
                w_a, s_a, z_a = _weight_tile(q_ptr, s_ptr, z_ptr, rows, row_live, cs, qs, k0 + (t + 2) * 128,
                                             t + 2 < TILES, K_WORDS, stride_q, stride_s, GROUP_SIZE, rows_acc,
                                             rows_acc_live, LATE, k_last, EVEN)
                if not OVERLAP:
                    acc = _mma_tile(acc, w_b, s_b, z_b, x_smem.index(t + 1), _x_sum(xsum_smem, t + 1, ACC_COL, LATE),
                                    magic_pair, DTYPE, NEG_MAGIC, A_OP, B_OP, MMA_SYNC, LATE, MAGIC)
                w_b, s_b, z_b = _weight_tile(q_ptr, s_ptr, z_ptr, rows, row_live, cs, qs, k0 + (t + 3) * 128,
                                             t + 3 < TILES, K_WORDS, stride_q, stride_s, GROUP_SIZE, rows_acc,
                                             rows_acc_live, LATE, k_last, EVEN)
            if TILES % 2 == 1:
                acc = _mma_tile(acc, w_a, s_a, z_a, x_smem.index(TILES - 1), _x_sum(xsum_smem, TILES - 1, ACC_COL, LATE),
                                magic_pair, DTYPE, NEG_MAGIC, A_OP, B_OP, MMA_SYNC, LATE, MAGIC)
        else:
            for t in range(TILES):
                w_n, s_n, z_n = _weight_tile(q_ptr, s_ptr, z_ptr, rows, row_live, cs, qs, k0 + (t + 1) * 128,
                                             t + 1 < TILES, K_WORDS, stride_q, stride_s, GROUP_SIZE, rows_acc,
                                             rows_acc_live, LATE, k_last, EVEN)
                acc = _mma_tile(acc, w_a, s_a, z_a, x_smem.index(t), _x_sum(xsum_smem, t, ACC_COL, LATE), magic_pair,
                                DTYPE, NEG_MAGIC, A_OP, B_OP, MMA_SYNC, LATE, MAGIC)
                w_a, s_a, z_a = w_n, s_n, z_n
        if not MMA_SYNC:
            acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))

        # 3. y.T tile -> y (or the split's fp32 partial), stored from the accumulator's own layout
        on = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, gl.SliceLayout(1, ACC))
        om = m0 + gl.arange(0, BLOCK_M, gl.SliceLayout(0, ACC))
        ptrs = out_ptr + pid_k * stride_osplit + om[None, :] * stride_om + on[:, None]
        live = (on[:, None] < N) & (om[None, :] < M)
        if SPLIT_OUT:
            gl.store(ptrs, acc, mask=live)
            if FUSED_SPLITS > 0:  # the last of the tile's programs to arrive adds the partials, in split order
                counter = counter_ptr + pid_m * gl.num_programs(0) + pid_n
                _cta_barrier()  # every thread's partial store before the counter's release
                arrived = gl.atomic_add(counter, 1, sem="acq_rel", scope="gpu")
                if arrived == FUSED_SPLITS - 1:
                    total = gl.zeros([BLOCK_N, BLOCK_M], gl.float32, ACC)
                    first = out_ptr + om[None, :] * stride_om + on[:, None]
                    for split in gl.static_range(FUSED_SPLITS):
                        total += gl.load(first + split * stride_osplit, mask=live, other=0.0, cache_modifier=".cg")
                    gl.store(y_ptr + om[None, :] * stride_om + on[:, None], total.to(y_ptr.dtype.element_ty),
                             mask=live)
                    gl.atomic_xchg(counter, 0, sem="relaxed", scope="gpu")
        else:
            gl.store(ptrs, acc.to(DTYPE), mask=live)


def even_loads(n: int, block_n: int, k_words: int, tiles_per_split: int) -> bool:
    """The kernel's EVEN: every weight row and every K tile of every program exists (N a multiple of the tile,
    K_pad of 128, the split's tile count dividing K's), so its loads take no masks; not with FORCE_MASKED."""
    tiles = triton.cdiv(k_words * 8, BLOCK_K)
    return n % block_n == 0 and k_words % 16 == 0 and tiles % tiles_per_split == 0 and not FORCE_MASKED


def wgmma_linear(x, words, scale, zero_point, pre, has_pre, y, group_size, in_features, config,
                 counters=None) -> torch.Tensor:
    """Launch the kernel of ``config`` (kind ``"wgmma"``, fitted) for x [M, K] bf16 / fp16 on sm_90; y [M, N].

    words: int32 [N, K_pad / 8]; scale [N, K_pad / G] in x's dtype; zero_point uint8 [N, K_pad / G]; pre [K]
    (read only when ``has_pre``). With more than one split, the fp32 partials are added by the split-K
    reduce launch or (``fused_reduce``) in the kernel, on ``counters`` (int32, all zero: the device's kept
    ones, ``splitk.tile_counters``; zeroed per call where there are none or too few).
    """
    m, n = x.shape[0], words.shape[0]
    if y is None:
        y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    k_words = words.shape[1]
    tiles = triton.cdiv(k_words * 8, BLOCK_K)
    tiles_per_split = triton.cdiv(tiles, config.split_k)
    split = triton.cdiv(tiles, tiles_per_split)
    out = y if split == 1 else torch.empty((split, m, n), dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(n, config.block_n), triton.cdiv(m, config.block_m), split)
    fused = config.fused_reduce and split > 1
    if fused and (counters is None or counters.numel() < grid[0] * grid[1]):
        counters = torch.zeros(grid[0] * grid[1], dtype=torch.int32, device=x.device)
    _int4_wgmma_kernel[grid](
        x, words, scale, zero_point, pre, out, y, counters if fused else y, m, n, in_features, k_words,
        x.stride(0), words.stride(0), scale.stride(0), out.stride(-2), out.stride(0) if split > 1 else 0,
        MAGIC_PAIR_BF16 if x.dtype == torch.bfloat16 else MAGIC_PAIR_FP16,
        GROUP_SIZE=group_size, HAS_PRE_SCALE=has_pre, BLOCK_M=config.block_m, TILES=tiles_per_split,
        SPLIT_OUT=split > 1, FUSED_SPLITS=split if fused else 0, NEG_MAGIC=NEG_MAGIC_PAIR[x.dtype],
        TWO_BUFFERS=config.prefetch == 2, OVERLAP=OVERLAP_PAIRS and config.prefetch == 2 and not config.mma_sync,
        RING=config.num_stages if config.num_stages >= 3 else 0, MMA_SYNC=config.mma_sync,
        LATE=config.late_dequant, MAGIC=MAGIC_VALUE[x.dtype],
        EVEN=even_loads(n, config.block_n, k_words, tiles_per_split),
        BLOCK_N=config.block_n, WORDS=words_layout(config.block_n), num_warps=config.block_n // 16,
        L2_TILES=min(config.l2_prefetch, tiles_per_split) if ptx.runs_ptx(x) else 0,
        **pdl.options(x.device, release=split > 1 and not fused),
    )
    if split > 1 and not fused:
        add_splits(out, y)
    return y
