"""Anchor baselines measured in the same run as our variants, on the fp32 reference checkpoint:

- `hf-pipeline`: transformers' `pipeline("text-classification")`, how most users serve a model
  today. It takes texts, so every call includes tokenization (the fixed-shape sweep feeds texts
  that tokenize to exactly seq_len tokens).
- `optimum`: optimum-onnx's export + `ORTQuantizer` with the `AutoQuantizationConfig` preset for
  this CPU's ISA (avx512_vnni / avx512 / avx2 / arm64), run by the same ONNX Runtime settings
  as our ONNX variants so only the model differs.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from bertpress.errors import ArtifactError, DeviceError, first_line
from bertpress.bench.config import Runtime
from bertpress.bench.runtimes import Runner, load_onnx_file
from bertpress.bench.sources import Source


class PipelineRunner(Runner):
    runtime = Runtime.PYTORCH  # reported as runtime "hf-pipeline" by the orchestrator

    def __init__(self, source: Source, device: str) -> None:
        from transformers import pipeline

        from bertpress.models import load_classifier

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

    def _texts_of_length(self, batch: int, seq: int) -> list[str]:
        # One word per token for any WordPiece vocab: single letters are always whole tokens.
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

    def classify(self, texts: Sequence[str]) -> np.ndarray:
        out = self._call(list(texts), batch_size=len(texts), truncation=True, max_length=self.max_length)
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


def build_optimum(source: Source, work_dir: Path, device: str, threads: int) -> tuple[Runner, str]:
    """Export the reference with optimum-onnx, quantize with the ISA preset, load in ORT.

    Returns (runner, preset). Files are written under work_dir (the caller deletes it)."""
    if device != "cpu":
        raise DeviceError("refused: the optimum baseline is an int8 ONNX model; ONNX Runtime's CUDA provider "
                          "would run its integer ops on the CPU. It is measured on cpu only")
    if source.path is None:
        raise ArtifactError(f"{source.spec}: the optimum baseline needs a local checkpoint directory")
    from optimum.onnxruntime import ORTModelForSequenceClassification, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    from bertpress.hardware import cpu_info
    from bertpress.models import load_tokenizer

    cpu = cpu_info()
    preset = quantization_preset(cpu["isa"], cpu["arch"])
    fp32_dir, int8_dir = work_dir / "optimum-fp32", work_dir / "optimum-int8"
    quiet = [logging.getLogger(n) for n in ("optimum", "transformers", "onnxruntime")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            ort_model = ORTModelForSequenceClassification.from_pretrained(str(source.path), export=True)
            ort_model.save_pretrained(fp32_dir)
            del ort_model
            quantizer = ORTQuantizer.from_pretrained(fp32_dir, file_name="model.onnx")
            qconfig = getattr(AutoQuantizationConfig, preset)(is_static=False, per_channel=False)
            quantizer.quantize(save_dir=int8_dir, quantization_config=qconfig)
    except Exception as exc:
        raise ArtifactError(f"optimum baseline: export/quantization of {source.where} failed "
                            f"({type(exc).__name__}: {first_line(exc)}); "
                            "drop --baselines optimum or check the checkpoint") from None
    finally:
        for lg, lvl in zip(quiet, levels):
            lg.setLevel(lvl)
    files = sorted(int8_dir.glob("*quantized*.onnx"))
    if not files:
        raise ArtifactError(f"optimum baseline: ORTQuantizer wrote no *_quantized.onnx in {int8_dir}")
    runner = load_onnx_file(files[0], load_tokenizer(source.where), source.max_length, device, threads)
    runner.notes.append(f"optimum-onnx export + AutoQuantizationConfig.{preset}(is_static=False, "
                        "per_channel=False), run with the same ONNX Runtime settings")
    return runner, preset
