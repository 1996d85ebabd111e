"""Property tests: the data loaders, the manifest reader and the recipe parser never crash with
anything but our documented errors, whatever they are fed."""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertpress.artifact import MANIFEST_NAME, Artifact
from bertpress.data import load_text_classification
from bertpress.errors import ArtifactError, ConfigError, InputError
from bertpress.app.pipeline import parse_recipe

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Text that looks like a data file: headers, separators, quotes, newlines, odd bytes.
cells = st.text(alphabet=string.ascii_letters + string.digits + " \t,\"'\n\r\\{}[]:-é\x00", max_size=20)
rows = st.lists(st.lists(cells, min_size=0, max_size=4), max_size=8)
headers = st.sampled_from(["sentence\tlabel", "text,label", "sentence,label", "label\tsentence",
                           "words\tlabel", "", "sentence"])


def _load(suffix: str, payload: bytes):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"data{suffix}"
        path.write_bytes(payload)
        try:
            ds = load_text_classification(path)
        except InputError:
            return None
        # whatever loads is consistent
        assert len(ds.texts) == len(ds.labels) > 0
        assert all(0 <= lab < len(ds.label_names) for lab in ds.labels)
        assert all(t.strip() for t in ds.texts)
        return ds


@SETTINGS
@given(header=headers, body=rows, sep=st.sampled_from(["\t", ","]), suffix=st.sampled_from([".tsv", ".csv"]))
def test_delimited_loader_only_raises_input_error(header, body, sep, suffix):
    text = header + "\n" + "\n".join(sep.join(r) for r in body)
    _load(suffix, text.encode("utf-8", "surrogatepass"))


@SETTINGS
@given(payload=st.binary(max_size=300), suffix=st.sampled_from([".tsv", ".csv", ".jsonl"]))
def test_loaders_survive_random_bytes(payload, suffix):
    _load(suffix, payload)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)


@SETTINGS
@given(objs=st.lists(st.dictionaries(st.sampled_from(["text", "label", "sentence", "x"]), json_values,
                                     max_size=3) | json_values, max_size=6))
def test_jsonl_loader_only_raises_input_error(objs):
    payload = "\n".join(json.dumps(o) for o in objs).encode()
    _load(".jsonl", payload)


manifest_keys = st.sampled_from(["schema_version", "kind", "task", "labels", "max_length", "recipe",
                                 "lineage", "metrics", "details", "versions", "created", "bogus"])


@SETTINGS
@given(data=st.dictionaries(manifest_keys, json_values, max_size=8) | json_values,
       base=st.booleans())
def test_manifest_reader_only_raises_artifact_error(data, base):
    if base and isinstance(data, dict):
        data = {"schema_version": 1, "kind": "checkpoint", **data}
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / MANIFEST_NAME).write_text(json.dumps(data))
        try:
            art = Artifact.load(d)
        except ArtifactError:
            return
        assert art.kind in ("checkpoint", "compressed", "onnx", "torchscript", "report")


stage_sections = st.dictionaries(
    st.sampled_from(["model", "data", "epochs", "lr", "batch_size", "format", "opset", "quantize",
                     "prune", "search", "eval_data", "devices", "batch_sizes", "threads", "nope"]),
    json_values, max_size=4,
) | json_values


@SETTINGS
@given(recipe=st.dictionaries(st.sampled_from(["out", "checkpoint", "finetune", "compress", "export",
                                               "bench", "zzz"]), stage_sections, max_size=5) | json_values)
def test_recipe_parser_only_raises_config_error(recipe):
    try:
        parse_recipe(recipe, source="fuzz.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.yaml")
