"""The CLI shell: --help, info, inspect, exit codes, environment hygiene."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli


def test_help_is_instant_and_lists_commands():
    t0 = time.perf_counter()
    proc = run_cli("--help")
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0
    for cmd in ("info", "inspect"):
        assert cmd in proc.stdout
    # --help must not import torch: check directly rather than by time alone.
    code = "import sys; from bertpress.app.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert elapsed < 20  # generous: process start only, no heavy imports


def _cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def test_info_json_reports_this_machine():
    proc = run_cli("info", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert {"python", "versions", "cpu", "torch", "cuda", "onnxruntime_providers"} <= set(data)
    isa = data["cpu"]["isa"]
    flags = _cpu_flags()
    assert isa["avx2"] == ("avx2" in flags)
    assert isa["avx512"] == ("avx512f" in flags)
    assert isa["vnni"] == bool({"avx512_vnni", "avx_vnni"} & flags)
    assert isa["amx"] == ({"amx_tile", "amx_int8"} <= flags)
    assert isa["bf16"] == bool({"avx512_bf16", "amx_bf16"} & flags)
    from importlib.metadata import version

    assert data["versions"]["transformers"] == version("transformers") and \
        data["versions"]["transformers"].startswith("5.")
    assert data["cuda"]["available"] in (True, False)
    text = run_cli("info")
    assert "AVX2 yes" in text.stdout if "avx2" in flags else "AVX2 no" in text.stdout
    assert f"bf16 {'yes' if isa['bf16'] else 'no'} (avx512_bf16" in text.stdout


def test_inspect_checkpoint_text_and_json(tiny_checkpoint):
    proc = run_cli("inspect", str(tiny_checkpoint), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["manifest"]["kind"] == "checkpoint"
    assert data["model"]["layers"] == [{"heads": 4, "head_size": 8, "ffn": 37}] * 2
    assert data["model"]["parameters"] > 0
    text = run_cli("inspect", str(tiny_checkpoint))
    assert "layer  1   heads   4 x 8   ffn 37" in text.stdout


@pytest.mark.parametrize("kind", ["missing", "empty_dir", "corrupt_onnx", "random_file"])
def test_inspect_bad_paths_exit_2_with_one_line(tmp_path, kind):
    target = tmp_path / "x"
    if kind == "empty_dir":
        target.mkdir()
    elif kind == "corrupt_onnx":
        target = tmp_path / "model.onnx"
        target.write_bytes(b"\x08\x07garbage-not-onnx")
    elif kind == "random_file":
        target.write_text("hello")
    proc = run_cli("inspect", str(target))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr


def test_debug_shows_traceback(tmp_path):
    proc = run_cli("inspect", str(tmp_path / "missing"), "--debug")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr


def test_no_nvidia_packages_in_environment():
    out = subprocess.run([sys.executable, "-m", "pip", "list", "--format=json"],
                         capture_output=True, text=True, check=True)
    names = [p["name"].lower() for p in json.loads(out.stdout)]
    assert not [n for n in names if n.startswith("nvidia-")]


def test_package_maps_stage_folders():
    import bertpress.bench
    import bertpress.compress
    import bertpress.export
    import bertpress.finetune

    for mod, folder in ((bertpress.finetune, "finetune"), (bertpress.compress, "compress"),
                        (bertpress.export, "export"), (bertpress.bench, "bench")):
        assert Path(mod.__file__).parent == REPO / folder
