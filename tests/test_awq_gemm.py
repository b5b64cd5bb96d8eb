"""AWQ GEMM tensor layout: round trip, and an unpacker written from the format's description alone."""

import pytest
import torch

from awq_ao import AWQInt4Tensor
from awq_ao.formats.awq_gemm import from_awq_gemm, to_awq_gemm

FORMAT_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]  # from the format description, not imported


def independent_dequantize(qweight, qzeros, scales, group_size):
    """w [K, N] from AWQ GEMM tensors, one word at a time in plain Python integers."""
    k, words = qweight.shape
    n = words * 8

    def unpack(packed):
        rows = []
        for row in packed.tolist():
            values = [0] * n
            for j, word in enumerate(row):
                word &= 0xFFFFFFFF
                for i in range(8):
                    values[8 * j + FORMAT_ORDER[i]] = (word >> (4 * i)) & 0xF
            rows.append(values)
        return torch.tensor(rows, dtype=torch.float64)

    q, z = unpack(qweight), unpack(qzeros)
    g = torch.arange(k) // group_size
    return (q - z[g]) * scales.double()[g]


@pytest.mark.parametrize("group_size", [16, 32])
def test_export_matches_an_independent_unpacker_and_round_trips_bit_exact(group_size):
    w = torch.randn(24, 64, dtype=torch.float16)
    q = AWQInt4Tensor.from_float(w, bits=4, group_size=group_size)
    t = to_awq_gemm(q)
    assert t["qweight"].dtype == torch.int32 and tuple(t["qweight"].shape) == (64, 3)
    assert tuple(t["qzeros"].shape) == (64 // group_size, 3) and t["scales"].dtype == torch.float16
    ref = q.dequantize(torch.float64).t()
    assert torch.equal(independent_dequantize(t["qweight"], t["qzeros"], t["scales"], group_size), ref)
    back = from_awq_gemm(t["qweight"], t["qzeros"], t["scales"], group_size, torch.float16)
    assert torch.equal(back.qdata, q.qdata) and torch.equal(back.zero_point, q.zero_point)
    assert torch.equal(back.scale, q.scale)


def test_bf16_scales_round_to_fp16():
    q = AWQInt4Tensor.from_float(torch.randn(16, 32, dtype=torch.bfloat16), bits=4, group_size=16)
    back = from_awq_gemm(**to_awq_gemm(q), group_size=16, dtype=torch.bfloat16)
    assert torch.equal(back.qdata, q.qdata)
    assert torch.equal(back.scale, q.scale.to(torch.float16).to(torch.bfloat16))


def test_refusals_name_the_fix():
    w = torch.randn(16, 32)
    with pytest.raises(ValueError, match="act_pre_scale.*gqa='fold'"):
        to_awq_gemm(AWQInt4Tensor.from_float(w, 4, 16, act_pre_scale=torch.rand(32) + 0.5), "o_proj")
    with pytest.raises(ValueError, match="bits=3"):
        to_awq_gemm(AWQInt4Tensor.from_float(w, 3, 16))
    with pytest.raises(ValueError, match="does not divide in_features 40"):
        to_awq_gemm(AWQInt4Tensor.from_float(torch.randn(16, 40), 4, 16))
    t = to_awq_gemm(AWQInt4Tensor.from_float(w, 4, 16))
    with pytest.raises(ValueError, match="qzeros has shape"):
        from_awq_gemm(t["qweight"], t["qzeros"][:1], t["scales"], 16)
    with pytest.raises(ValueError, match="int32"):
        from_awq_gemm(t["qweight"].float(), t["qzeros"], t["scales"], 16)


# ------------------------------------------------------------------ directories

import json  # noqa: E402
import os  # noqa: E402

from helpers import rel_err, tiny, word_tokenizer  # noqa: E402

import awq_ao  # noqa: E402


def quantized_tiny(gqa="fold", dtype=torch.float16):
    hf = tiny("llama", dtype=torch.float32)
    data = torch.randint(0, 256, (8, 32), generator=torch.Generator().manual_seed(0))
    config = awq_ao.awq_config(bits=4, group_size=16)
    awq_ao.calibrate(hf, data, config, gqa=gqa, progress=False)
    hf.to(dtype)
    awq_ao.quantize_(hf, config)
    return hf


def test_export_then_import_keeps_every_weight_bit_exact(tmp_path):
    hf = quantized_tiny()
    x = torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(x).logits
    out = tmp_path / "awq"
    awq_ao.export_awq(hf, str(out), tokenizer=word_tokenizer())
    config = json.loads((out / "config.json").read_text())
    qc = config["quantization_config"]
    assert qc == {"quant_method": "awq", "bits": 4, "group_size": 16, "zero_point": True, "version": "gemm",
                  "modules_to_not_convert": ["lm_head"]}
    assert os.path.isfile(out / "tokenizer.json") and os.path.isfile(out / "generation_config.json")
    from safetensors import safe_open

    with safe_open(out / "model.safetensors", "pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("model.layers.0.mlp.down_proj.qweight").dtype == torch.int32
    assert "model.layers.0.mlp.down_proj.weight" not in keys and "lm_head.weight" in keys  # untied here
    back = awq_ao.load_awq(str(out))
    fast = awq_ao.load_quantized(str(out), kind="gpt-fast")
    for name, module in hf.named_modules():
        if isinstance(getattr(module, "weight", None), AWQInt4Tensor):
            mine = back.get_submodule(name).weight
            assert torch.equal(mine.qdata, module.weight.qdata) and torch.equal(mine.scale, module.weight.scale)
            assert torch.equal(mine.zero_point, module.weight.zero_point)
    with torch.no_grad():  # same weights; transformers may pick another attention kernel for a config-built model
        assert rel_err(back(x).logits, ref) < 2e-3
        assert rel_err(fast(x), ref) < 2e-3
    from awq_ao.models import load_checkpoint

    model, tokenizer = load_checkpoint(str(out))
    assert tokenizer is not None and model.dtype == torch.float16


def test_import_sharded_checkpoint_with_index(tmp_path):
    from safetensors.torch import load_file, save_file

    hf = quantized_tiny()
    awq_ao.export_awq(hf, str(tmp_path / "awq"))
    state = load_file(tmp_path / "awq" / "model.safetensors")
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, part in shards.items():
        save_file({k: state[k] for k in part}, tmp_path / "awq" / name, metadata={"format": "pt"})
    (tmp_path / "awq" / "model.safetensors").unlink()
    index = {"metadata": {}, "weight_map": {k: name for name, part in shards.items() for k in part}}
    (tmp_path / "awq" / "model.safetensors.index.json").write_text(json.dumps(index))
    x = torch.randint(0, 256, (1, 8))
    with torch.no_grad():
        assert rel_err(awq_ao.load_awq(str(tmp_path / "awq"))(x).logits, hf(x).logits) < 2e-3


def test_export_refuses_what_the_format_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="o_proj.*act_pre_scale"):
        awq_ao.export_awq(quantized_tiny(gqa="pre_scale"), str(tmp_path / "a"))
    assert not os.path.exists(tmp_path / "a")
    with pytest.raises(ValueError, match="no AWQInt4Tensor"):
        awq_ao.export_awq(tiny("llama"), str(tmp_path / "b"))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x").write_text("keep")
    with pytest.raises(ValueError, match="not empty"):
        awq_ao.export_awq(quantized_tiny(), str(tmp_path / "c"))


def test_import_refuses_bad_checkpoints(tmp_path):
    from safetensors.torch import load_file, save_file

    hf = quantized_tiny()
    out = tmp_path / "awq"
    awq_ao.export_awq(hf, str(out))
    file = out / "model.safetensors"
    state = load_file(file)
    bad = dict(state)
    bad["model.layers.1.self_attn.k_proj.scales"] = bad["model.layers.1.self_attn.k_proj.scales"][:, :8].contiguous()
    save_file(bad, file, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="k_proj.scales has shape"):
        awq_ao.load_awq(str(out))
    bad = dict(state)
    del bad["model.norm.weight"]
    save_file(bad, file, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="model.norm.weight"):
        awq_ao.load_awq(str(out))
    config = json.loads((out / "config.json").read_text())
    config["quantization_config"]["version"] = "gemv"
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="gemv"):
        awq_ao.load_awq(str(out))
    with pytest.raises(ValueError, match="not an AWQ checkpoint"):
        awq_ao.load_awq(str(tmp_path))


def test_tied_embeddings_are_written_once(tmp_path):
    hf = tiny("llama", tie_word_embeddings=True)
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore")
        awq_ao.quantize_(hf.to(torch.float16), awq_ao.awq_config(bits=4, group_size=16))
    awq_ao.export_awq(hf, str(tmp_path / "awq"))
    from safetensors import safe_open

    with safe_open(tmp_path / "awq" / "model.safetensors", "pt") as f:
        assert "lm_head.weight" not in set(f.keys())
    back = awq_ao.load_awq(str(tmp_path / "awq"))
    assert back.lm_head.weight is back.model.embed_tokens.weight
