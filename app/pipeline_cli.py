"""`bertpress run RECIPE.yaml` and `bertpress quickstart` (light module: heavy imports in handlers)."""

from __future__ import annotations

import argparse

from bertpress import dist
from bertpress.app.pipeline import load_recipe, parse_recipe, recipe_inputs, run_recipe
from bertpress.app.quickstart import quickstart_recipe, write_summary
from bertpress.artifact import (check_output_dir, hold_output_lock, output_locks, remove_owned, resolve_out,
                                write_owned_text)
from bertpress.console import print_json
from bertpress.data import add_column_flags

RUN_HELP = """\
Run a recipe: the stage configs (finetune, compress, export, bench; any subset) in one YAML
file. Unknown keys are rejected and every problem is reported at once. Finished stages whose
config and input are unchanged are skipped, so an interrupted pipeline resumes where it
stopped. The resolved recipe is saved as OUT/recipe.resolved.yaml. Examples: recipes/*.yaml.
"""

QUICKSTART_HELP = """\
The whole path on the packaged MiniLM in one command: fine-tune on a subset of the training
data, compress (accuracy-aware search within 1 point), export ONNX + TorchScript, benchmark
everything against PyTorch fp32, the transformers pipeline and Optimum int8, and write the
report. About 10-15 minutes on 2 CPU cores. Data: --data wins; without it, the small sentiment
sample shipped with bertpress (the report says which data was used).
"""


def register(sub, common, formatter) -> None:
    p = sub.add_parser("run", parents=[common], formatter_class=formatter, description=RUN_HELP,
                       help="run a recipe YAML: finetune -> compress -> export -> bench, resumable")
    p.add_argument("recipe", help="recipe YAML file (see recipes/)")
    p.add_argument("--check", action="store_true", help="only validate the recipe and list every problem")
    p.add_argument("--json", action="store_true", help="print machine-readable results")
    p.set_defaults(handler=_cmd_run)

    q = sub.add_parser("quickstart", parents=[common], formatter_class=formatter,
                       description=QUICKSTART_HELP,
                       help="fine-tune, compress, export and benchmark the packaged MiniLM in one go")
    q.add_argument("--data", default=None,
                   help="labeled data: a directory with train/dev files, or a datasets id such as "
                        "glue/sst2 (online). Default: the small sample shipped with bertpress")
    q.add_argument("--out", default="runs/quickstart", help="output directory")
    q.add_argument("--train-samples", type=int, default=4000,
                   help="fine-tune on a random subset of this many training sentences (time budget)")
    q.add_argument("--epochs", type=float, default=1.0, help="fine-tuning epochs")

    add_column_flags(q)  # recorded in the checkpoint; the later stages read their data with the same columns
    q.add_argument("--overwrite", action="store_true",
                   help="start over: delete --out first (otherwise finished stages are reused); only a "
                        "directory bertpress wrote is ever deleted")
    q.add_argument("--recipe-only", action="store_true",
                   help="write the quickstart recipe to OUT/recipe.yaml and stop (to edit and `bertpress run` it)")
    q.add_argument("--json", action="store_true", help="print machine-readable results")
    q.set_defaults(handler=_cmd_quickstart)


def _print_results(results, as_json: bool) -> None:
    if as_json:
        print_json([{"stage": r.stage, "path": str(r.path), "skipped": r.skipped,
                     "artifacts": [str(a) for a in r.artifacts]} for r in results])
        return
    for r in results:
        state = "skipped (up to date)" if r.skipped else "done"
        print(f"{r.stage:9s} {state:21s} {', '.join(str(a) for a in r.artifacts)}")


def _cmd_run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe)
    if args.check:
        stages = ", ".join(recipe.stages)
        print(f"{args.recipe}: OK ({stages}; out {recipe.out})")
        return 0
    results = _run_quietly(recipe, args.json)
    if dist_main():
        _print_results(results, args.json)
    return 0


def dist_main() -> bool:
    return dist.is_main_process()


def _run_quietly(recipe, as_json: bool):
    """Run a recipe; with --json, everything the stages print goes to stderr, not stdout."""
    import contextlib
    import sys

    if not as_json:
        return run_recipe(recipe)
    with contextlib.redirect_stdout(sys.stderr):
        return run_recipe(recipe, progress=lambda m: print(m, file=sys.stderr))


def _cmd_quickstart(args: argparse.Namespace) -> int:
    with output_locks():  # OUT stays locked from its first write to the last stage
        out = resolve_out(args.out)
        if out.parent.is_dir():
            hold_output_lock(out, "quickstart --out")
        return _quickstart(args)


def _quickstart(args: argparse.Namespace) -> int:
    import sys

    import yaml

    out = resolve_out(args.out)
    main = dist_main()
    data, recipe_data, note = quickstart_recipe(args.data, out, train_samples=args.train_samples,
                                                epochs=args.epochs, text_column=args.text_column,
                                                text_pair_column=args.text_pair_column)
    recipe = parse_recipe(recipe_data, source="quickstart")
    if main and args.overwrite and out.exists():
        # only ever delete what bertpress wrote, and never a directory holding an input
        check_output_dir(out, overwrite=True, inputs=recipe_inputs(recipe), label="quickstart --out")
        remove_owned(out)
    if main:
        # never overwrites a recipe.yaml bertpress did not write (or that was edited since)
        write_owned_text(out, "recipe.yaml", yaml.safe_dump(recipe_data, sort_keys=False))
    if args.recipe_only:
        if main:
            print(f"wrote {out / 'recipe.yaml'}; run it with: bertpress run {out / 'recipe.yaml'}")
        return 0
    if main:
        print(f"quickstart: data = {note}", file=sys.stderr if args.json else sys.stdout)
    results = _run_quietly(recipe, args.json)
    if not main:
        return 0
    summary = write_summary(out, note, results)
    _print_results(results, args.json)
    if not args.json:
        print()
        print(summary)
    return 0
