"""What an export starts from: the input directory, its fp32 model, labels, max length and the
int8 recipe that `compress` recorded (a validated bertpress.records.QuantizationRecord)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from bertpress import records
from bertpress.arch import max_positions
from bertpress.artifact import MANIFEST_NAME, Artifact, Manifest
from bertpress.errors import ArtifactError, ConfigError, InputError
from bertpress.models import label_names_of, load_classifier, local_path
from bertpress.records import QuantizationRecord

EXPORTABLE_KINDS = ("checkpoint", "compressed")


@dataclasses.dataclass(frozen=True)
class QuantRecipe:
    """The int8 scheme to apply, resolved from the manifest and the export config."""

    scheme: str = "none"  # none | dynamic | static
    per_channel: bool = True
    calibration_method: str = "minmax"
    calibration_data: str | None = None
    calibration_samples: int = 128
    scope: str = "encoder"  # encoder | all (pooler and classifier stay fp32)
    layers: tuple[str, ...] | None = None  # torch module names compress quantized, if recorded
    reduce_range: bool = False  # 7-bit activations (for CPUs without VNNI)
    origin: str = "default"  # where the scheme came from: manifest | config | default
    raw: dict[str, Any] | None = None  # the recorded QuantizationRecord (tagged), when int8

    @property
    def int8(self) -> bool:
        return self.scheme != "none"


@dataclasses.dataclass
class Source:
    path: Path
    manifest: Manifest | None  # None for a plain HF directory
    model: Any  # fp32 torch model, eval mode (never mutated: exporters deep-copy before quantizing)
    tokenizer: Any
    labels: list[str]
    max_length: int
    recipe: QuantRecipe

    @property
    def kind(self) -> str | None:
        return self.manifest.kind if self.manifest else None


def recorded_quantization(manifest: Manifest | None) -> QuantizationRecord | None:
    """The QuantizationRecord compress wrote (validated), or None."""
    return records.read(manifest.details if manifest else None, "quantization", QuantizationRecord)


def resolve_recipe(manifest: Manifest | None, cfg) -> QuantRecipe:
    return recipe_from(recorded_quantization(manifest), cfg)


def recipe_from(rec: QuantizationRecord | None, cfg) -> QuantRecipe:
    """The int8 recipe export applies: the recorded one (`--quantize follow`) or the config's,
    with the export config's per-channel / calibration overrides."""
    rec = rec or QuantizationRecord()
    if cfg.quantize.value == "follow":
        scheme, origin = rec.scheme, ("manifest" if rec.int8 else "default")
    else:
        scheme, origin = cfg.quantize.value, "config"
    calib = rec.calibration
    per_channel = rec.per_channel if cfg.per_channel is None else cfg.per_channel
    method = cfg.calibration_method.value
    if method == "follow":
        method = calib.method if calib else "minmax"
    data = cfg.calibration_data or (calib.data if calib else None)
    samples = cfg.calibration_samples or (calib.samples if calib else None) or 128
    # Like compress: quantize the encoder's Linear layers, keep the tiny pooler/classifier fp32.
    # 7-bit activations where this CPU's int8 kernels need them (no VNNI: AVX2 sums u8 x s8 pairs in
    # int16 and saturates on full-range inputs), unless compress recorded the range it calibrated for.
    if rec.int8:
        reduce_range = rec.reduce_range
    else:
        from bertpress.compress.quantize import int8_formats  # lazy: pulls torch; `export --help` stays light

        reduce_range = bool(int8_formats()["onnx"]["reduce_range"])
    return QuantRecipe(scheme=scheme, per_channel=per_channel, calibration_method=method, scope=rec.scope,
                       layers=rec.layers or None, reduce_range=reduce_range,
                       calibration_data=str(data) if data else None, calibration_samples=int(samples),
                       origin=origin, raw=records.encode(rec) if rec.int8 else None)


def load_source(path: str | Path, cfg) -> Source:
    """Load an exportable input: a checkpoint/compressed artifact or a plain HF model directory."""
    path = local_path(path)
    if not path.exists():
        raise InputError(f"{path}: no such directory; give a checkpoint, a compressed artifact or an HF model directory")
    if not path.is_dir():
        raise ArtifactError(f"{path}: export reads a model directory, not a file; give the directory that holds config.json")
    manifest = None
    if (path / MANIFEST_NAME).is_file():
        manifest = Artifact.load(path).manifest
        if manifest.kind not in EXPORTABLE_KINDS:
            raise ArtifactError(
                f"{path}: a {manifest.kind!r} artifact cannot be exported; give the checkpoint or compressed "
                "artifact it came from"
            )
    elif not (path / "config.json").is_file():
        raise ArtifactError(
            f"{path}: not a bertpress artifact (no {MANIFEST_NAME}) or a Hugging Face checkpoint (no config.json); "
            "give a checkpoint, a compressed artifact or an HF model directory"
        )
    model, tokenizer = load_classifier(path)
    labels = list(manifest.labels) if manifest and manifest.labels else label_names_of(model)
    if len(labels) != model.config.num_labels:
        raise ArtifactError(
            f"{path}: the manifest lists {len(labels)} labels but the model has {model.config.num_labels} outputs; "
            "re-create the artifact"
        )

    limit = int(max_positions(model.config) or 512)
    if cfg.max_length is not None:
        if cfg.max_length > limit:
            raise ConfigError(
                f"max_length={cfg.max_length} exceeds the model's position embeddings ({limit}); "
                f"pass --max-length {limit} or less"
            )
        max_length = cfg.max_length
    else:
        max_length = min(int(manifest.max_length) if manifest and manifest.max_length else limit, limit, 512)
    return Source(path=path, manifest=manifest, model=model, tokenizer=tokenizer, labels=labels,
                  max_length=max_length, recipe=resolve_recipe(manifest, cfg))
