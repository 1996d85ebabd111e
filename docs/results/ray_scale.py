"""The simulated scale test of the Ray executor (docs/results/ray-scale.md): one automatic search
over 15 pruned shapes of a tiny BERT, every shape trained to the end, run in this process and on
local Ray runtimes of 1 and 2 CPUs
(1 and 2 trials at once, one torch thread each), twice. Prints one markdown row per run.

    .venv/bin/python docs/results/ray_scale.py [--cpus 2] [--epochs 4] [--repeat 2]

Simulated where a tiny model cannot be real: candidates' speed is their size (layers x FFN x
heads, so the order is the model's, not the load's), and no pruned candidate is let within the
budget (its runtime score is marked as failing), so that the search trains every shape, as a
large space on a real model does before it finds its winner. Training, rungs, the study, Ray's
tasks and the object store are real.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpus", type=int, default=2, help="the most workers (local Ray runtimes of 1..N CPUs)")
    ap.add_argument("--repeat", type=int, default=2, help="rounds over the worker counts")
    ap.add_argument("--epochs", type=float, default=4.0, help="distillation epochs per trial")
    args = ap.parse_args(argv)

    import ray

    from bertpress.compress import api as A
    from bertpress.compress import autosearch as AS
    from bertpress.compress.config import CompressConfig, PruneConfig, QuantizeConfig, RecoverConfig, SearchConfig
    from bertpress.testing import save_tiny_checkpoint, write_tiny_dataset
    from bertpress.timing import LatencyStats

    def timer(self, model, twin):  # speed = size: a stable order, whatever the machine's load
        from bertpress.models import layer_shapes

        dims = layer_shapes(model)
        ms = sum(d["heads"] * 10 + d["ffn"] for d in dims) / 100
        return lambda: LatencyStats(ms, 0.0, ms, ms, ms, ms, 1, ms / 1000)

    real_score = AS._AutoSearch.score_variant

    def score_variant(self, c, pw, *a):  # no pruned candidate within the budget: every shape is trained
        if any(c.shape):
            c.error = "simulated: outside the budget"
            return
        return real_score(self, c, pw, *a)

    AS._AutoSearch.timer = timer
    AS._AutoSearch.score_variant = score_variant
    tmp = Path(tempfile.mkdtemp(prefix="ray-scale-"))
    ckpt = save_tiny_checkpoint(tmp / "ck", num_hidden_layers=4, intermediate_size=128)
    data = write_tiny_dataset(tmp / "data")
    base = CompressConfig(
        quantize=QuantizeConfig(calibration_data=str(data)),
        prune=PruneConfig(importance="magnitude", round_to=8),
        recover=RecoverConfig(epochs=args.epochs, batch_size=16, hidden_weight=1.0, lr=1e-3, max_length=32),
        search=SearchConfig(max_accuracy_drop=1.0, runtime="pytorch", schemes=("dynamic",), latency_min_seconds=0.0,
                            latency_seq_len=16, latency_rounds=1, layers=(0.0, 0.25, 0.5, 0.75), ffn=(0.0, 0.5),
                            heads=(0.0, 0.5), rung_slack=(1e3, 1e3, 1e3)),
        eval_data=str(data))

    def run(name, **search):
        cfg = dataclasses.replace(base, search=dataclasses.replace(base.search, **search))
        t0 = time.monotonic()
        s = A.compress(ckpt, cfg, tmp / name, progress=False).manifest.details["search"]
        wall = time.monotonic() - t0
        start = next(e["t_s"] for e in s["timeline"] if e["event"] == "unpruned scored")
        trained = sum(1 for t in s["trials"].values() if t.get("state") == "complete")
        train_s = sum(t.get("train_s", 0) for t in s["trials"].values())
        return {"run": name, "trials": trained, "wall_s": wall, "training_phase_s": s["wall_s"] - start,
                "sum_train_s": train_s, "winner": s["winner"]}

    # Workers = CPUs of a fresh local runtime, one torch thread per trial either way (the search
    # gives each trial its share of the runtime's CPUs): the comparison is workers, not threads.
    rows = [run("in-process (local, torch's threads)")]
    for rep in range(args.repeat):
        for workers in range(1, args.cpus + 1):
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            try:
                rows.append(run(f"ray, {workers} worker{'s' if workers > 1 else ''} (run {rep + 1})",
                                executor="ray"))
            finally:
                ray.shutdown()
    print(f"cpu: {_cpu_model()}; os.cpu_count() {os.cpu_count()}; python {platform.python_version()}; "
          f"load average after {os.getloadavg()}")
    print("| run | trials trained | search wall s | training phase s | sum of trials' train_s | winner |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['trials']} | {r['wall_s']:.1f} | {r['training_phase_s']:.1f} | "
              f"{r['sum_train_s']:.1f} | layers {r['winner']['layers']} ffn {r['winner']['ffn']} |")
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
