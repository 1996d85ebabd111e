"""`FinetuneConfig`: everything that decides a fine-tuning run (it is the manifest's recipe);
`RecoverConfig`: an in-memory distillation by `recover` (compress's recovery step)."""

from __future__ import annotations

import dataclasses
import enum

from bertpress.config import as_enum, check_columns, check_range, flag, register_config, set_frozen
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

    model: str = flag("minilm", help="base model: 'minilm' (packaged, offline), a local HF/bertpress directory, or a "
                                     "hub id")
    data: str = flag("glue/sst2", help="directory with train.* and dev.* (.tsv/.csv/.jsonl), or a datasets id (needs "
                                       "network)")
    labels: tuple[str, ...] | None = flag(
        None, help="comma-separated class names, index = class id (e.g. negative,positive); default: taken from the "
                   "model if it is a classifier, else from the data")
    epochs: float = flag(3.0, help="training epochs (may be fractional)")
    lr: float = flag(5e-5, help="peak learning rate (AdamW, linear decay)")
    batch_size: int = flag(32, help="per-device batch size")
    grad_accum: int = flag(1, help="gradient accumulation steps")
    max_length: int = flag(128, help="truncate sentences to this many tokens (batches are padded dynamically)")
    warmup: float = flag(0.06, help="warm-up as a ratio of all steps")
    weight_decay: float = flag(0.01, help="AdamW weight decay")
    seed: int = flag(0, help="random seed (init, shuffling, subset)")
    eval_every: int | None = flag(None, help="evaluate and checkpoint every N optimizer steps (default: once per "
                                             "epoch)")
    precision: Precision = flag(
        Precision.AUTO, help="auto (default): bf16 on a CPU with native bf16 (AVX512-BF16/AMX, see `bertpress info`), "
                             "where it trained 1.6x faster at the same accuracy, fp32 elsewhere (and on CUDA); fp16: "
                             "CUDA only; bf16: CUDA (Ampere+) or a CPU (emulated and slow without native bf16)")
    train_samples: int | None = flag(None, help="train on a random subset of this many rows (quick runs); default: "
                                                "all")
    text_column: str | None = None  # the column flags: bertpress.data.add_column_flags
    text_pair_column: str | None = None
    label_column: str = "label"
    teacher: str | None = flag(None, group="distillation",
                               help="teacher checkpoint for knowledge distillation (same labels and tokenizer)")
    alpha: float = flag(0.5, group="distillation", help="distillation weight of the soft-target loss")
    temperature: float = flag(2.0, group="distillation", help="distillation temperature")
    # With a teacher: rewritten copies of every training row (finetune.augment), taught by the
    # teacher's soft targets alone.
    augment: int = flag(
        0, metavar="N", group="distillation",
        help="with --teacher: add N rewritten copies of every training row (TinyBERT-style word substitution, each "
             "word swapped with --augment-prob for one of its 15 nearest words in the teacher's embeddings); they "
             "learn from the teacher's soft targets alone (0 = off)")
    augment_prob: float = flag(0.4, metavar="P", group="distillation",
                               help="probability that a word of an augmented copy is replaced")
    resume: bool = flag(False, help="continue from the last checkpoint of a previous (killed) run into the same --out")

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


@register_config()
@dataclasses.dataclass(frozen=True)
class RecoverConfig:
    """Distillation fine-tune of a (pruned) student from its teacher (`recover`). Its flags are
    compress's (`--recover-` + the field name); data and samples pick the rows compress loads."""

    epochs: float = flag(0.0, help="distillation epochs from the unpruned model after pruning (0 = none)")
    data: str | None = None  # training data; defaults to compress's calibration data
    samples: int | None = flag(None, help="random subset of the training data")  # None = all
    max_steps: int | None = flag(None, help="cap on recovery optimizer steps")
    # A floor on the optimizer steps: on a small training set (MRPC's 3,668 pairs are 115 steps an
    # epoch) a few epochs are too few steps for a student that lost layers (docs/results/autosearch.md §4).
    min_steps: int | None = flag(None, help="at least this many recovery optimizer steps: on a small training set the "
                                            "epochs are raised to reach it (--recover-max-steps still caps)")
    lr: float = flag(5e-5, help="recovery learning rate")
    max_length: int = flag(128, help="recovery max sequence length")
    alpha: float = flag(0.5, help="weight of the teacher's soft targets against the labels' cross-entropy (0..1)")
    temperature: float = 2.0
    # Weight of the intermediate-layer loss: MSE between each student layer's hidden states and
    # those of the teacher layer it came from (0 = logits only); meant for layer removal.
    hidden_weight: float = flag(
        0.0, help="weight of intermediate-layer distillation: MSE of each kept layer's hidden states to the teacher "
                  "layer it came from (0 = logits only; 1 is a good start after --prune-layers)")
    # Weight of the attention term: KL between the teacher's and the student's attention maps of
    # the same layers, over the heads the student kept (PruningRecord.heads_kept); meant for layer
    # and head removal.
    attention_weight: float = flag(
        0.0, help="weight of attention distillation: KL from the teacher's attention maps to those of the kept "
                  "layers, head by head over the heads --prune-heads kept (0 = off; 1 with --recover-hidden-weight 1 "
                  "is a good start after --prune-layers; runs eager attention)")
    # Rewritten copies of every training row (finetune.augment: words swapped for their nearest
    # words in the teacher's embeddings with probability augment_prob), taught by the teacher alone.
    augment: int = flag(
        0, metavar="N", help="add N rewritten copies of every recovery row (TinyBERT-style word substitution: each "
                             "word swapped with --recover-augment-prob for one of its 15 nearest words in the "
                             "teacher's embeddings); they learn from the teacher's soft targets alone, and an epoch "
                             "covers them too (0 = off)")
    augment_prob: float = flag(0.4, metavar="P", help="probability that a word of an augmented copy is replaced")
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        check_range(self.epochs, "recover.epochs", low=0.0)
        if self.data is not None and (not isinstance(self.data, str) or not self.data.strip()):
            raise ConfigError(f"recover.data={self.data!r} must be a data spec (file, directory or datasets id) "
                              "or null")
        if self.samples is not None:
            check_range(self.samples, "recover.samples", low=1, integer=True)
        check_range(self.lr, "recover.lr", low=0.0, low_inclusive=False, high=1.0)
        check_range(self.alpha, "recover.alpha", low=0.0, high=1.0)
        check_range(self.temperature, "recover.temperature", low=0.0, low_inclusive=False)
        check_range(self.hidden_weight, "recover.hidden_weight", low=0.0)
        check_range(self.attention_weight, "recover.attention_weight", low=0.0)
        check_range(self.augment, "recover.augment", low=0, integer=True)
        check_range(self.augment_prob, "recover.augment_prob", low=0.0, low_inclusive=False, high=1.0)
        if self.augment and not self.epochs:
            raise ConfigError(f"recover.augment={self.augment} needs recovery to train on the copies: add "
                              "--recover-epochs E (e.g. 1) or drop --recover-augment")
        check_range(self.batch_size, "recover.batch_size", low=1, integer=True)
        check_range(self.max_length, "recover.max_length", low=8, integer=True)
        if self.max_steps is not None:
            check_range(self.max_steps, "recover.max_steps", low=1, integer=True)
        if self.min_steps is not None:
            check_range(self.min_steps, "recover.min_steps", low=1, integer=True)
            if self.max_steps is not None and self.min_steps > self.max_steps:
                raise ConfigError(f"recover.min_steps={self.min_steps} is above recover.max_steps={self.max_steps}: "
                                  "lower --recover-min-steps or raise --recover-max-steps")
        check_range(self.seed, "recover.seed", low=0, integer=True)

    @property
    def active(self) -> bool:
        return self.epochs > 0
