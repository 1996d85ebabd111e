"""The declared transformers line (pyproject.toml) is the one installed and tested: installing
bertpress into a transformers-5.x environment must not downgrade it, and `make test` also runs
the suite at the lowest version declared (tests/lowest-versions.txt, .venv-low)."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]


def _requirements() -> dict[str, Requirement]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {Requirement(d).name.lower(): Requirement(d) for d in deps}


def test_installed_hf_stack_is_inside_the_declared_ranges():
    reqs = _requirements()
    for name in ("transformers", "tokenizers", "huggingface-hub", "torch", "onnxruntime"):
        assert Version(version(name)) in reqs[name].specifier, (name, version(name), str(reqs[name].specifier))


def test_the_declared_line_is_transformers_5_and_accepts_the_current_release():
    spec = _requirements()["transformers"].specifier
    assert Version("4.57.6") not in spec  # the vulnerable line is not what we run on
    assert all(Version(v) in spec for v in ("5.2.0", "5.23.0", "5.24.0"))
    # Optimum packages would hold transformers below 4.58: they live in the anchors' environments.
    assert not {"optimum", "optimum-onnx", "optimum-intel"} & set(_requirements())


def test_lowest_tested_version_is_the_declared_lower_bound():
    pins = [line.split("==") for line in (REPO / "tests" / "lowest-versions.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    lowest = dict((k.strip().lower(), v.strip()) for k, v in pins)["transformers"]
    lower_bounds = [s.version for s in _requirements()["transformers"].specifier if s.operator == ">="]
    assert Version(lowest) == Version(lower_bounds[0]) == Version("5.2.0")
