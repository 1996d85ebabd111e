"""`finetune(config, out) -> Artifact`: fine-tune a BERT classifier with the HF Trainer.

The Trainer owns the loop, so DDP (torchrun), mixed precision, gradient accumulation,
checkpointing and resume are the library's. What we add: input checks up front (before any
training time is spent), dynamic padding + length grouping, Trainer checkpoints in
`partial_dir(out)` so `resume=True` continues a killed run, the best evaluation by dev accuracy
as the saved model, and a finished artifact (staged, manifest last) written by rank 0 alone.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm
from transformers import TrainerCallback

from bertpress import dist, hardware
from bertpress.arch import max_positions
from bertpress.artifact import (Artifact, Manifest, check_output_dir, dead_partial_dirs, holds_output_locks,
                                lineage_of, partial_dir, resumable_partial, staged_output, write_json_atomic,
                                write_manifest)
from bertpress.config import from_tagged, input_paths, to_tagged
from bertpress.data import TextDataset, load_text_classification
from bertpress.errors import ArtifactError, ConfigError, DeviceError, InputError, UnsafeInputError
from bertpress.finetune.args import training_arguments
from bertpress.finetune.augment import augmented_features
from bertpress.finetune.config import FinetuneConfig, Precision
from bertpress.finetune.distill import DistillationTrainer
from bertpress.finetune.features import metrics_for, tokenize
from bertpress.metrics import metric_names
from bertpress.models import label_names_of, layer_shapes, load_classifier, load_config, param_count, resolve_source
from bertpress.quiet import quiet_libraries, quiet_trainer
from bertpress.safety import verify_resume_checkpoint

RUN_FILE = "bertpress-run.json"  # in the partial dir: the config a resumed run must match


@holds_output_locks  # one live run per --out (artifact.output_locks)
def finetune(model: str | os.PathLike | None, config: FinetuneConfig, out: str | os.PathLike, *,
             overwrite: bool = False, progress: bool = True) -> Artifact:
    """Train `model` (None: `config.model`) on `config.data` and write a checkpoint artifact at `out`.

    The verb shape every stage shares: verb(inputs, cfg, out, *, overwrite, progress). The
    checkpoint's recipe records the model that was actually trained.

    Under torchrun every rank calls this; only rank 0 writes the artifact, the others wait for
    it and return the same Artifact.
    """
    import torch

    t0 = time.perf_counter()
    if not isinstance(config, FinetuneConfig):
        raise ConfigError(f"config must be a FinetuneConfig, got {type(config).__name__}")
    if model is not None and str(model) != config.model:
        config = dataclasses.replace(config, model=str(model))
    out = Path(out)
    cuda = torch.cuda.is_available()
    config = dataclasses.replace(config, precision=resolve_precision(config.precision, cuda))
    _check_precision(config.precision, cuda)
    inputs = _local_inputs(config)
    out = check_output_dir(out, overwrite=overwrite, inputs=inputs)

    model, tokenizer, train, dev, base_labels = _load_model_and_data(config)
    teacher = _load_teacher(config, model, tokenizer) if config.teacher else None
    _quiet_library_logs()

    train_f = tokenize(train, tokenizer, config.max_length)
    augmented = None
    if config.augment:
        train_f, aug = augmented_features(train_f, train, tokenizer, teacher, config.augment,
                                          max_length=config.max_length, prob=config.augment_prob, seed=config.seed,
                                          flag="--augment", progress=progress and dist.is_main_process())
        augmented = aug.summary()
        if progress and dist.is_main_process():
            print(f"finetune: {aug.describe()}", file=sys.stderr)
    dev_f = tokenize(dev, tokenizer, config.max_length)
    # This run's own work directory (private: named after its process). A resume continues the
    # newest one left by a run that is gone (out_lock: no live run writes into `out`) and says which.
    work = (resumable_partial(out) if config.resume else None) or partial_dir(out)
    resume_from = _resume_checkpoint(config, work) if config.resume else None
    if resume_from is not None and dist.is_main_process():  # always: which run a resume continues
        print(f"note: --resume continues the interrupted run in {work} from {resume_from.name}", file=sys.stderr)
    if resume_from is None:
        work = partial_dir(out)
    trainer, stats = _build_trainer(config, model, tokenizer, train_f, dev_f, teacher, work, cuda, progress)

    if dist.is_main_process():
        if resume_from is None:
            for stale in dead_partial_dirs(out):  # checkpoints of earlier runs, superseded by this one
                shutil.rmtree(stale, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)
            if config.resume and progress:
                print(f"note: --resume found no finished checkpoint of an interrupted run into {out}; "
                      "starting from scratch", file=sys.stderr)
        work.mkdir(parents=True, exist_ok=True)
        write_json_atomic(work / RUN_FILE, to_tagged(config))
    trainer.accelerator.wait_for_everyone()

    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    state = trainer.state
    if state.best_metric is None:  # no evaluation happened inside the loop (e.g. eval_every > steps)
        state.best_metric = trainer.evaluate()["eval_accuracy"]

    if not dist.is_main_process():
        _outcome_from_rank0(out)  # rank 0 writes the artifact meanwhile; raises if that failed
        return Artifact.load(out)

    try:
        _write_artifact(config, trainer, result, stats, train, dev, base_labels, tokenizer, inputs,
                        out, work, t0, resume_from, overwrite, len(train_f), augmented)
    except BaseException as exc:
        _tell_other_ranks(f"{type(exc).__name__}: {exc}")
        raise
    _tell_other_ranks("ok")
    return Artifact.load(out)


def _tell_other_ranks(outcome: str) -> None:
    """Broadcast rank 0's outcome, so a failure there never leaves the other ranks waiting."""
    if dist.is_distributed():
        import torch.distributed as tdist

        tdist.broadcast_object_list([outcome], src=0)
        tdist.barrier()  # nobody leaves while the broadcast is still in flight


def _outcome_from_rank0(out: Path) -> None:
    import torch.distributed as tdist

    box: list = [None]
    tdist.broadcast_object_list(box, src=0)
    tdist.barrier()
    if box[0] != "ok":
        raise ArtifactError(f"rank 0 failed to write {out} ({box[0]}); see rank 0's error above")


def _write_artifact(config, trainer, result, stats, train, dev, base_labels, tokenizer, inputs,
                    out, work, t0, resume_from, overwrite: bool, train_rows: int, augmented: dict | None) -> None:
    state = trainer.state
    metrics = _metrics(config, trainer, result, stats, train_rows, time.perf_counter() - t0, resume_from)
    final = trainer.model.eval()
    with staged_output(out, overwrite=overwrite, inputs=inputs) as tmp:
        final.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json_atomic(tmp / "training_log.json", state.log_history)
        write_manifest(tmp, Manifest(
            kind="checkpoint",
            labels=list(train.label_names),
            max_length=config.max_length,
            columns=train.columns.to_dict() if train.columns else None,
            recipe=to_tagged(config),
            lineage=lineage_of(_source_path(config.model)),
            metrics=metrics,
            details=_details(config, final, train, dev, base_labels, augmented),
        ))
    shutil.rmtree(work, ignore_errors=True)


# ---- checks --------------------------------------------------------------------------------


def resolve_precision(precision: Precision, cuda: bool) -> Precision:
    """What `auto` means here. On a CPU with native bf16, bf16 autocast trained MiniLM on SST-2
    1.6x faster than fp32 with dev accuracy within one sentence (docs/results/bf16-cpu.md); on a CPU
    without it bf16 is emulated and >12x slower, so fp32. On CUDA fp32, as before: bf16/fp16 there
    are asked for explicitly (not measured by this project yet)."""
    if precision is not Precision.AUTO:
        return precision
    if cuda:
        return Precision.FP32
    return Precision.BF16 if hardware.native_bf16_cpu() else Precision.FP32


def _check_precision(precision: Precision, cuda: bool) -> None:
    import torch

    if precision is Precision.FP16 and not cuda:
        raise ConfigError(
            "precision fp16 needs a CUDA GPU: PyTorch has no fp16 mixed-precision training on CPU "
            "(no fp16 autocast/GradScaler path); use --precision fp32, or bf16 on a CPU that supports it"
        )
    if precision is Precision.BF16 and cuda and not torch.cuda.is_bf16_supported():
        raise DeviceError("precision bf16 needs an Ampere or newer GPU; use --precision fp16 or fp32 here")


def _source_path(source: str) -> str:
    try:
        return resolve_source(source)[0]
    except Exception:
        return source


def _local_inputs(config: FinetuneConfig) -> tuple[Path, ...]:
    """Local paths that --out must not overlap (the data, the model, the teacher)."""
    return input_paths(config)


def _is_classifier(model_config) -> bool:
    return any(a.endswith("ForSequenceClassification") for a in (model_config.architectures or []))


def _load_model_and_data(config: FinetuneConfig):
    if Path(config.data).expanduser().is_file():
        raise InputError(
            f"--data {config.data} is a single file; fine-tuning needs a train and a dev split: "
            "give a directory with train.tsv and dev.tsv (or .csv/.jsonl), or a datasets id"
        )
    mcfg = load_config(config.model)
    limit = int(max_positions(mcfg) or 0)
    if limit and config.max_length > limit:
        raise InputError(
            f"--max-length {config.max_length} is above the model's {limit} position embeddings; "
            f"use --max-length {limit} or less"
        )
    base_labels = None
    labels = list(config.labels) if config.labels else None
    if _is_classifier(mcfg):
        # A trained classifier keeps its label map: the data must fit it.
        base_labels = [str(mcfg.id2label[i]) for i in range(mcfg.num_labels)]
        if labels is not None and labels != base_labels:
            raise InputError(
                f"--model {config.model} is a classifier with labels {base_labels}; --labels {','.join(labels)} "
                "differs: drop --labels, or start from an encoder such as minilm"
            )
        labels = base_labels
    kw = dict(text_column=config.text_column, text_pair_column=config.text_pair_column,
              label_column=config.label_column)
    train = load_text_classification(config.data, "train", label_names=labels, **kw)
    if len(train) == 0:
        raise InputError(f"{train.source}: the training split is empty; add labeled rows")
    if base_labels is not None and len(train.label_names) != len(base_labels):
        raise InputError(
            f"{train.source}: labels {train.label_names} do not fit the model's label map {base_labels}; "
            "fix the data, or start from an encoder such as minilm"
        )
    if len(train.label_names) < 2:
        raise InputError(f"{train.source}: only one class ({train.label_names}); a classifier needs at least two")
    # dev is read with train's columns (a dev file may not hold a second pair the detection could prefer)
    dev = load_text_classification(config.data, "dev", label_names=train.label_names, **kw, prefer=train.columns)
    train = train.subset(config.train_samples, seed=config.seed)
    model, tokenizer = load_classifier(
        config.model, labels=None if base_labels is not None else train.label_names, seed=config.seed
    )
    return model, tokenizer, train, dev, base_labels


def _load_teacher(config: FinetuneConfig, student, tokenizer):
    teacher, teacher_tok = load_classifier(config.teacher)
    want, got = label_names_of(student), label_names_of(teacher)
    if got != want:
        raise InputError(
            f"--teacher {config.teacher} has labels {got} but the student has {want}; "
            "use a teacher fine-tuned on the same label set (same names, same order)"
        )
    if teacher_tok.get_vocab() != tokenizer.get_vocab():
        raise InputError(
            f"--teacher {config.teacher} uses a different vocabulary than --model {config.model}; "
            "distillation feeds both the same token ids, so use a teacher with the same tokenizer"
        )
    return teacher.eval()


def _resume_checkpoint(config: FinetuneConfig, work: Path) -> Path | None:
    """The newest finished Trainer checkpoint in `work` (trainer_state.json is written last)."""
    run_file = work / RUN_FILE
    if run_file.is_file():
        try:
            previous = from_tagged(json.loads(run_file.read_text(encoding="utf-8")))
        except Exception:
            previous = None
        if previous is not None and previous.training_identity() != config.training_identity():
            changed = sorted(k for k, v in config.training_identity().items()
                             if previous.training_identity().get(k) != v)
            raise InputError(
                f"--resume: the run in {work} used different settings ({', '.join(changed)}); "
                "resume with the same settings, or drop --resume to start over"
            )

    done = [p for p in work.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    done.sort(key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1)
    # Newest first. Every file is verified before the Trainer opens any of them: its resume uses
    # a plain torch.load for rng_state.pth, which TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 turns into a
    # full unpickle - so a planted pickle is refused here, whatever the environment says. A
    # checkpoint cut short (kill -9 while trainer_state.json was written) falls back to the
    # previous intact one.
    for ckpt in reversed(done):
        try:
            verify_resume_checkpoint(ckpt)
        except UnsafeInputError as exc:
            raise UnsafeInputError(f"--resume: {exc}; refused to resume (delete {work} to start over)") from None
        except ArtifactError as exc:
            print(f"note: --resume: skipping {ckpt.name} ({exc})", file=sys.stderr)
            continue
        return ckpt
    return None


def _quiet_library_logs() -> None:
    """Process-wide for a training run: bertpress.quiet's library defaults, plus the Trainer's
    expected notices (gradient-checkpointing hints, non-tensor inputs, cache mtimes)."""
    import warnings

    quiet_libraries()
    warnings.filterwarnings("ignore", message=".*torch.utils.checkpoint.*")
    warnings.filterwarnings("ignore", message=".*non-tensor.*")
    warnings.filterwarnings("ignore", message="mtime may not be reliable")


# ---- the Trainer ---------------------------------------------------------------------------


def _build_trainer(config, model, tokenizer, train_f, dev_f, teacher, work, cuda, progress):
    from transformers import DataCollatorWithPadding, Trainer

    strategy = "steps" if config.eval_every else "epoch"
    args = training_arguments(
        output_dir=str(work),
        num_train_epochs=config.epochs,
        learning_rate=config.lr,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size * 2,
        gradient_accumulation_steps=config.grad_accum,
        warmup_ratio=config.warmup,
        weight_decay=config.weight_decay,
        lr_scheduler_type="linear",
        seed=config.seed,
        data_seed=config.seed,
        eval_strategy=strategy,
        save_strategy=strategy,
        eval_steps=config.eval_every,
        save_steps=config.eval_every,
        save_total_limit=2,  # the best and the latest survive rotation
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
        greater_is_better=True,
        logging_strategy="steps",
        logging_steps=max(1, min(50, len(train_f) // (config.batch_size * config.grad_accum * 4) or 1)),
        logging_first_step=True,
        group_by_length=True,
        bf16=config.precision is Precision.BF16,
        fp16=config.precision is Precision.FP16,
        use_cpu=not cuda,
        # Set only under torchrun: accelerate treats any ddp_backend as "distributed".
        ddp_backend=("nccl" if cuda else "gloo") if dist.is_distributed() else None,
        ddp_find_unused_parameters=False,
        dataloader_num_workers=0,
        report_to="none",
        disable_tqdm=not progress,
    )
    common = dict(model=model, args=args, train_dataset=train_f, eval_dataset=dev_f,
                  data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
                  compute_metrics=metrics_for(model.config.num_labels))
    if teacher is not None:
        trainer = DistillationTrainer(**common, teacher=teacher, alpha=config.alpha,
                                      temperature=config.temperature)
    else:
        trainer = Trainer(**common)
    # Logs go to stderr as one line per evaluation (stdout stays clean for --json); the loss
    # and samples/s ride on the progress bar instead of a printed dict per logging step.
    quiet_trainer(trainer, progress)
    stats = _Throughput(config.batch_size)
    trainer.add_callback(stats)
    stats.callbacks = trainer.callback_handler.callbacks
    return trainer, stats


class _Throughput(TrainerCallback):
    """Records where this session started (for resumed runs) and shows loss and samples/s
    on the Trainer's progress bar."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self.start_epoch = 0.0
        self.start_step = 0
        self.t_start = 0.0
        self.callbacks: list = []  # the trainer's callbacks, to find its progress bar

    def on_train_begin(self, args, state, control, **kw):
        self.start_epoch = float(state.epoch or 0.0)
        self.start_step = int(state.global_step)
        self.t_start = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        # The Trainer saves the last step but only evaluates on multiples of eval_steps; evaluate
        # it too, so the final weights compete for "best" like every other checkpoint.
        if args.eval_strategy == "steps" and state.global_step >= state.max_steps:
            control.should_evaluate = True
        return control

    def on_evaluate(self, args, state, control, metrics=None, **kw):
        if not state.is_world_process_zero or not metrics or "eval_accuracy" not in metrics:
            return
        extra = "".join(f", dev {name} {100 * metrics[f'eval_{key}']:.2f}"
                        for key, name in (("f1", "F1"), ("macro_f1", "macro-F1")) if f"eval_{key}" in metrics)
        line = (f"eval: step {state.global_step}, epoch {float(state.epoch or 0):.2f}, "
                f"dev accuracy {100 * metrics['eval_accuracy']:.2f}%{extra}")
        tqdm.write(line, file=sys.stderr)

    def on_log(self, args, state, control, logs=None, **kw):
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        seconds = time.perf_counter() - self.t_start
        steps = state.global_step - self.start_step
        rate = steps * self.batch_size * args.gradient_accumulation_steps * args.world_size / max(seconds, 1e-9)
        bar = None
        for cb in self.callbacks:
            bar = getattr(cb, "training_bar", None) or bar
        if bar is not None:
            bar.set_postfix(loss=f"{logs['loss']:.4f}", samples_s=f"{rate:.0f}")


# ---- what the manifest records -------------------------------------------------------------


def _metrics(config, trainer, result, stats, n_train, wall_s, resume_from) -> dict[str, Any]:
    import torch

    history = trainer.state.log_history
    evals = [h for h in history if "eval_accuracy" in h]
    best_step = None
    if trainer.state.best_model_checkpoint:
        tail = Path(trainer.state.best_model_checkpoint).name.split("-")[-1]
        best_step = int(tail) if tail.isdigit() else None
    best = next((e for e in evals if e.get("step") == best_step), None)
    if best is None and evals:
        best = max(evals, key=lambda e: e["eval_accuracy"])
    # Throughput of this session's training, without the time spent evaluating on dev.
    train_runtime = float(result.metrics.get("train_runtime", 0.0))
    eval_time = sum(float(e.get("eval_runtime", 0.0)) for e in evals if e.get("step", 0) > stats.start_step)
    samples = (float(trainer.state.epoch or 0.0) - stats.start_epoch) * n_train
    train_only = max(train_runtime - eval_time, 1e-9)

    # The selected evaluation's other metrics (F1 for binary, macro-F1 for > 2 classes), same keys as
    # compress and bench record (bertpress.metrics).
    others = {f"dev_{k}": float(best[f"eval_{k}"]) for k in metric_names(trainer.model.config.num_labels)[1:]
              if best is not None and f"eval_{k}" in best}
    return {
        "dev_accuracy": float(trainer.state.best_metric),
        **others,
        "best_epoch": round(float(best["epoch"]), 3) if best else None,
        "best_step": best["step"] if best else None,
        "dev_accuracy_per_epoch": [
            {"epoch": round(float(e["epoch"]), 3), "step": e["step"], "accuracy": float(e["eval_accuracy"]),
             **{k: float(e[f"eval_{k}"]) for k in ("f1", "macro_f1") if f"eval_{k}" in e}}
            for e in evals
        ],
        "epochs": round(float(trainer.state.epoch or 0.0), 3),
        "steps": int(trainer.state.global_step),
        "train_loss": float(result.training_loss),
        "train_samples": n_train,
        "train_wall_s": round(train_runtime, 2),
        "eval_wall_s": round(eval_time, 2),
        "wall_s": round(wall_s, 2),
        "train_samples_per_s": round(samples / train_only, 2),
        "resumed_from_step": stats.start_step if resume_from else None,
        "hardware": {
            "cpu": hardware.cpu_info(),
            "cuda": hardware.cuda_devices(),
            "torch_threads": torch.get_num_threads(),
            "world_size": dist.world_size(),
        },
    }


def _details(config, model, train: TextDataset, dev: TextDataset, base_labels,
             augmented: dict | None = None) -> dict[str, Any]:
    world = dist.world_size()
    return {
        "model_source": config.model,
        "data": {"train": train.source, "dev": dev.source, "dev_samples": len(dev),
                 "skipped_rows": train.skipped + dev.skipped,
                 "inputs": "text pairs" if train.pairs else "single texts"},
        "label_map_from": "model" if base_labels is not None else ("--labels" if config.labels else "data"),
        "precision": config.precision.value,
        "world_size": world,
        "effective_batch_size": config.batch_size * config.grad_accum * world,
        "padding": "dynamic (DataCollatorWithPadding) + group_by_length",
        "selection": "best dev accuracy (load_best_model_at_end)",
        "distillation": ({"teacher": str(_source_path(config.teacher)), "alpha": config.alpha,
                          "temperature": config.temperature, "augmented": augmented} if config.teacher else None),
        "params": param_count(model),
        "layers": layer_shapes(model),
    }
