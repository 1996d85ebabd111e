"""Sentence pairs and many labels through all four stages (issue #15, parts 2 and 3).

Tiny random BERTs and tiny data written by bertpress.testing: pair data in MRPC's layout whose
label only the second text decides (so a model that is not fed pairs cannot learn it), and a
40-class dataset with string label names. One slow test fine-tunes MiniLM on a slice of real MRPC.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bertpress.data import PAIR_COLUMNS, Columns, load_text_classification
from bertpress.errors import InputError
from bertpress.testing import (many_label_names, save_tiny_checkpoint, write_many_label_dataset,
                               write_tiny_pair_dataset)

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
              "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
# Learnable by the 2-layer, 32-wide BERT in 128 steps (measured: dev accuracy 1.0 from epoch 5)
PAIR_FAST = dict(epochs=8, lr=2e-3, batch_size=16, warmup=0.0)
MRPC = Path(__file__).resolve().parents[2] / "shared" / "data" / "mrpc"


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one thread for the module


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ---- data: detection, flags, errors -----------------------------------------------------------------


@pytest.mark.parametrize("first,second", PAIR_COLUMNS, ids=[f"{a}-{b}" for a, b in PAIR_COLUMNS])
def test_pair_columns_are_detected_in_tsv_csv_and_jsonl(tmp_path, first, second):
    rows = [("good film", "a fine movie", "1"), ("dull plot", "it was great", "0")]
    tsv = _write(tmp_path / "d.tsv", f"label\t{first}\t{second}\n" + "".join(f"{l}\t{a}\t{b}\n" for a, b, l in rows))
    csv = _write(tmp_path / "d.csv", f"{second},label,{first}\n" + "".join(f"{b},{l},{a}\n" for a, b, l in rows))
    jsonl = _write(tmp_path / "d.jsonl", "".join(json.dumps({first: a, second: b, "label": int(l)}) + "\n"
                                                 for a, b, l in rows))
    for path in (tsv, csv, jsonl):
        ds = load_text_classification(path)
        assert ds.columns == Columns(first, second, "label"), path
        assert ds.examples == [("good film", "a fine movie"), ("dull plot", "it was great")]
        assert ds.labels == [1, 0] and ds.pairs


def test_pair_flags_override_detection_and_single_text_stays_single(tmp_path):
    p = _write(tmp_path / "d.tsv", "label\tsentence1\tsentence2\tnote\n1\ta\tb\tc\n0\td\te\tf\n")
    assert load_text_classification(p, text_column="sentence1").examples == ["a", "d"]  # one column named: single
    ds = load_text_classification(p, text_column="note", text_pair_column="sentence1")
    assert ds.examples == [("c", "a"), ("f", "d")] and ds.columns == Columns("note", "sentence1", "label")
    # only the second text named: the first is its known partner
    assert load_text_classification(p, text_pair_column="sentence2").examples == [("a", "b"), ("d", "e")]
    # QNLI's question/sentence is a pair, not the single-text column `sentence`
    q = _write(tmp_path / "q.tsv", "question\tsentence\tlabel\nwho?\tme\t0\nwhy?\tso\t1\n")
    assert load_text_classification(q).examples == [("who?", "me"), ("why?", "so")]
    # subsets keep the pairs aligned with their labels
    sub = load_text_classification(p).subset(1, seed=3)
    assert len(sub.text_pairs) == 1 and sub.examples[0] in [("a", "b"), ("d", "e")]


def _err(fn) -> str:
    with pytest.raises(InputError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_pair_data_errors_are_one_line_and_exact(tmp_path):
    p = _write(tmp_path / "d.tsv", "label\tsentence1\tsentence2\n1\ta\tb\n0\tc\t  \n")
    assert _err(lambda: load_text_classification(p)) == (
        f"{p}:3: blank text in column 'sentence2'; fill it in or remove the row")
    assert _err(lambda: load_text_classification(p, text_column="sentence1", text_pair_column="nope")) == (
        f"{p}: text pair column 'nope' not found (columns: ['label', 'sentence1', 'sentence2']); "
        "pass --text-pair-column NAME")
    assert _err(lambda: load_text_classification(p, text_column="sentence1", text_pair_column="sentence1")) == (
        f"{p}: --text-column and --text-pair-column are both 'sentence1'; name two different columns")
    none = _write(tmp_path / "n.tsv", "words\tlabel\nx\t1\n")
    assert _err(lambda: load_text_classification(none)) == (
        f"{none}: no text column (looked for sentence or text, or the pairs sentence1/sentence2, question/sentence, "
        "premise/hypothesis, question1/question2; found ['words', 'label']); pass --text-column NAME (and "
        "--text-pair-column NAME for sentence pairs)")
    first = '{"premise": "a", "hypothesis": "b", "label": 1}\n'
    j = _write(tmp_path / "d.jsonl", first + '{"premise": "c", "hypothesis": 7, "label": 0}\n')
    assert _err(lambda: load_text_classification(j)) == (
        f"{j}:2: text in column 'hypothesis' is a int, not a string; write the text as a string")
    assert load_text_classification(j, "dev", skip_bad_rows=True).skipped == 1
    e = _write(tmp_path / "e.jsonl", first + '{"premise": "c", "label": 0}\n')
    assert _err(lambda: load_text_classification(e)) == (
        f"{e}:2: text pair column 'hypothesis' not found (columns: ['premise', 'label']); "
        "pass --text-pair-column NAME")


def test_model_columns_are_reused_and_a_mismatch_is_refused(tmp_path):
    pair_model = Columns("sentence1", "sentence2", "label")
    single = _write(tmp_path / "s.tsv", "sentence\tlabel\na\t1\nb\t0\n")
    assert _err(lambda: load_text_classification(single, prefer=pair_model)) == (
        f"{single}: the model reads sentence pairs ('sentence1' + 'sentence2') but the data has only the text "
        "column 'sentence' (columns: ['sentence', 'label']); pass --text-column NAME --text-pair-column NAME")
    pairs = _write(tmp_path / "p.tsv", "label\tquestion1\tquestion2\n1\ta\tb\n0\tc\td\n")
    assert _err(lambda: load_text_classification(pairs, prefer=Columns("text", None, "label"))) == (
        f"{pairs}: the model reads single texts ('text') but the data holds sentence pairs ('question1' + "
        "'question2'); pass --text-column NAME to read one column")
    # a pair model given other pair names reads them; custom names recorded by the model are reused
    assert load_text_classification(pairs, prefer=pair_model).examples == [("a", "b"), ("c", "d")]
    custom = _write(tmp_path / "c.tsv", "y\tleft\tright\tsentence\n1\ta\tb\tz\n0\tc\td\tz\n")
    ds = load_text_classification(custom, prefer=Columns("left", "right", "y"))
    assert ds.examples == [("a", "b"), ("c", "d")] and ds.labels == [1, 0]


def test_pair_data_bom_caps_and_quotes(tmp_path, capsys):
    from bertpress.data import MAX_TEXT_CHARS

    long = "x" * (MAX_TEXT_CHARS + 3)
    p = tmp_path / "d.tsv"
    p.write_bytes(("\ufefflabel\tsentence1\tsentence2\n1\t\" the witness \" said\t" + long + "\n0\ta\tb\n")
                  .encode("utf-8"))
    ds = load_text_classification(p)
    assert ds.columns.text == "sentence1"  # the BOM is not part of the header
    assert ds.texts[0] == '" the witness " said'  # GLUE quotes are text
    assert len(ds.text_pairs[0]) == MAX_TEXT_CHARS
    assert "1 text(s) longer than" in capsys.readouterr().err


def test_hub_pair_dataset_keeps_working(monkeypatch):
    """glue/mrpc-style ids go through datasets.load_dataset (patched here: no network)."""
    import datasets

    calls = []

    def fake_load(*args, split):
        calls.append((args, split))
        if split not in ("train", "validation"):
            raise ValueError(f"Unknown split {split}")
        feats = datasets.Features({"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
                                   "label": datasets.ClassLabel(names=["not_equivalent", "equivalent"]),
                                   "idx": datasets.Value("int32")})
        return datasets.Dataset.from_dict({"sentence1": ["a b", "c"], "sentence2": ["d", "e f"], "label": [1, 0],
                                           "idx": [0, 1]}, features=feats)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    ds = load_text_classification("glue/mrpc", "dev")
    assert calls[0][0] == ("glue", "mrpc") and [c[1] for c in calls] == ["dev", "validation"]
    assert ds.examples == [("a b", "d"), ("c", "e f")] and ds.labels == [1, 0]
    assert ds.label_names == ["not_equivalent", "equivalent"] and ds.columns.pairs


def test_manifest_columns_are_validated(tmp_path):
    from bertpress.artifact import Manifest
    from bertpress.errors import ArtifactError

    m = Manifest(kind="checkpoint", columns={"text": "a", "text_pair": None, "label": "label"})
    assert Manifest.from_dict(m.to_dict()).columns == m.columns
    with pytest.raises(ArtifactError, match="manifest columns must be"):
        Manifest(kind="checkpoint", columns={"text": 3, "text_pair": None, "label": "label"})


def test_config_column_fields_are_checked():
    from bertpress.compress.config import CompressConfig
    from bertpress.errors import ConfigError
    from bertpress.finetune.config import FinetuneConfig

    assert FinetuneConfig(text_column="a", text_pair_column="b").text_pair_column == "b"
    with pytest.raises(ConfigError, match="must name different columns"):
        FinetuneConfig(text_column="a", text_pair_column="a")
    with pytest.raises(ConfigError, match=r"text_pair_column='' must be a column name"):
        CompressConfig(text_pair_column="")


# ---- metrics ----------------------------------------------------------------------------------------


def test_metric_helper_matches_hand_computation():
    from bertpress.metrics import classification_metrics

    # binary: gold 1 1 1 0 0 0, pred 1 1 0 1 0 0 -> tp 2, fp 1, fn 1: precision = recall = F1 = 2/3
    m = classification_metrics([1, 1, 0, 1, 0, 0], [1, 1, 1, 0, 0, 0], 2)
    assert m == pytest.approx({"accuracy": 4 / 6, "f1": 2 / 3})
    assert classification_metrics([0, 0], [1, 1], 2) == {"accuracy": 0.0, "f1": 0.0}  # no positive predicted
    # 3 classes: gold 0 0 1 1 2 2, pred 0 1 1 1 2 0
    #   class 0: tp 1 fp 1 fn 1 -> F1 1/2; class 1: tp 2 fp 1 fn 0 -> P 2/3 R 1 F1 4/5; class 2: tp 1 fp 0 fn 1 -> 2/3
    m = classification_metrics([0, 1, 1, 1, 2, 0], [0, 0, 1, 1, 2, 2], 3)
    assert m == pytest.approx({"accuracy": 4 / 6, "macro_f1": (1 / 2 + 4 / 5 + 2 / 3) / 3})
    with pytest.raises(ValueError, match="2 predictions for 3 labels"):
        classification_metrics([0, 1], [0, 1, 1], 2)


# ---- the four stages on pairs -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pairs")
    write_tiny_pair_dataset(d / "pairs", n_train=256, n_dev=64)
    save_tiny_checkpoint(d / "ckpt")
    return d


@pytest.fixture(scope="module")
def pair_ckpt(work):
    from bertpress.finetune import FinetuneConfig, finetune

    cfg = FinetuneConfig(model=str(work / "ckpt"), data=str(work / "pairs"), **PAIR_FAST)
    return finetune(None, cfg, work / "ft", progress=False)


def test_finetune_on_pairs_learns_and_records_columns_and_f1(pair_ckpt):
    m = pair_ckpt.manifest
    assert m.columns == {"text": "sentence1", "text_pair": "sentence2", "label": "label"}
    assert m.details["data"]["inputs"] == "text pairs"
    # the label is in the second text only: >= 0.8 means the pairs reached the model
    assert m.metrics["dev_accuracy"] >= 0.8
    assert 0.0 <= m.metrics["dev_f1"] <= 1.0 and "dev_macro_f1" not in m.metrics
    assert all("f1" in e for e in m.metrics["dev_accuracy_per_epoch"])


def test_compress_static_int8_calibrates_and_evaluates_on_pairs(pair_ckpt, work, monkeypatch):
    import bertpress.signature as signature
    from bertpress.compress import CompressConfig, QuantizeConfig, compress

    seen = []
    real = signature.tokenize

    def spy(tokenizer, examples, **kw):
        seen.append(signature.split_examples(examples)[1] is not None)
        return real(tokenizer, examples, **kw)

    monkeypatch.setattr(signature, "tokenize", spy)
    cfg = CompressConfig(quantize=QuantizeConfig(scheme="static", calibration_data=str(work / "pairs"),
                                                 calibration_samples=32), eval_data=str(work / "pairs"))
    art = compress(pair_ckpt.path, cfg, work / "int8", progress=False)
    assert seen and all(seen)  # calibration and evaluation batches were all pairs
    m = art.manifest
    assert m.columns == pair_ckpt.manifest.columns
    assert m.details["quantization"]["_data"]["scheme"] == "static"
    assert abs(m.metrics["accuracy_drop_points"]) <= 10
    assert {"eval_f1", "eval_f1_uncompressed"} <= set(m.metrics)


def test_search_traffic_objective_serves_pairs(pair_ckpt, work, monkeypatch):
    """--search-objective traffic on a pair model: the passes' batches are (text, text_pair)
    tuples, length-sorted by the pair's tokens and encoded with both texts (token types 0 then 1)."""
    import bertpress.signature as signature
    from bertpress.compress import CompressConfig, PruneConfig, QuantizeConfig, SearchConfig, compress

    fed = []
    real = signature.encode

    def spy(tokenizer, texts, max_length, **kw):
        out = real(tokenizer, texts, max_length, **kw)
        fed.append((list(texts), out))
        return out

    monkeypatch.setattr(signature, "encode", spy)
    cfg = CompressConfig(quantize=QuantizeConfig(), prune=PruneConfig(importance="magnitude", round_to=8),
                         search=SearchConfig(max_accuracy_drop=100.0, schedule=["0:0"], schemes=["dynamic"],
                                             latency_min_seconds=0.0, latency_rounds=1, objective="traffic",
                                             traffic_batch_size=16),
                         eval_data=str(work / "pairs"))
    art = compress(pair_ckpt.path, cfg, work / "traffic", progress=False)
    rows = art.manifest.details["search"]["table"]
    assert len(rows) == 2 and all(r["sentences_per_s"] > 0 for r in rows)
    batches = [(texts, enc) for texts, enc in fed if len(texts) == 16]  # the traffic passes' batches
    assert len(batches) >= 2 * 4  # baseline and candidate, 64 dev pairs in batches of 16, warm-up pass too
    for texts, enc in batches:
        assert all(isinstance(t, tuple) and len(t) == 2 for t in texts)
        assert enc["token_type_ids"].max() == 1
    for i in range(0, len(batches), 4):  # each pass: 4 batches, padded lengths in sorted order
        widths = [enc["input_ids"].shape[1] for _, enc in batches[i:i + 4]]
        assert widths == sorted(widths)


@pytest.fixture(scope="module")
def pair_onnx(pair_ckpt, work):
    from bertpress.export import ExportConfig, export

    return export(pair_ckpt.path, ExportConfig(format="onnx", eval_data=str(work / "pairs")), work / "onnx",
                  progress=False)


def _torch_probs(ckpt: Path, pairs) -> np.ndarray:
    from bertpress.models import load_classifier
    from bertpress.signature import encode, torch_runner

    model, tok = load_classifier(ckpt)
    logits = torch_runner(model)(encode(tok, pairs, 128)).astype(np.float64)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_export_onnx_parity_on_pairs(pair_onnx, pair_ckpt, work):
    from bertpress.ort import runner as ort_runner
    from bertpress.signature import encode

    m = pair_onnx.manifest
    assert m.columns == pair_ckpt.manifest.columns and m.metrics["parity_passed"]
    gate = m.metrics["parity"]["model.onnx"]
    assert gate["agreement"]["n"] == 64 and gate["agreement"]["on"] == "eval texts"
    assert gate["accuracy"]["export"] == pytest.approx(gate["accuracy"]["source"])
    assert gate["f1"]["export"] == pytest.approx(gate["f1"]["source"])
    # pairs of the dev set through the ONNX file match the torch model
    ds = load_text_classification(work / "pairs", "dev")
    from bertpress.models import load_classifier
    from bertpress.signature import torch_runner

    model, tok = load_classifier(pair_ckpt.path)
    feed = encode(tok, ds.examples[:8], 128)
    assert feed["token_type_ids"].max() == 1
    np.testing.assert_allclose(ort_runner(pair_onnx.path / "model.onnx")(feed), torch_runner(model)(feed), atol=1e-4)


def test_predict_py_reads_pairs_in_a_fresh_process(pair_onnx, pair_ckpt, tmp_path):
    predict = str(pair_onnx.path / "predict.py")
    env = dict(os.environ, **ONE_THREAD)
    pairs = [("the plot was", "a superb film"), ("it is very", "the acting was dull")]

    def run(*args, stdin=None):
        return subprocess.run([sys.executable, predict, *args], input=stdin, capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=120)

    two = run(*pairs[0], *pairs[1])
    assert two.returncode == 0, two.stderr
    rows = [line.split("\t") for line in two.stdout.splitlines()]
    assert [tuple(r[2:]) for r in rows] == pairs
    jsonl = run("--json", stdin=json.dumps({"sentence1": pairs[0][0], "sentence2": pairs[0][1]}) + "\n"
                + json.dumps({"text": pairs[1][0], "text_pair": pairs[1][1]}) + "\n")
    assert jsonl.returncode == 0, jsonl.stderr
    got = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [(g["text"], g["text_pair"]) for g in got] == pairs
    tab = run(stdin="".join(f"{a}\t{b}\n" for a, b in pairs))
    assert tab.returncode == 0 and tab.stdout == two.stdout
    probs = _torch_probs(pair_ckpt.path, pairs)
    assert [r[0] for r in rows] == [pair_onnx.manifest.labels[i] for i in probs.argmax(-1)]
    np.testing.assert_allclose([float(r[1]) for r in rows], probs.max(-1), atol=1e-3)
    odd = run("only one text")
    assert odd.returncode == 2 and "give an even number of texts (text text_pair ...), got 1" in odd.stderr
    bad = run(stdin='{"sentence1": "a"}\n')
    assert bad.returncode == 2 and "stdin line 1: a JSON line needs the two texts as 'sentence1'" in bad.stderr


def test_bench_sweep_and_traffic_on_a_pair_model(pair_onnx, pair_ckpt, work, tmp_path):
    from bertpress.bench import BenchConfig, bench
    from bertpress.bench.runtimes import Runner
    from bertpress.models import load_tokenizer

    runner = Runner(load_tokenizer(pair_ckpt.path), 128)
    runner.pairs = True
    feed = runner.synthetic(2, 16, np.random.default_rng(0))
    sep = runner.tokenizer.sep_token_id
    assert feed["input_ids"].shape == (2, 16) and list(np.flatnonzero(feed["input_ids"][0] == sep)) == [8, 15]
    assert list(feed["token_type_ids"][0]) == [0] * 9 + [1] * 7
    from types import SimpleNamespace

    from bertpress.bench.baselines import PipelineRunner
    from bertpress.signature import encode

    for seq in (8, 33, 128):  # the hf-pipeline baseline's pairs tokenize to the asked total length
        rows = PipelineRunner._texts_of_length(SimpleNamespace(pairs=True), 2, seq)
        enc = encode(runner.tokenizer, [(r["text"], r["text_pair"]) for r in rows], seq)
        assert enc["input_ids"].shape == (2, seq) and enc["attention_mask"].all() and enc["token_type_ids"][0, -1] == 1
    cfg = BenchConfig(batch_sizes=(1,), seq_lens=(16,), eval_data=str(work / "pairs"), min_iters=2,
                      min_seconds=0.0, warmup=1, runtimes=("pytorch", "onnxruntime"))
    report = bench([pair_ckpt.path, pair_onnx.path], cfg, tmp_path / "report", progress=False)
    res = report.results
    assert res.eval_data["columns"] == pair_ckpt.manifest.columns
    by_runtime = {v.runtime: v for v in res.variants}
    ref = next(v for v in res.variants if v.role == "reference")
    assert ref.accuracy == pytest.approx(pair_ckpt.manifest.metrics["dev_accuracy"])  # pairs, as trained
    assert ref.f1 == pytest.approx(pair_ckpt.manifest.metrics["dev_f1"])
    assert by_runtime["onnxruntime"].agreement == 1.0 and by_runtime["onnxruntime"].f1 == pytest.approx(ref.f1)
    assert "F1 %" in (report.path / "report.md").read_text()


def test_bench_baselines_take_pairs(pair_ckpt, work, tmp_path):
    """The transformers pipeline gets {"text", "text_pair"}; the optimum-intel anchor (where its
    environment exists) calibrates on pairs and agrees with the fp32 model on them."""
    from bertpress.bench import BenchConfig, bench
    from bertpress.bench.anchors import find_env
    from bertpress.errors import DeviceError

    baselines = ["hf-pipeline"]
    try:
        find_env("optimum-intel")
        baselines.append("optimum-intel")
    except DeviceError:
        pass
    cfg = BenchConfig(batch_sizes=(1,), seq_lens=(16,), eval_data=str(work / "pairs"), min_iters=2,
                      min_seconds=0.0, warmup=1, runtimes=("pytorch",), baselines=tuple(baselines))
    res = bench([pair_ckpt.path], cfg, tmp_path / "report", progress=False).results
    by_runtime = {v.runtime: v for v in res.variants}
    ref = by_runtime["pytorch"]
    assert by_runtime["hf-pipeline"].agreement == 1.0 and by_runtime["hf-pipeline"].f1 == pytest.approx(ref.f1)
    if "optimum-intel" in baselines:
        ov = by_runtime["optimum-intel"]
        assert any("sentence pairs of" in n for n in ov.notes) and ov.agreement >= 0.9


@pytest.fixture(scope="module")
def pair_web(pair_ckpt, work):
    from bertpress.export import ExportConfig, export
    from tests.test_js import _need

    _need("node")
    return export(pair_ckpt.path, ExportConfig(format="web"), work / "site", progress=False).path


def test_web_page_classifies_pairs_in_headless_chromium(pair_web, pair_ckpt, tmp_path):
    import functools
    import http.server
    import threading

    from tests.test_js import _node, _need, _Quiet

    tools = _need("node", "chromium")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(pair_web)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    pairs = [("the plot was", "a superb film"), ("it is very", "the acting was dull")]
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        res = json.loads(_node(["browser-check.mjs", url, str(tmp_path / "page.png"), *("\t".join(p) for p in pairs)],
                               timeout=150, env={"CHROMIUM": tools["chromium"]}))
    finally:
        server.shutdown()
        server.server_close()
    assert res["offsite"] == [] and res["errors"] == [] and res["pair_field"], res
    probs = _torch_probs(pair_ckpt.path, pairs[:1]), _torch_probs(pair_ckpt.path, pairs[1:])
    labels = pair_ckpt.manifest.labels
    for call, p in zip(res["calls"], probs):
        assert call["label"] == labels[int(p[0].argmax())]
        assert call["scores"] == pytest.approx(dict(zip(labels, p[0])), abs=1e-4)


def test_cli_flags_name_the_columns_and_later_stages_reuse_them(work, tmp_path, capsys):
    from bertpress.app.cli import main as cli_main
    from bertpress.artifact import Artifact

    data = tmp_path / "custom"
    for split in ("train", "dev"):
        rows = (work / "pairs" / f"{split}.tsv").read_text().splitlines()[1:33]
        _write(data / f"{split}.tsv", "y\tleft\tright\n" + "".join(r + "\n" for r in rows))
    ft = tmp_path / "ft"
    assert cli_main(["finetune", "--model", str(work / "ckpt"), "--data", str(data), "--text-column", "left",
                     "--text-pair-column", "right", "--label-column", "y", "--epochs", "1", "--out", str(ft),
                     "--no-progress"]) == 0
    assert "dev F1" in capsys.readouterr().err
    want = {"text": "left", "text_pair": "right", "label": "y"}
    assert Artifact.load(ft).manifest.columns == want
    # compress reads its eval data with the checkpoint's columns, no flags needed
    assert cli_main(["compress", str(ft), "--out", str(tmp_path / "c"), "--eval-data", str(data), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "F1:" in out and Artifact.load(tmp_path / "c").manifest.columns == want
    assert cli_main(["compress", str(ft), "--out", str(tmp_path / "c2"), "--eval-data", str(data),
                     "--text-pair-column", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: --eval-data {data}: {data / 'dev.tsv'}: text pair column 'nope' not found (columns: "
                   "['y', 'left', 'right']); pass --text-pair-column NAME") and not (tmp_path / "c2").exists()


def test_quickstart_and_recipes_carry_pair_columns(tmp_path):
    from bertpress.app.pipeline import parse_recipe
    from bertpress.app.quickstart import quickstart_recipe

    mrpc = write_tiny_pair_dataset(tmp_path / "mrpc")
    spec, recipe, note = quickstart_recipe(str(mrpc), tmp_path / "qs", text_column="sentence1",
                                           text_pair_column="sentence2")
    assert recipe["finetune"]["labels"] == ["not_equivalent", "equivalent"] and "MRPC sentence pairs" in note
    parsed = parse_recipe(recipe, source="quickstart")
    ft = parsed.stages["finetune"]
    assert (ft.text_column, ft.text_pair_column) == ("sentence1", "sentence2")
    recipe["bench"]["text_pair_column"] = "sentence2"  # every stage's section takes the column keys
    assert parse_recipe(recipe, source="r").stages["bench"].text_pair_column == "sentence2"


# ---- many labels ------------------------------------------------------------------------------------


def test_forty_string_labels_survive_train_compress_export_predict(tmp_path):
    from bertpress.compress import CompressConfig, QuantizeConfig, compress
    from bertpress.export import ExportConfig, export
    from bertpress.finetune import FinetuneConfig, finetune

    names = many_label_names(40)
    data = write_many_label_dataset(tmp_path / "many", num_labels=40)
    assert names != sorted(names)  # the label map is the model's order, not the data's sorted names
    save_tiny_checkpoint(tmp_path / "ckpt", labels=names)
    cfg = FinetuneConfig(model=str(tmp_path / "ckpt"), data=str(data), epochs=2, lr=5e-3, batch_size=32, warmup=0.0)
    ckpt = finetune(None, cfg, tmp_path / "ft", progress=False)
    assert ckpt.manifest.labels == names
    train = load_text_classification(data, "train", label_names=names)
    assert [names[i] for i in train.labels[:5]] == [line.split("\t")[1] for line in
                                                   (data / "train.tsv").read_text().splitlines()[1:6]]
    assert 0.0 <= ckpt.manifest.metrics["dev_macro_f1"] <= 1.0 and "dev_f1" not in ckpt.manifest.metrics
    hf = json.loads((ckpt.path / "config.json").read_text())
    assert hf["id2label"] == {str(i): n for i, n in enumerate(names)} and hf["label2id"]["bad-z"] == names.index("bad-z")
    small = compress(ckpt.path, CompressConfig(quantize=QuantizeConfig(scheme="dynamic"), eval_data=str(data)),
                     tmp_path / "int8", progress=False)
    assert small.manifest.labels == names and "eval_macro_f1" in small.manifest.metrics
    onnx = export(small.path, ExportConfig(format="onnx", eval_data=str(data), min_agreement=0.0),
                  tmp_path / "onnx", progress=False)
    assert onnx.manifest.labels == names
    assert json.loads((onnx.path / "config.json").read_text())["id2label"]["39"] == names[39]
    assert "macro_f1" in onnx.manifest.metrics["parity"]["model.onnx"]
    ds = load_text_classification(data, "dev", label_names=names)
    proc = subprocess.run([sys.executable, str(onnx.path / "predict.py"), "--json", "--top", "3", *ds.texts[:4]],
                          capture_output=True, text=True, env=dict(os.environ, **ONE_THREAD), timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 4 and all(r["label"] in names and len(r["top"]) == 3 for r in rows)
    assert all(r["top"][0]["label"] == r["label"] for r in rows)


# ---- real MRPC, real MiniLM -------------------------------------------------------------------------


@pytest.mark.slow
def test_minilm_on_a_slice_of_real_mrpc_reports_accuracy_and_f1(tmp_path):
    if not (MRPC / "train.tsv").is_file():
        pytest.skip(f"MRPC data not found at {MRPC}")
    from bertpress.finetune import FinetuneConfig, finetune

    cfg = FinetuneConfig(model="minilm", data=str(MRPC), train_samples=256, epochs=1, lr=5e-5, batch_size=32,
                         max_length=128, labels=("not_equivalent", "equivalent"))
    art = finetune(None, cfg, tmp_path / "ft", progress=False)
    m = art.manifest
    assert m.columns == {"text": "sentence1", "text_pair": "sentence2", "label": "label"}
    assert m.details["data"]["dev_samples"] == 398 and m.labels == ["not_equivalent", "equivalent"]
    assert 0.0 < m.metrics["dev_accuracy"] <= 1.0 and 0.0 <= m.metrics["dev_f1"] <= 1.0
    assert m.metrics["dev_accuracy_per_epoch"][-1]["f1"] == pytest.approx(m.metrics["dev_f1"])
