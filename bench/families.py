"""Per-family results: fusion counts, parity and latency of fp32 PyTorch vs our best int8 ONNX.

    python -m bertpress.bench.families --out runs/families            # real base shapes (minutes, GBs)
    python -m bertpress.bench.families --tiny --out runs/families-tiny # tiny shapes: proves the script
    python -m bertpress.bench.families --families roberta,deberta-v2 --rounds 5 --out runs/fam
    python -m bertpress.bench.families --families bert --anchors ../shared/data/sst2 --out runs/fam-anchors

For every family a random-initialised classifier of the family's *real base size* is built from
its config (values below, from each model's config.json on the Hugging Face hub; random weights:
latency and fusions depend on shapes, not on training), saved with a real tokenizer of the
family's kind (bertpress.testing; its small vocabulary does not change the timed shapes: the
embedding table keeps the real vocab_size), exported by `bertpress export` twice — fp32 ONNX
(parity of the fused graph) and dynamic int8 ONNX (our best int8 ONNX: ORT fusions + QOperator
int8) — and timed by `bertpress bench` in one run per family (PyTorch fp32 reference and the
int8 ONNX model, batch 1 x 128, 2 threads, interleaved rounds). Writes OUT/families.json and
OUT/families.md. Random weights give near-uniform logits, so int8 argmax agreement on synthetic
rows is reported, not enforced (the gate runs with allow_mismatch); fp32 parity is enforced.

With --anchors DATA the table is the whole field for the family, latency only: also our OpenVINO
IR (fp32, and NNCF static int8 calibrated on DATA's sentences) and the two specialists' int8
pipelines built by their own tools (the bench baselines `optimum` and `optimum-intel`; the latter
calibrates on DATA too), all timed in the same bench run, plus the best of ours and its ratio to
each. Accuracy is not reported: the weights are random (bench still needs DATA to calibrate).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from bertpress.arch import max_positions
from bertpress.artifact import Artifact, Manifest, write_manifest
from bertpress.bench import bench
from bertpress.bench.config import BenchConfig
from bertpress.errors import BertpressError, ConfigError
from bertpress.export import export
from bertpress.export.config import ExportConfig
from bertpress.hardware import info
from bertpress.models import param_count
from bertpress.quiet import quiet_libraries
from bertpress.testing import tiny_config, tiny_family_tokenizer

# Shapes of each family's base checkpoint (config.json on the Hugging Face hub):
BASE_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    # bert-base-uncased
    "bert": ("bert-base-uncased", dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                                       num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512,
                                       type_vocab_size=2)),
    # distilbert-base-uncased
    "distilbert": ("distilbert-base-uncased", dict(vocab_size=30522, dim=768, n_layers=6, n_heads=12, hidden_dim=3072,
                                                   max_position_embeddings=512)),
    # roberta-base
    "roberta": ("roberta-base", dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                     intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1,
                                     pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5)),
    # xlm-roberta-base
    "xlm-roberta": ("xlm-roberta-base", dict(vocab_size=250002, hidden_size=768, num_hidden_layers=12,
                                             num_attention_heads=12, intermediate_size=3072,
                                             max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                                             bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5)),
    # google/electra-base-discriminator
    "electra": ("google/electra-base-discriminator", dict(vocab_size=30522, embedding_size=768, hidden_size=768,
                                                          num_hidden_layers=12, num_attention_heads=12,
                                                          intermediate_size=3072, max_position_embeddings=512,
                                                          type_vocab_size=2)),
    # microsoft/deberta-v3-small
    "deberta-v2": ("microsoft/deberta-v3-small", dict(vocab_size=128100, hidden_size=768, num_hidden_layers=6,
                                                      num_attention_heads=12, intermediate_size=3072,
                                                      max_position_embeddings=512, type_vocab_size=0,
                                                      relative_attention=True, position_buckets=256,
                                                      max_relative_positions=-1, pos_att_type=["p2c", "c2p"],
                                                      share_att_key=True, norm_rel_ebd="layer_norm",
                                                      position_biased_input=False, layer_norm_eps=1e-7,
                                                      pad_token_id=0)),
    # answerdotai/ModernBERT-base
    "modernbert": ("answerdotai/ModernBERT-base", dict(vocab_size=50368, hidden_size=768, num_hidden_layers=22,
                                                       num_attention_heads=12, intermediate_size=1152,
                                                       max_position_embeddings=8192, global_attn_every_n_layers=3,
                                                       local_attention=128, global_rope_theta=160000.0,
                                                       local_rope_theta=10000.0, norm_bias=False,
                                                       attention_bias=False, mlp_bias=False, pad_token_id=50283,
                                                       cls_token_id=50281, sep_token_id=50282, bos_token_id=50281,
                                                       eos_token_id=50282)),
    # albert-base-v2
    "albert": ("albert-base-v2", dict(vocab_size=30000, embedding_size=128, hidden_size=768, num_hidden_layers=12,
                                      num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512,
                                      hidden_act="gelu_new", type_vocab_size=2, num_hidden_groups=1, inner_group_num=1,
                                      pad_token_id=0, bos_token_id=2, eos_token_id=3)),
    # microsoft/mpnet-base
    "mpnet": ("microsoft/mpnet-base", dict(vocab_size=30527, hidden_size=768, num_hidden_layers=12,
                                           num_attention_heads=12, intermediate_size=3072, max_position_embeddings=514,
                                           relative_attention_num_buckets=32, layer_norm_eps=1e-5, pad_token_id=1,
                                           bos_token_id=0, eos_token_id=2)),
}


def build_checkpoint(family: str, out: Path, *, tiny: bool) -> dict[str, Any]:
    """Save a random-initialised classifier of `family` (+ tokenizer, manifest) in `out`."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    tokenizer = tiny_family_tokenizer(family)
    labels = ["negative", "positive"]
    if tiny:
        config, origin = tiny_config(family, tokenizer, labels=labels), "bertpress.testing.tiny_config"
    else:
        origin, values = BASE_CONFIGS[family]
        model_type = family
        config = AutoConfig.for_model(model_type, **values, num_labels=2, id2label=dict(enumerate(labels)),
                                      label2id={n: i for i, n in enumerate(labels)})
        if family == "modernbert":  # the tiny tokenizer's special ids (the real ones sit past its vocabulary)
            for k in ("pad", "cls", "sep"):
                setattr(config, f"{k}_token_id", getattr(tokenizer, f"{k}_token_id"))
            config.bos_token_id, config.eos_token_id = config.cls_token_id, config.sep_token_id
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    limit = max_positions(model.config)
    write_manifest(out, Manifest(kind="checkpoint", labels=labels, max_length=min(512, limit or 512),
                                 details={"origin": f"random weights, shape of {origin}"}))
    return {"shape_of": origin, "params": param_count(model), "layers": int(model.config.num_hidden_layers)}


# The --anchors table's columns: (row key in families.json, display name).
ANCHOR_ROWS = (("pytorch_fp32", "PyTorch fp32 eager"), ("onnx_int8", "ours int8 ONNX"),
               ("openvino_fp32", "ours OpenVINO fp32"), ("openvino_int8", "ours OpenVINO int8"),
               ("optimum", "Optimum-ONNX int8"), ("optimum-intel", "Optimum-Intel int8"))
OURS = ("onnx_int8", "openvino_fp32", "openvino_int8")


def run_family(family: str, work: Path, *, tiny: bool, seq: int, threads: int, rounds: int,
               min_iters: int, min_seconds: float, anchors: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"family": family}
    ckpt = work / family / "checkpoint"
    row.update(build_checkpoint(family, ckpt, tiny=tiny))
    grid = dict(batch_sizes=(1, 2), seq_lengths=(8, seq))
    t = time.time()
    export(ckpt, ExportConfig(format="onnx", quantize="none", **grid), work / family / "onnx-fp32", progress=False)
    export(ckpt, ExportConfig(format="onnx", quantize="dynamic", allow_mismatch=True, **grid),
           work / family / "onnx-int8", progress=False)
    timed = [ckpt, work / family / "onnx-int8"]
    if anchors:
        export(ckpt, ExportConfig(format="openvino", quantize="none", **grid), work / family / "openvino-fp32",
               progress=False)
        export(ckpt, ExportConfig(format="openvino", quantize="static", calibration_data=anchors,
                                  calibration_samples=300, allow_mismatch=True, **grid),
               work / family / "openvino-int8", progress=False)
        timed += [work / family / "openvino-fp32", work / family / "openvino-int8"]
    row["export_s"] = round(time.time() - t, 1)
    for name in ("onnx-fp32", "onnx-int8"):
        man = Artifact.load(work / family / name).manifest
        model = man.details["model"]
        parity = man.metrics["parity"]
        parity = parity[0] if isinstance(parity, list) else parity
        row[name] = {"fusions": {k: v for k, v in model.get("fusions", {}).items() if v},
                     "attention_fused": model.get("attention_fused"),
                     "attention_unfused_reason": model.get("attention_unfused_reason"),
                     "max_abs_dlogit": _find(parity, "max_abs_diff"),
                     "agreement": _find(_find(parity, "agreement") or {}, "value"),
                     "passed": _find(parity, "passed"),
                     "size_mb": round((work / family / name / "model.onnx").stat().st_size / 1e6, 1)}
    # With anchors, eval_data only feeds optimum-intel's calibration; a few rows keep the
    # (meaningless, random-weight) accuracy pass short.
    extra: dict[str, Any] = (dict(runtimes=("pytorch", "onnxruntime", "openvino"),
                                  baselines=("optimum", "optimum-intel"), eval_data=anchors, eval_limit=32)
                             if anchors else dict(runtimes=("pytorch", "onnxruntime")))
    report = bench(timed, BenchConfig(batch_sizes=(1,), seq_lens=(seq,), threads=threads, rounds=rounds,
                                      min_iters=min_iters, min_seconds=min_seconds, headline=(1, seq), **extra),
                   work / family / "report", progress=False)
    for v in report.results.variants:
        key = _variant_key(v)
        row[key] = {"p50_ms": round(v.p50(1, seq), 3), "rounds_p50_ms": (v.rounds or {}).get("p50_ms"),
                    "speedup": round(v.ratios.get("p50_speedup") or 0.0, 2)}
        if v.settings:
            row[key]["settings"] = v.settings
    row["speedup"] = row["onnx_int8"]["speedup"]
    if anchors:
        row["refused"] = [r.to_dict() for r in report.results.refused]
        ours = [k for k in OURS if k in row]
        best = min(ours, key=lambda k: row[k]["p50_ms"])
        row["best"] = {"variant": best, "p50_ms": row[best]["p50_ms"],
                       **{f"vs_{b}": round(row[b]["p50_ms"] / row[best]["p50_ms"], 2)
                          for b in ("pytorch_fp32", "optimum", "optimum-intel") if b in row}}
    row["load_average"] = report.results.environment.get("load_average")
    return row


def _variant_key(v: Any) -> str:
    """Which ANCHOR_ROWS key a bench variant is (baselines by name, ours by the directory it came from)."""
    if v.role == "baseline":
        return v.runtime
    if v.role == "reference" or v.runtime == "pytorch":
        return "pytorch_fp32"
    return Path(v.source).name.replace("-", "_")


def _find(d: Any, key: str) -> Any:
    """A value from a parity report (one file's report, or {file: report})."""
    if not isinstance(d, dict):
        return None
    if key in d:
        return d[key]
    for v in d.values():
        if isinstance(v, dict) and key in v:
            return v[key]
    return None


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [f"# Families: fusions, parity, latency (batch 1 x {meta['seq']}, {meta['threads']} threads)", "",
             f"`{meta['command']}` — {meta['when']}, {meta['cpu']}; random weights in each family's base shape.", "",
             "| family | shape of | params (M) | attention fused | ORT fusions (int8 graph) | fp32 ONNX max abs dlogit "
             "| int8 agreement | PyTorch fp32 p50 ms | int8 ONNX p50 ms | speed-up | int8 MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['family']} | | | | error: {r['error']} | | | | | | |")
            continue
        i8, f32 = r["onnx-int8"], r["onnx-fp32"]
        fus = ", ".join(f"{k} {v}" for k, v in sorted(i8["fusions"].items()))
        agree = f"{i8['agreement']:.3f}" if isinstance(i8["agreement"], float) else "-"
        lines.append(f"| {r['family']} | {r['shape_of']} | {r['params'] / 1e6:.1f} | "
                     f"{'yes' if i8['attention_fused'] else 'no'} | {fus} | {f32['max_abs_dlogit']:.2g} | {agree} | "
                     f"{r['pytorch_fp32']['p50_ms']:.2f} | {r['onnx_int8']['p50_ms']:.2f} | {r['speedup']:.2f}x | "
                     f"{i8['size_mb']} |")
    unfused = {r["family"]: r["onnx-int8"]["attention_unfused_reason"] for r in rows
               if "error" not in r and r["onnx-int8"]["attention_unfused_reason"]}
    if unfused:
        lines += ["", "Attention not fused:"] + [f"- {k}: {v}" for k, v in unfused.items()]
    if any("best" in r for r in rows):
        lines += anchor_table(rows)
    return "\n".join(lines) + "\n"


def anchor_table(rows: list[dict[str, Any]]) -> list[str]:
    """--anchors: p50 ms of every variant (speed-up over PyTorch fp32 in brackets) and the best of ours."""
    names = dict(ANCHOR_ROWS)
    lines = ["", "## Against the specialists (same bench run per family; latency only, random weights)", "",
             "| family | " + " | ".join(names.values()) + " | best of ours | vs Optimum-ONNX | vs Optimum-Intel | load |",
             "|---|" + "---|" * (len(names) + 4)]
    for r in rows:
        if "best" not in r:
            continue
        cells = [f"{r[k]['p50_ms']:.2f} ({r[k]['speedup']:.2f}x)" if k in r else "refused" for k in names]
        best = r["best"]
        vs = [f"{best[f'vs_{b}']:.2f}x" if f"vs_{b}" in best else "-" for b in ("optimum", "optimum-intel")]
        load = r.get("load_average") or {}
        load = f"{load.get('start')}–{load.get('end')}" if isinstance(load, dict) and load else "-"
        lines.append(f"| {r['family']} | " + " | ".join(cells) + f" | {names[best['variant']]} | " + " | ".join(vs)
                     + f" | {load} |")
    refused = [(r["family"], x) for r in rows for x in r.get("refused", [])]
    if refused:
        lines += ["", "Refused:"] + [f"- {fam}: {x['name']} on {x['runtime']}: {x['reason']}" for fam, x in refused]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bertpress.bench.families", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/families", help="output directory (families.json, families.md)")
    ap.add_argument("--families", default=",".join(BASE_CONFIGS), help="comma-separated families")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes (seconds): checks the script, not a result")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-iters", type=int, default=20)
    ap.add_argument("--min-seconds", type=float, default=1.0)
    ap.add_argument("--anchors", metavar="DATA", default=None,
                    help="also time our OpenVINO IR (fp32, NNCF int8) and the optimum / optimum-intel baselines "
                         "(their environments: make anchors); DATA: sentences to calibrate the int8 models on")
    ap.add_argument("--keep", action="store_true", help="keep the models in OUT/work")
    args = ap.parse_args(argv)

    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in BASE_CONFIGS]
    if unknown:
        raise SystemExit(f"error: unknown families {unknown}; choose from {', '.join(BASE_CONFIGS)}")
    quiet_libraries()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    rows = []
    for fam in families:
        shutil.rmtree(work / fam, ignore_errors=True)
        try:
            rows.append(run_family(fam, work, tiny=args.tiny, seq=args.seq, threads=args.threads, rounds=args.rounds,
                                   min_iters=args.min_iters, min_seconds=args.min_seconds, anchors=args.anchors))
        except (BertpressError, ConfigError) as exc:
            rows.append({"family": fam, "error": str(exc)[:300]})
        print(json.dumps(rows[-1]), flush=True)
        if not args.keep:
            shutil.rmtree(work / fam, ignore_errors=True)
    env = info()
    import sys

    meta = {"command": "python -m bertpress.bench.families " + " ".join(sys.argv[1:] if argv is None else argv),
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seq": args.seq, "threads": args.threads,
            "tiny": args.tiny, "cpu": env.get("cpu", {}).get("model") if isinstance(env.get("cpu"), dict) else None,
            "environment": env}
    (out / "families.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str) + "\n",
                                       encoding="utf-8")
    (out / "families.md").write_text(markdown(rows, meta), encoding="utf-8")
    print(f"wrote {out / 'families.json'} and {out / 'families.md'}")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
