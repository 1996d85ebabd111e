"""bench: statistics, config, runtimes, the report from a tiny-BERT run, refusals and bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bertpress.artifact import Artifact, Manifest, write_manifest
from bertpress.bench.config import Baseline, BenchConfig, Runtime
from bertpress.timing import percentile, summarize, time_callable
from bertpress.config import from_tagged, to_tagged
from bertpress.errors import ConfigError, DeviceError
from bertpress.hardware import native_bf16_cpu

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]
SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
# Tiny timing knobs: these tests check behaviour, never speed.
FAST = dict(batch_sizes=(1, 4), seq_lens=(8, 32), threads=1, warmup=1, min_iters=3, min_seconds=0.0)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


# ---- statistics ------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 7, 100, 1001])
def test_summarize_matches_numpy(n):
    rng = np.random.default_rng(n)
    samples = list(rng.lognormal(mean=1.0, sigma=0.5, size=n))
    st = summarize(samples, items_per_call=8)
    arr = np.asarray(samples)
    for q, got in ((50, st.p50_ms), (90, st.p90_ms), (99, st.p99_ms)):
        assert got == pytest.approx(np.percentile(arr, q), rel=1e-12)
    assert st.mean_ms == pytest.approx(arr.mean())
    assert st.std_ms == pytest.approx(arr.std(ddof=1) if n > 1 else 0.0)
    assert st.min_ms == arr.min() and st.iters == n
    assert st.throughput == pytest.approx(8 * 1000.0 / arr.mean())


def test_percentile_rejects_bad_input():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)
    with pytest.raises(ValueError):
        summarize([])


def test_time_callable_honours_warmup_and_minimums():
    calls = []
    st = time_callable(lambda: calls.append(1), warmup=4, min_iters=7, min_seconds=0.0)
    assert st.iters == 7 and len(calls) == 11  # 4 warm-up calls are not timed
    st = time_callable(lambda: None, warmup=0, min_iters=1, min_seconds=0.05)
    assert st.iters > 1  # kept going until min_seconds had passed


# ---- config ----------------------------------------------------------------------------------


def test_config_parses_cli_strings_and_round_trips():
    cfg = BenchConfig(devices="cpu,cuda:0", batch_sizes="1,8,8", seq_lens=[16, "64"],
                      baselines="hf-pipeline,optimum,optimum-intel", runtimes="onnxruntime", headline="8x64")
    assert cfg.devices == ("cpu", "cuda:0") and cfg.batch_sizes == (1, 8) and cfg.seq_lens == (16, 64)
    assert cfg.baselines == (Baseline.HF_PIPELINE, Baseline.OPTIMUM, Baseline.OPTIMUM_INTEL)
    assert cfg.runtimes == (Runtime.ONNXRUNTIME,)
    assert cfg.headline_shape == (8, 64)
    assert BenchConfig(batch_sizes=(1, 8), seq_lens=(16, 128)).headline_shape == (1, 128)
    again = from_tagged(json.loads(json.dumps(to_tagged(cfg))))
    assert again == cfg


@pytest.mark.parametrize("kwargs, needle", [
    (dict(devices="tpu"), "cpu, cuda or cuda:N"),
    (dict(devices=""), "empty"),
    (dict(runtimes="tensorrt"), "choose one of"),
    (dict(baselines="vllm"), "hf-pipeline"),
    (dict(batch_sizes="0,8"), "out of range"),
    (dict(seq_lens="abc"), "must be an integer"),
    (dict(threads=0), "out of range"),
    (dict(min_seconds=-1), "out of range"),
    (dict(headline="2x999"), "not in the sweep"),
    (dict(rounds=0), "out of range"),
], ids=["device", "no-device", "runtime", "baseline", "batch", "seq", "threads", "seconds", "headline", "rounds"])
def test_config_rejects_bad_values(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        BenchConfig(**kwargs)


# ---- fixtures: a tiny checkpoint and its ONNX / TorchScript / compressed bundles ------------------


def _bundle(dst: Path, model, tokenizer) -> Path:
    dst.mkdir(parents=True)
    tokenizer.save_pretrained(dst)
    model.config.save_pretrained(dst)
    return dst


def _finish(ck: Path, dst: Path, kind: str) -> None:
    """The manifest, last (as the contract says)."""
    write_manifest(dst, Manifest(kind=kind, labels=["negative", "positive"], max_length=128,
                                 lineage={"parent": str(ck.resolve()), "parent_kind": "checkpoint",
                                          "parent_sha256": None}))


def _export_onnx(model, file: Path) -> None:
    ids = torch.randint(5, 60, (2, 16))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(file), input_names=INPUTS,
            output_names=["logits"], dynamic_axes={**{n: {0: "batch", 1: "seq"} for n in INPUTS}, "logits": {0: "batch"}},
            dynamo=False, opset_version=17)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """ck (checkpoint), onnx, onnx-int8, torchscript, compressed, data: the contract layouts of
    docs/architecture.md, built here so bench is tested independently of the export stage."""
    import warnings

    from bertpress.models import load_classifier
    from bertpress.testing import save_tiny_checkpoint, write_tiny_dataset

    root = tmp_path_factory.mktemp("bench")
    ck = save_tiny_checkpoint(root / "ck")
    data = write_tiny_dataset(root / "data", n_train=8, n_dev=40)
    model, tok = load_classifier(ck)
    model.config.return_dict = False  # tuple outputs, as TorchScript/ONNX exports use
    onnx_dir = _bundle(root / "onnx", model, tok)
    _export_onnx(model, onnx_dir / "model.onnx")
    _finish(ck, onnx_dir, "onnx")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    q_dir = _bundle(root / "onnx-int8", model, tok)
    quantize_dynamic(str(onnx_dir / "model.onnx"), str(q_dir / "model.onnx"), weight_type=QuantType.QInt8)
    _finish(ck, q_dir, "onnx")
    ts_dir = _bundle(root / "torchscript", model, tok)
    ids = torch.randint(5, 60, (2, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), strict=False)
    torch.jit.save(traced, str(ts_dir / "model.pt"))
    _finish(ck, ts_dir, "torchscript")
    comp = root / "compressed"
    shutil.copytree(ck, comp)
    write_manifest(comp, Manifest(kind="compressed", labels=["negative", "positive"], max_length=128,
                                  lineage={"parent": str(ck.resolve()), "parent_kind": "checkpoint", "parent_sha256": None},
                                  details={"quantization": None}))
    return {"root": root, "ck": ck, "onnx": onnx_dir, "onnx_int8": q_dir, "torchscript": ts_dir,
            "compressed": comp, "data": data}


def _reference_predictions(ck: Path, data: Path) -> tuple[np.ndarray, np.ndarray]:
    from bertpress.data import load_text_classification
    from bertpress.models import load_classifier

    model, tok = load_classifier(ck)
    ds = load_text_classification(data, "dev", label_names=["negative", "positive"])
    with torch.inference_mode():
        logits = model(**tok(ds.texts, padding=True, return_tensors="pt")).logits
    return logits.argmax(-1).numpy(), np.asarray(ds.labels)


# ---- the full tiny run: report, plots, ratios, accuracy ---------------------------------------------


@pytest.fixture(scope="module")
def report(bundles, tmp_path_factory):
    from bertpress.bench import bench

    out = tmp_path_factory.mktemp("rep") / "report"
    # The Optimum anchors need their own environments: tests/test_anchors.py runs them.
    cfg = BenchConfig(eval_data=str(bundles["data"]), baselines=("hf-pipeline",), traffic_batch_size=16, **FAST)
    return bench([bundles["ck"], bundles["compressed"], bundles["onnx"], bundles["onnx_int8"], bundles["torchscript"]],
                 cfg, out, progress=False)


EXPECTED_IDS = ["ck:pytorch@cpu", "ck:pytorch-int8-dynamic@cpu", "compressed:pytorch@cpu", "onnx:onnxruntime@cpu",
                "onnx-int8:onnxruntime@cpu", "torchscript:torchscript@cpu", "hf-pipeline@cpu"]


def test_report_has_every_variant_and_shape(report):
    res = report.results
    assert [v.id for v in res.variants] == EXPECTED_IDS
    assert res.reference == "ck:pytorch@cpu" and res.threads == 1
    for v in res.variants:
        assert sorted((r.batch_size, r.seq_len) for r in v.fixed) == [(1, 8), (1, 32), (4, 8), (4, 32)]
        assert all(r.latency.iters >= 3 and r.latency.p50_ms > 0 for r in v.fixed)
        assert v.traffic is not None and v.traffic.sentences == 40 and v.traffic.sentences_per_s > 0
        assert v.traffic.cold_sentences_per_s > 0
        assert v.memory["peak_rss_mb"] > 0 and v.size_bytes and v.size_bytes > 0
    ref = res.variant("ck:pytorch@cpu")
    assert ref.ratios["p50_speedup"] == pytest.approx(1.0) and ref.ratios["size"] == pytest.approx(1.0)
    int8 = res.variant("ck:pytorch-int8-dynamic@cpu")
    assert int8.precision == "int8-dynamic" and int8.size_source == "state_dict"
    assert res.variant("onnx-int8:onnxruntime@cpu").precision == "int8"
    # int8 weights are smaller (the tiny model is mostly fp32 embeddings, so only compare to fp32 ONNX)
    assert res.variant("onnx-int8:onnxruntime@cpu").size_bytes < res.variant("onnx:onnxruntime@cpu").size_bytes


def test_accuracy_and_agreement_match_a_direct_computation(report, bundles):
    preds, labels = _reference_predictions(bundles["ck"], bundles["data"])
    res = report.results
    expected = float(np.mean(preds == labels))
    # fp32 variants compute the same function: same accuracy, full agreement with the reference
    for vid in ("ck:pytorch@cpu", "compressed:pytorch@cpu", "onnx:onnxruntime@cpu", "torchscript:torchscript@cpu",
                "hf-pipeline@cpu"):
        v = res.variant(vid)
        assert v.accuracy == pytest.approx(expected), vid
        assert v.agreement == pytest.approx(1.0), vid
    for v in res.variants:
        assert 0.0 <= v.agreement <= 1.0
        assert v.ratios["accuracy_delta_points"] == pytest.approx((v.accuracy - expected) * 100)


def test_report_files_markdown_and_manifest(report):
    out = report.path
    assert Artifact.load(out).kind == "report"
    data = json.loads((out / "results.json").read_text())
    from bertpress.bench.results import BenchReport, BenchResults

    assert BenchResults.from_dict(data).to_dict() == data
    assert BenchReport.load(out).results.variants[0].id == "ck:pytorch@cpu"
    md = (out / "report.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| `")]
    for vid in EXPECTED_IDS:
        assert sum(f"`{vid}`" in line for line in table) >= 3, vid  # summary, sweep and traffic tables
    assert "(1.00×)" in md  # the reference row carries its own ratio
    assert "avx512" in md.lower() or "avx2" in md.lower() or "ISA: none" in md
    assert "## Method" in md and "## Environment" in md


def test_plots_are_valid_pngs(report):
    from PIL import Image
    import matplotlib.image as mpimg

    from bertpress.bench.report import PLOTS

    for name in PLOTS:
        f = report.path / "plots" / name
        assert f.read_bytes()[:8] == PNG_SIGNATURE, name
        with Image.open(f) as im:
            im.verify()
        with Image.open(f) as im:
            assert im.size[0] > 300 and im.size[1] > 200
        assert mpimg.imread(str(f)).ndim == 3


def test_pareto_front():
    from bertpress.bench.report import pareto_front

    pts = [(10.0, 90.0), (5.0, 85.0), (20.0, 91.0), (12.0, 80.0), (5.0, 84.0), (30.0, 91.0)]
    assert pareto_front(pts) == [1, 0, 2]  # sorted by latency; dominated and tied-worse points excluded


# ---- runtimes --------------------------------------------------------------------------------


def test_runtimes_agree_with_pytorch_logits(bundles):
    from bertpress.bench.runtimes import load_runner
    from bertpress.bench.sources import resolve_source

    texts = ["the film was great", "awful and boring plot of the movie"]
    ref = load_runner(resolve_source(str(bundles["ck"])), Runtime.PYTORCH, "cpu", 1)
    enc = ref.tokenize(texts)
    expected = ref.logits(ref.run(ref.prepare(enc)))
    for key, rt in (("onnx", Runtime.ONNXRUNTIME), ("torchscript", Runtime.TORCHSCRIPT)):
        r = load_runner(resolve_source(str(bundles[key])), rt, "cpu", 1)
        np.testing.assert_allclose(r.logits(r.run(r.prepare(enc))), expected, atol=1e-4)
        assert (r.classify(texts) == expected.argmax(-1)).all()


def test_int8_onnx_on_cuda_is_refused_with_fake_providers(bundles):
    from bertpress.bench.runtimes import check_onnx_device
    from bertpress.ort import op_counts as onnx_op_counts

    fake = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    q_ops = onnx_op_counts(bundles["onnx_int8"] / "model.onnx")
    with pytest.raises(DeviceError, match=r"refused: .*int8.*(MatMulInteger|DynamicQuantizeLinear).*CPU"):
        check_onnx_device(q_ops, "cuda", fake)
    assert check_onnx_device(q_ops, "cpu", fake) == "CPUExecutionProvider"
    fp32_ops = onnx_op_counts(bundles["onnx"] / "model.onnx")
    assert check_onnx_device(fp32_ops, "cuda", fake) == "CUDAExecutionProvider"
    with pytest.raises(DeviceError, match="onnxruntime-gpu"):
        check_onnx_device(fp32_ops, "cuda", ["CPUExecutionProvider"])
    qdq = {"QuantizeLinear": 3, "DequantizeLinear": 3, "MatMul": 3}
    with pytest.raises(DeviceError, match="QuantizeLinear"):
        check_onnx_device(qdq, "cuda", fake)


def test_refusals_are_recorded_not_timed(bundles, tmp_path, monkeypatch):
    """With a (faked) CUDA machine and a CUDA-enabled ORT, the int8 ONNX on cuda is refused and
    listed in the report while the cpu variant still runs."""
    import onnxruntime as ort

    from bertpress.bench import run as run_mod

    monkeypatch.setattr(run_mod, "check_devices", lambda devices: None)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    cfg = BenchConfig(devices="cpu,cuda", **{**FAST, "batch_sizes": (1,), "seq_lens": (8,)})
    rep = run_mod.bench([bundles["onnx_int8"]], cfg, tmp_path / "r", progress=False)
    ids = [v.id for v in rep.results.variants]
    assert "onnx-int8:onnxruntime@cpu" in ids and not any(i.endswith("@cuda") for i in ids)
    assert [(r.name, r.device) for r in rep.results.refused] == [("onnx-int8", "cuda")]
    assert "## Refused" in (rep.path / "report.md").read_text()


def test_cpu_bf16_is_opt_in():
    from bertpress.bench.runtimes import runtimes_for

    assert Runtime.PYTORCH_BF16 not in runtimes_for("checkpoint", "cpu")
    assert Runtime.PYTORCH_BF16 in runtimes_for("checkpoint", "cpu", (Runtime.PYTORCH_BF16,))
    assert Runtime.PYTORCH_BF16 in runtimes_for("checkpoint", "cuda")
    assert Runtime.PYTORCH_FP16 not in runtimes_for("checkpoint", "cpu", (Runtime.PYTORCH_FP16,))


def test_cpu_bf16_without_native_bf16_is_refused(bundles, tmp_path, monkeypatch):
    import bertpress.hardware
    from bertpress.bench import bench

    monkeypatch.setattr(bertpress.hardware, "native_bf16_cpu", lambda: False)
    cfg = BenchConfig(runtimes="pytorch,pytorch-bf16", **{**FAST, "batch_sizes": (1,), "seq_lens": (8,)})
    rep = bench([bundles["ck"]], cfg, tmp_path / "r", progress=False)
    assert [v.id for v in rep.results.variants] == ["ck:pytorch@cpu"]
    assert [(r.name, r.runtime, r.reason) for r in rep.results.refused] == [(
        "ck", "pytorch-bf16", "refused: pytorch-bf16 on this CPU would be emulated (no AVX512-BF16 or AMX-BF16; "
        "see `bertpress info`), 3-5x slower than fp32; use pytorch or an int8 runtime here")]


@pytest.mark.skipif(not native_bf16_cpu(), reason="needs a CPU with native bf16 (AVX512-BF16 or AMX-BF16)")
def test_cpu_bf16_runs_where_bf16_is_native(bundles, tmp_path):
    from bertpress.bench import bench

    cfg = BenchConfig(runtimes="pytorch,pytorch-bf16", **{**FAST, "batch_sizes": (1,), "seq_lens": (8,)})
    rep = bench([bundles["ck"]], cfg, tmp_path / "r", progress=False)
    by_id = {v.id: v for v in rep.results.variants}
    assert set(by_id) == {"ck:pytorch@cpu", "ck:pytorch-bf16@cpu"} and not rep.results.refused
    assert by_id["ck:pytorch-bf16@cpu"].precision == "bf16"


def test_reference_is_found_through_lineage(bundles, tmp_path):
    from bertpress.bench import bench

    cfg = BenchConfig(**{**FAST, "batch_sizes": (1,), "seq_lens": (8,)})
    rep = bench([bundles["onnx"]], cfg, tmp_path / "r", progress=False)
    assert rep.results.reference == "ck (fp32 reference):pytorch@cpu"
    assert [v.role for v in rep.results.variants] == ["reference", "artifact"]
    # the lineage-found checkpoint is the denominator of every ratio
    assert rep.results.variant("ck (fp32 reference):pytorch@cpu").ratios["p50_speedup"] == 1.0
    assert "p50_speedup" in rep.results.variant("onnx:onnxruntime@cpu").ratios


def test_interleaved_rounds_set_the_headline_p50_and_ratios(bundles, tmp_path, monkeypatch):
    """--rounds 3: after the sweep the headline shape is timed v1, v2, v1, v2, v1, v2 (all loaded
    together); the summary p50 and speed-up are the medians of the round p50s."""
    from bertpress.bench import run as run_mod

    calls: list[int] = []
    real = run_mod.time_callable

    def spy(fn, **kw):
        calls.append(id(fn))
        return real(fn, **kw)

    monkeypatch.setattr(run_mod, "time_callable", spy)
    cfg = BenchConfig(rounds=3, runtimes="pytorch,onnxruntime",
                      **{**FAST, "batch_sizes": (1,), "seq_lens": (8, 16), "headline": "1x8"})
    rep = run_mod.bench([bundles["ck"], bundles["onnx"]], cfg, tmp_path / "r", progress=False)
    res = rep.results
    assert [v.id for v in res.variants] == ["ck:pytorch@cpu", "onnx:onnxruntime@cpu"]
    rounds = calls[4:]  # after the sweep (2 variants x 2 shapes): v1, v2, v1, v2, v1, v2
    assert len(rounds) == 6 and rounds[0] != rounds[1] and rounds == rounds[:2] * 3
    ref, onnx = res.variants
    for v in res.variants:
        assert v.rounds["batch_size"] == 1 and v.rounds["seq_len"] == 8 and len(v.rounds["p50_ms"]) == 3
        assert v.p50(1, 8) == pytest.approx(sorted(v.rounds["p50_ms"])[1])
        assert v.p50(1, 16) == v.shape(1, 16).p50_ms  # only the headline shape is re-timed
    assert onnx.ratios["p50_speedup"] == pytest.approx(ref.p50(1, 8) / onnx.p50(1, 8))
    md = (rep.path / "report.md").read_text()
    assert "## Interleaved rounds (batch 1 × 8" in md and "median of 3 interleaved rounds" in md
    assert f"| {ref.p50(1, 8):.2f} (1.00×) |" in md
    per_round = [r / x for r, x in zip(ref.rounds["p50_ms"], onnx.rounds["p50_ms"])]
    assert f"| {min(per_round):.2f}× – {max(per_round):.2f}× |" in md
    from bertpress.bench.results import BenchResults

    data = json.loads((rep.path / "results.json").read_text())
    assert BenchResults.from_dict(data).variants[1].rounds == onnx.rounds
    assert rep.manifest.metrics["onnx:onnxruntime@cpu"]["p50_ms_b1_s8"] == pytest.approx(onnx.p50(1, 8))


def test_interleaved_rounds_also_serve_the_real_traffic(bundles, tmp_path, monkeypatch):
    """--rounds 3 with eval data: each round serves one traffic pass per variant after the headline
    calls (v1, v2, p, v1, v2, p, ...); sentences/s and the throughput ratio are the medians, the
    report lists every round with the ratio per round against the reference and the pipeline."""
    from bertpress.bench import run as run_mod
    from bertpress.bench.runtimes import Runner

    served: list[str] = []  # every traffic pass, and "head" for every timed headline/sweep shape
    real_serve, real_time = Runner.serve, run_mod.time_callable

    def spy(self, chunks):
        served.append(type(self).__name__)
        return real_serve(self, chunks)

    def spy_time(fn, **kw):
        served.append("head")
        return real_time(fn, **kw)

    monkeypatch.setattr(Runner, "serve", spy)
    monkeypatch.setattr(run_mod, "time_callable", spy_time)
    cfg = BenchConfig(rounds=3, runtimes="onnxruntime", baselines=("hf-pipeline",), eval_data=str(bundles["data"]),
                      traffic_batch_size=16, traffic_passes=1, **{**FAST, "batch_sizes": (1,), "seq_lens": (8,)})
    rep = run_mod.bench([bundles["onnx"]], cfg, tmp_path / "r", progress=False)
    res = rep.results
    ref, onnx, pipe = (res.variant(i) for i in ("ck (fp32 reference):pytorch@cpu", "onnx:onnxruntime@cpu",
                                                 "hf-pipeline@cpu"))
    # rounds: 1 untimed warm-up pass each, then per round every headline call, then every traffic pass
    each = ["TorchRunner", "OnnxRunner", "PipelineRunner"]
    assert served[-21:] == each + (["head"] * 3 + each) * 3
    for v in (ref, onnx, pipe):
        rates = v.rounds["sentences_per_s"]
        assert len(rates) == 3 and all(x > 0 for x in rates)
        assert v.sentences_per_s() == pytest.approx(sorted(rates)[1])
        assert v.traffic.passes == 1 and v.traffic.sentences_per_s > 0  # the sweep's own figure is kept apart
    assert onnx.ratios["throughput"] == pytest.approx(onnx.sentences_per_s() / ref.sentences_per_s())
    assert rep.manifest.metrics["onnx:onnxruntime@cpu"]["sentences_per_s"] == pytest.approx(onnx.sentences_per_s())
    md = (rep.path / "report.md").read_text()
    assert "## Interleaved rounds (real traffic, sentences/s per round)" in md
    assert "sentences/s, ratio; sentences/s = median of 3 interleaved rounds, ratios of medians" in md
    vs_pipe = [x / y for x, y in zip(onnx.rounds["sentences_per_s"], pipe.rounds["sentences_per_s"])]
    assert f"{sorted(vs_pipe)[1]:.2f}× ({min(vs_pipe):.2f} – {max(vs_pipe):.2f}) |" in md
    from bertpress.bench.results import BenchResults

    data = json.loads((rep.path / "results.json").read_text())
    assert BenchResults.from_dict(data).variant("onnx:onnxruntime@cpu").rounds == onnx.rounds


def test_traffic_that_fails_in_the_rounds_keeps_the_sweep_figures_on_both_sides(bundles, tmp_path, monkeypatch):
    """The ONNX server fails to warm up in the rounds: its headline is still re-timed, its traffic
    keeps the sweep's figure with a note, and its throughput ratio uses the sweep on both sides."""
    from bertpress.bench import run as run_mod
    from bertpress.bench.runtimes import OnnxRunner

    real, calls = OnnxRunner.serve, []

    def fails_in_the_rounds(self, chunks):
        calls.append(1)
        if len(calls) > 2:  # the sweep's cold + steady pass, then the rounds' warm-up
            raise RuntimeError("out of memory (test)")
        return real(self, chunks)

    monkeypatch.setattr(OnnxRunner, "serve", fails_in_the_rounds)
    cfg = BenchConfig(rounds=2, runtimes="onnxruntime", eval_data=str(bundles["data"]), traffic_passes=1,
                      **{**FAST, "batch_sizes": (1,), "seq_lens": (8,)})
    res = run_mod.bench([bundles["onnx"]], cfg, tmp_path / "r", progress=False).results
    ref, onnx = res.variants
    assert len(onnx.rounds["p50_ms"]) == 2 and "sentences_per_s" not in onnx.rounds
    assert len(ref.rounds["sentences_per_s"]) == 2
    assert any(n.startswith("real traffic not re-served in the interleaved rounds (RuntimeError: out of memory")
               for n in onnx.notes)
    assert onnx.ratios["throughput"] == pytest.approx(onnx.traffic.sentences_per_s / ref.traffic.sentences_per_s)
    assert onnx.ratios["p50_speedup"] == pytest.approx(ref.p50(1, 8) / onnx.p50(1, 8))  # both from the rounds


def test_a_variant_that_cannot_be_reloaded_for_the_rounds_keeps_its_sweep_value(bundles, tmp_path, monkeypatch):
    from bertpress.bench import run as run_mod

    real, built = run_mod._build, []

    def second_onnx_load_fails(plan, *a):
        built.append(plan.id)
        if plan.runtime.value == "onnxruntime" and built.count(plan.id) > 1:
            raise RuntimeError("CUDA out of memory (test)")
        return real(plan, *a)

    monkeypatch.setattr(run_mod, "_build", second_onnx_load_fails)
    cfg = BenchConfig(rounds=2, runtimes="pytorch,onnxruntime",
                      **{**FAST, "batch_sizes": (1,), "seq_lens": (8,)})
    res = run_mod.bench([bundles["ck"], bundles["onnx"]], cfg, tmp_path / "r", progress=False).results
    ref, onnx = res.variants
    assert len(ref.rounds["p50_ms"]) == 2 and onnx.rounds is None
    assert onnx.p50(1, 8) == onnx.shape(1, 8).p50_ms
    # its speed-up is the sweep's on both sides, never a rounds median against a sweep figure
    assert onnx.ratios["p50_speedup"] == pytest.approx(ref.shape(1, 8).p50_ms / onnx.shape(1, 8).p50_ms)
    assert any("not re-timed in the interleaved rounds" in n and "CUDA out of memory" in n for n in onnx.notes)


def test_bundles_written_by_the_export_stage(bundles, tmp_path):
    """Contract check with the real export stage: an `--format all` directory expands to its
    onnx, torchscript and openvino artifacts, int8 is recognised, predictions agree with the reference."""
    export_mod = pytest.importorskip("bertpress.export.api")
    from bertpress.bench import bench
    from bertpress.export.config import ExportConfig

    export_mod.export(bundles["ck"], ExportConfig(format="all", quantize="dynamic"), tmp_path / "exp8")
    cfg = BenchConfig(eval_data=str(bundles["data"]), **{**FAST, "batch_sizes": (2,), "seq_lens": (16,)})
    rep = bench([bundles["ck"], tmp_path / "exp8"], cfg, tmp_path / "r", progress=False)
    by_id = {v.id: v for v in rep.results.variants}
    for vid in ("exp8/onnx:onnxruntime@cpu", "exp8/torchscript:torchscript@cpu", "exp8/openvino:openvino@cpu"):
        assert by_id[vid].precision == "int8" and by_id[vid].agreement >= 0.9, vid


def test_pipeline_fixed_texts_tokenize_to_the_asked_length():
    from bertpress.bench.baselines import PipelineRunner
    from bertpress.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    for seq in (8, 33, 128):
        texts = PipelineRunner._texts_of_length(None, 3, seq)
        enc = tok(texts, truncation=True, max_length=seq, padding="max_length")
        assert len(texts) == 3 and all(len(ids) == seq and 0 not in ids for ids in enc["input_ids"])


def test_a_directory_of_artifacts_expands(bundles, tmp_path):
    from bertpress.bench.sources import resolve_sources

    both = tmp_path / "deploy"
    shutil.copytree(bundles["onnx"], both / "onnx")
    shutil.copytree(bundles["torchscript"], both / "torchscript")
    got = resolve_sources(str(both))
    assert [(s.name, s.kind) for s in got] == [("deploy/onnx", "onnx"), ("deploy/torchscript", "torchscript")]


def test_peak_memory_sees_an_allocation():
    from bertpress.bench.memory import PeakMemory

    with PeakMemory() as m:
        block = np.ones(200 * 2**20 // 8)  # 200 MiB, touched
        del block
    r = m.result()
    assert r["peak_rss_mb"] > 200
    if not r["peak_is_lifetime"]:
        assert r["rss_added_mb"] >= 150


# ---- bad input -----------------------------------------------------------------------------------


def _cli(args, capsys):
    from bertpress.app.cli import main

    code = main(["bench", *map(str, args)])
    return code, capsys.readouterr()


def test_cli_unknown_device_and_runtime(bundles, tmp_path, capsys):
    code, cap = _cli([bundles["ck"], "--device", "tpu", "--out", tmp_path / "r"], capsys)
    assert code == 2 and "cpu, cuda or cuda:N" in cap.err and "Traceback" not in cap.err
    code, cap = _cli([bundles["ck"], "--runtimes", "tensorrt", "--out", tmp_path / "r"], capsys)
    assert code == 2 and "tensorrt" in cap.err and "onnxruntime" in cap.err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cli_cuda_without_cuda(bundles, tmp_path, capsys):
    code, cap = _cli([bundles["ck"], "--device", "cpu,cuda", "--out", tmp_path / "r"], capsys)
    assert code == 2 and "CUDA is not available" in cap.err and "--device cpu" in cap.err
    assert len(cap.err.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def test_truncated_onnx_is_a_clear_error(bundles, tmp_path, capsys):
    bad = tmp_path / "bad-onnx"
    shutil.copytree(bundles["onnx"], bad)
    blob = (bad / "model.onnx").read_bytes()
    (bad / "model.onnx").write_bytes(blob[: len(blob) // 3])
    code, cap = _cli([bad, "--out", tmp_path / "r", "--batch-sizes", "1", "--seq-lens", "8"], capsys)
    assert code == 2 and "model.onnx" in cap.err and "re-export" in cap.err
    assert not (tmp_path / "r").exists()


def test_eval_labels_the_model_lacks(bundles, tmp_path, capsys):
    data = tmp_path / "dev.tsv"
    data.write_text("sentence\tlabel\nfine film\tpositive\nso so\tneutral\n")
    code, cap = _cli([bundles["ck"], "--eval-data", data, "--out", tmp_path / "r"], capsys)
    assert code == 2 and "'neutral'" in cap.err and "negative" in cap.err


def test_not_an_artifact_and_existing_out(bundles, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, cap = _cli([empty, "--out", tmp_path / "r"], capsys)
    assert code == 2 and "config.json" in cap.err
    code, cap = _cli([bundles["ck"] / "model.safetensors", "--out", tmp_path / "r"], capsys)
    assert code == 2 and "directory" in cap.err
    out = tmp_path / "full"
    out.mkdir()
    (out / "x").write_text("keep")
    code, cap = _cli([bundles["ck"], "--out", out], capsys)
    assert code == 2 and "--overwrite" in cap.err and (out / "x").read_text() == "keep"


def test_baselines_need_a_checkpoint(tmp_path, bundles, capsys):
    lone = tmp_path / "lone-onnx"
    shutil.copytree(bundles["onnx"], lone)
    m = json.loads((lone / "bertpress.json").read_text())
    m["lineage"] = None
    (lone / "bertpress.json").write_text(json.dumps(m))
    code, cap = _cli([lone, "--baselines", "hf-pipeline", "--out", tmp_path / "r"], capsys)
    assert code == 2 and "fp32 checkpoint" in cap.err


def test_cli_json_in_a_fresh_process(bundles, tmp_path):
    """The real entry point, as a user runs it: exit 0 and machine-readable results."""
    out = tmp_path / "r"
    proc = subprocess.run(
        [sys.executable, "-m", "bertpress", "bench", str(bundles["ck"]), "--runtimes", "pytorch",
         "--batch-sizes", "2", "--seq-lens", "8", "--threads", "1", "--warmup", "1", "--min-iters", "3",
         "--min-seconds", "0", "--eval-data", str(bundles["data"]), "--out", str(out), "--json", "--no-progress"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [v["id"] for v in data["variants"]] == ["ck:pytorch@cpu"]
    assert data["variants"][0]["traffic"]["sentences"] == 40 and data["threads"] == 1
    assert (out / "report.md").is_file() and Artifact.load(out).kind == "report"


def test_help_is_light():
    code = ("import sys, bertpress.app.cli as c; c.build_parser().parse_args(['bench', '--help'])")
    proc = subprocess.run([sys.executable, "-c", code + "\n"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--baselines" in proc.stdout
    check = subprocess.run([sys.executable, "-c", "import sys, bertpress.bench.cli, bertpress.bench; "
                            "print('torch' in sys.modules)"], capture_output=True, text=True)
    assert check.stdout.strip() == "False"


# ---- CUDA (skipped without a GPU) ----------------------------------------------------------------


@pytest.mark.cuda
@needs_cuda
def test_cuda_runtimes(bundles, tmp_path):
    from bertpress.bench import bench

    cfg = BenchConfig(devices="cuda", **{**FAST, "threads": 1})
    rep = bench([bundles["ck"], bundles["onnx"], bundles["onnx_int8"]], cfg, tmp_path / "r", progress=False)
    ids = {v.id for v in rep.results.variants}
    assert {"ck:pytorch@cuda", "ck:pytorch-fp16@cuda", "ck:pytorch-bf16@cuda"} <= ids
    for v in rep.results.variants:
        if v.device == "cuda" and v.runtime.startswith("pytorch"):
            assert v.memory["cuda_max_allocated_mb"] > 0
    assert any(r.name == "onnx-int8" for r in rep.results.refused)


@pytest.mark.cuda
@needs_cuda
def test_cuda_events_timing():
    st = time_callable(lambda: torch.ones(256, 256, device="cuda") @ torch.ones(256, 256, device="cuda"),
                       warmup=2, min_iters=5, min_seconds=0, cuda=True)
    assert st.iters == 5 and st.p50_ms > 0


# ---- real model / data ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not SST2.is_dir(), reason="needs ../shared/data/sst2")
def test_minilm_on_sst2_subset(tmp_path):
    """Real model, real data: the pipeline baseline and our PyTorch path classify identically
    (same seeded head), int8 mostly agrees, int8 weights are smaller."""
    from bertpress.bench import bench

    cfg = BenchConfig(eval_data=str(SST2), eval_limit=64, batch_sizes=(1,), seq_lens=(32,), threads=1, warmup=1,
                      min_iters=3, min_seconds=0.0, runtimes=("pytorch", "pytorch-int8-dynamic"),
                      baselines=("hf-pipeline",))
    rep = bench(["minilm"], cfg, tmp_path / "r", progress=False)
    ref, int8, pipe = rep.results.variants
    assert rep.results.eval_data["rows"] == 64 and ref.traffic.sentences == 64
    assert pipe.id == "hf-pipeline@cpu" and pipe.agreement == 1.0 and pipe.accuracy == ref.accuracy
    assert int8.agreement >= 0.75 and int8.size_bytes < 0.8 * ref.size_bytes


def test_traffic_warms_every_shape_once_then_times_the_passes():
    """The first pass over the set is the warm-up (every batch shape new), timed as the cold figure;
    the timed passes come after it and give the predictions in the data's order."""
    from bertpress.bench.run import _measure_traffic
    from bertpress.testing import tiny_tokenizer

    texts = ["good"] * 3 + ["a bad and boring movie"] * 3 + ["great acting and lovely music"] * 2

    from bertpress.bench.runtimes import Runner

    class Counting(Runner):  # a runner that records the batches it is given
        def __init__(self):
            super().__init__(tiny_tokenizer(), 32)
            self.calls = []

        def classify(self, chunk):
            self.calls.append(tuple(chunk))
            return np.array([len(t) % 2 for t in chunk])

    class Data:  # the two things _measure_traffic reads of a TextDataset
        examples = texts

        def __len__(self):
            return len(texts)

    runner, ds = Counting(), Data()
    cfg = BenchConfig(traffic_batch_size=3, traffic_passes=2)
    result, preds = _measure_traffic(runner, ds, cfg)
    batches = runner.calls[:3]
    assert len(runner.calls) == 9 and runner.calls == batches * 3  # warm-up pass + two timed passes
    assert sorted(t for b in batches for t in b) == sorted(texts)
    assert result.passes == 2 and result.batch_latency.iters == 6
    assert result.cold_sentences_per_s > 0 and result.sentences_per_s > 0
    assert preds.tolist() == [len(t) % 2 for t in texts]
    assert result.mode == "latency" and runner.notes == []
    # throughput mode: a runtime without one serves the same batches one at a time, and says so
    runner = Counting()
    result, preds = _measure_traffic(runner, ds, BenchConfig(traffic_batch_size=3, traffic_mode="throughput"))
    assert result.mode == "throughput" and len(runner.calls) == 6 and preds.tolist() == [len(t) % 2 for t in texts]
    assert runner.notes == ["traffic: one batch at a time (this runtime has no throughput mode in bench)"]
    with pytest.raises(ConfigError, match=r"^traffic_mode='fast' is not a traffic mode; choose latency or throughput "
                                          r"\(--traffic-mode\)$"):
        BenchConfig(traffic_mode="fast")


def test_onnxruntime_serves_throughput_traffic_with_batches_in_flight(bundles):
    """--traffic-mode throughput with 2 threads: ONNX Runtime serves 2 batches at once (a session of
    one intra-op thread, concurrent run calls), with the same predictions as one at a time, each
    batch's latency recorded in order; a batch that fails to tokenize raises after the runs in
    flight finish, and the server is usable again."""
    from bertpress.bench.runtimes import OnnxRunner, load_onnx_file
    from bertpress.models import load_tokenizer

    onnx = bundles["onnx"]
    runner = load_onnx_file(onnx / "model.onnx", load_tokenizer(onnx), 128, "cpu", 2)
    chunks = [["good"] * 3, ["a bad and boring movie"] * 5, ["great acting"], ["so so", "lovely music and acting"]] * 3
    one_at_a_time, _ = runner.serve(chunks)
    server = runner.for_traffic("throughput")
    assert isinstance(server, OnnxRunner) and server is not runner and server.in_flight == 2
    assert server.session.get_session_options().intra_op_num_threads == 1
    assert runner.settings["traffic"] == {"intra_op_num_threads": 1, "requests_in_flight": 2}
    assert runner.notes[-1] == ("traffic: ONNX Runtime, 2 batches in flight, concurrent run calls on one session "
                                "of intra_op_num_threads=1")
    import threading

    class Spy:  # the session, counting the runs in flight (each held a little so they can overlap)
        def __init__(self, sess):
            self.sess, self.now, self.most, self.calls, self.fail_at = sess, 0, 0, 0, None
            self.lock = threading.Lock()

        def run(self, names, feeds):
            with self.lock:
                self.calls += 1
                if self.calls == self.fail_at:
                    raise RuntimeError("run failed (test)")
                self.now += 1
                self.most = max(self.most, self.now)
            try:
                time.sleep(0.02)
                return self.sess.run(names, feeds)
            finally:
                with self.lock:
                    self.now -= 1

    spy = server.session = Spy(server.session)
    preds, ms = server.serve(chunks)
    assert [p.tolist() for p in preds] == [p.tolist() for p in one_at_a_time] and len(ms) == len(chunks)
    assert spy.most == 2 and all(x >= 20 for x in ms)  # two at once, never more; each held 20 ms
    spy.fail_at = spy.calls + 3
    with pytest.raises(RuntimeError, match="run failed"):
        server.serve(chunks)
    assert spy.now == 0  # nothing left running

    class Boom(list):
        def __iter__(self):
            yield from chunks[:3]
            raise RuntimeError("tokenizer failed (test)")

    with pytest.raises(RuntimeError, match="tokenizer failed"):
        server.serve(Boom())
    assert [p.tolist() for p in server.serve(chunks)[0]] == [p.tolist() for p in one_at_a_time]
    # one thread, or CUDA: nothing beside it; the base behaviour and its note
    single = load_onnx_file(onnx / "model.onnx", load_tokenizer(onnx), 128, "cpu", 1)
    assert single.for_traffic("throughput") is single
    assert single.notes[-1] == "traffic: one batch at a time (one thread: no second batch to run beside it)"


def test_bench_throughput_mode_serves_onnxruntime_in_flight(bundles, tmp_path):
    from bertpress.bench import bench

    cfg = BenchConfig(eval_data=str(bundles["data"]), runtimes="onnxruntime", traffic_batch_size=8,
                      traffic_mode="throughput", **{**FAST, "threads": 2, "batch_sizes": (1,), "seq_lens": (8,)})
    res = bench([bundles["onnx"]], cfg, tmp_path / "r", progress=False).results
    ref, onnx = res.variants
    assert onnx.traffic.mode == "throughput" and onnx.settings["traffic"]["requests_in_flight"] == 2
    assert onnx.traffic.batch_latency.iters == 5  # 40 sentences in batches of 8, one timed pass
    assert onnx.agreement == 1.0 and onnx.accuracy == ref.accuracy  # fp32 ONNX: the reference's predictions
    assert "traffic: one batch at a time (this runtime has no throughput mode in bench)" in ref.notes


def test_a_measurement_that_fails_mid_round_is_dropped_and_the_run_goes_on(bundles, tmp_path, monkeypatch):
    """The ONNX variant's headline call fails in round 2 and its traffic in round 1: the bench
    finishes, that variant keeps its sweep figures with notes, the others keep their rounds."""
    from bertpress.bench import run as run_mod
    from bertpress.bench.runtimes import OnnxRunner

    real_time, real_serve = run_mod.time_callable, OnnxRunner.serve
    calls = {"time": 0, "serve": 0}

    def time_fails(fn, **kw):
        calls["time"] += 1
        if calls["time"] == 2 + 2 + 2:  # sweep (2 variants), round 1 (2), round 2: ck ok, then onnx
            raise RuntimeError("device lost (test)")
        return real_time(fn, **kw)

    def serve_fails(self, chunks):
        calls["serve"] += 1
        if calls["serve"] == 4:  # the sweep's cold + steady pass, the rounds' warm-up, round 1
            raise RuntimeError("out of memory (test)")
        return real_serve(self, chunks)

    monkeypatch.setattr(run_mod, "time_callable", time_fails)
    monkeypatch.setattr(OnnxRunner, "serve", serve_fails)
    cfg = BenchConfig(rounds=3, runtimes="pytorch,onnxruntime", eval_data=str(bundles["data"]), traffic_passes=1,
                      **{**FAST, "batch_sizes": (1,), "seq_lens": (8,)})
    rep = run_mod.bench([bundles["ck"], bundles["onnx"]], cfg, tmp_path / "r", progress=False)
    ref, onnx = rep.results.variants
    assert len(ref.rounds["p50_ms"]) == 3 and len(ref.rounds["sentences_per_s"]) == 3
    assert onnx.rounds is None
    assert onnx.p50(1, 8) == onnx.shape(1, 8).p50_ms and onnx.sentences_per_s() == onnx.traffic.sentences_per_s
    assert ("the 1x8 headline failed in interleaved round 2 of 3 (RuntimeError: device lost (test)); not re-timed "
            "in the rounds: its p50 is the sweep's") in onnx.notes
    assert ("real traffic failed in interleaved round 1 of 3 (RuntimeError: out of memory (test)); not re-timed "
            "in the rounds: its sentences/s is the sweep's") in onnx.notes
    # its ratios are the sweep's on both sides
    assert onnx.ratios["p50_speedup"] == pytest.approx(ref.shape(1, 8).p50_ms / onnx.shape(1, 8).p50_ms)
    assert onnx.ratios["throughput"] == pytest.approx(onnx.traffic.sentences_per_s / ref.traffic.sentences_per_s)
    assert "device lost (test)" in (rep.path / "report.md").read_text()


def test_the_reference_failing_mid_round_leaves_the_report_whole(bundles, tmp_path, monkeypatch):
    """The reference's headline fails in round 1 while its traffic goes on: the report renders, the
    reference keeps its sweep p50 (note), and every other variant's speed-up is sweep against sweep."""
    from bertpress.bench import run as run_mod

    real_time, calls = run_mod.time_callable, []

    def first_round_call_fails(fn, **kw):
        calls.append(1)
        if len(calls) == 3:  # the sweep timed 2 variants x 1 shape; then the reference opens round 1
            raise RuntimeError("lost (test)")
        return real_time(fn, **kw)

    monkeypatch.setattr(run_mod, "time_callable", first_round_call_fails)
    cfg = BenchConfig(rounds=2, runtimes="pytorch,onnxruntime", eval_data=str(bundles["data"]), traffic_passes=1,
                      **{**FAST, "batch_sizes": (1,), "seq_lens": (8,)})
    rep = run_mod.bench([bundles["ck"], bundles["onnx"]], cfg, tmp_path / "r", progress=False)
    ref, onnx = rep.results.variants
    assert "p50_ms" not in ref.rounds and len(ref.rounds["sentences_per_s"]) == 2
    assert len(onnx.rounds["p50_ms"]) == 2
    assert any(n.startswith("the 1x8 headline failed in interleaved round 1 of 2 (RuntimeError: lost (test))")
               for n in ref.notes)
    assert onnx.ratios["p50_speedup"] == pytest.approx(ref.shape(1, 8).p50_ms / onnx.shape(1, 8).p50_ms)
    assert onnx.ratios["throughput"] == pytest.approx(onnx.sentences_per_s() / ref.sentences_per_s())
    md = (rep.path / "report.md").read_text()
    assert "## Interleaved rounds (batch 1 × 8" in md and "| `onnx:onnxruntime@cpu` |" in md
