"""ONNX Runtime session policy, in one place: every session bertpress opens (export's gate,
bench, the compress search, measure/microbench, the bundled predict.py mirrors it) is made here.

- Threads: timed sessions get `intra_op_num_threads=threads`, one inter-op thread and sequential
  execution, like bench's PyTorch runs; spinning at thread barriers is turned off when torch's
  OpenMP is told to wait passively (OMP_WAIT_POLICY=PASSIVE), so both runtimes wait alike.
- Disabled optimizers: an exported model names in its metadata (`ORT_DISABLED_KEY`) the ORT
  graph optimizers that must stay off when it loads (e.g. SkipLayerNormFusion, measured slower;
  docs/results/export.md); every session honours it.
- Untrusted files: external-data locations are checked (bertpress.safety) before ORT opens a file.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from bertpress.errors import ArtifactError, first_line
from bertpress.safety import check_onnx_external_data

# Model metadata key: comma-separated ORT graph optimizers to disable when loading the file.
ORT_DISABLED_KEY = "bertpress.ort_disabled_optimizers"


def read_model(file: str | Path):
    """The ModelProto without external weights, or a one-line ArtifactError."""
    import onnx

    try:
        return onnx.load(str(file), load_external_data=False)
    except Exception as exc:
        raise ArtifactError(f"{file}: not a readable ONNX model ({type(exc).__name__}: {first_line(exc, 160)}); "
                            "re-export it") from None


def op_counts(file_or_model) -> dict[str, int]:
    """Op histogram, most frequent first, of an ONNX file or ModelProto (local functions included:
    dynamo exports may hide ops there)."""
    model = read_model(file_or_model) if isinstance(file_or_model, (str, Path)) else file_or_model
    counts: Counter = Counter(n.op_type for n in model.graph.node)
    for fn in model.functions:
        counts.update(n.op_type for n in fn.node)
    return dict(counts.most_common())


CONTRIB_DOMAIN = "com.microsoft"
FUSED_ATTENTION_OPS = ("Attention", "MultiHeadAttention")


def fused_attention_count(file_or_model) -> dict[str, int]:
    """Attention nodes by kind: ONNX Runtime's fused contrib-domain ops (the ones its CPU kernels
    and QAttention quantization handle) apart from the *standard* ONNX `Attention` op (opset 23+,
    written by the dynamo exporter), which shares the op_type but not the domain."""
    model = read_model(file_or_model) if isinstance(file_or_model, (str, Path)) else file_or_model
    nodes = list(model.graph.node) + [n for fn in model.functions for n in fn.node]
    contrib = sum(1 for n in nodes if n.op_type in FUSED_ATTENTION_OPS and n.domain == CONTRIB_DOMAIN)
    standard = sum(1 for n in nodes if n.op_type in FUSED_ATTENTION_OPS and n.domain in ("", "ai.onnx"))
    return {"contrib": contrib, "standard": standard}


def disabled_in(model) -> list[str]:
    """The ORT optimizers a loaded ModelProto asks to be disabled (its `ORT_DISABLED_KEY`)."""
    value = next((p.value for p in model.metadata_props if p.key == ORT_DISABLED_KEY), "")
    return [v.strip() for v in value.split(",") if v.strip()]


def disabled_optimizers(file: Path) -> list[str]:
    """`disabled_in` for a file; [] when it cannot be read (ONNX Runtime then reports why)."""
    file = Path(file)
    if file.suffix == ".ort":  # flatbuffer: no onnx proto; the sibling .onnx carries the same metadata
        file = file.with_suffix(".onnx")
        if not file.is_file():
            return []
    try:
        return disabled_in(read_model(file))
    except ArtifactError:
        return []


def mark_disabled(model, names: Sequence[str]) -> None:
    """Record `names` in a ModelProto's metadata so that loaders keep those optimizers off."""
    kept = [p for p in model.metadata_props if p.key != ORT_DISABLED_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    if names:
        model.metadata_props.add(key=ORT_DISABLED_KEY, value=",".join(names))


def session_options(threads: int | None = None, *, optimization: str | None = None):
    """SessionOptions under the policy above; optimization "disable_all"/"basic" for tools."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # unused-initializer warnings etc. are expected noise
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if optimization == "disable_all":
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    elif optimization == "basic":
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return opts


def session(file: str | Path, threads: int | None = None, *, providers: Sequence[Any] | None = None,
            opts=None, model=None, check_external: bool = True):
    """An InferenceSession for `file` under the policy. `model` is the already read ModelProto
    (saves a second parse); `opts` replaces the default options (profiling, ORT-format output)."""
    import onnxruntime as ort

    file = Path(file)
    if check_external and file.suffix != ".ort":
        check_onnx_external_data(file)  # an untrusted file must not read outside its directory
    disabled = disabled_in(model) if model is not None else disabled_optimizers(file)
    try:
        return ort.InferenceSession(str(file), opts or session_options(threads),
                                    providers=list(providers or ["CPUExecutionProvider"]),
                                    **({"disabled_optimizers": disabled} if disabled else {}))
    except Exception as exc:
        raise ArtifactError(f"{file}: ONNX Runtime cannot load it ({type(exc).__name__}: {first_line(exc)}); "
                            "re-export it") from None


def runner(file: str | Path, threads: int | None = None):
    """feed dict (numpy) -> logits, over a session of `file`; `.session` is the session."""
    import numpy as np

    sess = session(file, threads)
    names = {i.name for i in sess.get_inputs()}
    outs = [o.name for o in sess.get_outputs()]
    out = "logits" if "logits" in outs else outs[0]

    def run(feed: dict[str, np.ndarray]) -> np.ndarray:
        return sess.run([out], {k: v for k, v in feed.items() if k in names})[0]

    run.session = sess  # type: ignore[attr-defined]
    return run
