"""The shared SmolLM2-135M (a real Llama, hidden 576) through quantize_, compile and a checkpoint.

Skipped cleanly when ../shared (or $AWQ_AO_SHARED) is absent.
"""

import os

import pytest
import torch
from helpers import dequantized_copy, rel_err, shared_dir

import awq_ao
from awq_ao import AWQInt4Tensor, awq_config

MODEL_DIR = os.path.join(shared_dir(), "models")
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.isfile(os.path.join(MODEL_DIR, GGUF)), reason=f"{GGUF} not found"),
]
PROMPT = "The tower is 324 metres tall, about the same height as an 81-storey building, and the tallest"


@pytest.fixture(scope="module")
def loaded():
    pytest.importorskip("gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(MODEL_DIR, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, gguf_file=GGUF, dtype=torch.bfloat16).eval()
    float_logits = None
    ids = tok(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        float_logits = model(ids).logits
    awq_ao.quantize_(model, awq_config(group_size=64))  # 576 is not a multiple of 128
    return tok, model, ids, float_logits


def test_every_block_linear_quantized(loaded):
    _, model, _, _ = loaded
    quantized = [n for n, m in model.named_modules() if isinstance(getattr(m, "weight", None), AWQInt4Tensor)]
    assert len(quantized) == 30 * 7
    assert not isinstance(model.lm_head.weight, AWQInt4Tensor)


def test_logits_match_dequantized_and_stay_near_float(loaded):
    """The bf16 int4 model against the exact product of its stored weights (the dequantized model in fp32): no
    further from it than those weights run densely in bf16 are, for the prompt and for one decode-sized token
    (the CPU int4 kernel). bf16 rounding alone moves 30 layers' logits by 2-5% here: on an AMD EPYC with
    AVX512-BF16 the dense bf16 model was 2.3% (prompt) and 4.7% (one token) off the fp32 one, the int4 model
    1.9% and 4.1%; comparing the two bf16 paths with each other, as this test did before, gave 2.4% there,
    over its 2% bound (``pytest -s`` prints the three). A wrong kernel (a zero point or scale misapplied) is
    off by far more."""
    _, model, ids, float_logits = loaded
    dense_bf16 = dequantized_copy(model)
    exact = dequantized_copy(model, torch.float32)
    with torch.no_grad():
        logits = model(ids).logits
        one = ids[:, -1:]
        for x, y in ((ids, logits), (one, model(one).logits)):
            want, dense = exact(x).logits, dense_bf16(x).logits
            print(f"{x.shape[1]} tokens: int4 vs fp32 {rel_err(y, want):.4f}, dense bf16 vs fp32 "
                  f"{rel_err(dense, want):.4f}, int4 vs dense bf16 {rel_err(y, dense):.4f}")
            assert rel_err(y, want) < 1.25 * rel_err(dense, want) + 5e-3
        # inductor reorders bf16 roundings across 30 layers (about 2% on its own,
        # quantized or not), hence the looser bound for compiled against eager
        compiled = torch.compile(model, fullgraph=True)
        assert rel_err(compiled(one).logits, model(one).logits) < 5e-2
    # round-to-nearest int4 moves a real model's predictions, but not far
    agree = (logits.argmax(-1) == float_logits.argmax(-1)).float().mean().item()
    assert agree > 0.5


def test_generate_and_checkpoint_round_trip(loaded, tmp_path):
    from transformers import AutoModelForCausalLM

    tok, model, ids, _ = loaded
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 8
    path = str(tmp_path / "smollm2-awq.safetensors")
    awq_ao.save_state_dict(model.state_dict(), path)
    fresh = AutoModelForCausalLM.from_config(model.config, dtype=torch.bfloat16).eval()
    awq_ao.load_quantized_state_dict(fresh, path)
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, model(ids).logits)
        again = fresh.generate(ids, max_new_tokens=8, do_sample=False)
    assert torch.equal(again, out)
    size = os.path.getsize(path)
    assert size < 0.55 * sum(p.numel() * 2 for p in fresh.parameters())  # well under bf16 size
