"""`recover(student, teacher, tokenizer, train, RecoverConfig)`: distil a (pruned) student back toward its
teacher, in memory. The compress stage calls this after pruning.

The student may have other shapes than the teacher (fewer heads, narrower FFN): only the
logits must agree in shape. Training runs through `DistillationTrainer`, the same loss and
loop as `bertpress finetune --teacher`, in one process, without checkpoints.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from bertpress.data import TextDataset
from bertpress.errors import ConfigError, InputError
from bertpress.finetune.args import training_arguments
from bertpress.finetune.config import RecoverConfig
from bertpress.finetune.features import metrics_for, tokenize
from bertpress.quiet import quiet, quiet_trainer
from bertpress.signature import input_names


def step_limit(cfg: RecoverConfig, rows: int, world_size: int | None = None) -> int:
    """The Trainer's max_steps for a recovery over `rows` training rows: cfg.max_steps when set,
    raised to cfg.min_steps when the epochs come to fewer steps (-1: the epochs decide)."""
    if cfg.min_steps is None:
        return cfg.max_steps if cfg.max_steps is not None else -1
    if world_size is None:
        import torch.distributed as dist

        world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    by_epochs = math.ceil(cfg.epochs * math.ceil(rows / (cfg.batch_size * world_size)))
    if by_epochs >= cfg.min_steps:
        return cfg.max_steps if cfg.max_steps is not None else -1
    return cfg.min_steps  # the config refuses min_steps above max_steps


def recover(
    student,
    teacher,
    tokenizer,
    train: TextDataset,
    cfg: RecoverConfig,
    *,
    eval_data: TextDataset | None = None,
    layer_map=None,
    head_map=None,
    work_dir: str | Path | None = None,
    progress: bool = True,
    callbacks=(),
):
    """Train `student` in place against the frozen `teacher` as `cfg` says; return it in eval mode.

    cfg (validated when built) sets epochs, lr, batch_size, max_length, seed, max_steps and the
    losses; its data and samples are for the caller that loads `train` (compress). alpha weighs
    the soft-target (KL at `temperature`) loss against cross-entropy on `train`'s labels. hidden_weight > 0 adds intermediate-layer distillation: student layer j's hidden states
    are matched (MSE) to those of teacher layer layer_map[j] (identity when None; compress passes
    the layers it kept). attention_weight > 0 adds attention distillation: KL from teacher layer
    layer_map[j]'s attention distributions to student layer j's, head by head: head_map[j] lists
    the teacher head each of student layer j's heads came from (None: every head kept; compress
    passes the heads its pruning kept). Both models run eager attention for the recovery, the
    student without attention dropout, and get their attention implementation back afterwards.
    max_steps (if given) caps the optimizer steps regardless of epochs; min_steps (if given) is a floor:
    when the epochs over `train` come to fewer steps, training goes on (cycling the data) to min_steps.
    augment=N > 0 adds N rewritten copies of every training row (`finetune.augment`: words swapped for their nearest words in the
    teacher's input embeddings, each with probability augment_prob) that learn from the teacher's
    soft targets alone; an epoch then covers originals and copies. eval_data, if given, is scored before and after
    (accuracy printed when progress=True, and stored on the student as `student.recover_metrics`).
    callbacks (transformers TrainerCallbacks) see the training, e.g. the search's rungs, which may stop it.
    On CUDA the student trains in bf16 autocast where the GPU supports it (fp32 master weights).
    Nothing is written outside work_dir (a temp dir by default, removed afterwards).
    """
    import torch
    from transformers import DataCollatorWithPadding

    # lazy: distill pulls torch + transformers' Trainer; `import bertpress.finetune.recovery` stays light
    from bertpress.finetune.distill import DistillationTrainer

    if not isinstance(train, TextDataset) or len(train) == 0:
        raise InputError("recover: train must be a non-empty TextDataset; load one with "
                         "bertpress.data.load_text_classification")
    if not isinstance(cfg, RecoverConfig):
        raise ConfigError(f"recover: cfg must be a RecoverConfig, got {type(cfg).__name__}")
    if not cfg.active:  # the config's own checks cover every other value
        raise ConfigError(f"recover: epochs={cfg.epochs!r} trains nothing; give RecoverConfig(epochs=...) > 0")
    n_s, n_t = student.config.num_labels, teacher.config.num_labels
    if n_s != n_t:
        raise InputError(f"recover: the student has {n_s} labels but the teacher has {n_t}; they must match")
    if max(train.labels) >= n_s:
        raise InputError(f"recover: train labels go up to {max(train.labels)} but the models have {n_s} classes")

    restore = _attention_maps_on(student, teacher, tokenizer, train, layer_map, head_map) if cfg.attention_weight > 0 else None
    silence = quiet()
    silence.__enter__()
    owned = work_dir is None
    work = Path(tempfile.mkdtemp(prefix="bertpress-recover-")) if owned else Path(work_dir)
    try:
        train_f = tokenize(train, tokenizer, cfg.max_length)
        augmented = None
        if cfg.augment:
            # lazy: augment pulls torch + transformers' Trainer (as distill above)
            from bertpress.finetune.augment import augmented_features

            train_f, augmented = augmented_features(train_f, train, tokenizer, teacher, cfg.augment,
                                                    max_length=cfg.max_length, prob=cfg.augment_prob, seed=cfg.seed,
                                                    progress=progress)
            if progress:
                print(f"recover: {augmented.describe()}")
        eval_f = tokenize(eval_data, tokenizer, cfg.max_length) if eval_data is not None else None
        args = training_arguments(
            output_dir=str(work),
            num_train_epochs=cfg.epochs,
            max_steps=step_limit(cfg, len(train_f)),
            learning_rate=cfg.lr,
            per_device_train_batch_size=cfg.batch_size,
            per_device_eval_batch_size=cfg.batch_size * 2,
            warmup_ratio=0.06,
            weight_decay=0.01,
            seed=cfg.seed,
            data_seed=cfg.seed,
            eval_strategy="no",
            save_strategy="no",
            logging_steps=max(1, min(50, math.ceil(len(train_f) / cfg.batch_size) // 4 or 1)),
            group_by_length=True,
            use_cpu=not torch.cuda.is_available(),
            bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
            report_to="none",
            disable_tqdm=not progress,
            dataloader_num_workers=0,
        )
        trainer = DistillationTrainer(
            model=student, args=args, train_dataset=train_f, eval_dataset=eval_f,
            data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=metrics_for(n_s),
            teacher=teacher, alpha=cfg.alpha, temperature=cfg.temperature, hidden_weight=cfg.hidden_weight,
            attention_weight=cfg.attention_weight, layer_map=layer_map, head_map=head_map,
        )
        for cb in callbacks or ():
            trainer.add_callback(cb)
        quiet_trainer(trainer, progress)  # the bar stays; no dict per logging step (printed under the search's bar)
        metrics = {}
        if eval_f is not None:
            metrics["accuracy_before"] = trainer.evaluate()["eval_accuracy"]
        result = trainer.train()
        metrics["train_loss"] = float(result.training_loss)
        metrics["steps"] = int(trainer.state.global_step)
        metrics["train_runtime_s"] = float(result.metrics.get("train_runtime", 0.0))
        if augmented is not None:
            metrics["augmented"] = augmented.summary()
        if eval_f is not None:
            metrics["accuracy_after"] = trainer.evaluate()["eval_accuracy"]
            if progress:
                print(f"recover: dev accuracy {100 * metrics['accuracy_before']:.2f}% -> "
                      f"{100 * metrics['accuracy_after']:.2f}% in {metrics['steps']} steps")
    finally:
        silence.__exit__(None, None, None)
        if restore is not None:
            restore()
        if owned:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    student.eval()
    # A plain attribute, not config: it must not leak into a saved config.json.
    student.recover_metrics = metrics
    return student


def _attention_maps_on(student, teacher, tokenizer, train: TextDataset, layer_map, head_map=None):
    """Prepare both models for attention distillation and check, on one training example, that
    they return comparable maps; return the function that undoes it. Raises InputError (one
    line) when the family cannot return its maps or the head map does not fit the models."""
    import torch

    # lazy: distill pulls torch + transformers' Trainer (as in recover)
    from bertpress.finetune.distill import attention_loss, without_attention_dropout

    before = [(m, m.config._attn_implementation) for m in (student, teacher)]
    undo = []

    def restore():
        for m, attr, v in undo:
            setattr(m, attr, v)
        for m, impl in before:
            m.set_attn_implementation(impl)

    try:
        for m in (student, teacher):
            m.set_attn_implementation("eager")
        undo.extend(without_attention_dropout(student))
        args = (train.texts[0],) + ((train.text_pairs[0],) if train.text_pairs is not None else ())
        enc = tokenizer(*args, return_tensors="pt", truncation=True, max_length=32)

        device = next(student.parameters()).device
        enc = {k: enc[k].to(device) for k in input_names(student) if k in enc}  # what the family takes
        was_training = student.training
        student.train()  # dropout as in training: the maps must still be distributions
        try:
            with torch.no_grad():
                s_att = student(**enc, output_attentions=True).attentions or ()
                t_att = teacher.to(enc["input_ids"].device)(**enc, output_attentions=True).attentions or ()
        finally:
            student.train(was_training)
        if not s_att or not t_att:
            raise ValueError(f"{student.config.model_type} models return no attention maps")
        attention_loss(s_att, t_att, layer_map, enc.get("attention_mask"), head_map)
        if not all(torch.allclose(a.sum(-1), torch.ones_like(a.sum(-1)), atol=1e-3) for a in s_att):
            raise ValueError(f"the attention dropout of {student.config.model_type} could not be switched off")
    except (ValueError, RuntimeError, NotImplementedError) as exc:
        restore()
        raise InputError(f"recover: {exc}; drop --recover-attention-weight (--recover-hidden-weight works for "
                         "every family)") from None
    return restore
