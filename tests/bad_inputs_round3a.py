"""Bad-input matrix entries for issue #31's classes 1, 7 and 9 (round 3 of reliability).

Same shape as tests/bad_inputs_round2.py: builders take the case's `Ctx` and return an argv for
the CLI or a zero-argument callable for the Python API.

- `lck-`: one live run per output. Another live process holds the output's lock (a real
  `fcntl.flock`, taken by a helper process started here), and every entry point into that output
  is refused in one line naming the process.
- `pth-`: paths named inside files (a manifest's `details.web.model_file`, a sharded checkpoint's
  index) stay inside the artifact.
- `sml-`: the smaller ones (bench after a web export, an unreadable OpenVINO IR).
"""

from __future__ import annotations

import atexit
import json
import subprocess
import sys
from pathlib import Path

import tests.bad_inputs_round2 as r2  # API builders
import tests.test_bad_inputs as base  # helpers are looked up when a case runs (circular import)

# ---- a live run holding an output's lock -----------------------------------------------------

_HOLD = (
    "import fcntl, os, sys\n"
    "path = sys.argv[1]\n"
    "os.makedirs(os.path.dirname(path), exist_ok=True)\n"
    "fd = os.open(path, os.O_RDWR | os.O_CREAT)\n"
    "fcntl.flock(fd, fcntl.LOCK_EX)\n"
    "os.write(fd, str(os.getpid()).encode())\n"
    "print('locked', flush=True)\n"
    "sys.stdin.read()\n"  # holds the lock until the test process closes its stdin (or dies)
)
_HOLDERS: list[subprocess.Popen] = []


def _stop_holders() -> None:
    for proc in _HOLDERS:
        proc.stdin.close()
        proc.wait(timeout=30)


atexit.register(_stop_holders)


def live_run(out: Path) -> int:
    """Start a process that holds OUT's lock, as a live bertpress run writing OUT does; its PID.
    (The lock's name is spelled here, not imported: the entry must fail, not error, without it.)"""
    lock = out.parent / f".{out.name}.lock"
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(lock)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    _HOLDERS.append(proc)
    return proc.pid


def held(c, out: Path | None = None):
    """Builder helper: OUT (default --out) is being written by a live run."""
    live_run(out or c.out)
    return c


BUSY = r"is being written by another bertpress run \(process \d+, lock \..*\.lock\); wait for it"


def _recipe(c, **stages) -> str:
    return c.recipe({"out": str(c.tmp / "run"), "checkpoint": str(c.ckpt), **stages})


def api_staged(c):
    from bertpress.artifact import staged_output

    def f():
        with staged_output(c.out) as tmp:
            (tmp / "x.txt").write_text("x")
    return f


# ---- paths named inside files --------------------------------------------------------------


def _index(name: str, shard) -> callable:
    def f(d: Path) -> None:
        (d / name).write_text(json.dumps({"metadata": {}, "weight_map": {
            "bert.embeddings.word_embeddings.weight": "model.safetensors",
            "classifier.weight": shard}}))
    return f


def _escaping_index(c, name: str = "model.safetensors.index.json", shard="../stolen.safetensors") -> str:
    (c.inputs / "stolen.safetensors").write_bytes((c.ckpt / "model.safetensors").read_bytes())
    return c.ckpt_variant("sharded", _index(name, shard))


def _web_artifact(c, model_file) -> str:
    """A web export's manifest whose details.web.model_file is MODEL_FILE (a real ONNX outside)."""
    def f(d: Path) -> None:
        m = json.loads((d / "bertpress.json").read_text())
        m.update(kind="web", details={"web": {"model_file": model_file}})
        (d / "bertpress.json").write_text(json.dumps(m))
    (c.inputs / "outside.onnx").write_bytes(b"\x08\x07")
    return c.ckpt_variant("web", f)


def _openvino(c, xml: bytes) -> str:
    def f(d: Path) -> None:
        (d / "openvino_model.xml").write_bytes(xml)
        (d / "openvino_model.bin").write_bytes(b"\0" * 16)
        m = json.loads((d / "bertpress.json").read_text())
        m.update(kind="openvino")
        (d / "bertpress.json").write_text(json.dumps(m))
    return c.ckpt_variant("ov", f)


def _later(fn, *args, **kw):
    return lambda: fn(*args, **kw)


def _load_model(path):
    from bertpress.models import load_classifier

    return load_classifier(path)


def _inspect(path):
    from bertpress.app.inspect import inspect_path

    return inspect_path(path)


OUTSIDE = r"outside .*refused"
WEB_BENCH = r"bench: cannot measure export.format: web"

CLASSES = {"lck-": "8 one live run per output", "pth-": "9 paths inside files", "sml-": "10 smaller ones"}

CASES_ROUND3A = [
    # --- 8. one live run per output: another live process is writing --out ---
    ("lck-ft", lambda c: base.ft(held(c)), r"--out .* " + BUSY),
    ("lck-ft-overwrite", lambda c: base.ft(held(c), "--overwrite"), BUSY),
    ("lck-ft-resume", lambda c: base.ft(held(c), "--resume"), BUSY),
    ("lck-cp", lambda c: base.cp(held(c), "--quantize", "dynamic"), BUSY),
    ("lck-cp-overwrite", lambda c: base.cp(held(c), "--overwrite"), BUSY),
    ("lck-ex", lambda c: base.ex(held(c)), BUSY),
    ("lck-ex-format-all", lambda c: base.ex(held(c), "--format", "all"), BUSY),
    ("lck-bn", lambda c: base.bn(held(c)), BUSY),
    ("lck-run-out", lambda c: ["run", _recipe(held(c, c.tmp / "run"), export={"format": "onnx"})],
     r"out: .*" + BUSY),
    ("lck-run-stage-folder", lambda c: ["run", _recipe(held(c, c.tmp / "run" / "export"), export={})],
     r"export output .*" + BUSY),
    ("lck-qs", lambda c: ["quickstart", "--out", str(held(c).out), "--recipe-only"], r"quickstart --out .*" + BUSY),
    ("lck-qs-overwrite", lambda c: ["quickstart", "--out", str(held(c).out), "--overwrite", "--recipe-only"], BUSY),
    ("lck-api-finetune", lambda c: r2.api_finetune(held(c)), BUSY),
    ("lck-api-compress", lambda c: r2.api_compress(held(c)), BUSY),
    ("lck-api-export", lambda c: r2.api_export(held(c)), BUSY),
    ("lck-api-bench", lambda c: r2.api_bench(held(c)), BUSY),
    ("lck-api-staged-output", lambda c: api_staged(held(c)), BUSY),
    ("lck-api-run-recipe", lambda c: r2.api_run_recipe(held(c, c.tmp / "run"), {
        "out": str(c.tmp / "run"), "checkpoint": str(c.ckpt), "export": {}}), BUSY),
    # --- 9. paths named inside files stay inside the artifact ---
    ("pth-inspect-web-model-file-escapes", lambda c: ["inspect", _web_artifact(c, "../outside.onnx")],
     r"details.web.model_file\): names the file '../outside.onnx', " + OUTSIDE),
    ("pth-inspect-web-model-file-absolute", lambda c: ["inspect", _web_artifact(c, str(c.inputs / "outside.onnx"))],
     OUTSIDE),
    ("pth-inspect-web-model-file-not-a-name", lambda c: ["inspect", _web_artifact(c, ["model.onnx"])],
     r"not a relative file name"),
    ("pth-api-inspect-web-model-file", lambda c: _later(_inspect, _web_artifact(c, "../outside.onnx")), OUTSIDE),
    ("pth-ft-shard-index-escapes", lambda c: base.ft(c, model=_escaping_index(c)),
     r"model.safetensors.index.json \(weight_map\): names the file '../stolen.safetensors', " + OUTSIDE),
    ("pth-cp-shard-index-escapes", lambda c: base.cp(c, src=_escaping_index(c)), OUTSIDE),
    ("pth-ex-shard-index-absolute", lambda c: base.ex(c, src=_escaping_index(
        c, shard=str(c.inputs / "stolen.safetensors"))), OUTSIDE),
    ("pth-bn-bin-index-escapes", lambda c: base.bn(c, src=_escaping_index(c, "pytorch_model.bin.index.json")),
     r"pytorch_model.bin.index.json \(weight_map\).*" + OUTSIDE),
    ("pth-inspect-shard-index-escapes", lambda c: ["inspect", _escaping_index(c)], OUTSIDE),
    ("pth-run-checkpoint-shard-index", lambda c: ["run", c.recipe({
        "out": str(c.tmp / "run"), "checkpoint": _escaping_index(c), "export": {}})], OUTSIDE),
    ("pth-api-load-shard-index", lambda c: _later(_load_model, _escaping_index(c)), OUTSIDE),
    ("pth-shard-index-unreadable", lambda c: base.ft(c, model=c.ckpt_variant(
        "m", base._write("model.safetensors.index.json", "{not json"))), r"unreadable shard index"),
    # --- 10. smaller ones ---
    ("sml-run-check-bench-on-web", lambda c: ["run", _recipe(c, export={"format": "web"}, bench={}), "--check"],
     WEB_BENCH),
    ("sml-run-bench-on-web", lambda c: ["run", _recipe(c, export={"format": "web"}, bench={})], WEB_BENCH),
    ("sml-api-inspect-openvino-not-ir", lambda c: _later(_inspect, _openvino(c, b"\0\1garbage")),
     r"not a readable OpenVINO IR"),
    ("sml-inspect-openvino-not-ir", lambda c: ["inspect", _openvino(c, b"<net><layers>")],
     r"openvino_model.xml: not a readable OpenVINO IR"),
]
