"""Whole-layer removal (`compress --prune-layers`) and intermediate-layer distillation
(`--recover-hidden-weight`): which layers are kept, that every prunable family's shortened model
reloads in a fresh process (plain from_pretrained where no heads were removed), that the kept
layers are the teacher's own, the hidden-state loss itself, and that recovery distils each kept
layer toward the teacher layer it came from. Tiny random models."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bertpress.compress import api as A
from bertpress.compress.config import CompressConfig, PruneConfig, QuantizeConfig, RecoverConfig
from bertpress.compress.prune import plan_layers, prune_model
from bertpress.errors import InputError
from bertpress.testing import TINY_FAMILIES, save_tiny_checkpoint, tiny_model

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["a good film", "the plot was awful and dull", "it is fine"]
LAYER_FAMILIES = [f for f in TINY_FAMILIES if f not in ("modernbert", "albert")]


def _fresh_logits(path: Path, loader: str) -> torch.Tensor:
    code = """
import json, sys, torch
path, loader, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
if loader == "transformers":
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
else:
    from bertpress.models import load_classifier
    model, tok = load_classifier(path)
from bertpress.signature import input_names
enc = tok(texts, return_tensors="pt", padding=True)
with torch.inference_mode():
    print(json.dumps(model(**{k: enc[k] for k in input_names(model)}).logits.tolist()))
"""
    res = subprocess.run([sys.executable, "-c", code, str(path), loader, json.dumps(TEXTS)],
                         capture_output=True, text=True, cwd=REPO, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    return torch.tensor(json.loads(res.stdout.strip().splitlines()[-1]))


def _logits(model, tok) -> torch.Tensor:
    from bertpress.signature import input_names

    enc = tok(TEXTS, return_tensors="pt", padding=True)
    with torch.inference_mode():
        return model(**{k: enc[k] for k in input_names(model)}).logits


@pytest.mark.parametrize("n,ratio,kept", [
    (6, 0.5, [0, 3, 5]), (6, 1 / 3, [0, 2, 3, 5]), (12, 0.5, [0, 2, 4, 7, 9, 11]), (6, 0.8, [0]),
    (4, 0.0, [0, 1, 2, 3]), (4, 0.125, [0, 2, 3]), (12, 2 / 3, [0, 4, 7, 11]), (6, 0.67, [0, 5]),  # 0.5 of a layer rounds up (compress.prune.removed_count)
])
def test_kept_layers_are_spread_evenly_from_the_first_to_the_last(n, ratio, kept):
    model, _ = tiny_model("bert", num_hidden_layers=n)
    assert plan_layers(model, PruneConfig(layers=ratio, importance="magnitude")) == kept


def test_removing_every_layer_or_albert_layers_is_refused():
    model, _ = tiny_model("bert", num_hidden_layers=4)
    with pytest.raises(InputError, match=r"--prune-layers 0.9 would remove all 4 encoder layers \(zero left\); "
                                         r"use a ratio below 0.88"):
        plan_layers(model, PruneConfig(layers=0.9, importance="magnitude"))
    albert, _ = tiny_model("albert", num_hidden_layers=4)
    with pytest.raises(InputError, match="cannot remove layers of model type 'albert': every ALBERT layer runs the "
                                         "same shared weights"):
        plan_layers(albert, PruneConfig(layers=0.5, importance="magnitude"))


@pytest.mark.parametrize("family", LAYER_FAMILIES)
def test_layer_removal_keeps_the_teachers_layers_and_reloads(family, tmp_path):
    """4 -> 2 layers: the student's layers are the teacher's layers 0 and 3 (weights equal), the
    config says 2 layers, and plain from_pretrained in a fresh process gives the same logits."""
    from bertpress.arch import adapter_for

    model, tok = tiny_model(family, num_hidden_layers=4)
    fam = adapter_for(model)
    short, facts = prune_model(model, tok, PruneConfig(layers=0.5, importance="magnitude"))
    assert facts["layers_kept"] == [0, 3] and facts["original"]["layers"] == 4
    assert len(fam.layers(model)) == 4, "the caller's model must stay whole"
    for j, t in enumerate([0, 3]):
        a, b = fam.layers(short)[j].state_dict(), fam.layers(model)[t].state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert getattr(short.config, fam.layers_config_key) == 2
    ref = _logits(short, tok)
    short.save_pretrained(tmp_path / "s")
    tok.save_pretrained(tmp_path / "s")
    got = _fresh_logits(tmp_path / "s", "transformers")
    assert torch.allclose(ref, got, atol=1e-5), (ref - got).abs().max()


def test_layers_heads_and_ffn_together_reload_through_the_manifest(tmp_path):
    ckpt = save_tiny_checkpoint(tmp_path / "ckpt", num_hidden_layers=4, intermediate_size=64)
    cfg = CompressConfig(quantize=QuantizeConfig(scheme="none"),
                         prune=PruneConfig(layers=0.5, heads=0.5, ffn=0.5, importance="magnitude", round_to=8))
    art = A.compress(ckpt, cfg, tmp_path / "out", progress=False)
    from bertpress import records
    from bertpress.compress import load_compressed

    rec = records.read(art.manifest.details, "pruning", records.PruningRecord)
    assert rec.layers_kept == (0, 3) and rec.heads_per_layer == (2, 2) and rec.ffn_per_layer == (32, 32)
    assert set(rec.pruned_heads) <= {"0", "1"}, "head indices must number the kept layers"
    model, tok = load_compressed(art.path)
    assert model.config.num_hidden_layers == 2
    got = _fresh_logits(art.path, "bertpress")
    assert torch.allclose(_logits(model, tok), got, atol=1e-5)


def test_hidden_state_loss():
    from bertpress.finetune.distill import hidden_state_loss

    torch.manual_seed(0)
    teacher = tuple(torch.randn(2, 5, 8) for _ in range(5))  # embeddings + 4 layers
    student = (teacher[0], teacher[2], teacher[4])  # the teacher's layers 1 and 3, exactly
    assert float(hidden_state_loss(student, teacher, [1, 3])) == 0.0
    shifted = (teacher[0], teacher[2] + 1.0, teacher[4])
    assert float(hidden_state_loss(shifted, teacher, [1, 3])) == pytest.approx(0.5)  # (1 + 0) / 2 layers
    mask = torch.ones(2, 5, dtype=torch.long)
    mask[:, 3:] = 0
    noisy_pad = (teacher[0], teacher[2].clone(), teacher[4])
    noisy_pad[1][:, 3:] += 100.0  # padding positions do not count
    assert float(hidden_state_loss(noisy_pad, teacher, [1, 3], mask)) == pytest.approx(0.0)
    with pytest.raises(ValueError, match=r"the student has 2 layers and the teacher 4, but the layer map is \[1\]"):
        hidden_state_loss(student, teacher, [1])
    narrow = (teacher[0][..., :4], teacher[2][..., :4], teacher[4][..., :4])
    with pytest.raises(ValueError, match="needs the same hidden size; the student has 4, the teacher 8"):
        hidden_state_loss(narrow, teacher, [1, 3])


def test_recovery_distils_kept_layers_toward_their_teacher_layers(tmp_path, tiny_data, monkeypatch):
    """compress passes the kept layers as the layer map; the trainer's loss includes the hidden term."""
    from bertpress.finetune import distill

    seen = []
    real = distill.hidden_state_loss

    def spy(student_hidden, teacher_hidden, layer_map, attention_mask=None):
        seen.append((len(student_hidden), len(teacher_hidden), list(layer_map)))
        return real(student_hidden, teacher_hidden, layer_map, attention_mask)

    monkeypatch.setattr(distill, "hidden_state_loss", spy)
    ckpt = save_tiny_checkpoint(tmp_path / "ckpt", num_hidden_layers=4)
    cfg = CompressConfig(quantize=QuantizeConfig(scheme="none"),
                         prune=PruneConfig(layers=0.5, importance="magnitude"),
                         recover=RecoverConfig(epochs=1.0, max_steps=2, batch_size=8, max_length=32,
                                               hidden_weight=1.0, data=str(tiny_data)))
    art = A.compress(ckpt, cfg, tmp_path / "rec", progress=False)
    assert seen and all(s == (3, 5, [0, 3]) for s in seen)
    assert art.manifest.details["recovery"]["hidden_weight"] == 1.0
    assert _fresh_logits(art.path, "transformers").shape == (3, 2)


def test_attention_loss():
    from bertpress.finetune.distill import attention_loss

    torch.manual_seed(0)
    teacher = tuple(torch.softmax(torch.randn(2, 3, 5, 5), -1) for _ in range(4))
    student = (teacher[1], teacher[3])
    assert float(attention_loss(student, teacher, [1, 3])) == pytest.approx(0.0, abs=1e-6)
    other = (teacher[0], teacher[3])
    t, s = teacher[1], teacher[0]
    want = (t * (t.log() - s.log())).sum(-1).mean() / 2  # KL(teacher || student) of layer 0, over 2 layers
    assert float(attention_loss(other, teacher, [1, 3])) == pytest.approx(float(want), rel=1e-5)
    mask = torch.ones(2, 5, dtype=torch.long)
    mask[:, 3:] = 0
    padded = (teacher[1].clone(), teacher[3])
    padded[0][:, :, 3:] = torch.softmax(torch.randn(2, 3, 2, 5), -1)  # padding queries do not count
    assert float(attention_loss(padded, teacher, [1, 3], mask)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match=r"needs a teacher head for every student head; student layer 0 has "
                                         r"attention maps \(2, 2, 5, 5\), teacher layer 1 \(2, 3, 5, 5\)"):
        attention_loss((teacher[1][:, :2], teacher[3]), teacher, [1, 3])
    # Heads pruned: each student head is compared with the teacher head it came from.
    kept = (teacher[1][:, [0, 2]], teacher[3])
    assert float(attention_loss(kept, teacher, [1, 3], head_map=[[0, 2], None])) == pytest.approx(0.0, abs=1e-6)
    assert float(attention_loss(kept, teacher, [1, 3], head_map=[[0, 1], None])) > 1e-3
    with pytest.raises(ValueError, match=r"student layer 0 has 2 heads, but its head map \[0, 3\] does not name "
                                         r"that many of teacher layer 1's 3"):
        attention_loss(kept, teacher, [1, 3], head_map=[[0, 3], None])
    with pytest.raises(ValueError, match=r"the student has 2 layers but the head map lists 1"):
        attention_loss(kept, teacher, [1, 3], head_map=[[0, 2]])


@pytest.mark.parametrize("family", ["bert", "distilbert", "deberta-v2"])
def test_recovery_distils_attention_maps_and_restores_the_models(family, tmp_path, monkeypatch):
    """With attention_weight the trainer adds the attention term for the kept layers' maps (as
    distributions: the student's attention dropout is off), and both models get their attention
    implementation and dropout back afterwards."""
    from bertpress.data import TextDataset
    from bertpress.finetune import distill, recover

    seen = []
    real = distill.attention_loss

    def spy(student_attn, teacher_attn, layer_map, attention_mask=None, head_map=None):
        assert head_map is None  # every head kept
        seen.append((len(student_attn), len(teacher_attn), list(layer_map),
                     float(student_attn[0].sum(-1).mean())))
        return real(student_attn, teacher_attn, layer_map, attention_mask, head_map)

    monkeypatch.setattr(distill, "attention_loss", spy)
    teacher, tok = tiny_model(family, num_hidden_layers=4)
    student, _ = prune_model(teacher, tok, PruneConfig(layers=0.5, importance="magnitude"))
    student.requires_grad_(True)  # pruning leaves it frozen; compress unfreezes it before recovery
    impl = student.config._attn_implementation
    drops = sorted((n, m.p) for n, m in student.named_modules() if isinstance(m, torch.nn.Dropout))
    train = TextDataset(texts=TEXTS * 8, labels=[0, 1, 1] * 8, label_names=["neg", "pos"], source="test")
    dev = TextDataset(texts=["x y"] * 4 + ["a much longer text than the first one"] * 2, labels=[0, 1] * 3,
                      label_names=["neg", "pos"], source="test")  # two eval batches of different lengths
    recover(student, teacher, tok, train, RecoverConfig(epochs=1.0, max_steps=2, batch_size=2, max_length=32,
                                                        attention_weight=1.0, hidden_weight=1.0),
            eval_data=dev, layer_map=[1, 3], progress=False)
    assert set(student.recover_metrics) >= {"accuracy_before", "accuracy_after"}
    # Evaluation gets logits only: the Trainer concatenates what it returns across batches, and
    # [batch, heads, len, len] maps of batches of different lengths do not concatenate.
    from bertpress.finetune.args import training_arguments

    trainer = distill.DistillationTrainer(model=student, args=training_arguments(output_dir=str(tmp_path), use_cpu=True,
                                                                                 report_to="none"),
                                          teacher=teacher, attention_weight=1.0, hidden_weight=1.0, layer_map=[1, 3])
    enc = dict(tok(TEXTS, return_tensors="pt", padding=True))
    student.eval()
    _, out = trainer.compute_loss(student, {**enc, "labels": torch.tensor([0, 1, 1])}, return_outputs=True)
    assert list(out.keys()) == ["logits"]
    assert seen and all(s[:3] == (2, 4, [1, 3]) and s[3] == pytest.approx(1.0, abs=1e-4) for s in seen)
    assert student.config._attn_implementation == impl == teacher.config._attn_implementation
    assert sorted((n, m.p) for n, m in student.named_modules() if isinstance(m, torch.nn.Dropout)) == drops


def test_attention_distillation_with_pruned_heads_and_no_head_map_is_refused_in_one_line():
    from bertpress.data import TextDataset
    from bertpress.finetune import recover

    teacher, tok = tiny_model("bert", num_hidden_layers=2)
    student, _ = prune_model(teacher, tok, PruneConfig(heads=0.5, importance="magnitude"))
    impl = student.config._attn_implementation
    with pytest.raises(InputError, match=r"^recover: attention distillation needs a teacher head for every student "
                                         r"head; .*\(pass head_map when heads were pruned\); drop "
                                         r"--recover-attention-weight \(--recover-hidden-weight works for every "
                                         r"family\)$"):
        recover(student, teacher, tok, TextDataset(texts=TEXTS, labels=[0, 1, 1], label_names=["neg", "pos"], source="test"),
                RecoverConfig(epochs=1.0, max_steps=1, attention_weight=1.0), progress=False)
    assert student.config._attn_implementation == impl


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
def test_head_map_pairs_each_kept_head_with_the_teacher_head_it_came_from(family):
    """Right after head pruning (no layer removed), the first layer sees the teacher's own
    embeddings, so each kept head's attention map is exactly that of the teacher head the map
    names: the loss is 0 there, and any other pairing of the same heads is not."""
    from bertpress.finetune.distill import attention_loss
    from bertpress.records import PruningRecord
    from bertpress.signature import input_names

    torch.manual_seed(0)
    teacher, tok = tiny_model(family, num_hidden_layers=2)
    student, facts = prune_model(teacher, tok, PruneConfig(heads=0.5, importance="magnitude"))
    head_map = PruningRecord(**facts).heads_kept()
    assert [len(h) for h in head_map] == list(facts["heads_per_layer"])
    for m in (student, teacher):
        m.set_attn_implementation("eager")
    enc = dict(tok(TEXTS, return_tensors="pt", padding=True))
    enc = {k: enc[k] for k in input_names(student)}
    with torch.no_grad():
        s_att = student(**enc, output_attentions=True).attentions
        t_att = teacher(**enc, output_attentions=True).attentions
    mask = enc["attention_mask"]
    for i, h in enumerate(head_map[0]):
        torch.testing.assert_close(s_att[0][:, i], t_att[0][:, h], atol=1e-6, rtol=0)
    wrong = list(reversed(head_map[0]))
    assert (s_att[0] - t_att[0][:, wrong]).abs().max() > 1e-3  # another pairing of the same heads differs
    first = attention_loss(s_att[:1], t_att, [0], mask, head_map[:1])
    assert float(first) == pytest.approx(0.0, abs=1e-7)
    assert float(attention_loss(s_att[:1], t_att, [0], mask, [wrong])) > 100 * max(float(first), 1e-9)
    _, ffn_only = prune_model(teacher, tok, PruneConfig(ffn=0.5, round_to=8, importance="magnitude"))
    assert PruningRecord(**ffn_only).heads_kept() is None


def test_compress_distils_attention_over_the_kept_heads(tmp_path, tiny_data, monkeypatch):
    """Layers and heads pruned together: compress passes the kept layers and, per layer, the kept
    heads to the attention term; the student reloads in a fresh process through the manifest."""
    from bertpress.finetune import distill
    from bertpress.records import PruningRecord, read as read_record

    seen = []
    real = distill.attention_loss

    def spy(student_attn, teacher_attn, layer_map, attention_mask=None, head_map=None):
        seen.append((list(layer_map), head_map, [a.shape[1] for a in student_attn]))
        return real(student_attn, teacher_attn, layer_map, attention_mask, head_map)

    monkeypatch.setattr(distill, "attention_loss", spy)
    ckpt = save_tiny_checkpoint(tmp_path / "ckpt", num_hidden_layers=4)
    cfg = CompressConfig(quantize=QuantizeConfig(scheme="none"),
                         prune=PruneConfig(layers=0.5, heads=0.5, importance="magnitude"),
                         recover=RecoverConfig(epochs=1.0, max_steps=2, batch_size=8, max_length=32,
                                               hidden_weight=1.0, attention_weight=1.0, data=str(tiny_data)))
    art = A.compress(ckpt, cfg, tmp_path / "rec", progress=False)
    rec = read_record(art.manifest.details, "pruning", PruningRecord)
    want = rec.heads_kept()
    assert want is not None and all(len(h) == 2 for h in want)
    assert seen and all(s == ([0, 3], want, [2, 2]) for s in seen)
    assert art.manifest.details["recovery"]["attention_weight"] == 1.0
    assert _fresh_logits(art.path, "bertpress").shape == (3, 2)


def test_cli_recover_attention_weight(tmp_path, tiny_data):
    ckpt = save_tiny_checkpoint(tmp_path / "ckpt", num_hidden_layers=4)
    res = subprocess.run([sys.executable, "-m", "bertpress", "compress", str(ckpt), "--out", str(tmp_path / "o"),
                          "--prune-layers", "0.5", "--importance", "magnitude", "--quantize", "none",
                          "--calibration-data", str(tiny_data), "--recover-epochs", "1", "--recover-max-steps", "2",
                          "--recover-attention-weight", "0.5", "--recover-hidden-weight", "1"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    rec = json.loads((tmp_path / "o" / "bertpress.json").read_text())["details"]["recovery"]
    assert rec["attention_weight"] == 0.5 and rec["hidden_weight"] == 1.0 and rec["metrics"]["steps"] == 2
    assert "_attn_implementation" not in json.loads((tmp_path / "o" / "config.json").read_text())


def test_cli_prune_layers(tmp_path):
    from tests.conftest import run_cli

    ckpt = save_tiny_checkpoint(tmp_path / "ckpt", num_hidden_layers=4)
    res = run_cli("compress", str(ckpt), "--out", str(tmp_path / "o"), "--prune-layers", "0.5",
                  "--quantize", "dynamic", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "layers 2 of 4 (kept [0, 3])" in res.stdout
    bad = run_cli("compress", str(ckpt), "--out", str(tmp_path / "o2"), "--prune-layers", "1.0")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "prune.layers=1.0 is out of range" in bad.stderr


def test_shortened_model_exports_fused_with_one_attention_per_kept_layer(tmp_path):
    from bertpress.artifact import Artifact
    from bertpress.export.api import export
    from bertpress.export.config import ExportConfig

    ckpt = save_tiny_checkpoint(tmp_path / "ckpt", num_hidden_layers=4, intermediate_size=64)
    cfg = CompressConfig(quantize=QuantizeConfig(scheme="dynamic"),
                         prune=PruneConfig(layers=0.5, heads=0.25, importance="magnitude"))
    A.compress(ckpt, cfg, tmp_path / "cmp", progress=False)
    export(tmp_path / "cmp", ExportConfig(format="onnx", batch_sizes=(1, 3), seq_lengths=(8, 33)), tmp_path / "exp",
           progress=False)
    man = Artifact.load(tmp_path / "exp").manifest
    assert man.metrics["parity"]
    assert man.details["model"]["fusions"]["Attention"] == 2


def test_search_candidates_with_heads_removed_distil_attention_over_their_kept_heads(tmp_path, tiny_data,
                                                                                       monkeypatch):
    """A search schedule entry that removes heads, with attention distillation on: the candidate is
    recovered with its own head map (no refusal) and listed in the table with its heads."""
    from bertpress.compress.config import SearchConfig
    from bertpress.finetune import distill

    seen = []
    real = distill.attention_loss

    def spy(student_attn, teacher_attn, layer_map, attention_mask=None, head_map=None):
        seen.append(head_map)
        return real(student_attn, teacher_attn, layer_map, attention_mask, head_map)

    monkeypatch.setattr(distill, "attention_loss", spy)
    ckpt = save_tiny_checkpoint(tmp_path / "ckpt", num_hidden_layers=4)
    search = SearchConfig(max_accuracy_drop=100.0, schedule=["0.5:0:0.5"], schemes=["none"],
                          latency_min_seconds=0.0, latency_rounds=1)
    cfg = CompressConfig(quantize=QuantizeConfig(scheme="none"), prune=PruneConfig(importance="magnitude"),
                         recover=RecoverConfig(epochs=1.0, max_steps=1, batch_size=8, max_length=32,
                                               attention_weight=1.0, data=str(tiny_data)),
                         search=search, eval_data=str(tiny_data))
    art = A.compress(ckpt, cfg, tmp_path / "s", progress=False)
    assert seen and all(m is not None and [len(h) for h in m] == [2, 2] for m in seen)
    (row,) = [r for r in art.manifest.details["search"]["table"] if not r.get("baseline")]
    assert (row["heads"], row["heads_per_layer"], row["num_layers"]) == (0.5, 2, 2)


def test_search_schedule_walks_layer_removal(tmp_path, tiny_data):
    """A heads:ffn:layers entry is a candidate like any other: pruned, scored, timed; its row and
    winner recipe carry the layer ratio, and the saved winner has that many layers."""
    from bertpress.compress.config import SearchConfig
    from bertpress.config import from_tagged

    ckpt = save_tiny_checkpoint(tmp_path / "ckpt", num_hidden_layers=4)
    search = SearchConfig(max_accuracy_drop=100.0, schedule=["0:0", "0:0:0.5"], schemes=["none"],
                          latency_min_seconds=0.0, latency_rounds=1)
    assert search.schedule == ((0.0, 0.0), (0.0, 0.0, 0.5))
    cfg = CompressConfig(quantize=QuantizeConfig(scheme="none"), prune=PruneConfig(importance="magnitude"),
                         search=search, eval_data=str(tiny_data))
    art = A.compress(ckpt, cfg, tmp_path / "s", progress=False)
    s = art.manifest.details["search"]
    (row,) = [r for r in s["table"] if not r.get("baseline")]
    assert (row["layers"], row["num_layers"]) == (0.5, 2) and row["winner"]
    assert from_tagged(s["winner_recipe"]).prune.layers == 0.5
    assert len(art.manifest.details["shapes"]) == 2
    with pytest.raises(Exception, match=r"search.schedule\[0\]=\[0.0, 0.0, 0.5, 0.1\] must be heads:ffn or "
                                        r"heads:ffn:layers"):
        SearchConfig(schedule=["0:0:0.5:0.1"])


def test_pruning_without_layer_removal_records_no_kept_layers():
    model, tok = tiny_model("bert", num_hidden_layers=4)
    _, facts = prune_model(model, tok, PruneConfig(heads=0.5, importance="magnitude"))
    assert facts["layers_kept"] == [] and facts["original"]["layers"] == 4


def test_attention_dropout_left_on_is_refused_in_one_line(monkeypatch):
    """If the family's attention dropout is not found (the switch is a name heuristic), the maps are
    no distributions in training mode and recover() refuses before training, settings restored."""
    from bertpress.data import TextDataset
    from bertpress.finetune import distill, recover

    teacher, tok = tiny_model("bert", num_hidden_layers=2)
    for m in teacher.modules():  # strong dropout everywhere, attention probabilities included
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.5
    student, _ = prune_model(teacher, tok, PruneConfig(ffn=0.5, round_to=8, importance="magnitude"))
    monkeypatch.setattr(distill, "without_attention_dropout", lambda model: [])
    impl = student.config._attn_implementation
    with pytest.raises(InputError, match=r"^recover: the attention dropout of bert could not be switched off; "
                                         r"drop --recover-attention-weight"):
        recover(student, teacher, tok, TextDataset(texts=TEXTS * 4, labels=[0, 1, 1] * 4, label_names=["neg", "pos"],
                                                   source="test"), RecoverConfig(epochs=1.0, max_steps=1,
                                                                                 attention_weight=1.0), progress=False)
    assert student.config._attn_implementation == impl


def test_recovery_with_a_progress_bar_prints_no_log_dicts(tmp_path, tiny_data, capsys):
    """The search's recovery runs with its progress bar on; the Trainer's ProgressCallback wrote
    every log dict ({'loss': ..., 'grad_norm': ...}) under the search's bar. The bar stays, the
    dicts go (bertpress.quiet.quiet_trainer, shared with fine-tuning)."""
    ckpt = save_tiny_checkpoint(tmp_path / "ckpt", num_hidden_layers=4)
    cfg = CompressConfig(quantize=QuantizeConfig(scheme="none"),
                         prune=PruneConfig(layers=0.5, importance="magnitude"),
                         recover=RecoverConfig(epochs=1.0, max_steps=6, batch_size=8, max_length=32,
                                               hidden_weight=1.0, data=str(tiny_data)))
    A.compress(ckpt, cfg, tmp_path / "rec", progress=True)
    out = capsys.readouterr()
    assert re.search(r"\b(\d+)/\1 \[", out.err), out.err[-2000:]  # the recovery's own bar was drawn, to the end
    assert "'loss'" not in out.out + out.err and "'grad_norm'" not in out.out + out.err, out.err[-2000:]
