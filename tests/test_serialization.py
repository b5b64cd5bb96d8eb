"""state_dict -> safetensors -> fresh model, and refusal of bad files."""

import json
import os

import pytest
import torch
from helpers import tiny_llama
from safetensors import safe_open
from safetensors.torch import save_file

import awq_ao
from awq_ao import AWQInt4Tensor, awq_config, load_quantized_state_dict, load_state_dict, save_state_dict


def quantized_llama(dtype=torch.float32):
    model, cfg = tiny_llama(dtype=dtype)
    awq_ao.quantize_(model, awq_config(group_size=32))
    # one linear with an act_pre_scale, as calibration may leave
    o_proj = model.model.layers[0].self_attn.o_proj
    pre = (torch.rand(o_proj.in_features) + 0.5).to(dtype)
    o_proj.weight = torch.nn.Parameter(
        AWQInt4Tensor.from_float(torch.randn(o_proj.out_features, o_proj.in_features, dtype=dtype), 4, 32,
                                 act_pre_scale=pre), requires_grad=False)
    return model, cfg


def fresh(cfg, dtype):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM(cfg).to(dtype).eval()


def rewrite(path, change):
    """Load a checkpoint's raw tensors and metadata, apply ``change``, write it back."""
    with safe_open(path, framework="pt") as f:
        metadata = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    change(tensors, metadata)
    save_file(tensors, path, metadata=metadata)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_round_trip_gives_identical_logits(tmp_path, dtype):
    model, cfg = quantized_llama(dtype)
    path = str(tmp_path / "model.safetensors")
    save_state_dict(model.state_dict(), path)
    assert os.listdir(tmp_path) == ["model.safetensors"]  # no temporary left behind
    loaded = load_quantized_state_dict(fresh(cfg, dtype), path)
    ids = torch.randint(0, 256, (2, 10))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
        assert torch.equal(loaded(ids[:, :1]).logits, model(ids[:, :1]).logits)
    a, b = model.model.layers[0].self_attn.o_proj.weight, loaded.model.layers[0].self_attn.o_proj.weight
    for name in ("qdata", "scale", "zero_point", "act_pre_scale"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight


def test_file_holds_only_canonical_data_and_versioned_metadata(tmp_path):
    model, _ = quantized_llama(torch.bfloat16)
    path = str(tmp_path / "m.safetensors")
    save_state_dict(model.state_dict(), path)
    with safe_open(path, framework="pt") as f:
        keys, metadata = set(f.keys()), f.metadata()
    assert metadata["format"] == "awq_ao" and metadata["format_version"] == "1"
    quantized = json.loads(metadata["quantized"])
    q = quantized["model.layers.0.self_attn.q_proj.weight"]
    assert q == {"bits": 4, "group_size": 32, "shape": [96, 96], "dtype": "bfloat16"}
    assert not any("cpu_packed" in k or "cpu_scale_zero" in k for k in keys)
    assert "model.layers.0.self_attn.o_proj.weight.act_pre_scale" in keys
    assert "lm_head.weight" not in keys  # tied: stored once, recorded as an alias


def test_state_dict_loads_standalone(tmp_path):
    model, _ = quantized_llama()
    path = str(tmp_path / "m.safetensors")
    save_state_dict(model.state_dict(), path)
    state = load_state_dict(path)
    w = state["model.layers.1.mlp.down_proj.weight"]
    assert isinstance(w, AWQInt4Tensor) and w.shape == (96, 160)
    assert torch.equal(w.dequantize(), model.model.layers[1].mlp.down_proj.weight.dequantize())


KEY = "model.layers.0.mlp.gate_proj.weight"


@pytest.mark.parametrize("change,message", [
    (lambda t, m: t.__setitem__(f"{KEY}.scale", t[f"{KEY}.scale"][:, :-1].contiguous()), f"{KEY}.scale"),
    (lambda t, m: t.__setitem__(f"{KEY}.qdata", t[f"{KEY}.qdata"].to(torch.int32)), f"{KEY}.qdata"),
    (lambda t, m: t.__setitem__(f"{KEY}.scale", t[f"{KEY}.scale"].half()), f"{KEY}.scale"),
    (lambda t, m: t.pop(f"{KEY}.zero_point"), f"{KEY}.zero_point"),
    (lambda t, m: t.pop("model.norm.weight"), "model.norm.weight"),
    (lambda t, m: t.__setitem__("model.norm.weight", torch.ones(7)), "model.norm.weight"),
    (lambda t, m: t.__setitem__("model.norm.weight", torch.ones(96, dtype=torch.float16)), "model.norm.weight"),
    (lambda t, m: t.__setitem__(f"{KEY}.zero_point", t[f"{KEY}.zero_point"] + 16), f"{KEY}.zero_point"),
    (lambda t, m: t.__setitem__(f"{KEY}.scale", -t[f"{KEY}.scale"]), f"{KEY}.scale"),
    (lambda t, m: t.__setitem__("extra.weight", torch.ones(2)), "extra.weight"),
    (lambda t, m: m.__setitem__("format_version", "99"), "format_version"),
    (lambda t, m: m.__setitem__("quantized", m["quantized"].replace('"bits": 4', '"bits": 7')), "bits=7"),
])
def test_bad_files_refused_with_tensor_named(tmp_path, change, message):
    model, cfg = quantized_llama()
    path = str(tmp_path / "m.safetensors")
    save_state_dict(model.state_dict(), path)
    rewrite(path, change)
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        load_quantized_state_dict(fresh(cfg, torch.float32), path)


def test_mismatched_model_refused(tmp_path):
    model, _ = quantized_llama()
    path = str(tmp_path / "m.safetensors")
    save_state_dict(model.state_dict(), path)
    other, _ = tiny_llama(hidden=96, inter=192)
    with pytest.raises(ValueError, match="shape"):
        load_quantized_state_dict(other, path, strict=False)


@pytest.mark.parametrize("keep", [0, 7, 100, -50])
def test_truncated_or_corrupted_file_refused(tmp_path, keep):
    model, cfg = quantized_llama()
    path = str(tmp_path / "m.safetensors")
    save_state_dict(model.state_dict(), path)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:keep] if keep >= 0 else data[:keep])
    with pytest.raises(ValueError, match="m.safetensors"):
        load_quantized_state_dict(fresh(cfg, torch.float32), path)


def test_not_an_awq_ao_file_refused(tmp_path):
    path = str(tmp_path / "plain.safetensors")
    save_file({"a": torch.ones(2)}, path)
    with pytest.raises(ValueError, match="not an awq_ao checkpoint"):
        load_state_dict(path)


def test_failed_save_leaves_nothing(tmp_path):
    path = str(tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="bad"):
        save_state_dict({"ok": torch.ones(2), "bad": "not a tensor"}, path)
    assert os.listdir(tmp_path) == []


def test_interrupted_save_leaves_no_file_and_keeps_old_one(tmp_path, monkeypatch):
    import awq_ao.formats.native as native

    path = str(tmp_path / "m.safetensors")
    save_state_dict({"a": torch.ones(2)}, path)
    before = open(path, "rb").read()

    def half_written(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(native, "save_file", half_written)
    with pytest.raises(KeyboardInterrupt):
        save_state_dict({"a": torch.zeros(2)}, path)
    assert os.listdir(tmp_path) == ["m.safetensors"]
    assert open(path, "rb").read() == before
