"""`bertpress bench ARTIFACT...` (light: argparse only at import time)."""

from __future__ import annotations

import argparse
import os
import sys


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
    p.add_argument("--device", default="cpu", help="comma-separated devices: cpu, cuda, cuda:N")
    p.add_argument("--batch-sizes", default="1,8,32", help="comma-separated batch sizes of the fixed-shape sweep")
    p.add_argument("--seq-lens", default="16,64,128", help="comma-separated sequence lengths of the sweep")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads for torch and ONNX Runtime (inter-op is 1); default: all usable cores")
    p.add_argument("--eval-data", default=None,
                   help="labeled data for accuracy and real traffic: a TSV/CSV/JSONL file, a directory with "
                        "dev.* files, or a datasets id (e.g. glue/sst2, needs network); none = latency only")
    p.add_argument("--eval-split", default="dev", help="split of --eval-data to use")
    p.add_argument("--eval-limit", type=int, default=None, help="use a random subset of this many eval rows")
    from bertpress.data import add_column_flags

    add_column_flags(p.add_argument_group("data columns (of --eval-data)"), label=True, recorded=True)
    p.add_argument("--traffic-batch-size", type=int, default=32, help="batch size of the real-traffic scenario")
    p.add_argument("--traffic-passes", type=int, default=1, help="timed passes over the eval set in the real-traffic scenario, after one warm-up pass "
                        "(every batch shape new; reported on its own as the cold figure)")
    p.add_argument("--traffic-mode", choices=("latency", "throughput"), default="latency",
                   help="how the real-traffic scenario is served: latency = one batch at a time, each timed end "
                        "to end; throughput = as a server with several batches in flight where the runtime has "
                        "such a mode (OpenVINO: PERFORMANCE_HINT=THROUGHPUT; ONNX Runtime on the CPU with "
                        "2+ threads: one batch per thread, concurrent runs of one intra-op thread each; the next batch "
                        "tokenized while earlier ones run; the Optimum anchors get the same); PyTorch and the "
                        "pipeline serve one batch at a time either way, and their notes say so")
    p.add_argument("--baselines", default="",
                   help="anchor baselines on the fp32 checkpoint: hf-pipeline, optimum (Optimum-ONNX int8), "
                        "optimum-intel (Optimum-Intel OpenVINO int8; needs --eval-data for calibration). The two "
                        "Optimum anchors are built in their own environments (`make anchors`; or set "
                        "BERTPRESS_OPTIMUM_ENV / BERTPRESS_OPTIMUM_INTEL_ENV) and timed here like our variants")
    p.add_argument("--runtimes", default="",
                   help="only these runtimes (default: all that apply): pytorch, pytorch-int8-dynamic, "
                        "pytorch-fp16, pytorch-bf16, torchscript, onnxruntime, openvino. pytorch-bf16 runs on "
                        "the CPU only when named here, and only where bf16 is native (AVX512-BF16/AMX)")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up calls per shape")
    p.add_argument("--min-iters", type=int, default=20, help="at least this many timed calls per shape")
    p.add_argument("--min-seconds", type=float, default=1.0, help="and at least this many seconds per shape")
    p.add_argument("--headline", default=None,
                   help="BATCHxSEQ of the summary table and accuracy plot (default: smallest batch x longest seq)")
    p.add_argument("--rounds", type=int, default=1,
                   help="after the sweep, re-time the headline shape and (with --eval-data) one real-traffic "
                        "pass in this many interleaved rounds (every variant once per round) and report the "
                        "medians: ratios that survive a VM whose speed drifts during the run (1 = off)")
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
    from bertpress.bench.run import bench

    report = bench(args.artifacts, cfg, args.out, overwrite=args.overwrite, progress=not args.no_progress)
    return _report(args, report)


def config_from_args(args: argparse.Namespace):
    from bertpress.bench.config import BenchConfig
    from bertpress.config import build_config

    return build_config(BenchConfig, {
        "devices": args.device, "batch_sizes": args.batch_sizes, "seq_lens": args.seq_lens,
        "threads": args.threads, "eval_data": args.eval_data, "eval_split": args.eval_split,
        "eval_limit": args.eval_limit, "traffic_batch_size": args.traffic_batch_size,
        "traffic_passes": args.traffic_passes, "traffic_mode": args.traffic_mode, "baselines": args.baselines, "runtimes": args.runtimes,
        "warmup": args.warmup, "min_iters": args.min_iters, "min_seconds": args.min_seconds,
        "headline": args.headline, "rounds": args.rounds, "text_column": args.text_column,
        "text_pair_column": args.text_pair_column, "label_column": args.label_column,
    })


def _report(args: argparse.Namespace, report) -> int:
    res = report.results
    if args.json:
        from bertpress.console import print_json

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
