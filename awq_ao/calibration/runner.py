"""Block-by-block execution for calibration: capture the first block's calls, run one block at a time.

``capture_block_inputs`` runs the model up to its first decoder block on each
batch and records that block's call (hidden states plus the keyword arguments
transformers 5 passes: position embeddings, masks, cache off; or the positional
arguments of awq_ao's gpt-fast-style blocks: rope, mask), stopping there.
``run_block`` calls one block on every recorded batch, with forward pre-hooks
on chosen linears that accumulate what the searches need (``InputStats``), and
returns the block's outputs, which are the next block's inputs. Only the
current block's inputs and outputs are held.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn


class _Stop(Exception):
    pass


@dataclass
class BlockCall:
    hidden: torch.Tensor  # [B, L, hidden]
    kwargs: dict = field(default_factory=dict)
    args: tuple = ()  # positional arguments after the hidden states (gpt-fast-style blocks: rope, mask, ...)


@dataclass
class InputStats:
    """Statistics of one linear's input over the calibration tokens."""

    name: str
    sample_stride: int = 0  # > 0: also keep every sample_stride-th token (for module-output losses)
    gram: Optional[torch.Tensor] = None  # [C, C] fp64 sum of x x^T
    abs_sum: Optional[torch.Tensor] = None  # [C] fp64 sum of |x|
    tokens: int = 0
    samples: list = field(default_factory=list)

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).float()
        if not torch.isfinite(x).all():
            raise ValueError(f"calibration activations entering {self.name} hold NaN or inf")
        gram = (x.t() @ x).double()
        abs_sum = x.abs().sum(dim=0).double()
        self.gram = gram if self.gram is None else self.gram + gram
        self.abs_sum = abs_sum if self.abs_sum is None else self.abs_sum + abs_sum
        self.tokens += x.shape[0]
        if self.sample_stride:
            self.samples.append(x[:: self.sample_stride].clone())

    @property
    def sample(self) -> torch.Tensor:
        """The kept tokens [T', C] (fp32)."""
        return torch.cat(self.samples)

    @property
    def mean_abs(self) -> torch.Tensor:
        return (self.abs_sum / self.tokens).float()

    @property
    def gram_f32(self) -> torch.Tensor:
        return self.gram.float()


@torch.no_grad()
def capture_block_inputs(model: nn.Module, first_block: nn.Module, batches: list[torch.Tensor]) -> list[BlockCall]:
    """The first block's call for each batch of token ids [B, L]."""
    calls = []

    def hook(module, args, kwargs):
        kwargs = dict(kwargs)
        hidden = args[0] if args else kwargs.pop("hidden_states")
        rest = tuple(args[1:])
        for key in ("past_key_values", "past_key_value", "layer_past"):
            if key in kwargs:
                kwargs[key] = None
        if "use_cache" in kwargs:
            kwargs["use_cache"] = False
        calls.append(BlockCall(hidden.detach(), kwargs, rest))
        raise _Stop

    handle = first_block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for ids in batches:
            try:
                model(input_ids=ids.to(_device_of(model)), use_cache=False)
            except _Stop:
                pass
    finally:
        handle.remove()
    if len(calls) != len(batches):
        raise RuntimeError("the model's first decoder block was not called: is it really a decoder stack?")
    return calls


def _device_of(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def run_block(block: nn.Module, calls: list[BlockCall], watch: dict[str, nn.Module], prefix: str,
              device: Optional[torch.device] = None, sample_strides: Optional[dict[str, int]] = None,
              in_place: bool = False) -> tuple[list[BlockCall], dict[str, InputStats]]:
    """Run ``block`` on every call; accumulate ``InputStats`` of each watched linear's input.

    ``sample_strides[name]`` keeps every n-th input token of that linear too.
    ``in_place`` replaces each call by its output as it goes (one copy of the
    hidden states in memory instead of two). Returns (the block's outputs as the
    next block's calls, stats by watched name).
    """
    strides = sample_strides or {}
    stats = {name: InputStats(f"{prefix}.{name}", strides.get(name, 0)) for name in watch}
    handles = [
        module.register_forward_pre_hook(lambda mod, args, name=name: stats[name].add(args[0]))
        for name, module in watch.items()
    ]
    outputs = calls if in_place else []
    try:
        for i, call in enumerate(calls):
            hidden = call.hidden if device is None else call.hidden.to(device)
            kwargs = call.kwargs if device is None else _to(call.kwargs, device)
            rest = call.args if device is None else _to(call.args, device)
            out = block(hidden, *rest, **kwargs)
            out = out[0] if isinstance(out, tuple) else out
            if not torch.isfinite(out).all():
                raise ValueError(f"the output of {prefix} holds NaN or inf on the calibration data")
            result = BlockCall(out.to(call.hidden.device), call.kwargs, call.args)
            if in_place:
                calls[i] = result
            else:
                outputs.append(result)
    finally:
        for handle in handles:
            handle.remove()
    return outputs, stats


def _to(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj
