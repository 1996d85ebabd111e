"""`bertpress finetune`: a thin layer over `bertpress.finetune.finetune` (light at import)."""

from __future__ import annotations

import argparse

from bertpress import dist
from bertpress.config import add_config_flags, config_from_namespace
from bertpress.data import add_column_flags, column_values
from bertpress.finetune.config import FinetuneConfig

HELP = "fine-tune a BERT classifier (CPU, one GPU, or many with torchrun); optional distillation"
EPILOG = """examples:
  bertpress finetune --model minilm --data ../shared/data/sst2 --labels negative,positive \\
      --out runs/minilm-sst2 --epochs 3 --lr 5e-5
  torchrun --nproc_per_node 2 -m bertpress finetune --model minilm --data DATA --out runs/ddp
  bertpress finetune --model minilm --data DATA --teacher runs/big --alpha 0.5 --out runs/kd
  bertpress finetune ... --resume      # continue a killed run from its last checkpoint
"""


def register(sub, common, formatter) -> None:
    p = sub.add_parser("finetune", parents=[common], formatter_class=formatter, help=HELP,
                       description=HELP, epilog=EPILOG)
    p.add_argument("--out", default="runs/finetune", help="output checkpoint directory (must be new or empty)")
    add_config_flags(p, FinetuneConfig)  # every setting, from the config's fields

    add_column_flags(p, label=True)
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the manifest metrics as JSON")
    p.set_defaults(handler=run)


def config_from_args(args: argparse.Namespace):
    return config_from_namespace(args, FinetuneConfig, extra=column_values(args))


def run(args: argparse.Namespace) -> int:
    from bertpress.finetune.train import finetune  # lazy: train pulls torch; --help stays light

    config = config_from_args(args)
    artifact = finetune(config.model, config, args.out, overwrite=args.overwrite,
                        progress=not args.no_progress and dist.is_main_process())
    dist.shutdown()
    if not dist.is_main_process():
        return 0  # only rank 0 reports
    m = artifact.manifest.metrics
    if args.json:
        import json

        print(json.dumps({"path": str(artifact.path), "labels": artifact.manifest.labels, "metrics": m},
                         indent=2, default=str))
    else:
        print(summary_line(artifact))
    return 0


def summary_line(artifact) -> str:
    m = artifact.manifest.metrics
    best = f" (best at epoch {m['best_epoch']:g})" if m.get("best_epoch") is not None else ""
    mins, secs = divmod(int(round(m["wall_s"])), 60)
    return (f"finetune: dev accuracy {100 * m['dev_accuracy']:.2f}%{best}, {m['epochs']:g} epochs, "
            f"wall {mins}m{secs:02d}s, {m['train_samples_per_s']:.1f} train samples/s -> {artifact.path}")
