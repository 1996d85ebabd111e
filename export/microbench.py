"""Why exported graphs keep residual Add + LayerNormalization unfused: time ONNX Runtime's
`SkipLayerNormalization` contrib kernel against the `Add` + `LayerNormalization` it replaces.

    python -m bertpress.export.microbench                  # 1x128x384 (MiniLM), 1 and 2 threads
    python -m bertpress.export.microbench --hidden 768 --seq 128 --threads 1,2 --json

Both graphs compute the same function on the same inputs (checked before timing); each
session is created with graph optimizations off so that ORT runs exactly the ops written.
Variants are timed interleaved, several rounds, median of the per-round p50s.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np


def _graph(fused: bool, hidden: int, seq: int, batch: int) -> bytes:
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    shape = [batch, seq, hidden]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("x", "skip")]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
    inits = [helper.make_tensor(n, TensorProto.FLOAT, [hidden], rng.standard_normal(hidden).astype(np.float32))
             for n in ("gamma", "beta", "bias")]
    if fused:
        nodes = [helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta", "bias"], ["y"],
                                  domain="com.microsoft", epsilon=1e-12)]
    else:  # what the exporter writes for BERT's residual: (x + bias) + skip, then LayerNorm
        nodes = [helper.make_node("Add", ["x", "bias"], ["xb"]), helper.make_node("Add", ["xb", "skip"], ["s"]),
                 helper.make_node("LayerNormalization", ["s", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-12)]
    graph = helper.make_graph(nodes, "residual_layernorm", inputs, [out], inits)
    model = helper.make_model(graph, ir_version=9, opset_imports=[helper.make_opsetid("", 17),
                                                                 helper.make_opsetid("com.microsoft", 1)])
    return model.SerializeToString()


def run(hidden: int = 384, seq: int = 128, batch: int = 1, threads: tuple[int, ...] = (1, 2),
        rounds: int = 5, seconds: float = 0.5) -> list[dict[str, Any]]:
    import onnxruntime as ort

    from bertpress.bench.latency import time_callable

    rng = np.random.default_rng(1)
    feed = {n: rng.standard_normal((batch, seq, hidden)).astype(np.float32) for n in ("x", "skip")}
    rows = []
    for t in threads:
        sessions = {}
        for name, fused in (("SkipLayerNormalization", True), ("Add + LayerNormalization", False)):
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = t
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            sessions[name] = ort.InferenceSession(_graph(fused, hidden, seq, batch), opts,
                                                  providers=["CPUExecutionProvider"])
        outs = [s.run(None, feed)[0] for s in sessions.values()]
        np.testing.assert_allclose(outs[0], outs[1], atol=1e-4)  # same function, or the timing means nothing
        p50s: dict[str, list[float]] = {n: [] for n in sessions}
        for _ in range(rounds):
            for name, sess in sessions.items():
                p50s[name].append(time_callable(lambda s=sess: s.run(None, feed), min_seconds=seconds).p50_ms)
        fused_us, unfused_us = (float(np.median(v)) * 1e3 for v in p50s.values())
        rows.append({"threads": t, "shape": [batch, seq, hidden], "skip_layernorm_us": round(fused_us, 1),
                     "add_layernorm_us": round(unfused_us, 1), "ratio": round(fused_us / unfused_us, 2),
                     "onnxruntime": ort.__version__})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--hidden", type=int, default=384, help="hidden size (384 MiniLM, 768 bert-base)")
    ap.add_argument("--seq", type=int, default=128, help="sequence length")
    ap.add_argument("--batch", type=int, default=1, help="batch size")
    ap.add_argument("--threads", default="1,2", help="comma-separated intra-op thread counts")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per thread count")
    ap.add_argument("--json", action="store_true", help="print JSON rows")
    args = ap.parse_args(argv)
    threads = tuple(int(t) for t in args.threads.split(",") if t.strip())
    if not threads or min(threads) < 1 or min(args.hidden, args.seq, args.batch, args.rounds) < 1:
        ap.error("--hidden, --seq, --batch, --rounds and every --threads value must be positive integers")
    rows = run(args.hidden, args.seq, args.batch, threads, args.rounds)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"onnxruntime {rows[0]['onnxruntime']}, input {rows[0]['shape']}, p50 per call")
        for r in rows:
            print(f"  {r['threads']} thread(s): SkipLayerNormalization {r['skip_layernorm_us']:.1f} us, "
                  f"Add + LayerNormalization {r['add_layernorm_us']:.1f} us ({r['ratio']:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
