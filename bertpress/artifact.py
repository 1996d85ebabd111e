"""Artifacts and their manifest, `bertpress.json`.

Every stage reads an artifact directory and writes a new one. The manifest is written last
(temp file + rename), and the whole output is built in a temp directory beside the target and
renamed into place at the end (`staged_output`), so a directory without a manifest — or a
half-written one — is never mistaken for a finished artifact.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as _dt
import errno
import fcntl
import functools
import glob
import hashlib
import json
import math
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

from bertpress.arch import max_positions
from bertpress.errors import (ArtifactError, DiskFullError, InputError, OwnershipError, check_terminated, echo,
                             is_disk_full)
from bertpress import dist
from bertpress.safety import check_regular_files

MANIFEST_NAME = "bertpress.json"
SCHEMA_VERSION = 1
KINDS = ("checkpoint", "compressed", "onnx", "torchscript", "web", "openvino", "report")
# Files whose hash identifies a model artifact's weights, in order of preference.
WEIGHT_FILES = ("model.safetensors", "model.onnx", "model.pt", "pytorch_model.bin")


# The task facts: what a model is, carried unchanged from an artifact to every artifact made from it.
TASK_FACTS = ("task", "labels", "max_length", "columns")


@dataclasses.dataclass
class Manifest:
    kind: str
    task: str = "text-classification"
    labels: list[str] = dataclasses.field(default_factory=list)
    max_length: int | None = None
    # the data columns the model reads: {"text", "text_pair" (None: single texts), "label"}; None: unknown
    columns: dict[str, Any] | None = None
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
            raise ArtifactError(f"manifest max_length must be an integer or null, got {echo(self.max_length)}")
        if self.max_length is not None and self.max_length < 2:
            raise ArtifactError(f"manifest max_length={self.max_length} is below 2 (a sequence needs [CLS] and "
                                "[SEP]); re-create the artifact")
        if not all(isinstance(x, str) for x in self.labels):
            raise ArtifactError("manifest labels must be a list of strings")
        if self.columns is not None:
            c = self.columns
            if (not isinstance(c, dict) or set(c) != {"text", "text_pair", "label"} or not isinstance(c["text"], str)
                    or not isinstance(c["label"], str) or not isinstance(c["text_pair"], (str, type(None)))):
                raise ArtifactError(f"manifest columns must be {{text, text_pair, label}} names (text_pair may be "
                                    f"null), got {echo(c)}; re-create the artifact")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def task_facts(self) -> dict[str, Any]:
        """What the model is (TASK_FACTS): the facts every later stage reads from the manifest."""
        return {k: copy.deepcopy(getattr(self, k)) for k in TASK_FACTS}

    @classmethod
    def child_of(cls, parent: "Manifest | None", *, kind: str, override: tuple[str, ...] = (),
                 **fields: Any) -> "Manifest":
        """The manifest of an artifact made from `parent`: the one place a stage's output gets its
        task facts. What the parent records (labels, max length, columns, task) is carried as it
        is, whatever path made the child (search or not, every format); a stage's own value only
        fills a fact the parent does not record (an input without a manifest, e.g. an HF dir), or
        replaces it where the user asked for that explicitly (`override`: export --max-length)."""
        if parent is not None:
            for key, value in parent.task_facts().items():
                if value not in (None, [], "") and key not in override:
                    fields[key] = value
        return cls(kind=kind, **fields)

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
                 "optimum-onnx", "torch-pruning", "tokenizers", "nncf"):
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


def strict_json(data: Any) -> Any:
    """`data` with every NaN/inf float replaced by None: bertpress writes strict JSON only
    (bare NaN/Infinity are not JSON, and most non-Python readers reject them)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: strict_json(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [strict_json(v) for v in data]
    return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def read_json(path: Path) -> Any:
    """Read strict JSON (NaN/Infinity refused, like every other JSON reader outside Python)."""
    return json.loads(Path(path).read_text(encoding="utf-8"), parse_constant=_refuse_constant)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write strict JSON via a temp file in the same directory and an atomic rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file owner-only; give it the mode any new file gets (a web server
        # must be able to read a web artifact's bertpress.json)
        os.chmod(tmp, 0o666 & ~current_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(strict_json(data), f, indent=2, sort_keys=False, default=str, allow_nan=False)
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

        check_regular_files(path)
        if not mpath.is_file():
            raise ArtifactError(
                f"{path}: not a finished bertpress artifact ({MANIFEST_NAME} is missing); "
                "re-run the stage that writes it"
            )
        try:
            data = read_json(mpath)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ArtifactError(f"{mpath}: corrupt manifest ({exc}); re-run the stage that wrote it") from None
        manifest = Manifest.from_dict(data, where=str(mpath))
        _check_max_length(path, manifest)
        return cls(path=path, manifest=manifest)

    @staticmethod
    def is_finished(path: str | os.PathLike) -> bool:
        return (Path(path) / MANIFEST_NAME).is_file()

    def weights_sha256(self) -> str | None:
        f = weights_file(self.path)
        return sha256_file(f) if f else None


def _check_max_length(path: Path, manifest: Manifest) -> None:
    """A manifest's max_length must fit the model's position embeddings (config.json beside it)."""
    if manifest.max_length is None or not (path / "config.json").is_file():
        return
    try:
        cfg = read_json(path / "config.json")
    except (OSError, UnicodeDecodeError, ValueError):
        return  # the model loader reports a corrupt config.json with its own message

    limit = max_positions(cfg) if isinstance(cfg, dict) else None
    if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 2 and manifest.max_length > limit:
        raise ArtifactError(
            f"{path / MANIFEST_NAME}: max_length {manifest.max_length} is above the model's {limit} position "
            f"embeddings; set max_length between 2 and {limit}, or re-create the artifact"
        )


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


# ---- ownership of output locations ---------------------------------------------------------
#
# bertpress deletes or replaces only what it can prove it wrote: a finished artifact whose
# manifest it can read, a scratch directory of its own naming (staging `.NAME.tmp-PID-XXXX`,
# `.NAME.old-PID`, resume work `.NAME.partial-PID`), its lock files (`.NAME.lock`), an empty directory,
# or a directory tree made
# only of those plus files it recorded (name + sha256) in `OWNED_RECORD` when it wrote them
# (the pipeline's recipe.resolved.yaml, .pipeline/*.json, quickstart's recipe.yaml, SUMMARY.md).
# Everything else is refused with one line naming the path and the fix.

OWNED_RECORD = ".bertpress-owned.json"
_SCRATCH = re.compile(r"^\.(?P<name>.+)\.(?:tmp-(?P<tmppid>\d+)-[A-Za-z0-9_]+|tmp-[A-Za-z0-9_]+|"
                      r"old-(?P<oldpid>\d+)|partial(?:-(?P<partpid>\d+))?)$")
_LOCK_NAME = re.compile(r"^\..+\.lock$")


def is_scratch_name(name: str) -> bool:
    """True for bertpress's own staging/old/partial directory names."""
    return _SCRATCH.match(name) is not None


def _owned_files(root: Path) -> dict[str, str]:
    try:
        data = read_json(root / OWNED_RECORD)
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _record_owned(root: Path, rel: str, file: Path) -> None:
    owned = _owned_files(root)
    owned[rel] = sha256_file(file)
    write_json_atomic(root / OWNED_RECORD, owned)


def check_may_write(root: Path, rel: str, content: bytes | None = None, label: str = "") -> None:
    """Refuse to overwrite ROOT/REL unless bertpress wrote it (recorded hash) or it already holds
    exactly `content` (rewriting identical bytes loses nothing)."""
    root = Path(root)
    path = root / rel
    if not (path.exists() or path.is_symlink()):
        return
    if _is_owned_file(root, rel, path, _owned_files(root)):
        return
    if content is not None and path.is_file() and not path.is_symlink():
        with contextlib.suppress(OSError):
            if path.read_bytes() == content:
                return
    raise OwnershipError(
        f"{label + ' ' if label else ''}{path}: exists and was not written by bertpress (or was edited since); "
        "refusing to overwrite it - move it away, or choose another output directory"
    )


def write_owned_text(root: Path, rel: str, text: str) -> Path:
    """Write ROOT/REL atomically and record it as bertpress's (so a later run may replace it).
    A file of that name that bertpress did not write is never overwritten (check_may_write)."""
    root = Path(root)
    path = root / rel
    check_may_write(root, rel, text.encode("utf-8"))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 -> what any new file gets
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _record_owned(root, rel, path)
    return path


def write_owned_json(root: Path, rel: str, data: Any) -> Path:
    """write_json_atomic(ROOT/REL) and record the file as bertpress's."""
    path = Path(root) / rel
    check_may_write(Path(root), rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, data)
    _record_owned(Path(root), rel, path)
    return path


def _is_owned_file(root: Path, rel: str, path: Path, owned: dict[str, str]) -> bool:
    digest = owned.get(rel)
    if not digest or not path.is_file() or path.is_symlink():
        return False
    try:
        return sha256_file(path) == digest
    except OSError:
        return False


def _foreign(path: Path, root: Path, owned: dict[str, str], depth: int = 0) -> Path | None:
    """The first entry under `path` that bertpress cannot prove it wrote, or None."""
    if path.is_symlink() or not path.is_dir():
        if path != root and _LOCK_NAME.match(path.name) and path.is_file() and not path.is_symlink():
            return None  # a run's lock file (out_lock), left by a killed run: ours, and empty
        rel = path.relative_to(root).as_posix() if path != root else path.name
        return None if _is_owned_file(root, rel, path, owned) else path
    if is_scratch_name(path.name) and path != root:
        return None
    try:
        entries = sorted(path.iterdir())
    except OSError:
        return path
    if not entries:
        return None
    if (path / MANIFEST_NAME).is_file():
        try:
            Artifact.load(path)
            return None
        except Exception:  # unreadable manifest: not provably ours
            return path / MANIFEST_NAME
    if depth >= 3:
        return path
    for entry in entries:
        if path == root and entry.name == OWNED_RECORD:
            continue
        found = _foreign(entry, root, owned, depth + 1)
        if found is not None:
            return found
    return None


def why_not_replaceable(path: str | os.PathLike) -> str | None:
    """None if bertpress may delete or replace `path`; otherwise why not (one clause).

    The one decision every verb, the pipeline, quickstart and the Python API go through."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_symlink():
        return f"{path} is a symbolic link"
    if not path.is_dir():
        return f"{path} is a file"
    found = _foreign(path, path, _owned_files(path))
    if found is None:
        return None
    if found == path:
        return f"{path} holds files bertpress did not write"
    return f"{found} was not written by bertpress"


def check_replaceable(path: str | os.PathLike, label: str = "--out") -> None:
    """Raise OwnershipError naming the path and the fix unless `why_not_replaceable` allows it."""
    reason = why_not_replaceable(path)
    if reason is not None:
        raise OwnershipError(
            f"{label} {path}: refusing to delete or replace it: {reason} (bertpress replaces only a "
            f"finished artifact with a readable {MANIFEST_NAME}, its own staging directories or an empty "
            "directory); choose a new directory, or move your files out of it"
        )


def remove_owned(path: str | os.PathLike, label: str = "--out") -> None:
    """Delete `path` if bertpress may (check_replaceable), else raise OwnershipError."""
    path = Path(path)
    check_replaceable(path, label)
    if path.exists():
        shutil.rmtree(path)


def resolve_out(out: str | os.PathLike) -> Path:
    """The directory an --out names: `~` expanded, a symlink followed to its target, absolute."""
    out = Path(out).expanduser()
    if out.is_symlink():
        out = out.resolve()
    return Path(os.path.abspath(out))


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale_staging(out: Path, note=None) -> list[Path]:
    """Remove staging dirs beside `out` left by dead processes (kill -9); report others.

    Returns what was removed. Live processes' staging is left alone; a leftover without a PID
    in its name (older bertpress) is reported, not removed."""
    note = note or (lambda m: print(m, file=sys.stderr))
    removed = []
    pattern = f".{glob.escape(out.name)}."
    for p in sorted(out.parent.glob(pattern + "tmp-*")) + sorted(out.parent.glob(pattern + "old-*")):
        m = _SCRATCH.match(p.name)
        if not p.is_dir() or p.is_symlink() or m is None or m.group("name") != out.name:
            continue
        pid = m.group("tmppid") or m.group("oldpid")
        if pid is None:
            note(f"note: {p} is left over from an interrupted run (no owner recorded); delete it when "
                 "no other bertpress is writing here")
        elif not _pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
            note(f"note: removed {p}, left by an interrupted run (process {pid} is gone)")
    return removed


def check_output_dir(out: Path, *, overwrite: bool, inputs: tuple[Path, ...] = (),
                     label: str = "--out") -> Path:
    """Refuse outputs that would clobber inputs, the current directory, or anything bertpress
    did not write; returns the resolved output path (a symlink's target)."""
    out = resolve_out(out)
    cwd = Path.cwd().resolve()
    if _is_within(cwd, out):
        raise InputError(f"{label} {out} is the current directory (or contains it); give a new "
                         "subdirectory such as runs/NAME")
    for src in inputs:
        src = Path(src).expanduser()
        if src.exists() and (_is_within(out, src) or _is_within(src, out)):
            raise InputError(
                f"{label} {out} is inside (or contains) the input {src}; choose an output directory outside it"
            )
    if out.exists() and not out.is_dir():
        raise InputError(f"{label} {out} exists and is a file; choose a directory path")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{label} {out}: cannot create {parent} ({exc.strerror}); choose a writable location") from None
    if not os.access(parent, os.W_OK):
        raise InputError(f"{label} {out}: cannot write in {parent} (read-only or no permission); "
                         "choose a writable location")
    hold_output_lock(out, label)  # before anything is cleaned or read: one live run per output
    clean_stale_staging(out)
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"{label} {out} exists and is not empty; choose a new directory or pass --overwrite")
        check_replaceable(out, label)
    return out


# ---- one live run per output: an OS lock beside --out ---------------------------------------
#
# Two runs into one --out must not mix. Each run holds `fcntl.flock` on `.NAME.lock` beside --out
# from its first check of the output (check_output_dir) until it returns; a second run is refused
# in one line naming the holder's PID. flock (stdlib, the kernel's advisory lock) is released by
# the kernel when the holder dies, however it dies (kill -9 included), so a lock is never stale and
# needs no PID guessing; the PID in the file is only for the message. The file is unlinked on
# release; an acquirer checks that the file it locked is still the one at that path (a releaser may
# have unlinked it meanwhile) - the usual unlink-safe flock protocol. Locks are per process and
# re-entrant (the pipeline checks a stage folder, then the stage checks it again); under torchrun
# only rank 0 writes, so only rank 0 locks. A lock is held for the `output_locks()` scope the verb
# runs in (every verb, `run_recipe` and quickstart open one); with no scope, `staged_output` opens
# its own. Not for NFS without lockd (flock is local there).

_HELD: dict[Path, list] = {}  # resolved lock path -> [fd, holders] (this process)
_SCOPES = threading.local()
_HELD_GUARD = threading.Lock()


def lock_path(out: Path) -> Path:
    out = resolve_out(out)
    return out.parent / f".{out.name}.lock"


def _lock_holder(path: Path) -> str:
    try:
        pid = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        pid = ""
    return f"process {pid}" if pid.isdigit() else "another process"


def _acquire(out: Path, label: str) -> Path | None:
    """Lock `out` for this process (re-entrant); None if it could not be locked for a reason the
    caller reports better (no parent directory, read-only): check_output_dir raises for those."""
    path = lock_path(out)
    with _HELD_GUARD:
        if path in _HELD:
            _HELD[path][1] += 1
            return path
        for _ in range(20):  # the file we locked was unlinked by its releaser: take the new one
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            except OSError:
                return None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return None
                raise InputError(
                    f"{label} {out} is being written by another bertpress run ({_lock_holder(path)}, lock "
                    f"{path.name}); wait for it to finish, or choose another {label}"
                ) from None
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            _HELD[path] = [fd, 1]
            return path
    return None


def _release(path: Path) -> None:
    with _HELD_GUARD:
        entry = _HELD.get(path)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _HELD[path]
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still locked: a waiter then sees a different inode and retries
        os.close(entry[0])


def hold_output_lock(out: Path, label: str) -> None:
    """Lock `out` for the innermost output_locks() scope (no scope: nothing to hold it for)."""

    scopes = getattr(_SCOPES, "stack", None)
    if not scopes or not dist.is_main_process():
        return
    path = lock_path(out)
    if path in scopes[-1]:
        return
    got = _acquire(out, label)
    if got is not None:
        scopes[-1].append(got)


@contextlib.contextmanager
def output_locks() -> Iterator[None]:
    """Hold, until the block ends, the lock of every output checked inside it (check_output_dir)."""
    if not hasattr(_SCOPES, "stack"):
        _SCOPES.stack = []
    _SCOPES.stack.append([])
    try:
        yield
    finally:
        for path in reversed(_SCOPES.stack.pop()):
            _release(path)


def holds_output_locks(fn):
    """Decorator: run a verb inside output_locks() (its outputs stay locked until it returns)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with output_locks():
            return fn(*args, **kwargs)
    return wrapper


# ---- resumable work directories ---------------------------------------------------------------
#
# A resumable stage (fine-tuning's Trainer checkpoints) works in `.NAME.partial-PID` beside --out,
# private to its run: PID is the run's (under torchrun the launcher's, which every rank shares, so
# all ranks agree on the directory). A resume continues the newest such directory whose run is gone
# (the lock above means no live run is writing into --out) and says which; a fresh run removes them.


def run_pid() -> int:
    """The process a run's work directory is named after: ours, or torchrun's (shared by the ranks)."""

    return os.getppid() if dist.is_distributed() else os.getpid()


def partial_dir(out: Path) -> Path:
    """This run's private work directory beside `out` for resumable stages (training checkpoints)."""
    out = resolve_out(out)
    return out.parent / f".{out.name}.partial-{run_pid()}"


def dead_partial_dirs(out: Path) -> list[Path]:
    """Work directories of earlier runs into `out` whose process is gone, newest first (the
    pre-PID name `.NAME.partial` counts as gone)."""
    out = resolve_out(out)
    found = []
    for p in out.parent.glob(f".{glob.escape(out.name)}.partial*"):
        m = _SCRATCH.match(p.name)
        if m is None or m.group("name") != out.name or not p.is_dir() or p.is_symlink():
            continue
        pid = m.group("partpid")
        if pid is not None and (int(pid) == run_pid() or _pid_alive(int(pid))):
            continue
        found.append(p)
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def resumable_partial(out: Path) -> Path | None:
    """The work directory a resume of `out` continues: the newest one left by a run that is gone."""
    found = dead_partial_dirs(out)
    return found[0] if found else None


def disk_full_error(exc: BaseException, out: Path, written: int, label: str = "--out") -> DiskFullError:
    """One line for ENOSPC: where, how much was needed (at least), how much is free."""
    where = getattr(exc, "filename", None) or out
    try:
        free = shutil.disk_usage(out.parent).free
    except OSError:
        free = None
    free_txt = f"{free} bytes are free" if free is not None else "free space unknown"
    return DiskFullError(
        f"{label} {out}: the disk is full (no space left on device writing {where}); the output needs "
        f"more than {written} bytes (written before the disk filled) and {free_txt} on that filesystem; "
        "free some space or choose --out on another disk"
    )


@contextlib.contextmanager
def staged_output(
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    inputs: tuple[str | os.PathLike, ...] = (),
    label: str = "--out",
) -> Iterator[Path]:
    """Yield a temp directory beside `out`; on success move it into place, on error delete it.

    The caller writes everything (the manifest last) into the yielded directory. If the body
    raises or the process dies, `out` is untouched and no finished artifact appears. The temp
    directory's name carries our PID, so a later run can remove it once this process is gone.
    """
    with output_locks():  # held until published (re-entrant inside a verb's own scope)
        yield from _staged_output(out, overwrite=overwrite, inputs=inputs, label=label)


def _staged_output(out, *, overwrite: bool, inputs, label: str) -> Iterator[Path]:
    out = check_output_dir(Path(out), overwrite=overwrite, inputs=tuple(Path(p) for p in inputs), label=label)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(exc, out, 0, label) from None
        raise InputError(f"{label} {out}: cannot write in {out.parent} ({exc.strerror}); choose a writable location") from None
    try:
        yield tmp
        check_terminated()  # a SIGTERM whose raise a `__del__` swallowed still stops the publish
        # A stage that forgot its manifest must not publish something that looks finished.
        if not (Artifact.is_finished(tmp) or any(
                Artifact.is_finished(p) for p in tmp.iterdir() if p.is_dir())):
            raise ArtifactError(f"internal error: nothing in {out} has a {MANIFEST_NAME}; not published")
    except BaseException as exc:
        written = dir_size(tmp) if tmp.exists() else 0
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, Exception) and is_disk_full(exc):
            raise disk_full_error(exc, out, written, label) from None
        raise
    apply_umask(tmp)
    publish(tmp, out, overwrite=overwrite, label=label)


def current_umask() -> int:
    """The process umask (reading it means setting it: set it straight back)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def apply_umask(root: Path) -> None:
    """Give everything under `root` the mode a new file or directory gets from the user's umask.

    The staging directory comes from mkdtemp (0700) and some writers use mkstemp (0600): owner-only
    modes that would make a published `--format web` folder unreadable to a web server running as
    another user. Published output follows the umask like any tool's (0755 / 0644 under 022);
    executables keep their execute bits (under the umask). Symlinks are left alone."""
    umask = current_umask()
    paths = [Path(root)] + [Path(d) / n for d, dirs, files in os.walk(root) for n in dirs + files]
    for p in paths:
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            continue
        full = 0o777 if stat.S_ISDIR(st.st_mode) or st.st_mode & stat.S_IXUSR else 0o666
        want = full & ~umask
        if stat.S_IMODE(st.st_mode) != want:
            os.chmod(p, want)


def publish(tmp: Path, out: Path, *, overwrite: bool = True, label: str = "--out") -> None:
    """Move a finished temp directory into place.

    Without `overwrite` this is one atomic rename, which fails if another process published a
    (non-empty) `out` meanwhile: the later run fails cleanly instead of replacing the first.
    With `overwrite`, `out` is re-checked (ownership) just before it is replaced."""
    if not overwrite:
        try:
            os.rename(tmp, out)
            return
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise InputError(
                    f"{label} {out} was created by another process while this run was working; nothing "
                    "was replaced: re-run with --overwrite to replace it, or choose another --out"
                ) from None
            raise
    old = None
    try:
        if out.exists() or out.is_symlink():
            check_replaceable(out, label)
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
        os.replace(tmp, out)
    except BaseException:
        if old is not None and old.exists() and not out.exists():  # put the previous artifact back
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
