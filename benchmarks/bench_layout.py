"""How fast can a kernel read int4 weights in each candidate layout? (GPU; the next layout decision.)

    python benchmarks/bench_layout.py                  # 8192 x 8192 and 14336 x 4096, H100 / H200
    TRITON_INTERPRET=1 python benchmarks/bench_layout.py --device cpu --n 64 --k 512   # dry run

The GEMV and the GEMM read ``qdata`` as it is stored, row-major int32 words
[N, K/8]: a K tile of 128 columns is 64 bytes of each of BLOCK_N rows, rows
K/2 bytes apart. On the H200 both kernels stayed near 1.65 and 1.05 TB/s
whatever their instruction count, while the dequantize kernel ran 35% faster
when each program read 128 contiguous bytes per row instead of 64
(``benchmarks/results/kernel_notes.md``). This script isolates the reads: one
Triton kernel sums the words of its tiles (the same grid, split-K and tile as
the GEMV) and does nothing else, over

* ``row-major BK``: the stored layout, BLOCK_N rows x BK columns per tile
  (BK / 2 contiguous bytes per row): BK = 128 (the GEMV's), 256, 512;
* ``tiled``: each [BLOCK_N, 128] tile stored contiguously (8 KB for 128 rows),
  tiles of a row block in K order, the repacked layout the kernels could use.

Then the real M=1 GEMV (``kernels/int4_gemv.py``, 128 x 128 tile, split-K and its reduce) on the
stored layout and on the tiled copy (its TILED addressing; outputs must be bit-identical).

Each is timed like ``bench_kernels.py`` (CUDA graph over rotated copies, so
the bytes come from HBM), next to bf16 ``F.linear`` at M=1 and a device copy.
If ``tiled`` reads near the bf16 GEMV's rate and ``row-major 128`` near
1.65 TB/s, the layout is the GEMV's limit.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

BLOCK_N = 128
TILE_K = 128  # columns per tile of the tiled layout (the GEMV's BLOCK_K at group 128)


@triton.jit
def _read_kernel(q_ptr, out_ptr, TILES, TILES_PER_SPLIT, stride_row, stride_tile, stride_block,
                 BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr):
    """Sum (wrapping int32) every word of this program's tiles; one int32 out per program.

    Word (n, w) of K tile t of row block b is at ``b * stride_block + t * stride_tile + n *
    stride_row + w`` (n < BLOCK_N, w < BLOCK_W): the row-major and the tiled layouts differ only in
    the strides.
    """
    pid_b = tl.program_id(0)
    pid_s = tl.program_id(1)
    offs = tl.arange(0, BLOCK_N)[:, None] * stride_row + tl.arange(0, BLOCK_W)[None, :]
    acc = tl.zeros((BLOCK_N, BLOCK_W), dtype=tl.int32)
    t_start = pid_s * TILES_PER_SPLIT
    for t in range(t_start, tl.minimum(t_start + TILES_PER_SPLIT, TILES)):
        acc += tl.load(q_ptr + pid_b * stride_block + t * stride_tile + offs)
    tl.store(out_ptr + pid_b * tl.num_programs(1) + pid_s, tl.sum(acc))


def to_tiled(words: torch.Tensor, block_n: int = BLOCK_N, tile_k: int = TILE_K) -> torch.Tensor:
    """int32 [N, K/8] -> [N/block_n, K/tile_k, block_n, tile_k/8] contiguous (each tile one run of memory)."""
    n, kw = words.shape
    tw = tile_k // 8
    return words.reshape(n // block_n, block_n, kw // tw, tw).permute(0, 2, 1, 3).contiguous()


def read_sum(words: torch.Tensor, layout: str, tile_k: int, split: int, out: torch.Tensor = None) -> torch.Tensor:
    """Launch the read kernel over ``words`` (row-major [N, K/8], or ``to_tiled``'s 4-d tensor); [blocks, split]."""
    if layout == "tiled":
        blocks, tiles, block_n, block_w = words.shape
        strides = (block_w, block_n * block_w, tiles * block_n * block_w)
    else:
        n, kw = words.shape
        block_n, block_w = BLOCK_N, tile_k // 8
        blocks, tiles = n // block_n, kw // block_w
        strides = (kw, block_w, block_n * kw)
    per_split = triton.cdiv(tiles, split)
    if out is None:
        out = torch.empty((blocks, split), dtype=torch.int32, device=words.device)
    _read_kernel[(blocks, split)](words, out, tiles, per_split, *strides, BLOCK_N=block_n, BLOCK_W=block_w,
                                  num_warps=4)
    return out


def gemv(x, words, scale, zero, group: int, split: int, tiled: bool, y=None, partials=None) -> torch.Tensor:
    """y [1, N] = x [1, K] @ dequantize(W).T with the 128 x 128 GEMV on the stored words [N, K/8] or on
    ``to_tiled(words)``; the same split-K and reduce as ``awq_ao.kernels.int4_matmul``."""
    from awq_ao.kernels.int4_gemv import _int4_gemv_kernel, _splitk_reduce_kernel
    from awq_ao.kernels.int4_matmul import REDUCE_BLOCK

    k = x.shape[1]
    n = words.shape[0] * (BLOCK_N if tiled else 1)
    tiles = k // TILE_K
    per_split = triton.cdiv(tiles, split)
    split = triton.cdiv(tiles, per_split)
    if y is None:
        y = torch.empty((1, n), dtype=x.dtype, device=x.device)
    if partials is None:
        partials = torch.empty((split, 1, n), dtype=torch.float32, device=x.device)
    if tiled:  # row, row block, tile strides of the [N/128, K/128, 128, 16] copy
        stride_q, stride_block, stride_tile = TILE_K // 8, words.stride(0), words.stride(1)
    else:
        stride_q, stride_block, stride_tile = words.stride(0), BLOCK_N * words.stride(0), TILE_K // 8
    _int4_gemv_kernel[(n // BLOCK_N, split, 1)](
        x, words, scale, zero, scale, partials, 1, n, k, tiles, per_split,
        x.stride(0), stride_q, scale.stride(0), partials.stride(1), partials.stride(0), stride_block, stride_tile,
        GROUP_SIZE=group, HAS_PRE_SCALE=False, EVEN_K=True, EVEN_M=True, PREFETCH=0, ROWS=1, TILED=tiled,
        BLOCK_N=BLOCK_N, BLOCK_K=TILE_K, num_warps=4, num_stages=2,
    )
    _splitk_reduce_kernel[(triton.cdiv(n, REDUCE_BLOCK),)](partials, y, n, partials.stride(0), SPLIT_K=split,
                                                           BLOCK=REDUCE_BLOCK)
    return y


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--n", type=int, nargs="+", default=[8192, 14336])
    parser.add_argument("--k", type=int, nargs="+", default=[8192, 4096])
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device; for a dry run use TRITON_INTERPRET=1 ... --device cpu --n 64 --k 512")
        return 2
    variants = [("row-major", 128), ("row-major", 256), ("row-major", 512), ("tiled", 128)]
    for n, k in zip(args.n, args.k):
        words = torch.randint(-2**31, 2**31 - 1, (n, k // 8), dtype=torch.int32, device=device)
        tiled = to_tiled(words)
        expected = int(words.sum(dtype=torch.int64)) & 0xFFFFFFFF
        rows = []
        for layout, tile_k in variants:
            split = max(1, min(16, (k // tile_k) // 2))
            src = tiled if layout == "tiled" else words
            got = int(read_sum(src, layout, tile_k, split).sum(dtype=torch.int64)) & 0xFFFFFFFF
            if got != expected:  # every word read exactly once, whatever the layout
                print(f"FAIL {layout} {tile_k}: checksum {got:#x} != {expected:#x}")
                return 1
            if device.type == "cuda":
                rows.append((f"{layout} {tile_k}", split, _time_reads(src, layout, tile_k, split)))
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float16  # the interpreter has no bf16
        x = torch.randn(1, k, dtype=dtype, device=device)
        scale = (torch.rand(n, k // 128, device=device) * 0.01 + 1e-3).to(dtype)
        zero = torch.randint(0, 16, (n, k // 128), dtype=torch.uint8, device=device)
        split = max(1, min(16, (k // TILE_K) // 4))
        y_stored = gemv(x, words, scale, zero, 128, split, tiled=False)
        y_tiled = gemv(x, tiled, scale, zero, 128, split, tiled=True)
        if not torch.equal(y_stored, y_tiled):
            print(f"FAIL GEMV on the tiled copy differs from the stored layout ({n} x {k})")
            return 1
        if device.type != "cuda":
            print(f"{n} x {k}: every layout read every word once (checksums agree); the GEMV on the tiled copy "
                  "equals the stored layout's bit for bit")
            continue
        for label, src, is_tiled in (("GEMV stored", words, False), ("GEMV tiled", tiled, True)):
            rows.append((label, split, _time_gemv(x, src, scale, zero, split, is_tiled)))
        nbytes = words.numel() * 4
        dense_ms = _time_dense(n, k)
        print(f"\n{n} x {k}: {nbytes / 1e6:.1f} MB of int4 words; bf16 F.linear M=1 reads {2 * n * k / 1e6:.0f} MB "
              f"in {dense_ms * 1e3:.1f} us = {2 * n * k / dense_ms / 1e9:.0f} GB/s")
        print("| layout | split | us | GB/s |\n|---|---|---|---|")
        for label, split, ms in rows:
            print(f"| {label} | {split} | {ms * 1e3:.1f} | {nbytes / ms / 1e9:.0f} |")
    return 0


def _time_reads(words, layout, tile_k, split) -> float:
    from awq_ao.kernels.timing import copies_for, graph_time_ms, l2_bytes

    copies = [words.clone() for _ in range(copies_for(words.numel() * 4, l2_bytes()))]
    outs = [read_sum(c, layout, tile_k, split) for c in copies]
    return graph_time_ms([lambda c=c, o=o: read_sum(c, layout, tile_k, split, o) for c, o in zip(copies, outs)])


def _time_gemv(x, words, scale, zero, split, tiled) -> float:
    from awq_ao.kernels.timing import copies_for, graph_time_ms, l2_bytes

    copies = [words.clone() for _ in range(copies_for(words.numel() * 4, l2_bytes()))]
    outs = [gemv(x, c, scale, zero, 128, split, tiled) for c in copies]
    return graph_time_ms([lambda c=c, y=y: gemv(x, c, scale, zero, 128, split, tiled, y=y) for c, y in zip(copies, outs)])


def _time_dense(n, k) -> float:
    from awq_ao.kernels.timing import copies_for, graph_time_ms, l2_bytes

    ws = [torch.randn(n, k, dtype=torch.bfloat16, device="cuda") for _ in range(copies_for(2 * n * k, l2_bytes()))]
    x = torch.randn(1, k, dtype=torch.bfloat16, device="cuda")
    return graph_time_ms([lambda w=w: F.linear(x, w) for w in ws])


if __name__ == "__main__":
    sys.exit(main())
