"""The shared state of a compress run: `Work` (what the steps hand each other) and `HANDLERS`
(config type -> step; `api` registers prune, recover and quantize with `@handler`). Both the
plain pipeline (`api`) and the search (`search`) drive the same handlers through this module, so
neither imports the other's internals.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from bertpress.compress.config import CompressConfig
from bertpress.data import Columns, TextDataset, load_text_classification
from bertpress.errors import InputError


@dataclasses.dataclass
class Work:
    """State passed between handlers; `model` stays fp32 (it is what gets saved)."""

    model: Any
    tokenizer: Any
    teacher: Any  # the uncompressed input model (distillation teacher, accuracy reference)
    labels: list[str]
    cfg: CompressConfig
    eval_data: TextDataset | None = None
    qmodel: Any = None  # `model` with the quantization applied (None until quantize ran)
    ranges: dict[str, Any] | None = None  # static int8: {layer: {input, output}}
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    progress: bool = True
    data_cache: dict[tuple, TextDataset] = dataclasses.field(default_factory=dict)
    columns: Columns | None = None  # what the model was trained on (its manifest), else what the data had
    recover_callbacks: list = dataclasses.field(default_factory=list)  # TrainerCallbacks for recovery (the search's rungs)

    @property
    def final(self):
        return self.qmodel if self.qmodel is not None else self.model

    def load_data(self, spec: str, split: str, flag: str) -> TextDataset:
        key = (spec, split)
        if key not in self.data_cache:
            try:
                cfg = self.cfg
                self.data_cache[key] = ds = load_text_classification(
                    spec, split, label_names=self.labels, text_column=cfg.text_column,
                    text_pair_column=cfg.text_pair_column, label_column=cfg.label_column, prefer=self.columns)
            except InputError as exc:
                raise InputError(f"{flag} {spec}: {exc}") from None
            if self.columns is None:  # a model without a manifest: the first data read names its inputs
                self.columns = ds.columns
        return self.data_cache[key]


HANDLERS: dict[type, Callable[[Work, Any], Work]] = {}


def handler(cfg_type: type):
    def wrap(fn):
        HANDLERS[cfg_type] = fn
        return fn
    return wrap
