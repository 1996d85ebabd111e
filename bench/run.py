"""`bench(artifacts, BenchConfig, out_dir) -> BenchReport`: plan the variants, measure each one
(fixed-shape sweep, real traffic, accuracy, memory, size), then write the report artifact.

Variants run one after another in this process with the same thread settings; each is loaded,
measured and released before the next so peak memory is attributable (bench/memory.py).
"""

from __future__ import annotations

import dataclasses
import gc
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bertpress.artifact import (Manifest, holds_output_locks, lineage_of, now_iso, resolve_out, staged_output,
                                write_json_atomic, write_manifest)
from bertpress.bench.baselines import PipelineRunner, build_anchor, load_anchor, preflight_anchor
from bertpress.bench.report import write_report
from bertpress.bench.runtimes import load_runner, preflight, runtimes_for
from bertpress.config import input_paths, to_tagged
from bertpress.data import load_text_classification
from bertpress.errors import (ArtifactError, BertpressError, ConfigError, DeviceError, DiskFullError, InputError,
                              Terminated, first_line)
from bertpress.bench.config import ANCHOR_BASELINES, Baseline, BenchConfig, Runtime
from bertpress.hardware import info
from bertpress.metrics import classification_metrics
from bertpress.signature import traffic_batches
from bertpress.timing import interleaved, summarize, time_callable
from bertpress.bench.memory import PeakMemory
from bertpress.bench.results import (BenchReport, BenchResults, Refusal, ShapeResult, TrafficResult,
                                     VariantResult)
from bertpress.bench.sources import Source, find_reference, name_sources, resolve_sources


@dataclasses.dataclass
class _Plan:
    source: Source
    runtime: Runtime | Baseline
    device: str
    role: str  # artifact | reference | baseline
    anchor: dict | None = None  # optimum / optimum-intel: the record of the files its environment built
    pairs: bool = False  # the model reads sentence pairs (set once the eval data is known)
    eval_columns: Any = None  # the bertpress.data.Columns its eval rows are read with

    @property
    def runtime_name(self) -> str:
        return self.runtime.value

    @property
    def id(self) -> str:
        if self.role == "baseline":
            return f"{self.runtime.value}@{self.device}"
        return f"{self.source.name}:{self.runtime.value}@{self.device}"


def check_devices(devices: Sequence[str]) -> None:
    """Fail early, with the fix, when CUDA is asked for and this machine has none."""
    if not any(d.startswith("cuda") for d in devices):
        return
    import torch

    if not torch.cuda.is_available():
        build = ("a CPU-only build" if torch.version.cuda is None
                 else f"built for CUDA {torch.version.cuda}, but no GPU is visible")
        raise DeviceError(
            f"--device cuda was asked for but CUDA is not available (torch {torch.__version__} is {build}); "
            "run with --device cpu, or on a machine with an NVIDIA GPU and a CUDA build of torch"
        )
    for d in devices:
        if ":" in d and int(d.split(":")[1]) >= torch.cuda.device_count():
            raise DeviceError(f"--device {d}: only {torch.cuda.device_count()} CUDA device(s) here; "
                              "use cuda:0 .. cuda:N-1")


def plan_variants(sources: list[Source], reference: Source | None, cfg: BenchConfig) -> list[_Plan]:
    plans: list[_Plan] = []
    if reference is not None:
        # The fp32 PyTorch reference on CPU is always measured: every ratio is against it.
        plans.append(_Plan(reference, Runtime.PYTORCH, "cpu", "reference"))
    for s in sources:
        for device in cfg.devices:
            for rt in runtimes_for(s.kind, device, cfg.runtimes):
                if cfg.runtimes and rt not in cfg.runtimes:
                    continue
                p = _Plan(s, rt, device, "artifact")
                if not any(q.id == p.id for q in plans):
                    plans.append(p)
    if cfg.baselines and reference is None:
        raise InputError(
            f"--baselines {','.join(b.value for b in cfg.baselines)} run on an fp32 checkpoint, and none is "
            "among the artifacts or in their lineage; add the checkpoint as an ARTIFACT"
        )
    for b in cfg.baselines:
        for device in cfg.devices:
            plans.append(_Plan(reference, b, device, "baseline"))
    if not plans:
        kinds = sorted({s.kind for s in sources})
        raise InputError(
            f"nothing to run: --runtimes {','.join(r.value for r in cfg.runtimes)} apply to none of the artifacts "
            f"(kinds: {', '.join(kinds)}); drop --runtimes or pick ones that apply"
        )
    return plans


def _load_eval(cfg: BenchConfig, source: Source, cache: dict) -> Any:
    """The eval rows for `source`: its label map, and the columns it was trained on (its manifest)
    unless the config names them - so a sentence-pair model is fed pairs."""
    if cfg.eval_data is None:
        return None
    labels, prefer = tuple(source.labels), source.columns
    key = (labels, prefer)
    if key not in cache:
        ds = load_text_classification(cfg.eval_data, cfg.eval_split, label_names=list(labels) or None,
                                      text_column=cfg.text_column, text_pair_column=cfg.text_pair_column,
                                      label_column=cfg.label_column, prefer=prefer)
        cache[key] = ds.subset(cfg.eval_limit, seed=cfg.seed)
    return cache[key]


def _reads_pairs(source: Source, cfg: BenchConfig, cache: dict) -> bool:
    """Whether `source` takes sentence pairs: its manifest says so, else its eval data does."""
    if source.columns is not None:
        return source.columns.pairs
    ds = _load_eval(cfg, source, cache)
    return bool(ds is not None and ds.pairs)


def _build(plan: _Plan, threads: int, work_dir: Path, seed: int):
    runner = _load(plan, threads, work_dir, seed)
    runner.pairs = plan.pairs  # the fixed-shape sweep feeds pairs to a pair model (Runner.synthetic)
    return runner


def _load(plan: _Plan, threads: int, work_dir: Path, seed: int):
    import torch

    # A source without a trained head (e.g. the `minilm` encoder) gets a random one on every load;
    # the same seed gives every variant of it the same head, so accuracy and agreement compare.
    torch.manual_seed(seed)
    if plan.runtime == Baseline.HF_PIPELINE:
        return PipelineRunner(plan.source, plan.device)
    if plan.runtime in ANCHOR_BASELINES:
        return load_anchor(plan.runtime, plan.source, plan.anchor, plan.device, threads)
    return load_runner(plan.source, plan.runtime, plan.device, threads)


def _traffic_batches(runner, ds, cfg: BenchConfig) -> tuple[list[int], list[np.ndarray], list[list]]:
    """The real-traffic batches (`bertpress.signature.traffic_batches`): token lengths, the eval
    rows' indices sorted by length and cut into `cfg.traffic_batch_size`, and those rows' texts
    (or (text, text_pair) pairs)."""
    # texts, or (text, text_pair) pairs: tokenized as the model was trained
    return traffic_batches(runner.tokenizer, ds.examples, runner.max_length, cfg.traffic_batch_size)


def _measure_traffic(runner, ds, cfg: BenchConfig) -> tuple[TrafficResult, np.ndarray]:
    """Length-sorted batches of the eval sentences, dynamic padding, timed end to end.

    Every batch shape is new on the first pass: runtimes compile kernels (OpenVINO), plan memory
    and grow arenas (ONNX Runtime, PyTorch's allocator) per shape. A server that runs for hours
    pays that once, so the first pass over the set is the warm-up, timed on its own and reported
    as the cold figure; the `traffic_passes` after it are the steady-state throughput.
    Sorting needs the token lengths, which a serving batcher would also know; that pre-pass is
    not timed. `cfg.traffic_mode` picks the server (`Runner.for_traffic`, built untimed): one
    batch at a time ("latency"), or several in flight where the runtime can ("throughput").
    Returns the result and the predictions in the data's original order."""
    lengths, batches, texts = _traffic_batches(runner, ds, cfg)
    bs = cfg.traffic_batch_size
    server = runner.for_traffic(cfg.traffic_mode)
    try:
        t_cold = time.perf_counter()
        server.serve(texts)
        cold_seconds = time.perf_counter() - t_cold
        for _ in range(server.warm_passes - 1):  # OpenVINO streams: one warm-up pass each
            server.serve(texts)
        preds = np.empty(len(ds), dtype=np.int64)
        samples: list[float] = []
        t_all = time.perf_counter()
        for _ in range(cfg.traffic_passes):
            out, ms = server.serve(texts)
            samples.extend(ms)
            for idx, p in zip(batches, out):
                preds[idx] = p
        seconds = time.perf_counter() - t_all
    finally:
        if server is not runner:
            server.close()
    n = len(ds) * cfg.traffic_passes
    padded = float(np.mean([max(lengths[j] for j in b) for b in batches]))
    stats = summarize(samples, items_per_call=bs)
    return TrafficResult(len(ds), bs, cfg.traffic_passes, seconds, n / seconds, stats, padded,
                         cold_sentences_per_s=len(ds) / cold_seconds, mode=cfg.traffic_mode), preds


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return num / den


def _both_timed(v: VariantResult, ref: VariantResult, key: str) -> bool:
    """Were both variants timed in the interleaved rounds for `key` (p50_ms, sentences_per_s)?
    Where both or neither were, their figures are of one kind."""
    timed = [bool((x.rounds or {}).get(key)) for x in (v, ref)]
    return timed[0] == timed[1]


def _ratios(v: VariantResult, ref: VariantResult | None, headline: tuple[int, int]) -> dict[str, float | None]:
    if ref is None:
        return {}
    b, s = headline
    lv, lr = v.shape(b, s), ref.shape(b, s)
    out = {
        # speed-ups: > 1 means faster than the fp32 PyTorch reference. Ratios of medians: p50 and
        # sentences/s are the medians of the interleaved rounds where both sides were timed there,
        # else the sweep's figures on both sides (never a round median against a sweep figure).
        "p50_speedup": _ratio(ref.p50(b, s), v.p50(b, s)) if _both_timed(v, ref, "p50_ms")
        else _ratio(lr.p50_ms, lv.p50_ms) if lv and lr else None,
        "p90_speedup": _ratio(lr.p90_ms, lv.p90_ms) if lv and lr else None,
        "throughput": _ratio(v.sentences_per_s(), ref.sentences_per_s()) if _both_timed(v, ref, "sentences_per_s")
        else _ratio(v.traffic.sentences_per_s, ref.traffic.sentences_per_s) if v.traffic and ref.traffic else None,
        # size: < 1 means smaller
        "size": _ratio(v.size_bytes, ref.size_bytes),
        # accuracy: difference in points (percentage), negative = lost accuracy
        "accuracy_delta_points": (v.accuracy - ref.accuracy) * 100
        if v.accuracy is not None and ref.accuracy is not None else None,
    }
    for key in ("f1", "macro_f1"):  # the same difference for F1 / macro-F1, where measured
        if getattr(v, key) is not None and getattr(ref, key) is not None:
            out[f"{key}_delta_points"] = (getattr(v, key) - getattr(ref, key)) * 100
    return out


def _set_threads(threads: int) -> None:
    """intra-op = threads, inter-op = 1 for torch (ORT sessions get the same per session)."""
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # can only be set once per process, before any inter-op work
        pass


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # pragma: no cover - not on this platform
        return None


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


@holds_output_locks  # one live run per --out (artifact.output_locks)
def bench(
    artifacts: Sequence[str | os.PathLike],
    cfg: BenchConfig | None = None,
    out_dir: str | os.PathLike = "runs/bench-report",
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> BenchReport:
    """Benchmark every variant of `artifacts` and write a report artifact to `out_dir`."""
    cfg = cfg or BenchConfig()
    if not isinstance(cfg, BenchConfig):
        raise ConfigError(f"cfg must be a BenchConfig, got {type(cfg).__name__}; build one with BenchConfig(...)")
    if not artifacts:
        raise InputError("no ARTIFACT given; pass one or more artifact directories (or 'minilm')")
    check_devices(cfg.devices)
    sources = [s for a in artifacts for s in resolve_sources(str(a))]
    name_sources(sources)
    reference = find_reference(sources)
    plans = plan_variants(sources, reference, cfg)
    threads = cfg.threads or default_threads()
    eval_cache: dict = {}
    for p in plans:  # fail fast on bad eval data / label mismatches, before any timing
        ds = _load_eval(cfg, p.source, eval_cache)
        p.pairs = _reads_pairs(p.source, cfg, eval_cache)
        p.eval_columns = ds.columns if ds is not None else p.source.columns

    inputs = tuple(s.path for s in sources if s.path is not None) + input_paths(cfg)

    with staged_output(out_dir, overwrite=overwrite, inputs=inputs) as tmp:
        _set_threads(threads)

        refused: list[Refusal] = []
        runnable: list[_Plan] = []
        for p in plans:
            try:
                if p.role != "baseline":
                    preflight(p.source, p.device)
                elif p.runtime in ANCHOR_BASELINES:
                    preflight_anchor(p.runtime, p.source, p.device, cfg.eval_data)
                runnable.append(p)
            except DeviceError as exc:
                refused.append(Refusal(p.source.name, p.runtime_name, p.device, str(exc)))
        if not runnable:
            raise DeviceError(refused[0].reason)

        anchor_dir = Path(tempfile.mkdtemp(prefix="bertpress-anchors-"))
        try:
            runnable = _build_anchors(runnable, cfg, threads, anchor_dir, refused, progress)
            load_start = _loadavg()
            results = _measure_all(runnable, cfg, threads, eval_cache, refused, progress)
            if cfg.rounds > 1:
                _interleaved_rounds(runnable, results, cfg, threads, eval_cache, progress)
        finally:
            shutil.rmtree(anchor_dir, ignore_errors=True)
        ref = next((v for v in results if v.role == "reference"), None)
        ref_preds = getattr(ref, "_preds", None) if ref else None
        for v in results:
            preds = getattr(v, "_preds", None)
            if preds is not None and ref_preds is not None and len(preds) == len(ref_preds):
                v.agreement = float(np.mean(preds == ref_preds))
            v.ratios = _ratios(v, ref, cfg.headline_shape)
        first_eval = next(iter(eval_cache.values()), None)
        env = info()
        # Other processes competing for the cores distort timings (OpenMP barriers especially):
        # the 1-minute load average before and after tells the reader how quiet the machine was.
        env["load_average"] = {"start": load_start, "end": _loadavg()}
        # Thread-pool settings change CPU timings a lot (e.g. OpenMP spin-waiting on a busy machine).
        env["thread_env"] = {k: os.environ[k] for k in sorted(os.environ)
                             if k.startswith(("OMP_", "KMP_", "GOMP_", "MKL_", "ORT_", "CUDA_VISIBLE"))}
        res = BenchResults(
            config=to_tagged(cfg),
            environment=env,
            threads=threads,
            headline={"batch_size": cfg.headline_shape[0], "seq_len": cfg.headline_shape[1]},
            reference=ref.id if ref else None,
            eval_data=None if first_eval is None else {
                "source": first_eval.source, "split": cfg.eval_split, "rows": len(first_eval),
                "skipped": first_eval.skipped, "labels": list(first_eval.label_names),
                "columns": first_eval.columns.to_dict() if first_eval.columns else None},
            variants=results,
            refused=refused,
            created=now_iso(),
        )

        write_json_atomic(tmp / "results.json", res.to_dict())
        write_report(res, tmp)
        b, s = cfg.headline_shape
        manifest = write_manifest(tmp, Manifest(
            kind="report",
            labels=list(reference.labels) if reference else list(sources[0].labels),
            max_length=None,
            recipe=to_tagged(cfg),
            lineage=lineage_of(sources[0].where) if sources[0].path is not None else None,
            metrics={v.id: {f"p50_ms_b{b}_s{s}": v.p50(b, s),
                            "accuracy": v.accuracy,
                            "sentences_per_s": v.sentences_per_s()}
                     for v in results},
            details={"artifacts": [{"name": s_.name, "kind": s_.kind, "path": s_.where} for s_ in sources],
                     "reference": ref.id if ref else None,
                     "refused": [r.to_dict() for r in refused],
                     "threads": threads},
        ))

    return BenchReport(path=resolve_out(out_dir), manifest=manifest, results=res)


def _measure_variant(p: _Plan, runner, cfg: BenchConfig, eval_cache: dict, bar) -> VariantResult:
    v = VariantResult(
        id=p.id, name=p.source.name if p.role != "baseline" else p.runtime_name, role=p.role,
        kind=p.source.kind, runtime=p.runtime_name, device=p.device, precision=runner.precision,
        source=p.source.where, size_bytes=runner.size_bytes, size_source=runner.size_source,
        notes=list(runner.notes), settings=dict(getattr(runner, "settings", None) or {}))
    rng = np.random.default_rng(cfg.seed)
    for b in cfg.batch_sizes:
        for s in cfg.seq_lens:
            if p.source.max_length and s > p.source.max_length:
                v.notes.append(f"batch {b} x seq {s} skipped: the model accepts at most {p.source.max_length} tokens")
            else:
                fn = runner.fixed_call(b, s, rng)
                stats = time_callable(fn, warmup=cfg.warmup, min_iters=cfg.min_iters, min_seconds=cfg.min_seconds,
                                      items_per_call=b, cuda=runner.cuda_events)
                v.fixed.append(ShapeResult(b, s, stats))
                del fn
            bar.update(1)
    ds = _load_eval(cfg, p.source, eval_cache)
    if ds is not None:
        n_notes = len(runner.notes)
        v.traffic, preds = _measure_traffic(runner, ds, cfg)
        v.notes += runner.notes[n_notes:]  # how the traffic was served (for_traffic's note)
        v.settings.update({k: x for k, x in (getattr(runner, "settings", None) or {}).items() if k not in v.settings})
        scores = classification_metrics(preds, ds.labels, len(p.source.labels) or len(ds.label_names))
        v.accuracy, v.f1, v.macro_f1 = scores["accuracy"], scores.get("f1"), scores.get("macro_f1")
        v._preds = preds  # type: ignore[attr-defined]  # for agreement; not serialised
        bar.update(1)
    return v


def _build_anchors(plans: list[_Plan], cfg: BenchConfig, threads: int, work_dir: Path,
                   refused: list[Refusal], progress: bool) -> list[_Plan]:
    """Have each anchor environment build its baseline's files, once per run, before any timing
    (a failed build stops the run in minutes, and no build competes with a timed variant for
    the cores). The sweep and the interleaved rounds then load the same files. An incomplete
    environment is a refusal; a failing export/quantization is an error, as for our variants."""
    built: dict[str, dict] = {}
    kept: list[_Plan] = []
    for p in plans:
        if p.runtime in ANCHOR_BASELINES:
            if p.runtime.value not in built:
                if progress:
                    print(f"bench: building the {p.runtime.value} anchor in its environment ...", file=sys.stderr)
                try:
                    built[p.runtime.value] = build_anchor(p.runtime, p.source, work_dir, threads,
                                                          eval_data=cfg.eval_data, eval_split=cfg.eval_split,
                                                          seed=cfg.seed, columns=p.eval_columns)
                except DeviceError as exc:
                    refused.append(Refusal(p.source.name, p.runtime_name, p.device, str(exc)))
                    continue
            p.anchor = built[p.runtime.value]
        kept.append(p)
    return kept


def _measure_all(plans: list[_Plan], cfg: BenchConfig, threads: int, eval_cache: dict,
                 refused: list[Refusal], progress: bool) -> list[VariantResult]:
    from tqdm.auto import tqdm

    results: list[VariantResult] = []
    steps_per = len(cfg.batch_sizes) * len(cfg.seq_lens) + (1 if cfg.eval_data else 0)
    bar = tqdm(total=len(plans) * steps_per, desc="bench", unit="run", disable=not progress, leave=False)
    work_dir = Path(tempfile.mkdtemp(prefix="bertpress-bench-"))
    try:
        for p in plans:
            bar.set_postfix_str(p.id, refresh=False)
            with PeakMemory(cuda=p.device.startswith("cuda")) as mem:
                t0 = time.perf_counter()
                runner = None
                try:
                    runner = _build(p, threads, work_dir, cfg.seed)
                    load_s = time.perf_counter() - t0
                    v = _measure_variant(p, runner, cfg, eval_cache, bar)
                    v.load_s = round(load_s, 3)
                except DeviceError as exc:  # a refusal (int8 on CUDA...), not a failure of the run
                    refused.append(Refusal(p.source.name, p.runtime_name, p.device, str(exc)))
                    bar.update(steps_per)
                    continue
                except BertpressError:
                    raise
                except Exception as exc:  # a runtime error inside a model: name the variant, no traceback
                    msg = f"{type(exc).__name__}: {first_line(exc)}"
                    if p.device != "cpu":  # e.g. a TorchScript file traced with CPU constants
                        refused.append(Refusal(p.source.name, p.runtime_name, p.device,
                                               f"failed on {p.device} ({msg}); it runs on cpu only"))
                        bar.update(steps_per)
                        continue
                    raise ArtifactError(f"{p.id}: failed while running ({msg}); check the artifact with "
                                        f"`bertpress inspect {p.source.where}` or drop it") from exc
                finally:
                    if runner is not None:
                        runner.close()
                    del runner
            v.memory = mem.result()
            results.append(v)
            gc.collect()
    finally:
        bar.close()
        shutil.rmtree(work_dir, ignore_errors=True)
    return results


def _interleaved_rounds(plans: list[_Plan], results: list[VariantResult], cfg: BenchConfig, threads: int,
                        eval_cache: dict, progress: bool) -> None:
    """Re-time in `cfg.rounds` interleaved rounds (v1, v2, ..., v1, v2, ...) the headline shape
    and, for every variant that served real traffic, one steady traffic pass.

    The sweep measures variants one after another, so a VM whose speed drifts during the run
    (measured here: the same fp32 model at 17.8 ms in one run, 27 ms half an hour later; an
    unchanged variant's traffic 1.5x apart in two runs) charges the drift to whichever variant ran
    then. Interleaving spreads it over all of them; the medians of the rounds are what the ratios
    use. All variants are loaded together for this pass. Each round times every headline call
    first, then every traffic pass, served as in the sweep (`Runner.for_traffic`, warmed up by
    `warm_passes` untimed passes first: the cold figure is the sweep's). A headline call or traffic
    pass that fails in a round is dropped from the rounds for that variant (its figure stays the
    sweep's, with a note); the run and every other measurement go on."""
    b, s = cfg.headline_shape
    by_id = {v.id: v for v in results}
    work_dir = Path(tempfile.mkdtemp(prefix="bertpress-rounds-"))
    runners: list[Any] = []
    heads: list[tuple[VariantResult, Any, Any]] = []
    traffic: list[tuple[VariantResult, Any, list, bool]] = []  # (variant, server, texts, server is its own)

    try:
        for p in plans:
            v = by_id.get(p.id)
            if v is None:  # refused
                continue
            timed_shape = v.shape(b, s) is not None  # else the shape was skipped for it
            ds = _load_eval(cfg, p.source, eval_cache) if v.traffic is not None else None
            if not timed_shape and ds is None:
                continue
            try:  # all variants at once: e.g. GPU memory may not hold them all; keep the sweep's value
                runner = _build(p, threads, work_dir, cfg.seed)
            except Exception as exc:  # noqa: BLE001 - the variant already ran in the sweep
                v.notes.append(f"not re-timed in the interleaved rounds: could not be loaded alongside the others "
                               f"({type(exc).__name__}: {first_line(exc, 160)}); its headline p50 and "
                               "traffic are the sweep's")
                continue
            runners.append(runner)
            server = None
            if ds is not None:
                try:
                    server = runner.for_traffic(cfg.traffic_mode)
                    texts = _traffic_batches(runner, ds, cfg)[2]
                    for _ in range(server.warm_passes):  # untimed: every batch shape seen, as in the sweep
                        server.serve(texts)
                except Exception as exc:  # noqa: BLE001 - the traffic already ran in the sweep
                    if server is not None and server is not runner:
                        server.close()
                    server = None
                    v.notes.append(f"real traffic not re-served in the interleaved rounds ({type(exc).__name__}: "
                                   f"{first_line(exc, 160)}); its sentences/s is the sweep's")
                if server is not None and server is not runner:
                    runners.append(server)
            if not timed_shape and server is None:
                continue
            v.rounds = {"batch_size": b, "seq_len": s, "p50_ms": []}
            if timed_shape:
                heads.append((v, runner, runner.fixed_call(b, s, np.random.default_rng(cfg.seed))))
            if server is not None:
                v.rounds["sentences_per_s"] = []
                traffic.append((v, server, texts, server is not runner))

        broken: dict[tuple[str, str], str] = {}  # (variant, what) -> why it stopped

        def guarded(v: VariantResult, what: str, fn, release=None):
            """One timer of the rounds; a failure drops that measurement from the later rounds
            (the variant keeps its sweep figure, with a note) instead of ending the bench, and
            `release` frees what the broken measurement held (a traffic server's session)."""
            def once():
                if (v.id, what) in broken:
                    return None
                try:
                    return fn()
                except (DiskFullError, Terminated):
                    raise
                except Exception as exc:  # noqa: BLE001 - the sweep already measured it
                    broken[v.id, what] = f"{type(exc).__name__}: {first_line(exc, 160)}"
                    if release is not None:
                        release()
                    return None
            return once

        def head_timer(v, runner, fn):
            return guarded(v, "headline", lambda: time_callable(
                fn, warmup=cfg.warmup, min_iters=cfg.min_iters, min_seconds=cfg.min_seconds, items_per_call=b,
                cuda=runner.cuda_events))

        def traffic_timer(v, server, texts, own):
            n = sum(len(t) for t in texts)

            def once() -> float:
                t0 = time.perf_counter()
                server.serve(texts)
                return n / (time.perf_counter() - t0)
            # A server of its own (not the runner the headline still uses) is closed at once.
            return guarded(v, "traffic", once, release=server.close if own else None)

        timers = [head_timer(*e) for e in heads] + [traffic_timer(*e) for e in traffic]
        desc = f"rounds {b}x{s}" + (" + traffic" if traffic else "")
        runs = interleaved(timers, cfg.rounds, progress=progress, desc=desc)
        for what, key, entries, results_of, fmt in (
                ("headline", "p50_ms", heads, runs[:len(heads)], lambda st: round(st.p50_ms, 4)),
                ("traffic", "sentences_per_s", traffic, runs[len(heads):], lambda x: round(x, 2))):
            for (v, *_), got in zip(entries, results_of):
                why = broken.get((v.id, what))
                if why is None:
                    v.rounds[key] = [fmt(x) for x in got]
                    continue
                del v.rounds[key]
                label = f"the {b}x{s} headline" if what == "headline" else "real traffic"
                ok = sum(x is not None for x in got)
                v.notes.append(f"{label} failed in interleaved round {ok + 1} of {cfg.rounds} ({why}); "
                               f"not re-timed in the rounds: its {'p50' if what == 'headline' else 'sentences/s'} "
                               "is the sweep's")
        for v, *_ in heads + traffic:
            if v.rounds is not None and not (v.rounds.get("p50_ms") or v.rounds.get("sentences_per_s")):
                v.rounds = None
    finally:
        for runner in runners:
            runner.close()
        shutil.rmtree(work_dir, ignore_errors=True)
        gc.collect()
