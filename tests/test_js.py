"""The edge bundle from JavaScript: transformers.js's layout, `--format web`, and the real npm
packages (onnxruntime-node, onnxruntime-web, @huggingface/transformers; pinned in js/) plus a
headless system Chromium, all installed by `make js`.

Tiny random BERTs again (see test_export.py). Python's ONNX Runtime on the same file is the
reference; the JS runtimes must match it: onnxruntime-node bit for bit in practice (1e-4 here),
wasm builds within the fp32 tolerance for fp32 files and the export gate's int8 tolerance for
int8 ones (on AVX2-only CPUs x86 ORT's int8 product saturates where wasm's is exact, see the last
test), with the same argmax everywhere. Node and Chromium tests skip only when node/chromium are really absent
after `make js`; under CI (CI=true) their absence is a failure, so a broken install is seen.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from bertpress.errors import ConfigError
from tests.conftest import REPO, run_cli
from tests.test_export import TEXTS, _save_confident_tiny

JS = REPO / "js"
SNIPPETS = ("onnxruntime-node.mjs", "transformers.mjs")
FP32_ATOL = 1e-4  # ExportConfig.fp32_atol
INT8_ATOL = 1.0  # ExportConfig.int8_atol
QUICK = dict(batch_sizes=(1, 3), seq_lengths=(8, 33))


def _need(*tools: str) -> dict[str, str]:
    """Paths of node (and chromium) with js/node_modules installed; skip (fail under CI) if absent."""
    found: dict[str, str] = {}
    missing = []
    for tool in tools:
        names = ("chromium", "chromium-headless-shell") if tool == "chromium" else (tool,)
        path = next((p for p in map(shutil.which, names) if p), None)
        if path:
            found[tool] = path
        else:
            missing.append(tool)
    if "node" in found:
        major = int(subprocess.run([found["node"], "--version"], capture_output=True, text=True).stdout.strip()
                    .lstrip("v").split(".")[0] or 0)
        if major < 20:
            missing.append(f"node >= 20 (found {major})")
    if not (JS / "node_modules" / ".installed").is_file():
        missing.append("js/node_modules (make js)")
    if missing:
        msg = f"{', '.join(missing)} not available: run `make js`"
        if os.environ.get("CI"):
            pytest.fail(msg + " (CI must run the JavaScript tests)")
        pytest.skip(msg)
    return found


def _node(args: list[str], timeout: int = 120, env: dict | None = None) -> str:
    proc = subprocess.run([_need("node")["node"], *args], cwd=JS, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _python_logits(file: Path, tokenizer_dir: Path, texts=TEXTS) -> tuple[dict[str, np.ndarray], np.ndarray]:
    from bertpress.ort import session
    from bertpress.signature import encode
    from bertpress.models import load_tokenizer

    sess = session(file)
    names = {i.name for i in sess.get_inputs()}  # encode gives all three; a family takes its own
    feed = {k: v for k, v in encode(load_tokenizer(tokenizer_dir), list(texts), 128).items() if k in names}
    return feed, sess.run(["logits"], feed)[0]


def _python_one_by_one(file: Path, tokenizer_dir: Path, texts=TEXTS) -> np.ndarray:
    """Logits of each text on its own (batch 1, no padding), as a pipeline call or the page runs
    it: dynamic int8 scales activations per call, so padding in a batch changes int8 logits."""
    return np.concatenate([_python_logits(file, tokenizer_dir, [t])[1] for t in texts])


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """fp32, int8 dynamic and pruned int8 ONNX bundles (each dir name unique: see check-bundles.mjs)."""
    from bertpress.export import ExportConfig, export

    root = tmp_path_factory.mktemp("js")
    ckpt = _save_confident_tiny(root / "checkpoint")
    pruned = _save_confident_tiny(root / "pruned-checkpoint", prune={0: [0, 3], 1: [1, 2]}, hidden=64)
    out = {
        "fp32": export(ckpt, ExportConfig(**QUICK), root / "fp32").path,
        "int8": export(ckpt, ExportConfig(quantize="dynamic", **QUICK), root / "int8").path,
        "pruned-int8": export(pruned, ExportConfig(quantize="dynamic", **QUICK), root / "pruned-int8").path,
    }
    return out


@pytest.fixture(scope="module")
def web(tmp_path_factory) -> Path:
    from bertpress.export import ExportConfig, export

    _need("node")  # `make js` is what provides the transformers.js files the page is built from
    root = tmp_path_factory.mktemp("web")
    ckpt = _save_confident_tiny(root / "checkpoint")
    return export(ckpt, ExportConfig(format="web", quantize="dynamic", **QUICK), root / "site").path


# ---- the layout (no JavaScript needed) ------------------------------------------------------


@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_bundle_has_transformers_js_layout(kind, bundles):
    from bertpress.artifact import Artifact, dir_size

    out = bundles[kind]
    js_name = "model.onnx" if kind == "fp32" else "model_quantized.onnx"
    top, js = out / "model.onnx", out / "onnx" / js_name
    assert js.is_file() and os.path.samefile(top, js)  # one file on disk, two names
    assert sorted(p.name for p in (out / "onnx").iterdir()) == [js_name]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["id2label"] == {"0": "negative", "1": "positive"} and cfg["label2id"] == {"negative": 0, "positive": 1}
    assert cfg["transformers.js_config"] == {"dtype": "fp32" if kind == "fp32" else "q8"}
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (out / name).is_file()
    m = Artifact.load(out).manifest
    assert m.details["model"]["js_file"] == f"onnx/{js_name}" and f"onnx/{js_name}" in m.details["files"]
    assert m.details["model"]["js_session_options"] == {
        "extra": {"optimization": {"disable_specified_optimizers": "SkipLayerNormFusion"}}}
    assert dir_size(out) == sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) - js.stat().st_size
    assert (out / "bertpress.json").stat().st_mode & 0o044  # readable by a web server's user too


def test_our_loaders_still_read_the_bundle(bundles):
    """bench's source resolution, inspect and predict.py read the top-level model.onnx as before."""
    from bertpress.bench.sources import resolve_source
    from bertpress.app.inspect import inspect_path

    out = bundles["int8"]
    assert resolve_source(str(out)).kind == "onnx"
    assert inspect_path(out)["model"]["file"] == str(out / "model.onnx")
    proc = subprocess.run([sys.executable, str(out / "predict.py"), "--json", TEXTS[0]], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    _, want = _python_logits(out / "model.onnx", out, TEXTS[:1])
    assert json.loads(proc.stdout)["score"] == pytest.approx(float(_softmax(want).max()), abs=1e-6)


def test_web_format_refusals(tmp_path):
    from bertpress.export import ExportConfig, export
    from bertpress.export.web import find_runtime

    with pytest.raises(ConfigError, match="ort_format=true is for --format onnx"):
        ExportConfig(format="web", ort_format=True)
    with pytest.raises(ConfigError, match=r"needs transformers.js and found none.*--web-runtime"):
        find_runtime(str(tmp_path))
    fake = tmp_path / "node_modules" / "@huggingface" / "transformers"
    fake.mkdir(parents=True)
    (fake / "package.json").write_text(json.dumps({"name": "@huggingface/transformers", "version": "3.7.0"}))
    with pytest.raises(ConfigError, match="transformers.js 3.7.0 is not 4.x"):
        find_runtime(str(tmp_path / "node_modules"))
    (fake / "package.json").write_text(json.dumps({"name": "@huggingface/transformers", "version": "4.3.2",
                                                   "dependencies": {"onnxruntime-web": "1.31.0"}}))
    with pytest.raises(ConfigError, match="its onnxruntime-web dependency is not installed"):
        find_runtime(str(tmp_path / "node_modules"))
    ort = tmp_path / "node_modules" / "onnxruntime-web"
    ort.mkdir()
    (ort / "package.json").write_text(json.dumps({"name": "onnxruntime-web", "version": "1.30.0"}))
    with pytest.raises(ConfigError, match="onnxruntime-web 1.30.0 is installed but transformers.js 4.3.2 was built with 1.31.0"):
        find_runtime(str(tmp_path / "node_modules"))
    # refused before anything is written
    ckpt = _save_confident_tiny(tmp_path / "ckpt")
    with pytest.raises(ConfigError, match="needs transformers.js"):
        export(ckpt, ExportConfig(format="web", web_runtime=str(tmp_path / "nothing")), tmp_path / "site")
    assert not (tmp_path / "site").exists()


# ---- Node: onnxruntime-node, onnxruntime-web (wasm), transformers.js ------------------------


def test_node_runtimes_match_python(bundles, tmp_path):
    cases, want = [], {}
    for kind, out in bundles.items():
        feed, logits = _python_logits(out / "model.onnx", out)
        want[str(out)] = (kind, logits, feed)
        (tmp_path / kind).mkdir()
        cases.append({"dir": str(out), "model": "model.onnx", "texts": TEXTS, "optimized_dir": str(tmp_path / kind),
                      "feed": {k: {"data": v.flatten().tolist(), "dims": list(v.shape)} for k, v in feed.items()}})
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    got = json.loads(_node(["check-bundles.mjs", str(tmp_path / "cases.json")]))
    import onnx

    for d, (kind, logits, feed) in want.items():
        r = got[d]
        assert r["versions"] == {"onnxruntime-node": "1.30.0", "onnxruntime-web": "1.30.0"}
        # transformers.js tokenizes exactly as the bundle's tokenizer.json does in Python
        assert np.array_equal(np.array(r["tjs_ids"]["data"]).reshape(r["tjs_ids"]["dims"]), feed["input_ids"])
        int8 = kind != "fp32"
        for runtime, atol in (("ort_node", FP32_ATOL), ("tjs_logits", FP32_ATOL),
                              ("ort_web", INT8_ATOL if int8 else FP32_ATOL)):
            arr = np.array(r[runtime]["data"], dtype=np.float64).reshape(r[runtime]["dims"])
            assert arr.shape == logits.shape, (kind, runtime)
            diff = float(np.abs(arr - logits).max())
            assert diff <= atol, f"{kind} {runtime}: max |dlogit| {diff:.3g} > {atol}"
            assert (arr.argmax(-1) == logits.argmax(-1)).all(), (kind, runtime)
        # the session options bertpress.json hands to JS keep ORT from re-fusing SkipLayerNormalization
        ours = {n.op_type for n in onnx.load(str(tmp_path / kind / "node_ours.onnx")).graph.node}
        plain = {n.op_type for n in onnx.load(str(tmp_path / kind / "node_plain.onnx")).graph.node}
        assert "SkipLayerNormalization" not in ours and "SkipLayerNormalization" in plain, kind


@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_readme_snippets_run_and_agree(kind, bundles):
    """The README's two Node snippets are these files; run them on the bundle as a user would."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name in SNIPPETS:
        assert (JS / "snippets" / name).read_text(encoding="utf-8").strip() in readme, f"README lost {name}"
    out = bundles[kind]
    _, logits = _python_logits(out / "model.onnx", out)
    labels = [["negative", "positive"][i] for i in logits.argmax(-1)]
    rows = [json.loads(x) for x in _node(["snippets/onnxruntime-node.mjs", str(out), *TEXTS]).splitlines()]
    assert [r["text"] for r in rows] == TEXTS and [r["label"] for r in rows] == labels
    np.testing.assert_allclose([r["logits"] for r in rows], logits, atol=FP32_ATOL)
    rows = [json.loads(x) for x in _node(["snippets/transformers.mjs", str(out), *TEXTS]).splitlines()]
    assert [r["ranked"][0]["label"] for r in rows] == labels
    for r, p in zip(rows, _softmax(_python_one_by_one(out / "model.onnx", out).astype(np.float64))):
        assert {x["label"]: x["score"] for x in r["ranked"]} == pytest.approx(
            {"negative": p[0], "positive": p[1]}, abs=1e-5)


# ---- the browser -----------------------------------------------------------------------------


def test_web_folder_contents(web):
    from bertpress.artifact import Artifact

    art = Artifact.load(web)
    d = art.manifest.details
    assert art.kind == "web" and d["format"] == "web" and d["precision"] == "int8"
    assert d["web"]["dtype"] == "q8" and d["web"]["model_file"] == "model/onnx/model_quantized.onnx"
    assert d["web"]["session_options"] == d["model"]["js_session_options"]
    assert d["web"]["runtime"] == {"@huggingface/transformers": "4.3.2", "onnxruntime-web": "1.31.0-dev.20260914-8d85527a0"}
    for rel in ["index.html", "app.js", "vendor/transformers.min.js", d["web"]["wasm"]["mjs"], d["web"]["wasm"]["wasm"],
                "model/config.json", "model/tokenizer.json", "model/tokenizer_config.json", d["web"]["model_file"]]:
        assert (web / rel).is_file() and rel in d["files"], rel
    assert not (web / "model.onnx").exists() and not (web / "predict.py").exists()  # the model once, for upload
    assert art.manifest.metrics["parity"][d["web"]["model_file"]]["passed"]
    from bertpress.app.inspect import inspect_path

    assert inspect_path(web)["model"]["file"] == str(web / d["web"]["model_file"])
    # the page fetches nothing from elsewhere: no absolute URLs in what we wrote
    for name in ("index.html", "app.js"):
        assert "://" not in (web / name).read_text()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm"}

    def log_message(self, *args):  # keep pytest's output clean
        pass


def test_web_page_classifies_in_headless_chromium(web, tmp_path):
    tools = _need("node", "chromium")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(web)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    shot = tmp_path / "page.png"
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        res = json.loads(_node(["browser-check.mjs", url, str(shot), TEXTS[0], TEXTS[1]], timeout=150,
                               env={"CHROMIUM": tools["chromium"]}))
    finally:
        server.shutdown()
        server.server_close()
    assert res["offsite"] == [] and res["errors"] == [], res
    assert res["status"].startswith("ready: 2 labels, q8 model"), res
    logits = _python_one_by_one(web / "model" / "onnx" / "model_quantized.onnx", web / "model", TEXTS[:2])
    probs = _softmax(logits.astype(np.float64))
    assert [c["label"] for c in res["calls"]] == [["negative", "positive"][i] for i in logits.argmax(-1)]
    for call, p in zip(res["calls"], probs):
        # wasm int8 kernels: within the export gate's int8 tolerance, seen as probabilities
        assert call["scores"] == pytest.approx({"negative": p[0], "positive": p[1]}, abs=0.05)
        assert call["ms"] > 0 and "ms this call" in call["latency_text"]
    assert shot.stat().st_size > 5000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("BERTPRESS_KEEP_SCREENSHOT"):  # to look at it: BERTPRESS_KEEP_SCREENSHOT=/tmp/page.png
        shutil.copyfile(shot, os.environ["BERTPRESS_KEEP_SCREENSHOT"])


def test_cli_export_web(tmp_path):
    _need("node")
    ckpt = _save_confident_tiny(tmp_path / "ckpt")
    proc = run_cli("export", str(ckpt), "--format", "web", "--out", str(tmp_path / "site"), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["kind"] == "web" and data["serve"].startswith(f"python3 -m http.server -d {tmp_path / 'site'}")
    assert data["parity"]["model/onnx/model.onnx"]["passed"]


def test_wasm_integer_matmul_is_exact(tmp_path):
    """Why int8 logits differ between onnxruntime-web and x86 ONNX Runtime on some machines: the
    wasm build's uint8 x int8 product is exact, while ORT's AVX2 kernel (vpmaddubsw) saturates
    pairs of products at int16 when activations use the full 8 bits (no saturation with VNNI).
    Native results are printed, not asserted: they depend on the CPU."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, size=(64, 48), dtype=np.int8)
    x = rng.integers(0, 256, size=(8, 64), dtype=np.uint8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["x", "w", "xz", "wz"], ["y"])], "mm",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [8, 48])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(128, np.uint8), "xz"),
         numpy_helper.from_array(np.array(0, np.int8), "wz")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "mm.onnx"))
    exact = ((x.astype(np.int64) - 128) @ w.astype(np.int64)).flatten()
    (tmp_path / "case.json").write_text(json.dumps({"model": str(tmp_path / "mm.onnx"), "x": x.flatten().tolist(),
                                                    "dims": list(x.shape)}))
    got = json.loads(_node(["matmul-integer.mjs", str(tmp_path / "case.json")]))
    assert np.array_equal(np.array(got["ort_web"]), exact)
    native = ort.InferenceSession(str(tmp_path / "mm.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    print(f"x86 ORT max |error| {np.abs(native.flatten() - exact).max()}, onnxruntime-node "
          f"{np.abs(np.array(got['ort_node']) - exact).max()}, wasm 0")


JS_FAMILIES = ("distilbert", "roberta", "xlm-roberta", "electra", "deberta-v2", "modernbert", "albert", "mpnet")


def test_other_families_run_in_node_and_transformers_js(tmp_path):
    """Every non-BERT family's fp32 ONNX bundle: onnxruntime-node and onnxruntime-web give the
    Python logits, and transformers.js tokenizes exactly as the bundle's tokenizer.json does in
    Python and classifies to the same logits with its own model class for the family."""
    _need("node")
    from bertpress.export import ExportConfig, export
    from bertpress.testing import save_tiny_checkpoint

    cases, want = [], {}
    for family in JS_FAMILIES:
        ckpt = save_tiny_checkpoint(tmp_path / f"ckpt-{family}", family=family)
        out = export(ckpt, ExportConfig(**QUICK), tmp_path / f"js-{family}", progress=False).path
        feed, logits = _python_logits(out / "model.onnx", out)
        want[str(out)] = (family, logits, feed)
        cases.append({"dir": str(out), "model": "model.onnx", "texts": TEXTS,
                      "feed": {k: {"data": v.flatten().tolist(), "dims": list(v.shape)} for k, v in feed.items()}})
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    got = json.loads(_node(["check-bundles.mjs", str(tmp_path / "cases.json")], timeout=300))
    for d, (family, logits, feed) in want.items():
        r = got[d]
        assert np.array_equal(np.array(r["tjs_ids"]["data"]).reshape(r["tjs_ids"]["dims"]), feed["input_ids"]), family
        for runtime in ("ort_node", "ort_web", "tjs_logits"):
            arr = np.array(r[runtime]["data"], dtype=np.float64).reshape(r[runtime]["dims"])
            assert arr.shape == logits.shape, (family, runtime)
            diff = float(np.abs(arr - logits).max())
            assert diff <= FP32_ATOL, f"{family} {runtime}: max |dlogit| {diff:.3g} > {FP32_ATOL}"
