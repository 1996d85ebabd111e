"""Recipes: the stage configs in one YAML file, run as a resumable pipeline.

```yaml
out: runs/sst2-edge            # every stage writes under this directory
checkpoint: path/to/model      # optional: start here when there is no finetune section
finetune: {model: minilm, data: ../shared/data/sst2, epochs: 1}   # FinetuneConfig fields
compress: {...}                # CompressConfig fields
export: {...}                  # ExportConfig fields
bench: {...}                   # BenchConfig fields
```

Any subset of stages runs, in pipeline order. Validation reports every problem at once. The
resolved recipe (all defaults filled in) is saved as `OUT/recipe.resolved.yaml`. Each finished
stage leaves `OUT/.pipeline/STAGE.json` with a key = hash(stage config, input weights); a
re-run skips a stage whose artifact is finished and whose key matches, and redoes the rest, so
an interrupted pipeline resumes where it stopped (fine-tuning itself resumes from its last
Trainer checkpoint).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
from pathlib import Path
from typing import Any, Callable

from bertpress import dist
from bertpress.artifact import (MANIFEST_NAME, Artifact, check_output_dir, hold_output_lock, holds_output_locks,
                                lineage_of, resumable_partial,
                                remove_owned, resolve_out, write_owned_json, write_owned_text)
from bertpress.config import build_config, check_size, input_paths, to_tagged
from bertpress.errors import ConfigError, InputError, first_line
from bertpress.safety import check_regular_file

STAGE_ORDER = ("finetune", "compress", "export", "bench")
# stage -> (module, config class, function)
STAGES = {
    "finetune": ("bertpress.finetune", "FinetuneConfig", "finetune"),
    "compress": ("bertpress.compress", "CompressConfig", "compress"),
    "export": ("bertpress.export", "ExportConfig", "export"),
    "bench": ("bertpress.bench", "BenchConfig", "bench"),
}
STAGE_DIRS = {"finetune": "checkpoint", "compress": "compressed", "export": "export", "bench": "report"}
TOP_KEYS = {"out", "checkpoint", *STAGE_ORDER}
# Fields that say how to run, not what to produce: they never force a stage to be redone.
VOLATILE_FIELDS = {"resume"}


def _config_class(stage: str) -> type:
    module, cls, _ = STAGES[stage]
    return getattr(importlib.import_module(module), cls)


def _stage_function(stage: str) -> Callable:
    module, _, fn = STAGES[stage]
    return getattr(importlib.import_module(module), fn)


@dataclasses.dataclass
class Recipe:
    out: Path
    checkpoint: str | None
    stages: dict[str, Any]  # stage name -> config instance, in pipeline order
    source: str = "<recipe>"


def _field_problems(cls: type, section: dict[str, Any], stage: str) -> list[str]:
    """Every problem in one stage section: unknown keys, missing keys, then each invalid field."""
    problems = []
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(section) - set(fields))
    for key in unknown:
        problems.append(f"{stage}.{key}: unknown key; allowed keys: {', '.join(sorted(fields))}")
    known = {k: v for k, v in section.items() if k in fields}
    required = {
        name for name, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    for name in sorted(required - set(known)):
        problems.append(f"{stage}.{name}: missing required key")
    # Add fields one at a time, retrying the ones that failed once the others are in, until
    # nothing changes: each bad field is reported once, and fields that depend on each other
    # (search needs eval_data) are judged together, not in isolation.
    good = {k: v for k, v in known.items() if k in required}
    pending = {k: v for k, v in known.items() if k not in required}
    failures: dict[str, str] = {}
    changed = True
    while pending and changed:
        changed = False
        for key in list(pending):
            try:
                build_config(cls, {**good, key: pending[key]}, where=stage)
            except ConfigError as exc:
                failures[key] = str(exc).removeprefix(stage + ": ")
                continue
            good[key] = pending.pop(key)
            failures.pop(key, None)
            changed = True
    problems += [f"{stage}.{key}: {failures[key]}" for key in pending]
    if not pending:
        try:  # the whole section, as given
            build_config(cls, known, where=stage)
        except ConfigError as exc:
            problems.append(str(exc))
    return problems


def parse_recipe(data: Any, source: str = "<recipe>") -> Recipe:
    """Validate a recipe mapping; raise ConfigError listing every problem at once."""
    check_size(data, source)  # before anything echoes a value: YAML alias bombs
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a recipe is a mapping with keys {', '.join(sorted(TOP_KEYS))}")
    problems = [f"{key}: unknown top-level key; allowed: {', '.join(sorted(TOP_KEYS))}"
                for key in sorted(set(data) - TOP_KEYS)]
    out = data.get("out")
    if not isinstance(out, str) or not out.strip():
        problems.append("out: required; the directory every stage writes under (e.g. runs/my-model)")
    checkpoint = data.get("checkpoint")
    if checkpoint is not None and not isinstance(checkpoint, str):
        problems.append("checkpoint: must be a path or hub id string")
    present = [s for s in STAGE_ORDER if data.get(s) is not None]
    if not present:
        problems.append(f"no stage section; add at least one of: {', '.join(STAGE_ORDER)}")
    if present and present[0] != "finetune" and present[0] != "bench" and checkpoint is None:
        problems.append(f"{present[0]}: needs an input; add a finetune section or a top-level 'checkpoint'")
    if present == ["bench"] and checkpoint is None:
        problems.append("bench: needs artifacts; add earlier stages or a top-level 'checkpoint'")
    stages: dict[str, Any] = {}
    for stage in present:
        section = data[stage]
        if not isinstance(section, dict):
            problems.append(f"{stage}: must be a mapping of {stage} options (or omitted)")
            continue
        try:
            cls = _config_class(stage)
        except (ImportError, AttributeError) as exc:  # pragma: no cover - all stages ship
            problems.append(f"{stage}: this bertpress cannot run it ({exc})")
            continue
        found = _field_problems(cls, section, stage)
        if found:
            problems.extend(found)
        else:
            stages[stage] = build_config(cls, section, where=stage)
    if "bench" in stages and "export" in stages and getattr(stages["export"].format, "value", None) == "web":
        # bench would fail on OUT/export after every other stage ran: a web export is a page
        problems.append("bench: cannot measure export.format: web (a static page, not a model artifact "
                        "bench can run); drop the bench section, or export format onnx/openvino/all")
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"{source}: {len(problems)} problem(s):\n{listing}")
    return Recipe(out=Path(out).expanduser(), checkpoint=checkpoint, stages=stages, source=source)


def load_recipe(path: str | Path) -> Recipe:
    import yaml

    path = Path(path)
    check_regular_file(path, "recipe")
    if not path.is_file():
        raise InputError(f"{path}: no such recipe file; give a YAML recipe (see recipes/)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = first_line(exc) or type(exc).__name__
        raise ConfigError(f"{path}: not valid YAML ({first}); fix the syntax") from None
    return parse_recipe(data, source=str(path))


def plain(cfg: Any) -> Any:
    """A config as plain YAML-able data (tags stripped): the same shape a recipe section has."""
    def strip(v: Any) -> Any:
        if isinstance(v, dict) and "_type" in v and "_data" in v:
            return {k: strip(x) for k, x in v["_data"].items()}
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items()}
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v

    return strip(to_tagged(cfg))


def resolved_recipe(recipe: Recipe) -> dict[str, Any]:
    data: dict[str, Any] = {"out": str(recipe.out)}
    if recipe.checkpoint:
        data["checkpoint"] = recipe.checkpoint
    for stage, cfg in recipe.stages.items():
        data[stage] = plain(cfg)
    return data


def stage_key(stage: str, cfg: Any, inputs: list[Path]) -> str:
    """Hash of what a stage produces from: its config (minus run-only fields) and input weights."""
    data = plain(cfg)
    for name in VOLATILE_FIELDS:
        data.pop(name, None)
    h = hashlib.sha256(json.dumps([stage, data], sort_keys=True, default=str).encode())
    for path in inputs:
        h.update(str(path).encode())
        if Artifact.is_finished(path):
            mf = path / MANIFEST_NAME
            h.update(mf.read_bytes())  # includes the parent's lineage and creation time
        elif path.exists():  # a plain model directory: hash its weights
            h.update(str(lineage_of(path)["parent_sha256"]).encode())
    return h.hexdigest()[:20]


def _artifacts_under(path: Path) -> list[Path]:
    """Finished artifacts at `path` or one level below it (export --format all writes two)."""
    if Artifact.is_finished(path):
        return [path]
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if p.is_dir() and Artifact.is_finished(p))


@dataclasses.dataclass
class StageResult:
    stage: str
    path: Path
    skipped: bool
    artifacts: list[Path]


def _is_up_to_date(target: Path, state_file: Path, key: str) -> list[Path]:
    done = _artifacts_under(target)
    if done and state_file.is_file():
        try:
            if json.loads(state_file.read_text()).get("key") == key:
                return done
        except (OSError, json.JSONDecodeError):
            pass
    return []


def recipe_inputs(recipe: Recipe) -> tuple[Path, ...]:
    """Every local path the recipe reads: its file, the top-level checkpoint, each stage's model,
    teacher and data/calibration/eval paths."""
    paths = [Path(recipe.source)] if Path(recipe.source).is_file() else []
    if recipe.checkpoint and Path(recipe.checkpoint).expanduser().exists():
        paths.append(Path(recipe.checkpoint).expanduser())
    for cfg in recipe.stages.values():
        paths.extend(input_paths(cfg))
    return tuple(dict.fromkeys(paths))


def prepare_out(recipe: Recipe) -> Path:
    """Resolve and create the recipe's `out:`; refuse outputs that overlap any input of the run.

    A stage's sub-folder is replaced when it is stale, so no input may be inside, equal to or a
    parent of one (e.g. fine-tuning further from OUT/checkpoint would delete its own model)."""
    out = resolve_out(recipe.out)
    inputs = recipe_inputs(recipe)
    for stage in recipe.stages:
        check_output_dir(out / STAGE_DIRS[stage], overwrite=True, inputs=inputs, label=f"{stage} output")
    if out.exists() and not out.is_dir():
        raise InputError(f"out: {out} is a file; give a directory path in the recipe's out:")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"out: cannot create {out} ({exc.strerror}); give a writable location in the recipe's "
                         "out:") from None
    import os

    if not os.access(out, os.W_OK):
        raise InputError(f"out: cannot write in {out} (read-only or no permission); give a writable location")
    hold_output_lock(out, "out:")  # with each stage folder's: a second run (or quickstart) into OUT is refused
    return out


@holds_output_locks  # one live run per out: and per stage folder (artifact.output_locks)
def run_recipe(recipe: Recipe, *, progress: Callable[[str], None] = print) -> list[StageResult]:
    """Run the recipe's stages in order, skipping up-to-date ones.

    Under torchrun every rank takes part in fine-tuning (DDP) and makes the same skip decision
    from the shared output directory; the later stages and all bookkeeping run on rank 0 alone.
    """
    import yaml

    main = dist.is_main_process()
    out = prepare_out(recipe) if main else resolve_out(recipe.out)
    state_dir = out / ".pipeline"
    if main:
        write_owned_text(out, "recipe.resolved.yaml", yaml.safe_dump(resolved_recipe(recipe), sort_keys=False))

    current: list[Path] = [Path(recipe.checkpoint)] if recipe.checkpoint else []
    produced: list[Path] = list(current)
    results: list[StageResult] = []
    ddp = dist.is_distributed() and "finetune" in recipe.stages
    if ddp:
        _join_distributed()
    for stage, cfg in recipe.stages.items():
        if not main and stage != "finetune":
            break
        target = out / STAGE_DIRS[stage]
        inputs = produced if stage == "bench" else current
        key = stage_key(stage, cfg, inputs)
        state_file = state_dir / f"{stage}.json"
        done = _is_up_to_date(target, state_file, key) if main else []
        skip = bool(done)
        if ddp and stage == "finetune":
            skip = _decision_of_rank0(skip)  # every rank must take the same branch
        if skip:
            if main:
                progress(f"[{stage}] up to date, skipped ({target})")
            results.append(StageResult(stage, target, True, done))
        else:
            if main:
                state_file.unlink(missing_ok=True)
                # stale output of an older recipe or input: replaced only if bertpress wrote it
                remove_owned(target, label=f"{stage} output")
                progress(f"[{stage}] running -> {target}")
            if ddp and stage == "finetune":
                import torch.distributed as tdist

                tdist.barrier()  # the other ranks start only after rank 0 cleared stale output
            _run_stage(stage, cfg, inputs, target)
            if main:
                done = _artifacts_under(target)
                write_owned_json(out, f".pipeline/{stage}.json", {"key": key, "artifacts": [str(p) for p in done]})
                results.append(StageResult(stage, target, False, done))
        if ddp and stage == "finetune":
            # The later stages run on rank 0 alone: leave DDP first, or their Trainer (compress
            # recovery) would wait forever for ranks that have returned.
            dist.leave()
            if not main:
                return []
        if stage != "bench":
            current = done if stage == "export" else done[:1]
            produced.extend(done)
    return results


def _join_distributed() -> None:
    """Open the process group ourselves (the Trainer reuses it) so ranks can agree on skipping."""
    import torch
    import torch.distributed as tdist

    if not tdist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(dist.local_rank())  # NCCL collectives use the current device
            tdist.init_process_group("nccl")
        else:
            tdist.init_process_group("gloo")


def _decision_of_rank0(value: bool) -> bool:
    import torch.distributed as tdist

    box = [value]
    tdist.broadcast_object_list(box, src=0)
    return bool(box[0])


def _run_stage(stage: str, cfg: Any, inputs: list[Path], target: Path) -> None:
    fn = _stage_function(stage)
    if stage == "finetune":
        if resumable_partial(target) is not None and not cfg.resume:
            cfg = dataclasses.replace(cfg, resume=True)  # an interrupted run continues
        fn(cfg.model, cfg, target)
    elif stage == "bench":
        fn(inputs, cfg, target)
    else:
        if not inputs:
            raise InputError(f"{stage}: no input artifact; add an earlier stage or 'checkpoint'")
        if stage == "compress":  # the search's deploy runtimes need the export stage: the app passes them
            from bertpress.app.search_runtimes import DEPLOY_RUNTIMES  # lazy: exports pull torch; `run --check` stays light

            fn(inputs[0], cfg, target, runtimes=DEPLOY_RUNTIMES)
        else:
            fn(inputs[0], cfg, target)
