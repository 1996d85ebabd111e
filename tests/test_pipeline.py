"""Recipes: validation that lists every problem, end-to-end runs, skip and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bertpress.artifact import Artifact
from bertpress.errors import ConfigError
from bertpress.app.pipeline import load_recipe, parse_recipe
from tests.conftest import REPO, run_cli

RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_example_recipes_pass_check(path):
    proc = run_cli("run", str(path), "--check", cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout


def test_invalid_recipe_lists_every_problem(tmp_path):
    bad = {
        "out": "runs/x",
        "extra": 1,
        "finetune": {"model": "minilm", "epochs": -1, "lr": "fast", "bogus": True},
        "export": {"format": "tflite", "opset": 3},
        "bench": "not a mapping",
    }
    with pytest.raises(ConfigError) as info:
        parse_recipe(bad, source="bad.yaml")
    msg = str(info.value)
    for expected in ("extra: unknown top-level key", "finetune.bogus: unknown key",
                     "finetune.epochs", "finetune.lr", "export.format", "export.opset",
                     "bench: must be a mapping"):
        assert expected in msg, (expected, msg)
    assert msg.startswith("bad.yaml: 7 problem(s):")
    # and via the CLI: exit 2, every problem printed, no traceback
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    proc = run_cli("run", str(path), "--check")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n  - ") == 7


@pytest.mark.parametrize("text,message", [
    ("out: [unclosed", "not valid YAML"),
    ("- a\n- b\n", "a recipe is a mapping"),
    ("out: runs/x\n", "no stage section"),
    ("finetune: {}\n", "out: required"),
    ("out: x\ncompress: {}\n", "compress: needs an input"),
])
def test_recipe_shape_errors(tmp_path, text, message):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_recipe(path)


def _tiny_recipe(out: Path, checkpoint: Path, data: Path) -> dict:
    return {
        "out": str(out),
        "finetune": {"model": str(checkpoint), "data": str(data), "epochs": 1, "batch_size": 16,
                     "max_length": 32, "lr": 1e-3},
        # static int8: export must re-load the calibration data compress recorded (int8 in, int8 out)
        "compress": {"quantize": {"scheme": "static", "calibration_data": str(data), "calibration_samples": 32},
                     "prune": {"heads": 0.25, "ffn": 0.5, "importance": "magnitude", "round_to": 8},
                     "eval_data": str(data)},
        "export": {"format": "all", "eval_data": str(data), "allow_mismatch": True},
        "bench": {"eval_data": str(data), "batch_sizes": [1], "seq_lens": [16], "warmup": 1,
                  "min_iters": 2, "min_seconds": 0},
    }


def test_recipe_runs_end_to_end_and_skips_when_unchanged(tmp_path, tiny_checkpoint, tiny_data):
    out = tmp_path / "run"
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(_tiny_recipe(out, tiny_checkpoint, tiny_data)))
    proc = run_cli("run", str(path), "--json", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {r["stage"]: r for r in json.loads(proc.stdout)}
    assert list(results) == ["finetune", "compress", "export", "bench"]
    assert not any(r["skipped"] for r in results.values())
    kinds = sorted(Artifact.load(a).kind for r in results.values() for a in r["artifacts"])
    assert kinds == ["checkpoint", "compressed", "onnx", "openvino", "report", "torchscript"]
    compressed = Artifact.load(out / "compressed")
    assert compressed.manifest.lineage["parent"] == str((out / "checkpoint").resolve())
    resolved = yaml.safe_load((out / "recipe.resolved.yaml").read_text())
    assert resolved["finetune"]["epochs"] == 1 and "warmup" in resolved["finetune"]  # defaults filled
    report = (out / "report" / "report.md").read_text()
    assert "onnx" in report.lower() and ":openvino@cpu" in report

    # unchanged: everything is skipped; a changed bench config redoes bench only
    again = run_cli("run", str(path), "--json", timeout=600)
    assert all(r["skipped"] for r in json.loads(again.stdout)), again.stderr[-2000:]
    recipe = _tiny_recipe(out, tiny_checkpoint, tiny_data)
    recipe["bench"]["seq_lens"] = [24]
    path.write_text(yaml.safe_dump(recipe))
    third = {r["stage"]: r["skipped"] for r in json.loads(run_cli("run", str(path), "--json").stdout)}
    assert third == {"finetune": True, "compress": True, "export": True, "bench": False}


def test_pipeline_killed_after_compress_resumes_without_redoing_finetune(tmp_path, tiny_checkpoint, tiny_data):
    out = tmp_path / "run"
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(_tiny_recipe(out, tiny_checkpoint, tiny_data)))
    proc = subprocess.Popen([sys.executable, "-m", "bertpress", "run", str(path)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = out / ".pipeline" / "compress.json"
    deadline = time.time() + 600
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "compress never finished"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finetune_manifest = (out / "checkpoint" / "bertpress.json").read_bytes()
    # whatever was in flight left nothing that looks finished
    for leftover in out.glob(".*tmp-*"):
        assert not Artifact.is_finished(leftover)
    rerun = run_cli("run", str(path), "--json", timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    skipped = {r["stage"]: r["skipped"] for r in json.loads(rerun.stdout)}
    assert skipped["finetune"] and skipped["compress"]
    assert (out / "checkpoint" / "bertpress.json").read_bytes() == finetune_manifest
    assert Artifact.load(out / "report").kind == "report"


def test_quickstart_recipe_is_valid_and_names_its_data(tmp_path):
    proc = run_cli("quickstart", "--out", str(tmp_path / "qs"), "--recipe-only")
    assert proc.returncode == 0, proc.stderr
    recipe = load_recipe(tmp_path / "qs" / "recipe.yaml")
    assert list(recipe.stages) == ["finetune", "compress", "export", "bench"]
    assert "sample_data" in recipe.stages["finetune"].data
    assert recipe.stages["compress"].search.max_accuracy_drop == 1.0


def test_quickstart_overwrite_only_deletes_its_own_directories(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    proc = run_cli("quickstart", "--out", str(precious), "--overwrite", "--recipe-only")
    assert proc.returncode == 2 and "refusing to delete or replace it" in proc.stderr
    assert (precious / "thesis.tex").read_text() == "years of work"


@pytest.mark.distributed
def test_recipe_under_torchrun_finetunes_on_every_rank_then_compresses_on_rank0(tmp_path, tiny_checkpoint,
                                                                                 tiny_data):
    """DDP fine-tuning, then compress with distillation recovery on rank 0 alone: no hang."""
    out = tmp_path / "run"
    recipe = {
        "out": str(out),
        "finetune": {"model": str(tiny_checkpoint), "data": str(tiny_data), "epochs": 1, "batch_size": 16,
                     "max_length": 32, "lr": 1e-3},
        "compress": {"quantize": {"scheme": "dynamic"},
                     "prune": {"heads": 0.25, "ffn": 0.5, "importance": "magnitude", "round_to": 8,
                               "calibration_data": str(tiny_data)},
                     "recover": {"epochs": 1, "max_steps": 2, "batch_size": 8, "max_length": 32}},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "bertpress", "run", str(path), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert Artifact.load(out / "checkpoint").manifest.metrics["hardware"]["world_size"] == 2
    assert Artifact.load(out / "compressed").kind == "compressed"
    assert proc.stdout.count('"stage"') == 2  # one report (rank 0's), two stages
