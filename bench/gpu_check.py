"""The GPU check: `make gpu-check`, or `python -m bertpress.bench.gpu_check [--data DIR] [--out DIR]`.

One command for the day a CUDA device is lent, under 8 minutes on one H100/H200. It runs, each
part in its own subprocess with a timeout (a hang costs that part, not the check) inside one
total budget (--budget, 450 s):

  cuda-tests              every test marked `cuda` (pytest -m cuda)
  finetune-bf16           MiniLM (`minilm`) fine-tuned 1 epoch on 2,000 sentences of --data, --precision bf16
  bench-pytorch-cuda      bench of that checkpoint on CUDA: PyTorch fp32 / fp16 / bf16
  bench-onnxruntime-cuda  its ONNX export benched on ONNX Runtime's CUDA EP (IO binding); skipped
                          without onnxruntime's CUDAExecutionProvider
  search                  one small automatic search (compress --max-accuracy-drop 1, 2 shapes,
                          a quarter epoch of recovery) with its training on the GPU
  onnxruntime-tensorrt    the ONNX export on the TensorRT EP (fp16) against the CUDA EP; skipped
                          unless onnxruntime offers TensorrtExecutionProvider

It prints one line per part and writes OUT/gpu-check.json (each part: status passed / failed /
skipped, reason, wall seconds, key figures, commands) and OUT/logs/PART.log (its output). The
models it trains and exports live in a temporary directory, removed at the end. On a machine
without CUDA every part is skipped and says why, and the exit status is 0; a failed part makes
it 1. `nvidia-smi` listing a GPU that torch cannot use is a failure, not a skip.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable, Optional

from bertpress.artifact import (Artifact, check_output_dir, holds_output_locks, now_iso, remove_owned,
                                write_owned_json, write_owned_text)
from bertpress.bench.results import BenchReport
from bertpress.errors import BertpressError, ConfigError, bound, raise_on_sigterm
from bertpress.hardware import cuda_devices
from bertpress.ort import session
from bertpress.signature import encode
from bertpress.timing import time_callable

SCHEMA = "bertpress.gpu-check/1"
SUMMARY = "gpu-check.json"
DEFAULT_BUDGET_S = 450.0  # 7.5 minutes: the check must end within 8 on one H100/H200
PROBE_TIMEOUT_S = 90.0  # importing torch and initialising CUDA; a broken driver can hang here
TERM_GRACE_S = 10.0  # after SIGTERM (bertpress cleans up its staging), before SIGKILL
MIN_PART_S = 5.0  # a part with less of the budget left is not started
REPO = Path(__file__).resolve().parents[1]  # the source checkout (bench/ is bertpress.bench)
DEFAULT_DATA = REPO.parent / "shared" / "data" / "sst2"
# What the fine-tune and the search are sized to (the issue: a slice of SST-2, one epoch).
TRAIN_SAMPLES = 2000
BENCH_EVAL_LIMIT = 500
SEARCH_FLAGS = ("--max-accuracy-drop", "1", "--search-layers", "0,0.5", "--search-ffn", "0", "--search-heads", "0",
                "--search-runtime", "pytorch", "--time-budget", "3", "--eval-samples", "200",
                "--recover-epochs", "0.25", "--recover-samples", "1000")


class PartFailed(Exception):
    """A part ran but its result does not show what it checks (the message is the reason)."""


@dataclasses.dataclass
class Context:
    py: str  # the interpreter every part runs with (this one)
    work: Path  # temporary: checkpoints, exports, reports
    data: Optional[Path]
    env: dict[str, Any]  # the probe's answer
    results: dict[str, "PartResult"] = dataclasses.field(default_factory=dict)

    def bertpress(self, *args: str) -> list[str]:
        return [self.py, "-m", "bertpress", *args]

    @property
    def checkpoint(self) -> str:
        """The fine-tuned checkpoint, else the packaged `minilm` (so bench and search still run)."""
        ck = self.work / "checkpoint"
        return str(ck) if (ck / "bertpress.json").is_file() else "minilm"

    @property
    def onnx(self) -> Path:
        return self.work / "onnx"

    @property
    def providers(self) -> list[str]:
        return list(self.env.get("onnxruntime_providers") or [])


@dataclasses.dataclass
class Part:
    name: str
    title: str
    timeout_s: float
    steps: Callable[[Context], list[list[str]]]
    figures: Callable[[Context], dict[str, Any]]
    needs: Callable[[Context], Optional[str]] = lambda ctx: None  # a skip reason beyond "no CUDA"
    needs_data: bool = False


@dataclasses.dataclass
class PartResult:
    name: str
    title: str
    status: str  # passed | failed | skipped
    reason: str = ""
    wall_s: float = 0.0
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)
    commands: list[str] = dataclasses.field(default_factory=list)
    log: Optional[str] = None

    def line(self) -> str:
        head = f"{self.name}: {self.status}"
        if self.status == "skipped":
            return f"{head}: {self.reason}"
        head += f" ({self.wall_s:.1f} s)"
        text = self.reason if self.status == "failed" else _brief(self.figures)
        return f"{head}: {text}" if text else head


# ---- the parts -----------------------------------------------------------------------------------


def _cuda_tests_steps(ctx: Context) -> list[list[str]]:
    return [[ctx.py, "-m", "pytest", "-m", "cuda", "-q", "-rs", "-p", "no:cacheprovider",
             f"--junitxml={ctx.work / 'cuda-tests.xml'}", str(REPO / "tests")]]


def _cuda_tests_needs(ctx: Context) -> Optional[str]:
    if not (REPO / "tests" / "conftest.py").is_file():
        return f"no tests/ folder beside {REPO / 'bench'} (not a source checkout)"
    return None


def _cuda_tests_figures(ctx: Context) -> dict[str, Any]:
    """Counts from pytest's JUnit XML: a run where no CUDA test passed checked nothing."""
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    failed, skipped = [], []
    root = ET.parse(ctx.work / "cuda-tests.xml").getroot()
    for suite in root.iter("testsuite"):
        for key in counts:
            counts[key] += int(suite.get(key, 0))
    for case in root.iter("testcase"):
        test = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(test)
        skip = case.find("skipped")
        if skip is not None:
            skipped.append(f"{test}: {skip.get('message', '')}")
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    figures = {"passed": passed, "failed": counts["failures"] + counts["errors"], "skipped": counts["skipped"],
               "failed_tests": failed, "skipped_tests": skipped}
    if passed == 0:
        raise PartFailed(f"no CUDA test passed ({counts['skipped']} skipped"
                         + (f": {skipped[0]}" if skipped else "") + ")")
    return figures


def _finetune_steps(ctx: Context) -> list[list[str]]:
    return [ctx.bertpress("finetune", "--model", "minilm", "--data", str(ctx.data), "--train-samples",
                          str(TRAIN_SAMPLES), "--epochs", "1", "--precision", "bf16", "--out",
                          str(ctx.work / "checkpoint"), "--no-progress")]


def _finetune_figures(ctx: Context) -> dict[str, Any]:
    m = _manifest(ctx.work / "checkpoint")
    metrics = m.metrics
    cuda = (metrics.get("hardware") or {}).get("cuda") or []
    if not cuda:
        raise PartFailed("the checkpoint's manifest records no CUDA device: it trained on the CPU")
    return {"precision": m.details.get("precision"),
            "train_samples": metrics.get("train_samples"), "train_samples_per_s": metrics.get("train_samples_per_s"),
            "train_wall_s": metrics.get("train_wall_s"), "dev_accuracy": metrics.get("dev_accuracy"),
            "device": cuda[0].get("name")}


def _bench_args(ctx: Context, out: str) -> list[str]:
    return ["--device", "cuda", "--eval-data", str(ctx.data), "--eval-limit", str(BENCH_EVAL_LIMIT),
            "--batch-sizes", "1,32", "--seq-lens", "128", "--warmup", "5", "--min-iters", "20",
            "--min-seconds", "0.2", "--out", str(ctx.work / out), "--no-progress"]


def _bench_pytorch_steps(ctx: Context) -> list[list[str]]:
    return [ctx.bertpress("bench", ctx.checkpoint, "--runtimes", "pytorch,pytorch-fp16,pytorch-bf16",
                          *_bench_args(ctx, "report-pytorch"))]


def _bench_pytorch_figures(ctx: Context) -> dict[str, Any]:
    return _bench_figures(ctx.work / "report-pytorch", ("pytorch", "pytorch-fp16", "pytorch-bf16"))


def _needs_ort_cuda(ctx: Context) -> Optional[str]:
    if "CUDAExecutionProvider" not in ctx.providers:
        return (f"onnxruntime {ctx.env.get('onnxruntime') or '(not importable)'} here has no CUDAExecutionProvider "
                f"(providers: {', '.join(ctx.providers) or 'none'}); install onnxruntime-gpu to run it")
    return None


def _export_steps(ctx: Context) -> list[list[str]]:
    if (ctx.onnx / "bertpress.json").is_file():
        return []
    return [ctx.bertpress("export", ctx.checkpoint, "--format", "onnx", "--out", str(ctx.onnx), "--no-progress")]


def _bench_ort_steps(ctx: Context) -> list[list[str]]:
    return [*_export_steps(ctx), ctx.bertpress("bench", ctx.checkpoint, str(ctx.onnx), "--runtimes", "onnxruntime",
                                               *_bench_args(ctx, "report-onnxruntime"))]


def _bench_ort_figures(ctx: Context) -> dict[str, Any]:
    return _bench_figures(ctx.work / "report-onnxruntime", ("onnxruntime",))


def _search_steps(ctx: Context) -> list[list[str]]:
    return [ctx.bertpress("compress", ctx.checkpoint, "--out", str(ctx.work / "search"), "--eval-data",
                          str(ctx.data), "--calibration-data", str(ctx.data), *SEARCH_FLAGS, "--no-progress")]


def _search_figures(ctx: Context) -> dict[str, Any]:
    m = _manifest(ctx.work / "search")
    s = m.details.get("search")
    if not isinstance(s, dict) or not s.get("winner"):
        raise PartFailed("the compressed artifact records no search winner (details.search)")
    w = s.get("winner_metrics") or {}
    trials = s.get("trials") or {}
    return {"winner": s["winner"], "met_budget": s.get("met_budget"),
            "accuracy_drop_points": w.get("accuracy_drop_points"), "latency_ms": w.get("latency_ms"),
            "speedup_vs_fp32_pytorch_eager": w.get("speedup_vs_fp32_pytorch_eager"),
            "candidates": len(s.get("table") or []),
            "trials": {k: (v.get("state") if isinstance(v, dict) else v) for k, v in trials.items()},
            "search_wall_s": s.get("wall_s"), "teacher": ctx.checkpoint if ctx.checkpoint == "minilm" else "finetune-bf16"}


def _needs_tensorrt(ctx: Context) -> Optional[str]:
    if "TensorrtExecutionProvider" not in ctx.providers:
        return (f"onnxruntime {ctx.env.get('onnxruntime') or '(not importable)'} here offers no "
                f"TensorrtExecutionProvider (providers: {', '.join(ctx.providers) or 'none'})")
    return None


def _tensorrt_steps(ctx: Context) -> list[list[str]]:
    return [*_export_steps(ctx), [ctx.py, "-m", "bertpress.bench.gpu_check", "--tensorrt-probe", str(ctx.onnx),
                                  "--probe-out", str(ctx.work / "tensorrt.json")]]


def _tensorrt_figures(ctx: Context) -> dict[str, Any]:
    return json.loads((ctx.work / "tensorrt.json").read_text(encoding="utf-8"))


PARTS: tuple[Part, ...] = (
    Part("cuda-tests", "every CUDA-marked test (pytest -m cuda)", 150, _cuda_tests_steps, _cuda_tests_figures,
         needs=_cuda_tests_needs),
    Part("finetune-bf16", f"MiniLM fine-tuned in bf16 on {TRAIN_SAMPLES} sentences, 1 epoch", 120, _finetune_steps,
         _finetune_figures, needs_data=True),
    Part("bench-pytorch-cuda", "bench on CUDA: PyTorch fp32 / fp16 / bf16", 90, _bench_pytorch_steps,
         _bench_pytorch_figures, needs_data=True),
    Part("bench-onnxruntime-cuda", "bench on CUDA: ONNX Runtime CUDA EP (IO binding)", 150, _bench_ort_steps,
         _bench_ort_figures, needs=_needs_ort_cuda, needs_data=True),
    Part("search", "one small automatic search, trained on the GPU", 240, _search_steps, _search_figures,
         needs_data=True),
    Part("onnxruntime-tensorrt", "ONNX Runtime TensorRT EP (fp16) against the CUDA EP", 150, _tensorrt_steps,
         _tensorrt_figures, needs=_needs_tensorrt),
)
PART_NAMES = tuple(p.name for p in PARTS)


# ---- figures -------------------------------------------------------------------------------------


def _manifest(path: Path):
    try:
        return Artifact.load(path).manifest
    except Exception as exc:  # noqa: BLE001 - any unreadable artifact fails the part with its reason
        raise PartFailed(f"{path.name}: no finished artifact ({type(exc).__name__}: {exc})") from None


def _bench_figures(report: Path, runtimes: tuple[str, ...]) -> dict[str, Any]:
    """Per CUDA variant: p50 ms at 1x128 and 32x128, real-traffic sentences/s, accuracy; refusals."""
    try:
        res = BenchReport.load(report).results
    except Exception as exc:  # noqa: BLE001
        raise PartFailed(f"no bench report ({type(exc).__name__}: {exc})") from None
    variants = {}
    for v in res.variants:
        if v.device.startswith("cuda"):
            variants[v.id] = {"runtime": v.runtime, "precision": v.precision, "p50_ms_1x128": v.p50(1, 128),
                              "p50_ms_32x128": v.p50(32, 128), "sentences_per_s": v.sentences_per_s(),
                              "accuracy": v.accuracy, "agreement": v.agreement}
    refused = [f"{r.name} {r.runtime} on {r.device}: {r.reason}" for r in res.refused]
    missing = [rt for rt in runtimes if not any(f["runtime"] == rt for f in variants.values())]
    if missing:
        raise PartFailed(f"no CUDA result for {', '.join(missing)}" + (f" (refused: {refused[0]})" if refused else ""))
    return {"variants": variants, "refused": refused}


def _brief(figures: dict[str, Any]) -> str:
    """The one line a person reads: the headline figure(s) of a part."""
    bits = []
    if "passed" in figures and "failed_tests" in figures:
        bits.append(f"{figures['passed']} passed, {figures['failed']} failed, {figures['skipped']} skipped")
    if figures.get("train_samples_per_s") is not None:
        bits.append(f"{figures['train_samples_per_s']:.0f} samples/s, dev accuracy "
                    f"{100 * (figures.get('dev_accuracy') or 0):.1f} % ({figures.get('device')})")
    for vid, v in (figures.get("variants") or {}).items():
        lat = v.get("p50_ms_1x128")
        sps = v.get("sentences_per_s")
        bits.append(f"{vid} {lat:.2f} ms" if lat is not None else vid)
        if sps:
            bits[-1] += f", {sps:.0f} sentences/s"
    if figures.get("winner"):
        w = figures["winner"]
        shape = ", ".join(f"{k} {w[k]:g}" for k in ("layers", "ffn", "heads") if isinstance(w.get(k), (int, float)))
        bits.append(f"winner ({shape} removed; {w.get('scheme')} int8 in {w.get('runtime')}) "
                    f"{'within' if figures.get('met_budget') else 'NOT within'} the budget, "
                    f"{figures.get('speedup_vs_fp32_pytorch_eager') or 0:.2f}x fp32 PyTorch eager")
    if figures.get("tensorrt_p50_ms_1x128") is not None:
        bits.append(f"TensorRT {figures['tensorrt_p50_ms_1x128']:.2f} ms vs CUDA EP "
                    f"{figures['cuda_ep_p50_ms_1x128']:.2f} ms at 1x128")
    return "; ".join(bits)


# ---- running -------------------------------------------------------------------------------------


def _run(argv: list[str], timeout: float, log, cwd: Path) -> tuple[Optional[int], float]:
    """Run argv in its own process group, output to `log`; (exit status or None on timeout, seconds)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    log.write(f"$ {shlex.join(argv)}\n")
    log.flush()
    t0 = time.monotonic()
    # A new session: on timeout the whole group (dataloader workers, pytest's children) goes.
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd, env=env,
                            start_new_session=True)
    try:
        rc: Optional[int] = proc.wait(timeout=max(timeout, 0.1))
    except subprocess.TimeoutExpired:
        rc = None
        _kill_group(proc)
    except BaseException:  # Ctrl-C / SIGTERM of the check: the part's processes go with it
        _kill_group(proc)
        raise
    return rc, time.monotonic() - t0


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group we started (bertpress removes its staging), SIGKILL after a grace."""
    for sig, grace in ((signal.SIGTERM, TERM_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    return bound(lines[-1], 300) if lines else "(no output)"


def run_part(part: Part, ctx: Context, deadline: float, override: Optional[list[str]]) -> tuple[PartResult, str]:
    """Run one part's steps inside min(its timeout, the budget left); (result, its output)."""
    res = PartResult(part.name, part.title, "passed")
    left = deadline - time.monotonic()
    if left < MIN_PART_S:
        res.status, res.reason = "failed", f"not run: the budget was spent ({max(left, 0):.0f} s left)"
        return res, ""
    timeout = min(part.timeout_s, left)
    end = time.monotonic() + timeout
    log_file = ctx.work / f"{part.name}.log"
    t0 = time.monotonic()
    with open(log_file, "w", encoding="utf-8", errors="replace") as log:
        try:
            steps = [override] if override is not None else part.steps(ctx)
        except PartFailed as exc:
            steps, res.status, res.reason = [], "failed", str(exc)
        for argv in steps:
            res.commands.append(shlex.join(argv))
            log_start = log.tell()
            rc, _ = _run(argv, end - time.monotonic(), log, REPO)
            if rc != 0:
                log.flush()
                text = log_file.read_text(encoding="utf-8", errors="replace")[log_start:]
                res.status = "failed"
                prog = " ".join(argv[2:4]) if argv[1:2] == ["-m"] else Path(argv[0]).name
                res.reason = (f"timed out after {timeout:.0f} s in `{prog}`" if rc is None
                              else f"`{prog}` exited {rc}: {_last_line(text)}")
                break
    res.wall_s = round(time.monotonic() - t0, 1)
    if res.status == "passed" and override is None:
        try:
            res.figures = part.figures(ctx)
        except PartFailed as exc:
            res.status, res.reason = "failed", str(exc)
        except Exception as exc:  # noqa: BLE001 - a result we cannot read fails the part, it does not stop the check
            res.status, res.reason = "failed", f"reading its result failed: {type(exc).__name__}: {exc}"
    return res, log_file.read_text(encoding="utf-8", errors="replace")


def probe(py: str, timeout: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
    """What this machine offers (torch, CUDA devices, onnxruntime's providers, nvidia-smi), asked in
    a subprocess so a hanging driver costs the probe's timeout only."""
    env: dict[str, Any] = {"python": py}
    try:
        proc = subprocess.run([py, "-m", "bertpress.bench.gpu_check", "--probe"], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if proc.returncode == 0:
            env.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        else:
            env["probe_error"] = _last_line(proc.stderr or proc.stdout)
    except subprocess.TimeoutExpired:
        env["probe_error"] = f"importing torch / initialising CUDA took over {timeout:.0f} s"
    except (ValueError, IndexError) as exc:
        env["probe_error"] = f"unreadable probe answer ({exc})"
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
            env["nvidia_smi_gpus"] = [ln.strip() for ln in out.splitlines() if ln.strip().startswith("GPU")]
        except (OSError, subprocess.TimeoutExpired):
            env["nvidia_smi_gpus"] = []
    return env


def _probe_main() -> int:
    """--probe: one JSON line on stdout."""
    import torch

    facts: dict[str, Any] = {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
                             "cuda_available": torch.cuda.is_available(), "cuda_devices": cuda_devices()}
    if facts["cuda_available"]:
        facts["cuda_bf16"] = bool(torch.cuda.is_bf16_supported())
    try:
        import onnxruntime as ort

        facts["onnxruntime"] = ort.__version__
        facts["onnxruntime_providers"] = list(ort.get_available_providers())
    except Exception as exc:  # noqa: BLE001 - reported, the ONNX parts then skip with it
        facts["onnxruntime"] = None
        facts["onnxruntime_error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(facts))
    return 0


def no_cuda_reason(env: dict[str, Any]) -> Optional[tuple[str, str]]:
    """(status, reason) for every part when this machine cannot run them, else None."""
    if env.get("cuda_available"):
        return None
    gpus = env.get("nvidia_smi_gpus") or []
    if "probe_error" in env:
        why = f"the environment probe failed: {env['probe_error']}"
    elif env.get("torch_cuda") is None:
        why = f"no CUDA: torch {env.get('torch')} is a CPU build"
    else:
        why = f"no CUDA device visible to torch {env.get('torch')} (CUDA {env.get('torch_cuda')})"
    if gpus:  # a GPU is there and we cannot use it: the check did not check, so it fails
        return "failed", (f"{why}, yet nvidia-smi lists {gpus[0]}; run the check with an environment whose torch "
                          "is a CUDA build (make gpu-check GPU_PYTHON=/path/to/python)")
    return ("failed" if "probe_error" in env else "skipped"), why


# ---- the TensorRT probe (run as a part's subprocess) ----------------------------------------------------


def _tensorrt_main(onnx_dir: Path, out: Path) -> int:
    """Time the export at 1x128 and 32x128 on the TensorRT EP (fp16, its engine cached in a temp dir)
    and on the CUDA EP, on fixed sentences padded to 128 tokens; and their max |logit difference|."""
    import numpy as np
    from transformers import AutoTokenizer

    file = onnx_dir / "model.onnx"
    tok = AutoTokenizer.from_pretrained(onnx_dir)
    texts = [f"a sentence number {i} that the check feeds to both execution providers" for i in range(32)]
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bertpress-trt-") as cache:
        trt = ("TensorrtExecutionProvider", {"device_id": 0, "trt_fp16_enable": True,
                                             "trt_engine_cache_enable": True, "trt_engine_cache_path": cache})
        sessions = {"tensorrt": session(file, providers=[trt, "CUDAExecutionProvider", "CPUExecutionProvider"]),
                    "cuda_ep": session(file, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])}
        used = sessions["tensorrt"].get_providers()
        figures["tensorrt_session_providers"] = used
        if used[0] != "TensorrtExecutionProvider":
            raise SystemExit(f"error: ONNX Runtime did not register the TensorRT EP (session providers: {used}); "
                             "its TensorRT libraries are missing")
        for batch in (1, 32):
            feed = encode(tok, texts[:batch], 128, pad_to_max=True)
            logits = {}
            for name, sess in sessions.items():
                names = {i.name for i in sess.get_inputs()}
                f = {k: v for k, v in feed.items() if k in names}
                logits[name] = sess.run(None, f)[0]
                st = time_callable(lambda s=sess, f=f: s.run(None, f), warmup=5, min_iters=20, min_seconds=0.5)
                figures[f"{name}_p50_ms_{batch}x128"] = round(st.p50_ms, 3)
            figures[f"max_abs_logit_diff_{batch}x128"] = float(np.max(np.abs(logits["tensorrt"] - logits["cuda_ep"])))
    out.write_text(json.dumps(figures), encoding="utf-8")
    return 0


# ---- main ----------------------------------------------------------------------------------------


def _parse_run(values: list[str]) -> dict[str, list[str]]:
    out = {}
    for v in values:
        name, sep, cmd = v.partition("=")
        if not sep or name not in PART_NAMES or not cmd.strip():
            raise ConfigError(f"--run {v!r}: give PART=COMMAND with PART one of {', '.join(PART_NAMES)}")
        out[name] = shlex.split(cmd)
    return out


@holds_output_locks  # one live check per --out (artifact.output_locks)
def check(out: Path, data: Optional[Path], budget_s: float, only: tuple[str, ...] = PART_NAMES,
          overrides: Optional[dict[str, list[str]]] = None, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the parts; write OUT/gpu-check.json after each (a killed check leaves what it finished)."""
    overrides = overrides or {}
    out = check_output_dir(out, overwrite=True)  # refuses a folder holding anything bertpress did not write
    remove_owned(out)  # the previous check's summary and logs
    out.mkdir(parents=True)
    start = time.monotonic()
    deadline = start + budget_s
    env = probe(sys.executable, min(PROBE_TIMEOUT_S, budget_s))
    blocked = no_cuda_reason(env)
    summary: dict[str, Any] = {"schema": SCHEMA, "created": now_iso(), "complete": False, "passed": None,
                               "budget_s": budget_s, "wall_s": 0.0, "data": str(data) if data else None,
                               "environment": env, "parts": []}
    write_owned_json(out, SUMMARY, summary)
    work = Path(tempfile.mkdtemp(prefix="bertpress-gpu-check-"))
    try:
        ctx = Context(sys.executable, work, data, env)
        for part in PARTS:
            if part.name not in only:
                continue
            override = overrides.get(part.name)
            skip = None
            if override is None:  # --run PART=COMMAND runs that command whatever this machine has
                skip = blocked or ((("failed", f"needs --data DIR (train.tsv, dev.tsv; {DEFAULT_DATA} not found)"))
                                   if part.needs_data and data is None else None)
                if skip is None and (reason := part.needs(ctx)):
                    skip = ("skipped", reason)
            if skip is not None:
                res = PartResult(part.name, part.title, skip[0], skip[1])
            else:
                res, text = run_part(part, ctx, deadline, override)
                if text:
                    res.log = f"logs/{part.name}.log"
                    write_owned_text(out, res.log, text)
            ctx.results[part.name] = res
            summary["parts"].append(dataclasses.asdict(res))
            summary["wall_s"] = round(time.monotonic() - start, 1)
            write_owned_json(out, SUMMARY, summary)
            say(res.line())
    finally:
        shutil.rmtree(work, ignore_errors=True)  # our own temporary directory
    summary["complete"] = True
    summary["passed"] = not any(p["status"] == "failed" for p in summary["parts"])
    summary["wall_s"] = round(time.monotonic() - start, 1)
    write_owned_json(out, SUMMARY, summary)
    return summary


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bertpress.bench.gpu_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/gpu-check", help="where gpu-check.json and logs/ go (default: %(default)s)")
    ap.add_argument("--data", default=None,
                    help=f"SST-2-like directory (train.tsv, dev.tsv); default: {DEFAULT_DATA} when it exists")
    ap.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S,
                    help="total seconds for all parts; a part never runs past it (default: %(default)s)")
    ap.add_argument("--only", default=",".join(PART_NAMES), help="comma-separated parts to run (default: all)")
    ap.add_argument("--run", action="append", default=[], metavar="PART=COMMAND",
                    help="run COMMAND as PART instead of its own steps, CUDA or not (to check the check)")
    ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tensorrt-probe", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--probe-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.probe:
        return _probe_main()
    if args.tensorrt_probe is not None:
        return _tensorrt_main(args.tensorrt_probe, args.probe_out)

    raise_on_sigterm()  # SIGTERM stops the running part's process group too, like Ctrl-C
    try:
        only = tuple(p.strip() for p in args.only.split(",") if p.strip())
        unknown = [p for p in only if p not in PART_NAMES]
        if unknown or not only:
            raise ConfigError(f"--only {args.only!r}: unknown parts {unknown}; choose from {', '.join(PART_NAMES)}")
        if not args.budget > 0:
            raise ConfigError(f"--budget {args.budget}: give a positive number of seconds, e.g. {DEFAULT_BUDGET_S:g}")
        data = Path(args.data) if args.data else (DEFAULT_DATA if DEFAULT_DATA.is_dir() else None)
        if data is not None and not data.is_dir():
            raise ConfigError(f"--data {args.data}: not a directory; give a folder with train.tsv and dev.tsv")
        summary = check(Path(args.out), data.resolve() if data else None, args.budget, only, _parse_run(args.run))
    except BertpressError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM (Terminated): the summary so far stays in --out
        print(f"error: interrupted; what finished is in {Path(args.out) / SUMMARY}", file=sys.stderr)
        return getattr(exc, "exit_code", 130)
    failed = [p["name"] for p in summary["parts"] if p["status"] == "failed"]
    print(f"gpu-check: {'passed' if not failed else 'FAILED: ' + ', '.join(failed)} in {summary['wall_s']:.0f} s; "
          f"summary: {Path(args.out) / SUMMARY}")
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
