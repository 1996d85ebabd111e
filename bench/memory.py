"""Peak memory per variant without a sampling thread (which would steal CPU from the timing).

On Linux, writing "5" to /proc/self/clear_refs resets the process's peak RSS (VmHWM) to its
current RSS, so each variant's peak can be read from /proc/self/status after it ran. Elsewhere
we fall back to getrusage's lifetime maximum and say so (`peak_is_lifetime`).
"""

from __future__ import annotations

import contextlib
import gc
import resource
import sys
from pathlib import Path
from typing import Any

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(key: str) -> int | None:
    with contextlib.suppress(OSError):
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def current_rss_mb() -> float | None:
    kb = _status_kb("VmRSS")
    if kb is None:
        with contextlib.suppress(Exception):
            import psutil

            return psutil.Process().memory_info().rss / 2**20
        return None
    return kb / 1024


class PeakMemory:
    """`with PeakMemory(cuda=...) as m: ...` then `m.result()`."""

    def __init__(self, cuda: bool = False) -> None:
        self.cuda = cuda
        self.reset_ok = False

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        try:
            _CLEAR_REFS.write_text("5")
            self.reset_ok = _status_kb("VmHWM") is not None
        except OSError:
            self.reset_ok = False
        self.before_mb = current_rss_mb()
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
        return self

    def restart_peak(self) -> None:
        """Forget the peak so far (e.g. a one-off export before the model is loaded for timing)."""
        gc.collect()
        if self.reset_ok:
            try:
                _CLEAR_REFS.write_text("5")
            except OSError:
                pass

    def __exit__(self, *exc: Any) -> None:
        if self.reset_ok:
            self.peak_mb = _status_kb("VmHWM") / 1024
        else:
            ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.peak_mb = ru / 2**20 if sys.platform == "darwin" else ru / 1024  # bytes on macOS, KiB on Linux
        self.cuda_mb = None
        if self.cuda:
            import torch

            self.cuda_mb = torch.cuda.max_memory_allocated() / 2**20

    def result(self) -> dict[str, Any]:
        delta = None
        if self.reset_ok and self.before_mb is not None:
            delta = max(self.peak_mb - self.before_mb, 0.0)
        return {
            "peak_rss_mb": round(self.peak_mb, 1),
            "rss_added_mb": None if delta is None else round(delta, 1),
            "peak_is_lifetime": not self.reset_ok,
            "cuda_max_allocated_mb": None if self.cuda_mb is None else round(self.cuda_mb, 1),
        }
