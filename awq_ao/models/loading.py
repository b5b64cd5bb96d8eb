"""Build the gpt-fast-style ``Transformer`` from what users have on disk.

* ``from_hf_model(hf_model)``: a transformers ``LlamaForCausalLM`` (float,
  calibrated or quantized) -> ``Transformer`` sharing its tensors (no copy).
* ``load_hf_directory(path)``: a transformers checkpoint directory
  (``config.json`` + ``model.safetensors`` or sharded safetensors with an index).
* ``load_gguf(path)``: a ``.gguf`` file, dequantized to float by transformers.
* ``load_checkpoint(path)``: any of those, or an awq_ao quantized directory
  (which loads quantized, as it is); returns (model, tokenizer or None).
"""

from __future__ import annotations

import json
import os
from typing import Optional

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from awq_ao.formats.native import check_keys, check_shape
from awq_ao.models.llama import Transformer


def _load_into(model: Transformer, state: dict, source: str) -> Transformer:
    """Assign ``state`` (HF key names) to ``model``'s parameters, checking names and shapes."""
    expected = model.state_dict()
    if model.args.tie_word_embeddings:
        state = {k: v for k, v in state.items() if k != "lm_head.weight"}
        expected.pop("lm_head.weight", None)
    check_keys(expected, state, source, ignored_suffixes=("rotary_emb.inv_freq",))
    for key, value in state.items():
        if key not in expected:
            continue
        check_shape(key, value, expected[key], source)
        module_name, _, leaf = key.rpartition(".")
        setattr(model.get_submodule(module_name), leaf, nn.Parameter(value, requires_grad=False))
    model.tie_weights()
    return model.eval()


def from_hf_model(hf_model: nn.Module) -> Transformer:
    """The ``Transformer`` computing what ``hf_model`` computes, sharing its (possibly quantized) weights."""
    model = Transformer.from_hf_config(hf_model.config)
    return _load_into(model, dict(hf_model.state_dict()), type(hf_model).__name__)


def _safetensors_files(path: str) -> list[str]:
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            try:
                weight_map = json.load(f)["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise ValueError(f"{index} is not a valid safetensors index: {e}") from e
        return [os.path.join(path, name) for name in sorted(set(weight_map.values()))]
    single = os.path.join(path, "model.safetensors")
    if os.path.isfile(single):
        return [single]
    raise ValueError(f"{path} holds no model.safetensors nor model.safetensors.index.json")


def read_safetensors(files: list[str], device="cpu") -> dict:
    """All tensors of (possibly sharded) safetensors files; a corrupted file is named."""
    state = {}
    for file in files:
        try:
            with safe_open(file, framework="pt", device=str(device)) as f:
                for key in f.keys():
                    state[key] = f.get_tensor(key)
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{file} is not a readable safetensors file (missing, corrupted or truncated?): {e}") from e
    return state


def load_hf_directory(path: str, dtype: torch.dtype = torch.float32, device="cpu") -> Transformer:
    """A float transformers checkpoint directory -> ``Transformer`` in ``dtype`` on ``device``."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    if getattr(config, "quantization_config", None):
        method = config.quantization_config.get("quant_method") if isinstance(config.quantization_config, dict) \
            else getattr(config.quantization_config, "quant_method", None)
        raise ValueError(f"{path} is a {method!r}-quantized transformers checkpoint; "
                         "load AWQ GEMM checkpoints with awq_ao's importer, others are not supported")
    state = {k: v.to(dtype) if v.is_floating_point() else v
             for k, v in read_safetensors(_safetensors_files(path), device).items()}
    return _load_into(Transformer.from_hf_config(config, dtype), state, path)


def load_hf_model(path: str, dtype: torch.dtype = torch.float32):
    """A transformers model (``AutoModelForCausalLM``) and its tokenizer from a directory or ``.gguf`` file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if path.endswith(".gguf"):
        if not os.path.isfile(path):
            raise ValueError(f"no GGUF file at {path}")
        folder, name = os.path.split(os.path.abspath(path))
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        # dequantized in fp32 (transformers' fast path for GGUF), then cast
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).to(dtype)
    else:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    return model.eval(), tokenizer


def load_gguf(path: str, dtype: torch.dtype = torch.float32) -> tuple[Transformer, object]:
    """A ``.gguf`` file (dequantized to float by transformers) -> (``Transformer``, tokenizer)."""
    hf_model, tokenizer = load_hf_model(path, dtype)
    return from_hf_model(hf_model), tokenizer


def _tokenizer_of(path: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError):
        return None


def load_checkpoint(path: str, dtype: Optional[torch.dtype] = None, device="cpu") -> tuple[Transformer, object]:
    """(``Transformer``, tokenizer or None) from a ``.gguf`` file, a transformers directory, an awq_ao
    quantized directory (loaded quantized, in the dtype it was saved in unless ``dtype`` is given) or an
    AWQ GEMM directory (AutoAWQ / transformers / vLLM format; imported into ``AWQInt4Tensor``, fp16 by default)."""
    from awq_ao.formats.awq_gemm import awq_quantization_config, load_awq
    from awq_ao.formats.directory import is_quantized_directory, load_quantized

    if path.endswith(".gguf"):
        model, tokenizer = load_gguf(path, dtype or torch.float32)
    elif os.path.isdir(path) and awq_quantization_config(path) is not None:
        model, tokenizer = load_awq(path, dtype or torch.float16, kind="gpt-fast", device=device), _tokenizer_of(path)
    elif is_quantized_directory(path):
        model = load_quantized(path, kind="gpt-fast", device=device)
        if dtype is not None and dtype != model.dtype:
            model = model.to(dtype)
        tokenizer = _tokenizer_of(path)
    elif os.path.isdir(path):
        model, tokenizer = load_hf_directory(path, dtype or torch.float32), _tokenizer_of(path)
    else:
        raise ValueError(f"{path} is neither a .gguf file nor a checkpoint directory")
    return model.to(device), tokenizer
