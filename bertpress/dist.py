"""Distributed-run facts in one place: which rank we are and who writes.

torchrun sets RANK / LOCAL_RANK / WORLD_SIZE; without them we are a single process. Only rank 0
writes artifacts, logs and progress bars.
"""

from __future__ import annotations

import os


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    return world_size() > 1


def is_main_process() -> bool:
    return rank() == 0
