"""The shape of the code: the dependency direction, the registries, the seams.

core (bertpress/) <- finetune <- compress <- export <- bench <- app: a module may import only
its own layer and earlier ones, function-level imports and module names in strings
(importlib, lazy export tables) included.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("core", "finetune", "compress", "export", "bench", "app")
FOLDERS = {"bertpress": "core", "finetune": "finetune", "compress": "compress", "export": "export",
           "bench": "bench", "app": "app"}


def layer_of_module(name: str) -> str | None:
    """'bertpress.compress.api' -> 'compress'; 'bertpress.models' -> 'core'; others -> None."""
    parts = name.split(".")
    if parts[0] != "bertpress":
        return None
    if len(parts) > 1 and parts[1] in LAYERS[1:]:
        return parts[1]
    return "core"


def layer_of_file(path: Path) -> str:
    rel = path.relative_to(REPO)
    if rel.as_posix() == "bertpress/__main__.py":
        return "app"  # `python -m bertpress`: an entry point, part of the composition root
    return FOLDERS[rel.parts[0]]


def imported_names(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            if node.module == "bertpress":  # `from bertpress import compress`
                out += [(node.lineno, f"bertpress.{a.name}") for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value.startswith("bertpress.") and " " not in node.value:
            out.append((node.lineno, node.value.split(":")[0]))
    return out


def violations(path: Path, source: str | None = None) -> list[str]:
    here = LAYERS.index(layer_of_file(path))
    tree = ast.parse(source if source is not None else path.read_text(encoding="utf-8"))
    bad = []
    for line, name in imported_names(tree):
        target = layer_of_module(name)
        if target is not None and LAYERS.index(target) > here:
            bad.append(f"{path.relative_to(REPO)}:{line} ({layer_of_file(path)}) imports {name} ({target})")
    return bad


def project_files() -> list[Path]:
    files = []
    for folder in FOLDERS:
        files += [p for p in (REPO / folder).rglob("*.py") if "templates" not in p.parts]
    return sorted(files)


def test_imports_follow_the_dependency_direction():
    bad = [v for f in project_files() for v in violations(f)]
    assert not bad, "imports against core <- finetune <- compress <- export <- bench <- app:\n" + "\n".join(bad)


@pytest.mark.parametrize("folder,code,expected", [
    ("compress", "def f():\n    from bertpress.export.api import export\n", "imports bertpress.export.api (export)"),
    ("bertpress", "import bertpress.bench.run\n", "imports bertpress.bench.run (bench)"),
    ("bertpress", "from bertpress import finetune\n", "imports bertpress.finetune (finetune)"),
    ("export", "X = {'a': 'bertpress.app.cli'}\n", "imports bertpress.app.cli (app)"),
    ("bench", "from bertpress.export.onnx import x\nfrom bertpress.compress import y\nimport bertpress.timing\n", None),
], ids=["function-level", "core-imports-stage", "from-package", "string-module", "allowed"])
def test_the_direction_check_catches_what_it_should(folder, code, expected):
    found = violations(REPO / folder / "probe.py", code)
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and found[0].endswith(expected), found


def test_the_core_imports_without_any_stage():
    """Importing every core module loads no stage module (a fresh interpreter proves it)."""
    mods = sorted(p.stem for p in (REPO / "bertpress").glob("*.py") if p.stem not in ("__main__",))
    code = ("import importlib, sys\n"
            f"for m in {mods!r}:\n    importlib.import_module('bertpress.' + m if m != '__init__' else 'bertpress')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[:2] and m.startswith('bertpress.') "
            "and m.split('.')[1] in ('finetune', 'compress', 'export', 'bench', 'app')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_deploy_search_runtime_without_the_app_layer_says_how():
    code = ("from bertpress.compress.search import SEARCH_RUNTIMES\n"
            "try:\n    SEARCH_RUNTIMES.get('onnxruntime')\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == (
        "ConfigError unknown search runtime 'onnxruntime' (known: pytorch); runtimes that export candidates are "
        "provided by bertpress.app: `import bertpress.app` first (the CLI and recipes do)")
    code = "import bertpress.app\nfrom bertpress.compress.search import SEARCH_RUNTIMES\nprint(list(SEARCH_RUNTIMES))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "['pytorch', 'onnxruntime', 'openvino']", out.stderr
