"""Pre-tune the CUDA int4 kernels for the linears of a quantized model.

Config selection is a table lookup (``awq_ao.kernels.select_config``); timing
happens only here, so call ``tune_kernels`` once after ``quantize_`` and before
``torch.compile(mode="reduce-overhead")`` captures CUDA graphs. Tuned tables
for some GPUs ship in ``kernels/tuned/``; ``save_to`` writes a new one, which
``awq_ao.kernels.load_tuned(path)`` reads back in another process.
"""

from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import nn

from awq_ao.tensor import AWQInt4Tensor


def int4_linear_shapes(model: nn.Module) -> list[tuple[int, int, int, torch.dtype]]:
    """Distinct (out_features, in_features, group_size, dtype) of the model's int4 weights on CUDA."""
    shapes = set()
    for module in model.modules():
        w = getattr(module, "weight", None)
        if isinstance(w, AWQInt4Tensor) and w.device.type == "cuda":
            shapes.add((w.out_features, w.in_features, w.group_size, w.dtype))
    return sorted(shapes, key=lambda s: (s[0], s[1], s[2], str(s[3])))


def tune_kernels(
    model: nn.Module,
    batch_sizes: Iterable[int] = (1,),
    save_to: Optional[str] = None,
    verbose: bool = False,
) -> dict:
    """Time the candidate launch configs for every int4 linear of ``model`` at each M in ``batch_sizes``.

    M is the number of rows a linear sees (batch x new tokens: 1 for
    single-sequence decoding). Returns {(M bucket, N, K, group): (config, ms)}.
    """
    from awq_ao import kernels

    if not torch.cuda.is_available():
        raise RuntimeError("tune_kernels times the CUDA kernels and needs a CUDA GPU")
    shapes = int4_linear_shapes(model)
    if not shapes:
        raise ValueError("the model has no AWQInt4Tensor weights on CUDA: quantize_ it and move it to the GPU first")
    results = {}
    for dtype in sorted({s[3] for s in shapes}, key=str):
        todo = [(m, n, k, g) for n, k, g, d in shapes if d == dtype for m in batch_sizes]
        results.update(kernels.tune(todo, dtype=dtype, verbose=verbose))
    if save_to is not None:
        kernels.save_tuned(save_to, torch.cuda.get_device_name())
    return results
