"""Whether a launch runs the kernels as compiled PTX, which inline assembly needs.

A CUDA tensor's launch does; CPU tensors run Triton's interpreter (the tests) or the Gluon emulator, which have
no PTX. The GEMM's packed unpacking (``USE_ASM``) and the L2 prefetch (``L2_TILES``) are on only where this holds.
"""

from __future__ import annotations

import torch


def runs_ptx(x: torch.Tensor) -> bool:
    """Whether kernels launched on ``x``'s device run compiled PTX (a CUDA device)."""
    return x.is_cuda
