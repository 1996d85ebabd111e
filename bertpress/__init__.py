"""bertpress: BERT text classifiers from training to the edge.

Heavy libraries (torch, transformers, onnxruntime) are imported inside the functions that need
them, so `import bertpress` and `bertpress --help` stay instant.
"""

__version__ = "0.1.0"

from bertpress.errors import (  # noqa: E402
    ArtifactError,
    BertpressError,
    ConfigError,
    DeviceError,
    InputError,
    ParityError,
    UnsafeInputError,
)

__all__ = [
    "__version__",
    "ArtifactError",
    "BertpressError",
    "ConfigError",
    "DeviceError",
    "InputError",
    "ParityError",
    "UnsafeInputError",
]
