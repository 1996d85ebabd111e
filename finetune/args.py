"""`TrainingArguments` for every Trainer bertpress drives, in one place.

transformers 5.x renamed or dropped arguments that 4.x code passed (`warmup_ratio` is gone: a
float `warmup_steps` below 1 is the ratio now; `group_by_length` became
`train_sampling_strategy="group_by_length"`; `save_safetensors` went, safetensors being the only
format). Callers speak in our terms (a warm-up ratio, grouped batches or not) and this module
spells them for the supported line (README "Versions": transformers >= 5.2, the first with
`train_sampling_strategy`), so a rename in a later release is one edit here.
"""

from __future__ import annotations

from typing import Any


def training_arguments(*, warmup_ratio: float = 0.0, group_by_length: bool = False, **kwargs: Any):
    """Build `transformers.TrainingArguments`.

    warmup_ratio: the share of all optimizer steps spent warming up, in [0, 1).
    group_by_length: batch texts of similar length together (less padding per batch).
    Everything else is passed through unchanged.
    """
    from transformers import TrainingArguments

    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
    return TrainingArguments(
        # A float below 1 is read as a ratio of the total steps; 0 means no warm-up.
        warmup_steps=float(warmup_ratio) if warmup_ratio > 0 else 0,
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        **kwargs,
    )
