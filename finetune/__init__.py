"""bertpress.finetune: fine-tune BERT classifiers with the HF Trainer (CPU, GPU, torchrun DDP),
optionally distilling from a teacher; `recover` re-trains a (pruned) student against a teacher.

Exports are lazy so `bertpress --help` does not import torch/transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FinetuneConfig": "bertpress.finetune.config",
    "Precision": "bertpress.finetune.config",
    "finetune": "bertpress.finetune.train",
    "distillation_loss": "bertpress.finetune.distill",
    "DistillationTrainer": "bertpress.finetune.distill",
    "recover": "bertpress.finetune.recovery",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bertpress.finetune' has no attribute {name!r}")
