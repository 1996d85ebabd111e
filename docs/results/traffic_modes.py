"""`python docs/results/traffic_modes.py OV_DIR...` (layers.md §8): traffic modes A/B in one process, interleaved: every server does one full pass over SST-2 dev per round
(length-sorted batches of 32, as bench), the ratios to the pipeline (on the teacher runs/minilm-sst2-tf5)
are taken per round."""
import os, sys, time
import numpy as np
import torch
torch.set_num_threads(2)
from bertpress.bench.runtimes import load_openvino
from bertpress.bench.baselines import PipelineRunner
from bertpress.bench.sources import resolve_source
from bertpress.data import load_text_classification
from bertpress.signature import tokenize

ds = load_text_classification("../shared/data/sst2", "dev")
ex = list(ds.examples)
servers = {}
pipe = PipelineRunner(resolve_source("runs/minilm-sst2-tf5"), "cpu")
servers["pipeline"] = pipe
for d in sys.argv[1:]:
    r = load_openvino(resolve_source(d), "cpu", 2)
    servers[f"{os.path.basename(d)} latency"] = r
    servers[f"{os.path.basename(d)} throughput"] = r.for_traffic("throughput")
lens = [len(x) for x in tokenize(pipe.tokenizer, ex, truncation=True, max_length=128)["input_ids"]]
order = np.argsort(lens, kind="stable")
chunks = [[ex[j] for j in order[i:i + 32]] for i in range(0, len(ex), 32)]
for s in servers.values():
    for _ in range(getattr(s, "warm_passes", 1)):
        s.serve(chunks)
rounds = {k: [] for k in servers}
la = [os.getloadavg()[0]]
for _ in range(int(os.environ.get("ROUNDS", 5))):
    for k, s in servers.items():
        t = time.perf_counter(); s.serve(chunks); rounds[k].append(len(ex) / (time.perf_counter() - t))
la.append(os.getloadavg()[0])
p = np.array(rounds["pipeline"])
for k, v in rounds.items():
    v = np.array(v)
    print(f"{k:40s} {np.median(v):8.1f} sent/s  vs pipeline per round: median {np.median(v / p):5.2f}x "
          f"(min {np.min(v / p):.2f}, max {np.max(v / p):.2f})")
for d in sys.argv[1:]:
    b = os.path.basename(d)
    q = np.array(rounds[f"{b} throughput"]) / np.array(rounds[f"{b} latency"])
    print(f"{b}: throughput / latency per round: median {np.median(q):.3f}x (min {q.min():.3f}, max {q.max():.3f})")
print("load average", la, time.strftime("%H:%M UTC", time.gmtime()))
