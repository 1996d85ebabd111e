"""`bertpress quickstart`: the whole path as one recipe, sized for ~15 minutes on 2 CPU cores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bertpress.artifact import Artifact, write_owned_text
from bertpress.bench.results import BenchReport

SAMPLE_DIR = Path(__file__).parent / "sample_data"


def resolve_data(data: str | None) -> tuple[str, str, list[str] | None]:
    """(data spec, human note for the report, label names to give the classes)."""
    if data is None:
        return (str(SAMPLE_DIR),
                f"the small sentiment sample shipped with bertpress ({SAMPLE_DIR}); written by us "
                "for smoke runs, far too easy to show real accuracy - pass --data for real figures",
                ["negative", "positive"])
    name = Path(data).name.lower()
    sst2 = "sst2" in name or "sst-2" in name or data.lower() in ("glue/sst2", "sst2")
    mrpc = "mrpc" in name or data.lower() in ("glue/mrpc", "mrpc")
    # GLUE's label names (the hub's ClassLabel names); for MRPC id 1 = paraphrase, whose F1 is reported
    labels = ["negative", "positive"] if sst2 else ["not_equivalent", "equivalent"] if mrpc else None
    note = f"{data}" + (" (GLUE SST-2: fine-tuned on a subset of train, evaluated on the full dev set)" if sst2 else
                        " (GLUE MRPC sentence pairs: fine-tuned on a subset of train, evaluated on the full dev set)"
                        if mrpc else "")
    return data, note, labels


def quickstart_recipe(data: str | None, out: Path, *, train_samples: int = 4000, epochs: float = 1.0,
                      text_column: str | None = None,
                      text_pair_column: str | None = None) -> tuple[str, dict[str, Any], str]:
    spec, note, labels = resolve_data(data)
    note += f"; fine-tuned on a random subset of at most {train_samples} training sentences, {epochs:g} epoch(s)"
    finetune: dict[str, Any] = {
        "model": "minilm", "data": spec, "epochs": epochs, "train_samples": train_samples,
        "lr": 1e-4, "batch_size": 32, "max_length": 128, "warmup": 0.06, "seed": 0,
    }
    if labels:
        finetune["labels"] = labels
    # The checkpoint records the columns it was trained on; compress, export and bench read theirs alike.
    for key, value in (("text_column", text_column), ("text_pair_column", text_pair_column)):
        if value is not None:
            finetune[key] = value
    recipe = {
        "out": str(out),
        "finetune": finetune,
        "compress": {
            "eval_data": spec,
            "quantize": {"scheme": "dynamic", "calibration_data": spec, "calibration_samples": 128},
            "prune": {"importance": "taylor", "calibration_data": spec, "calibration_batches": 4},
            # The automatic search (compress/autosearch.py) on a space narrowed to what fits the
            # demo's ~20 minutes: depth and FFN width (heads gained least in docs/results/layers.md),
            # both int8 schemes, every deploy runtime on the host; layer-wise distillation on 4,000
            # sentences; 10 minutes at most.
            "recover": {"epochs": 1.0, "samples": 4000, "lr": 1e-4, "max_length": 64, "hidden_weight": 1.0,
                        "attention_weight": 1.0},
            "search": {"max_accuracy_drop": 1.0, "layers": [0.0, 0.34, 0.5], "ffn": [0.0, 0.75], "heads": [0.0],
                       "time_budget": 10, "latency_min_seconds": 0.5},
        },
        # A model fine-tuned for a few minutes has many dev sentences near its decision boundary,
        # where int8 rounding flips the argmax without changing accuracy (bench reports both);
        # the parity gate keeps its logit tolerances and asks 95 % agreement instead of 97 %.
        "export": {"format": "all", "eval_data": spec, "min_agreement": 0.95},
        "bench": {"eval_data": spec, "baselines": ["hf-pipeline", "optimum", "optimum-intel"],
                  "batch_sizes": [1, 8], "seq_lens": [32, 128], "threads": None,
                  "min_seconds": 1.0, "min_iters": 20},
    }
    return spec, recipe, note


def winner_vs_specialist(out: Path) -> list[str]:
    """SUMMARY.md's lines on the search's winner as exported in the runtime it was measured in,
    against Optimum-Intel's OpenVINO int8 in the same bench run (none when a stage is missing)."""

    comp, rep = out / "compressed", out / "report"
    if not (Artifact.is_finished(comp) and Artifact.is_finished(rep)):
        return []
    search = (Artifact.load(comp).manifest.details or {}).get("search") or {}
    deploy = search.get("deploy") or {}
    res = BenchReport.load(rep).results
    ours = next((v for v in res.variants if deploy.get("format") and v.id.startswith(f"{deploy['format']}:")), None)
    anchor = next((v for v in res.variants if v.id.startswith("optimum-intel")), None)
    ref = next((v for v in res.variants if v.id == res.reference), None)
    if ours is None or ref is None:
        return []
    b, q = res.headline["batch_size"], res.headline["seq_len"]
    w = search.get("winner", {})
    dims = next((r for r in search.get("table", []) if r.get("winner")), {})
    lines = ["", "## The search's winner", "",
             f"{dims.get('layers_kept', '?')} layers, {dims.get('heads_kept', '?')} heads, FFN "
             f"{dims.get('ffn_kept', '?')} (removed: layers {w.get('layers', 0):g}, FFN {w.get('ffn', 0):g}, heads "
             f"{w.get('heads', 0):g}), {deploy.get('scheme')} int8 in {deploy.get('runtime')}: found by the "
             f"automatic search in {search.get('wall_s', 0) / 60:.1f} min, exported as `{ours.id}`.", "",
             f"| | p50 ms ({b} x {q}) | sentences/s | accuracy % |", "|---|---|---|---|"]
    for label, v in (("winner", ours), ("Optimum-Intel int8", anchor), ("PyTorch fp32 (reference)", ref)):
        if v is not None:
            lines.append(f"| {label} | {v.p50(b, q) or float('nan'):.2f} | {v.sentences_per_s() or float('nan'):.1f} | "
                         f"{100 * (v.accuracy or 0):.2f} |")
    if anchor is not None and anchor.p50(b, q) and ours.p50(b, q):
        lines += ["", f"Winner vs Optimum-Intel in this run: {anchor.p50(b, q) / ours.p50(b, q):.2f}x at {b} x {q}, "
                      f"{(ours.sentences_per_s() or 0) / (anchor.sentences_per_s() or 1):.2f}x on real traffic, "
                      f"{100 * ((ours.accuracy or 0) - (anchor.accuracy or 0)):+.2f} accuracy points."]
    return lines


def write_summary(out: Path, note: str, results) -> str:
    """OUT/SUMMARY.md: which data was used, the stages, and the bench report's main table."""
    lines = ["# bertpress quickstart", "", f"Data: {note}", "", "| stage | state | artifacts |",
             "|---|---|---|"]
    for r in results:
        state = "reused" if r.skipped else "ran"
        lines.append(f"| {r.stage} | {state} | {', '.join(str(a) for a in r.artifacts)} |")
    lines += winner_vs_specialist(out)
    report = out / "report" / "report.md"
    if report.is_file():
        lines += ["", f"Benchmark report: {report}", "", report.read_text(encoding="utf-8")]
    text = "\n".join(lines) + "\n"
    write_owned_text(out, "SUMMARY.md", text)
    return text
