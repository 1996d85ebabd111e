"""bertpress.bench: latency, throughput, accuracy, memory and size of every variant of a model
(PyTorch eager fp32 / int8-dynamic / fp16 / bf16, TorchScript, ONNX Runtime CPU and CUDA), with
anchor baselines (transformers pipeline, optimum int8) and a report (JSON, Markdown, plots).

Exports are lazy so `bertpress --help` does not import torch/transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BenchConfig": "bertpress.bench.config",
    "Runtime": "bertpress.bench.config",
    "Baseline": "bertpress.bench.config",
    "bench": "bertpress.bench.run",
    "BenchReport": "bertpress.bench.results",
    "BenchResults": "bertpress.bench.results",
    "VariantResult": "bertpress.bench.results",
    "LatencyStats": "bertpress.bench.latency",
    "time_callable": "bertpress.bench.latency",
    "summarize": "bertpress.bench.latency",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bertpress.bench' has no attribute {name!r}")
