"""What an export starts from: the input directory, its fp32 model, labels, max length and the
int8 recipe that `compress` recorded (read defensively: that manifest section may evolve)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from bertpress.artifact import MANIFEST_NAME, Artifact, Manifest
from bertpress.errors import ArtifactError, ConfigError, InputError

EXPORTABLE_KINDS = ("checkpoint", "compressed")
SCHEMES = ("none", "dynamic", "static")


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
    raw: dict[str, Any] | None = None  # the manifest's quantization section, as read

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


def _norm_scheme(value: Any) -> str | None:
    """Map the spellings compress may use ("dynamic", "int8-dynamic", "static_qdq"...) to ours."""
    if value is None:
        return None
    s = str(value).strip().lower()
    if s in ("", "none", "fp32", "float32", "no", "off"):
        return "none"
    if "static" in s:
        return "static"
    if "dynamic" in s:
        return "dynamic"
    return s  # unknown: reported by the caller with the fix


def recorded_quantization(manifest: Manifest | None) -> dict[str, Any]:
    """The quantization section of a manifest (details.quantization), or {}."""
    if manifest is None:
        return {}
    q = (manifest.details or {}).get("quantization")
    if isinstance(q, str):
        return {"scheme": q}
    return dict(q) if isinstance(q, dict) else {}


def resolve_recipe(manifest: Manifest | None, cfg) -> QuantRecipe:
    return recipe_from(recorded_quantization(manifest), cfg)


def recipe_from(raw: dict[str, Any], cfg) -> QuantRecipe:
    """The int8 recipe export applies, from a recorded quantization section (compress's
    details.quantization) and the export config."""
    recorded = _norm_scheme(raw.get("scheme", raw.get("method")))
    if cfg.quantize.value == "follow":
        scheme, origin = (recorded or "none"), ("manifest" if recorded else "default")
        if scheme not in SCHEMES:
            raise ArtifactError(
                f"the input's manifest asks for quantization scheme {raw.get('scheme')!r}, which export does not "
                f"know (known: {', '.join(SCHEMES)}); pass --quantize none|dynamic|static to choose one"
            )
    else:
        scheme, origin = cfg.quantize.value, "config"
    calib = raw.get("calibration") if isinstance(raw.get("calibration"), dict) else {}
    per_channel = cfg.per_channel
    if per_channel is None:
        rec = raw.get("per_channel")
        per_channel = bool(rec) if isinstance(rec, bool) else True
    method = cfg.calibration_method.value
    if method == "follow":
        rec = str(calib.get("method") or raw.get("calibration_method") or "minmax").lower()
        method = rec if rec in ("minmax", "entropy", "percentile") else "minmax"
    data = cfg.calibration_data or calib.get("data") or raw.get("calibration_data")
    samples = cfg.calibration_samples or calib.get("samples") or raw.get("calibration_samples") or 128
    try:
        samples = max(1, int(samples))
    except (TypeError, ValueError):
        samples = 128
    # Like compress: quantize the encoder's Linear layers, keep the tiny pooler/classifier fp32.
    scope = str(raw.get("scope") or "encoder").lower()
    scope = scope if scope in ("all", "encoder") else "encoder"
    layers = raw.get("layers")
    layers = tuple(str(x) for x in layers) if isinstance(layers, (list, tuple)) and layers else None
    onnx_formats = (raw.get("formats") or {}).get("onnx") if isinstance(raw.get("formats"), dict) else None
    rr = raw.get("reduce_range", (onnx_formats or {}).get("reduce_range") if isinstance(onnx_formats, dict) else None)
    return QuantRecipe(scheme=scheme, per_channel=per_channel, calibration_method=method,
                       scope=scope, layers=layers, reduce_range=bool(rr) if isinstance(rr, bool) else False,
                       calibration_data=str(data) if data else None, calibration_samples=samples,
                       origin=origin, raw=raw or None)


def load_source(path: str | Path, cfg) -> Source:
    """Load an exportable input: a checkpoint/compressed artifact or a plain HF model directory."""
    from bertpress.models import label_names_of, load_classifier, local_path

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
    limit = int(model.config.max_position_embeddings)
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
