"""Helpers for the tests: tolerances, tiny random models, the shared assets folder."""

import copy
import os

import torch
from torch import nn

from awq_ao import AWQInt4Tensor

HAS_CUDA = torch.cuda.is_available()


def shared_dir() -> str:
    """The read-only assets folder: $AWQ_AO_SHARED, else ../shared beside the repo."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.environ.get("AWQ_AO_SHARED", os.path.join(here, "..", "shared"))


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    """||y - ref|| / ||ref||, computed in float64."""
    y, ref = y.double(), ref.double()
    return ((y - ref).norm() / ref.norm().clamp(min=1e-30)).item()


def tiny_llama(dtype=torch.float32, tie=True, hidden=96, inter=160):
    """A 2-layer random LlamaForCausalLM (GQA 6 heads / 2 KV heads)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=256, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=2,
        num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=128,
        tie_word_embeddings=tie,
    )
    return LlamaForCausalLM(cfg).to(dtype).eval(), cfg


def dequantized_copy(model: nn.Module) -> nn.Module:
    """A float copy of a quantized model: every AWQInt4Tensor weight dequantized.

    act_pre_scale is folded into the dequantized weight's columns.
    """
    ref = copy.deepcopy(model)
    for mod in ref.modules():
        w = getattr(mod, "weight", None)
        if isinstance(w, AWQInt4Tensor):
            dense = w.dequantize(torch.float32)
            if w.act_pre_scale is not None:
                dense = dense * w.act_pre_scale.float()
            mod.weight = nn.Parameter(dense.to(w.dtype), requires_grad=False)
    return ref
