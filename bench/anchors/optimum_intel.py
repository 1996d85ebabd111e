"""Build the `optimum-intel` anchor: Optimum-Intel OpenVINO export + OVQuantizer (NNCF) static int8.

Runs in .venv-intel (`make anchors`), never in bertpress's environment:

    .venv-intel/bin/python bench/anchors/optimum_intel.py --model CKPT --out DIR \
        --calibration TEXTS.json [--max-length 128] [--num-samples 300]

Optimum-Intel's documented path for a sequence classifier, with its defaults:
`OVModelForSequenceClassification.from_pretrained(CKPT, export=True)`, then
`OVQuantizer.from_pretrained(model).quantize(calibration_dataset=..., ov_config=OVConfig(
quantization_config=OVQuantizationConfig(num_samples=N)))` — NNCF post-training quantization,
`model_type="transformer"`, asymmetric activations, fast bias correction. The calibration
sentences (a JSON list of strings, or of [text, text_pair] pairs for a sentence-pair model,
chosen by bench from its eval data) are tokenized as the Optimum-Intel docs do: padded to
--max-length, truncated; columns the exported model has no input for are dropped. bench times
DIR/int8/openvino_model.xml in its own process with bertpress.openvino_rt's settings.
Writes DIR/int8/ and DIR/anchor.json (last).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, when run as a script from anywhere
import _common  # noqa: E402


def build(args) -> dict:
    import datasets
    from optimum.intel import OVConfig, OVModelForSequenceClassification, OVQuantizationConfig, OVQuantizer
    from transformers import AutoTokenizer

    texts = json.loads(args.calibration.read_text(encoding="utf-8"))
    single = isinstance(texts, list) and texts and all(isinstance(t, str) for t in texts)
    pairs = isinstance(texts, list) and texts and all(
        isinstance(t, list) and len(t) == 2 and all(isinstance(x, str) for x in t) for t in texts)
    if not (single or pairs):
        raise ValueError(f"{args.calibration}: expected a non-empty JSON list of sentences or of [text, text_pair] pairs")
    texts = texts[: args.num_samples]
    int8_dir = args.out / "int8"
    args.out.mkdir(parents=True)
    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(str(args.model))
    if pairs:  # a sentence-pair model is calibrated on pairs, tokenized as it was trained
        columns = {"sentence1": [a for a, _ in texts], "sentence2": [b for _, b in texts]}
        tokenize = lambda batch: tokenizer(batch["sentence1"], batch["sentence2"], padding="max_length",  # noqa: E731
                                           max_length=args.max_length, truncation=True)
    else:
        columns = {"sentence": texts}
        tokenize = lambda batch: tokenizer(batch["sentence"], padding="max_length",  # noqa: E731
                                           max_length=args.max_length, truncation=True)
    calibration = datasets.Dataset.from_dict(columns).map(tokenize, batched=True, remove_columns=list(columns))
    with _common.quiet():
        model = OVModelForSequenceClassification.from_pretrained(str(args.model), export=True, compile=False)
        # Feed only what the exported IR takes: a DeBERTa-v3 tokenizer returns token_type_ids, but its
        # model (type_vocab_size 0) has no such input, and NNCF's calibration would stop on the extra one.
        takes = set(model.input_names)
        calibration = calibration.remove_columns([c for c in calibration.column_names if c not in takes])
        quantizer = OVQuantizer.from_pretrained(model)
        qconfig = OVQuantizationConfig(num_samples=len(texts))
        quantizer.quantize(calibration_dataset=calibration, ov_config=OVConfig(quantization_config=qconfig),
                           save_directory=int8_dir)
    xml = int8_dir / "openvino_model.xml"
    if not xml.is_file():
        raise RuntimeError(f"OVQuantizer wrote no openvino_model.xml in {int8_dir}")
    return {
        "anchor": "optimum-intel",
        "model": str(xml.relative_to(args.out)),
        "recipe": f"optimum-intel OpenVINO export + OVQuantizer static int8 (NNCF, OVQuantizationConfig defaults, "
                  f"{len(texts)} calibration sentences padded to {args.max_length})",
        "calibration_samples": len(texts),
        "max_length": args.max_length,
        "quantization": {k: (v if isinstance(v, (int, float, bool, type(None))) else str(v))
                         for k, v in sorted(qconfig.to_dict().items())},
        "versions": _common.versions("optimum-intel", "optimum", "openvino", "nncf", "openvino-tokenizers",
                                     "transformers", "torch"),
    }


if __name__ == "__main__":
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--calibration", required=True, type=Path, help="JSON list of calibration sentences")
    p.add_argument("--max-length", type=int, default=128, help="pad/truncate calibration inputs to this length")
    p.add_argument("--num-samples", type=int, default=300, help="use at most this many calibration sentences")
    sys.exit(_common.main(build, p.parse_args()))
