"""The export formats, one class each, registered in `FORMATS` (adding a format = one class + one
registration). A format knows how to write its model file(s) from the fp32 source and the int8
recipe, how its file runs as deployed (the gate's and the search's runner, and the reduced
precision it runs in), which files hold the model, what its int8 recipe becomes in it, and how to
open a session for timing. `export` (api._build), compress's deploy-runtime search
(app.search_runtimes) and bench read the same table.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from bertpress import openvino_rt
from bertpress.export.bundle import JS_DIR, js_model_name, js_session_options, link_for_js
from bertpress.export.config import ExportConfig, ExportFormat
from bertpress.export.onnx import export_onnx
from bertpress.export.openvino import export_openvino
from bertpress.export.source import QuantRecipe
from bertpress.export.torchscript import export_torchscript, load_torchscript
from bertpress.export.validate import check_parity, enforce
from bertpress.export.web import MODEL_DIR, find_runtime, web_details, write_page
from bertpress.ort import runner as ort_runner
from bertpress.ort import session as ort_session
from bertpress.registry import Registry
from bertpress.signature import script_input_names, torch_runner

Check = tuple[str, Callable, "str | None"]  # (label in metrics.parity, feed -> logits, reduced precision or None)

FORMATS: Registry = Registry("export format", names=(*ExportFormat.members(), ExportFormat.WEB.value))


class Format:
    """One export format. `write` returns (model details for the manifest, the checks the gate runs)."""

    name: str
    file: str  # the model file a runtime opens
    predict = False  # the bundle carries predict.py
    js = False  # the bundle is a transformers.js model folder (config.json's dtype)

    def write(self, model, tokenizer, recipe: QuantRecipe, cfg: ExportConfig, out: Path, max_length: int,
              calib, progress: bool = True) -> tuple[dict[str, Any], list[Check]]:
        raise NotImplementedError

    def runner(self, file: Path) -> tuple[Callable, str | None]:
        """(feed -> logits as the file runs when deployed, the reduced precision it runs in or None)."""
        raise NotImplementedError

    def files(self, details: dict[str, Any]) -> list[str]:
        """The model files (their sizes are the artifact's size_bytes)."""
        return [self.file]

    def session(self, file: Path, threads: int) -> tuple[Callable[[dict], Any], set[str]]:
        """(one inference on a feed, the input names it takes) for timing."""
        raise NotImplementedError

    def applied(self, recipe: QuantRecipe) -> dict[str, Any]:
        """How the recipe's int8 scheme is applied in this format (details.quantization)."""
        return {"applied": recipe.scheme} if recipe.int8 else {}

    def bundle_dir(self, out: Path) -> Path:
        """Where the tokenizer files and config.json go."""
        return out

    def finish(self, out: Path, recipe: QuantRecipe, cfg: ExportConfig, details: dict[str, Any],
               files: list[str]) -> tuple[list[str], dict[str, Any]]:
        """After the support files: (the bundle's files, extra manifest details)."""
        return files, {}


def write_onnx(model, tokenizer, recipe: QuantRecipe, cfg: ExportConfig, out: Path, max_length: int,
               calib_texts) -> dict[str, Any]:
    """OUT/model.onnx (and model.ort) for `recipe` under `cfg`; returns the model details."""
    with tempfile.TemporaryDirectory(prefix="bertpress-export-") as work:
        return export_onnx(model, tokenizer, out, Path(work), cfg, recipe, max_length, calib_texts)


@FORMATS.register("onnx")
class Onnx(Format):
    name, file, predict, js = "onnx", "model.onnx", True, True

    def write(self, model, tokenizer, recipe, cfg, out, max_length, calib, progress=True):
        details = write_onnx(model, tokenizer, recipe, cfg, out, max_length, calib)
        details["js_session_options"] = js_session_options(details["ort_disabled_optimizers"])
        details["js_file"] = link_for_js(out / self.file, out, recipe.int8).relative_to(out).as_posix()
        checks = [(self.file, *self.runner(out / self.file))]
        if cfg.ort_format:
            checks.append(("model.ort", *self.runner(out / "model.ort")))
        return details, checks

    def runner(self, file):
        return ort_runner(file), None

    def files(self, details):
        return [self.file] + (["model.ort"] if details.get("ort_file") else [])

    def session(self, file, threads):
        sess = ort_session(file, threads=threads)
        return (lambda feed: sess.run(["logits"], feed)), {i.name for i in sess.get_inputs()}

    def finish(self, out, recipe, cfg, details, files):
        return files + [details["js_file"]], {}


@FORMATS.register("web")
class Web(Onnx):
    """The ONNX model where transformers.js reads it, and a static page around it."""

    name, predict = "web", False

    def write(self, model, tokenizer, recipe, cfg, out, max_length, calib, progress=True):
        details = write_onnx(model, tokenizer, recipe, cfg, out, max_length, calib)
        details["js_session_options"] = js_session_options(details["ort_disabled_optimizers"])
        find_runtime(cfg.web_runtime)  # refused before the model moves if the page's JS is missing
        rel = f"{MODEL_DIR}/{JS_DIR}/{js_model_name(recipe.int8)}"
        (out / rel).parent.mkdir(parents=True)
        os.replace(out / self.file, out / rel)  # the model only where transformers.js reads it
        details["file"] = rel
        return details, [(rel, *self.runner(out / rel))]

    def files(self, details):
        return [details["file"]]

    def bundle_dir(self, out):
        return out / MODEL_DIR

    def finish(self, out, recipe, cfg, details, files):
        runtime = find_runtime(cfg.web_runtime)
        page = write_page(out, runtime)
        files = [f"{MODEL_DIR}/{f}" for f in files] + [details["file"]] + page
        return files, {"web": web_details(runtime, details["file"], "q8" if recipe.int8 else "fp32",
                                          details["js_session_options"], page)}


def openvino_checks(file: Path) -> tuple[list[Check], dict[str, Any]]:
    """What the gate runs for an OpenVINO IR: the file compiled with INFERENCE_PRECISION_HINT=f32
    (the IR itself, held to the file's own tolerance), and, where OpenVINO's default precision on
    this CPU is lower (bf16 on AMX), the file as it runs by default (held to reduced-precision
    tolerances). Returns ([(label, runner, reduced precision or None)], what the default compile
    reports: bertpress.openvino_rt.describe)."""
    import torch  # lazy: keeps torch off this module's import (the gate only reads its thread count)

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


@FORMATS.register("openvino")
class OpenVINO(Format):
    name, file, weights = "openvino", "openvino_model.xml", "openvino_model.bin"

    def write(self, model, tokenizer, recipe, cfg, out, max_length, calib, progress=True):
        details = export_openvino(model, tokenizer, out, recipe=recipe, trace_batch=cfg.trace_batch,
                                  trace_seq=cfg.trace_seq, max_length=max_length, calibration_texts=calib,
                                  seed=cfg.seed, progress=progress)
        checks, info = openvino_checks(out / self.file)
        # What OpenVINO ran on this (the exporting) CPU by default: inference precision, hints,
        # and the precision each FullyConnected layer ran in. Another CPU may choose differently.
        details["runtime"] = info
        details["inference_precision"] = info["inference_precision"]
        return details, checks

    def runner(self, file):
        checks, _ = openvino_checks(file)
        _, run, reduced = checks[-1]  # the default compile: what a deployment runs
        return run, reduced

    def files(self, details):
        return [self.file, self.weights]

    def session(self, file, threads):
        sess = openvino_rt.session(file, threads=threads)
        return sess.run, set(sess.input_names)

    def applied(self, recipe):
        if recipe.scheme == "dynamic":
            return {"applied": "dynamic",
                    "note": ("NNCF int8 weight compression (INT8_SYM, per output channel); activations are quantized "
                             "per call by OpenVINO's CPU plugin where it supports it, else run in the inference "
                             "precision")}
        return super().applied(recipe)


@FORMATS.register("torchscript")
class TorchScript(Format):
    name, file = "torchscript", "model.pt"

    def write(self, model, tokenizer, recipe, cfg, out, max_length, calib, progress=True):
        details, traced_from = export_torchscript(model, tokenizer, out, recipe=recipe, trace_batch=cfg.trace_batch,
                                                  trace_seq=cfg.trace_seq, seed=cfg.seed)
        run = torch_runner(load_torchscript(out / self.file))
        if recipe.int8:
            # The int8 file is gated against the fp32 source (loose); this strict check against
            # the eager int8 module it was traced from proves the trace itself froze nothing.
            fidelity = check_parity(
                run, torch_runner(traced_from), cfg, tokenizer=tokenizer, vocab_size=model.config.vocab_size,
                num_labels=model.config.num_labels, max_length=max_length, atol=cfg.fp32_atol,
                precision="int8 trace vs eager int8", progress=progress)
            enforce(fidelity, "the int8 TorchScript trace (vs the eager int8 model)", cfg.allow_mismatch)
            details["trace_fidelity"] = {k: fidelity[k] for k in ("max_abs_diff", "atol", "passed", "failures")}
        return details, [(self.file, run, None)]

    def runner(self, file):
        return torch_runner(load_torchscript(file)), None

    def session(self, file, threads):
        # torch's thread count is process-wide: the caller sets it (bench does), not the session
        module = load_torchscript(file)
        return torch_runner(module), set(script_input_names(module))

    def applied(self, recipe):
        if recipe.scheme == "static":
            return {"applied": "dynamic",
                    "note": ("TorchScript export applies torch.ao dynamic int8 to static recipes: int8 weights, "
                             "activation scales computed at run time (static QDQ lives in the ONNX export)")}
        if recipe.int8:
            return {"applied": "dynamic",
                    "note": (f"torch.ao dynamic int8 ({'per-channel' if recipe.per_channel else 'per-tensor'} "
                             "nn.Linear weights, activations quantized per call, x86 engine)")}
        return {}

