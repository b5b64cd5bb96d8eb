"""AWQ's two searches, on Gram matrices: per-channel scales for a group, clip ratios per weight group.

Both minimise the squared error of a linear's output over the calibration
tokens. For a weight error ``dW`` [N, C] and inputs ``X`` [T, C] that is
``||X dW.T||^2 = sum((dW @ G) * dW)`` with the Gram matrix ``G = X.T X``
[C, C], so the T tokens enter once (when G is accumulated) and each grid
point costs one [N, C] x [C, C] product, whatever T is. For a group of linears
sharing an input (q/k/v, gate/up) the loss is the sum of their output errors.

Scale search (AWQ with duo scaling): ``s = x_mean**a / w_mean**(1 - a)`` for
``a`` on a grid, normalised by ``sqrt(max(s) min(s))``;
the weight is quantized as ``W * s`` and fed ``x / s``, so its effective weight
is ``Q(W s) / s``. ``s = 1`` (round-to-nearest) is always a candidate, so the
search never does worse than RTN on its loss. The loss is the Gram form above,
or optionally (for gate/up) the output error of the whole MLP on a token subsample.

Clip search (AWQ's auto_clip): for each output row and input group, the ratio
of the group's max |w| kept before quantizing, from 1 down to ``1 - max_shrink``
on a grid, minimising that (row, group)'s share of the output error under the
block-diagonal of G.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from awq_ao import quant


def output_error(dw: torch.Tensor, gram: torch.Tensor) -> float:
    """``||X dW.T||^2`` = sum((dW @ G) * dW); dW [N, C], G [C, C], fp32."""
    return float(((dw @ gram) * dw).sum())


def weight_mean(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """AWQ's w_mean [C]: |w| over its group's max |w|, averaged over the rows; w [N, C]."""
    n, c = w.shape
    grouped = quant._grouped(w.abs(), group_size, 0.0)
    normed = grouped / grouped.amax(dim=-1, keepdim=True).clamp(min=1e-12)
    return normed.view(n, -1)[:, :c].mean(dim=0)


def _normalised(s: torch.Tensor) -> torch.Tensor:
    s = s.clamp(min=1e-4)
    return s / (s.max() * s.min()).sqrt()


def gram_loss(w: torch.Tensor, gram: torch.Tensor) -> Callable[[torch.Tensor], float]:
    """Loss of an effective weight ``wq`` [N, C]: the output error ``||X (wq - w).T||^2`` via the Gram matrix."""
    w = w.float()
    return lambda wq: output_error(wq - w, gram)


def search_scale(
    w: torch.Tensor,
    x_mean: torch.Tensor,
    loss_fn: Callable[[torch.Tensor], float],
    bits: int,
    group_size: int,
    zero_point: bool = True,
    n_grid: int = 20,
    tie: Optional[tuple[Callable, Callable]] = None,
    scale_dtype: Optional[torch.dtype] = None,
) -> tuple[torch.Tensor, float, float]:
    """Best per-channel scale ``s`` [C] for the rows ``w`` [N, C] (all linears of the group stacked).

    ``loss_fn(wq)`` scores an effective weight ``Q(W s) / s`` [N, C] (``gram_loss``,
    or the output error of the module that consumes the group). Candidates:
    ``s = 1`` and duo scaling ``x_mean**a / w_mean**(1-a)``, ``a = 0, 1/n_grid, ...``
    (adding plain AWQ's ``x_mean**a`` lowered this loss but raised SmolLM2's
    perplexity, 28.65 -> 28.83 at w4 g64). ``tie`` = (reduce, expand)
    constrains s to ``expand(reduce-space scale)`` (v -> o under GQA: one scale
    per KV head's channel). Returns ``(s, loss at s, loss at s = 1)``; s fp32.
    """
    w = w.float()
    reduce, expand = tie if tie is not None else (lambda t: t, lambda t: t)
    x_r = reduce(x_mean.float()).clamp(min=1e-8)
    w_r = reduce(weight_mean(w, group_size)).clamp(min=1e-8)

    def loss_of(s: torch.Tensor) -> float:
        wq = quant.fake_quantize(w * s, bits, group_size, zero_point, scale_dtype=scale_dtype or torch.float32)
        return loss_fn(wq.float() / s)

    ones = torch.ones_like(x_mean, dtype=torch.float32)
    base = loss_of(ones)
    best_s, best = ones, base
    for i in range(n_grid):
        a = i / n_grid
        s = expand(_normalised(x_r.pow(a) / w_r.pow(1 - a)))
        loss = loss_of(s)
        if loss < best:
            best_s, best = s, loss
    return best_s, best, base


def search_clip(
    w: torch.Tensor,
    gram: torch.Tensor,
    bits: int,
    group_size: int,
    zero_point: bool = True,
    n_grid: int = 20,
    max_shrink: float = 0.5,
    scale_dtype: Optional[torch.dtype] = None,
    asymmetric: bool = False,
) -> torch.Tensor:
    """Clip ratios per output row and input group of ``w`` [N, C]: [N, n_groups] (fp32, in (0, 1]).

    ``asymmetric``: after the symmetric search, refine the high side then the
    low side on the same grid, each with the other fixed; returns [N, n_groups, 2]
    (low, high).
    """
    w = w.float()
    n, c = w.shape
    k_pad = quant.padded_in_features(c, group_size)
    ng = k_pad // group_size
    g = torch.zeros(k_pad, k_pad, dtype=torch.float32, device=w.device)
    g[:c, :c] = gram
    blocks = torch.stack([g[i * group_size:(i + 1) * group_size, i * group_size:(i + 1) * group_size]
                          for i in range(ng)])  # [ng, G, G]
    ratios = [1.0 - i / n_grid for i in range(int(max_shrink * n_grid) + 1)]

    def group_losses(clip: torch.Tensor) -> torch.Tensor:
        wq = quant.fake_quantize(w, bits, group_size, zero_point, clip_ratio=clip,
                                 scale_dtype=scale_dtype or torch.float32).float()
        dw = quant._grouped(wq - w, group_size, 0.0)  # [N, ng, G]
        return torch.einsum("ngi,gij,ngj->ng", dw, blocks, dw)

    def best_over(make) -> torch.Tensor:
        """The ratio r (per row and group) minimising the loss of ``make(r)``."""
        best = torch.full((n, ng), math.inf, device=w.device)
        chosen = torch.ones(n, ng, device=w.device)
        for r in ratios:
            loss = group_losses(make(torch.full((n, ng), r, device=w.device)))
            better = loss < best
            best = torch.where(better, loss, best)
            chosen = torch.where(better, torch.full_like(chosen, r), chosen)
        return chosen

    sym = best_over(lambda r: r)
    if not asymmetric:
        return sym
    high = best_over(lambda r: torch.stack([sym, r], dim=-1))
    low = best_over(lambda r: torch.stack([r, high], dim=-1))
    return torch.stack([low, high], dim=-1)
