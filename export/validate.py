"""The parity gate: an exported model must reproduce its torch source.

Like optimum's validate_model_outputs, but stricter: it runs a grid of batch sizes x sequence
lengths that excludes the tracing shape (a trace always matches at its own shape), with padded
rows so the attention mask matters, and checks output names, shapes and max |dlogit| against a
per-precision tolerance. int8 exports are compared with the fp32 source (looser tolerance) and
must also agree on the argmax for the eval texts. A miss is a ParityError unless allowed.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from bertpress.errors import ParityError, first_line
from bertpress.metrics import classification_metrics
from bertpress.signature import EVAL_BATCH, OUTPUT_NAMES, encode, special_ids, synthetic_batch

Runner = Callable[[dict[str, np.ndarray]], np.ndarray]


def grid_shapes(batch_sizes: Sequence[int], seq_lengths: Sequence[int], max_length: int,
                trace_shape: tuple[int, int]) -> list[tuple[int, int]]:
    seqs = sorted({min(s, max_length) for s in seq_lengths} | {max_length})
    return [(b, s) for b in batch_sizes for s in seqs if (b, s) != tuple(trace_shape)]


def check_parity(
    run_export: Runner,
    run_source: Runner,
    cfg,
    *,
    tokenizer,
    vocab_size: int,
    num_labels: int,
    max_length: int,
    atol: float,
    precision: str,
    output_names: Sequence[str] = OUTPUT_NAMES,
    eval_texts: Sequence | None = None,  # texts or (text, text_pair) pairs
    eval_labels: Sequence[int] | None = None,
    eval_reference: list[np.ndarray] | None = None,
    min_agreement: float | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure; return a JSON-able report with `passed` and `failures` (never raises). `cfg` (an
    ExportConfig) gives the grid (batch_sizes x seq_lengths), the trace shape it leaves out and the seed."""
    from tqdm.auto import tqdm

    rng = np.random.default_rng(cfg.seed)
    failures: list[str] = []
    if list(output_names) != list(OUTPUT_NAMES):
        failures.append(f"output names {list(output_names)} != {list(OUTPUT_NAMES)}")
    rows, worst = [], 0.0
    agree_hits = agree_total = 0
    shapes = grid_shapes(cfg.batch_sizes, cfg.seq_lengths, max_length, (cfg.trace_batch, cfg.trace_seq))
    for b, s in tqdm(shapes, desc=f"parity {precision}", leave=False, disable=None if progress else True):
        feed = synthetic_batch(vocab_size, special_ids(tokenizer), b, s, rng)
        want = run_source(feed)
        try:
            got = np.asarray(run_export(feed))
        except Exception as exc:  # a trace that froze a shape fails here
            failures.append(f"batch {b} x seq {s}: the export failed to run ({type(exc).__name__}: "
                            f"{first_line(exc, 120)})")
            rows.append({"batch": b, "seq": s, "ok": False, "error": type(exc).__name__})
            continue
        if got.shape != (b, num_labels):
            failures.append(f"batch {b} x seq {s}: output shape {list(got.shape)} != {[b, num_labels]}")
            rows.append({"batch": b, "seq": s, "ok": False, "shape": list(got.shape)})
            continue
        diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
        worst = max(worst, diff)
        agree_hits += int((got.argmax(-1) == want.argmax(-1)).sum())
        agree_total += b
        rows.append({"batch": b, "seq": s, "ok": diff <= atol, "max_abs_diff": diff})
        if not diff <= atol:  # also catches NaN
            failures.append(f"batch {b} x seq {s}: max |dlogit| {diff:.3g} > {atol:g}")
    report: dict[str, Any] = {
        "precision": precision, "atol": atol, "max_abs_diff": worst,
        "grid": {"batch_sizes": list(cfg.batch_sizes), "seq_lengths": sorted({r["seq"] for r in rows}),
                 "trace_shape": [cfg.trace_batch, cfg.trace_seq], "cases": rows},
        "output_names": list(output_names),
    }
    if eval_texts:
        reference = eval_reference if eval_reference is not None else source_eval_logits(
            run_source, tokenizer, eval_texts, max_length)
        got = np.concatenate([np.asarray(run_export(encode(tokenizer, eval_texts[i:i + EVAL_BATCH], max_length)))
                              for i in range(0, len(eval_texts), EVAL_BATCH)])
        want = np.concatenate(reference)
        report["agreement"] = {"value": float((got.argmax(-1) == want.argmax(-1)).mean()), "n": len(eval_texts),
                               "on": "eval texts"}
        if eval_labels is not None:
            ours = classification_metrics(got.argmax(-1), eval_labels, num_labels)
            theirs = classification_metrics(want.argmax(-1), eval_labels, num_labels)
            report["accuracy"] = {"export": ours["accuracy"], "source": theirs["accuracy"], "n": len(eval_labels)}
            for key in set(ours) - {"accuracy"}:  # F1 (binary) or macro-F1 (> 2 classes), bertpress.metrics
                report[key] = {"export": ours[key], "source": theirs[key], "n": len(eval_labels)}
    elif agree_total:
        report["agreement"] = {"value": agree_hits / agree_total, "n": agree_total, "on": "synthetic grid rows"}
    if min_agreement is not None and "agreement" in report:
        report["agreement"]["min"] = min_agreement
        if report["agreement"]["value"] < min_agreement:
            a = report["agreement"]
            failures.append(f"argmax agreement {a['value']:.4f} on {a['n']} {a['on']} < {min_agreement:g}")
    report["passed"] = not failures
    report["failures"] = failures
    return report


def source_eval_logits(run_source: Runner, tokenizer, texts: Sequence[str], max_length: int) -> list[np.ndarray]:
    """The source's logits on the eval texts, computed once and shared by every file's check."""
    return [run_source(encode(tokenizer, texts[i:i + EVAL_BATCH], max_length)) for i in range(0, len(texts), EVAL_BATCH)]


def enforce(report: dict[str, Any], what: str, allow_mismatch: bool) -> None:
    if report["passed"] or allow_mismatch:
        return
    shown = "; ".join(report["failures"][:3])
    more = f" (+{len(report['failures']) - 3} more)" if len(report["failures"]) > 3 else ""
    raise ParityError(
        f"{what} does not match its source: {shown}{more}; nothing was written — fix the export settings "
        "(e.g. --quantize none, --optimize none) or pass --allow-mismatch to publish it anyway"
    )
