"""Knowledge distillation: the soft-target loss and a Trainer that adds it.

loss = (1 - alpha) * CE(student, labels) + alpha * T^2 * KL(softmax(t/T) || softmax(s/T)).
The T^2 factor (Hinton et al., 2015) keeps the soft-target gradients on the same scale as the
hard-label ones when T changes.

With hidden_weight > 0 the student's encoder layers are also pulled toward the teacher layers
they came from (`hidden_state_loss`, the intermediate-layer term of PKD / TinyBERT), which
guides a student with layers removed by more than the logits.
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


def hidden_state_loss(
    student_hidden: tuple[torch.Tensor, ...],
    teacher_hidden: tuple[torch.Tensor, ...],
    layer_map,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over the student's encoder layers of the MSE between layer j's output and the output
    of teacher layer layer_map[j], over real (unmasked) tokens. Both tuples are Hugging Face
    `hidden_states` (embeddings first, then one entry per layer); layer_map=None is identity."""
    n_s = len(student_hidden) - 1
    layer_map = list(range(n_s)) if layer_map is None else [int(t) for t in layer_map]
    if len(layer_map) != n_s or max(layer_map) >= len(teacher_hidden) - 1:
        raise ValueError(f"hidden-state distillation: the student has {n_s} layers and the teacher "
                         f"{len(teacher_hidden) - 1}, but the layer map is {layer_map}")
    if student_hidden[-1].shape[-1] != teacher_hidden[-1].shape[-1]:
        raise ValueError(f"hidden-state distillation needs the same hidden size; the student has "
                         f"{student_hidden[-1].shape[-1]}, the teacher {teacher_hidden[-1].shape[-1]}")
    mask = None
    if attention_mask is not None:
        mask = attention_mask.to(student_hidden[-1].dtype).unsqueeze(-1)
        denom = mask.sum().clamp_min(1.0) * student_hidden[-1].shape[-1]
    total = student_hidden[-1].new_zeros((), dtype=torch.float32)
    for j, t in enumerate(layer_map):
        diff = (student_hidden[j + 1].float() - teacher_hidden[t + 1].detach().float()) ** 2
        total = total + ((diff * mask).sum() / denom if mask is not None else diff.mean())
    return total / n_s


class DistillationTrainer(Trainer):
    """HF Trainer whose training loss is `distillation_loss` against a frozen teacher.

    The teacher runs in eval mode under no_grad on the student's device; it is never updated
    and never wrapped by DDP (each rank holds its own copy).
    """

    def __init__(self, *args, teacher, alpha: float = 0.5, temperature: float = 2.0,
                 hidden_weight: float = 0.0, layer_map=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.hidden_weight = float(hidden_weight)
        self.layer_map = layer_map
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
        hidden = self.hidden_weight > 0
        extra = {"output_hidden_states": True} if hidden else {}
        outputs = model(**inputs, **extra)
        device = outputs.logits.device
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        with torch.no_grad():
            teacher_out = self.teacher(**inputs, **extra)
        loss = distillation_loss(outputs.logits, teacher_out.logits, labels, self.alpha, self.temperature)
        if hidden:
            loss = loss + self.hidden_weight * hidden_state_loss(
                outputs.hidden_states, teacher_out.hidden_states, self.layer_map, inputs.get("attention_mask"))
        return (loss, outputs) if return_outputs else loss
