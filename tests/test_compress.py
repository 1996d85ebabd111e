"""compress stage: pruning shapes and reload, int8 SQNR and layer counts, static ranges reload,
search table and winner, recovery wiring, bad inputs, CLI. Tiny random BERTs; real MiniLM /
SST-2 tests are marked slow."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bertpress.compress import api as A
from bertpress.compress import quantize as Q
from bertpress.compress.config import (CalibrationMethod, CompressConfig, Importance, LinearScope, PruneConfig,
                                       QuantizeConfig, RecoverConfig, Scheme, SearchConfig)
from bertpress.compress.prune import prune_model
from bertpress.config import from_tagged, to_tagged
from bertpress.errors import ConfigError, InputError
from tests.conftest import REPO, run_cli

SENTENCES = ["the film was good", "a bad and boring movie", "great acting, lovely music",
             "the plot is weak and the ending is cold", "it was fine"]
SQNR_FLOOR_DB = 25.0  # int8 per-channel on the tiny BERT measures ~60 dB; 25 dB catches broken scales


def sqnr(ref: torch.Tensor, out: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).mean() / (ref - out).pow(2).mean().clamp(min=1e-20)))


def logits(model, tokenizer, texts=SENTENCES) -> torch.Tensor:
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        return model(**enc).logits


def fresh_process_logits(path: Path, *loaders: str) -> dict[str, torch.Tensor]:
    """Logits from the model at `path` loaded in a new Python process (nothing shared with this
    one), once per loader: transformers' from_pretrained, bertpress.models.load_classifier (which
    rebuilds a pruned model from the manifest), load_compressed."""
    code = """
import json, sys, torch
path, texts, loaders = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
out = {}
for loader in loaders:
    if loader == "transformers":  # unpruned or FFN-only pruned checkpoints (5.x cannot remove heads)
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        tok = AutoTokenizer.from_pretrained(path)
    elif loader == "rebuild":
        from bertpress.models import load_classifier
        model, tok = load_classifier(path)
    else:
        from bertpress.compress import load_compressed
        model, tok = load_compressed(path)
    with torch.inference_mode():
        out[loader] = model(**tok(texts, return_tensors="pt", padding=True)).logits.tolist()
print(json.dumps(out))
"""
    res = subprocess.run([sys.executable, "-c", code, str(path), json.dumps(SENTENCES), *loaders],
                         capture_output=True, text=True, cwd=REPO, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    return {k: torch.tensor(v) for k, v in json.loads(res.stdout.strip().splitlines()[-1]).items()}


def quant_record(art):
    from bertpress import records

    return records.read(art.manifest.details, "quantization", records.QuantizationRecord)


def tree_hash(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(path)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """Tiny BERT with 4 heads and FFN 64 (so FFN pruning can round to multiples of 8)."""
    from bertpress.testing import save_tiny_checkpoint

    return save_tiny_checkpoint(tmp_path_factory.mktemp("cmp") / "ckpt", intermediate_size=64)


@pytest.fixture(scope="module")
def model_tok(ckpt):
    from bertpress.models import load_classifier

    return load_classifier(ckpt)


def calib_batches(tok, data_dir: Path, n_batches: int = 3, bs: int = 8):
    from bertpress.compress.evaluate import batches
    from bertpress.data import load_text_classification

    ds = load_text_classification(data_dir, "train", label_names=["negative", "positive"])
    return list(batches(tok, ds.texts[: n_batches * bs], ds.labels[: n_batches * bs], batch_size=bs,
                        max_length=32))


# ---- configs -------------------------------------------------------------------------------

CONFIGS = {
    "quantize-static-auto": QuantizeConfig(scheme="static", calibration_data="d", calibration_method="auto"),
    "prune-magnitude": PruneConfig(heads=0.25, ffn=0.5, importance="magnitude"),
    "recover": RecoverConfig(epochs=1.0, samples=100, alpha=0.7),
    "search": SearchConfig(max_accuracy_drop=0.5, schedule=["0:0", (0.5, 0.25)], schemes=["dynamic"],
                           latency_statistic="min"),
    "compress": CompressConfig(prune=PruneConfig(heads=0.5, importance="magnitude"),
                               search=SearchConfig(schedule=["0:0", "0.5:0.5"], schemes=("none", "dynamic")),
                               eval_data="d"),
    "compress-auto": CompressConfig(prune=PruneConfig(importance="magnitude"),
                                    quantize=QuantizeConfig(calibration_data="t"),
                                    search=SearchConfig(layers=(0.0, 0.5), ffn=(0.0,), time_budget=30),
                                    eval_data="d"),
}


@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
def test_config_round_trip(cfg):
    blob = json.loads(json.dumps(to_tagged(cfg)))
    assert from_tagged(blob) == cfg


@pytest.mark.parametrize("kwargs,needle", [
    (dict(heads=1.0), "prune.heads=1.0 is out of range"),
    (dict(ffn=-0.1), "prune.ffn=-0.1 is out of range"),
    (dict(importance="random"), "choose one of: taylor, magnitude"),
], ids=["heads-1", "ffn-negative", "importance"])
def test_prune_config_rejects(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        PruneConfig(**{"importance": "magnitude", **kwargs})


def test_config_errors_carry_the_fix():
    with pytest.raises(ConfigError, match="--calibration-data"):
        QuantizeConfig(scheme="static")
    with pytest.raises(ConfigError, match="choose one of: none, dynamic, static"):
        QuantizeConfig(scheme="int4")
    with pytest.raises(ConfigError, match="--importance magnitude"):
        PruneConfig(heads=0.5)  # taylor without data
    with pytest.raises(ConfigError, match="--eval-data"):
        CompressConfig(search=SearchConfig(schemes=["dynamic"]), prune=PruneConfig(importance="magnitude"))
    with pytest.raises(ConfigError, match=r"search.schedule\[0\]"):
        SearchConfig(schedule=["0.5"])


# ---- pruning -------------------------------------------------------------------------------


@pytest.mark.parametrize("importance", ["magnitude", "taylor"])
def test_prune_shapes_and_fresh_process_reload(model_tok, tiny_data, tmp_path, importance):
    model, tok = model_tok
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = PruneConfig(heads=0.5, ffn=0.5, importance=importance, round_to=8,
                      calibration_data=str(tiny_data) if importance == "taylor" else None)
    batches = calib_batches(tok, tiny_data) if importance == "taylor" else None
    pruned, facts = prune_model(model, tok, cfg, batches)
    # the caller's model is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert facts["heads_per_layer"] == [2, 2] and facts["ffn_per_layer"] == [32, 32]
    for layer in pruned.bert.encoder.layer:
        assert layer.attention.self.query.out_features == 2 * 8
        assert layer.attention.output.dense.in_features == 16
        assert layer.intermediate.dense.out_features == 32 and layer.output.dense.in_features == 32
    assert pruned.config.intermediate_size == 32
    assert {int(k): sorted(v) for k, v in pruned.config.pruned_heads.items()} == \
        {int(k): v for k, v in facts["pruned_heads"].items()}
    ref = logits(pruned, tok)
    pruned.save_pretrained(tmp_path / "p")
    tok.save_pretrained(tmp_path / "p")
    # No manifest: the config.pruned_heads that 4.x replayed is enough for bertpress's loader.
    got = fresh_process_logits(tmp_path / "p", "rebuild")["rebuild"]
    assert torch.allclose(ref, got, atol=1e-5), (ref - got).abs().max()


def test_taylor_uses_the_data(model_tok, tiny_data):
    """Taylor scores come from gradients: the same model pruned with other labels keeps other channels."""
    model, tok = model_tok
    cfg = PruneConfig(heads=0.5, ffn=0.5, round_to=8, calibration_data="x")
    batches = calib_batches(tok, tiny_data)
    flipped = [{**b, "labels": 1 - b["labels"]} for b in batches]
    a, tay = prune_model(model, tok, cfg, batches)
    b, _ = prune_model(model, tok, cfg, flipped)
    assert tay["calibration_batches"] == 3
    assert all(len(h) == 2 for h in tay["pruned_heads"].values())
    wa = [layer.intermediate.dense.weight for layer in a.bert.encoder.layer]
    wb = [layer.intermediate.dense.weight for layer in b.bert.encoder.layer]
    assert wa[0].shape == wb[0].shape
    assert any(not torch.equal(x, y) for x, y in zip(wa, wb)), "Taylor importance ignored the data"


def test_rebuild_without_pruned_heads_matches(ckpt, tmp_path):
    """The transformers-5.x path: fresh model + recorded head indices, no config.pruned_heads replay."""
    cfg = CompressConfig(quantize=QuantizeConfig(scheme="none"),
                         prune=PruneConfig(heads=0.25, ffn=0.5, importance="magnitude", round_to=8))
    art = A.compress(ckpt, cfg, tmp_path / "out", progress=False)
    got = fresh_process_logits(art.path, "rebuild", "load_compressed")
    from bertpress.compress import load_compressed

    model, tok = load_compressed(art.path)
    assert torch.allclose(logits(model, tok), got["rebuild"], atol=1e-5)
    assert torch.allclose(got["rebuild"], got["load_compressed"], atol=1e-6)
    # transformers 5.x's own loader cannot describe removed heads (README "Versions").
    from transformers import AutoModelForSequenceClassification

    with pytest.raises(Exception, match="size mismatch|mismatch"):
        AutoModelForSequenceClassification.from_pretrained(art.path)
    from bertpress import records

    assert records.read(art.manifest.details, "pruning", records.PruningRecord).heads_per_layer == (3, 3)


def test_ffn_width_rounds_to_multiple(model_tok):
    model, tok = model_tok
    _, facts = prune_model(model, tok, PruneConfig(ffn=0.3, importance="magnitude", round_to=16))
    assert facts["ffn_per_layer"] == [48, 48]  # 64 * 0.7 = 44.8 -> nearest multiple of 16


def test_zero_heads_refused(model_tok):
    model, tok = model_tok
    with pytest.raises(InputError, match="would remove all 4 heads"):
        prune_model(model, tok, PruneConfig(heads=0.9, importance="magnitude"))


def test_unsupported_model_type_refused():
    """A family whose adapter says it cannot be pruned (ModernBERT: fused Wqkv + GLU FFN) is refused
    in one line naming why, the prunable families and what works instead."""
    from bertpress.testing import tiny_model

    m, tok = tiny_model("modernbert")
    with pytest.raises(InputError, match=r"cannot prune model type 'modernbert' \(ModernBERT fuses q/k/v into one "
                                         r"Wqkv.*\); pruning supports: bert, distilbert, roberta, xlm-roberta, electra, "
                                         r"deberta-v2, albert, mpnet; int8 quantization \(--quantize dynamic\|static\) "
                                         r"works without pruning"):
        prune_model(m, tok, PruneConfig(heads=0.5, importance="magnitude"))


# ---- quantization --------------------------------------------------------------------------


@pytest.mark.parametrize("scope,expected", [("encoder", 12), ("all", 14)])
def test_dynamic_sqnr_and_layer_count(model_tok, scope, expected):
    model, tok = model_tok
    cfg = QuantizeConfig(scheme="dynamic", scope=scope)
    qmodel, names = Q.quantize_dynamic(model, cfg, Q.int8_formats())
    assert len(names) == expected == Q.count_quantized(qmodel)
    assert Q.count_quantized(model) == 0  # caller's model untouched
    assert sqnr(logits(model, tok), logits(qmodel, tok)) > SQNR_FLOOR_DB


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_static_sqnr_per_method(model_tok, tiny_data, method):
    model, tok = model_tok
    cfg = QuantizeConfig(scheme="static", calibration_data="x", calibration_method=method)
    names = Q.target_linears(model, LinearScope.ENCODER)
    ranges = Q.calibrate(model, calib_batches(tok, tiny_data), names, [CalibrationMethod(method)], cfg,
                         Q.int8_formats())[method]
    assert set(ranges) == set(names)
    for r in ranges.values():
        assert r["input"]["scale"] > 0 and 0 <= r["input"]["zero_point"] <= 255
    qmodel = Q.apply_static(model, ranges)
    assert Q.count_quantized(qmodel) == 12
    assert sqnr(logits(model, tok), logits(qmodel, tok)) > SQNR_FLOOR_DB


def test_static_linear_matches_fake_quant_reference():
    """StaticInt8Linear = fp32 math on the quantize-dequantized input and weights, with inputs in
    the activation range compress calibrates on this CPU (7 bits without VNNI: fbgemm's AVX2
    kernel sums u8 x s8 pairs in int16 and saturates on full 8-bit inputs)."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(48, 24)
    x = torch.randn(3, 7, 48)
    qmax = 127 if Q.int8_formats()["reduce_range"] else 255
    scale = float((x.max() - x.min()) / qmax)
    zp = int(round(float(-x.min() / scale)))
    ranges = {"input": {"scale": scale, "zero_point": zp}, "output": {"scale": 0.1, "zero_point": 128}}
    mod = Q.StaticInt8Linear(lin, ranges, per_channel=True)
    xq = (torch.clamp(torch.round(x / scale) + zp, 0, qmax) - zp) * scale
    wscale = lin.weight.abs().amax(dim=1, keepdim=True) / 127
    wq = torch.clamp(torch.round(lin.weight / wscale), -128, 127) * wscale
    ref = xq @ wq.T + lin.bias
    with torch.no_grad():
        assert torch.allclose(mod(x), ref, atol=1e-4), (mod(x) - ref).abs().max()


def test_int8_formats_follow_the_isa():
    vnni = Q.int8_formats({"avx2": True, "avx512": True, "avx512_vnni": True, "vnni": True, "amx": False})
    avx2 = Q.int8_formats({"avx2": True, "vnni": False, "amx": False})
    assert vnni["reduce_range"] is False and avx2["reduce_range"] is True
    assert vnni["activation_dtype"] == "uint8" and vnni["weight_dtype"] == "int8"
    assert "VNNI" in vnni["why"] and "saturate" in avx2["why"]


@pytest.fixture(scope="module")
def static_artifact(ckpt, tiny_data, tmp_path_factory):
    cfg = CompressConfig(
        quantize=QuantizeConfig(scheme="static", calibration_data=str(tiny_data), calibration_samples=48,
                                calibration_method="auto", batch_size=16),
        prune=PruneConfig(heads=0.5, ffn=0.5, round_to=8, calibration_data=str(tiny_data), calibration_batches=2),
        eval_data=str(tiny_data))
    return A.compress(ckpt, cfg, tmp_path_factory.mktemp("static") / "out", progress=False)


def test_static_artifact_reloads_identically(static_artifact, model_tok):
    art = static_artifact
    q = quant_record(art)
    assert art.kind == "compressed" and q.scheme == "static" and q.num_quantized == 12
    assert set(q.calibration.auto_eval_accuracy) == {"minmax", "entropy", "percentile"}
    assert all(0 <= v <= 1 for v in q.calibration.auto_eval_accuracy.values())  # fractions
    assert q.calibration.method in q.calibration.auto_eval_accuracy
    ranges = json.loads((art.path / Q.RANGES_FILE).read_text())
    assert ranges["method"] == q.calibration.method and sorted(ranges["layers"]) == sorted(q.layers)
    model, tok = A.load_compressed(art.path)
    assert Q.count_quantized(model) == 12
    here = logits(model, tok)
    there = fresh_process_logits(art.path, "load_compressed")["load_compressed"]
    assert torch.allclose(here, there, atol=1e-6)
    # and int8 stays close to the pruned fp32 model it was calibrated on
    from bertpress.models import load_classifier

    fp32, _ = load_classifier(art.path)
    assert sqnr(logits(fp32, tok), here) > SQNR_FLOOR_DB
    m = art.manifest
    assert m.recipe["_type"] == "CompressConfig" and m.lineage["parent_sha256"]
    assert m.details["shapes"] == [{"heads": 2, "head_size": 8, "ffn": 32}] * 2


def test_dynamic_artifact_reloads(ckpt, tmp_path, model_tok, capfd):
    cfg = CompressConfig(quantize=QuantizeConfig(scheme="dynamic", scope="all"))
    capfd.readouterr()
    art = A.compress(ckpt, cfg, tmp_path / "dyn", progress=False)
    assert capfd.readouterr().err == ""  # progress=False: no library bar either ("Writing model shards")
    q = quant_record(art)
    assert q.num_quantized == 14 and q.reduce_range == Q.int8_formats()["reduce_range"]
    model, tok = A.load_compressed(art.path)
    assert Q.count_quantized(model) == 14
    there = fresh_process_logits(art.path, "load_compressed")["load_compressed"]
    assert torch.allclose(logits(model, tok), there, atol=1e-6)
    assert sqnr(logits(model_tok[0], tok), logits(model, tok)) > SQNR_FLOOR_DB


# ---- recovery ------------------------------------------------------------------------------


def test_recover_handler_calls_finetune_recover(ckpt, tiny_data, tmp_path, monkeypatch):
    """Wiring: the pruned student and the unpruned teacher go to finetune.recover with our knobs."""
    calls = {}

    def fake_recover(student, teacher, tokenizer, train, cfg, **kw):
        calls.update(kw, epochs=cfg.epochs, alpha=cfg.alpha, temperature=cfg.temperature, student_heads=student.bert.encoder.layer[0].attention.self.num_attention_heads,
                     teacher_heads=teacher.bert.encoder.layer[0].attention.self.num_attention_heads, n=len(train))
        with torch.no_grad():
            student.classifier.bias.add_(1.0)  # a visible change
        return student

    import bertpress.finetune

    monkeypatch.setattr(bertpress.finetune, "recover", fake_recover, raising=False)
    cfg = CompressConfig(quantize=QuantizeConfig(scheme="none"),
                         prune=PruneConfig(heads=0.5, importance="magnitude"),
                         recover=RecoverConfig(epochs=2.0, samples=40, alpha=0.3, temperature=3.0, data=str(tiny_data)))
    art = A.compress(ckpt, cfg, tmp_path / "rec", progress=False)
    assert calls["student_heads"] == 2 and calls["teacher_heads"] == 4 and calls["n"] == 40
    assert (calls["epochs"], calls["alpha"], calls["temperature"]) == (2.0, 0.3, 3.0)
    assert art.manifest.details["recovery"]["samples"] == 40


def test_recover_for_real(ckpt, tiny_data, tmp_path):
    cfg = CompressConfig(quantize=QuantizeConfig(scheme="none"),
                         prune=PruneConfig(heads=0.5, ffn=0.5, round_to=8, importance="magnitude"),
                         recover=RecoverConfig(epochs=1.0, max_steps=3, batch_size=16, max_length=32,
                                               data=str(tiny_data)))
    art = A.compress(ckpt, cfg, tmp_path / "rec", progress=False)
    assert art.manifest.details["recovery"]["max_steps"] == 3
    got = fresh_process_logits(art.path, "rebuild", "load_compressed")
    assert torch.allclose(got["rebuild"], got["load_compressed"], atol=1e-6)


# ---- search --------------------------------------------------------------------------------


def test_select_prefers_fastest_in_budget_else_most_accurate():
    from bertpress.compress.search import select

    rows = [{"baseline": True, "accuracy": 0.90, "accuracy_drop_points": 0, "latency_ms": 10},
            {"accuracy": 0.895, "accuracy_drop_points": 0.5, "latency_ms": 6},
            {"accuracy": 0.898, "accuracy_drop_points": 0.2, "latency_ms": 8},
            {"accuracy": 0.80, "accuracy_drop_points": 10, "latency_ms": 2}]
    assert select(rows, 1.0) == (1, True)
    assert select(rows, 0.3) == (2, True)
    assert select(rows, 0.1) == (2, False)  # none in budget: most accurate
    # ONNX Runtime search: a row that failed export / the gate is never picked while another exists
    rows[1].update(error="parity gate: max |dlogit| 1.5 > 1", latency_ms=None)
    assert select(rows, 1.0) == (2, True)
    # ...and if none exported, the most accurate in PyTorch is saved, marked as missing the budget
    for r, acc in zip(rows[1:], (0.890, 0.880, 0.895)):
        r.update(error="export failed: x", latency_ms=None, accuracy_pytorch=acc)
    assert select(rows, 100.0) == (3, False)


def _search_cfg(tiny_data, drop):
    return CompressConfig(
        quantize=QuantizeConfig(calibration_data=str(tiny_data), calibration_samples=32),
        prune=PruneConfig(importance="magnitude", round_to=8),
        search=SearchConfig(max_accuracy_drop=drop, schedule=["0:0", "0.5:0.5"],
                            schemes=["none", "dynamic", "static"], latency_min_seconds=0.0, latency_seq_len=32),
        eval_data=str(tiny_data))


def test_search_saves_best_and_table_when_budget_missed(ckpt, tiny_data, tmp_path, monkeypatch):
    from bertpress.compress import evaluate

    real = evaluate.accuracy
    scores = iter([1.0] + [0.5 + i / 100 for i in range(10)])  # the first call scores the uncompressed model

    def fake_accuracy(model, *a, **kw):
        real(model, *a, **kw)  # still runs the model
        return next(scores)

    monkeypatch.setattr(evaluate, "accuracy", fake_accuracy)
    art = A.compress(ckpt, _search_cfg(tiny_data, 0.0), tmp_path / "s", progress=False)
    s = art.manifest.details["search"]
    assert s["met_budget"] is False
    assert len(s["table"]) == 1 + 5  # baseline + 2 ratios x 3 schemes - the baseline combination
    assert {(r["heads"], r["scheme"]) for r in s["table"][1:]} == {
        (0.0, "dynamic"), (0.0, "static"), (0.5, "none"), (0.5, "dynamic"), (0.5, "static")}
    winner = [r for r in s["table"] if r.get("winner")]
    assert len(winner) == 1 and winner[0]["accuracy"] == max(r["accuracy"] for r in s["table"][1:])
    assert all(set(r) >= {"heads", "ffn", "scheme", "accuracy", "latency_ms", "size_bytes"} for r in s["table"])
    assert art.manifest.metrics["met_budget"] is False
    A.load_compressed(art.path)  # the saved candidate is a usable artifact


def test_search_picks_fastest_within_budget(ckpt, tiny_data, tmp_path):
    art = A.compress(ckpt, _search_cfg(tiny_data, 100.0), tmp_path / "s", progress=False)
    s = art.manifest.details["search"]
    assert s["met_budget"] is True
    cands = [r for r in s["table"] if not r.get("baseline")]
    win = [r for r in cands if r.get("winner")][0]
    assert win["latency_ms"] == min(r["latency_ms"] for r in cands)
    # the artifact holds exactly the winner
    assert quant_record(art).scheme == win["scheme"]
    assert art.manifest.details["shapes"][0]["heads"] == win["heads_per_layer"]
    assert from_tagged(s["winner_recipe"]).search is None


def test_search_in_openvino_ranks_the_openvino_exports(ckpt, tiny_data, tmp_path):
    """--search-runtime openvino: every candidate is exported as `bertpress export --format openvino`
    writes it (NNCF int8 from its recipe), gated, and ranked by its OpenVINO accuracy and latency;
    exporting the winner to OpenVINO reproduces the accuracy the search measured."""
    from bertpress.app.search_runtimes import DEPLOY_RUNTIMES  # the composition root passes them in
    from bertpress.export import ExportConfig, export

    cfg = _search_cfg(tiny_data, 100.0)
    cfg = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, runtime="openvino",
                                                              schedule=((0.0, 0.0), (0.5, 0.5)),
                                                              schemes=(Scheme.NONE, Scheme.DYNAMIC)))
    art = A.compress(ckpt, cfg, tmp_path / "s", progress=False, runtimes=DEPLOY_RUNTIMES)
    s = art.manifest.details["search"]
    rows = s["table"]
    cands = rows[1:]
    assert rows[0]["baseline"] and rows[0]["runtime"] == "pytorch"
    assert len(cands) == 4 and all(r["runtime"] == "openvino" and "accuracy_pytorch" in r for r in cands)
    assert all(not r.get("error") and r["latency_ms"] > 0 for r in cands)
    assert s["latency"]["runtime"].startswith("OpenVINO")
    win = next(r for r in cands if r.get("winner"))
    exp = export(art.path, ExportConfig(format="openvino", eval_data=str(tiny_data)), tmp_path / "ov")
    assert s["winner"]["runtime"] == "openvino"
    assert exp.manifest.metrics["accuracy"]["openvino_model.xml"] == pytest.approx(win["accuracy"])


def test_search_in_onnxruntime_ranks_the_exported_models(ckpt, tiny_data, tmp_path, monkeypatch):
    """--search-runtime onnxruntime: every candidate (the unpruned fp32 export included) is exported
    and gated as `bertpress export` would; ORT accuracy and latency rank it; a candidate whose
    export fails stays in the table, untimed, and cannot win; exporting the winner reproduces the
    accuracy the search measured."""
    from bertpress.app import search_runtimes as S  # the composition root's deploy runtimes
    from bertpress.compress.search import format_table
    from bertpress.errors import ArtifactError

    real = S.OnnxTwin.__init__

    def static_fails(self, *a, scheme, **kw):
        if scheme == "static":
            raise ArtifactError("ONNX Runtime static quantization failed (test)")
        real(self, *a, scheme=scheme, **kw)

    monkeypatch.setattr(S.OnnxTwin, "__init__", static_fails)
    from bertpress.export import api as export_api

    real_gate = export_api.gate

    def pruned_fp32_misses_the_gate(run, run_source, model, tokenizer, recipe, *a, **kw):
        report = real_gate(run, run_source, model, tokenizer, recipe, *a, **kw)
        if recipe.scheme == "none" and model.config.intermediate_size < 64:  # the 0.5:0.5 fp32 candidate
            report.update(passed=False, failures=["batch 1 x seq 8: max |dlogit| 2 > 1e-4 (test)"])
        return report

    monkeypatch.setattr(export_api, "gate", pruned_fp32_misses_the_gate)
    cfg = _search_cfg(tiny_data, 100.0)
    cfg = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, runtime="onnxruntime"))
    art = A.compress(ckpt, cfg, tmp_path / "s", progress=False, runtimes=S.DEPLOY_RUNTIMES)
    s = art.manifest.details["search"]
    rows = s["table"]
    assert len(rows) == 1 + 6 and rows[0]["baseline"] and rows[0]["runtime"] == "pytorch"
    cands = rows[1:]
    assert all(r["runtime"] == "onnxruntime" and "accuracy_pytorch" in r for r in cands)
    assert (0.0, "none") in {(r["heads"], r["scheme"]) for r in cands}  # the fp32 export competes
    failed = [r for r in cands if r.get("error")]
    assert sorted((r["heads"], r["scheme"]) for r in failed) == [(0.0, "static"), (0.5, "none"), (0.5, "static")]
    gated = [r for r in failed if r["scheme"] == "none"][0]
    assert gated["error"].startswith("parity gate: batch 1 x seq 8") and "accuracy_pytorch" in gated
    assert all(r["latency_ms"] is None and not r.get("winner") and not r["within_budget"] for r in failed)
    ok = [r for r in cands if not r.get("error")]
    win = [r for r in ok if r.get("winner")][0]
    assert win["latency_ms"] == min(r["latency_ms"] for r in ok) and len(win["latency_rounds_p50_ms"]) == 3
    assert s["winner"]["runtime"] == "onnxruntime" and "ONNX Runtime" in s["latency"]["runtime"]
    assert art.manifest.metrics["speedup_vs_fp32_pytorch_eager"] == pytest.approx(
        rows[0]["latency_ms"] / win["latency_ms"])
    table = format_table(rows)
    assert "not exportable: export failed" in table and "refused by the export gate: parity gate: batch 1" in table
    # `bertpress export` of the saved winner is the model that was measured
    from bertpress.export import ExportConfig, export

    out = export(art.path, ExportConfig(format="onnx", eval_data=str(tiny_data)), tmp_path / "e")
    assert out.manifest.metrics["accuracy"]["model.onnx"] == pytest.approx(win["accuracy"])
    with pytest.raises(ConfigError, match="runtime"):
        SearchConfig(runtime="tensorrt")


# ---- bad input, CLI ------------------------------------------------------------------------


def test_calibration_set_smaller_than_asked(ckpt, tiny_data, tmp_path):
    cfg = CompressConfig(quantize=QuantizeConfig(scheme="static", calibration_data=str(tiny_data),
                                                 calibration_samples=10_000))
    with pytest.raises(InputError, match="has 96 rows but --calibration-samples is 10000"):
        A.compress(ckpt, cfg, tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_eval_labels_must_match_model(ckpt, tmp_path):
    bad = tmp_path / "dev.tsv"
    bad.write_text("sentence\tlabel\ngood film\t0\nbad film\t2\n")
    cfg = CompressConfig(quantize=QuantizeConfig(scheme="dynamic"), eval_data=str(bad))
    with pytest.raises(InputError, match=r"--eval-data .*label '2' is not one of the model's labels"):
        A.compress(ckpt, cfg, tmp_path / "x", progress=False)


def test_output_inside_input_refused_and_input_untouched(ckpt):
    h = tree_hash(ckpt)
    with pytest.raises(InputError, match="inside"):
        A.compress(ckpt, CompressConfig(), ckpt / "sub", progress=False)
    assert tree_hash(ckpt) == h


def test_cli_dynamic_json(ckpt, tmp_path, capsys):
    h = tree_hash(ckpt)
    res = run_cli("compress", str(ckpt), "--out", str(tmp_path / "o"), "--quantize", "dynamic", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["details"]["quantization"]["_type"] == "QuantizationRecord"
    assert data["details"]["quantization"]["_data"]["num_quantized"] == 12
    assert tree_hash(ckpt) == h
    from bertpress.app.cli import main

    assert main(["compress", str(ckpt), "--out", str(tmp_path / "o")]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("args,needle", [
    (["--prune-heads", "1.5", "--importance", "magnitude"], "prune.heads=1.5 is out of range"),
    (["--prune-heads", "0.9", "--importance", "magnitude"], "would remove all 4 heads"),
    (["--prune-heads", "0.5"], "--importance magnitude"),
    (["--quantize", "static"], "--calibration-data"),
    (["--max-accuracy-drop", "1"], "--eval-data"),
    (["--max-accuracy-drop", "1", "--eval-data", "x", "--search-schemes", "none,dynamic", "--importance",
      "magnitude", "--search-schedule", "0:0,0.95:0"], "would remove all 4 heads"),
    (["--quantize", "dynamic", "--search-runtime", "openvino"],
     "--search-runtime only applies to the search; add --max-accuracy-drop POINTS (and --eval-data) to search, "
     "or drop --search-runtime"),
    (["--quantize", "dynamic", "--search-objective", "traffic"], "--search-objective only applies to the search"),
    (["--max-accuracy-drop", "1", "--eval-data", "x", "--search-batch-size", "8"],
     "search.traffic_batch_size=8 sizes the traffic objective's batches; set search.objective: traffic "
     "(--search-objective traffic) or drop it"),
    (["--latency-rounds", "3"], "--latency-rounds only applies to the search"),  # given, even at its default
    (["--max-accuracy-drop", "1", "--eval-data", "x", "--search-objective", "traffic", "--search-batch-size", "0"],
     "search.traffic_batch_size=0 is out of range"),
], ids=["ratio", "zero-heads", "taylor-no-data", "static-no-data", "search-no-eval", "search-zero-heads",
        "search-flag-without-search", "objective-without-search", "batch-size-without-traffic", "batch-size-0",
        "default-value-without-search"])
def test_cli_bad_input_one_line_exit_2(ckpt, tmp_path, args, needle, capsys):
    from bertpress.app.cli import main  # in-process: the fresh-process CLI run is test_cli_dynamic_json

    code = main(["compress", str(ckpt), "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], err
    assert not (tmp_path / "o").exists()


def test_unsupported_checkpoint_type_via_api(tmp_path):
    from transformers import SqueezeBertConfig, SqueezeBertForSequenceClassification

    d = tmp_path / "squeeze"  # a BERT relative with no bertpress family adapter
    SqueezeBertForSequenceClassification(SqueezeBertConfig(vocab_size=50, hidden_size=16, embedding_size=16,
                                                           num_hidden_layers=1, num_attention_heads=2,
                                                           intermediate_size=32)).save_pretrained(d)
    with pytest.raises(InputError, match="model type 'squeezebert' is not supported; supported: bert, distilbert"):
        A.compress(d, CompressConfig(), tmp_path / "o", progress=False)


# ---- every registered method has a test ----------------------------------------------------

METHOD_TESTS = {
    PruneConfig: test_prune_shapes_and_fresh_process_reload,
    RecoverConfig: test_recover_handler_calls_finetune_recover,
    QuantizeConfig: test_static_sqnr_per_method,
}


def test_every_registered_method_has_a_test():
    assert set(A.HANDLERS) == set(METHOD_TESTS)
    # and every scheme / calibration method / importance is exercised above
    assert {s.value for s in Scheme} == {"none", "dynamic", "static"}
    assert {m.value for m in CalibrationMethod} == {"minmax", "entropy", "percentile", "auto"}
    assert {i.value for i in Importance} == {"taylor", "magnitude"}


# ---- real model ----------------------------------------------------------------------------


@pytest.mark.slow
def test_minilm_prune_reload_and_int8(tmp_path):
    """all-MiniLM-L6-v2: 6 of 12 heads and FFN 1536 -> 768 reload in a fresh process; int8 SQNR."""
    from bertpress.models import load_classifier

    model, tok = load_classifier("minilm", num_labels=2)
    pruned, facts = prune_model(model, tok, PruneConfig(heads=0.5, ffn=0.5, importance="magnitude"))
    assert facts["heads_per_layer"] == [6] * 6 and facts["ffn_per_layer"] == [768] * 6
    ref = logits(pruned, tok)
    pruned.save_pretrained(tmp_path / "p")
    tok.save_pretrained(tmp_path / "p")
    assert torch.allclose(ref, fresh_process_logits(tmp_path / "p", "rebuild")["rebuild"], atol=1e-5)
    formats = Q.int8_formats()
    qmodel, names = Q.quantize_dynamic(model, QuantizeConfig(), formats)
    assert len(names) == 36 == Q.count_quantized(qmodel)

    def last_hidden(m):  # the encoder's output: the random classifier head's logits carry little signal
        enc = tok(SENTENCES, return_tensors="pt", padding=True)
        with torch.no_grad():
            return m(**enc, output_hidden_states=True).hidden_states[-1]

    # The last hidden state after six int8 layers, per-channel weights: measured 11.4 dB with full
    # 8-bit activations and 8.4 dB with 7-bit ones on an AMD EPYC with AVX-512 VNNI (the same on
    # the x86, fbgemm and onednn engines), 10.6 dB 7-bit on an AVX2-only EPYC, > 15 dB full on the
    # machine this test was written on. A broken scale lands near or below 0 dB; the floor sits below all.
    ref = last_hidden(model)
    chosen = sqnr(ref, last_hidden(qmodel))
    assert chosen > 7.0
    if not formats["reduce_range"]:
        # VNNI accumulates u8 x s8 in int32, so the full range cannot saturate and must beat
        # PyTorch's 7-bit default (equal figures would mean DynamicInt8LinearFull was not applied).
        seven_bit, _ = Q.quantize_dynamic(model, QuantizeConfig(), {**formats, "reduce_range": True})
        assert chosen > sqnr(ref, last_hidden(seven_bit)) + 1.0


def test_search_traffic_objective_ranks_by_time_per_sentence(ckpt, tiny_data, tmp_path, monkeypatch, capsys):
    """--search-objective traffic: every candidate (and the baseline) is timed on passes over the
    eval texts, length-sorted batches of traffic_batch_size with dynamic padding, tokenization
    included; latency_ms is the pass time per sentence, the speed-up a throughput ratio; the CLI
    prints the winner's sentences/s."""
    from bertpress.compress import evaluate
    from bertpress.signature import tokenize

    passes: list[list[list]] = []  # the chunks of every timed traffic pass, by timer
    stats: list[list] = []  # what each timer returned, round by round
    real = evaluate.traffic_timer

    def spy(run, tokenizer, chunks, **kw):
        passes.append(chunks)
        timer, mine = real(run, tokenizer, chunks, **kw), []
        stats.append(mine)
        return lambda: mine.append(timer()) or mine[-1]

    monkeypatch.setattr(evaluate, "traffic_timer", spy)
    monkeypatch.setattr(evaluate, "latency", lambda *a, **kw: pytest.fail("the latency objective's timer ran"))
    cfg = _search_cfg(tiny_data, 100.0)
    cfg = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, objective="traffic", traffic_batch_size=8,
                                                              schedule=((0.0, 0.0), (0.5, 0.5))))
    art = A.compress(ckpt, cfg, tmp_path / "s", progress=False)
    s = art.manifest.details["search"]
    rows = s["table"]
    assert len(passes) == len(rows) == 1 + 5  # the baseline and every candidate (static int8 in torch too)
    from bertpress.data import load_text_classification

    data = load_text_classification(tiny_data, "dev")
    tok = A.load_compressed(art.path)[1]
    for chunks in passes:
        assert sorted(t for c in chunks for t in c) == sorted(data.examples)
        assert all(len(c) == 8 for c in chunks[:-1])
        lengths = [max(len(ids) for ids in tokenize(tok, c)["input_ids"]) for c in chunks]
        assert lengths == sorted(lengths)
    assert s["latency"]["objective"] == "traffic" and s["latency"]["unit"] == "ms per sentence"
    assert s["latency"]["batch"] == 8 and s["latency"]["sentences"] == len(data)
    for r, rounds in zip(rows, stats):  # a timed call is a pass: its figures are divided by the sentences in it
        assert len(rounds) == 3 and all(st.items_per_call == len(data) for st in rounds)
        assert r["latency_rounds_p50_ms"] == pytest.approx([st.p50_ms / len(data) for st in rounds])
        assert r["latency_min_ms"] == pytest.approx(min(st.min_ms for st in rounds) / len(data))
        assert r["sentences_per_s"] == pytest.approx(1000.0 / r["latency_ms"])
    win = next(r for r in rows if r.get("winner"))
    assert win["latency_ms"] == min(r["latency_ms"] for r in rows[1:])
    w = s["winner_metrics"]
    assert w["objective"] == "traffic" and w["sentences_per_s"] == win["sentences_per_s"]
    assert w["latency_unit"] == "ms per sentence"
    assert w["speedup_vs_fp32_pytorch_eager"] == pytest.approx(win["sentences_per_s"] / rows[0]["sentences_per_s"])
    from bertpress.compress.search import format_table

    assert "| ms/sentence | p50 / min |" in format_table(rows, unit="ms/sentence")
    from bertpress.app.cli import main

    code = main(["compress", str(ckpt), "--out", str(tmp_path / "cli"), "--max-accuracy-drop", "100", "--eval-data",
                 str(tiny_data), "--search-schedule", "0:0", "--search-schemes", "none,dynamic", "--search-objective",
                 "traffic", "--search-batch-size", "4", "--latency-rounds", "1", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    w = json.loads((tmp_path / "cli" / "bertpress.json").read_text())["details"]["search"]["winner_metrics"]
    assert f"traffic: {w['sentences_per_s']:.1f} sentences/s on the eval texts" in out


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_search_traffic_objective_in_a_deploy_runtime_serves_the_export(ckpt, tiny_data, tmp_path, monkeypatch,
                                                                        runtime):
    """The traffic objective with --search-runtime: the exported candidate serves the same passes
    through its own session (the twin's feed -> logits call), the baseline stays PyTorch eager."""
    from bertpress.app.search_runtimes import DEPLOY_RUNTIMES  # the composition root passes them in
    from bertpress.compress import evaluate

    runs: list[tuple[str, int]] = []  # (who ran the pass, batches per pass)
    real = evaluate.traffic_timer

    def spy(run, tokenizer, chunks, **kw):
        runs.append((getattr(run, "__module__", "") or "", len(chunks)))
        return real(run, tokenizer, chunks, **kw)

    monkeypatch.setattr(evaluate, "traffic_timer", spy)
    cfg = _search_cfg(tiny_data, 100.0)
    cfg = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, objective="traffic", traffic_batch_size=16,
                                                              runtime=runtime, schedule=((0.0, 0.0),),
                                                              schemes=(Scheme.NONE,)))
    art = A.compress(ckpt, cfg, tmp_path / "s", progress=False, runtimes=DEPLOY_RUNTIMES)
    rows = art.manifest.details["search"]["table"]
    assert [r["runtime"] for r in rows] == ["pytorch", runtime]
    assert all(r["sentences_per_s"] > 0 for r in rows) and rows[1].get("winner")
    assert len(runs) == 2 and runs[0][0] == "bertpress.signature" and runs[1][0] != "bertpress.signature"
    assert runs[0][1] == runs[1][1] > 1  # the same batches for both


def test_search_flag_help_states_the_config_defaults():
    """The search-only flags have no argparse default (so that one given without the search is
    refused); their help states SearchConfig's default instead, which must be the real one."""
    from bertpress.app.cli import build_parser
    from bertpress.compress.cli import SEARCH_FLAGS

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    helps = {a.dest: a.help for a in sub.choices["compress"]._actions}
    d = SearchConfig()
    walk = SearchConfig(schedule=["0:0"], schemes=None)
    shown = {"schedule": "the automatic search",
             "schemes": f"{','.join(x.value for x in d.scheme_list)} in the automatic search; "
                        f"{','.join(x.value for x in walk.scheme_list)} with --search-schedule",
             "runtime": f"every deploy runtime this host has; {walk.walk_runtime} with --search-schedule",
             "eval_samples": "all", "time_budget": "no limit",
             **{k: ",".join(f"{x:.3g}" for x in getattr(d, k)) for k in ("layers", "ffn", "heads")},
             "latency_threads": "torch's setting", "traffic_batch_size": str(d.traffic_batch),
             "ray_address": "a local Ray runtime sized to this machine",  # None: no cluster to join
             "parallel_trials": "as many as the Ray runtime holds"}  # None: Ray's resources decide
    for flag, dest, field in SEARCH_FLAGS:
        want = shown.get(field, str(getattr(d, field)))
        assert helps[dest].endswith(f"(default: {want})"), (flag, helps[dest], want)


def test_search_without_any_candidate_is_a_config_error():
    from bertpress.errors import ConfigError

    with pytest.raises(ConfigError, match="no candidate besides the uncompressed baseline"):
        SearchConfig(schedule=[(0.0, 0.0)], schemes=["none"])


def test_ffn_pruning_that_rounding_would_cancel_is_refused(model_tok):
    from bertpress.errors import InputError

    model, tok = model_tok  # FFN width 64: rounding to 64 would keep it all
    with pytest.raises(InputError, match="not above --round-to 64"):
        prune_model(model, tok, PruneConfig(ffn=0.5, importance="magnitude", round_to=64))


def test_search_times_candidates_interleaved_and_uses_the_median(ckpt, tiny_data, tmp_path, monkeypatch):
    """Latency is taken after the walk, round-robin over baseline + candidates; a one-round spike
    (another job grabbing the cores) does not decide the winner, the median over rounds does."""
    from bertpress.timing import LatencyStats
    from bertpress.compress import evaluate

    order: list[int] = []
    ids: dict[int, int] = {}

    def fake_latency(model, *a, **kw):
        k = ids.setdefault(id(model), len(ids))
        order.append(k)
        rnd = order.count(k) - 1
        # model 5 (the last candidate) is the fastest except in round 0, where it is hit by a spike
        ms = {5: 1.0 if rnd else 500.0}.get(k, 10.0 + k)
        return LatencyStats(mean_ms=ms, std_ms=0, min_ms=ms, p50_ms=ms, p90_ms=ms, p99_ms=ms, iters=20, total_s=1)

    monkeypatch.setattr(evaluate, "latency", fake_latency)
    cfg = _search_cfg(tiny_data, 100.0)
    cfg = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, latency_rounds=3))
    art = A.compress(ckpt, cfg, tmp_path / "s", progress=False)
    assert order == [0, 1, 2, 3, 4, 5] * 3  # baseline + 5 candidates, three interleaved rounds
    s = art.manifest.details["search"]
    rows = s["table"]
    assert rows[5]["latency_rounds_p50_ms"] == [500.0, 1.0, 1.0] and rows[5]["latency_p50_ms"] == 1.0
    assert rows[5].get("winner") and rows[5]["speedup"] == 10.0
    assert s["latency"]["rounds"] == 3
    with pytest.raises(ConfigError, match="latency_rounds"):
        SearchConfig(latency_rounds=0)
    assert quant_record(art).scheme == rows[5]["scheme"]
