"""Decode-time transforms of a (quantized) ``Transformer``, applied after loading and before compiling.

Measured on SmolLM2-135M, 2 CPU cores, int4 g64, bf16 (profiles in
``benchmarks/results/decode_cpu.md``):

* ``fuse_projections``: q/k/v and gate/up become one matmul each (7 -> 4 int4
  calls per block).
* ``unwrap_weights``: the int4 weights become parametrized plain tensors, so
  the compiled step's guards check plain tensors, not tensor subclasses
  (dynamo's cache lookup: 2.4 ms per token with subclasses, 0.9 ms unwrapped;
  ``python benchmarks/bench_decode.py --profile-only [--no-unwrap]``).
* ``Int8Linear`` for the output head (opt-in): the float lm_head is the largest
  single read of a small model (49152 x 576 on SmolLM2); int8 weight-only with
  per-row scales halves it. Off by default, since AWQ keeps lm_head in float.

After these the state dict no longer has transformers' names: save first.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from awq_ao.models.llama import Transformer


class Int8Linear(nn.Module):
    """Weight-only int8 linear: ``y = (x @ q.T) * scale``; q int8 [N, K], scale [N] (symmetric, per row).

    On CPU with bf16 input it calls ``aten._weight_int8pack_mm``; elsewhere it dequantizes.
    """

    def __init__(self, weight: Tensor):
        super().__init__()
        w = weight.detach().float()
        scale = (w.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny)
        self.register_buffer("qweight", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(weight.dtype))
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]

    def forward(self, x: Tensor) -> Tensor:
        """x [..., K] -> [..., N] in x's dtype."""
        if x.device.type == "cpu" and x.dtype == torch.bfloat16:
            y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, self.in_features), self.qweight, self.scale)
            return y.reshape(*x.shape[:-1], self.out_features)
        return F.linear(x, self.qweight.to(x.dtype)) * self.scale.to(x.dtype)


def unwrap_weights(model: nn.Module) -> nn.Module:
    """Parametrize every tensor-subclass weight as plain tensors (faster guards under torch.compile)."""
    from torchao.utils import unwrap_tensor_subclass

    return unwrap_tensor_subclass(model)


def prepare_for_decode(model: Transformer, int8_lm_head: bool = False, unwrap: bool = True) -> Transformer:
    """Fuse projections, optionally make lm_head int8, unwrap subclass weights; in place, returns the model."""
    model.fuse_projections()
    if int8_lm_head:
        model.lm_head = Int8Linear(model.lm_head.weight)
    if unwrap:
        unwrap_weights(model)
    return model


def lm_head_kind(model: nn.Module) -> Optional[str]:
    return "int8" if isinstance(getattr(model, "lm_head", None), Int8Linear) else None
