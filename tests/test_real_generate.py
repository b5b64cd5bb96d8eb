"""The shared SmolLM2-135M through the gpt-fast-style model: same greedy tokens as transformers.

Skipped cleanly when ../shared (or $AWQ_AO_SHARED) is absent.
"""

import os
import warnings

import pytest
import torch
from helpers import shared_dir

import awq_ao
from awq_ao import generate as gen
from awq_ao.models import from_hf_model
from awq_ao.models.decode_prep import prepare_for_decode

GGUF = os.path.join(shared_dir(), "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.isfile(GGUF), reason=f"{GGUF} not found"),
]
PROMPT = "The Eiffel Tower is a wrought-iron lattice tower in Paris. It was built"


@pytest.fixture(scope="module")
def quantized():
    pytest.importorskip("gguf")
    from awq_ao.models.loading import load_hf_model

    hf, tokenizer = load_hf_model(GGUF, torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        awq_ao.quantize_(hf, awq_ao.awq_config(bits=4, group_size=64))
    return hf, tokenizer, torch.tensor([tokenizer.encode(PROMPT)])


def test_quantized_greedy_tokens_match_transformers_fp32(quantized):
    hf, tokenizer, ids = quantized
    with torch.no_grad():
        ref = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, min_new_tokens=16,
                          do_sample=False)
    ours, _ = gen.generate(from_hf_model(hf), ids, 16)
    assert torch.equal(ours, ref), (tokenizer.decode(ours[0]), tokenizer.decode(ref[0]))


def test_compiled_bf16_decode_is_coherent(quantized):
    hf, tokenizer, ids = quantized
    eager32, _ = gen.generate(from_hf_model(hf), ids, 16)
    model = prepare_for_decode(from_hf_model(hf).to(torch.bfloat16))
    fn = gen.compile_decode("cpu")
    model.setup_caches(1, ids.shape[1] + 16)
    gen.generate(model, ids, 4, decode_fn=fn)
    with torch.compiler.set_stance("fail_on_recompile"):
        out, stats = gen.generate(model, ids, 16, decode_fn=fn, skip_guards=True)
    assert hf.model.norm.weight.dtype == torch.float32  # converting our copy left transformers' model alone
    agree = (out[0, ids.shape[1]:] == eager32[0, ids.shape[1]:]).float().mean().item()
    assert agree >= 0.5, tokenizer.decode(out[0])  # bf16 vs fp32 may part ways after a while, not at once
    assert torch.equal(out[0, ids.shape[1]:ids.shape[1] + 3], eager32[0, ids.shape[1]:ids.shape[1] + 3])
    assert stats.decode_tokens_per_s > 0
