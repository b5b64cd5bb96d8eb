"""A gpt-fast-style Transformer for the Llama family, with a static KV cache.

Llama, Mistral, Qwen2 (q/k/v bias) and Qwen3 (per-head q/k RMSNorm): RMSNorm,
rotary embeddings (default, linear and Llama-3 scaling), grouped-query
attention, SwiGLU, tied or untied embeddings.

Submodule names are transformers' own (``model.layers.0.self_attn.q_proj``,
``lm_head``...), so a transformers state dict, an awq_ao quantized checkpoint
and ``awq_ao.calibrate``'s mappings all apply to this model unchanged.

Two ways to call it:

* ``model(input_ids)`` (``input_pos=None``): plain causal attention over the
  given tokens, no cache; this is what calibration and perplexity use.
* ``model(input_ids, input_pos)`` after ``model.setup_caches(batch, max_len)``:
  writes keys/values at ``input_pos`` (LongTensor [S]) into the static cache
  and attends to everything written so far (prefill, then one token at a time).
  Shapes never change between decode steps, so a compiled step never recompiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


@dataclass
class ModelArgs:
    vocab_size: int
    dim: int
    n_layer: int
    n_head: int
    n_kv_head: int
    head_dim: int
    intermediate_size: int
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict = field(default_factory=dict)  # {"rope_type": "llama3"|"linear", ...}
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    qk_norm: bool = False
    sliding_window: Optional[int] = None
    model_type: str = "llama"

    @classmethod
    def from_hf_config(cls, config) -> "ModelArgs":
        """Arguments from a transformers config (``LlamaConfig``, ``Qwen2Config``...); refuses other models."""
        model_type = getattr(config, "model_type", None)
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"the gpt-fast-style model does not support model_type {model_type!r} "
                f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
            )
        if getattr(config, "hidden_act", "silu") != "silu":
            raise ValueError(f"the gpt-fast-style model supports hidden_act='silu' only, not {config.hidden_act!r}")
        if getattr(config, "mlp_bias", False):
            raise ValueError("the gpt-fast-style model does not support mlp_bias=True")
        rope = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
        theta = rope.pop("rope_theta", None) or getattr(config, "rope_theta", None) or 10000.0
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ("default", "linear", "llama3"):
            raise ValueError(f"rope_type {rope_type!r} is not supported (supported: default, linear, llama3)")
        if rope.get("partial_rotary_factor", 1.0) != 1.0:
            raise ValueError("partial_rotary_factor != 1 is not supported")
        heads = config.num_attention_heads
        sliding = getattr(config, "sliding_window", None)
        if model_type in ("qwen2", "qwen3") and not getattr(config, "use_sliding_window", False):
            sliding = None
        return cls(
            vocab_size=config.vocab_size,
            dim=config.hidden_size,
            n_layer=config.num_hidden_layers,
            n_head=heads,
            n_kv_head=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            intermediate_size=config.intermediate_size,
            norm_eps=config.rms_norm_eps,
            rope_theta=float(theta),
            rope_scaling={} if rope_type == "default" else {**rope, "rope_type": rope_type},
            max_position_embeddings=config.max_position_embeddings,
            tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
            qkv_bias=model_type == "qwen2" or bool(getattr(config, "attention_bias", False)),
            o_bias=model_type != "qwen2" and bool(getattr(config, "attention_bias", False)),
            qk_norm=model_type == "qwen3",
            sliding_window=sliding,
            model_type=model_type,
        )


def rope_inv_freq(args: ModelArgs) -> Tensor:
    """Inverse frequencies [head_dim / 2] (fp32), with linear or Llama-3 scaling applied."""
    dim = args.head_dim
    inv_freq = 1.0 / (args.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    kind = args.rope_scaling.get("rope_type", "default")
    if kind == "linear":
        return inv_freq / args.rope_scaling["factor"]
    if kind == "llama3":
        factor = args.rope_scaling["factor"]
        low, high = args.rope_scaling["low_freq_factor"], args.rope_scaling["high_freq_factor"]
        old_len = args.rope_scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        smooth = (old_len / wavelen - low) / (high - low)
        scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        return torch.where(medium, blended, scaled)
    return inv_freq


def rope_table(args: ModelArgs, length: int, device=None) -> Tensor:
    """cos and sin of every position, stacked: [2, length, head_dim] fp32 (transformers' half-split layout)."""
    positions = torch.arange(length, dtype=torch.float32, device=device)
    freqs = torch.outer(positions, rope_inv_freq(args).to(device))
    emb = torch.cat([freqs, freqs], dim=-1)
    return torch.stack([emb.cos(), emb.sin()])


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x [B, H, S, D]; cos, sin [S, D] in x's dtype."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class RMSNorm(nn.Module):
    """transformers' RMSNorm: normalise in fp32, cast back, then scale."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class KVCache(nn.Module):
    """Static cache [B, n_kv_head, max_len, head_dim] for one layer."""

    def __init__(self, batch: int, n_kv_head: int, max_len: int, head_dim: int, dtype: torch.dtype, device):
        super().__init__()
        shape = (batch, n_kv_head, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, input_pos: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v [B, n_kv_head, S, head_dim] at positions input_pos [S]; return the whole cache."""
        self.k.index_copy_(2, input_pos, k)
        self.v.index_copy_(2, input_pos, v)
        return self.k, self.v


def decode_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """One query position: q [B, H, 1, D] over the cache k, v [B, KV, T, D], mask [1, T] bool -> [B, H, 1, D].

    Written as broadcast products and sums in fp32, which inductor turns into
    two fused loops that read the cache once (query heads sharing a KV head
    are grouped, nothing is repeated); at one query this beats both SDPA's
    call and two small bf16 ``bmm`` calls on CPU.
    """
    b, h, _, d = q.shape
    kv = k.shape[1]
    qg = q.view(b, kv, h // kv, 1, d).float()
    scores = (qg * k[:, :, None].float()).sum(-1) * d**-0.5  # [B, KV, G, T]
    probs = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    y = (probs[..., None] * v[:, :, None].float()).sum(-2)  # [B, KV, G, D]
    return y.view(b, h, 1, d).to(q.dtype)


def concat_linears(linears: list[nn.Linear]) -> nn.Linear:
    """One linear computing ``cat([l(x) for l in linears], -1)``; float or ``AWQInt4Tensor`` weights."""
    from awq_ao.tensor import AWQInt4Tensor

    weights = [lin.weight for lin in linears]
    if all(isinstance(w, AWQInt4Tensor) for w in weights):
        weight = AWQInt4Tensor.concat_rows(weights)
    elif not any(isinstance(w, AWQInt4Tensor) for w in weights):
        weight = torch.cat([w.detach() for w in weights])
    else:
        raise ValueError("cannot fuse quantized and float projections")
    biases = [lin.bias for lin in linears]
    fused = nn.Linear(weight.shape[1], weight.shape[0], bias=biases[0] is not None, device="meta")
    fused.weight = nn.Parameter(weight, requires_grad=False)
    if biases[0] is not None:
        fused.bias = nn.Parameter(torch.cat([b.detach() for b in biases]), requires_grad=False)
    return fused


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = args.n_head, args.n_kv_head, args.head_dim
        q_dim, kv_dim = args.n_head * args.head_dim, args.n_kv_head * args.head_dim
        self.q_proj = nn.Linear(args.dim, q_dim, bias=args.qkv_bias)
        self.k_proj = nn.Linear(args.dim, kv_dim, bias=args.qkv_bias)
        self.v_proj = nn.Linear(args.dim, kv_dim, bias=args.qkv_bias)
        self.o_proj = nn.Linear(q_dim, args.dim, bias=args.o_bias)
        if args.qk_norm:
            self.q_norm = RMSNorm(args.head_dim, args.norm_eps)
            self.k_norm = RMSNorm(args.head_dim, args.norm_eps)
        self.kv_cache: Optional[KVCache] = None

    def fuse(self) -> None:
        """Replace q/k/v_proj by one ``qkv_proj`` (one matmul per step; the state dict changes)."""
        if hasattr(self, "qkv_proj"):
            return
        self.qkv_proj = concat_linears([self.q_proj, self.k_proj, self.v_proj])
        del self.q_proj, self.k_proj, self.v_proj

    def forward(self, x: Tensor, rope: Tensor, mask: Optional[Tensor], input_pos: Optional[Tensor]) -> Tensor:
        """x [B, S, dim]; rope [2, S, head_dim] (x's dtype); mask [S, T] bool or None (causal)."""
        b, s, _ = x.shape
        if hasattr(self, "qkv_proj"):
            q_dim, kv_dim = self.n_head * self.head_dim, self.n_kv_head * self.head_dim
            q, k, v = self.qkv_proj(x).split([q_dim, kv_dim, kv_dim], dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.view(b, s, self.n_head, self.head_dim)
        k = k.view(b, s, self.n_kv_head, self.head_dim)
        v = v.view(b, s, self.n_kv_head, self.head_dim)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        q, k = apply_rope(q, rope[0], rope[1]), apply_rope(k, rope[0], rope[1])
        if input_pos is not None:
            k, v = self.kv_cache.update(input_pos, k, v)
            if s == 1:
                y = decode_attention(q, k, v, mask)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[None, None],
                                                   enable_gqa=self.n_head != self.n_kv_head)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.n_head != self.n_kv_head)
        return self.o_proj(y.transpose(1, 2).reshape(b, s, self.n_head * self.head_dim))


class FeedForward(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.gate_proj = nn.Linear(args.dim, args.intermediate_size, bias=False)
        self.up_proj = nn.Linear(args.dim, args.intermediate_size, bias=False)
        self.down_proj = nn.Linear(args.intermediate_size, args.dim, bias=False)

    def fuse(self) -> None:
        """Replace gate/up_proj by one ``gate_up_proj`` (the state dict changes)."""
        if hasattr(self, "gate_up_proj"):
            return
        self.gate_up_proj = concat_linears([self.gate_proj, self.up_proj])
        del self.gate_proj, self.up_proj

    def forward(self, x: Tensor) -> Tensor:
        if hasattr(self, "gate_up_proj"):
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(F.silu(gate) * up)


class TransformerBlock(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.input_layernorm = RMSNorm(args.dim, args.norm_eps)
        self.self_attn = Attention(args)
        self.post_attention_layernorm = RMSNorm(args.dim, args.norm_eps)
        self.mlp = FeedForward(args)

    def forward(self, x: Tensor, rope: Tensor, mask: Optional[Tensor] = None,
                input_pos: Optional[Tensor] = None) -> Tensor:
        h = x + self.self_attn(self.input_layernorm(x), rope, mask, input_pos)
        return h + self.mlp(self.post_attention_layernorm(h))


class DecoderStack(nn.Module):
    """Embedding, blocks and final norm (transformers' ``model.`` prefix)."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.embed_tokens = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(TransformerBlock(args) for _ in range(args.n_layer))
        self.norm = RMSNorm(args.dim, args.norm_eps)


class Transformer(nn.Module):
    """Decoder-only Llama-family model; ``forward(input_ids [B, S], input_pos=None) -> logits [B, S, vocab]``."""

    def __init__(self, args: ModelArgs, config=None):
        super().__init__()
        self.args = args
        self.config = config  # the transformers config it came from (calibration reads model_type, heads)
        self.model = DecoderStack(args)
        self.lm_head = nn.Linear(args.dim, args.vocab_size, bias=False)
        self.tie_weights()
        self.max_seq_length = 0
        self.fused = False
        # Built by setup_caches for max_seq_length positions (fp32 rope, bool mask); never saved.
        self.register_buffer("rope", None, persistent=False)
        self.register_buffer("causal_mask", None, persistent=False)

    @classmethod
    def from_hf_config(cls, config, dtype: torch.dtype = torch.float32, device="meta") -> "Transformer":
        """An uninitialised model shaped like ``config`` (on the meta device unless told)."""
        with torch.device(device):
            model = cls(ModelArgs.from_hf_config(config), config)
        return model.to(dtype)

    def fuse_projections(self) -> "Transformer":
        """Fuse q/k/v and gate/up into single matmuls for decoding speed (after quantizing).

        The fused model computes the same function but its state dict no longer
        matches transformers' names: save (``awq_ao.save_quantized``) before fusing.
        """
        for block in self.model.layers:
            for part in (block.self_attn, block.mlp):
                try:
                    part.fuse()
                except ValueError:  # e.g. per-linear act_pre_scales differ: keep this part unfused
                    pass
        self.fused = True
        return self

    def tie_weights(self) -> None:
        if self.args.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.norm.weight.dtype

    def setup_caches(self, max_batch_size: int, max_seq_length: int) -> None:
        """Allocate the static KV caches and the causal mask for up to ``max_seq_length`` positions."""
        if max_seq_length > self.args.max_position_embeddings:
            raise ValueError(
                f"max_seq_length {max_seq_length} exceeds the model's max_position_embeddings "
                f"{self.args.max_position_embeddings}"
            )
        args, device, dtype = self.args, self.device, self.dtype
        self.max_seq_length = max_seq_length
        for block in self.model.layers:
            block.self_attn.kv_cache = KVCache(max_batch_size, args.n_kv_head, max_seq_length, args.head_dim,
                                               dtype, device)
        pos = torch.arange(max_seq_length, device=device)
        mask = pos[:, None] >= pos[None, :]
        if args.sliding_window is not None:
            mask &= (pos[:, None] - pos[None, :]) < args.sliding_window
        self.causal_mask = mask
        self.rope = rope_table(args, max_seq_length, device)

    def forward(self, input_ids: Tensor, input_pos: Optional[Tensor] = None, **unused) -> Tensor:
        """input_ids [B, S] -> logits [B, S, vocab] (fp32 accumulation inside the ops, model dtype out).

        ``unused`` swallows transformers-style keywords (``use_cache``), so calibration's runner can call it.
        """
        x = self.model.embed_tokens(input_ids)
        if input_pos is None:
            s = input_ids.shape[1]
            if self.args.sliding_window is not None and s > self.args.sliding_window:
                raise ValueError(f"sequences longer than the sliding window ({self.args.sliding_window}) need "
                                 "the cache path")
            rope, mask = rope_table(self.args, s, x.device).to(x.dtype), None
        else:
            if not self.max_seq_length:
                raise RuntimeError("call setup_caches(batch, max_seq_length) before passing input_pos")
            rope, mask = self.rope[:, input_pos].to(x.dtype), self.causal_mask[input_pos]
        for block in self.model.layers:
            x = block(x, rope, mask, input_pos)
        return self.lm_head(self.model.norm(x))
