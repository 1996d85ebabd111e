"""The one spelling of names several stages share.

Quantization schemes (compress applies them, the manifest records them, export reproduces them),
calibration methods (compress's observers, export's ORT / NNCF calibrators) and the runtimes
compress's search ranks candidates in. Every config enum and registry of these names is built
from here (`str_enum` for a config's choices with its own extra values), so a name is written once.
"""

from __future__ import annotations

import enum
from typing import Iterable


class Scheme(str, enum.Enum):
    NONE = "none"
    DYNAMIC = "dynamic"  # int8 weights, activation ranges measured per call
    STATIC = "static"  # int8 weights, activation ranges calibrated once on real samples


SCHEMES: tuple[str, ...] = tuple(s.value for s in Scheme)
CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "entropy", "percentile")
# Where compress's search scores and times candidates: PyTorch eager, or the deploy runtime of an
# export format (each candidate written as `bertpress export` would).
SEARCH_RUNTIMES: tuple[str, ...] = ("pytorch", "onnxruntime", "openvino")


def str_enum(name: str, values: Iterable[str], module: str) -> type[enum.Enum]:
    """A `str` enum named `name` whose members are `values` (member NAME = value upper-cased): a
    config's choices built from the names above plus its own (compress's "auto", export's "follow")."""
    return enum.Enum(name, [(v.upper(), v) for v in values], type=str, module=module)
