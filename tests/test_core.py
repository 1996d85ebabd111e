"""Core library: manifest, staging, configs, data loading, model loading."""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bertpress.artifact import (
    MANIFEST_NAME,
    Artifact,
    Manifest,
    lineage_of,
    staged_output,
    write_manifest,
)
from bertpress.config import (
    ConfigError,
    as_enum,
    build_config,
    check_range,
    config_hash,
    from_tagged,
    register_config,
    to_tagged,
)
from bertpress.data import load_text_classification
from bertpress.errors import ArtifactError, InputError


# ---- configs --------------------------------------------------------------------------------

class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@register_config(version=2)
@dataclasses.dataclass(frozen=True)
class _Inner:
    ratio: float = 0.5

    def __post_init__(self):
        check_range(self.ratio, "ratio", low=0, high=1, high_inclusive=False)


@register_config()
@dataclasses.dataclass(frozen=True)
class _Outer:
    name: str = "x"
    color: Color = Color.RED
    inner: _Inner = dataclasses.field(default_factory=_Inner)
    sizes: tuple = (1, 2)

    def __post_init__(self):
        object.__setattr__(self, "color", as_enum(Color, self.color, "color"))


def test_config_round_trip_is_tagged_and_versioned():
    cfg = _Outer(name="y", color="blue", inner=_Inner(0.25))
    tagged = to_tagged(cfg)
    assert tagged["_type"] == "_Outer" and tagged["_version"] == 1
    assert tagged["_data"]["color"] == "blue"
    assert tagged["_data"]["inner"] == {"_type": "_Inner", "_version": 2, "_data": {"ratio": 0.25}}
    back = from_tagged(json.loads(json.dumps(tagged)))
    assert back.color is Color.BLUE and back.inner == _Inner(0.25) and back.name == "y"
    assert config_hash(back) == config_hash(cfg)
    assert config_hash(_Outer(name="z")) != config_hash(cfg)


def test_config_errors_name_the_problem():
    with pytest.raises(ConfigError, match="unknown key.*colour.*allowed keys"):
        build_config(_Outer, {"colour": "red"})
    with pytest.raises(ConfigError, match="color='green' is not valid; choose one of: red, blue"):
        _Outer(color="green")
    with pytest.raises(ConfigError, match=r"ratio=1\.5 is out of range"):
        build_config(_Outer, {"inner": {"ratio": 1.5}})
    with pytest.raises(ConfigError, match="newer than this bertpress"):
        from_tagged({"_type": "_Inner", "_version": 3, "_data": {}})
    with pytest.raises(ConfigError, match="unknown config type 'Nope'"):
        from_tagged({"_type": "Nope", "_version": 1, "_data": {}})


# ---- manifest and staging -------------------------------------------------------------------

def test_manifest_round_trip(tmp_path):
    m = Manifest(kind="checkpoint", labels=["neg", "pos"], max_length=128,
                 recipe=to_tagged(_Inner(0.1)), metrics={"dev_accuracy": 0.9})
    written = write_manifest(tmp_path, m)
    loaded = Artifact.load(tmp_path)
    assert loaded.manifest == written
    assert (loaded.manifest.labels, loaded.manifest.recipe, loaded.manifest.metrics) == (m.labels, m.recipe, m.metrics)
    assert loaded.manifest.versions["torch"].startswith("2.")
    assert loaded.manifest.created
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST_NAME]  # no temp files left


def test_manifest_rejects_bad_content(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt manifest"):
        Artifact.load(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"schema_version": 99, "kind": "checkpoint"}))
    with pytest.raises(ArtifactError, match="schema_version 99 is not supported"):
        Artifact.load(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"schema_version": 1, "kind": "weird"}))
    with pytest.raises(ArtifactError, match="kind 'weird'"):
        Artifact.load(tmp_path)
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(ArtifactError, match="bertpress.json is missing"):
        Artifact.load(tmp_path / "unfinished")


def test_staged_output_publishes_only_on_success(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_output(out) as tmp:
            (tmp / "weights.bin").write_text("half")
            raise RuntimeError("crash mid-way")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # the temp dir was removed too
    with staged_output(out) as tmp:
        (tmp / "weights.bin").write_text("full")
        write_manifest(tmp, Manifest(kind="report"))
    assert Artifact.load(out).kind == "report"
    with pytest.raises(InputError, match="exists and is not empty.*--overwrite"):
        with staged_output(out):
            pass
    with staged_output(out, overwrite=True) as tmp:
        write_manifest(tmp, Manifest(kind="onnx"))
    assert Artifact.load(out).kind == "onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_staged_output_refuses_output_inside_input(tmp_path):
    src = tmp_path / "model"
    src.mkdir()
    with pytest.raises(InputError, match="inside .*input"):
        with staged_output(src / "compressed", inputs=(src,)):
            pass
    assert list(src.iterdir()) == []


def test_killed_process_leaves_no_finished_artifact(tmp_path):
    out = tmp_path / "out"
    code = (
        "import os, signal\n"
        "from bertpress.artifact import staged_output\n"
        f"with staged_output({str(out)!r}) as tmp:\n"
        "    (tmp / 'model.safetensors').write_bytes(b'x' * 1000)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode == -9
    assert not out.exists()
    leftovers = list(tmp_path.iterdir())
    assert all(not Artifact.is_finished(p) for p in leftovers)


def test_lineage_records_parent_hash(tiny_checkpoint):
    lin = lineage_of(tiny_checkpoint)
    assert lin["parent_kind"] == "checkpoint"
    assert len(lin["parent_sha256"]) == 64


# ---- data -----------------------------------------------------------------------------------

def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize("name,content,message", [
    ("empty.tsv", "", "the file is empty"),
    ("nocol.tsv", "words\tlabel\nhi\t1\n", "no text column .*--text-column"),
    ("nolabel.tsv", "sentence\tstars\nhi\t1\n", "label column 'label' not found.*--label-column"),
    ("blank.tsv", "sentence\tlabel\ngood\t1\n  \t0\n", r"blank.tsv:3: blank text"),
    ("ragged.tsv", "sentence\tlabel\ngood\t1\nbad\t0\textra\n", r"ragged.tsv:3: 3 fields where the header has 2"),
    ("latin1.tsv", b"sentence\tlabel\ngood\t1\ncaf\xe9\t0\n", r"latin1.tsv:3: bytes that are not UTF-8.*UTF-8"),
    ("header.tsv", "sentence\tlabel\n", "no data rows"),
    ("bad.jsonl", '{"text": "good", "label": 1}\n{oops\n', r"bad.jsonl:2: invalid JSON"),
    ("neg.csv", "text,label\ngood,-1\n", "negative integer labels"),
    ("data.parquet", "x", "unsupported file type"),
])
def test_data_errors_name_file_line_and_fix(tmp_path, name, content, message):
    path = _write(tmp_path / name, content)
    with pytest.raises(InputError, match=message):
        load_text_classification(path)


def test_label_not_in_model_map(tmp_path):
    path = _write(tmp_path / "d.csv", "text,label\ngood,positive\nmeh,neutral\n")
    with pytest.raises(InputError, match=r"d.csv:3: label 'neutral' is not one of the model's labels"):
        load_text_classification(path, label_names=["negative", "positive"])


def test_skip_bad_rows_counts_them(tmp_path):
    path = _write(tmp_path / "d.tsv", "sentence\tlabel\ngood\t1\n\t0\nbad\t0\tx\nfine\t0\n")
    ds = load_text_classification(path, skip_bad_rows=True)
    assert ds.texts == ["good", "fine"] and ds.skipped == 2


def test_formats_and_label_maps(tmp_path):
    csv_ds = load_text_classification(_write(tmp_path / "a.csv", 'text,label\n"a, quoted",pos\nb,neg\n'))
    assert csv_ds.texts == ["a, quoted", "b"] and csv_ds.label_names == ["neg", "pos"]
    assert csv_ds.labels == [1, 0]
    _write(tmp_path / "b.jsonl", '{"text":"x","label":2}\n{"text":"y","label":0}\n')
    with pytest.raises(InputError, match="1 never appears in this split"):  # class 1 would have no training rows
        load_text_classification(tmp_path / "b.jsonl")
    jl = load_text_classification(_write(tmp_path / "c.jsonl", '{"text":"x","label":2}\n{"text":"y","label":0}\n'
                                                               '{"text":"z","label":1}\n'))
    assert jl.label_names == ["0", "1", "2"] and jl.labels == [2, 0, 1]
    # integer labels index a model's named label map
    named = load_text_classification(tmp_path / "b.jsonl", label_names=["a", "b", "c"])
    assert named.labels == [2, 0]
    d = tmp_path / "dir"
    d.mkdir()
    _write(d / "train.tsv", "sentence\tlabel\nx\t0\n")
    _write(d / "validation.csv", "sentence,label\ny,1\n")
    assert load_text_classification(d, "dev").texts == ["y"]
    with pytest.raises(InputError, match="no file for split 'test'"):
        load_text_classification(d, "test")
    with pytest.raises(InputError, match="no such file or directory"):
        load_text_classification(tmp_path / "missing.tsv")


def test_sst2_loads_with_expected_sizes(sst2_dir):
    train = load_text_classification(sst2_dir, "train")
    dev = load_text_classification(sst2_dir, "dev", label_names=train.label_names)
    assert (len(train), len(dev)) == (67349, 872)
    assert train.label_names == ["0", "1"]
    assert set(dev.labels) == {0, 1}
    sub = train.subset(100, seed=1)
    assert len(sub) == 100 and sub.texts == train.subset(100, seed=1).texts


# ---- models ---------------------------------------------------------------------------------

def test_tiny_checkpoint_loads_with_labels(tiny_checkpoint):
    from bertpress.models import layer_shapes, load_classifier

    model, tok = load_classifier(tiny_checkpoint)
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert layer_shapes(model) == [{"heads": 4, "head_size": 8, "ffn": 37}] * 2
    assert tok("good film")["input_ids"][0] == tok.cls_token_id


@pytest.mark.slow
def test_minilm_alias_loads_real_weights_offline():
    import torch
    from safetensors.torch import load_file

    from bertpress.models import alias_path, load_classifier

    model, tok = load_classifier("minilm", labels=["negative", "positive"])
    assert model.config.hidden_size == 384 and model.config.num_hidden_layers == 6
    ref = load_file(str(alias_path("minilm") / "model.safetensors"))
    key = next(k for k in ref if k.endswith("embeddings.word_embeddings.weight"))
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, ref[key])  # real, not random
    assert tok.tokenize("hello world") == ["hello", "world"]


@pytest.mark.parametrize("setup,message", [
    ("missing", "no such model directory"),
    ("file", "give the directory, not a file"),
    ("noconfig", "no config.json"),
    ("badconfig", "corrupt config.json"),
    ("noweights", "no weights"),
    ("truncated", "could not load the model weights"),
])
def test_model_loading_errors(tmp_path, tiny_checkpoint, setup, message):
    import shutil

    from bertpress.models import load_classifier

    target = tmp_path / "m"
    if setup == "file":
        target.write_text("x")
    elif setup == "noconfig":
        target.mkdir()
    elif setup in ("badconfig", "noweights", "truncated"):
        shutil.copytree(tiny_checkpoint, target)
        if setup == "badconfig":
            (target / "config.json").write_text("{")
        elif setup == "noweights":
            (target / "model.safetensors").unlink()
        else:
            w = target / "model.safetensors"
            w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    elif setup == "missing":
        target = "./does/not/exist"
    with pytest.raises((InputError, ArtifactError), match=message):
        load_classifier(target)


def test_pickle_weights_that_run_code_are_refused(tmp_path, tiny_checkpoint):
    """A pytorch_model.bin whose unpickling runs code is refused, and the payload never runs."""
    import pickle
    import shutil

    from bertpress.errors import UnsafeInputError
    from bertpress.models import load_classifier

    target = tmp_path / "evil"
    shutil.copytree(tiny_checkpoint, target)
    (target / "model.safetensors").unlink()
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(target / "pytorch_model.bin", "wb") as f:
        pickle.dump({"w": Payload()}, f)
    with pytest.raises(UnsafeInputError, match="refused to load pickled weights"):
        load_classifier(target)
    assert not marker.exists()


@register_config()
@dataclasses.dataclass(frozen=True)
class _WithOptional:
    inner: "_Inner | None" = None


def test_build_config_builds_optional_nested_dataclasses():
    cfg = build_config(_WithOptional, {"inner": {"ratio": 0.3}})
    assert cfg.inner == _Inner(0.3)
    assert build_config(_WithOptional, {}).inner is None


def test_staged_output_refuses_to_publish_without_manifest(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ArtifactError, match="not published"):
        with staged_output(out) as tmp:
            (tmp / "model.safetensors").write_bytes(b"x")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_write_manifest_does_not_modify_the_callers_manifest(tmp_path):
    m = Manifest(kind="report")
    written = write_manifest(tmp_path, m)
    assert m.versions == {} and m.created == ""
    assert written.versions and written.created


def test_mistyped_local_path_is_named_as_such(tmp_path, monkeypatch):
    """'runs/typo' is also a valid hub id; when neither exists the error says both and points
    at the local directory that does exist."""
    from bertpress.models import load_config

    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=r"runs/typo: no such local directory, and not loadable as a Hugging "
                                         r"Face hub id .*runs/ exists locally but has no typo"):
        load_config("runs/typo")


def test_traffic_batches_sort_by_token_length_and_keep_every_example():
    """signature.traffic_batches (bench's real traffic, compress's traffic objective): stable sort
    by truncated token length, batches of batch_size with a short last one, texts and pairs alike."""
    from bertpress.signature import tokenize, traffic_batches
    from bertpress.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    texts = ["good good good good", "bad", "good bad", "bad bad", "good good good good good good good good"]
    lengths, batches, chunks = traffic_batches(tok, texts, 6, 2)
    assert lengths == [len(ids) for ids in tokenize(tok, texts, truncation=True, max_length=6)["input_ids"]]
    assert max(lengths) == 6  # truncated at max_length
    order = [int(i) for b in batches for i in b]
    assert sorted(order) == list(range(len(texts))) and [len(b) for b in batches] == [2, 2, 1]
    assert [lengths[i] for i in order] == sorted(lengths)
    assert order == sorted(range(len(texts)), key=lambda i: lengths[i])  # stable: ties keep their order
    assert chunks == [[texts[i] for i in b] for b in batches]
    pairs = [(t, "bad") for t in texts]
    _, pair_batches, pair_chunks = traffic_batches(tok, pairs, 128, 4)
    assert all(isinstance(p, tuple) for c in pair_chunks for p in c) and len(pair_batches) == 2
    with pytest.raises(ValueError, match="batch_size=0 must be at least 1"):
        traffic_batches(tok, texts, 6, 0)
