"""The anchor baselines (optimum, optimum-intel) built in their own environments and timed by bench.

The real-environment tests need `.venv-optimum` / `.venv-intel` (`make anchors`; `make test`
builds them): the `anchor_python` fixture (conftest.py) skips without one and says so — except
under CI (CI=true), where a missing anchor environment is a failure, because CI builds them. The refusal and discovery tests need
no anchor environment at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest

from bertpress.bench.config import Baseline, BenchConfig
from bertpress.errors import ArtifactError, ConfigError, DeviceError

torch = pytest.importorskip("torch")

FAST = dict(batch_sizes=(1, 2), seq_lens=(8,), threads=1, warmup=1, min_iters=3, min_seconds=0.0)
TEXTS = ["the film was great", "awful and boring plot of the movie", "fine", "a b c d e f g h i j k"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from bertpress.testing import save_tiny_checkpoint, write_tiny_dataset

    root = tmp_path_factory.mktemp("anchors")
    ck = save_tiny_checkpoint(root / "ck")
    data = write_tiny_dataset(root / "data", n_train=24, n_dev=40)
    return {"root": root, "ck": ck, "data": data}


def _torch_logits(ck: Path, enc: dict[str, np.ndarray]) -> np.ndarray:
    from bertpress.models import load_classifier

    model, _ = load_classifier(ck)
    with torch.inference_mode():
        return model(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits.numpy()


def _sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref ** 2) / max(np.sum((ref - got) ** 2), 1e-30)))


@pytest.fixture()
def bare_venv(tmp_path) -> Path:
    """A real venv with nothing in it (no torch): what an interrupted `make anchors` leaves."""
    env = tmp_path / "bare-env"
    venv.EnvBuilder(with_pip=False).create(env)
    return env


# ---- the real anchors, through their environments -------------------------------------------


@pytest.fixture(scope="module")
def built(tiny, anchor_python):
    """Both anchors built once, by their environments, from the tiny checkpoint."""
    from bertpress.bench.baselines import build_anchor
    from bertpress.bench.sources import resolve_source

    anchor_python("optimum")
    anchor_python("optimum-intel")
    src = resolve_source(str(tiny["ck"]))
    work = tiny["root"] / "work"
    work.mkdir()
    return src, {b: build_anchor(b, src, work, 1, eval_data=str(tiny["data"]), eval_split="dev", seed=0)
                 for b in (Baseline.OPTIMUM, Baseline.OPTIMUM_INTEL)}


def test_optimum_anchor_is_optimums_export_of_our_checkpoint(built, tiny):
    """Built in .venv-optimum by optimum-onnx itself; its fp32 export computes our model
    (parity with PyTorch), its int8 file runs in bench's own ONNX Runtime session."""
    from bertpress.bench.baselines import load_anchor
    from bertpress.bench.runtimes import load_onnx_file
    from bertpress.ort import op_counts as onnx_op_counts

    src, records = built
    rec = records[Baseline.OPTIMUM]
    assert Path(rec["python"]).parent.parent.name == ".venv-optimum" or os.environ.get("BERTPRESS_OPTIMUM_ENV")
    assert rec["versions"]["optimum-onnx"] == "0.1.0" and rec["versions"]["optimum"].startswith("2.1")
    assert rec["preset"] in ("avx512_vnni", "avx512", "avx2", "arm64") and rec["quantization"]["is_static"] == "False"
    assert "MatMulInteger" in onnx_op_counts(rec["model_path"]) or "DynamicQuantizeLinear" in onnx_op_counts(rec["model_path"])
    runner = load_anchor(Baseline.OPTIMUM, src, rec, "cpu", 1)
    enc = runner.tokenize(TEXTS)
    ref = _torch_logits(tiny["ck"], enc)
    fp32 = load_onnx_file(Path(rec["model_path"]).parent.parent / "fp32" / "model.onnx", runner.tokenizer, 128, "cpu", 1)
    np.testing.assert_allclose(fp32.logits(fp32.run(fp32.prepare(enc))), ref, atol=1e-5)
    int8 = runner.logits(runner.run(runner.prepare(enc)))
    assert runner.precision == "int8" and int8.shape == ref.shape and _sqnr_db(ref, int8) > 10
    opts = runner.session.get_session_options()  # the same settings as our ONNX variants
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
    assert any(f"AutoQuantizationConfig.{rec['preset']}" in n for n in runner.notes)


def test_optimum_intel_anchor_is_nncf_int8_timed_with_our_openvino_settings(built, tiny):
    from bertpress.bench.baselines import load_anchor

    src, records = built
    rec = records[Baseline.OPTIMUM_INTEL]
    assert rec["versions"]["optimum-intel"] == "2.2.0" and "nncf" in rec["versions"]
    assert rec["quantization"]["model_type"] == "transformer" and rec["quantization"]["sym"] is False
    assert rec["calibration_samples"] == 24 and "train split" in rec["calibration"]  # all 24 train sentences
    runner = load_anchor(Baseline.OPTIMUM_INTEL, src, rec, "cpu", 1)
    assert runner.precision == "int8" and runner.session.quantized
    assert runner.session.record() | {"inference_precision": None} == {
        "device": "CPU", "threads": 1, "performance_hint": "LATENCY", "num_streams": 1,
        "precision_asked": "default", "inference_precision": None}
    assert any("INFERENCE_PRECISION_HINT=" in n for n in runner.notes)
    # recorded as for our IRs: what OpenVINO applied, and the precision its int8 layers ran in
    assert runner.settings["performance_hint"] == "LATENCY" and runner.settings["threads"] == 1
    assert "i8" in runner.settings["runtime_precisions"] or "u8" in runner.settings["runtime_precisions"]
    enc = runner.tokenize(TEXTS)
    ref = _torch_logits(tiny["ck"], enc)
    assert _sqnr_db(ref, runner.logits(runner.run(runner.prepare(enc)))) > 10
    assert runner.size_bytes == sum(p.stat().st_size for p in Path(rec["model_path"]).parent.glob("openvino_model.*"))


def test_bench_runs_both_anchors_in_one_report(tiny, tmp_path, anchor_python):
    """The whole path: preflight, one build per anchor before timing, sweep + interleaved
    rounds on the same files, accuracy/agreement, the report tables."""
    from bertpress.bench import bench

    anchor_python("optimum")
    anchor_python("optimum-intel")
    cfg = BenchConfig(eval_data=str(tiny["data"]), baselines="optimum,optimum-intel", runtimes="pytorch",
                      rounds=2, traffic_mode="throughput", **{**FAST, "threads": 2})
    rep = bench([tiny["ck"]], cfg, tmp_path / "r", progress=False)
    res = rep.results
    assert [v.id for v in res.variants] == ["ck:pytorch@cpu", "optimum@cpu", "optimum-intel@cpu"] and not res.refused
    for v in res.variants[1:]:
        assert v.role == "baseline" and v.precision == "int8" and v.accuracy is not None and v.agreement is not None
        assert len(v.rounds["p50_ms"]) == 2 and v.traffic.sentences == 40 and v.size_bytes > 0
        assert len(v.rounds["sentences_per_s"]) == 2  # the anchors serve the traffic in the rounds too
        assert any(n.startswith("built in ") for n in v.notes)
    assert res.variant("optimum-intel@cpu").runtime == "optimum-intel"
    # throughput traffic: both anchors keep 2 batches in flight, as our ONNX and OpenVINO variants do
    assert res.variant("optimum@cpu").settings["traffic"] == {"intra_op_num_threads": 1, "requests_in_flight": 2}
    assert res.variant("optimum-intel@cpu").settings["traffic"]["performance_hint"] == "THROUGHPUT"
    md = (rep.path / "report.md").read_text()
    assert "`optimum@cpu`" in md and "`optimum-intel@cpu`" in md


# ---- refusals: an absent or incomplete environment --------------------------------------------


def test_absent_environment_is_a_one_line_refusal_naming_make_anchors(tiny, tmp_path, monkeypatch, capsys):
    from bertpress.bench import anchors
    from bertpress.app.cli import main

    monkeypatch.delenv("BERTPRESS_OPTIMUM_ENV", raising=False)
    monkeypatch.setattr(anchors, "candidates", lambda anchor: [tmp_path / "nowhere" / anchor.venv])
    with pytest.raises(DeviceError) as exc:
        anchors.find_env("optimum")
    msg = str(exc.value)
    assert msg.startswith("baseline optimum needs .venv-optimum") and "`make anchors`" in msg and "\n" not in msg
    code = main(["bench", str(tiny["ck"]), "--baselines", "optimum", "--runtimes", "pytorch", "--batch-sizes", "1",
                 "--seq-lens", "8", "--threads", "1", "--warmup", "0", "--min-iters", "1", "--min-seconds", "0",
                 "--no-progress", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 0  # the other variants still ran; the refusal is in the report and on stderr
    assert err == [f"refused: ck optimum on cpu: {msg}"]
    data = json.loads((tmp_path / "r" / "results.json").read_text())
    assert [v["id"] for v in data["variants"]] == ["ck:pytorch@cpu"]
    assert data["refused"] == [{"name": "ck", "runtime": "optimum", "device": "cpu", "reason": msg}]


def test_environment_variable_pointing_nowhere_names_the_variable(monkeypatch, tmp_path):
    from bertpress.bench.anchors import find_env

    monkeypatch.setenv("BERTPRESS_OPTIMUM_INTEL_ENV", str(tmp_path / "gone"))
    with pytest.raises(DeviceError, match=r"\$BERTPRESS_OPTIMUM_INTEL_ENV=.*gone has no bin/python.*make anchors"):
        find_env("optimum-intel")


def test_incomplete_environment_is_a_refusal(tiny, tmp_path, monkeypatch, bare_venv):
    """A venv without the anchor's packages: the script says so (exit 3) and bench refuses the
    baseline, naming the make target; the run goes on."""
    from bertpress.bench import bench

    monkeypatch.setenv("BERTPRESS_OPTIMUM_ENV", str(bare_venv))
    cfg = BenchConfig(baselines="optimum", runtimes="pytorch", **{**FAST, "batch_sizes": (1,)})
    res = bench([tiny["ck"]], cfg, tmp_path / "r", progress=False).results
    assert [v.id for v in res.variants] == ["ck:pytorch@cpu"]
    (r,) = res.refused
    assert r.runtime == "optimum" and "is incomplete" in r.reason and "torch" in r.reason
    assert "`make anchors`" in r.reason and "\n" not in r.reason


def test_a_failing_anchor_build_is_an_error_with_its_last_line(tmp_path, monkeypatch, bare_venv):
    from bertpress.bench import anchors

    monkeypatch.setenv("BERTPRESS_OPTIMUM_ENV", str(bare_venv))
    (tmp_path / "notamodel").mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # where the kept log goes
    with pytest.raises(ArtifactError, match=r"anchor build failed .*not a Hugging Face model directory.*full output "
                                            r"in (\S+bertpress-optimum-\S+\.log)") as exc:
        anchors.build("optimum", ["--model", str(tmp_path / "notamodel"), "--preset", "avx2"], tmp_path / "out",
                      threads=1)
    log = Path(exc.value.args[0].split("full output in ")[1].split(")")[0])
    assert log.parent == tmp_path and "optimum_onnx.py" in log.read_text() and "\n" not in str(exc.value)


def test_optimum_intel_needs_eval_data_and_cpu(tiny, monkeypatch, bare_venv):
    from bertpress.bench.baselines import preflight_anchor
    from bertpress.bench.sources import resolve_source

    monkeypatch.setenv("BERTPRESS_OPTIMUM_INTEL_ENV", str(bare_venv))
    src = resolve_source(str(tiny["ck"]))
    with pytest.raises(DeviceError, match="--eval-data"):
        preflight_anchor(Baseline.OPTIMUM_INTEL, src, "cpu", None)
    with pytest.raises(DeviceError, match="cpu only"):
        preflight_anchor(Baseline.OPTIMUM_INTEL, src, "cuda", str(tiny["data"]))
    preflight_anchor(Baseline.OPTIMUM_INTEL, src, "cpu", str(tiny["data"]))  # passes


# ---- where the environments are looked for ---------------------------------------------------


def test_environment_discovery_order(monkeypatch, tmp_path):
    import bertpress
    from bertpress.bench.anchors import ANCHORS, candidates

    anchor = ANCHORS["optimum"]
    monkeypatch.setenv("BERTPRESS_OPTIMUM_ENV", str(tmp_path / "mine"))
    assert candidates(anchor) == [tmp_path / "mine"]  # the variable alone, when set
    monkeypatch.delenv("BERTPRESS_OPTIMUM_ENV")
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "proj" / ".venv"))
    monkeypatch.setattr(sys, "base_prefix", "/usr")
    got = candidates(anchor)
    assert got[0] == tmp_path / "proj" / ".venv-optimum"  # beside the venv bertpress runs in
    repo = Path(bertpress.__file__).resolve().parents[1]
    assert got[1:] == ([repo / ".venv-optimum"] if (repo / "pyproject.toml").is_file() else [])


def test_calibration_texts_prefer_the_train_split(tiny, tmp_path):
    from bertpress.bench.baselines import calibration_texts
    from bertpress.data import load_text_classification

    texts, where = calibration_texts(str(tiny["data"]), "dev", 0)
    assert sorted(texts) == sorted(load_text_classification(tiny["data"], "train").texts) and "train split" in where
    single = tiny["data"] / "dev.tsv"  # a file: it is the only split there is
    texts, where = calibration_texts(str(single), "dev", 0)
    assert len(texts) == 40 and str(single) in where


def test_anchor_scripts_import_no_bertpress():
    """They run where bertpress is not installed: only the stdlib, their library and _common."""
    import ast

    from bertpress.bench.anchors import HERE

    for script in ("optimum_onnx.py", "optimum_intel.py", "_common.py"):
        tree = ast.parse((HERE / script).read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not any(n.split(".")[0] == "bertpress" for n in names), script


# ---- bertpress.openvino_rt (the OpenVINO session policy), on a model converted here ------------


@pytest.fixture(scope="module")
def tiny_ir(tiny):
    """The tiny checkpoint as ONNX (legacy exporter) and as OpenVINO IR (openvino.convert_model)."""
    import warnings

    import openvino as ov

    from bertpress.models import load_classifier

    model, _ = load_classifier(tiny["ck"])
    model.config.return_dict = False
    names = ["input_ids", "attention_mask", "token_type_ids"]
    ids = torch.randint(5, 60, (2, 16))
    onnx_file = tiny["root"] / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(onnx_file), input_names=names,
                          output_names=["logits"], dynamic_axes={**{n: {0: "b", 1: "s"} for n in names}, "logits": {0: "b"}},
                          dynamo=False, opset_version=17)
    xml = tiny["root"] / "ir" / "model.xml"
    xml.parent.mkdir()
    ov.save_model(ov.convert_model(str(onnx_file)), str(xml), compress_to_fp16=False)
    return xml


def test_openvino_session_matches_pytorch_and_records_its_settings(tiny, tiny_ir):
    from bertpress.bench.runtimes import load_openvino_file
    from bertpress.models import load_tokenizer
    from bertpress.openvino_rt import session

    s = session(tiny_ir, threads=1, precision="f32")
    assert s.input_names == ["input_ids", "attention_mask", "token_type_ids"] and s.output_name == "logits"
    assert s.record() == {"device": "CPU", "threads": 1, "performance_hint": "LATENCY", "num_streams": 1,
                          "precision_asked": "f32", "inference_precision": "f32"}
    assert not s.quantized and s.op_counts.get("MatMul", 0) > 0
    runner = load_openvino_file(tiny_ir, load_tokenizer(tiny["ck"]), 128, "cpu", 1, precision="f32")
    enc = runner.tokenize(TEXTS)
    np.testing.assert_allclose(runner.logits(runner.run(runner.prepare(enc))), _torch_logits(tiny["ck"], enc),
                               atol=1e-5)
    assert runner.precision == "fp32" and "INFERENCE_PRECISION_HINT=f32 (asked)" in runner.notes[0]
    default = session(tiny_ir, threads=1)  # the device default: bf16 where the CPU has AMX-bf16, else f32
    assert default.record()["precision_asked"] == "default" and default.precision in ("f32", "bf16", "f16")


def test_openvino_throughput_session_streams_batches_in_order(tiny, tiny_ir):
    """hint="throughput": OpenVINO picks the streams, run_stream keeps its requests in flight and
    returns each feed's logits in order, equal to one-at-a-time `run`, and closes cleanly."""
    from bertpress.bench.runtimes import load_openvino_file
    from bertpress.models import load_tokenizer
    from bertpress.openvino_rt import session

    tok = load_tokenizer(tiny["ck"])
    runner = load_openvino_file(tiny_ir, tok, 128, "cpu", 2, precision="f32")
    feeds = [runner.prepare(runner.tokenize(TEXTS[:n])) for n in (1, 3, 2, 3, 1, 2, 3)]  # shapes vary
    want = [runner.session.run(f) for f in feeds]
    s = session(tiny_ir, threads=2, precision="f32", hint="throughput")
    rec = s.record()
    # two threads: OpenVINO makes 2 streams of 1 and wants 2 requests, so run_stream overlaps them
    assert rec["performance_hint"] == "THROUGHPUT" and rec["threads"] == 2 and s.requests == rec["num_streams"] == 2
    built = []

    def stream():  # built lazily, as bench tokenizes the next batch while earlier ones run
        for f in feeds:
            built.append(len(built))
            yield f

    for _ in range(2):  # the requests are reused across calls
        built.clear()
        got, ms = s.run_stream(stream())
        assert built == list(range(len(feeds))) and len(got) == len(ms) == len(feeds)
        assert all(m > 0 for m in ms)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, atol=1e-5)
    assert s.run_stream(iter(())) == ([], [])

    def broken():  # building a feed fails mid-stream: nothing is left running, the next stream works
        yield feeds[0]
        yield feeds[1]
        raise ValueError("tokenizer failed")

    with pytest.raises(ValueError, match="tokenizer failed"):
        s.run_stream(broken())
    got, _ = s.run_stream(iter(feeds))
    np.testing.assert_allclose(got[-1], want[-1], atol=1e-5)
    s.close()
    assert session(tiny_ir, threads=1).requests == 1  # the latency hint: one request


def test_openvino_bad_file_and_settings(tmp_path, tiny_ir):
    from bertpress.bench.runtimes import load_openvino_file
    from bertpress.openvino_rt import OVSettings, session

    bad = tmp_path / "bad.xml"
    bad.write_text("<net><layers>")
    with pytest.raises(ArtifactError, match=r"bad\.xml: OpenVINO cannot read or compile it .*export it again") as exc:
        session(bad, threads=1)
    assert "\n" not in str(exc.value) and "Exception from" not in str(exc.value)  # the parser's reason, quoted
    lone = tmp_path / "lone" / "model.xml"  # the IR without its weights
    lone.parent.mkdir()
    lone.write_bytes(tiny_ir.read_bytes())
    with pytest.raises(ArtifactError, match=r"model\.xml: OpenVINO cannot read .*bin file"):
        session(lone, threads=1)
    with pytest.raises(ArtifactError, match="no such OpenVINO IR file"):
        session(tmp_path / "missing.xml", threads=1)
    with pytest.raises(ConfigError, match="f32, bf16, f16"):
        OVSettings(threads=1, precision="int4")
    with pytest.raises(ConfigError, match="positive integer"):
        OVSettings(threads=0)
    with pytest.raises(ConfigError, match=r"^hint='fast' is not a performance hint; choose one of latency, throughput$"):
        OVSettings(threads=1, hint="fast")
    with pytest.raises(DeviceError, match="--device cpu"):
        load_openvino_file(tiny_ir, None, 128, "cuda", 1)


def test_families_script_with_anchors_times_the_whole_field(tmp_path, anchor_python):
    """`python -m bertpress.bench.families --anchors DATA`: our int8 ONNX and OpenVINO IRs and
    both specialists in one bench run per family, with the best of ours named and its ratios.
    DeBERTa-v2: its tokenizer returns token_type_ids that its exported IR has no input for, which
    Optimum-Intel's calibration must not be fed."""
    from bertpress.bench.families import ANCHOR_ROWS, main
    from bertpress.testing import write_tiny_dataset

    anchor_python("optimum")
    anchor_python("optimum-intel")
    data = write_tiny_dataset(tmp_path / "data", n_train=24, n_dev=40)
    out = tmp_path / "out"
    assert main(["--tiny", "--families", "deberta-v2", "--anchors", str(data), "--out", str(out), "--rounds", "1",
                 "--min-iters", "2", "--min-seconds", "0"]) == 0
    row = json.loads((out / "families.json").read_text())["rows"][0]
    assert all(row[k]["p50_ms"] > 0 for k, _ in ANCHOR_ROWS) and row["refused"] == []
    assert row["openvino_fp32"]["settings"]["performance_hint"] == "LATENCY"
    best = row["best"]
    assert best["variant"] in ("onnx_int8", "openvino_fp32", "openvino_int8")
    assert best["p50_ms"] == min(row[k]["p50_ms"] for k in ("onnx_int8", "openvino_fp32", "openvino_int8"))
    assert best["vs_optimum-intel"] == round(row["optimum-intel"]["p50_ms"] / best["p50_ms"], 2)
    md = (out / "families.md").read_text()
    assert "## Against the specialists" in md and "| deberta-v2 |" in md.split("## Against the specialists")[1]


def test_an_anchor_exception_is_reported_by_its_last_line(tmp_path, capsys):
    """OpenVINO's messages open with a source location and end with the cause: the cause is the line."""
    import argparse
    import importlib.util

    spec = importlib.util.spec_from_file_location("anchor_common", Path(__file__).parents[1] / "bench/anchors/_common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "config.json").write_text("{}")

    def build(args):
        raise RuntimeError("Exception from src/inference/src/cpp/infer_request.cpp:189:\n"
                           "Check failed at infer_request.cpp:191:\nPort for tensor name token_type_ids was not found.\n")

    args = argparse.Namespace(out=tmp_path / "out", model=tmp_path / "ck", threads=1)
    assert common.main(build, args) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: RuntimeError: Port for tensor name token_type_ids was not found.")
