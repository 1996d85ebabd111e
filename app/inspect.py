"""`bertpress inspect PATH`: what an artifact, HF model directory, ONNX or TorchScript file is."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from bertpress.artifact import MANIFEST_NAME, Artifact, dir_size
from bertpress.errors import ArtifactError, InputError, first_line
from bertpress.models import layer_shapes, load_classifier, param_count
from bertpress.openvino_rt import _reason, read_ir  # numpy only: openvino itself is imported when a file is read
from bertpress.safety import check_onnx_external_data, check_regular_file, contained_path


def _model_file(path: Path, suffix: str) -> Path | None:
    if path.is_file() and path.suffix == suffix:
        return path
    if path.is_dir():
        files = sorted(path.glob(f"*{suffix}"))
        return files[0] if files else None
    return None


def inspect_onnx(file: Path) -> dict[str, Any]:
    import onnx

    check_onnx_external_data(file)
    try:
        model = onnx.load(str(file), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ArtifactError(
            f"{file}: not a readable ONNX model ({type(exc).__name__}: {first_line(exc, 160)}); "
            "re-export it"
        ) from None
    ops = Counter(n.op_type for n in model.graph.node)
    params = sum(int(_numel(t.dims)) for t in model.graph.initializer)

    def io(values):
        return [{"name": v.name, "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]}
                for v in values]

    return {
        "format": "onnx",
        "file": str(file),
        "size_bytes": file.stat().st_size,
        "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None),
        "inputs": io(model.graph.input),
        "outputs": io(model.graph.output),
        "parameters": params,
        "op_counts": dict(ops.most_common()),
    }


def _numel(dims) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def inspect_torchscript(file: Path) -> dict[str, Any]:
    import torch

    try:
        module = torch.jit.load(str(file), map_location="cpu")
    except Exception as exc:
        raise ArtifactError(f"{file}: not a readable TorchScript file ({type(exc).__name__}); re-export it") from None
    params = sum(p.numel() for p in module.parameters())
    return {"format": "torchscript", "file": str(file), "size_bytes": file.stat().st_size,
            "parameters": int(params)}


def inspect_openvino(xml: Path) -> dict[str, Any]:
    """OpenVINO IR facts: the .xml/.bin pair, inputs and outputs, parameters and op counts (read by
    OpenVINO's IR frontend, the one bench and export use; nothing is compiled)."""
    import numpy as np


    weights = xml.with_suffix(".bin")
    for f in (xml, weights):
        check_regular_file(f, "OpenVINO file")
    try:
        model = read_ir(xml)
    except Exception as exc:  # OpenVINO raises RuntimeError with multi-line C++ context
        raise ArtifactError(f"{xml}: not a readable OpenVINO IR ({type(exc).__name__}: {_reason(exc)}); "
                            "re-export it") from None
    ops = Counter(op.get_type_name() for op in model.get_ops())
    params = sum(int(np.prod(list(op.get_output_shape(0)))) for op in model.get_ops()
                 if op.get_type_name() == "Constant" and op.get_output_element_type(0).is_real())

    def io(ports):
        return [{"name": p.get_any_name(), "shape": [str(d) for d in p.get_partial_shape()]} for p in ports]

    return {
        "format": "openvino",
        "file": str(xml),
        "weights_file": str(weights),
        "size_bytes": xml.stat().st_size + weights.stat().st_size,
        "inputs": io(model.inputs),
        "outputs": io(model.outputs),
        "parameters": params,
        "op_counts": dict(ops.most_common()),
    }


def inspect_hf(path: Path) -> dict[str, Any]:
    model, _ = load_classifier(path)
    cfg = model.config
    return {
        "format": "huggingface",
        "model_type": cfg.model_type,
        "architecture": (cfg.architectures or [type(model).__name__])[0],
        "parameters": param_count(model),
        "hidden_size": cfg.hidden_size,
        "layers": layer_shapes(model),
        "labels": [cfg.id2label[i] for i in range(cfg.num_labels)],
        "max_position_embeddings": cfg.max_position_embeddings,
    }


def inspect_path(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    out: dict[str, Any] = {"path": str(path), "size_on_disk_bytes": dir_size(path)}
    if path.is_dir() and (path / MANIFEST_NAME).is_file():
        out["manifest"] = Artifact.load(path).manifest.to_dict()
    elif path.is_dir():
        out["manifest"] = None
    web_model = ((out.get("manifest") or {}).get("details", {}).get("web") or {}).get("model_file")
    if web_model is not None:  # a name read from a file we did not write: it must stay inside

        web_model = contained_path(path, web_model, f"{path / MANIFEST_NAME} (details.web.model_file)")
    if web_model is not None and web_model.is_file():  # a web export: its model lives under model/onnx/
        out["model"] = inspect_onnx(web_model)
    elif (f := _model_file(path, ".xml")) is not None and f.with_suffix(".bin").is_file():
        out["model"] = inspect_openvino(f)
    elif (f := _model_file(path, ".onnx")) is not None:
        out["model"] = inspect_onnx(f)
    elif (f := _model_file(path, ".pt")) is not None:
        out["model"] = inspect_torchscript(f)
    elif path.is_dir() and (path / "config.json").is_file():
        out["model"] = inspect_hf(path)
    elif path.is_dir() and out.get("manifest"):
        out["model"] = None  # e.g. a report directory
    else:
        raise ArtifactError(
            f"{path}: not an artifact, HF model directory, .onnx or .pt file; give one of those"
        )
    return out


def inspect_text(data: dict[str, Any]) -> str:
    lines = [f"path         {data['path']}", f"size         {data['size_on_disk_bytes'] / 1e6:.1f} MB"]
    m = data.get("manifest")
    if m:
        lines.append(f"artifact     {m['kind']} (schema {m['schema_version']}, created {m['created']})")
        lines.append(f"labels       {', '.join(m['labels'])}   max length {m['max_length']}")
        cols = m.get("columns")
        if cols:
            reads = (f"sentence pairs: {cols['text']} + {cols['text_pair']}" if cols.get("text_pair")
                     else f"single texts: {cols['text']}")
            lines.append(f"inputs       {reads} (label column {cols['label']})")
        if m.get("recipe"):
            lines.append(f"recipe       {m['recipe'].get('_type')} {json.dumps(m['recipe'].get('_data'))[:200]}")
        if m.get("lineage"):
            lines.append(f"parent       {m['lineage'].get('parent')} ({m['lineage'].get('parent_kind')})")
        if m.get("metrics"):
            lines.append(f"metrics      {json.dumps(m['metrics'])[:300]}")
    else:
        lines.append("artifact     none (no bertpress.json)")
    model = data.get("model")
    if model:
        lines.append(f"format       {model['format']}   parameters {model.get('parameters', 0):,}")
        if model["format"] == "huggingface":
            lines.append(f"model        {model['architecture']} ({model['model_type']}), hidden {model['hidden_size']}")
            for i, layer in enumerate(model["layers"]):
                lines.append(f"  layer {i:2d}   heads {layer['heads']:3d} x {layer['head_size']}   ffn {layer['ffn']}")
        elif model["format"] == "openvino":
            lines.append(f"files        {Path(model['file']).name} + {Path(model['weights_file']).name}")
            lines.append("inputs       " + ", ".join(f"{i['name']}{i['shape']}" for i in model["inputs"]))
            top = list(model["op_counts"].items())[:12]
            lines.append("ops          " + ", ".join(f"{k} {v}" for k, v in top))
        elif model["format"] == "onnx":
            lines.append(f"opset        {model['opset']}")
            lines.append("inputs       " + ", ".join(f"{i['name']}{i['shape']}" for i in model["inputs"]))
            top = list(model["op_counts"].items())[:12]
            lines.append("ops          " + ", ".join(f"{k} {v}" for k, v in top))
    return "\n".join(lines)
