"""`bertpress compress CHECKPOINT --out DIR`: argparse only at import time (--help stays instant)."""

from __future__ import annotations

import argparse


def _ratio_pairs(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


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
    g = p.add_argument_group("quantization")
    g.add_argument("--quantize", choices=["none", "dynamic", "static"], default="dynamic",
                   help="int8 scheme for the Linear layers")
    g.add_argument("--calibration-data", default=None,
                   help="labelled data (file, directory with train/dev, or datasets id) for static "
                        "calibration, Taylor importance and recovery; its train split is used")
    g.add_argument("--calibration-samples", type=int, default=128, help="samples for static calibration")
    g.add_argument("--calibration-method", choices=["minmax", "entropy", "percentile", "auto"], default="minmax",
                   help="activation range method; auto tries all three and keeps the best on --eval-data")
    g.add_argument("--quantize-scope", choices=["encoder", "all"], default="encoder",
                   help="which Linear layers: the encoder's, or also pooler + classifier")
    g = p.add_argument_group("pruning")
    g.add_argument("--prune-heads", type=float, default=0.0, help="fraction of attention heads removed per layer")
    g.add_argument("--prune-ffn", type=float, default=0.0, help="fraction of FFN channels removed per layer")
    g.add_argument("--prune-layers", type=float, default=0.0,
                   help="fraction of whole encoder layers removed, spread evenly, the last kept (6 layers, 0.5: "
                        "keeps 1, 3, 5); pair with --recover-epochs and --recover-hidden-weight")
    g.add_argument("--importance", choices=["taylor", "magnitude"], default="taylor",
                   help="channel importance: taylor needs --calibration-data, magnitude is data-free")
    g.add_argument("--round-to", type=int, default=64, help="FFN width kept a multiple of this")
    g = p.add_argument_group("recovery")
    g.add_argument("--recover-epochs", type=float, default=0.0,
                   help="distillation epochs from the unpruned model after pruning (0 = none)")
    g.add_argument("--recover-samples", type=int, default=None, help="random subset of the training data")
    g.add_argument("--recover-max-steps", type=int, default=None, help="cap on recovery optimizer steps")
    g.add_argument("--recover-lr", type=float, default=5e-5, help="recovery learning rate")
    g.add_argument("--recover-max-length", type=int, default=128, help="recovery max sequence length")
    g.add_argument("--recover-alpha", type=float, default=0.5,
                   help="weight of the teacher's soft targets against the labels' cross-entropy (0..1)")
    g.add_argument("--recover-hidden-weight", type=float, default=0.0,
                   help="weight of intermediate-layer distillation: MSE of each kept layer's hidden states to "
                        "the teacher layer it came from (0 = logits only; 1 is a good start after --prune-layers)")
    g.add_argument("--recover-attention-weight", type=float, default=0.0,
                   help="weight of attention distillation: KL from the teacher's attention maps to those of the "
                        "kept layers, head by head over the heads --prune-heads kept (0 = off; 1 with "
                        "--recover-hidden-weight 1 is a good start after --prune-layers; runs eager attention)")
    g.add_argument("--recover-augment", type=int, default=0, metavar="N",
                   help="add N rewritten copies of every recovery row (TinyBERT-style word substitution: each word "
                        "swapped with --recover-augment-prob for one of its 15 nearest words in the teacher's "
                        "embeddings); they learn from the teacher's soft targets alone, and an epoch covers "
                        "them too (0 = off)")
    g.add_argument("--recover-augment-prob", type=float, default=0.4, metavar="P",
                   help="probability that a word of an augmented copy is replaced")
    g = p.add_argument_group("search")
    g.add_argument("--max-accuracy-drop", type=float, default=None,
                   help="accuracy points you accept to lose; turns on the search over --search-schedule x "
                        "--search-schemes (needs --eval-data)")
    g.add_argument("--eval-data", default=None, help="labelled eval data (its dev split) for metrics and search")
    # Search-only flags default to SUPPRESS: absent from the namespace unless given, so that one
    # given without --max-accuracy-drop is refused (it would change nothing) and an omitted one
    # takes SearchConfig's own default (the "(default: ...)" in each help is checked against it).
    unset = argparse.SUPPRESS
    g.add_argument("--eval-samples", type=int, default=unset,
                   help="random subset of the eval data in the search (default: all)")
    g.add_argument("--search-schedule", type=_ratio_pairs, default=unset,
                   help="comma-separated heads:ffn[:layers] pruning ratios, e.g. 0:0.25,0:0:0.5 "
                        "(default: 0:0,0.25:0.25,0.5:0.5)")
    g.add_argument("--search-schemes", default=unset,
                   help="comma-separated quantization schemes to try (default: none,dynamic,static)")
    g.add_argument("--latency-statistic", choices=["p50", "min"], default=unset,
                   help="per-call statistic that ranks candidates; min resists noise from other jobs (default: p50)")
    g.add_argument("--latency-rounds", type=int, default=unset,
                   help="interleaved timing rounds over all candidates after the walk; median p50, best min "
                        "(default: 3)")
    g.add_argument("--latency-threads", type=int, default=unset,
                   help="threads while timing: torch's, and the deploy runtime's sessions (default: torch's setting)")
    g.add_argument("--search-runtime", choices=["pytorch", "onnxruntime", "openvino"], default=unset,
                   help="score and time each candidate in PyTorch eager, or in the runtime you deploy: as "
                        "the ONNX Runtime model `bertpress export` makes of it, or the OpenVINO IR of "
                        "`bertpress export --format openvino` (exported per candidate; its accuracy and latency "
                        "in that runtime rank it; a candidate that fails to export is listed, not chosen). "
                        "Speed-ups are against the fp32 model in PyTorch eager either way (default: pytorch)")
    g.add_argument("--search-objective", choices=["latency", "traffic"], default=unset,
                   help="what fastest means: latency = one call at batch 1 x 128 tokens (interactive use); "
                        "traffic = passes over the --eval-data texts in length-sorted batches of "
                        "--search-batch-size, dynamic padding, tokenization included (a server's load, as bench's "
                        "real traffic), ranked by time per sentence (default: latency)")
    g.add_argument("--search-batch-size", type=int, default=unset, metavar="N",
                   help="batch size of the traffic objective, as bench's --traffic-batch-size (default: 32)")
    from bertpress.data import add_column_flags

    add_column_flags(p.add_argument_group("data columns (of --eval-data and --calibration-data)"),
                     label=True, recorded=True)
    p.add_argument("--seed", type=int, default=0, help="random seed for subsets")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(handler=_run)


# The search-only flags: (flag, argparse dest, SearchConfig field).
SEARCH_FLAGS = (("--eval-samples", "eval_samples", "eval_samples"),
                ("--search-schedule", "search_schedule", "schedule"),
                ("--search-schemes", "search_schemes", "schemes"),
                ("--latency-statistic", "latency_statistic", "latency_statistic"),
                ("--latency-rounds", "latency_rounds", "latency_rounds"),
                ("--latency-threads", "latency_threads", "latency_threads"),
                ("--search-runtime", "search_runtime", "runtime"),
                ("--search-objective", "search_objective", "objective"),
                ("--search-batch-size", "search_batch_size", "traffic_batch_size"))


def config_from_args(args: argparse.Namespace):
    from bertpress.compress.config import (CompressConfig, PruneConfig, QuantizeConfig, RecoverConfig,
                                           SearchConfig)

    from bertpress.errors import ConfigError

    given = {field: getattr(args, dest) for _, dest, field in SEARCH_FLAGS if hasattr(args, dest)}
    search = None
    if args.max_accuracy_drop is None:
        if given:
            flag = next(f for f, dest, _ in SEARCH_FLAGS if hasattr(args, dest))
            raise ConfigError(f"{flag} only applies to the search; add --max-accuracy-drop POINTS "
                              f"(and --eval-data) to search, or drop {flag}")
    else:
        if "schedule" in given:
            given["schedule"] = tuple(given["schedule"])
        if "schemes" in given:
            given["schemes"] = tuple(x.strip() for x in given["schemes"].split(",") if x.strip())
        search = SearchConfig(max_accuracy_drop=args.max_accuracy_drop, **given)
    return CompressConfig(
        quantize=QuantizeConfig(scheme=args.quantize, calibration_data=args.calibration_data,
                                calibration_samples=args.calibration_samples,
                                calibration_method=args.calibration_method, scope=args.quantize_scope),
        prune=PruneConfig(heads=args.prune_heads, ffn=args.prune_ffn, layers=args.prune_layers,
                          importance=args.importance,
                          round_to=args.round_to, calibration_data=args.calibration_data),
        recover=RecoverConfig(epochs=args.recover_epochs, samples=args.recover_samples,
                              max_steps=args.recover_max_steps, lr=args.recover_lr,
                              max_length=args.recover_max_length, alpha=args.recover_alpha,
                              hidden_weight=args.recover_hidden_weight,
                              attention_weight=args.recover_attention_weight,
                              augment=args.recover_augment, augment_prob=args.recover_augment_prob),
        search=search, eval_data=args.eval_data, seed=args.seed, text_column=args.text_column,
        text_pair_column=args.text_pair_column, label_column=args.label_column)


def _run(args: argparse.Namespace) -> int:
    import sys

    from bertpress.console import print_json
    from bertpress.compress.api import compress

    cfg = config_from_args(args)
    log = (lambda s: print(s, file=sys.stderr)) if args.json else print
    import contextlib

    # With --json, stdout carries only the JSON: training logs and progress go to stderr.
    quiet = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    with quiet:
        art = compress(args.checkpoint, cfg, args.out, overwrite=args.overwrite, progress=not args.no_progress,
                       log=log)
    m = art.manifest
    if args.json:
        print_json({"out": str(art.path), "metrics": m.metrics, "details": m.details})
        return 0
    from bertpress import records

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
    if "eval_accuracy" in m.metrics:
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
    return 0
