"""Typed configs of the compress stage: one frozen dataclass per method, and CompressConfig
holding them. Each registers with `bertpress.config` (tagged JSON, round-trip tested) and
validates in `__post_init__` with messages that carry the received value, what is allowed and
the fix. Methods are applied by the handler registered for their config type (`api.HANDLERS`).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Optional

from bertpress.config import (as_enum, check_columns, check_range, comma_list, flag, nested, register_config,
                              set_frozen)
from bertpress.errors import ConfigError
# RecoverConfig configures finetune.recover and lives with it; importable here too (recipes, tagged JSON).
from bertpress.finetune.config import RecoverConfig  # noqa: F401 - re-exported
from bertpress.names import CALIBRATION_METHODS, SEARCH_RUNTIMES, Scheme, str_enum
from bertpress.signature import TRAFFIC_BATCH_SIZE

# The recorded methods (bertpress.names) and "auto": calibrate with every method, keep the best on the eval set.
CalibrationMethod = str_enum("CalibrationMethod", (*CALIBRATION_METHODS, "auto"), __name__)


class Importance(str, enum.Enum):
    TAYLOR = "taylor"  # |w * dL/dw| from a few labelled calibration batches
    MAGNITUDE = "magnitude"  # L2 norm of the weights; needs no data


class LinearScope(str, enum.Enum):
    ENCODER = "encoder"  # the 6 Linear layers of every encoder layer
    ALL = "all"  # encoder + pooler + classifier


def _check_optional_str(value, field: str) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ConfigError(f"{field}={value!r} must be a data spec (file, directory or datasets id) or null")


@register_config()
@dataclasses.dataclass(frozen=True)
class QuantizeConfig:
    """int8 quantization of nn.Linear layers (x86: u8 activations x s8 per-channel weights)."""

    scheme: Scheme = flag(Scheme.DYNAMIC, name="--quantize", help="int8 scheme for the Linear layers")
    calibration_data: Optional[str] = flag(  # needed by `static`
        None, help="labelled data (file, directory with train/dev, or datasets id) for static calibration, Taylor "
                   "importance and recovery; its train split is used")
    calibration_samples: int = flag(128, help="samples for static calibration")
    calibration_method: CalibrationMethod = flag(
        CalibrationMethod.MINMAX, help="activation range method; auto tries all three and keeps the best on --eval-data")
    percentile: float = 99.99  # used by `percentile` calibration
    scope: LinearScope = flag(LinearScope.ENCODER, name="--quantize-scope",
                              help="which Linear layers: the encoder's, or also pooler + classifier")
    per_channel: bool = True
    batch_size: int = 16
    max_length: int = 128

    def __post_init__(self) -> None:
        set_frozen(self, "scheme", as_enum(Scheme, self.scheme, "quantize.scheme"))
        set_frozen(self, "calibration_method",
                   as_enum(CalibrationMethod, self.calibration_method, "quantize.calibration_method"))
        set_frozen(self, "scope", as_enum(LinearScope, self.scope, "quantize.scope"))
        _check_optional_str(self.calibration_data, "quantize.calibration_data")
        check_range(self.calibration_samples, "quantize.calibration_samples", low=1, integer=True)
        check_range(self.percentile, "quantize.percentile", low=90.0, high=100.0, low_inclusive=True,
                    high_inclusive=False)
        check_range(self.batch_size, "quantize.batch_size", low=1, integer=True)
        check_range(self.max_length, "quantize.max_length", low=8, integer=True)
        if not isinstance(self.per_channel, bool):
            raise ConfigError(f"quantize.per_channel={self.per_channel!r} must be true or false")
        if self.scheme is Scheme.STATIC and self.calibration_data is None:
            raise ConfigError("quantize.scheme='static' needs calibration data; pass --calibration-data SPEC "
                              "(e.g. the training set) or use --quantize dynamic")


@register_config()
@dataclasses.dataclass(frozen=True)
class PruneConfig:
    """Structured pruning of attention heads and FFN channels (torch-pruning dependency groups)."""

    heads: float = flag(0.0, help="fraction of attention heads removed per layer (count = ratio x heads to the "
                                  "nearest whole number, halves up; a ratio that removes none is refused)")
    ffn: float = flag(0.0, help="fraction of FFN channels removed per layer")
    layers: float = flag(0.0, help="fraction of whole encoder layers removed, spread evenly from the first to the "
                                   "last (6 layers, 0.5: keeps 0, 3, 5); pair with --recover-epochs and --recover-hidden-weight")
    importance: Importance = flag(Importance.TAYLOR, name="--importance",
                                  help="channel importance: taylor needs --calibration-data, magnitude is data-free")
    # FFN width kept a multiple of this (int8 GEMM kernels like it)
    round_to: int = flag(64, name="--round-to", help="FFN width kept a multiple of this")
    # labelled data for Taylor importance: the same --calibration-data as quantize's (one flag sets both)
    calibration_data: Optional[str] = flag(None, name="--calibration-data")
    calibration_batches: int = 8
    batch_size: int = 16
    max_length: int = 128

    def __post_init__(self) -> None:
        for name in ("heads", "ffn", "layers"):
            check_range(getattr(self, name), f"prune.{name}", low=0.0, high=1.0, high_inclusive=False)
        set_frozen(self, "importance", as_enum(Importance, self.importance, "prune.importance"))
        _check_optional_str(self.calibration_data, "prune.calibration_data")
        check_range(self.round_to, "prune.round_to", low=1, integer=True)
        check_range(self.calibration_batches, "prune.calibration_batches", low=1, integer=True)
        check_range(self.batch_size, "prune.batch_size", low=1, integer=True)
        check_range(self.max_length, "prune.max_length", low=8, integer=True)
        if self.scores_channels and self.importance is Importance.TAYLOR and self.calibration_data is None:
            raise ConfigError("prune.importance='taylor' needs labelled calibration data; pass "
                              "--calibration-data SPEC, or --importance magnitude (data-free)")

    @property
    def active(self) -> bool:
        return self.heads > 0 or self.ffn > 0 or self.layers > 0

    @property
    def scores_channels(self) -> bool:
        """Whether heads or FFN channels are chosen by importance (whole layers are not scored)."""
        return self.heads > 0 or self.ffn > 0


def _parse_ratio_pair(item, i: int) -> tuple[float, ...]:
    """(heads, ffn) or (heads, ffn, layers) pruning ratios, from "h:f[:l]" or a list."""
    if isinstance(item, str):
        parts = item.split(":")
        try:
            item = [float(p) for p in parts]
        except ValueError:
            item = parts
    if not isinstance(item, (list, tuple)) or len(item) not in (2, 3):
        raise ConfigError(f"search.schedule[{i}]={item!r} must be heads:ffn or heads:ffn:layers pruning ratios "
                          "such as '0.25:0.5' or '0:0.25:0.5'")
    for name, value in zip(("heads", "ffn", "layers"), item):
        check_range(value, f"search.schedule[{i}].{name}", low=0.0, high=1.0, high_inclusive=False)
    return tuple(float(x) for x in item)


def schedule_ratios(item) -> tuple[float, float, float]:
    """(heads, ffn, layers) of one search.schedule entry (a pair means no layer removed)."""
    heads, ffn, *rest = item
    return float(heads), float(ffn), float(rest[0]) if rest else 0.0


LATENCY_STATISTICS = ("p50", "min")
SEARCH_OBJECTIVES = ("latency", "traffic")  # what "fastest" means: see SearchConfig.objective
WALK_SCHEDULE = ((0.0, 0.0, 0.0), (0.25, 0.25, 0.0), (0.5, 0.5, 0.0))  # the walk's ratios when none are given
EXECUTORS = ("local", "ray")  # where the automatic search's trials run (compress/raysearch.py)
# How a search runs, not what it finds: left out of the study's identity (a run resumes under another executor).
EXECUTION_FIELDS = ("time_budget", "executor", "ray_address", "parallel_trials")


@register_config()
@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Find the fastest compressed model within an accuracy budget.

    Two strategies, chosen by `schedule`:
    - None (the default): the automatic search (compress/autosearch.py). Its space is
      `layers` x `ffn` x `heads` pruning ratios x int8 `schemes` x deploy runtimes; every
      candidate's speed is measured before any training, then the shapes are trained by bisection
      over their speed order (layer-wise distillation, successive halving at the rungs; a miss
      rules out the shapes pruned further), and the search stops as soon as the fastest candidate
      within the budget is known, or `time_budget` minutes are spent.
    - a list of heads:ffn[:layers] ratios: the exhaustive walk over exactly those ratios x
      `schemes`, each recovered with compress's `recover` settings and ranked in `runtime`
      (compress/search.py; the expert's narrow search).
    """

    # The command line's flags: --max-accuracy-drop turns the search on (no default there); the
    # others are `unset` (absent unless given: compress.cli refuses one without the search) and
    # their help states the default below.
    max_accuracy_drop: float = flag(  # points (0-100 scale) of the task's metric below the uncompressed model
        1.0, cli_default=None,
        help="points of the task's metric you accept to lose (accuracy; F1 for binary pairs; macro-F1 above two "
             "classes); turns on the search for the fastest model within it (needs --eval-data and "
             "--calibration-data). Without --search-schedule it is the automatic search: whole layers x FFN width "
             "x heads x int8 schemes x the deploy runtimes on this host, every candidate timed before any "
             "training, then trained by bisection over their speed (layer-wise distillation, stopped early when they "
             "cannot make the budget; a shape that misses rules out those pruned further)")
    eval_samples: Optional[int] = flag(None, unset=True, shown="all",  # subset of the eval set (None = all)
                                       help="random subset of the eval data in the search")
    time_budget: Optional[float] = flag(  # minutes for the whole automatic search (None = no limit)
        None, unset=True, shown="no limit", metavar="MINUTES",
        help="bound the automatic search's wall time: a training that would run past it stops and the fastest "
             "candidate within the accuracy budget found so far is kept")
    # The automatic search's space: fractions of whole layers, of FFN channels and of heads removed.
    layers: tuple = flag((0.0, 1 / 3, 0.5), name="--search-layers", type=comma_list, unset=True, shown="0,0.333,0.5",
                         metavar="F,F", help="the automatic search's fractions of whole layers removed")
    ffn: tuple = flag((0.0, 0.5, 0.75), name="--search-ffn", type=comma_list, unset=True, metavar="F,F",
                      help="the automatic search's fractions of FFN channels removed")
    heads: tuple = flag((0.0, 0.5), name="--search-heads", type=comma_list, unset=True, metavar="F,F",
                        help="the automatic search's fractions of attention heads removed")
    schedule: Optional[tuple] = flag(  # (heads, ffn[, layers]) ratios: the exhaustive walk; None = automatic
        None, name="--search-schedule", type=comma_list, unset=True, shown="the automatic search",
        help="comma-separated heads:ffn[:layers] pruning ratios, e.g. 0:0.25,0:0:0.5: walk exactly these (each "
             "recovered with the --recover-* settings) instead of the automatic search")
    schemes: Optional[tuple] = flag(  # None = dynamic,static (automatic) / none,dynamic,static (walk)
        None, name="--search-schemes", type=comma_list, unset=True,
        shown="dynamic,static in the automatic search; none,dynamic,static with --search-schedule",
        help="comma-separated quantization schemes to try")
    latency_seq_len: int = 128
    latency_min_seconds: float = 1.0
    # Which per-call statistic ranks candidates: p50, or min (robust on a CPU shared with other
    # jobs, where preemption inflates the median; both are always recorded).
    latency_statistic: str = flag("p50", choices=LATENCY_STATISTICS, unset=True,
                                  help="per-call statistic that ranks candidates; min resists noise from other jobs")
    # Candidates are timed interleaved (baseline, c1, c2, ... repeated this many rounds): a burst
    # of load on a shared machine then hits every candidate alike.
    latency_rounds: int = flag(3, unset=True, help="interleaved timing rounds over all candidates; "
                                                  "median p50, best min")
    latency_threads: Optional[int] = flag(  # None = torch's current setting
        None, unset=True, shown="torch's setting",
        help="threads while timing: torch's, and the deploy runtime's sessions")
    # The walk: where candidates are scored and timed: "pytorch" (eager, the compressed model as
    # saved) or "onnxruntime" (each candidate exported as `bertpress export` would, int8 in ORT;
    # its ORT accuracy and latency rank it) or "openvino" (the same with `--format openvino`: NNCF
    # int8, OpenVINO's default precision). The automatic search: the one runtime to search in
    # (None = every deploy runtime this host has). Speed-ups are always against the fp32 model in
    # PyTorch eager.
    runtime: Optional[str] = flag(
        None, name="--search-runtime", choices=SEARCH_RUNTIMES, unset=True,
        shown="every deploy runtime this host has; pytorch with --search-schedule",
        help="the automatic search: search in this runtime only (those this host has are all searched "
             "otherwise). With --search-schedule: score and time each candidate in PyTorch eager, or in the "
             "runtime you deploy: as the ONNX Runtime model `bertpress export` makes of it, or the OpenVINO IR of "
             "`bertpress export --format openvino` (exported per candidate; its accuracy and latency in that "
             "runtime rank it; a candidate that fails to export is listed, not chosen). Speed-ups are against the "
             "fp32 model in PyTorch eager either way")
    # What "fastest" means: "latency" = one call at batch 1 x latency_seq_len (padded), the
    # interactive case; "traffic" = a pass over the eval set's own texts in length-sorted
    # batches of traffic_batch_size, dynamic padding, tokenization included (bench's real
    # traffic), ranked by time per sentence: the server case, where per-layer work that is not
    # a GEMM weighs more on short texts and the ranking can differ (docs/results/layers.md §11).
    objective: str = flag(
        "latency", name="--search-objective", choices=SEARCH_OBJECTIVES, unset=True,
        help="what fastest means: latency = one call at batch 1 x 128 tokens (interactive use); traffic = passes "
             "over the --eval-data texts in length-sorted batches of --search-batch-size, dynamic padding, "
             "tokenization included (a server's load, as bench's real traffic), ranked by time per sentence")
    # None = bench's default (TRAFFIC_BATCH_SIZE); only with "traffic"
    traffic_batch_size: Optional[int] = flag(
        None, name="--search-batch-size", metavar="N", unset=True, shown=str(TRAFFIC_BATCH_SIZE),
        help="batch size of the traffic objective, as bench's --traffic-batch-size")
    # Successive halving over recovery: a candidate is scored at these fractions of its training
    # and stopped when it is more than max_accuracy_drop + the rung's slack (points) behind.
    rungs: tuple = (0.125, 0.25, 0.5)
    rung_slack: tuple = (6.0, 3.0, 1.5)
    # Where the automatic search's trials run (compress/raysearch.py): "local" = in this process,
    # one at a time (on one machine with several GPUs and Ray installed, one trial per GPU through
    # a local Ray runtime); "ray" = as Ray tasks, several at once, on a local runtime or the
    # cluster at ray_address. Same space, stop rule, table and winner either way.
    executor: str = flag("local", choices=EXECUTORS, unset=True, group="search on many devices",
                         help="where the automatic search trains its candidates: local = in this process (one "
                              "trial per GPU when there are several and Ray is installed); ray = as Ray tasks, "
                              "several at once (pip install 'bertpress[ray]')")
    ray_address: Optional[str] = flag(None, unset=True, shown="a local Ray runtime sized to this machine",
                                      metavar="HOST:PORT", group="search on many devices",
                                      help="with --executor ray: join this Ray cluster (its GCS address, "
                                           "e.g. head:6379, or ray://head:10001)")
    parallel_trials: Optional[int] = flag(None, unset=True, shown="as many as the Ray runtime holds",
                                          metavar="N", group="search on many devices",
                                          help="with --executor ray: trials at once (each takes 1 GPU where the "
                                               "cluster has GPUs, else its share of the CPUs)")

    @property
    def traffic_batch(self) -> int:
        """The traffic objective's batch size (traffic_batch_size, else signature.TRAFFIC_BATCH_SIZE)."""
        return self.traffic_batch_size or TRAFFIC_BATCH_SIZE

    @property
    def auto(self) -> bool:
        """The automatic search (no explicit schedule), else the exhaustive walk."""
        return self.schedule is None

    @property
    def walk_schedule(self) -> tuple:
        """The walk's ratios (its default when the config is automatic: used for up-front checks)."""
        return self.schedule if self.schedule is not None else WALK_SCHEDULE

    @property
    def scheme_list(self) -> tuple:
        """The schemes to try (the strategy's default when none were given)."""
        if self.schemes is not None:
            return self.schemes
        return (Scheme.DYNAMIC, Scheme.STATIC) if self.auto else (Scheme.NONE, Scheme.DYNAMIC, Scheme.STATIC)

    @property
    def walk_runtime(self) -> str:
        return self.runtime or "pytorch"

    def auto_shapes(self) -> tuple:
        """(heads, ffn, layers) ratios of the automatic search's space, the unpruned shape first."""
        return tuple((h, f, l) for l in self.layers for f in self.ffn for h in self.heads)

    def __post_init__(self) -> None:
        check_range(self.max_accuracy_drop, "search.max_accuracy_drop", low=0.0, high=100.0)
        if self.schedule is not None:
            if not isinstance(self.schedule, (list, tuple)) or not self.schedule:
                raise ConfigError(f"search.schedule={self.schedule!r} must be a non-empty list of heads:ffn[:layers] "
                                  "ratios")
            set_frozen(self, "schedule", tuple(_parse_ratio_pair(x, i) for i, x in enumerate(self.schedule)))
        if self.schemes is not None:
            if not isinstance(self.schemes, (list, tuple)) or not self.schemes:
                raise ConfigError(f"search.schemes={self.schemes!r} must be a non-empty list of: none, dynamic, "
                                  "static")
            set_frozen(self, "schemes", tuple(as_enum(Scheme, s, "search.schemes") for s in self.schemes))
        check_range(self.latency_seq_len, "search.latency_seq_len", low=1, integer=True)
        if self.latency_threads is not None:
            check_range(self.latency_threads, "search.latency_threads", low=1, integer=True)
        check_range(self.latency_min_seconds, "search.latency_min_seconds", low=0.0)
        check_range(self.latency_rounds, "search.latency_rounds", low=1, integer=True)
        if self.latency_statistic not in LATENCY_STATISTICS:
            raise ConfigError(f"search.latency_statistic={self.latency_statistic!r} is not valid; choose "
                              f"{' or '.join(LATENCY_STATISTICS)}")
        if self.eval_samples is not None:
            check_range(self.eval_samples, "search.eval_samples", low=1, integer=True)
        if self.objective not in SEARCH_OBJECTIVES:
            raise ConfigError(f"search.objective={self.objective!r} is not valid; choose "
                              f"{' or '.join(SEARCH_OBJECTIVES)}")
        if self.traffic_batch_size is not None:
            check_range(self.traffic_batch_size, "search.traffic_batch_size", low=1, high=4096, integer=True)
            if self.objective != "traffic":
                raise ConfigError(f"search.traffic_batch_size={self.traffic_batch_size} sizes the traffic objective's "
                                  "batches; set search.objective: traffic (--search-objective traffic) or drop it")
        if self.runtime is not None and self.runtime not in SEARCH_RUNTIMES:
            raise ConfigError(f"search.runtime={self.runtime!r} is not valid; choose {' or '.join(SEARCH_RUNTIMES)}")
        for name in ("layers", "ffn", "heads"):
            values = getattr(self, name)
            if isinstance(values, (int, float, str)):
                values = (values,)
            if not isinstance(values, (list, tuple)) or not values:
                raise ConfigError(f"search.{name}={values!r} must be a non-empty list of fractions such as 0,0.5")
            parsed = []
            for i, v in enumerate(values):
                try:
                    v = float(v) if isinstance(v, str) else v
                except ValueError:
                    raise ConfigError(f"search.{name}[{i}]={v!r} is not a fraction; give numbers such as 0,0.5") \
                        from None
                check_range(v, f"search.{name}[{i}]", low=0.0, high=1.0, high_inclusive=False)
                parsed.append(float(v))
            set_frozen(self, name, tuple(sorted(set(parsed))))
        if self.time_budget is not None:
            check_range(self.time_budget, "search.time_budget", low=0.0, low_inclusive=False)
        if self.executor not in EXECUTORS:
            raise ConfigError(f"search.executor={self.executor!r} is not valid; choose {' or '.join(EXECUTORS)}")
        if self.parallel_trials is not None:
            check_range(self.parallel_trials, "search.parallel_trials", low=1, integer=True)
        if self.executor != "ray" and (self.ray_address is not None or self.parallel_trials is not None):
            what = "--ray-address" if self.ray_address is not None else "--parallel-trials"
            raise ConfigError(f"search: {what} applies to the Ray executor; add --executor ray or drop {what}")
        if self.ray_address is not None and (not isinstance(self.ray_address, str) or not self.ray_address.strip()):
            raise ConfigError(f"search.ray_address={self.ray_address!r} must be a Ray address such as head:6379")
        if not isinstance(self.rungs, (list, tuple)) or not isinstance(self.rung_slack, (list, tuple)) \
                or len(self.rungs) != len(self.rung_slack):
            raise ConfigError(f"search.rungs={self.rungs!r} and search.rung_slack={self.rung_slack!r} must be lists "
                              "of the same length (one slack per rung)")
        for i, (f, sl) in enumerate(zip(self.rungs, self.rung_slack)):
            check_range(f, f"search.rungs[{i}]", low=0.0, low_inclusive=False, high=1.0, high_inclusive=False)
            check_range(sl, f"search.rung_slack[{i}]", low=0.0)
        set_frozen(self, "rungs", tuple(float(x) for x in self.rungs))
        set_frozen(self, "rung_slack", tuple(float(x) for x in self.rung_slack))
        if not self.auto:
            for name, default in (("layers", (0.0, 1 / 3, 0.5)), ("ffn", (0.0, 0.5, 0.75)), ("heads", (0.0, 0.5))):
                if getattr(self, name) != tuple(sorted(default)):
                    raise ConfigError(f"search.{name} sets the automatic search's space, but search.schedule "
                                      "chose the walk over its ratios; drop one of them")
            if self.time_budget is not None:
                raise ConfigError("search.time_budget bounds the automatic search; drop search.schedule "
                                  "(--search-schedule) or the time budget")
            if self.executor != "local":
                raise ConfigError("search.executor runs the automatic search's trials; drop search.schedule "
                                  "(--search-schedule) or --executor")
        if not self.auto and self.walk_runtime == "pytorch" and not any(
                any(schedule_ratios(r)) or s is not Scheme.NONE for r in self.schedule for s in self.scheme_list):
            raise ConfigError("search has no candidate besides the uncompressed baseline (0:0 x none); "
                              "add a pruning ratio to --search-schedule or an int8 scheme to --search-schemes")


@register_config()
@dataclasses.dataclass(frozen=True)
class CompressConfig:
    """What `compress` does: prune -> recover -> quantize, or a search over those (if `search`)."""

    quantize: QuantizeConfig = nested(default_factory=QuantizeConfig, group="quantization")
    prune: PruneConfig = nested(default_factory=PruneConfig, group="pruning", prefix="prune-")
    recover: RecoverConfig = nested(default_factory=RecoverConfig, group="recovery", prefix="recover-")
    search: Optional[SearchConfig] = nested(None, group="search")
    eval_data: Optional[str] = flag(None, group="search",  # labelled; used for metrics, `auto` calibration and search
                                    help="labelled eval data (its dev split) for metrics and search")
    eval_split: str = "dev"
    seed: int = flag(0, help="random seed for subsets")
    # Columns of the eval/calibration/recovery data; None: the ones the checkpoint was trained on
    # (its manifest) where the data has them, else detected (bertpress.data).
    text_column: Optional[str] = None
    text_pair_column: Optional[str] = None
    label_column: Optional[str] = None

    def __post_init__(self) -> None:
        for name, cls in (("quantize", QuantizeConfig), ("prune", PruneConfig), ("recover", RecoverConfig)):
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"compress.{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}")
        if self.search is not None and not isinstance(self.search, SearchConfig):
            raise ConfigError(f"compress.search must be a SearchConfig or null, got {type(self.search).__name__}")
        _check_optional_str(self.eval_data, "compress.eval_data")
        check_range(self.seed, "compress.seed", low=0, integer=True)
        check_columns(self.text_column, self.text_pair_column, self.label_column)
        if self.search is not None and self.eval_data is None:
            raise ConfigError("the accuracy search (--max-accuracy-drop) needs --eval-data SPEC (labelled dev data)")
        if (self.quantize.calibration_method is CalibrationMethod.AUTO and self.quantize.scheme is Scheme.STATIC
                and self.eval_data is None):
            raise ConfigError("--calibration-method auto picks the best method on the eval set; pass --eval-data SPEC "
                              "or choose minmax, entropy or percentile")
        if self.recover.active and self.recover.data is None and self.prune.calibration_data is None \
                and self.quantize.calibration_data is None:
            raise ConfigError("recovery (--recover-epochs > 0) needs training data; pass --calibration-data SPEC")
        if self.search is not None and self.search.auto and self.recover_data is None:
            raise ConfigError("the automatic search trains its pruned candidates by distillation, which needs "
                              "training data; pass --calibration-data SPEC (e.g. the training set)")
        shapes = (self.search.auto_shapes() if self.search is not None and self.search.auto
                  else self.search.walk_schedule if self.search is not None else ())
        if (self.search is not None and self.prune.importance is Importance.TAYLOR
                and self.prune.calibration_data is None
                and any(h or f for h, f, _ in map(schedule_ratios, shapes))):
            raise ConfigError("the search prunes with Taylor importance, which needs --calibration-data SPEC; "
                              "pass it, or --importance magnitude")
        if (self.search is not None and Scheme.STATIC in self.search.scheme_list
                and self.quantize.calibration_data is None):
            raise ConfigError("the search includes static int8, which needs --calibration-data SPEC; pass it, or "
                              "limit the search to --search-schemes dynamic")

    @property
    def recover_data(self) -> Optional[str]:
        return self.recover.data or self.prune.calibration_data or self.quantize.calibration_data
