"""Accuracy-aware search: pruning ratios x quantization schemes, fastest within the budget.

Each (heads, ffn) ratio is pruned (and recovered) once, then every scheme is applied to that
fp32 model; each candidate is scored on the eval set as it is made. Latency (batch 1, PyTorch
eager) is measured once the walk is over, every candidate and the baseline interleaved over
`latency_rounds` rounds, so that load from other jobs during the (long) walk cannot favour the
candidates that happened to be timed in a quiet moment.
The winner is the fastest candidate whose accuracy drop (vs the uncompressed model) is within
`max_accuracy_drop`; if none is, the most accurate one (ties: the faster) — so a model and the
full table are always saved, and `met_budget` says which case happened.
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
from typing import Any, Callable

from bertpress.compress.config import CompressConfig, PruneConfig, Scheme


def select(rows: list[dict[str, Any]], max_drop: float) -> tuple[int, bool]:
    """Index of the winning candidate row and whether it met the budget (baseline rows skipped)."""
    cands = [(i, r) for i, r in enumerate(rows) if not r.get("baseline")]
    if not cands:
        raise ValueError("no candidates to select from")
    within = [(i, r) for i, r in cands if r["accuracy_drop"] <= max_drop + 1e-9]
    if within:
        return min(within, key=lambda ir: (ir[1]["latency_ms"], -ir[1]["accuracy"]))[0], True
    return min(cands, key=lambda ir: (-ir[1]["accuracy"], ir[1]["latency_ms"]))[0], False


def format_table(rows: list[dict[str, Any]]) -> str:
    head = "| heads | ffn | scheme | accuracy | drop | latency ms | p50 / min ms | speed-up | size MB | shapes | |"
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        mark = "baseline" if r.get("baseline") else ("**winner**" if r.get("winner") else
                                                       ("in budget" if r.get("within_budget") else ""))
        lines.append(f"| {r['heads']:.2f} | {r['ffn']:.2f} | {r['scheme']} | {r['accuracy']:.2f} | "
                     f"{r['accuracy_drop']:+.2f} | {r['latency_ms']:.2f} | {r['latency_p50_ms']:.2f} / {r['latency_min_ms']:.2f} | "
                     f"{r['speedup']:.2f}x | "
                     f"{r['size_bytes'] / 1e6:.1f} | {r['heads_per_layer']}h/{r['ffn_width']} | {mark} |")
    return "\n".join(lines)


def run_search(work, cfg: CompressConfig, say: Callable[[str], None], max_length: int):
    from bertpress.compress.api import HANDLERS, Work
    from bertpress.compress.evaluate import accuracy, latency, state_size

    s = cfg.search
    ml = max_length  # the artifact's own max length, as in the non-search path

    def timed(model) -> dict[str, float]:
        st = latency(model, work.tokenizer, seq_len=s.latency_seq_len, threads=s.latency_threads,
                     min_seconds=s.latency_min_seconds)
        return {"p50": st.p50_ms, "min": st.min_ms, "p90": st.p90_ms}

    base_acc = accuracy(work.teacher, work.tokenizer, work.eval_data, max_length=ml)
    base_size = state_size(work.teacher)
    n_heads = int(work.teacher.bert.encoder.layer[0].attention.self.num_attention_heads)
    n_ffn = int(work.teacher.bert.encoder.layer[0].intermediate.dense.out_features)
    rows: list[dict[str, Any]] = [{
        "heads": 0.0, "ffn": 0.0, "scheme": "none", "baseline": True, "accuracy": base_acc,
        "accuracy_drop": 0.0, "size_bytes": base_size, "heads_per_layer": n_heads, "ffn_width": n_ffn,
        "within_budget": True}]
    say(f"baseline: accuracy {base_acc:.2f}, {base_size / 1e6:.1f} MB")

    from tqdm.auto import tqdm

    models: list[Any] = [work.teacher]  # models[i] is rows[i]'s model
    made: list[tuple[Any, CompressConfig]] = [(None, cfg)]  # (work, recipe) of each row
    n_cands = sum(1 for h, f in s.schedule for sc in s.schemes if (h or f or sc is not Scheme.NONE))
    bar = tqdm(total=n_cands, desc="compress search", unit="candidate", disable=not work.progress)
    for heads, ffn in s.schedule:
        pw = Work(model=copy.deepcopy(work.teacher), tokenizer=work.tokenizer, teacher=work.teacher,
                  labels=work.labels, cfg=cfg, eval_data=work.eval_data, progress=work.progress,
                  data_cache=work.data_cache)
        pcfg = dataclasses.replace(cfg.prune, heads=heads, ffn=ffn)
        pw = HANDLERS[PruneConfig](pw, pcfg)  # prune once per ratio...
        pw = HANDLERS[type(cfg.recover)](pw, cfg.recover)
        for scheme in s.schemes:  # ...and reuse it for every scheme
            if heads == 0 and ffn == 0 and scheme is Scheme.NONE:
                continue  # that is the baseline row
            qw = dataclasses.replace(pw, details=dict(pw.details), qmodel=None, ranges=None)
            qcfg = dataclasses.replace(cfg.quantize, scheme=scheme)
            qw = HANDLERS[type(qcfg)](qw, qcfg)
            acc = accuracy(qw.final, work.tokenizer, work.eval_data, max_length=ml)
            shapes = pw.model.bert.encoder.layer[0]
            row = {"heads": heads, "ffn": ffn, "scheme": scheme.value, "accuracy": acc,
                   "accuracy_drop": base_acc - acc, "size_bytes": state_size(qw.final),
                   "heads_per_layer": int(shapes.attention.self.num_attention_heads),
                   "ffn_width": int(shapes.intermediate.dense.out_features)}
            row["calibration"] = ((qw.details.get("quantization") or {}).get("calibration") or {}).get("method")
            row["within_budget"] = row["accuracy_drop"] <= s.max_accuracy_drop + 1e-9
            rows.append(row)
            models.append(qw.final)
            made.append((qw, dataclasses.replace(cfg, search=None, prune=pcfg, quantize=qcfg)))
            bar.update(1)
            say(f"heads {heads:.2f} ffn {ffn:.2f} {scheme.value:8s}: accuracy {acc:.2f} "
                f"({row['accuracy_drop']:+.2f}), {row['size_bytes'] / 1e6:.1f} MB")
    bar.close()

    # Timing, interleaved: round r times rows 0..n in order, so every candidate sees the same
    # mix of quiet and busy moments. p50 = median of the rounds' p50s, min = the best call.
    samples: list[list[dict[str, float]]] = [[] for _ in models]
    for _ in tqdm(range(s.latency_rounds), desc="timing candidates", unit="round", disable=not work.progress):
        for i, model in enumerate(models):
            samples[i].append(timed(model))
    for row, runs in zip(rows, samples):
        p50 = statistics.median(r["p50"] for r in runs)
        row.update(latency_p50_ms=p50, latency_min_ms=min(r["min"] for r in runs),
                   latency_p90_ms=statistics.median(r["p90"] for r in runs),
                   latency_rounds_p50_ms=[r["p50"] for r in runs])
        row["latency_ms"] = row["latency_p50_ms"] if s.latency_statistic == "p50" else row["latency_min_ms"]
    base_lat = rows[0]["latency_ms"]
    for row in rows:
        row["speedup"] = base_lat / row["latency_ms"]

    idx, met = select(rows, s.max_accuracy_drop)
    rows[idx]["winner"] = True
    winner_work, winner_cfg = made[idx]
    r = rows[idx]
    from bertpress.config import to_tagged

    facts = {
        "max_accuracy_drop": s.max_accuracy_drop, "met_budget": met,
        "baseline": {"accuracy": base_acc, "latency_ms": base_lat, "size_bytes": base_size},
        "latency": {"batch": 1, "seq_len": s.latency_seq_len, "threads": s.latency_threads,
                    "runtime": "PyTorch eager", "statistic": s.latency_statistic,
                    "rounds": s.latency_rounds, "timing": "interleaved over all candidates after the walk"},
        "eval_data": work.eval_data.source, "eval_samples": len(work.eval_data),
        "table": rows, "winner": {k: r[k] for k in ("heads", "ffn", "scheme")},
        "winner_recipe": to_tagged(winner_cfg),
        "winner_metrics": {"eval_accuracy": r["accuracy"], "eval_accuracy_uncompressed": base_acc,
                           "accuracy_drop": r["accuracy_drop"], "latency_ms": r["latency_ms"],
                           "latency_ms_uncompressed": base_lat, "latency_statistic": s.latency_statistic,
                           "latency_p50_ms": r["latency_p50_ms"], "latency_min_ms": r["latency_min_ms"],
                           "speedup_pytorch_eager": r["speedup"],
                           "met_budget": met, "eval_data": work.eval_data.source,
                           "eval_samples": len(work.eval_data)},
    }
    say(format_table(rows))
    if not met:
        say(f"no candidate was within {s.max_accuracy_drop} points; saved the most accurate one")
    return winner_work, facts
