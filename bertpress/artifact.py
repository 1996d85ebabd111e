"""Artifacts and their manifest, `bertpress.json`.

Every stage reads an artifact directory and writes a new one. The manifest is written last
(temp file + rename), and the whole output is built in a temp directory beside the target and
renamed into place at the end (`staged_output`), so a directory without a manifest — or a
half-written one — is never mistaken for a finished artifact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from bertpress.errors import ArtifactError, InputError

MANIFEST_NAME = "bertpress.json"
SCHEMA_VERSION = 1
KINDS = ("checkpoint", "compressed", "onnx", "torchscript", "web", "report")
# Files whose hash identifies a model artifact's weights, in order of preference.
WEIGHT_FILES = ("model.safetensors", "model.onnx", "model.pt", "pytorch_model.bin")


@dataclasses.dataclass
class Manifest:
    kind: str
    task: str = "text-classification"
    labels: list[str] = dataclasses.field(default_factory=list)
    max_length: int | None = None
    recipe: dict[str, Any] | None = None  # tagged config that produced the artifact
    lineage: dict[str, Any] | None = None  # {"parent": path, "parent_kind": k, "parent_sha256": h}
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)  # stage-specific facts
    versions: dict[str, str] = dataclasses.field(default_factory=dict)
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ArtifactError(f"manifest kind {self.kind!r} is not one of {', '.join(KINDS)}")
        expected = {
            "task": str, "labels": list, "metrics": dict, "details": dict, "versions": dict,
            "created": str, "schema_version": int,
        }
        for name, typ in expected.items():
            if not isinstance(getattr(self, name), typ):
                raise ArtifactError(f"manifest {name} must be a {typ.__name__}, got {getattr(self, name)!r:.60}")
        for name in ("recipe", "lineage"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), dict):
                raise ArtifactError(f"manifest {name} must be an object or null, got {getattr(self, name)!r:.60}")
        if self.max_length is not None and (isinstance(self.max_length, bool) or not isinstance(self.max_length, int)):
            raise ArtifactError(f"manifest max_length must be an integer or null, got {self.max_length!r:.60}")
        if not all(isinstance(x, str) for x in self.labels):
            raise ArtifactError("manifest labels must be a list of strings")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = MANIFEST_NAME) -> "Manifest":
        if not isinstance(data, dict):
            raise ArtifactError(f"{where}: the manifest must be a JSON object")
        version = data.get("schema_version")
        if isinstance(version, bool) or not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ArtifactError(
                f"{where}: schema_version {version!r} is not supported (this bertpress reads "
                f"<= {SCHEMA_VERSION}); upgrade bertpress or re-create the artifact"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ArtifactError(f"{where}: unknown manifest key(s) {', '.join(unknown)}")
        if "kind" not in data:
            raise ArtifactError(f"{where}: the manifest has no 'kind'")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ArtifactError(f"{where}: {exc}") from None


def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("bertpress", "torch", "transformers", "onnx", "onnxruntime", "openvino", "optimum",
                 "optimum-onnx", "torch-pruning", "tokenizers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def weights_file(path: Path) -> Path | None:
    """The main weights file of a model directory (or the file itself)."""
    path = Path(path)
    if path.is_file():
        return path
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return path / name
    return None


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON via a temp file in the same directory and an atomic rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file owner-only; give it the mode any new file gets (a web server
        # must be able to read a web artifact's bertpress.json)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=False, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@dataclasses.dataclass
class Artifact:
    """A finished artifact directory and its manifest."""

    path: Path
    manifest: Manifest

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Artifact":
        path = Path(path)
        if not path.exists():
            raise InputError(f"{path}: no such file or directory")
        if not path.is_dir():
            raise ArtifactError(f"{path}: an artifact is a directory; give the directory that holds {MANIFEST_NAME}")
        mpath = path / MANIFEST_NAME
        if not mpath.is_file():
            raise ArtifactError(
                f"{path}: not a finished bertpress artifact ({MANIFEST_NAME} is missing); "
                "re-run the stage that writes it"
            )
        try:
            data = json.loads(mpath.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{mpath}: corrupt manifest ({exc}); re-run the stage that wrote it") from None
        return cls(path=path, manifest=Manifest.from_dict(data, where=str(mpath)))

    @staticmethod
    def is_finished(path: str | os.PathLike) -> bool:
        return (Path(path) / MANIFEST_NAME).is_file()

    def weights_sha256(self) -> str | None:
        f = weights_file(self.path)
        return sha256_file(f) if f else None


def lineage_of(parent: str | os.PathLike) -> dict[str, Any]:
    """Lineage record of a parent artifact or model directory: path, kind and weights hash."""
    parent = Path(parent)
    kind = None
    if Artifact.is_finished(parent):
        with contextlib.suppress(Exception):
            kind = Artifact.load(parent).kind
    wf = weights_file(parent) if parent.exists() else None
    return {
        "parent": str(parent.resolve()) if parent.exists() else str(parent),
        "parent_kind": kind,
        "parent_sha256": sha256_file(wf) if wf else None,
    }


def write_manifest(directory: Path, manifest: Manifest) -> Manifest:
    """Fill in versions and creation time, then write the manifest atomically (call it last)."""
    manifest = dataclasses.replace(
        manifest,
        versions=manifest.versions or package_versions(),
        created=manifest.created or now_iso(),
    )
    write_json_atomic(Path(directory) / MANIFEST_NAME, manifest.to_dict())
    return manifest


def _is_within(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def check_output_dir(out: Path, *, overwrite: bool, inputs: tuple[Path, ...] = ()) -> Path:
    """Refuse outputs that would clobber inputs or an existing non-empty directory."""
    out = Path(out)
    for src in inputs:
        src = Path(src)
        if src.exists() and (_is_within(out, src) or _is_within(src, out)):
            raise InputError(
                f"--out {out} is inside (or contains) the input {src}; choose an output directory outside it"
            )
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is a file; choose a directory path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"--out {out} exists and is not empty; choose a new directory or pass --overwrite")
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out {out}: cannot create {parent} ({exc.strerror}); choose a writable location") from None
    if not os.access(parent, os.W_OK):
        raise InputError(f"--out {out}: cannot write in {parent}; choose a writable location")
    return out


def partial_dir(out: Path) -> Path:
    """A stable work directory beside `out` for resumable stages (e.g. training checkpoints)."""
    out = Path(out)
    return out.parent / f".{out.name}.partial"


@contextlib.contextmanager
def staged_output(
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    inputs: tuple[str | os.PathLike, ...] = (),
) -> Iterator[Path]:
    """Yield a temp directory beside `out`; on success move it into place, on error delete it.

    The caller writes everything (the manifest last) into the yielded directory. If the body
    raises or the process dies, `out` is untouched and no finished artifact appears.
    """
    out = check_output_dir(Path(out), overwrite=overwrite, inputs=tuple(Path(p) for p in inputs))
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as exc:
        raise InputError(f"--out {out}: cannot write in {out.parent} ({exc.strerror}); choose a writable location") from None
    try:
        yield tmp
        # A stage that forgot its manifest must not publish something that looks finished.
        if not (Artifact.is_finished(tmp) or any(
                Artifact.is_finished(p) for p in tmp.iterdir() if p.is_dir())):
            raise ArtifactError(f"internal error: nothing in {out} has a {MANIFEST_NAME}; not published")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish(tmp, out)


def publish(tmp: Path, out: Path) -> None:
    """Move a finished temp directory into place, replacing `out` (which was checked before)."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        if old is not None:  # put the previous artifact back
            os.replace(old, out)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def dir_size(path: Path) -> int:
    """Bytes on disk: a hard-linked file (an ONNX bundle's onnx/model.onnx) counts once."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    seen: dict[tuple[int, int], int] = {}
    for p in path.rglob("*"):
        if p.is_file():
            st = p.stat()
            seen[(st.st_dev, st.st_ino)] = st.st_size
    return sum(seen.values())
