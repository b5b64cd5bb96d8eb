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

Then the library's kernels on the stored layout and on a tiled copy (their TILED addressing; the
outputs must be bit-identical): the M=1 GEMV (128 x 128 tile) and the M=16 GEMM (the 64 x 128
swapped tile the H200 tuning picks), each with split-K and its reduce.

Each is timed like ``bench_kernels.py`` (CUDA graph over rotated copies, so
the bytes come from HBM), next to bf16 ``F.linear`` at M=1 and a device copy; the kernels
once more from L2 (the same weights every call), their extra launches alone (the split-K
reduce, the GEMM's pair-ordered activation), and the GEMM without them (``natural_order``,
``fused_reduce``, both: one launch).
If ``tiled`` reads near the bf16 GEMV's rate and ``row-major 128`` near
1.65 TB/s, the layout is the GEMV's limit.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import sys

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from awq_ao.kernels import KernelConfig  # noqa: E402

BLOCK_N = 128
TILE_K = 128  # columns per tile of the tiled layout (the GEMV's BLOCK_K at group 128)
READ_SPLITS = (4, 8, 16, 32)  # programs per row block for the read kernel: 16 to 2 tiles each at K = 8192


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


GEMV_CONFIG = KernelConfig("gemv", BLOCK_N, TILE_K)  # the M=1 default tile
GEMM_CONFIG = KernelConfig("gemm", 64, TILE_K, block_m=16, num_stages=3, prefetch=1, swap_ab=True)  # M=16's


def linear(x, words, scale, zero, group: int, cfg: KernelConfig, tiled: bool, y=None) -> torch.Tensor:
    """y [M, N] = x [M, K] @ dequantize(W).T with ``cfg`` (its split_k, BLOCK_K = 128) on the stored words
    [N, K/8] or on ``to_tiled(words, cfg.block_n)``: the library's launch (``int4_matmul.fused_linear``),
    split-K and reduce included, with the tiled copy's strides and the kernels' TILED addressing; a fused split-K
    sum counts on the device's kept tile counters, as ``int4_linear`` does."""
    from awq_ao.kernels.int4_matmul import fused_linear
    from awq_ao.kernels.splitk import tile_counters

    k = x.shape[1]
    if tiled:  # row, row block and K tile strides of the [N/BN, K/128, BN, 16] copy
        n, strides = words.shape[0] * cfg.block_n, (TILE_K // 8, words.stride(0), words.stride(1))
    else:
        n, strides = words.shape[0], None
    return fused_linear(x, words, scale, zero, scale, False, y, group, k, n, k, cfg.fitted(group, k),
                        lambda kernel: kernel, tiled_strides=strides, counters=tile_counters(x.device))


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
    for n, k in zip(args.n, args.k):
        words = torch.randint(-2**31, 2**31 - 1, (n, k // 8), dtype=torch.int32, device=device)
        tiled = to_tiled(words)
        expected = int(words.sum(dtype=torch.int64)) & 0xFFFFFFFF
        rows = []
        # (layout, columns per row per tile, split): the 128-column layouts over a range of splits (longer or
        # shorter loops per program), the longer row-major runs at the GEMV's usual split
        variants = [(layout, 128, split) for layout in ("row-major", "tiled") for split in READ_SPLITS
                    if split <= k // 128] + [("row-major", tk, max(1, min(16, (k // tk) // 2))) for tk in (256, 512)]
        if device.type == "cuda":
            rows.append(("row-major 128, L2-resident", 16, _time_over_copies(
                words, lambda w, o: read_sum(w, "row-major", 128, 16, o), resident=True)))
        for layout, tile_k, split in variants:
            src = tiled if layout == "tiled" else words
            got = int(read_sum(src, layout, tile_k, split).sum(dtype=torch.int64)) & 0xFFFFFFFF
            if got != expected:  # every word read exactly once, whatever the layout
                print(f"FAIL {layout} {tile_k}: checksum {got:#x} != {expected:#x}")
                return 1
            if device.type == "cuda":
                rows.append((f"{layout} {tile_k}", split, _time_over_copies(
                    src, lambda w, o, layout=layout, tile_k=tile_k, split=split: read_sum(w, layout, tile_k, split, o))))
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float16  # the interpreter has no bf16
        scale = (torch.rand(n, k // 128, device=device) * 0.01 + 1e-3).to(dtype)
        zero = torch.randint(0, 16, (n, k // 128), dtype=torch.uint8, device=device)
        default_split = max(1, min(16, (k // TILE_K) // 4))
        kernels = [("GEMV M=1", GEMV_CONFIG, 1), ("GEMM M=16", GEMM_CONFIG, 16)]
        for (label, cfg, m), split in itertools.product(kernels, sorted({max(1, default_split // 2), default_split, default_split * 2})):
            cfg = dataclasses.replace(cfg, split_k=split)
            x = torch.randn(m, k, dtype=dtype, device=device)
            tiled_n = to_tiled(words, cfg.block_n)
            y = linear(x, words, scale, zero, 128, cfg, tiled=False)
            if not torch.equal(y, linear(x, tiled_n, scale, zero, 128, cfg, tiled=True)):
                print(f"FAIL {label} on the tiled copy differs from the stored layout ({n} x {k})")
                return 1
            if device.type == "cuda":
                for layout, src, is_tiled in (("stored", words, False), (f"tiled {cfg.block_n}x128", tiled_n, True)):
                    rows.append((f"{label} {layout}", split, _time_over_copies(
                        src, lambda w, o, x=x, cfg=cfg, t=is_tiled: linear(x, w, scale, zero, 128, cfg, t, y=o))))
                if split == default_split:  # the same weights every call: from L2, what the kernel costs without HBM
                    rows.append((f"{label} stored, L2-resident", split, _time_over_copies(
                        words, lambda w, o, x=x, cfg=cfg: linear(x, w, scale, zero, 128, cfg, False, y=o),
                        resident=True)))
                    rows.append((f"split-K reduce alone ({label})", split, _time_reduce(m, n, split)))
                    if cfg.kind == "gemm":  # the GEMM's other extra launch: its pair-ordered activation
                        rows.append((f"activation launch alone ({label})", "-", _time_activation_launch(m, k)))
                        # side by side: without that launch (column order), without the reduce launch (fused
                        # split-K sum), and with neither: one launch
                        for natural, fused, what in ((True, False, "column order"), (False, True, "fused sum"),
                                                     (True, True, "column order + fused sum: one launch")):
                            variant = dataclasses.replace(cfg, natural_order=natural, fused_reduce=fused)
                            rows.append((f"{label} stored, {what}", split, _time_over_copies(
                                words, lambda w, o, x=x, cfg=variant: linear(x, w, scale, zero, 128, cfg, False,
                                                                             y=o))))
        if device.type != "cuda":
            print(f"{n} x {k}: every layout read every word once (checksums agree); the GEMV and the GEMM on "
                  "tiled copies equal the stored layout's results bit for bit")
            continue
        nbytes = words.numel() * 4
        rows.append(("torch copy_ (reads and writes: twice the bytes)", "-",
                     _time_over_copies(words, lambda w, o: w.clone() if o is None else o.copy_(w))))
        dense_ms = _time_dense(n, k)
        print(f"\n{n} x {k}: {nbytes / 1e6:.1f} MB of int4 words; bf16 F.linear M=1 reads {2 * n * k / 1e6:.0f} MB "
              f"in {dense_ms * 1e3:.1f} us = {2 * n * k / dense_ms / 1e9:.2f} TB/s")
        print("| layout | split | us | TB/s of int4 words |\n|---|---|---|---|")
        for label, split, ms in rows:
            print(f"| {label} | {split} | {ms * 1e3:.1f} | {nbytes / ms / 1e9:.2f} |")
    return 0


def _time_over_copies(words, call, resident: bool = False) -> float:
    """ms per ``call(words_copy, out)``, in a CUDA graph over copies of ``words`` (HBM, not L2); call(w, None)
    makes the output first. ``resident``: ``words`` itself every call (from L2 when it fits)."""
    from awq_ao.kernels.timing import copies_for, graph_time_ms, l2_bytes

    count = copies_for(words.numel() * 4, l2_bytes())
    copies = [words] * count if resident else [words.clone() for _ in range(count)]
    outs = [call(c, None) for c in copies]
    return graph_time_ms([lambda c=c, o=o: call(c, o) for c, o in zip(copies, outs)])


def _time_reduce(m, n, split) -> float:
    """ms of the split-K reduce alone: fp32 partials [split, m, n] -> bf16 [m, n]."""
    from awq_ao.kernels.splitk import add_splits
    from awq_ao.kernels.timing import graph_time_ms

    parts = [torch.randn(split, m, n, device="cuda") for _ in range(8)]
    ys = [torch.empty(m, n, dtype=torch.bfloat16, device="cuda") for _ in range(8)]
    return graph_time_ms([lambda p=p, y=y: add_splits(p, y) for p, y in zip(parts, ys)])


def _time_activation_launch(m, k) -> float:
    """ms of the GEMM's activation launch alone: bf16 x [m, k] -> pair order."""
    from awq_ao.kernels.int4_matmul import gemm_activation
    from awq_ao.kernels.timing import graph_time_ms

    xs = [torch.randn(m, k, dtype=torch.bfloat16, device="cuda") for _ in range(8)]
    return graph_time_ms([lambda x=x: gemm_activation(x, None, k, lambda kernel: kernel) for x in xs])


def _time_dense(n, k) -> float:
    from awq_ao.kernels.timing import copies_for, graph_time_ms, l2_bytes

    ws = [torch.randn(n, k, dtype=torch.bfloat16, device="cuda") for _ in range(copies_for(2 * n * k, l2_bytes()))]
    x = torch.randn(1, k, dtype=torch.bfloat16, device="cuda")
    return graph_time_ms([lambda w=w: F.linear(x, w) for w in ws])


if __name__ == "__main__":
    sys.exit(main())
