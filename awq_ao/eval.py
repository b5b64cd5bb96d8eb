"""Perplexity of a causal LM over non-overlapping chunks of a token stream."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm


@torch.no_grad()
def perplexity(
    model: nn.Module,
    token_ids: torch.Tensor,
    seq_len: int = 512,
    max_chunks: Optional[int] = None,
    batch_size: int = 4,
    progress: bool = True,
) -> float:
    """exp(mean next-token NLL) over ``token_ids`` [T] cut into chunks of ``seq_len`` (the tail is dropped).

    Each chunk is scored on its own (no context carried over): the first token
    of a chunk is never predicted. NLL is summed in fp32 from fp32 logits.
    """
    ids = torch.as_tensor(token_ids).reshape(-1).long()
    n = ids.numel() // seq_len
    n = n if max_chunks is None else min(n, max_chunks)
    if n < 1:
        raise ValueError(f"need at least {seq_len} tokens for one chunk, got {ids.numel()}")
    chunks = ids[: n * seq_len].view(n, seq_len)
    device = next(model.parameters()).device
    nll, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(chunks.split(batch_size), desc="perplexity", unit="batch", disable=not progress):
            batch = batch.to(device)
            logits = model(batch, use_cache=False).logits.float()
            nll += float(F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1),
                                         reduction="sum"))
            count += batch.shape[0] * (seq_len - 1)
    finally:
        model.train(was_training)
    return math.exp(nll / count)
