"""What the user asked to benchmark: artifact directories (or plain HF dirs / the `minilm` alias)
resolved to a kind, label names, a maximum length and a display name.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from bertpress.arch import max_positions
from bertpress.artifact import MANIFEST_NAME, Artifact
from bertpress.data import columns_of
from bertpress.errors import ArtifactError, InputError
from bertpress.models import resolve_source as resolve_model

MODEL_KINDS = ("checkpoint", "compressed", "onnx", "torchscript", "openvino")
HF_KINDS = ("checkpoint", "compressed")  # Hugging Face directories loadable by transformers


@dataclasses.dataclass
class Source:
    spec: str  # as the user gave it
    path: Path | None  # local directory (None for a hub id)
    kind: str  # checkpoint | compressed | onnx | torchscript | openvino
    labels: list[str]
    max_length: int | None
    name: str = ""
    manifest: dict[str, Any] | None = None

    @property
    def where(self) -> str:
        return str(self.path) if self.path is not None else self.spec

    @property
    def columns(self):
        """The data columns the model was trained on (bertpress.data.Columns), from its manifest."""
        return columns_of(self.manifest)


def _config_json(path: Path) -> dict[str, Any]:
    cfg = path / "config.json"
    if not cfg.is_file():
        return {}
    try:
        return json.loads(cfg.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{cfg}: corrupt config.json ({exc}); re-save the model") from None


def _labels_from_config(cfg: dict[str, Any]) -> list[str]:
    id2label = cfg.get("id2label") or {}
    try:
        return [str(id2label[k]) for k in sorted(id2label, key=lambda k: int(k))]
    except (ValueError, TypeError):
        return [str(v) for v in id2label.values()]


def resolve_source(spec: str) -> Source:
    """Resolve one ARTIFACT argument, refusing what bench cannot run with a fix in the message."""
    path = Path(str(spec)).expanduser()
    if path.is_file():
        raise InputError(
            f"{spec}: give the artifact directory that holds {path.name} (with its tokenizer and "
            f"{MANIFEST_NAME}), not the file itself"
        )
    if path.is_dir():
        if (path / MANIFEST_NAME).is_file():
            art = Artifact.load(path)
            if art.kind not in MODEL_KINDS:
                raise InputError(f"{spec}: a {art.kind!r} artifact is not a model; give checkpoint, compressed, "
                                 "onnx, torchscript or openvino artifacts")
            cfg = _config_json(path)
            labels = list(art.manifest.labels) or _labels_from_config(cfg)
            max_len = art.manifest.max_length or max_positions(cfg)
            return Source(str(spec), path, art.kind, labels, max_len, manifest=art.manifest.to_dict())
        if (path / "config.json").is_file():
            # A plain Hugging Face directory (not written by bertpress): benchmark it as a checkpoint.
            cfg = _config_json(path)
            if (path / "model.onnx").is_file():
                kind = "onnx"
            elif (path / "model.pt").is_file():
                kind = "torchscript"
            elif (path / "openvino_model.xml").is_file():  # e.g. an Optimum-Intel export
                kind = "openvino"
            else:
                kind = "checkpoint"
            return Source(str(spec), path, kind, _labels_from_config(cfg), max_positions(cfg))
        raise ArtifactError(
            f"{spec}: neither a bertpress artifact ({MANIFEST_NAME}) nor a Hugging Face model directory "
            "(config.json); give a checkpoint, compressed, onnx, torchscript or openvino artifact"
        )
    # Not a local path: the `minilm` alias or a hub id (bertpress.models resolves and checks it).

    where, local = resolve_model(spec)
    if local:
        p = Path(where)
        cfg = _config_json(p)
        return Source(str(spec), p, "checkpoint", _labels_from_config(cfg), max_positions(cfg),
                      name=str(spec))
    return Source(str(spec), None, "checkpoint", [], None, name=str(spec))


def resolve_sources(spec: str) -> list[Source]:
    """Like resolve_source, but a directory holding finished artifacts in its sub-directories
    (e.g. `bertpress export --format all` writes OUT/onnx and OUT/torchscript) expands to them."""
    path = Path(str(spec)).expanduser()
    if path.is_dir() and not (path / MANIFEST_NAME).is_file() and not (path / "config.json").is_file():
        children = sorted(p for p in path.iterdir() if p.is_dir() and (p / MANIFEST_NAME).is_file())
        if children:
            out = []
            for child in children:
                src = resolve_source(str(child))
                src.name = f"{path.name}/{child.name}"
                out.append(src)
            return out
    return [resolve_source(spec)]


def name_sources(sources: list[Source]) -> None:
    """Give each source a short unique display name (its directory name, made unique)."""
    seen: dict[str, int] = {}
    for s in sources:
        base = s.name or (s.path.name if s.path is not None else s.spec)
        n = seen.get(base, 0)
        seen[base] = n + 1
        s.name = base if n == 0 else f"{base}#{n + 1}"


def find_reference(sources: list[Source]) -> Source | None:
    """The fp32 checkpoint every ratio is measured against: the first checkpoint given, else the
    nearest checkpoint ancestor (manifest lineage) of the given artifacts that still exists."""
    for s in sources:
        if s.kind == "checkpoint":
            return s
    for s in sources:
        manifest, hops = s.manifest, 0
        while manifest and manifest.get("lineage") and hops < 8:
            parent = (manifest["lineage"] or {}).get("parent")
            if not parent or not Path(parent).is_dir():
                break
            try:
                ref = resolve_source(parent)
            except Exception:  # a vanished or unreadable ancestor: no reference from this chain
                break
            if ref.kind == "checkpoint":
                ref.name = f"{Path(parent).name} (fp32 reference)"
                return ref
            manifest, hops = ref.manifest, hops + 1
    return None
