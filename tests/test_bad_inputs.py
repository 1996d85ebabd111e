"""The bad-input matrix: every entry must end in exit code 2 with one line naming the problem
(and the fix), no traceback, the inputs untouched and no finished artifact at --out.

Entries run the real CLI in-process (`bertpress.app.cli.main`) to keep the matrix fast; the
subprocess path is covered by the CLI tests. An entry whose builder returns a callable instead
of an argv calls the Python API, which must raise one BertpressError with a one-line message.
Entries may protect extra paths (a user's directory given as --out): they must be unchanged.
Every message is bounded (`errors.MAX_MESSAGE_CHARS`), whatever value it echoes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from bertpress.artifact import Artifact
from bertpress.app.cli import main
from bertpress.errors import MAX_MESSAGE_CHARS, BertpressError

Case = tuple[str, Callable[["Ctx"], Any], str]


class Ctx:
    """Fresh copies of the inputs for one case, under tmp_path/inputs (hashed before and after)."""

    def __init__(self, tmp: Path, checkpoint: Path, data: Path):
        self.tmp = tmp
        self.inputs = tmp / "inputs"
        self.ckpt = self.inputs / "ckpt"
        self.data = self.inputs / "data"
        shutil.copytree(checkpoint, self.ckpt)
        shutil.copytree(data, self.data)
        self.out = tmp / "out"
        self.protected: list[Path] = []  # paths (a user's files) that must be unchanged afterwards
        self.cwd: Path | None = None  # run the entry from this directory

    def user_dir(self, path: Path | None = None, files: dict[str, str] | None = None) -> Path:
        """A directory of the user's own files (protected), by default at --out."""
        path = path or self.out
        path.mkdir(parents=True, exist_ok=True)
        for name, text in (files or {"notes.txt": "my own notes"}).items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_text(text)
        self.protected.append(path)
        return path

    def recipe(self, data: dict | str, name: str = "r.yaml") -> str:
        text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
        return self.file(name, text)
    def file(self, name: str, content: str | bytes) -> str:
        path = self.inputs / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)

    def datadir(self, name: str, train: str | bytes, dev: str | None = None) -> str:
        d = self.inputs / name
        d.mkdir()
        (d / "train.tsv").write_bytes(train if isinstance(train, bytes) else train.encode())
        (d / "dev.tsv").write_text(dev if dev is not None else "sentence\tlabel\ngood\t1\nbad\t0\n")
        return str(d)

    def ckpt_variant(self, name: str, mutate: Callable[[Path], None]) -> str:
        d = self.inputs / name
        shutil.copytree(self.ckpt, d)
        mutate(d)
        return str(d)

    def onnx_bundle(self, name: str, payload: bytes) -> str:
        d = self.inputs / name
        d.mkdir()
        (d / "model.onnx").write_bytes(payload)
        (d / "bertpress.json").write_text(json.dumps(
            {"schema_version": 1, "kind": "onnx", "labels": ["negative", "positive"], "max_length": 128}))
        return str(d)


def _truncate(name: str) -> Callable[[Path], None]:
    def f(d: Path) -> None:
        p = d / name
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])
    return f


def _write(name: str, text: str) -> Callable[[Path], None]:
    return lambda d: (d / name).write_text(text)


def _model_type(kind: str) -> Callable[[Path], None]:
    def f(d: Path) -> None:
        cfg = json.loads((d / "config.json").read_text())
        cfg["model_type"] = kind
        (d / "config.json").write_text(json.dumps(cfg))
    return f


def ft(c: Ctx, *extra: str, data: str | None = None, model: str | None = None) -> list[str]:
    return ["finetune", "--model", model or str(c.ckpt), "--data", data or str(c.data),
            "--out", str(c.out), "--epochs", "1", "--batch-size", "8", "--max-length", "32",
            "--no-progress", *extra]


def cp(c: Ctx, *extra: str, src: str | None = None) -> list[str]:
    return ["compress", src or str(c.ckpt), "--out", str(c.out), "--no-progress", *extra]


def ex(c: Ctx, *extra: str, src: str | None = None) -> list[str]:
    return ["export", src or str(c.ckpt), "--out", str(c.out), *extra]


def bn(c: Ctx, *extra: str, src: str | None = None) -> list[str]:
    return ["bench", src or str(c.ckpt), "--out", str(c.out), "--batch-sizes", "1", "--seq-lens", "8",
            "--min-iters", "1", "--min-seconds", "0", "--warmup", "0", "--no-progress", *extra]


CASES: list[Case] = [
    # --- data files (through finetune) ---
    ("data-missing-path", lambda c: ft(c, data=str(c.inputs / "nope")), r"no such file or directory"),
    ("data-empty-train", lambda c: ft(c, data=c.datadir("d", "")), r"the file is empty"),
    ("data-header-only", lambda c: ft(c, data=c.datadir("d", "sentence\tlabel\n")), r"no data rows|empty"),
    ("data-no-text-column", lambda c: ft(c, data=c.datadir("d", "words\tlabel\nx\t1\n")), r"no text column"),
    ("data-no-label-column", lambda c: ft(c, data=c.datadir("d", "sentence\tstars\nx\t1\n")), r"label column"),
    ("data-ragged-row", lambda c: ft(c, data=c.datadir("d", "sentence\tlabel\ngood\t1\nbad\t0\tx\n")),
     r"train.tsv:3: 3 fields"),
    ("data-non-utf8", lambda c: ft(c, data=c.datadir("d", b"sentence\tlabel\ngood\t1\ncaf\xe9\t0\n")),
     r"train.tsv:3: bytes that are not UTF-8"),
    ("data-blank-text", lambda c: ft(c, data=c.datadir("d", "sentence\tlabel\ngood\t1\n \t0\n")),
     r"train.tsv:3: blank text"),
    ("data-no-split-dir", lambda c: ft(c, data=str(c.inputs)), r"no file for split"),
    ("data-label-not-in-map", lambda c: ft(c, "--labels", "negative,positive",
                                           data=c.datadir("d", "sentence\tlabel\ngood\tpositive\nmeh\tneutral\n")),
     r"label 'neutral' is not one of"),
    ("data-unsupported-type", lambda c: bn(c, "--eval-data", c.file("dev.parquet", "x")), r"unsupported file type"),
    ("data-bad-jsonl", lambda c: bn(c, "--eval-data", c.file("dev.jsonl", '{"text":"a","label":1}\n{oops\n')),
     r"invalid JSON"),
    # --- finetune options ---
    ("ft-out-not-empty", lambda c: (c.out.mkdir(), (c.out / "keep.txt").write_text("x"), ft(c))[-1],
     r"exists and is not empty.*--overwrite"),
    ("ft-max-length-too-big", lambda c: ft(c)[:-3] + ["--max-length", "4096", "--no-progress"],
     r"max.length.*position"),
    ("ft-fp16-on-cpu", lambda c: ft(c, "--precision", "fp16"), r"fp16 needs a CUDA GPU"),
    ("ft-negative-epochs", lambda c: ft(c)[:-1] + ["--epochs", "-1"], r"epochs=-1"),
    ("ft-zero-lr", lambda c: ft(c, "--lr", "0"), r"lr=0"),
    ("ft-model-missing", lambda c: ft(c, model=str(c.inputs / "nomodel")), r"no such model directory"),
    ("ft-model-no-config", lambda c: ft(c, model=c.ckpt_variant("m", lambda d: (d / "config.json").unlink())),
     r"no config.json"),
    ("ft-model-corrupt-config", lambda c: ft(c, model=c.ckpt_variant("m", _write("config.json", "{"))),
     r"corrupt config.json"),
    ("ft-model-truncated-weights", lambda c: ft(c, model=c.ckpt_variant("m", _truncate("model.safetensors"))),
     r"could not load the model weights"),
    ("ft-model-unsupported-type", lambda c: ft(c, model=c.ckpt_variant("m", _model_type("squeezebert"))),
     r"model type 'squeezebert' is not supported; supported: bert, distilbert"),
    ("ft-teacher-other-labels", lambda c: ft(c, "--teacher", _three_label_teacher(c)), r"teacher.*label"),
    ("ft-bad-precision-choice", lambda c: ft(c, "--precision", "int4"), r"invalid choice"),
    # --- compress ---
    ("cp-heads-ratio-1", lambda c: cp(c, "--prune-heads", "1.0", "--importance", "magnitude"), r"out of range"),
    ("cp-ffn-ratio-negative", lambda c: cp(c, "--prune-ffn", "-0.1", "--importance", "magnitude"),
     r"out of range"),
    ("cp-not-an-artifact", lambda c: cp(c, src=str(c.data)), r"not a model directory \(no config.json\)"),
    ("cp-out-inside-input", lambda c: ["compress", str(c.ckpt), "--out", str(c.ckpt / "small")],
     r"inside"),
    ("cp-static-without-calibration", lambda c: cp(c, "--quantize", "static"), r"calibration"),
    ("cp-calibration-too-small", lambda c: cp(c, "--quantize", "static", "--calibration-data", str(c.data),
                                               "--calibration-samples", "100000"),
     r"has 96 rows but --calibration-samples is 100000"),
    ("cp-eval-labels-mismatch", lambda c: cp(c, "--eval-data", c.datadir(
        "d", "sentence\tlabel\nx\tpos\n", dev="sentence\tlabel\nx\tjoy\ny\tanger\nz\tfear\n")), r"label 'joy' is not one of"),
    ("cp-unsupported-type", lambda c: cp(c, src=c.ckpt_variant("m", _model_type("squeezebert"))),
     r"'squeezebert' is not supported; supported: bert, distilbert"),
    ("cp-taylor-without-data", lambda c: cp(c, "--prune-heads", "0.5"), r"taylor.*calibration|calibration"),
    # --- export ---
    ("ex-not-an-artifact", lambda c: ex(c, src=str(c.data)), r"not a bertpress artifact"),
    ("ex-opset-too-high", lambda c: ex(c, "--opset", "99"), r"--opset 99 cannot be written"),
    ("ex-out-inside-input", lambda c: ["export", str(c.ckpt), "--out", str(c.ckpt / "deploy")], r"inside"),
    ("ex-bad-format", lambda c: ex(c, "--format", "tflite"), r"invalid choice"),
    ("ex-missing-input", lambda c: ex(c, src=str(c.inputs / "nothing")), r"no such"),
    # --- bench / inspect ---
    ("bn-unknown-device", lambda c: bn(c, "--device", "tpu"), r"not a device"),
    ("bn-cuda-without-cuda", lambda c: bn(c, "--device", "cuda"), r"CUDA is not available.*--device cpu"),
    ("bn-unknown-runtime", lambda c: bn(c, "--runtimes", "tensorrt"), r"tensorrt"),
    ("bn-truncated-onnx", lambda c: bn(c, src=c.onnx_bundle("o", b"\x08\x07garbage")), r"not a readable ONNX model"),
    ("bn-eval-labels-mismatch", lambda c: bn(c, "--eval-data", c.file("e.tsv", "sentence\tlabel\nx\tjoy\n")),
     r"label"),
    ("inspect-corrupt-onnx", lambda c: ["inspect", c.onnx_bundle("o", b"\x08\x07garbage")], r"not a readable ONNX"),
    ("inspect-empty-dir", lambda c: ["inspect", str((c.inputs / "e").mkdir() or c.inputs / "e")], r"not an artifact"),
    # --- recipes and output locations ---
    ("run-missing-recipe", lambda c: ["run", str(c.inputs / "none.yaml")], r"no such recipe file"),
    ("run-bad-yaml", lambda c: ["run", c.file("r.yaml", "out: [x")], r"not valid YAML"),
    ("run-unknown-key", lambda c: ["run", c.file("r.yaml", "out: x\nfinetune: {modle: minilm}\n")],
     r"finetune.modle: unknown key"),
    ("run-wrong-type", lambda c: ["run", c.file("r.yaml", "out: x\nfinetune: {epochs: many}\n")],
     r"epochs"),
    ("out-under-a-file", lambda c: ft(c)[:5] + ["--out", c.file("f.txt", "x") + "/sub"] + ft(c)[7:],
     r"cannot create|not a directory|is a file|cannot write"),
]


from tests.bad_inputs_round2 import CASES_ROUND2  # noqa: E402 - the classes of issue #18

CASES += CASES_ROUND2
from tests.bad_inputs_round3 import CASES_ROUND3  # noqa: E402 - issue #31, items 3 and 5

CASES += CASES_ROUND3

from tests.bad_inputs_round3a import CASES_ROUND3A  # noqa: E402 - issue #31's classes 1, 7, 9

CASES += CASES_ROUND3A


def _three_label_teacher(c: Ctx) -> str:
    from bertpress.testing import save_tiny_checkpoint

    return str(save_tiny_checkpoint(c.inputs / "teacher", labels=["a", "b", "c"]))


def _snapshot(root: Path) -> dict[str, str]:
    import stat

    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(root))] = "link:" + os.readlink(p)
        elif stat.S_ISFIFO(p.lstat().st_mode):
            out[str(p.relative_to(root))] = "fifo"
        elif p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_matrix_has_at_least_120_entries():
    assert len(CASES) >= 120
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name,build,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, build, message, tmp_path, tiny_checkpoint, tiny_data, capsys, monkeypatch):
    import re

    ctx = Ctx(tmp_path, tiny_checkpoint, tiny_data)
    argv = build(ctx)
    before = _snapshot(ctx.inputs)
    protected = {str(p): _snapshot(p) for p in ctx.protected}
    if ctx.cwd is not None:
        monkeypatch.chdir(ctx.cwd)
    if callable(argv):  # the Python API: one BertpressError, one line
        with pytest.raises(BertpressError) as raised_api:
            argv()
        msg = str(raised_api.value)
        assert "\n" not in msg and len(msg) <= MAX_MESSAGE_CHARS, msg[:500]
        assert re.search(message, msg), (name, msg)
        assert _snapshot(ctx.inputs) == before, f"{name} modified its inputs"
        assert {str(p): _snapshot(p) for p in ctx.protected} == protected, f"{name} touched the user's files"
        assert not list(tmp_path.glob(".out.tmp-*")), "a temp output was left behind"
        return
    with pytest.raises(SystemExit) if "invalid choice" in message else _nullcontext() as raised:
        code = main(argv)
    if raised is not None and hasattr(raised, "value"):
        code = raised.value.code
    err = capsys.readouterr().err.strip()
    assert code == 2, (name, code, err)
    lines = [ln for ln in err.splitlines()
             if ln.strip() and not ln.startswith(("[", "WARNING", "Some weights", "note: "))]
    # one error line; a recipe check may follow it with its list of problems ("  - ...")
    while lines and lines[-1].startswith("  - "):
        item = lines.pop().strip()
        lines[-1] += " " + item
    assert lines and lines[-1].startswith("error: "), err
    assert "Traceback" not in err
    assert re.search(message, lines[-1]), (name, lines[-1])
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, err
    assert len(lines[-1]) <= MAX_MESSAGE_CHARS + len("error: "), f"{name}: unbounded message"
    assert _snapshot(ctx.inputs) == before, f"{name} modified its inputs"
    assert {str(p): _snapshot(p) for p in ctx.protected} == protected, f"{name} touched the user's files"
    assert (not (ctx.out.exists() and Artifact.is_finished(ctx.out)) or name == "ft-out-not-empty"
            or ctx.out in ctx.protected)
    assert not list(tmp_path.glob(".out.tmp-*")), "a temp output was left behind"


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
