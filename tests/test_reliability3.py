"""Reliability round 3 (issue #31, items 2-6): task facts carried by every path, pruning requests
that remove nothing refused, --seed covering a new head, one label rule, the bundle's predict.py
as an entry point. Tiny random BERTs (bertpress.testing); each test fails on the code before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bertpress.artifact import Manifest
from bertpress.errors import InputError
from bertpress.testing import save_tiny_checkpoint, write_tiny_dataset, write_tiny_pair_dataset

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
              "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
TASK_FACTS = ("task", "labels", "max_length", "columns")  # bertpress.artifact.TASK_FACTS, spelled out
FAST = dict(epochs=1, lr=2e-3, batch_size=16, warmup=0.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one thread for the module


@pytest.fixture(scope="module", params=["single", "pair"])
def model(request, tmp_path_factory):
    """A fine-tuned tiny checkpoint (single texts, or sentence pairs) and its data."""
    from bertpress.finetune import FinetuneConfig, finetune

    d = tmp_path_factory.mktemp(request.param)
    data = (write_tiny_pair_dataset(d / "data", n_train=64, n_dev=32) if request.param == "pair"
            else write_tiny_dataset(d / "data", n_train=64, n_dev=32))
    save_tiny_checkpoint(d / "base", manifest=False)
    ck = finetune(None, FinetuneConfig(model=str(d / "base"), data=str(data), max_length=48, **FAST), d / "ck",
                  progress=False)
    return ck, data, d


# ---- 2. task facts: one place builds a child's from its parent -----------------------------------------


def test_child_of_carries_the_parents_task_facts_and_fills_only_what_it_lacks():
    parent = Manifest(kind="checkpoint", labels=["a", "b"], max_length=40,
                      columns={"text": "s1", "text_pair": "s2", "label": "y"})
    child = Manifest.child_of(parent, kind="compressed", labels=["0", "1"], max_length=512, columns=None)
    assert child.task_facts() == parent.task_facts() and child.kind == "compressed"
    from bertpress.artifact import TASK_FACTS as core

    assert core == TASK_FACTS
    orphan = Manifest.child_of(None, kind="onnx", labels=["x", "y"], max_length=64)
    assert (orphan.labels, orphan.max_length, orphan.columns) == (["x", "y"], 64, None)
    told = Manifest.child_of(parent, kind="onnx", override=("max_length",), max_length=32)
    assert told.max_length == 32 and told.columns == parent.columns


def _search(data):
    from bertpress.compress import CompressConfig, PruneConfig, QuantizeConfig, SearchConfig

    return CompressConfig(quantize=QuantizeConfig(), prune=PruneConfig(importance="magnitude", round_to=8),
                          search=SearchConfig(max_accuracy_drop=100.0, schedule=["0:0", "0.5:0.5"],
                                              schemes=["none", "dynamic"], latency_min_seconds=0.0,
                                              latency_seq_len=16, latency_rounds=1),
                          eval_data=str(data))


def _paths(ck, data):
    """Every path from the checkpoint to a child: (name, stage callable(out) -> Artifact)."""
    from bertpress.compress import CompressConfig, PruneConfig, QuantizeConfig, RecoverConfig, compress
    from bertpress.export import ExportConfig, export

    plain = CompressConfig(quantize=QuantizeConfig(scheme="dynamic"))
    pruned = CompressConfig(prune=PruneConfig(heads=0.5, ffn=0.5, importance="magnitude", round_to=8),
                            recover=RecoverConfig(epochs=1, data=str(data), samples=32, batch_size=16),
                            eval_data=str(data))
    return [
        ("compress", lambda o: compress(ck.path, plain, o, progress=False)),
        ("compress-prune-recover", lambda o: compress(ck.path, pruned, o, progress=False)),
        ("compress-search", lambda o: compress(ck.path, _search(data), o, progress=False)),
        ("export-onnx", lambda o: export(ck.path, ExportConfig(format="onnx"), o, progress=False)),
        ("export-torchscript", lambda o: export(ck.path, ExportConfig(format="torchscript"), o, progress=False)),
        ("search-then-export", lambda o: export(compress(ck.path, _search(data), o.with_name(o.name + "-s"),
                                                         progress=False).path,
                                                ExportConfig(format="onnx"), o, progress=False)),
    ]


def test_every_path_keeps_the_task_facts(model):
    """The property: for every stage and path (search or not, each format), child facts == parent's."""
    ck, data, d = model
    want = {k: getattr(ck.manifest, k) for k in TASK_FACTS}
    assert want["labels"] and want["max_length"] == 48 and want["columns"]
    for name, make in _paths(ck, data):
        child = make(d / name)
        got = {k: getattr(child.manifest, k) for k in TASK_FACTS}
        assert got == want, (name, {k: (got[k], want[k]) for k in TASK_FACTS if got[k] != want[k]})


# ---- 3. a pruning request that removes nothing is refused ------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    return save_tiny_checkpoint(d / "ck"), write_tiny_dataset(d / "data", n_train=64, n_dev=32), d


@pytest.mark.parametrize("kw, pattern", [
    (dict(layers=0.2), r"--prune-layers 0.2 of 2 encoder layers rounds to 0, so it removes nothing; the nearest "
                       r"ratio that removes one is 0.5 \(1 of 2\)"),
    (dict(heads=0.1), r"--prune-heads 0.1 of 4 heads per layer rounds to 0, so it removes nothing; the nearest "
                      r"ratio that removes one is 0.25"),
    (dict(heads=0.12), r"--prune-heads 0.12 of 4 heads per layer rounds to 0"),
    (dict(ffn=0.01, round_to=1), r"--prune-ffn 0.01 removes no FFN channel of 37 .* nearest ratio that removes "
                                 r"some is 0.03"),
])
def test_a_ratio_that_removes_nothing_is_refused(tiny, tmp_path, kw, pattern):
    from bertpress.compress import CompressConfig, PruneConfig, compress
    from bertpress.compress.prune import NothingRemoved

    ck, _, _ = tiny
    with pytest.raises(NothingRemoved, match=pattern):
        compress(ck, CompressConfig(prune=PruneConfig(importance="magnitude", **kw)), tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def test_rounding_rule_is_half_up_and_the_record_counts_what_was_removed(tiny, tmp_path):
    from bertpress.compress import CompressConfig, PruneConfig, compress
    from bertpress.compress.prune import plan_layers, removed_count
    from bertpress.models import load_classifier
    from bertpress import records

    assert [removed_count(r, n) for r, n in ((0.5, 1), (0.25, 2), (0.125, 4), (0.2, 2), (0.375, 4))] == [1, 1, 1, 0, 2]
    m, _ = load_classifier(tiny[0])
    with pytest.raises(InputError, match=r"would remove all 1 encoder layers|would remove all 2"):
        plan_layers(m, PruneConfig(layers=0.75, importance="magnitude"))  # 1.5 -> 2 of 2: all of them
    art = compress(tiny[0], CompressConfig(prune=PruneConfig(heads=0.375, layers=0.25, importance="magnitude",
                                                             round_to=8)), tmp_path / "o", progress=False)
    rec = records.read(art.manifest.details, "pruning", records.PruningRecord)
    assert rec.removed == {"layers": 1, "heads_per_layer": 2, "ffn_per_layer": 0}
    assert rec.heads_per_layer == (2,) and len(rec.layers_kept) == 1


def test_search_skips_a_candidate_that_removes_nothing_with_a_note(tiny, tmp_path):
    from bertpress.compress import CompressConfig, PruneConfig, SearchConfig, compress

    ck, data, _ = tiny
    notes = []
    cfg = CompressConfig(prune=PruneConfig(importance="magnitude", round_to=8),
                         search=SearchConfig(max_accuracy_drop=100.0, schedule=["0.1:0", "0.5:0"], schemes=["none"],
                                             latency_min_seconds=0.0, latency_seq_len=16, latency_rounds=1),
                         eval_data=str(data))
    art = compress(ck, cfg, tmp_path / "o", progress=False, log=notes.append)
    rows = art.manifest.details["search"]["table"]
    assert [(r["heads"], r.get("baseline", False)) for r in rows] == [(0.0, True), (0.5, False)]
    assert any(n.startswith("skipped heads 0.10") and "rounds to 0" in n for n in notes)


# ---- 4. same inputs, same seed, same weights ----------------------------------------------------------------


def _weights(art) -> bytes:
    return (Path(art.path) / "model.safetensors").read_bytes()


def test_two_identical_finetunes_from_an_encoder_publish_identical_weights(tmp_path):
    from bertpress.finetune import FinetuneConfig, finetune

    from bertpress.testing import tiny_bert

    clf, tok = tiny_bert()
    base = tmp_path / "encoder"  # an encoder (BertModel, no head): finetune builds a new classifier head
    clf.bert.save_pretrained(base)
    tok.save_pretrained(base)
    data = write_tiny_dataset(tmp_path / "data", n_train=32, n_dev=16)
    cfg = FinetuneConfig(model=str(base), data=str(data), seed=7, max_length=32, **FAST)
    torch.manual_seed(1)  # whatever the global RNG holds before the run must not matter
    a = finetune(None, cfg, tmp_path / "a", progress=False)
    torch.manual_seed(2)
    b = finetune(None, cfg, tmp_path / "b", progress=False)
    assert _weights(a) == _weights(b)


def test_two_identical_compress_runs_with_recovery_and_searches_publish_identical_weights(tiny, tmp_path):
    from bertpress.compress import CompressConfig, PruneConfig, RecoverConfig, compress

    ck, data, _ = tiny
    rec = CompressConfig(prune=PruneConfig(heads=0.5, importance="magnitude", round_to=8),
                         recover=RecoverConfig(epochs=1, data=str(data), samples=32, batch_size=16, seed=3))
    for name, cfg in (("recover", rec), ("search", _search(data))):
        torch.manual_seed(1)
        a = compress(ck, cfg, tmp_path / f"{name}-a", progress=False)
        torch.manual_seed(2)
        b = compress(ck, cfg, tmp_path / f"{name}-b", progress=False)
        assert _weights(a) == _weights(b), name


# ---- 5. one label rule for ids and names --------------------------------------------------------------------


def test_an_integer_class_with_no_training_rows_is_refused_like_a_name(tmp_path):
    from bertpress.data import load_text_classification

    d = tmp_path / "d"
    d.mkdir()
    (d / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"text {i}\t{(i % 2) * 2}\n" for i in range(20)))
    (d / "dev.tsv").write_text("sentence\tlabel\ntext a\t1\ntext b\t0\n")
    with pytest.raises(InputError, match=r"integer labels run 0..2 but 1 never appears in this split"):
        load_text_classification(str(d), "train")
    (d / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"text {i}\t{['neg', 'pos'][i % 2]}\n"
                                                               for i in range(20)))
    (d / "dev.tsv").write_text("sentence\tlabel\ntext a\tmid\n")
    train = load_text_classification(str(d), "train")
    with pytest.raises(InputError, match=r"label 'mid' is not one of the model's labels"):
        load_text_classification(str(d), "dev", label_names=train.label_names)


# ---- 6. the bundle's predict.py, run as a user runs it -----------------------------------------------------


@pytest.fixture(scope="module")
def bundle(tiny):
    from bertpress.export import ExportConfig, export

    ck, _, d = tiny
    return export(ck, ExportConfig(format="onnx"), d / "onnx", progress=False).path


def _predict(bundle, *args, stdin=b"", timeout=120):
    return subprocess.run([sys.executable, str(bundle / "predict.py"), *args], input=stdin, capture_output=True,
                          env=dict(os.environ, **ONE_THREAD), cwd=bundle.parent, timeout=timeout)


def test_predict_py_matches_the_clis_text_cap():
    from bertpress.data import MAX_TEXT_CHARS, TEXT_COLUMNS

    import importlib.util

    path = Path(__file__).resolve().parents[1] / "export" / "templates" / "predict.py"
    spec = importlib.util.spec_from_file_location("bundle_predict", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # the bundle's script, as shipped: its limits are the CLI's
    assert (mod.MAX_TEXT_CHARS, mod.TEXT_COLUMNS) == (MAX_TEXT_CHARS, TEXT_COLUMNS)


def test_predict_py_caps_a_huge_line(bundle):
    import time

    t0 = time.perf_counter()
    res = _predict(bundle, stdin=b"good " * 2_000_000 + b"\n")  # 10 MB on one line
    assert res.returncode == 0, res.stderr
    assert b"1 text(s) longer than 100000 characters were cut" in res.stderr
    assert len(res.stdout.splitlines()) == 1 and time.perf_counter() - t0 < 30


@pytest.mark.parametrize("stdin, pattern", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", rb"stdin line 1: bytes that are not UTF-8"),
    (b"fine\nbad \xff byte\n", rb"stdin line 2: bytes that are not UTF-8"),
    (b"a\x00b\n", rb"stdin line 1: a NUL byte"),
    (b'{"text": 5}\n', rb"stdin line 1: a JSON line needs the text as a non-empty string under '(sentence|text)'"),
    (b'{"other": "x"}\n', rb"stdin line 1: a JSON line needs the text"),
    (b'{"text": "a"\n', rb"stdin line 1: invalid JSON"),
    (b"\n  \n", rb"no texts: give them as arguments or on stdin"),
])
def test_predict_py_refuses_bad_stdin_in_one_line(bundle, stdin, pattern):
    import re

    res = _predict(bundle, stdin=stdin)
    assert res.returncode == 2 and re.search(pattern, res.stderr), res.stderr
    assert b"Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_predict_py_reads_json_lines_on_a_single_text_model(bundle):
    plain = _predict(bundle, "a superb film", "--json")
    jl = _predict(bundle, "--json", stdin=b'{"sentence": "a superb film"}\n{"text": "a superb film"}\n')
    assert plain.returncode == 0 and jl.returncode == 0, jl.stderr
    one = json.loads(plain.stdout)
    got = [json.loads(line) for line in jl.stdout.splitlines()]
    assert [g["text"] for g in got] == ["a superb film"] * 2 and all(g["top"] == one["top"] for g in got)


def test_predict_py_missing_model_is_one_line(bundle):
    res = _predict(bundle, "--model", "nope.onnx", "x")
    assert res.returncode == 2 and b"no such model file in the bundle" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
