"""Accuracy-aware search: pruning ratios x quantization schemes, fastest within the budget.

Each (heads, ffn[, layers]) ratio is pruned (and recovered) once, then every scheme is applied to that
fp32 model; each candidate is scored on the eval set as it is made. Speed (`objective`: batch-1
latency, or time per sentence on passes over the eval texts in length-sorted batches; PyTorch
eager) is measured once the walk is over, every candidate and the baseline interleaved over
`latency_rounds` rounds, so that load from other jobs during the (long) walk cannot favour the
candidates that happened to be timed in a quiet moment.
The winner is the fastest candidate whose accuracy drop (vs the uncompressed model) is within
`max_accuracy_drop`; if none is, the most accurate one (ties: the faster) — so a model and the
full table are always saved, and `met_budget` says which case happened.

With `runtime="onnxruntime"` every candidate is also exported the way `bertpress export` would
(same ExportConfig defaults, same int8 scheme in ORT) and put through export's parity gate; its
ONNX Runtime accuracy and latency rank it. Eager ranking can crown a model its deployment
runtime cannot reproduce: on the SST-2 MiniLM it picked an unpruned static-int8 model whose ONNX
export the gate refused (docs/results/compress.md). A candidate that fails to export or fails
the gate is kept in the table with its error and is not chosen — unless no candidate exported
at all, in which case the most accurate one in PyTorch is saved with met_budget false (a model
and the table are always saved).
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

from tqdm.auto import tqdm

from bertpress.compress import evaluate  # called as evaluate.X: tests stand in for its timers
from bertpress.compress.config import CompressConfig, PruneConfig, Scheme, schedule_ratios
from bertpress.compress.prune import NothingRemoved
from bertpress.compress.state import HANDLERS, Work
from bertpress.config import to_tagged
from bertpress.errors import BertpressError, ConfigError, first_line
from bertpress.models import layer_shapes
from bertpress.signature import input_names, torch_runner, traffic_batches
from bertpress.timing import interleaved


def select(rows: list[dict[str, Any]], max_drop: float) -> tuple[int, bool]:
    """Index of the winning candidate row and whether it met the budget (baseline rows skipped)."""
    cands = [(i, r) for i, r in enumerate(rows) if not r.get("baseline") and not r.get("error")]
    if not cands:  # no candidate could be exported: still save one (the most accurate in PyTorch)
        cands = [(i, r) for i, r in enumerate(rows) if not r.get("baseline")]
        if not cands:
            raise ValueError("no candidates to select from")
        return max(cands, key=lambda ir: ir[1].get("accuracy_pytorch", ir[1]["accuracy"]))[0], False
    within = [(i, r) for i, r in cands if r["accuracy_drop_points"] <= max_drop + 1e-9]
    if within:
        return min(within, key=lambda ir: (ir[1]["latency_ms"], -ir[1]["accuracy"]))[0], True
    return min(cands, key=lambda ir: (-ir[1]["accuracy"], ir[1]["latency_ms"]))[0], False


def format_table(rows: list[dict[str, Any]], unit: str = "latency ms") -> str:
    """The search table in markdown; `unit` heads the ranking column ("ms/sentence" for traffic)."""
    head = (f"| heads | ffn | layers | scheme | runtime | accuracy | drop | {unit} | p50 / min | speed-up "
            "| size MB | shapes | |")
    lines = [head, "|" + "---|" * 13]

    def num(x, fmt="{:.3f}" if unit == "ms/sentence" else "{:.2f}"):  # a sentence's share is sub-ms
        return "–" if x is None else fmt.format(x)

    for r in rows:
        mark = "baseline" if r.get("baseline") else ("**winner**" if r.get("winner") else
                                                       ("in budget" if r.get("within_budget") else ""))
        if r.get("error"):
            why = "refused by the export gate: " if r["error"].startswith("parity gate") else "not exportable: "
            mark = why + r["error"][:120].replace("|", "/")
        lines.append(f"| {r['heads']:.2f} | {r['ffn']:.2f} | {r.get('layers', 0.0):.2f} | {r['scheme']} | "
                     f"{r.get('runtime', 'pytorch')} | "
                     f"{100 * r['accuracy']:.2f} | {r['accuracy_drop_points']:+.2f} | {num(r['latency_ms'])} | "
                     f"{num(r['latency_p50_ms'])} / {num(r['latency_min_ms'])} | {num(r['speedup'], '{:.2f}x')} | "
                     f"{r['size_bytes'] / 1e6:.1f} | {r.get('num_layers', '?')}x {r['heads_per_layer']}h/{r['ffn_width']} "
                     f"| {mark} |")
    return "\n".join(lines)


# Deploy runtimes: name -> factory of a candidate's deploy-runtime twin, passed to run_search
# (PyTorch eager needs none). A factory is called as factory(model, tokenizer, scheme=, quant_facts=,
# labels=, max_length=, out=, eval_data=, shared=, calib_cache=) and returns an object with
# `.accuracy` (fraction), `.size_bytes`, `.report` (export's parity report: "passed", "failures"),
# `.timer(tokenizer, seq_len=, threads=, min_seconds=)` (the latency objective) and
# `.traffic_timer(tokenizer, chunks, max_length=, threads=, min_seconds=)` (the traffic objective).
# They need the export stage, so the composition root passes them in
# (bertpress.app.search_runtimes.DEPLOY_RUNTIMES; the CLI and recipes do).


def deploy_twin(runtime: str, runtimes: Mapping[str, Callable[..., Any]] | None):
    """The twin factory of `runtime`, or None for PyTorch eager; a deploy runtime not passed in is
    refused in one line naming the fix."""
    if runtime == "pytorch":
        return None
    if not runtimes or runtime not in runtimes:
        raise ConfigError(f"search runtime {runtime!r} exports every candidate, which needs the export stage: "
                          "call compress(..., runtimes=bertpress.app.search_runtimes.DEPLOY_RUNTIMES) "
                          "(the CLI and recipes do)")
    return runtimes[runtime]


def run_search(work, cfg: CompressConfig, say: Callable[[str], None], max_length: int,
               runtimes: Mapping[str, Callable[..., Any]] | None = None):

    s = cfg.search
    ml = max_length  # the artifact's own max length, as in the non-search path
    twin_factory = deploy_twin(s.walk_runtime, runtimes)

    if s.objective == "traffic":  # the eval texts, length-sorted batches: cut once, timed per candidate
        chunks = traffic_batches(work.tokenizer, work.eval_data.examples, ml, s.traffic_batch)[2]

        def eager(model) -> Callable[[], Any]:
            return evaluate.traffic_timer(torch_runner(model), work.tokenizer, chunks, max_length=ml,
                                          names=input_names(model), threads=s.latency_threads,
                                          min_seconds=s.latency_min_seconds)

        def deployed(twin) -> Callable[[], Any]:
            return twin.traffic_timer(work.tokenizer, chunks, max_length=ml, threads=s.latency_threads,
                                      min_seconds=s.latency_min_seconds)
    else:
        def eager(model) -> Callable[[], Any]:
            return lambda: evaluate.latency(model, work.tokenizer, seq_len=s.latency_seq_len,
                                            threads=s.latency_threads, min_seconds=s.latency_min_seconds)

        def deployed(twin) -> Callable[[], Any]:
            return twin.timer(work.tokenizer, seq_len=s.latency_seq_len, threads=s.latency_threads,
                              min_seconds=s.latency_min_seconds)

    base_acc = evaluate.accuracy(work.teacher, work.tokenizer, work.eval_data, max_length=ml)
    base_size = evaluate.state_size(work.teacher)

    first = layer_shapes(work.teacher)[0]
    n_heads, n_ffn = first["heads"], first["ffn"]
    rows: list[dict[str, Any]] = [{
        "heads": 0.0, "ffn": 0.0, "layers": 0.0, "scheme": "none", "runtime": "pytorch", "baseline": True,
        "accuracy": base_acc, "accuracy_drop_points": 0.0, "size_bytes": base_size, "heads_per_layer": n_heads,
        "ffn_width": n_ffn, "num_layers": len(layer_shapes(work.teacher)),
        "within_budget": True}]
    say(f"baseline: accuracy {100 * base_acc:.2f} %, {base_size / 1e6:.1f} MB")
    timers: list[Any] = [eager(work.teacher)]  # timers[i]() times rows[i]'s model; None = not timed
    made: list[tuple[Any, CompressConfig]] = [(None, cfg)]  # (work, recipe) of each row
    twin_root = Path(tempfile.mkdtemp(prefix="bertpress-search-")) if twin_factory else None
    try:
        _walk(work, cfg, ml, base_acc, rows, timers, made, say, twin_factory, twin_root, eager, deployed)
        return _rank(work, cfg, rows, timers, made, base_acc, base_size, say)
    finally:
        if twin_root is not None:
            shutil.rmtree(twin_root, ignore_errors=True)


def _walk(work, cfg: CompressConfig, ml: int, base_acc: float, rows: list, timers: list, made: list,
          say: Callable[[str], None], twin_factory, twin_root: Path | None, eager, deployed) -> None:
    """Make, score (and, for a deploy runtime, export and gate) every candidate; appends to rows,
    timers and made. `eager(model)` / `deployed(twin)` build a candidate's timer for the objective."""
    s = cfg.search
    deploy = twin_factory is not None
    calib_cache: dict = {}  # static calibration texts, read once
    # In a deploy runtime the unpruned fp32 export is a candidate too (the baseline is PyTorch eager).
    n_cands = sum(1 for r in s.walk_schedule for sc in s.scheme_list
                  if (deploy or any(schedule_ratios(r)) or sc is not Scheme.NONE))
    bar = tqdm(total=n_cands, desc="compress search", unit="candidate", disable=not work.progress)
    try:
        for heads, ffn, layers in map(schedule_ratios, s.walk_schedule):
            pw = Work(model=copy.deepcopy(work.teacher), tokenizer=work.tokenizer, teacher=work.teacher,
                      labels=work.labels, cfg=cfg, eval_data=work.eval_data, progress=work.progress,
                      data_cache=work.data_cache, columns=work.columns)
            pcfg = dataclasses.replace(cfg.prune, heads=heads, ffn=ffn, layers=layers)
            try:
                pw = HANDLERS[PruneConfig](pw, pcfg)  # prune once per ratio...
            except NothingRemoved as exc:  # a ratio that rounds to removing nothing: not a candidate
                say(f"skipped heads {heads:.2f} ffn {ffn:.2f} layers {layers:.2f}: {exc}")
                bar.update(len(s.scheme_list))
                continue
            pw = HANDLERS[type(cfg.recover)](pw, cfg.recover)
            shared: dict = {}  # what this ratio's twins share (the fp32 reference logits)
            for scheme in s.scheme_list:  # ...and reuse it for every scheme
                if heads == 0 and ffn == 0 and layers == 0 and scheme is Scheme.NONE and not deploy:
                    continue  # that is the baseline row
                qw = dataclasses.replace(pw, details=dict(pw.details), qmodel=None, ranges=None)
                qcfg = dataclasses.replace(cfg.quantize, scheme=scheme)
                qw = HANDLERS[type(qcfg)](qw, qcfg)
                acc = evaluate.accuracy(qw.final, work.tokenizer, work.eval_data, max_length=ml)
                shapes = layer_shapes(pw.model)[0]
                row = {"heads": heads, "ffn": ffn, "layers": layers, "scheme": scheme.value, "runtime": s.walk_runtime,
                       "accuracy": acc, "accuracy_drop_points": 100 * (base_acc - acc),
                       "size_bytes": evaluate.state_size(qw.final),
                       "heads_per_layer": shapes["heads"], "ffn_width": shapes["ffn"],
                       "num_layers": len(layer_shapes(pw.model))}
                quant_facts = qw.details["quantization"]  # the candidate's QuantizationRecord
                row["calibration"] = quant_facts.calibration.method if quant_facts.calibration else None
                timer = None if deploy else eager(qw.final)
                if deploy:
                    row["accuracy_pytorch"] = acc
                    try:
                        twin = twin_factory(pw.model, work.tokenizer, scheme=scheme.value, quant_facts=quant_facts,
                                            labels=work.labels, max_length=ml, out=twin_root / f"c{len(rows)}",
                                            eval_data=work.eval_data, shared=shared, calib_cache=calib_cache)
                    except BertpressError as exc:
                        row["error"], timer = f"export failed: {exc}", None
                    except Exception as exc:  # exporter / optimizer / ORT internals: list it, go on
                        first = first_line(exc)
                        row["error"], timer = f"export failed: {type(exc).__name__}: {first}", None
                    else:
                        row.update(accuracy=twin.accuracy, accuracy_drop_points=100 * (base_acc - twin.accuracy),
                                   size_bytes=twin.size_bytes)
                        if not twin.report["passed"]:
                            row["error"], timer = "parity gate: " + "; ".join(twin.report["failures"][:2]), None
                        else:
                            timer = deployed(twin)
                row["within_budget"] = not row.get("error") and row["accuracy_drop_points"] <= s.max_accuracy_drop + 1e-9
                rows.append(row)
                timers.append(timer)
                made.append((qw, dataclasses.replace(cfg, search=None, prune=pcfg, quantize=qcfg)))
                bar.update(1)
                ratio = f"heads {heads:.2f} ffn {ffn:.2f}" + (f" layers {layers:.2f}" if layers else "")
                say(f"{ratio} {scheme.value:8s} {s.walk_runtime}: accuracy {100 * row['accuracy']:.2f} % "
                    f"({-row['accuracy_drop_points']:+.2f} points), {row['size_bytes'] / 1e6:.1f} MB"
                    + (f" — {row['error']}" if row.get("error") else ""))
    finally:
        bar.close()


def _rank(work, cfg: CompressConfig, rows: list, timers: list, made: list, base_acc: float, base_size: int,
          say: Callable[[str], None]):
    s = cfg.search
    # Timing, interleaved: round r times rows 0..n in order, so every candidate sees the same
    # mix of quiet and busy moments. p50 = median of the rounds' p50s, min = the best call.
    # For the traffic objective a timed call is a pass over the eval texts: its figures are
    # divided by the sentences per pass (items_per_call; 1 for the latency objective), so
    # latency_ms ranks by ms per sentence and the speed-up is a throughput ratio.
    samples = interleaved(timers, s.latency_rounds, progress=work.progress, desc="timing candidates")
    traffic = s.objective == "traffic"
    for row, runs in zip(rows, samples):
        if not runs:
            row.update(latency_p50_ms=None, latency_min_ms=None, latency_p90_ms=None, latency_rounds_p50_ms=[],
                       latency_ms=None, speedup=None)
            continue
        row.update(latency_p50_ms=statistics.median(r.p50_ms / r.items_per_call for r in runs),
                   latency_min_ms=min(r.min_ms / r.items_per_call for r in runs),
                   latency_p90_ms=statistics.median(r.p90_ms / r.items_per_call for r in runs),
                   latency_rounds_p50_ms=[r.p50_ms / r.items_per_call for r in runs])
        row["latency_ms"] = row["latency_p50_ms"] if s.latency_statistic == "p50" else row["latency_min_ms"]
        if traffic:
            row["sentences_per_s"] = 1000.0 / row["latency_ms"]
    base_lat = rows[0]["latency_ms"]
    for row in rows:
        if row["latency_ms"] is not None:
            row["speedup"] = base_lat / row["latency_ms"]

    idx, met = select(rows, s.max_accuracy_drop)
    rows[idx]["winner"] = True
    winner_work, winner_cfg = made[idx]
    r = rows[idx]
    runtime = {"onnxruntime": "ONNX Runtime (the candidate as `bertpress export` writes it)",
               "openvino": "OpenVINO (the candidate as `bertpress export --format openvino` writes it)"
               }.get(s.walk_runtime, "PyTorch eager")
    facts = {
        "max_accuracy_drop": s.max_accuracy_drop, "met_budget": met,
        "baseline": {"accuracy": base_acc, "latency_ms": base_lat, "size_bytes": base_size,
                     "runtime": "PyTorch eager (fp32)"},
        "latency": {"objective": s.objective, **({
                        "batch": s.traffic_batch, "sentences": len(work.eval_data),
                        "scenario": "the eval texts in length-sorted batches, dynamic padding, tokenization "
                                    "included, one batch at a time", "unit": "ms per sentence"}
                        if traffic else {"batch": 1, "seq_len": s.latency_seq_len, "unit": "ms per call"}),
                    "threads": s.latency_threads, "runtime": runtime, "statistic": s.latency_statistic,
                    "rounds": s.latency_rounds, "timing": "interleaved over all candidates after the walk"},
        "eval_data": work.eval_data.source, "eval_samples": len(work.eval_data),
        "table": rows, "winner": {k: r[k] for k in ("heads", "ffn", "layers", "scheme", "runtime")},
        "winner_recipe": to_tagged(winner_cfg),
        "winner_metrics": {"eval_accuracy": r["accuracy"], "eval_accuracy_uncompressed": base_acc,
                           "accuracy_drop_points": r["accuracy_drop_points"], "latency_ms": r["latency_ms"],
                           "latency_ms_uncompressed": base_lat, "latency_statistic": s.latency_statistic,
                           "latency_p50_ms": r["latency_p50_ms"], "latency_min_ms": r["latency_min_ms"],
                           "runtime": s.walk_runtime, "speedup_vs_fp32_pytorch_eager": r["speedup"],
                           "met_budget": met, "eval_data": work.eval_data.source,
                           "eval_samples": len(work.eval_data), "objective": s.objective,
                           "latency_unit": "ms per sentence" if traffic else "ms per call"},
    }
    if traffic:
        facts["winner_metrics"].update(sentences_per_s=r.get("sentences_per_s"),
                                       sentences_per_s_uncompressed=rows[0].get("sentences_per_s"))
    if s.walk_runtime == "pytorch":
        facts["winner_metrics"]["speedup_pytorch_eager"] = r["speedup"]
    else:
        facts["winner_metrics"]["accuracy_pytorch"] = r.get("accuracy_pytorch")
        facts["export_hint"] = ("the ranked model is the ONNX export of this artifact: run `bertpress export` "
                                "on it (default settings) to write it")
    say(format_table(rows, unit="ms/sentence" if traffic else "latency ms"))
    if not met:
        say(f"no candidate was within {s.max_accuracy_drop} points; saved the most accurate one")
    return winner_work, facts
