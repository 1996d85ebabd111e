"""Issue #18's classes where the right outcome is correct handling, not a refusal (the refusals
are in the bad-input matrix, the faults in test_faults.py), plus the meta-tests that show each
rule is applied in one place to every member of its class."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import yaml

from bertpress.artifact import Artifact, Manifest, read_json, why_not_replaceable, write_json_atomic, write_manifest
from bertpress.config import registered_configs
from bertpress.data import MAX_TEXT_CHARS, load_text_classification
from bertpress.errors import MAX_MESSAGE_CHARS, ArtifactError, BertpressError, ConfigError, bound, echo
from tests.conftest import run_cli


def _import_all_stages():
    import bertpress.bench  # noqa: F401
    import bertpress.compress  # noqa: F401
    import bertpress.export  # noqa: F401
    import bertpress.finetune  # noqa: F401
    from bertpress.bench import BenchConfig  # noqa: F401 - lazy exports register on access
    from bertpress.compress import CompressConfig  # noqa: F401
    from bertpress.export import ExportConfig  # noqa: F401
    from bertpress.finetune import FinetuneConfig  # noqa: F401


def _float_fields():
    _import_all_stages()
    for name, cls in sorted(registered_configs().items()):
        try:
            default = cls()
        except TypeError:  # typed records (bertpress.records) have required fields: built below
            default = _example_record(cls)
            if default is None:
                continue
        for f in dataclasses.fields(cls):
            value = getattr(default, f.name)
            if isinstance(value, float) and not isinstance(value, bool):
                yield pytest.param(cls, f.name, id=f"{name}.{f.name}")


def _example_record(cls):
    """A valid instance of a registered record with required fields, from its own test helpers."""
    from bertpress import records

    examples = {
        "PruningRecord": lambda: records.PruningRecord(heads_ratio=0.25, ffn_ratio=0.5, importance="magnitude",
                                                       heads_per_layer=(3, 3), head_size=8, ffn_per_layer=(32, 32)),
    }
    try:
        return examples[cls.__name__]() if cls.__name__ in examples else None
    except TypeError:
        return None


@pytest.mark.parametrize("cls,field", list(_float_fields()))
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_every_float_field_of_every_registered_config_rejects_non_finite(cls, field, bad):
    with pytest.raises(ConfigError, match=r"is not a finite number"):
        try:
            base = cls()
        except TypeError:
            base = _example_record(cls)
        dataclasses.replace(base, **{field: bad})


def test_meta_every_registered_config_has_float_fields_covered():
    names = {p.id.split(".")[0] for p in _float_fields()}
    assert {"FinetuneConfig", "ExportConfig", "PruneConfig", "RecoverConfig", "SearchConfig", "BenchConfig"} <= names


def test_nested_non_finite_values_are_rejected_too():
    from bertpress.compress.config import SearchConfig

    with pytest.raises(ConfigError, match="finite"):
        SearchConfig(schedule=((0.0, math.nan),))


def test_manifests_and_results_are_strict_json(tmp_path):
    write_json_atomic(tmp_path / "r.json", {"a": math.nan, "b": [1.0, math.inf], "c": {"d": -math.inf}})
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": {"d": None}}
    write_manifest(tmp_path, Manifest(kind="report", metrics={"loss": math.nan}))
    assert Artifact.load(tmp_path).manifest.metrics == {"loss": None}
    (tmp_path / "bertpress.json").write_text('{"schema_version": 1, "kind": "report", "metrics": {"x": NaN}}')
    with pytest.raises(ArtifactError, match="NaN is not valid JSON"):
        Artifact.load(tmp_path)
    with pytest.raises(ValueError):
        read_json(tmp_path / "bertpress.json")


def test_error_messages_are_bounded_and_keep_the_fix():
    huge = ["x" * 1000] * 100_000
    assert len(echo(huge)) <= 120
    msg = bound("start " + "y" * 100_000 + " the fix")
    assert len(msg) <= MAX_MESSAGE_CHARS + 60 and msg.startswith("start") and msg.endswith("the fix")
    assert len(str(BertpressError("z" * 10_000_000))) < MAX_MESSAGE_CHARS + 60


# ---- data read correctly ------------------------------------------------------------------------


def test_utf8_bom_is_stripped(tmp_path):
    p = tmp_path / "d.tsv"
    p.write_bytes("\ufeffsentence\tlabel\ngood\t1\nbad\t0\n".encode("utf-8"))
    ds = load_text_classification(p)
    assert ds.texts == ["good", "bad"] and ds.labels == [1, 0]


def test_pandas_quoted_tsv_is_reread_with_quoting_and_says_so(tmp_path, capsys):
    import pandas as pd

    p = tmp_path / "d.tsv"
    texts = ['he said "hi"', "tab\there", "new\nline here", "plain"]
    pd.DataFrame({"sentence": texts, "label": [0, 1, 0, 1]}).to_csv(p, sep="\t", index=False)
    ds = load_text_classification(p)
    assert ds.texts == [t.strip() for t in texts] and ds.labels == [0, 1, 0, 1]
    assert "CSV-quoted" in capsys.readouterr().err


def test_glue_style_literal_quotes_are_kept(tmp_path, capsys):
    p = tmp_path / "d.tsv"
    p.write_text('sentence\tlabel\n" the witness " said\t1\nit \'s " great\t0\n"quoted"\t1\n')
    ds = load_text_classification(p)
    assert ds.texts == ['" the witness " said', 'it \'s " great', '"quoted"']
    assert "CSV" not in capsys.readouterr().err


def test_mrpc_dev_reads_literally(sst2_dir):
    mrpc = sst2_dir.parent / "mrpc"
    if not (mrpc / "dev.tsv").is_file():
        pytest.skip("no MRPC data")
    lines = (mrpc / "dev.tsv").read_text(encoding="utf-8").rstrip("\n").count("\n")
    ds = load_text_classification(mrpc, "dev", text_column="sentence1", label_names=["0", "1"])
    assert len(ds) == lines  # every line one row, quotes kept as text


def test_long_texts_are_cut_before_tokenizing_and_counted(tmp_path, capsys):
    p = tmp_path / "d.tsv"
    p.write_text("sentence\tlabel\n" + "word " * 2_000_000 + "\t1\nshort\t0\n" + "x" * (MAX_TEXT_CHARS + 5) + "\t1\n")
    ds = load_text_classification(p)
    assert [len(t) for t in ds.texts] == [MAX_TEXT_CHARS, 5, MAX_TEXT_CHARS]
    assert f"2 text(s) longer than {MAX_TEXT_CHARS} characters were cut" in capsys.readouterr().err


def test_dev_split_may_hold_one_class(tmp_path):
    p = tmp_path / "dev.tsv"
    p.write_text("sentence\tlabel\ngood\t1\n")
    assert load_text_classification(p, "dev").labels == [1]


# ---- models ---------------------------------------------------------------------------------------


def test_a_new_head_is_the_only_thing_initialised_and_it_is_said(tmp_path, tiny_checkpoint, capsys):
    from bertpress.models import load_classifier

    model, _ = load_classifier(tiny_checkpoint, labels=["a", "b", "c"])
    assert model.config.num_labels == 3
    err = capsys.readouterr().err
    assert "initialised a new classification head (resized for the labels; classifier.bias, classifier.weight)" in err


def test_a_tokenizer_that_panics_is_one_error(tmp_path, tiny_checkpoint, monkeypatch):
    from transformers import PreTrainedTokenizerFast

    from bertpress.models import load_tokenizer

    panic = type("PanicException", (BaseException,), {"__module__": "pyo3_runtime"})

    def boom(self, *a, **k):
        raise panic("called `Option::unwrap()` on a `None` value")

    # transformers 5.x: one _encode_plus for single texts and batches (no _batch_encode_plus).
    monkeypatch.setattr(PreTrainedTokenizerFast, "_encode_plus", boom)
    with pytest.raises(ArtifactError, match=r"its tokenizer is broken \(PanicException: called"):
        load_tokenizer(tiny_checkpoint)


# ---- output locations --------------------------------------------------------------------------


def test_out_symlink_writes_to_its_target(tmp_path, tiny_checkpoint):
    target = tmp_path / "real"
    link = tmp_path / "link"
    link.symlink_to(target)
    proc = run_cli("export", str(tiny_checkpoint), "--format", "torchscript", "--out", str(link))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert link.is_symlink() and Artifact.load(target).kind == "torchscript"


def test_recipe_out_with_tilde_is_expanded(tmp_path, monkeypatch):
    from bertpress.app.pipeline import parse_recipe

    monkeypatch.setenv("HOME", str(tmp_path))
    r = parse_recipe({"out": "~/runs/x", "checkpoint": "minilm", "export": {}})
    assert r.out == tmp_path / "runs" / "x"


def test_quickstart_reuses_and_replaces_only_its_own_directory(tmp_path):
    out = tmp_path / "qs"
    for _ in range(2):  # its own recipe.yaml may be rewritten
        proc = run_cli("quickstart", "--out", str(out), "--recipe-only")
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert why_not_replaceable(out) is None
    proc = run_cli("quickstart", "--out", str(out), "--recipe-only", "--overwrite")
    assert proc.returncode == 0, proc.stderr[-2000:]
    recipe = out / "recipe.yaml"
    recipe.write_text(recipe.read_text() + "# my edit\n")  # edited by the user: now theirs
    assert "recipe.yaml was not written by bertpress" in why_not_replaceable(out)
    proc = run_cli("quickstart", "--out", str(out), "--recipe-only")
    assert proc.returncode == 2 and "was not written by bertpress (or was edited since)" in proc.stderr
    assert recipe.read_text().endswith("# my edit\n")


def test_ownership_rule(tmp_path, tiny_checkpoint):
    import shutil

    assert why_not_replaceable(tmp_path / "missing") is None
    (tmp_path / "empty").mkdir()
    assert why_not_replaceable(tmp_path / "empty") is None
    assert why_not_replaceable(tiny_checkpoint) is None  # a finished artifact
    tree = tmp_path / "all"
    shutil.copytree(tiny_checkpoint, tree / "onnx")
    shutil.copytree(tiny_checkpoint, tree / "torchscript")
    (tree / ".torchscript.tmp-123-abc").mkdir()
    assert why_not_replaceable(tree) is None  # export --format all
    (tree / "notes.txt").write_text("mine")
    assert "notes.txt was not written by bertpress" in why_not_replaceable(tree)
    (tmp_path / "f").write_text("x")
    assert "is a file" in why_not_replaceable(tmp_path / "f")
    bad = tmp_path / "bad"
    shutil.copytree(tiny_checkpoint, bad)
    (bad / "bertpress.json").write_text("{")
    assert why_not_replaceable(bad) is not None


def test_run_replaces_its_own_stage_outputs(tmp_path, tiny_checkpoint):
    """A re-run with a changed recipe replaces the stale stage folder it wrote (owned), no flag."""
    out = tmp_path / "run"
    path = tmp_path / "r.yaml"
    for opset in (17, 18):
        path.write_text(yaml.safe_dump({"out": str(out), "checkpoint": str(tiny_checkpoint),
                                        "export": {"format": "onnx", "opset": opset}}))
        proc = run_cli("run", str(path))
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert why_not_replaceable(out) is None


def test_json_output_is_strict(capsys):
    from bertpress.console import print_json

    print_json({"p50": math.nan, "speedup": [math.inf, 1.5]})
    assert json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(c)) == {
        "p50": None, "speedup": [None, 1.5]}
