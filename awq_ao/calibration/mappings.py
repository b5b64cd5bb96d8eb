"""Which op feeds which group of linears, per architecture: the one place to add a model.

A ``ScaleGroup`` is a set of linears that read the same input, the op that
produces that input (``prev``), and optionally the submodule whose output
error scores the scale search (``module``: the MLP for gate/up; otherwise the
linears' own output error): a norm (RMSNorm / LayerNorm: its weight, and
bias, absorb ``1/s``) or a linear (its output rows absorb ``1/s``). The v -> o
group is marked ``heads=True``: under grouped-query attention its scale can
fold into v_proj only when it is shared by the query heads of each KV group.

Adding an architecture is a few lines: its ``model_type`` strings, where the
decoder blocks are, and its groups in block order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import nn


@dataclass(frozen=True)
class ScaleGroup:
    name: str
    prev: str  # dotted path inside the block of the op producing the input
    linears: tuple[str, ...]  # dotted paths of the linears reading it
    heads: bool = False  # v -> o: scale shape bound to attention heads
    module: Optional[str] = None  # submodule whose output error scores the scales (else the linears' own)


@dataclass(frozen=True)
class Architecture:
    name: str
    model_types: tuple[str, ...]
    blocks: str  # dotted path of the nn.ModuleList of decoder blocks
    groups: tuple[ScaleGroup, ...]
    no_clip: tuple[str, ...] = ()  # linears whose clipping is not searched (q, k: softmax inputs)


LLAMA_LIKE = Architecture(
    name="llama-like",
    model_types=("llama", "mistral", "qwen2", "qwen3"),
    blocks="model.layers",
    groups=(
        ScaleGroup("attn_in", "input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
        ScaleGroup("attn_out", "self_attn.v_proj", ("self_attn.o_proj",), heads=True),
        ScaleGroup("mlp_in", "post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"), module="mlp"),
        ScaleGroup("mlp_out", "mlp.up_proj", ("mlp.down_proj",)),
    ),
    no_clip=("self_attn.q_proj", "self_attn.k_proj"),
)

OPT = Architecture(
    name="opt",
    model_types=("opt",),
    blocks="model.decoder.layers",
    groups=(
        ScaleGroup("attn_in", "self_attn_layer_norm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
        ScaleGroup("attn_out", "self_attn.v_proj", ("self_attn.out_proj",), heads=True),
        ScaleGroup("mlp_in", "final_layer_norm", ("fc1",)),
        ScaleGroup("mlp_out", "fc1", ("fc2",)),  # ReLU between: relu(h) / s == relu(h / s) for s > 0
    ),
    no_clip=("self_attn.q_proj", "self_attn.k_proj"),
)

ARCHITECTURES = (LLAMA_LIKE, OPT)


def detect(model: nn.Module) -> Architecture:
    """The ``Architecture`` of a transformers model, by ``config.model_type``; a clear error otherwise."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for arch in ARCHITECTURES:
        if model_type in arch.model_types:
            return arch
    supported = sorted(t for arch in ARCHITECTURES for t in arch.model_types)
    raise ValueError(
        f"awq_ao.calibrate does not know the architecture {model_type!r} "
        f"(supported model_type: {', '.join(supported)}); add it to awq_ao/calibration/mappings.py"
    )


def blocks_of(model: nn.Module, arch: Architecture) -> nn.ModuleList:
    return model.get_submodule(arch.blocks)


def head_layout(model: nn.Module) -> tuple[int, int, int]:
    """(num_heads, num_kv_heads, head_dim) from the model config."""
    cfg = model.config
    heads = cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return heads, kv, head_dim
