"""What the compress stage measures: accuracy on labelled data, batch-1 latency, real-traffic
throughput, size."""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from bertpress.data import TextDataset
from bertpress.metrics import classification_metrics
from bertpress import signature  # called as signature.tokenize/encode: tests spy on them
from bertpress.models import state_dict_bytes
from bertpress.signature import EVAL_BATCH
from bertpress.timing import time_callable


def batches(tokenizer, texts: Sequence, labels: Sequence[int] | None, *, batch_size: int,
            max_length: int) -> Iterator[dict[str, torch.Tensor]]:
    """Tokenized batches (dynamic padding) of texts or (text, text_pair) pairs
    (`TextDataset.examples`); with `labels`, each batch carries them for a loss."""
    for i in range(0, len(texts), batch_size):
        enc = dict(signature.tokenize(tokenizer, texts[i:i + batch_size], return_tensors="pt", padding=True,
                                      truncation=True, max_length=max_length))
        if labels is not None:
            enc["labels"] = torch.tensor(list(labels[i:i + batch_size]), dtype=torch.long)
        yield enc


@torch.inference_mode()
def predictions(model: nn.Module, tokenizer, data: TextDataset, *, max_length: int = 128,
                batch_size: int = EVAL_BATCH) -> np.ndarray:
    """The predicted class id of every row of `data` (texts or pairs)."""
    model.eval()
    dev = next(model.parameters()).device  # a model on CUDA (e.g. mid-training) gets its batches there
    out = [model(**{k: v.to(dev) for k, v in batch.items()}).logits.argmax(dim=-1).cpu().numpy()
           for batch in batches(tokenizer, data.examples, None, batch_size=batch_size, max_length=max_length)]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def scores(model: nn.Module, tokenizer, data: TextDataset, *, max_length: int = 128,
           batch_size: int = EVAL_BATCH) -> dict[str, float]:
    """bertpress.metrics on `data`: accuracy, plus F1 (binary) or macro-F1 (> 2 classes)."""
    num_labels = int(model.config.num_labels) if hasattr(model, "config") else len(data.label_names)
    pred = predictions(model, tokenizer, data, max_length=max_length, batch_size=batch_size)
    return classification_metrics(pred, data.labels, num_labels)


def runtime_scores(run, tokenizer, data: TextDataset, max_length: int, num_labels: int,
                   batch_size: int = EVAL_BATCH) -> dict[str, float]:
    """bertpress.metrics on `data` through an exported model's runner (feed of numpy inputs ->
    logits; it takes the inputs it knows): the search's scores in a deploy runtime."""
    ex = data.examples
    pred = [np.asarray(run(signature.encode(tokenizer, ex[i:i + batch_size], max_length))).argmax(-1)
            for i in range(0, len(ex), batch_size)]
    return classification_metrics(np.concatenate(pred) if pred else np.zeros(0, dtype=np.int64), data.labels,
                                  num_labels)


def accuracy(model: nn.Module, tokenizer, data: TextDataset, *, max_length: int = 128,
             batch_size: int = EVAL_BATCH) -> float:
    """Accuracy as a fraction in [0, 1] (the unit of every accuracy bertpress records); the
    accuracy budgets of compress (drop checks, the search, auto calibration) use it."""
    return scores(model, tokenizer, data, max_length=max_length, batch_size=batch_size)["accuracy"]


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
    enc = dict(tokenizer([LATENCY_TEXT], return_tensors="pt",
                         padding="max_length", truncation=True, max_length=seq_len))
    model.eval()
    with torch_threads(threads), torch.inference_mode():
        return time_callable(lambda: model(**enc), warmup=warmup, min_iters=min_iters, min_seconds=min_seconds)


def traffic_timer(run, tokenizer, chunks: Sequence[Sequence], *, max_length: int, names: Sequence[str],
                  threads: int | None = None, min_seconds: float = 1.0):
    """time() -> LatencyStats of passes over `chunks` (batches of texts or pairs, as
    `bertpress.signature.traffic_batches` cuts them): one call is one pass, every batch tokenized
    with dynamic padding and run by `run` (a feed of `names` -> logits), end to end as bench's
    real traffic. The timer's first call starts with an untimed pass (new shapes compile and
    allocate; later rounds find them warm); items_per_call is the sentences per pass, so
    `throughput` is sentences/s. For PyTorch and deployed runtimes alike. The tokenizer keeps
    its own threads (a fast tokenizer's): `threads` sets torch's."""
    wanted = set(names)
    n = sum(len(c) for c in chunks)

    def one_pass() -> None:
        for chunk in chunks:
            run({k: v for k, v in signature.encode(tokenizer, chunk, max_length).items() if k in wanted})

    warm = False

    def time_it():
        nonlocal warm
        with torch_threads(threads):
            stats = time_callable(one_pass, warmup=0 if warm else 1, min_iters=1, min_seconds=min_seconds,
                                  items_per_call=n)
        warm = True
        return stats

    return time_it


def state_size(model: nn.Module) -> int:
    """Bytes of the serialized state dict (int8 packed weights count as int8)."""
    return state_dict_bytes(model)
