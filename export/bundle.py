"""The edge bundle around an exported model file: tokenizer files, config.json (so Optimum and
transformers tooling can read it), the standalone predict.py, and the facts a runtime needs."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from bertpress.errors import ArtifactError
from bertpress.signature import INPUT_NAMES, OUTPUT_NAMES

PREDICT_NAME = "predict.py"


def preprocessing(tokenizer, max_length: int) -> dict[str, Any]:
    """How texts become inputs; predict.py reads this (the tokenizer.json holds the details)."""
    init = getattr(tokenizer, "init_kwargs", {}) or {}
    lower = init.get("do_lower_case", getattr(tokenizer, "do_lower_case", None))
    return {
        "tokenizer_file": "tokenizer.json",
        "lowercase": bool(lower) if lower is not None else None,
        "max_length": max_length,
        "truncation": "longest_first",
        "padding": "longest (right)",
        "pad_token_id": tokenizer.pad_token_id,
        "special_tokens": {k: getattr(tokenizer, k, None) for k in ("cls_token", "sep_token", "pad_token", "unk_token")},
        "input_names": list(INPUT_NAMES),
        "output_names": list(OUTPUT_NAMES),
        "output": "logits; softmax gives class probabilities, index = label id",
    }


def write_support_files(model, tokenizer, out_dir: Path, *, predict: bool) -> list[str]:
    if not getattr(tokenizer, "is_fast", False):
        raise ArtifactError(
            "the input's tokenizer is not a fast tokenizer, so no tokenizer.json can be bundled; "
            "save the checkpoint with a tokenizers-backed (fast) tokenizer"
        )
    tokenizer.save_pretrained(out_dir)
    model.config.save_pretrained(out_dir)
    if predict:
        src = resources.files("bertpress.export").joinpath("templates", PREDICT_NAME)
        with resources.as_file(src) as path:
            shutil.copyfile(path, out_dir / PREDICT_NAME)
    if not (out_dir / "tokenizer.json").is_file():
        raise ArtifactError("the tokenizer did not write tokenizer.json; re-save the checkpoint's tokenizer")
    return sorted(p.name for p in out_dir.iterdir())
