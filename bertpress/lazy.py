"""Lazy package exports: `bertpress --help` imports every stage's `cli.py`, which imports the
stage package, so stage `__init__`s must not import torch/transformers. They declare their
public names here and each loads on first attribute access (PEP 562 module __getattr__)."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """Return (`__getattr__`, `__all__`) for `package`, where exports maps name -> module."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__, sorted(exports)
