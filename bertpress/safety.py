"""Checks that keep untrusted model files from running code, reading outside their directory,
or blocking forever (FIFOs and device files where a model file should be).

Every pickle bertpress lets anything load goes through `torch_load_weights_only` first (model
weights, and every file of a Trainer checkpoint before a resume: `verify_resume_checkpoint`).

Pickled weights are refused by `bertpress.models` (torch's weights-only loader); this module
holds the ONNX side: an ONNX file may name "external data" files for its tensors, and a
crafted file can point those at any path on the machine (`../../etc/passwd`, `/root/.ssh/...`).
We refuse every external-data location that is absolute or resolves outside the model's own
directory before any runtime opens the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bertpress.errors import ArtifactError, UnsafeInputError


def check_onnx_external_data(file: str | Path) -> list[str]:
    """Return the external-data file names of an ONNX model, refusing unsafe locations."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors

    file = Path(file)
    try:
        model = onnx.load(str(file), load_external_data=False)
    except Exception as exc:
        raise ArtifactError(
            f"{file}: not a readable ONNX model ({type(exc).__name__}); re-export it"
        ) from None
    base = file.parent.resolve()
    locations = []
    for tensor in _get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = ExternalDataInfo(tensor).location
        target = (base / location).resolve()
        if Path(location).is_absolute() or not target.is_relative_to(base):
            raise UnsafeInputError(
                f"{file}: tensor {tensor.name!r} reads external data from {location!r}, outside the "
                "model's directory; refused (re-export the model with its data inside its directory)"
            )
        locations.append(location)
    return sorted(set(locations))


# ---- paths named inside files: a manifest's file name, a shard index's shards -------------------
#
# A file we did not write (an artifact, a model directory from anywhere) may name other files:
# bertpress.json's details (`details.web.model_file`), a sharded checkpoint's
# `model.safetensors.index.json` / `pytorch_model.bin.index.json` weight_map. Each such name is
# resolved (symlinks followed) and refused if it is absolute or leaves the directory it is read
# from, before anything opens it. (ONNX external data: check_onnx_external_data above.)


def contained_path(base: str | Path, name: Any, where: str) -> Path:
    """BASE/NAME, refused (one line) unless NAME is a relative path resolving inside BASE."""
    base = Path(base)
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ArtifactError(f"{where}: names the file {name!r}, not a relative file name; re-save the artifact")
    target = (base / name).resolve()
    if Path(name).is_absolute() or not target.is_relative_to(base.resolve()):
        raise UnsafeInputError(
            f"{where}: names the file {name!r}, outside {base}; refused (a file inside an artifact may only "
            "name files inside it - re-save the artifact)"
        )
    return base / name


SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def check_shard_indexes(directory: str | Path) -> None:
    """Refuse a sharded checkpoint whose index names a shard outside its directory (`../x`, `/etc/...`)."""
    import json

    directory = Path(directory)
    for name in SHARD_INDEXES:
        index = directory / name
        if not index.is_file():
            continue
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ArtifactError(f"{index}: unreadable shard index ({exc}); re-save the model") from None
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict):
            raise ArtifactError(f"{index}: no weight_map object; re-save the model")
        seen: set[str] = set()
        for shard in weight_map.values():
            if isinstance(shard, str) and shard in seen:
                continue
            contained_path(directory, shard, f"{index} (weight_map)")
            seen.add(shard)


# ---- special files: a FIFO or device where a model file should be would block a read forever ----


def check_regular_files(directory: str | Path) -> None:
    """Refuse a model/artifact directory holding a FIFO, socket or device file.

    Loaders open files by name (config.json, tokenizer.json, model.onnx...); opening a FIFO
    blocks until a writer appears and a device file reads forever, so such an entry is refused
    before anything opens it. Symlinks are judged by what they point to."""
    import stat

    directory = Path(directory)
    try:
        entries = list(directory.iterdir())
    except OSError:
        return  # the caller reports a missing or unreadable directory in its own words
    for entry in entries:
        try:
            mode = entry.stat().st_mode
        except OSError:
            continue  # a dangling link: whoever needs the file reports it missing
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device file"
                    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
                    else "not a regular file")
            raise UnsafeInputError(
                f"{entry}: is {kind}, not a regular file; reading it could block forever - replace it "
                "with the real file"
            )


def check_regular_file(path: str | Path, what: str = "file") -> None:
    """Refuse one input path that is a FIFO/device/socket (see check_regular_files)."""
    import stat

    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise UnsafeInputError(f"{path}: the {what} is not a regular file (a FIFO, device or socket); "
                               "reading it could block forever - give a regular file")


# ---- pickles: weights-only loads, whatever the environment says ---------------------------------

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# Written by the HF Trainer in every checkpoint, a pickled TrainingArguments: it never passes a
# weights-only load and the Trainer never reads it on resume, so a resume deletes it unread.
UNREAD_PICKLES = ("training_args.bin",)


def _trainer_safe_globals():
    """The numpy globals the HF Trainer itself allow-lists for rng_state.pth (transformers'
    `safe_globals`): plain arrays and dtypes, no callables beyond numpy's array rebuild."""
    import numpy as np
    import torch

    core = getattr(np, "_core", None) or np.core
    allow = [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    allow += [type(np.dtype(t)) for t in (np.float32, np.float64, np.int64, np.int32, np.uint8)]
    return torch.serialization.safe_globals(allow)


def torch_load_weights_only(file: str | Path) -> Any:
    """torch.load with weights_only=True passed explicitly: torch honours an explicit True even
    when TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 is set (it only overrides an unset argument), and
    TORCH_FORCE_WEIGHTS_ONLY_LOAD can only make it stricter."""
    import torch

    with _trainer_safe_globals():
        return torch.load(str(file), map_location="cpu", weights_only=True, mmap=False)


def check_pickle(file: str | Path) -> None:
    """Raise UnsafeInputError unless `file` loads with torch's weights-only unpickler."""
    file = Path(file)
    check_regular_file(file, "pickled weights file")
    try:
        torch_load_weights_only(file)
    except Exception as exc:
        raise UnsafeInputError(
            f"{file}: refused to load pickled weights that are not plain tensors ({type(exc).__name__}); "
            "it could run code - delete it, or convert it to safetensors from a trusted environment"
        ) from None


def verify_resume_checkpoint(checkpoint: str | Path) -> None:
    """Check every file of a Trainer checkpoint before the Trainer loads anything from it.

    Pickles (optimizer.pt, scheduler.pt, rng_state*.pth, scaler.pt, *.bin) must pass a
    weights-only load; JSON files must parse; safetensors headers must read; no FIFO/device
    files. `training_args.bin` (never read on resume) is deleted unread. Raises
    UnsafeInputError / ArtifactError naming the file."""
    import json

    checkpoint = Path(checkpoint)
    check_regular_files(checkpoint)
    for name in UNREAD_PICKLES:
        (checkpoint / name).unlink(missing_ok=True)
    for file in sorted(p for p in checkpoint.rglob("*") if p.is_file() or p.is_symlink()):
        if file.is_symlink() and not file.resolve().is_relative_to(checkpoint.resolve()):
            raise UnsafeInputError(f"{file}: a link out of the checkpoint directory; refused (delete "
                                   f"{checkpoint} to start over)")
        suffix = file.suffix.lower()
        if suffix in PICKLE_SUFFIXES:
            check_pickle(file)
        elif suffix == ".json":
            try:
                json.loads(file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                raise ArtifactError(f"{file}: unreadable JSON ({type(exc).__name__}); the checkpoint is "
                                    "incomplete") from None
        elif suffix == ".safetensors":
            from safetensors import safe_open

            try:
                with safe_open(str(file), framework="pt") as f:
                    f.keys()
            except Exception as exc:
                raise ArtifactError(f"{file}: unreadable safetensors ({type(exc).__name__}); the "
                                    "checkpoint is incomplete") from None
