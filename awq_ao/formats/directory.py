"""awq_ao's quantized model directory: what ``save_quantized`` writes and ``load_quantized`` reads.

    DIR/config.json             the transformers model config (unchanged)
    DIR/generation_config.json  when the model has one
    DIR/model.safetensors       the state dict in awq_ao's native format (``formats/native.py``)
    DIR/tokenizer*              when a tokenizer is given
    DIR/awq_ao.json             {"format": "awq_ao", "format_version": 1, "weights": "model.safetensors",
                                 "dtype": "bfloat16", "quantization": {"bits": 4, "group_size": 64, ...}}

``awq_ao.json`` marks the directory and is written last, and the whole
directory is built under a temporary name next to the target and renamed into
place, so an interrupted save never leaves a directory that loads. The same
directory loads into a transformers model or into the gpt-fast-style
``Transformer`` (their state-dict names are the same).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile

import torch
from torch import nn

from awq_ao.formats.native import _DTYPES, load_quantized_state_dict, load_state_dict, save_state_dict
from awq_ao.tensor import AWQInt4Tensor

MARKER = "awq_ao.json"
WEIGHTS = "model.safetensors"
DIRECTORY_FORMAT_VERSION = 1


def is_quantized_directory(path: str) -> bool:
    return os.path.isfile(os.path.join(path, MARKER))


def is_quantized_checkpoint(path: str) -> bool:
    """An awq_ao quantized directory or an AWQ GEMM directory."""
    from awq_ao.formats.awq_gemm import awq_quantization_config

    return is_quantized_directory(path) or (os.path.isdir(path) and awq_quantization_config(path) is not None)


def _quantization_of(model: nn.Module) -> dict:
    settings = {(p.bits, p.group_size) for p in model.parameters() if isinstance(p, AWQInt4Tensor)}
    bits, group_size = sorted(settings)[0]
    pre_scaled = sum(p.act_pre_scale is not None for p in model.parameters() if isinstance(p, AWQInt4Tensor))
    return {"bits": bits, "group_size": group_size, "mixed": len(settings) > 1,
            "linears": sum(isinstance(p, AWQInt4Tensor) for p in model.parameters()),
            "act_pre_scaled_linears": pre_scaled}


def _dtype_of(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if isinstance(p, AWQInt4Tensor) or p.is_floating_point():
            return p.dtype
    return torch.float32


def prepare_output_directory(path: str, overwrite: bool) -> None:
    """Refuse an existing non-empty ``path`` unless ``overwrite``."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{path} exists and is not a directory")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise ValueError(f"{path} exists and is not empty; choose another output or pass overwrite=True (--overwrite)")


def commit_directory(tmp: str, path: str) -> None:
    """Move the finished ``tmp`` directory to ``path``, replacing what is there."""
    if os.path.isdir(path):
        old = tempfile.mkdtemp(prefix=".awq_ao-old-", dir=os.path.dirname(os.path.abspath(path)))
        os.rename(path, os.path.join(old, "d"))
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, path)


@contextlib.contextmanager
def staged_directory(path: str, overwrite: bool, model: nn.Module, tokenizer=None):
    """Yield a temporary directory beside ``path`` holding the model's generation config and the
    tokenizer; the caller writes the rest; on success it replaces ``path``, on any error it is removed."""
    prepare_output_directory(path, overwrite)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".awq_ao-save-", dir=parent)
    try:
        generation_config = getattr(model, "generation_config", None)
        if generation_config is not None:
            generation_config.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        yield tmp
        commit_directory(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_savable(model: nn.Module, what: str):
    """The model's transformers config, after refusing a model without one, a fused one or a float one."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "save_pretrained"):
        raise ValueError(f"the model has no transformers config (.config); {what} needs one")
    if getattr(model, "fused", False):
        raise ValueError(f"this model's projections are fused for decoding (fuse_projections): call {what} "
                         "before fusing")
    if not any(isinstance(p, AWQInt4Tensor) for p in model.parameters()):
        raise ValueError(f"the model holds no AWQInt4Tensor weights: quantize it (awq_ao.quantize_) before calling {what}")
    return config


def save_quantized(model: nn.Module, path: str, tokenizer=None, overwrite: bool = False) -> str:
    """Write a quantized model (transformers or gpt-fast-style, with ``.config``) to the directory ``path``."""
    config = check_savable(model, "save_quantized")
    quantization = _quantization_of(model)
    with staged_directory(path, overwrite, model, tokenizer) as tmp:
        config.save_pretrained(tmp)
        save_state_dict(model.state_dict(), os.path.join(tmp, WEIGHTS))
        marker = {"format": "awq_ao", "format_version": DIRECTORY_FORMAT_VERSION, "weights": WEIGHTS,
                  "dtype": str(_dtype_of(model)).removeprefix("torch."), "quantization": quantization}
        with open(os.path.join(tmp, MARKER), "w") as f:  # last: it is what marks the directory
            json.dump(marker, f, indent=2)
    return path


def read_marker(path: str) -> dict:
    file = os.path.join(path, MARKER)
    if not os.path.isfile(file):
        raise ValueError(f"{path} is not an awq_ao quantized directory (no {MARKER})")
    try:
        with open(file) as f:
            marker = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{file} is not valid JSON: {e}") from e
    if marker.get("format") != "awq_ao":
        raise ValueError(f"{file}: format is {marker.get('format')!r}, expected 'awq_ao'")
    if marker.get("format_version") != DIRECTORY_FORMAT_VERSION:
        raise ValueError(f"{file}: format_version {marker.get('format_version')!r}; this awq_ao reads "
                         f"{DIRECTORY_FORMAT_VERSION}")
    if marker.get("dtype") not in _DTYPES:
        raise ValueError(f"{file}: dtype {marker.get('dtype')!r} is not one of {sorted(_DTYPES)}")
    weights = marker.get("weights")
    if not isinstance(weights, str) or os.path.basename(weights) != weights:
        raise ValueError(f"{file}: 'weights' must be a file name in the directory, got {weights!r}")
    return marker


def load_quantized(path: str, kind: str = "transformers", device="cpu", config=None) -> nn.Module:
    """A saved quantized model: ``kind="transformers"`` (AutoModelForCausalLM) or ``"gpt-fast"`` (Transformer).

    An AWQ GEMM directory (``quantization_config.quant_method == "awq"``) is imported too (fp16).
    """
    from transformers import AutoConfig

    if kind not in ("transformers", "gpt-fast"):
        raise ValueError(f"kind must be 'transformers' or 'gpt-fast', got {kind!r}")
    if not is_quantized_directory(path):
        from awq_ao.formats.awq_gemm import awq_quantization_config, load_awq

        if os.path.isdir(path) and awq_quantization_config(path) is not None:
            return load_awq(path, kind=kind, device=device)  # an AWQ GEMM checkpoint, imported
    marker = read_marker(path)
    weights = os.path.join(path, marker["weights"])
    dtype = _DTYPES[marker["dtype"]]
    config = config or AutoConfig.from_pretrained(path)
    if kind == "gpt-fast":
        from awq_ao.models.llama import Transformer
        from awq_ao.models.loading import _load_into

        model = _load_into(Transformer.from_hf_config(config, dtype), load_state_dict(weights, str(device)), weights)
        return model
    from transformers import AutoModelForCausalLM

    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    load_quantized_state_dict(model, weights)
    return model.eval()
