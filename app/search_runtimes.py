"""Search runtimes that need the export stage: compress's accuracy-aware search ranks each
candidate in the runtime the user deploys, which means exporting it exactly as `bertpress
export` would. compress cannot import export (the dependency direction), so the composition
root registers these into `bertpress.compress.search.SEARCH_RUNTIMES`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from bertpress.compress.search import SEARCH_RUNTIMES


class ExportTwin:
    """A candidate as `bertpress export` writes it (default ExportConfig, the candidate's recorded
    int8 recipe) and export's parity report on it; the gate's eval accuracy ranks the candidate.
    Uses export's own steps (recipe_from, texts_of, the format's writer, gate), so the two cannot
    drift. Subclasses say how their format is written, run and timed."""

    def __init__(self, model, tokenizer, *, scheme: str, quant_facts, labels: list[str],
                 max_length: int, out: Path, eval_data, shared: dict, calib_cache: dict) -> None:
        from bertpress.export.api import gate, texts_of
        from bertpress.export.config import ExportConfig
        from bertpress.export.source import recipe_from
        from bertpress.export.validate import source_eval_logits
        from bertpress.signature import torch_runner

        if "reference" not in shared:  # fp32 logits on the eval texts, once per pruning ratio
            shared["reference"] = source_eval_logits(torch_runner(model), tokenizer, eval_data.examples, max_length)
        reference = shared["reference"]

        cfg = ExportConfig()  # the defaults `bertpress export CHECKPOINT` uses
        recipe = recipe_from(quant_facts, cfg)  # the candidate's QuantizationRecord (its scheme)
        calib = None
        if recipe.scheme == "static":
            key = (recipe.calibration_data, recipe.calibration_samples)
            if key not in calib_cache:  # read the train split once per search, not per candidate
                calib_cache[key] = texts_of(recipe.calibration_data, "train", recipe.calibration_samples,
                                            cfg.seed, labels, prefer=eval_data.columns)[0]
            calib = calib_cache[key]
        out.mkdir(parents=True)
        self.file = self.write(model, tokenizer, recipe, cfg, out, max_length, calib)
        run, reduced = self.runner()
        self.report = gate(run, torch_runner(model), model, tokenizer, recipe, cfg, max_length,
                           model.config.num_labels, eval_data.examples, eval_data.labels, reference,
                           reduced=reduced)
        self.accuracy = self.report["accuracy"]["export"]  # fraction, like compress's
        self.size_bytes = sum(f.stat().st_size for f in self.files())

    def write(self, model, tokenizer, recipe, cfg, out: Path, max_length: int, calib) -> Path:
        raise NotImplementedError

    def runner(self) -> tuple[Callable, str | None]:
        """(feed -> logits as the file runs when deployed, the reduced precision it runs in or None)."""
        raise NotImplementedError

    def files(self) -> list[Path]:
        return [self.file]

    def session_call(self, threads: int) -> tuple[Callable[[dict], Any], set[str]]:
        """(one inference on a feed, the input names it takes) for timing."""
        raise NotImplementedError

    def timer(self, tokenizer, *, seq_len: int, threads: int | None, min_seconds: float) -> Callable[[], Any]:
        """time() -> LatencyStats of one batch-1 call at `seq_len`, same input as the eager timing."""
        import torch

        from bertpress.compress.evaluate import LATENCY_TEXT
        from bertpress.signature import encode
        from bertpress.timing import time_callable

        call, names = self.session_call(threads or torch.get_num_threads())
        feed = {k: v for k, v in encode(tokenizer, [LATENCY_TEXT], seq_len, pad_to_max=True).items() if k in names}
        return lambda: time_callable(lambda: call(feed), warmup=5, min_iters=20, min_seconds=min_seconds)

    def traffic_timer(self, tokenizer, chunks, *, max_length: int, threads: int | None,
                      min_seconds: float) -> Callable[[], Any]:
        """time() -> LatencyStats of passes over `chunks` (compress's traffic objective), one batch
        at a time in this runtime: the same pass as the eager candidates' (evaluate.traffic_timer)."""
        import torch

        from bertpress.compress.evaluate import traffic_timer

        call, names = self.session_call(threads or torch.get_num_threads())
        return traffic_timer(call, tokenizer, chunks, max_length=max_length, names=names, min_seconds=min_seconds)


@SEARCH_RUNTIMES.register("onnxruntime")
class OnnxTwin(ExportTwin):
    """The candidate's ONNX export (export.write_onnx), gated and timed in ONNX Runtime."""

    def write(self, model, tokenizer, recipe, cfg, out, max_length, calib) -> Path:
        from bertpress.export.api import write_onnx

        write_onnx(model, tokenizer, recipe, cfg, out, max_length, calib)
        return out / "model.onnx"

    def runner(self):
        from bertpress.ort import runner as ort_runner

        return ort_runner(self.file), None

    def session_call(self, threads):
        from bertpress.ort import session

        sess = session(self.file, threads=threads)
        return (lambda feed: sess.run(["logits"], feed)), {i.name for i in sess.get_inputs()}


@SEARCH_RUNTIMES.register("openvino")
class OpenVINOTwin(ExportTwin):
    """The candidate's OpenVINO IR (export.openvino.export_openvino: NNCF int8 from the recipe),
    gated and timed as OpenVINO runs it by default on this CPU (bf16 on AMX: then gated with the
    reduced-precision tolerances, as export's gate does) with bench's OpenVINO settings."""

    def write(self, model, tokenizer, recipe, cfg, out, max_length, calib) -> Path:
        from bertpress.export.openvino import FILE_NAME, export_openvino

        export_openvino(model, tokenizer, out, recipe=recipe, trace_batch=cfg.trace_batch, trace_seq=cfg.trace_seq,
                        max_length=max_length, calibration_texts=calib, seed=cfg.seed,
                        progress=False)  # the search draws its own bar; NNCF's per candidate would bury it
        return out / FILE_NAME

    def runner(self):
        from bertpress.export.api import openvino_checks

        checks, _ = openvino_checks(self.file)
        _, run, reduced = checks[-1]  # the default compile: what a deployment runs
        return run, reduced

    def files(self):
        from bertpress.export.openvino import WEIGHTS_NAME

        return [self.file, self.file.with_name(WEIGHTS_NAME)]

    def session_call(self, threads):
        from bertpress import openvino_rt

        sess = openvino_rt.session(self.file, threads=threads)
        return sess.run, set(sess.input_names)
