"""ONNX export: legacy exporter -> ORT transformer fusions -> ORT int8 quantizer -> (.ort).

Order of steps (measured, see docs/export.md): export with the TorchScript-based exporter
(dynamo=False: only its graph gets ORT's Attention/EmbedLayerNorm fusion; the dynamo exporter at
opset >= 23 writes the standard ONNX `Attention` op, which ORT's fusion statistics count as
"Attention" but its int8 quantizer turns into an invalid model), fuse with
onnxruntime.transformers.optimizer, and quantize the *fused* graph. transformers 5.x runs SDPA
attention by default and reshapes heads with -1: the trace is taken from an eager-attention copy
and the optimizer is given the head count and attention width explicitly (`attention_shape`), which
gives the same fusions and logits as 4.57's graph did. Quantizing first
would hide the MatMuls from the fusion patterns; quantizing the fused graph works once the
quantizer is told that tensors shape inference cannot type (outputs of the contrib ops) are
float (extra_options DefaultTensorType=FLOAT) and stale value_info entries are dropped.

Residual Add + LayerNormalization stay unfused by default: ONNX Runtime 1.31's CPU
SkipLayerNormalization kernel takes 364 us for a 1x128x384 input on one core where the Add + Add +
LayerNormalization it replaces take 78 us (`python -m bertpress.export.microbench`); the whole int8
MiniLM runs 1.2x faster without it (docs/results/export.md). ORT would
re-fuse them when it loads the file, so the model carries the optimizer to disable in its
metadata (`ORT_DISABLED_KEY`) and every session bertpress opens honours it (`bertpress.ort.session`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bertpress.arch import adapter_for
from bertpress.errors import ArtifactError, ConfigError, first_line
from bertpress.ort import fused_attention_count, mark_disabled, op_counts, session, session_options
from bertpress.quiet import quiet
from bertpress.signature import INPUT_NAMES, OUTPUT_NAMES, encode, input_names, logits_module, special_ids, synthetic_batch

FILE_NAME = "model.onnx"
ORT_FILE_NAME = "model.ort"
SLOW_FUSIONS = ("SkipLayerNormFusion",)
# The fusions we read back from the optimizer and record in the manifest.
FUSION_KEYS = ("Attention", "MultiHeadAttention", "EmbedLayerNormalization", "SkipLayerNormalization",
               "LayerNormalization", "BiasGelu", "Gelu", "FastGelu")


def check_opset(opset: int) -> None:
    from torch.onnx import _constants

    top = getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20)
    if opset > top:
        raise ConfigError(
            f"--opset {opset} cannot be written by the installed exporter (torch's legacy ONNX exporter "
            f"writes opsets up to {top}); pass --opset between 14 and {top}"
        )


def eager_copy(model):
    """A copy of the model that runs eager attention: the graph ORT's fusions recognise (SDPA,
    transformers 5.x's default, traces into one they do not). The logits are the same."""
    model = copy.deepcopy(model).eval()
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    else:  # pragma: no cover - transformers before 4.56
        model.config._attn_implementation = "eager"
    return model


def attention_shape(model, family) -> tuple[int, int]:
    """(heads, attention width) for ORT's optimizer, read from the modules (pruned models have
    fewer heads than their config). The optimizer takes one value for every layer: a model whose
    layers were pruned to different head counts cannot be fused and is refused in one line."""
    shapes = family.shapes(model)
    kinds = sorted({(s["heads"], s["head_size"]) for s in shapes})
    if len(kinds) != 1:
        raise ArtifactError(
            f"attention heads differ between layers ({[s['heads'] for s in shapes]}): ONNX Runtime's "
            "attention fusion takes one head count per model; pass --optimize none to export the unfused "
            "graph, or prune every layer to the same number of heads (bertpress compress --prune-heads does)"
        )
    heads, size = kinds[0]
    return heads, heads * size


def export_graph(model, tokenizer, file: Path, *, opset: int, trace_batch: int, trace_seq: int, seed: int = 0) -> None:
    """torch.onnx.export (legacy) of an eager-attention copy, with dynamic batch and sequence axes."""
    import torch

    check_opset(opset)
    wrapped = logits_module(eager_copy(model))
    feed = synthetic_batch(model.config.vocab_size, special_ids(tokenizer), trace_batch, trace_seq,
                           np.random.default_rng(seed))
    names = input_names(model)
    args = tuple(torch.from_numpy(feed[n]) for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    with quiet(), torch.no_grad():
        torch.onnx.export(wrapped, args, str(file), input_names=list(names), output_names=list(OUTPUT_NAMES),
                          dynamic_axes=axes, opset_version=opset, do_constant_folding=True, dynamo=False)


def optimize_graph(src: Path, dst: Path, *, level: str, num_layers: int, family, heads: int, width: int,
                   fuse_skip_layernorm: bool = False, fuse_bias_gelu: bool = True) -> dict[str, Any]:
    """Apply ORT's BERT fusions; raise if attention did not fuse in every layer.

    heads / width (`attention_shape`) are given explicitly: transformers 5.x reshapes with -1,
    so the optimizer cannot read them from the graph, and a pruned model has fewer heads than
    its config's original. SkipLayerNormalization is
    left out unless asked for (see the module docstring). fuse_bias_gelu=False keeps the FFN bias
    as an Add before a plain Gelu: for dynamic int8 graphs ORT then folds the bias into
    DynamicQuantizeMatMul, and its Gelu kernel is faster than BiasGelu (240 vs 387 us for
    1x128x1536 on one core, `python -m bertpress.export.microbench`)."""
    from onnxruntime.transformers.optimizer import optimize_model

    opt_level = {"basic": 0, "full": 1}[level]
    options = family.ort_fusion_options()
    options.enable_skip_layer_norm = fuse_skip_layernorm
    options.enable_bias_gelu = fuse_bias_gelu
    with quiet():
        opt = optimize_model(str(src), model_type=family.ort_model_type, num_heads=heads, hidden_size=width,
                             opt_level=opt_level, optimization_options=options)
        stats = opt.get_fused_operator_statistics()
        opt.save_model_to_file(str(dst))
    counts = {k: int(stats.get(k, 0)) for k in FUSION_KEYS}
    check_fusion(counts, num_layers, fused_attention_count(dst), expect_attention=family.attention_fuses)
    return counts


def check_fusion(counts: dict[str, int], num_layers: int, attention_ops: dict[str, int], *,
                 expect_attention: bool = True) -> None:
    """A BERT whose attention did not fuse runs as dozens of small ops: treat it as a failure.

    Only ONNX Runtime's contrib-domain Attention counts (`attention_ops`, from the graph itself):
    the optimizer's statistics also count the standard-domain ONNX `Attention` op by name, and a
    graph of those must never reach the int8 quantizer (it writes an invalid model).
    expect_attention=False (the family adapter says ORT has no pattern for its attention, e.g.
    DeBERTa's disentangled attention): unfused attention is expected, the rest is still checked."""
    attention = attention_ops["contrib"] if expect_attention else num_layers
    if attention_ops["standard"]:
        raise ArtifactError(
            f"the graph has {attention_ops['standard']} standard-domain ONNX Attention ops (opset 23+ exporter), "
            "which ONNX Runtime's fusions and int8 quantizer do not handle; export with the legacy exporter "
            "(opset <= 20) or pass --optimize none --quantize none"
        )
    if attention < num_layers:
        raise ArtifactError(
            f"ONNX Runtime fused attention in {attention} of {num_layers} layers (fusions: "
            f"{ {k: v for k, v in counts.items() if v} }); the optimized graph would be slow — "
            "pass --optimize none to export the unfused graph, or check the model is a standard BERT"
        )
    if counts.get("SkipLayerNormalization", 0) + counts.get("LayerNormalization", 0) == 0:
        raise ArtifactError(
            f"ONNX Runtime fused no LayerNormalization (fusions: {counts}); pass --optimize none to export "
            "the unfused graph"
        )


def drop_stale_value_info(file: Path) -> int:
    """Remove value_info entries that name initializers: after the exporter's Gemm rewrites
    their recorded shapes can be stale and break the quantizer's shape inference."""
    import onnx

    model = onnx.load(str(file))
    inits = {t.name for t in model.graph.initializer}
    stale = [v for v in model.graph.value_info if v.name in inits]
    for v in stale:
        model.graph.value_info.remove(v)
    if stale:
        onnx.save(model, str(file))
    return len(stale)


class TextReader:
    """ORT CalibrationDataReader over tokenized texts, a few rows per call."""

    def __init__(self, tokenizer, texts: Sequence[str], max_length: int, batch: int = 8,
                 names: Sequence[str] = INPUT_NAMES):
        # Every batch padded to max_length: ORT's histogram calibrators (entropy, percentile)
        # stack the collected tensors across batches and need one shape. Only the model's inputs.
        self._batches = [{k: v for k, v in encode(tokenizer, texts[i:i + batch], max_length, pad_to_max=True).items()
                          if k in names} for i in range(0, len(texts), batch)]
        self._it = iter(self._batches)

    def get_next(self):
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._batches)


def quantize_graph(src: Path, dst: Path, *, scheme: str, weight_type: str, per_channel: bool, fused: bool,
                   reduce_range: bool = False, scope: str = "all", head_markers: Sequence[str] = (),
                   calibration: TextReader | None = None, calibration_method: str = "minmax") -> dict[str, Any]:
    """int8 with ONNX Runtime's quantizer. Dynamic: MatMulInteger / QAttention with uint8
    activations quantized at run time. Static: QDQ with activation ranges from calibration."""
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    drop_stale_value_info(src)
    typed = src.with_name(src.stem + ".typed.onnx")
    infer_types(src, typed)
    src = typed
    wtype = QuantType.QInt8 if weight_type == "s8" else QuantType.QUInt8
    # Contrib ops (Attention, SkipLayerNormalization...) have no ONNX shape inference: declare
    # the untyped tensors float rather than failing.
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    # scope "encoder" (compress's default): pooler and classifier stay fp32, as in the torch model.
    exclude = []
    if scope == "encoder":
        exclude = [n.name for n in onnx.load(str(src), load_external_data=False).graph.node
                   if any(m in n.name for m in head_markers)]
    with quiet():
        if scheme == "dynamic":
            quantize_dynamic(str(src), str(dst), weight_type=wtype, per_channel=per_channel, reduce_range=reduce_range,
                             nodes_to_exclude=exclude, extra_options=extra)
            details = {"format": "QOperator (dynamic)", "activation_type": "u8"}
        elif scheme == "static":
            if calibration is None:
                raise ConfigError("static int8 needs calibration texts; pass --calibration-data FILE")
            method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                      "percentile": CalibrationMethod.Percentile}[calibration_method]
            # MatMul only. The classifier Gemm would need a scale for the pooler's Tanh output,
            # which QDQ does not produce (the quantizer fails). A QDQ fused Attention has no int8
            # CPU kernel: ORT dequantizes its weights on every call, measured slower than leaving
            # it fp32 (docs/results/export.md); the int8 attention path is the dynamic QAttention.
            ops = ["MatMul"]
            try:
                quantize_static(str(src), str(dst), calibration, quant_format=QuantFormat.QDQ,
                                activation_type=QuantType.QUInt8, weight_type=wtype, per_channel=per_channel,
                                calibrate_method=method, op_types_to_quantize=ops, reduce_range=reduce_range,
                                nodes_to_exclude=exclude, extra_options=extra)
            except (ValueError, RuntimeError) as exc:
                raise ArtifactError(
                    f"ONNX Runtime static quantization failed ({type(exc).__name__}: {first_line(exc, 160)}); "
                    "try --calibration-method minmax or --quantize dynamic"
                ) from None
            details = {"format": "QDQ (static)", "activation_type": "u8", "calibration_method": calibration_method,
                       "quantized_op_types": ops}
        else:  # pragma: no cover - guarded by the caller
            raise ValueError(scheme)
    counts = op_counts(dst)
    details.update(weight_type=weight_type, per_channel=per_channel, reduce_range=reduce_range,
                   excluded_nodes=exclude, op_counts=counts)
    if scheme == "static" and not counts.get("QuantizeLinear"):
        # Without activation types the calibrator skips every tensor and the result is a
        # weight-only model that runs in fp32: not what "static int8" promises.
        raise ArtifactError(
            "static int8 quantized no activations (no QuantizeLinear in the graph); pass --quantize dynamic "
            "or --optimize none"
        )
    if scheme == "dynamic" and not (counts.get("MatMulInteger") or counts.get("QAttention")
                                    or counts.get("DynamicQuantizeMatMul")):
        raise ArtifactError("dynamic int8 quantized no MatMul; pass --optimize none or --quantize none")
    return details


def infer_types(src: Path, dst: Path) -> None:
    """Give every tensor a type and shape with ORT's symbolic shape inference, which knows the
    contrib ops (Attention, SkipLayerNormalization...) that ONNX's own inference skips. The
    static quantizer calibrates only typed tensors: on the fused graph without this step it
    quantizes the weights and no activation at all."""
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = onnx.load(str(src))
    try:
        with quiet():
            model = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception:  # noqa: BLE001 - fall back to the quantizer's DefaultTensorType
        pass
    onnx.save(model, str(dst))


def write_ort_format(src: Path, dst: Path) -> None:
    """Convert to ORT format (flatbuffer, for onnxruntime-mobile/minimal builds). Basic level
    keeps the graph free of CPU-specific layout transforms, like onnxruntime's convert tool."""
    opts = session_options(optimization="basic")
    opts.optimized_model_filepath = str(dst)
    opts.add_session_config_entry("session.save_model_format", "ORT")
    try:
        session(src, opts=opts)
    except ArtifactError as exc:
        raise ArtifactError(f"{src}: could not convert to ORT format ({exc})") from None
    if not dst.is_file():
        raise ArtifactError(f"{src}: ONNX Runtime wrote no ORT-format file; drop --ort-format")


def export_onnx(model, tokenizer, out_dir: Path, work: Path, cfg, recipe, max_length: int,
                calibration_texts: Sequence[str] | None = None) -> dict[str, Any]:
    """Write OUT/model.onnx (and model.ort) for `recipe` (export.source.QuantRecipe: scheme, per-channel,
    reduce_range, scope, calibration method) under `cfg` (ExportConfig: opset, optimize, weight type,
    trace shape, ort_format, fuse_skip_layernorm, seed); intermediate graphs go to `work`. Returns details."""
    opset, optimize, scheme = cfg.opset, cfg.optimize.value, recipe.scheme
    trace_batch, trace_seq, seed = cfg.trace_batch, cfg.trace_seq, cfg.seed
    fuse_skip_layernorm = cfg.fuse_skip_layernorm
    family = adapter_for(model, action="export")
    raw = work / "exported.onnx"
    export_graph(model, tokenizer, raw, opset=opset, trace_batch=trace_batch, trace_seq=trace_seq, seed=seed)
    details: dict[str, Any] = {"file": FILE_NAME, "opset": opset, "exporter": "torch.onnx (legacy, dynamo=False)",
                               "trace_shape": [trace_batch, trace_seq], "optimize": optimize,
                               "input_names": list(input_names(model)), "output_names": list(OUTPUT_NAMES)}
    current = raw
    if optimize != "none":
        fused = work / "fused.onnx"
        # Dynamic int8: bias Add + Gelu instead of BiasGelu (same logits, faster; optimize_graph).
        heads, width = attention_shape(model, family)
        details["fusions"] = optimize_graph(raw, fused, level=optimize, num_layers=model.config.num_hidden_layers,
                                            family=family, heads=heads, width=width,
                                            fuse_skip_layernorm=fuse_skip_layernorm,
                                            fuse_bias_gelu=scheme != "dynamic")
        # every layer's attention is one contrib Attention op (ALBERT's shared layer fuses once: not fused)
        details["attention_fused"] = fused_attention_count(fused)["contrib"] >= model.config.num_hidden_layers
        if not family.attention_fuses:
            details["attention_unfused_reason"] = family.attention_unfused
        current = fused
    if scheme != "none":
        standard = fused_attention_count(current)["standard"]
        if standard:  # the quantizer would write an invalid model (check_fusion says why)
            raise ArtifactError(f"{standard} standard-domain ONNX Attention ops cannot be quantized to int8; "
                                "pass --quantize none")
        qfile = work / "int8.onnx"
        reader = None
        if scheme == "static":
            reader = TextReader(tokenizer, list(calibration_texts or []), max_length, names=input_names(model))
        details["quantization"] = quantize_graph(current, qfile, scheme=scheme, weight_type=cfg.weight_type.value,
                                                 per_channel=recipe.per_channel, fused=optimize != "none",
                                                 reduce_range=recipe.reduce_range, scope=recipe.scope,
                                                 head_markers=family.head_node_markers,
                                                 calibration=reader, calibration_method=recipe.calibration_method)
        current = qfile
    import onnx

    final = out_dir / FILE_NAME
    graph = onnx.load(str(current), load_external_data=False)
    disabled = [] if fuse_skip_layernorm else list(SLOW_FUSIONS)
    mark_disabled(graph, disabled)
    onnx.save(graph, str(final))
    details["ort_disabled_optimizers"] = disabled
    details["op_counts"] = op_counts(graph)
    if cfg.ort_format:
        write_ort_format(final, out_dir / ORT_FILE_NAME)
        details["ort_file"] = ORT_FILE_NAME
    return details
