"""Anchor baselines measured in the same run as our variants, on the fp32 reference checkpoint:

- `hf-pipeline`: transformers' `pipeline("text-classification")`, how most users serve a model
  today. It takes texts, so every call includes tokenization (the fixed-shape sweep feeds texts
  that tokenize to exactly seq_len tokens).
- `optimum`: optimum-onnx's export + `ORTQuantizer` with the `AutoQuantizationConfig` preset for
  this CPU's ISA (avx512_vnni / avx512 / avx2 / arm64), run by the same ONNX Runtime settings
  as our ONNX variants so only the model differs.
- `optimum-intel`: optimum-intel's OpenVINO export + `OVQuantizer` (NNCF) static int8 with its
  default `OVQuantizationConfig`, 300 calibration sentences; run by `bertpress.openvino_rt`.

The two Optimum anchors are built in their own environments (.venv-optimum, .venv-intel; see
bench/anchors/) by a subprocess that writes only model files; the timing happens here.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from bertpress.bench import anchors
from bertpress.bench.anchors import find_env
from bertpress.data import load_text_classification
from bertpress.errors import ArtifactError, DeviceError, InputError
from bertpress.bench.config import Baseline, Runtime
from bertpress.bench.runtimes import Runner, load_onnx_file, load_openvino_file
from bertpress.bench.sources import Source
from bertpress.hardware import cpu_info
from bertpress.models import load_classifier, load_tokenizer


class PipelineRunner(Runner):
    runtime = Runtime.PYTORCH  # reported as runtime "hf-pipeline" by the orchestrator

    def __init__(self, source: Source, device: str) -> None:
        from transformers import pipeline

        model, tokenizer = load_classifier(source.where)
        super().__init__(tokenizer, source.max_length)
        self.device = device
        self.cuda_events = device.startswith("cuda")
        self.label2id = {str(v): int(k) for k, v in model.config.id2label.items()}
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # "Device set to use cpu" is expected noise
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.pipe = pipeline("text-classification", model=model, tokenizer=tokenizer,
                                     device=device if device != "cpu" else -1)
        finally:
            hf_logging.set_verbosity(verbosity)
        self.size_bytes = (sum(p.stat().st_size for p in source.path.glob("*.safetensors"))
                           if source.path is not None else None)
        self.notes.append("every call includes tokenization (the pipeline takes texts)")

    def _texts_of_length(self, batch: int, seq: int) -> list:
        # One word per token for any WordPiece vocab: single letters are always whole tokens.
        if getattr(self, "pairs", False) and seq >= 5:  # (tests call it unbound, as a plain function)  # [CLS] a [SEP] b [SEP]: the two texts seq - 3 tokens in all
            n = seq - 3
            return [{"text": ("a " * (n // 2)).strip(), "text_pair": ("a " * (n - n // 2)).strip()}] * batch
        n_words = max(seq - 2, 1)  # [CLS] and [SEP] take two positions
        words = ("a " * n_words).strip()
        return [words] * batch

    def fixed_call(self, batch: int, seq: int, rng: np.random.Generator) -> Callable[[], Any]:
        texts = self._texts_of_length(batch, seq)
        kwargs = dict(batch_size=batch, truncation=True, max_length=seq, padding="max_length")
        return lambda: self._call(texts, **kwargs)

    def _call(self, texts, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "use a dataset for efficiency on GPU" is expected
            return self.pipe(texts, **kwargs)

    def classify(self, texts: Sequence) -> np.ndarray:
        # the pipeline's own spelling of a sentence pair: {"text": a, "text_pair": b}
        inputs = [{"text": t[0], "text_pair": t[1]} if isinstance(t, (tuple, list)) else t for t in texts]
        out = self._call(inputs, batch_size=len(texts), truncation=True, max_length=self.max_length)
        return np.array([self.label2id[o["label"]] for o in out], dtype=np.int64)

    def close(self) -> None:
        self.pipe = None


def quantization_preset(isa: dict[str, bool], arch: str) -> str:
    """The optimum AutoQuantizationConfig preset that matches this CPU."""
    if arch.lower() in ("aarch64", "arm64"):
        return "arm64"
    if isa.get("avx512_vnni"):
        return "avx512_vnni"
    if isa.get("avx512"):
        return "avx512"
    return "avx2"


CALIBRATION_SAMPLES = 300  # the Optimum-Intel docs' example (and issue #16's anchor figures)


def preflight_anchor(baseline: Baseline, source: Source | None, device: str, eval_data: str | None) -> None:
    """Cheap checks before any timing: DeviceError (a refusal) when the anchor cannot run here."""
    if device != "cpu":
        raise DeviceError(f"refused: the {baseline.value} baseline is an int8 model for the CPU (ONNX Runtime's CUDA "
                          "provider would run its integer ops on the CPU; OpenVINO runs on its CPU plugin here); "
                          "it is measured on cpu only")
    find_env(baseline.value)
    if source is None or source.path is None:
        raise ArtifactError(f"{source.spec if source else 'the reference'}: the {baseline.value} baseline needs a "
                            "local checkpoint directory")
    if baseline == Baseline.OPTIMUM_INTEL and eval_data is None:
        raise DeviceError("refused: the optimum-intel baseline calibrates OVQuantizer on real sentences; "
                          "pass --eval-data (its train split, else the eval split, is used)")


def calibration_texts(eval_data: str, eval_split: str, seed: int, columns=None) -> tuple[list, str]:
    """Sentences (or [text, text_pair] pairs) for the optimum-intel anchor's calibration, chosen as
    compress chooses its own: the train split of the eval data when it has one, else the eval
    split (and the note says so); read with `columns` (those of bench's eval rows)."""
    kw = {} if columns is None else dict(text_column=columns.text, text_pair_column=columns.text_pair,
                                         label_column=columns.label)
    try:
        ds, split = load_text_classification(eval_data, "train", **kw), "train"
    except InputError:
        ds, split = load_text_classification(eval_data, eval_split, **kw), eval_split
    ds = ds.subset(CALIBRATION_SAMPLES, seed=seed)
    what = "sentence pairs" if ds.pairs else "sentences"
    return [list(x) if ds.pairs else x for x in ds.examples], f"{len(ds)} {what} of {ds.source} ({split} split, seed {seed})"


def build_anchor(baseline: Baseline, source: Source, work_dir: Path, threads: int, *,
                 eval_data: str | None = None, eval_split: str = "dev", seed: int = 0,
                 columns=None) -> dict[str, Any]:
    """Build the anchor's model files in its own environment (bench/anchors/); returns its
    record (`model_path`, `recipe`, `versions`, ...) plus `calibration` for optimum-intel."""
    out = work_dir / baseline.value
    if baseline == Baseline.OPTIMUM:
        cpu = cpu_info()
        args = ["--model", str(source.path), "--preset", quantization_preset(cpu["isa"], cpu["arch"])]
        return anchors.build(baseline.value, args, out, threads=threads)
    texts, where = calibration_texts(eval_data, eval_split, seed, columns)
    cal = work_dir / f"{baseline.value}-calibration.json"
    cal.write_text(json.dumps(texts), encoding="utf-8")
    args = ["--model", str(source.path), "--calibration", str(cal), "--num-samples", str(len(texts)),
            "--max-length", str(min(source.max_length or 128, 128))]
    record = anchors.build(baseline.value, args, out, threads=threads)
    record["calibration"] = where
    return record


def load_anchor(baseline: Baseline, source: Source, record: dict[str, Any], device: str, threads: int) -> Runner:
    """Time the anchor's files in this process, with the same runtime settings as our variants."""
    file, tokenizer = Path(record["model_path"]), load_tokenizer(source.where)
    if baseline == Baseline.OPTIMUM:
        runner = load_onnx_file(file, tokenizer, source.max_length, device, threads)
        runner.notes.append(f"{record['recipe']}, run with the same ONNX Runtime settings as our ONNX variants")
    else:
        runner = load_openvino_file(file, tokenizer, source.max_length, device, threads)
        runner.notes.append(f"{record['recipe']}; calibration: {record['calibration']}")
    versions = ", ".join(f"{k} {v}" for k, v in sorted(record.get("versions", {}).items()))
    runner.notes.append(f"built in {record.get('build_s', '?')} s by {record['python']} ({versions})")
    return runner
