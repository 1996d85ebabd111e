"""The anchor baselines' own environments, and the subprocess that builds an anchor's model files.

Optimum-ONNX (optimum 2.1 + optimum-onnx 0.1, which hold transformers below 4.58) and
Optimum-Intel (optimum 2.3, nncf, openvino-tokenizers) cannot share one environment with each
other, nor with bertpress once bertpress runs on transformers 5.x. So each anchor lives in its
own virtual environment, created by `make anchors` next to `.venv` from the pinned
`*.requirements.txt` files in this folder, and runs there as a script (`optimum_onnx.py`,
`optimum_intel.py`) that only *builds* the anchor's model files the way its library documents.
bench then times those files in its own process with the same runtime settings as our variants
(ONNX Runtime for `optimum`, `bertpress.openvino_rt` for `optimum-intel`), so only the model differs.

The scripts import nothing from bertpress (bertpress is not installed there, and its
dependencies would drag the anchor's transformers along); what they need is passed on the
command line, and they answer with `anchor.json` beside the files they wrote.

Where an environment is looked for, first match wins:
1. `$BERTPRESS_OPTIMUM_ENV` / `$BERTPRESS_OPTIMUM_INTEL_ENV` (a venv directory) when set — the
   way to point a non-editable install of bertpress at environments built elsewhere;
2. `.venv-optimum` / `.venv-intel` beside the virtual environment bertpress runs in;
3. the same names at the root of the source checkout bertpress was imported from.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import bertpress
from bertpress.errors import ArtifactError, DeviceError

HERE = Path(__file__).resolve().parent
MAKE_TARGET = "make anchors"
# A script exits with this code when its environment lacks a package (an incomplete env is a
# refusal naming the make target, not a failure of the anchor).
EXIT_MISSING_PACKAGE = 3


@dataclasses.dataclass(frozen=True)
class AnchorEnv:
    """One anchor: its baseline name, venv directory name, override variable and builder script."""

    baseline: str
    venv: str
    variable: str
    script: str
    requirements: str

    @property
    def script_path(self) -> Path:
        return HERE / self.script

    @property
    def requirements_path(self) -> Path:
        return HERE / self.requirements


ANCHORS = {
    "optimum": AnchorEnv("optimum", ".venv-optimum", "BERTPRESS_OPTIMUM_ENV", "optimum_onnx.py",
                         "optimum.requirements.txt"),
    "optimum-intel": AnchorEnv("optimum-intel", ".venv-intel", "BERTPRESS_OPTIMUM_INTEL_ENV", "optimum_intel.py",
                               "intel.requirements.txt"),
}


def _python_of(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def candidates(anchor: AnchorEnv) -> list[Path]:
    """Where the environment may be, in the order looked at (see the module docstring)."""
    override = os.environ.get(anchor.variable, "").strip()
    if override:
        return [Path(override).expanduser()]
    out: list[Path] = []
    if sys.prefix != sys.base_prefix:  # running inside a venv: look beside it
        out.append(Path(sys.prefix).parent / anchor.venv)

    root = Path(bertpress.__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file():  # a source checkout (editable install or PYTHONPATH)
        out.append(root / anchor.venv)
    seen: list[Path] = []
    for p in out:
        if p.absolute() not in [s.absolute() for s in seen]:
            seen.append(p)
    return seen


def find_env(baseline: str) -> Path:
    """The anchor environment's python, or DeviceError naming the make target (one line)."""
    anchor = ANCHORS[baseline]
    looked = candidates(anchor)
    for venv in looked:
        if _python_of(venv).is_file():
            return _python_of(venv)
    if os.environ.get(anchor.variable, "").strip():
        raise DeviceError(f"baseline {baseline} needs its own environment, and ${anchor.variable}={looked[0]} has no "
                          f"bin/python; point {anchor.variable} at a venv built from {anchor.requirements_path.name}, "
                          f"or unset it and run `{MAKE_TARGET}` in the bertpress repo")
    where = ", ".join(str(p) for p in looked) or "nowhere (not in a venv, not a source checkout)"
    raise DeviceError(f"baseline {baseline} needs {anchor.venv} (looked in {where}); run `{MAKE_TARGET}` in the "
                      f"bertpress repo, or set {anchor.variable} to such a venv")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def build(baseline: str, args: Sequence[str], out_dir: Path, *, threads: int,
          timeout_s: float = 3600.0) -> dict[str, Any]:
    """Run the anchor's builder script in its environment; return its `anchor.json` record.

    out_dir must not exist (the script creates it). Raises DeviceError when the environment is
    absent or incomplete, ArtifactError when the anchor's own export/quantization fails (its
    last line in the message, the whole output kept in a log file the message names)."""
    anchor = ANCHORS[baseline]
    python = find_env(baseline)
    cmd = [str(python), "-E", "-s", str(anchor.script_path), "--out", str(out_dir), "--threads", str(threads), *args]
    # -E: the anchor's interpreter must not see this environment's PYTHONPATH / PYTHONHOME;
    # -s: nor the user's site-packages. Thread pools are sized like bench's own.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ArtifactError(f"baseline {baseline}: building the anchor took over {timeout_s:.0f} s and was stopped; "
                            f"drop --baselines {baseline} or run it on a quieter machine") from None
    except OSError as exc:
        raise DeviceError(f"baseline {baseline}: cannot start {python} ({exc.strerror}); "
                          f"rebuild it with `{MAKE_TARGET}`") from None
    if proc.returncode == EXIT_MISSING_PACKAGE:
        raise DeviceError(f"baseline {baseline}: {python.parent.parent} is incomplete ({_last_line(proc.stderr)}); "
                          f"rebuild it with `{MAKE_TARGET}`")
    if proc.returncode != 0:
        # The run's work directory is removed at the end: keep the output where the user can read it.
        fd, log = tempfile.mkstemp(prefix=f"bertpress-{baseline}-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"$ {shlex.join(cmd)}\n{proc.stdout}{proc.stderr}")
        raise ArtifactError(f"baseline {baseline}: the anchor build failed in {python.parent.parent} "
                            f"({_last_line(proc.stderr) or f'exit code {proc.returncode}'}; full output in {log}); "
                            f"drop --baselines {baseline} or check the checkpoint")
    record_file = out_dir / "anchor.json"
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"baseline {baseline}: the anchor build wrote no readable {record_file} ({exc}); "
                            f"rebuild the environment with `{MAKE_TARGET}`") from None
    model = out_dir / str(record.get("model", ""))
    if not record.get("model") or not model.is_file() or not model.resolve().is_relative_to(out_dir.resolve()):
        raise ArtifactError(f"baseline {baseline}: anchor.json names no model file inside {out_dir}")
    record["model_path"] = str(model)
    record["python"] = str(python)
    return record
