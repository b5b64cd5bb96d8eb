"""awq_ao's native checkpoint: a state dict in one safetensors file, no pickle.

Plain tensors are stored under their own key. An ``AWQInt4Tensor`` under key
``k`` is flattened into ``k.qdata``, ``k.scale``, ``k.zero_point`` (and
``k.act_pre_scale``); its attributes go into the safetensors header metadata as
JSON, with a format version::

    __metadata__ = {"format": "awq_ao", "format_version": "1",
                    "quantized": '{"k": {"bits": 4, "group_size": 128,
                                         "shape": [N, K], "dtype": "bfloat16"}}',
                    "aliases": '{"lm_head.weight": "model.embed_tokens.weight"}'}

Kernel layouts are never saved; they are derived again at load. Saving is
atomic (a temporary file in the same folder, then a rename). Loading checks
every tensor's presence, dtype and shape, and the code ranges, and names the
offending tensor in a ValueError.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Optional

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from awq_ao import quant
from awq_ao.tensor import AWQInt4Tensor

FORMAT_NAME = "awq_ao"
FORMAT_VERSION = "1"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _identity(value) -> tuple:
    """Same storage, shape and dtype means the same (tied) tensor."""
    if isinstance(value, AWQInt4Tensor):
        return ("awq", value.qdata.data_ptr(), tuple(value.shape))
    if isinstance(value, torch.Tensor) and value.numel():
        return ("plain", value.data_ptr(), tuple(value.shape), tuple(value.stride()), value.dtype)
    return ("unique", id(value))


def flatten_state_dict(state_dict: dict) -> tuple[dict, dict]:
    """Split a state dict into (plain tensors for safetensors, string metadata)."""
    tensors, quantized, aliases, seen = {}, {}, {}, {}
    for key, value in state_dict.items():
        ident = _identity(value)
        if ident in seen:
            aliases[key] = seen[ident]
            continue
        seen[ident] = key
        if isinstance(value, AWQInt4Tensor):
            if value.transposed:
                raise ValueError(f"{key}: cannot save a transposed AWQInt4Tensor view")
            for part, tensor in value.canonical().items():
                tensors[f"{key}.{part}"] = tensor.detach().contiguous().cpu()
            quantized[key] = {
                "bits": value.bits,
                "group_size": value.group_size,
                "shape": list(value.shape),
                "dtype": _dtype_name(value.dtype),
            }
        elif isinstance(value, torch.Tensor):
            tensors[key] = value.detach().contiguous().cpu()
        else:
            raise ValueError(f"{key}: cannot save a value of type {type(value).__name__}")
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "quantized": json.dumps(quantized),
        "aliases": json.dumps(aliases),
    }
    return tensors, metadata


def save_state_dict(state_dict: dict, path: str) -> None:
    """Write ``state_dict`` (plain tensors and AWQInt4Tensors) to ``path`` atomically."""
    tensors, metadata = flatten_state_dict(state_dict)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".awq_ao-", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _read(path: str, device: str) -> tuple[dict, dict]:
    if not os.path.isfile(path):
        raise ValueError(f"no checkpoint file at {path}")
    try:
        with safe_open(path, framework="pt", device=device) as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as e:
        raise ValueError(f"{path} is not a readable safetensors file (corrupted or truncated?): {e}") from e
    if metadata.get("format") != FORMAT_NAME:
        raise ValueError(f"{path} is not an awq_ao checkpoint (metadata format={metadata.get('format')!r})")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has awq_ao format_version {metadata.get('format_version')!r}; "
            f"this awq_ao reads version {FORMAT_VERSION}"
        )
    return tensors, metadata


def _expect(key: str, tensor: Optional[torch.Tensor], dtype: torch.dtype, shape: tuple) -> torch.Tensor:
    if tensor is None:
        raise ValueError(f"checkpoint is missing tensor {key!r}")
    if tensor.dtype != dtype:
        raise ValueError(f"tensor {key!r} has dtype {tensor.dtype}, expected {dtype}")
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"tensor {key!r} has shape {tuple(tensor.shape)}, expected {tuple(shape)}")
    return tensor


def _rebuild_quantized(key: str, meta: dict, tensors: dict) -> AWQInt4Tensor:
    try:
        bits, group_size = int(meta["bits"]), int(meta["group_size"])
        n, k = (int(d) for d in meta["shape"])
        dtype = _DTYPES[meta["dtype"]]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"tensor {key!r}: malformed quantization metadata {meta!r}") from e
    try:
        quant.check_bits_and_group_size(bits, group_size)
    except ValueError as e:
        raise ValueError(f"tensor {key!r}: {e}") from e
    k_pad = quant.padded_in_features(k, group_size)
    n_groups = k_pad // group_size
    qdata = _expect(f"{key}.qdata", tensors.pop(f"{key}.qdata", None), torch.uint8, (n, k_pad // 2))
    scale = _expect(f"{key}.scale", tensors.pop(f"{key}.scale", None), dtype, (n, n_groups))
    zero = _expect(f"{key}.zero_point", tensors.pop(f"{key}.zero_point", None), torch.uint8, (n, n_groups))
    pre = tensors.pop(f"{key}.act_pre_scale", None)
    if pre is not None:
        _expect(f"{key}.act_pre_scale", pre, dtype, (k,))
        if not torch.isfinite(pre).all():
            raise ValueError(f"tensor {key + '.act_pre_scale'!r} holds NaN or inf")
    top = quant.qmax(bits)
    if zero.numel() and int(zero.max()) > top:
        raise ValueError(f"tensor {key + '.zero_point'!r} holds values above {top} for bits={bits}")
    codes_max = max(int((qdata & 0xF).max()), int((qdata >> 4).max())) if qdata.numel() else 0
    if codes_max > top:
        raise ValueError(f"tensor {key + '.qdata'!r} holds codes above {top} for bits={bits}")
    if scale.numel() and (not torch.isfinite(scale).all() or (scale <= 0).any()):
        raise ValueError(f"tensor {key + '.scale'!r} holds non-positive, NaN or inf scales")
    return AWQInt4Tensor.from_parts(qdata, scale, zero, bits, group_size, k, pre)


def load_state_dict(path: str, device: str = "cpu") -> dict:
    """Read a checkpoint written by ``save_state_dict``; returns {key: tensor}."""
    tensors, metadata = _read(path, device)
    try:
        quantized = json.loads(metadata.get("quantized", "{}"))
        aliases = json.loads(metadata.get("aliases", "{}"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: malformed awq_ao metadata: {e}") from e
    state = {key: _rebuild_quantized(key, meta, tensors) for key, meta in quantized.items()}
    state.update(tensors)
    for alias, source in aliases.items():
        if source not in state:
            raise ValueError(f"checkpoint alias {alias!r} points at missing tensor {source!r}")
        state[alias] = state[source]
    return state


def check_keys(expected, state, source: str, ignored_suffixes: tuple = ()) -> None:
    """Every key of ``expected`` in ``state`` and no other (but ``ignored_suffixes``); else a ValueError naming one."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected and not k.endswith(ignored_suffixes)]
    if missing:
        raise ValueError(f"{source} is missing tensor {missing[0]!r} ({len(missing)} missing)")
    if unexpected:
        raise ValueError(f"{source} has unexpected tensor {unexpected[0]!r} for this model")


def check_shape(key: str, value, current, source: str) -> None:
    """A ValueError naming ``key`` when ``value`` and the model's ``current`` tensor differ in shape."""
    if tuple(value.shape) != tuple(current.shape):
        raise ValueError(f"tensor {key!r} in {source} has shape {tuple(value.shape)}, "
                         f"the model expects {tuple(current.shape)}")


def load_quantized_state_dict(model: nn.Module, path: str, strict: bool = True) -> nn.Module:
    """Load a checkpoint into a model built in float (e.g. freshly from its config).

    Quantized entries replace the matching parameters; plain entries are copied
    into the existing ones. Shapes and dtypes are checked against the model, and
    (with ``strict``) every key of the model must be in the file and vice versa.
    """
    device = next((p.device.type for p in model.parameters()), "cpu")
    state = load_state_dict(path, device)
    expected = model.state_dict()
    if strict:
        check_keys(expected, state, f"checkpoint {path}")
    for key, value in state.items():
        if key not in expected:
            continue
        current = expected[key]
        check_shape(key, value, current, f"checkpoint {path}")
        if value.dtype != current.dtype:
            raise ValueError(
                f"tensor {key!r} has dtype {value.dtype} in the checkpoint, the model expects {current.dtype}"
            )
        if isinstance(value, AWQInt4Tensor):
            module_name, _, leaf = key.rpartition(".")
            module = model.get_submodule(module_name)
            setattr(module, leaf, nn.Parameter(value, requires_grad=False))
        else:
            with torch.no_grad():
                current.copy_(value)
    return model
