"""The human side of a bench run: `report.md` and `plots/*.png` (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bertpress.bench.results import BenchResults, VariantResult
from bertpress.timing import median_of

PLOTS = ("latency_vs_accuracy.png", "latency_by_batch.png", "latency_by_seq.png")


def _f(x: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if x is None else fmt.format(x)


def _x(r: float | None) -> str:
    return "" if r is None else f" ({r:.2f}×)"


def _mb(n: int | None) -> str:
    return "–" if n is None else f"{n / 1e6:.1f}"


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both latency (lower) and accuracy (higher)."""
    front = []
    for i, (li, ai) in enumerate(points):
        dominated = any(
            (lj <= li and aj >= ai) and (lj < li or aj > ai)
            for j, (lj, aj) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _env_lines(env: dict[str, Any], threads: int) -> list[str]:
    cpu, isa = env["cpu"], env["cpu"]["isa"]
    flags = [k for k in ("avx2", "avx512", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx") if isa.get(k)]
    gpus = ", ".join(d["name"] for d in env["cuda"]["devices"]) or "none"
    v = env["versions"]
    return [
        f"- CPU: {cpu['model']} ({cpu['arch']}, {cpu['usable_cores']} usable of {cpu['logical_cores']} logical cores); "
        f"ISA: {', '.join(flags) or 'none of AVX2/AVX-512/VNNI/AMX'}",
        f"- Threads: intra-op {threads}, inter-op 1 (torch and ONNX Runtime; OpenVINO INFERENCE_NUM_THREADS)",
        f"- GPU: {gpus}",
        "- Thread environment: " + (", ".join(f"{k}={v}" for k, v in env.get("thread_env", {}).items()) or "none set"),
        f"- Load average (1 min) at start / end of the measurements: "
        f"{env.get('load_average', {}).get('start')} / {env.get('load_average', {}).get('end')} "
        f"(above the thread count means other processes competed for the cores: treat small differences as noise)",
        "- Versions: " + ", ".join(f"{k} {v[k]}" for k in ("torch", "transformers", "onnxruntime", "openvino")
                                 if k in v) + f"; python {env['python']}"
        + " (the Optimum anchors ran their own versions: see their notes)",
    ]


def _size_cell(v: VariantResult) -> str:
    s = _mb(v.size_bytes) + _x(v.ratios.get("size"))
    return s + (" *" if v.size_source == "state_dict" else "")


def render_markdown(res: BenchResults) -> str:
    b, s = res.headline["batch_size"], res.headline["seq_len"]
    cfg = res.config["_data"]
    ref = next((v for v in res.variants if v.id == res.reference), None)
    lines = ["# bertpress bench report", ""]
    lines.append(f"Created {res.created}. Reference (ratios): "
                 + (f"`{ref.id}` (PyTorch fp32 eager on CPU)." if ref else "none (no fp32 checkpoint found; no ratios)."))
    if res.eval_data:
        e = res.eval_data
        lines.append(f"Eval data: `{e['source']}` split `{e['split']}`, {e['rows']} labeled rows"
                     + (f" ({e['skipped']} bad rows skipped)" if e["skipped"] else "") + f", labels {e['labels']}.")
    else:
        lines.append("Eval data: none given (no accuracy, no real-traffic scenario; pass --eval-data).")
    load = (res.environment.get("load_average") or {}).get("start")
    cores = res.environment["cpu"].get("usable_cores") or 0
    if load is not None and cores and load > cores:
        lines.append(f"**Busy machine:** the load average was {load} on {cores} usable cores when the "
                     "measurements started; other processes competed for the CPU, so treat small differences as noise.")
    rounds = cfg.get("rounds", 1)
    timed = [v for v in res.variants if v.rounds and v.rounds.get("p50_ms")]
    served = [v for v in res.variants if v.rounds and v.rounds.get("sentences_per_s")]
    # F1 of the positive class (binary) or macro-F1 (> 2 classes), where measured (bertpress.metrics)
    f1_key = next((k for k in ("f1", "macro_f1") if any(getattr(v, k) is not None for v in res.variants)), None)
    f1_head = {"f1": "F1 %", "macro_f1": "macro-F1 %", None: ""}[f1_key]
    lines += ["", "## Summary", "",
              f"Latency at batch {b} × {s} tokens (ms per call; speed-up vs the reference in brackets"
              + (f"; p50 = median of {rounds} interleaved rounds, listed below; p90 from the sweep" if timed else "")
              + "), "
              f"real-traffic throughput (sentences/s, ratio"
              + (f"; sentences/s = median of {rounds} interleaved rounds, ratios of medians" if served else "")
              + "), accuracy (Δ points)"
              + (f", {f1_head[:-2]} (Δ points)" if f1_key else "") + ", agreement with the "
              f"fp32 reference's predictions, size on disk (MB, ratio).", "",
              f"| variant | runtime | device | precision | p50 ms | p90 ms{' (sweep)' if timed else ''} | sentences/s | "
              f"accuracy % | {f1_head + ' | ' if f1_key else ''}agreement % | size MB | peak RSS MB |",
              "|---|---|---|---|---|---|---|---|" + ("---|" if f1_key else "") + "---|---|---|"]
    for v in res.variants:
        lat = v.shape(b, s)
        r = v.ratios
        acc = "–" if v.accuracy is None else f"{v.accuracy * 100:.2f}" + (
            f" ({r['accuracy_delta_points']:+.2f})" if r.get("accuracy_delta_points") is not None else "")
        f1 = ""
        if f1_key:
            val, delta = getattr(v, f1_key), r.get(f"{f1_key}_delta_points")
            f1 = ("–" if val is None else f"{val * 100:.2f}" + (f" ({delta:+.2f})" if delta is not None else "")) + " | "
        lines.append(
            f"| `{v.id}`{' (ref)' if v.id == res.reference else ''} | {v.runtime} | {v.device} | {v.precision} | "
            f"{_f(v.p50(b, s))}{_x(r.get('p50_speedup'))} | "
            f"{_f(lat.p90_ms if lat else None)}{_x(r.get('p90_speedup'))} | "
            f"{_f(v.sentences_per_s(), '{:.1f}')}{_x(r.get('throughput'))} | "
            f"{acc} | {f1}{_f(None if v.agreement is None else v.agreement * 100)} | "
            f"{_size_cell(v)} | {_f(v.memory.get('peak_rss_mb'), '{:.0f}')} |")
    if any(v.size_source == "state_dict" for v in res.variants):
        lines.append("")
        lines.append("\\* size of the weights serialized as they are in memory (quantized on load or on the fly); "
                     "the files on disk hold fp32 weights.")
    if timed:
        lines += ["", f"## Interleaved rounds (batch {b} × {s}, p50 ms per round)", "",
                  f"After the sweep, every variant was timed once per round, round after round, all loaded "
                  f"together: speed drift of the machine during the run falls on every variant alike. The "
                  f"summary's p50 and speed-ups are the medians; the sweep's own p50 is shown for comparison, "
                  f"and the speed-up of each round (reference round p50 / variant round p50) shows the spread.", "",
                  "| variant | " + " | ".join(f"round {i + 1}" for i in range(len(timed[0].rounds["p50_ms"])))
                  + " | median | sweep p50 | speed-up per round (min – max) |",
                  "|---|" + "---|" * (len(timed[0].rounds["p50_ms"]) + 3)]
        ref_rounds = (ref.rounds or {}).get("p50_ms") if ref is not None else None
        for v in timed:
            lat = v.shape(b, s)
            per_round = _per_round(ref_rounds or [], v.rounds["p50_ms"])
            spread = f"{min(per_round):.2f}× – {max(per_round):.2f}×" if per_round else "–"
            lines.append(f"| `{v.id}` | " + " | ".join(_f(x) for x in v.rounds["p50_ms"])
                         + f" | {_f(v.p50(b, s))} | {_f(lat.p50_ms if lat else None)} | {spread} |")
    if served:
        lines += _traffic_rounds(res, served)
    if res.refused:
        lines += ["", "## Refused", ""]
        for r in res.refused:
            lines.append(f"- `{r.name}` {r.runtime} on {r.device}: {r.reason}")
    # Full sweep: p50 for every shape.
    shapes = sorted({(x.batch_size, x.seq_len) for v in res.variants for x in v.fixed})
    if shapes:
        lines += ["", "## Fixed-shape sweep (p50 ms per call; synthetic token ids, full attention)", "",
                  "| variant | " + " | ".join(f"{bb}×{ss}" for bb, ss in shapes) + " |",
                  "|---|" + "---|" * len(shapes)]
        for v in res.variants:
            cells = [_f(v.shape(bb, ss).p50_ms) if v.shape(bb, ss) else "–" for bb, ss in shapes]
            lines.append(f"| `{v.id}` | " + " | ".join(cells) + " |")
        lines += ["", "Throughput at the largest batch (sequences/s): " + "; ".join(
            f"`{v.id}` {_f(_largest_batch(v, s), '{:.1f}')}" for v in res.variants) + "."]
    if any(v.traffic for v in res.variants):
        mode = cfg.get("traffic_mode", "latency")
        lines += ["", "## Real traffic (eval sentences, length-sorted batches, dynamic padding, end to end; "
                  f"{mode} mode)", "",
                  "| variant | batch | sentences | seconds | sentences/s | first pass sentences/s (cold shapes) | "
                  "batch p50 ms | batch p90 ms | mean padded length |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for v in res.variants:
            t = v.traffic
            if t:
                lines.append(f"| `{v.id}` | {t.batch_size} | {t.sentences * t.passes} | {t.seconds:.2f} | "
                             f"{t.sentences_per_s:.1f} | {_f(t.cold_sentences_per_s, '{:.1f}')} | "
                             f"{t.batch_latency.p50_ms:.2f} | {t.batch_latency.p90_ms:.2f} | "
                             f"{t.mean_padded_len:.1f} |")
    notes = [(v.id, n) for v in res.variants for n in v.notes]
    if notes:
        lines += ["", "## Notes", ""] + [f"- `{i}`: {n}" for i, n in notes]
    lines += ["", "## Plots", ""] + [f"![{p[:-4]}](plots/{p})" for p in PLOTS]
    lines += ["", "## Method", "",
              f"- Fixed shapes: batch sizes {cfg['batch_sizes']} × sequence lengths {cfg['seq_lens']}; "
              f"{cfg['warmup']} warm-up calls, then at least {cfg['min_iters']} calls and {cfg['min_seconds']} s; "
              "`time.perf_counter` on CPU, CUDA events + synchronize for PyTorch on GPU (ONNX Runtime's "
              "`run_with_iobinding` returns after its stream is synchronized). Inputs are prepared on the "
              "device before timing; the hf-pipeline baseline takes texts, so its calls include tokenization.",
              "- Real traffic: the eval set's own sentences sorted by token length, batches of "
              f"{cfg['traffic_batch_size']}, padded to the longest in each batch; tokenize + run + argmax timed; "
              "its predictions give the accuracy and the agreement with the reference. The first pass over the "
              "set is the warm-up (every batch shape new: kernels, memory plans and arenas are per shape), "
              "timed on its own as the cold figure; sentences/s is the "
              f"{cfg.get('traffic_passes', 1)} pass(es) after it, the steady state of a server. "
              + ("Served in throughput mode: runtimes with one (OpenVINO: PERFORMANCE_HINT=THROUGHPUT; ONNX Runtime "
                 "on the CPU: concurrent run calls of one intra-op thread each) keep several "
                 "batches in flight and tokenize the next while earlier ones run, the batch latency running from "
                 "the start of its tokenization to its result; the others, the pipeline included, serve one batch "
                 "at a time (see the notes)." if cfg.get("traffic_mode") == "throughput"
                 else "Served one batch at a time (latency mode)."),
              "- Peak RSS: the process's peak resident memory while the variant was loaded and measured "
              "(reset per variant through /proc/self/clear_refs).",
              *([f"- Interleaved rounds: the headline shape re-timed {rounds} times per variant after the sweep, "
                 "in the order v1, v2, … v1, v2, … with the same warm-up and minimum calls/seconds; the median "
                 "of the round p50s is the summary's p50."
                 + (" Each round also serves one steady real-traffic pass per variant (after the headline calls, "
                    "warmed up as in the sweep); the median of those passes is the summary's sentences/s."
                    if served else "")] if rounds > 1 else []),
              "", "## Environment", ""] + _env_lines(res.environment, res.threads)
    return "\n".join(lines) + "\n"


def _per_round(num: list[float], den: list[float]) -> list[float]:
    """num[i] / den[i] for every round, where both were timed in the same rounds; else []."""
    return [x / y for x, y in zip(num, den) if y] if num and len(num) == len(den) else []


def _traffic_rounds(res: BenchResults, served: list[VariantResult]) -> list[str]:
    """The interleaved real-traffic passes: sentences/s per round, the median, the sweep's steady
    figure, and the per-round ratio against the reference and against the `transformers`
    pipeline (the baseline a user would otherwise run), each as the median (min – max)."""
    n = len(served[0].rounds["sentences_per_s"])
    ref = next((v for v in res.variants if v.id == res.reference), None)
    pipe = next((v for v in served if v.runtime == "hf-pipeline"), None)

    def per_round(v: VariantResult, base: VariantResult | None) -> str:
        r = _per_round(v.rounds["sentences_per_s"], ((base.rounds or {}) if base else {}).get("sentences_per_s") or [])
        return f"{median_of(r):.2f}× ({min(r):.2f} – {max(r):.2f})" if r else "–"

    head = ["| variant | " + " | ".join(f"round {i + 1}" for i in range(n))
            + " | median | steady passes (sweep) | vs reference per round | vs pipeline per round |",
            "|---|" + "---|" * (n + 4)]
    rows = [f"| `{v.id}` | " + " | ".join(f"{x:.1f}" for x in v.rounds["sentences_per_s"])
            + f" | {_f(v.sentences_per_s(), '{:.1f}')} | {_f(v.traffic.sentences_per_s if v.traffic else None, '{:.1f}')}"
            f" | {per_round(v, ref)} | {per_round(v, pipe)} |" for v in served]
    return ["", "## Interleaved rounds (real traffic, sentences/s per round)", "",
            "Every round served one steady pass of the real traffic per variant, all loaded together, after "
            "the headline calls: drift of the machine falls on every variant alike. The summary's sentences/s "
            "is the median and its ratio the ratio of medians; the per-round ratios (median, min – max) show "
            "the spread.",
            "", *head, *rows]


def _largest_batch(v: VariantResult, seq: int) -> float | None:
    rows = [x for x in v.fixed if x.seq_len == seq]
    if not rows:
        return None
    best = max(rows, key=lambda x: x.batch_size)
    return best.latency.throughput


def _short(vid: str) -> str:
    return vid if len(vid) <= 42 else vid[:39] + "..."


def render_plots(res: BenchResults, plots_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    plots_dir.mkdir(parents=True, exist_ok=True)
    b, s = res.headline["batch_size"], res.headline["seq_len"]
    written = []

    # 1. latency vs accuracy, Pareto front marked. Points get a legend entry each (labels next
    # to points collide when variants share an accuracy); log latency because variants span decades.
    fig, ax = plt.subplots(figsize=(9, 5.5))
    pts = [(v, v.p50(b, s), v.accuracy * 100) for v in res.variants
           if v.p50(b, s) is not None and v.accuracy is not None]
    if pts:
        xy = [(x, y) for _, x, y in pts]
        front = pareto_front(xy)
        markers = "osD^vP*Xh<>p"
        for i, (v, x, y) in enumerate(pts):
            ax.scatter([x], [y], s=60, marker=markers[i % len(markers)], color=plt.cm.tab20(i % 20), zorder=3,
                       label=_short(v.id))
            if i in front:
                ax.scatter([x], [y], s=220, facecolors="none", edgecolors="tab:red", linewidths=1.5, zorder=4)
        fx, fy = [xy[i][0] for i in front], [xy[i][1] for i in front]
        ax.step(fx, fy, where="post", color="tab:red", alpha=0.6, zorder=2,
                label="Pareto front (circled: nothing is both faster and more accurate)")
        ax.set_xscale("log")
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7)
    else:
        ax.text(0.5, 0.5, "no accuracy measured (no --eval-data)", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(f"p50 latency, batch {b} × {s} tokens (ms, log scale)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Latency vs accuracy")
    ax.grid(alpha=0.3, which="both")
    written.append(_save(fig, plots_dir / PLOTS[0]))

    # 2. latency by batch size (at the headline sequence length), 3. by sequence length (headline batch)
    for fname, fixed_key, fixed_val, var_key, xlabel in (
        (PLOTS[1], "seq_len", s, "batch_size", "batch size"),
        (PLOTS[2], "batch_size", b, "seq_len", "sequence length (tokens)"),
    ):
        fig, ax = plt.subplots(figsize=(9, 5.5))
        drew = False
        for v in res.variants:
            rows = sorted((getattr(r, var_key), r.latency.p50_ms) for r in v.fixed if getattr(r, fixed_key) == fixed_val)
            if rows:
                i = res.variants.index(v)
                ax.plot([r[0] for r in rows], [r[1] for r in rows], marker="osD^vP*Xh<>p"[i % 12],
                        color=plt.cm.tab20(i % 20), label=_short(v.id))
                drew = True
        if drew:
            ax.set_yscale("log")
            ax.set_xscale("log", base=2)
            ticks = sorted({getattr(r, var_key) for v in res.variants for r in v.fixed})
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.minorticks_off()
            ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("p50 latency per call (ms, log scale)")
        other = "sequence length" if fixed_key == "seq_len" else "batch size"
        ax.set_title(f"Latency by {xlabel.split(' (')[0]} ({other} {fixed_val})")
        ax.grid(alpha=0.3, which="both")
        written.append(_save(fig, plots_dir / fname))
    return written


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(res: BenchResults, out: Path) -> None:
    (out / "report.md").write_text(render_markdown(res), encoding="utf-8")
    render_plots(res, out / "plots")
