"""Accuracy-aware search: pruning ratios x quantization schemes, fastest within the budget.

Each (heads, ffn) ratio is pruned (and recovered) once, then every scheme is applied to that
fp32 model; each candidate is scored on the eval set and timed at batch 1 in PyTorch eager.
The winner is the fastest candidate whose accuracy drop (vs the uncompressed model) is within
`max_accuracy_drop`; if none is, the most accurate one (ties: the faster) — so a model and the
full table are always saved, and `met_budget` says which case happened.
"""

from __future__ import annotations

import copy
import dataclasses
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

    def measure(model) -> tuple[float, dict[str, float], int]:
        acc = accuracy(model, work.tokenizer, work.eval_data, max_length=ml)
        st = latency(model, work.tokenizer, seq_len=s.latency_seq_len, threads=s.latency_threads,
                     min_seconds=s.latency_min_seconds)
        lat = {"latency_ms": st.p50_ms if s.latency_statistic == "p50" else st.min_ms,
               "latency_p50_ms": st.p50_ms, "latency_min_ms": st.min_ms, "latency_p90_ms": st.p90_ms}
        return acc, lat, state_size(model)

    base_acc, base_l, base_size = measure(work.teacher)
    base_lat = base_l["latency_ms"]
    n_heads = int(work.teacher.bert.encoder.layer[0].attention.self.num_attention_heads)
    n_ffn = int(work.teacher.bert.encoder.layer[0].intermediate.dense.out_features)
    rows: list[dict[str, Any]] = [{
        "heads": 0.0, "ffn": 0.0, "scheme": "none", "baseline": True, "accuracy": base_acc,
        "accuracy_drop": 0.0, **base_l, "speedup": 1.0, "size_bytes": base_size,
        "heads_per_layer": n_heads, "ffn_width": n_ffn, "within_budget": True}]
    say(f"baseline: accuracy {base_acc:.2f}, {base_lat:.2f} ms, {base_size / 1e6:.1f} MB")

    from tqdm.auto import tqdm

    best: dict[str, Any] = {}  # the running winner (see select) and its recipe
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
            acc, lat_d, size = measure(qw.final)
            lat = lat_d["latency_ms"]
            shapes = pw.model.bert.encoder.layer[0]
            row = {"heads": heads, "ffn": ffn, "scheme": scheme.value, "accuracy": acc,
                   "accuracy_drop": base_acc - acc, **lat_d, "speedup": base_lat / lat,
                   "size_bytes": size, "heads_per_layer": int(shapes.attention.self.num_attention_heads),
                   "ffn_width": int(shapes.intermediate.dense.out_features)}
            row["calibration"] = ((qw.details.get("quantization") or {}).get("calibration") or {}).get("method")
            row["within_budget"] = row["accuracy_drop"] <= s.max_accuracy_drop + 1e-9
            rows.append(row)
            bar.update(1)
            say(f"heads {heads:.2f} ffn {ffn:.2f} {scheme.value:8s}: accuracy {acc:.2f} "
                f"({row['accuracy_drop']:+.2f}), {lat:.2f} ms ({row['speedup']:.2f}x), {size / 1e6:.1f} MB")
            idx, _ = select(rows, s.max_accuracy_drop)
            if idx == len(rows) - 1:
                best["winner"] = (qw, dataclasses.replace(cfg, search=None, prune=pcfg, quantize=qcfg))

    bar.close()
    idx, met = select(rows, s.max_accuracy_drop)
    rows[idx]["winner"] = True
    winner_work, winner_cfg = best["winner"]
    r = rows[idx]
    from bertpress.config import to_tagged

    facts = {
        "max_accuracy_drop": s.max_accuracy_drop, "met_budget": met,
        "baseline": {"accuracy": base_acc, "latency_ms": base_lat, "size_bytes": base_size},
        "latency": {"batch": 1, "seq_len": s.latency_seq_len, "threads": s.latency_threads,
                    "runtime": "PyTorch eager", "statistic": s.latency_statistic},
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
