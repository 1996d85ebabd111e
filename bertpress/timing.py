"""Timing a callable the way optimum-benchmark and ORT's perf tool do: warm-up runs, then at
least `min_iters` iterations and at least `min_seconds`; perf_counter on CPU, CUDA events with
synchronisation on GPU. Statistics are computed from the per-iteration samples.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Sequence, TypeVar


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    """Per-call latency in milliseconds, with throughput in items (e.g. sentences) per second."""

    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    iters: int
    total_s: float
    items_per_call: int = 1

    @property
    def throughput(self) -> float:
        """Items per second at the mean latency."""
        return self.items_per_call * 1000.0 / self.mean_ms if self.mean_ms > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["throughput"] = self.throughput
        return d


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default method) of pre-sorted values."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q={q} must be in [0, 100]")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(samples_ms: Sequence[float], items_per_call: int = 1) -> LatencyStats:
    if not samples_ms:
        raise ValueError("no timing samples")
    s = sorted(samples_ms)
    n = len(s)
    mean = sum(s) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in s) / (n - 1)) if n > 1 else 0.0
    return LatencyStats(
        mean_ms=mean, std_ms=std, min_ms=s[0],
        p50_ms=percentile(s, 50), p90_ms=percentile(s, 90), p99_ms=percentile(s, 99),
        iters=n, total_s=sum(s) / 1000.0, items_per_call=items_per_call,
    )


def time_callable(
    fn: Callable[[], Any],
    *,
    warmup: int = 5,
    min_iters: int = 20,
    min_seconds: float = 1.0,
    max_iters: int = 100_000,
    items_per_call: int = 1,
    cuda: bool = False,
) -> LatencyStats:
    """Time `fn()` after `warmup` calls; run until both min_iters and min_seconds are reached."""
    if cuda:
        import torch

        def once() -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end)
    else:
        def once() -> float:
            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) * 1000.0

    for _ in range(warmup):
        fn()
    if cuda:
        import torch

        torch.cuda.synchronize()
    samples: list[float] = []
    t_start = time.perf_counter()
    while len(samples) < max_iters and (
        len(samples) < min_iters or time.perf_counter() - t_start < min_seconds
    ):
        samples.append(once())
    return summarize(samples, items_per_call=items_per_call)


T = TypeVar("T")


def interleaved(timers: Sequence[Callable[[], T] | None], rounds: int, *,
                progress: bool = False, desc: str = "timing rounds") -> list[list[T]]:
    """Run every timer once per round, in order (t1, t2, ..., t1, t2, ...), `rounds` times.

    A shared VM's speed drifts (measured here: the same fp32 model at 17.8 ms in one run, 27 ms
    half an hour later); timing variants one after another charges the drift to whichever ran
    then, interleaving spreads it over all of them. Returns each timer's result per round (its
    LatencyStats, or what else it measures, e.g. bench's real-traffic sentences/s; [] for a None
    timer). The one implementation for bench's rounds, compress's search, export's measure and
    microbench."""
    from tqdm.auto import tqdm

    out: list[list[T]] = [[] for _ in timers]
    for _ in tqdm(range(rounds), desc=desc, unit="round", disable=not progress, leave=False):
        for i, timer in enumerate(timers):
            if timer is not None:
                out[i].append(timer())
    return out


def median_of(values: Sequence[float]) -> float:
    """The median (what the rounds' p50s are summarised by)."""
    s = sorted(values)
    if not s:
        raise ValueError("median of no values")
    return percentile(s, 50)
