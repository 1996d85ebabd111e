"""What the compress stage measures: accuracy on labelled data, batch-1 latency, size."""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn

from bertpress.data import TextDataset


def batches(tokenizer, texts: Sequence[str], labels: Sequence[int] | None, *, batch_size: int,
            max_length: int) -> Iterator[dict[str, torch.Tensor]]:
    """Tokenized batches (dynamic padding); with `labels`, each batch carries them for a loss."""
    for i in range(0, len(texts), batch_size):
        enc = dict(tokenizer(list(texts[i:i + batch_size]), return_tensors="pt", padding=True,
                             truncation=True, max_length=max_length))
        if labels is not None:
            enc["labels"] = torch.tensor(list(labels[i:i + batch_size]), dtype=torch.long)
        yield enc


@torch.inference_mode()
def accuracy(model: nn.Module, tokenizer, data: TextDataset, *, max_length: int = 128,
             batch_size: int = 64) -> float:
    """Accuracy as a fraction in [0, 1] (the unit of every accuracy bertpress records)."""
    model.eval()
    correct = 0
    for i, batch in enumerate(batches(tokenizer, data.texts, None, batch_size=batch_size, max_length=max_length)):
        pred = model(**batch).logits.argmax(dim=-1)
        gold = torch.tensor(data.labels[i * batch_size:(i + 1) * batch_size], dtype=torch.long)
        correct += int((pred == gold).sum())
    return correct / max(1, len(data))


@contextlib.contextmanager
def torch_threads(n: int | None):
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


LATENCY_TEXT = "the movie was good and the cast was great"  # padded to seq_len: only the length matters


def latency(model: nn.Module, tokenizer, *, seq_len: int = 128, threads: int | None = None,
            min_seconds: float = 1.0, warmup: int = 5, min_iters: int = 20):
    """Batch-1 latency at a fixed sequence length (padded), in PyTorch eager."""
    from bertpress.timing import time_callable

    enc = dict(tokenizer([LATENCY_TEXT], return_tensors="pt",
                         padding="max_length", truncation=True, max_length=seq_len))
    model.eval()
    with torch_threads(threads), torch.inference_mode():
        return time_callable(lambda: model(**enc), warmup=warmup, min_iters=min_iters, min_seconds=min_seconds)


def state_size(model: nn.Module) -> int:
    """Bytes of the serialized state dict (int8 packed weights count as int8)."""
    from bertpress.models import state_dict_bytes

    return state_dict_bytes(model)
