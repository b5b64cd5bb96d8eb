"""Folding AWQ scales into the model so the float model computes the same function.

For a group with scale ``s`` [C]: the linears' weights are multiplied by ``s``
column-wise and the op that produces their input divides its output by ``s``:
a norm's weight (and bias), or a linear's output rows (and bias). Arithmetic is
done in fp32 and rounded once to the parameter's dtype.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def divide_output(prev: nn.Module, s: torch.Tensor, name: str) -> None:
    """Divide the output channels of ``prev`` (a linear or a norm with ``weight``) by ``s`` [C]."""
    weight = getattr(prev, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.shape[0] != s.shape[0]:
        raise ValueError(f"cannot fold AWQ scales into {name} ({type(prev).__name__}): "
                         f"no weight with {s.shape[0]} output channels")
    s = s.to(weight.device)
    if weight.dim() == 2:
        weight.copy_((weight.float() / s[:, None]).to(weight.dtype))
    else:
        weight.copy_((weight.float() / s).to(weight.dtype))
    bias = getattr(prev, "bias", None)
    if isinstance(bias, torch.Tensor):
        bias.copy_((bias.float() / s).to(bias.dtype))


@torch.no_grad()
def multiply_columns(linear: nn.Linear, s: torch.Tensor) -> None:
    """``linear.weight[:, c] *= s[c]``."""
    w = linear.weight
    w.copy_((w.float() * s.to(w.device)[None, :]).to(w.dtype))
