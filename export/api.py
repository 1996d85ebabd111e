"""`export(source, ExportConfig, out_dir)`: the export verb.

Loads the input (checkpoint, compressed artifact or plain HF directory), writes the requested
format(s) into a staged directory, runs the parity gate on every written model file, and only
then writes the manifest and publishes. With format=all, OUT/onnx, OUT/torchscript and
OUT/openvino are each a finished artifact and OUT appears only when all of them passed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from bertpress.artifact import (Artifact, Manifest, check_output_dir, dir_size, holds_output_locks, lineage_of,
                                resolve_out, staged_output, write_manifest)
from bertpress.config import input_paths, to_tagged
from bertpress.data import columns_of, load_text_classification
from bertpress.errors import ConfigError, DeviceError, InputError
from bertpress.export.bundle import preprocessing, write_support_files
from bertpress.export.config import DEFAULT_EVAL_SAMPLES, ExportConfig, ExportFormat
from bertpress.export.formats import FORMATS, Format
from bertpress.export.onnx import check_opset
from bertpress.export.source import QuantRecipe, Source, load_source
from bertpress.export.validate import check_parity, enforce, source_eval_logits
from bertpress.export.web import find_runtime
from bertpress.models import local_path
from bertpress.signature import input_names, torch_runner
from bertpress.quiet import quiet


def texts_of(spec: str | None, split: str, n: int, seed: int, labels: list[str], *, prefer=None,
             text_column: str | None = None, text_pair_column: str | None = None, label_column: str | None = None):
    """(examples, label ids or None, the data's Columns): texts or (text, text_pair) pairs read with
    the columns the model was trained on (`prefer`) unless named; label ids only when the data's
    labels map onto the model's."""
    if not spec:
        return None, None, None
    kw = dict(prefer=prefer, text_column=text_column, text_pair_column=text_pair_column, label_column=label_column)
    try:  # labels read as names of the model's label map (string labels in any order)
        ds, same = load_text_classification(spec, split, label_names=labels, **kw), True
    except InputError:  # labels the model does not have: the texts still serve the argmax agreement
        ds = load_text_classification(spec, split, **kw)
        same = all(x.isdigit() for x in ds.label_names) and len(ds.label_names) <= len(labels)
    ds = ds.subset(n, seed=seed)
    return ds.examples, (ds.labels if same else None), ds.columns


def _quant_details(recipe: QuantRecipe, fmt: Format) -> dict[str, Any]:
    d: dict[str, Any] = {"scheme": recipe.scheme, "origin": recipe.origin, "recorded": recipe.raw}
    if recipe.int8:
        d.update(per_channel=recipe.per_channel, scope=recipe.scope, reduce_range=recipe.reduce_range)
    if recipe.scheme == "static":
        d["calibration"] = {"method": recipe.calibration_method, "data": recipe.calibration_data,
                            "samples": recipe.calibration_samples}
    d.update(fmt.applied(recipe))  # how this format applies the scheme
    return d


def gate(run, run_source, model, tokenizer, recipe: QuantRecipe, cfg: ExportConfig, max_length: int,
         num_labels: int, texts, labels, reference, progress: bool = True, *,
         reduced: str | None = None) -> dict[str, Any]:
    """The parity report of one written file against its fp32 source, with cfg's tolerances.
    `reduced` names a lower precision an fp32 file runs in (OpenVINO's bf16 on AMX CPUs): it is
    then held to the int8 tolerances (max |dlogit| int8_atol and the argmax agreement)."""
    loose = recipe.int8 or reduced is not None
    return check_parity(
        run, run_source, cfg, tokenizer=tokenizer, vocab_size=model.config.vocab_size, num_labels=num_labels,
        max_length=max_length, atol=cfg.int8_atol if loose else cfg.fp32_atol,
        precision="int8" if recipe.int8 else (reduced or "fp32"), eval_texts=texts, eval_labels=labels,
        eval_reference=reference, min_agreement=cfg.min_agreement if loose else None, progress=progress)


def _build(src: Source, cfg: ExportConfig, name: str, out: Path, eval_set, calib_texts,
           progress: bool = True, columns=None) -> dict[str, Any]:
    """Write one finished artifact (model, bundle, manifest) into `out`; returns its metrics."""
    fmt = FORMATS.get(name)()  # the format class; stateless
    recipe, model, tok = src.recipe, src.model, src.tokenizer
    precision = "int8" if recipe.int8 else "fp32"
    out.mkdir(parents=True, exist_ok=True)
    model_details, files_to_check = fmt.write(model, tok, recipe, cfg, out, src.max_length, calib_texts, progress)
    files = write_support_files(model, tok, fmt.bundle_dir(out), predict=fmt.predict, labels=list(src.labels),
                                int8=recipe.int8 if fmt.js else None)
    files, extra = fmt.finish(out, recipe, cfg, model_details, files)

    run_source = torch_runner(model)
    texts, labels, _ = eval_set
    parity, accuracy = {}, {}
    reference = source_eval_logits(run_source, tok, texts, src.max_length) if texts else None
    for label, run, reduced in files_to_check:
        report = gate(run, run_source, model, tok, recipe, cfg, src.max_length, len(src.labels),
                      texts, labels, reference, progress, reduced=reduced)
        parity[label] = report
        if "accuracy" in report:
            accuracy[label] = report["accuracy"]["export"]
            accuracy["source"] = report["accuracy"]["source"]
        enforce(report, f"the {fmt.name} export ({label})", cfg.allow_mismatch)
    metrics: dict[str, Any] = {
        "parity": parity,
        "parity_passed": all(r["passed"] for r in parity.values()),
        "size_bytes": {f: (out / f).stat().st_size for f in fmt.files(model_details)},
    }
    if accuracy:
        metrics["accuracy"] = accuracy
        metrics["accuracy_on"] = {"data": cfg.eval_data, "n": len(texts)}
    write_manifest(out, Manifest.child_of(
        src.manifest, kind=fmt.name, override=("max_length",) if cfg.max_length is not None else (),
        labels=list(src.labels),
        max_length=src.max_length,
        columns=columns.to_dict() if columns else None,  # predict.py and the web page read pairs when set
        recipe=to_tagged(cfg),
        lineage=lineage_of(src.path),
        metrics=metrics,
        details={
            "format": fmt.name,
            "precision": precision,
            "model": model_details,
            "quantization": _quant_details(recipe, fmt),
            "preprocessing": preprocessing(tok, src.max_length, input_names(model)),
            "source_kind": src.kind or "huggingface",
            "files": sorted(set(files) | {"bertpress.json"}),
            **extra,
        },
    ))
    metrics["bundle_bytes"] = dir_size(out)
    return metrics


def resolve_searched(cfg: ExportConfig, source: Path) -> ExportConfig:
    """The defaults a searched input sets (details.search, read once): format=auto -> the format its
    search measured its winner in, else onnx; eval_samples unset -> the rows the search scored its
    candidates on, drawn with its seed (compress's, which drew its calibration rows too) so the gate
    repeats the search's figure, else DEFAULT_EVAL_SAMPLES."""
    search = {}
    if Artifact.is_finished(Path(source)):
        search = (Artifact.load(Path(source)).manifest.details or {}).get("search")
        search = search if isinstance(search, dict) else {}
    changes: dict[str, Any] = {}
    if cfg.format is ExportFormat.AUTO:
        deploy = search.get("deploy")
        fmt = deploy.get("format") if isinstance(deploy, dict) else None
        changes["format"] = ExportFormat(fmt if fmt in ExportFormat.members() else "onnx")
    if cfg.eval_samples is None:
        rows = search.get("eval_samples")
        if isinstance(rows, int) and rows > 0:
            changes.update(eval_samples=rows, seed=int(search.get("eval_seed", cfg.seed)))
        else:
            changes["eval_samples"] = DEFAULT_EVAL_SAMPLES
    return dataclasses.replace(cfg, **changes)


@holds_output_locks  # one live run per --out (artifact.output_locks)
def export(source: str | Path, cfg: ExportConfig | None = None, out_dir: str | Path = "export", *,
           overwrite: bool = False, progress: bool = True) -> Artifact | list[Artifact]:
    """Export `source` to ONNX, TorchScript and/or OpenVINO IR under `out_dir`.

    Returns the Artifact written; for format=all a list [onnx, torchscript, openvino] (OUT/onnx,
    OUT/torchscript, OUT/openvino, each a finished artifact). Raises ParityError, and publishes nothing, when an
    exported model misses its tolerance, unless cfg.allow_mismatch (the figures are recorded)."""
    cfg = cfg or ExportConfig()
    if not isinstance(cfg, ExportConfig):
        raise ConfigError(f"cfg must be an ExportConfig, got {type(cfg).__name__}; build one with ExportConfig(...)")
    source = local_path(source)
    out_dir = Path(out_dir)
    cfg = resolve_searched(cfg, source)
    inputs = (source, *input_paths(cfg))  # the model, eval and calibration data
    check_output_dir(out_dir, overwrite=overwrite, inputs=inputs)  # fail fast, before the slow load
    if cfg.format not in (ExportFormat.TORCHSCRIPT, ExportFormat.OPENVINO):
        check_opset(cfg.opset)
    if cfg.format == ExportFormat.WEB:  # fail fast, before the slow load: the page's JS must exist
        find_runtime(cfg.web_runtime)
    formats = list(ExportFormat.members()) if cfg.format == ExportFormat.ALL else [cfg.format.value]
    if "openvino" in formats:  # fail fast, with the fix, before the slow load
        try:
            import nncf  # noqa: F401
            import openvino  # noqa: F401
        except ImportError as exc:
            raise DeviceError(f"--format openvino needs the openvino and nncf packages ({exc}); install bertpress "
                              "with its dependencies (pip install -e .), or pick --format onnx") from None
    src = load_source(source, cfg)
    named = dict(text_column=cfg.text_column, text_pair_column=cfg.text_pair_column, label_column=cfg.label_column)
    prefer = columns_of(src.manifest)  # what the model was trained on: its eval and calibration rows read the same way
    eval_set = texts_of(cfg.eval_data, "dev", cfg.eval_samples, cfg.seed, src.labels, prefer=prefer, **named)
    prefer = prefer or eval_set[2]  # a model without a manifest: the eval data names its inputs
    calib = None
    if src.recipe.scheme == "static" and cfg.format != ExportFormat.TORCHSCRIPT:
        if not src.recipe.calibration_data:
            raise ConfigError(
                "static int8 needs calibration texts and the input records none; pass --calibration-data "
                "FILE (or --quantize dynamic)"
            )
        calib, _, calib_columns = texts_of(src.recipe.calibration_data, "train", src.recipe.calibration_samples,
                                           cfg.seed, src.labels, prefer=prefer, **named)
        prefer = prefer or calib_columns
    recorded = src.recipe.calibration_data  # calibration data named by the input's manifest is an input too
    if recorded and Path(recorded).expanduser().exists():
        inputs = (*inputs, Path(recorded).expanduser())
    with staged_output(out_dir, overwrite=overwrite, inputs=inputs) as tmp, quiet():
        for fmt in formats:
            target = tmp / fmt if len(formats) > 1 else tmp
            _build(src, cfg, fmt, target, eval_set, calib, progress, columns=prefer)
    out_dir = resolve_out(out_dir)
    if len(formats) == 1:
        return Artifact.load(out_dir)
    return [Artifact.load(out_dir / fmt) for fmt in formats]
