"""`python docs/results/ov_profile.py OV_DIR ['{"SNIPPETS_MODE": "DISABLE"}']` (layers.md §12):
where an OpenVINO IR spends its time on real traffic. Compiles the IR with one stream of one
thread and OpenVINO's per-node counters (PERF_COUNT), runs SST-2 dev in bench's length-sorted
batches of 32 (`bertpress.signature.traffic_batches`), one warm pass then three counted ones,
and prints the kernel time per node type and per (type, kernel) per pass, and the wall time of
a pass through the same IR compiled without the counters. The optional JSON adds compile
properties to both."""
import collections
import json
import sys
import time

import openvino as ov

from bertpress.data import load_text_classification
from bertpress.models import load_tokenizer
from bertpress.signature import encode, traffic_batches

folder, extra = sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
tok = load_tokenizer(folder)
texts = load_text_classification("../shared/data/sst2", "dev").examples
feeds = [encode(tok, chunk, 128) for chunk in traffic_batches(tok, texts, 128, 32)[2]]
passes = 3


def compiled_request(counters: bool):
    props = {"INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "PERF_COUNT": counters}
    compiled = ov.Core().compile_model(f"{folder}/openvino_model.xml", "CPU", {**props, **extra})
    req, names = compiled.create_infer_request(), [i.get_any_name() for i in compiled.inputs]
    for f in feeds:  # warm: every shape compiles once
        req.infer({n: f[n] for n in names})
    return compiled, req, names


compiled, req, names = compiled_request(False)
print("inference precision", compiled.get_property("INFERENCE_PRECISION_HINT"))
t0 = time.perf_counter()
for _ in range(passes):
    for f in feeds:
        req.infer({n: f[n] for n in names})
wall = (time.perf_counter() - t0) * 1000 / passes
compiled, req, names = compiled_request(True)
by_type, by_kernel = collections.Counter(), collections.Counter()
for _ in range(passes):
    for f in feeds:
        req.infer({n: f[n] for n in names})
        for p in req.get_profiling_info():
            ms = p.real_time.total_seconds() * 1000 / passes
            by_type[p.node_type] += ms
            by_kernel[(p.node_type, p.exec_type)] += ms
total = sum(by_type.values())
print(f"per pass: {wall:.1f} ms wall (no counters), {total:.1f} ms in kernels ({len(feeds)} batches, "
      f"{len(texts)} sentences)")
for k, v in by_type.most_common(12):
    print(f"  {k:30s} {v:8.1f} ms {100 * v / total:5.1f} %")
print("by kernel:")
for (t, e), v in by_kernel.most_common(10):
    print(f"  {t:30s} {e:22s} {v:8.1f} ms")
