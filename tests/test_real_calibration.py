"""AWQ on the real SmolLM2-135M beats round-to-nearest on held-out perplexity (small budget).

Skipped cleanly when ../shared (or $AWQ_AO_SHARED) is absent. Calibrates on
8 x 256 tokens of wikitext-2 valid.txt, evaluates on 4 x 512 tokens of
test.txt, at w3 g64, where round-to-nearest loses the most.
"""

import copy
import os

import pytest
import torch
from helpers import shared_dir

import awq_ao

MODEL_DIR = os.path.join(shared_dir(), "models")
DATA_DIR = os.path.join(shared_dir(), "data", "wikitext-2")
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (os.path.isfile(os.path.join(MODEL_DIR, GGUF)) and os.path.isdir(DATA_DIR)),
        reason=f"{GGUF} or wikitext-2 not found",
    ),
]


def test_awq_beats_round_to_nearest_on_smollm2():
    pytest.importorskip("gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(MODEL_DIR, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, gguf_file=GGUF, dtype=torch.float32).eval()
    calib = awq_ao.samples_from_text(os.path.join(DATA_DIR, "valid.txt"), tok, n_samples=8, seq_len=256)
    test = awq_ao.calibration.tokenize_text(os.path.join(DATA_DIR, "test.txt"), tok)[: 4 * 512]
    config = awq_ao.awq_config(bits=3, group_size=64)

    rtn = copy.deepcopy(model)
    awq_ao.quantize_(rtn, config)
    ppl_rtn = awq_ao.perplexity(rtn, test, 512, progress=False)
    del rtn

    awq_ao.calibrate(model, calib, config, progress=False)
    awq_ao.quantize_(model, config)
    ppl_awq = awq_ao.perplexity(model, test, 512, progress=False)
    print(f"w3 g64 perplexity on 4 x 512 test tokens: round-to-nearest {ppl_rtn:.2f}, AWQ {ppl_awq:.2f}")
    assert ppl_awq < 0.9 * ppl_rtn
