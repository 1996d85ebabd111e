"""export: TorchScript and ONNX (fused, int8, .ort), the parity gate, the edge bundle, interop.

Tiny random BERTs (hidden 32, 4 heads: ORT's fusions do fire on that shape). The classifier
head of the test model is scaled up so that its logits are well separated: with the random
head's near-zero logits every int8 rounding would flip an argmax and agreement means nothing.
Exports take seconds, so each kind is made once per module and several tests read it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bertpress.errors import ArtifactError, ConfigError, InputError, ParityError
from tests.conftest import run_cli

TEXTS = ["a great and lovely film", "the plot was dull and boring", "the acting is superb",
         "awful music , worst ending", "it was quite fun really"]


def _save_confident_tiny(path: Path, *, manifest: bool = True, details: dict | None = None,
                         kind: str = "checkpoint", prune: dict | None = None, hidden: int = 32) -> Path:
    import torch

    from bertpress.artifact import Manifest, write_manifest
    from bertpress.testing import tiny_bert

    model, tok = tiny_bert(hidden_size=hidden, intermediate_size=hidden + 5)
    with torch.no_grad():
        model.classifier.weight.mul_(40.0)
    if prune:  # what transformers 4.x's model.prune_heads leaves: smaller q/k/v + config.pruned_heads
        from bertpress.arch import adapter_for

        adapter_for(model).apply_pruning(model, prune, None)
        model.config.pruned_heads = {int(k): list(v) for k, v in prune.items()}
    model.save_pretrained(path)
    tok.save_pretrained(path)
    if manifest:
        write_manifest(path, Manifest(kind=kind, labels=["negative", "positive"], max_length=128,
                                      details=details or {}))
    return path


def _torch_logits(ckpt: Path, feed: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    from bertpress.models import load_classifier

    model, _ = load_classifier(ckpt)
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in feed.items()})
    return out.logits.numpy()


def _feed(ckpt: Path, texts=TEXTS, max_length: int = 128) -> dict[str, np.ndarray]:
    from bertpress.signature import encode
    from bertpress.models import load_tokenizer

    return encode(load_tokenizer(ckpt), texts, max_length)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return _save_confident_tiny(tmp_path_factory.mktemp("exp") / "checkpoint")


@pytest.fixture(scope="module")
def fp32_all(ckpt, tmp_path_factory):
    """format=all, fp32, with the ORT-format file: OUT/onnx and OUT/torchscript."""
    from bertpress.export import ExportConfig, export

    out = tmp_path_factory.mktemp("fp32") / "deploy"
    arts = export(ckpt, ExportConfig(format="all", ort_format=True), out)
    return out, {a.kind: a for a in arts}


@pytest.fixture(scope="module")
def int8_all(ckpt, tiny_data, tmp_path_factory):
    from bertpress.export import ExportConfig, export

    out = tmp_path_factory.mktemp("int8") / "deploy"
    arts = export(ckpt, ExportConfig(format="all", quantize="dynamic", eval_data=str(tiny_data)), out)
    return out, {a.kind: a for a in arts}


# ---- config --------------------------------------------------------------------------------


def test_config_roundtrips_and_rejects_bad_values():
    from bertpress.config import from_tagged, to_tagged
    from bertpress.export import ExportConfig

    cfg = ExportConfig(format="all", quantize="static", seq_lengths=[8, 64], calibration_data="x.tsv")
    assert from_tagged(json.loads(json.dumps(to_tagged(cfg)))) == cfg
    with pytest.raises(ConfigError, match=r"format='tflite'.*choose one of: onnx, torchscript, openvino, all"):
        ExportConfig(format="tflite")
    with pytest.raises(ConfigError, match="opset=11"):
        ExportConfig(opset=11)
    with pytest.raises(ConfigError, match="in the parity grid"):
        ExportConfig(trace_batch=1, trace_seq=8)
    with pytest.raises(ConfigError, match="min_agreement"):
        ExportConfig(min_agreement=1.5)


# ---- ONNX ----------------------------------------------------------------------------------


def test_onnx_fp32_passes_parity_on_grid_excluding_trace_shape(fp32_all, ckpt):
    out, arts = fp32_all
    m = arts["onnx"].manifest
    report = m.metrics["parity"]["model.onnx"]
    assert report["passed"] and report["max_abs_diff"] < 1e-4
    cases = {(c["batch"], c["seq"]) for c in report["grid"]["cases"]}
    assert {(1, 8), (3, 33), (8, 128)} <= cases  # 128 is also the max length here
    assert tuple(report["grid"]["trace_shape"]) not in cases
    # independent check at a shape the gate never used
    import onnxruntime as ort

    feed = _feed(ckpt, TEXTS * 2)
    sess = ort.InferenceSession(str(out / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in sess.get_outputs()] == ["logits"]
    got = sess.run(["logits"], feed)[0]
    np.testing.assert_allclose(got, _torch_logits(ckpt, feed), atol=1e-4)


def test_attention_and_layernorm_fused_and_recorded(fp32_all):
    out, arts = fp32_all
    fusions = arts["onnx"].manifest.details["model"]["fusions"]
    assert fusions["Attention"] == 2  # one per layer
    assert fusions["EmbedLayerNormalization"] == 1
    # residual Add + LayerNormalization stay unfused (ORT's SkipLayerNormalization CPU kernel is
    # the slow one) and the model tells loaders to keep ORT from re-fusing them
    assert fusions["SkipLayerNormalization"] == 0 and fusions["LayerNormalization"] == 4
    assert fusions["BiasGelu"] == 2  # fp32 keeps BiasGelu; only dynamic int8 leaves it out
    ops = arts["onnx"].manifest.details["model"]["op_counts"]
    assert ops.get("Attention") == 2 and "Softmax" not in ops and "SkipLayerNormalization" not in ops
    assert arts["onnx"].manifest.details["model"]["ort_disabled_optimizers"] == ["SkipLayerNormFusion"]


def test_loaders_honour_the_disabled_fusion_and_opt_in_keeps_it(fp32_all, ckpt, tmp_path):
    """bertpress sessions load the graph as exported (no SkipLayerNormalization re-fused); a plain
    InferenceSession re-fuses it and gives the same logits; --fuse-skip-layernorm keeps ORT's fusion."""
    import onnx
    import onnxruntime as ort

    from bertpress.bench.runtimes import load_onnx_file
    from bertpress.export import ExportConfig, export
    from bertpress.models import load_tokenizer
    from bertpress.ort import disabled_optimizers, session

    out, _ = fp32_all
    file = out / "onnx" / "model.onnx"
    assert disabled_optimizers(file) == ["SkipLayerNormFusion"]

    def optimized_ops(bertpress_session: bool):
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = str(tmp_path / "seen.onnx")
        opts.log_severity_level = 3
        sess = session(file, opts=opts) if bertpress_session else \
            ort.InferenceSession(str(file), opts, providers=["CPUExecutionProvider"])
        ops = {n.op_type for n in onnx.load(str(tmp_path / "seen.onnx")).graph.node}
        return ops, sess.run(["logits"], _feed(ckpt, TEXTS))[0]

    ours, logits_ours = optimized_ops(True)
    plain, logits_plain = optimized_ops(False)
    assert "SkipLayerNormalization" not in ours and "SkipLayerNormalization" in plain
    np.testing.assert_allclose(logits_ours, logits_plain, atol=1e-4)
    runner = load_onnx_file(file, load_tokenizer(out / "onnx"), 128, "cpu", 1)
    assert any("SkipLayerNormFusion" in n for n in runner.notes)

    art = export(ckpt, ExportConfig(batch_sizes=(1, 3), seq_lengths=(8, 33), fuse_skip_layernorm=True),
                 tmp_path / "fused")
    d = art.manifest.details["model"]
    assert d["fusions"]["SkipLayerNormalization"] == 4 and d["ort_disabled_optimizers"] == []
    assert disabled_optimizers(tmp_path / "fused" / "model.onnx") == []
    assert art.manifest.metrics["parity"]["model.onnx"]["passed"]


@pytest.mark.parametrize("level", ["none", "basic"])
def test_optimize_levels(level, ckpt, tmp_path):
    from bertpress.export import ExportConfig, export

    art = export(ckpt, ExportConfig(optimize=level, batch_sizes=(1, 3), seq_lengths=(8, 33)), tmp_path / level)
    d = art.manifest.details["model"]
    if level == "none":
        assert "fusions" not in d and "Attention" not in d["op_counts"] and d["op_counts"].get("Softmax") == 2
    else:
        assert d["fusions"]["Attention"] == 2 and d["op_counts"].get("Attention") == 2
    assert art.manifest.metrics["parity"]["model.onnx"]["passed"]


def test_unfused_attention_is_an_error():
    from bertpress.export.onnx import check_fusion

    with pytest.raises(ArtifactError, match=r"fused attention in 0 of 6 layers.*--optimize none"):
        check_fusion({"Attention": 0, "SkipLayerNormalization": 12}, 6, {"contrib": 0, "standard": 0})
    check_fusion({"Attention": 6, "SkipLayerNormalization": 12}, 6, {"contrib": 6, "standard": 0})
    # The optimizer's statistics count the standard-domain ONNX Attention op by name: not a fusion.
    with pytest.raises(ArtifactError, match=r"6 standard-domain ONNX Attention ops"):
        check_fusion({"Attention": 6, "SkipLayerNormalization": 12}, 6, {"contrib": 0, "standard": 6})


def test_standard_domain_attention_is_told_apart_from_contrib():
    """A graph with the opset-23 ONNX Attention op next to ORT's com.microsoft Attention."""
    import onnx
    from onnx import TensorProto, helper

    from bertpress.ort import fused_attention_count

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])
    nodes = [helper.make_node("Attention", ["x", "x", "x"], ["a"], name="std"),
             helper.make_node("Attention", ["a", "w", "b"], ["y"], name="ms", domain="com.microsoft")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 23), helper.make_opsetid("com.microsoft", 1)])
    assert fused_attention_count(model) == {"contrib": 1, "standard": 1}


def test_int8_fused_onnx_runs_and_agrees(int8_all, fp32_all, ckpt):
    out, arts = int8_all
    m = arts["onnx"].manifest
    assert m.details["precision"] == "int8"
    assert m.details["quantization"]["applied"] == "dynamic"
    ops = m.details["model"]["op_counts"]
    assert ops.get("QAttention") == 2 and ops.get("MatMulInteger", 0) >= 4  # fused *and* int8
    assert m.details["model"]["fusions"]["Attention"] == 2
    # FFN bias stays an Add so that ORT folds it into DynamicQuantizeMatMul; the plain Gelu kernel
    # is faster than BiasGelu (export/microbench.py). Check the graph ORT actually runs.
    assert m.details["model"]["fusions"]["BiasGelu"] == 0 and ops.get("Gelu") == 2 and "BiasGelu" not in ops
    import onnxruntime as ort

    from bertpress.ort import op_counts, session

    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(out.parent / "int8-as-run.onnx")
    session(out / "onnx" / "model.onnx", opts=opts)
    ran = op_counts(out.parent / "int8-as-run.onnx")
    assert ran.get("Gelu") == 2 and "BiasGelu" not in ran and ran.get("DynamicQuantizeMatMul", 0) >= 4, ran
    report = m.metrics["parity"]["model.onnx"]
    assert report["passed"] and report["agreement"]["on"] == "eval texts"
    assert report["agreement"]["value"] >= 0.97
    assert m.metrics["accuracy"]["model.onnx"] == pytest.approx(m.metrics["accuracy"]["source"], abs=0.07)
    fp32_size = (fp32_all[0] / "onnx" / "model.onnx").stat().st_size
    assert (out / "onnx" / "model.onnx").stat().st_size < 0.6 * fp32_size
    feed = _feed(ckpt)
    sess = ort.InferenceSession(str(out / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], feed)[0]
    want = _torch_logits(ckpt, feed)
    assert (got.argmax(-1) == want.argmax(-1)).all()
    assert np.abs(got - want).max() < 1.0


def test_static_int8_follows_the_compressed_recipe(tmp_path, tiny_data):
    """int8 in, int8 out: a compressed artifact recording static int8 exports static QDQ with
    the recorded calibration, activations quantized (not a weight-only graph)."""
    from bertpress.export import ExportConfig, export

    quant = {"scheme": "static", "per_channel": True, "scope": "encoder",
             "calibration": {"method": "minmax", "data": str(tiny_data), "samples": 32}}
    src = _save_confident_tiny(tmp_path / "compressed", kind="compressed", details={"quantization": quant})
    art, ts, ov = export(src, ExportConfig(format="all", eval_data=str(tiny_data)), tmp_path / "out")
    assert ov.manifest.details["quantization"]["applied"] == "static"  # NNCF static (tests/test_openvino.py)
    # TorchScript has no static QDQ path: it applies dynamic int8 and says so.
    assert ts.manifest.details["quantization"]["applied"] == "dynamic"
    assert "static" in ts.manifest.details["quantization"]["note"]
    d = art.manifest.details
    assert d["quantization"]["origin"] == "manifest" and d["quantization"]["applied"] == "static"
    assert d["quantization"]["calibration"] == {"method": "minmax", "data": str(tiny_data), "samples": 32}
    ops = d["model"]["op_counts"]
    assert ops.get("QuantizeLinear", 0) >= 4 and ops.get("DequantizeLinear", 0) >= 8
    assert d["model"]["fusions"]["Attention"] == 2
    assert any("classifier" in n for n in d["model"]["quantization"]["excluded_nodes"])
    assert art.manifest.metrics["parity"]["model.onnx"]["passed"]


def test_static_without_calibration_data_is_a_config_error(ckpt, tmp_path):
    from bertpress.export import ExportConfig, export

    with pytest.raises(ConfigError, match="--calibration-data"):
        export(ckpt, ExportConfig(quantize="static"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_pruned_model_fuses_and_exports_int8(tmp_path):
    """A checkpoint head-pruned by transformers 4.x (config.pruned_heads, no bertpress manifest)
    loads on 5.x through the rebuild, fuses with the explicit head count and passes parity."""
    from bertpress.export import ExportConfig, export

    src = _save_confident_tiny(tmp_path / "pruned", manifest=False, prune={0: [0], 1: [3]}, hidden=64)
    art = export(src, ExportConfig(quantize="dynamic"), tmp_path / "out")
    assert art.manifest.details["model"]["fusions"]["Attention"] == 2
    assert art.manifest.details["source_kind"] == "huggingface"
    assert art.manifest.metrics["parity"]["model.onnx"]["passed"]


def test_unevenly_pruned_model_is_refused_fused_and_exports_unfused(tmp_path):
    """Different head counts per layer: ORT's fusion takes one head count, so the fused export is
    refused in one line naming --optimize none, and that export works."""
    from bertpress.export import ExportConfig, export

    src = _save_confident_tiny(tmp_path / "pruned", manifest=False, prune={0: [0], 1: [1, 2]}, hidden=64)
    with pytest.raises(ArtifactError) as err:
        export(src, ExportConfig(quantize="dynamic"), tmp_path / "out")
    assert str(err.value).startswith("attention heads differ between layers ([3, 2]):")
    assert "--optimize none" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()
    art = export(src, ExportConfig(quantize="dynamic", optimize="none"), tmp_path / "out")
    assert art.manifest.metrics["parity"]["model.onnx"]["passed"]


def test_ort_format_file_written_and_validated(fp32_all):
    out, arts = fp32_all
    assert (out / "onnx" / "model.ort").is_file()
    assert arts["onnx"].manifest.metrics["parity"]["model.ort"]["passed"]


# ---- TorchScript ---------------------------------------------------------------------------


def test_torchscript_loads_in_fresh_process_without_bertpress(fp32_all, int8_all, ckpt, tmp_path):
    feed = _feed(ckpt, TEXTS + TEXTS[:2])  # batch 7, a length not traced
    np.savez(tmp_path / "feed.npz", **feed)
    want = _torch_logits(ckpt, feed)
    code = textwrap.dedent("""
        import sys, numpy as np, torch
        f = np.load(sys.argv[2])
        m = torch.jit.load(sys.argv[1])
        with torch.no_grad():
            y = m(*(torch.from_numpy(f[k]) for k in ("input_ids", "attention_mask", "token_type_ids")))
        assert not any(name.startswith("bertpress") for name in sys.modules), "bertpress was imported"
        print(" ".join(repr(float(v)) for v in y.flatten()))
    """)
    for out, atol in ((fp32_all[0], 1e-4), (int8_all[0], 1.0)):
        proc = subprocess.run([sys.executable, "-c", code, str(out / "torchscript" / "model.pt"),
                               str(tmp_path / "feed.npz")], capture_output=True, text=True, cwd=tmp_path,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        got = np.array([float(x) for x in proc.stdout.split()]).reshape(want.shape)
        assert np.abs(got - want).max() <= atol
        assert (got.argmax(-1) == want.argmax(-1)).all()


def test_torchscript_grid_and_int8_ops(fp32_all, int8_all):
    import torch

    r = fp32_all[1]["torchscript"].manifest.metrics["parity"]["model.pt"]
    assert r["passed"] and len(r["grid"]["cases"]) == 9 and r["max_abs_diff"] < 1e-4
    q = torch.jit.load(str(int8_all[0] / "torchscript" / "model.pt"))
    assert "quantized::linear_dynamic" in str(q.graph)
    assert int8_all[1]["torchscript"].manifest.metrics["parity"]["model.pt"]["passed"]
    fidelity = int8_all[1]["torchscript"].manifest.details["model"]["trace_fidelity"]
    assert fidelity["passed"] and fidelity["max_abs_diff"] < 1e-4


# ---- the parity gate -----------------------------------------------------------------------


def test_gate_catches_frozen_shapes_and_wrong_outputs():
    from bertpress.export import ExportConfig
    from bertpress.export.validate import check_parity
    from bertpress.testing import tiny_tokenizer

    tok = tiny_tokenizer()

    def source(feed):
        return np.stack([feed["input_ids"].sum(-1), -feed["input_ids"].sum(-1)], -1).astype(np.float32) / 1e3

    def frozen(feed):  # behaves like a trace that baked in batch 2
        if feed["input_ids"].shape[0] != 2:
            raise RuntimeError("shape mismatch: expected batch 2")
        return source(feed)

    grid = ExportConfig(batch_sizes=(1, 3), seq_lengths=(8, 33), trace_batch=2, trace_seq=16)
    kw = dict(cfg=grid, tokenizer=tok, vocab_size=100, num_labels=2, max_length=64, atol=1e-4, precision="fp32")
    rep = check_parity(frozen, source, **kw)
    assert not rep["passed"] and any("failed to run" in f for f in rep["failures"])
    rep = check_parity(lambda f: source(f) + 0.01, source, **kw)
    assert not rep["passed"] and rep["max_abs_diff"] == pytest.approx(0.01, rel=1e-3)
    rep = check_parity(source, source, output_names=("output",), **kw)
    assert any("output names" in f for f in rep["failures"])
    assert check_parity(source, source, **kw)["passed"]


def test_parity_miss_publishes_nothing_unless_allowed(ckpt, tmp_path):
    from bertpress.export import ExportConfig, export

    strict = dict(quantize="dynamic", int8_atol=1e-9)  # int8 can never be that close
    with pytest.raises(ParityError, match=r"max \|dlogit\|.*--allow-mismatch"):
        export(ckpt, ExportConfig(**strict), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staged leftovers
    art = export(ckpt, ExportConfig(allow_mismatch=True, **strict), tmp_path / "out")
    rep = art.manifest.metrics["parity"]["model.onnx"]
    assert not rep["passed"] and not art.manifest.metrics["parity_passed"] and rep["max_abs_diff"] > 1e-9


# ---- the edge bundle -----------------------------------------------------------------------

BLOCK_TORCH = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers", "bertpress", "optimum"):
            raise ImportError(f"{name} is blocked for this test")
        return None
sys.meta_path.insert(0, _Block())
"""


def test_bundle_contents(fp32_all):
    out, arts = fp32_all
    onnx_dir = out / "onnx"
    for name in ("model.onnx", "tokenizer.json", "config.json", "predict.py", "bertpress.json"):
        assert (onnx_dir / name).is_file(), name
    pre = arts["onnx"].manifest.details["preprocessing"]
    assert pre["lowercase"] is True and pre["max_length"] == 128
    assert pre["input_names"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert arts["onnx"].manifest.lineage["parent_kind"] == "checkpoint"
    assert (out / "torchscript" / "model.pt").is_file() and not (out / "torchscript" / "predict.py").exists()
    assert not (out / "bertpress.json").exists()  # OUT holds two artifacts, it is not one


@pytest.mark.parametrize("which", ["fp32", "int8"])
def test_predict_py_runs_without_torch_and_agrees(which, fp32_all, int8_all, ckpt, tmp_path):
    out = (fp32_all if which == "fp32" else int8_all)[0] / "onnx"
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(BLOCK_TORCH)
    env = dict(os.environ, PYTHONPATH=str(shim))
    check = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert check.returncode != 0 and "blocked" in check.stderr  # the shim really blocks torch
    proc = subprocess.run([sys.executable, str(out / "predict.py"), *TEXTS[:3]], env=env, capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    stdin = subprocess.run([sys.executable, str(out / "predict.py"), "--json"], input="\n".join(TEXTS[3:]) + "\n",
                           env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert stdin.returncode == 0, stdin.stderr
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    rows += [[r["label"], str(r["score"]), r["text"]] for r in map(json.loads, stdin.stdout.splitlines())]
    assert [r[2] for r in rows] == TEXTS
    logits = _torch_logits(ckpt, _feed(ckpt))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    assert [r[0] for r in rows] == [["negative", "positive"][i] for i in logits.argmax(-1)]
    tol = 1e-3 if which == "fp32" else 0.05
    np.testing.assert_allclose([float(r[1]) for r in rows], probs.max(-1), atol=tol)


OPTIMUM_LOAD = """
import json, sys
from optimum.onnxruntime import ORTModelForSequenceClassification
from transformers import AutoTokenizer
out, texts = sys.argv[1], json.loads(sys.argv[2])
model = ORTModelForSequenceClassification.from_pretrained(out)
tok = AutoTokenizer.from_pretrained(out)
logits = model(**tok(texts, padding=True, return_tensors="np")).logits
print(json.dumps({"logits": logits.tolist(), "label1": model.config.id2label[1]}))
"""


@pytest.mark.parametrize("which", ["fp32", "int8"])
def test_optimum_loads_the_bundle(which, fp32_all, int8_all, ckpt, anchor_python):
    """Optimum's ORTModelForSequenceClassification opens the bundle as written — in Optimum's
    own environment (.venv-optimum: optimum-onnx holds transformers < 4.58), not in ours."""
    out = (fp32_all if which == "fp32" else int8_all)[0] / "onnx"
    proc = subprocess.run([str(anchor_python("optimum")), "-E", "-s", "-c", OPTIMUM_LOAD, str(out), json.dumps(TEXTS)],
                          capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    want = _torch_logits(ckpt, _feed(ckpt))
    assert (np.asarray(got["logits"]).argmax(-1) == want.argmax(-1)).all()
    if which == "fp32":
        np.testing.assert_allclose(got["logits"], want, atol=1e-4)
    assert got["label1"] == "positive"


# ---- bad input and the CLI -----------------------------------------------------------------


def test_bad_inputs(ckpt, tmp_path, fp32_all):
    from bertpress.export import ExportConfig, export

    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("hello")
    with pytest.raises(ArtifactError, match="not a bertpress artifact .* or a Hugging Face checkpoint"):
        export(junk, ExportConfig(), tmp_path / "o1")
    with pytest.raises(ArtifactError, match="'onnx' artifact cannot be exported"):
        export(fp32_all[0] / "onnx", ExportConfig(), tmp_path / "o2")
    with pytest.raises(ConfigError, match=r"--opset 21 cannot be written.*between 14 and 20"):
        export(ckpt, ExportConfig(opset=21), tmp_path / "o3")
    with pytest.raises(InputError, match="inside"):
        export(ckpt, ExportConfig(), ckpt / "export")
    with pytest.raises(ConfigError, match="max_length=999 exceeds"):
        export(ckpt, ExportConfig(max_length=999), tmp_path / "o4")
    assert not (ckpt / "export").exists()


def test_cli_export_json_and_errors(ckpt, tmp_path):
    proc = run_cli("export", str(ckpt), "--format", "torchscript", "--out", str(tmp_path / "ts"), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["kind"] == "torchscript" and data["parity"]["model.pt"]["passed"]
    again = run_cli("export", str(ckpt), "--format", "torchscript", "--out", str(tmp_path / "ts"))
    assert again.returncode == 2 and again.stderr.strip().count("\n") == 0
    assert "--overwrite" in again.stderr
    bad = run_cli("export", str(ckpt), "--out", str(tmp_path / "x"), "--opset", "99")
    assert bad.returncode == 2 and bad.stderr.startswith("error: --opset 99")


def test_inspect_corrupt_onnx_gives_one_line_error(fp32_all, tmp_path):
    from bertpress.app.inspect import inspect_path

    good = (fp32_all[0] / "onnx" / "model.onnx").read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good[: len(good) // 2])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xffnot a protobuf" * 100)
    assert inspect_path(fp32_all[0] / "onnx")["model"]["format"] == "onnx"
    for f in (truncated, garbage):
        with pytest.raises(ArtifactError, match="not a readable ONNX model.*re-export it"):
            inspect_path(f)
    proc = run_cli("inspect", str(truncated))
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and proc.stderr.strip().count("\n") == 0
    # opening a session reads the model's metadata first; an unreadable file must still end in
    # the session's one-line ArtifactError, not a protobuf traceback from that read
    from bertpress.ort import disabled_optimizers, session

    for f in (truncated, garbage):
        assert disabled_optimizers(f) == []
        with pytest.raises(ArtifactError, match=r"^\S+: not a readable ONNX model \(DecodeError.*re-export it$"):
            session(f)  # the external-data safety check reads it first, and says so in one line


# ---- real model ----------------------------------------------------------------------------


@pytest.mark.slow
def test_minilm_fuses_all_six_layers(tmp_path, sst2_dir):
    """The real 6-layer MiniLM (random classifier head): every attention block fuses, fp32
    parity holds on the grid, and the int8 graph is fused too."""
    from bertpress.export import ExportConfig, export
    from bertpress.models import alias_path

    cfg = ExportConfig(batch_sizes=(1, 3), seq_lengths=(8, 33), max_length=128, quantize="dynamic",
                       eval_data=str(sst2_dir), eval_samples=64, min_agreement=0.0, int8_atol=10.0)
    art = export(alias_path("minilm"), cfg, tmp_path / "minilm")
    fus = art.manifest.details["model"]["fusions"]
    assert fus["Attention"] == 6 and fus["LayerNormalization"] == 12 and fus["EmbedLayerNormalization"] == 1
    assert art.manifest.details["model"]["op_counts"].get("QAttention") == 6
    assert (tmp_path / "minilm" / "model.onnx").stat().st_size < 30e6
    fp32 = export(alias_path("minilm"), ExportConfig(batch_sizes=(1, 3), seq_lengths=(8, 33), max_length=128),
                  tmp_path / "minilm-fp32")
    assert fp32.manifest.metrics["parity"]["model.onnx"]["max_abs_diff"] < 1e-4


@pytest.mark.cuda
def test_exports_run_on_cuda(fp32_all, ckpt):
    """The files are device-neutral: TorchScript moves to CUDA, ONNX runs on the CUDA provider."""
    import torch

    feed = _feed(ckpt)
    want = _torch_logits(ckpt, feed)
    ts = torch.jit.load(str(fp32_all[0] / "torchscript" / "model.pt"), map_location="cuda")
    with torch.no_grad():
        got = ts(*(torch.from_numpy(feed[k]).cuda() for k in ("input_ids", "attention_mask", "token_type_ids")))
    np.testing.assert_allclose(got.cpu().numpy(), want, atol=1e-3)
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime here has no CUDA provider (CPU wheel)")
    sess = ort.InferenceSession(str(fp32_all[0] / "onnx" / "model.onnx"), providers=["CUDAExecutionProvider"])
    np.testing.assert_allclose(sess.run(["logits"], feed)[0], want, atol=1e-3)


def test_recipe_follows_the_typed_record_and_refuses_invalid_ones():
    from bertpress import records
    from bertpress.artifact import Manifest
    from bertpress.export import ExportConfig
    from bertpress.export.source import resolve_recipe

    def m(q):
        return Manifest(kind="compressed", details={"quantization": q})

    rec = records.QuantizationRecord(scheme="dynamic", per_channel=False, layers=("bert.encoder.layer.0.output.dense",))
    r = resolve_recipe(m(records.encode(rec)), ExportConfig())
    assert (r.scheme, r.per_channel, r.origin, r.layers) == ("dynamic", False, "manifest", ("bert.encoder.layer.0.output.dense",))
    assert resolve_recipe(None, ExportConfig()).scheme == "none"
    assert resolve_recipe(m(records.encode(rec)), ExportConfig(quantize="none")).scheme == "none"
    static = records.QuantizationRecord(scheme="static", calibration=records.CalibrationRecord(
        method="entropy", data="d.tsv", samples=7))
    r = resolve_recipe(m(records.encode(static)), ExportConfig())
    assert (r.scheme, r.calibration_method, r.calibration_data, r.calibration_samples) == ("static", "entropy", "d.tsv", 7)
    # bertpress 0.1 wrote the same fields untagged, with the int8 formats at the top level
    legacy = {"scheme": "dynamic", "per_channel": True, "scope": "encoder", "layers": [], "qengine": "x86",
              "reduce_range": False, "num_quantized": 12, "granularity": {"weights": "per output channel"}}
    assert resolve_recipe(m(legacy), ExportConfig()).scheme == "dynamic"
    for bad, why in [({"scheme": "int8-dynamic"}, "quantization.scheme='int8-dynamic' is not one of none, dynamic, static"),
                     ("static", "expected a QuantizationRecord, got str"),
                     ({"scheme": "static"}, "quantization.scheme=static needs its calibration record")]:
        with pytest.raises(ArtifactError) as e:
            resolve_recipe(m(bad), ExportConfig())
        assert str(e.value) == (f"bertpress.json: details.quantization is not a valid QuantizationRecord ({why}); "
                                "re-run the stage that wrote it")


def test_measure_side_by_side(fp32_all, tiny_data):
    from bertpress.export.measure import measure

    rows = measure([fp32_all[0] / "onnx", fp32_all[0] / "torchscript"], str(tiny_data), threads=1, seq=32,
                   rounds=1, seconds=0.05)
    assert [r["kind"] for r in rows] == ["onnx", "torchscript"]
    assert rows[0]["accuracy"] == rows[1]["accuracy"]  # the same fp32 model in two formats
    assert all(r["p50_ms"] > 0 and r["iters"] >= 30 for r in rows)


def test_fusion_microbench_compares_equal_functions():
    """The microbenchmark behind the unfused-LayerNorm and unfused-BiasGelu defaults runs every
    graph of a case on the same inputs, checks they agree, and reports all timings."""
    from bertpress.export.microbench import CASES, main, run

    rows = run(hidden=32, seq=8, batch=2, threads=(1,), rounds=1, seconds=0.01)
    assert [r["case"] for r in rows] == list(CASES) and all(r["shape"] == [2, 8, 32] for r in rows)
    for r in rows:
        assert list(r["us"]) == list(CASES[r["case"]]) and all(v > 0 for v in r["us"].values())
        assert r["ratio"] == pytest.approx(r["us"][CASES[r["case"]][0]] / min(list(r["us"].values())[1:]), rel=0.02)
    with pytest.raises(SystemExit):
        main(["--threads", "0"])
    with pytest.raises(SystemExit):
        main(["--case", "gelu"])


def test_profile_breaks_a_model_down_by_op(fp32_all, capsys):
    from bertpress.export.microbench import main, profile

    file = fp32_all[0] / "onnx" / "model.onnx"
    prof = profile(file, threads=1, seq=8, calls=5)
    assert prof["p50_ms"] > 0 and prof["ops"]["Attention"] > 0
    assert "SkipLayerNormalization" not in prof["ops"]  # the model's metadata was honoured
    assert main(["--profile", str(file), "--threads", "1", "--seq", "8"]) == 0
    assert "Attention" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--profile", str(file.parent / "missing.onnx")])


def test_export_prints_the_task_metric_beside_accuracy(tiny_checkpoint, tiny_data, tmp_path, capsys):
    """A pair or many-label model's search budget is in F1 / macro-F1: the summary shows the gate's figure for it."""
    from bertpress.app.cli import main

    out = tmp_path / "onnx"
    assert main(["export", str(tiny_checkpoint), "--out", str(out), "--eval-data", str(tiny_data),
                 "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    report = json.loads((out / "bertpress.json").read_text())["metrics"]["parity"]["model.onnx"]
    want = f"  f1        model.onnx {report['f1']['export']:.4f}, source {report['f1']['source']:.4f}"
    assert want in lines, lines
