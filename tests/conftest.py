from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Nothing may touch the network in tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SST2 = REPO.parent / "shared" / "data" / "sst2"


def pytest_collection_modifyitems(config, items):
    import importlib.util

    has_cuda = False
    if importlib.util.find_spec("torch") is not None:
        import torch

        has_cuda = torch.cuda.is_available()
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords and not has_cuda:
            item.add_marker(skip_cuda)


@pytest.fixture(scope="session")
def sst2_dir() -> Path:
    if not (SST2 / "dev.tsv").is_file():
        pytest.skip(f"SST-2 data not found at {SST2}")
    return SST2


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A saved tiny random BERT checkpoint artifact (read-only for tests: copy before changing)."""
    from bertpress.testing import save_tiny_checkpoint

    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "checkpoint")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    from bertpress.testing import write_tiny_dataset

    return write_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny")


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 300):
    """Run `python -m bertpress ARGS` in a fresh process; returns CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "bertpress", *args],
        capture_output=True, text=True, env=full_env, cwd=cwd or REPO, timeout=timeout,
    )


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Print the size of the bad-input matrix (issue: 'print the count in the test summary')."""
    try:
        from tests.test_bad_inputs import CASES
    except Exception:  # the module was not collected or failed to import
        return
    reports = terminalreporter.stats
    ran = [r for key in ("passed", "failed") for r in reports.get(key, [])
           if getattr(r, "when", "") == "call" and "test_bad_input[" in r.nodeid]
    if ran:
        failed = sum(1 for r in ran if r.failed)
        terminalreporter.write_line(
            f"bad-input matrix: {len(ran)} of {len(CASES)} entries run, {len(ran) - failed} refused cleanly"
        )
        from tests.bad_inputs_round2 import CLASSES as ROUND2
        from tests.bad_inputs_round3 import CLASSES as ROUND3
        from tests.bad_inputs_round3a import CLASSES as ROUND3A

        CLASSES = {**ROUND2, **ROUND3, **ROUND3A}

        per: dict[str, list[int]] = {}
        for r in ran:
            entry = r.nodeid.split("test_bad_input[", 1)[1].rstrip("]")
            cls = next((c for p, c in CLASSES.items() if entry.startswith(p)), "round 1")
            per.setdefault(cls, [0, 0])[0] += 1
            per[cls][1] += 0 if r.failed else 1
        terminalreporter.write_line("bad-input matrix by class: " + "; ".join(
            f"{c}: {ok}/{n}" for c, (n, ok) in sorted(per.items())))


@pytest.fixture(scope="session")
def anchor_python():
    """anchor_python("optimum" | "optimum-intel") -> that anchor environment's python.

    The anchors (.venv-optimum, .venv-intel) are built by `make anchors`, which `make test`
    depends on. Without one a test skips and says why — except under CI (CI=true), which builds
    them, so there a missing anchor environment fails the test instead of hiding it."""
    from bertpress.errors import DeviceError

    def find(baseline: str) -> Path:
        from bertpress.bench.anchors import find_env

        try:
            return find_env(baseline)
        except DeviceError as exc:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"CI builds the anchor environments (make test depends on them): {exc}")
            pytest.skip(f"no anchor environment: {exc}")

    return find


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`):
    the fine-tuning tests' numbers do not depend on the machine's core count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
