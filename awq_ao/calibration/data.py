"""Calibration token data: normalising what users pass, and building samples from text."""

from __future__ import annotations

from typing import Iterable, Union

import torch

CalibrationData = Union[torch.Tensor, list, Iterable[dict]]


def as_token_batches(data: CalibrationData, batch_size: int) -> list[torch.Tensor]:
    """LongTensor [N, L], a list of [L] / [n, L] tensors, or dicts with ``input_ids`` -> batches [B, L].

    Raises a ValueError naming the problem when the data is empty, not token
    ids, or too short (fewer than 2 tokens per sample), or when lengths differ
    within what must be stacked.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(data, torch.Tensor):
        rows = [data if data.dim() == 2 else data.unsqueeze(0)]
    else:
        rows = []
        for item in data:
            ids = item["input_ids"] if isinstance(item, dict) else item
            ids = torch.as_tensor(ids)
            rows.append(ids if ids.dim() == 2 else ids.unsqueeze(0))
    if not rows or sum(r.shape[0] for r in rows) == 0:
        raise ValueError("calibration data is empty: give at least one sample of token ids")
    for r in rows:
        if r.dim() != 2 or r.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"calibration data must be integer token ids [N, L], got {tuple(r.shape)} {r.dtype}")
        if r.shape[1] < 2:
            raise ValueError(f"calibration samples are too short ({r.shape[1]} tokens): give at least 2 tokens each")
    lengths = {r.shape[1] for r in rows}
    if len(lengths) != 1:
        raise ValueError(f"calibration samples must share one length, got lengths {sorted(lengths)}")
    ids = torch.cat(rows).long()
    return list(ids.split(batch_size))


def _windows(ids: torch.Tensor, n_samples: int, seq_len: int, what: str) -> torch.Tensor:
    """``n_samples`` windows of ``seq_len`` tokens evenly spaced over ``ids``: [N, L] (deterministic)."""
    if n_samples < 1 or seq_len < 2:
        raise ValueError(f"need n_samples >= 1 and seq_len >= 2, got {n_samples} and {seq_len}")
    if ids.numel() < n_samples * seq_len:
        raise ValueError(f"{what} has {ids.numel()} tokens, fewer than {n_samples} x {seq_len}")
    stride = (ids.numel() - seq_len) // max(n_samples - 1, 1)
    return torch.stack([ids[i * stride:i * stride + seq_len] for i in range(n_samples)])


def tokenize_text(path: str, tokenizer) -> torch.Tensor:
    """The whole text file as one token stream [T] (LongTensor)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long)


def samples_from_text(path: str, tokenizer, n_samples: int = 64, seq_len: int = 512) -> torch.Tensor:
    """``n_samples`` windows of ``seq_len`` tokens, evenly spaced over the tokenized text file: [N, L]."""
    return _windows(tokenize_text(path, tokenizer), n_samples, seq_len, path)


def samples_from_dataset(dataset, tokenizer, n_samples: int = 64, seq_len: int = 512,
                         text_field: str = "text") -> torch.Tensor:
    """Like ``samples_from_text`` for a ``datasets`` dataset (or any iterable of dicts with text)."""
    text = "\n\n".join(row[text_field] for row in dataset if row[text_field].strip())
    ids = torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long)
    return _windows(ids, n_samples, seq_len, "the dataset")
