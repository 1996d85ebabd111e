"""What the anchor builder scripts share. They run in the anchor's own venv, so: stdlib only,
and no bertpress import (bertpress is not installed there)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import time
import traceback
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

EXIT_MISSING_PACKAGE = 3  # bench maps it to "the environment is incomplete; run make anchors"
NOISY_LOGGERS = ("optimum", "transformers", "onnxruntime", "nncf", "openvino", "torch")


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", required=True, type=Path, help="the fp32 Hugging Face checkpoint directory")
    p.add_argument("--out", required=True, type=Path, help="directory to create (must not exist)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads for the export")
    return p


def versions(*names: str) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the libraries' logging, warnings and prints (progress goes to the log bench keeps)."""
    loggers = [logging.getLogger(n) for n in NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


def write_record(out: Path, record: dict[str, Any]) -> None:
    """anchor.json, written last: its presence means the files beside it are complete."""
    tmp = out / "anchor.json.tmp"
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, out / "anchor.json")


def main(build: Callable[[argparse.Namespace], dict[str, Any]], args: argparse.Namespace) -> int:
    """Run `build(args) -> record`; one line on stderr and a non-zero exit on failure."""
    if args.out.exists():
        print(f"error: {args.out} exists; give a new directory", file=sys.stderr)
        return 2
    if not (args.model / "config.json").is_file():
        print(f"error: {args.model} is not a Hugging Face model directory (no config.json)", file=sys.stderr)
        return 2
    try:
        import torch
    except ImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_MISSING_PACKAGE
    torch.set_num_threads(max(args.threads, 1))
    t0 = time.perf_counter()
    try:
        record = build(args)
    except ImportError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_MISSING_PACKAGE
    except Exception as exc:  # noqa: BLE001 - reported as one line; the traceback stays in the log
        traceback.print_exc()
        # The last line: OpenVINO's messages start with a source location and end with the cause.
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        print(f"error: {type(exc).__name__}: {lines[-1][:200] if lines else ''}", file=sys.stderr)
        return 1
    record["build_s"] = round(time.perf_counter() - t0, 2)
    record["python_version"] = sys.version.split()[0]
    write_record(args.out, record)
    return 0
