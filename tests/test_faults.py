"""kill -9 in the middle of a stage leaves nothing that looks finished, and a re-run completes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bertpress.artifact import Artifact
from tests.conftest import REPO, run_cli


def _kill_when(argv: list[str], ready, timeout: float = 300) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "bertpress", *argv], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    try:
        while not ready() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "the stage finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()


def _nothing_finished(parent: Path, out: Path) -> None:
    assert not Artifact.is_finished(out)
    for p in parent.iterdir():
        if p.name.startswith(f".{out.name}.tmp-"):
            assert not Artifact.is_finished(p)


def _staging(out: Path):
    return lambda: any(out.parent.glob(f".{out.name}.tmp-*"))


def test_kill_during_compress_then_rerun(tmp_path, tiny_checkpoint, tiny_data):
    out = tmp_path / "small"
    argv = ["compress", str(tiny_checkpoint), "--out", str(out), "--prune-heads", "0.25",
            "--prune-ffn", "0.5", "--importance", "magnitude", "--round-to", "8",
            "--recover-epochs", "3", "--calibration-data", str(tiny_data), "--no-progress"]
    _kill_when(argv, _staging(out))
    _nothing_finished(tmp_path, out)
    proc = run_cli(*argv)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert Artifact.load(out).kind == "compressed"


def test_kill_during_export_then_rerun(tmp_path, tiny_checkpoint):
    out = tmp_path / "deploy"
    argv = ["export", str(tiny_checkpoint), "--format", "all", "--out", str(out)]
    _kill_when(argv, _staging(out))
    _nothing_finished(tmp_path, out)
    proc = run_cli(*argv)
    assert proc.returncode == 0, proc.stderr[-2000:]
    kinds = sorted(Artifact.load(p).kind for p in out.iterdir() if Artifact.is_finished(p))
    assert kinds == ["onnx", "torchscript"]


def test_kill_during_finetune_then_resume(tmp_path, tiny_checkpoint, tiny_data):
    out = tmp_path / "ft"
    argv = ["finetune", "--model", str(tiny_checkpoint), "--data", str(tiny_data), "--out", str(out),
            "--epochs", "4", "--batch-size", "8", "--max-length", "32", "--eval-every", "6",
            "--no-progress"]
    partial = tmp_path / ".ft.partial"
    _kill_when(argv, lambda: any(partial.glob("checkpoint-*/trainer_state.json")))
    _nothing_finished(tmp_path, out)
    proc = run_cli(*argv, "--resume")
    assert proc.returncode == 0, proc.stderr[-2000:]
    art = Artifact.load(out)
    assert art.kind == "checkpoint" and not partial.exists()
