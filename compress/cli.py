"""`bertpress compress CHECKPOINT --out DIR`: argparse only at import time (--help stays instant)."""

from __future__ import annotations

import argparse
import shlex

from bertpress import records
from bertpress.compress.config import CompressConfig
from bertpress.config import add_config_flags, build_config, config_flags, flag_values
from bertpress.console import print_json
from bertpress.data import add_column_flags, column_values
from bertpress.errors import ConfigError


def register(sub, common, formatter) -> None:
    p = sub.add_parser(
        "compress", parents=[common], formatter_class=formatter,
        help="int8 quantization, head/FFN pruning, distillation recovery, accuracy-aware search",
        description="Compress a fine-tuned checkpoint into a new artifact (input untouched).\n\n"
                    "examples:\n"
                    "  bertpress compress runs/ckpt --out runs/ckpt-int8 --quantize dynamic\n"
                    "  bertpress compress runs/ckpt --out runs/ckpt-s8 --quantize static "
                    "--calibration-data data/ --calibration-method auto --eval-data data/\n"
                    "  bertpress compress runs/ckpt --out runs/ckpt-p --prune-heads 0.5 --prune-ffn 0.5 "
                    "--calibration-data data/ --recover-epochs 1\n"
                    "  bertpress compress runs/ckpt --out runs/best --max-accuracy-drop 1.0 "
                    "--eval-data data/ --calibration-data data/")
    p.add_argument("checkpoint", help="HF model directory or bertpress checkpoint (or 'minilm')")
    p.add_argument("--out", required=True, help="output directory (must be outside the checkpoint)")
    add_config_flags(p, CompressConfig)  # quantization, pruning, recovery, search: from the config's fields

    add_column_flags(p.add_argument_group("data columns (of --eval-data and --calibration-data)"),
                     label=True, recorded=True)
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(handler=_run)


# The search-only flags as (flag, argparse dest, SearchConfig field): those that default to
# SUPPRESS (absent from the namespace unless given), so that one given without --max-accuracy-drop
# is refused (it would change nothing) and an omitted one takes SearchConfig's own default (its
# help states it).
SEARCH_FLAGS = tuple((s.option, s.dest, path[-1]) for s in config_flags(CompressConfig)
                     if s.kwargs["default"] is argparse.SUPPRESS for path in s.paths)


def config_from_args(args: argparse.Namespace):
    values = flag_values(args, CompressConfig)
    search = values.pop("search")
    if search.pop("max_accuracy_drop") is None:
        if search:
            flag = next(f for f, _, field in SEARCH_FLAGS if field in search)
            raise ConfigError(f"{flag} only applies to the search; add --max-accuracy-drop POINTS "
                              f"(and --eval-data) to search, or drop {flag}")
    else:
        values["search"] = {"max_accuracy_drop": args.max_accuracy_drop, **search}
    return build_config(CompressConfig, {**values, **column_values(args)})


def _run(args: argparse.Namespace) -> int:
    import sys

    from bertpress.compress.api import compress  # lazy: api pulls torch; --help stays light

    cfg = config_from_args(args)
    log = (lambda s: print(s, file=sys.stderr)) if args.json else print
    import contextlib

    # With --json, stdout carries only the JSON: training logs and progress go to stderr.
    quiet = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    with quiet:
        # the search's deploy runtimes, passed in by the composition root (bertpress.app.cli)
        runtimes = args.deploy_runtimes() if getattr(args, "deploy_runtimes", None) else None
        art = compress(args.checkpoint, cfg, args.out, overwrite=args.overwrite, progress=not args.no_progress,
                       log=log, runtimes=runtimes)
    m = art.manifest
    if args.json:
        print_json({"out": str(art.path), "metrics": m.metrics, "details": m.details})
        return 0

    q = records.read(m.details, "quantization", records.QuantizationRecord) or records.QuantizationRecord()
    pr = records.read(m.details, "pruning", records.PruningRecord)
    print(f"wrote {art.path} (kind compressed)")
    print(f"  quantization: {q.scheme}"
          + (f" ({q.num_quantized} Linear layers, {q.formats.get('activation_dtype')} x "
             f"{q.formats.get('weight_dtype')}, reduce_range={q.reduce_range})" if q.int8 else ""))
    if pr:
        layers = (f", layers {len(pr.heads_per_layer)} of {pr.original.get('layers')} (kept {list(pr.layers_kept)})"
                  if pr.layers_kept else "")
        print(f"  pruning: heads/layer {list(pr.heads_per_layer)}, FFN {pr.ffn_per_layer[0]} "
              f"(from {pr.original['heads']} / {pr.original['ffn']}){layers}, params {pr.params:,}")
    if m.metrics.get("eval_accuracy") is not None:
        print(f"  accuracy: {100 * m.metrics['eval_accuracy']:.2f} % (uncompressed "
              f"{100 * m.metrics['eval_accuracy_uncompressed']:.2f} %)")
    for key, name in (("f1", "F1"), ("macro_f1", "macro-F1")):
        if f"eval_{key}" in m.metrics:
            print(f"  {name}: {100 * m.metrics[f'eval_{key}']:.2f} (uncompressed "
                  f"{100 * m.metrics[f'eval_{key}_uncompressed']:.2f})")
    s = m.details.get("search")
    if s:
        print(f"  search winner: {s['winner']} met_budget={s['met_budget']}")
        w = s.get("winner_metrics", {})
        if w.get("sentences_per_s"):
            print(f"  traffic: {w['sentences_per_s']:.1f} sentences/s on the eval texts (fp32 PyTorch eager "
                  f"{w['sentences_per_s_uncompressed']:.1f}: {w['speedup_vs_fp32_pytorch_eager']:.2f}x)")
        elif w.get("latency_ms"):
            print(f"  latency: {w['latency_ms']:.2f} ms ({w.get('latency_statistic', 'p50')}, fp32 PyTorch eager "
                  f"{w['latency_ms_uncompressed']:.2f} ms: {w['speedup_vs_fp32_pytorch_eager']:.2f}x)")
        d = s.get("deploy")
        if d:
            print(f"  measured in: {d['runtime']} ({d['scheme']} int8); search wall time {s['wall_s'] / 60:.1f} min")
            if d.get("format"):
                ev = f" --eval-data {shlex.quote(str(cfg.eval_data))}" if cfg.eval_data else ""
                print(f"  next: bertpress export {shlex.quote(str(art.path))} --out DIR{ev}   (writes the "
                      f"{d['format']} model it measured; with the eval data, the gate scores the rows the "
                      "search scored)")
    return 0
