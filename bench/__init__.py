"""bertpress.bench: latency, throughput, accuracy, memory and size of every variant of a model
(PyTorch eager fp32 / int8-dynamic / fp16 / bf16, TorchScript, ONNX Runtime CPU and CUDA), with
anchor baselines (transformers pipeline, optimum int8) and a report (JSON, Markdown, plots).

Exports are lazy so `bertpress --help` does not import torch/transformers.
"""

from __future__ import annotations

from bertpress.lazy import lazy_exports

_EXPORTS = {
    "BenchConfig": "bertpress.bench.config",
    "Runtime": "bertpress.bench.config",
    "Baseline": "bertpress.bench.config",
    "bench": "bertpress.bench.run",
    "BenchReport": "bertpress.bench.results",
    "BenchResults": "bertpress.bench.results",
    "VariantResult": "bertpress.bench.results",
    "LatencyStats": "bertpress.timing",
    "time_callable": "bertpress.timing",
    "summarize": "bertpress.timing",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
