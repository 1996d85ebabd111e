"""The edge bundle around an exported model file: tokenizer files, config.json (so Optimum and
transformers tooling can read it), the standalone predict.py, and the facts a runtime needs.

The layout is also transformers.js's (checked against @huggingface/transformers 4.3.2): it reads
config.json (id2label, and its `transformers.js_config` block for the dtype), tokenizer.json,
tokenizer_config.json and `onnx/model{suffix}.onnx`, where the suffix comes from the dtype
("" for fp32, "_quantized" for q8). So an ONNX bundle holds the model twice by name and once on
disk: `model.onnx` at the top (predict.py, Optimum, bench, inspect) and `onnx/model.onnx` or
`onnx/model_quantized.onnx` as a hard link to it (a copy where the filesystem has no hard links).
"""

from __future__ import annotations

import json
import os
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from bertpress.errors import ArtifactError
from bertpress.signature import OUTPUT_NAMES

PREDICT_NAME = "predict.py"
JS_DIR = "onnx"  # transformers.js's default `subfolder`


def js_model_name(int8: bool) -> str:
    """transformers.js's file name for the dtype: q8 -> model_quantized.onnx, fp32 -> model.onnx."""
    return "model_quantized.onnx" if int8 else "model.onnx"


def js_session_options(disabled: list[str]) -> dict[str, Any]:
    """onnxruntime-node/-web session options that keep ORT from re-doing the fusions the export
    left out (the JS twin of InferenceSession(disabled_optimizers=...)). transformers.js 4.3.2
    takes no session options from config.json (its getSession reads only device, dtype,
    device_config, free_dimension_overrides, use_external_data_format), so callers pass these as
    `session_options` themselves; bertpress.json records them under details.model."""
    return {"extra": {"optimization": {"disable_specified_optimizers": ",".join(disabled)}}} if disabled else {}


def link_for_js(model_file: Path, out_dir: Path, int8: bool) -> Path:
    """OUT/onnx/model[_quantized].onnx as a hard link to `model_file` (no second copy on disk)."""
    target = out_dir / JS_DIR / js_model_name(int8)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(model_file, target)
    except OSError:  # e.g. a filesystem without hard links: a copy then
        shutil.copyfile(model_file, target)
    return target


def write_js_config(out_dir: Path, labels: list[str], int8: bool) -> None:
    """config.json's label names (the export's, not whatever the HF config held) and the dtype
    transformers.js should load: without it Node picks fp32 and the browser q8."""
    path = out_dir / "config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    if labels:
        cfg["id2label"] = {str(i): name for i, name in enumerate(labels)}
        cfg["label2id"] = {name: i for i, name in enumerate(labels)}
    cfg["transformers.js_config"] = {"dtype": "q8" if int8 else "fp32"}
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def preprocessing(tokenizer, max_length: int, input_names) -> dict[str, Any]:
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
        "input_names": list(input_names),  # the model family's (bertpress.signature.input_names)
        "output_names": list(OUTPUT_NAMES),
        "output": "logits; softmax gives class probabilities, index = label id",
    }


def write_support_files(model, tokenizer, out_dir: Path, *, predict: bool, labels: list[str] | None = None,
                        int8: bool | None = None) -> list[str]:
    """Tokenizer files, config.json (with the transformers.js block when `int8` is given) and
    predict.py; returns the file names at the top of `out_dir`."""
    if not getattr(tokenizer, "is_fast", False):
        raise ArtifactError(
            "the input's tokenizer is not a fast tokenizer, so no tokenizer.json can be bundled; "
            "save the checkpoint with a tokenizers-backed (fast) tokenizer"
        )
    tokenizer.save_pretrained(out_dir)
    model.config.save_pretrained(out_dir)
    if int8 is not None:
        write_js_config(out_dir, list(labels or []), int8)
    if predict:
        src = resources.files("bertpress.export").joinpath("templates", PREDICT_NAME)
        with resources.as_file(src) as path:
            shutil.copyfile(path, out_dir / PREDICT_NAME)
    if not (out_dir / "tokenizer.json").is_file():
        raise ArtifactError("the tokenizer did not write tokenizer.json; re-save the checkpoint's tokenizer")
    return sorted(p.name for p in out_dir.iterdir() if p.is_file())
