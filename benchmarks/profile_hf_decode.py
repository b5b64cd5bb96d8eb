"""Where transformers' own compiled ``generate()`` spends a token on the shared SmolLM2-135M, int4 weights on CPU.

    python benchmarks/profile_hf_decode.py                 # awq_ao (RTN), awq_ao unwrapped, torchao: one process each
    python benchmarks/profile_hf_decode.py > benchmarks/results/profile_hf_decode_amd_epyc.md

For each variant (``awq_ao``: ``quantize_(model, awq_config(group_size=64))`` round-to-nearest; ``awq_ao
unwrapped``: the same with ``unwrap_weights``; ``torchao``: ``PrototypeInt4WeightOnlyConfig(group_size=64)``, the
lm_head left in bf16 as in bench_decode.py) it runs ``generate()`` with a static cache and its decode step compiled,
64 new tokens, prints the median tok/s of 3 runs, then profiles one run and prints per token the self CPU time of
the int4 matmuls, Dynamo's guard check ("TorchDynamo Cache Lookup"), the compiled graph's wrapper and the lm_head.
Each variant runs in a child process (torchao's handler changes global inductor settings), one after the other:
the tok/s are not interleaved as bench_decode.py's are, so compare the per-token parts, not the speeds.
"""

from __future__ import annotations

import copy
import os
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # machine.py
from machine import cpu_description  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SHARED = os.environ.get("AWQ_AO_SHARED", os.path.join(ROOT, "..", "shared"))
VARIANTS = ("awq_ao", "awq_ao unwrapped", "torchao")
NEW_TOKENS = 64
ROWS = {"int4 matmuls": "aten::_weight_int4pack_mm_for_cpu", "guard check": "TorchDynamo Cache Lookup",
        "lm_head (aten::mm)": "aten::mm"}


def quantized_model(variant: str):
    sys.path.insert(0, ROOT)
    import awq_ao
    from awq_ao.models.decode_prep import unwrap_weights
    from awq_ao.models.loading import load_hf_model

    hf, tokenizer = load_hf_model(os.path.join(SHARED, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"), torch.float32)
    model = copy.deepcopy(hf).to(torch.bfloat16)
    if variant.startswith("awq_ao"):
        awq_ao.quantize_(model, awq_ao.awq_config(bits=4, group_size=64))
        if variant == "awq_ao unwrapped":
            unwrap_weights(model)
    else:
        from torchao.prototype.quantization.int4.inference_workflow import PrototypeInt4WeightOnlyConfig
        from torchao.quantization import quantize_

        quantize_(model, PrototypeInt4WeightOnlyConfig(group_size=64),
                  filter_fn=lambda mod, fqn: isinstance(mod, torch.nn.Linear) and not fqn.endswith("lm_head"))
    return model, tokenizer


def profile_variant(variant: str) -> None:
    from torch.profiler import ProfilerActivity, profile
    from transformers import GenerationConfig
    from transformers.generation import CompileConfig

    model, tokenizer = quantized_model(variant)
    prompt = torch.tensor([tokenizer.encode("The history of the city of Paris begins")])
    compile_config = CompileConfig(fullgraph=True, mode="default")
    compile_config._compile_all_devices = True  # transformers compiles only on GPUs unless told
    config = GenerationConfig(cache_implementation="static", max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                              do_sample=False, pad_token_id=0, compile_config=compile_config)

    def run():
        model.generate(prompt, attention_mask=torch.ones_like(prompt), generation_config=config)

    with torch.no_grad():
        run()
        run()  # compiled, warm
        times = []
        for _ in range(3):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
    per_token = {e.key: e.self_cpu_time_total / 1e3 / NEW_TOKENS for e in prof.key_averages()}
    wrapper = sum(ms for key, ms in per_token.items() if key.startswith("## Call CompiledFxGraph"))
    cells = [f"{per_token.get(key, 0.0):.2f}" for key in ROWS.values()] + [f"{wrapper:.2f}"]
    print(f"| {variant} | {NEW_TOKENS / statistics.median(times):.1f} | " + " | ".join(cells) + " |", flush=True)


def main() -> int:
    if not os.path.exists(os.path.join(SHARED, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")):
        print(f"no SmolLM2-135M-Instruct.Q4_1.gguf under {SHARED}/models (set AWQ_AO_SHARED)", file=sys.stderr)
        return 1
    if len(sys.argv) > 1:
        profile_variant(sys.argv[1])
        return 0
    print(f"SmolLM2-135M-Instruct, transformers generate(), static cache, compiled, {NEW_TOKENS} new tokens, bf16, "
          f"torch {torch.__version__}, {cpu_description()}. Per token: self CPU time in ms under the profiler.\n")
    print("| weights | tok/s | " + " | ".join(ROWS) + " | compiled graph wrapper |")
    print("|---|---|" + "---|" * (len(ROWS) + 1), flush=True)
    for variant in VARIANTS:
        run = subprocess.run([sys.executable, os.path.abspath(__file__), variant], capture_output=True, text=True)
        lines = [line for line in run.stdout.splitlines() if line.startswith("| ")]
        print(lines[-1] if run.returncode == 0 and lines else f"| {variant} | failed: {run.stderr[-300:]!r} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
