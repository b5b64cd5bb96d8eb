"""Programmatic dependent launch (PDL, sm_90 on): a kernel of ours may be launched while the one before it runs.

A kernel launched with ``launch_pdl=True`` (CUDA's programmatic stream serialization) may be placed on the SMs
before the kernel ahead of it on the stream has finished, once every program of that kernel has executed
``griddepcontrol.launch_dependents``. Each awq_ao kernel launched so first waits until the kernel ahead has
finished and its writes are visible (``griddepcontrol.wait``), before it reads or writes anything: memory is
accessed exactly as without PDL (``prologue``; Gluon: ``gluon_prologue``). A kernel that the same call follows
with another (the split kernel before the split-K reduce, the GEMM's activation launch before the GEMM) then
releases that launch, whose placement so overlaps its run. The last kernel of a call releases nothing, so the
kernel after a call (in a model, Inductor's) starts as it would without PDL, and a timing of calls back to back
measures what a model gets. The reduce alone took 1.7-2.0 us at M = 1 in a CUDA graph on the H200, mostly
launch and drain, not its half megabyte of partials (``benchmarks/results/bench_layout_nvidia_h200*.txt``).

Used only for launches made directly (eager calls, and the opaque op under ``torch.compile``), never inside
Inductor's re-emitted Triton calls (``launcher``), on CUDA devices of compute capability 9 or more.
``AWQ_AO_PDL=0`` turns it off; so does ``benchmarks/gpu_check.py`` (``ENABLED``) when its check fails.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

try:  # Triton >= 3.5 ships Gluon
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
except ImportError:  # pragma: no cover - depends on the installed Triton
    gluon = None

ENABLED = True  # benchmarks/gpu_check.py sets it False when launches with PDL disagree with launches without


@functools.lru_cache(maxsize=None)
def _capability_major(device_index: int) -> int:
    return torch.cuda.get_device_capability(device_index)[0]


def enabled(device: torch.device) -> bool:
    """Whether direct launches on ``device`` use PDL: a CUDA device of capability 9+, not under
    ``TRITON_INTERPRET``, ``ENABLED`` and ``AWQ_AO_PDL`` not "0"."""
    if not (ENABLED and device.type == "cuda" and os.environ.get("AWQ_AO_PDL", "1") != "0"):
        return False
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        return False
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _capability_major(index) >= 9


def direct(kernel):
    """The launcher of kernels launched as they are (not through Inductor): the kernel itself."""
    return kernel


def options(device: torch.device, wrap=None, release: bool = False) -> dict:
    """Keyword arguments for one launch: the kernel's ``PDL`` constexpr (0: off; 1: wait for the kernel ahead; 2:
    then release the launch behind, for a kernel the same call follows with another: the split-K reduce, or the
    GEMM after its activation launch) and, when on, Triton's ``launch_pdl`` option. ``wrap`` is the launch's
    kernel wrapper (None or ``direct``: launched directly; any other, e.g. ``torch.library.wrap_triton``: no PDL)."""
    if (wrap is None or wrap is direct) and enabled(device):
        return {"PDL": 2 if release else 1, "launch_pdl": True}
    return {"PDL": 0}


@triton.jit
def prologue(PDL: tl.constexpr):
    """A kernel's first step under ``options``' PDL: wait for the kernel ahead (finished, its writes visible),
    then (2) let the launch behind it be placed."""
    if PDL >= 1:
        gdc_wait()
    if PDL >= 2:
        gdc_launch_dependents()


if gluon is not None:

    @gluon.jit
    def gluon_prologue(PDL: gl.constexpr):
        """``prologue`` for Gluon kernels."""
        if PDL >= 1:
            gl.inline_asm_elementwise("griddepcontrol.wait; // dummy $0", "=r", [], dtype=gl.int32, is_pure=False,
                                      pack=1)
        if PDL >= 2:
            gl.inline_asm_elementwise("griddepcontrol.launch_dependents; // dummy $0", "=r", [], dtype=gl.int32,
                                      is_pure=False, pack=1)

