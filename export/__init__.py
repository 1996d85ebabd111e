"""bertpress.export: TorchScript and ONNX (fused, int8, ORT format), validated, bundled for the edge.

Light on purpose (`bertpress --help` imports the stage's cli): the API is loaded lazily.
"""

from __future__ import annotations

from bertpress.lazy import lazy_exports

_LAZY = {
    "export": "bertpress.export.api",
    "ExportConfig": "bertpress.export.config",
    "ExportFormat": "bertpress.export.config",
    "Optimize": "bertpress.export.config",
    "Quantize": "bertpress.export.config",
    "check_parity": "bertpress.export.validate",
}

__getattr__, __all__ = lazy_exports(__name__, _LAZY)
