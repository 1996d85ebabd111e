"""`export(source, ExportConfig, out_dir)`: the export verb.

Loads the input (checkpoint, compressed artifact or plain HF directory), writes the requested
format(s) into a staged directory, runs the parity gate on every written model file, and only
then writes the manifest and publishes. With format=all, OUT/onnx, OUT/torchscript and
OUT/openvino are each a finished artifact and OUT appears only when all of them passed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from bertpress.artifact import Artifact, Manifest, dir_size, lineage_of, resolve_out, staged_output, write_manifest
from bertpress.config import to_tagged
from bertpress.errors import ConfigError, DeviceError
from bertpress.export.bundle import preprocessing, write_support_files
from bertpress.export.config import ExportConfig, ExportFormat
from bertpress.export.source import QuantRecipe, Source, load_source
from bertpress.export.validate import check_parity, enforce, source_eval_logits
from bertpress.quiet import quiet


def texts_of(spec: str | None, split: str, n: int, seed: int, labels: list[str], *, prefer=None,
             text_column: str | None = None, text_pair_column: str | None = None, label_column: str | None = None):
    """(examples, label ids or None, the data's Columns): texts or (text, text_pair) pairs read with
    the columns the model was trained on (`prefer`) unless named; label ids only when the data's
    labels map onto the model's."""
    if not spec:
        return None, None, None
    from bertpress.data import load_text_classification

    from bertpress.errors import InputError

    kw = dict(prefer=prefer, text_column=text_column, text_pair_column=text_pair_column, label_column=label_column)
    try:  # labels read as names of the model's label map (string labels in any order)
        ds, same = load_text_classification(spec, split, label_names=labels, **kw), True
    except InputError:  # labels the model does not have: the texts still serve the argmax agreement
        ds = load_text_classification(spec, split, **kw)
        same = all(x.isdigit() for x in ds.label_names) and len(ds.label_names) <= len(labels)
    ds = ds.subset(n, seed=seed)
    return ds.examples, (ds.labels if same else None), ds.columns


def _quant_details(recipe: QuantRecipe, fmt: str) -> dict[str, Any]:
    d: dict[str, Any] = {"scheme": recipe.scheme, "origin": recipe.origin, "recorded": recipe.raw}
    if recipe.int8:
        d.update(per_channel=recipe.per_channel, scope=recipe.scope, reduce_range=recipe.reduce_range)
    if recipe.scheme == "static":
        d["calibration"] = {"method": recipe.calibration_method, "data": recipe.calibration_data,
                            "samples": recipe.calibration_samples}
    if fmt == "torchscript" and recipe.scheme == "static":
        d["applied"] = "dynamic"
        d["note"] = ("TorchScript export applies torch.ao dynamic int8 to static recipes: int8 weights, "
                     "activation scales computed at run time (static QDQ lives in the ONNX export)")
    elif fmt == "torchscript" and recipe.int8:
        d["applied"] = "dynamic"
        d["note"] = (f"torch.ao dynamic int8 ({'per-channel' if recipe.per_channel else 'per-tensor'} "
                     "nn.Linear weights, activations quantized per call, x86 engine)")
    elif fmt == "openvino" and recipe.scheme == "dynamic":
        d["applied"] = "dynamic"
        d["note"] = ("NNCF int8 weight compression (INT8_SYM, per output channel); activations are quantized "
                     "per call by OpenVINO's CPU plugin where it supports it, else run in the inference precision")
    elif recipe.int8:
        d["applied"] = recipe.scheme
    return d


def write_onnx(model, tokenizer, recipe: QuantRecipe, cfg: ExportConfig, out: Path, max_length: int,
               calib_texts) -> dict[str, Any]:
    """OUT/model.onnx (and model.ort) for `recipe` under `cfg`; returns the model details. Also
    what compress's ONNX Runtime search calls, so its candidates are exactly what export writes."""
    from bertpress.export.onnx import export_onnx

    with tempfile.TemporaryDirectory(prefix="bertpress-export-") as work:
        return export_onnx(
            model, tokenizer, out, Path(work), opset=cfg.opset, optimize=cfg.optimize.value, scheme=recipe.scheme,
            weight_type=cfg.weight_type.value, per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range, scope=recipe.scope, trace_batch=cfg.trace_batch,
            trace_seq=cfg.trace_seq, max_length=max_length, calibration_texts=calib_texts,
            calibration_method=recipe.calibration_method, ort_format=cfg.ort_format,
            fuse_skip_layernorm=cfg.fuse_skip_layernorm, seed=cfg.seed)


def gate(run, run_source, model, tokenizer, recipe: QuantRecipe, cfg: ExportConfig, max_length: int,
         num_labels: int, texts, labels, reference, progress: bool = True, *,
         reduced: str | None = None) -> dict[str, Any]:
    """The parity report of one written file against its fp32 source, with cfg's tolerances.
    `reduced` names a lower precision an fp32 file runs in (OpenVINO's bf16 on AMX CPUs): it is
    then held to the int8 tolerances (max |dlogit| int8_atol and the argmax agreement)."""
    loose = recipe.int8 or reduced is not None
    return check_parity(
        run, run_source, tokenizer=tokenizer, vocab_size=model.config.vocab_size, num_labels=num_labels,
        max_length=max_length, batch_sizes=cfg.batch_sizes, seq_lengths=cfg.seq_lengths,
        trace_shape=(cfg.trace_batch, cfg.trace_seq), atol=cfg.int8_atol if loose else cfg.fp32_atol,
        precision="int8" if recipe.int8 else (reduced or "fp32"), eval_texts=texts, eval_labels=labels,
        eval_reference=reference, min_agreement=cfg.min_agreement if loose else None, seed=cfg.seed,
        progress=progress)


def openvino_checks(file: Path) -> tuple[list[tuple[str, Any, str | None]], dict[str, Any]]:
    """What the gate runs for an OpenVINO IR: the file compiled with INFERENCE_PRECISION_HINT=f32
    (the IR itself, held to the file's own tolerance), and, where OpenVINO's default precision on
    this CPU is lower (bf16 on AMX), the file as it runs by default (held to reduced-precision
    tolerances). Returns ([(label, runner, reduced precision or None)], what the default compile
    reports: bertpress.openvino_rt.describe)."""
    import torch

    from bertpress import openvino_rt

    threads = max(1, torch.get_num_threads())  # the source model's; the gate is not timed
    default = openvino_rt.session(file, threads=threads)
    info = openvino_rt.describe(default)

    def runner(sess):
        return lambda feed: sess.run({n: feed[n] for n in sess.input_names})

    ran = default.precision
    if ran == "f32":  # the default compile is the strict one
        return [(file.name, runner(default), None)], info
    strict = openvino_rt.session(file, threads=threads, precision="f32")
    words = {"bf16": "bf16", "f16": "fp16"}
    return [(file.name, runner(strict), None), (f"{file.name}@{ran}", runner(default), words.get(ran, ran))], info


def _build(src: Source, cfg: ExportConfig, fmt: str, out: Path, eval_set, calib_texts,
           progress: bool = True, columns=None) -> dict[str, Any]:
    """Write one finished artifact (model, bundle, manifest) into `out`; returns its metrics."""
    from bertpress.signature import input_names, torch_runner

    recipe, model, tok = src.recipe, src.model, src.tokenizer
    precision = "int8" if recipe.int8 else "fp32"
    out.mkdir(parents=True, exist_ok=True)
    # (label in metrics.parity, runner, reduced precision it runs in or None); model_files: sizes
    files_to_check: list[tuple[str, Any, str | None]] = []
    web: dict[str, Any] | None = None
    bundle_dir = out  # where the tokenizer files and config.json go
    if fmt in ("onnx", "web"):
        from bertpress.export.bundle import JS_DIR, js_model_name, js_session_options, link_for_js
        from bertpress.ort import runner as ort_runner

        model_details = write_onnx(model, tok, recipe, cfg, out, src.max_length, calib_texts)
        model_details["js_session_options"] = js_session_options(model_details["ort_disabled_optimizers"])
        if fmt == "onnx":
            model_details["js_file"] = link_for_js(out / "model.onnx", out, recipe.int8).relative_to(out).as_posix()
            files_to_check.append(("model.onnx", ort_runner(out / "model.onnx"), None))
            if cfg.ort_format:
                files_to_check.append(("model.ort", ort_runner(out / "model.ort"), None))
        else:  # web: the model only where transformers.js reads it (no second name to upload)
            from bertpress.export.web import MODEL_DIR, find_runtime

            runtime = find_runtime(cfg.web_runtime)
            bundle_dir = out / MODEL_DIR
            rel = f"{MODEL_DIR}/{JS_DIR}/{js_model_name(recipe.int8)}"
            (out / rel).parent.mkdir(parents=True)
            os.replace(out / "model.onnx", out / rel)
            model_details["file"] = rel
            files_to_check.append((rel, ort_runner(out / rel), None))
        model_files = [name for name, _, _ in files_to_check]
    elif fmt == "openvino":
        from bertpress.export.openvino import FILE_NAME, WEIGHTS_NAME, export_openvino

        model_details = export_openvino(model, tok, out, recipe=recipe, trace_batch=cfg.trace_batch,
                                        trace_seq=cfg.trace_seq, max_length=src.max_length,
                                        calibration_texts=calib_texts, seed=cfg.seed, progress=progress)
        files_to_check, info = openvino_checks(out / FILE_NAME)
        # What OpenVINO ran on this (the exporting) CPU by default: inference precision, hints,
        # and the precision each FullyConnected layer ran in. Another CPU may choose differently.
        model_details["runtime"] = info
        model_details["inference_precision"] = info["inference_precision"]
        model_files = [FILE_NAME, WEIGHTS_NAME]
    else:
        from bertpress.export.torchscript import export_torchscript, load_torchscript

        model_details, traced_from = export_torchscript(model, tok, out, recipe=recipe, trace_batch=cfg.trace_batch,
                                                        trace_seq=cfg.trace_seq, seed=cfg.seed)
        files_to_check.append(("model.pt", torch_runner(load_torchscript(out / "model.pt")), None))
        model_files = ["model.pt"]
        if recipe.int8:
            # The int8 file is gated against the fp32 source (loose); this strict check against
            # the eager int8 module it was traced from proves the trace itself froze nothing.
            fidelity = check_parity(
                files_to_check[0][1], torch_runner(traced_from), tokenizer=tok, vocab_size=model.config.vocab_size,
                num_labels=len(src.labels), max_length=src.max_length, batch_sizes=cfg.batch_sizes,
                seq_lengths=cfg.seq_lengths, trace_shape=(cfg.trace_batch, cfg.trace_seq), atol=cfg.fp32_atol,
                precision="int8 trace vs eager int8", seed=cfg.seed, progress=progress)
            enforce(fidelity, "the int8 TorchScript trace (vs the eager int8 model)", cfg.allow_mismatch)
            model_details["trace_fidelity"] = {k: fidelity[k] for k in ("max_abs_diff", "atol", "passed", "failures")}
    files = write_support_files(model, tok, bundle_dir, predict=fmt == "onnx", labels=list(src.labels),
                                int8=recipe.int8 if fmt in ("onnx", "web") else None)
    if fmt == "onnx":
        files.append(model_details["js_file"])
    elif fmt == "web":
        from bertpress.export.web import MODEL_DIR, web_details, write_page

        page = write_page(out, runtime)
        files = [f"{MODEL_DIR}/{f}" for f in files] + [model_details["file"]] + page
        web = web_details(runtime, model_details["file"], "q8" if recipe.int8 else "fp32",
                          model_details["js_session_options"], page)

    run_source = torch_runner(model)
    texts, labels, _ = eval_set
    parity, accuracy = {}, {}
    reference = source_eval_logits(run_source, tok, texts, src.max_length) if texts else None
    for name, run, reduced in files_to_check:
        report = gate(run, run_source, model, tok, recipe, cfg, src.max_length, len(src.labels),
                      texts, labels, reference, progress, reduced=reduced)
        parity[name] = report
        if "accuracy" in report:
            accuracy[name] = report["accuracy"]["export"]
            accuracy["source"] = report["accuracy"]["source"]
        enforce(report, f"the {fmt} export ({name})", cfg.allow_mismatch)
    metrics: dict[str, Any] = {
        "parity": parity,
        "parity_passed": all(r["passed"] for r in parity.values()),
        "size_bytes": {name: (out / name).stat().st_size for name in model_files},
    }
    if accuracy:
        metrics["accuracy"] = accuracy
        metrics["accuracy_on"] = {"data": cfg.eval_data, "n": len(texts)}
    write_manifest(out, Manifest.child_of(
        src.manifest, kind=fmt, override=("max_length",) if cfg.max_length is not None else (),
        labels=list(src.labels),
        max_length=src.max_length,
        columns=columns.to_dict() if columns else None,  # predict.py and the web page read pairs when set
        recipe=to_tagged(cfg),
        lineage=lineage_of(src.path),
        metrics=metrics,
        details={
            "format": fmt,
            "precision": precision,
            "model": model_details,
            "quantization": _quant_details(recipe, fmt),
            "preprocessing": preprocessing(tok, src.max_length, input_names(model)),
            "source_kind": src.kind or "huggingface",
            "files": sorted(set(files) | {"bertpress.json"}),
            **({"web": web} if web else {}),
        },
    ))
    metrics["bundle_bytes"] = dir_size(out)
    return metrics


def export(source: str | Path, cfg: ExportConfig | None = None, out_dir: str | Path = "export", *,
           overwrite: bool = False, progress: bool = True) -> Artifact | list[Artifact]:
    """Export `source` to ONNX, TorchScript and/or OpenVINO IR under `out_dir`.

    Returns the Artifact written; for format=all a list [onnx, torchscript, openvino] (OUT/onnx,
    OUT/torchscript, OUT/openvino, each a finished artifact). Raises ParityError, and publishes nothing, when an
    exported model misses its tolerance, unless cfg.allow_mismatch (the figures are recorded)."""
    from bertpress.artifact import check_output_dir

    cfg = cfg or ExportConfig()
    if not isinstance(cfg, ExportConfig):
        raise ConfigError(f"cfg must be an ExportConfig, got {type(cfg).__name__}; build one with ExportConfig(...)")
    from bertpress.models import local_path

    source = local_path(source)
    out_dir = Path(out_dir)
    from bertpress.config import input_paths

    inputs = (source, *input_paths(cfg))  # the model, eval and calibration data
    check_output_dir(out_dir, overwrite=overwrite, inputs=inputs)  # fail fast, before the slow load
    if cfg.format not in (ExportFormat.TORCHSCRIPT, ExportFormat.OPENVINO):
        from bertpress.export.onnx import check_opset

        check_opset(cfg.opset)
    if cfg.format == ExportFormat.WEB:  # fail fast, before the slow load: the page's JS must exist
        from bertpress.export.web import find_runtime

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
    from bertpress.data import columns_of

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
