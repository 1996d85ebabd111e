"""`bertpress bench ARTIFACT...` (light: argparse only at import time)."""

from __future__ import annotations

import argparse
import os
import sys

from bertpress.bench.config import BenchConfig
from bertpress.bench.run import bench
from bertpress.config import add_config_flags, config_from_namespace
from bertpress.console import print_json
from bertpress.data import add_column_flags, column_values


def register(sub, common, formatter) -> None:
    p = sub.add_parser(
        "bench", parents=[common], formatter_class=formatter,
        help="latency, throughput, accuracy, memory and size of every variant, with a report (JSON, Markdown, plots)",
        description=(
            "Benchmark artifacts (checkpoint, compressed, onnx, torchscript, openvino; plain HF dirs and 'minilm' too)\n"
            "on CPU and/or CUDA: a batch x sequence-length sweep with synthetic ids, real traffic from the eval\n"
            "set (length-sorted batches, dynamic padding), accuracy and agreement with the fp32 model, peak\n"
            "memory and size, against anchor baselines measured in the same run.\n\n"
            "example:\n"
            "  bertpress bench runs/minilm-sst2 runs/minilm-sst2-compressed runs/export-onnx \\\n"
            "      --eval-data ../shared/data/sst2 --baselines hf-pipeline,optimum,optimum-intel --out runs/report-sst2"
        ),
    )
    p.add_argument("artifacts", nargs="+", metavar="ARTIFACT",
                   help="artifact directories to benchmark (the first checkpoint, or the checkpoint in their "
                        "lineage, is the fp32 reference for every ratio)")

    add_config_flags(p, BenchConfig)  # every setting, from the config's fields
    add_column_flags(p.add_argument_group("data columns (of --eval-data)"), label=True, recorded=True)
    p.add_argument("--out", default="runs/bench-report", help="report directory to create")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--json", action="store_true", help="print results.json to stdout instead of the summary")
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    # Threads must be fixed before torch / onnxruntime start their pools: OpenMP reads this once.
    if args.threads is not None and "torch" not in sys.modules:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    cfg = config_from_args(args)

    report = bench(args.artifacts, cfg, args.out, overwrite=args.overwrite, progress=not args.no_progress)
    return _report(args, report)


def config_from_args(args: argparse.Namespace):
    return config_from_namespace(args, BenchConfig, extra=column_values(args))


def _report(args: argparse.Namespace, report) -> int:
    res = report.results
    if args.json:
        print_json(res.to_dict())
        return 0
    b, s = res.headline["batch_size"], res.headline["seq_len"]
    print(f"report: {report.path}/report.md  (results.json, plots/)")
    f1_key = next((k for k in ("f1", "macro_f1") if any(getattr(v, k) is not None for v in res.variants)), None)
    f1_head = {"f1": "F1 %", "macro_f1": "mF1 %"}.get(f1_key, "")
    print(f"{'variant':48s} {'p50 ms':>9s} {'speed-up':>9s} {'sent/s':>9s} {'acc %':>7s}"
          + (f" {f1_head:>7s}" if f1_key else "") + f"  (batch {b} x {s})")
    for v in res.variants:
        p50 = v.p50(b, s)
        sp = v.ratios.get("p50_speedup")
        print(f"{v.id[:48]:48s} {(f'{p50:.2f}' if p50 is not None else '-'):>9s} "
              f"{(f'{sp:.2f}x' if sp else '-'):>9s} "
              f"{(f'{v.sentences_per_s():.1f}' if v.traffic else '-'):>9s} "
              f"{(f'{v.accuracy * 100:.2f}' if v.accuracy is not None else '-'):>7s}"
              + (f" {(f'{getattr(v, f1_key) * 100:.2f}' if getattr(v, f1_key) is not None else '-'):>7s}"
                 if f1_key else ""))
    for r in res.refused:
        print(f"refused: {r.name} {r.runtime} on {r.device}: {r.reason}", file=sys.stderr)
    return 0
