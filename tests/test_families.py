"""Every BERT-family encoder through all four stages, on tiny random models of each family.

Per family: fine-tune a few steps -> compress (prune heads + FFN where the family allows, int8
dynamic; int8 static separately) -> export ONNX + TorchScript + OpenVINO through the parity gate
-> bench every CPU runtime; the pruned checkpoint reloads in a fresh process; the ONNX fusion
counts are asserted per family (ORT's BERT optimizer fuses attention for BERT, DistilBERT,
RoBERTa, XLM-R and ELECTRA; DeBERTa-v2, ModernBERT, MPNet and ALBERT (whose shared layer fuses
once) are declared unfused and say why).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bertpress.testing import TINY_FAMILIES, save_tiny_checkpoint, tiny_model, write_tiny_dataset

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]
LAYERS = 2  # tiny_config's num_hidden_layers
# ONNX Runtime's optimizer on each family's eager-attention graph (dynamic int8 export: bias Add +
# Gelu kept, SkipLayerNormalization left out). RoBERTa/XLM-R compute position ids from input_ids
# (cumsum over the padding mask), which EmbedLayerNormalization's pattern does not match.
FUSIONS = {
    "bert": {"Attention": LAYERS, "EmbedLayerNormalization": 1},
    "distilbert": {"Attention": LAYERS, "EmbedLayerNormalization": 1},
    "roberta": {"Attention": LAYERS, "EmbedLayerNormalization": 0},
    "xlm-roberta": {"Attention": LAYERS, "EmbedLayerNormalization": 0},
    "electra": {"Attention": LAYERS, "EmbedLayerNormalization": 1},
    "deberta-v2": {"Attention": 0, "EmbedLayerNormalization": 0},
    "modernbert": {"Attention": 0, "EmbedLayerNormalization": 0},
    "albert": {"Attention": 1, "EmbedLayerNormalization": 0},  # not every use of the shared layer fuses
    "mpnet": {"Attention": 0, "EmbedLayerNormalization": 0},
}
NO_TOKEN_TYPES = {"distilbert", "roberta", "xlm-roberta", "deberta-v2", "modernbert", "albert", "mpnet"}
PRUNABLE = set(TINY_FAMILIES) - {"modernbert"}  # FFN
HEADS_PRUNABLE = PRUNABLE - {"mpnet"}
SENTENCES = ["a good film", "the plot was awful and dull", "it is fine"]


def test_every_tiny_family_is_registered():
    from bertpress.arch import FAMILIES

    assert set(TINY_FAMILIES) == set(FAMILIES.names())
    assert set(FUSIONS) == set(TINY_FAMILIES)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_inputs_follow_the_family_tokenizer(family):
    from bertpress.arch import adapter_for, max_positions
    from bertpress.signature import input_names, logits_module

    model, tok = tiny_model(family)
    names = input_names(model)
    assert ("token_type_ids" in names) == (family not in NO_TOKEN_TYPES)
    enc = tok(SENTENCES, padding=True, return_tensors="pt")
    if family != "deberta-v2":  # DeBERTa's tokenizer returns type ids; a v3 model (type_vocab_size 0) ignores them
        assert set(enc.keys()) == set(names)
    want = model(**{k: enc[k] for k in names}).logits
    got = logits_module(model)(*(enc[n] for n in names))
    assert torch.equal(want, got)
    # RoBERTa-style positions start after padding_idx: the longest input is max_length, not the table size
    assert max_positions(model.config) == 128
    enc = tok(["good " * 300], truncation=True, max_length=128, return_tensors="pt")
    assert model(**{k: enc[k] for k in names}).logits.shape == (1, 2)
    fam = adapter_for(model)
    assert fam.shapes(model) == [{"heads": 4, "head_size": 8, "ffn": 37}] * len(fam.layers(model))
    assert len(fam.layers(model)) == (1 if family == "albert" else LAYERS)  # ALBERT: one layer, shared


def _fresh_logits(path: Path) -> np.ndarray:
    code = """
import json, sys, torch
from bertpress.models import load_classifier
from bertpress.signature import input_names
model, tok = load_classifier(sys.argv[1])
enc = tok(json.loads(sys.argv[2]), return_tensors="pt", padding=True)
with torch.inference_mode():
    print(json.dumps(model(**{k: enc[k] for k in input_names(model)}).logits.tolist()))
"""
    res = subprocess.run([sys.executable, "-c", code, str(path), json.dumps(SENTENCES)],
                         capture_output=True, text=True, cwd=REPO, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    return np.asarray(json.loads(res.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_family_train_compress_export_bench(family, tmp_path):
    from bertpress.artifact import Artifact
    from bertpress.bench import bench
    from bertpress.bench.config import BenchConfig
    from bertpress.compress import compress
    from bertpress.compress.config import CompressConfig, PruneConfig, QuantizeConfig, RecoverConfig
    from bertpress.export import export
    from bertpress.export.config import ExportConfig
    from bertpress.finetune import finetune
    from bertpress.finetune.config import FinetuneConfig
    from bertpress.models import layer_shapes, load_classifier
    from bertpress.signature import input_names

    data = write_tiny_dataset(tmp_path / "data", n_train=48, n_dev=16)
    base = save_tiny_checkpoint(tmp_path / "base", family=family)
    # fine-tuning with knowledge distillation (DistillationTrainer; the teacher is the base model)
    finetune(str(base), FinetuneConfig(model=str(base), data=str(data), epochs=1, batch_size=16, max_length=32,
                                       labels=("negative", "positive"), teacher=str(base)), tmp_path / "ft",
             progress=False)

    prune = PruneConfig(heads=0.25 if family in HEADS_PRUNABLE else 0.0, ffn=0.3 if family in PRUNABLE else 0.0,
                        round_to=8, importance="magnitude")
    # recovery = distillation from the unpruned teacher, fed the family's inputs
    recover = RecoverConfig(epochs=1, data=str(data), samples=16, batch_size=8, max_length=32, max_steps=2)
    compress(tmp_path / "ft", CompressConfig(prune=prune, recover=recover, quantize=QuantizeConfig(scheme="dynamic")),
             tmp_path / "cmp", progress=False)
    assert Artifact.load(tmp_path / "cmp").manifest.details.get("recovery"), "recovery did not run"
    model, tok = load_classifier(tmp_path / "cmp")
    if family in PRUNABLE:
        heads = 3 if family in HEADS_PRUNABLE else 4
        assert layer_shapes(model) == [{"heads": heads, "head_size": 8, "ffn": 24}] * len(layer_shapes(model))
    # The pruned checkpoint reloads in a fresh process (rebuilt from its PruningRecord) to the same logits.
    enc = tok(SENTENCES, return_tensors="pt", padding=True)
    with torch.inference_mode():
        here = model(**{k: enc[k] for k in input_names(model)}).logits.numpy()
    np.testing.assert_allclose(_fresh_logits(tmp_path / "cmp"), here, atol=1e-5)

    export(tmp_path / "cmp", ExportConfig(format="all", batch_sizes=(1, 3), seq_lengths=(8, 33)), tmp_path / "exp",
           progress=False)
    names = list(input_names(model))
    for fmt in ("onnx", "torchscript", "openvino"):
        man = Artifact.load(tmp_path / "exp" / fmt).manifest
        assert man.metrics["parity"], fmt
        assert man.details["preprocessing"]["input_names"] == names
    onnx_details = Artifact.load(tmp_path / "exp" / "onnx").manifest.details["model"]
    assert onnx_details["input_names"] == names
    fusions = onnx_details["fusions"]
    assert {k: fusions[k] for k in FUSIONS[family]} == FUSIONS[family]
    assert fusions["LayerNormalization"] + fusions["SkipLayerNormalization"] > 0
    assert onnx_details["attention_fused"] is (FUSIONS[family]["Attention"] == LAYERS)
    if not onnx_details["attention_fused"]:
        assert "attention" in onnx_details["attention_unfused_reason"]
    assert onnx_details["quantization"]["op_counts"].get("MatMulInteger") or \
        onnx_details["quantization"]["op_counts"].get("DynamicQuantizeMatMul") or \
        onnx_details["quantization"]["op_counts"].get("QAttention")
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "exp" / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == names

    # The bundle's standalone predict.py classifies with the family's tokenizer.json alone.
    res = subprocess.run([sys.executable, str(tmp_path / "exp" / "onnx" / "predict.py"), "--json", *SENTENCES],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-1500:]
    assert len(res.stdout.strip().splitlines()) == len(SENTENCES)

    report = bench([tmp_path / "ft", tmp_path / "cmp", tmp_path / "exp"],
                   BenchConfig(eval_data=str(data), batch_sizes=(1,), seq_lens=(16,), threads=1, warmup=1,
                               min_iters=2, min_seconds=0.0, baselines=("hf-pipeline",)), tmp_path / "report",
                   progress=False)
    ran = {(v.kind, v.runtime) for v in report.results.variants}
    want = {("checkpoint", "pytorch"), ("checkpoint", "pytorch-int8-dynamic"), ("compressed", "pytorch"),
            ("onnx", "onnxruntime"), ("torchscript", "torchscript"), ("openvino", "openvino")}
    assert any(v.role == "baseline" for v in report.results.variants), report.results.refused
    assert want <= ran, (ran, report.results.refused)
    for v in report.results.variants:
        assert v.fixed and v.fixed[0].latency.p50_ms > 0 and v.accuracy is not None, v.id


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_family_static_int8(family, tmp_path):
    """Calibrated static int8 (torch fbgemm in compress, ORT QDQ in export) on every family."""
    from bertpress.artifact import Artifact
    from bertpress.compress import compress
    from bertpress.compress.config import CompressConfig, QuantizeConfig
    from bertpress.export import export
    from bertpress.export.config import ExportConfig

    data = write_tiny_dataset(tmp_path / "data", n_train=32, n_dev=16)
    base = save_tiny_checkpoint(tmp_path / "base", family=family)
    compress(base, CompressConfig(quantize=QuantizeConfig(scheme="static", calibration_data=str(data),
                                                          calibration_samples=16)), tmp_path / "cmp", progress=False)
    export(tmp_path / "cmp", ExportConfig(format="onnx", batch_sizes=(1, 3), seq_lengths=(8, 33), min_agreement=0.9),
           tmp_path / "exp", progress=False)
    details = Artifact.load(tmp_path / "exp").manifest.details["model"]
    assert details["quantization"]["format"] == "QDQ (static)"
    assert details["quantization"]["op_counts"]["QuantizeLinear"] > 0
    assert details["fusions"]["Attention"] == FUSIONS[family]["Attention"]


@pytest.mark.parametrize("family,why", [("deberta-v2", "share_att_key false"), ("mpnet", "relative-position bias")])
def test_head_pruning_refused_where_heads_are_tied(family, why):
    """DeBERTa-v2 without share_att_key (separate relative-position projections) and MPNet (one
    relative-position bias per head for every layer) refuse head pruning in one line; FFN works."""
    from bertpress.compress.config import PruneConfig
    from bertpress.compress.prune import plan_shapes
    from bertpress.errors import InputError

    model, _ = tiny_model(family)
    if family == "deberta-v2":
        model.config.share_att_key = False
    with pytest.raises(InputError, match=rf"cannot prune the heads of model type '{family}': .*{why}.*"
                                         r"--prune-heads 0"):
        plan_shapes(model, PruneConfig(heads=0.5, importance="magnitude"))
    assert plan_shapes(model, PruneConfig(ffn=0.5, round_to=8, importance="magnitude"))[2] == 16


def test_families_results_script_tiny(tmp_path):
    """`python -m bertpress.bench.families --tiny` writes the JSON + markdown table (shapes tiny)."""
    from transformers import AutoConfig

    from bertpress.arch import FAMILIES
    from bertpress.bench.families import BASE_CONFIGS, main

    assert set(BASE_CONFIGS) == set(FAMILIES.names())
    for fam, (_, values) in BASE_CONFIGS.items():  # the real base shapes build valid configs
        cfg = AutoConfig.for_model(fam, **values)
        assert cfg.hidden_size == 768 and cfg.model_type == fam
    assert main(["--tiny", "--families", "distilbert", "--out", str(tmp_path), "--rounds", "1", "--min-iters", "2",
                 "--min-seconds", "0"]) == 0
    rows = json.loads((tmp_path / "families.json").read_text())["rows"]
    assert rows[0]["family"] == "distilbert" and rows[0]["onnx-int8"]["fusions"]["Attention"] == LAYERS
    assert rows[0]["onnx-fp32"]["passed"] and rows[0]["pytorch_fp32"]["p50_ms"] > 0
    assert "| distilbert |" in (tmp_path / "families.md").read_text()


@pytest.mark.parametrize("family", ["roberta", "distilbert", "electra"])
def test_family_sentence_pairs_end_to_end(family, tmp_path):
    """Sentence pairs with each family's pair template (RoBERTa `<s> a </s></s> b </s>` and
    DistilBERT without token types; ELECTRA with them): fine-tune, ONNX export through the gate,
    and the bundle's predict.py classifying two-text examples to the torch model's labels."""
    from bertpress.artifact import Artifact
    from bertpress.export import export
    from bertpress.export.config import ExportConfig
    from bertpress.finetune import finetune
    from bertpress.finetune.config import FinetuneConfig
    from bertpress.models import load_classifier
    from bertpress.signature import encode, input_names, torch_runner
    from bertpress.testing import write_tiny_pair_dataset

    data = write_tiny_pair_dataset(tmp_path / "pairs", n_train=48, n_dev=16)
    base = save_tiny_checkpoint(tmp_path / "base", family=family)
    finetune(str(base), FinetuneConfig(model=str(base), data=str(data), epochs=1, batch_size=16, max_length=32),
             tmp_path / "ft", progress=False)
    export(tmp_path / "ft", ExportConfig(format="onnx", batch_sizes=(1, 3), seq_lengths=(8, 33)), tmp_path / "onnx",
           progress=False)
    assert Artifact.load(tmp_path / "onnx").manifest.details["model"]["input_names"] == list(
        input_names(load_classifier(tmp_path / "ft")[0]))
    pairs = [("the plot was", "a superb film"), ("it is very", "the acting was dull")]
    model, tok = load_classifier(tmp_path / "ft")
    want = torch_runner(model)(encode(tok, pairs, 32)).argmax(-1)
    res = subprocess.run([sys.executable, str(tmp_path / "onnx" / "predict.py"), *pairs[0], *pairs[1]],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-1500:]
    got = [line.split("\t")[0] for line in res.stdout.splitlines()]
    assert got == [model.config.id2label[int(i)] for i in want]


@pytest.mark.distributed
@pytest.mark.parametrize("family", ["roberta"])
def test_family_pairs_fine_tune_under_torchrun(family, tmp_path):
    """DDP (torchrun, 2 CPU ranks, gloo) on a family without token types, on sentence pairs: every
    rank trains its half, rank 0 alone writes one artifact, which reloads to the pair columns."""
    import os

    from bertpress.artifact import Artifact
    from bertpress.testing import write_tiny_pair_dataset

    data = write_tiny_pair_dataset(tmp_path / "pairs", n_train=64, n_dev=16)
    base = save_tiny_checkpoint(tmp_path / "base", family=family)
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "bertpress", "finetune", "--model", str(base), "--data", str(data), "--out", str(out),
           "--epochs", "1", "--batch-size", "8", "--max-length", "32", "--no-progress", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    man = Artifact.load(out).manifest
    assert man.metrics["hardware"]["world_size"] == 2
    assert man.metrics["steps"] == 4  # 64 pairs, 8 per rank, 2 ranks
    assert man.columns["text_pair"] == "sentence2" and man.columns["text"] == "sentence1"
    assert proc.stdout.count('"path"') == 1  # only rank 0 reported
    assert _fresh_logits(out).shape == (len(SENTENCES), 2)  # reloads in a fresh process
