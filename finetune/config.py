"""`FinetuneConfig`: everything that decides a fine-tuning run (it is the manifest's recipe)."""

from __future__ import annotations

import dataclasses
import enum

from bertpress.config import as_enum, check_columns, check_range, register_config, set_frozen
from bertpress.errors import ConfigError


class Precision(str, enum.Enum):
    # auto: bf16 on a CPU with native bf16 (AVX512-BF16 / AMX-BF16), fp32 elsewhere; resolved
    # when training starts, and the checkpoint records the precision that ran (train.resolve_precision).
    AUTO = "auto"
    FP32 = "fp32"
    FP16 = "fp16"  # CUDA only: CPU has no fp16 training path (no fp16 autocast/GradScaler there)
    BF16 = "bf16"  # CUDA (Ampere+) or a CPU whose torch supports bf16 autocast


@register_config()
@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """A fine-tuning run. Paths are kept as given (strings) so the recipe stays readable.

    epochs may be fractional (e.g. 0.5); eval_every=None evaluates (and checkpoints) once per
    epoch, an integer N does both every N optimizer steps. warmup is a ratio of all steps.
    labels names the classes (index = class id) when the data has integer labels only.
    text_column / text_pair_column name the data's text columns (None: detected; a pair such as
    sentence1/sentence2 is read as sentence pairs, see bertpress.data.PAIR_COLUMNS).
    """

    model: str = "minilm"
    data: str = "glue/sst2"
    epochs: float = 3.0
    lr: float = 5e-5
    batch_size: int = 32
    max_length: int = 128
    warmup: float = 0.06
    weight_decay: float = 0.01
    seed: int = 0
    eval_every: int | None = None
    precision: Precision = Precision.AUTO
    resume: bool = False
    teacher: str | None = None
    alpha: float = 0.5
    temperature: float = 2.0
    # With a teacher: rewritten copies of every training row (finetune.augment), taught by the
    # teacher's soft targets alone.
    augment: int = 0
    augment_prob: float = 0.4
    labels: tuple[str, ...] | None = None
    train_samples: int | None = None
    text_column: str | None = None
    label_column: str = "label"
    grad_accum: int = 1
    text_pair_column: str | None = None

    def __post_init__(self) -> None:
        set_frozen(self, "precision", as_enum(Precision, self.precision, "precision"))
        for name in ("model", "data", "label_column"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{name}={value!r} must be a non-empty string")
        check_range(self.epochs, "epochs", low=0, low_inclusive=False)
        check_range(self.lr, "lr", low=0, low_inclusive=False, high=1)
        check_range(self.batch_size, "batch_size", low=1, integer=True)
        check_range(self.max_length, "max_length", low=8, integer=True)
        check_range(self.warmup, "warmup", low=0, high=1, high_inclusive=False)
        check_range(self.weight_decay, "weight_decay", low=0, high=1)
        check_range(self.seed, "seed", low=0, integer=True)
        if self.eval_every is not None:
            check_range(self.eval_every, "eval_every", low=1, integer=True)
        check_range(self.alpha, "alpha", low=0, high=1)
        check_range(self.temperature, "temperature", low=0, low_inclusive=False)
        check_range(self.grad_accum, "grad_accum", low=1, integer=True)
        check_range(self.augment, "augment", low=0, integer=True)
        check_range(self.augment_prob, "augment_prob", low=0, low_inclusive=False, high=1)
        if self.train_samples is not None:
            check_range(self.train_samples, "train_samples", low=1, integer=True)
        if self.teacher is not None and (not isinstance(self.teacher, str) or not self.teacher.strip()):
            raise ConfigError(f"teacher={self.teacher!r} must be a checkpoint path or None")
        if self.augment and self.teacher is None:
            raise ConfigError(f"augment={self.augment} needs a teacher: the rewritten rows have no labels and learn "
                              "from the teacher's soft targets alone; add --teacher CHECKPOINT or drop --augment")
        if self.labels is not None:
            labels = self.labels.split(",") if isinstance(self.labels, str) else list(self.labels)
            labels = tuple(str(x).strip() for x in labels)
            if len(labels) < 2 or any(not x for x in labels) or len(set(labels)) != len(labels):
                raise ConfigError(
                    f"labels={self.labels!r} must be at least two distinct non-empty names "
                    "(index = class id), e.g. negative,positive"
                )
            set_frozen(self, "labels", labels)
        check_columns(self.text_column, self.text_pair_column, self.label_column)
        if not isinstance(self.resume, bool):
            raise ConfigError(f"resume={self.resume!r} must be true or false")

    def training_identity(self) -> dict:
        """The fields that must match for --resume to continue a run (not resume)."""
        data = dataclasses.asdict(self)
        data.pop("resume")
        data["precision"] = self.precision.value
        data["labels"] = list(self.labels) if self.labels else None
        return data
