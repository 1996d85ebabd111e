"""Untrusted checkpoints never run code and never read outside their directory."""

from __future__ import annotations

import json
import shutil

import pytest

from bertpress.errors import ArtifactError, InputError, UnsafeInputError
from tests.conftest import run_cli


def test_remote_code_is_not_run_unless_asked(tmp_path, tiny_checkpoint):
    """A config that asks for custom code (auto_map) is refused; the code never runs."""
    from bertpress.models import load_classifier

    target = tmp_path / "remote"
    shutil.copytree(tiny_checkpoint, target)
    marker = tmp_path / "remote-code-ran"
    (target / "evil_model.py").write_text(
        f"open({str(marker)!r}, 'w').write('x')\n"
        "from transformers import BertConfig\n"
        "class EvilConfig(BertConfig):\n    model_type = 'evil'\n"
    )
    cfg = json.loads((target / "config.json").read_text())
    cfg.update(model_type="evil", auto_map={"AutoConfig": "evil_model.EvilConfig"})
    (target / "config.json").write_text(json.dumps(cfg))
    with pytest.raises((ArtifactError, InputError), match="trust_remote_code|not supported|unusable config"):
        load_classifier(target)
    assert not marker.exists()
    proc = run_cli("inspect", str(target))
    assert proc.returncode == 2 and not marker.exists()


def _onnx_with_external(tmp_path, location: str):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((2, 2), dtype=np.float32), name="W")
    w.data_location = TensorProto.EXTERNAL
    del w.external_data[:]
    for k, v in (("location", location), ("offset", "0"), ("length", "16")):
        entry = w.external_data.add()
        entry.key, entry.value = k, v
    w.ClearField("raw_data")
    node = helper.make_node("MatMul", ["x", "W"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])], [w])
    model = helper.make_model(graph)
    path = tmp_path / "model" / "model.onnx"
    path.parent.mkdir()
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../secret.bin"])
def test_onnx_external_data_outside_its_directory_is_refused(tmp_path, location):
    from bertpress.safety import check_onnx_external_data

    (tmp_path / "secret.bin").write_bytes(b"\0" * 16)
    path = _onnx_with_external(tmp_path, location)
    with pytest.raises(UnsafeInputError, match="outside the model's directory"):
        check_onnx_external_data(path)
    proc = run_cli("inspect", str(path))
    assert proc.returncode == 2 and "outside the model's directory" in proc.stderr


def test_onnx_external_data_inside_its_directory_is_allowed(tmp_path):
    from bertpress.safety import check_onnx_external_data

    path = _onnx_with_external(tmp_path, "weights.bin")
    (path.parent / "weights.bin").write_bytes(b"\0" * 16)
    assert check_onnx_external_data(path) == ["weights.bin"]


def test_bench_refuses_onnx_reading_outside_its_directory(tmp_path):
    from bertpress.bench.runtimes import load_onnx_file

    (tmp_path / "secret.bin").write_bytes(b"\0" * 16)
    path = _onnx_with_external(tmp_path, "../secret.bin")
    with pytest.raises(UnsafeInputError, match="outside the model's directory"):
        load_onnx_file(path, None, 8, "cpu", 1)
