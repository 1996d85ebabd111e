"""`BenchConfig`: what a benchmark run measures (it is the report's recipe)."""

from __future__ import annotations

import dataclasses
import enum
import re
from typing import Any

from bertpress.config import as_enum, check_columns, check_range, flag, register_config, set_frozen
from bertpress.errors import ConfigError
from bertpress.signature import TRAFFIC_BATCH_SIZE


class Runtime(str, enum.Enum):
    """How a variant is executed. Which ones apply depends on the artifact kind and device."""

    PYTORCH = "pytorch"  # eager, weights as stored (a compressed artifact gets its recorded quantization)
    PYTORCH_INT8 = "pytorch-int8-dynamic"  # torch.ao quantize_dynamic on the fly (CPU only)
    PYTORCH_FP16 = "pytorch-fp16"  # CUDA only
    PYTORCH_BF16 = "pytorch-bf16"  # CUDA, or a CPU with native bf16 (asked for by --runtimes there)
    TORCHSCRIPT = "torchscript"
    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"  # OpenVINO CPU plugin, latency hint, one stream (bertpress.openvino_rt)


class Baseline(str, enum.Enum):
    """Anchor baselines run on the fp32 reference checkpoint in the same run."""

    HF_PIPELINE = "hf-pipeline"  # transformers pipeline("text-classification"): how most users serve
    OPTIMUM = "optimum"  # optimum-onnx export + its int8 dynamic preset for this CPU's ISA (in .venv-optimum)
    OPTIMUM_INTEL = "optimum-intel"  # optimum-intel OpenVINO export + OVQuantizer static int8 (in .venv-intel)


# Baselines whose files an anchor environment builds (bench/anchors/); bench times them itself.
ANCHOR_BASELINES = (Baseline.OPTIMUM, Baseline.OPTIMUM_INTEL)


_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def _tuple_of(value: Any, name: str, convert) -> tuple:
    """Accept a list/tuple or a comma-separated string (the CLI form) and convert each item."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ConfigError(f"{name}={value!r} must be a list or a comma-separated string")
    out = []
    for item in items:
        if isinstance(item, str):
            item = item.strip()
            if not item:
                continue
        out.append(convert(item))
    return tuple(dict.fromkeys(out))  # de-duplicate, keep order


def _positive_ints(value: Any, name: str, high: int) -> tuple[int, ...]:
    def conv(x: Any) -> int:
        if isinstance(x, str) and x.isdigit():
            x = int(x)
        check_range(x, name, low=1, high=high, integer=True)
        return x

    out = _tuple_of(value, name, conv)
    if not out:
        raise ConfigError(f"{name}={value!r} is empty; give at least one value, e.g. 1,8,32")
    return out


TRAFFIC_MODES = ("latency", "throughput")


@register_config()
@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """A benchmark run.

    devices: `cpu`, `cuda` or `cuda:N`. batch_sizes x seq_lens is the fixed-shape sweep
    (synthetic token ids); threads is the intra-op thread count for every runtime (None = all
    usable cores). eval_data (a TSV/CSV/JSONL file, a directory with dev files or a datasets
    id) drives accuracy, agreement with the fp32 model and the real-traffic scenario
    (the set's own sentences, length-sorted batches of traffic_batch_size, dynamic padding; one
    warm-up pass, timed as the cold figure, then traffic_passes timed passes), served in
    traffic_mode: "latency" (one batch at a time) or "throughput" (several batches in flight where
    the runtime has such a mode: OpenVINO's THROUGHPUT hint, ONNX Runtime's concurrent runs on the
    CPU with 2+ threads; the others one at a time).
    runtimes filters the variants (empty = every runtime that applies to each artifact).
    headline is the (batch, seq) of the main table and the accuracy plot; None = the smallest
    batch and the largest sequence length. rounds > 1 re-times the headline shape (and, with eval
    data, one steady real-traffic pass) after the sweep in that many interleaved rounds (every
    variant once per round, all loaded together): the headline p50, sentences/s and their ratios
    become the medians of the rounds, so a machine that slows down or speeds up during the run
    shifts every variant alike instead of one of them.
    """

    # The flags of the list fields take (and show) the comma-separated strings __post_init__ parses.
    devices: tuple[str, ...] = flag(("cpu",), name="--device", help="comma-separated devices: cpu, cuda, cuda:N")
    batch_sizes: tuple[int, ...] = flag((1, 8, 32), help="comma-separated batch sizes of the fixed-shape sweep")
    seq_lens: tuple[int, ...] = flag((16, 64, 128), help="comma-separated sequence lengths of the sweep")
    threads: int | None = flag(None, help="intra-op threads for torch and ONNX Runtime (inter-op is 1); default: all "
                                          "usable cores")
    eval_data: str | None = flag(
        None, help="labeled data for accuracy and real traffic: a TSV/CSV/JSONL file, a directory with dev.* files, "
                   "or a datasets id (e.g. glue/sst2, needs network); none = latency only")
    eval_split: str = flag("dev", help="split of --eval-data to use")
    eval_limit: int | None = flag(None, help="use a random subset of this many eval rows")
    traffic_batch_size: int = flag(TRAFFIC_BATCH_SIZE, help="batch size of the real-traffic scenario")
    traffic_passes: int = flag(1, help="timed passes over the eval set in the real-traffic scenario, after one "
                                       "warm-up pass (every batch shape new; reported on its own as the cold figure)")
    traffic_mode: str = flag(
        "latency", choices=TRAFFIC_MODES,
        help="how the real-traffic scenario is served: latency = one batch at a time, each timed end to end; "
             "throughput = as a server with several batches in flight where the runtime has such a mode (OpenVINO: "
             "PERFORMANCE_HINT=THROUGHPUT; ONNX Runtime on the CPU with 2+ threads: one batch per thread, concurrent "
             "runs of one intra-op thread each; the next batch tokenized while earlier ones run; the Optimum anchors "
             "get the same); PyTorch and the pipeline serve one batch at a time either way, and their notes say so")
    baselines: tuple[Baseline, ...] = flag(
        (), help="anchor baselines on the fp32 checkpoint: hf-pipeline, optimum (Optimum-ONNX int8), optimum-intel "
                 "(Optimum-Intel OpenVINO int8; needs --eval-data for calibration). The two Optimum anchors are built "
                 "in their own environments (`make anchors`; or set BERTPRESS_OPTIMUM_ENV / "
                 "BERTPRESS_OPTIMUM_INTEL_ENV) and timed here like our variants")
    runtimes: tuple[Runtime, ...] = flag(
        (), help="only these runtimes (default: all that apply): pytorch, pytorch-int8-dynamic, pytorch-fp16, "
                 "pytorch-bf16, torchscript, onnxruntime, openvino. pytorch-bf16 runs on the CPU only when named "
                 "here, and only where bf16 is native (AVX512-BF16/AMX)")
    warmup: int = flag(5, help="untimed warm-up calls per shape")
    min_iters: int = flag(20, help="at least this many timed calls per shape")
    min_seconds: float = flag(1.0, help="and at least this many seconds per shape")
    headline: tuple[int, int] | None = flag(
        None, help="BATCHxSEQ of the summary table and accuracy plot (default: smallest batch x longest seq)")
    rounds: int = flag(
        1, help="after the sweep, re-time the headline shape and (with --eval-data) one real-traffic pass in this "
                "many interleaved rounds (every variant once per round) and report the medians: ratios that survive "
                "a VM whose speed drifts during the run (1 = off)")
    seed: int = 0
    # Columns of eval_data; None: the ones each model was trained on (its manifest) where the data
    # has them, else detected (bertpress.data) - a sentence-pair model is fed pairs.
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None

    def __post_init__(self) -> None:
        def device(x: Any) -> str:
            if not isinstance(x, str) or not _DEVICE.match(x.lower()):
                raise ConfigError(f"devices: {x!r} is not a device; choose cpu, cuda or cuda:N (e.g. --device cpu,cuda)")
            return x.lower()

        devices = _tuple_of(self.devices, "devices", device)
        if not devices:
            raise ConfigError(f"devices={self.devices!r} is empty; give cpu, cuda or both (cpu,cuda)")
        set_frozen(self, "devices", devices)
        set_frozen(self, "batch_sizes", _positive_ints(self.batch_sizes, "batch_sizes", 4096))
        set_frozen(self, "seq_lens", _positive_ints(self.seq_lens, "seq_lens", 8192))
        if self.threads is not None:
            check_range(self.threads, "threads", low=1, high=1024, integer=True)
        if self.eval_data is not None and (not isinstance(self.eval_data, str) or not self.eval_data.strip()):
            raise ConfigError(f"eval_data={self.eval_data!r} must be a data path / datasets id, or None")
        if not isinstance(self.eval_split, str) or not self.eval_split.strip():
            raise ConfigError(f"eval_split={self.eval_split!r} must be a split name such as dev")
        if self.eval_limit is not None:
            check_range(self.eval_limit, "eval_limit", low=1, integer=True)
        check_range(self.traffic_batch_size, "traffic_batch_size", low=1, high=4096, integer=True)
        check_range(self.traffic_passes, "traffic_passes", low=1, high=1000, integer=True)
        if self.traffic_mode not in TRAFFIC_MODES:
            raise ConfigError(f"traffic_mode={self.traffic_mode!r} is not a traffic mode; choose "
                              f"{' or '.join(TRAFFIC_MODES)} (--traffic-mode)")
        set_frozen(self, "baselines", _tuple_of(self.baselines, "baselines",
                                                lambda x: as_enum(Baseline, x, "baselines")))
        set_frozen(self, "runtimes", _tuple_of(self.runtimes, "runtimes",
                                               lambda x: as_enum(Runtime, x, "runtimes")))
        check_range(self.warmup, "warmup", low=0, integer=True)
        check_range(self.min_iters, "min_iters", low=1, integer=True)
        check_range(self.min_seconds, "min_seconds", low=0)
        check_range(self.seed, "seed", low=0, integer=True)
        check_range(self.rounds, "rounds", low=1, high=100, integer=True)
        check_columns(self.text_column, self.text_pair_column, self.label_column)
        if self.headline is not None:
            h = self.headline
            if isinstance(h, str):
                h = h.lower().replace("x", ",").split(",")
            if not isinstance(h, (list, tuple)) or len(h) != 2:
                raise ConfigError(f"headline={self.headline!r} must be (batch, seq), e.g. 1x128")
            b, s = (int(x) if isinstance(x, str) and x.strip().isdigit() else x for x in h)
            if b not in self.batch_sizes or s not in self.seq_lens:
                raise ConfigError(
                    f"headline={self.headline!r} is not in the sweep (batch_sizes {list(self.batch_sizes)}, "
                    f"seq_lens {list(self.seq_lens)}); pick a measured shape"
                )
            set_frozen(self, "headline", (b, s))

    @property
    def headline_shape(self) -> tuple[int, int]:
        return self.headline or (min(self.batch_sizes), max(self.seq_lens))
