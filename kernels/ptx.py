"""Inline PTX shared by the Triton kernels, and whether a launch may use it.

A CUDA tensor's launch runs compiled PTX; CPU tensors run Triton's interpreter (the tests) or the Gluon emulator,
which have no PTX. The GEMM's packed unpacking (``USE_ASM``) and the L2 prefetch (``L2_TILES``) are on only where
``runs_ptx`` holds.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

try:  # Triton >= 3.5 ships Gluon
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
except ImportError:  # pragma: no cover - depends on the installed Triton
    gluon = None


def runs_ptx(x: torch.Tensor) -> bool:
    """Whether kernels launched on ``x``'s device run compiled PTX (a CUDA device)."""
    return x.is_cuda


@triton.jit
def prefetch_tiles_l2(q_ptr, rows, N, stride_q, t_start, t_end, TILES: tl.constexpr, BLOCK_K: tl.constexpr):
    """Ask the L2 cache for K tiles t_start .. t_start + TILES - 1 (none at or past t_end) of these weight rows
    (int32 [N, K_pad / 8] words; ``rows`` a 1-d block of row indices, none at or past N): one
    ``prefetch.global.L2`` per 128-byte line, a hint that writes no register and waits for nothing. Returns 0
    (int32), computed from the requests' outputs, for the caller to use so that they stay.

    The asm is declared pure: torch.compile's analysis of a user kernel's mutations gives up on an impure one
    and then takes every tensor argument as written (the weight copied each call). At the kernel's start only:
    inside the loop, a side-effecting asm cost the sm_90 GEMV 128 -> 163 registers (Triton 3.6, a scratch compile)."""
    LINES: tl.constexpr = (BLOCK_K + 255) // 256  # a row's tile is BLOCK_K / 2 bytes
    done = rows * 0
    for i in tl.static_range(TILES * LINES):
        t = t_start + i // LINES
        live = ((rows < N) & (t < t_end)).to(tl.int32)
        ptr = q_ptr + rows * stride_q + t * (BLOCK_K // 8) + (i % LINES) * 32  # 32 words: 128 bytes
        done = done | tl.inline_asm_elementwise(
            "{ .reg .pred p; setp.ne.b32 p, $2, 0; @p prefetch.global.L2 [$1]; mov.u32 $0, 0; }",
            "=r,l,r", [ptr, live], dtype=tl.int32, is_pure=True, pack=1)
    return tl.max(done, axis=0)


if gluon is not None:

    @gluon.jit
    def gluon_prefetch_l2(q_ptr, row0, n_rows, stride_q, word0, word_end, BLOCK_N: gl.constexpr, WARPS: gl.constexpr,
                          TILE_WORDS: gl.constexpr, TILES: gl.constexpr):
        """``prefetch_tiles_l2`` for the Gluon kernels: ask L2 for TILES tiles of TILE_WORDS words from word0 on,
        of rows row0 .. row0 + BLOCK_N - 1 (one per thread), none at or past row n_rows or word word_end. Plain
        side effects: the Gluon kernels run in the opaque op, which torch.compile does not analyse."""
        ROW1: gl.constexpr = gl.BlockedLayout([1], [32], [WARPS], [0])
        rows = row0 + gl.arange(0, BLOCK_N, ROW1)
        for t in gl.static_range(TILES):
            word = word0 + t * TILE_WORDS
            live = ((rows < n_rows) & (word < word_end)).to(gl.int32)
            gl.inline_asm_elementwise(
                "{ .reg .pred p; setp.ne.b32 p, $2, 0; @p prefetch.global.L2 [$1]; mov.u32 $0, 0; }",
                "=r,l,r", [q_ptr + rows * stride_q + word, live], dtype=gl.int32, is_pure=False, pack=1)
