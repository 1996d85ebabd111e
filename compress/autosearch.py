"""The automatic search: what `compress --max-accuracy-drop P --eval-data D --calibration-data D`
does with no other flag.

The records (docs/results/layers.md) found the fast models by hand: whole layers removed, the FFN
narrowed, layer-wise distillation (logits + hidden states + attention maps from the teacher layer
each student layer came from), int8 in the runtime that is fastest on the CPU at hand. This module
searches that space by itself, at a cost a user can predict:

1. **Speed first, untrained.** A candidate's speed depends on its shape, int8 scheme and runtime,
   not on its weights. Every shape (`SearchConfig.layers` x `ffn` x `heads`) is pruned once and
   exported in every (runtime, scheme) of the space; all of them and the fp32 PyTorch baseline
   are timed interleaved (the chosen objective: batch-1 latency or real traffic). No training yet.
2. **Accuracy where it can change the answer.** The unpruned shape needs no training: its
   variants are scored at once and the fastest within the budget is the first incumbent. The
   pruned shapes faster than it are trained (distillation) one at a time, by bisection over their
   speed order: the median shape first; when it makes the budget it becomes the incumbent and only
   faster shapes stay in play; when it misses, every shape pruned at least as far in every
   dimension is ruled out too (accuracy is assumed not to rise with pruning). During training a
   shape is scored at the rungs (`SearchConfig.rungs`, fractions of its training) and stopped as
   soon as its drop exceeds the budget plus the rung's slack (successive halving on a threshold: a
   shape that cannot come back in the rest of its training is not trained further). A shape that
   finishes is scored in its runtime, variant by variant fastest first; the first within the
   budget becomes the incumbent. The search stops when no shape is left in play: the fastest
   candidate within budget is then known (under the monotonicity assumption).
3. **Bounded and resumable.** `time_budget` (minutes) bounds the whole search: a trial that would
   run past it is stopped and the incumbent is kept; once a training has run to its end, no new
   one starts with less time left than it took. The trial bookkeeping is an Optuna study in
   SQLite beside `--out` (`.OUT.search/study.db`) with each finished student's weights: the same
   command after a kill reuses the timing and every finished or stopped trial.

Optuna provides the study (storage, resume, trial states, intermediate values) and the pruner
interface; it does not provide the order (bisection over the measured speed, with the misses'
dominance) nor the stop rule (the incumbent's speed bounds what is worth training): `pick`,
`at_least_as_pruned` and the loop of `_AutoSearch.search` below. Optuna's samplers propose points
of a space to evaluate; they have no notion of "this candidate's speed is already known, only its
accuracy is not", which is what makes bisection possible here.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib.util
import itertools
import json
import math
import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Mapping


from bertpress.artifact import resolve_out
from bertpress.compress.config import EXECUTION_FIELDS, CompressConfig, PruneConfig, RecoverConfig, Scheme
from bertpress.compress import evaluate  # called as evaluate.X: tests patch the module
from bertpress.compress.prune import check_prunable, plan_layers, plan_shapes
from bertpress.compress.search import deploy_twin
from bertpress.compress.state import HANDLERS, Work
from bertpress.config import to_tagged
from bertpress.errors import BertpressError, InputError, first_line
from bertpress.metrics import classification_metrics  # noqa: F401  (fails early if scikit-learn is missing)
from bertpress.models import layer_shapes, state_dict_bytes
from bertpress.signature import input_names, torch_runner, traffic_batches
from bertpress.timing import interleaved

# The distillation that worked (docs/results/layers.md §5-§11): logits + hidden states + attention
# maps, lr 1e-4, two epochs at max length 64, and at least 1,000 optimizer steps: on a small
# training set two epochs are too few (MRPC: 230 steps; 4 layers x FFN 1/4 recovered to -2.57 F1
# in 230 steps, -1.00 in 920, docs/results/autosearch.md §4; with the floor the 4-layer student made
# the budget in fp32, §6). Used for every pruned candidate
# unless the user set recovery flags (--recover-epochs > 0: theirs).
AUTO_RECOVER = {"epochs": 2.0, "min_steps": 1000, "hidden_weight": 1.0, "attention_weight": 1.0, "lr": 1e-4,
                "max_length": 64}
RUNTIME_MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}  # a deploy runtime -> the module it needs
FORMAT_OF = {"onnxruntime": "onnx", "openvino": "openvino", "pytorch": None}  # the export format a runtime deploys
SCHEME_PROBE_MARGIN = 1.20  # schemes within 20 % of a runtime's fastest on the unpruned model stay in the space
TIMING_CALIBRATION = 32  # static calibration samples while timing (the ranges do not change the speed)


def deploy_runtimes(requested: str | None, runtimes: Mapping[str, Callable[..., Any]] | None,
                    say: Callable[[str], None]) -> list[str]:
    """The runtimes to search: the one asked for, else every deploy runtime passed in that this
    host can run (PyTorch eager when none was passed: the Python API without the composition root)."""
    if requested:
        deploy_twin(requested, runtimes)  # a deploy runtime that was not passed in: refused in one line
        return [requested]
    found = [name for name in (runtimes or {})
             if importlib.util.find_spec(RUNTIME_MODULES.get(name, name)) is not None]
    if not found:
        say("search: no deploy runtime was passed in (compress(..., runtimes=bertpress.app.search_runtimes."
            "DEPLOY_RUNTIMES), as the CLI does): candidates are ranked in PyTorch eager")
    return found or ["pytorch"]


def recover_config(cfg: CompressConfig) -> RecoverConfig:
    """The recovery of every pruned candidate: the user's when set, else AUTO_RECOVER."""
    if cfg.recover.active:
        return cfg.recover
    return dataclasses.replace(cfg.recover, **AUTO_RECOVER)


def task_metric(num_labels: int, pairs: bool) -> str:
    """The metric the budget is in: F1 of the positive class for binary pairs, macro-F1 above two
    classes, else accuracy."""
    if num_labels > 2:
        return "macro_f1"
    return "f1" if pairs and num_labels == 2 else "accuracy"


@dataclasses.dataclass
class Candidate:
    shape: tuple[float, float, float]  # (heads, ffn, layers) ratios
    runtime: str
    scheme: str
    ms: float | None = None  # ranking figure (ms per call, or per sentence for traffic)
    p50_ms: float | None = None
    min_ms: float | None = None
    error: str | None = None
    metric: float | None = None  # the task metric in its runtime (fraction), once scored
    accuracy: float | None = None
    size_bytes: int | None = None
    dims: dict[str, Any] = dataclasses.field(default_factory=dict)  # layers / heads / ffn kept
    fallback: bool = False  # chosen as the most accurate because no candidate was within the budget

    @property
    def key(self) -> str:
        return f"{shape_key(self.shape)}/{self.runtime}/{self.scheme}"


def shape_key(shape) -> str:
    return "h{:.3f}-f{:.3f}-l{:.3f}".format(*shape)


def over_budget(drop: float, k: int, max_drop: float, slack: tuple[float, ...]) -> bool:
    """The stop rule at rung k: the drop (points) exceeds max_drop + slack[k]. A trial's own
    threshold, independent of other trials (so a remote trial applies it where it runs)."""
    return drop > max_drop + slack[min(k, len(slack) - 1)] + 1e-9


def at_least_as_pruned(a, b) -> bool:
    """Shape a removes at least as much as shape b in every dimension (heads, FFN, layers ratios).
    The search assumes accuracy does not rise with pruning: when b misses the budget, so does a."""
    return all(x >= y - 1e-9 for x, y in zip(a, b))


def pick(undecided: list) -> Any:
    """The next shape to train among the undecided ones (fastest first): the median by speed,
    the faster of the two middle ones. Bisection over the speed order: a pass leaves only the
    faster half worth training, a miss rules out every shape pruned at least as far. Fastest-first
    spends the budget on the most pruned shapes, the least likely to recover (on SST-2 it trained
    seven 3-layer or half-heads shapes in 50 minutes and never reached a 4-layer one)."""
    return undecided[(len(undecided) - 1) // 2]


def bisection_order(shapes: list) -> list:
    """The shapes in the order bisection would try them if each missed and then passed in turn:
    the median, then the medians of the faster and slower halves, and so on (breadth first).
    What an executor that trains several shapes at once starts ahead of the search's own picks."""
    out, level = [], [shapes]
    while level:
        nxt = []
        for part in level:
            if not part:
                continue
            m = (len(part) - 1) // 2
            out.append(part[m])
            nxt += [part[:m], part[m + 1:]]
        level = nxt
    return out


class BudgetPruner:
    """Optuna pruner: stop a trial whose drop (points, the reported value) at rung k exceeds
    max_drop + slack[k]. Built lazily (optuna is imported only when the search runs)."""

    def __new__(cls, max_drop: float, slack: tuple[float, ...]):
        import optuna

        class _Pruner(optuna.pruners.BasePruner):
            def prune(self, study, trial) -> bool:
                step = trial.last_step
                if step is None:
                    return False
                return over_budget(trial.intermediate_values[step], step, max_drop, slack)

        return _Pruner()


def _rung_callback(rungs: tuple[float, ...], score: Callable[[Any], float], report: Callable[[int, float], bool],
                   deadline: float | None):
    """A TrainerCallback: at each rung (a fraction of the run's steps) score the student, report the
    drop; stop training when the pruner says so or the time budget is spent."""
    from transformers import TrainerCallback

    class Rungs(TrainerCallback):
        stopped: str | None = None
        drops: dict[int, float] = {}

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if deadline is not None and time.monotonic() > deadline:
                self.stopped, control.should_training_stop = "time budget", True
                return control
            steps: dict[int, int] = {}
            for k, f in enumerate(rungs):  # a short run may put two rungs on one step: the first counts
                steps.setdefault(max(1, round(f * state.max_steps)), k)
            k = steps.get(state.global_step)
            if k is None or model is None or state.global_step >= state.max_steps:
                return control
            was = model.training
            model.eval()
            drop = score(model)
            model.train(was)
            self.drops = {**self.drops, k: drop}
            if report(k, drop):
                self.stopped, control.should_training_stop = f"pruned at rung {k + 1}", True
            return control

    return Rungs()


def _study(db: Path, name: str, max_drop: float, slack: tuple[float, ...]):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=name, storage=f"sqlite:///{db}", direction="minimize",
                               pruner=BudgetPruner(max_drop, slack), load_if_exists=True)


def study_dir(out_dir: Path) -> Path:
    """Where a search keeps its study and finished students between runs (beside --out)."""

    out = resolve_out(Path(out_dir))
    return out.parent / f".{out.name}.search"


def remove_study(out_dir: Path) -> None:
    """Remove the search's folder beside --out once the winner is published: only if it is one
    (it holds our study.db; nothing else of the user's is ever named `.OUT.search`)."""
    root = study_dir(out_dir)
    if (root / "study.db").is_file():
        shutil.rmtree(root, ignore_errors=True)


def _study_name(work, cfg: CompressConfig, rcfg: RecoverConfig, runtimes: list[str]) -> str:
    """Same model, data and search settings -> same study (resume); anything else -> a new one."""

    s = cfg.search
    keep = {k: v for k, v in dataclasses.asdict(s).items() if k not in EXECUTION_FIELDS}
    blob = json.dumps({"search": keep, "recover": to_tagged(rcfg), "prune": to_tagged(cfg.prune),
                       "quantize": to_tagged(cfg.quantize), "runtimes": runtimes, "eval": work.eval_data.source,
                       "n_eval": len(work.eval_data), "teacher": _weights_digest(work.teacher),
                       "bytes": state_dict_bytes(work.teacher), "seed": cfg.seed}, sort_keys=True, default=str)
    return "bertpress-" + hashlib.sha256(blob.encode()).hexdigest()[:16]


def _weights_digest(model) -> str:
    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            h.update(name.encode())
            h.update(t.detach().float().cpu().numpy().tobytes())  # every weight: a study is resumed only for the same model
    return h.hexdigest()[:16]


def run_auto_search(work, cfg: CompressConfig, say: Callable[[str], None], max_length: int, out_dir: Path,
                    runtimes: Mapping[str, Callable[..., Any]] | None = None):
    """(the winner's Work, the search facts for details.search). `runtimes`: the deploy runtimes'
    twin factories (the composition root's DEPLOY_RUNTIMES)."""
    # lazy: raysearch imports this module (RaySearch subclasses _AutoSearch); --executor ray / several GPUs
    from bertpress.compress.raysearch import search_class

    return search_class(cfg.search, say)(work, cfg, say, max_length, Path(out_dir), runtimes).run()


class _AutoSearch:
    def __init__(self, work, cfg: CompressConfig, say, max_length: int, out_dir: Path, runtimes) -> None:

        self.work, self.cfg, self.s, self.say, self.ml = work, cfg, cfg.search, say, max_length
        self.start = time.monotonic()
        self.deadline = self.start + 60 * self.s.time_budget if self.s.time_budget else None
        self.twins = runtimes
        self.runtimes = deploy_runtimes(self.s.runtime, runtimes, say)
        self.schemes = [sc.value for sc in self.s.scheme_list]
        self.rcfg = recover_config(cfg)
        self.num_labels = int(work.teacher.config.num_labels)
        self.metric = task_metric(self.num_labels, work.eval_data.text_pairs is not None)
        self.root = study_dir(out_dir)
        self.timeline: list[dict[str, Any]] = []
        self.pruned: dict[tuple, Any] = {}  # shape -> pruned (untrained) Work
        self.trained: dict[tuple, Any] = {}  # shape -> trained Work
        self.trials: dict[str, dict[str, Any]] = {}  # shape key -> what its trial did
        self.counter = itertools.count()  # export folders under the run's temp dir

    # ---- helpers ----------------------------------------------------------------------------

    def event(self, what: str, **facts) -> None:
        self.timeline.append({"t_s": round(time.monotonic() - self.start, 1), "event": what, **facts})

    def left_s(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def scores_of(self, model) -> dict[str, float]:

        return evaluate.scores(model, self.work.tokenizer, self.work.eval_data, max_length=self.ml)

    def drop_points(self, value: float) -> float:
        return 100 * (self.base[self.metric] - value)

    def prune(self, shape) -> Any:
        """The pruned, untrained Work of a shape (cached), or raises InputError for a shape the model cannot take."""
        if shape not in self.pruned:
            w = self.work
            pw = Work(model=copy.deepcopy(w.teacher), tokenizer=w.tokenizer, teacher=w.teacher, labels=w.labels,
                      cfg=self.cfg, eval_data=w.eval_data, progress=False, data_cache=w.data_cache,
                      columns=w.columns)
            heads, ffn, layers = shape
            pcfg = dataclasses.replace(self.cfg.prune, heads=heads, ffn=ffn, layers=layers)
            pw = HANDLERS[PruneConfig](pw, pcfg)
            pw.details["recovery"] = None
            self.pruned[shape] = (pw, pcfg)
        return self.pruned[shape]

    def quantized(self, pw, scheme: str, *, timing: bool):
        qcfg = dataclasses.replace(self.cfg.quantize, scheme=Scheme(scheme))
        if timing and qcfg.scheme is Scheme.STATIC:  # the ranges do not change the speed
            qcfg = dataclasses.replace(qcfg, calibration_samples=min(qcfg.calibration_samples, TIMING_CALIBRATION),
                                       calibration_method="minmax")
        qw = dataclasses.replace(pw, details=dict(pw.details), qmodel=None, ranges=None)
        return HANDLERS[type(qcfg)](qw, qcfg), qcfg

    def instance(self, pw, cand: Candidate, *, timing: bool, tmp: Path, shared: dict, calib_cache: dict):
        """(qw, twin or None, qcfg) of a candidate: quantized in torch and, in a deploy runtime,
        exported and gated as `bertpress export` would (on a few rows while timing)."""
        qw, qcfg = self.quantized(pw, cand.scheme, timing=timing)
        if cand.runtime == "pytorch":
            return qw, None, qcfg
        factory = deploy_twin(cand.runtime, self.twins)
        twin = factory(pw.model, self.work.tokenizer, scheme=cand.scheme, quant_facts=qw.details["quantization"],
                       labels=self.work.labels, max_length=self.ml, out=tmp / f"c{next(self.counter)}",
                       eval_data=self.work.eval_data, shared=shared, calib_cache=calib_cache, gate=not timing)
        return qw, twin, qcfg

    def timer(self, model, twin):
        """time() -> LatencyStats for the objective: the twin's session, else `model` in PyTorch eager."""
        s, tok = self.s, self.work.tokenizer
        if s.objective == "traffic":

            if twin is not None:
                return twin.traffic_timer(tok, self.chunks, max_length=self.ml, threads=s.latency_threads,
                                          min_seconds=s.latency_min_seconds)
            return evaluate.traffic_timer(torch_runner(model), tok, self.chunks, max_length=self.ml,
                                 names=input_names(model), threads=s.latency_threads,
                                 min_seconds=s.latency_min_seconds)
        if twin is not None:
            return twin.timer(tok, seq_len=s.latency_seq_len, threads=s.latency_threads,
                              min_seconds=s.latency_min_seconds)

        return lambda: evaluate.latency(model, tok, seq_len=s.latency_seq_len, threads=s.latency_threads,
                               min_seconds=s.latency_min_seconds)

    # ---- the search -------------------------------------------------------------------------

    def run(self):
        import tempfile

        w, s = self.work, self.s
        if s.objective == "traffic":

            self.chunks = traffic_batches(w.tokenizer, w.eval_data.examples, self.ml, s.traffic_batch)[2]
        self.base = self.scores_of(w.teacher)
        self.base_size = evaluate.state_size(w.teacher)
        self.say(f"automatic search: {self.metric} {100 * self.base[self.metric]:.2f} uncompressed on "
                 f"{len(w.eval_data)} eval rows; budget {s.max_accuracy_drop} points"
                 + (f", {s.time_budget:g} min" if s.time_budget else "")
                 + f"; runtimes {', '.join(self.runtimes)}; schemes {', '.join(self.schemes)}")
        self.root.mkdir(parents=True, exist_ok=True)
        study = _study(self.root / "study.db", _study_name(w, self.cfg, self.rcfg, self.runtimes),
                       s.max_accuracy_drop, s.rung_slack)
        self.study = study
        tmp = Path(tempfile.mkdtemp(prefix="bertpress-autosearch-"))
        try:
            cands, base_ms = self.measure_speed(study, tmp)
            winner = self.search(cands, tmp)
            return self.publish(cands, base_ms, winner)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def shapes(self) -> list[tuple[float, float, float]]:
        """The space's shapes this model can take (deduplicated by the dimensions they leave)."""

        first = layer_shapes(self.work.teacher)
        shapes, seen = [(0.0, 0.0, 0.0)], {(len(first), first[0]["heads"], first[0]["ffn"])}
        try:
            check_prunable(self.work.teacher)
        except InputError as exc:
            self.say(f"search: no pruning for this model ({exc}); int8 schemes and runtimes only")
            return shapes
        for shape in self.s.auto_shapes():
            if not any(shape):
                continue
            heads, ffn, layers = shape
            pcfg = dataclasses.replace(self.cfg.prune, heads=heads, ffn=ffn, layers=layers)
            try:
                _, kept_heads, kept_ffn = plan_shapes(self.work.teacher, pcfg)
                kept_layers = len(plan_layers(self.work.teacher, pcfg))
            except InputError as exc:
                self.say(f"search: skipped heads {heads:.2f} ffn {ffn:.2f} layers {layers:.2f}: {exc}")
                continue
            dims = (kept_layers, kept_heads, kept_ffn)
            if dims in seen:  # two ratios that leave the same model (rounding): time and train it once
                continue
            seen.add(dims)
            shapes.append(shape)
        return shapes

    def measure_speed(self, study, tmp: Path) -> tuple[list[Candidate], float]:
        """Every candidate timed untrained (interleaved with the fp32 baseline), or the timing a
        previous run of this study recorded."""
        from tqdm.auto import tqdm

        saved = study.user_attrs.get("timing")
        if saved:
            cands = [Candidate(shape=tuple(c["shape"]), **{k: v for k, v in c.items() if k != "shape"})
                     for c in saved["candidates"]]
            self.say(f"search: resumed ({len(cands)} candidates timed before, "
                     f"{sum(1 for t in study.trials if t.state.is_finished())} trials finished)")
            self.event("resumed", candidates=len(cands))
            return cands, saved["baseline_ms"]
        shapes = self.shapes()
        timers: list[Any] = [self.timer(self.work.teacher, None)]
        calib_cache: dict = {}
        # Step 1, the scheme probe: every (runtime, scheme) of the unpruned model, one quick round.
        # Per runtime, only the schemes within SCHEME_PROBE_MARGIN of its fastest go on to the pruned
        # shapes (measured on this CPU, not assumed: which int8 recipe a runtime runs fastest depends
        # on the ISA); this halves the exports of a default space.
        base_shape = (0.0, 0.0, 0.0)
        cands = [Candidate(shape=base_shape, runtime=rt, scheme=sc) for rt in self.runtimes for sc in self.schemes]
        n_pruned = (len(shapes) - 1) * len(self.runtimes)
        bar = tqdm(total=len(cands) + n_pruned, desc="search: exporting candidates", unit="candidate",
                   disable=not self.work.progress)
        try:
            timers += self.export_for_timing(cands, tmp, calib_cache, bar)
            probe = interleaved([None] + timers[1:], 1, progress=False)
            keep: dict[str, list[str]] = {}
            for rt in self.runtimes:
                got = {c.scheme: min(r.min_ms for r in runs) for c, runs in zip(cands, probe[1:])
                       if c.runtime == rt and runs}
                best = min(got.values()) if got else None
                keep[rt] = [sc for sc in self.schemes if sc in got and got[sc] <= SCHEME_PROBE_MARGIN * best] \
                    if got else list(self.schemes)
            self.probe = {f"{c.runtime}/{c.scheme}": (min(r.min_ms for r in runs) if runs else None)
                          for c, runs in zip(cands, probe[1:])}
            self.say("search: scheme probe on the unpruned model (min ms): "
                     + ", ".join(f"{k} {v:.2f}" if v is not None else f"{k} failed" for k, v in self.probe.items())
                     + "; kept per runtime: " + "; ".join(f"{rt}: {','.join(v) or 'none'}" for rt, v in keep.items()))
            more = [Candidate(shape=sh, runtime=rt, scheme=sc) for sh in shapes[1:] for rt in self.runtimes
                    for sc in keep[rt]]
            bar.total = len(cands) + len(more)
            bar.refresh()
            timers += self.export_for_timing(more, tmp, calib_cache, bar)
            cands += more
        finally:
            bar.close()
        samples = interleaved(timers, self.s.latency_rounds, progress=self.work.progress,
                              desc="search: timing candidates")
        figures = []
        for runs in samples:
            if not runs:
                figures.append((None, None))
                continue
            p50 = statistics.median(r.p50_ms / r.items_per_call for r in runs)
            mn = min(r.min_ms / r.items_per_call for r in runs)
            figures.append((p50, mn))
        base_ms = figures[0][0] if self.s.latency_statistic == "p50" else figures[0][1]
        for c, (p50, mn) in zip(cands, figures[1:]):
            c.p50_ms, c.min_ms = p50, mn
            c.ms = p50 if self.s.latency_statistic == "p50" else mn
        study.set_user_attr("timing", {"baseline_ms": base_ms, "candidates": [
            {k: v for k, v in dataclasses.asdict(c).items() if k not in ("metric", "accuracy")} for c in cands]})
        self.event("timed", candidates=len(cands), failed=sum(1 for c in cands if c.error))
        n_ok = sum(1 for c in cands if c.ms is not None)
        self.say(f"search: timed {n_ok} candidates ({len(cands) - n_ok} not exportable) in "
                 f"{time.monotonic() - self.start:.0f} s; fastest "
                 + ", ".join(f"{c.key} {c.ms:.2f} ms" for c in sorted((c for c in cands if c.ms), key=lambda c: c.ms)[:3]))
        return cands, base_ms

    def export_for_timing(self, cands: list[Candidate], tmp: Path, calib_cache: dict, bar) -> list[Any]:
        """A timer per candidate (None where it could not be exported: its error is recorded)."""
        timers: list[Any] = []
        for c in cands:
            pw, _ = self.prune(c.shape)
            dims = layer_shapes(pw.model)
            c.dims = {"layers": len(dims), "heads": dims[0]["heads"], "ffn": dims[0]["ffn"]}
            try:
                qw, twin, _ = self.instance(pw, c, timing=True, tmp=tmp, shared={}, calib_cache=calib_cache)
                c.size_bytes = twin.size_bytes if twin is not None else None
                timers.append(self.timer(qw.final, twin))
            except BertpressError as exc:
                c.error = f"export failed: {first_line(exc)}"
                timers.append(None)
            except Exception as exc:  # exporter / optimizer / runtime internals: list it, go on
                c.error = f"export failed: {type(exc).__name__}: {first_line(exc)}"
                timers.append(None)
            bar.update(1)
        return timers

    def score_variant(self, c: Candidate, pw, tmp: Path, shared: dict, calib_cache: dict) -> None:
        """The candidate's task metric in its runtime (the export gate's full eval, as `bertpress
        export` would gate it), on the trained (or unpruned) model `pw`."""
        try:
            qw, twin, _ = self.instance(pw, c, timing=False, tmp=tmp, shared=shared, calib_cache=calib_cache)
        except BertpressError as exc:
            c.error = f"export failed: {first_line(exc)}"
            return
        except Exception as exc:  # exporter / runtime internals: listed, not chosen
            c.error = f"export failed: {type(exc).__name__}: {first_line(exc)}"
            return
        if twin is None:
            got = evaluate.scores(qw.final, self.work.tokenizer, self.work.eval_data, max_length=self.ml)
        else:
            if not twin.report["passed"]:
                c.error = "parity gate: " + "; ".join(twin.report["failures"][:2])
                return
            got = evaluate.runtime_scores(twin.runner()[0], self.work.tokenizer, self.work.eval_data, self.ml,
                                          self.num_labels)
            c.size_bytes = twin.size_bytes
        c.metric, c.accuracy = got[self.metric], got["accuracy"]

    def search(self, cands: list[Candidate], tmp: Path) -> Candidate | None:
        """The fastest candidate within the budget (None if none is)."""
        from tqdm.auto import tqdm

        s = self.s
        calib_cache: dict = {}
        ok = sorted((c for c in cands if c.ms is not None and not c.error), key=lambda c: c.ms)
        incumbent: Candidate | None = None

        def within(c: Candidate) -> bool:
            return c.metric is not None and not c.error and self.drop_points(c.metric) <= s.max_accuracy_drop + 1e-9

        # The unpruned shape needs no training: its variants, fastest first, give the first incumbent.
        base_shape = (0.0, 0.0, 0.0)
        pw0, _ = self.prune(base_shape)
        shared0: dict = {}
        for c in (c for c in ok if c.shape == base_shape):
            self.score_variant(c, pw0, tmp, shared0, calib_cache)
            self.say(f"search: {c.key}: {self.metric} {self._fmt(c)}")
            if within(c):
                incumbent = c
                break
        self.event("unpruned scored", incumbent=incumbent.key if incumbent else None)
        by_shape: dict[tuple, list[Candidate]] = {}
        for c in ok:
            by_shape.setdefault(c.shape, []).append(c)
        order = [sh for sh in dict.fromkeys(c.shape for c in ok) if sh != base_shape]  # fastest first
        undecided = [sh for sh in order if incumbent is None or by_shape[sh][0].ms < incumbent.ms]
        self.rule_out([sh for sh in order if sh not in undecided], "slower than the incumbent")
        bar = tqdm(total=len(undecided), desc="search: training candidates", unit="shape",
                   disable=not self.work.progress)
        self.before_training(bisection_order(undecided), {sh: by_shape[sh][0].ms for sh in undecided}, incumbent)
        full_s: list[float] = []  # wall time of the trainings that ran to the end in this run
        try:
            while undecided:
                left = self.left_s()
                if left is not None and left <= 0:
                    self.rule_out(undecided, "time budget spent")
                    break
                shape = pick(undecided)
                if left is not None and full_s and left < min(full_s) and not self.costs_nothing(shape):
                    self.say(f"search: {left / 60:.1f} min of the budget left, a training takes "
                             f"{min(full_s) / 60:.1f}: {len(undecided)} shapes not started")
                    self.rule_out(undecided, f"time budget: {left:.0f} s left, a training took {min(full_s):.0f} s")
                    break
                undecided.remove(shape)
                trained = self.train(shape)
                bar.update(1)
                trial = self.trials.get(shape_key(shape), {})
                if trained is not None and trial.get("state") == "complete" and not trial.get("resumed"):
                    full_s.append(float(trial.get("train_s") or 0.0))
                found = None if trained is None else self.first_within(by_shape[shape], trained, incumbent,
                                                                       within, tmp, calib_cache)
                if found is not None:  # only a faster shape can beat it
                    incumbent = found
                    ruled = [sh for sh in undecided if by_shape[sh][0].ms >= incumbent.ms]
                    self.rule_out(ruled, "slower than the incumbent")
                elif trial.get("state") in ("pruned", "complete"):  # judged: it misses the budget
                    ruled = [sh for sh in undecided if at_least_as_pruned(sh, shape)]
                    self.rule_out(ruled, f"pruned at least as far as {shape_key(shape)}, which missed the budget")
                else:  # stopped by the time budget, or failed: no verdict on other shapes
                    ruled = []
                undecided = [sh for sh in undecided if sh not in ruled]
                bar.total = bar.n + len(undecided)
                bar.refresh()
        finally:
            bar.close()
            self.after_training()
        if incumbent is None:  # none within budget: the most accurate candidate scored
            scored = [c for c in cands if c.metric is not None and not c.error]
            if scored:
                incumbent = max(scored, key=lambda c: (c.metric, -(c.ms or math.inf)))
                incumbent.fallback = True
        return incumbent

    def first_within(self, variants: list, trained, incumbent: Candidate | None, within, tmp: Path,
                     calib_cache: dict) -> Candidate | None:
        """Score a trained shape's variants fastest first, while faster than the incumbent; the first
        within the budget (now the incumbent, announced to the executor), else None."""
        shared: dict = {}
        for c in variants:
            if incumbent is not None and c.ms >= incumbent.ms:
                return None
            self.score_variant(c, trained, tmp, shared, calib_cache)
            self.say(f"search: {c.key}: {self.metric} {self._fmt(c)}")
            if within(c):
                self.event("new incumbent", candidate=c.key, ms=c.ms, drop_points=self.drop_points(c.metric))
                self.on_incumbent(c)
                return c
        return None

    def _fmt(self, c: Candidate) -> str:
        if c.error:
            return f"– ({c.error[:100]})"
        return f"{100 * c.metric:.2f} ({-self.drop_points(c.metric):+.2f} points), {c.ms:.3f} ms"

    # Hooks of the search loop for executors that train several shapes at once (compress/raysearch.py):
    # `worth` (shapes to train, in `bisection_order`, with their fastest variant's ms) before the loop,
    # each new incumbent, the shapes ruled out, and the end of the loop. In this process: nothing to do.
    def before_training(self, worth: list, fastest_ms: dict, incumbent: Candidate | None) -> None:
        pass

    def on_ruled_out(self, shapes: list) -> None:
        pass

    def costs_nothing(self, shape) -> bool:
        """The shape's result needs no new training (an earlier run of this study settled it)."""
        return self.earlier_trial(shape_key(shape)) is not None

    def rule_out(self, shapes: list, why: str) -> None:
        """Shapes the search will not train (their trials' row says why); executors drop them too."""
        for sh in shapes:
            self.trials.setdefault(shape_key(sh), {"state": "skipped", "why": why})
        if shapes:
            self.event("ruled out", shapes=[shape_key(sh) for sh in shapes], why=why)
            self.on_ruled_out(list(shapes))

    def on_incumbent(self, c: Candidate) -> None:
        pass

    def after_training(self) -> None:
        pass

    def earlier_trial(self, key: str):
        """The trial of this study that settled shape `key` before (PRUNED, or COMPLETE with its
        student's weights kept), else None."""
        from optuna.trial import TrialState

        for t in self.study.trials:
            if t.user_attrs.get("shape") != key:
                continue
            if t.state is TrialState.PRUNED or (
                    t.state is TrialState.COMPLETE and (self.root / key / "model.safetensors").is_file()):
                return t
        return None

    def train(self, shape) -> Any:
        """Train a pruned shape with rungs (an Optuna trial); the trained Work, or None if it was
        stopped. A trial this study finished before is reused (its student's weights)."""
        found, tw = self.from_study(shape)
        if found:
            return tw
        pw, pcfg = self.prune(shape)
        trial = self.new_trial(shape)

        def report(k: int, drop: float) -> bool:
            trial.report(drop, k)
            return trial.should_prune()

        cb = _rung_callback(self.s.rungs, lambda m: self.drop_points(self.scores_of(m)[self.metric]), report,
                            self.deadline)
        tw = dataclasses.replace(pw, model=copy.deepcopy(pw.model), details=dict(pw.details),
                                 recover_callbacks=[cb], progress=self.work.progress)
        t0 = time.monotonic()
        self.say(f"search: training {shape_key(shape)} (recovery: {self.rcfg.epochs:g} epochs"
                 + (f", at least {self.rcfg.min_steps} steps)" if self.rcfg.min_steps else ")")
                 + (f"; {self.left_s() / 60:.1f} min of the budget left" if self.deadline else ""))
        tw = HANDLERS[RecoverConfig](tw, self.rcfg)
        took = time.monotonic() - t0
        tw.recover_callbacks = []
        drop = None if cb.stopped else self.drop_points(self.scores_of(tw.model)[self.metric])
        return self.finish_trial(shape, trial, stopped=cb.stopped, drops=cb.drops, took=took, tw=tw, drop=drop)

    def new_trial(self, shape):
        """A new Optuna trial for a shape (RUNNING in the study until told)."""
        self.study.enqueue_trial({"heads": shape[0], "ffn": shape[1], "layers": shape[2]})
        trial = self.study.ask()
        for name in ("heads", "ffn", "layers"):
            trial.suggest_float(name, 0.0, 1.0)
        trial.set_user_attr("shape", shape_key(shape))
        return trial

    def finish_trial(self, shape, trial, *, stopped: str | None, drops: dict, took: float, tw=None,
                     drop: float | None = None) -> Any:
        """Tell the study how a shape's training ended (its rungs' drops were reported already);
        keep a finished student's weights for resume. The trained Work, or None if stopped."""
        from optuna.trial import TrialState

        key, wdir = shape_key(shape), self.root / shape_key(shape)
        if stopped:
            state = TrialState.PRUNED if stopped.startswith("pruned") else TrialState.FAIL
            self.study.tell(trial, state=state)
            self.trials[key] = {"state": "pruned" if state is TrialState.PRUNED else "stopped", "why": stopped,
                                "drops": drops, "train_s": round(took, 1)}
            self.event("trial stopped", shape=key, why=stopped, drops=drops)
            self.say(f"search: {key}: {stopped} (drops {', '.join(f'{d:+.2f}' for d in drops.values())}) "
                     f"after {took:.0f} s")
            return None
        from safetensors.torch import save_file

        wdir.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in tw.model.state_dict().items()}, str(wdir / "model.safetensors"))
        trial.set_user_attr("recovery", json.loads(json.dumps(tw.details.get("recovery"), default=str)))
        self.study.tell(trial, drop)
        self.trials[key] = {"state": "complete", "drop_points": drop, "drops": drops, "train_s": round(took, 1)}
        self.event("trial complete", shape=key, drop_points=drop, train_s=round(took, 1))
        # the change from the uncompressed model, signed like the variants' lines (_fmt): + is a gain
        self.say(f"search: {key}: trained in {took:.0f} s, fp32 {-drop:+.2f} points")
        self.trained[shape] = tw
        return tw

    def from_study(self, shape) -> tuple[bool, Any]:
        """(True, the trained Work or None if it was stopped) for a shape an earlier run settled;
        (False, None) for one still to train."""
        from optuna.trial import TrialState

        key = shape_key(shape)
        wdir = self.root / key
        t = self.earlier_trial(key)
        if t is not None:
            if t.state is TrialState.PRUNED:
                self.trials[key] = {"state": "pruned", "resumed": True, "drops": t.intermediate_values}
                self.say(f"search: {key}: stopped in an earlier run (drops {t.intermediate_values})")
                return True, None
            if t.state is TrialState.COMPLETE:
                from safetensors.torch import load_file

                pw, pcfg = self.prune(shape)
                tw = dataclasses.replace(pw, model=copy.deepcopy(pw.model), details=dict(pw.details))
                tw.model.load_state_dict(load_file(str(wdir / "model.safetensors")))
                tw.model.eval()
                tw.details["recovery"] = t.user_attrs.get("recovery")
                self.trials[key] = {"state": "complete", "resumed": True, "drop_points": t.value}
                self.say(f"search: {key}: trained in an earlier run ({t.value:+.2f} points fp32)")
                self.trained[shape] = tw
                return True, tw
        return False, None

    def publish(self, cands, base_ms, winner: Candidate | None):
        """The winner's Work (quantized as measured) and details.search."""

        s = self.s
        met = winner is not None and not winner.fallback
        if winner is None:  # nothing scored at all (every export failed): the unpruned model, fp32
            self.say("search: no candidate could be exported and scored; saved the uncompressed model")
            shape, scheme, runtime = (0.0, 0.0, 0.0), "none", "pytorch"
        else:
            shape, scheme, runtime = winner.shape, winner.scheme, winner.runtime
        base = self.trained.get(shape) or self.prune(shape)[0]
        qw, qcfg = self.quantized(base, scheme, timing=False)
        pcfg = self.prune(shape)[1]
        rows = []
        for c in sorted(cands, key=lambda c: (c.ms is None, c.ms or 0)):
            row = {"heads": c.shape[0], "ffn": c.shape[1], "layers": c.shape[2], "runtime": c.runtime,
                   "scheme": c.scheme, **{f"{k}_kept": v for k, v in c.dims.items()},
                   "latency_ms": c.ms, "latency_p50_ms": c.p50_ms, "latency_min_ms": c.min_ms,
                   "speedup": (base_ms / c.ms) if c.ms and base_ms else None,
                   "metric": c.metric, "accuracy": c.accuracy,
                   "drop_points": self.drop_points(c.metric) if c.metric is not None else None,
                   "trial": self.trials.get(shape_key(c.shape), {}).get("state")
                   if any(c.shape) else "no training needed",
                   "error": c.error, "winner": c is winner}
            rows.append(row)
        traffic = s.objective == "traffic"
        unit = "ms per sentence" if traffic else "ms per call"
        w = winner
        facts = {
            "strategy": "automatic", "max_accuracy_drop": s.max_accuracy_drop, "met_budget": met,
            "metric": self.metric,
            "baseline": {**{k: v for k, v in self.base.items()}, "latency_ms": base_ms, "size_bytes": self.base_size,
                         "runtime": "PyTorch eager (fp32)"},
            "latency": {"objective": s.objective, "unit": unit, "statistic": s.latency_statistic,
                        "rounds": s.latency_rounds, "threads": s.latency_threads,
                        **({"batch": s.traffic_batch, "sentences": len(self.work.eval_data)} if traffic
                           else {"batch": 1, "seq_len": s.latency_seq_len}),
                        "timing": "every candidate untrained, interleaved with the baseline, before any training"},
            "space": {"heads": list(s.heads), "ffn": list(s.ffn), "layers": list(s.layers), "schemes": self.schemes,
                      "runtimes": self.runtimes, "rungs": list(s.rungs), "rung_slack": list(s.rung_slack),
                      "recover": to_tagged(self.rcfg)},
            "time_budget_min": s.time_budget, "wall_s": round(time.monotonic() - self.start, 1),
            "eval_data": self.work.eval_data.source, "eval_samples": len(self.work.eval_data),
            "eval_seed": self.cfg.seed,  # export's gate draws the same rows (export.api.resolve_searched)
            "trials": self.trials, "timeline": self.timeline, "table": rows,
            "study": {"storage": str(self.root / "study.db"), "name": self.study.study_name},
            "winner": {"heads": shape[0], "ffn": shape[1], "layers": shape[2], "scheme": scheme, "runtime": runtime},
            "winner_recipe": to_tagged(dataclasses.replace(self.cfg, search=None, prune=pcfg, quantize=qcfg,
                                                           recover=self.rcfg if any(shape) else self.cfg.recover)),
            "deploy": {"runtime": runtime, "format": FORMAT_OF.get(runtime), "scheme": scheme,
                       "metric": self.metric, "value": w.metric if w else None,
                       "accuracy": w.accuracy if w else None, "latency_ms": w.ms if w else None, "unit": unit},
        }
        wm = {"eval_accuracy": w.accuracy if w else None, "eval_accuracy_uncompressed": self.base["accuracy"],
              "metric": self.metric, f"eval_{self.metric}": w.metric if w else None,
              f"eval_{self.metric}_uncompressed": self.base[self.metric],
              "accuracy_drop_points": self.drop_points(w.metric) if w and w.metric is not None else None,
              "latency_ms": w.ms if w else None, "latency_ms_uncompressed": base_ms,
              "latency_statistic": s.latency_statistic, "latency_p50_ms": w.p50_ms if w else None,
              "latency_min_ms": w.min_ms if w else None, "runtime": runtime,
              "speedup_vs_fp32_pytorch_eager": (base_ms / w.ms) if w and w.ms else None, "met_budget": met,
              "eval_data": self.work.eval_data.source, "eval_samples": len(self.work.eval_data),
              "objective": s.objective, "latency_unit": unit, "search_wall_s": facts["wall_s"]}
        if traffic and w and w.ms:
            wm.update(sentences_per_s=1000.0 / w.ms, sentences_per_s_uncompressed=1000.0 / base_ms)
        facts["winner_metrics"] = wm
        if runtime != "pytorch":
            facts["export_hint"] = (f"the searched model is this artifact exported to {FORMAT_OF[runtime]} with "
                                    f"{scheme} int8: `bertpress export` with no --format writes exactly that")
        self.say(format_auto_table(rows, self.metric, unit))
        if not met:
            self.say(f"search: no candidate was within {s.max_accuracy_drop} points; saved the most accurate one")
        return qw, facts


def format_auto_table(rows: list[dict[str, Any]], metric: str, unit: str) -> str:
    """The automatic search's table in markdown, fastest first."""
    lines = [f"| layers | heads | ffn | runtime | scheme | {unit} | speed-up | {metric} | Δ points | training | |",
             "|" + "---|" * 11]

    def num(x, fmt):
        return "–" if x is None else fmt.format(x)

    for r in rows:
        mark = "**winner**" if r.get("winner") else (r["error"][:80].replace("|", "/") if r.get("error") else "")
        lines.append(f"| {r.get('layers_kept', '?')} | {r.get('heads_kept', '?')} | {r.get('ffn_kept', '?')} | "
                     f"{r['runtime']} | {r['scheme']} | {num(r['latency_ms'], '{:.3f}')} | "
                     f"{num(r['speedup'], '{:.2f}x')} | {num(r['metric'] and 100 * r['metric'], '{:.2f}')} | "
                     f"{num(r['drop_points'] if r['drop_points'] is None else -r['drop_points'], '{:+.2f}')} | "
                     f"{r.get('trial') or 'not trained'} | {mark} |")
    return "\n".join(lines)
