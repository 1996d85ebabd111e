"""Bad-input matrix entries for issue #31 items 3 and 5 (round 3 of reliability): pruning requests
that remove nothing, and integer label maps with a class that has no training rows. Each class is
tried through the CLI verbs, `run` and the Python API. The bundle's predict.py (item 6) is an entry
point run as a subprocess: its entries are in tests/test_reliability3.py (test_predict_py_*).
"""

from __future__ import annotations

from pathlib import Path

import tests.bad_inputs_round2 as r2
import tests.test_bad_inputs as base  # helpers are looked up when a case runs (circular import)

# Round 3's classes by entry-name prefix (the test summary prints a count per class).
CLASSES = {"noop-": "r3 requests that do nothing", "gap-": "r3 labels: a class without training rows"}
NOTHING = r"rounds to 0, so it removes nothing; the nearest ratio that removes one is"
GAP = r"never appears in this split .* renumber the labels 0..K-1"


def _encoder(c) -> str:
    """A tiny encoder (no classification head): finetune infers the label map from the data."""
    from bertpress.testing import tiny_bert

    d = c.inputs / "encoder"
    if not d.exists():
        clf, tok = tiny_bert()
        clf.bert.save_pretrained(d)
        tok.save_pretrained(d)
    return str(d)


def _gap_data(c, labels=(0, 2), name="gap") -> str:
    rows = "".join(f"sentence {i}\t{labels[i % len(labels)]}\n" for i in range(24))
    return c.datadir(name, "sentence\tlabel\n" + rows, dev="sentence\tlabel\nsome text\t1\nother text\t0\n")


def _prune(**kw):
    from bertpress.compress import CompressConfig, PruneConfig

    return CompressConfig(prune=PruneConfig(importance="magnitude", **kw))


def _run_compress(c, prune: dict) -> list[str]:
    return ["run", c.recipe({"out": str(c.out), "checkpoint": str(c.ckpt),
                             "compress": {"prune": {"importance": "magnitude", **prune}}})]


def _run_finetune(c, data: str) -> list[str]:
    return ["run", c.recipe({"out": str(c.out), "finetune": {"model": _encoder(c), "data": data, "epochs": 1,
                                                              "batch_size": 8, "max_length": 32}})]


CASES_ROUND3 = [
    # --- 3. a pruning request that removes nothing (tiny model: 2 layers, 4 heads, FFN 37) ---
    ("noop-cp-layers-0.2", lambda c: base.cp(c, "--prune-layers", "0.2"), r"--prune-layers 0.2 of 2 encoder layers " + NOTHING),
    ("noop-cp-layers-0.1", lambda c: base.cp(c, "--prune-layers", "0.1"), NOTHING + r" 0.5 \(1 of 2\)"),
    ("noop-cp-heads-0.1", lambda c: base.cp(c, "--prune-heads", "0.1", "--importance", "magnitude"),
     r"--prune-heads 0.1 of 4 heads per layer " + NOTHING + r" 0.25"),
    ("noop-cp-heads-0.12", lambda c: base.cp(c, "--prune-heads", "0.12", "--importance", "magnitude"), NOTHING),
    ("noop-cp-ffn-0.01", lambda c: base.cp(c, "--prune-ffn", "0.01", "--round-to", "1", "--importance", "magnitude"),
     r"--prune-ffn 0.01 removes no FFN channel of 37"),
    ("noop-cp-layers-all", lambda c: base.cp(c, "--prune-layers", "0.75"), r"would remove all 2 encoder layers"),
    ("noop-api-layers-0.2", lambda c: r2.api_compress(c, _prune(layers=0.2)), NOTHING),
    ("noop-api-heads-0.1", lambda c: r2.api_compress(c, _prune(heads=0.1)), NOTHING),
    ("noop-api-ffn-0.02", lambda c: r2.api_compress(c, _prune(ffn=0.02, round_to=8)),
     r"FFN width 37 is not above --round-to|removes no FFN channel"),
    ("noop-run-layers-0.2", lambda c: _run_compress(c, {"layers": 0.2}), NOTHING),
    ("noop-run-heads-0.1", lambda c: _run_compress(c, {"heads": 0.1}), NOTHING),
    # --- 5. one label rule: a class of the inferred map with no training rows is refused ---
    ("gap-ft-int-0-2", lambda c: base.ft(c, model=_encoder(c), data=_gap_data(c)), GAP),
    ("gap-ft-one-based", lambda c: base.ft(c, model=_encoder(c), data=_gap_data(c, (1, 2))),
     r"integer labels run 0..2 but 0 never appears"),
    ("gap-ft-sparse-ids", lambda c: base.ft(c, model=_encoder(c), data=_gap_data(c, (0, 1, 5))),
     r"3 id\(s\) missing"),
    ("gap-api-load-data", lambda c: load_data_later(_gap_data(c)), GAP),
    ("gap-run-finetune", lambda c: _run_finetune(c, _gap_data(c)), GAP),
]


def load_data_later(path: str | Path):
    from bertpress.data import load_text_classification

    return lambda: load_text_classification(path)
