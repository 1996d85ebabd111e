"""Typed, versioned records that stages hand each other through the manifest.

compress writes what it did (`details.quantization`, `details.pruning`); export, bench and the
loaders read it. Each record is a frozen dataclass serialised with the tagged-config mechanism
(`{"_type": "QuantizationRecord", "_version": 1, "_data": {...}}`) and validated when it is read,
so a reader never guesses at keys: a manifest that does not hold a valid record is refused in
one line. Scheme and calibration-method names come from `bertpress.names` (their one spelling).

Units: accuracies in records and manifests' `metrics` are fractions in [0, 1] (key `accuracy`);
a difference of accuracies is in percentage points and its key ends in `_points`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from bertpress.config import build_config, from_tagged, register_config, to_tagged
from bertpress.errors import ArtifactError, BertpressError, ConfigError
from bertpress.names import CALIBRATION_METHODS, SCHEMES

SCOPES = ("encoder", "all")


def _one_of(value: Any, allowed: tuple[str, ...], field: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{field}={value!r} is not one of {', '.join(allowed)}")


@register_config(version=1)
@dataclasses.dataclass(frozen=True)
class CalibrationRecord:
    """How static int8 ranges were calibrated (export re-reads `data` for ONNX Runtime's calibrator)."""

    method: str
    data: str | None  # the spec export re-loads ("int8 in, int8 out")
    samples: int
    requested: str | None = None  # what the user asked for ("auto" picks `method`)
    source: str | None = None  # description of the rows actually used
    batch_size: int | None = None
    max_length: int | None = None
    percentile: float | None = None
    auto_eval_accuracy: dict[str, float] | None = None  # fraction per method when requested "auto"
    ranges_file: str | None = None

    def __post_init__(self) -> None:
        _one_of(self.method, CALIBRATION_METHODS, "calibration.method")
        if not isinstance(self.samples, int) or self.samples < 1:
            raise ConfigError(f"calibration.samples={self.samples!r} must be a positive integer")


@register_config(version=1)
@dataclasses.dataclass(frozen=True)
class QuantizationRecord:
    """The int8 scheme a compressed model carries (applied on load; export applies the same)."""

    scheme: str = "none"
    per_channel: bool = True
    scope: str = "encoder"
    layers: tuple[str, ...] = ()  # torch module names quantized
    reduce_range: bool = False  # 7-bit activations (CPUs without VNNI)
    num_quantized: int = 0
    formats: dict[str, Any] = dataclasses.field(default_factory=dict)  # dtypes, ISA and why
    calibration: CalibrationRecord | None = None  # static only

    def __post_init__(self) -> None:
        _one_of(self.scheme, SCHEMES, "quantization.scheme")
        _one_of(self.scope, SCOPES, "quantization.scope")
        object.__setattr__(self, "layers", tuple(str(x) for x in self.layers))
        if self.scheme == "static" and self.calibration is None:
            raise ConfigError("quantization.scheme=static needs its calibration record")

    @property
    def int8(self) -> bool:
        return self.scheme != "none"


@register_config(version=1)
@dataclasses.dataclass(frozen=True)
class PruningRecord:
    """Which heads and FFN channels were removed: enough to rebuild the model from config.json."""

    heads_ratio: float
    ffn_ratio: float
    importance: str
    heads_per_layer: tuple[int, ...]
    head_size: int
    ffn_per_layer: tuple[int, ...]
    pruned_heads: dict[str, list[int]] = dataclasses.field(default_factory=dict)  # layer -> original indices
    round_to: int = 1
    calibration_batches: int = 0
    original: dict[str, int] = dataclasses.field(default_factory=dict)  # heads, ffn, params before
    params: int = 0
    calibration_data: str | None = None  # Taylor importance's labelled batches
    layers_ratio: float = 0.0
    # Original indices of the encoder layers kept (empty: all kept); the checkpoint numbers them
    # 0..k-1 and `pruned_heads` uses that numbering.
    layers_kept: tuple[int, ...] = ()
    # What was removed, counted: {"layers", "heads_per_layer", "ffn_per_layer"} (empty in older manifests)
    removed: dict[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads_per_layer", tuple(int(x) for x in self.heads_per_layer))
        object.__setattr__(self, "ffn_per_layer", tuple(int(x) for x in self.ffn_per_layer))
        object.__setattr__(self, "layers_kept", tuple(int(x) for x in self.layers_kept or ()))
        object.__setattr__(self, "pruned_heads", {str(k): sorted(int(h) for h in v)
                                                  for k, v in (self.pruned_heads or {}).items()})
        if len(self.heads_per_layer) != len(self.ffn_per_layer):
            raise ConfigError("pruning: heads_per_layer and ffn_per_layer must list the same layers")

    @property
    def removes_heads(self) -> bool:
        return any(self.pruned_heads.values())

    def heads_kept(self) -> list[list[int]] | None:
        """Per layer, the original indices of the heads it kept, in order (torch-pruning keeps the
        surviving channels in order): the head map of attention distillation. A layer had its kept
        heads plus its removed ones. None when no head was removed."""
        if not self.removes_heads:
            return None
        kept = []
        for j, n in enumerate(self.heads_per_layer):
            gone = set(self.pruned_heads.get(str(j), ()))
            kept.append([h for h in range(n + len(gone)) if h not in gone])
        return kept


def encode(record: Any) -> dict[str, Any] | None:
    """What goes into the manifest (None stays None: nothing was done)."""
    return None if record is None else to_tagged(record)


def read(details: Mapping[str, Any] | None, key: str, cls: type, where: str = "bertpress.json") -> Any:
    """The record `details[key]` as `cls`, validated; None when absent. Refuses anything else in
    one line (a manifest we cannot trust must not silently become a different model)."""
    raw = (details or {}).get(key)
    if raw is None:
        return None
    try:
        if isinstance(raw, dict) and "_type" in raw:
            rec = from_tagged(raw)
        elif isinstance(raw, dict):  # written by bertpress 0.1 before records were tagged
            rec = _legacy(cls, raw)
        else:
            raise ConfigError(f"expected a {cls.__name__}, got {type(raw).__name__}")
    except BertpressError as exc:
        raise ArtifactError(f"{where}: details.{key} is not a valid {cls.__name__} ({exc}); re-run the stage "
                            "that wrote it") from None
    if not isinstance(rec, cls):
        raise ArtifactError(f"{where}: details.{key} holds a {type(rec).__name__}, expected {cls.__name__}; "
                            "re-run the stage that wrote it")
    return rec


def _legacy(cls: type, raw: dict[str, Any]) -> Any:
    """The 0.1 layout had the same field names, with the int8 formats spread at the top level."""
    names = {f.name for f in dataclasses.fields(cls)}
    data = {k: v for k, v in raw.items() if k in names}
    if cls is QuantizationRecord:
        data["formats"] = {k: v for k, v in raw.items() if k not in names}
    return build_config(cls, data, where=cls.__name__)
