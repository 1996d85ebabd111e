"""`--format web`: a static folder that classifies text in the browser, offline.

    OUT/index.html, app.js          the page (templates/web): text in; label, scores, ms per call out
    OUT/vendor/transformers.min.js  transformers.js's browser build (onnxruntime-web inside)
    OUT/vendor/ort-wasm-*.{mjs,wasm} onnxruntime-web's wasm runtime, served locally (no CDN)
    OUT/model/                      the model in transformers.js's layout (config.json, tokenizer,
                                    onnx/model[_quantized].onnx), gated like any ONNX export
    OUT/bertpress.json              kind "web"; the page reads its labels, dtype, session options

The JavaScript comes from an npm install of @huggingface/transformers (bertpress ships none: it
is 0.6 MB of JS and 14 MB of wasm that npm already versions); `make js` installs the pinned one
in js/. Any static server works: `python3 -m http.server -d OUT -b 127.0.0.1 8000`.
"""

from __future__ import annotations

import json
import os
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from bertpress.errors import ConfigError

TRANSFORMERS = "@huggingface/transformers"
ORT_WEB = "onnxruntime-web"
MODEL_DIR = "model"
VENDOR_DIR = "vendor"
PAGE_FILES = ("index.html", "app.js")
BROWSER_BUILD = "dist/transformers.min.js"  # self-contained ES module (onnxruntime-web bundled in)
# The plain SIMD build (CPU kernels only, 14 MB). transformers.js's own default is the asyncify
# build (27 MB) that WebGPU needs; the page runs on the wasm device, and transformers.js itself
# falls back to this build on browsers without WebGPU (Safari < 26), so the bundle supports it.
WASM_FILES = ("ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
INSTALL_HINT = ("run `make js` in the bertpress repo, or `npm install @huggingface/transformers@4` in a folder, "
                "and pass --web-runtime FOLDER/node_modules")


def _package_json(pkg: Path) -> dict[str, Any]:
    try:
        return json.loads((pkg / "package.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}


def _candidates(spec: str | None) -> list[Path]:
    if spec:
        p = Path(spec).expanduser()
        return [p, p / TRANSFORMERS, p / "node_modules" / TRANSFORMERS]
    out = []
    if os.environ.get("BERTPRESS_WEB_RUNTIME"):
        p = Path(os.environ["BERTPRESS_WEB_RUNTIME"]).expanduser()
        out += [p, p / TRANSFORMERS, p / "node_modules" / TRANSFORMERS]
    out.append(Path.cwd() / "node_modules" / TRANSFORMERS)
    # A source checkout (pip install -e): the repo's js/ folder that `make js` fills.
    out.append(Path(__file__).resolve().parents[1] / "js" / "node_modules" / TRANSFORMERS)
    return out


def find_runtime(spec: str | None) -> dict[str, Any]:
    """The transformers.js package to copy from, with the onnxruntime-web it was built against."""
    tried = _candidates(spec)
    pkg = next((p for p in tried if _package_json(p).get("name") == TRANSFORMERS), None)
    if pkg is None:
        where = spec or ", ".join(str(p) for p in tried)
        raise ConfigError(f"--format web needs transformers.js and found none ({where}); {INSTALL_HINT}")
    meta = _package_json(pkg)
    if not str(meta.get("version", "")).startswith("4."):
        raise ConfigError(f"{pkg}: transformers.js {meta.get('version')} is not 4.x (the page is written for 4.x); "
                          f"{INSTALL_HINT}")
    # Node's resolution order: the package's own node_modules first, then the ones above it.
    want = (meta.get("dependencies") or {}).get(ORT_WEB)
    ort = next((d / ORT_WEB for d in [pkg / "node_modules", *[p for p in pkg.parents if p.name == "node_modules"]]
                if _package_json(d / ORT_WEB).get("name") == ORT_WEB), None)
    if ort is None:
        raise ConfigError(f"{pkg}: its {ORT_WEB} dependency is not installed; {INSTALL_HINT}")
    version = _package_json(ort).get("version")
    if want and version != want:
        # transformers.min.js bundles onnxruntime-web's JS; a wasm file of another version crashes it.
        raise ConfigError(f"{ort}: {ORT_WEB} {version} is installed but transformers.js {meta['version']} was built "
                          f"with {want}; reinstall it (`npm ci` in that folder) or {INSTALL_HINT}")
    missing = [str(f) for f in [pkg / BROWSER_BUILD, *(ort / "dist" / w for w in WASM_FILES)] if not f.is_file()]
    if missing:
        raise ConfigError(f"the npm install is incomplete ({', '.join(missing)} missing); {INSTALL_HINT}")
    return {"transformers": pkg, "transformers_version": meta["version"], "ort_web": ort, "ort_web_version": version}


def write_page(out: Path, runtime: dict[str, Any]) -> list[str]:
    """Copy the page and the JS/wasm runtime into `out`; returns the paths written (relative)."""
    vendor = out / VENDOR_DIR
    vendor.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(runtime["transformers"] / BROWSER_BUILD, vendor / Path(BROWSER_BUILD).name)
    for name in WASM_FILES:
        shutil.copyfile(runtime["ort_web"] / "dist" / name, vendor / name)
    for name in PAGE_FILES:
        with resources.as_file(resources.files("bertpress.export").joinpath("templates", "web", name)) as src:
            shutil.copyfile(src, out / name)
    return [*PAGE_FILES, *(f"{VENDOR_DIR}/{n}" for n in (Path(BROWSER_BUILD).name, *WASM_FILES))]


def web_details(runtime: dict[str, Any], model_file: str, dtype: str, session_options: dict[str, Any],
                page_files: list[str]) -> dict[str, Any]:
    """bertpress.json's details.web: what app.js reads (model, dtype, wasm, session options)."""
    return {
        "page": "index.html",
        "model_dir": MODEL_DIR,
        "model_file": model_file,
        "dtype": dtype,
        "device": "wasm",
        "session_options": session_options,
        "wasm": {"mjs": f"{VENDOR_DIR}/{WASM_FILES[0]}", "wasm": f"{VENDOR_DIR}/{WASM_FILES[1]}"},
        "runtime": {TRANSFORMERS: runtime["transformers_version"], ORT_WEB: runtime["ort_web_version"]},
        "files": page_files,
        "serve": "python3 -m http.server -d OUT -b 127.0.0.1 8000, then open http://127.0.0.1:8000/",
        "inputs": ["text"],  # text pairs plug in here (and in app.js) once the model families issue lands
    }
