"""bertpress.compress: int8 quantization (dynamic, static calibrated), structured pruning of
heads and FFN channels, distillation recovery, and an accuracy-aware search.

Light on purpose (`bertpress --help` imports the CLI): the public names load on first use.
"""

from __future__ import annotations

from bertpress.lazy import lazy_exports

_EXPORTS = {
    "compress": "bertpress.compress.api",
    "load_compressed": "bertpress.compress.api",
    "HANDLERS": "bertpress.compress.api",
    "CompressConfig": "bertpress.compress.config",
    "QuantizeConfig": "bertpress.compress.config",
    "PruneConfig": "bertpress.compress.config",
    "RecoverConfig": "bertpress.compress.config",
    "SearchConfig": "bertpress.compress.config",
    "Scheme": "bertpress.compress.config",
    "CalibrationMethod": "bertpress.compress.config",
    "Importance": "bertpress.compress.config",
    "LinearScope": "bertpress.compress.config",
    "int8_formats": "bertpress.compress.quantize",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
