"""torch.library ops of awq_ao and the device / shape dispatch of the int4 linear.

``int4_linear(x, w, bias)`` picks one path, in Python, before any op is called
(a ``triton_op`` must never be traced with CPU tensors, see DESIGN.md):

* CUDA: ``awq_ao::int4_linear_triton``, the Triton kernels (``awq_ao.kernels``):
  split-K GEMV for a few rows, tensor-core GEMM (split-K while M is small)
  above, dequantize-then-``torch.mm`` for large M;
  the launch configuration comes from ``awq_ao.kernels.select_config`` (tuned
  table keyed by GPU, M bucket, N, K and group, else a heuristic). Where that
  config is a Gluon kernel (sm_90; a tuned table's pick: the wgmma GEMM, bf16 /
  fp16, or the staged M = 1 GEMV),
  or a split-K sum in the kernel while the body is traced (``torch.compile``:
  the sum needs the kept tile counters, a real tensor, which may not enter a
  graph built on fake ones), or M is symbolic (a graph traced for every M), the
  op's body calls ``awq_ao::int4_linear_opaque``: an opaque custom op, since
  Inductor cannot re-emit a Gluon kernel, the counters are read when it runs,
  and the config is chosen by each call's M.
* CPU, bf16 activations, at most ``CPU_INT4_MAX_M`` rows, and a weight shape the
  kernel takes (N % 16 == 0, group 32/64/128/256): ``aten._weight_int4pack_mm_for_cpu``
  on the layout prepared once when the weight was built.
* everywhere else (prefill, fp32 / fp16 on CPU, other devices):
  ``awq_ao::int4_linear_dequant``, an opaque op that dequantizes and calls
  ``F.linear``; kept opaque so inductor does not re-fuse it into a slow loop.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from awq_ao import dequant_linear, quant

# Largest number of rows sent to the CPU int4 kernel. Its time grows linearly
# with M (0.1 ms per row at 4096x4096 on a 2-core AMD EPYC with bf16 instructions)
# while dequantize (by blocks of rows) + dense bf16 costs a fixed ~9 ms plus a
# cheap matmul: `benchmarks/bench_cpu_linear.py --crossover` puts the crossover
# at M=128 there (benchmarks/results/cpu_linear_crossover_amd_epyc.md; on the
# first machine, before the block dequantization, between 128 and 256).
CPU_INT4_MAX_M = 128


@torch.library.custom_op("awq_ao::int4_linear_dequant", mutates_args=())
def int4_linear_dequant(
    x: Tensor,
    qdata: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    act_pre_scale: Optional[Tensor],
    group_size: int,
    in_features: int,
) -> Tensor:
    """Reference path: ``F.linear(x * act_pre_scale, dequantize(W))``; x [..., K] -> [..., N] (on CPU
    dequantized a block of rows at a time into reused buffers, ``dequant_linear``: the same values, 2-4x faster
    on the Llama-3-8B shapes)."""
    if act_pre_scale is not None:
        x = x * act_pre_scale
    if x.device.type == "cpu" and dequant_linear.blocks_pay(qdata, x.dtype):
        y = dequant_linear.linear_by_row_blocks(x.reshape(-1, x.shape[-1]), qdata, scale, zero_point, group_size,
                                                in_features)
        return y.view(*x.shape[:-1], qdata.shape[0])
    w = quant.dequantize(quant.unpack_int4(qdata), scale, zero_point, group_size, in_features, x.dtype)
    return F.linear(x, w)


@int4_linear_dequant.register_fake
def _(x, qdata, scale, zero_point, act_pre_scale, group_size, in_features):
    return x.new_empty((*x.shape[:-1], qdata.shape[0]))


@torch.library.triton_op("awq_ao::int4_linear_triton", mutates_args=())
def int4_linear_triton(
    x: Tensor,
    qdata: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    act_pre_scale: Optional[Tensor],
    group_size: int,
    in_features: int,
) -> Tensor:
    """CUDA path: fused dequantize + matmul in Triton; x [M, K] -> [M, N] in x.dtype.

    A config that adds its splits in the kernel uses the device's kept tile counters
    (``awq_ao.kernels.splitk.tile_counters``): read here when the body runs eagerly; when it is traced
    (Inductor lowers a ``triton_op`` by tracing its body on fake tensors, and the kept buffer is a real
    one) such a config runs in ``int4_linear_opaque``, which reads them when it runs. The counters are no
    argument of the op: torch 2.11's fake propagation failed on a mutable optional tensor argument
    ("tuple index out of range", the H200 check of 2026-11-27).
    """
    from awq_ao.kernels.int4_matmul import launch_int4_linear
    from awq_ao.kernels.splitk import tile_counters

    traced = torch.compiler.is_compiling() or torch._guards.detect_fake_mode((x,)) is not None
    # run eagerly, the kernels are launched directly (with programmatic dependent launch on sm_90 and later,
    # kernels/pdl.py); traced, through wrap_triton, so that Inductor re-emits them
    return launch_int4_linear(
        x, qdata, scale, zero_point, act_pre_scale, None, group_size, in_features,
        launcher=torch.library.wrap_triton if traced else None, counters=None if traced else tile_counters(x.device),
    )


def _rows_by_out_features(x, qdata, scale, zero_point, act_pre_scale, group_size, in_features):
    """The fake of the CUDA ops: x [M, K] -> an empty [M, N] in x's dtype."""
    return x.new_empty((x.shape[0], qdata.shape[0]))


int4_linear_triton.register_fake(_rows_by_out_features)


@torch.library.custom_op("awq_ao::int4_linear_opaque", mutates_args=())
def int4_linear_opaque(
    x: Tensor,
    qdata: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    act_pre_scale: Optional[Tensor],
    group_size: int,
    in_features: int,
) -> Tensor:
    """The kernels of ``int4_linear_triton``, launched where the compiler does not look; x [M, K] -> [M, N]
    in x.dtype. Called from that op's body when the config it selects is a Gluon kernel
    (``awq_ao/kernels/int4_wgmma.py``, ``int4_gemv_staged.py``: Inductor re-emits a ``triton_op``'s kernels
    as ``@triton.jit`` source, which a Gluon kernel is not), or adds its splits in the kernel and the body was traced without
    the kept tile counters (under ``torch.compile``: here they are read at run time, a fixed buffer that
    CUDA graphs replay), or M is symbolic (a graph traced for every M: the config is chosen here, by the M
    of the call). The choice stays out of Dynamo-traced code."""
    from awq_ao.kernels.int4_matmul import launch_int4_linear
    from awq_ao.kernels.splitk import tile_counters

    # the op runs eagerly even in a compiled graph: the kept counters are read when it runs
    return launch_int4_linear(x, qdata, scale, zero_point, act_pre_scale, None, group_size, in_features,
                              counters=tile_counters(x.device))


int4_linear_opaque.register_fake(_rows_by_out_features)


def cpu_fast_path_applies(x: Tensor, w) -> bool:
    """Whether ``int4_linear`` sends ``x @ w.T`` to ``aten._weight_int4pack_mm_for_cpu``."""
    rows = x.numel() // max(x.shape[-1], 1)
    return (
        x.device.type == "cpu"
        and w.cpu_packed is not None
        and x.dtype == torch.bfloat16
        and rows <= CPU_INT4_MAX_M
    )


def _cpu_int4_mm(x2d: Tensor, w) -> Tensor:
    k_pad = w.qdata.shape[1] * 2
    if x2d.shape[1] != k_pad:
        x2d = F.pad(x2d, (0, k_pad - x2d.shape[1]))
    return torch.ops.aten._weight_int4pack_mm_for_cpu(
        x2d.contiguous(), w.cpu_packed, w.group_size, w.cpu_scale_zero
    )


def int4_linear(x: Tensor, w, bias: Optional[Tensor] = None) -> Tensor:
    """``F.linear(x * w.act_pre_scale, w.dequantize(), bias)`` for an ``AWQInt4Tensor`` w.

    x: [..., K] in the weight's dtype; returns [..., N] in that dtype.
    """
    k = w.in_features
    if x.shape[-1] != k:
        raise ValueError(f"input has {x.shape[-1]} features, the int4 weight expects {k}")
    if x.dtype != w.scale.dtype:  # w.scale, not w: attribute reads on the subclass are slow
        raise ValueError(
            f"input dtype {x.dtype} does not match the int4 weight's activation dtype {w.scale.dtype}; "
            "cast the model (model.to(dtype)) or the input"
        )
    lead = x.shape[:-1]
    x2d = x.reshape(-1, k)
    if x.device.type == "cuda":
        y = torch.ops.awq_ao.int4_linear_triton(
            x2d.contiguous(), w.qdata, w.scale, w.zero_point, w.act_pre_scale, w.group_size, k
        )
    elif cpu_fast_path_applies(x, w):
        if w.act_pre_scale is not None:
            x2d = x2d * w.act_pre_scale
        y = _cpu_int4_mm(x2d, w)
    else:
        y = torch.ops.awq_ao.int4_linear_dequant(
            x2d, w.qdata, w.scale, w.zero_point, w.act_pre_scale, w.group_size, k
        )
    y = y.reshape(*lead, w.out_features)
    return y if bias is None else y + bias
