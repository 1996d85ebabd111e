"""Runtime adapters: one small class per way of executing a model, all with the same interface.

A runner turns a tokenized batch (numpy int64 `input_ids`, `attention_mask`, `token_type_ids`)
into logits, passing the model the inputs its family takes (`bertpress.signature.input_names`
for PyTorch, the file's own input names for TorchScript, ONNX and OpenVINO). `prepare` (moving inputs to the device, building an IO binding) is kept out of the
timed call for the fixed-shape sweep; the real-traffic scenario times everything, tokenization
included (`classify`), because that is what a deployment pays.
"""

from __future__ import annotations

import dataclasses
import re
import time
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from bertpress import hardware, openvino_rt
from bertpress.artifact import dir_size
from bertpress.compress.config import QuantizeConfig
from bertpress.errors import ArtifactError, DeviceError, InputError, first_line
from bertpress.models import load_classifier, load_tokenizer, state_dict_bytes
from bertpress.ort import disabled_in, op_counts, read_model, session as ort_session
from bertpress.registry import Registry
from bertpress.bench.config import Runtime
from bertpress.bench.sources import Source

from bertpress.signature import INPUT_NAMES, encode, input_names, script_input_names

# ONNX ops that mean "integer arithmetic": ORT's CUDA EP has no kernels for most of them, so it
# silently places them on the CPU and copies tensors back and forth (int8 "on GPU" ends up
# slower than fp32). QuantizeLinear/DequantizeLinear pairs (QDQ format) are listed too: on the
# CUDA EP they only emulate int8 in float, so the figure would not be an int8 figure either.
_INT8_OPS = re.compile(
    r"^(QLinear\w+|MatMulInteger\w*|ConvInteger|DynamicQuantize\w+|QAttention|QGemm|QOrdered\w+|"
    r"QEmbedLayerNormalization|QuantizeLinear|DequantizeLinear|MatMulNBits|DynamicQuantizeLSTM)$"
)


def int8_ops(op_counts: dict[str, int] | Counter) -> dict[str, int]:
    return {op: n for op, n in op_counts.items() if _INT8_OPS.match(op)}


def check_onnx_device(op_counts: dict[str, int], device: str, providers: Sequence[str]) -> str:
    """Return the ORT execution provider to use for `device`, or raise DeviceError.

    `providers` is `onnxruntime.get_available_providers()` (a parameter so tests can fake a
    CUDA build)."""
    if device == "cpu":
        return "CPUExecutionProvider"
    if "CUDAExecutionProvider" not in providers:
        raise DeviceError(
            f"onnxruntime here has no CUDAExecutionProvider (available: {', '.join(providers)}); "
            "install onnxruntime-gpu in place of onnxruntime, or bench the ONNX model with --device cpu"
        )
    q = int8_ops(op_counts)
    if q:
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(q.items()))
        raise DeviceError(
            f"refused: this ONNX graph is int8 ({ops}); ONNX Runtime's CUDA provider has no kernels for "
            "these ops and runs them on the CPU with copies each way, so its 'GPU' time would be a CPU "
            "fallback figure, usually slower than fp32. Bench the fp32 (or fp16) export on cuda and the int8 "
            "one on cpu"
        )
    return "CUDAExecutionProvider"


class Runner:
    """Base class. Subclasses set the attributes and implement prepare/run/logits."""

    runtime: Runtime
    device: str = "cpu"
    precision: str = "fp32"
    cuda_events = False  # time with CUDA events (work queued asynchronously on a torch stream)
    size_bytes: int | None = None
    size_source: str = "files"  # "files": on disk as shipped; "state_dict": serialized in-memory weights

    pairs = False  # a sentence-pair model: the sweep feeds [CLS] a [SEP] b [SEP] (bench sets it per variant)
    warm_passes = 1  # untimed passes over the traffic before the timed ones (the first is the cold figure)

    def __init__(self, tokenizer, max_length: int | None) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.notes: list[str] = []
        self.settings: dict[str, Any] = {}  # what the runtime reports it applied (results.json)

    # --- to implement ---
    def prepare(self, enc: dict[str, np.ndarray]) -> Any:
        raise NotImplementedError

    def run(self, prepared: Any) -> Any:
        raise NotImplementedError

    def logits(self, output: Any) -> np.ndarray:
        raise NotImplementedError

    # --- shared ---
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def synthetic(self, batch: int, seq: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Random token ids framed by [CLS] ... [SEP], full attention mask, segment 0; for a
        sentence-pair model `[CLS] a [SEP] b [SEP]`, the two texts `seq` tokens in all (the
        tokenizer's layout: token type 1 from the second text on)."""
        vocab = self.vocab_size()
        low = 1000 if vocab > 2000 else min(5, vocab - 1)  # skip [PAD]/[unused]/special ids
        ids = rng.integers(low, vocab, size=(batch, seq), dtype=np.int64)
        types = np.zeros_like(ids)
        sep = self.tokenizer.sep_token_id
        if self.tokenizer.cls_token_id is not None:
            ids[:, 0] = self.tokenizer.cls_token_id
        if sep is not None and seq > 1:
            ids[:, -1] = sep
        if self.pairs and sep is not None and seq >= 5:
            mid = seq // 2  # the first text's [SEP]
            ids[:, mid] = sep
            types[:, mid + 1:] = 1
        return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": types}

    def fixed_call(self, batch: int, seq: int, rng: np.random.Generator) -> Callable[[], Any]:
        prepared = self.prepare(self.synthetic(batch, seq, rng))
        return lambda: self.run(prepared)

    def tokenize(self, texts: Sequence) -> dict[str, np.ndarray]:
        """Texts or (text, text_pair) pairs -> int64 inputs, padded to the longest (bertpress.signature)."""
        return encode(self.tokenizer, texts, self.max_length)

    def classify(self, texts: Sequence) -> np.ndarray:
        """Predicted class ids, end to end (tokenize with dynamic padding, run, argmax); texts
        may be (text, text_pair) pairs."""
        return self.logits(self.run(self.prepare(self.tokenize(texts)))).argmax(axis=-1)

    def for_traffic(self, mode: str) -> "Runner":
        """The runner that serves the real-traffic scenario in `mode` (bench's --traffic-mode):
        "latency" is this runner, one batch at a time. "throughput" is a runner that keeps several
        batches in flight where the runtime has such a mode (OpenVINO's THROUGHPUT hint); the
        others serve one batch at a time either way, and a note says so. Built before timing."""
        if mode == "throughput":
            self.notes.append("traffic: one batch at a time (this runtime has no throughput mode in bench)")
        return self

    def serve(self, chunks: Sequence[Sequence]) -> tuple[list[np.ndarray], list[float]]:
        """Classify batches of texts in order, as a server would: the predicted ids of each batch,
        and each batch's latency in ms, end to end (tokenization included)."""
        preds, ms = [], []
        for chunk in chunks:
            t0 = time.perf_counter()
            preds.append(self.classify(chunk))  # ends with a device->host copy, so CUDA work is finished
            ms.append((time.perf_counter() - t0) * 1000.0)
        return preds, ms

    def close(self) -> None:
        pass


# ---- PyTorch --------------------------------------------------------------------------------


def _has_quantized_modules(model) -> bool:
    return any(type(m).__module__.startswith(("torch.ao.nn.quantized", "torch.nn.quantized",
                                              "torch.ao.nn.intrinsic.quantized"))
               for m in model.modules())


class TorchRunner(Runner):
    def __init__(self, model, tokenizer, max_length, *, runtime: Runtime, device: str, precision: str) -> None:
        import torch

        super().__init__(tokenizer, max_length)
        self.runtime, self.device, self.precision = runtime, device, precision
        self.cuda_events = device.startswith("cuda")
        self.model = model
        self.torch = torch
        self.input_names = input_names(model) if hasattr(model, "config") else INPUT_NAMES

    def prepare(self, enc):
        return {k: self.torch.from_numpy(v).to(self.device) for k, v in enc.items() if k in self.input_names}

    def run(self, prepared):
        with self.torch.inference_mode():
            return self.model(**prepared)

    def logits(self, output):
        return output.logits.float().cpu().numpy()

    def close(self) -> None:
        self.model = None


def check_cpu_bf16(runtime: Runtime) -> None:
    """pytorch-bf16 runs on the CPU only where bf16 is native; pytorch-fp16 never does."""
    if runtime == Runtime.PYTORCH_FP16:
        raise DeviceError("pytorch-fp16 is a CUDA runtime; on cpu use pytorch, pytorch-bf16 (CPUs with native bf16) "
                          "or pytorch-int8-dynamic")
    if not hardware.native_bf16_cpu():
        raise DeviceError("refused: pytorch-bf16 on this CPU would be emulated (no AVX512-BF16 or AMX-BF16; see "
                          "`bertpress info`), 3-5x slower than fp32; use pytorch or an int8 runtime here")


def load_torch(source: Source, runtime: Runtime, device: str) -> TorchRunner:
    """Eager PyTorch. For a compressed artifact the recorded quantization is applied by
    compress.load_compressed; int8-dynamic quantizes a copy of the fp32 model on the fly."""
    import torch

    if source.kind == "compressed":
        from bertpress.compress import load_compressed  # lazy: compress.api pulls torch; `bench --help` stays light

        model, tokenizer = load_compressed(source.where)
    else:
        model, tokenizer = load_classifier(source.where)
    quantized = _has_quantized_modules(model)
    precision = "int8" if quantized else "fp32"
    if runtime == Runtime.PYTORCH_INT8:
        if device != "cpu":
            raise DeviceError(f"refused: {runtime.value} uses torch.ao dynamic int8 kernels, which exist only on "
                              "the CPU; bench it with --device cpu")
        # exactly what `compress --quantize dynamic` makes (same layers, ranges, kernels)
        from bertpress.compress.quantize import int8_formats, quantize_dynamic  # lazy: as load_compressed above

        model, _ = quantize_dynamic(model, QuantizeConfig(scheme="dynamic"), int8_formats())
        precision = "int8-dynamic"
        quantized = True
    elif runtime in (Runtime.PYTORCH_FP16, Runtime.PYTORCH_BF16):
        if device == "cpu":
            check_cpu_bf16(runtime)
        if quantized:
            raise DeviceError(f"refused: {source.name} holds torch int8 modules, which run only on the CPU")
        dtype = torch.float16 if runtime == Runtime.PYTORCH_FP16 else torch.bfloat16
        model = model.to(dtype)
        precision = "fp16" if dtype == torch.float16 else "bf16"
    elif device != "cpu" and quantized:
        raise DeviceError(f"refused: {source.name} holds torch int8 modules (torch.ao), which run only on the "
                          "CPU; bench it with --device cpu")
    model = model.to(device).eval()
    runner = TorchRunner(model, tokenizer, source.max_length, runtime=runtime, device=device, precision=precision)
    if quantized:
        runner.size_bytes, runner.size_source = state_dict_bytes(model), "state_dict"
    elif source.path is not None:
        runner.size_bytes = sum(dir_size(p) for p in source.path.glob("*.safetensors")) or \
            sum(dir_size(p) for p in source.path.glob("pytorch_model*.bin")) or None
    return runner


# ---- TorchScript ----------------------------------------------------------------------------


class TorchScriptRunner(TorchRunner):
    def __init__(self, module, tokenizer, max_length, device: str) -> None:
        super().__init__(module, tokenizer, max_length, runtime=Runtime.TORCHSCRIPT, device=device, precision="fp32")
        # Traced modules take positional inputs named after the traced forward; scripted ones may
        # take keywords. Read the schema once and call accordingly.
        try:
            self.arg_names = list(script_input_names(module))
        except Exception:  # pragma: no cover - very old archives
            self.arg_names = list(INPUT_NAMES)

    def prepare(self, enc):
        tensors = {k: self.torch.from_numpy(v).to(self.device) for k, v in enc.items()}
        if set(self.arg_names) <= set(tensors):
            return [tensors[n] for n in self.arg_names]
        return [tensors[n] for n in INPUT_NAMES[: len(self.arg_names)]]

    def run(self, prepared):
        with self.torch.inference_mode():
            return self.model(*prepared)

    def logits(self, output):
        if isinstance(output, dict):
            output = output["logits"]
        elif isinstance(output, (tuple, list)):
            output = output[0]
        elif hasattr(output, "logits"):
            output = output.logits
        return output.float().cpu().numpy()


def load_torchscript(source: Source, device: str) -> TorchScriptRunner:
    import torch

    file = source.path / "model.pt"
    if not file.is_file():
        raise ArtifactError(f"{source.path}: no model.pt in this torchscript artifact; re-export it")
    if not zipfile.is_zipfile(file):
        raise ArtifactError(f"{file}: not a TorchScript archive (not a zip file); re-export it")
    try:
        module = torch.jit.load(str(file), map_location=device).eval()
    except Exception as exc:
        raise ArtifactError(f"{file}: torch.jit.load failed ({type(exc).__name__}: "
                            f"{first_line(exc, 160)}); re-export it") from None
    quantized = "quantized::" in str(module.inlined_graph) if hasattr(module, "inlined_graph") else False
    if device != "cpu" and quantized:
        raise DeviceError("refused: this TorchScript module calls quantized:: (int8) ops, which run only on the "
                          "CPU; bench it with --device cpu")
    runner = TorchScriptRunner(module, load_tokenizer(source.path), source.max_length, device)
    runner.precision = "int8" if quantized else "fp32"
    runner.size_bytes = file.stat().st_size
    return runner


# ---- ONNX Runtime ---------------------------------------------------------------------------


def model_feeds(input_names, enc, fmt: str) -> dict[str, np.ndarray]:
    """The tokenized batch as an exported model's inputs (contiguous), or a one-line refusal."""
    missing = [n for n in input_names if n not in enc]
    if missing:
        raise ArtifactError(f"the {fmt} model wants inputs {missing} that a BERT tokenizer does not produce; "
                            "export with inputs input_ids, attention_mask, token_type_ids")
    return {n: np.ascontiguousarray(enc[n]) for n in input_names}


class OnnxRunner(Runner):
    runtime = Runtime.ONNXRUNTIME
    file: Path | None = None  # the model file (load_onnx_file sets it): the traffic server's own session
    threads = 1  # intra-op threads of `session`
    in_flight = 1  # batches served at once by `serve` (for_traffic("throughput") raises it)

    def __init__(self, session, tokenizer, max_length, device: str, provider: str) -> None:
        super().__init__(tokenizer, max_length)
        self.session, self.device, self.provider = session, device, provider
        self.input_names = [i.name for i in session.get_inputs()]
        outs = [o.name for o in session.get_outputs()]
        self.output_name = "logits" if "logits" in outs else outs[0]
        self.device_id = int(device.split(":")[1]) if ":" in device else 0

    def _feeds(self, enc):
        return model_feeds(self.input_names, enc, "ONNX")

    def prepare(self, enc):
        feeds = self._feeds(enc)
        if self.device == "cpu":
            return feeds
        # CUDA: IO binding keeps inputs and outputs on the GPU so the timed call is the model alone.
        import onnxruntime as ort

        binding = self.session.io_binding()
        for name, arr in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr, "cuda", self.device_id))
        binding.bind_output(self.output_name, "cuda", self.device_id)
        return binding

    def run(self, prepared):
        if self.device == "cpu":
            return self.session.run([self.output_name], prepared)[0]
        # run_with_iobinding synchronizes the EP's stream before returning, so perf_counter is right.
        self.session.run_with_iobinding(prepared)
        return prepared

    def logits(self, output):
        if self.device == "cpu":
            return np.asarray(output, dtype=np.float32)
        return np.asarray(output.copy_outputs_to_cpu()[0], dtype=np.float32)

    def for_traffic(self, mode: str) -> "Runner":
        """For "throughput" on the CPU with several threads: the same file in a session of one
        intra-op thread, served `threads` batches at a time by concurrent `run` calls (ONNX
        Runtime's way to throughput: a session is safe to run from several threads, and each call
        runs on its caller's thread when intra_op_num_threads is 1), the next batch tokenized
        while they run; recorded in the notes and settings. Else the base behaviour."""
        if mode != "throughput" or self.device != "cpu" or self.file is None:
            return super().for_traffic(mode)
        if (self.threads or 1) < 2:
            self.notes.append("traffic: one batch at a time (one thread: no second batch to run beside it)")
            return self

        server = OnnxRunner(ort_session(self.file, 1), self.tokenizer, self.max_length, "cpu", self.provider)
        server.pairs, server.file, server.in_flight = self.pairs, self.file, self.threads
        self.notes.append(f"traffic: ONNX Runtime, {self.threads} batches in flight, concurrent run calls on one "
                          "session of intra_op_num_threads=1")
        self.settings = {**self.settings, "traffic": {"intra_op_num_threads": 1, "requests_in_flight": self.threads}}
        return server

    def serve(self, chunks: Sequence[Sequence]) -> tuple[list[np.ndarray], list[float]]:
        """One batch at a time, or (`in_flight` > 1) that many at once on worker threads.

        Hand-written over a stdlib thread pool: ONNX Runtime's own `run_async` calls its Python
        callback from ORT's threads, the pattern that deadlocked OpenVINO's AsyncInferQueue at
        teardown here (openvino_rt.OVSession.run_stream). A batch's latency runs from the start
        of its tokenization to the end of its run; batches overlap, as in run_stream."""
        if self.in_flight <= 1:
            return super().serve(chunks)
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        def infer(feeds):
            out = self.run(feeds)
            return out, time.perf_counter()

        preds: dict[int, np.ndarray] = {}
        ms: dict[int, float] = {}
        pending: dict = {}  # future -> (index, start)

        def collect(done) -> None:
            for fut in done:
                i, t0 = pending.pop(fut)
                out, t1 = fut.result()
                preds[i], ms[i] = self.logits(out).argmax(axis=-1), (t1 - t0) * 1000.0

        # Leaving the pool waits for the runs in flight, also when tokenizing or a run raised.
        with ThreadPoolExecutor(max_workers=self.in_flight, thread_name_prefix="bertpress-ort") as pool:
            for i, chunk in enumerate(chunks):
                collect([f for f in pending if f.done()])  # whatever has finished, in any order
                t0 = time.perf_counter()
                feeds = self.prepare(self.tokenize(chunk))
                if len(pending) >= self.in_flight:  # every worker busy: wait for the first to finish
                    collect(wait(pending, return_when=FIRST_COMPLETED).done)
                pending[pool.submit(infer, feeds)] = (i, t0)
            collect(wait(pending).done)
        return [preds[i] for i in range(len(preds))], [ms[i] for i in range(len(ms))]

    def close(self) -> None:
        self.session = None


def load_onnx_file(file: Path, tokenizer, max_length: int | None, device: str, threads: int,
                   providers: Sequence[str] | None = None) -> OnnxRunner:
    import onnxruntime as ort

    model = read_model(file)  # read once: op counts and the disabled-optimizer metadata
    counts = op_counts(model)
    provider = check_onnx_device(counts, device, providers if providers is not None else ort.get_available_providers())
    provs: list[Any] = [provider] if provider == "CPUExecutionProvider" else [
        (provider, {"device_id": int(device.split(":")[1]) if ":" in device else 0}), "CPUExecutionProvider"]
    disabled = disabled_in(model)  # e.g. SkipLayerNormFusion, recorded by bertpress export
    session = ort_session(file, threads, providers=provs, model=model)
    runner = OnnxRunner(session, tokenizer, max_length, device, provider)
    runner.file, runner.threads = file, threads
    if disabled:
        runner.notes.append(f"ONNX Runtime optimizers disabled as the model's metadata asks: {', '.join(disabled)}")
    q = int8_ops(counts)
    runner.precision = "int8" if q else "fp32"
    data = [p for p in file.parent.glob(file.name + "*") if p != file]  # external data files
    runner.size_bytes = file.stat().st_size + sum(p.stat().st_size for p in data)
    return runner


def load_onnx(source: Source, device: str, threads: int) -> OnnxRunner:
    file = source.path / "model.onnx"
    if not file.is_file():
        raise ArtifactError(f"{source.path}: no model.onnx in this onnx artifact; re-export it")
    return load_onnx_file(file, load_tokenizer(source.path), source.max_length, device, threads)


# ---- OpenVINO -------------------------------------------------------------------------------

_OV_PRECISION = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}  # OpenVINO type name -> bench's precision names


class OpenVINORunner(Runner):
    """An OpenVINO IR compiled by `bertpress.openvino_rt` (the one OpenVINO session policy).

    Used by the `optimum-intel` baseline; `load_openvino_file` is the entry point for any
    OpenVINO variant, so all of them are compiled and timed alike."""

    def __init__(self, sess, tokenizer, max_length) -> None:
        super().__init__(tokenizer, max_length)
        self.session = sess
        self.input_names = list(sess.input_names)

    def prepare(self, enc):
        return model_feeds(self.input_names, enc, "OpenVINO")

    def run(self, prepared):
        return self.session.run(prepared)

    def logits(self, output):
        return output

    def for_traffic(self, mode: str) -> "OpenVINORunner":
        """For "throughput": the same IR compiled once more with PERFORMANCE_HINT=THROUGHPUT (same
        threads and precision asked), served by `OVSession.run_stream`; recorded in the notes."""
        if mode != "throughput":
            return self
        s = self.session.settings
        sess = openvino_rt.session(self.session.file, threads=s.threads, precision=s.precision, device=s.device,
                                   hint="throughput")
        server = OpenVINORunner(sess, self.tokenizer, self.max_length)
        server.pairs = self.pairs
        rec = sess.record()
        self.notes.append(f"traffic: OpenVINO PERFORMANCE_HINT={rec['performance_hint']}, NUM_STREAMS="
                          f"{rec['num_streams']}, {sess.requests} batches in flight (INFERENCE_NUM_THREADS="
                          f"{rec['threads']}, INFERENCE_PRECISION_HINT={rec['inference_precision']})")
        self.settings = {**self.settings, "traffic": {**rec, "requests_in_flight": sess.requests}}
        server.warm_passes = sess.requests  # a stream may keep its own per-shape work (a graph per stream): warm each
        return server

    def serve(self, chunks: Sequence[Sequence]) -> tuple[list[np.ndarray], list[float]]:
        """With one request (the latency hint) the base loop; else `run_stream`, which tokenizes
        the next batch while earlier ones run."""
        if self.session.requests == 1:
            return super().serve(chunks)
        feeds = (self.prepare(self.tokenize(chunk)) for chunk in chunks)
        logits, ms = self.session.run_stream(feeds)
        return [x.argmax(axis=-1) for x in logits], ms

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
        self.session = None


def load_openvino_file(xml: Path, tokenizer, max_length: int | None, device: str, threads: int,
                       precision: str | None = None) -> OpenVINORunner:
    """Compile `xml` with bertpress.openvino_rt's settings; precision None = the CPU's default
    (bf16 on AMX-bf16 CPUs), recorded in the runner's precision, settings and notes either way
    (our IRs and the Optimum-Intel anchor alike)."""
    if device != "cpu":
        raise DeviceError(f"refused: OpenVINO runs on its CPU plugin here; bench {xml.name} with --device cpu")
    sess = openvino_rt.session(xml, threads=threads, precision=precision)
    runner = OpenVINORunner(sess, tokenizer, max_length)
    floats = _OV_PRECISION.get(sess.precision, sess.precision)
    runner.precision = "int8" if sess.quantized else floats
    rec = sess.record()
    runner.notes.append(f"OpenVINO {rec['device']}: INFERENCE_NUM_THREADS={rec['threads']}, PERFORMANCE_HINT="
                        f"{rec['performance_hint']}, NUM_STREAMS={rec['num_streams']}, INFERENCE_PRECISION_HINT="
                        f"{rec['inference_precision']} ({'asked' if precision else 'the device default'}"
                        f"{'; the ops left in float' if sess.quantized else ''})")
    runner.size_bytes = xml.stat().st_size + (xml.with_suffix(".bin").stat().st_size
                                              if xml.with_suffix(".bin").is_file() else 0)
    runner.settings = openvino_rt.describe(sess)
    fc = ", ".join(f"{k} x{v}" for k, v in runner.settings["runtime_precisions"].items())
    if fc:
        runner.notes.append(f"OpenVINO FullyConnected layers ran in: {fc}")
    return runner


OPENVINO_FILE = "openvino_model.xml"  # what `bertpress export --format openvino` (and Optimum-Intel) write


def load_openvino(source: Source, device: str, threads: int) -> OpenVINORunner:
    """An `openvino` artifact (or an Optimum-Intel directory): compiled by load_openvino_file with
    the CPU's default inference precision, which is recorded (settings, notes, precision)."""

    if device != "cpu":  # before reading anything: the refusal is the answer
        raise DeviceError(f"refused: OpenVINO runs on its CPU plugin here; bench {source.name or source.where} "
                          "with --device cpu")
    file = source.path / OPENVINO_FILE
    if not file.is_file():
        raise ArtifactError(f"{source.path}: no {OPENVINO_FILE} in this openvino artifact; re-export it")
    runner = load_openvino_file(file, load_tokenizer(source.path), source.max_length, device, threads)
    if openvino_rt.ran_int8(runner.session):  # NNCF weight compression has int8 weights and no FakeQuantize
        runner.precision = "int8"
    return runner


# ---- planning -------------------------------------------------------------------------------


# Bench runtimes: one RuntimeSpec + one registration each. `kinds` are the artifact kinds it
# runs, `devices` "cpu", "cuda" or both; the report lists them in registration order.
@dataclasses.dataclass(frozen=True)
class RuntimeSpec:
    load: Callable[[Source, Runtime, str, int], Runner]  # (source, runtime, device, threads)
    kinds: tuple[str, ...]
    devices: tuple[str, ...] = ("cpu", "cuda")
    # Devices where it runs only when --runtimes names it (not in the default set there).
    opt_in: tuple[str, ...] = ()


RUNTIMES: Registry = Registry("bench runtime", names=Runtime)
_torch = lambda source, runtime, device, threads: load_torch(source, runtime, device)  # noqa: E731
RUNTIMES.register(Runtime.PYTORCH.value)(RuntimeSpec(_torch, ("checkpoint", "compressed")))
RUNTIMES.register(Runtime.PYTORCH_INT8.value)(RuntimeSpec(_torch, ("checkpoint",), ("cpu",)))
RUNTIMES.register(Runtime.PYTORCH_FP16.value)(RuntimeSpec(_torch, ("checkpoint",), ("cuda",)))
# bf16 weights on the CPU pay only where bf16 is native (2.3x fp32 on AVX512-BF16,
# docs/results/bf16-cpu.md) and are refused elsewhere, so there it is asked for, not a default.
RUNTIMES.register(Runtime.PYTORCH_BF16.value)(RuntimeSpec(_torch, ("checkpoint",), ("cpu", "cuda"), opt_in=("cpu",)))
RUNTIMES.register(Runtime.TORCHSCRIPT.value)(RuntimeSpec(
    lambda source, runtime, device, threads: load_torchscript(source, device), ("torchscript",)))
RUNTIMES.register(Runtime.ONNXRUNTIME.value)(RuntimeSpec(
    lambda source, runtime, device, threads: load_onnx(source, device, threads), ("onnx",)))
# Planned on cuda too, so that the variant is refused with the reason (preflight) instead of
# silently missing from the report.
RUNTIMES.register(Runtime.OPENVINO.value)(RuntimeSpec(
    lambda source, runtime, device, threads: load_openvino(source, device, threads), ("openvino",)))


def runtimes_for(kind: str, device: str, requested: tuple[Runtime, ...] = ()) -> tuple[Runtime, ...]:
    """The runtimes that apply to an artifact kind on a device, in report order; an opt-in one
    only when `requested` names it."""
    where = "cpu" if device == "cpu" else "cuda"

    def applies(name: str) -> bool:
        spec = RUNTIMES.get(name)
        return kind in spec.kinds and where in spec.devices and \
            (where not in spec.opt_in or Runtime(name) in requested)

    found = tuple(Runtime(name) for name in RUNTIMES if applies(name))
    if not found:
        raise InputError(f"bench cannot run a {kind!r} artifact")
    return found


def load_runner(source: Source, runtime: Runtime, device: str, threads: int) -> Runner:
    return RUNTIMES.get(runtime).load(source, runtime, device, threads)


def preflight(source: Source, device: str) -> None:
    """Cheap checks before any timing starts, so a broken or refused artifact fails (or is
    refused) in seconds instead of after the other variants ran."""
    if source.kind == "onnx":
        file = source.path / "model.onnx"
        if not file.is_file():
            raise ArtifactError(f"{source.path}: no model.onnx in this onnx artifact; re-export it")
        import onnxruntime as ort

        check_onnx_device(op_counts(file), device, ort.get_available_providers())
    elif source.kind == "torchscript":
        file = source.path / "model.pt"
        if not file.is_file() or not zipfile.is_zipfile(file):
            raise ArtifactError(f"{file}: missing or not a TorchScript archive; re-export it")
    elif source.kind == "openvino":
        if device != "cpu":
            raise DeviceError(f"refused: OpenVINO runs on its CPU plugin here; bench {source.name or source.where} "
                              "with --device cpu")
        if not (source.path / OPENVINO_FILE).is_file() or not (source.path / OPENVINO_FILE).with_suffix(".bin").is_file():
            raise ArtifactError(f"{source.path}: no {OPENVINO_FILE} with its .bin in this openvino artifact; re-export it")
