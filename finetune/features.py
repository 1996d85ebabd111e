"""Tokenised examples for the Trainer, and its metrics (bertpress.metrics).

Examples are tokenised once without padding: `DataCollatorWithPadding` pads each batch to its
longest member, and `group_by_length` batches similar lengths together, so a short-sentence
corpus like SST-2 runs at its real length instead of max_length. Sentence pairs are tokenised
as pairs (`bertpress.signature.tokenize`: token_type_ids 0 then 1, longest text truncated first).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from bertpress import signature
from bertpress.data import TextDataset
from bertpress.metrics import classification_metrics


class Features:
    """A list of tokenised examples (dicts with input_ids, attention_mask, ..., labels).

    A plain sequence is all the Trainer needs; `LengthGroupedSampler` reads `input_ids` lengths.
    """

    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


def tokenize(data: TextDataset, tokenizer, max_length: int, chunk: int = 4096) -> Features:
    examples = data.examples
    rows: list[dict[str, Any]] = []
    for start in range(0, len(data), chunk):
        part = examples[start:start + chunk]
        enc = signature.tokenize(tokenizer, part, truncation=True, max_length=max_length)
        for j in range(len(part)):
            row = {k: enc[k][j] for k in enc.keys()}
            row["labels"] = int(data.labels[start + j])
            rows.append(row)
    return Features(rows)


def metrics_for(num_labels: int) -> Callable[[Any], dict[str, float]]:
    """The Trainer's compute_metrics: accuracy, plus F1 (binary) or macro-F1 (> 2 classes)."""
    def compute(eval_pred) -> dict[str, float]:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        return classification_metrics(np.argmax(logits, axis=-1), labels, num_labels)

    return compute

