"""`python docs/results/traffic_modes.py OV_DIR...` (layers.md §8): traffic modes A/B in one process,
interleaved: every server does one full pass over SST-2 dev per round (bench's own length-sorted
batches of 32), the ratios to the pipeline (on the teacher runs/minilm-sst2-tf5) taken per round."""
import os
import sys
import time

import numpy as np
import torch

from bertpress.bench.baselines import PipelineRunner
from bertpress.bench.config import BenchConfig
from bertpress.bench.run import _traffic_batches
from bertpress.bench.runtimes import load_openvino
from bertpress.bench.sources import resolve_source
from bertpress.data import load_text_classification
from bertpress.timing import interleaved

torch.set_num_threads(2)
ds = load_text_classification("../shared/data/sst2", "dev")
pipe = PipelineRunner(resolve_source("runs/minilm-sst2-tf5"), "cpu")
servers = {"pipeline": pipe}
for d in sys.argv[1:]:
    r = load_openvino(resolve_source(d), "cpu", 2)
    servers[f"{os.path.basename(d)} latency"] = r
    servers[f"{os.path.basename(d)} throughput"] = r.for_traffic("throughput")
chunks = _traffic_batches(pipe, ds, BenchConfig(traffic_batch_size=32))[2]
for s in servers.values():
    for _ in range(s.warm_passes):
        s.serve(chunks)


def one_pass(s):
    def once():
        t = time.perf_counter()
        s.serve(chunks)
        return len(ds) / (time.perf_counter() - t)
    return once


la = [os.getloadavg()[0]]
rates = dict(zip(servers, interleaved([one_pass(s) for s in servers.values()], int(os.environ.get("ROUNDS", 5)))))
la.append(os.getloadavg()[0])
p = np.array(rates["pipeline"])
for k, v in rates.items():
    v = np.array(v)
    print(f"{k:40s} {np.median(v):8.1f} sent/s  vs pipeline per round: median {np.median(v / p):5.2f}x "
          f"(min {np.min(v / p):.2f}, max {np.max(v / p):.2f})")
for d in sys.argv[1:]:
    b = os.path.basename(d)
    q = np.array(rates[f"{b} throughput"]) / np.array(rates[f"{b} latency"])
    print(f"{b}: throughput / latency per round: median {np.median(q):.3f}x (min {q.min():.3f}, max {q.max():.3f})")
print("load average", la, time.strftime("%H:%M UTC", time.gmtime()))
