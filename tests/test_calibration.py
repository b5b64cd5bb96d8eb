"""awq_ao.calibrate on tiny random models of each supported architecture, the searches, and refusals."""

import copy
import math

import pytest
import torch
from helpers import dequantized_copy, rel_err, tiny

import awq_ao
from awq_ao.calibration import data as calib_data
from awq_ao.calibration import mappings, search


ARCHS = ["llama", "mistral", "qwen2", "qwen3", "opt"]
CONFIG = awq_ao.awq_config(bits=4, group_size=16)


def tokens(n=8, length=32, seed=0):
    return torch.randint(0, 256, (n, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("gqa", ["fold", "auto"])
def test_folding_keeps_the_float_model(arch, gqa):
    """calibrate changes weights (folding) but not the float function."""
    model = tiny(arch)
    ids = tokens()
    with torch.no_grad():
        before = model(ids[:2]).logits
    awq_ao.calibrate(model, ids, CONFIG, gqa=gqa, progress=False)
    with torch.no_grad():
        after = model(ids[:2]).logits
    assert rel_err(after, before) < 1e-5
    folded = [r for r in model.awq_calibration_report if r["mode"] == "fold"]
    assert folded and len(model.awq_calibration_report) == 2 * len(mappings.detect(model).groups)


@pytest.mark.parametrize("arch", ARCHS)
def test_calibrate_then_quantize_matches_dequantized_reference(arch):
    model = tiny(arch)
    ids = tokens()
    awq_ao.calibrate(model, ids, CONFIG, progress=False)
    awq_ao.quantize_(model, CONFIG)
    assert not any(hasattr(m, "awq_calibration") for m in model.modules())  # consumed by quantize_
    ref = dequantized_copy(model)
    with torch.no_grad():
        assert rel_err(model(ids[:2]).logits, ref(ids[:2]).logits) < 1e-5


def test_v_to_o_pre_scale_is_kept_on_o_proj():
    model = tiny("llama")
    awq_ao.calibrate(model, tokens(), CONFIG, gqa="pre_scale", progress=False)
    o = model.model.layers[0].self_attn.o_proj
    assert o.awq_calibration.act_pre_scale is not None
    assert all(r["mode"] == "pre_scale" for r in model.awq_calibration_report if r["group"] == "attn_out")
    awq_ao.quantize_(model, CONFIG)
    assert model.model.layers[0].self_attn.o_proj.weight.act_pre_scale is not None


def test_awq_loss_beats_round_to_nearest_on_outlier_channels():
    """A linear whose input has a few large channels: AWQ's scales cut the output error well below RTN's."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 128, generator=gen)
    x[:, [3, 40, 77, 100]] *= 30.0  # planted outlier input channels
    w = torch.randn(96, 128, generator=gen) * 0.05
    gram = x.t() @ x
    s, loss, rtn = search.search_scale(w, x.abs().mean(0), search.gram_loss(w, gram), bits=4, group_size=32)
    assert loss < 0.7 * rtn
    # the loss is really the output error: check against the tokens themselves
    wq = awq_ao.quant.fake_quantize(w * s, 4, 32) / s
    assert math.isclose(float(((x @ (wq - w).t()) ** 2).sum()), loss, rel_tol=1e-3)


def test_awq_model_beats_rtn_with_outliers():
    """End to end on a tiny Llama with outlier channels in the attention norm: lower error than RTN."""
    model = tiny("llama")
    with torch.no_grad():
        for layer in model.model.layers:
            layer.input_layernorm.weight[[5, 17, 33]] = 25.0
    ids = tokens(16, 64)
    with torch.no_grad():
        ref = model(ids[:4]).logits
    rtn = copy.deepcopy(model)
    awq_ao.quantize_(rtn, CONFIG)
    awq_ao.calibrate(model, ids, CONFIG, progress=False)
    awq_ao.quantize_(model, CONFIG)
    with torch.no_grad():
        err_rtn = rel_err(rtn(ids[:4]).logits, ref)
        err_awq = rel_err(model(ids[:4]).logits, ref)
    assert err_awq < 0.8 * err_rtn


def test_clip_search_shrinks_groups_with_an_outlier_weight():
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(32, 64, generator=gen)
    w[:, 0] *= 20  # one huge weight per row in group 0
    x = torch.randn(1024, 64, generator=gen)
    x[:, 0] *= 0.01  # ...on an input channel that barely matters
    ratio = search.search_clip(w, x.t() @ x, bits=4, group_size=32)
    assert ratio.shape == (32, 2)
    assert ((ratio >= 0.5) & (ratio <= 1.0)).all()
    assert ratio[:, 0].mean() < 0.9


def test_calibration_is_deterministic():
    a, b = tiny("qwen2"), tiny("qwen2")
    ids = tokens()
    awq_ao.calibrate(a, ids, CONFIG, progress=False)
    awq_ao.calibrate(b, ids, CONFIG, progress=False)
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), name
    for ma, mb in zip(a.modules(), b.modules()):
        if hasattr(ma, "awq_calibration") and ma.awq_calibration.clip_ratio is not None:
            assert torch.equal(ma.awq_calibration.clip_ratio, mb.awq_calibration.clip_ratio)


def test_bf16_model_calibrates():
    model = tiny("llama", torch.bfloat16)
    awq_ao.calibrate(model, tokens(), CONFIG, progress=False)
    awq_ao.quantize_(model, CONFIG)
    with torch.no_grad():
        assert torch.isfinite(model(tokens(1)).logits).all()


def test_data_forms_are_accepted():
    ids = tokens(4, 16)
    as_list = [row for row in ids]
    as_dicts = [{"input_ids": row.unsqueeze(0)} for row in ids]
    for form in (ids, as_list, as_dicts):
        batches = calib_data.as_token_batches(form, batch_size=3)
        assert [b.shape for b in batches] == [(3, 16), (1, 16)]


@pytest.mark.parametrize("bad,match", [
    (torch.empty(0, 16, dtype=torch.long), "empty"),
    ([], "empty"),
    (torch.zeros(4, 1, dtype=torch.long), "too short"),
    (torch.zeros(4, 8), "integer token ids"),
    ([torch.zeros(8, dtype=torch.long), torch.zeros(9, dtype=torch.long)], "share one length"),
])
def test_bad_calibration_data_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        awq_ao.calibrate(tiny("llama"), bad, CONFIG, progress=False)


def test_unknown_architecture_is_named():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    with pytest.raises(ValueError, match="'gpt2'"):
        awq_ao.calibrate(model, tokens(), CONFIG, progress=False)


def test_nan_weight_is_named():
    model = tiny("llama")
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"layers\.1\.mlp\.up_proj"):
        awq_ao.calibrate(model, tokens(), CONFIG, progress=False)


def test_inf_activation_is_named():
    model = tiny("llama")
    with torch.no_grad():
        model.model.layers[0].post_attention_layernorm.weight[3] = float("inf")
    with pytest.raises(ValueError, match=r"layers\.0\.mlp\.gate_proj"):
        awq_ao.calibrate(model, tokens(), CONFIG, progress=False)


@pytest.mark.parametrize("kwargs,match", [
    ({"gqa": "maybe"}, "gqa"), ({"n_grid": 0}, "n_grid"), ({"batch_size": 0}, "batch_size"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        awq_ao.calibrate(tiny("llama"), tokens(), CONFIG, progress=False, **kwargs)


def test_calibrated_with_other_bits_cannot_be_quantized():
    model = tiny("llama")
    awq_ao.calibrate(model, tokens(), CONFIG, progress=False)
    with pytest.raises(ValueError, match="calibrated with bits=4"):
        awq_ao.quantize_(model, awq_ao.awq_config(bits=3, group_size=16))


def test_samples_from_text(tmp_path):
    class WordTokenizer:
        def __call__(self, text):
            return {"input_ids": [hash(word) % 1000 for word in text.split()]}

    path = tmp_path / "corpus.txt"
    path.write_text(" ".join(f"w{i}" for i in range(1000)))
    samples = awq_ao.samples_from_text(str(path), WordTokenizer(), n_samples=10, seq_len=50)
    assert samples.shape == (10, 50) and samples.dtype == torch.long
    with pytest.raises(ValueError, match="fewer than 100 x 50"):
        awq_ao.samples_from_text(str(path), WordTokenizer(), n_samples=100, seq_len=50)


def test_perplexity_matches_the_models_own_loss():
    model = tiny("llama")
    ids = tokens(3, 32).reshape(-1)
    ppl = awq_ao.perplexity(model, ids, seq_len=32, progress=False)
    with torch.no_grad():
        losses = [model(chunk[None], labels=chunk[None]).loss for chunk in ids.view(3, 32)]
    assert math.isclose(ppl, math.exp(float(torch.stack(losses).mean())), rel_tol=1e-4)
    with pytest.raises(ValueError, match="at least 64 tokens"):
        awq_ao.perplexity(model, ids[:10], seq_len=64, progress=False)


@pytest.mark.parametrize("options", [
    {"per_linear": True}, {"module_loss_tokens": 64}, {"quantized_inputs": True}, {"clip": False},
    {"clip_grid": 8, "n_grid": 5},
])
def test_options_keep_the_float_model_and_quantize(options):
    model = tiny("llama")
    ids = tokens()
    with torch.no_grad():
        before = model(ids[:2]).logits
    awq_ao.calibrate(model, ids, CONFIG, progress=False, **options)
    with torch.no_grad():
        assert rel_err(model(ids[:2]).logits, before) < 1e-5
    if options.get("per_linear"):
        q = model.model.layers[0].self_attn.q_proj
        assert q.awq_calibration.act_pre_scale is not None  # its own scale, kept at run time
    if options.get("clip") is False:
        assert all(m.awq_calibration.clip_ratio is None for m in model.modules() if hasattr(m, "awq_calibration"))
    awq_ao.quantize_(model, CONFIG)
    ref = dequantized_copy(model)
    with torch.no_grad():
        assert rel_err(model(ids[:2]).logits, ref(ids[:2]).logits) < 1e-5


def test_module_output_loss_is_the_mlp_error():
    from awq_ao.calibration.api import module_output_loss

    model = tiny("llama")
    mlp = model.model.layers[0].mlp
    x = torch.randn(50, 64)
    linears = [mlp.gate_proj, mlp.up_proj]
    w = torch.cat([lin.weight for lin in linears]).detach()
    loss = module_output_loss(mlp, linears, x)
    assert loss(w) == 0.0
    noisy = w + 0.01 * torch.randn_like(w)
    with torch.no_grad():
        ref = mlp(x)
        gate, up = noisy.split(128)
        expected = float(((mlp.down_proj(mlp.act_fn(x @ gate.t()) * (x @ up.t())) - ref) ** 2).sum())
    assert math.isclose(loss(noisy), expected, rel_tol=1e-4)
    assert torch.equal(torch.cat([lin.weight for lin in linears]), w)  # weights restored


def test_asymmetric_clip_never_loses_to_symmetric():
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(24, 64, generator=gen)
    w[:, 5] += 6.0  # one-sided outliers: the high side wants clipping, the low side does not
    x = torch.randn(512, 64, generator=gen)
    gram = x.t() @ x
    sym = search.search_clip(w, gram, bits=3, group_size=32)
    asym = search.search_clip(w, gram, bits=3, group_size=32, asymmetric=True)
    assert asym.shape == (24, 2, 2) and ((asym >= 0.5) & (asym <= 1.0)).all()

    def err(clip):
        wq = awq_ao.quant.fake_quantize(w, 3, 32, clip_ratio=clip)
        return float(((x @ (wq - w).t()) ** 2).sum())

    assert err(asym) <= err(sym) * (1 + 1e-5)
    assert (asym[..., 0] != asym[..., 1]).any()


def test_calibrate_and_quantize_is_calibrate_cast_quantize():
    """The helper equals the three steps; without data it quantizes round-to-nearest without the warning."""
    import warnings

    model = tiny("llama")
    data = tokens(n=2)
    config = CONFIG
    by_hand = copy.deepcopy(model)
    awq_ao.calibrate(by_hand, data, config, progress=False)
    awq_ao.quantize_(by_hand.to(torch.bfloat16), config)
    helped = awq_ao.calibrate_and_quantize(copy.deepcopy(model), config, data, torch.bfloat16, progress=False)
    ids = data[:1]
    with torch.no_grad():
        assert torch.equal(helped(ids).logits, by_hand(ids).logits)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rtn = awq_ao.calibrate_and_quantize(copy.deepcopy(model), config)
    assert isinstance(rtn.model.layers[0].mlp.down_proj.weight, awq_ao.AWQInt4Tensor)
