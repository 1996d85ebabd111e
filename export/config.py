"""`ExportConfig`: what `bertpress export` writes and how strictly it checks it."""

from __future__ import annotations

import dataclasses
import enum

from bertpress.config import as_enum, check_columns, check_range, flag, register_config, set_frozen
from bertpress.errors import ConfigError
from bertpress.names import CALIBRATION_METHODS, SCHEMES, str_enum


class ExportFormat(str, enum.Enum):
    ONNX = "onnx"
    TORCHSCRIPT = "torchscript"
    OPENVINO = "openvino"  # OpenVINO IR (openvino_model.xml/.bin), int8 through NNCF
    ALL = "all"  # OUT/onnx, OUT/torchscript and OUT/openvino, each a finished artifact
    WEB = "web"  # a static folder that classifies in the browser (transformers.js + local wasm)
    # The format the input's search ranked its winner in (details.search.deploy: onnx for ONNX
    # Runtime, openvino for OpenVINO), else onnx: `bertpress export OUT` writes what was measured.
    # Last, so that the error listing the formats names the concrete ones first.
    AUTO = "auto"

    @classmethod
    def members(cls) -> tuple[str, ...]:
        """The formats `all` writes, in order (web is a page, not a model artifact: not in all)."""
        return (cls.ONNX.value, cls.TORCHSCRIPT.value, cls.OPENVINO.value)


class Optimize(str, enum.Enum):
    NONE = "none"    # the exporter's graph as written (ORT still optimises when it loads it)
    BASIC = "basic"  # ORT transformer fusions only (Python passes; no ORT pre-pass)
    FULL = "full"    # ORT basic graph optimisations (constant folding...) then the fusions


# "follow": the scheme in the input's manifest ("int8 in, int8 out"); none for fp32 inputs; or a scheme.
Quantize = str_enum("Quantize", ("follow", *SCHEMES), __name__)


class WeightType(str, enum.Enum):
    S8 = "s8"  # signed int8 weights: measured faster with VNNI/AVX2 (docs/results/export.md)
    U8 = "u8"


# "follow": what compress recorded (minmax if nothing was recorded); or a calibration method.
CalibrationChoice = str_enum("CalibrationChoice", ("follow", *CALIBRATION_METHODS), __name__)


DEFAULT_EVAL_SAMPLES = 512  # the gate's eval rows when neither the user nor a search set them


def _int_tuple(value, field: str, low: int) -> tuple[int, ...]:
    if isinstance(value, (int, str)) or not hasattr(value, "__iter__"):
        raise ConfigError(f"{field}={value!r} must be a list of integers, e.g. [1, 3, 8]")
    out = tuple(value)
    if not out:
        raise ConfigError(f"{field}=[] is empty; give at least one value")
    for v in out:
        check_range(v, field, low=low, integer=True)
    return out


@register_config()
@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Export settings. Defaults give a fused ONNX graph that follows the input's int8 recipe."""

    format: ExportFormat = flag(
        ExportFormat.AUTO, help="what to write; 'auto': the format the input's search ranked its winner in "
                                "(compress --max-accuracy-drop: onnx or openvino, with the int8 recipe it measured), "
                                "else onnx; 'all' writes OUT/onnx, OUT/torchscript and OUT/openvino, each a "
                                "finished artifact; 'web' a static folder that classifies in the browser "
                                "(transformers.js, local wasm)")
    opset: int = flag(17, help="ONNX opset (14 to the exporter's maximum)")
    optimize: Optimize = flag(Optimize.FULL, help="ONNX graph optimization: none; basic = ORT transformer fusions; "
                                                  "full = ORT basic graph optimizations then the fusions")
    quantize: Quantize = flag(Quantize.FOLLOW, group="int8", help="int8 scheme; follow = the scheme recorded in the "
                                                                  "input's manifest (fp32 if none)")
    weight_type: WeightType = flag(WeightType.S8, group="int8", help="int8 weight type for ONNX")
    # None: follow the recipe (default True); its flag is export.cli's --per-channel follow|yes|no
    per_channel: bool | None = None
    # also write model.ort (ONNX Runtime's mobile/edge format)
    ort_format: bool = flag(False, help="also write model.ort (ONNX Runtime format for mobile)")
    # Keep ORT's SkipLayerNormalization fusion (off by default: its CPU kernel measured 3-5x slower
    # than the Add + LayerNormalization it replaces on ORT 1.31; docs/results/export.md).
    fuse_skip_layernorm: bool = flag(
        False, help="keep ONNX Runtime's SkipLayerNormalization fusion. Off by default: on ORT 1.31 CPU its kernel "
                    "measured 3-5x slower than the Add + LayerNormalization it replaces, so the model records "
                    "'disabled_optimizers=SkipLayerNormFusion' in its metadata for loaders to pass to "
                    "InferenceSession (bertpress, the bundled predict.py)")
    max_length: int | None = flag(  # None: the input's max_length (capped by position embeddings)
        None, help="maximum sequence length (default: the input's, at most its position embeddings)")
    # Parity gate: grid of batch sizes x sequence lengths (the max length is always added);
    # the tracing shape below is never part of the grid.
    batch_sizes: tuple[int, ...] = (1, 3, 8)
    seq_lengths: tuple[int, ...] = (8, 33, 128)
    trace_batch: int = 2
    trace_seq: int = 16
    fp32_atol: float = flag(1e-4, group="parity gate", help="max |dlogit| allowed for fp32 exports")
    # max |dlogit| for int8 exports, against the fp32 source
    int8_atol: float = flag(1.0, group="parity gate", help="max |dlogit| allowed for int8 exports vs fp32")
    min_agreement: float = flag(0.97, group="parity gate",  # against the fp32 source on the eval set
                                help="minimum int8 vs fp32 argmax agreement on the eval texts")
    eval_data: str | None = flag(  # TSV/CSV/JSONL or split directory (dev split) for int8 agreement
        None, group="parity gate",
        help="labeled texts (file or directory; dev split) for int8 argmax agreement and accuracy")
    eval_samples: int | None = flag(  # None: the searched rows of a searched model, else DEFAULT_EVAL_SAMPLES
        None, group="parity gate", unset=True, shown="512; a searched model: the rows its search scored",
        help="rows of --eval-data to use (a fixed random subset when fewer than the file has)")
    calibration_data: str | None = flag(None, group="int8",  # None: the calibration data compress recorded
                                        help="texts for static int8 calibration (default: what compress recorded)")
    calibration_samples: int | None = flag(None, group="int8",  # None: follow the recipe (or 128)
                                           help="calibration rows (default: what compress recorded, else 128)")
    calibration_method: CalibrationChoice = flag(CalibrationChoice.FOLLOW, group="int8",
                                                 help="calibration method for static int8")
    allow_mismatch: bool = flag(  # differences still recorded
        False, group="parity gate",
        help="publish even when the parity gate fails (the differences are still recorded)")
    # format=web: an npm install holding @huggingface/transformers (its node_modules folder or the
    # package itself); None: $BERTPRESS_WEB_RUNTIME, ./node_modules, then the repo's js/node_modules.
    web_runtime: str | None = flag(
        None, help="for --format web: the node_modules folder holding @huggingface/transformers 4.x (default: "
                   "$BERTPRESS_WEB_RUNTIME, ./node_modules, then the repo's js/node_modules from `make js`)")
    seed: int = 0
    # Columns of --eval-data / --calibration-data; None: the ones the input was trained on (its
    # manifest) where the data has them, else detected (bertpress.data).
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None

    def __post_init__(self) -> None:
        set_frozen(self, "format", as_enum(ExportFormat, self.format, "format"))
        set_frozen(self, "optimize", as_enum(Optimize, self.optimize, "optimize"))
        set_frozen(self, "quantize", as_enum(Quantize, self.quantize, "quantize"))
        set_frozen(self, "weight_type", as_enum(WeightType, self.weight_type, "weight_type"))
        set_frozen(self, "calibration_method",
                   as_enum(CalibrationChoice, self.calibration_method, "calibration_method"))
        # The legacy exporter writes opsets 7..20; ORT's BERT fusions need >= 14 (LayerNorm
        # decomposition and Attention patterns); the exact upper bound is checked at export time
        # against the installed torch.
        check_range(self.opset, "opset", low=14, integer=True)
        for name in ("ort_format", "fuse_skip_layernorm", "allow_mismatch"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be true or false")
        if self.per_channel is not None and not isinstance(self.per_channel, bool):
            raise ConfigError(f"per_channel={self.per_channel!r} must be true, false or null (follow the recipe)")
        if self.max_length is not None:
            check_range(self.max_length, "max_length", low=2, high=8192, integer=True)
        set_frozen(self, "batch_sizes", _int_tuple(self.batch_sizes, "batch_sizes", 1))
        set_frozen(self, "seq_lengths", _int_tuple(self.seq_lengths, "seq_lengths", 2))
        check_range(self.trace_batch, "trace_batch", low=1, integer=True)
        check_range(self.trace_seq, "trace_seq", low=2, integer=True)
        if self.trace_seq in self.seq_lengths and self.trace_batch in self.batch_sizes:
            raise ConfigError(
                f"trace shape ({self.trace_batch}, {self.trace_seq}) is in the parity grid; the grid must "
                "exclude it (a trace always matches at its own shape): change trace_seq or seq_lengths"
            )
        check_range(self.fp32_atol, "fp32_atol", low=0, low_inclusive=False)
        check_range(self.int8_atol, "int8_atol", low=0, low_inclusive=False)
        check_range(self.min_agreement, "min_agreement", low=0, high=1)
        if self.eval_samples is not None:
            check_range(self.eval_samples, "eval_samples", low=1, integer=True)
        if self.calibration_samples is not None:
            check_range(self.calibration_samples, "calibration_samples", low=1, integer=True)
        check_range(self.seed, "seed", low=0, integer=True)
        check_columns(self.text_column, self.text_pair_column, self.label_column)
        if self.format == ExportFormat.WEB and self.ort_format:
            raise ConfigError("ort_format=true is for --format onnx (a browser loads the .onnx file); drop --ort-format")
        for name in ("eval_data", "calibration_data", "web_runtime"):
            v = getattr(self, name)
            if v is not None:
                if not isinstance(v, str) and not hasattr(v, "__fspath__"):
                    raise ConfigError(f"{name}={v!r} must be a path (or a datasets id) or null")
                set_frozen(self, name, str(v))
