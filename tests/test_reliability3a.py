"""Issue #31, classes 1, 7, 8 and 9: concurrent runs into one output, paths named inside files,
published modes under the user's umask, and the smaller ones (inspect reads OpenVINO, a CSV-quoted
TSV whose tab and newline cancel out). The bad-input entries are in tests/bad_inputs_round3a.py."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bertpress.artifact import (Artifact, dead_partial_dirs, lock_path, output_locks, partial_dir,
                                resumable_partial, staged_output, write_manifest, Manifest)
from bertpress.errors import InputError
from tests.conftest import REPO, run_cli

# ---- 1. two runs into one --out ---------------------------------------------------------------


def _finetune_argv(model: Path, data: Path, out: Path, seed: int) -> list[str]:
    return [sys.executable, "-m", "bertpress", "finetune", "--model", str(model), "--data", str(data),
            "--out", str(out), "--epochs", "2", "--batch-size", "8", "--max-length", "32", "--eval-every", "6",
            "--seed", str(seed), "--no-progress"]


def _wait(ready, proc, timeout=300.0) -> None:
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, f"the first run ended before the second started: {proc.stderr.read()[-2000:]}"


@pytest.mark.parametrize("first,second,stop_at", [(1, 2, "locked"), (2, 1, "checkpointed")],
                         ids=["seed1-first-while-starting", "seed2-first-while-training"])
def test_two_finetune_processes_into_one_out_do_not_mix(tmp_path, tiny_checkpoint, tiny_data, first, second,
                                                        stop_at):
    """Two real processes into one --out, in both orders: while the first is live (stopped right
    after it took the lock, or mid-training with a checkpoint in its work directory) the second is
    refused in one line naming it, with or without --overwrite; the first publishes its own model;
    once it is gone, the second runs (--overwrite) and publishes its own."""
    out = tmp_path / "ft"
    a = subprocess.Popen(_finetune_argv(tiny_checkpoint, tiny_data, out, first), cwd=REPO,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lock = lock_path(out)
    work = tmp_path / f".ft.partial-{a.pid}"  # the first run's private work directory
    try:
        if stop_at == "locked":
            _wait(lambda: lock.is_file() and lock.read_text().strip() == str(a.pid), a)
        else:
            _wait(lambda: any(work.glob("checkpoint-*/trainer_state.json")), a)
        os.kill(a.pid, signal.SIGSTOP)
        try:
            for extra in ([], ["--overwrite"], ["--resume"]):
                b = run_cli(*_finetune_argv(tiny_checkpoint, tiny_data, out, second)[3:], *extra)
                errors = [ln for ln in b.stderr.splitlines() if ln.startswith("error: ")]
                assert b.returncode == 2, b.stderr[-2000:]
                assert len(errors) == 1 and f"is being written by another bertpress run (process {a.pid}" in errors[0]
                assert "Traceback" not in b.stderr
        finally:
            os.kill(a.pid, signal.SIGCONT)
        assert a.wait(timeout=300) == 0, a.stderr.read()[-2000:]
    finally:
        if a.poll() is None:
            a.kill()
    m = Artifact.load(out).manifest
    assert m.recipe["_data"]["seed"] == first  # its own run, not the other's
    assert not list(tmp_path.glob(".ft.*"))  # no work directory, staging or lock left
    # the first is gone: the second may now replace it, and publishes its own
    b = run_cli(*_finetune_argv(tiny_checkpoint, tiny_data, out, second)[3:], "--overwrite")
    assert b.returncode == 0, b.stderr[-2000:]
    assert Artifact.load(out).manifest.recipe["_data"]["seed"] == second
    assert not list(tmp_path.glob(".ft.*"))


def test_a_lock_whose_holder_died_is_free(tmp_path):
    """flock dies with its holder (kill -9): the next run takes the output at once."""
    out = tmp_path / "o"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode()); print('x', flush=True); "
        "time.sleep(300)"), str(lock_path(out))], stdout=subprocess.PIPE, text=True)
    holder.stdout.readline()
    with pytest.raises(InputError, match=rf"process {holder.pid}"), output_locks():
        from bertpress.artifact import check_output_dir
        check_output_dir(out, overwrite=False)
    holder.kill()
    holder.wait()
    with staged_output(out) as tmp:
        write_manifest(tmp, Manifest(kind="report"))
    assert Artifact.is_finished(out) and not lock_path(out).exists()


def test_locks_are_reentrant_in_one_process_and_released_after(tmp_path):
    from bertpress.artifact import check_output_dir

    out = tmp_path / "o"
    with output_locks():  # a verb's scope: its first check of the output takes the lock
        check_output_dir(out, overwrite=False)
        with staged_output(out) as tmp:  # re-enters the lock this process holds
            with staged_output(tmp_path / "other") as tmp2:
                write_manifest(tmp2, Manifest(kind="report"))
            write_manifest(tmp, Manifest(kind="report"))
        assert lock_path(out).exists()  # still held by the outer scope
    assert not lock_path(out).exists()


def test_work_directories_are_private_and_a_resume_names_a_gone_run(tmp_path):
    out = tmp_path / "ft"
    mine = partial_dir(out)
    assert mine.name == f".ft.partial-{os.getpid()}"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f".ft.partial-{int(gone.stdout)}"
    legacy = tmp_path / ".ft.partial"
    for d in (mine, legacy, dead):
        d.mkdir()
        time.sleep(0.02)
    other_live = tmp_path / f".ft.partial-{os.getppid()}"  # a live process's: never resumed or removed
    other_live.mkdir()
    assert dead_partial_dirs(out) == [dead, legacy]  # newest first; ours and live ones excluded
    assert resumable_partial(out) == dead


# ---- 7. paths named inside files (more in the matrix: pth-*) ---------------------------------------


def test_a_shard_index_inside_the_directory_is_accepted(tmp_path, tiny_checkpoint):
    import shutil

    from bertpress.models import load_classifier

    d = tmp_path / "m"
    shutil.copytree(tiny_checkpoint, d)
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": {
        "classifier.weight": "model.safetensors", "classifier.bias": "./model.safetensors"}}))
    model, _ = load_classifier(d)
    assert model.config.num_labels == 2


# ---- 8. published artifacts follow the umask ------------------------------------------------------


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root.parent)): stat.S_IMODE(p.lstat().st_mode)
            for p in [root, *root.rglob("*")] if not p.is_symlink()}


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_published_output_follows_the_umask(tmp_path, tiny_checkpoint, umask):
    """A web server running as another user can read what export publishes (umask 022); a
    stricter umask is honoured too. mkdtemp's 0700 staging directory used to leak into the output."""
    out = tmp_path / "onnx"
    proc = subprocess.run(["sh", "-c", f'umask {umask:03o} && exec "$@"', "sh", sys.executable, "-m", "bertpress",
                           "export", str(tiny_checkpoint), "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    modes = _modes(out)
    assert (out / "onnx").is_dir() and (out / "predict.py").is_file()
    for name, mode in modes.items():
        path = tmp_path / name
        full = 0o777 if path.is_dir() or mode & stat.S_IXUSR else 0o666
        assert mode == full & ~umask, (name, oct(mode))


def test_staged_output_applies_the_umask_to_every_entry(tmp_path):
    old = os.umask(0o022)
    try:
        with staged_output(tmp_path / "o") as tmp:
            (tmp / "sub").mkdir(mode=0o700)
            fd = os.open(tmp / "sub" / "private.txt", os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(fd)
            write_manifest(tmp, Manifest(kind="report"))
    finally:
        os.umask(old)
    assert _modes(tmp_path / "o") == {"o": 0o755, "o/sub": 0o755, "o/sub/private.txt": 0o644,
                                      "o/bertpress.json": 0o644}


# ---- 9. smaller ones --------------------------------------------------------------------------


def test_inspect_reads_an_openvino_artifact(tmp_path, tiny_checkpoint):
    pytest.importorskip("openvino")
    from bertpress.app.inspect import inspect_path, inspect_text
    from bertpress.export import export
    from bertpress.export.config import ExportConfig

    export(tiny_checkpoint, ExportConfig(format="openvino"), tmp_path / "ov")
    data = inspect_path(tmp_path / "ov")
    model = data["model"]
    assert model["format"] == "openvino" and model["parameters"] > 20_000
    assert [i["name"] for i in model["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert model["outputs"][0]["name"] == "logits" and model["op_counts"]["MatMul"] > 0
    assert "openvino_model.xml + openvino_model.bin" in inspect_text(data)


def test_a_csv_quoted_tsv_whose_tab_and_newline_cancel_out_is_read_quoted(tmp_path, capsys):
    from bertpress.data import load_text_classification

    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", lineterminator="\n")  # what pandas to_csv(sep="\t") writes
    texts = ["a good\tday\nfine", "bad", "a \"nice\" one", "awful"]
    w.writerow(["sentence", "label"])
    for text, label in zip(texts, [1, 0, 1, 0]):
        w.writerow([text, label])
    (tmp_path / "train.tsv").write_text(buf.getvalue())
    # read literally, every line has two fields: nothing looks ragged
    assert all(len(ln.split("\t")) == 2 for ln in buf.getvalue().splitlines())
    ds = load_text_classification(str(tmp_path / "train.tsv"))
    assert ds.texts == ["a good\tday\nfine", "bad", 'a "nice" one', "awful"] and ds.labels == [1, 0, 1, 0]
    assert "CSV-quoted" in capsys.readouterr().err


def test_run_check_refuses_bench_after_a_web_export(tmp_path, tiny_checkpoint):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"out: {tmp_path / 'run'}\ncheckpoint: {tiny_checkpoint}\nexport: {{format: web}}\nbench: {{}}\n")
    proc = run_cli("run", str(recipe), "--check")
    assert proc.returncode == 2 and "bench: cannot measure export.format: web" in proc.stderr
    assert not (tmp_path / "run").exists()
