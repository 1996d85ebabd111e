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


def shutdown() -> None:
    """Close the process group cleanly (all ranks meet first): a live gloo group can abort the
    interpreter at exit. The one owner of DDP teardown (finetune's CLI, the recipe pipeline)."""
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        tdist.barrier()
        tdist.destroy_process_group()


def leave() -> None:
    """After fine-tuning under torchrun, continue as one process (rank 0 runs the later stages).

    torch's public API closes the group and the environment says "one process". accelerate
    (under the Trainer) caches the distributed state in process-wide singletons and has no
    public reset, so its documented-internal `_reset_state` is the one private call left here;
    if accelerate renames it, the AttributeError below makes the later Trainer fail loudly."""
    shutdown()
    for name, value in (("WORLD_SIZE", "1"), ("RANK", "0"), ("LOCAL_RANK", "0"), ("LOCAL_WORLD_SIZE", "1")):
        os.environ[name] = value
    from accelerate.state import AcceleratorState, PartialState

    AcceleratorState._reset_state(reset_partial_state=True)
    PartialState._reset_state()
