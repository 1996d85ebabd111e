"""Typed benchmark results and their JSON form (`results.json`, schema in docs/bench.md)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from bertpress.artifact import Artifact
from bertpress.errors import ArtifactError
from bertpress.timing import LatencyStats, median_of

RESULTS_SCHEMA = "bertpress.bench.results/1"


def _stats_from(d: dict[str, Any] | None) -> LatencyStats | None:
    if d is None:
        return None
    names = {f.name for f in dataclasses.fields(LatencyStats)}
    return LatencyStats(**{k: v for k, v in d.items() if k in names})


@dataclasses.dataclass
class ShapeResult:
    batch_size: int
    seq_len: int
    latency: LatencyStats

    def to_dict(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "seq_len": self.seq_len, "latency": self.latency.to_dict()}


@dataclasses.dataclass
class TrafficResult:
    """Real traffic: the eval set's sentences, length-sorted batches, dynamic padding, end to end."""

    sentences: int
    batch_size: int
    passes: int
    seconds: float
    sentences_per_s: float
    batch_latency: LatencyStats
    mean_padded_len: float
    # The first pass over the set, every batch shape new (the warm-up, timed on its own);
    # None in results written before it was measured.
    cold_sentences_per_s: float | None = None
    # "latency": one batch at a time; "throughput": several in flight where the runtime can
    # (bench --traffic-mode). Results written before it was recorded were "latency".
    mode: str = "latency"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["batch_latency"] = self.batch_latency.to_dict()
        return d


@dataclasses.dataclass
class VariantResult:
    id: str
    name: str  # the artifact's display name (or the baseline's)
    role: str  # "artifact" | "reference" | "baseline"
    kind: str  # artifact kind the variant was built from
    runtime: str
    device: str
    precision: str
    source: str  # path (or alias / hub id) it was loaded from
    size_bytes: int | None = None
    size_source: str = "files"
    load_s: float = 0.0
    memory: dict[str, Any] = dataclasses.field(default_factory=dict)
    fixed: list[ShapeResult] = dataclasses.field(default_factory=list)
    traffic: TrafficResult | None = None
    accuracy: float | None = None
    # bertpress.metrics beside accuracy: F1 of the positive class (two classes) or macro-F1 (more)
    f1: float | None = None
    macro_f1: float | None = None
    agreement: float | None = None  # share of predictions equal to the fp32 reference's
    ratios: dict[str, float | None] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    # Runtime settings as the runtime reports them (OpenVINO: hints, threads, the inference
    # precision it chose, the precision its FullyConnected layers ran in).
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Interleaved re-timing (BenchConfig.rounds > 1): {"batch_size", "seq_len", "p50_ms": [one
    # p50 of the headline shape per round]} and, where the variant served real traffic,
    # "sentences_per_s": [one steady traffic pass per round].
    rounds: dict[str, Any] | None = None

    def p50(self, batch: int, seq: int) -> float | None:
        """p50 latency of a shape: the median of the interleaved rounds' p50s where they timed
        this shape, else the sweep's p50."""
        r = self.rounds
        if r and r.get("p50_ms") and (r["batch_size"], r["seq_len"]) == (batch, seq):
            return median_of(r["p50_ms"])
        lat = self.shape(batch, seq)
        return lat.p50_ms if lat else None

    def sentences_per_s(self) -> float | None:
        """Real-traffic throughput: the median of the interleaved rounds' passes where they were
        timed, else the steady passes after the warm-up; None without eval data."""
        r = self.rounds
        if r and r.get("sentences_per_s"):
            return median_of(r["sentences_per_s"])
        return self.traffic.sentences_per_s if self.traffic else None

    def shape(self, batch: int, seq: int) -> LatencyStats | None:
        for r in self.fixed:
            if r.batch_size == batch and r.seq_len == seq:
                return r.latency
        return None

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["fixed"] = [r.to_dict() for r in self.fixed]
        d["traffic"] = self.traffic.to_dict() if self.traffic else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VariantResult":
        d = dict(d)
        d["fixed"] = [ShapeResult(r["batch_size"], r["seq_len"], _stats_from(r["latency"])) for r in d["fixed"]]
        t = d.get("traffic")
        if t:
            t = dict(t)
            t["batch_latency"] = _stats_from(t["batch_latency"])
            d["traffic"] = TrafficResult(**t)
        return cls(**d)


@dataclasses.dataclass
class Refusal:
    name: str
    runtime: str
    device: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class BenchResults:
    config: dict[str, Any]  # tagged BenchConfig
    environment: dict[str, Any]  # bertpress.hardware.info()
    threads: int
    headline: dict[str, int]  # {"batch_size", "seq_len"}
    reference: str | None  # id of the fp32 PyTorch reference variant (ratios are against it)
    eval_data: dict[str, Any] | None  # {"source", "split", "rows", "skipped", "labels"}
    variants: list[VariantResult]
    refused: list[Refusal] = dataclasses.field(default_factory=list)
    created: str = ""
    schema: str = RESULTS_SCHEMA

    def variant(self, vid: str) -> VariantResult:
        for v in self.variants:
            if v.id == vid:
                return v
        raise KeyError(vid)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["variants"] = [v.to_dict() for v in self.variants]
        d["refused"] = [r.to_dict() for r in self.refused]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BenchResults":
        if d.get("schema") != RESULTS_SCHEMA:
            raise ArtifactError(f"results.json schema {d.get('schema')!r} is not {RESULTS_SCHEMA!r}; "
                                "re-run bertpress bench with this version")
        d = dict(d)
        d["variants"] = [VariantResult.from_dict(v) for v in d["variants"]]
        d["refused"] = [Refusal(**r) for r in d.get("refused", [])]
        return cls(**d)


@dataclasses.dataclass
class BenchReport(Artifact):
    """A finished report artifact with its parsed results."""

    results: BenchResults | None = None

    @classmethod
    def load(cls, path) -> "BenchReport":  # type: ignore[override]
        art = Artifact.load(path)
        if art.kind != "report":
            raise ArtifactError(f"{path}: a {art.kind!r} artifact, not a bench report")
        file = Path(path) / "results.json"
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{file}: unreadable ({exc}); re-run bertpress bench") from None
        return cls(path=art.path, manifest=art.manifest, results=BenchResults.from_dict(data))
