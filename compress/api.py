"""`compress(checkpoint, CompressConfig, out_dir) -> Artifact` and `load_compressed(path)`.

The pipeline is prune -> recover -> quantize; each step is the handler registered for its
config type in `HANDLERS` (adding a method = a config class + one handler). With
`cfg.search`, `search.run_search` walks ratios x schemes with the same handlers instead.
The artifact is the fp32 (pruned/recovered) HF model + tokenizer; the quantization to apply is
in the manifest's `details.quantization` (+ `quantization_ranges.json` for static int8), which
`load_compressed` replays and `export` reproduces in ONNX/TorchScript.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

from bertpress.artifact import (Artifact, Manifest, check_output_dir, dir_size, holds_output_locks, lineage_of,
                                staged_output,
                                write_manifest)
from bertpress import records
from bertpress.arch import max_positions
from bertpress.compress import quantize as Q
from bertpress.compress.config import CompressConfig, PruneConfig, QuantizeConfig, RecoverConfig, schedule_ratios
from bertpress.compress.evaluate import batches, scores, state_size
from bertpress.compress.prune import NothingRemoved, check_prunable, plan_layers, plan_shapes, prune_model
from bertpress.compress import autosearch
from bertpress.compress.search import run_search
from bertpress.compress.state import HANDLERS, Work, handler
from bertpress.config import input_paths, to_tagged
from bertpress.data import Columns, columns_of, data_spec
from bertpress.errors import ArtifactError, ConfigError
from bertpress import finetune  # called as finetune.recover: looked up when the step runs
from bertpress.metrics import prefixed
from bertpress.models import label_names_of, layer_shapes, load_classifier, param_count, resolve_source
from bertpress.quiet import quiet

# ---- handlers ------------------------------------------------------------------------------


@handler(PruneConfig)
def apply_prune(work: Work, cfg: PruneConfig) -> Work:
    if not cfg.active:
        work.details["pruning"] = None
        return work
    calib = None
    if cfg.importance.value == "taylor" and cfg.scores_channels:
        data = work.load_data(cfg.calibration_data, "train", "--calibration-data")
        n = min(len(data), cfg.calibration_batches * cfg.batch_size)
        data = data.subset(n, seed=work.cfg.seed)
        calib = batches(work.tokenizer, data.examples, data.labels, batch_size=cfg.batch_size,
                        max_length=cfg.max_length)
    work.model, facts = prune_model(work.model, work.tokenizer, cfg, calib)
    if calib is not None:
        facts["calibration_data"] = data_spec(cfg.calibration_data)
    work.details["pruning"] = records.PruningRecord(**facts)
    work.qmodel, work.ranges = None, None
    return work


@handler(RecoverConfig)
def apply_recover(work: Work, cfg: RecoverConfig) -> Work:
    if not cfg.active:
        work.details["recovery"] = None
        return work
    if not work.details.get("pruning"):
        work.details["recovery"] = {"skipped": "nothing was pruned, so there is nothing to recover"}
        return work
    spec = work.cfg.recover_data
    flag = "recover.data" if cfg.data else "--calibration-data"
    train = work.load_data(spec, "train", flag).subset(cfg.samples, seed=cfg.seed)
    eval_data = work.eval_data
    tmp = Path(tempfile.mkdtemp(prefix="bertpress-recover-"))
    for p in work.model.parameters():  # pruning leaves the student frozen; it trains now
        p.requires_grad_(True)
    record = work.details["pruning"]
    kept = list(record.layers_kept) or None  # student layer j came from teacher layer kept[j]
    try:
        work.model = finetune.recover(work.model, work.teacher, work.tokenizer, train, cfg, eval_data=eval_data,
                                      layer_map=kept, head_map=record.heads_kept(), work_dir=tmp,
                                      progress=work.progress, callbacks=work.recover_callbacks)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    work.model.eval()
    for p in work.model.parameters():
        p.requires_grad_(False)
    work.details["recovery"] = {"method": "distillation from the unpruned model (bertpress.finetune.recover)",
                                "data": data_spec(spec), "source": train.source,
                                "samples": len(train), "epochs": cfg.epochs,
                                "lr": cfg.lr, "alpha": cfg.alpha, "temperature": cfg.temperature,
                                "hidden_weight": cfg.hidden_weight, "attention_weight": cfg.attention_weight,
                                "max_steps": cfg.max_steps, "min_steps": cfg.min_steps,
                                "augment": cfg.augment, "augment_prob": cfg.augment_prob,
                                "metrics": dict(getattr(work.model, "recover_metrics", {}) or {})}
    work.qmodel, work.ranges = None, None
    return work


@handler(QuantizeConfig)
def apply_quantize(work: Work, cfg: QuantizeConfig) -> Work:
    """Apply the scheme's registered implementation (compress.quantize.SCHEMES); record it."""
    work.qmodel, work.ranges = None, None
    work.details["quantization"] = Q.SCHEMES.get(cfg.scheme)().quantize(work, cfg, Q.int8_formats())
    return work


def run_pipeline(work: Work) -> Work:
    for step in (work.cfg.prune, work.cfg.recover, work.cfg.quantize):
        work = HANDLERS[type(step)](work, step)
    return work


# ---- the verb ------------------------------------------------------------------------------


def _parent_max_length(checkpoint: Path, model) -> int:
    if Artifact.is_finished(checkpoint):  # a bad manifest (e.g. max_length out of range) is refused
        ml = Artifact.load(checkpoint).manifest.max_length
        if ml:
            return int(ml)
    return int(max_positions(model.config) or 512)


def _parent_manifest(checkpoint: Path) -> Manifest | None:
    """The input model's manifest (None: an HF directory or hub id without one)."""
    return Artifact.load(checkpoint).manifest if Artifact.is_finished(checkpoint) else None


@holds_output_locks  # one live run per --out (artifact.output_locks)
def compress(checkpoint: str | os.PathLike, cfg: CompressConfig, out_dir: str | os.PathLike, *,
             overwrite: bool = False, progress: bool = True, log: Callable[[str], None] | None = None,
             runtimes: Mapping[str, Callable[..., Any]] | None = None) -> Artifact:
    """Compress a checkpoint into a new `compressed` artifact at `out_dir` (input untouched).
    `runtimes`: the search's deploy runtimes (name -> twin factory; see `search.run_search`),
    which need the export stage: the composition root passes `bertpress.app.search_runtimes.DEPLOY_RUNTIMES`."""
    if not isinstance(cfg, CompressConfig):
        raise ConfigError(f"cfg must be a CompressConfig, got {type(cfg).__name__}")
    src, local = resolve_source(checkpoint)
    inputs = ((Path(src),) if local else ()) + input_paths(cfg)  # model + calibration/eval/recovery data
    out_dir = check_output_dir(Path(out_dir), overwrite=overwrite, inputs=inputs)
    model, tokenizer = load_classifier(checkpoint)
    if cfg.prune.active or (cfg.search is not None and not cfg.search.auto):  # (the automatic search skips
        check_prunable(model)                                                  # the shapes a model cannot take)
        ratios = cfg.search.schedule if cfg.search is not None else [(cfg.prune.heads, cfg.prune.ffn, cfg.prune.layers)]
        for heads, ffn, layers in map(schedule_ratios, ratios):  # refuse impossible shapes before any long work
            pcfg = dataclasses.replace(cfg.prune, heads=heads, ffn=ffn, layers=layers)
            try:
                plan_shapes(model, pcfg)
                plan_layers(model, pcfg)
            except NothingRemoved:
                if cfg.search is None:
                    raise  # a search skips that candidate with a note (search._walk)
    labels = label_names_of(model)
    for p in model.parameters():
        p.requires_grad_(False)
    parent = _parent_manifest(Path(src))
    work = Work(model=copy.deepcopy(model), tokenizer=tokenizer, teacher=model, labels=labels, cfg=cfg,
                progress=progress, columns=columns_of(parent))
    if cfg.eval_data is not None:
        work.eval_data = work.load_data(cfg.eval_data, cfg.eval_split, "--eval-data")
        if cfg.search is not None and cfg.search.eval_samples:
            work.eval_data = work.eval_data.subset(cfg.search.eval_samples, seed=cfg.seed)
    max_length = _parent_max_length(Path(src), model)
    say = log or (lambda s: None)

    metrics: dict[str, Any] = {}
    search_facts = None
    if cfg.search is not None:
        if cfg.search.auto:
            work, search_facts = autosearch.run_auto_search(work, cfg, say, max_length, out_dir, runtimes)
        else:
            work, search_facts = run_search(work, cfg, say, max_length, runtimes)
        metrics.update(search_facts["winner_metrics"])
    else:
        work = run_pipeline(work)
        if work.eval_data is not None:
            base = scores(work.teacher, tokenizer, work.eval_data, max_length=max_length)
            got = scores(work.final, tokenizer, work.eval_data, max_length=max_length)
            metrics.update({**prefixed(got, "eval_"),
                            **{f"eval_{k}_uncompressed": v for k, v in base.items()},
                            "accuracy_drop_points": 100 * (base["accuracy"] - got["accuracy"]),
                            "eval_data": work.eval_data.source, "eval_samples": len(work.eval_data)})
    metrics["params"] = param_count(work.model)
    metrics["params_uncompressed"] = param_count(work.teacher)
    metrics["state_bytes"] = state_size(work.final)
    metrics["state_bytes_uncompressed"] = state_size(work.teacher)

    with staged_output(out_dir, overwrite=overwrite, inputs=inputs) as tmp:
        with contextlib.nullcontext() if progress else quiet():  # transformers 5 draws a shard bar
            work.model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if work.ranges is not None:
            Q.save_ranges(tmp, work.details["quantization"].calibration.method, work.ranges)
        details = dict(work.details)
        for key in ("quantization", "pruning"):  # typed records, tagged in the manifest
            details[key] = records.encode(details.get(key))
        details.setdefault("pruning", None)
        details.setdefault("recovery", None)
        details["shapes"] = layer_shapes(work.model)
        details["search"] = search_facts
        metrics["dir_bytes_fp32"] = dir_size(tmp)
        write_manifest(tmp, Manifest.child_of(
            parent, kind="compressed", labels=labels, max_length=max_length,
            columns=work.columns.to_dict() if work.columns else None, recipe=to_tagged(cfg),
            lineage=lineage_of(src), metrics=metrics, details=details))
    if cfg.search is not None and cfg.search.auto:  # published: the study and its students are done with
        autosearch.remove_study(out_dir)
    return Artifact.load(out_dir)


# ---- loading -------------------------------------------------------------------------------


def load_compressed(path: str | os.PathLike):
    """(model, tokenizer) of a compressed artifact, with its recorded quantization applied."""
    path = Path(path)
    art = Artifact.load(path)
    if art.kind != "compressed":
        raise ArtifactError(f"{path}: a {art.kind!r} artifact, not 'compressed'; give a compress output")
    rec = records.read(art.manifest.details, "quantization", records.QuantizationRecord, where=str(path))
    model, tokenizer = load_classifier(path)  # a pruned model is rebuilt from the manifest there
    for p in model.parameters():
        p.requires_grad_(False)
    return (Q.apply_recorded(model, rec, path) if rec else model).eval(), tokenizer
