"""TorchScript export: trace the classifier (fp32, or int8 after torch.ao dynamic quantization).

Tracing records one execution, so shapes can silently freeze into the graph; the parity gate
(validate.py) runs the saved file at batch sizes and lengths other than the tracing shape.
The file loads with `torch.jit.load` alone.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from bertpress.compress.config import QuantizeConfig
from bertpress.quiet import quiet
from bertpress.signature import input_names, logits_module, special_ids, synthetic_batch

FILE_NAME = "model.pt"


def quantize_dynamic_torch(model, recipe):
    """The recipe's int8 with compress's one torch dynamic-int8 path (same layers, ranges and
    kernels as the compressed model): returns (quantized copy, quantized layer names)."""
    from bertpress.compress.quantize import quantize_dynamic  # lazy: pulls torch; `export --help` stays light

    cfg = QuantizeConfig(scheme="dynamic", per_channel=recipe.per_channel, scope=recipe.scope)
    return quantize_dynamic(model, cfg, {"reduce_range": recipe.reduce_range}, layers=recipe.layers)


def export_torchscript(model, tokenizer, out_dir: Path, *, recipe, trace_batch: int, trace_seq: int,
                       seed: int = 0) -> tuple[dict[str, Any], Any]:
    """Trace `model` (deep-copied; quantized first when the recipe is int8) and save OUT/model.pt.

    Returns (details, the eager module that was traced) so that the trace can be checked against
    exactly what it recorded, separately from the quantization error."""
    import torch

    quantized: list[str] = []
    if recipe.int8:
        model, quantized = quantize_dynamic_torch(model, recipe)
    else:
        model = copy.deepcopy(model).eval()
    wrapped = logits_module(model)
    rng = np.random.default_rng(seed)
    feed = synthetic_batch(model.config.vocab_size, special_ids(tokenizer), trace_batch, trace_seq, rng)
    example = tuple(torch.from_numpy(feed[n]) for n in input_names(model))
    # TracerWarnings about python-side shape logic are silenced: the parity gate checks the trace
    with quiet(), torch.inference_mode(False), torch.no_grad():
        traced = torch.jit.trace(wrapped, example, check_trace=False, strict=False)
        # freeze folds parameters and attributes into constants (smaller graph, no Python state);
        # quantized packed params are kept by freeze as well.
        traced = torch.jit.freeze(traced)
    file = out_dir / FILE_NAME
    torch.jit.save(traced, str(file))
    details = {"file": FILE_NAME, "trace_shape": [trace_batch, trace_seq], "frozen": True,
            "input_names": list(input_names(model)),
            "quantization_engine": torch.backends.quantized.engine if recipe.int8 else None,
            "quantized_layers": len(quantized)}
    return details, model


def load_torchscript(file: Path):
    import torch

    return torch.jit.load(str(file), map_location="cpu").eval()
