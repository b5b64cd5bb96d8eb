"""The user's flow on a GPU: quantize_ a (tiny, random) Llama, compile it, generate; compiled against eager.

    python benchmarks/model_check.py                  # on a CUDA machine (a step of device_check.sh)
    python benchmarks/model_check.py --device cpu     # dry run: the CPU path, Inductor on the CPU

gpu_check.py compiles one Linear; this compiles whole models, the way the README tells users to:

1. transformers: ``calibrate_and_quantize`` (AWQ on random token ids, fp32, then int4 group 64 in bf16) of a
   2-block Llama, greedy
   ``generate()`` eager, then with a static cache and the decode step compiled (fullgraph; CUDA graphs on
   CUDA). The prompt's logits match the dequantized model's, and the compiled new tokens follow the eager
   ones (below);
2. awq_ao's gpt-fast model from the same weights: ``prepare_for_decode``, ``compile_decode``, generate;
   a second generate with recompiles forbidden; tokens against the eager decode (below).

Compiled against eager: a random model's logits are nearly flat, so a different bf16 rounding order (Inductor's
fusions, another kernel) can flip a near-tie, and every token after a flip differs (the H200 run of 2026-11-28
agreed on 38% and 25% of new tokens). Up to and including the first new token where the two differ, both ran on
the same tokens: there the compiled pick must be a near-tie under the eager model's logits for that sequence
(teacher-forced, one forward pass), within ``TIE_TOL`` of the logits' root mean square of its best. A broken
kernel picks tokens about two root mean squares below the best (``divergence_margin``).

One ok / FAIL line per check; exits non-zero on any failure (or exception).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import torch

import awq_ao
from awq_ao import AWQInt4Tensor
from awq_ao import generate as gen
from awq_ao.kernels.configs import relative_error
from awq_ao.models import from_hf_model
from awq_ao.models.decode_prep import prepare_for_decode

PROMPT, NEW_TOKENS = 12, 16
# Largest logit gap (in root mean squares of that position's logits) between the eager pick and the compiled pick
# at their first difference: bf16 logits of two kernel paths differ by ~0.4% of their norm (the prompt-logits
# line), ~1.5% at the largest of 512 entries, ~3% between two of them.
TIE_TOL = 0.05


def tiny_llama(device: torch.device) -> torch.nn.Module:
    """A 2-block random LlamaForCausalLM (GQA 8 / 2 heads), AWQ-calibrated in fp32 on ``device`` with random
    token ids, then cast to bf16 and quantized (int4, group 64): ``calibrate_and_quantize``, the README's flow."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=512, hidden_size=512, intermediate_size=1024, num_hidden_layers=2,
                      num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=128)
    model = LlamaForCausalLM(cfg).to(device).eval()
    data = torch.randint(3, 512, (8, 64), generator=torch.Generator().manual_seed(2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        awq_ao.calibrate_and_quantize(model, awq_ao.awq_config(bits=4, group_size=64), data, torch.bfloat16,
                                      progress=False)
    return model


def dequantized_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's logits with every int4 weight swapped for its dequantized bf16 copy (then put back)."""
    swapped = []
    for mod in model.modules():
        w = getattr(mod, "weight", None)
        if isinstance(w, AWQInt4Tensor):
            swapped.append((mod, w))
            mod.weight = torch.nn.Parameter(w.effective_weight(), requires_grad=False)
    try:
        return model(x).logits
    finally:
        for mod, w in swapped:
            mod.weight = w


def new_token_agreement(out: torch.Tensor, ref: torch.Tensor) -> float:
    """The share of generated positions (after the prompt) where ``out`` and ``ref`` [1, PROMPT + n] agree."""
    return (out[:, PROMPT:] == ref[:, PROMPT:]).float().mean().item()


def divergence_margin(out: torch.Tensor, ref: torch.Tensor, ref_logits: torch.Tensor) -> tuple[int, float]:
    """Where ``out`` first leaves ``ref`` (token ids [1, PROMPT + n]) and by how much: (new-token index, the gap
    between the logits of ref's and out's tokens there in root mean squares of that position's logits), or
    (n, 0.0) if they agree. ``ref_logits`` [1, PROMPT + n, vocab]: a forward pass over ``ref``."""
    differ = (out[0, PROMPT:] != ref[0, PROMPT:]).nonzero()
    if differ.numel() == 0:
        return out.shape[1] - PROMPT, 0.0
    step = int(differ[0])
    row = ref_logits[0, PROMPT + step - 1].float()  # the logits that predict new token ``step``
    gap = row[ref[0, PROMPT + step]] - row[out[0, PROMPT + step]]
    return step, (gap / row.square().mean().sqrt()).item()


def follows_eager(flow: str, out: torch.Tensor, ref: torch.Tensor, ref_logits: torch.Tensor) -> tuple[str, bool]:
    """The check line of a compiled ``out`` against the eager ``ref`` (``divergence_margin``, ``TIE_TOL``)."""
    step, gap = divergence_margin(out, ref, ref_logits)
    where = ("on every new token" if step == out.shape[1] - PROMPT else
             f"up to new token {step}, a near-tie there (gap {gap:.3f} rms of the logits, at most {TIE_TOL})")
    return (f"{flow} agrees with eager {where}; {new_token_agreement(out, ref):.0%} of new tokens agree",
            gap <= TIE_TOL)


def check_transformers(model, x) -> list[tuple[str, bool]]:
    from transformers import GenerationConfig
    from transformers.generation import CompileConfig

    with torch.no_grad():
        err = relative_error(model(x).logits, dequantized_logits(model, x).float())
        eager = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=NEW_TOKENS,
                               min_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0)
        compile_config = CompileConfig(fullgraph=True, mode="reduce-overhead" if x.is_cuda else "default")
        compile_config._compile_all_devices = True  # transformers compiles only on GPUs unless told
        config = GenerationConfig(cache_implementation="static", max_new_tokens=NEW_TOKENS,
                                  min_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0,
                                  compile_config=compile_config)
        torch._dynamo.utils.counters.clear()
        compiled = model.generate(x, attention_mask=torch.ones_like(x), generation_config=config)
        eager_logits = model(eager).logits
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    label, ok = follows_eager(f"transformers: compiled generate() ({graphs} graphs)", compiled, eager, eager_logits)
    return [(f"transformers: prompt logits vs the dequantized model, rel err {err:.2e}", err < 2e-2),
            (label, graphs >= 1 and ok)]


def check_gpt_fast(hf_model, x) -> list[tuple[str, bool]]:
    model = prepare_for_decode(from_hf_model(hf_model))
    step = gen.compile_decode(x.device.type)
    eager, _ = gen.generate(model, x, NEW_TOKENS)
    model.setup_caches(1, PROMPT + NEW_TOKENS)
    gen.generate(model, x, NEW_TOKENS, decode_fn=step)  # compiles (and captures, on CUDA)
    with torch.compiler.set_stance("fail_on_recompile"):
        compiled, stats = gen.generate(model, x, NEW_TOKENS, decode_fn=step)
    with torch.no_grad():
        eager_logits = model(eager)
    label, ok = follows_eager("gpt-fast: compiled decode, no recompile on the second generate,", compiled, eager,
                              eager_logits)
    return [(f"{label} ({stats.decode_tokens_per_s:.0f} tok/s)", ok)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    device = torch.device(parser.parse_args(argv).device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("model_check: no CUDA device here (use --device cpu for a dry run)", file=sys.stderr)
        return 2
    start = time.perf_counter()
    model = tiny_llama(device)
    x = torch.randint(3, 512, (1, PROMPT), generator=torch.Generator().manual_seed(1)).to(device)
    failures = 0
    for name, check in (("transformers", check_transformers), ("gpt-fast", check_gpt_fast)):
        try:
            results = check(model, x)
        except Exception as exc:  # one failing flow: report it, run the other
            results = [(f"{name}: {type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}", False)]
        for label, ok in results:
            print(f"{'ok  ' if ok else 'FAIL'} {label}", flush=True)
            failures += not ok
    print(f"model checks: {failures} failed ({time.perf_counter() - start:.0f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
