"""gpt-fast-style generation: prefill, a compiled ``decode_one_token``, sampling without host syncs.

    python -m awq_ao.generate --checkpoint ../shared/models/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --prompt "The capital of France is" --quantize rtn --compile

The loop keeps every token on the device: sampling is ``argmax`` (greedy) or
``argmax(probs / Exponential(1))`` (an exact draw from ``probs`` with no
``torch.multinomial`` sync); the host looks at tokens only when an end-of-text
check is due (every ``eos_check_every`` tokens) and at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from awq_ao.formats.native import _DTYPES
from awq_ao.models.decode_prep import prepare_for_decode
from awq_ao.models.llama import Transformer
from awq_ao.tensor import AWQInt4Tensor


def logits_to_probs(logits: Tensor, temperature: float, top_k: Optional[int]) -> Tensor:
    """logits [B, vocab] -> probabilities [B, vocab] (fp32), top-k filtered."""
    logits = logits.float() / max(temperature, 1e-5)
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = torch.where(logits < kth, float("-inf"), logits)
    return torch.softmax(logits, dim=-1)


def sample(logits: Tensor, temperature: float = 0.0, top_k: Optional[int] = None) -> Tensor:
    """Next token [B, 1] (int64) from the last position's logits [B, S, vocab]; temperature 0 is greedy."""
    last = logits[:, -1]
    if temperature <= 0:
        return torch.argmax(last, dim=-1, keepdim=True)
    probs = logits_to_probs(last, temperature, top_k)
    noise = torch.empty_like(probs).exponential_(1)
    return torch.argmax(probs / noise, dim=-1, keepdim=True)


def prefill(model: Transformer, tokens: Tensor, input_pos: Tensor, temperature: float = 0.0,
            top_k: Optional[int] = None) -> Tensor:
    """Run the prompt tokens [B, S] at positions input_pos [S]; returns the first new token [B, 1]."""
    return sample(model(tokens, input_pos), temperature, top_k)


def decode_one_token(model: Transformer, token: Tensor, input_pos: Tensor, temperature: float = 0.0,
                     top_k: Optional[int] = None) -> Tensor:
    """One step: token [B, 1] at position input_pos [1] -> next token [B, 1]."""
    return sample(model(token, input_pos), temperature, top_k)


def compile_decode(device_type: str) -> Callable:
    """``decode_one_token`` compiled with ``fullgraph=True`` (and CUDA graphs on CUDA)."""
    mode = "reduce-overhead" if device_type == "cuda" else None
    return torch.compile(decode_one_token, fullgraph=True, mode=mode)


@dataclass
class GenerationStats:
    prompt_tokens: int
    new_tokens: int
    prefill_s: float
    decode_s: float

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens per second of the decode loop (after the first token, which prefill produced)."""
        return (self.new_tokens - 1) / self.decode_s if self.new_tokens > 1 and self.decode_s > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        """New tokens per second, prefill included (gpt-fast's figure)."""
        total = self.prefill_s + self.decode_s
        return self.new_tokens / total if total > 0 else 0.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def generate(model: Transformer, prompt: Tensor, max_new_tokens: int, *, temperature: float = 0.0,
             top_k: Optional[int] = None, decode_fn: Callable = decode_one_token,
             eos_id: Optional[int] = None, eos_check_every: int = 8,
             callback: Optional[Callable[[Tensor], None]] = None,
             skip_guards: bool = False) -> tuple[Tensor, GenerationStats]:
    """Generate up to ``max_new_tokens`` after ``prompt`` [B, S] (int64 ids on the model's device).

    Returns (prompt plus new tokens [B, S + n], stats). The KV cache is sized to
    ``S + max_new_tokens`` (set up again only when it is too small or the batch changes).
    With ``eos_id``, generation stops once every row has produced it (checked
    every ``eos_check_every`` tokens; tokens after a row's end are left as generated).
    ``skip_guards`` runs the decode loop under ``torch.compiler.set_stance(skip_guard_eval_unsafe=True)``
    (dynamo then checks only the guards that tell its compiled graphs apart): for a ``decode_fn``
    already compiled for this model and cache size. It is ignored when this call resizes the cache.
    """
    if prompt.ndim != 2 or prompt.shape[1] == 0:
        raise ValueError(f"prompt must be a non-empty [batch, length] tensor of token ids, got {tuple(prompt.shape)}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    batch, length = prompt.shape
    total = length + max_new_tokens
    cache = model.model.layers[0].self_attn.kv_cache
    if cache is None or cache.k.shape[0] != batch or model.max_seq_length < total:
        model.setup_caches(batch, total)
        skip_guards = False
    device = prompt.device
    _sync(device)
    start = time.perf_counter()
    token = prefill(model, prompt, torch.arange(length, device=device), temperature, top_k)
    _sync(device)
    prefill_s = time.perf_counter() - start
    new = [token]
    if callback is not None:
        callback(token)
    input_pos = torch.tensor([length], device=device, dtype=torch.long)
    stance = torch.compiler.set_stance(skip_guard_eval_unsafe=True) if skip_guards else contextlib.nullcontext()
    start = time.perf_counter()
    with stance:
        for i in range(1, max_new_tokens):
            if eos_id is not None and i % eos_check_every == 0 and bool((torch.cat(new, 1) == eos_id).any(1).all()):
                break
            token = decode_fn(model, token, input_pos, temperature, top_k).clone()  # CUDA graphs reuse outputs
            input_pos += 1
            new.append(token)
            if callback is not None:
                callback(token)
    _sync(device)
    decode_s = time.perf_counter() - start
    out = torch.cat([prompt, *new], dim=1)
    return out, GenerationStats(length, len(new), prefill_s, decode_s)


def until_eos(new_ids: list, eos_id: Optional[int]) -> list:
    """One row's new token ids before its first ``eos_id`` (``generate`` checks for the end every few tokens, so a
    row can hold tokens past it: with a chat model, the start of a next turn, which is not the answer)."""
    return new_ids[: new_ids.index(eos_id)] if eos_id is not None and eos_id in new_ids else new_ids


def weight_bytes_per_token(model: torch.nn.Module) -> int:
    """Bytes of weights one decode step reads: every weight once (tied ones once), of an input
    embedding only one row; an int4 weight counts its stored codes, scales, zeros and pre-scale
    (as saved: not the CPU kernel's derived copy); works before and after ``prepare_for_decode``."""
    from torch.nn.utils import parametrize

    from awq_ao.models.decode_prep import Int8Linear

    seen, total = set(), 0
    head = getattr(model, "lm_head", None)
    head_weight = getattr(head, "weight", None) if not isinstance(head, Int8Linear) else None
    for module in model.modules():
        if isinstance(module, parametrize.ParametrizationList):  # the unwrapped parts, counted via their owner
            continue
        if isinstance(module, Int8Linear):
            total += module.qweight.numel() + module.scale.numel() * module.scale.element_size()
            continue
        names = list(module._parameters)
        if parametrize.is_parametrized(module):
            names = [n for n in names if n not in module.parametrizations] + list(module.parametrizations)
        for name in names:
            p = getattr(module, name)
            if p is None:
                continue
            key = p.qdata.data_ptr() if isinstance(p, AWQInt4Tensor) else id(p)
            if key in seen:
                continue
            seen.add(key)
            if isinstance(p, AWQInt4Tensor):
                total += sum(t.numel() * t.element_size() for t in p.canonical().values())
            elif is_traceable_wrapper_subclass(p):  # another library's quantized weight: its inner tensors
                total += _inner_bytes(p)
            elif isinstance(module, torch.nn.Embedding) and p is not head_weight:
                total += p.shape[-1] * p.element_size()
            else:
                total += p.numel() * p.element_size()
    return total


def _inner_bytes(t: Tensor) -> int:
    if not is_traceable_wrapper_subclass(t):
        return t.numel() * t.element_size()
    names, _ = t.__tensor_flatten__()
    return sum(_inner_bytes(getattr(t, n)) for n in names if getattr(t, n) is not None)


def peak_memory_mib(device: torch.device) -> float:
    """Peak memory so far: CUDA allocator peak on CUDA, else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


DEFAULT_DTYPE = torch.bfloat16  # the fastest correct dtype on CPU (the int4 kernel's) and on CUDA


def encode_prompt(tokenizer, prompt: str, chat: bool) -> list[int]:
    if chat:
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("--chat: the tokenizer has no chat template")
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            tokenize=True)
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    return tokenizer.encode(prompt)


def quantize_model(checkpoint: str, dtype: torch.dtype, method: str, bits: int, group_size: int,
                   calibration_text: Optional[str], samples: int, seq_len: int):
    """Load ``checkpoint`` in transformers (fp32), calibrate (``awq``), cast to ``dtype``, quantize, convert."""
    import awq_ao
    from awq_ao.models.loading import from_hf_model, load_hf_model

    hf_model, tokenizer = load_hf_model(checkpoint, torch.float32)
    data = None
    if method == "awq":
        data = awq_ao.samples_from_text(calibration_text, tokenizer, n_samples=samples, seq_len=seq_len)
    awq_ao.calibrate_and_quantize(hf_model, awq_ao.awq_config(bits=bits, group_size=group_size), data, dtype)
    return from_hf_model(hf_model), tokenizer


_DTYPE_NAMES = {**_DTYPES, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m awq_ao.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True,
                   help="a transformers directory, a .gguf file, an awq_ao quantized directory or an AWQ GEMM directory")
    p.add_argument("--prompt", default="The capital of France is")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the tokenizer's chat template")
    p.add_argument("--compile", action="store_true", help="compile decode_one_token (fullgraph; CUDA graphs on CUDA)")
    p.add_argument("--quantize", choices=("none", "rtn", "awq"), default="none")
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--group-size", type=int, default=64)
    p.add_argument("--calibration-text", help="text file for --quantize awq (e.g. wikitext-2 valid.txt)")
    p.add_argument("--calibration-samples", type=int, default=32)
    p.add_argument("--calibration-seq-len", type=int, default=256)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=sorted(_DTYPE_NAMES), default=None,
                   help="default: bfloat16 (the int4 CPU kernel's dtype, and the fast one on CUDA)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-stop", action="store_true", help="do not stop at the end-of-text token")
    p.add_argument("--int8-lm-head", action="store_true",
                   help="int8 weight-only output head (faster; AWQ itself keeps lm_head in float)")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quantize == "awq" and not args.calibration_text:
        print("error: --quantize awq needs --calibration-text FILE (e.g. ../shared/data/wikitext-2/valid.txt)",
              file=sys.stderr)
        return 2
    from awq_ao.formats.directory import is_quantized_checkpoint
    from awq_ao.models.loading import load_checkpoint

    if args.quantize != "none" and is_quantized_checkpoint(args.checkpoint):
        print(f"error: {args.checkpoint} is already quantized; drop --quantize", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    dtype = _DTYPE_NAMES[args.dtype] if args.dtype else DEFAULT_DTYPE
    start = time.perf_counter()
    try:
        if args.quantize == "none":
            model, tokenizer = load_checkpoint(args.checkpoint, dtype, device)
        else:
            model, tokenizer = quantize_model(args.checkpoint, dtype, args.quantize, args.bits, args.group_size,
                                              args.calibration_text, args.calibration_samples,
                                              args.calibration_seq_len)
            model = model.to(device)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if tokenizer is None:
        print(f"error: no tokenizer found with {args.checkpoint}", file=sys.stderr)
        return 2
    print(f"loaded in {time.perf_counter() - start:.1f} s: {model.args.model_type}, {model.dtype}, {device}")
    prompt = torch.tensor([encode_prompt(tokenizer, args.prompt, args.chat)], device=device)
    prepare_for_decode(model, int8_lm_head=args.int8_lm_head, unwrap=args.compile)
    weight_bytes = weight_bytes_per_token(model)
    decode_fn = compile_decode(device.type) if args.compile else decode_one_token
    eos = None if args.no_stop else tokenizer.eos_token_id
    kwargs = dict(temperature=args.temperature, top_k=args.top_k, decode_fn=decode_fn)
    model.setup_caches(prompt.shape[0], prompt.shape[1] + args.max_new_tokens)  # sized once: no recompiles
    if args.compile:  # compile (and, on CUDA, capture graphs) outside the timed run
        start = time.perf_counter()
        generate(model, prompt, min(args.max_new_tokens, 4), **kwargs)
        print(f"compiled in {time.perf_counter() - start:.1f} s")
    out, stats = generate(model, prompt, args.max_new_tokens, eos_id=eos, skip_guards=args.compile, **kwargs)
    print(tokenizer.decode(until_eos(out[0, stats.prompt_tokens:].tolist(), eos), skip_special_tokens=True))
    gbps = weight_bytes * stats.decode_tokens_per_s / 1e9
    print(f"{stats.new_tokens} tokens, prefill {stats.prompt_tokens} tokens in {stats.prefill_s * 1e3:.0f} ms, "
          f"decode {stats.decode_tokens_per_s:.1f} tok/s ({stats.tokens_per_s:.1f} tok/s with prefill), "
          f"{gbps:.2f} GB/s of weights, peak memory {peak_memory_mib(device):.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
