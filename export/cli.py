"""`bertpress export`: light at import time (argparse only); the work happens in the handler."""

from __future__ import annotations

import argparse

from bertpress.config import add_config_flags, config_from_namespace
from bertpress.console import print_json
from bertpress.data import add_column_flags, column_values
from bertpress.export.api import export
from bertpress.export.config import ExportConfig

PER_CHANNEL = {"follow": None, "yes": True, "no": False}  # --per-channel -> ExportConfig.per_channel

DESCRIPTION = """\
Export a checkpoint, a compressed artifact or a plain Hugging Face model directory to ONNX,
TorchScript and/or OpenVINO IR, or to a static web page that classifies in the browser. ONNX
graphs are fused by ONNX Runtime's transformer optimizer and, for int8, quantized by ONNX
Runtime's quantizer after fusion. OpenVINO IR is converted from the PyTorch model
(openvino.convert_model); its int8 is NNCF's (static: nncf.quantize with the recorded
calibration texts; dynamic: int8 weight compression). Every exported file must pass the parity
gate (batch x sequence grid, max |dlogit|, int8 argmax agreement) or nothing is written.

examples:
  bertpress export runs/minilm-sst2 --out runs/export-fp32
  bertpress export runs/minilm-sst2 --quantize dynamic --eval-data data/sst2 --out runs/export-int8
  bertpress export runs/compressed --format openvino --out runs/deploy-ov   # openvino_model.xml/.bin
  bertpress export runs/compressed --format all --out runs/deploy      # OUT/onnx, OUT/torchscript, OUT/openvino
  bertpress export runs/compressed --format web --out runs/web         # then: python3 -m http.server -d runs/web
"""


def register(sub, common, formatter) -> None:
    p = sub.add_parser("export", parents=[common], formatter_class=formatter, description=DESCRIPTION,
                       help="export to ONNX (fused, int8, .ort), TorchScript and/or OpenVINO IR, validated, bundled")
    p.add_argument("artifact", help="checkpoint or compressed artifact, or a Hugging Face model directory")
    p.add_argument("--out", required=True, help="output directory (must not exist, be empty, or use --overwrite)")
    groups: dict = {}
    add_config_flags(p, ExportConfig, groups=groups)  # every setting but --per-channel, from the config's fields
    # Hand-written: three words for per_channel's None / True / False (argparse checks choices
    # after `type`, so a field's flag cannot map them).
    groups["int8"].add_argument("--per-channel", choices=list(PER_CHANNEL), default="follow",
                                help="per-channel int8 weights (follow = the recipe, else yes)")

    add_column_flags(p.add_argument_group("data columns (of --eval-data and --calibration-data)"),
                     label=True, recorded=True)
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(handler=_handle)


def config_from_args(args: argparse.Namespace):
    return config_from_namespace(args, ExportConfig,
                                 extra={"per_channel": PER_CHANNEL[args.per_channel], **column_values(args)})


def _scores(parity: dict) -> dict:
    """{metric: {file: value, "source": value}} for the gate's metrics other than accuracy."""
    out: dict = {}
    for label, report in parity.items():
        for key, value in report.items():
            if key in ("f1", "macro_f1") and isinstance(value, dict):
                out.setdefault(key, {})[label] = value["export"]
                out[key]["source"] = value["source"]
    return out


def _summary(art) -> dict:
    m = art.manifest
    parity = m.metrics.get("parity", {})
    return {
        "path": str(art.path), "kind": m.kind, "precision": m.details.get("precision"),
        "quantization": m.details.get("quantization", {}).get("applied", "none"),
        "fusions": {k: v for k, v in (m.details.get("model", {}).get("fusions") or {}).items() if v},
        "inference_precision": m.details.get("model", {}).get("inference_precision"),
        "size_bytes": m.metrics.get("size_bytes"),
        "parity": {f: {"passed": r["passed"], "max_abs_diff": r["max_abs_diff"],
                       "agreement": (r.get("agreement") or {}).get("value")} for f, r in parity.items()},
        "accuracy": m.metrics.get("accuracy"),
        # F1 (binary) or macro-F1 (> 2 classes) beside accuracy: a searched pair or multi-label model's
        # budget is in that metric (compress's task_metric), so the gate's figure for it is shown too
        "scores": _scores(parity),
        "serve": (m.details.get("web") or {}).get("serve", "").replace("OUT", str(art.path)) or None,
    }


def _handle(args: argparse.Namespace) -> int:
    result = export(args.artifact, config_from_args(args), args.out, overwrite=args.overwrite,
                    progress=not args.no_progress)
    arts = result if isinstance(result, list) else [result]
    summaries = [_summary(a) for a in arts]
    if args.json:
        print_json(summaries if len(summaries) > 1 else summaries[0])
        return 0
    for s in summaries:
        print(f"wrote {s['path']} ({s['kind']}, {s['precision']}, int8 scheme {s['quantization']})")
        if s["fusions"]:
            print("  fusions   " + ", ".join(f"{k} {v}" for k, v in s["fusions"].items()))
        if s["inference_precision"]:
            print(f"  runs as   {s['inference_precision']} on this CPU (OpenVINO's default inference precision)")
        for f, r in s["parity"].items():
            agree = f", argmax agreement {r['agreement']:.4f}" if r["agreement"] is not None else ""
            status = "passed" if r["passed"] else "FAILED (published with --allow-mismatch)"
            print(f"  parity    {f}: {status}, max |dlogit| {r['max_abs_diff']:.3g}{agree}")
        for f, n in (s["size_bytes"] or {}).items():
            print(f"  size      {f}: {n / 1e6:.1f} MB")
        if s["accuracy"]:
            print("  accuracy  " + ", ".join(f"{k} {v:.4f}" for k, v in s["accuracy"].items()))
        for name, values in s["scores"].items():
            print(f"  {name:<9} " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
        if s["serve"]:
            print(f"  open      {s['serve']}")
    return 0
