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
    """compress alone cannot export candidates: the Python API without the app's deploy runtimes is
    refused in one line naming the fix; the app passes them in explicitly (no import-time plugin)."""
    from bertpress.compress.search import deploy_twin
    from bertpress.errors import ConfigError

    assert deploy_twin("pytorch", None) is None
    with pytest.raises(ConfigError) as e:
        deploy_twin("onnxruntime", None)
    assert str(e.value) == (
        "search runtime 'onnxruntime' exports every candidate, which needs the export stage: call "
        "compress(..., runtimes=bertpress.app.search_runtimes.DEPLOY_RUNTIMES) (the CLI and recipes do)")
    code = ("import bertpress.app, sys\nprint('bertpress.app.search_runtimes' in sys.modules)\n"
            "from bertpress.app.search_runtimes import DEPLOY_RUNTIMES\nprint(sorted(DEPLOY_RUNTIMES))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split("\n")[:2] == ["False", "['onnxruntime', 'openvino']"], out.stderr


# ---- function-level imports and cycles -----------------------------------------------------

# A project module imported inside a function must say why on that line or the line above
# (`# lazy: ...`: it keeps torch / onnx / openvino / transformers off a light path such as
# `--help` or a light core import). CEILING bounds their number; it only goes down.
LAZY_MARK = "# lazy:"
CEILING = 13


def _is_project(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom):
        return bool(node.module) and node.level == 0 and node.module.split(".")[0] == "bertpress"
    return isinstance(node, ast.Import) and any(a.name.split(".")[0] == "bertpress" for a in node.names)


def function_level_imports(path: Path, source: str | None = None) -> list[tuple[int, bool]]:
    """(line, justified) of every project import inside a function of `path`."""
    text = source if source is not None else path.read_text(encoding="utf-8")
    lines = text.splitlines()
    found = set()
    for fn in ast.walk(ast.parse(text)):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if _is_project(node):
                    near = lines[node.lineno - 1] + (lines[node.lineno - 2] if node.lineno > 1 else "")
                    found.add((node.lineno, LAZY_MARK in near))
    return sorted(found)


def test_function_level_project_imports_are_few_and_justified():
    counts = {f.relative_to(REPO).as_posix(): function_level_imports(f) for f in project_files()}
    total = sum(len(v) for v in counts.values())
    assert total <= CEILING, f"{total} function-level project imports (ceiling {CEILING}): hoist them to module level"
    bad = [f"{f}:{line}" for f, found in counts.items() for line, justified in found if not justified]
    assert not bad, (f"function-level project imports without a `{LAZY_MARK} why` comment (hoist them, or say "
                     "which heavy library they keep off which light path):\n" + "\n".join(bad))


@pytest.mark.parametrize("code,justified", [
    ("def f():\n    from bertpress.export import api\n", False),
    ("def f():\n    from bertpress.export import api  # lazy: keeps onnx off --help\n", True),
    ("def f():\n    # lazy: keeps torch off --help\n    import bertpress.models\n", True),
], ids=["bare", "same-line", "line-above"])
def test_the_lazy_import_check_reads_the_comment(code, justified):
    assert function_level_imports(REPO / "compress" / "probe.py", code) == [(code.count("\n") - 1 + 1, justified)]


def module_level_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports at module level (function bodies excluded)."""
    names = {}
    for f in project_files():
        rel = f.relative_to(REPO).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[f] = ".".join(["bertpress"] + parts[1:]) if parts[0] == "bertpress" else ".".join(["bertpress"] + parts)
    known = set(names.values())
    graph: dict[str, set[str]] = {}
    for f, mod in names.items():
        deps = set()
        for node in ast.parse(f.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps.add(node.module)
                deps |= {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[mod] = {d for d in deps if d in known and d != mod}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_among_project_modules():
    cycle = find_cycle(module_level_graph())
    assert cycle is None, "import cycle at module level: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
