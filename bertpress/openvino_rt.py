"""OpenVINO session policy: how bertpress compiles and runs an OpenVINO IR, in one place.

Every OpenVINO timing in the project (bench's `optimum-intel` baseline, and the `openvino`
runtime / export gate that build on it) goes through `session()`, so two OpenVINO variants
differ only in their model files, never in how they were compiled:

- `INFERENCE_NUM_THREADS = threads` (bench's --threads, the same count torch and ONNX Runtime get),
- `PERFORMANCE_HINT = LATENCY` and `NUM_STREAMS = 1` (one request at a time, as bench times
  latency); `hint="throughput"` compiles for a server instead: `PERFORMANCE_HINT = THROUGHPUT`,
  OpenVINO picks the streams for those threads, and `OVSession.run_stream` keeps its optimal
  number of requests in flight (bench's `--traffic-mode throughput`),
- `INFERENCE_PRECISION_HINT` left at the device default unless asked (`precision="f32"` ...):
  on a CPU with AMX-bf16 the default runs the float ops in bf16, elsewhere f32. The precision
  the compiled model actually uses is read back and recorded (`OVSession.precision`), because
  an "fp32 IR" that ran in bf16 is a different measurement.

The settings used to come from FINDINGS (issue #16's numbers). OpenVINO's CPU plugin uses its
own thread pool (TBB), so OMP_WAIT_POLICY does not reach it; there is no spin setting to mirror.
IR files are data (XML + weights), read by OpenVINO's IR frontend (`read_ir`); no custom-op
extension library is ever loaded, so an untrusted IR cannot run code.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from bertpress.errors import ArtifactError, ConfigError, first_line

PRECISIONS = ("f32", "bf16", "f16")  # INFERENCE_PRECISION_HINT values a caller may pin
HINTS = ("latency", "throughput")  # PERFORMANCE_HINT: one request at a time, or a server's several in flight


@dataclasses.dataclass(frozen=True)
class OVSettings:
    """How a model is compiled. precision None = the device's default (recorded after compiling);
    hint "latency" (one request, one stream) or "throughput" (streams chosen by OpenVINO)."""

    threads: int
    precision: str | None = None
    device: str = "CPU"
    hint: str = "latency"

    def __post_init__(self) -> None:
        if not isinstance(self.threads, int) or isinstance(self.threads, bool) or self.threads < 1:
            raise ConfigError(f"threads={self.threads!r} must be a positive integer")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ConfigError(f"precision={self.precision!r} is not an OpenVINO inference precision; "
                              f"choose one of {', '.join(PRECISIONS)} or None for the device default")
        if self.hint not in HINTS:
            raise ConfigError(f"hint={self.hint!r} is not a performance hint; choose one of {', '.join(HINTS)}")

    def properties(self) -> dict[str, Any]:
        import openvino.properties as props
        import openvino.properties.hint as hints

        out: dict[str, Any] = {props.inference_num_threads: self.threads}
        if self.hint == "latency":
            out.update({hints.performance_mode: hints.PerformanceMode.LATENCY, props.streams.num: 1})
        else:  # OpenVINO splits the threads into streams itself (e.g. 2 threads -> 2 streams of 1)
            out[hints.performance_mode] = hints.PerformanceMode.THROUGHPUT
        if self.precision is not None:
            import openvino as ov

            out[hints.inference_precision] = {"f32": ov.Type.f32, "bf16": ov.Type.bf16, "f16": ov.Type.f16}[self.precision]
        return out


def read_ir(xml: Path):
    """An `openvino.Model` read by the IR frontend alone (weights from the `.bin` beside it).

    `Core.read_model` would, on a file that is not valid IR, try every other frontend in turn
    (TensorFlow's prints parse errors on stderr); the IR frontend reads the same model
    (same ops, bit-identical outputs, checked) and fails with the IR parser's own reason."""
    from openvino.frontend import FrontEndManager

    fe = FrontEndManager().load_by_framework("ir")
    return fe.convert(fe.load(str(xml)))


def _reason(exc: BaseException) -> str:
    """OpenVINO's errors open with source locations ("Exception from src/...:84:", "Check '...'
    failed at ..."); quote the first line that says what is wrong."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    said = [ln for ln in lines if not ln.startswith(("Exception from ", "Check '"))]
    return (said[0] if said else first_line(exc))[:200]


def _type_name(value: Any) -> str:
    """openvino.Type('bf16') -> 'bf16' (get_property returns a Type, str() of it varies by release)."""
    name = getattr(value, "get_type_name", None)
    return name() if callable(name) else str(value)


class OVSession:
    """A compiled model with one infer request; `run(feeds) -> logits` (float32 numpy).

    op_counts: op types of the IR as read (before the plugin's own transformations);
    quantized: the IR holds int8 FakeQuantize nodes (what NNCF writes); precision: the float precision
    the compiled model runs its non-int8 ops in (`f32`, `bf16`, `f16`)."""

    def __init__(self, xml: Path, settings: OVSettings) -> None:
        import openvino as ov

        self.file, self.settings = Path(xml), settings
        if not self.file.is_file():
            raise ArtifactError(f"{self.file}: no such OpenVINO IR file; export it again")
        core = ov.Core()
        try:
            model = read_ir(self.file)
            self.op_counts = dict(Counter(op.get_type_name() for op in model.get_ops()))
            self.compiled = core.compile_model(model, settings.device, settings.properties())
        except Exception as exc:  # OpenVINO raises RuntimeError with multi-line C++ context
            raise ArtifactError(f"{self.file}: OpenVINO cannot read or compile it ({type(exc).__name__}: "
                                f"{_reason(exc)}); export it again") from None
        self.input_names = [p.get_any_name() for p in self.compiled.inputs]
        outs = [p.get_any_name() for p in self.compiled.outputs]
        self.output_name = "logits" if "logits" in outs else outs[0]
        self._output = self.compiled.output(self.output_name)
        self.request = self.compiled.create_infer_request()
        self.precision = _type_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.quantized = self.op_counts.get("FakeQuantize", 0) > 0
        # requests run_stream keeps in flight: 1 for latency, OpenVINO's optimum for throughput
        self.requests = (1 if settings.hint == "latency"
                         else max(1, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))))
        self._stream: list | None = None  # run_stream's requests, made on first use

    def record(self) -> dict[str, Any]:
        """The settings as compiled, for manifests and bench notes."""
        c = self.compiled
        return {"device": self.settings.device, "threads": int(c.get_property("INFERENCE_NUM_THREADS")),
                "performance_hint": str(c.get_property("PERFORMANCE_HINT")).split(".")[-1],
                "num_streams": int(c.get_property("NUM_STREAMS")),
                "precision_asked": self.settings.precision or "default",
                "inference_precision": self.precision}

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Synchronous inference. Inputs are shared, not copied (as ONNX Runtime does with numpy
        on the CPU), so a timed call is the model; the logits are copied out."""
        result = self.request.infer(feeds, share_inputs=True)
        return np.array(result[self._output], dtype=np.float32)

    def run_stream(self, feeds: Iterable[dict[str, np.ndarray]]) -> tuple[list[np.ndarray], list[float]]:
        """Infer a stream of feeds as a server does, `self.requests` of them in flight: the
        iterable builds the next feed (tokenizes it, say) while earlier ones run. Returns the
        logits of each feed in order, and each feed's latency in ms, from when the iterable began
        building it to when its logits were collected (every finished request is collected before
        the next feed is built, so a result waits at most one feed's building). The feeds'
        latencies overlap: the stream's rate is feeds / wall time, not 1 / mean latency.

        Hand-written round robin over plain infer requests rather than OpenVINO's
        AsyncInferQueue: the queue's Python callback runs on OpenVINO's threads, which then need
        the GIL, and tearing the compiled model down deadlocked on them (seen here in bench)."""
        from collections import deque

        if self._stream is None:
            self._stream = [self.compiled.create_infer_request() for _ in range(self.requests)]
        free, pending = deque(self._stream), []  # pending: (index, request)
        starts: list[float] = []
        logits: dict[int, np.ndarray] = {}
        done_at: dict[int, float] = {}

        def collect(i: int, req) -> None:
            req.wait()
            logits[i] = np.array(req.get_tensor(self._output).data, dtype=np.float32)  # copied before reuse
            done_at[i] = time.perf_counter()
            free.append(req)

        try:
            it = iter(feeds)
            while True:
                for item in [x for x in pending if x[1].wait_for(0)]:  # whatever has finished
                    pending.remove(item)
                    collect(*item)
                t0 = time.perf_counter()
                try:
                    feed = next(it)
                except StopIteration:
                    break
                if not free:  # every request busy: wait for the oldest
                    collect(*pending.pop(0))
                req = free.popleft()
                req.start_async(feed, share_inputs=False)
                pending.append((len(starts), req))
                starts.append(t0)
        finally:  # also when building a feed raised: no request is left running
            for _, req in pending:
                req.wait()
        for item in pending:
            collect(*item)
        n = len(starts)
        return [logits[i] for i in range(n)], [(done_at[i] - starts[i]) * 1000.0 for i in range(n)]

    def close(self) -> None:
        self.request = self._stream = self.compiled = self._output = None


def session(xml: str | Path, *, threads: int, precision: str | None = None, device: str = "CPU",
            hint: str = "latency") -> OVSession:
    """Compile `xml` (its `.bin` beside it) with the project's OpenVINO settings."""
    return OVSession(Path(xml), OVSettings(threads=threads, precision=precision, device=device, hint=hint))


# ---- what ran (used by export's parity gate and bench's `openvino` runtime) -----------------


def runtime_precisions(compiled, layer_type: str = "FullyConnected") -> dict[str, int]:
    """How many `layer_type` nodes of the compiled (runtime) graph run in each precision, from
    the plugin's own runtime graph: the honest answer to "did the int8 / bf16 kernels run"
    (e.g. {'u8': 9, 'i8': 3, 'f32': 2} for an NNCF static IR; 'i8' also for int8-compressed weights)."""
    counts: Counter = Counter()
    try:
        for op in compiled.get_runtime_model().get_ops():
            rt = op.get_rt_info()
            if str(rt["layerType"].astype(str)) == layer_type:
                counts[str(rt["runtimePrecision"].astype(str))] += 1
    except Exception:  # noqa: BLE001 - an OpenVINO without these rt_info keys: nothing to report
        return {}
    return dict(counts.most_common())


def ran_int8(sess: "OVSession") -> bool:
    """An IR runs int8 when NNCF put FakeQuantize nodes in it (static) or its weights are int8
    (NNCF weight compression, which has no FakeQuantize): some FullyConnected runs in u8/i8."""
    return sess.quantized or any(p in ("u8", "i8") for p in runtime_precisions(sess.compiled))


def describe(sess: "OVSession") -> dict[str, Any]:
    """`sess.record()` plus the OpenVINO version, the CPU, and the FullyConnected precisions."""
    import openvino as ov

    out = dict(sess.record())
    out["openvino"] = ov.__version__.split("-")[0]
    try:
        out["cpu"] = str(ov.Core().get_property(sess.settings.device, "FULL_DEVICE_NAME"))
    except Exception:  # noqa: BLE001 - informational
        out["cpu"] = None
    out["runtime_precisions"] = runtime_precisions(sess.compiled)
    return out
