"""Knowledge distillation: the soft-target loss and a Trainer that adds it.

loss = (1 - alpha) * CE(student, labels) + alpha * T^2 * KL(softmax(t/T) || softmax(s/T)).
The T^2 factor (Hinton et al., 2015) keeps the soft-target gradients on the same scale as the
hard-label ones when T changes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import Trainer


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None,
    alpha: float = 0.5,
    temperature: float = 2.0,
) -> torch.Tensor:
    """Mean over the batch. alpha=0 is plain cross-entropy; alpha=1 (or labels=None) soft targets only."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ; both models need the same labels"
        )
    t = float(temperature)
    # Compute in fp32: under bf16/fp16 autocast, log-softmax of small differences loses precision.
    s = student_logits.float()
    kl = F.kl_div(
        F.log_softmax(s / t, dim=-1),
        F.log_softmax(teacher_logits.detach().float() / t, dim=-1),
        log_target=True,
        reduction="batchmean",
    ) * (t * t)
    if labels is None or alpha >= 1.0:
        return kl
    ce = F.cross_entropy(s, labels)
    if alpha <= 0.0:
        return ce
    return (1.0 - alpha) * ce + alpha * kl


class DistillationTrainer(Trainer):
    """HF Trainer whose training loss is `distillation_loss` against a frozen teacher.

    The teacher runs in eval mode under no_grad on the student's device; it is never updated
    and never wrapped by DDP (each rank holds its own copy).
    """

    def __init__(self, *args, teacher, alpha: float = 0.5, temperature: float = 2.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.alpha = alpha
        self.temperature = temperature
        # Our loss is a per-batch mean, so the Trainer must divide it by the accumulation steps
        # itself (it skips that when it believes the model normalises by num_items_in_batch).
        self.model_accepts_loss_kwargs = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        outputs = model(**inputs)
        device = outputs.logits.device
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        with torch.no_grad():
            teacher_logits = self.teacher(**inputs).logits
        loss = distillation_loss(outputs.logits, teacher_logits, labels, self.alpha, self.temperature)
        return (loss, outputs) if return_outputs else loss
