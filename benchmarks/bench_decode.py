"""Decode speed on the shared SmolLM2-135M: batch 1, a fixed prompt, 128 new tokens, medians of interleaved rounds.

    python benchmarks/bench_decode.py                     # CPU, all rows, 5 rounds
    python benchmarks/bench_decode.py --device cuda       # the same table on a GPU
    python benchmarks/bench_decode.py --out benchmarks/results/decode_cpu.md --profile

Rows (each compiled once and warmed up before the timed rounds; every round
runs every row once, so machine noise hits all rows alike):

* transformers fp32, eager ``generate()`` (dynamic cache): the reference;
* transformers + torchao int4 weight-only (``PrototypeInt4WeightOnlyConfig(group_size=64)``
  on CPU, ``Int4WeightOnlyConfig`` on CUDA), bf16, ``generate()`` with a static
  cache and its decode step compiled (``CompileConfig``): the PyTorch-native
  alternative users have today;
* awq_ao's gpt-fast-style model compiled: fp32, bf16, AWQ int4 (calibrated on
  wikitext-2 valid.txt with a small budget), and AWQ int4 with an int8 lm_head.

tok/s counts the 128 new tokens over the whole call, prefill included (as
gpt-fast does); GB/s is weight bytes read per token (``weight_bytes_per_token``)
times tok/s.
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # machine.py
from machine import cpu_description  # noqa: E402

SHARED = os.environ.get("AWQ_AO_SHARED", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared"))
PROMPT = "The history of the city of Paris begins"


@dataclass
class Row:
    name: str
    run: Callable[[], float]  # seconds for one 128-token generation
    weight_bytes: int
    times: list = field(default_factory=list)


def _ours_row(name, model, prompt, new_tokens, compile_mode):
    from awq_ao.generate import compile_decode, generate, weight_bytes_per_token

    weight_bytes = weight_bytes_per_token(model)
    decode = compile_decode(prompt.device.type) if compile_mode else None
    kwargs = {"decode_fn": decode} if decode else {}
    model.setup_caches(1, prompt.shape[1] + new_tokens)
    generate(model, prompt, new_tokens, **kwargs)  # compile + warm up at the final cache size

    def run():
        _, stats = generate(model, prompt, new_tokens, skip_guards=bool(decode), **kwargs)
        return stats.prefill_s + stats.decode_s

    return Row(name, run, weight_bytes)


def _hf_row(name, hf_model, prompt, new_tokens, static_compiled):
    from transformers import GenerationConfig
    from transformers.generation import CompileConfig

    from awq_ao.generate import weight_bytes_per_token

    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    if static_compiled:
        compile_config = CompileConfig(fullgraph=True, mode="reduce-overhead" if prompt.device.type == "cuda"
                                       else "default")
        compile_config._compile_all_devices = True  # transformers compiles only on GPUs unless told
        kwargs["generation_config"] = GenerationConfig(
            cache_implementation="static", max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
            compile_config=compile_config,
            pad_token_id=hf_model.generation_config.pad_token_id or hf_model.generation_config.eos_token_id,
        )
        kwargs = {"generation_config": kwargs["generation_config"]}
    mask = torch.ones_like(prompt)

    def run():
        if prompt.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = hf_model.generate(prompt, attention_mask=mask, **kwargs)
        if prompt.device.type == "cuda":
            torch.cuda.synchronize()
        assert out.shape[1] == prompt.shape[1] + new_tokens, out.shape
        return time.perf_counter() - start

    run()  # compile (static rows) / warm up
    run()
    return Row(name, run, weight_bytes_per_token(hf_model))


def build_rows(args, device) -> list[Row]:
    import awq_ao
    from awq_ao.models.decode_prep import prepare_for_decode
    from awq_ao.models.loading import from_hf_model, load_hf_model

    path = os.path.join(args.shared, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
    rows = []
    hf32, tokenizer = load_hf_model(path, torch.float32)
    hf32.to(device)
    prompt = torch.tensor([tokenizer.encode(PROMPT)], device=device)
    new = args.new_tokens
    rows.append(_hf_row("transformers fp32, eager generate()", hf32, prompt, new, static_compiled=False))
    print(f"[setup] {rows[-1].name}", flush=True)

    ours32 = copy.deepcopy(from_hf_model(hf32))
    rows.append(_ours_row("awq_ao model fp32, compiled", prepare_for_decode(ours32), prompt, new, True))
    print(f"[setup] {rows[-1].name}", flush=True)
    ours16 = from_hf_model(copy.deepcopy(hf32).to(torch.bfloat16))
    rows.append(_ours_row("awq_ao model bf16, compiled", prepare_for_decode(ours16), prompt, new, True))
    print(f"[setup] {rows[-1].name}", flush=True)

    hf_awq = copy.deepcopy(hf32).to(torch.bfloat16).cpu()
    label, data = "RTN", None
    if not args.rtn:
        data = awq_ao.samples_from_text(os.path.join(args.shared, "data", "wikitext-2", "valid.txt"), tokenizer,
                                        n_samples=args.calib_samples, seq_len=args.calib_seq_len)
        label = "AWQ"
    awq_ao.calibrate_and_quantize(hf_awq, awq_ao.awq_config(bits=4, group_size=64), data, progress=False)
    hf_awq.to(device)
    for int8_head in (False, True):
        model = from_hf_model(copy.deepcopy(hf_awq))
        name = f"awq_ao model {label} int4 g64 bf16, compiled" + (", int8 lm_head" if int8_head else "")
        rows.append(_ours_row(name, prepare_for_decode(model, int8_lm_head=int8_head), prompt, new, True))
        print(f"[setup] {name}", flush=True)
    hf_awq_generate = hf_awq  # transformers' own generate() on the awq_ao-quantized model
    rows.append(_hf_row(f"transformers + awq_ao {label} int4 g64 bf16, static cache, compiled generate()",
                        hf_awq_generate, prompt, new, static_compiled=True))
    print(f"[setup] {rows[-1].name}", flush=True)

    if not args.no_torchao:  # last: its handler changes global inductor settings
        from torchao.quantization import quantize_ as torchao_quantize_

        hf_ao = copy.deepcopy(hf32).to(torch.bfloat16)
        if device.type == "cuda":
            from torchao.quantization import Int4WeightOnlyConfig

            ao_config = Int4WeightOnlyConfig(group_size=64)
        else:
            from torchao.prototype.quantization.int4.inference_workflow import PrototypeInt4WeightOnlyConfig

            ao_config = PrototypeInt4WeightOnlyConfig(group_size=64)
        torchao_quantize_(hf_ao, ao_config, filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and
                          not fqn.endswith("lm_head"))
        rows.append(_hf_row("transformers + torchao int4 g64 bf16, static cache, compiled generate()", hf_ao,
                            prompt, new, static_compiled=True))
        print(f"[setup] {rows[-1].name}", flush=True)
    return rows


def profile_step(args, device) -> str:
    """Profiler table of 20 compiled decode steps of the AWQ int4 model (self CPU time)."""
    import awq_ao
    from awq_ao.generate import compile_decode, generate
    from awq_ao.models.decode_prep import prepare_for_decode
    from awq_ao.models.loading import from_hf_model, load_hf_model

    torch._inductor.config.cpp.enable_kernel_profile = True
    hf, tokenizer = load_hf_model(os.path.join(args.shared, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"),
                                  torch.bfloat16)
    awq_ao.calibrate_and_quantize(hf, awq_ao.awq_config(bits=4, group_size=64))  # round-to-nearest
    model = prepare_for_decode(from_hf_model(hf.to(device)), unwrap=not args.no_unwrap)
    prompt = torch.tensor([tokenizer.encode(PROMPT)], device=device)
    fn = compile_decode(device.type)
    model.setup_caches(1, prompt.shape[1] + args.new_tokens)
    generate(model, prompt, 8, decode_fn=fn)
    token = torch.full((1, 1), int(prompt[0, -1]), dtype=torch.long, device=device)  # strides as sample() gives
    pos = torch.tensor([prompt.shape[1]], device=device)
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), torch.compiler.set_stance(skip_guard_eval_unsafe=True):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(20):
                fn(model, token, pos, 0.0, None)  # the exact call generate() makes
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--rtn", action="store_true", help="round-to-nearest instead of calibrating (same kernels)")
    p.add_argument("--calib-samples", type=int, default=16)
    p.add_argument("--calib-seq-len", type=int, default=256)
    p.add_argument("--no-torchao", action="store_true")
    p.add_argument("--profile", action="store_true", help="also print a profile of one AWQ decode step")
    p.add_argument("--profile-only", action="store_true", help="only the profile (appended to --out)")
    p.add_argument("--no-unwrap", action="store_true",
                   help="profile with the int4 weights left as tensor subclasses (guard cost comparison)")
    p.add_argument("--shared", default=SHARED)
    p.add_argument("--out", default=None, help="write the markdown table (and profile) here")
    args = p.parse_args()
    if not os.path.isfile(os.path.join(args.shared, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")):
        print(f"no SmolLM2 GGUF under {args.shared}/models: set AWQ_AO_SHARED", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    if args.profile_only:
        args.profile, args.rounds = True, 0
    rows = [] if args.profile_only else build_rows(args, device)
    for r in range(args.rounds):
        for row in rows:
            row.times.append(row.run())
            gc.collect()
        print(f"[round {r + 1}/{args.rounds}] " + ", ".join(f"{args.new_tokens / t:.1f}" for t in
                                                             (row.times[-1] for row in rows)), flush=True)
    base = statistics.median(args.new_tokens / t for t in rows[0].times) if rows else 1.0
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_description()
    lines = [
        f"SmolLM2-135M-Instruct, batch 1, {args.new_tokens} new tokens after a {len(PROMPT.split())}-word prompt, "
        f"{device.type} ({where}), torch {torch.__version__}, {time.strftime('%Y-%m-%d')}. "
        f"Median of {args.rounds} interleaved rounds (min-max in brackets). "
        f"Command: `python benchmarks/bench_decode.py{' --device ' + args.device if args.device != 'cpu' else ''}"
        f"{' --rtn' if args.rtn else ''}`.",
        "",
        "| row | tok/s | vs transformers fp32 eager | weights read per token | GB/s |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        rates = [args.new_tokens / t for t in row.times]
        med = statistics.median(rates)
        lines.append(f"| {row.name} | {med:.1f} ({min(rates):.1f}-{max(rates):.1f}) | {med / base:.2f}x | "
                     f"{row.weight_bytes / 2**20:.1f} MiB | {row.weight_bytes * med / 1e9:.2f} |")
    table = "\n".join(lines)
    print(table)
    if args.out and rows:
        with open(args.out, "w") as f:
            f.write(table + "\n")
    if args.profile:
        prof = profile_step(args, device)
        print(prof)
        if args.out:
            with open(args.out, "a") as f:
                flags = " --no-unwrap" if args.no_unwrap else ""
                f.write(f"\nProfile of 20 compiled decode steps (RTN int4 g64 bf16, prepare_for_decode"
                        f"{'(unwrap=False)' if args.no_unwrap else ''}; self CPU time; "
                        f"`python benchmarks/bench_decode.py --profile-only{flags} --out {args.out}`):"
                        "\n\n```\n" + prof + "\n```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
