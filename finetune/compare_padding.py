"""Training throughput: our batching (dynamic padding + length-grouped batches) against a plain
Trainer that pads every sentence to max_length (the HF default when you tokenize with
padding="max_length"), on the same random subset, same model, same hyper-parameters.

    .venv/bin/python -m bertpress.finetune.compare_padding --model minilm \
        --data ../shared/data/sst2 --samples 512 --max-length 128 --json

Each variant trains a fresh copy of the model for the same number of epochs; samples/s is
samples seen / Trainer train_runtime (no evaluation, no checkpoints). The two runs are
sequential on the same machine, so other load on it shows up as noise: repeat if in doubt.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

from bertpress.data import load_text_classification
from bertpress.finetune.args import training_arguments
from bertpress.finetune.features import Features, tokenize
from bertpress.models import load_classifier
from bertpress.quiet import quiet_libraries, quiet_trainer
from bertpress.signature import tokenize as encode_examples

VARIANTS = ("bertpress", "plain")


def _train_once(variant: str, args, train, tokenizer_source: str) -> dict:
    import torch
    from transformers import DataCollatorWithPadding, Trainer, default_data_collator

    quiet_libraries()
    torch.manual_seed(args.seed)  # same head initialisation for both variants
    model, tok = load_classifier(tokenizer_source, labels=train.label_names)
    if variant == "bertpress":
        data = tokenize(train, tok, args.max_length)
        collator, grouped = DataCollatorWithPadding(tok), True
    else:
        enc = encode_examples(tok, train.examples, padding="max_length", truncation=True, max_length=args.max_length)
        data = Features([{**{k: enc[k][i] for k in enc.keys()}, "labels": train.labels[i]}
                         for i in range(len(train))])
        collator, grouped = default_data_collator, False
    real = [sum(r["attention_mask"]) for r in data.rows]
    with tempfile.TemporaryDirectory(prefix="bertpress-padcmp-") as tmp:
        targs = training_arguments(
            output_dir=tmp, num_train_epochs=args.epochs, learning_rate=5e-5,
            per_device_train_batch_size=args.batch_size, seed=args.seed, data_seed=args.seed,
            group_by_length=grouped, eval_strategy="no", save_strategy="no", logging_strategy="no",
            report_to="none", use_cpu=not torch.cuda.is_available(), disable_tqdm=not args.progress,
            dataloader_num_workers=0,
        )
        trainer = Trainer(model=model, args=targs, train_dataset=data, data_collator=collator)
        quiet_trainer(trainer, args.progress)  # keeps stdout clean for --json
        # Padded tokens per epoch, from the batches the Trainer really builds.
        padded = sum(int(b["input_ids"].numel()) for b in trainer.get_train_dataloader())
        t0 = time.perf_counter()
        result = trainer.train()
        wall = time.perf_counter() - t0
    runtime = float(result.metrics["train_runtime"])
    return {
        "variant": variant,
        "padding": "dynamic + group_by_length" if grouped else f"max_length ({args.max_length})",
        "samples": len(train),
        "epochs": args.epochs,
        "train_runtime_s": round(runtime, 2),
        "wall_s": round(wall, 2),
        "samples_per_s": round(len(train) * args.epochs / runtime, 2),
        "real_tokens_per_sample": round(statistics.mean(real), 1),
        "padded_tokens_per_sample": round(padded / len(train), 1),
        "train_loss": round(float(result.training_loss), 4),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="minilm", help="model source (alias, directory, hub id)")
    p.add_argument("--data", default="../shared/data/sst2", help="dataset directory with train.*")
    p.add_argument("--samples", type=int, default=512, help="random training subset size")
    p.add_argument("--epochs", type=float, default=1.0, help="epochs per variant")
    p.add_argument("--batch-size", type=int, default=32, help="batch size")
    p.add_argument("--max-length", type=int, default=128, help="truncation / plain padding length")
    p.add_argument("--seed", type=int, default=0, help="subset, init and shuffling seed")
    p.add_argument("--progress", action="store_true", help="show the Trainer's progress bars")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    args = p.parse_args(argv)

    train = load_text_classification(args.data, "train").subset(args.samples, seed=args.seed)
    rows = [_train_once(v, args, train, args.model) for v in VARIANTS]
    ours, plain = rows
    speedup = round(ours["samples_per_s"] / plain["samples_per_s"], 2)
    if args.json:
        print(json.dumps({"config": vars(args), "results": rows, "speedup": speedup}, indent=2))
    else:
        for r in rows:
            print(f"{r['variant']:>9}: {r['samples_per_s']:7.1f} samples/s  ({r['padding']}; "
                  f"{r['padded_tokens_per_sample']} padded vs {r['real_tokens_per_sample']} real tokens/sample)")
        print(f"speed-up: {speedup}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
