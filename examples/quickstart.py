"""Calibrate the shared SmolLM2-135M with AWQ, quantize it to int4, save it, reload it and decode compiled.

    python examples/quickstart.py [--model-dir DIR] [--group-size 64] [--calib-samples 16] [--rtn]

The model is found at $AWQ_AO_MODEL (a folder holding the GGUF file) or
../shared/models, the calibration text at ../shared/data/wikitext-2/valid.txt
(beside the models folder). The calibration budget is small here (16 x 256
tokens) to keep the example quick; benchmarks/eval_ppl.py runs the full one.
--rtn skips calibration (round-to-nearest).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import awq_ao

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", default=os.environ.get("AWQ_AO_MODEL", os.path.join(HERE, "..", "shared", "models")))
    parser.add_argument("--group-size", type=int, default=64, help="576 (SmolLM2's hidden size) is not a multiple of 128")
    parser.add_argument("--prompt", default="The capital of France is")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--out", default="/tmp/smollm2-awq-int4", help="quantized directory (overwritten)")
    parser.add_argument("--calib-samples", type=int, default=16)
    parser.add_argument("--rtn", action="store_true", help="no calibration: round-to-nearest")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.model_dir, GGUF)):
        raise SystemExit(f"error: {GGUF} not found in {args.model_dir}; set AWQ_AO_MODEL or pass --model-dir")

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.model_dir, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, gguf_file=GGUF, dtype=torch.float32).eval()
    config = awq_ao.awq_config(bits=4, group_size=args.group_size)
    text = os.path.join(args.model_dir, "..", "data", "wikitext-2", "valid.txt")
    if not args.rtn:
        if not os.path.isfile(text):
            raise SystemExit(f"error: calibration text {text} not found; pass --rtn to skip calibration")
        start = time.perf_counter()
        awq_ao.calibrate(model, awq_ao.samples_from_text(text, tok, args.calib_samples, 256), config)
        print(f"AWQ calibration on {args.calib_samples} x 256 tokens (fp32): {time.perf_counter() - start:.0f} s")
    model.to(torch.bfloat16)  # bf16: the dtype of the CPU int4 kernel
    awq_ao.quantize_(model, config)
    print(model.model.layers[0].self_attn.q_proj.weight)

    ids = tok(args.prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        compiled = torch.compile(model, fullgraph=True)
        eager_logits = model(ids).logits
        compiled_logits = compiled(ids).logits
        drift = ((compiled_logits - eager_logits).float().norm() / eager_logits.float().norm()).item()
        print(f"torch.compile(fullgraph=True) forward: relative difference to eager {drift:.3g} (bf16 rounding order)")

    awq_ao.save_quantized(model, args.out, tokenizer=tok, overwrite=True)
    size = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out)) / 2**20
    print(f"saved {args.out} ({size:.1f} MiB)")

    from awq_ao.generate import compile_decode, generate, until_eos
    from awq_ao.models.decode_prep import prepare_for_decode

    fast = prepare_for_decode(awq_ao.load_quantized(args.out, kind="gpt-fast"))
    step = compile_decode("cpu")
    fast.setup_caches(1, ids.shape[1] + args.max_new_tokens)
    start = time.perf_counter()
    generate(fast, ids, 4, decode_fn=step)
    print(f"reloaded into the gpt-fast-style model; decode step compiled in {time.perf_counter() - start:.0f} s")
    out, stats = generate(fast, ids, args.max_new_tokens, decode_fn=step, skip_guards=True, eos_id=tok.eos_token_id)
    ids = out[0].tolist()
    print(tok.decode(ids[: stats.prompt_tokens] + until_eos(ids[stats.prompt_tokens:], tok.eos_token_id),
                     skip_special_tokens=True))
    print(f"{stats.new_tokens} tokens, {stats.decode_tokens_per_s:.1f} tok/s (compiled static-cache decode, bf16 int4)")


if __name__ == "__main__":
    main()
