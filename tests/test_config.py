"""quantize_(model, awq_config()) through torchao and awq_ao, on tiny transformers models."""

import warnings

import pytest
import torch
import torchao
from helpers import dequantized_copy, rel_err, tiny_llama
from torch import nn

import awq_ao
from awq_ao import AWQInt4Tensor, AWQLinearCalibration, awq_config, quant

LOGIT_TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


def linear_names(model):
    return {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def quantized_names(model):
    return {n for n, m in model.named_modules() if isinstance(getattr(m, "weight", None), AWQInt4Tensor)}


def test_awq_quantize_default_filter_leaves_lm_head_and_warns_once():
    model, _ = tiny_llama(tie=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        awq_ao.quantize_(model, awq_config(group_size=32))
    rtn = [w for w in caught if "round-to-nearest" in str(w.message)]
    assert len(rtn) == 1
    assert quantized_names(model) == linear_names(model) - {"lm_head"}
    assert isinstance(model.model.embed_tokens.weight, nn.Parameter)
    assert not isinstance(model.model.embed_tokens.weight, AWQInt4Tensor)


def test_tied_lm_head_stays_float():
    model, _ = tiny_llama(tie=True)
    awq_ao.quantize_(model, awq_config(group_size=32))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert not isinstance(model.lm_head.weight, AWQInt4Tensor)


def test_torchao_quantize_uses_registered_handler():
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16))
    with pytest.warns(UserWarning, match="round-to-nearest"):
        torchao.quantization.quantize_(model, awq_config(bits=3, group_size=16))
    for idx in (0, 2):
        w = model[idx].weight
        assert isinstance(w, AWQInt4Tensor) and w.bits == 3 and w.group_size == 16


def test_quantize_is_idempotent():
    model = nn.Sequential(nn.Linear(64, 32))
    awq_ao.quantize_(model, awq_config(group_size=32))
    qdata = model[0].weight.qdata.clone()
    awq_ao.quantize_(model, awq_config(group_size=32))
    assert torch.equal(model[0].weight.qdata, qdata)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_llama_logits_match_dequantized_model_eager_and_compiled(dtype):
    model, _ = tiny_llama(dtype=dtype)
    awq_ao.quantize_(model, awq_config(group_size=32))
    reference = dequantized_copy(model)
    ids = torch.randint(0, 256, (2, 12))
    with torch.no_grad():
        expected = reference(ids).logits
        assert rel_err(model(ids).logits, expected) < LOGIT_TOL[dtype]
        compiled = torch.compile(model, fullgraph=True)
        assert rel_err(compiled(ids).logits, expected) < LOGIT_TOL[dtype]
        one = ids[:, :1]  # decode-sized input: the CPU int4 kernel in bf16
        assert rel_err(compiled(one).logits, reference(one).logits) < LOGIT_TOL[dtype]


def test_qwen2_mistral_opt_quantize_and_run():
    from transformers import (MistralConfig, MistralForCausalLM, OPTConfig, OPTForCausalLM,
                              Qwen2Config, Qwen2ForCausalLM)

    small = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    models = [
        Qwen2ForCausalLM(Qwen2Config(**small)),
        MistralForCausalLM(MistralConfig(**small)),
        OPTForCausalLM(OPTConfig(vocab_size=128, hidden_size=64, ffn_dim=128, num_hidden_layers=1,
                                 num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=64)),
    ]
    ids = torch.randint(0, 128, (1, 9))
    for model in models:
        model.eval()
        awq_ao.quantize_(model, awq_config(group_size=32))
        assert len(quantized_names(model)) >= 6
        with torch.no_grad():
            assert rel_err(model(ids).logits, dequantized_copy(model)(ids).logits) < 1e-5


def test_calibration_on_module_is_used():
    lin = nn.Linear(64, 32)
    w = lin.weight.detach().clone()
    pre = torch.rand(64) + 0.5
    clip = torch.full((32, 2), 0.8)
    lin.awq_calibration = AWQLinearCalibration(bits=4, group_size=32, clip_ratio=clip, act_pre_scale=pre)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # calibrated: no round-to-nearest warning
        awq_ao.quantize_(lin, awq_config(group_size=32), filter_fn=lambda m, n: isinstance(m, nn.Linear))
    qw = lin.weight
    q, s, z = quant.quantize(w / pre, 4, 32, clip_ratio=clip)
    assert torch.equal(quant.unpack_int4(qw.qdata), q) and torch.equal(qw.scale, s)
    assert torch.equal(qw.act_pre_scale, pre)
    assert not hasattr(lin, "awq_calibration")


def test_calibration_with_other_bits_or_group_is_an_error():
    lin = nn.Linear(64, 32)
    lin.awq_calibration = AWQLinearCalibration(bits=4, group_size=64)
    with pytest.raises(ValueError, match="calibrated with bits=4, group_size=64"):
        awq_ao.quantize_(lin, awq_config(group_size=32), filter_fn=lambda m, n: True)
    with pytest.raises(ValueError, match="calibrated with"):
        awq_ao.quantize_(lin, awq_config(bits=3, group_size=64), filter_fn=lambda m, n: True)


@pytest.mark.parametrize("kwargs,name", [
    (dict(bits=5), "bits"), (dict(bits=1), "bits"), (dict(group_size=48), "group_size"),
    (dict(group_size=0), "group_size"), (dict(group_size=-128), "group_size"),
    (dict(zero_point="yes"), "zero_point"),
])
def test_bad_config_arguments_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        awq_config(**kwargs)


def test_non_finite_weight_named_by_quantize():
    model = nn.Sequential(nn.Linear(32, 16))
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        awq_ao.quantize_(model, awq_config(group_size=32))
