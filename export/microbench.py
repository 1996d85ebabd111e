"""Why exported graphs leave two of ONNX Runtime's BERT fusions out: time each fused contrib
kernel against the ops it replaces, on the same inputs.

- residual LayerNorm: `SkipLayerNormalization` vs `Add` + `Add` + `LayerNormalization`
  (left unfused in every export);
- FFN activation: `BiasGelu` vs `Add` + `Gelu` and vs `Gelu` alone, which is what runs in a
  dynamic int8 graph once ORT folds the bias into `DynamicQuantizeMatMul` (BiasGelu left out
  of dynamic int8 exports).

    python -m bertpress.export.microbench                  # MiniLM shapes, 1 and 2 threads
    python -m bertpress.export.microbench --hidden 768 --seq 128 --threads 1,2 --json
    python -m bertpress.export.microbench --profile runs/deploy/onnx/model.onnx   # where a model's time goes

Every graph of a case computes the same function on the same inputs (checked before timing);
sessions are created with graph optimizations off so that ORT runs exactly the ops written.
Graphs are timed interleaved, several rounds, median of the per-round p50s.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable

import numpy as np

from bertpress.ort import session, session_options
from bertpress.timing import interleaved, time_callable

# case -> graph names (the first is ORT's fused kernel)
CASES = {
    "skip_layernorm": ("SkipLayerNormalization", "Add + LayerNormalization"),
    "bias_gelu": ("BiasGelu", "Add + Gelu", "Gelu (bias in the MatMul)"),
}


def _model(nodes, inputs: dict[str, list[int]], inits) -> bytes:
    from onnx import TensorProto, helper

    shape = next(iter(inputs.values()))
    graph = helper.make_graph(nodes, "microbench",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], inits)
    model = helper.make_model(graph, ir_version=9, opset_imports=[helper.make_opsetid("", 17),
                                                                 helper.make_opsetid("com.microsoft", 1)])
    return model.SerializeToString()


def _graphs(case: str, hidden: int, seq: int, batch: int) -> tuple[dict[str, bytes], Callable]:
    """{name: serialized model} for a case, and feed(rng) -> {name: inputs} (same function for all)."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)

    def vec(name: str, n: int):
        return helper.make_tensor(name, TensorProto.FLOAT, [n], rng.standard_normal(n).astype(np.float32))

    node = helper.make_node
    if case == "skip_layernorm":
        shape = [batch, seq, hidden]
        inits = [vec(n, hidden) for n in ("gamma", "beta", "bias")]
        ins = {"x": shape, "skip": shape}
        graphs = {
            "SkipLayerNormalization": _model([node("SkipLayerNormalization", ["x", "skip", "gamma", "beta", "bias"],
                                                   ["y"], domain="com.microsoft", epsilon=1e-12)], ins, inits),
            # what the exporter writes for BERT's residual: (x + bias) + skip, then LayerNorm
            "Add + LayerNormalization": _model([node("Add", ["x", "bias"], ["xb"]), node("Add", ["xb", "skip"], ["s"]),
                                                node("LayerNormalization", ["s", "gamma", "beta"], ["y"], axis=-1,
                                                     epsilon=1e-12)], ins, inits),
        }

        def feed(r):
            x = {n: r.standard_normal(shape).astype(np.float32) for n in ins}
            return {name: x for name in graphs}
        return graphs, feed
    if case == "bias_gelu":
        width = 4 * hidden  # BERT's FFN intermediate size
        shape = [batch, seq, width]
        bias = rng.standard_normal(width).astype(np.float32)
        b = helper.make_tensor("bias", TensorProto.FLOAT, [width], bias)
        graphs = {
            "BiasGelu": _model([node("BiasGelu", ["x", "bias"], ["y"], domain="com.microsoft")], {"x": shape}, [b]),
            "Add + Gelu": _model([node("Add", ["x", "bias"], ["xb"]), node("Gelu", ["xb"], ["y"], domain="com.microsoft")],
                                 {"x": shape}, [b]),
            "Gelu (bias in the MatMul)": _model([node("Gelu", ["x"], ["y"], domain="com.microsoft")], {"x": shape}, []),
        }

        def feed(r):
            x = r.standard_normal(shape).astype(np.float32)
            return {"BiasGelu": {"x": x}, "Add + Gelu": {"x": x}, "Gelu (bias in the MatMul)": {"x": x + bias}}
        return graphs, feed
    raise ValueError(f"unknown case {case!r}; choose from {', '.join(CASES)}")


def run(hidden: int = 384, seq: int = 128, batch: int = 1, threads: tuple[int, ...] = (1, 2),
        rounds: int = 5, seconds: float = 0.5, cases: tuple[str, ...] = tuple(CASES)) -> list[dict[str, Any]]:
    """One row per case x thread count: {"case", "threads", "shape", "us": {graph: p50 us},
    "ratio": fused kernel / fastest alternative, "onnxruntime"}."""
    import onnxruntime as ort

    rows = []
    for case in cases:
        graphs, make_feed = _graphs(case, hidden, seq, batch)
        feeds = make_feed(np.random.default_rng(1))
        for t in threads:
            sessions = {}
            for name, blob in graphs.items():
                # in-memory graphs of one op each: no file, no metadata, no optimizer
                sessions[name] = ort.InferenceSession(blob, session_options(t, optimization="disable_all"),
                                                      providers=["CPUExecutionProvider"])
            outs = [s.run(None, feeds[n])[0] for n, s in sessions.items()]
            for o in outs[1:]:  # same function, or the timing means nothing
                np.testing.assert_allclose(outs[0], o, atol=1e-4)
            runs = interleaved([lambda s=sess, f=feeds[name]: time_callable(lambda: s.run(None, f), min_seconds=seconds)
                                for name, sess in sessions.items()], rounds)
            us = {n: round(float(np.median([st.p50_ms for st in r])) * 1e3, 1) for n, r in zip(sessions, runs)}
            fused, *others = us.values()
            rows.append({"case": case, "threads": t, "shape": [batch, seq, hidden], "us": us,
                         "ratio": round(fused / min(others), 2), "onnxruntime": ort.__version__})
    return rows


def profile(file, *, threads: int = 2, seq: int = 128, calls: int = 100) -> dict[str, Any]:
    """Kernel time per op type of an exported model at batch 1 x `seq` (ONNX Runtime's profiler,
    the model's own disabled-optimizer metadata honoured): {"p50_ms", "ops": {op: us per call}}."""
    import collections
    import os
    import tempfile
    from pathlib import Path

    file = Path(file)
    opts = session_options(threads)
    with tempfile.TemporaryDirectory(prefix="bertpress-profile-") as tmp:
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "ort")
        sess = session(file, opts=opts)
        ids = np.random.default_rng(0).integers(5, 100, size=(1, seq)).astype(np.int64)  # any vocab has these
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        feed = {k: v for k, v in feed.items() if k in {i.name for i in sess.get_inputs()}}
        stats = time_callable(lambda: sess.run(None, feed), warmup=10, min_iters=calls, min_seconds=0.0,
                              max_iters=calls)
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_op: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
    runs = 10 + stats.iters  # the profiler also saw the warm-up calls
    return {"file": str(file), "threads": threads, "shape": [1, seq], "p50_ms": round(stats.p50_ms, 3),
            "ops": {op: round(us / runs, 1) for op, us in per_op.most_common()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--hidden", type=int, default=384, help="hidden size (384 MiniLM, 768 bert-base); FFN = 4x")
    ap.add_argument("--seq", type=int, default=128, help="sequence length")
    ap.add_argument("--batch", type=int, default=1, help="batch size")
    ap.add_argument("--threads", default="1,2", help="comma-separated intra-op thread counts")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per thread count")
    ap.add_argument("--case", default=",".join(CASES), help=f"comma-separated cases: {', '.join(CASES)}")
    ap.add_argument("--profile", metavar="MODEL_ONNX", default=None,
                    help="instead: kernel time per op type of this exported model (batch 1 x --seq, first --threads)")
    ap.add_argument("--json", action="store_true", help="print JSON rows")
    args = ap.parse_args(argv)
    threads = tuple(int(t) for t in args.threads.split(",") if t.strip())
    if not threads or min(threads) < 1 or min(args.hidden, args.seq, args.batch, args.rounds) < 1:
        ap.error("--hidden, --seq, --batch, --rounds and every --threads value must be positive integers")
    if args.profile:
        from pathlib import Path

        if not Path(args.profile).is_file():
            ap.error(f"--profile {args.profile}: no such file; pass an exported model.onnx")
        prof = profile(args.profile, threads=threads[0], seq=args.seq)
        if args.json:
            print(json.dumps(prof, indent=2))
        else:
            total = sum(prof["ops"].values()) or 1.0
            print(f"{prof['file']}: p50 {prof['p50_ms']:.2f} ms at 1x{args.seq}, {threads[0]} thread(s); kernel time per call:")
            for op, us in prof["ops"].items():
                print(f"  {op:28s} {us:9.1f} us  {100 * us / total:5.1f} %")
        return 0
    cases = tuple(c.strip() for c in args.case.split(",") if c.strip())
    if not cases or any(c not in CASES for c in cases):
        ap.error(f"--case {args.case!r}: choose from {', '.join(CASES)}")
    rows = run(args.hidden, args.seq, args.batch, threads, args.rounds, cases=cases)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"onnxruntime {rows[0]['onnxruntime']}, batch x seq x hidden {rows[0]['shape']}, p50 per call")
        for r in rows:
            cells = ", ".join(f"{n} {v:.1f} us" for n, v in r["us"].items())
            print(f"  {r['case']}, {r['threads']} thread(s): {cells} (fused / fastest: {r['ratio']:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
