"""bertpress.finetune: fine-tune BERT classifiers with the HF Trainer (CPU, GPU, torchrun DDP),
optionally distilling from a teacher; `recover` re-trains a (pruned) student against a teacher.

Exports are lazy so `bertpress --help` does not import torch/transformers.
"""

from __future__ import annotations

from bertpress.lazy import lazy_exports

_EXPORTS = {
    "FinetuneConfig": "bertpress.finetune.config",
    "Precision": "bertpress.finetune.config",
    "RecoverConfig": "bertpress.finetune.config",
    "finetune": "bertpress.finetune.train",
    "distillation_loss": "bertpress.finetune.distill",
    "DistillationTrainer": "bertpress.finetune.distill",
    "recover": "bertpress.finetune.recovery",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
