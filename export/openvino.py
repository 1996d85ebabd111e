"""OpenVINO IR export: PyTorch -> `openvino.convert_model` -> (NNCF int8) -> openvino_model.xml/.bin.

Why from PyTorch and not from our ONNX file: measured on MiniLM (docs/export.md, "OpenVINO"),
`convert_model` on the torch module keeps each layer's attention as one
`ScaledDotProductAttention` op (6 for 6 layers) and compiles to 304 runtime nodes; the same model
read from the exporter's unfused ONNX graph has attention spelled out in MatMul/Softmax/Transpose
(477 ops read, 381 runtime nodes, twice the Subgraph/Transpose nodes) for the same logits and no
faster run. The ORT-fused ONNX graph is no better input: its contrib ops (Attention,
EmbedLayerNormalization) are ONNX Runtime's, not a standard OpenVINO reads natively.

int8 follows the recipe compress recorded ("int8 in, int8 out"), through NNCF:
- static: `nncf.quantize` with the recorded calibration texts, `model_type=TRANSFORMER` (NNCF's
  scheme for transformers: SmoothQuant, preset MIXED = asymmetric activations x symmetric weights), the
  recorded calibration method mapped onto NNCF's range estimators (minmax -> MINMAX, percentile ->
  MEAN_QUANTILE at the recorded percentile, entropy -> HISTOGRAM: the histogram search for the
  least-error range, like torch.ao's HistogramObserver that compress uses for "entropy").
- dynamic: `nncf.compress_weights(INT8_SYM)`: int8 per-channel weights, activations left to the
  runtime (OpenVINO's CPU plugin quantizes them per call where it supports it,
  DYNAMIC_QUANTIZATION_GROUP_SIZE), the data-free scheme that matches torch.ao's dynamic int8.
Only the Linear layers compress quantized are touched (its `layers`, else its scope: the
encoder's by default); embeddings, pooler and classifier stay fp32 like in the torch model.

The IR is saved with fp32 weights (`compress_to_fp16=False`): OpenVINO's default would halve the
file with fp16 weights, which is a precision change the parity gate would have to excuse.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import re
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from bertpress import records
from bertpress.compress.config import LinearScope
from bertpress.errors import ArtifactError, ConfigError
from bertpress.records import QuantizationRecord
from bertpress.signature import OUTPUT_NAMES, encode, input_names, logits_module, special_ids, synthetic_batch

FILE_NAME = "openvino_model.xml"  # the names Optimum-Intel's OVModelForSequenceClassification loads
WEIGHTS_NAME = "openvino_model.bin"
CALIBRATION_BATCH = 8
# OpenVINO names a converted torch Linear's MatMul "__module.<path>/aten::linear/MatMul" (or
# ".../Add" where the bias add was folded into it); <path> is the module path under the
# LogitsOnly wrapper ("inner.").
_LINEAR = re.compile(r"^__module\.(?:inner\.)?(?P<module>[^/]+)/aten::linear/")


@contextlib.contextmanager
def quiet(progress: bool = True) -> Iterator[None]:
    """NNCF logs INFO tables and draws rich progress bars on stdout: keep stdout clean for --json
    (the bars go to stderr, or nowhere with progress=False) and its logger at error level; tracer
    warnings are checked by the gate."""
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr if progress else io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        nncf_logger.setLevel(level)


def convert(model, tokenizer, *, trace_batch: int, trace_seq: int, seed: int = 0):
    """The fp32 torch classifier as an `openvino.Model` with dynamic [batch, sequence] int64
    inputs named like every bertpress export and one output `logits`."""
    import openvino as ov
    import torch

    wrapped = logits_module(copy.deepcopy(model).eval())
    feed = synthetic_batch(model.config.vocab_size, special_ids(tokenizer), trace_batch, trace_seq,
                           np.random.default_rng(seed))
    names = input_names(model)
    example = {n: torch.from_numpy(feed[n]) for n in names}
    inputs = [(n, ov.PartialShape([-1, -1]), ov.Type.i64) for n in names]
    with quiet(), torch.no_grad():
        ov_model = ov.convert_model(wrapped, example_input=example, input=inputs)
    if len(ov_model.outputs) != 1:
        raise ArtifactError(f"OpenVINO's converter produced {len(ov_model.outputs)} outputs, expected one (logits); "
                            "export a standard BERT sequence classifier")
    # One tensor name per input: the converter also gives attention_mask an internal name ("61"),
    # and loaders that take `get_any_name()` (Optimum-Intel, bertpress.openvino_rt) would see that.
    for port, name in zip(ov_model.inputs, names):
        if name not in port.get_names():
            raise ArtifactError(f"OpenVINO's converter named the inputs {[sorted(p.get_names()) for p in ov_model.inputs]}, "
                                f"expected {list(names)}; export a standard BERT-family sequence classifier")
        port.get_tensor().set_names({name})
    ov_model.outputs[0].get_tensor().set_names(set(OUTPUT_NAMES))
    return ov_model


def op_counts(ov_model) -> dict[str, int]:
    return dict(Counter(op.get_type_name() for op in ov_model.get_ops()).most_common())


def linear_nodes(ov_model) -> dict[str, str]:
    """{MatMul node name: torch module name} for the converted nn.Linear layers."""
    out = {}
    for op in ov_model.get_ops():
        if op.get_type_name() == "MatMul":
            m = _LINEAR.search(op.get_friendly_name())
            if m:
                out[op.get_friendly_name()] = m.group("module")
    return out


def _targets(model, recipe) -> list[str]:
    """The torch Linear layers the recipe quantizes: those compress recorded, else its scope's."""
    if recipe.layers:
        return list(recipe.layers)
    from bertpress.compress.quantize import target_linears  # lazy: pulls torch; `export --help` stays light

    return target_linears(model, LinearScope(recipe.scope))


def _ignored(ov_model, targets: Sequence[str]) -> tuple[list[str], list[str]]:
    """(MatMul nodes to leave fp32, target modules that have a node)."""
    nodes = linear_nodes(ov_model)
    wanted = set(targets)
    found = sorted({m for m in nodes.values() if m in wanted})
    missing = sorted(wanted - set(found))
    if missing:
        raise ArtifactError(
            f"the OpenVINO graph has no MatMul for the recorded int8 layers {missing[:3]}"
            f"{' ...' if len(missing) > 3 else ''}; re-run compress, or pass --quantize none"
        )
    return sorted(n for n, m in nodes.items() if m not in wanted), found


def _range_estimator(method: str, percentile: float | None):
    from nncf.quantization.range_estimator import (AggregatorType, RangeEstimatorParameters,
                                                   RangeEstimatorParametersSet, StatisticsCollectorParameters,
                                                   StatisticsType)

    if method == "minmax":
        return RangeEstimatorParametersSet.MINMAX, "MINMAX"
    if method == "entropy":
        return RangeEstimatorParametersSet.HISTOGRAM, "HISTOGRAM"
    if method == "percentile":
        prob = (100.0 - float(percentile or 99.99)) / 100.0
        side = StatisticsCollectorParameters(statistics_type=StatisticsType.QUANTILE,
                                             aggregator_type=AggregatorType.MEAN, quantile_outlier_prob=prob)
        return RangeEstimatorParameters(min=side, max=side), f"MEAN_QUANTILE (outlier probability {prob:g})"
    raise ConfigError(f"calibration method {method!r} has no NNCF range estimator; choose minmax, entropy or percentile")


def _recorded_percentile(recipe) -> float | None:
    """The percentile compress calibrated with (its QuantizationRecord), if any."""
    if not recipe.raw:
        return None

    rec = records.read({"quantization": recipe.raw}, "quantization", QuantizationRecord)
    return rec.calibration.percentile if rec is not None and rec.calibration is not None else None


def quantize_static(ov_model, model, tokenizer, recipe, texts: Sequence[str], max_length: int, *,
                    progress: bool = True):
    """nncf.quantize with the calibration texts; returns (quantized model, details)."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters

    if not texts:
        raise ConfigError("static int8 needs calibration texts; pass --calibration-data FILE (or --quantize dynamic)")
    ignored, targets = _ignored(ov_model, _targets(model, recipe))
    names = input_names(model)
    items = [{k: v for k, v in encode(tokenizer, texts[i:i + CALIBRATION_BATCH], max_length).items() if k in names}
             for i in range(0, len(texts), CALIBRATION_BATCH)]
    percentile = _recorded_percentile(recipe)
    estimator, estimator_name = _range_estimator(recipe.calibration_method, percentile)
    advanced = AdvancedQuantizationParameters(activations_range_estimator_params=estimator)
    if not recipe.per_channel:
        advanced.weights_quantization_params = QuantizationParameters(per_channel=False)
    with quiet(progress):
        try:
            quantized = nncf.quantize(ov_model, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER,
                                      preset=nncf.QuantizationPreset.MIXED, subset_size=len(items),
                                      ignored_scope=nncf.IgnoredScope(names=ignored), advanced_parameters=advanced)
        except Exception as exc:  # NNCF raises many types; the message is what helps
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(f"NNCF static quantization failed ({type(exc).__name__}: {first}); "
                                "try --calibration-method minmax or --quantize dynamic") from None
    counts = op_counts(quantized)
    if not counts.get("FakeQuantize"):
        raise ArtifactError("NNCF quantized no activation (no FakeQuantize in the graph); pass --quantize dynamic "
                            "or --quantize none")
    return quantized, {
        "tool": "nncf.quantize", "model_type": "TRANSFORMER", "preset": "MIXED",
        "activations": "8-bit, per tensor, ranges calibrated (preset MIXED: asymmetric activations)",
        "weights": "8-bit symmetric, " + ("per output channel" if recipe.per_channel else "per tensor"),
        "range_estimator": estimator_name, "calibration_method": recipe.calibration_method,
        "calibration_rows": len(texts), "calibration_batches": len(items),
        "smooth_quant_alpha": advanced.smooth_quant_alphas.matmul,
        "quantized_linear": len(targets), "fp32_linear": ignored, "fake_quantize": counts["FakeQuantize"],
    }


def compress_weights(ov_model, model, recipe, *, progress: bool = True):
    """nncf.compress_weights INT8_SYM on the recipe's Linear layers (a copy); returns (model, details)."""
    import nncf

    ignored, targets = _ignored(ov_model, _targets(model, recipe))
    # Embedding tables (Gather) would be compressed too; they are not Linear layers and stay fp32
    # in the torch recipe, so they stay fp32 here.
    ignored_gathers = [op.get_friendly_name() for op in ov_model.get_ops()
                       if op.get_type_name() == "Gather" and ".embeddings." in op.get_friendly_name()]
    target = ov_model.clone()  # compress_weights changes the model it is given in place
    with quiet(progress):
        try:
            compressed = nncf.compress_weights(target, mode=nncf.CompressWeightsMode.INT8_SYM,
                                               ignored_scope=nncf.IgnoredScope(names=ignored + ignored_gathers,
                                                                               validate=False))
        except Exception as exc:
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(f"NNCF weight compression failed ({type(exc).__name__}: {first}); "
                                "pass --quantize none") from None
    int8 = sum(1 for op in compressed.get_ops() if op.get_type_name() == "Constant"
               and op.get_element_type().get_type_name() in ("i8", "u8"))
    if int8 < len(targets):
        raise ArtifactError(f"NNCF compressed {int8} of {len(targets)} Linear weights to int8; pass --quantize none")
    return compressed, {
        "tool": "nncf.compress_weights", "mode": "INT8_SYM",
        "weights": "s8 symmetric, per output channel" + ("" if recipe.per_channel else
                                                          " (NNCF's int8 weight compression is per channel only; "
                                                          "the recipe's per-tensor choice does not apply)"),
        "activations": "fp32 in the IR; OpenVINO's CPU plugin may quantize them per call (dynamic quantization)",
        "quantized_linear": len(targets), "fp32_linear": ignored, "int8_constants": int8,
    }


def export_openvino(model, tokenizer, out_dir: Path, *, recipe, trace_batch: int, trace_seq: int, max_length: int,
                    calibration_texts: Sequence[str] | None = None, seed: int = 0,
                    progress: bool = True) -> dict[str, Any]:
    """Write OUT/openvino_model.xml + .bin for `recipe`; returns the model details."""
    import openvino as ov

    ov_model = convert(model, tokenizer, trace_batch=trace_batch, trace_seq=trace_seq, seed=seed)
    details: dict[str, Any] = {
        "file": FILE_NAME, "weights_file": WEIGHTS_NAME, "converter": "openvino.convert_model (from PyTorch)",
        "openvino": ov.__version__.split("-")[0], "trace_shape": [trace_batch, trace_seq],
        "input_names": list(input_names(model)), "output_names": list(OUTPUT_NAMES), "weights_dtype": "f32",
        "converted_op_counts": op_counts(ov_model),
    }
    if recipe.scheme == "static":
        ov_model, details["quantization"] = quantize_static(ov_model, model, tokenizer, recipe,
                                                            list(calibration_texts or []), max_length,
                                                            progress=progress)
    elif recipe.scheme == "dynamic":
        ov_model, details["quantization"] = compress_weights(ov_model, model, recipe, progress=progress)
    if recipe.scheme != "none":
        import nncf

        details["quantization"]["nncf"] = nncf.__version__
    ov.save_model(ov_model, str(out_dir / FILE_NAME), compress_to_fp16=False)
    details["op_counts"] = op_counts(ov_model)
    return details
