"""Launch configurations of the int4 kernels: defaults, tuned tables, and the tuner.

A ``KernelConfig`` names the kernel (``"gemv"``: CUDA cores, 1, 2 or 4 activation
rows per program; ``"gemm"``: ``tl.dot`` tiles; ``"dequant"``: write the dense
weight once, then ``torch.mm``) and its tile sizes, split-K factor, warps and
pipeline stages. ``select_config(m, n, k, group_size, device)`` picks
one in this order:

1. a tuned entry for (GPU name, M bucket, N, K, group size), from the JSON
   files in ``kernels/tuned/`` or from ``tune()`` in this process;
2. ``default_config``: a heuristic that fills the GPU with split-K for small M.

The M bucket is M rounded up to a power of two (capped at 512), so a
compiled model that sees one shape per bucket picks one config per bucket.
``tune(shapes, ...)`` times the candidates with ``triton.testing.do_bench`` and
records the winners; call it (or ``awq_ao.kernels.warmup``) before CUDA-graph
capture, so that no timing or compilation happens inside a captured region.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Iterable, Optional

import torch
import triton

from awq_ao.kernels import int4_gemv_staged, int4_wgmma

TUNED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tuned")
MAX_BUCKET = 512


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    kind: str  # "gemv", "gemm", "wgmma" (int4_wgmma.py, Gluon: sm_90, bf16 / fp16, BLOCK_N 64 or 128, BLOCK_K 128;
    # the weight as the MMA's register operand, by wgmma or with ``mma_sync`` by mma.sync), "staged" (the GEMV
    # for M = 1 and 2 with its activation staged in shared memory, int4_gemv_staged.py, Gluon: sm_90, BLOCK_K 256,
    # 1 or 2 rows; prefetch 0 or 1) or "dequant"
    block_n: int
    block_k: int
    split_k: int = 1
    block_m: int = 1  # gemm: the M tile; gemv: activation rows per program (1, 2 or 4)
    num_warps: int = 4
    num_stages: int = 2  # gemm: Triton's pipeline depth; gemv: 3 or more streams the words through shared memory
    prefetch: int = 0  # gemv: weight tiles loaded ahead in registers (0, 1, 2); gemm: next scale and zero (0, 1);
    # wgmma: register buffers of weight tiles (1, 2)
    swap_ab: bool = False  # gemm only: compute y.T = W x.T (weight tile as the MMA's A operand)
    fused_reduce: bool = False  # split-K: the last program of each tile adds the partials (no second launch)
    natural_order: bool = False  # gemm, bf16 / fp16: unpack in column order and read x as given (no launch before)
    mma_sync: bool = False  # wgmma: the same Gluon kernel issuing mma.sync (HMMA m16n8k16 per warp), not wgmma
    late_dequant: bool = False  # mma_sync, groups of a multiple of 128: the MMA on the raw nibbles, the zero and the
    # scale applied to each tile's product (one LOP3 per two weights left in the unpacking)
    max_registers: int = 0  # staged: a cap on registers per thread for ptxas (Triton's ``maxnreg``), so more programs
    # fit on an SM; 0 leaves the count to the compiler
    l2_prefetch: int = 0  # gemv, gemm, staged, wgmma, on CUDA: each program first asks L2 for its first l2_prefetch K
    # tiles of weight words (``prefetch.global.L2``: no registers, no wait), before its PDL wait; 0 off

    def fitted(self, group_size: int, k_pad: int) -> "KernelConfig":
        """This config made valid for the group and K: BLOCK_K divides K_pad and either divides the
        group or (GEMV only) is a multiple of it; split-K is no larger than the K tiles, and the fused
        reduce is kept only with a split.

        ``dequant`` configs take any tile (their kernel reads a scale per element) and never split K.
        """
        if self.kind == "dequant":
            return dataclasses.replace(self, split_k=1, block_m=1, prefetch=0, swap_ab=False, fused_reduce=False,
                                       natural_order=False, mma_sync=False, late_dequant=False, max_registers=0,
                                       l2_prefetch=0)
        if self.kind == "wgmma":
            return self._fitted_wgmma(group_size, k_pad)
        if self.kind == "staged":
            return self._fitted_staged(group_size, k_pad)
        kind, block_m = self.kind, self.block_m
        if kind == "gemm" and min(self.block_k, group_size) < 16:  # tl.dot needs K >= 16: the GEMV takes it
            kind, block_m = "gemv", min(block_m, 4)
        block_k = min(self.block_k, group_size)
        if kind == "gemv":  # whole groups per tile, as many as divide K_pad
            while block_k * 2 <= self.block_k and k_pad % (block_k * 2) == 0:
                block_k *= 2
        tiles = k_pad // block_k
        prefetch = min(int(self.prefetch), 2 if kind == "gemv" else 1)  # the GEMM prefetches one tile
        if kind == "gemv" and self.num_stages >= 3:  # the shared-memory ring already loads ahead
            prefetch = 0
        split_k = max(1, min(self.split_k, tiles))
        return dataclasses.replace(self, kind=kind, block_k=block_k, block_m=block_m, prefetch=prefetch,
                                   split_k=split_k, fused_reduce=bool(self.fused_reduce) and split_k > 1,
                                   natural_order=bool(self.natural_order) and kind == "gemm", mma_sync=False,
                                   late_dequant=False, max_registers=0,
                                   l2_prefetch=_l2_tiles(self.l2_prefetch))


    def as_swapped_gemm(self, group_size: int, k_pad: int) -> "KernelConfig":
        """The ``tl.dot`` GEMM's swapped 64 x 128 tile with this config's split and M tile (at least 16): what a
        ``wgmma`` config runs where that kernel cannot."""
        return KernelConfig("gemm", 64, 128, split_k=self.split_k, block_m=max(16, self.block_m), num_warps=4,
                            num_stages=3, swap_ab=True, prefetch=1).fitted(group_size, k_pad)

    def as_gemv(self, group_size: int, k_pad: int) -> "KernelConfig":
        """The Triton GEMV with this ``staged`` config's tile, split, warps and prefetch: what it runs where the
        staged kernel cannot (no Gluon or sm_90, N not a multiple of the tile, K not of 256, K < K_pad)."""
        return KernelConfig("gemv", self.block_n, int4_gemv_staged.BLOCK_K, split_k=self.split_k,
                            block_m=self.block_m, num_warps=self.num_warps, prefetch=self.prefetch,
                            l2_prefetch=self.l2_prefetch).fitted(group_size, k_pad)

    def _fitted_staged(self, group_size: int, k_pad: int) -> "KernelConfig":
        """The staged GEMV's config: one or two activation rows per program, 256-column tiles split evenly
        (the largest split up to the asked one that divides the tiles, or the smallest whose staged activation
        fits ``SMEM_BYTES``), BLOCK_N a multiple of 4 rows per warp; the Triton GEMV's (``as_gemv``) where K_pad
        is not a multiple of 256 or the group not of 32."""
        max_registers = _register_cap(self.max_registers)
        if k_pad % int4_gemv_staged.BLOCK_K or group_size % 32:
            return self.as_gemv(group_size, k_pad)
        tiles = k_pad // int4_gemv_staged.BLOCK_K
        divisors = [d for d in range(1, tiles + 1) if tiles % d == 0]
        split = max(d for d in divisors if d <= max(1, self.split_k))
        rows = 1 if self.block_m <= 1 else 2
        fits = [d for d in divisors
                if int4_gemv_staged.shared_bytes(tiles // d, rows) <= int4_gemv_staged.SMEM_BYTES]
        split = max(split, fits[0])  # a larger split where the staged activation would not fit
        block_n = max(self.block_n, 4 * self.num_warps) // (4 * self.num_warps) * (4 * self.num_warps)
        return KernelConfig("staged", block_n, int4_gemv_staged.BLOCK_K, split_k=split, block_m=rows,
                            num_warps=self.num_warps, num_stages=1, prefetch=min(int(self.prefetch), 1),
                            max_registers=max_registers, l2_prefetch=_l2_tiles(self.l2_prefetch))

    def _fitted_wgmma(self, group_size: int, k_pad: int) -> "KernelConfig":
        """The wgmma kernel's tile (64, 128 or 256 rows on 4, 8 or 16 warps, 128 columns), BLOCK_M one of its MMA widths, weight tiles in
        one or two register buffers (``prefetch``) or a shared-memory ring (``num_stages`` >= 3 stages), and
        at least the split that keeps each program's shared memory within ``WGMMA_SMEM_BYTES``. A group that
        is not a multiple of 32 (a thread's 32 columns would span two) takes the swapped GEMM tile instead."""
        block_m = next((b for b in int4_wgmma.WGMMA_BLOCK_M if b >= self.block_m), int4_wgmma.WGMMA_BLOCK_M[-1])
        if group_size % 32:
            return self.as_swapped_gemm(group_size, k_pad)
        block_n = 256 if self.block_n >= 256 else 128 if self.block_n >= 128 else 64
        tiles = triton.cdiv(k_pad, int4_wgmma.BLOCK_K)
        ring = self.num_stages if self.num_stages >= 3 else 0
        split_k = max(1, min(self.split_k, tiles))
        late = bool(self.late_dequant) and bool(self.mma_sync) and group_size % int4_wgmma.BLOCK_K == 0
        while split_k < tiles and int4_wgmma.shared_bytes(block_m, triton.cdiv(tiles, split_k), ring, block_n,
                                                          late) > int4_wgmma.WGMMA_SMEM_BYTES:
            split_k += 1
        return KernelConfig("wgmma", block_n, int4_wgmma.BLOCK_K, split_k=split_k, block_m=block_m,
                            num_warps=block_n // 16, num_stages=max(ring, 1),
                            prefetch=2 if self.prefetch >= 2 and not ring else 1,
                            fused_reduce=bool(self.fused_reduce) and split_k > 1, mma_sync=bool(self.mma_sync),
                            late_dequant=late, l2_prefetch=_l2_tiles(self.l2_prefetch))


def _l2_tiles(asked: int) -> int:
    """A config's ``l2_prefetch``, checked: 0 to MAX_L2_TILES tiles (the kernel unrolls its requests)."""
    if not 0 <= int(asked) <= MAX_L2_TILES:
        raise ValueError(f"l2_prefetch {asked}: 0 (off) to {MAX_L2_TILES} tiles")
    return int(asked)


def _register_cap(asked: int) -> int:
    """A config's ``max_registers``, checked: 0 (no cap) or MIN_REGISTER_CAP to 255."""
    if asked and not MIN_REGISTER_CAP <= int(asked) <= 255:
        raise ValueError(f"max_registers {asked}: 0 (no cap) or {MIN_REGISTER_CAP} to 255")
    return int(asked)


KINDS = ("gemv", "gemm", "wgmma", "staged", "dequant")
GEMV_ROWS = (1, 2, 4)  # rows per GEMV program: a power of two (tl.arange); at 8 the GEMV issues more than the GEMM
# (BLOCK_N, warps, BLOCK_K, prefetch) the tuner tries at M = 1; none spills on sm_90 with Triton 3.6
# (benchmarks/results/sass_sm90_triton36.md). A BLOCK_K above the group spans whole groups: 128 with
# groups of 32 or 64, and 256 with any group. The tiles within 15% of the fastest on at least one goal shape
# in run 7 on the H200 (benchmarks/results/gpu_check_nvidia_h200_async.log; each family's range against the
# fastest: `python benchmarks/candidates.py --log <that log>`, the source of the ranges below), and the 128 x 128 tiles its shipped
# table picks for the small shapes; dropped (fifth session, 22 tiles -> 5, to keep the tuning short): every
# 256-row tile (18-88% slower than the fastest on every goal shape), BLOCK_K 64 (33-64%), two tiles in flight
# (19-88%), 2-warp 128 x 128 / 128 x 64 and 1-warp 64 x 128 (20-63%), 32 x 512 (37-47%)
GEMV_M1_TILES = ((128, 4, 128, 0), (128, 4, 128, 1), (64, 2, 256, 0), (64, 4, 256, 0), (128, 4, 256, 0))
# (BLOCK_N, warps, BLOCK_K, prefetch) of small-row tiles the tuner also tries without split-K at M = 1: many
# programs, each walking all of K, and no reduce launch (1.7-1.9 us of the split GEMV's ~18 on the H200,
# benchmarks/results/bench_layout_nvidia_h200.txt). The three within 5-10% of the fastest on one goal shape in
# run 7; dropped: 8 x 256, 16 x 256 without prefetch and 32 x 256 on 2 warps (12-94% slower)
GEMV_M1_UNSPLIT_TILES = ((16, 1, 256, 1), (16, 1, 512, 0), (32, 1, 256, 0))
# (BLOCK_N, warps, BLOCK_K, stages) of GEMV tiles whose weight words stream through shared memory by asynchronous
# copies (stages - 1 tiles ahead; Triton's pipeliner on a tl.range loop), with fewer, longer-running programs
# (split toward 1-8 two-warp programs per SM): the H200 profile showed both kernels latency-bound, issuing on
# about half the cycles (kernel_notes.md). None spills on sm_90 with Triton 3.6; 159-168 registers (12 warps per
# SM), 8-17 KB of shared memory per program, 3.45-3.54 instructions per weight; 32 x 128 on 1 warp (4 rows per
# thread): 80 registers (25 warps per SM) at 4.15 (benchmarks/results/sass_sm90_triton36.md). The two kept were
# within 7-14% of the fastest candidate on the goal shapes in run 11; dropped (32 candidates per shape, with their
# splits and ways of adding them): 64 x 128 on 1 warp with 3 or 4 stages, 128 x 128 on 2 warps and 32 x 128 on 1
# warp, 20-42% slower on all three (`python benchmarks/candidates.py --log
# benchmarks/results/gpu_check_nvidia_h200_late_dequant.log`)
GEMV_M1_PIPELINED_TILES = ((32, 1, 256, 3), (64, 2, 256, 3))
# the same for 2 rows per program (245-255 registers, as the plain 2-row tiles; no spills)
GEMV_ROWS_PIPELINED_TILES = ((64, 2, 256, 3), (32, 1, 256, 3))
# (BLOCK_N, warps, BLOCK_K) of GEMV tiles for 2 rows per program, beside 128 / M and 256 / M rows x 128 (at 4
# rows they spill: 480-1064 bytes of stack, benchmarks/results/sass_sm90_triton36.md)
GEMV_ROWS_TILES = ((64, 2, 256), (32, 1, 256))
# (BLOCK_N, swap_ab, warps, stages) of extra GEMM tiles for M <= 16 (BLOCK_K 128): 5 stages keep more tiles in
# flight (6-50% slower than the fastest on the H200's goal shapes in run 7; within 6-7% at M = 4 .. 16 on one).
# Dropped in the fifth session: the 2-warp tiles, where Triton emits mma.sync (HMMA) instead of wgmma, 18-60%
# slower on every goal shape from M = 2 to 16 (gpu_check_nvidia_h200_async.log; 48.5-51.4 us against 33.8-34.4
# at 8192 x 8192 in gpu_check_nvidia_h200_wide_gemv.log)
SMALL_M_GEMM_TILES = ((64, True, 4, 5),)
# (BLOCK_N, weight buffers, ring stages, mma_sync, late_dequant) of the Gluon kernel's tiles the tuner tries from
# M = 1 to 64 on sm_90 (candidate_configs says why each)
GLUON_TILES = ((64, 1, 1, False, False), (64, 2, 1, False, False), (64, 1, 4, False, False),
               (128, 1, 1, False, False), (128, 1, 4, False, False),
               (64, 1, 1, True, False), (64, 2, 1, True, False), (64, 1, 4, True, False),
               (64, 1, 1, True, True), (64, 2, 1, True, True), (64, 1, 4, True, True))
# (BLOCK_N, mma_sync) of the Gluon kernel's 256-row tiles (16 warps, one weight buffer), tried from M = 8 to 64 at
# the splits that fill one wave at 1 and 2 programs per SM: a program reads the activation rows of its K range
# once per tile, as many bytes as the weight's at M = 16 with 64-row tiles and a quarter of them with 256 rows
# (kernel_notes.md, twelfth session); sm_90 SASS (Triton 3.6): wgmma 92 registers, mma.sync 64, 2.88 and 3.31
# instructions per weight, no spills (`python benchmarks/compile_report.py --m 16`,
# benchmarks/results/sass_sm90_triton36_m16.md); not yet run on a GPU
GLUON_WIDE_TILES = ((256, False), (256, True))
# (BLOCK_N, warps, prefetch, max_registers) of the staged GEMV (int4_gemv_staged.py) the tuner tries at M = 1 on
# sm_90: 8 rows per thread on 2 warps (125 registers, as the Triton GEMV's 128: 16 warps per SM), 4 rows on 4 warps
# capped at 64 registers (72 uncapped; with the cap no spills and the same 2.84 instructions per weight: 8 programs
# per SM instead of 7, 32 warps), 2 rows on 8 warps (48 registers, 2.97: 5 programs, 40 warps), against the Triton
# GEMV's 3.34 instructions per weight; with the next tile's words loaded ahead (prefetch) 156 and 96 registers,
# 2.84 and 2.98 (sm_90 SASS, Triton 3.6, `python benchmarks/compile_report.py --m 1`; lower caps spill:
# kernel_notes.md, thirteenth session); not yet timed on a GPU
STAGED_TILES = ((64, 2, 0, 0), (64, 2, 1, 0), (64, 4, 0, 64), (64, 4, 1, 0), (128, 4, 0, 0), (64, 8, 0, 0))
# L2 prefetch at M = 1 (``KernelConfig.l2_prefetch``: each program asks L2 for its first tiles of weight words as it
# starts): the GEMV was about as fast with its weight already in L2 as from HBM on the H200 (15.1 against 17.6 us
# at 8192 x 8192, bench_kernels' from-L2 column), so it waits on its loads' latency, not on HBM's bandwidth; asked
# early, the words of later tiles come from L2 (kernel_notes.md, thirteenth session; not yet timed). Tried on the
# GEMV tile every goal shape picked, (BLOCK_N, warps, BLOCK_K), at twice and four times its base split (the picks
# were at twice), on two staged tiles (BLOCK_N, warps, max_registers) at their splits, from M = 2 to 64 on the
# column-order swapped GEMM (M = 16 from L2: 26.9 against 28.8 us at 8192 x 8192) and on two Gluon GEMM tiles,
# asking for these tiles
GEMV_M1_L2_TILES = ((64, 2, 256),)
STAGED_L2_TILES = ((64, 2, 0), (64, 4, 64))
# (BLOCK_N, weight buffers, mma_sync) of the Gluon GEMM with it, from M = 1 to 64: the two families it picked on
# 14336 x 4096 in run 11 (mma.sync with two buffers at M = 1, wgmma with one at M = 16), at its base split and twice
GLUON_L2_TILES = ((64, 1, False), (64, 2, True))
L2_PREFETCH_TILES = {"gemv": (2, 32), "staged": (32,), "gemm": (32,), "wgmma": (32,)}
MIN_REGISTER_CAP = 24  # the smallest ``max_registers`` a tuned table may hold (ptxas keeps some for itself)
MAX_L2_TILES = 32  # the most K tiles a config's ``l2_prefetch`` may ask L2 for at a program's start
# (BLOCK_N, warps) of the staged GEMV with two activation rows per program, tried at M = 2: 4.04-4.07 instructions
# per weight against the 2-row Triton GEMV's 5.12, at 96 (4 warps) and 166 registers against its 248 (Triton 3.6)
STAGED_ROWS2_TILES = ((64, 4), (64, 2))
# whether the tuner tries the in-kernel split-K sum (``fused_reduce``); benchmarks/gpu_check.py turns it off for
# its tuning run when that path fails a correctness check on the GPU at hand
FUSED_REDUCE_CANDIDATES = True
# whether the tuner tries the staged GEMV; gpu_check.py turns it off when one of its candidates fails a check
STAGED_CANDIDATES = True
# resident programs per SM of the M = 2 .. 64 tile families that get wave-filling splits (``_wave_splits``): sm_90
# SASS (Triton 3.6, `compile_report.py --m 16`) puts the swapped 64 x 128 GEMM at 94-108 registers on 4 warps (4-5
# per SM) and the Gluon GEMM's 64-row tiles at 66-79 (6-7), the late kernel measured at 6 (ncu, kernel_notes.md)
WAVE_PROGRAMS_PER_SM = (4, 5, 6, 7)
DEQUANT_MIN_M = 128  # from this M bucket on, the default dequantizes once and calls a dense matmul


def gluon_variants_off() -> set:
    """The Gluon kernel's variants kept out of the tuning (``"mma"``: mma.sync, ``"late"``: late_dequant, ``"overlap"``)
    by ``AWQ_AO_GLUON_OFF`` (comma-separated; ``benchmarks/device_check.sh`` sets it to those that failed their
    check on the GPU at hand, ``AWQ_AO_DISABLE_WGMMA=1`` turning the whole kernel off when wgmma itself failed)."""
    return {v.strip() for v in os.environ.get("AWQ_AO_GLUON_OFF", "").replace(" ", ",").split(",") if v.strip()}


def gluon_variant(cfg: "KernelConfig") -> str:
    """The name of a Gluon config's variant, as ``AWQ_AO_GLUON_OFF`` names it: "late", "mma" or "wgmma"."""
    return "late" if cfg.late_dequant else "mma" if cfg.mma_sync else "wgmma"


def m_bucket(m: int) -> int:
    """M rounded up to a power of two, at most MAX_BUCKET.

    M is a plain int: a graph that torch.compile traces for every M (dynamic shapes) chooses its config per
    call, in the opaque op (``int4_matmul.launch_int4_linear``), not at trace time.
    """
    bucket = 1
    while bucket < m and bucket < MAX_BUCKET:
        bucket *= 2
    return bucket


@functools.lru_cache(maxsize=None)
def sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _cuda_sms(device: torch.device) -> int:
    """SMs of a CUDA device (the current one where it has no index)."""
    return sm_count(device.index if device.index is not None else torch.cuda.current_device())


def _programs_target(device: torch.device, per_sm: int = 2) -> int:
    """Programs a launch should have to fill the GPU (``per_sm`` per SM); small under the interpreter."""
    if device.type != "cuda":
        return 4
    return per_sm * _cuda_sms(device)


def _split_for(tiles_mn: int, k_tiles: int, device: torch.device, per_sm: int = 2) -> int:
    """Split-K factor that brings the program count near the target, power of two, at most 16."""
    split = 1
    target = _programs_target(device, per_sm)
    while tiles_mn * split < target and split * 2 <= k_tiles and split < 16:
        split *= 2
    return split


def _wave_splits(tiles_mn: int, k_tiles: int, device: torch.device, per_sm=WAVE_PROGRAMS_PER_SM) -> list[int]:
    """Split-K factors whose program count just fills one wave at each of ``per_sm`` resident programs per SM
    (``_split_for``'s powers of two can leave a ragged last wave: 1,024 programs at 6 per SM are 1.29 waves);
    between 2 and the K tiles, distinct, ascending."""
    sms = _cuda_sms(device) if device.type == "cuda" else 1
    slots = [c * sms for c in per_sm]
    return sorted({min(k_tiles, slot // tiles_mn) for slot in slots if slot // tiles_mn >= 2})


def _gemv(m: int, n: int, k_pad: int, group_size: int, device: torch.device, block_n: int, block_k: int,
          per_sm: int = 2, **options) -> KernelConfig:
    """A GEMV config with one program per ``min(m, 4)`` rows, K split toward ``per_sm`` programs per SM."""
    rows = min(m, GEMV_ROWS[-1])
    cfg = KernelConfig("gemv", block_n=block_n, block_k=block_k, block_m=rows, **options).fitted(group_size, k_pad)
    tiles_mn = triton.cdiv(n, cfg.block_n) * triton.cdiv(m, rows)
    return dataclasses.replace(cfg, split_k=_split_for(tiles_mn, k_pad // cfg.block_k, device, per_sm))


def default_config(m: int, n: int, k_pad: int, group_size: int, device: torch.device) -> KernelConfig:
    """A heuristic config when nothing is tuned for this shape (M is a bucket: a power of two).

    M = 1 and 2: the GEMV, 64 rows x 256 columns per program on 2 warps (one or
    two activation rows), K split to fill the GPU: the tile the H200 tuning
    picked on all three large Llama-3-8B shapes at M = 1 and 2
    (``benchmarks/results/kernels_nvidia_h200_async.md``; at M = 2 it took
    21.4-23.8 us against 25.6-29.0 for the fastest GEMM candidate,
    ``gpu_check_nvidia_h200_async.log``). M = 4 .. 64: the tensor-core
    GEMM, split-K while the output tiles are few (the GEMV adds an FFMA per
    weight per row: 11.5 instructions per weight at 4 rows in sm_90 SASS).
    M >= 128: dequantize once, then a dense matmul.
    """
    if m <= 2:  # BLOCK_K 256 whatever the group (whole groups per tile when smaller; fitted() keeps it legal)
        # one row: split toward 6 programs per SM (2-warp programs); on the H200 that is the fastest split or
        # within 2% of it on all three goal shapes, where 2 per SM ran 14-22% slower (8192^2 s8 17.7 us vs
        # s4 21.5; gpu_check_nvidia_h200_async.log). Two rows: 2 per SM was the fastest on all three.
        return _gemv(m, n, k_pad, group_size, device, block_n=64, block_k=256, per_sm=6 if m == 1 else 2,
                     num_warps=2)
    if m >= DEQUANT_MIN_M:
        # 16 x 256 took 30-37% less time than 32 x 128 and 64 x 64 on every H200 shape (per-candidate times in
        # benchmarks/results/gpu_check_nvidia_h200.log)
        return KernelConfig("dequant", block_n=16, block_k=256)
    block_m = 16 if m <= 16 else 32 if m <= 32 else 64
    # the tile the H200 tuning picked for every M from 2 to 64, with the scale / zero prefetch added since
    cfg = KernelConfig("gemm", block_n=64, block_k=128, block_m=block_m, num_warps=4, num_stages=3,
                       swap_ab=True, prefetch=1).fitted(group_size, k_pad)
    tiles_mn = triton.cdiv(m, block_m) * triton.cdiv(n, cfg.block_n)
    return dataclasses.replace(cfg, split_k=_split_for(tiles_mn, k_pad // cfg.block_k, device))


def _swapped_async_tile(cfg: KernelConfig) -> bool:
    """The GEMM family the H200 picked from M = 2 to 64: swapped operands, scale / zero prefetch, BLOCK_K 128,
    4 warps, 3 stages."""
    return (cfg.kind == "gemm" and cfg.swap_ab and bool(cfg.prefetch) and cfg.block_k == 128
            and cfg.num_warps == 4 and cfg.num_stages == 3)


def _staged_candidates(n: int, k_pad: int, device: torch.device, tiles: list) -> list[KernelConfig]:
    """The staged GEMV's configs for these (BLOCK_N, warps, prefetch, rows, max_registers), split toward 12 warps
    per SM (6 two-warp programs, as the GEMV; at least 2 programs) and twice that; none unless on sm_90 with Gluon
    (as the Gluon GEMM) and not turned off."""
    if not (STAGED_CANDIDATES and int4_wgmma.wgmma_available(device)):
        return []
    k_tiles = k_pad // int4_gemv_staged.BLOCK_K
    out = []
    for block_n, warps, prefetch, rows, cap in tiles:
        split = _split_for(triton.cdiv(n, block_n), k_tiles, device, per_sm=max(2, 12 // warps))
        out += [KernelConfig("staged", block_n, int4_gemv_staged.BLOCK_K, split_k=s, block_m=rows, num_warps=warps,
                             prefetch=prefetch, max_registers=cap) for s in (split, 2 * split)]
    return out


def candidate_configs(m: int, n: int, k_pad: int, group_size: int, device: torch.device) -> list[KernelConfig]:
    """The small set ``tune`` times for one (M bucket, N, K, group)."""
    base = default_config(m, n, k_pad, group_size, device)
    out = [base]
    if m == 1:  # CUDA-core GEMV: more rows per thread amortise the activation work (sm_90: 8 rows ~3.5 instr/weight)
        for block_n, warps, block_k, prefetch in GEMV_M1_TILES:
            cfg = _gemv(m, n, k_pad, group_size, device, block_n, block_k, num_warps=warps, prefetch=prefetch)
            out += [dataclasses.replace(cfg, split_k=cfg.split_k * f) for f in (1, 2, 4)]
        for block_n, warps, block_k, stages in GEMV_M1_PIPELINED_TILES:
            for per_sm in (1, 2, 4, 8):  # two-warp programs per SM; one-warp programs twice as many
                cfg = _gemv(m, n, k_pad, group_size, device, block_n, block_k, per_sm=per_sm * 2 // warps,
                            num_warps=warps, num_stages=stages)
                out += [cfg] + ([dataclasses.replace(cfg, fused_reduce=True)]  # with each way of adding splits
                                if FUSED_REDUCE_CANDIDATES else [])
        for block_n, warps, block_k in GEMV_M1_L2_TILES:
            cfg = _gemv(m, n, k_pad, group_size, device, block_n, block_k, num_warps=warps)
            out += [dataclasses.replace(cfg, split_k=cfg.split_k * f, l2_prefetch=tiles)
                    for f in (2, 4) for tiles in L2_PREFETCH_TILES["gemv"]]
        for block_n, warps, block_k, prefetch in GEMV_M1_UNSPLIT_TILES:
            cfg = _gemv(m, n, k_pad, group_size, device, block_n, block_k, num_warps=warps, prefetch=prefetch)
            out += [dataclasses.replace(cfg, split_k=s) for s in (1, 2, cfg.split_k)]
        # (the GEMM at M = 1, one row of its 16 used, is no longer tried: 49-95% slower than the GEMV on every goal
        # shape in run 7, gpu_check_nvidia_h200_async.log)
        out += _staged_candidates(n, k_pad, device, [(b, w, p, 1, cap) for b, w, p, cap in STAGED_TILES])
        out += [dataclasses.replace(c, l2_prefetch=tiles) for tiles in L2_PREFETCH_TILES["staged"]
                for c in _staged_candidates(n, k_pad, device, [(b, w, 0, 1, cap) for b, w, cap in STAGED_L2_TILES])]
    if m == 2:
        out += _staged_candidates(n, k_pad, device, [(b, w, 0, 2, 0) for b, w in STAGED_ROWS2_TILES])
    if 2 <= m <= GEMV_ROWS[-1]:  # several rows per GEMV program, each row's sums 2-d
        tiles = [(128 // m, 4, 128), (256 // m, 4, 128)] + (list(GEMV_ROWS_TILES) if m == 2 else [])
        for block_n, warps, block_k in tiles:
            cfg = _gemv(m, n, k_pad, group_size, device, block_n, block_k, num_warps=warps)
            out += [dataclasses.replace(cfg, split_k=cfg.split_k * f) for f in (1, 2, 4)]
        for block_n, warps, block_k, stages in (GEMV_ROWS_PIPELINED_TILES if m == 2 else ()):
            for per_sm in (1, 2, 4):
                out.append(_gemv(m, n, k_pad, group_size, device, block_n, block_k, per_sm=per_sm * 2 // warps,
                                 num_warps=warps, num_stages=stages))
    if 2 <= m <= 64:  # tensor-core GEMM with split-K, plain or with the weight tile as the MMA's A operand
        block_m = max(16, min(64, triton.next_power_of_2(m)))
        for block_n, block_k, swap in ((64, 128, False), (128, 64, False), (128, 128, False),
                                       (64, 128, True), (128, 64, True), (128, 128, True)):
            for prefetch in (0, 1) if swap or m > 32 else (1,):  # unswapped without prefetch: 44-118% slower than
                # the fastest on every goal shape from M = 2 to 32 in run 7 (3-22% at M = 64)
                cfg = KernelConfig("gemm", block_n, block_k, block_m=block_m, num_warps=4, num_stages=3,
                                   swap_ab=swap, prefetch=prefetch).fitted(group_size, k_pad)
                tiles = triton.cdiv(m, block_m) * triton.cdiv(n, block_n)
                split = _split_for(tiles, k_pad // cfg.block_k, device)
                out += [dataclasses.replace(cfg, split_k=s) for s in (1, split, 2 * split)]
        if m <= 16:
            for block_n, swap, warps, stages in SMALL_M_GEMM_TILES:
                cfg = KernelConfig("gemm", block_n, 128, block_m=16, num_warps=warps, num_stages=stages,
                                   swap_ab=swap, prefetch=1).fitted(group_size, k_pad)
                split = _split_for(triton.cdiv(n, block_n), k_pad // cfg.block_k, device)
                out += [dataclasses.replace(cfg, split_k=s) for s in (split, 2 * split)]
    if m <= 64 and FUSED_REDUCE_CANDIDATES:  # the split-K sum in the kernel (last program per tile, splitk.py) for the default tile and the
        # swapped GEMM tiles: no reduce launch (1.7-2.0 us at M = 1, 4.1-4.7 at M = 16 on the H200,
        # bench_layout_nvidia_h200.txt); the tile counters are the device's kept ones (splitk.tile_counters)
        fused = [base] + [c for c in out[1:] if m >= 2 and _swapped_async_tile(c)
                          and c.block_m * c.block_n <= 64 * 64]  # 64 x 128 spills with the sum (528 B stack)
        for cfg in fused:
            out += [dataclasses.replace(cfg, split_k=cfg.split_k * f, fused_reduce=True) for f in (1, 2)]
    if 2 <= m <= 64:  # the swapped 64 x 128 GEMM tile (the H200's pick from M = 4 to 32) in column order: x read
        # as given, no activation launch before the GEMM (bench_layout.py times that launch alone), for one more
        # instruction per word to unpack; with each split and way of adding the splits
        out += [dataclasses.replace(c, natural_order=True) for c in out[1:]
                if _swapped_async_tile(c) and c.block_n == 64 and c.split_k > 1]
    if m <= 64 and int4_wgmma.wgmma_available(device):  # the Gluon GEMM with the weight as the MMA's register
        # operand (int4_wgmma.py; sm_90 SASS: 2.0-3.3 instructions per weight, no shared-memory round trip in the
        # loop, 49-80 registers at BLOCK_M 8 and 16), split toward 2 programs per SM and 2 and 4 times that
        # (fitted() raises a split whose staged activation would not fit), with the in-kernel sum where the tuning
        # may use it (no slower than the reduce launch for any wgmma config timed on the H200: wgmma_nvidia_h200_m1.md)
        block_m = next(b for b in int4_wgmma.WGMMA_BLOCK_M if b >= m)
        k_tiles = triton.cdiv(k_pad, int4_wgmma.BLOCK_K)
        # (rows, buffers, ring stages, mma.sync). wgmma: 64 rows on 4 warps, weight tiles in registers, one buffer
        # (72 registers) or two (96), or through a 4-stage shared-memory ring by cp.async; 128 rows on 8 warps
        # (half the staged activation per weight): one buffer or the ring. mma.sync (no warp-group wait after each
        # tile's MMAs): 64 rows with one or two buffers or the ring
        for block_n, buffers, stages, mma_sync, late in GLUON_TILES:
            if late and m >= 16:  # late_dequant at M = 16: 1.14-1.49x the fastest candidate on every goal shape in
                continue  # run 11 (`benchmarks/candidates.py --log .../gpu_check_nvidia_h200_late_dequant.log`)
            split = _split_for(triton.cdiv(n, block_n) * triton.cdiv(m, block_m), k_tiles, device)
            out += [KernelConfig("wgmma", block_n, int4_wgmma.BLOCK_K, block_m=block_m, prefetch=buffers,
                                 num_stages=stages, split_k=min(split * f, k_tiles),
                                 fused_reduce=FUSED_REDUCE_CANDIDATES, mma_sync=mma_sync, late_dequant=late)
                    for f in (1, 2, 4)]
        for block_n, buffers, mma_sync in GLUON_L2_TILES:  # and asking L2 for their first weight tiles
            split = _split_for(triton.cdiv(n, block_n) * triton.cdiv(m, block_m), k_tiles, device)
            out += [KernelConfig("wgmma", block_n, int4_wgmma.BLOCK_K, block_m=block_m, prefetch=buffers,
                                 split_k=min(split * f, k_tiles), fused_reduce=FUSED_REDUCE_CANDIDATES,
                                 mma_sync=mma_sync, l2_prefetch=tiles)
                    for f in (1, 2) for tiles in L2_PREFETCH_TILES["wgmma"]]
        for block_n, mma_sync in GLUON_WIDE_TILES if m >= 8 else ():
            tiles_mn = triton.cdiv(n, block_n) * triton.cdiv(m, block_m)
            out += [KernelConfig("wgmma", block_n, int4_wgmma.BLOCK_K, block_m=block_m, split_k=s,
                                 fused_reduce=FUSED_REDUCE_CANDIDATES, mma_sync=mma_sync)
                    for s in _wave_splits(tiles_mn, k_tiles, device, per_sm=(1, 2))]
        out = [c for c in out if c.kind != "wgmma" or gluon_variant(c) not in gluon_variants_off()]
    if 2 <= m <= 64:  # the swapped 64 x 128 GEMM (plain and in column order) and the Gluon GEMM's 64-row tiles
        # with one or two register buffers, at splits that fill whole waves: at M = 16 the GEMM took the same time
        # at split 4 and 8 (0.78 and 1.55 waves at 5 per SM: 28.3 and 29.2 us at 8192^2, run 11's tuning log)
        for cfg in [c for c in out[1:] if c.block_n == 64 and c.split_k > 1 and (
                (_swapped_async_tile(c) and not c.fused_reduce)
                or (c.kind == "wgmma" and c.num_stages == 1 and not (c.mma_sync or c.late_dequant)))]:
            tiles_mn = triton.cdiv(n, cfg.block_n) * triton.cdiv(m, cfg.block_m)
            k_tiles = triton.cdiv(k_pad, cfg.block_k)
            out += [dataclasses.replace(cfg, split_k=s) for s in _wave_splits(tiles_mn, k_tiles, device)]
    if 2 <= m <= 64:  # the column-order swapped 64 x 128 GEMM (the M = 16 pick on two goal shapes) asking L2 for its
        # first weight tiles, at its power-of-two splits with the reduce launch (L2_PREFETCH_TILES)
        out += [dataclasses.replace(c, l2_prefetch=tiles) for c in out[1:]
                if _swapped_async_tile(c) and c.natural_order and c.block_n == 64 and not c.fused_reduce
                and c.split_k & (c.split_k - 1) == 0 for tiles in L2_PREFETCH_TILES["gemm"]]
    if m > 64:  # (BLOCK_M, BLOCK_N, warps): the two that compile without spills and with the fewest instructions
        for block_m, block_n, warps in ((64, 128, 4), (64, 256, 8)):
            out.append(KernelConfig("gemm", block_n, 64, block_m=block_m, num_warps=warps, num_stages=3,
                                    prefetch=1).fitted(group_size, k_pad))
    if m >= DEQUANT_MIN_M:  # dequantize once + dense matmul (at M = 32 and 64: 2.5-5.6x the GEMM's time in run 7)
        out += [KernelConfig("dequant", 16, 256), KernelConfig("dequant", 32, 128), KernelConfig("dequant", 64, 64)]
    seen, unique = set(), []
    for cfg in out:
        cfg = cfg.fitted(group_size, k_pad)
        if cfg not in seen:
            seen.add(cfg)
            unique.append(cfg)
    return unique


# ------------------------------------------------------------------ tuned tables
_TUNED: dict[tuple, KernelConfig] = {}


def _key(device_name: str, m: int, n: int, k_pad: int, group_size: int) -> tuple:
    return (device_name, m_bucket(m), n, k_pad, group_size)


@functools.lru_cache(maxsize=None)
def _device_name(device_index: int) -> str:
    return torch.cuda.get_device_name(device_index)


def _load_tuned_files() -> None:
    if not os.path.isdir(TUNED_DIR):
        return
    for name in sorted(os.listdir(TUNED_DIR)):
        if name.endswith(".json"):
            load_tuned(os.path.join(TUNED_DIR, name))


def load_tuned(path: str) -> int:
    """Read a JSON table written by ``save_tuned`` into this process; returns the number of entries."""
    try:
        with open(path) as f:
            table = json.load(f)
        entries = {}
        for row in table["configs"]:
            cfg = KernelConfig(**row["config"])
            if cfg.kind not in KINDS or min(cfg.block_n, cfg.block_k, cfg.split_k, cfg.block_m) < 1:
                raise ValueError(f"bad config {cfg}")
            if cfg.prefetch not in (0, 1, 2):
                raise ValueError(f"bad config {cfg}: prefetch is 0, 1 or 2 tiles")
            if cfg.kind == "gemv" and cfg.block_m not in GEMV_ROWS:
                raise ValueError(f"bad config {cfg}: GEMV rows per program must be one of {GEMV_ROWS}")
            _l2_tiles(cfg.l2_prefetch)  # (each raises ValueError, named with the file below)
            _register_cap(cfg.max_registers)
            entries[(table["device"], row["m_bucket"], row["n"], row["k_pad"], row["group_size"])] = cfg
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a tuned kernel-config table ({type(err).__name__}: {err})") from err
    _TUNED.update(entries)
    return len(entries)


def save_tuned(path: str, device_name: str) -> None:
    """Write this process's tuned entries for ``device_name`` as JSON (atomically)."""
    rows = [
        {"m_bucket": b, "n": n, "k_pad": k, "group_size": g, "config": dataclasses.asdict(cfg)}
        for (dev, b, n, k, g), cfg in sorted(_TUNED.items()) if dev == device_name
    ]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"device": device_name, "configs": rows}, f, indent=1)
    os.replace(tmp, path)


def tuned_config(device_name: str, m: int, n: int, k_pad: int, group_size: int) -> Optional[KernelConfig]:
    """The tuned entry for this GPU name and shape (M by bucket), or None."""
    cfg = _TUNED.get(_key(device_name, m, n, k_pad, group_size))
    return None if cfg is None else cfg.fitted(group_size, k_pad)


def select_config(m: int, n: int, k_pad: int, group_size: int, device: torch.device) -> KernelConfig:
    """The tuned config for this shape on this GPU if there is one, else ``default_config``.

    Depends on M only through its bucket.
    """
    m = m_bucket(m)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        cfg = tuned_config(_device_name(index), m, n, k_pad, group_size)
        if cfg is not None:
            return cfg
    return default_config(m, n, k_pad, group_size, device)


def record(device_name: str, m: int, n: int, k_pad: int, group_size: int, cfg: KernelConfig) -> None:
    _TUNED[_key(device_name, m, n, k_pad, group_size)] = cfg


# a candidate's output against ``dense_reference`` (random weights, x ~ N(0, 1)): the kernels' own error is
# 2e-3 (bf16) / 4e-4 (fp16) there (benchmarks/gpu_check.py); a racing or mis-indexed config is off by O(1)
TUNE_TOLERANCE = {torch.bfloat16: 1e-2, torch.float16: 3e-3, torch.float32: 2e-3}


def dense_reference(x, qdata, scale, zero_point, group_size: int, in_features: int) -> torch.Tensor:
    """fp32 ``x @ dequantize(W).T`` [M, N] from the packed weight (the tuner's check of each candidate)."""
    from awq_ao import quant

    w = quant.dequantize(quant.unpack_int4(qdata), scale, zero_point, group_size, in_features, torch.float32)
    return x.float() @ w.t()


def relative_error(y: torch.Tensor, expected: torch.Tensor) -> float:
    """||y - expected|| / ||expected|| in fp32; inf if y has a NaN or inf."""
    y = y.float()
    if not torch.isfinite(y).all():
        return float("inf")
    return ((y - expected).norm() / expected.norm().clamp(min=1e-30)).item()


def time_configs(
    m: int, n: int, k: int, group: int, candidates: Iterable[KernelConfig], dtype: torch.dtype = torch.bfloat16,
    replays: int = 10, verbose: bool = False,
) -> list[tuple[KernelConfig, Optional[float]]]:
    """[(config, median ms per call, or None where it failed)] for an M x N x K int4 linear (groups of ``group``)
    on the current GPU, each config first checked against ``dense_reference``.

    Timed as decoding runs it: captured in a CUDA graph over rotated copies of random int4 weights
    (``timing.graph_time_ms``), so neither launch overhead nor the L2 cache decides. A config that errs or fails
    to compile (e.g. out of shared memory) gets None (and a line when ``verbose``).
    """
    from awq_ao.kernels.int4_matmul import launch_int4_linear
    from awq_ao.kernels.splitk import tile_counters
    from awq_ao.kernels.timing import copies_for, graph_time_ms, l2_bytes

    device = torch.device("cuda", torch.cuda.current_device())
    counters = tile_counters(device)
    k_pad = triton.cdiv(k, group) * group
    reps = copies_for(n * k_pad // 2, l2_bytes(), most=64)
    sets = []
    for _ in range(reps):
        qdata = torch.randint(0, 256, (n, k_pad // 2), dtype=torch.uint8, device=device)
        scale = (torch.rand(n, k_pad // group, device=device) * 0.01 + 1e-3).to(dtype)
        zero = torch.randint(0, 16, (n, k_pad // group), dtype=torch.uint8, device=device)
        x = torch.randn(m, k, dtype=dtype, device=device)
        sets.append((x, qdata, scale, zero, torch.empty(m, n, dtype=dtype, device=device)))
    expected = dense_reference(*sets[0][:4], group, k)
    results = []
    for cfg in candidates:
        calls = [lambda s=s, cfg=cfg: launch_int4_linear(s[0], s[1], s[2], s[3], None, s[4], group, k, config=cfg,
                                                         counters=counters)
                 for s in sets]
        try:
            err = relative_error(calls[0](), expected)  # compiles it; a wrong result is never timed
            if not err < TUNE_TOLERANCE[dtype]:
                raise ValueError(f"wrong result: relative error {err:.2e} against the dense fp32 reference")
            ms = graph_time_ms(calls, replays)
        except Exception as err:  # a config the compiler rejects (e.g. out of shared memory), or a wrong one
            if verbose:
                print(f"  skip {cfg}: {type(err).__name__}: {str(err)[:120]}")
            results.append((cfg, None))
            continue
        if verbose:
            print(f"  M={m} N={n} K={k} g={group} {cfg}: {ms * 1e3:.1f} us", flush=True)
        results.append((cfg, ms))
    return results


def tune(
    shapes: Iterable[tuple[int, int, int, int]],
    dtype: torch.dtype = torch.bfloat16,
    replays: int = 10,
    verbose: bool = False,
) -> dict[tuple, tuple[KernelConfig, float]]:
    """Time ``candidate_configs`` for each (M, N, K, group_size) on the current GPU (``time_configs``: checked,
    then timed in a CUDA graph from HBM); record the fastest. Returns
    {(M bucket, N, K, group): (config, median ms per call)}.
    """
    device = torch.device("cuda", torch.cuda.current_device())
    name = _device_name(device.index)
    results = {}
    for m, n, k, group in shapes:
        bucket = m_bucket(m)
        k_pad = triton.cdiv(k, group) * group
        timed = [(cfg, ms) for cfg, ms in time_configs(bucket, n, k, group, candidate_configs(
            bucket, n, k_pad, group, device), dtype, replays, verbose) if ms is not None]
        if timed:
            best = min(timed, key=lambda row: row[1])
            record(name, bucket, n, k_pad, group, best[0])
            results[(bucket, n, k, group)] = best
    return results


_load_tuned_files()
