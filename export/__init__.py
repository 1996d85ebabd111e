"""bertpress.export: TorchScript and ONNX (fused, int8, ORT format), validated, bundled for the edge.

Light on purpose (`bertpress --help` imports the stage's cli): the API is loaded lazily.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "export": "bertpress.export.api",
    "ExportConfig": "bertpress.export.config",
    "ExportFormat": "bertpress.export.config",
    "Optimize": "bertpress.export.config",
    "Quantize": "bertpress.export.config",
    "check_parity": "bertpress.export.validate",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bertpress.export' has no attribute {name!r}")
