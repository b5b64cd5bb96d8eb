"""The gpt-fast-style Transformer: agreement with transformers, static cache, fusion, loaders."""

import copy
import json
import os
import warnings

import pytest
import torch
from helpers import rel_err, tiny

import awq_ao
from awq_ao.models import Transformer, from_hf_model, load_checkpoint, load_hf_directory
from awq_ao.models.decode_prep import Int8Linear, prepare_for_decode
from awq_ao.models.llama import ModelArgs, rope_inv_freq

ARCHS = ["llama", "mistral", "qwen2", "qwen3"]


def ids(n=2, length=12, seed=0):
    return torch.randint(0, 256, (n, length), generator=torch.Generator().manual_seed(seed))


def rtn(model, group_size=16):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return awq_ao.quantize_(model, awq_ao.awq_config(bits=4, group_size=group_size))


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_match_transformers(arch):
    hf = tiny(arch, attention_bias=True) if arch == "llama" else tiny(arch)
    ours = from_hf_model(hf)
    x = ids()
    with torch.no_grad():
        assert rel_err(ours(x), hf(x).logits) < 1e-5


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_static_cache_prefill_then_decode_matches_full_forward(arch):
    hf = tiny(arch)
    ours = from_hf_model(hf)
    x = ids(n=2, length=10)
    ours.setup_caches(2, 16)
    with torch.no_grad():
        full = hf(x).logits
        steps = [ours(x[:, :6], torch.arange(6))]
        for pos in range(6, 10):
            steps.append(ours(x[:, pos:pos + 1], torch.tensor([pos])))
    assert rel_err(torch.cat(steps, dim=1), full) < 1e-5


def test_llama3_rope_scaling_matches_transformers():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}
    hf = tiny("llama", rope_scaling=scaling, max_position_embeddings=256)
    ref, _ = ROPE_INIT_FUNCTIONS["llama3"](hf.config, "cpu")
    ours = rope_inv_freq(ModelArgs.from_hf_config(hf.config))
    assert torch.allclose(ours, ref.float(), rtol=1e-6)
    assert not torch.allclose(ours, rope_inv_freq(ModelArgs.from_hf_config(tiny("llama").config)))
    x = ids(length=20)
    with torch.no_grad():
        assert rel_err(from_hf_model(hf)(x), hf(x).logits) < 1e-5


def test_untied_and_tied_embeddings():
    for tie in (True, False):
        hf = tiny("llama", tie_word_embeddings=tie)
        ours = from_hf_model(hf)
        assert (ours.lm_head.weight is ours.model.embed_tokens.weight) == tie
        with torch.no_grad():
            assert rel_err(ours(ids()), hf(ids()).logits) < 1e-5


def test_unsupported_architecture_is_named():
    with pytest.raises(ValueError, match="model_type 'opt'"):
        from_hf_model(tiny("opt"))


@pytest.mark.parametrize("calibrated", [False, True])
def test_quantized_model_matches_quantized_transformers(calibrated):
    """Same AWQInt4Tensor weights (o_proj pre-scaled when calibrated): same logits in fp32."""
    hf = tiny("llama")
    if calibrated:
        awq_ao.calibrate(hf, ids(n=8, length=32), awq_ao.awq_config(bits=4, group_size=16), gqa="pre_scale",
                         progress=False)
    rtn(hf)
    if calibrated:
        assert hf.model.layers[0].self_attn.o_proj.weight.act_pre_scale is not None
    ours = from_hf_model(hf)
    x = ids()
    with torch.no_grad():
        ref = hf(x).logits
        assert rel_err(ours(x), ref) < 1e-5
        ours.setup_caches(2, 16)
        prefill = ours(x[:, :11], torch.arange(11))
        last = ours(x[:, 11:], torch.tensor([11]))
    assert rel_err(torch.cat([prefill, last], 1), ref) < 1e-5


@pytest.mark.parametrize("quantized", [False, True])
def test_fused_projections_compute_the_same(quantized):
    hf = tiny("qwen2")  # q/k/v bias too
    if quantized:
        rtn(hf)
    ours = from_hf_model(hf)
    x = ids()
    with torch.no_grad():
        ref = ours(x)
        fused = copy.deepcopy(ours).fuse_projections()
        assert not hasattr(fused.model.layers[0].self_attn, "q_proj")
        assert rel_err(fused(x), ref) < 1e-6


def test_int8_lm_head_is_close_and_smaller():
    ours = from_hf_model(tiny("llama"))
    x = ids()
    with torch.no_grad():
        ref = ours(x)
        head = Int8Linear(ours.lm_head.weight)
        assert head.qweight.dtype == torch.int8
        ours.lm_head = head
        assert rel_err(ours(x), ref) < 1e-2
        ours16 = from_hf_model(tiny("llama", dtype=torch.bfloat16))
        ref16 = ours16(x)
        ours16.lm_head = Int8Linear(ours16.lm_head.weight)  # the aten int8 CPU kernel
        assert rel_err(ours16(x), ref16) < 3e-2


def test_prepare_for_decode_then_compile_matches_eager_bf16():
    hf = tiny("llama", dtype=torch.bfloat16)
    rtn(hf)
    ours = from_hf_model(hf)
    x = ids(n=1, length=6)
    ours.setup_caches(1, 8)
    with torch.no_grad():
        ref = ours(x, torch.arange(6))
        ref_step = ours(x[:, -1:], torch.tensor([6]))
        prepare_for_decode(ours)
        ours.setup_caches(1, 8)
        ours(x, torch.arange(6))
        step = torch.compile(ours, fullgraph=True)(x[:, -1:], torch.tensor([6]))
    assert rel_err(step, ref_step) < 2e-2
    assert ref.shape == (1, 6, 256)


def test_cache_path_needs_setup():
    ours = from_hf_model(tiny("llama"))
    with pytest.raises(RuntimeError, match="setup_caches"):
        ours(ids(n=1, length=1), torch.tensor([0]))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        ours.setup_caches(1, 10_000)


def test_calibration_works_on_the_gpt_fast_model():
    """awq_ao.calibrate runs on the Transformer itself (same mappings) and matches the HF path."""
    config = awq_ao.awq_config(bits=4, group_size=16)
    data = ids(n=8, length=32)
    hf = tiny("llama")
    ours = from_hf_model(copy.deepcopy(hf))
    awq_ao.calibrate(hf, data, config, progress=False)
    awq_ao.calibrate(ours, data, config, progress=False)
    awq_ao.quantize_(hf, config)
    awq_ao.quantize_(ours, config)
    x = ids()
    with torch.no_grad():
        assert rel_err(ours(x), hf(x).logits) < 1e-4


def test_load_transformers_directory_single_and_sharded(tmp_path):
    hf = tiny("llama", tie_word_embeddings=False)
    x = ids()
    with torch.no_grad():
        ref = hf(x).logits
    hf.save_pretrained(tmp_path / "single")
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="50KB")
    assert os.path.isfile(tmp_path / "sharded" / "model.safetensors.index.json")
    for name in ("single", "sharded"):
        model = load_hf_directory(str(tmp_path / name))
        with torch.no_grad():
            assert rel_err(model(x), ref) < 1e-6
    model16 = load_hf_directory(str(tmp_path / "single"), dtype=torch.bfloat16)
    assert model16.dtype == torch.bfloat16


def test_load_transformers_directory_refuses_missing_and_mismatched(tmp_path):
    from safetensors.torch import load_file, save_file

    hf = tiny("llama")
    hf.save_pretrained(tmp_path)
    file = tmp_path / "model.safetensors"
    state = load_file(file)
    key = "model.layers.1.mlp.down_proj.weight"
    bad = dict(state)
    del bad[key]
    save_file(bad, file, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="down_proj"):
        load_hf_directory(str(tmp_path))
    bad = dict(state)
    bad[key] = torch.zeros(3, 3)
    save_file(bad, file, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="down_proj.*shape"):
        load_hf_directory(str(tmp_path))
    file.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="corrupted or truncated"):
        load_hf_directory(str(tmp_path))
    with pytest.raises(ValueError, match="neither a .gguf"):
        load_checkpoint(str(tmp_path / "nothing-here"))


def test_save_quantized_round_trip_into_both_models(tmp_path):
    hf = tiny("llama")
    awq_ao.calibrate(hf, ids(n=8, length=32), awq_ao.awq_config(bits=4, group_size=16), progress=False)
    rtn(hf)
    x = ids()
    with torch.no_grad():
        ref = hf(x).logits
    out = tmp_path / "q"
    awq_ao.save_quantized(hf, str(out))
    marker = json.loads((out / "awq_ao.json").read_text())
    assert marker["quantization"]["bits"] == 4 and marker["quantization"]["group_size"] == 16
    back = awq_ao.load_quantized(str(out))
    fast = awq_ao.load_quantized(str(out), kind="gpt-fast")
    assert isinstance(fast, Transformer)
    with torch.no_grad():
        assert torch.equal(back(x).logits, ref)
        assert rel_err(fast(x), ref) < 1e-5
    model, tokenizer = load_checkpoint(str(out))
    assert isinstance(model, Transformer) and tokenizer is None
    # gpt-fast model saves to the same format
    awq_ao.save_quantized(fast, str(tmp_path / "from-fast"))
    again = awq_ao.load_quantized(str(tmp_path / "from-fast"))
    with torch.no_grad():
        assert torch.equal(again(x).logits, ref)


def test_save_quantized_refusals_and_atomicity(tmp_path, monkeypatch):
    hf = tiny("llama")
    with pytest.raises(ValueError, match="no AWQInt4Tensor"):
        awq_ao.save_quantized(hf, str(tmp_path / "float"))
    rtn(hf)
    out = tmp_path / "q"
    awq_ao.save_quantized(hf, str(out))
    with pytest.raises(ValueError, match="not empty"):
        awq_ao.save_quantized(hf, str(out))
    fused = from_hf_model(hf).fuse_projections()
    with pytest.raises(ValueError, match="fused"):
        awq_ao.save_quantized(fused, str(tmp_path / "fused"))

    import awq_ao.formats.directory as directory

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(directory, "save_state_dict", boom)
    with pytest.raises(OSError, match="disk full"):
        awq_ao.save_quantized(hf, str(out), overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["q"]  # no temporary directory left behind
    assert awq_ao.load_quantized(str(out)) is not None  # the earlier save is intact
    (out / "awq_ao.json").write_text('{"format": "awq_ao", "format_version": 99}')
    with pytest.raises(ValueError, match="format_version"):
        awq_ao.load_quantized(str(out))
