"""Build the `optimum` anchor: Optimum-ONNX export + ORTQuantizer int8 with an ISA preset.

Runs in .venv-optimum (`make anchors`), never in bertpress's environment:

    .venv-optimum/bin/python bench/anchors/optimum_onnx.py --model CKPT --out DIR --preset avx512_vnni

What it does is Optimum's documented path, nothing of ours: `ORTModelForSequenceClassification
.from_pretrained(CKPT, export=True)` (offline), then `ORTQuantizer` with
`AutoQuantizationConfig.<preset>(is_static=False, per_channel=False)` (the documented example).
bench picks the preset for the CPU (avx512_vnni / avx512 / avx2 / arm64) and times
DIR/int8/model_quantized.onnx in its own ONNX Runtime session, like our ONNX variants.
Writes DIR/fp32/ (the exported model), DIR/int8/ and DIR/anchor.json (last).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, when run as a script from anywhere
import _common  # noqa: E402

PRESETS = ("avx512_vnni", "avx512", "avx2", "arm64")


def build(args) -> dict:
    from optimum.onnxruntime import ORTModelForSequenceClassification, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    fp32_dir, int8_dir = args.out / "fp32", args.out / "int8"
    args.out.mkdir(parents=True)
    with _common.quiet():
        model = ORTModelForSequenceClassification.from_pretrained(str(args.model), export=True)
        model.save_pretrained(fp32_dir)
        del model
        quantizer = ORTQuantizer.from_pretrained(fp32_dir, file_name="model.onnx")
        qconfig = getattr(AutoQuantizationConfig, args.preset)(is_static=False, per_channel=False)
        quantizer.quantize(save_dir=int8_dir, quantization_config=qconfig)
    files = sorted(int8_dir.glob("*quantized*.onnx"))
    if not files:
        raise RuntimeError(f"ORTQuantizer wrote no *_quantized.onnx in {int8_dir}")
    return {
        "anchor": "optimum",
        "model": str(files[0].relative_to(args.out)),
        "recipe": f"optimum-onnx export + AutoQuantizationConfig.{args.preset}(is_static=False, per_channel=False)",
        "preset": args.preset,
        "quantization": {k: str(v) for k, v in sorted(vars(qconfig).items())},
        "versions": _common.versions("optimum", "optimum-onnx", "transformers", "torch", "onnx", "onnxruntime"),
    }


if __name__ == "__main__":
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--preset", required=True, choices=PRESETS, help="AutoQuantizationConfig preset (the CPU's ISA)")
    sys.exit(_common.main(build, p.parse_args()))
