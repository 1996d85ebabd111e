"""export --format openvino (OpenVINO IR, NNCF int8), the parity gate on it, bench's `openvino`
runtime and bertpress.openvino_rt, on tiny random BERTs.

The classifier head is scaled up (as in test_export) so that logits are well separated and int8
argmax agreement means something. The compressed inputs are written by the real compress stage
(dynamic and static recipes, and a pruned one), so "int8 in, int8 out" is checked against what
compress records, not against a hand-written manifest.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino")
pytest.importorskip("nncf")

from bertpress.errors import ArtifactError, ConfigError, DeviceError, ParityError  # noqa: E402
from tests.conftest import run_cli  # noqa: E402

TEXTS = ["a great and lovely film", "the plot was dull and boring", "the acting is superb",
         "awful music , worst ending", "it was quite fun really", "good"]
XML, BIN = "openvino_model.xml", "openvino_model.bin"


def _confident_checkpoint(path: Path) -> Path:
    import torch

    from bertpress.artifact import Manifest, write_manifest
    from bertpress.testing import tiny_bert

    model, tok = tiny_bert(hidden_size=32, intermediate_size=64)
    with torch.no_grad():
        model.classifier.weight.mul_(40.0)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    write_manifest(path, Manifest(kind="checkpoint", labels=["negative", "positive"], max_length=128))
    return path


def _recorded(art_dir: Path):
    """The QuantizationRecord compress wrote into a manifest."""
    from bertpress import records
    from bertpress.records import QuantizationRecord

    details = json.loads((art_dir / "bertpress.json").read_text())["details"]
    return records.read(details, "quantization", QuantizationRecord)


def _torch_logits(src: Path, feed: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    from bertpress.models import load_classifier

    model, _ = load_classifier(src)
    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()


def _feed(src: Path, texts=TEXTS) -> dict[str, np.ndarray]:
    from bertpress.signature import encode
    from bertpress.models import load_tokenizer

    return encode(load_tokenizer(src), texts, 128)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return _confident_checkpoint(tmp_path_factory.mktemp("ov") / "checkpoint")


@pytest.fixture(scope="module")
def fp32_ov(ckpt, tmp_path_factory):
    from bertpress.export import ExportConfig, export

    return export(ckpt, ExportConfig(format="openvino"), tmp_path_factory.mktemp("ovfp32") / "ov")


@pytest.fixture(scope="module")
def compressed(ckpt, tiny_data, tmp_path_factory):
    """What compress writes: a dynamic recipe, a static recipe, and pruned + dynamic."""
    from bertpress.compress import CompressConfig, PruneConfig, QuantizeConfig, compress

    root = tmp_path_factory.mktemp("ovcmp")
    dyn = compress(ckpt, CompressConfig(quantize=QuantizeConfig(scheme="dynamic")), root / "dynamic", progress=False)
    static = compress(ckpt, CompressConfig(quantize=QuantizeConfig(
        scheme="static", calibration_data=str(tiny_data), calibration_samples=40, calibration_method="percentile")),
        root / "static", progress=False)
    pruned = compress(ckpt, CompressConfig(quantize=QuantizeConfig(scheme="dynamic"),
                                           prune=PruneConfig(heads=0.5, ffn=0.5, importance="magnitude", round_to=8)),
                      root / "pruned", progress=False)
    return {"dynamic": dyn.path, "static": static.path, "pruned": pruned.path}


@pytest.fixture(scope="module")
def int8_ov(compressed, tiny_data, tmp_path_factory):
    from bertpress.export import ExportConfig, export

    root = tmp_path_factory.mktemp("ovint8")
    return {k: export(compressed[k], ExportConfig(format="openvino", eval_data=str(tiny_data)), root / k)
            for k in ("dynamic", "static", "pruned")}


def test_static_export_without_progress_draws_no_nncf_bar(compressed, tmp_path, capfd):
    from bertpress.export import ExportConfig, export

    capfd.readouterr()
    art = export(compressed["static"], ExportConfig(format="openvino"), tmp_path / "ov", progress=False)
    out, err = capfd.readouterr()
    assert art.manifest.details["model"]["quantization"]["tool"] == "nncf.quantize"
    assert "Statistics collection" not in out + err and "\u2501" not in out + err, (out + err)[-300:]


def _float_layers(precisions: dict[str, int]) -> int:
    """FullyConnected layers that ran in a float precision (f32, bf16 or f16), not int8."""
    return sum(n for p, n in precisions.items() if p not in ("u8", "i8"))


# ---- fp32 ----------------------------------------------------------------------------------


def test_fp32_ir_layout_manifest_and_parity(fp32_ov, ckpt):
    from bertpress import openvino_rt

    art = fp32_ov
    names = {p.name for p in art.path.iterdir()}
    assert {XML, BIN, "config.json", "tokenizer.json", "tokenizer_config.json", "bertpress.json"} <= names
    assert "predict.py" not in names
    m = art.manifest
    assert m.kind == "openvino" and m.details["format"] == "openvino" and m.details["precision"] == "fp32"
    d = m.details["model"]
    assert d["converter"].startswith("openvino.convert_model") and d["weights_dtype"] == "f32"
    assert d["input_names"] == ["input_ids", "attention_mask", "token_type_ids"] and d["output_names"] == ["logits"]
    # attention converted as one op per layer (why the PyTorch route is used, export/openvino.py)
    assert d["op_counts"].get("ScaledDotProductAttention") == 2
    report = m.metrics["parity"][XML]
    assert report["passed"] and report["max_abs_diff"] < 1e-4 and report["precision"] == "fp32"
    assert tuple(report["grid"]["trace_shape"]) not in {(c["batch"], c["seq"]) for c in report["grid"]["cases"]}
    # the precision recorded is the one OpenVINO reports for this CPU, not an assumption
    here = openvino_rt.session(art.path / XML, threads=1)
    rt = d["runtime"]
    assert d["inference_precision"] == rt["inference_precision"] == here.precision
    assert rt["performance_hint"] == "LATENCY" and rt["num_streams"] == 1 and rt["precision_asked"] == "default"
    assert rt["openvino"][:4].isdigit() and rt["cpu"]
    assert sum(rt["runtime_precisions"].values()) == 14  # 12 encoder Linear + pooler + classifier
    # one tensor name per input (the converter's internal "61" alias of attention_mask is gone)
    assert here.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert m.metrics["size_bytes"][BIN] == (art.path / BIN).stat().st_size
    assert m.lineage["parent"] == str(ckpt)


def test_fp32_ir_reloads_with_plain_openvino_in_a_fresh_process(fp32_ov, int8_ov, ckpt, tmp_path):
    """openvino.Core().read_model alone (no bertpress, no torch) reproduces the torch logits."""
    feed = _feed(ckpt, TEXTS + TEXTS[:1])  # batch 7, a length the trace never saw
    np.savez(tmp_path / "feed.npz", **feed)
    script = textwrap.dedent("""
        import sys, numpy as np, openvino as ov
        core = ov.Core()
        feed = dict(np.load(sys.argv[2]))
        out = {}
        for key, xml in zip(sys.argv[3::2], sys.argv[4::2]):
            compiled = core.compile_model(core.read_model(xml), "CPU")
            out[key] = compiled(feed)["logits"]
        np.savez(sys.argv[1], **out)
        assert "torch" not in sys.modules and "bertpress" not in sys.modules, sorted(sys.modules)
    """)
    res = tmp_path / "out.npz"
    proc = subprocess.run([sys.executable, "-c", script, str(res), str(tmp_path / "feed.npz"),
                           "fp32", str(fp32_ov.path / XML), "static", str(int8_ov["static"].path / XML)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = np.load(res)
    want = _torch_logits(ckpt, feed)
    assert got["fp32"].shape == (7, 2)
    tol = 1e-4 if fp32_ov.manifest.details["model"]["inference_precision"] == "f32" else 0.25
    np.testing.assert_allclose(got["fp32"], want, atol=tol)
    assert (got["static"].argmax(-1) == want.argmax(-1)).mean() >= 6 / 7


def test_optimum_intel_loads_the_directory(fp32_ov, int8_ov, ckpt, tmp_path):
    """Optimum-Intel's layout: openvino_model.xml/.bin + config.json + tokenizer. Optimum-Intel
    lives in its own environment (.venv-intel, `make anchors`): the check runs there, in a fresh
    process without bertpress; skipped where that environment is not built."""
    from bertpress.bench.anchors import find_env

    try:
        python = find_env("optimum-intel")
    except DeviceError as exc:
        pytest.skip(str(exc))
    script = textwrap.dedent("""
        import sys, numpy as np
        from optimum.intel import OVModelForSequenceClassification
        from transformers import AutoTokenizer
        texts = sys.argv[2:]
        out = {}
        for key, d in (("fp32", sys.argv[1].split(",")[0]), ("static", sys.argv[1].split(",")[1])):
            model = OVModelForSequenceClassification.from_pretrained(d)
            tok = AutoTokenizer.from_pretrained(d)
            out[key] = np.asarray(model(**tok(texts, padding=True, return_tensors="np")).logits)
            assert model.config.id2label[1] == "positive", model.config.id2label
        np.savez(sys.stdout.buffer, **out)
    """)
    proc = subprocess.run([str(python), "-E", "-s", "-c", script,
                           f"{fp32_ov.path},{int8_ov['static'].path}", *TEXTS],
                          capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    import io

    got = np.load(io.BytesIO(proc.stdout))
    want = _torch_logits(ckpt, _feed(ckpt))
    np.testing.assert_allclose(got["fp32"], want, atol=1e-4 if fp32_ov.manifest.details["model"]["inference_precision"]
                               == "f32" else 0.25)
    assert (got["static"].argmax(-1) == want.argmax(-1)).mean() >= 5 / 6


# ---- int8 from the compress recipe ---------------------------------------------------------


def test_dynamic_recipe_becomes_nncf_int8_weights(int8_ov, compressed):
    art = int8_ov["dynamic"]
    m = art.manifest
    recorded = _recorded(compressed["dynamic"])
    assert m.details["precision"] == "int8"
    q = m.details["quantization"]
    assert q["origin"] == "manifest" and q["applied"] == "dynamic" and "weight compression" in q["note"]
    mq = m.details["model"]["quantization"]
    assert mq["tool"] == "nncf.compress_weights" and mq["mode"] == "INT8_SYM"
    assert mq["quantized_linear"] == len(recorded.layers) == 12 and mq["int8_constants"] == 12
    # scope encoder: pooler and classifier stay fp32, like compress's torch model
    assert sorted(n.split("/")[0] for n in mq["fp32_linear"]) == ["__module.inner.bert.pooler.dense",
                                                                  "__module.inner.classifier"]
    assert "FakeQuantize" not in m.details["model"]["op_counts"]
    report = m.metrics["parity"][XML]
    assert report["passed"] and report["precision"] == "int8" and report["agreement"]["on"] == "eval texts"
    assert report["agreement"]["value"] >= 0.97
    # the two fp32 layers run in the CPU's float precision: f32, or bf16 where bf16 is native
    assert _float_layers(m.details["model"]["runtime"]["runtime_precisions"]) >= 2


def test_static_recipe_is_calibrated_with_the_recorded_texts(int8_ov, compressed):
    art = int8_ov["static"]
    m = art.manifest
    recorded = _recorded(compressed["static"])
    q = m.details["quantization"]
    assert q["applied"] == "static"
    assert q["calibration"] == {"method": "percentile", "data": recorded.calibration.data, "samples": 40}
    mq = m.details["model"]["quantization"]
    assert mq["tool"] == "nncf.quantize" and mq["model_type"] == "TRANSFORMER"
    assert mq["calibration_rows"] == 40 and mq["range_estimator"].startswith("MEAN_QUANTILE")
    assert mq["quantized_linear"] == 12 and mq["fake_quantize"] >= 12
    assert m.details["model"]["op_counts"]["FakeQuantize"] == mq["fake_quantize"]
    # the int8 kernels actually ran: every quantized Linear is an 8-bit FullyConnected at run time
    precisions = m.details["model"]["runtime"]["runtime_precisions"]
    assert precisions.get("u8", 0) + precisions.get("i8", 0) == 12 and _float_layers(precisions) == 2, precisions
    report = m.metrics["parity"][XML]
    assert report["passed"] and report["agreement"]["value"] >= 0.97
    assert m.metrics["accuracy"][XML] == pytest.approx(m.metrics["accuracy"]["source"], abs=0.07)


def test_pruned_shapes_carry_over(int8_ov, compressed):
    import openvino as ov

    cfg = json.loads((compressed["pruned"] / "config.json").read_text())
    ffn = cfg["intermediate_size"]
    assert ffn < 64
    model = ov.Core().read_model(str(int8_ov["pruned"].path / XML))
    shapes = {tuple(op.get_output_shape(0)) for op in model.get_ops()
              if op.get_type_name() == "Constant" and "intermediate.dense" in op.get_friendly_name()}
    assert any(ffn in s and 32 in s for s in shapes), shapes
    report = int8_ov["pruned"].manifest.metrics["parity"][XML]
    assert report["passed"] and report["agreement"]["value"] >= 0.97


def test_refusals_before_any_work(ckpt, tmp_path, monkeypatch):
    from bertpress.export import ExportConfig, export

    with pytest.raises(ConfigError, match="--calibration-data"):
        export(ckpt, ExportConfig(format="openvino", quantize="static"), tmp_path / "out")
    monkeypatch.setitem(sys.modules, "nncf", None)  # as if it were not installed
    with pytest.raises(DeviceError, match="--format openvino needs the openvino and nncf packages.*--format onnx"):
        export(ckpt, ExportConfig(format="all"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---- the gate ------------------------------------------------------------------------------


def test_parity_miss_publishes_nothing(ckpt, tmp_path):
    from bertpress.export import ExportConfig, export

    with pytest.raises(ParityError, match=r"the openvino export \(openvino_model.xml\) does not match"):
        export(ckpt, ExportConfig(format="openvino", fp32_atol=1e-15), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    art = export(ckpt, ExportConfig(format="openvino", fp32_atol=1e-15, allow_mismatch=True), tmp_path / "kept")
    assert art.manifest.metrics["parity_passed"] is False


def test_a_lower_default_precision_is_gated_too(ckpt, tmp_path, monkeypatch):
    """Where OpenVINO's default is bf16 (AMX CPUs), the IR is gated strictly at f32 *and* as it
    runs by default, with the reduced-precision tolerances. This CPU's default is what OpenVINO
    reports, so the default compile is made to report bf16 here."""
    from bertpress import openvino_rt
    from bertpress.export import ExportConfig, export

    real = openvino_rt.session
    calls = []

    def as_if_amx(xml, *, threads, precision=None, device="CPU"):
        sess = real(xml, threads=threads, precision=precision, device=device)
        calls.append(precision)
        if precision is None:
            sess.precision = "bf16"
        return sess

    monkeypatch.setattr(openvino_rt, "session", as_if_amx)
    art = export(ckpt, ExportConfig(format="openvino"), tmp_path / "out")
    parity = art.manifest.metrics["parity"]
    assert sorted(parity) == [XML, f"{XML}@bf16"] and calls == [None, "f32"]
    assert parity[XML]["precision"] == "fp32" and parity[XML]["atol"] == 1e-4
    assert parity[f"{XML}@bf16"]["precision"] == "bf16" and parity[f"{XML}@bf16"]["atol"] == 1.0
    assert parity[f"{XML}@bf16"]["agreement"]["min"] == 0.97
    assert art.manifest.details["model"]["inference_precision"] == "bf16"


# ---- bertpress.openvino_rt: what ran ---------------------------------------------------------


def test_runtime_precisions_tell_int8_from_float(fp32_ov, int8_ov):
    from bertpress import openvino_rt

    fp32 = openvino_rt.session(fp32_ov.path / XML, threads=1, precision="f32")
    dyn = openvino_rt.session(int8_ov["dynamic"].path / XML, threads=1)
    static = openvino_rt.session(int8_ov["static"].path / XML, threads=1)
    assert openvino_rt.runtime_precisions(fp32.compiled) == {"f32": 14}
    assert not openvino_rt.ran_int8(fp32)
    # weight compression has no FakeQuantize, yet its weights are int8: ran_int8 sees it
    assert not dyn.quantized and openvino_rt.ran_int8(dyn)
    assert static.quantized and openvino_rt.ran_int8(static)
    info = openvino_rt.describe(static)
    assert info["precision_asked"] == "default" and sum(info["runtime_precisions"].values()) == 14


# ---- bench ---------------------------------------------------------------------------------


def test_bench_runs_openvino_and_records_its_settings(ckpt, fp32_ov, int8_ov, tiny_data, tmp_path):
    from bertpress.bench import BenchConfig, bench

    cfg = BenchConfig(eval_data=str(tiny_data), batch_sizes=(2,), seq_lens=(16,), threads=1, warmup=1,
                      min_iters=3, min_seconds=0.0, traffic_passes=1)
    rep = bench([ckpt, fp32_ov.path, int8_ov["static"].path], cfg, tmp_path / "r", progress=False)
    by_id = {v.id: v for v in rep.results.variants}
    fp32, st = by_id["ov:openvino@cpu"], by_id["static:openvino@cpu"]
    assert fp32.runtime == "openvino" and fp32.kind == "openvino"
    assert fp32.precision == {"f32": "fp32", "bf16": "bf16"}[fp32.settings["inference_precision"]]
    assert st.precision.startswith("int8")
    for v in (fp32, st):
        assert v.settings["performance_hint"] == "LATENCY" and v.settings["num_streams"] == 1
        assert v.settings["threads"] == 1 and v.settings["inference_precision"] in ("f32", "bf16")
        assert any("PERFORMANCE_HINT=LATENCY" in n and "INFERENCE_NUM_THREADS=1" in n for n in v.notes)
        assert v.shape(2, 16).p50_ms > 0 and v.size_bytes > 0
    assert fp32.agreement == 1.0 and st.agreement >= 0.9
    saved = json.loads((tmp_path / "r" / "results.json").read_text())
    row = next(v for v in saved["variants"] if v["id"] == "ov:openvino@cpu")
    assert row["settings"]["inference_precision"] == fp32.settings["inference_precision"]
    assert row["traffic"]["mode"] == "latency" and "traffic" not in row["settings"]


def test_bench_throughput_traffic_mode(ckpt, int8_ov, tiny_data, tmp_path):
    """--traffic-mode throughput: the OpenVINO variant serves the traffic with the THROUGHPUT hint
    and several batches in flight (recorded), with the same predictions as latency mode; the
    PyTorch reference serves one batch at a time and its note says so."""
    from bertpress.bench import BenchConfig, bench

    runs = {}
    for mode in ("latency", "throughput"):
        cfg = BenchConfig(eval_data=str(tiny_data), batch_sizes=(1,), seq_lens=(16,), threads=2, warmup=1,
                          min_iters=2, min_seconds=0.0, traffic_batch_size=4, traffic_mode=mode, rounds=2)
        runs[mode] = bench([ckpt, int8_ov["static"].path], cfg, tmp_path / mode, progress=False).results
    lat, thr = ({v.runtime: v for v in runs[m].variants} for m in ("latency", "throughput"))
    ov_thr = thr["openvino"]
    assert ov_thr.traffic.mode == "throughput" and lat["openvino"].traffic.mode == "latency"
    t = ov_thr.settings["traffic"]
    assert t["performance_hint"] == "THROUGHPUT" and t["threads"] == 2 and t["requests_in_flight"] == 2  # run_stream
    assert ov_thr.settings["performance_hint"] == "LATENCY"  # the sweep is timed as before
    assert any(n.startswith("traffic: OpenVINO PERFORMANCE_HINT=THROUGHPUT") for n in ov_thr.notes)
    assert ov_thr.traffic.batch_latency.iters == ov_thr.traffic.sentences // 4 + (ov_thr.traffic.sentences % 4 > 0)
    assert ov_thr.accuracy == lat["openvino"].accuracy and ov_thr.agreement == lat["openvino"].agreement
    # the interleaved rounds serve the traffic the same way: the THROUGHPUT server, one pass a round
    assert len(ov_thr.rounds["sentences_per_s"]) == 2 and ov_thr.sentences_per_s() > 0
    assert "traffic: one batch at a time (this runtime has no throughput mode in bench)" in thr["pytorch"].notes
    report = (tmp_path / "throughput" / "report.md").read_text()
    assert "throughput mode)" in report and "Served in throughput mode" in report
    saved = json.loads((tmp_path / "throughput" / "results.json").read_text())
    assert {v["traffic"]["mode"] for v in saved["variants"]} == {"throughput"}


def test_bench_refuses_openvino_off_the_cpu_and_broken_irs(fp32_ov, tmp_path):
    import shutil

    from bertpress.bench.runtimes import load_runner, preflight
    from bertpress.bench.config import Runtime
    from bertpress.bench.sources import resolve_source

    src = resolve_source(str(fp32_ov.path))
    with pytest.raises(DeviceError, match="OpenVINO runs on its CPU plugin here.*--device cpu"):
        preflight(src, "cuda")
    broken = tmp_path / "broken"
    shutil.copytree(fp32_ov.path, broken)
    (broken / BIN).unlink()
    with pytest.raises(ArtifactError, match="no openvino_model.xml with its .bin"):
        preflight(resolve_source(str(broken)), "cpu")
    (broken / BIN).write_bytes(b"")
    (broken / XML).write_text("<net><layers><layer id='0' type='Nope'/></layers></net>")
    with pytest.raises(ArtifactError, match="OpenVINO cannot read or compile it"):
        load_runner(resolve_source(str(broken)), Runtime.OPENVINO, "cpu", 1)


# ---- CLI -----------------------------------------------------------------------------------


def test_cli_openvino_json_stays_clean(compressed, tmp_path):
    """NNCF draws progress bars: they must not land in --json's stdout."""
    proc = run_cli("export", str(compressed["static"]), "--format", "openvino", "--out", str(tmp_path / "ov"), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["kind"] == "openvino" and data["quantization"] == "static"
    assert data["parity"][XML]["passed"] and data["inference_precision"] in ("f32", "bf16")
    bad = run_cli("export", str(compressed["static"]), "--format", "openvino", "--out", str(tmp_path / "ov"))
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--overwrite" in bad.stderr
