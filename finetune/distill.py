"""Knowledge distillation: the soft-target loss and a Trainer that adds it.

loss = (1 - alpha) * CE(student, labels) + alpha * T^2 * KL(softmax(t/T) || softmax(s/T)).
The T^2 factor (Hinton et al., 2015) keeps the soft-target gradients on the same scale as the
hard-label ones when T changes.

With hidden_weight > 0 the student's encoder layers are also pulled toward the teacher layers
they came from (`hidden_state_loss`, the intermediate-layer term of PKD / TinyBERT), which
guides a student with layers removed by more than the logits. With attention_weight > 0 their
self-attention maps are pulled together too (`attention_loss`: KL from the teacher's attention
distributions, TinyBERT's / MiniLM's attention term); both models then run eager attention, the
only implementation that returns the maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import Trainer

#: The label of a row with no label of its own (augmented text, `finetune.augment`): the
#: cross-entropy skips it (PyTorch's ignore_index), so it learns from the teacher alone.
IGNORE_LABEL = -100


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None,
    alpha: float = 0.5,
    temperature: float = 2.0,
) -> torch.Tensor:
    """Mean over the batch. alpha=0 is plain cross-entropy; alpha=1 (or labels=None) soft targets only.

    A row labelled IGNORE_LABEL (augmented text with no label of its own) learns from the soft
    targets alone: its loss is the KL term at full weight, whatever alpha."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ; both models need the same labels"
        )
    t = float(temperature)
    # Compute in fp32: under bf16/fp16 autocast, log-softmax of small differences loses precision.
    s = student_logits.float()
    kl_rows = F.kl_div(
        F.log_softmax(s / t, dim=-1),
        F.log_softmax(teacher_logits.detach().float() / t, dim=-1),
        log_target=True,
        reduction="none",
    ).sum(-1) * (t * t)
    if labels is None or alpha >= 1.0:
        return kl_rows.mean()
    labelled = labels != IGNORE_LABEL
    # ignore_index gives 0 for unlabelled rows (no boolean indexing: no host sync on CUDA).
    ce_rows = F.cross_entropy(s, labels, reduction="none", ignore_index=IGNORE_LABEL)
    if alpha <= 0.0:
        return torch.where(labelled, ce_rows, kl_rows).mean()
    return torch.where(labelled, (1.0 - alpha) * ce_rows + alpha * kl_rows, kl_rows).mean()


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


def attention_loss(
    student_attn: tuple[torch.Tensor, ...],
    teacher_attn: tuple[torch.Tensor, ...],
    layer_map,
    attention_mask: torch.Tensor | None = None,
    head_map=None,
) -> torch.Tensor:
    """Mean over the student's layers of KL(teacher || student) between the attention
    distributions of student layer j and teacher layer layer_map[j] (each [batch, heads, query,
    key]), averaged over heads and real (unmasked) query positions. layer_map=None is identity.

    head_map[j] lists, for student layer j, the teacher head each of its heads came from (head
    pruning keeps the surviving heads in their original order); None, or a None entry, means the
    student kept every head of that layer. Each head's map is a distribution over keys on its own,
    so the teacher's kept heads are compared one to one and the removed ones are simply left out.

    The student's attention dropout must be off (`without_attention_dropout`): a dropped
    probability is 0, and the KL of a distribution with zeros is infinite."""
    n_s = len(student_attn)
    layer_map = list(range(n_s)) if layer_map is None else [int(t) for t in layer_map]
    if n_s == 0 or len(layer_map) != n_s or max(layer_map) >= len(teacher_attn):
        raise ValueError(f"attention distillation: the student returned {n_s} attention maps and the teacher "
                         f"{len(teacher_attn)}, but the layer map is {layer_map}")
    head_map = [None] * n_s if head_map is None else list(head_map)
    if len(head_map) != n_s:
        raise ValueError(f"attention distillation: the student has {n_s} layers but the head map lists {len(head_map)}")
    total = student_attn[0].new_zeros((), dtype=torch.float32)
    for j, t in enumerate(layer_map):
        s_a, t_a = student_attn[j].float(), teacher_attn[t].detach().float()
        if head_map[j] is not None:
            heads = [int(h) for h in head_map[j]]
            if len(heads) != s_a.shape[1] or any(not 0 <= h < t_a.shape[1] for h in heads):
                raise ValueError(f"attention distillation: student layer {j} has {s_a.shape[1]} heads, but its head "
                                 f"map {heads} does not name that many of teacher layer {t}'s {t_a.shape[1]}")
            t_a = t_a[:, heads]
        if s_a.shape != t_a.shape:
            raise ValueError(f"attention distillation needs a teacher head for every student head; student layer "
                             f"{j} has attention maps {tuple(s_a.shape)}, teacher layer {t} {tuple(t_a.shape)} "
                             "(pass head_map when heads were pruned)")
        # xlogy: a key the teacher gives probability 0 (padding) adds nothing.
        kl = (torch.xlogy(t_a, t_a) - t_a * torch.log(s_a.clamp_min(1e-12))).sum(-1)  # [batch, heads, query]
        if attention_mask is not None:
            m = attention_mask.to(kl.dtype)[:, None, :]
            total = total + (kl * m).sum() / (m.sum().clamp_min(1.0) * kl.shape[1])
        else:
            total = total + kl.mean()
    return total / n_s


def without_attention_dropout(model) -> list:
    """Switch off the dropout applied to attention probabilities: nn.Dropout modules inside an
    attention block (not its `.output.` projection's), and float `attention_dropout` /
    `dropout_prob` attributes of attention modules (how some transformers 5 eager attentions read
    it). Returns (module, attribute, value) triples to restore. Heuristic by module name, so
    recover() checks the result: the maps must still sum to 1 in training mode."""
    import torch.nn as nn

    undo = []
    for name, m in model.named_modules():
        inside = "attention" in name.lower() or "attn" in name.lower()
        if isinstance(m, nn.Dropout) and inside and ".output." not in f"{name}.":
            undo.append((m, "p", m.p))
            m.p = 0.0
        elif inside and not isinstance(m, nn.Dropout):
            for attr in ("attention_dropout", "dropout_prob"):
                v = getattr(m, attr, None)
                if isinstance(v, float):
                    undo.append((m, attr, v))
                    setattr(m, attr, 0.0)
    return undo


class DistillationTrainer(Trainer):
    """HF Trainer whose training loss is `distillation_loss` against a frozen teacher.

    The teacher runs in eval mode under no_grad on the student's device; it is never updated
    and never wrapped by DDP (each rank holds its own copy).
    """

    def __init__(self, *args, teacher, alpha: float = 0.5, temperature: float = 2.0,
                 hidden_weight: float = 0.0, attention_weight: float = 0.0, layer_map=None, head_map=None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.hidden_weight = float(hidden_weight)
        self.attention_weight = float(attention_weight)
        self.layer_map = layer_map
        self.head_map = head_map
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
        # The layer terms shape training only; evaluation scores logits (and the Trainer would try
        # to concatenate every returned map across batches of different lengths).
        hidden, attn = model.training and self.hidden_weight > 0, model.training and self.attention_weight > 0
        extra = {**({"output_hidden_states": True} if hidden else {}), **({"output_attentions": True} if attn else {})}
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
        if attn:
            loss = loss + self.attention_weight * attention_loss(
                outputs.attentions or (), teacher_out.attentions or (), self.layer_map, inputs.get("attention_mask"),
                self.head_map)
        if return_outputs and (hidden or attn):
            outputs = type(outputs)(logits=outputs.logits)
        return (loss, outputs) if return_outputs else loss
