"""Helpers for the tests: tolerances, tiny random models, the shared assets folder."""

import copy
import os
import sys

import pytest
import torch
from torch import nn

from awq_ao import AWQInt4Tensor

HAS_CUDA = torch.cuda.is_available()


def benchmark_module(name: str):
    """Import benchmarks/<name>.py (the benchmarks are scripts, not a package)."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # (a script's dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


def shared_dir() -> str:
    """The read-only assets folder: $AWQ_AO_SHARED, else ../shared beside the repo."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.environ.get("AWQ_AO_SHARED", os.path.join(here, "..", "shared"))


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    """||y - ref|| / ||ref||, computed in float64."""
    y, ref = y.double(), ref.double()
    return ((y - ref).norm() / ref.norm().clamp(min=1e-30)).item()


def quantized_case(dtype, m, n, k, group, with_pre, seed=0):
    """A random int4 linear and its float64 product: (x [m, k], packed qdata, scale, zero, pre or None, expected
    [m, n] = (x * pre, rounded to ``dtype`` as the kernels round it) @ dequantize(W).T)."""
    from awq_ao import quant

    gen = torch.Generator().manual_seed(seed)
    q, scale, zero = quant.quantize(torch.randn(n, k, generator=gen), 4, group, scale_dtype=dtype)
    x = torch.randn(m, k, generator=gen).to(dtype)
    pre = (torch.rand(k, generator=gen) + 0.5).to(dtype) if with_pre else None
    xs = x.double() if pre is None else (x.float() * pre.float()).to(dtype).double()
    expected = xs @ quant.dequantize(q, scale, zero, group, k, torch.float64).T
    return x, quant.pack_int4(q), scale, zero, pre, expected


def tiny_llama(dtype=torch.float32, tie=True, hidden=96, inter=160):
    """A 2-layer random LlamaForCausalLM (GQA 6 heads / 2 KV heads)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=256, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=2,
        num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=128,
        tie_word_embeddings=tie,
    )
    return LlamaForCausalLM(cfg).to(dtype).eval(), cfg


def dequantized_copy(model: nn.Module, dtype=None) -> nn.Module:
    """A float copy of a quantized model: every AWQInt4Tensor weight dequantized.

    act_pre_scale is folded into the dequantized weight's columns. With ``dtype``, every floating-point
    parameter and buffer is then cast to it (parameter by parameter: transformers refuses ``.float()`` on a
    model loaded from GGUF).
    """
    ref = copy.deepcopy(model)
    for mod in ref.modules():
        w = getattr(mod, "weight", None)
        if isinstance(w, AWQInt4Tensor):
            mod.weight = nn.Parameter(w.effective_weight(), requires_grad=False)
    if dtype is not None:
        for mod in ref.modules():
            for p in mod.parameters(recurse=False):
                p.data = p.data.to(dtype) if p.is_floating_point() else p.data
            for name, b in list(mod.named_buffers(recurse=False)):
                if b.is_floating_point():
                    setattr(mod, name, b.to(dtype))
    return ref


def tiny(arch: str, dtype=torch.float32, **config):
    """A 2-block random model of ``arch`` (GQA where the architecture has it); ``config`` overrides."""
    import transformers as tf

    torch.manual_seed(0)
    common = dict(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=128)
    if arch == "opt":
        cfg = tf.OPTConfig(vocab_size=256, hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                           num_attention_heads=4, max_position_embeddings=128, word_embed_proj_dim=64)
        model = tf.OPTForCausalLM(cfg)
    else:
        config_cls, model_cls = {
            "llama": (tf.LlamaConfig, tf.LlamaForCausalLM),
            "mistral": (tf.MistralConfig, tf.MistralForCausalLM),
            "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM),
            "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM),
        }[arch]
        extra = {"head_dim": 16} if arch == "qwen3" else {}
        cfg = config_cls(**{"intermediate_size": 128, "num_key_value_heads": 2, **common, **extra, **config})
        model = model_cls(cfg)
    with torch.no_grad():  # non-trivial norms so folding has something to change
        for name, p in model.named_parameters():
            if "norm" in name and p.dim() == 1:
                p.copy_(torch.rand_like(p) + 0.5)
    return model.to(dtype).eval()


def word_tokenizer(vocab_size: int = 256):
    """A word-level ``PreTrainedTokenizerFast`` over ``w0 .. w{n-4}`` plus <unk>, <s>, </s>, built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i + 3 for i in range(vocab_size - 3)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def compiled_in_child(body: str, lines: int) -> list[str]:
    """Run ``body`` (Python; ``r`` is benchmarks/compile_report.py, ``KernelConfig`` imported) in a child process
    without TRITON_INTERPRET, so kernels compile for sm_90 here; its last ``lines`` lines of output. Skips where
    this Triton build has no sm_90 toolchain."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(__file__))
    code = ("import re, sys; sys.path.insert(0, 'benchmarks'); import compile_report as r\n"
            "from awq_ao.kernels import KernelConfig\n" + body)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    if run.returncode != 0 and ("ptxas" in run.stderr or "backend" in run.stderr):
        pytest.skip("no sm_90 toolchain in this Triton build")
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.strip().splitlines()[-lines:]


class KernelRecorder:
    """Stands in for a Triton kernel: ``kernel[grid](*args, **kwargs)`` appends (name, kwargs) to ``calls``."""

    def __init__(self, name, calls: list):
        self.name, self.calls = name, calls

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.calls.append((self.name, kwargs))
