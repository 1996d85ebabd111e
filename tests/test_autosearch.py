"""The automatic search (compress/autosearch.py): its space, its stop rule, resume, the time
budget, and `export` with no --format reproducing what it measured. Tiny models, small spaces."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bertpress.compress import api as A
from bertpress.compress import autosearch as AS
from bertpress.compress.config import CompressConfig, PruneConfig, QuantizeConfig, RecoverConfig, SearchConfig
from bertpress.app.search_runtimes import DEPLOY_RUNTIMES
from bertpress.testing import save_tiny_checkpoint, write_tiny_dataset


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ck") / "ckpt", num_hidden_layers=4, intermediate_size=128)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture
def speed_by_depth(monkeypatch):
    """Eager candidates' speed = their depth (ms), so that the order is the model's, not the load's:
    tiny models time within noise of each other. The timing path itself runs in the other tests."""
    from bertpress.timing import LatencyStats

    def timer(self, model, twin):
        ms = float(len(model.bert.encoder.layer)) if twin is None else 1.0
        return lambda: LatencyStats(ms, 0.0, ms, ms, ms, ms, 1, ms / 1000)

    monkeypatch.setattr(AS._AutoSearch, "timer", timer)


@pytest.fixture
def trained_depths(monkeypatch) -> list:
    """The depth of every student the search trains, in order."""
    calls: list = []
    real = A.HANDLERS[RecoverConfig]

    def spy(work, cfg):
        calls.append(len(work.model.bert.encoder.layer))
        return real(work, cfg)

    monkeypatch.setitem(A.HANDLERS, RecoverConfig, spy)
    return calls


def cfg_for(data: Path, *, runtime="pytorch", drop=100.0, schemes=("dynamic",), **search) -> CompressConfig:
    return CompressConfig(
        quantize=QuantizeConfig(calibration_data=str(data), calibration_samples=16),
        prune=PruneConfig(importance="magnitude", round_to=8),
        recover=RecoverConfig(epochs=4.0, batch_size=16, hidden_weight=1.0, lr=1e-3, max_length=32),
        search=SearchConfig(max_accuracy_drop=drop, runtime=runtime, schemes=schemes, latency_min_seconds=0.0,
                            latency_seq_len=16, latency_rounds=1, **{"layers": (0.0, 0.5), "ffn": (0.0,),
                                                                    "heads": (0.0,), **search}),
        eval_data=str(data))


def test_default_space_is_automatic_and_flags_narrow_it():
    s = SearchConfig()
    assert s.auto and s.schedule is None
    assert {sc.value for sc in s.scheme_list} == {"dynamic", "static"}
    assert (0.0, 0.0, 0.0) in s.auto_shapes() and (0.0, 0.75, 0.5) in s.auto_shapes()
    assert len(s.auto_shapes()) == len(s.layers) * len(s.ffn) * len(s.heads)
    narrow = SearchConfig(layers=(0.0, 0.5), ffn=(0.0,), heads=(0.0,))
    assert narrow.auto_shapes() == ((0.0, 0.0, 0.0), (0.0, 0.0, 0.5))
    walk = SearchConfig(schedule=["0:0", "0.5:0.5"])
    assert not walk.auto and {sc.value for sc in walk.scheme_list} == {"none", "dynamic", "static"}


@pytest.mark.parametrize("kwargs, needle", [
    ({"schedule": ["0:0.5"], "time_budget": 5}, "time_budget bounds the automatic search"),
    ({"schedule": ["0:0.5"], "layers": (0.0, 0.5)}, "search.layers sets the automatic search's space"),
    ({"rungs": (0.5,), "rung_slack": (1.0, 2.0)}, "one slack per rung"),
    ({"time_budget": 0}, "search.time_budget"),
    ({"ffn": (1.0,)}, "search.ffn[0]"),
])
def test_search_config_refusals(kwargs, needle):
    from bertpress.errors import ConfigError

    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        SearchConfig(**kwargs)


def test_automatic_search_needs_training_data():
    from bertpress.errors import ConfigError

    with pytest.raises(ConfigError, match="needs training data; pass --calibration-data"):
        CompressConfig(search=SearchConfig(schemes=("dynamic",)), eval_data="d",
                       prune=PruneConfig(importance="magnitude"))


def test_the_default_recovery_has_a_floor_of_steps_and_the_users_flags_replace_it(data):
    auto = AS.recover_config(CompressConfig(search=SearchConfig(), eval_data="d",
                                            quantize=QuantizeConfig(calibration_data=str(data)),
                                            prune=PruneConfig(importance="magnitude")))
    assert (auto.epochs, auto.min_steps, auto.hidden_weight, auto.attention_weight) == (2.0, 1000, 1.0, 1.0)
    theirs = AS.recover_config(cfg_for(data))
    assert (theirs.epochs, theirs.min_steps) == (4.0, None)


def test_task_metric():
    assert AS.task_metric(2, pairs=False) == "accuracy"
    assert AS.task_metric(2, pairs=True) == "f1"
    assert AS.task_metric(5, pairs=False) == "macro_f1"


def test_search_times_before_training_and_trains_by_bisection(ckpt, data, tmp_path, speed_by_depth, trained_depths):
    """Every candidate is timed before any training; with an unlimited budget the first trained
    shape (the faster of the two middle ones: here the fastest) wins and no slower shape is trained."""
    calls, said = trained_depths, []
    art = A.compress(ckpt, cfg_for(data, layers=(0.0, 0.25, 0.5)), tmp_path / "o", progress=False, log=said.append)
    s = art.manifest.details["search"]
    assert s["strategy"] == "automatic"
    events = [e["event"] for e in s["timeline"]]
    assert events.index("timed") < events.index("trial complete")
    done = next(e for e in s["timeline"] if e["event"] == "trial complete")
    # the fp32 line is signed like the variants' lines: the change from the uncompressed model
    assert any(f"{done['shape']}: trained in " in line and line.endswith(f"fp32 {-done['drop_points']:+.2f} points")
               for line in said), said
    rows = s["table"]
    assert {(r["layers_kept"], r["runtime"]) for r in rows} == {(4, "pytorch"), (3, "pytorch"), (2, "pytorch")}
    assert all(r["latency_ms"] is not None for r in rows)  # every candidate timed, trained or not
    # at most the shapes faster than the unpruned incumbent were trained, by bisection, stopping when none is left
    pruned = sorted((r for r in rows if r["layers_kept"] < 4), key=lambda r: r["latency_ms"])
    assert calls and calls[0] == pruned[0]["layers_kept"]
    assert len(calls) == 1 and s["met_budget"] is True
    winner = [r for r in rows if r["winner"]]
    assert len(winner) == 1 and winner[0]["layers_kept"] == calls[0]
    assert s["deploy"]["runtime"] == "pytorch" and s["winner"]["layers"] > 0
    A.load_compressed(art.path)  # the winner is a usable artifact


def test_bisection_picks_the_median_and_a_miss_rules_out_the_shapes_pruned_further():
    shapes = ["a", "b", "c", "d", "e"]  # fastest first
    assert AS.pick(shapes) == "c" and AS.pick(["a", "b"]) == "a" and AS.pick(["a"]) == "a"
    assert AS.bisection_order(shapes) == ["c", "a", "d", "b", "e"]
    assert sorted(AS.bisection_order(list(range(17)))) == list(range(17))
    # (heads, ffn, layers) ratios: more removed in every dimension = at least as pruned
    assert AS.at_least_as_pruned((0.5, 0.75, 0.5), (0.0, 0.75, 0.333))
    assert AS.at_least_as_pruned((0.0, 0.75, 0.333), (0.0, 0.75, 0.333))
    assert not AS.at_least_as_pruned((0.0, 0.5, 0.5), (0.0, 0.75, 0.333))  # less FFN removed
    assert not AS.at_least_as_pruned((0.0, 0.0, 0.0), (0.0, 0.5, 0.0))


def test_a_shape_that_misses_rules_out_every_shape_pruned_further(ckpt, data, tmp_path, monkeypatch, speed_by_depth,
                                                                  trained_depths):
    """Three pruned depths (3, 2, 1 layers): the median (2) is trained first; it misses, so the
    1-layer shape is never trained, and the 3-layer one is; it makes the budget and wins."""
    real = AS._AutoSearch.scores_of

    def scores_of(self, model):
        got = real(self, model)
        if len(model.bert.encoder.layer) < 3:  # 2 and 1 layers: hopeless even for the budget of 100 points
            got = {k: -1.0 for k in got}
        return got

    monkeypatch.setattr(AS._AutoSearch, "scores_of", scores_of)
    art = A.compress(ckpt, cfg_for(data, layers=(0.0, 0.25, 0.5, 0.75)), tmp_path / "o", progress=False)
    s = art.manifest.details["search"]
    assert trained_depths == [2, 3]
    one = [t for k, t in s["trials"].items() if k.endswith("l0.750")]
    assert one and one[0]["state"] == "skipped" and "h0.000-f0.000-l0.500, which missed the budget" in one[0]["why"]
    assert s["winner"]["layers"] == 0.25 and s["met_budget"]
    assert any(e["event"] == "ruled out" for e in s["timeline"])


def test_a_candidate_stopped_at_a_rung_is_never_trained_further(ckpt, data, tmp_path, monkeypatch, speed_by_depth):
    """A pruned shape that scores far below the budget at its first rung stops training there (the
    trial is PRUNED in the Optuna study), its variants are never scored, and the unpruned model wins."""
    import optuna

    real = AS._AutoSearch.scores_of

    def scores_of(self, model):
        got = real(self, model)
        if len(model.bert.encoder.layer) < 4:  # every pruned student looks hopeless
            got = {k: 0.0 for k in got}
        return got

    monkeypatch.setattr(AS._AutoSearch, "scores_of", scores_of)
    steps = []
    real_recover = A.HANDLERS[RecoverConfig]

    def spy(work, cfg):
        out = real_recover(work, cfg)
        steps.append(out.details["recovery"]["metrics"]["steps"])
        return out

    monkeypatch.setitem(A.HANDLERS, RecoverConfig, spy)
    monkeypatch.setattr(AS, "remove_study", lambda out: None)  # keep the study to read it below
    art = A.compress(ckpt, cfg_for(data, drop=1.0), tmp_path / "o", progress=False)
    s = art.manifest.details["search"]
    (trial,) = [t for k, t in s["trials"].items() if "l0.500" in k]
    assert trial["state"] == "pruned" and trial["why"] == "pruned at rung 1"
    assert list(trial["drops"]) == ["0"] or list(trial["drops"]) == [0]
    assert steps and steps[0] < 24  # 96 rows / 16 x 4 epochs = 24 steps planned; stopped at the first rung
    assert all(r["metric"] is None for r in s["table"] if r["layers_kept"] < 4)
    assert s["winner"]["layers"] == 0.0
    study = optuna.load_study(study_name=s["study"]["name"], storage=f"sqlite:///{s['study']['storage']}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED]


def test_a_killed_search_resumes_from_its_finished_trials(ckpt, data, tmp_path, monkeypatch, speed_by_depth):
    from bertpress.errors import InputError

    out = tmp_path / "o"
    cfg = cfg_for(data)

    real_score = AS._AutoSearch.score_variant

    def score_or_die(self, c, pw, *a):
        if len(pw.model.bert.encoder.layer) < 4:
            raise InputError("killed")
        return real_score(self, c, pw, *a)

    with monkeypatch.context() as m:  # the first run dies after its trial finished
        m.setattr(AS._AutoSearch, "score_variant", score_or_die)
        with pytest.raises(InputError, match="killed"):
            A.compress(ckpt, cfg, out, progress=False)
    assert (AS.study_dir(out) / "study.db").is_file() and not out.exists()
    trained = []
    real = A.HANDLERS[RecoverConfig]
    monkeypatch.setitem(A.HANDLERS, RecoverConfig, lambda w, c: trained.append(1) or real(w, c))
    art = A.compress(ckpt, cfg, out, progress=False)
    s = art.manifest.details["search"]
    assert trained == []  # the finished trial's student was reused, not retrained
    assert any(e["event"] == "resumed" for e in s["timeline"])
    assert any(t.get("resumed") for t in s["trials"].values())
    assert s["winner"]["layers"] == 0.5 and s["met_budget"]
    assert not AS.study_dir(out).exists()  # published: the study is removed with what it held


def test_the_time_budget_is_honoured(ckpt, data, tmp_path, monkeypatch):
    """A budget spent while timing trains nothing: the unpruned in-budget variant is kept."""
    trained = []
    real = A.HANDLERS[RecoverConfig]
    monkeypatch.setitem(A.HANDLERS, RecoverConfig, lambda w, c: trained.append(1) or real(w, c))
    art = A.compress(ckpt, cfg_for(data, time_budget=1e-4), tmp_path / "o", progress=False)
    s = art.manifest.details["search"]
    assert trained == []
    assert s["winner"]["layers"] == 0.0 and s["met_budget"]
    assert {t["why"] for t in s["trials"].values()} <= {"time budget spent", "slower than the incumbent"}


def test_no_training_starts_with_less_budget_left_than_one_took(ckpt, data, tmp_path, monkeypatch, speed_by_depth,
                                                               trained_depths):
    """Three pruned depths, a budget everyone makes: the median (2 layers) is trained and wins; the
    faster 1-layer shape is still in play, but with less time left than that training took it is
    not started (it would be stopped unfinished), and the search ends."""
    def left_s(self):  # plenty until one training has finished, then a hundredth of a second
        return 0.01 if any(t.get("state") == "complete" for t in self.trials.values()) else 1e6

    monkeypatch.setattr(AS._AutoSearch, "left_s", left_s)
    art = A.compress(ckpt, cfg_for(data, layers=(0.0, 0.25, 0.5, 0.75)), tmp_path / "o", progress=False)
    s = art.manifest.details["search"]
    assert trained_depths == [2]
    (one,) = [t for k, t in s["trials"].items() if k.endswith("l0.750")]
    assert one["state"] == "skipped" and one["why"].startswith("time budget: 0 s left, a training took ")
    assert s["winner"]["layers"] == 0.5 and s["met_budget"]


def test_export_without_format_writes_what_the_search_measured(ckpt, data, tmp_path):
    from bertpress.export.api import export
    from bertpress.export.config import ExportConfig


    art = A.compress(ckpt, cfg_for(data, runtime="onnxruntime", layers=(0.0,)), tmp_path / "c", progress=False,
                     runtimes=DEPLOY_RUNTIMES)
    deploy = art.manifest.details["search"]["deploy"]
    assert deploy["runtime"] == "onnxruntime" and deploy["format"] == "onnx" and deploy["scheme"] == "dynamic"
    ex = export(art.path, ExportConfig(eval_data=str(data)), tmp_path / "e", progress=False)
    assert ex.kind == "onnx"
    got = ex.manifest.metrics["accuracy"]
    assert got["model.onnx"] == pytest.approx(deploy["accuracy"])


@pytest.mark.parametrize("searched_rows", [None, 40])
def test_export_scores_the_rows_the_search_scored(ckpt, tmp_path, searched_rows):
    """More dev rows than export's own default (512), batched as the search batched them: the gate
    draws the search's rows (all of them, or its seeded subset) and repeats its dynamic-int8 figure."""
    from bertpress.export.api import export
    from bertpress.export.config import ExportConfig

    big = write_tiny_dataset(tmp_path / "big", n_dev=600)
    cfg = cfg_for(big, runtime="onnxruntime", layers=(0.0,), eval_samples=searched_rows)
    art = A.compress(ckpt, dataclasses.replace(cfg, seed=3), tmp_path / "c", progress=False, runtimes=DEPLOY_RUNTIMES)
    s = art.manifest.details["search"]
    assert s["eval_samples"] == (searched_rows or 600) and s["eval_seed"] == 3
    ex = export(art.path, ExportConfig(eval_data=str(big)), tmp_path / "e", progress=False)
    assert ex.manifest.metrics["accuracy_on"]["n"] == (searched_rows or 600)
    assert ex.manifest.metrics["accuracy"]["model.onnx"] == pytest.approx(s["deploy"]["accuracy"])
    # a plain model keeps export's own default; --eval-samples always wins
    plain = export(ckpt, ExportConfig(eval_data=str(big), format="onnx"), tmp_path / "p", progress=False)
    assert plain.manifest.metrics["accuracy_on"]["n"] == 512
    asked = export(art.path, ExportConfig(eval_data=str(big), eval_samples=50), tmp_path / "a", progress=False)
    assert asked.manifest.metrics["accuracy_on"]["n"] == 50


def test_pairs_are_searched_on_f1_in_the_deploy_runtime(tmp_path, monkeypatch):
    """A sentence-pair model: the budget is in F1 of the positive class, and the deploy runtime's
    score comes from both texts of every pair (the runner is fed pairs, as export's gate is)."""
    from bertpress.compress import evaluate
    from bertpress.testing import write_tiny_pair_dataset

    pairs = write_tiny_pair_dataset(tmp_path / "pairs")
    ck = save_tiny_checkpoint(tmp_path / "ck", num_hidden_layers=2, intermediate_size=64)
    seen = []
    real = evaluate.runtime_scores

    def spy(run, tok, data, *a, **k):
        seen.append(data.text_pairs is not None and len(data.examples[0]) == 2)
        return real(run, tok, data, *a, **k)

    monkeypatch.setattr(evaluate, "runtime_scores", spy)
    cfg = dataclasses.replace(cfg_for(pairs, runtime="onnxruntime", layers=(0.0,)), text_pair_column="sentence2",
                              text_column="sentence1")
    art = A.compress(ck, cfg, tmp_path / "o", progress=False, runtimes=DEPLOY_RUNTIMES)
    s = art.manifest.details["search"]
    assert s["metric"] == "f1" and s["deploy"]["metric"] == "f1"
    assert seen and all(seen)
    assert "eval_f1" in art.manifest.metrics and art.manifest.metrics["metric"] == "f1"


def test_quickstart_summary_puts_the_winner_beside_optimum_intel(tmp_path, monkeypatch):
    """SUMMARY.md's winner section reads the search's deploy facts and the same bench run's rows."""
    import types

    from bertpress.app import quickstart
    from bertpress.artifact import Manifest, write_manifest
    from bertpress.bench import results as R

    assert quickstart.winner_vs_specialist(tmp_path) == []  # no stages yet: nothing to say
    (tmp_path / "compressed").mkdir()
    (tmp_path / "report").mkdir()
    search = {"deploy": {"format": "openvino", "runtime": "openvino", "scheme": "static"}, "wall_s": 300,
              "winner": {"heads": 0.0, "ffn": 0.0, "layers": 0.34},
              "table": [{"winner": True, "layers_kept": 4, "heads_kept": 12, "ffn_kept": 1536}]}
    write_manifest(tmp_path / "compressed", Manifest(kind="compressed", labels=["a", "b"], details={"search": search}))
    write_manifest(tmp_path / "report", Manifest(kind="report", labels=["a", "b"]))

    def variant(vid, ms, sps, acc):
        return types.SimpleNamespace(id=vid, p50=lambda b, q: ms, sentences_per_s=lambda: sps, accuracy=acc)

    res = types.SimpleNamespace(headline={"batch_size": 1, "seq_len": 128}, reference="checkpoint:pytorch@cpu",
                                variants=[variant("checkpoint:pytorch@cpu", 20.0, 350.0, 0.80),
                                          variant("openvino:openvino@cpu", 3.0, 1650.0, 0.81),
                                          variant("optimum-intel@cpu", 4.5, 1100.0, 0.80)])
    monkeypatch.setattr(R.BenchReport, "load", classmethod(lambda cls, p: types.SimpleNamespace(results=res)))
    text = "\n".join(quickstart.winner_vs_specialist(tmp_path))
    assert "4 layers, 12 heads, FFN 1536" in text and "static int8 in openvino" in text
    assert "1.50x at 1 x 128, 1.50x on real traffic, +1.00 accuracy points" in text


def test_the_cli_names_the_export_that_repeats_the_search(ckpt, data, tmp_path, capsys):
    """`bertpress compress` after an automatic search prints the export command, with the eval
    data whose rows export's gate then scores as the search did."""
    from bertpress.app.cli import main

    out = tmp_path / "my out"
    assert main(["compress", str(ckpt), "--out", str(out), "--max-accuracy-drop", "100", "--eval-data", str(data),
                 "--calibration-data", str(data), "--search-layers", "0", "--search-ffn", "0", "--search-heads", "0",
                 "--search-runtime", "onnxruntime", "--search-schemes", "dynamic", "--latency-rounds", "1",
                 "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert f"next: bertpress export '{out}' --out DIR --eval-data {data} " in said  # quoted: a path with a space
