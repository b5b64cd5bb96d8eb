"""Launchers of the int4 kernels: ``y = (x * act_pre_scale) @ dequantize(W).T``.

The weight is awq_ao's canonical layout, used as stored (no repacking):
``qdata`` uint8 [N, K_pad / 2] (column 2j in the low nibble of byte j), which
the kernels read as int32 words [N, K_pad / 8]; ``scale`` [N, K_pad / G] in
the activation dtype; ``zero_point`` uint8 [N, K_pad / G].

``launch_int4_linear`` picks a ``KernelConfig`` (``configs.select_config``:
tuned table, else heuristic) by M: M = 1 and 2 go to the CUDA-core split-K GEMV
(``int4_gemv.py``, 1, 2 or 4 rows per program), larger M to the
tensor-core GEMM (``int4_gemm.py``, with split-K while M is small), and large
M (``kind="dequant"``) to a dequantize kernel (``int4_dequant.py``) followed by
one dense ``torch.mm``. A split-K launch writes fp32 partials, added in a fixed
order (deterministic) by a second, small kernel or, with ``fused_reduce``, by
the last program of each output tile (``splitk.py``: one int32 counter per
tile, on the device's kept counters, which every launch leaves at zero, or
zeroed per call by the pair-order launch where there is one, else by
``torch.zeros``). The bf16 / fp16 GEMM takes its activation from one more small
launch (``gemm_activation``: ``x * act_pre_scale`` in the pair order its unpacking
makes), or, with ``natural_order``, as given (that launch only for an ``act_pre_scale``).
"""

from __future__ import annotations

from typing import Optional

import torch
import triton

from awq_ao.kernels import int4_gemv_staged, int4_wgmma, pdl, ptx
from awq_ao.kernels.configs import KernelConfig, select_config
from awq_ao.kernels.int4_dequant import _int4_dequant_kernel
from awq_ao.kernels.int4_gemm import _gemm_x_kernel, _int4_gemm_kernel
from awq_ao.kernels.int4_gemv import _int4_gemv_kernel
from awq_ao.kernels.int4_planes import MAGIC_BITS, MAGIC_PAIR_BF16, MAGIC_PAIR_FP16
from awq_ao.kernels.splitk import add_splits, tile_counters

_GEMM_MAGIC = {torch.bfloat16: MAGIC_PAIR_BF16, torch.float16: MAGIC_PAIR_FP16, torch.float32: MAGIC_BITS}

GEMM_X_BLOCK = 1024  # activation columns per program of the GEMM's activation launch


def int4_linear(
    x: torch.Tensor,
    qdata: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    group_size: int,
    in_features: int,
    act_pre_scale: Optional[torch.Tensor] = None,
    out: Optional[torch.Tensor] = None,
    config: Optional[KernelConfig] = None,
) -> torch.Tensor:
    """x: [M, K] (fp16 / bf16 / fp32); returns [M, N] in x.dtype (into ``out`` if given).

    Runs on CUDA, or on CPU tensors under ``TRITON_INTERPRET=1``. ``config``
    overrides the configuration choice (tests and tuning use it). A fused split-K
    sum counts on the device's kept tile counters (``splitk.tile_counters``).
    """
    m, k = x.shape
    if k != in_features:
        raise ValueError(f"x has {k} features, the weight expects {in_features}")
    if x.stride(1) != 1:
        x = x.contiguous()
    return launch_int4_linear(x, qdata, scale, zero_point, act_pre_scale, out, group_size, in_features,
                              config=config, counters=tile_counters(x.device))


def launch_int4_linear(
    x, qdata, scale, zero_point, act_pre_scale, y, group_size, in_features,
    launcher=None, config: Optional[KernelConfig] = None, counters: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Launch the kernel(s) for x [M, K]; returns y [M, N] (``y`` itself when given, else a new tensor).

    ``launcher`` wraps each kernel (``torch.library.wrap_triton``). ``counters``: int32 tile counters, all
    zero, that a fused split-K sum may use and leaves zero (``splitk.tile_counters``); without them, or when
    the launch has more output tiles, a fused sum zeroes counters of its own per call.
    """
    m = x.shape[0]
    if launcher is not None and isinstance(m, torch.SymInt):
        # a graph traced for every M (torch.compile's dynamic shapes): its kernels are chosen by the M of each
        # call in the opaque op, since a config picked here would serve every M (a 2-row GEMV for a prefill)
        return torch.ops.awq_ao.int4_linear_opaque(x, qdata, scale, zero_point, act_pre_scale, group_size,
                                                   in_features)
    n = qdata.shape[0]
    k_pad = qdata.shape[1] * 2
    if config is None:
        config = select_config(m, n, k_pad, group_size, x.device)
    else:
        config = config.fitted(group_size, k_pad)
    wrap = pdl.direct if launcher is None else launcher  # direct launches may use PDL (pdl.py)
    words = qdata.view(torch.int32)
    has_pre = act_pre_scale is not None
    pre = act_pre_scale if has_pre else scale
    if config.kind == "staged" and not (int4_wgmma.wgmma_available(x.device) and x.shape[1] == k_pad
                                        and int4_gemv_staged.fits(n, k_pad, group_size, config.block_n,
                                                                  config.split_k)):
        config = config.as_gemv(group_size, k_pad)  # the Triton GEMV with its tile
    gluon = config.kind == "staged" or (
        config.kind == "wgmma" and x.dtype != torch.float32 and int4_wgmma.wgmma_available(x.device))
    if launcher is not None and (gluon or (config.fused_reduce and config.split_k > 1 and counters is None)):
        # inside the triton_op, with a Gluon kernel (which Inductor cannot re-emit) or a split-K sum in the
        # kernel but no kept counters (a traced call): the kernels run in an opaque op, which comes back
        # here with no launcher and the kept counters
        return torch.ops.awq_ao.int4_linear_opaque(x, qdata, scale, zero_point, act_pre_scale, group_size,
                                                   in_features)
    if config.kind == "staged":
        return int4_gemv_staged.staged_gemv_linear(x, words, scale, zero_point, pre, has_pre, y, group_size, config)
    if config.kind == "wgmma":
        if gluon:
            return int4_wgmma.wgmma_linear(x, words, scale, zero_point, pre, has_pre, y, group_size, in_features,
                                           config, counters=counters)
        config = config.as_swapped_gemm(group_size, k_pad)  # fp32, or no sm_90 / Gluon: the swapped GEMM tile
    if config.kind == "dequant":
        return _dequant_then_mm(x, words, scale, zero_point, pre, has_pre, y, group_size, in_features, config, wrap)
    return fused_linear(x, words, scale, zero_point, pre, has_pre, y, group_size, in_features, n, k_pad, config,
                        wrap, counters=counters)


def fused_linear(x, words, scale, zero_point, pre, has_pre, y, group_size, in_features, n, k_pad, config, wrap,
                 tiled_strides=None, counters=None) -> torch.Tensor:
    """The GEMV or the GEMM of ``config`` (a fitted one), then the split-K reduce; returns y [M, N].

    ``words`` is the stored layout (int32 [N, K_pad / 8]), or, with ``tiled_strides`` = (row, row block,
    K tile) in words, a copy laid out tile by tile that the kernels read with their TILED addressing
    (``benchmarks/bench_layout.py``).
    """
    m = x.shape[0]
    if y is None:
        y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    elif not y.is_contiguous():
        raise ValueError("out must be contiguous")
    tiles = k_pad // config.block_k
    tiles_per_split = triton.cdiv(tiles, config.split_k)
    split = triton.cdiv(tiles, tiles_per_split)
    output_tiles = triton.cdiv(n, config.block_n) * triton.cdiv(m, config.block_m)
    fused = config.fused_reduce and split > 1
    packed16 = config.kind == "gemm" and x.dtype != torch.float32
    natural = packed16 and config.natural_order
    x_launch = packed16 and (has_pre or not natural)  # the GEMM's activation needs a launch of its own
    to_zero = None  # counters that launch zeroes
    if not fused:
        counters = None
    elif counters is None or counters.numel() < output_tiles:  # one int32 per output tile, zero at launch
        counters = (torch.empty if x_launch else torch.zeros)(output_tiles, dtype=torch.int32, device=x.device)
        to_zero = counters if x_launch else None
    if x_launch:  # the GEMM's bf16 / fp16 operand: x * pre, in pair order unless natural, padded to K_pad
        x = gemm_activation(x, pre if has_pre else None, k_pad, wrap, to_zero, pair_order=not natural)
        has_pre, in_features = False, k_pad
    if split == 1:
        out, stride_split = y, 0
    else:
        out = torch.empty((split, m, n), dtype=torch.float32, device=x.device)
        stride_split = out.stride(0)
    common = (m, n, in_features, tiles, tiles_per_split)
    tiled = tiled_strides is not None
    # the stored layout's row stride, row block and K tile (the last two read only by TILED addressing)
    q_row, q_block, q_tile = tiled_strides if tiled else (words.stride(0), config.block_n * words.stride(0),
                                                          config.block_k // 8)
    strides = (x.stride(0), q_row, scale.stride(0), out.stride(-2), stride_split, q_block, q_tile)
    outputs = (out, y, y if counters is None else counters)  # partials (or y), y, the tile counters
    fused_splits = split if fused else 0
    l2_tiles = config.l2_prefetch if ptx.runs_ptx(x) and not tiled else 0  # (inline PTX: not on the interpreter)
    if config.kind == "gemv":
        grid = (triton.cdiv(n, config.block_n), split, triton.cdiv(m, config.block_m))
        wrap(_int4_gemv_kernel)[grid](
            x, words, scale, zero_point, pre, *outputs, *common, *strides,
            GROUP_SIZE=group_size, HAS_PRE_SCALE=has_pre, EVEN_K=in_features == k_pad,
            EVEN_M=m % config.block_m == 0, PREFETCH=config.prefetch, ROWS=config.block_m, TILED=tiled,
            FUSED_SPLITS=fused_splits, LOOP_STAGES=config.num_stages if config.num_stages >= 3 else None,
            BLOCK_N=config.block_n, BLOCK_K=config.block_k, num_warps=config.num_warps, num_stages=config.num_stages,
            L2_TILES=l2_tiles, **pdl.options(x.device, wrap, release=split > 1 and not fused),
        )
    else:
        grid = (triton.cdiv(n, config.block_n), triton.cdiv(m, config.block_m), split)
        wrap(_int4_gemm_kernel)[grid](
            x, words, scale, zero_point, pre, *outputs, *common, _GEMM_MAGIC[x.dtype], *strides,
            GROUP_SIZE=group_size, HAS_PRE_SCALE=has_pre, EVEN_K=in_features == k_pad,
            DOT_PRECISION="ieee" if x.dtype == torch.float32 else "tf32", SWAP_AB=config.swap_ab,
            PREFETCH=config.prefetch, PACKED16=packed16, USE_ASM=ptx.runs_ptx(x), NATURAL=natural, TILED=tiled,
            FUSED_SPLITS=fused_splits, BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
            num_warps=config.num_warps, num_stages=config.num_stages,
            L2_TILES=l2_tiles, **pdl.options(x.device, wrap, release=split > 1 and not fused),
        )
    if split > 1 and not fused:
        add_splits(out, y, wrap)
    return y


def gemm_activation(x: torch.Tensor, pre: Optional[torch.Tensor], k_pad: int, wrap,
                    counters: Optional[torch.Tensor] = None, pair_order: bool = True) -> torch.Tensor:
    """x [M, K] (bf16 / fp16) -> [M, K_pad] contiguous: ``x * pre`` (pre [K] or None), zeros from K on, each
    8 columns in the GEMM's pair order (0, 4, 1, 5, 2, 6, 3, 7) unless ``pair_order`` is False. Zeroes
    ``counters`` (int32 [T]) too, if given."""
    m, k = x.shape
    out = torch.empty((m, k_pad), dtype=x.dtype, device=x.device)
    n_counters = 0 if counters is None else counters.numel()
    grid = (m, triton.cdiv(max(k_pad, n_counters), GEMM_X_BLOCK))
    wrap(_gemm_x_kernel)[grid](x, x if pre is None else pre, out, out if counters is None else counters,
                               k, k_pad, x.stride(0), n_counters,
                               HAS_PRE_SCALE=pre is not None, PAIR_ORDER=pair_order, BLOCK=GEMM_X_BLOCK,
                               **pdl.options(x.device, wrap, release=True))  # the GEMM follows
    return out


def _dequant_then_mm(x, words, scale, zero_point, pre, has_pre, y, group_size, in_features, config, wrap):
    """Large M: write ``dequantize(W) * pre`` [N, K] in x.dtype once, then one dense matmul (cuBLAS)."""
    n = words.shape[0]
    w = torch.empty((n, in_features), dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(n, config.block_n), triton.cdiv(in_features, config.block_k))
    wrap(_int4_dequant_kernel)[grid](
        words, scale, zero_point, pre, w, n, in_features, words.stride(0), scale.stride(0), w.stride(0),
        GROUP_SIZE=group_size, HAS_PRE_SCALE=has_pre, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    if y is None:
        return torch.mm(x, w.t())
    return torch.mm(x, w.t(), out=y)
