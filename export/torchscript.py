"""TorchScript export: trace the classifier (fp32, or int8 after torch.ao dynamic quantization).

Tracing records one execution, so shapes can silently freeze into the graph; the parity gate
(validate.py) runs the saved file at batch sizes and lengths other than the tracing shape.
The file loads with `torch.jit.load` alone.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from bertpress.signature import logits_module, special_ids, synthetic_batch

FILE_NAME = "model.pt"


def quantize_dynamic_torch(model, per_channel: bool = True, scope: str = "all", layers=None):
    """int8 dynamic quantization of nn.Linear layers with torch.ao (x86 engine when available):
    the layers compress recorded, else every Linear (scope all) or the encoder's (scope encoder)."""
    import torch
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

    if "x86" in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = "x86"
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    if layers:
        names = [n for n in names if n in set(layers)]
    elif scope == "encoder":
        names = [n for n in names if ".encoder." in f".{n}."]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qmodel = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {n: qconfig for n in names},
                                                        dtype=torch.qint8)
    return qmodel, names


def export_torchscript(model, tokenizer, out_dir: Path, *, recipe, trace_batch: int, trace_seq: int,
                       seed: int = 0) -> tuple[dict[str, Any], Any]:
    """Trace `model` (deep-copied; quantized first when the recipe is int8) and save OUT/model.pt.

    Returns (details, the eager module that was traced) so that the trace can be checked against
    exactly what it recorded, separately from the quantization error."""
    import torch

    quantized: list[str] = []
    if recipe.int8:
        model, quantized = quantize_dynamic_torch(model, recipe.per_channel, recipe.scope, recipe.layers)
    else:
        model = copy.deepcopy(model).eval()
    wrapped = logits_module(model)
    rng = np.random.default_rng(seed)
    feed = synthetic_batch(model.config.vocab_size, special_ids(tokenizer), trace_batch, trace_seq, rng)
    example = tuple(torch.from_numpy(feed[n]) for n in ("input_ids", "attention_mask", "token_type_ids"))
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about python-side shape logic: checked by the gate
        traced = torch.jit.trace(wrapped, example, check_trace=False, strict=False)
        # freeze folds parameters and attributes into constants (smaller graph, no Python state);
        # quantized packed params are kept by freeze as well.
        traced = torch.jit.freeze(traced)
    file = out_dir / FILE_NAME
    torch.jit.save(traced, str(file))
    details = {"file": FILE_NAME, "trace_shape": [trace_batch, trace_seq], "frozen": True,
            "quantization_engine": torch.backends.quantized.engine if recipe.int8 else None,
            "quantized_layers": len(quantized)}
    return details, model


def load_torchscript(file: Path):
    import torch

    return torch.jit.load(str(file), map_location="cpu").eval()
