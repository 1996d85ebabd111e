"""A quick side-by-side of exported artifacts: size, dev accuracy, batch-1 latency.

    python -m bertpress.export.measure runs/export-fp32/onnx runs/export-int8/onnx ... \
        --data ../shared/data/sst2 --threads 2 --seq 128

Not the benchmark (that is `bertpress bench`): it exists so that docs/results/export.md can be
reproduced with one command. Latency is measured interleaved (round-robin over the models, a
few rounds) so that a noisy shared machine hurts every variant alike.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from bertpress.artifact import Artifact
from bertpress.data import columns_of, load_text_classification
from bertpress.export.torchscript import load_torchscript
from bertpress.models import load_tokenizer
from bertpress.ort import runner
from bertpress.signature import encode, special_ids, synthetic_batch, torch_runner
from bertpress.timing import interleaved, time_callable


def _runner(path: Path, threads: int):
    if (path / "model.onnx").is_file():
        return runner(path / "model.onnx", threads)
    import torch

    torch.set_num_threads(threads)
    return torch_runner(load_torchscript(path / "model.pt"))


def measure(paths: list[Path], data: str | None, threads: int, seq: int, rounds: int = 3,
            seconds: float = 2.0) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    rows = []
    for p in paths:
        art = Artifact.load(p)
        m = art.manifest
        model_file = p / ("model.onnx" if (p / "model.onnx").is_file() else "model.pt")
        rows.append({"path": str(p), "kind": m.kind, "precision": m.details.get("precision"),
                     "file_mb": model_file.stat().st_size / 1e6,
                     "fusions": {k: v for k, v in (m.details["model"].get("fusions") or {}).items() if v},
                     "parity": {f: {"max_abs_diff": r["max_abs_diff"],
                                    "agreement": (r.get("agreement") or {}).get("value")}
                                for f, r in m.metrics.get("parity", {}).items()},
                     "run": _runner(p, threads), "tok": load_tokenizer(p), "max_length": m.max_length,
                     "labels": m.labels, "columns": m.columns})
    if data:
        for row in rows:
            ds = load_text_classification(data, "dev", prefer=columns_of(row))
            hits = 0
            for i in tqdm(range(0, len(ds), 32), desc=f"accuracy {Path(row['path']).name}", leave=False):
                feed = encode(row["tok"], ds.examples[i:i + 32], row["max_length"])
                hits += int((row["run"](feed).argmax(-1) == np.asarray(ds.labels[i:i + 32])).sum())
            row["accuracy"] = hits / len(ds)
            row["accuracy_n"] = len(ds)
    def timer(row):
        tok = row["tok"]
        feed = synthetic_batch(tok.vocab_size, special_ids(tok), 1, seq, np.random.default_rng(0))
        feed["attention_mask"][:] = 1
        return lambda: time_callable(lambda: row["run"](feed), warmup=5, min_iters=30, min_seconds=seconds)

    for row, runs in zip(rows, interleaved([timer(r) for r in rows], rounds)):
        row["raw"] = [st.to_dict() for st in runs]
    for row in rows:
        row["p50_ms"] = float(np.median([r["p50_ms"] for r in row["raw"]]))
        row["p90_ms"] = float(np.median([r["p90_ms"] for r in row["raw"]]))
        row["iters"] = sum(r["iters"] for r in row["raw"])
        for k in ("run", "tok", "samples", "raw", "labels"):
            row.pop(k, None)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", help="exported artifact directories (onnx or torchscript)")
    ap.add_argument("--data", default=None, help="labeled data (dev split) for accuracy")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads")
    ap.add_argument("--seq", type=int, default=128, help="sequence length for the batch-1 latency")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (median of their p50s)")
    args = ap.parse_args(argv)
    rows = measure([Path(p) for p in args.paths], args.data, args.threads, args.seq, args.rounds)
    print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
