"""The deploy runtimes of compress's search: each candidate ranked in the runtime the user deploys,
which means exporting it exactly as `bertpress export` would. compress cannot import export (the
dependency direction), so the composition root passes `DEPLOY_RUNTIMES` in
(`compress(..., runtimes=DEPLOY_RUNTIMES)`: the CLI and recipes do). A twin is export's format
table (`bertpress.export.formats.FORMATS`) applied to one candidate: a new deploy runtime is a
format there and one line here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from bertpress.compress import evaluate
from bertpress.compress.evaluate import LATENCY_TEXT
from bertpress.export import api as export_api
from bertpress.export.config import ExportConfig
from bertpress.export.formats import FORMATS
from bertpress.export.source import recipe_from
from bertpress.export.validate import source_eval_logits
from bertpress.signature import encode, torch_runner
from bertpress.timing import time_callable


class ExportTwin:
    """A candidate as `bertpress export --format FORMAT` writes it (default ExportConfig, the
    candidate's recorded int8 recipe) and export's parity report on it; the gate's eval accuracy
    ranks the candidate. Uses export's own steps (recipe_from, texts_of, the format's writer and
    deploy runner, gate), so the two cannot drift. A subclass names its format."""

    format: str

    def __init__(self, model, tokenizer, *, scheme: str, quant_facts, labels: list[str],
                 max_length: int, out: Path, eval_data, shared: dict, calib_cache: dict, gate: bool = True) -> None:
        """gate=False writes the file only (the automatic search times untrained candidates: their
        accuracy is not used, and the gate would cost more than the export); report says so."""
        if gate and "reference" not in shared:  # fp32 logits on the eval texts, once per pruning ratio
            shared["reference"] = source_eval_logits(torch_runner(model), tokenizer, eval_data.examples, max_length)

        self.fmt = FORMATS.get(self.format)()
        cfg = ExportConfig()  # the defaults `bertpress export CHECKPOINT` uses
        recipe = recipe_from(quant_facts, cfg)  # the candidate's QuantizationRecord (its scheme)
        calib = None
        if recipe.scheme == "static":
            key = (recipe.calibration_data, recipe.calibration_samples)
            if key not in calib_cache:  # read the train split once per search, not per candidate
                calib_cache[key] = export_api.texts_of(recipe.calibration_data, "train", recipe.calibration_samples,
                                                       cfg.seed, labels, prefer=eval_data.columns)[0]
            calib = calib_cache[key]
        out.mkdir(parents=True)
        # progress off: the search draws its own bar; NNCF's per candidate would bury it
        self.details, _ = self.fmt.write(model, tokenizer, recipe, cfg, out, max_length, calib, progress=False)
        self.file = out / self.fmt.file
        self.size_bytes = sum((out / f).stat().st_size for f in self.fmt.files(self.details))
        if not gate:
            self.report, self.accuracy = {"passed": True, "failures": [], "gated": False}, None
            return
        reference = shared["reference"]
        run, reduced = self.runner()
        self.report = export_api.gate(run, torch_runner(model), model, tokenizer, recipe, cfg, max_length,
                                      model.config.num_labels, eval_data.examples, eval_data.labels, reference,
                                      reduced=reduced)
        self.accuracy = self.report["accuracy"]["export"]  # fraction, like compress's

    def runner(self) -> tuple[Callable, str | None]:
        """(feed -> logits as a deployment runs the file, the reduced precision it runs in or None)."""
        return self.fmt.runner(self.file)

    def session_call(self, threads: int) -> tuple[Callable[[dict], Any], set[str]]:
        """(one inference on a feed, the input names it takes) for timing."""
        return self.fmt.session(self.file, threads)

    def timer(self, tokenizer, *, seq_len: int, threads: int | None, min_seconds: float) -> Callable[[], Any]:
        """time() -> LatencyStats of one batch-1 call at `seq_len`, same input as the eager timing."""
        call, names = self.session_call(threads or torch.get_num_threads())
        feed = {k: v for k, v in encode(tokenizer, [LATENCY_TEXT], seq_len, pad_to_max=True).items() if k in names}
        return lambda: time_callable(lambda: call(feed), warmup=5, min_iters=20, min_seconds=min_seconds)

    def traffic_timer(self, tokenizer, chunks, *, max_length: int, threads: int | None,
                      min_seconds: float) -> Callable[[], Any]:
        """time() -> LatencyStats of passes over `chunks` (compress's traffic objective), one batch
        at a time in this runtime: the same pass as the eager candidates' (evaluate.traffic_timer)."""
        call, names = self.session_call(threads or torch.get_num_threads())
        return evaluate.traffic_timer(call, tokenizer, chunks, max_length=max_length, names=names,
                                      min_seconds=min_seconds)


class OnnxTwin(ExportTwin):
    """The candidate's ONNX export, gated and timed in ONNX Runtime."""

    format = "onnx"


class OpenVINOTwin(ExportTwin):
    """The candidate's OpenVINO IR (NNCF int8 from the recipe), gated and timed as OpenVINO runs it
    by default on this CPU (bf16 on AMX: then gated with the reduced-precision tolerances, as
    export's gate does) with bench's OpenVINO settings."""

    format = "openvino"


# search runtime name (bertpress.names.SEARCH_RUNTIMES) -> twin factory; "pytorch" needs none
DEPLOY_RUNTIMES: dict[str, Callable[..., ExportTwin]] = {"onnxruntime": OnnxTwin, "openvino": OpenVINOTwin}
