"""The GPU check (`make gpu-check`, bertpress.bench.gpu_check) on this CPU machine: every part
skips and says why, a failing or hanging part fails the check, and its commands are ones the
CLI accepts (so a renamed flag breaks here, not on the day a GPU is lent)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bertpress.bench import gpu_check
from bertpress.bench.gpu_check import PART_NAMES, PARTS, SCHEMA, SUMMARY, Context

no_cuda_here = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the skips of a machine without CUDA")


def run_check(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bertpress.bench.gpu_check", *args], capture_output=True, text=True,
                          timeout=timeout)


def read_summary(out: Path) -> dict:
    # strict JSON (no NaN): what a dashboard or `jq` reads
    return json.loads((out / SUMMARY).read_text(encoding="utf-8"),
                      parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


@no_cuda_here
def test_every_part_skips_without_cuda(tmp_path, tiny_data):
    out = tmp_path / "gc"
    proc = run_check("--out", str(out), "--data", str(tiny_data))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [ln.split(":")[0] for ln in lines[:-1]] == list(PART_NAMES)  # one line per part, in order
    for ln in lines[:-1]:
        assert ": skipped: no CUDA: torch " in ln, ln
    assert lines[-1].startswith("gpu-check: passed") and str(out / SUMMARY) in lines[-1]
    s = read_summary(out)
    assert s["schema"] == SCHEMA and s["complete"] is True and s["passed"] is True
    assert s["data"] == str(tiny_data.resolve()) and s["environment"]["cuda_available"] is False
    assert s["environment"]["torch"] == torch.__version__
    assert [p["name"] for p in s["parts"]] == list(PART_NAMES)
    for p in s["parts"]:
        assert p["status"] == "skipped" and "no CUDA" in p["reason"] and p["wall_s"] == 0.0 and p["log"] is None
    # a second run replaces the first one's summary (its own files), and nothing else is there
    assert run_check("--out", str(out), "--only", "search").returncode == 0
    assert [p["name"] for p in read_summary(out)["parts"]] == ["search"]
    assert sorted(p.name for p in out.iterdir()) == [".bertpress-owned.json", SUMMARY]


def test_a_failing_or_hanging_part_fails_the_check(tmp_path):
    """--run PART=COMMAND runs that command as the part whatever the machine: an exit status != 0,
    a part killed at the budget, and a part left no budget each fail the check (exit 1)."""
    out = tmp_path / "gc"
    py = sys.executable
    t0 = time.monotonic()
    proc = run_check("--out", str(out), "--budget", "12", "--only", "cuda-tests,finetune-bf16,search",
                     "--run", f"cuda-tests={py} -c 'print(\"boom: the GPU fell over\"); raise SystemExit(3)'",
                     "--run", f"finetune-bf16={py} -c 'import time; time.sleep(120)'",
                     "--run", f"search={py} -c 'pass'")
    took = time.monotonic() - t0
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert took < 60  # the sleeper was killed at the budget, not waited for
    s = read_summary(out)
    assert s["complete"] is True and s["passed"] is False
    parts = {p["name"]: p for p in s["parts"]}
    assert list(parts) == ["cuda-tests", "finetune-bf16", "search"]
    assert parts["cuda-tests"]["status"] == "failed"
    assert parts["cuda-tests"]["reason"] == f"`{Path(py).name}` exited 3: boom: the GPU fell over"
    assert "boom: the GPU fell over" in (out / parts["cuda-tests"]["log"]).read_text()
    assert parts["finetune-bf16"]["status"] == "failed" and parts["finetune-bf16"]["reason"].startswith("timed out")
    assert parts["finetune-bf16"]["wall_s"] < 20
    assert parts["search"]["status"] == "failed" and "budget was spent" in parts["search"]["reason"]
    assert "FAILED: cuda-tests, finetune-bf16, search" in proc.stdout


def test_bad_arguments_are_one_line_errors(tmp_path):
    proc = run_check("--out", str(tmp_path / "gc"), "--only", "warp-drive")
    assert proc.returncode == 2 and proc.stderr.startswith("error: --only") and "cuda-tests" in proc.stderr
    proc = run_check("--out", str(tmp_path / "gc"), "--run", "nope=true")
    assert proc.returncode == 2 and "PART=COMMAND" in proc.stderr
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    proc = run_check("--out", str(mine))
    assert proc.returncode == 2 and "not written by bertpress" in proc.stderr
    assert (mine / "notes.txt").read_text() == "keep me"


def test_no_cuda_reason():
    assert gpu_check.no_cuda_reason({"cuda_available": True}) is None
    status, why = gpu_check.no_cuda_reason({"torch": "2.13.0+cpu", "torch_cuda": None})
    assert status == "skipped" and why == "no CUDA: torch 2.13.0+cpu is a CPU build"
    # a GPU that torch cannot use means the check checked nothing: a failure, with the fix
    status, why = gpu_check.no_cuda_reason({"torch": "2.13.0+cpu", "torch_cuda": None,
                                            "nvidia_smi_gpus": ["GPU 0: NVIDIA H100 80GB HBM3"]})
    assert status == "failed" and "nvidia-smi lists GPU 0: NVIDIA H100" in why and "GPU_PYTHON" in why
    assert gpu_check.no_cuda_reason({"probe_error": "ImportError: torch"})[0] == "failed"


STAGE_CLI = {"finetune": "bertpress.finetune.cli", "compress": "bertpress.compress.cli",
             "export": "bertpress.export.cli", "bench": "bertpress.bench.cli"}


@pytest.mark.parametrize("part", PARTS, ids=lambda p: p.name)
def test_the_parts_commands_are_ones_the_cli_accepts(part, tmp_path, tiny_data):
    """Each `bertpress STAGE ...` a part would run parses and builds its stage's config."""
    from bertpress.app.cli import build_parser

    ctx = Context(sys.executable, tmp_path, tiny_data, {"onnxruntime_providers": ["CUDAExecutionProvider"]})
    steps = part.steps(ctx)
    assert steps
    for argv in steps:
        assert argv[0] == sys.executable and argv[1] == "-m"
        if argv[2] != "bertpress":
            continue
        args = build_parser().parse_args(argv[3:])
        cfg = importlib.import_module(STAGE_CLI[argv[3]]).config_from_args(args)
        assert cfg is not None
