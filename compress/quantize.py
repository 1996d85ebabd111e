"""int8 quantization of a BERT classifier's nn.Linear layers, in eager PyTorch.

Formats (see `int8_formats`): activations u8 (asymmetric, per tensor), weights s8 (symmetric,
per output channel) — the only int8 GEMM format PyTorch's x86 engine runs. What the ISA
decides is whether activations may use all 8 bits: without VNNI, AVX2 kernels multiply u8 x s8
pairs with `vpmaddubsw`, whose int16 intermediate saturates, so PyTorch reduces activations to
7 bits; AVX-512 VNNI / AMX accumulate in int32 and the full range is safe.

- dynamic: `torch.ao.quantization.quantize_dynamic` (weights int8 once, activation range per
  call). PyTorch hard-codes `reduce_range=True` in the dynamic Linear; on VNNI CPUs we swap in
  a subclass that passes False (the full 8 bits, more accurate at the same speed).
- static: activation ranges of every quantized Linear's input and output are calibrated once
  on real samples (torch.ao observers: MinMax, Histogram, or a percentile observer) and stored
  as JSON in the artifact; `StaticInt8Linear` quantizes the input with them and runs fbgemm's
  int8 GEMM with an fp32 output. Rebuilding from the fp32 weights + that file is exact.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from bertpress.arch import adapter_for
from bertpress.compress import evaluate
from bertpress.compress.config import CalibrationMethod, LinearScope, QuantizeConfig, Scheme
from bertpress import names
from bertpress.data import data_spec
from bertpress.errors import ArtifactError, ConfigError, InputError
from bertpress.hardware import cpu_info
from bertpress.records import CalibrationRecord, QuantizationRecord
from bertpress.registry import Registry
from bertpress.quiet import quiet

RANGES_FILE = "quantization_ranges.json"
QENGINE = "x86"


def int8_formats(isa: dict[str, Any] | None = None) -> dict[str, Any]:
    """The int8 formats to use on this CPU, and why (recorded in the manifest for export)."""
    if isa is None:
        isa = cpu_info()["isa"]
    vnni, amx = bool(isa.get("vnni")), bool(isa.get("amx"))
    if vnni or amx:
        why = ("CPU has " + " + ".join(n for n, ok in (("AVX-512 VNNI", isa.get("avx512_vnni")),
                                                       ("AVX-VNNI", isa.get("avx_vnni")),
                                                       ("AMX-INT8", amx)) if ok)
               + ": u8 x s8 products accumulate in int32 (vpdpbusd / AMX tiles), so activations use the "
               "full 8-bit range (reduce_range=False) with no saturation risk")
    else:
        why = ("CPU has no VNNI: AVX2 int8 GEMM (vpmaddubsw) sums u8 x s8 pairs in int16 and can saturate, "
               "so activations are reduced to 7 bits (reduce_range=True); s8 weights measured faster than "
               "u8 on AVX2 (docs FINDINGS)")
    return {
        "qengine": QENGINE,
        "activation_dtype": "uint8",
        "activation_symmetric": False,
        "weight_dtype": "int8",
        "weight_symmetric": True,
        "reduce_range": not (vnni or amx),
        "onnx": {"activation_type": "QUInt8", "weight_type": "QInt8", "reduce_range": not (vnni or amx)},
        "isa": {k: bool(isa.get(k)) for k in ("avx2", "avx512", "vnni", "amx")},
        "why": why,
    }


def target_linears(model: nn.Module, scope: LinearScope) -> list[str]:
    """Names of the nn.Linear layers a scope quantizes, in module order."""
    fam = adapter_for(model, action="quantize") if scope is LinearScope.ENCODER else None
    return [name for name, mod in model.named_modules()
            if isinstance(mod, nn.Linear) and (fam is None or fam.is_encoder_linear(name))]


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _use_engine() -> None:
    if QENGINE in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = QENGINE


# ---- dynamic -------------------------------------------------------------------------------


class DynamicInt8LinearFull(torch.ao.nn.quantized.dynamic.Linear):
    """Dynamic int8 Linear with full 8-bit activations (PyTorch hard-codes 7 bits)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params, reduce_range=False)


def quantize_dynamic(model: nn.Module, cfg: QuantizeConfig, formats: dict[str, Any],
                     layers: Iterable[str] | None = None) -> tuple[nn.Module, list[str]]:
    """The one torch dynamic-int8 path (compress, export's TorchScript, bench's
    pytorch-int8-dynamic): a quantized copy of `model` — the Linear layers of `cfg.scope`, or
    exactly `layers` when a manifest recorded them — with full 8-bit activations on VNNI/AMX."""
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic as qd

    _use_engine()
    names = list(layers) if layers else target_linears(model, cfg.scope)
    qconfig = per_channel_dynamic_qconfig if cfg.per_channel else default_dynamic_qconfig
    with quiet():
        qmodel = qd(copy.deepcopy(model), {n: qconfig for n in names}, dtype=torch.qint8)
    if not formats["reduce_range"]:
        for n in names:
            qmodel.get_submodule(n).__class__ = DynamicInt8LinearFull
    return qmodel.eval(), names


# ---- static: observers and calibration ----------------------------------------------------


class PercentileObserver(torch.ao.quantization.MinMaxObserver):
    """Range = the running mean over batches of the (100-p, p) percentiles of the values.

    torch.ao has no percentile observer; this follows TensorRT/ORT percentile calibration.
    Large activations are subsampled (torch.quantile refuses > 16M elements and sorts the rest).
    """

    def __init__(self, percentile: float = 99.99, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.percentile = percentile
        self.batches = 0

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        x = x_orig.detach().float().flatten()
        if x.numel() > 1 << 18:  # a 262k-value sample keeps ~26 values beyond the 99.99th percentile
            g = torch.Generator().manual_seed(self.batches)
            x = x[torch.randint(0, x.numel(), (1 << 18,), generator=g)]
        q = torch.tensor([(100.0 - self.percentile) / 100.0, self.percentile / 100.0])
        lo, hi = torch.quantile(x, q)
        n = self.batches
        self.min_val = lo if n == 0 else (self.min_val * n + lo) / (n + 1)
        self.max_val = hi if n == 0 else (self.max_val * n + hi) / (n + 1)
        self.batches += 1
        return x_orig


# Calibration methods: name -> factory(cfg, observer kwargs) -> a torch.ao observer. "auto" is
# not a method: it calibrates with every registered one and keeps the best on the eval set.
CALIBRATION_METHODS: Registry = Registry("calibration method", names=names.CALIBRATION_METHODS)


@CALIBRATION_METHODS.register("minmax")
def _minmax_observer(cfg: QuantizeConfig, kw: dict[str, Any]):
    from torch.ao.quantization import MinMaxObserver

    return MinMaxObserver(**kw)


@CALIBRATION_METHODS.register("entropy")
def _entropy_observer(cfg: QuantizeConfig, kw: dict[str, Any]):
    # torch.ao's histogram observer: searches the clipping range that minimises the
    # quantization error over a 2048-bin histogram (the entropy/KL family of calibrators).
    from torch.ao.quantization import HistogramObserver

    return HistogramObserver(**kw)


@CALIBRATION_METHODS.register("percentile")
def _percentile_observer(cfg: QuantizeConfig, kw: dict[str, Any]):
    return PercentileObserver(cfg.percentile, **kw)


def make_observer(method: CalibrationMethod, cfg: QuantizeConfig, formats: dict[str, Any]):
    kw = {"dtype": torch.quint8, "qscheme": torch.per_tensor_affine, "reduce_range": formats["reduce_range"]}
    return CALIBRATION_METHODS.get(method)(cfg, kw)


@torch.no_grad()
def calibrate(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    names: list[str],
    methods: list[CalibrationMethod],
    cfg: QuantizeConfig,
    formats: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """Run `batches` through the fp32 model; return {method: {layer: {input, output qparams}}}."""
    with quiet():
        return _calibrate(model, batches, names, methods, cfg, formats)


def _calibrate(model, batches, names, methods, cfg, formats):
    # Inputs get the requested method; outputs (not applied in eager, recorded for runtimes that
    # requantize) always get the cheap MinMax observer: histogram/percentile observers on both
    # sides doubled a 256-sample MiniLM calibration that already took minutes.
    observers = {m: {n: (make_observer(m, cfg, formats), make_observer(CalibrationMethod.MINMAX, cfg, formats))
                     for n in names} for m in methods}
    hooks = []
    for n in names:
        def hook(mod, inputs, output, n=n):
            for m in methods:
                obs_in, obs_out = observers[m][n]
                obs_in(inputs[0])
                obs_out(output)
        hooks.append(model.get_submodule(n).register_forward_hook(hook))
    try:
        model.eval()
        for batch in batches:
            model(**batch)
    finally:
        for h in hooks:
            h.remove()
    out: dict[str, dict[str, Any]] = {}
    for m in methods:
        layers = {}
        for n in names:
            layers[n] = {side: _qparams(obs) for side, obs in zip(("input", "output"), observers[m][n])}
        out[m.value] = layers
    return out


def _qparams(obs) -> dict[str, float]:
    scale, zp = obs.calculate_qparams()
    return {"min": float(obs.min_val), "max": float(obs.max_val),
            "scale": float(scale.reshape(-1)[0]), "zero_point": int(zp.reshape(-1)[0])}


class StaticInt8Linear(nn.Module):
    """fp32 in, fp32 out; inside: input quantized to u8 with calibrated qparams x s8 weights.

    The output's calibrated range is kept in the ranges file (for runtimes that requantize,
    e.g. ONNX QOperator graphs) but not applied here.
    """

    def __init__(self, linear: nn.Linear, ranges: dict[str, Any], per_channel: bool = True) -> None:
        super().__init__()
        from torch.ao.nn.quantized import Linear as QLinear

        w = linear.weight.detach().float()
        if per_channel:
            scales = (w.abs().amax(dim=1).clamp(min=1e-8) / 127.0).double()
            qw = torch.quantize_per_channel(w, scales, torch.zeros_like(scales, dtype=torch.long), 0, torch.qint8)
        else:
            qw = torch.quantize_per_tensor(w, float(w.abs().max().clamp(min=1e-8) / 127.0), 0, torch.qint8)
        self.qlinear = QLinear(linear.in_features, linear.out_features, dtype=torch.qint8)
        bias = linear.bias.detach().float() if linear.bias is not None else None
        self.qlinear.set_weight_bias(qw, bias)
        self.qlinear.scale = float(ranges["output"]["scale"])
        self.qlinear.zero_point = int(ranges["output"]["zero_point"])
        self.in_scale = float(ranges["input"]["scale"])
        self.in_zero_point = int(ranges["input"]["zero_point"])
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fbgemm's fused op: quantize x with the calibrated qparams, u8 x s8 GEMM, fp32 out.
        # Re-quantizing the output to u8 (nnq.Linear) measured 6 dB vs 15 dB SQNR on MiniLM's
        # last hidden state, and was slower; the next op (GELU, residual add) is fp32 anyway.
        return torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
            x.contiguous(), self.in_scale, self.in_zero_point, self.qlinear._packed_params._packed_params)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"in_scale={self.in_scale:.4g}, in_zero_point={self.in_zero_point}")


def apply_static(model: nn.Module, layers: dict[str, dict[str, Any]], per_channel: bool = True) -> nn.Module:
    """A copy of `model` whose listed Linear layers run static int8 with the given ranges."""
    _use_engine()
    qmodel = copy.deepcopy(model).eval()
    for name, ranges in layers.items():
        try:
            lin = qmodel.get_submodule(name)
        except AttributeError:
            raise ArtifactError(f"{RANGES_FILE}: layer {name!r} is not in the model; re-run compress") from None
        if not isinstance(lin, nn.Linear):
            raise ArtifactError(f"{RANGES_FILE}: {name!r} is a {type(lin).__name__}, not nn.Linear; re-run compress")
        with quiet():
            _set_module(qmodel, name, StaticInt8Linear(lin, ranges, per_channel))
    return qmodel


def count_quantized(model: nn.Module) -> int:
    kinds = (torch.ao.nn.quantized.dynamic.Linear, StaticInt8Linear)
    return sum(isinstance(m, kinds) for m in model.modules())


def save_ranges(directory: Path, method: str, layers: dict[str, Any]) -> Path:
    path = Path(directory) / RANGES_FILE
    path.write_text(json.dumps({"method": method, "layers": layers}, indent=1) + "\n", encoding="utf-8")
    return path


def load_ranges(directory: Path) -> dict[str, Any]:
    path = Path(directory) / RANGES_FILE
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; static int8 needs its calibrated ranges; re-run compress")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data["layers"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{path}: corrupt ranges file ({exc}); re-run compress") from None


def apply_recorded(model: nn.Module, rec: QuantizationRecord, directory: Path) -> nn.Module:
    """Re-apply the quantization a manifest records to fp32 `model` (a quantized copy)."""
    return SCHEMES.get(rec.scheme)().reapply(model, rec, directory)


# ---- schemes: one class + one registration each --------------------------------------------
# quantize(work, cfg, formats) -> QuantizationRecord, setting work.qmodel (and work.ranges);
# reapply(model, record, directory) -> the model as compress produced it.

SCHEMES: Registry = Registry("quantization scheme", names=names.SCHEMES)


@SCHEMES.register(Scheme.NONE)
class NoQuantization:
    def quantize(self, work, cfg: QuantizeConfig, formats: dict[str, Any]) -> QuantizationRecord:
        return QuantizationRecord(scheme="none")

    def reapply(self, model: nn.Module, rec: QuantizationRecord, directory: Path) -> nn.Module:
        return model


def _record(cfg: QuantizeConfig, formats: dict[str, Any], names: list[str], qmodel, **extra) -> QuantizationRecord:
    return QuantizationRecord(scheme=cfg.scheme.value, per_channel=cfg.per_channel, scope=cfg.scope.value,
                              layers=tuple(names), reduce_range=bool(formats["reduce_range"]),
                              num_quantized=count_quantized(qmodel), formats=dict(formats), **extra)


@SCHEMES.register(Scheme.DYNAMIC)
class DynamicInt8:
    """int8 weights, activation ranges measured per call (torch.ao dynamic Linear)."""

    def quantize(self, work, cfg: QuantizeConfig, formats: dict[str, Any]) -> QuantizationRecord:
        work.qmodel, names = quantize_dynamic(work.model, cfg, formats)
        return _record(cfg, formats, names, work.qmodel)

    def reapply(self, model: nn.Module, rec: QuantizationRecord, directory: Path) -> nn.Module:
        cfg = QuantizeConfig(scheme=Scheme.DYNAMIC, scope=rec.scope, per_channel=rec.per_channel)
        qmodel, names = quantize_dynamic(model, cfg, {"reduce_range": rec.reduce_range})
        if rec.layers and sorted(names) != sorted(rec.layers):
            raise ArtifactError(f"{directory}: the model's Linear layers differ from the recorded ones; re-run compress")
        return qmodel


@SCHEMES.register(Scheme.STATIC)
class StaticInt8:
    """int8 weights, input ranges calibrated once on real samples (CALIBRATION_METHODS)."""

    def quantize(self, work, cfg: QuantizeConfig, formats: dict[str, Any]) -> QuantizationRecord:
        names = target_linears(work.model, cfg.scope)
        data = work.load_data(cfg.calibration_data, "train", "--calibration-data")
        if len(data) < cfg.calibration_samples:
            raise InputError(f"--calibration-data {cfg.calibration_data} has {len(data)} rows but "
                             f"--calibration-samples is {cfg.calibration_samples}; lower it or give more data")
        data = data.subset(cfg.calibration_samples, seed=work.cfg.seed)
        methods = ([CalibrationMethod(m) for m in CALIBRATION_METHODS]
                   if cfg.calibration_method is CalibrationMethod.AUTO else [cfg.calibration_method])
        calib = evaluate.batches(work.tokenizer, data.examples, None, batch_size=cfg.batch_size,
                                 max_length=cfg.max_length)
        all_ranges = calibrate(work.model, calib, names, methods, cfg, formats)
        chosen, scores = methods[0].value, {}
        if len(methods) > 1:
            if work.eval_data is None:
                raise ConfigError("--calibration-method auto needs --eval-data SPEC to pick the best method")
            for m in methods:
                qm = apply_static(work.model, all_ranges[m.value], cfg.per_channel)
                scores[m.value] = evaluate.accuracy(qm, work.tokenizer, work.eval_data, max_length=cfg.max_length)
            chosen = max(scores, key=lambda k: scores[k])  # ties keep the earlier (minmax first)
        work.ranges = all_ranges[chosen]
        work.qmodel = apply_static(work.model, work.ranges, cfg.per_channel)
        calibration = CalibrationRecord(
            method=chosen, requested=cfg.calibration_method.value,
            # `data` is the spec export re-loads ("int8 in, int8 out"); `source` describes the rows used
            data=data_spec(cfg.calibration_data), source=data.source, samples=len(data),
            batch_size=cfg.batch_size, max_length=cfg.max_length,
            percentile=cfg.percentile if chosen == "percentile" else None,
            auto_eval_accuracy=scores or None, ranges_file=RANGES_FILE)
        formats = {**formats, "static_output": "fp32 (input u8 with calibrated qparams; output not requantized)"}
        return _record(cfg, formats, names, work.qmodel, calibration=calibration)

    def reapply(self, model: nn.Module, rec: QuantizationRecord, directory: Path) -> nn.Module:
        return apply_static(model, load_ranges(directory), rec.per_channel)
