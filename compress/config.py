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
from bertpress.signature import TRAFFIC_BATCH_SIZE


class Scheme(str, enum.Enum):
    NONE = "none"
    DYNAMIC = "dynamic"  # int8 weights, activation ranges measured per call
    STATIC = "static"  # int8 weights, activation ranges calibrated once on real samples


class CalibrationMethod(str, enum.Enum):
    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"
    AUTO = "auto"  # calibrate with every method, keep the best on the eval set


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
    layers: float = flag(0.0, help="fraction of whole encoder layers removed, spread evenly, the last kept (6 layers, "
                                   "0.5: keeps 1, 3, 5); pair with --recover-epochs and --recover-hidden-weight")
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


SEARCH_RUNTIMES = ("pytorch", "onnxruntime", "openvino")
LATENCY_STATISTICS = ("p50", "min")
SEARCH_OBJECTIVES = ("latency", "traffic")  # what "fastest" means: see SearchConfig.objective


@register_config()
@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Walk pruning ratios x quantization schemes; keep the fastest within the accuracy budget."""

    # The command line's flags: --max-accuracy-drop turns the search on (no default there); the
    # others are `unset` (absent unless given: compress.cli refuses one without the search) and
    # their help states the default below.
    max_accuracy_drop: float = flag(  # accuracy points (0-100 scale) below the uncompressed model
        1.0, cli_default=None, help="accuracy points you accept to lose; turns on the search over --search-schedule x "
                                    "--search-schemes (needs --eval-data)")
    eval_samples: Optional[int] = flag(None, unset=True, shown="all",  # subset of the eval set (None = all)
                                       help="random subset of the eval data in the search")
    schedule: tuple = flag(  # (heads, ffn) pruning ratios
        ((0.0, 0.0), (0.25, 0.25), (0.5, 0.5)), name="--search-schedule", type=comma_list, unset=True,
        help="comma-separated heads:ffn[:layers] pruning ratios, e.g. 0:0.25,0:0:0.5")
    schemes: tuple = flag((Scheme.NONE, Scheme.DYNAMIC, Scheme.STATIC), name="--search-schemes", type=comma_list,
                          unset=True, help="comma-separated quantization schemes to try")
    latency_seq_len: int = 128
    latency_min_seconds: float = 1.0
    # Which per-call statistic ranks candidates: p50, or min (robust on a CPU shared with other
    # jobs, where preemption inflates the median; both are always recorded).
    latency_statistic: str = flag("p50", choices=LATENCY_STATISTICS, unset=True,
                                  help="per-call statistic that ranks candidates; min resists noise from other jobs")
    # Candidates are timed after the walk, interleaved (baseline, c1, c2, ... repeated this many
    # rounds): a burst of load on a shared machine then hits every candidate alike.
    latency_rounds: int = flag(3, unset=True, help="interleaved timing rounds over all candidates after the walk; "
                                                  "median p50, best min")
    latency_threads: Optional[int] = flag(  # None = torch's current setting
        None, unset=True, shown="torch's setting",
        help="threads while timing: torch's, and the deploy runtime's sessions")
    # Where candidates are scored and timed: "pytorch" (eager, the compressed model as saved) or
    # "onnxruntime" (each candidate exported as `bertpress export` would, int8 in ORT; its ORT
    # accuracy and latency rank it) or "openvino" (the same with `--format openvino`: NNCF int8,
    # OpenVINO's default precision). Speed-ups are always against the fp32 model in PyTorch eager.
    runtime: str = flag(
        "pytorch", name="--search-runtime", choices=SEARCH_RUNTIMES, unset=True,
        help="score and time each candidate in PyTorch eager, or in the runtime you deploy: as the ONNX Runtime "
             "model `bertpress export` makes of it, or the OpenVINO IR of `bertpress export --format openvino` "
             "(exported per candidate; its accuracy and latency in that runtime rank it; a candidate that fails to "
             "export is listed, not chosen). Speed-ups are against the fp32 model in PyTorch eager either way")
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

    @property
    def traffic_batch(self) -> int:
        """The traffic objective's batch size (traffic_batch_size, else signature.TRAFFIC_BATCH_SIZE)."""
        return self.traffic_batch_size or TRAFFIC_BATCH_SIZE

    def __post_init__(self) -> None:
        check_range(self.max_accuracy_drop, "search.max_accuracy_drop", low=0.0, high=100.0)
        if not isinstance(self.schedule, (list, tuple)) or not self.schedule:
            raise ConfigError(f"search.schedule={self.schedule!r} must be a non-empty list of heads:ffn[:layers] "
                              "ratios")
        set_frozen(self, "schedule", tuple(_parse_ratio_pair(x, i) for i, x in enumerate(self.schedule)))
        if not isinstance(self.schemes, (list, tuple)) or not self.schemes:
            raise ConfigError(f"search.schemes={self.schemes!r} must be a non-empty list of: none, dynamic, static")
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
        if self.runtime not in SEARCH_RUNTIMES:
            raise ConfigError(f"search.runtime={self.runtime!r} is not valid; choose {' or '.join(SEARCH_RUNTIMES)}")
        if self.runtime == "pytorch" and not any(any(schedule_ratios(r)) or s is not Scheme.NONE
                                              for r in self.schedule for s in self.schemes):
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
        if (self.search is not None and self.prune.importance is Importance.TAYLOR
                and self.prune.calibration_data is None
                and any(h or f for h, f, _ in map(schedule_ratios, self.search.schedule))):
            raise ConfigError("the search prunes with Taylor importance, which needs --calibration-data SPEC; "
                              "pass it, or --importance magnitude")
        if self.search is not None and Scheme.STATIC in self.search.schemes and self.quantize.calibration_data is None:
            raise ConfigError("the search includes static int8, which needs --calibration-data SPEC; pass it, or "
                              "limit the search to none,dynamic")

    @property
    def recover_data(self) -> Optional[str]:
        return self.recover.data or self.prune.calibration_data or self.quantize.calibration_data
