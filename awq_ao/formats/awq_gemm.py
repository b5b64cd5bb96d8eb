"""The AWQ "GEMM" tensor layout (AutoAWQ ``WQLinear_GEMM``, loaded by transformers and vLLM), per linear.

For a linear with ``in_features`` K, ``out_features`` N and group size G:

    qweight  int32   [K, N/8]     eight 4-bit codes per int32, columns in the order [0, 2, 4, 6, 1, 3, 5, 7]:
                                  nibble i (bits 4i..4i+3) of word j holds column 8j + ORDER[i]
    qzeros   int32   [K/G, N/8]   the integer zero points, packed the same way
    scales   float16 [K/G, N]
    w[k, n] = (q[k, n] - z[k // G, n]) * s[k // G, n];  y = x @ w

This module converts one ``AWQInt4Tensor`` to and from these three tensors.
The format cannot carry ``act_pre_scale``, bits other than 4, padding of K,
or N not a multiple of 8: those are refused with the fix named.
"""

from __future__ import annotations

import torch

from awq_ao import quant
from awq_ao.tensor import AWQInt4Tensor

ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def pack_columns(values: torch.Tensor) -> torch.Tensor:
    """[R, N] integer codes 0..15 -> int32 [R, N/8] in AWQ's column order."""
    r, n = values.shape
    v = values.to(torch.int64).view(r, n // 8, 8)
    packed = torch.zeros(r, n // 8, dtype=torch.int64, device=values.device)
    for nibble, column in enumerate(ORDER):
        packed |= v[:, :, column] << (4 * nibble)
    return (packed - ((packed >> 31) << 32)).to(torch.int32)  # reinterpret as signed 32-bit


def unpack_columns(packed: torch.Tensor) -> torch.Tensor:
    """int32 [R, N/8] -> uint8 [R, N] codes, undoing ``pack_columns``."""
    words = packed.to(torch.int64) & 0xFFFFFFFF
    out = torch.empty(*packed.shape, 8, dtype=torch.uint8, device=packed.device)
    for nibble, column in enumerate(ORDER):
        out[:, :, column] = ((words >> (4 * nibble)) & 0xF).to(torch.uint8)
    return out.view(packed.shape[0], -1)


def check_exportable(w: AWQInt4Tensor, name: str) -> None:
    if w.act_pre_scale is not None:
        raise ValueError(f"{name}: the AWQ GEMM format cannot hold act_pre_scale; calibrate with gqa='fold' "
                         "(and per_linear=False) to export")
    if w.bits != 4:
        raise ValueError(f"{name}: the AWQ GEMM format holds 4-bit weights only, this one has bits={w.bits}")
    if w.in_features % w.group_size:
        raise ValueError(f"{name}: group size {w.group_size} does not divide in_features {w.in_features}; "
                         "quantize with a group size that does (e.g. 64 for 576)")
    if w.out_features % 8:
        raise ValueError(f"{name}: out_features {w.out_features} is not a multiple of 8, which the format needs")


def to_awq_gemm(w: AWQInt4Tensor, name: str = "weight") -> dict:
    """``{"qweight", "qzeros", "scales"}`` of one quantized weight [N, K] (scales rounded to fp16)."""
    check_exportable(w, name)
    codes = quant.unpack_int4(w.qdata)[:, : w.in_features]  # [N, K]
    return {
        "qweight": pack_columns(codes.t().contiguous()),
        "qzeros": pack_columns(w.zero_point.t().contiguous()),
        "scales": w.scale.t().contiguous().to(torch.float16),
    }


def from_awq_gemm(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int,
                  dtype: torch.dtype = torch.float16, name: str = "weight") -> AWQInt4Tensor:
    """An ``AWQInt4Tensor`` [N, K] in ``dtype`` from one linear's AWQ GEMM tensors; shapes and dtypes checked."""
    if qweight.dtype != torch.int32 or qzeros.dtype != torch.int32:
        raise ValueError(f"{name}: qweight and qzeros must be int32, got {qweight.dtype} and {qzeros.dtype}")
    k, n = qweight.shape[0], qweight.shape[1] * 8
    if k % group_size:
        raise ValueError(f"{name}: group size {group_size} does not divide in_features {k}")
    groups = k // group_size
    if tuple(qzeros.shape) != (groups, n // 8):
        raise ValueError(f"{name}.qzeros has shape {tuple(qzeros.shape)}, expected {(groups, n // 8)}")
    if tuple(scales.shape) != (groups, n):
        raise ValueError(f"{name}.scales has shape {tuple(scales.shape)}, expected {(groups, n)}")
    if not torch.isfinite(scales).all():
        raise ValueError(f"{name}.scales holds NaN or inf")
    codes = unpack_columns(qweight).t().contiguous()  # [N, K]
    zero = unpack_columns(qzeros).t().contiguous()  # [N, groups]
    return AWQInt4Tensor.from_parts(quant.pack_int4(codes), scales.t().contiguous().to(dtype), zero, 4,
                                    group_size, k)


# ------------------------------------------------------------------ directories

def _quantized_linears(model) -> dict:
    """{module name: AWQInt4Tensor} of every linear holding an int4 weight."""
    return {name: m.weight for name, m in model.named_modules()
            if isinstance(getattr(m, "weight", None), AWQInt4Tensor)}


def export_awq(model, path: str, tokenizer=None, overwrite: bool = False) -> str:
    """Write a quantized transformers model as an AWQ GEMM checkpoint directory that transformers and vLLM load.

    ``config.json`` gains ``quantization_config = {"quant_method": "awq", "bits": 4, "group_size": G,
    "zero_point": true, "version": "gemm", "modules_to_not_convert": [...]}``; ``model.safetensors`` holds each
    quantized linear as ``qweight``/``qzeros``/``scales`` (and its float bias) and every other tensor in fp16;
    tokenizer files and ``generation_config.json`` come along. Written atomically like ``save_quantized``.
    """
    import json
    import os

    from safetensors.torch import save_file

    from awq_ao.formats.directory import check_savable, staged_directory

    config = check_savable(model, "export_awq")
    linears = _quantized_linears(model)
    groups = {w.group_size for w in linears.values()}
    if len(groups) > 1:
        raise ValueError(f"the AWQ GEMM format has one group size per model, this one mixes {sorted(groups)}")
    tensors = {}
    for name, w in linears.items():
        for part, t in to_awq_gemm(w, name).items():
            tensors[f"{name}.{part}"] = t.contiguous().cpu()
    seen = set()
    for key, value in model.state_dict().items():
        module = key.rpartition(".")[0]
        if module in linears and key.endswith(".weight"):
            continue
        ident = (value.data_ptr(), tuple(value.shape))
        if ident in seen:  # a tied copy (lm_head of a tied model): transformers ties it again
            continue
        seen.add(ident)
        tensors[key] = (value.to(torch.float16) if value.is_floating_point() else value).contiguous().cpu()
    quantized_modules = set(linears)
    not_converted = sorted({name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
                           - quantized_modules)
    quantization_config = {"quant_method": "awq", "bits": 4, "group_size": groups.pop(), "zero_point": True,
                           "version": "gemm", "modules_to_not_convert": not_converted}
    with staged_directory(path, overwrite, model, tokenizer) as tmp:
        config_dict = config.to_dict()
        config_dict["quantization_config"] = quantization_config
        config_dict["dtype"] = "float16"
        config_dict.pop("torch_dtype", None)
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config_dict, f, indent=2, sort_keys=True)
        save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    return path


def awq_quantization_config(path: str):
    """The ``quantization_config`` of an AWQ GEMM directory, or None when ``path`` is not one."""
    import json
    import os

    file = os.path.join(path, "config.json")
    if not os.path.isfile(file):
        return None
    try:
        with open(file) as f:
            qc = json.load(f).get("quantization_config")
    except json.JSONDecodeError as e:
        raise ValueError(f"{file} is not valid JSON: {e}") from e
    if not isinstance(qc, dict) or qc.get("quant_method") != "awq":
        return None
    return qc


def load_awq(path: str, dtype: torch.dtype = torch.float16, kind: str = "transformers", device="cpu"):
    """An AWQ GEMM directory (single or sharded safetensors) -> a model with ``AWQInt4Tensor`` weights.

    ``kind="transformers"`` (AutoModelForCausalLM) or ``"gpt-fast"`` (``awq_ao.models.Transformer``).
    """
    from torch import nn
    from transformers import AutoConfig, AutoModelForCausalLM

    from awq_ao.formats.native import check_keys, check_shape
    from awq_ao.models.loading import _safetensors_files, read_safetensors

    qc = awq_quantization_config(path)
    if qc is None:
        raise ValueError(f"{path} is not an AWQ checkpoint (config.json has no quantization_config "
                         "with quant_method 'awq')")
    if str(qc.get("version", "gemm")).lower() != "gemm":
        raise ValueError(f"{path}: AWQ version {qc.get('version')!r} is not supported (only 'gemm')")
    if int(qc.get("bits", qc.get("w_bit", 4))) != 4 or not qc.get("zero_point", True):
        raise ValueError(f"{path}: only 4-bit AWQ with zero points is supported, got {qc}")
    group_size = int(qc.get("group_size", qc.get("q_group_size", 128)))
    config = AutoConfig.from_pretrained(path)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    state = read_safetensors(_safetensors_files(path), device)
    expected = dict(model.state_dict())
    for name, module in list(model.named_modules()):
        if f"{name}.qweight" not in state:
            continue
        if not isinstance(module, nn.Linear):
            raise ValueError(f"{path}: {name} holds AWQ tensors but is not a linear in this model")
        weight = from_awq_gemm(state.pop(f"{name}.qweight"), state.pop(f"{name}.qzeros", torch.empty(0, dtype=torch.int32)),
                               state.pop(f"{name}.scales", torch.empty(0)), group_size, dtype, name)
        if tuple(weight.shape) != tuple(module.weight.shape):
            raise ValueError(f"{path}: {name}.qweight holds a [{weight.shape[0]}, {weight.shape[1]}] weight, "
                             f"the model expects {list(module.weight.shape)}")
        module.weight = nn.Parameter(weight, requires_grad=False)
        expected.pop(f"{name}.weight")
    tied = getattr(config, "tie_word_embeddings", False)
    if tied:
        expected.pop("lm_head.weight", None)
        state.pop("lm_head.weight", None)
    check_keys(expected, state, path, ignored_suffixes=("rotary_emb.inv_freq",))
    for key, value in state.items():
        check_shape(key, value, expected[key], path)
        with torch.no_grad():
            expected[key].copy_(value)
    if tied:
        model.tie_weights()
    model.eval()
    if kind == "gpt-fast":
        from awq_ao.models.loading import from_hf_model

        return from_hf_model(model)
    return model
