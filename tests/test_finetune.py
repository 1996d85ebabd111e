"""finetune stage: Trainer run, reload in a fresh process, DDP (gloo), kill + resume,
distillation loss, recover(), and every bad input through the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bertpress.artifact import Artifact, partial_dir
from bertpress.app.cli import main as cli_main
from bertpress.config import from_tagged, to_tagged
from bertpress.errors import ConfigError
from bertpress.finetune import FinetuneConfig, RecoverConfig, distillation_loss, finetune, recover
from bertpress.testing import save_tiny_checkpoint, tiny_bert, write_tiny_dataset

REPO = Path(__file__).resolve().parents[1]
# One thread per process: the test machine's cores are shared, and oversubscribed BLAS threads
# made the tiny runs ~10x slower.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
              "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
# Learnable in ~64 steps by a 2-layer, 32-wide BERT (the sentiment word decides the label).
FAST = dict(epochs=4, lr=5e-3, batch_size=16, warmup=0.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one thread for the module


def _env() -> dict:
    return dict(os.environ, **ONE_THREAD)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ft")
    write_tiny_dataset(d / "data", n_train=256, n_dev=64)
    save_tiny_checkpoint(d / "ckpt")
    return d


@pytest.fixture(scope="module")
def trained(work) -> Artifact:
    cfg = FinetuneConfig(model=str(work / "ckpt"), data=str(work / "data"), **FAST)
    return finetune(None, cfg, work / "out", progress=False)


# ---- config --------------------------------------------------------------------------------


def test_config_roundtrip_and_validation():
    cfg = FinetuneConfig(model="minilm", data="d", labels="negative, positive", precision="bf16",
                         eval_every=10, teacher="t")
    assert cfg.labels == ("negative", "positive")
    back = from_tagged(json.loads(json.dumps(to_tagged(cfg))))
    assert back == cfg
    with pytest.raises(ConfigError, match=r"precision='fp8'.*choose one of: auto, fp32, fp16, bf16"):
        FinetuneConfig(precision="fp8")
    with pytest.raises(ConfigError, match="labels"):
        FinetuneConfig(labels=("a", "a"))
    with pytest.raises(ConfigError, match="warmup=1.5"):
        FinetuneConfig(warmup=1.5)


# ---- a real short run ----------------------------------------------------------------------


def test_short_run_learns_and_writes_checkpoint(trained, work):
    m = trained.manifest
    assert trained.kind == "checkpoint" and m.labels == ["negative", "positive"]
    assert m.recipe["_type"] == "FinetuneConfig" and m.max_length == 128
    log = json.loads((trained.path / "training_log.json").read_text())
    losses = [h["loss"] for h in log if "loss" in h]
    assert len(losses) >= 4
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.05  # training loss went down
    per_epoch = m.metrics["dev_accuracy_per_epoch"]
    assert [round(e["epoch"]) for e in per_epoch] == [1, 2, 3, 4]
    assert m.metrics["dev_accuracy"] == max(e["accuracy"] for e in per_epoch) >= 0.8
    assert m.metrics["train_samples_per_s"] > 0 and m.metrics["hardware"]["cpu"]["isa"]
    assert (trained.path / "model.safetensors").is_file()
    assert not list(trained.path.glob("*.bin"))
    assert not partial_dir(trained.path).exists()  # work dir removed after success
    assert not list(trained.path.parent.glob(".out.tmp-*"))


def test_reload_in_fresh_process_gives_same_logits_and_accuracy(trained, work):
    """Plain transformers in a new process: same logits as ours, and the manifest's dev
    accuracy is the accuracy of the saved weights (so the best model is what was saved)."""
    from bertpress.data import load_text_classification
    from bertpress.models import load_classifier

    dev = load_text_classification(work / "data", "dev")
    script = (
        "import sys, json, torch\n"
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n"
        "p, texts = sys.argv[1], json.load(sys.stdin)\n"
        "m = AutoModelForSequenceClassification.from_pretrained(p).eval()\n"
        "t = AutoTokenizer.from_pretrained(p)\n"
        "with torch.no_grad():\n"
        "    out = m(**t(texts, padding=True, truncation=True, max_length=128, return_tensors='pt')).logits\n"
        "print(json.dumps({'logits': out.tolist(), 'id2label': m.config.id2label}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(trained.path)], input=json.dumps(dev.texts),
                          capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    theirs = torch.tensor(res["logits"])
    assert res["id2label"] == {"0": "negative", "1": "positive"}
    model, tok = load_classifier(trained.path)
    with torch.no_grad():
        ours = model(**tok(dev.texts, padding=True, truncation=True, max_length=128, return_tensors="pt")).logits
    assert torch.allclose(ours, theirs, atol=1e-5)
    acc = (theirs.argmax(-1) == torch.tensor(dev.labels)).float().mean().item()
    assert acc == pytest.approx(trained.manifest.metrics["dev_accuracy"], abs=1e-6)


def test_cli_json_and_summary(work, capsys):
    out = work / "cli-out"
    code = cli_main(["finetune", "--model", str(work / "ckpt"), "--data", str(work / "data"),
                     "--out", str(out), "--epochs", "1", "--train-samples", "32", "--no-progress", "--json"])
    assert code == 0
    printed = capsys.readouterr().out
    data = json.loads(printed[printed.index("{\n"):])
    assert data["path"] == str(out) and data["metrics"]["train_samples"] == 32
    from bertpress.finetune.cli import summary_line

    line = summary_line(Artifact.load(out))
    assert line.startswith("finetune: dev accuracy") and str(out) in line and "samples/s" in line


def test_cli_help_is_light():
    code = "import sys, bertpress.finetune, bertpress.finetune.cli; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=180)
    assert proc.stdout.strip() == "False", proc.stderr


# ---- distributed ---------------------------------------------------------------------------


@pytest.mark.distributed
def test_torchrun_two_processes_gloo_write_one_artifact(work, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "bertpress", "finetune", "--model", str(work / "ckpt"), "--data", str(work / "data"),
           "--out", str(out), "--epochs", "1", "--lr", "5e-3", "--batch-size", "16", "--no-progress", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    art = Artifact.load(out)
    assert art.manifest.metrics["hardware"]["world_size"] == 2
    assert art.manifest.details["effective_batch_size"] == 32
    # 256 rows, 16 per rank, 2 ranks: 8 steps per epoch (DDP split the data)
    assert art.manifest.metrics["steps"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]  # no temp or partial dirs left
    assert proc.stdout.count('"path"') == 1  # only rank 0 reported


# ---- kill and resume -----------------------------------------------------------------------


def test_kill_after_checkpoint_then_resume_finishes(work, tmp_path):
    out = tmp_path / "resumed"
    args = ["finetune", "--model", str(work / "ckpt"), "--data", str(work / "data"), "--out", str(out),
            "--epochs", "3", "--lr", "5e-3", "--batch-size", "16", "--eval-every", "8", "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "bertpress", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=_env(), cwd=tmp_path)
    work_dir = out.parent / f".{out.name}.partial-{proc.pid}"  # the run's private work directory
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            if list(work_dir.glob("checkpoint-*/trainer_state.json")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert not out.exists()  # nothing half-written
    done = sorted(int(p.parent.name.split("-")[1]) for p in work_dir.glob("checkpoint-*/trainer_state.json"))
    assert done

    # Changed settings cannot resume this run (also: a real process exits 2 with one line).
    bad = subprocess.run([sys.executable, "-m", "bertpress", *args[:-1], "--seed", "1", "--resume"],
                         capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=300)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --resume: the run in")
    assert "used different settings (seed)" in bad.stderr and bad.stderr.count("\n") == 1

    res = subprocess.run([sys.executable, "-m", "bertpress", *args, "--resume", "--json"],
                         capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    m = Artifact.load(out).manifest.metrics
    assert m["resumed_from_step"] >= done[-1] > 0
    assert m["steps"] == 48 and len(m["dev_accuracy_per_epoch"]) == 6
    assert not work_dir.exists()


# ---- distillation --------------------------------------------------------------------------


def test_distillation_loss_is_ce_at_alpha_zero_and_kl_at_alpha_one():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    y = torch.randint(0, 3, (8,), generator=g)
    ce = torch.nn.functional.cross_entropy(s, y)
    assert torch.allclose(distillation_loss(s, t, y, alpha=0.0, temperature=3.0), ce)
    assert distillation_loss(s, s.clone(), y, alpha=1.0, temperature=2.0).abs() < 1e-6
    T = 2.0
    p_t = torch.softmax(t / T, -1)
    kl = (p_t * (p_t.log() - torch.log_softmax(s / T, -1))).sum(-1).mean() * T * T
    mixed = distillation_loss(s, t, y, alpha=0.3, temperature=T)
    assert torch.allclose(mixed, 0.7 * ce + 0.3 * kl, atol=1e-6)
    with pytest.raises(ValueError, match="same labels"):
        distillation_loss(s, t[:, :2], y)


def test_distillation_loss_finite_and_decreasing_with_a_teacher():
    from bertpress.testing import tiny_sentences

    teacher, tok = tiny_bert(seed=1)
    student, _ = tiny_bert(seed=2, intermediate_size=16)
    texts, labels = tiny_sentences(32)
    enc = tok(texts, padding=True, return_tensors="pt")
    y = torch.tensor(labels)
    with torch.no_grad():
        t_logits = teacher(**enc).logits
    student.train()
    opt = torch.optim.AdamW(student.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = distillation_loss(student(**enc).logits, t_logits, y, alpha=0.5, temperature=2.0)
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.8


def test_finetune_with_teacher(work, trained, tmp_path):
    cfg = FinetuneConfig(model=str(work / "ckpt"), data=str(work / "data"), teacher=str(trained.path),
                         alpha=0.7, temperature=2.0, **FAST)
    art = finetune(None, cfg, tmp_path / "kd", progress=False)
    assert art.manifest.details["distillation"]["alpha"] == 0.7
    assert art.manifest.metrics["dev_accuracy"] >= 0.8  # the trained teacher is worth imitating


def test_recover_pruned_student_moves_toward_teacher(work, trained):
    """A student with other FFN width (as after pruning) is pulled toward the teacher's logits."""
    from bertpress.data import load_text_classification
    from bertpress.models import load_classifier

    teacher, tok = load_classifier(trained.path)
    student, _ = tiny_bert(intermediate_size=20, seed=3)
    train = load_text_classification(work / "data", "train", label_names=["negative", "positive"])
    dev = load_text_classification(work / "data", "dev", label_names=["negative", "positive"])
    enc = tok(dev.texts, padding=True, return_tensors="pt")

    def gap():
        with torch.no_grad():
            return distillation_loss(student(**enc).logits, teacher(**enc).logits, None, 1.0, 1.0).item()

    before = gap()
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    out = recover(student, teacher, tok, train, RecoverConfig(epochs=4, lr=5e-3, batch_size=16, alpha=1.0,
                                                              temperature=1.0), eval_data=dev, progress=False)
    assert out is student and not student.training
    assert gap() < before * 0.5
    assert student.recover_metrics["accuracy_after"] > student.recover_metrics["accuracy_before"]
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_before.items())  # frozen
    # max_steps caps the work.
    recover(student, teacher, tok, train, RecoverConfig(epochs=1.0, max_steps=3), progress=False)
    assert student.recover_metrics["steps"] == 3
    # min_steps is a floor: one epoch of this small set is fewer steps, so training cycles the data.
    per_epoch = -(-len(train) // 16)
    recover(student, teacher, tok, train, RecoverConfig(epochs=1.0, batch_size=16, min_steps=per_epoch + 3),
            progress=False)
    assert student.recover_metrics["steps"] == per_epoch + 3


def test_recovery_step_limit():
    from bertpress.finetune.recovery import step_limit

    assert step_limit(RecoverConfig(epochs=2.0, batch_size=32), 3668, 1) == -1  # the epochs decide
    assert step_limit(RecoverConfig(epochs=2.0, batch_size=32, max_steps=50), 3668, 1) == 50
    assert step_limit(RecoverConfig(epochs=2.0, batch_size=32, min_steps=1000), 3668, 1) == 1000  # 230 < 1000
    assert step_limit(RecoverConfig(epochs=2.0, batch_size=32, min_steps=1000), 67349, 1) == -1  # 4210 >= 1000
    assert step_limit(RecoverConfig(epochs=2.0, batch_size=32, min_steps=1000, max_steps=4000), 67349, 1) == 4000
    assert step_limit(RecoverConfig(epochs=2.0, batch_size=32, min_steps=300), 3668, 2) == 300  # 116 a rank
    with pytest.raises(ConfigError, match=r"recover.min_steps=10 is above recover.max_steps=5: lower "
                                          r"--recover-min-steps or raise --recover-max-steps"):
        RecoverConfig(epochs=1.0, min_steps=10, max_steps=5)


def test_recover_rejects_label_mismatch(work):
    from bertpress.data import load_text_classification
    from bertpress.errors import InputError

    student, tok = tiny_bert()
    teacher, _ = tiny_bert(num_labels=3)
    train = load_text_classification(work / "data", "train")
    with pytest.raises(InputError, match="2 labels but the teacher has 3"):
        recover(student, teacher, tok, train, RecoverConfig(epochs=1.0), progress=False)


# ---- bad input: one line, exit 2, nothing written ------------------------------------------


def _bad_cases(work: Path, tmp: Path):
    busy = tmp / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    three = tmp / "three"
    write_tiny_dataset(three, n_train=8, n_dev=4)
    with open(three / "train.tsv", "a") as f:
        f.write("a film that is quite fine\t2\n")
    empty = tmp / "empty"
    empty.mkdir()
    (empty / "train.tsv").write_text("sentence\tlabel\n")
    (empty / "dev.tsv").write_text("sentence\tlabel\ngood\t1\n")
    teacher3 = save_tiny_checkpoint(tmp / "teacher3", labels=["a", "b", "c"])
    ck, data = str(work / "ckpt"), str(work / "data")
    cases = [
        ("out-not-empty", ["--model", ck, "--data", data, "--out", str(busy)], "exists and is not empty"),
        ("labels-unfit", ["--model", ck, "--data", str(three), "--out", str(tmp / "o1")],
         "label '2' is not one of the model's labels"),
        ("max-length", ["--model", ck, "--data", data, "--out", str(tmp / "o2"), "--max-length", "512"],
         "above the model's 128 position embeddings; use --max-length 128"),
        ("teacher-labels", ["--model", ck, "--data", data, "--out", str(tmp / "o3"), "--teacher", str(teacher3)],
         "has labels ['a', 'b', 'c'] but the student has ['negative', 'positive']"),
        ("empty-train", ["--model", ck, "--data", str(empty), "--out", str(tmp / "o4")], "no data rows"),
        ("single-file", ["--model", ck, "--data", str(work / "data" / "train.tsv"), "--out", str(tmp / "o5")],
         "needs a train and a dev split"),
        ("bad-labels-flag", ["--model", ck, "--data", data, "--out", str(tmp / "o6"), "--labels", "x,y"],
         "is a classifier with labels"),
    ]
    if not torch.cuda.is_available():
        cases.append(("fp16-cpu", ["--model", ck, "--data", data, "--out", str(tmp / "o7"), "--precision", "fp16"],
                      "fp16 needs a CUDA GPU"))
    return cases


def test_bad_inputs_give_one_line_and_exit_2(work, tmp_path, capsys):
    for name, argv, message in _bad_cases(work, tmp_path):
        code = cli_main(["finetune", *argv, "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert code == 2, name
        assert err.startswith("error: ") and message in err and "\n" not in err, (name, err)
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made == ["busy", "empty", "teacher3", "three"]  # no outputs, temp or partial dirs
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["keep.txt"]


def test_compare_padding_script(work, capsys):
    from bertpress.finetune.compare_padding import main

    assert main(["--model", str(work / "ckpt"), "--data", str(work / "data"), "--samples", "48",
                 "--max-length", "64", "--batch-size", "16", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    ours, plain = res["results"]
    assert plain["padded_tokens_per_sample"] == 64.0 and ours["samples"] == plain["samples"] == 48
    assert ours["real_tokens_per_sample"] <= ours["padded_tokens_per_sample"] < 20
    assert set(res) == {"config", "results", "speedup"}  # speed itself is a benchmark's claim, not a test's


# ---- precision -----------------------------------------------------------------------------


def test_bf16_on_cpu_trains(work, tmp_path):
    """bf16 autocast on CPU is allowed (AMX/AVX-512-BF16 CPUs run it natively); weights stay fp32."""
    cfg = FinetuneConfig(model=str(work / "ckpt"), data=str(work / "data"), precision="bf16",
                         epochs=1, lr=5e-3, batch_size=16, train_samples=64)
    art = finetune(None, cfg, tmp_path / "bf16", progress=False)
    from safetensors.torch import load_file

    weights = load_file(str(art.path / "model.safetensors"))
    assert all(v.dtype == torch.float32 for v in weights.values())
    assert art.manifest.details["precision"] == "bf16"


@pytest.mark.parametrize("native, cuda, want", [(True, False, "bf16"), (False, False, "fp32"), (True, True, "fp32")])
def test_auto_precision_is_bf16_only_on_a_cpu_with_native_bf16(native, cuda, want, monkeypatch):
    import bertpress.hardware
    from bertpress.finetune.config import Precision
    from bertpress.finetune.train import resolve_precision

    monkeypatch.setattr(bertpress.hardware, "native_bf16_cpu", lambda: native)
    assert FinetuneConfig().precision is Precision.AUTO
    assert resolve_precision(Precision.AUTO, cuda).value == want
    for explicit in (Precision.FP32, Precision.BF16):
        assert resolve_precision(explicit, cuda) is explicit


def test_auto_precision_records_what_ran(work, tmp_path):
    from bertpress.hardware import native_bf16_cpu

    cfg = FinetuneConfig(model=str(work / "ckpt"), data=str(work / "data"), epochs=1, lr=5e-3, batch_size=16,
                         train_samples=32)
    art = finetune(None, cfg, tmp_path / "auto", progress=False)
    ran = "bf16" if native_bf16_cpu() and not torch.cuda.is_available() else "fp32"
    assert art.manifest.details["precision"] == ran
    assert art.manifest.recipe["_data"]["precision"] == ran


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_run(work, tmp_path):
    cfg = FinetuneConfig(model=str(work / "ckpt"), data=str(work / "data"), precision="bf16", **FAST)
    art = finetune(None, cfg, tmp_path / "gpu", progress=False)
    assert art.manifest.metrics["hardware"]["cuda"]
    assert art.manifest.metrics["dev_accuracy"] >= 0.8
