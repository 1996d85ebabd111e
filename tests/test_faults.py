"""kill -9 in the middle of a stage leaves nothing that looks finished, and a re-run completes."""

from __future__ import annotations

import re
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
    assert kinds == ["onnx", "openvino", "torchscript"]  # --format all


def test_kill_during_finetune_then_resume(tmp_path, tiny_checkpoint, tiny_data):
    out = tmp_path / "ft"
    argv = ["finetune", "--model", str(tiny_checkpoint), "--data", str(tiny_data), "--out", str(out),
            "--epochs", "4", "--batch-size", "8", "--max-length", "32", "--eval-every", "6",
            "--no-progress"]
    # the run's private work directory: .ft.partial-PID
    _kill_when(argv, lambda: any(tmp_path.glob(".ft.partial-*/checkpoint-*/trainer_state.json")))
    _nothing_finished(tmp_path, out)
    proc = run_cli(*argv, "--resume")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "note: --resume continues the interrupted run in" in proc.stderr
    art = Artifact.load(out)
    assert art.kind == "checkpoint" and not list(tmp_path.glob(".ft.partial*"))
    assert art.manifest.metrics["resumed_from_step"]


# ---- issue #18: SIGTERM, disk full, stale staging, concurrent publishes, resume pickles ------------


def test_sigterm_during_export_cleans_staging_and_exits_143(tmp_path, tiny_checkpoint):
    out = tmp_path / "deploy"
    proc = subprocess.Popen([sys.executable, "-m", "bertpress", "export", str(tiny_checkpoint), "--format", "all",
                             "--out", str(out)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 300
    while not _staging(out)() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "export finished before it could be terminated"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert errors == ["error: terminated (SIGTERM); outputs were not finished (re-run to complete)"], err[-2000:]
    assert "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".deploy.*")), list(tmp_path.iterdir())


_SWALLOWED_SIGTERM = """
import os, signal, sys, time
from bertpress.artifact import Manifest, staged_output, write_manifest
from bertpress.errors import Terminated, raise_on_sigterm

raise_on_sigterm()

class Finalized:
    def __del__(self):  # the handler's raise lands in here, where Python ignores exceptions
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass

try:
    with staged_output(sys.argv[1]) as tmp:
        Finalized()  # dropped at once: __del__ runs, the Terminated raised inside it is swallowed
        print("swallowed", flush=True)
        write_manifest(tmp, Manifest(kind="report"))
        if sys.argv[2] == "wait":  # long work after the swallowed signal: it is re-delivered
            time.sleep(30)
            print("slept through", flush=True)
except Terminated:
    print("terminated", flush=True)
    sys.exit(143)
print("published", flush=True)
"""


@pytest.mark.parametrize("after", ["publish", "wait"])
def test_a_sigterm_swallowed_by_a_finalizer_still_stops_the_run(tmp_path, after):
    """CI saw the handler's Terminated raised inside a regex object's `__del__`: Python printed
    "Exception ignored", the export went on, published and exited 0. The signal must still stop
    the run: re-delivered during long work, and never let through to a publish."""
    out = tmp_path / "out"
    started = time.time()
    proc = subprocess.run([sys.executable, "-c", _SWALLOWED_SIGTERM, str(out), after], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["swallowed", "terminated"], (proc.stdout, proc.stderr[-2000:])
    assert proc.returncode == 143 and "Exception ignored" not in proc.stderr, proc.stderr[-2000:]
    assert not out.exists() and not list(tmp_path.glob(".out.*")), list(tmp_path.iterdir())
    assert time.time() - started < 25  # the 30 s sleep was cut short


def test_disk_full_is_one_line_with_path_and_bytes(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    """A writer that hits ENOSPC (patched: no tmpfs is needed) ends in one line, nothing left behind."""
    import errno

    import transformers.modeling_utils as mu

    from bertpress.app.cli import main

    def full(tensors, filename, *a, **k):
        with open(filename, "wb") as f:
            f.write(b"x" * 4096)  # part of the file made it to disk
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    monkeypatch.setattr(mu, "safe_save_file", full)
    out = tmp_path / "small"
    code = main(["compress", str(tiny_checkpoint), "--out", str(out), "--quantize", "none", "--no-progress"])
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert code == 2 and len(errors) == 1, err
    assert "the disk is full" in errors[0] and "model.safetensors" in errors[0], errors[0]
    assert re.search(r"needs more than \d+ bytes .* \d+ bytes are free", errors[0]), errors[0]
    assert not out.exists() and not list(tmp_path.glob(".small.*"))


def _dead_pid() -> int:
    import os

    pid = 999_999
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def test_stale_staging_of_dead_process_is_removed_live_and_unknown_kept(tmp_path, tiny_checkpoint):
    import os

    out = tmp_path / "deploy"
    dead = tmp_path / f".deploy.tmp-{_dead_pid()}-abc123"
    live = tmp_path / f".deploy.tmp-{os.getpid()}-def456"  # this test process is alive
    unknown = tmp_path / ".deploy.tmp-k2j3h4"  # an older bertpress's name: no owner recorded
    for d in (dead, live, unknown):
        d.mkdir()
        (d / "model.onnx").write_bytes(b"half")
    proc = run_cli("export", str(tiny_checkpoint), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not dead.exists() and live.exists() and unknown.exists()
    assert f"removed {dead}" in proc.stderr and f"{unknown} is left over" in proc.stderr
    assert Artifact.load(out).kind == "onnx"


def test_publish_refuses_an_out_another_process_created_meanwhile(tmp_path):
    from bertpress.artifact import Manifest, staged_output, write_manifest
    from bertpress.errors import InputError

    out = tmp_path / "o"
    with pytest.raises(InputError, match=r"created by another process while this run was working; nothing was "
                                         r"replaced: re-run with --overwrite"):
        with staged_output(out) as tmp:
            write_manifest(tmp, Manifest(kind="report", details={"who": "second"}))
            out.mkdir()  # meanwhile, the first process publishes its artifact
            write_manifest(out, Manifest(kind="report", details={"who": "first"}))
    assert Artifact.load(out).manifest.details == {"who": "first"}
    assert not list(tmp_path.glob(".o.tmp-*"))
    with staged_output(out, overwrite=True) as tmp:  # with --overwrite, the later one replaces it
        write_manifest(tmp, Manifest(kind="report", details={"who": "third"}))
    assert Artifact.load(out).manifest.details == {"who": "third"}


def test_two_processes_publishing_the_same_out_one_fails_cleanly(tmp_path, tiny_checkpoint):
    out = tmp_path / "deploy"
    argv = [sys.executable, "-m", "bertpress", "export", str(tiny_checkpoint), "--format", "torchscript",
            "--out", str(out)]
    procs = [subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in results)
    assert codes == [0, 2], results
    err = next(e for c, e in results if c == 2)
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    # #31: while the other is live its lock refuses (naming it); after it published, the output exists
    assert re.search(r"exists and is not empty|created by another process|is being written by another bertpress run",
                     errors[0]), errors[0]
    assert Artifact.load(out).kind == "torchscript"
    assert not list(tmp_path.glob(".deploy.tmp-*"))


def _payload_pickle(path: Path, marker: Path) -> None:
    import os
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path.write_bytes(pickle.dumps({"python": Payload(), "numpy": None, "cpu": None}))


def test_resume_never_unpickles_a_planted_payload_even_when_torch_is_told_to(tmp_path, tiny_checkpoint, tiny_data):
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 makes the Trainer's plain torch.load of rng_state.pth a full
    unpickle; the checkpoint is verified with an explicit weights-only load before the Trainer runs."""
    import json

    marker = tmp_path / "PWNED"
    env = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    # the payload is live: torch.load with the argument unset runs it in this environment
    probe = tmp_path / "probe.pth"
    _payload_pickle(probe, marker)
    subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(probe)!r})"], env={**__import__("os").environ, **env},
                   capture_output=True, timeout=120)
    assert marker.exists(), "the test payload does not run; the test would prove nothing"
    marker.unlink()

    out = tmp_path / "ft"
    ck = tmp_path / ".ft.partial" / "checkpoint-6"
    ck.mkdir(parents=True)
    (ck / "trainer_state.json").write_text(json.dumps({"global_step": 6, "log_history": []}))
    _payload_pickle(ck / "rng_state.pth", marker)
    proc = run_cli("finetune", "--model", str(tiny_checkpoint), "--data", str(tiny_data), "--out", str(out),
                   "--epochs", "1", "--batch-size", "8", "--max-length", "32", "--no-progress", "--resume", env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "rng_state.pth: refused to load pickled weights" in errors[0], proc.stderr[-2000:]
    assert not marker.exists(), "the planted payload ran"
    assert not out.exists()


def test_resume_falls_back_past_a_truncated_trainer_state(tmp_path):
    import json
    import random

    import numpy as np
    import torch

    from bertpress.finetune.config import FinetuneConfig
    from bertpress.finetune.train import _resume_checkpoint

    work = tmp_path / ".ft.partial"
    for step in (4, 8):
        ck = work / f"checkpoint-{step}"
        ck.mkdir(parents=True)
        # what the HF Trainer writes: rng state with numpy arrays, optimizer state, trainer_state.json
        torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.get_rng_state()},
                   ck / "rng_state.pth")
        torch.save({"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}, ck / "optimizer.pt")
        torch.save({"not": "read"}, ck / "training_args.bin")
        (ck / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    newest = work / "checkpoint-8" / "trainer_state.json"
    newest.write_text(newest.read_text()[:10])  # kill -9 while it was written
    assert _resume_checkpoint(FinetuneConfig(), work) == work / "checkpoint-4"
    assert not (work / "checkpoint-4" / "training_args.bin").exists()  # never read on resume: removed unread
