"""Search runtimes that need the export stage: compress's accuracy-aware search ranks each
candidate in the runtime the user deploys, which means exporting it exactly as `bertpress
export` would. compress cannot import export (the dependency direction), so the composition
root registers these into `bertpress.compress.search.SEARCH_RUNTIMES`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from bertpress.compress.search import SEARCH_RUNTIMES


@SEARCH_RUNTIMES.register("onnxruntime")
class OnnxTwin:
    """A candidate as `bertpress export` writes it (default ExportConfig, the candidate's recorded
    int8 recipe) and export's parity report on it; the gate's eval accuracy ranks the candidate.
    Uses export's own steps (recipe_from, texts_of, write_onnx, gate), so the two cannot drift."""

    def __init__(self, model, tokenizer, *, scheme: str, quant_facts, labels: list[str],
                 max_length: int, out: Path, eval_data, shared: dict, calib_cache: dict) -> None:
        from bertpress.export.api import gate, texts_of, write_onnx
        from bertpress.export.config import ExportConfig
        from bertpress.export.source import recipe_from
        from bertpress.export.validate import source_eval_logits
        from bertpress.ort import runner as ort_runner
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
        write_onnx(model, tokenizer, recipe, cfg, out, max_length, calib)
        self.file = out / "model.onnx"
        self.report = gate(ort_runner(self.file), torch_runner(model), model, tokenizer, recipe, cfg, max_length,
                           model.config.num_labels, eval_data.examples, eval_data.labels, reference)
        self.accuracy = self.report["accuracy"]["export"]  # fraction, like compress's
        self.size_bytes = self.file.stat().st_size

    def timer(self, tokenizer, *, seq_len: int, threads: int | None, min_seconds: float) -> Callable[[], Any]:
        """time() -> LatencyStats of one batch-1 call at `seq_len`, same input as the eager timing."""
        import torch

        from bertpress.compress.evaluate import LATENCY_TEXT
        from bertpress.ort import session
        from bertpress.signature import encode
        from bertpress.timing import time_callable

        sess = session(self.file, threads=threads or torch.get_num_threads())
        names = {i.name for i in sess.get_inputs()}
        feed = {k: v for k, v in encode(tokenizer, [LATENCY_TEXT], seq_len, pad_to_max=True).items() if k in names}
        return lambda: time_callable(lambda: sess.run(["logits"], feed), warmup=5, min_iters=20,
                                     min_seconds=min_seconds)
