"""PyTorch bf16 inference on the CPU, measured: why eager autocast is (or is not) faster.

    python -m bertpress.bench.bf16_cpu                         # MiniLM, batch 1 x 128, 2 threads
    python -m bertpress.bench.bf16_cpu --compile --rounds 7 --json
    python -m bertpress.bench.bf16_cpu --model runs/ft --seq 64 --threads 1

Variants of one model, timed interleaved in one process (bertpress.timing.interleaved: every
variant once per round, median of the per-round p50s, speed-up per round against fp32 of the
same round, so a drifting machine hits all of them alike):

- `fp32 eager`; `fp32 eager, oneDNN off` (`torch.backends.mkldnn.flags(enabled=False)`);
- `bf16 autocast`: `torch.autocast("cpu", torch.bfloat16)` around the fp32 model, the usual recipe;
- `bf16 weights`: `model.to(torch.bfloat16)`, cast once;
- with `--compile`: `torch.compile` of the fp32 and of the bf16-weight model (inductor; the first
  call's compile time is reported), and of the fp32 model under autocast.

Besides latency it counts, with the profiler, the tensor copies and dtype casts each forward
makes: CPU autocast keeps its cast cache only inside one autocast region, so every call casts
every Linear weight (and bias) fp32 -> bf16 again, and activations back for the fp32 ops — work
that a bf16-weight model does not do. On a CPU without native bf16 (no AVX512-BF16 / AMX-BF16,
`torch.ops.mkldnn._is_mkldnn_bf16_supported()` False) the bf16 matmuls are emulated and slower
than fp32 whatever the recipe; docs/results/bf16-cpu.md has the figures and what they mean.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import time
from collections import Counter
from typing import Any, Callable

from bertpress.models import load_classifier, local_path
from bertpress.quiet import quiet
from bertpress.timing import interleaved, median_of, time_callable


def _variants(model, feed, compile_too: bool) -> tuple[dict[str, Callable[[], Any]], dict[str, float]]:
    import torch

    bf16 = copy.deepcopy(model).to(torch.bfloat16).eval()

    def eager(m):
        return lambda: m(**feed).logits

    def autocast(m):
        def run():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return m(**feed).logits
        return run

    def onednn_off(m):
        def run():
            with torch.backends.mkldnn.flags(enabled=False):
                return m(**feed).logits
        return run

    out = {"fp32 eager": eager(model), "fp32 eager, oneDNN off": onednn_off(model),
           "bf16 autocast": autocast(model), "bf16 weights": eager(bf16)}
    compile_s: dict[str, float] = {}
    if compile_too:
        for name, make in (("compile fp32", lambda: eager(torch.compile(copy.deepcopy(model)))),
                           ("compile bf16 weights", lambda: eager(torch.compile(copy.deepcopy(bf16)))),
                           ("compile fp32 + autocast", lambda: autocast(torch.compile(copy.deepcopy(model))))):
            fn = make()
            t0 = time.perf_counter()
            with torch.inference_mode():
                fn()  # compiles
            compile_s[name] = round(time.perf_counter() - t0, 1)
            out[name] = fn
    return out, compile_s


def casts_per_call(fn: Callable[[], Any]) -> dict[str, int]:
    """Copy / dtype-cast ops one call dispatches (the profiler's op events; deterministic)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    counts = Counter(e.name for e in prof.events() if e.name in ("aten::to", "aten::_to_copy", "aten::copy_"))
    return dict(sorted(counts.items()))


def measure(model_spec: str = "minilm", *, batch: int = 1, seq: int = 128, threads: int = 2, rounds: int = 5,
            min_iters: int = 20, min_seconds: float = 0.5, compile_too: bool = False, seed: int = 0) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)  # an encoder without a trained head gets the same random head each run
    model, tok = load_classifier(local_path(model_spec), num_labels=2)
    model.eval()
    enc = tok(["word " * (seq * 2)] * batch, truncation=True, max_length=seq, padding="max_length",
              return_tensors="pt")
    feed = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    load_start = os.getloadavg()[0]
    with torch.inference_mode():
        variants, compile_s = _variants(model, feed, compile_too)
        ref = variants["fp32 eager"]().float()
        diffs = {k: float((fn().float() - ref).abs().max()) for k, fn in variants.items()}
        casts = {k: casts_per_call(variants[k]) for k in ("fp32 eager", "bf16 autocast", "bf16 weights")}
        names = list(variants)
        timers = [lambda fn=variants[k]: time_callable(fn, warmup=3, min_iters=min_iters, min_seconds=min_seconds)
                  for k in names]
        per_round = interleaved(timers, rounds)
    p50 = {k: [s.p50_ms for s in per_round[i]] for i, k in enumerate(names)}
    base = p50["fp32 eager"]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return {
        "model": model_spec, "batch": batch, "seq": seq, "threads": threads, "rounds": rounds,
        "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn_bf16_supported": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "attention": getattr(model.config, "_attn_implementation", None),
        "linear_layers": len(linears),
        "load_average": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
        "compile_s": compile_s,
        "max_abs_dlogit_vs_fp32": diffs,
        "casts_per_call": casts,
        "variants": {k: {"p50_ms_per_round": [round(x, 3) for x in v], "p50_ms": round(median_of(v), 3),
                         "speedup_vs_fp32": round(median_of([b / x for b, x in zip(base, v)]), 3),
                         "speedup_range": [round(min(b / x for b, x in zip(base, v)), 3),
                                           round(max(b / x for b, x in zip(base, v)), 3)]}
                     for k, v in p50.items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bertpress.bench.bf16_cpu", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm", help="checkpoint directory or the minilm alias")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-iters", type=int, default=20)
    ap.add_argument("--min-seconds", type=float, default=0.5)
    ap.add_argument("--compile", action="store_true", help="also torch.compile (minutes on 2 cores)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    with quiet():
        res = measure(args.model, batch=args.batch, seq=args.seq, threads=args.threads, rounds=args.rounds,
                      min_iters=args.min_iters, min_seconds=args.min_seconds, compile_too=args.compile)
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"{res['model']}  batch {res['batch']} x {res['seq']}, {res['threads']} threads, torch {res['torch']}, "
          f"capability {res['cpu_capability']}, oneDNN bf16 supported: {res['mkldnn_bf16_supported']}, "
          f"load {res['load_average']['start']} -> {res['load_average']['end']}")
    for k, v in res["variants"].items():
        lo, hi = v["speedup_range"]
        print(f"  {k:26s} p50 {v['p50_ms']:8.2f} ms  {v['speedup_vs_fp32']:5.2f}x fp32 (rounds {lo:.2f}-{hi:.2f})  "
              f"max|dlogit| {res['max_abs_dlogit_vs_fp32'][k]:.2g}")
    for k, c in res["casts_per_call"].items():
        print(f"  casts per call, {k:14s} {c}")
    for k, s in res["compile_s"].items():
        print(f"  {k}: first call (compile) {s} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
