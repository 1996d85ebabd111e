"""`bertpress export`: light at import time (argparse only); the work happens in the handler."""

from __future__ import annotations

import argparse

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
    p.add_argument("--format", choices=["onnx", "torchscript", "openvino", "all", "web"], default="onnx",
                   help="what to write; 'all' writes OUT/onnx, OUT/torchscript and OUT/openvino, each a "
                        "finished artifact; "
                        "'web' a static folder that classifies in the browser (transformers.js, local wasm)")
    p.add_argument("--web-runtime", default=None,
                   help="for --format web: the node_modules folder holding @huggingface/transformers 4.x "
                        "(default: $BERTPRESS_WEB_RUNTIME, ./node_modules, then the repo's js/node_modules from `make js`)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (14 to the exporter's maximum)")
    p.add_argument("--optimize", choices=["none", "basic", "full"], default="full",
                   help="ONNX graph optimization: none; basic = ORT transformer fusions; full = ORT basic "
                        "graph optimizations then the fusions")
    p.add_argument("--quantize", choices=["follow", "none", "dynamic", "static"], default="follow",
                   help="int8 scheme; follow = the scheme recorded in the input's manifest (fp32 if none)")
    p.add_argument("--weight-type", choices=["s8", "u8"], default="s8", help="int8 weight type for ONNX")
    p.add_argument("--per-channel", choices=["follow", "yes", "no"], default="follow",
                   help="per-channel int8 weights (follow = the recipe, else yes)")
    p.add_argument("--calibration-data", default=None,
                   help="texts for static int8 calibration (default: what compress recorded)")
    p.add_argument("--calibration-samples", type=int, default=None,
                   help="calibration rows (default: what compress recorded, else 128)")
    p.add_argument("--calibration-method", choices=["follow", "minmax", "entropy", "percentile"], default="follow",
                   help="calibration method for static int8")
    p.add_argument("--ort-format", action="store_true", help="also write model.ort (ONNX Runtime format for mobile)")
    p.add_argument("--fuse-skip-layernorm", action="store_true",
                   help="keep ONNX Runtime's SkipLayerNormalization fusion. Off by default: on ORT 1.31 CPU its "
                        "kernel measured 3-5x slower than the Add + LayerNormalization it replaces, so the model records "
                        "'disabled_optimizers=SkipLayerNormFusion' in its metadata for loaders to pass to "
                        "InferenceSession (bertpress, the bundled predict.py)")
    p.add_argument("--max-length", type=int, default=None,
                   help="maximum sequence length (default: the input's, at most its position embeddings)")
    p.add_argument("--eval-data", default=None,
                   help="labeled texts (file or directory; dev split) for int8 argmax agreement and accuracy")
    p.add_argument("--eval-samples", type=int, default=512, help="rows of --eval-data to use")
    from bertpress.data import add_column_flags

    add_column_flags(p.add_argument_group("data columns (of --eval-data and --calibration-data)"),
                     label=True, recorded=True)
    p.add_argument("--fp32-atol", type=float, default=1e-4, help="max |dlogit| allowed for fp32 exports")
    p.add_argument("--int8-atol", type=float, default=1.0, help="max |dlogit| allowed for int8 exports vs fp32")
    p.add_argument("--min-agreement", type=float, default=0.97,
                   help="minimum int8 vs fp32 argmax agreement on the eval texts")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="publish even when the parity gate fails (the differences are still recorded)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(handler=_handle)


def config_from_args(args: argparse.Namespace):
    from bertpress.export.config import ExportConfig

    return ExportConfig(
        format=args.format, opset=args.opset, optimize=args.optimize, quantize=args.quantize,
        weight_type=args.weight_type, per_channel={"follow": None, "yes": True, "no": False}[args.per_channel],
        ort_format=args.ort_format, fuse_skip_layernorm=args.fuse_skip_layernorm, max_length=args.max_length,
        eval_data=args.eval_data,
        eval_samples=args.eval_samples, calibration_data=args.calibration_data,
        calibration_samples=args.calibration_samples, calibration_method=args.calibration_method,
        fp32_atol=args.fp32_atol, int8_atol=args.int8_atol, min_agreement=args.min_agreement,
        allow_mismatch=args.allow_mismatch, web_runtime=args.web_runtime, text_column=args.text_column,
        text_pair_column=args.text_pair_column, label_column=args.label_column,
    )


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
        "serve": (m.details.get("web") or {}).get("serve", "").replace("OUT", str(art.path)) or None,
    }


def _handle(args: argparse.Namespace) -> int:
    from bertpress.console import print_json
    from bertpress.export.api import export

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
        if s["serve"]:
            print(f"  open      {s['serve']}")
    return 0
