"""Adding split-K partial sums: a second launch, or the last program of each output tile.

A split-K launch of the GEMV or the GEMM writes fp32 partials ``part[split, m, n]``
(contiguous, [SPLIT_K, M, N]). Two ways to add them, both in split order from 0.0,
so their results are bit-identical:

* ``_splitk_reduce_kernel``: a second, small launch over all M * N outputs;
* in the kernel itself (``KernelConfig.fused_reduce``): after storing its partial,
  each program bumps its output tile's counter (int32, zero before the launch:
  ``tile_counters``, kept per device, or a zeroed tensor per call);
  the program that sees ``SPLIT_K - 1`` (the last to arrive) adds the tile's
  partials, stores the result in y's dtype and sets the counter back to 0. Every
  thread's partial store comes before a CTA barrier, and the counter's atomic
  add is acquire-release at GPU scope (one thread, after the barrier): the
  release covers the whole CTA's stores, as in CUTLASS's serial split-K
  semaphore; the last program reads the partials through L2 (``.cg``), never a
  stale L1 line. No launch waits for the slowest tile, and nothing needs the
  partials after the kernel.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from awq_ao.kernels import pdl

COUNTER_SLOTS = 1 << 16  # output tiles one fused launch may count on the kept buffer (256 KB per device)
_TILE_COUNTERS: dict = {}


def tile_counters(device) -> Optional[torch.Tensor]:
    """The kept int32 [COUNTER_SLOTS] tile counters of ``device``, zero between launches (None if they do not
    exist yet and this is a trace: a buffer is made only by eager code; the launcher then zeroes counters of
    its own per call).

    Every fused launch leaves the slots it used at 0 (its last programs reset them), so the buffer
    is made once per device and needs no zeroing per call: the fused sum then costs no launch at all.
    Never a graph input: compiled code reaches it through the opaque op ``awq_ao::int4_linear_opaque``,
    which reads it when it runs (a fixed address, so CUDA graphs replay its in-place updates; marked
    static all the same). Two fused launches running at the same time on different streams of
    one device would share it: awq_ao launches on one stream.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    counters = _TILE_COUNTERS.get(device)
    if counters is None:
        if torch.compiler.is_compiling() or torch._guards.detect_fake_mode() is not None:
            return None
        counters = torch.zeros(COUNTER_SLOTS, dtype=torch.int32, device=device)
        if device.type == "cuda":
            torch._dynamo.mark_static_address(counters)
        _TILE_COUNTERS[device] = counters
    return counters


@triton.jit
def last_to_arrive(counter_ptr, SPLIT_K: tl.constexpr):
    """True in the program that arrives last at ``counter_ptr`` (int32 scalar pointer) of the SPLIT_K that share it.

    Call after storing this program's partial: the barrier orders every thread's
    store before the counter's release.
    """
    tl.debug_barrier()
    arrived = tl.atomic_add(counter_ptr, 1, sem="acq_rel", scope="gpu")
    return arrived == SPLIT_K - 1


@triton.jit
def sum_splits(part_ptrs, mask, stride_split, SPLIT_K: tl.constexpr):
    """fp32 ``sum_s part[s]`` in split order (s = 0 first) at the pointers of split 0 (any shape); all loads in flight."""
    total = tl.zeros(part_ptrs.shape, dtype=tl.float32)
    for s in tl.static_range(SPLIT_K):
        total += tl.load(part_ptrs + s * stride_split, mask=mask, other=0.0, cache_modifier=".cg")
    return total


@triton.jit
def reset_counter(counter_ptr):
    """Leave the tile's counter at 0 for the next launch (by the last program, once it has read the partials)."""
    tl.atomic_xchg(counter_ptr, 0, sem="relaxed", scope="gpu")


@triton.jit
def _splitk_reduce_kernel(part_ptr, y_ptr, MN, stride_split, SPLIT_K: tl.constexpr, BLOCK: tl.constexpr,
                          PDL: tl.constexpr = 0):
    """y[i] = sum_s part[s, i] (fp32, s in order), stored in y's dtype; part is [SPLIT_K, M*N] contiguous rows.

    SPLIT_K is a compile-time constant so the loop unrolls and every split's load
    is in flight at once (one memory round trip, not SPLIT_K / 4 of them). PDL: launched after the split
    kernel with programmatic dependent launch (``pdl.py``): it waits for that kernel's partials first, and
    releases nothing (the next kernel launches when this one ends).
    """
    if PDL:  # (never in the source Inductor re-emits, which lacks ``pdl``)
        pdl.prologue(PDL)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < MN
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in tl.static_range(SPLIT_K):
        acc += tl.load(part_ptr + s * stride_split + offs, mask=mask, other=0.0)
    tl.store(y_ptr + offs, acc.to(y_ptr.dtype.element_ty), mask=mask)


REDUCE_BLOCK = 128  # one output per thread: N = 4096 gets 32 programs (1024 gave 4, each looping)


def add_splits(part: torch.Tensor, y: torch.Tensor, wrap=None) -> None:
    """y [M, N] = the sum of part [SPLIT_K, M, N] (fp32) over splits, in order: one launch of
    ``_splitk_reduce_kernel`` (``wrap``: ``torch.library.wrap_triton`` inside a ``triton_op``; launched directly,
    with programmatic dependent launch where ``pdl.options`` allows)."""
    kernel = _splitk_reduce_kernel if wrap is None else wrap(_splitk_reduce_kernel)
    mn = y.numel()
    kernel[(triton.cdiv(mn, REDUCE_BLOCK),)](part, y, mn, part.stride(0), SPLIT_K=part.shape[0], BLOCK=REDUCE_BLOCK,
                                             **pdl.options(y.device, wrap))
