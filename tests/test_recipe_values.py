"""A recipe test in the torchtune style: the real CLI, in-process, runs a recipe on a tiny model
(fine-tune a few steps -> prune FFN (fp32) -> export ONNX) and the numbers it produces are
compared with stored values. A change that moves training, pruning or export numerics fails
here. Regenerate deliberately (and say why in the commit) with:

    BERTPRESS_REGEN_RECIPE_VALUES=1 .venv/bin/python -m pytest tests/test_recipe_values.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

STORED = Path(__file__).parent / "data" / "recipe_tiny_values.json"
TEXTS = ["a b c d", "e f g", "h i j k l"]


@pytest.fixture
def one_thread():
    """One intra-op thread: float reductions in a fixed order, whatever ran before in the process."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_recipe_run_reproduces_stored_losses_and_logits(tiny_checkpoint, tiny_data, tmp_path, one_thread):
    from bertpress.app.cli import main
    from bertpress.artifact import Artifact
    from bertpress.models import load_tokenizer
    from bertpress.ort import runner
    from bertpress.signature import encode

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"out: {tmp_path / 'run'}\n"
        f"finetune: {{model: {tiny_checkpoint}, data: {tiny_data}, labels: [negative, positive], epochs: 4,\n"
        "           batch_size: 16, lr: 0.003, max_length: 32, seed: 0}\n"
        f"compress:\n  quantize: {{scheme: none}}\n"
        "  prune: {ffn: 0.5, importance: magnitude, round_to: 8}\n"
        "export: {format: onnx, batch_sizes: [1, 3], seq_lengths: [8, 33]}\n")
    assert main(["run", str(recipe)]) == 0
    ckpt = Artifact.load(tmp_path / "run" / "checkpoint").manifest
    onnx_dir = tmp_path / "run" / "export"
    tok = load_tokenizer(onnx_dir)
    logits = runner(onnx_dir / "model.onnx")(encode(tok, TEXTS, 32))
    got = {"train_loss": ckpt.metrics["train_loss"], "dev_accuracy": ckpt.metrics["dev_accuracy"],
           "export_logits": np.round(logits, 6).tolist()}
    if os.environ.get("BERTPRESS_REGEN_RECIPE_VALUES"):
        STORED.write_text(json.dumps(got, indent=2) + "\n")
        pytest.skip(f"stored values regenerated in {STORED}")
    want = json.loads(STORED.read_text())
    assert got["train_loss"] == pytest.approx(want["train_loss"], abs=1e-4)
    assert got["dev_accuracy"] == pytest.approx(want["dev_accuracy"], abs=1e-9)
    np.testing.assert_allclose(np.asarray(got["export_logits"]), np.asarray(want["export_logits"]), atol=1e-5)
