"""The CLI cannot drift from the config dataclasses: a command line that sets nothing builds
exactly the default config, and every flag with choices offers exactly the values its config
field accepts."""

from __future__ import annotations

import enum
import typing

import pytest

from bertpress.config import to_tagged


def _parse(argv):
    from bertpress.app.cli import build_parser

    return build_parser().parse_args(argv)


def _stages():
    from bertpress.bench.cli import config_from_args as bench_cfg
    from bertpress.bench.config import BenchConfig
    from bertpress.compress.cli import config_from_args as compress_cfg
    from bertpress.compress.config import CompressConfig
    from bertpress.export.cli import config_from_args as export_cfg
    from bertpress.export.config import ExportConfig
    from bertpress.finetune.cli import config_from_args as finetune_cfg
    from bertpress.finetune.config import FinetuneConfig

    return {
        "finetune": (["finetune"], finetune_cfg, FinetuneConfig()),
        "compress": (["compress", "ckpt", "--out", "o"], compress_cfg, CompressConfig()),
        "export": (["export", "ckpt", "--out", "o"], export_cfg, ExportConfig()),
        "bench": (["bench", "a"], bench_cfg, BenchConfig()),
    }


@pytest.mark.parametrize("stage", ["finetune", "compress", "export", "bench"])
def test_a_bare_command_line_builds_the_default_config(stage):
    argv, build, default = _stages()[stage]
    assert to_tagged(build(_parse(argv))) == to_tagged(default)


def _field_type(cls, path):
    """The (enum) type of a dotted config field, e.g. 'quantize.scheme' of CompressConfig."""
    for part in path.split("."):
        hint = typing.get_type_hints(cls)[part]
        args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        cls = args[0]
    return cls


# flag -> (config class, field); every flag with argparse choices must be listed here.
CHOICE_FIELDS = {
    ("finetune", "precision"): ("bertpress.finetune.config:FinetuneConfig", "precision"),
    ("compress", "quantize"): ("bertpress.compress.config:CompressConfig", "quantize.scheme"),
    ("compress", "calibration_method"): ("bertpress.compress.config:CompressConfig", "quantize.calibration_method"),
    ("compress", "quantize_scope"): ("bertpress.compress.config:CompressConfig", "quantize.scope"),
    ("compress", "importance"): ("bertpress.compress.config:CompressConfig", "prune.importance"),
    ("compress", "latency_statistic"): ("bertpress.compress.config:SearchConfig", "latency_statistic"),
    ("compress", "search_runtime"): ("bertpress.compress.config:SearchConfig", "runtime"),
    ("compress", "search_objective"): ("bertpress.compress.config:SearchConfig", "objective"),
    ("compress", "executor"): ("bertpress.compress.config:SearchConfig", "executor"),
    ("export", "format"): ("bertpress.export.config:ExportConfig", "format"),
    ("export", "optimize"): ("bertpress.export.config:ExportConfig", "optimize"),
    ("export", "quantize"): ("bertpress.export.config:ExportConfig", "quantize"),
    ("export", "weight_type"): ("bertpress.export.config:ExportConfig", "weight_type"),
    ("export", "calibration_method"): ("bertpress.export.config:ExportConfig", "calibration_method"),
}
SPECIAL = {("export", "per_channel"): ("follow", "yes", "no")}  # maps onto per_channel None/True/False


def _choices_of(stage):
    from bertpress.app.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return {a.dest: tuple(a.choices) for a in sub.choices[stage]._actions if a.choices}


@pytest.mark.parametrize("stage", ["finetune", "compress", "export"])
def test_flag_choices_are_the_config_values(stage):
    import importlib

    from bertpress.compress.config import SEARCH_RUNTIMES

    for dest, choices in _choices_of(stage).items():
        key = (stage, dest)
        if key in SPECIAL:
            assert choices == SPECIAL[key]
            continue
        assert key in CHOICE_FIELDS, f"{stage} --{dest} has choices but no config field is listed for it"
        mod, cls = CHOICE_FIELDS[key][0].split(":")
        typ = _field_type(getattr(importlib.import_module(mod), cls), CHOICE_FIELDS[key][1])
        if isinstance(typ, type) and issubclass(typ, enum.Enum):
            allowed = tuple(m.value for m in typ)
        elif key == ("compress", "search_runtime"):
            allowed = SEARCH_RUNTIMES
        elif key == ("compress", "latency_statistic"):
            from bertpress.compress.config import LATENCY_STATISTICS as allowed
        elif key == ("compress", "executor"):
            from bertpress.compress.config import EXECUTORS as allowed
        elif key == ("compress", "search_objective"):
            from bertpress.compress.config import SEARCH_OBJECTIVES as allowed
        else:
            pytest.fail(f"{key}: field type {typ} has no value list")
        assert set(choices) == set(allowed), (key, choices, allowed)


def test_flags_set_their_fields_through_build_config():
    """A generated flag reaches its (nested) field; one spelling shared by two fields sets both;
    list fields take the comma-separated form their config parses."""
    from bertpress.bench.cli import config_from_args as bench_cfg
    from bertpress.compress.cli import config_from_args as compress_cfg
    from bertpress.finetune.cli import config_from_args as finetune_cfg

    c = compress_cfg(_parse(["compress", "ckpt", "--out", "o", "--calibration-data", "d", "--prune-heads", "0.5",
                             "--recover-epochs", "1", "--recover-augment", "2", "--quantize", "static",
                             "--max-accuracy-drop", "2", "--eval-data", "e", "--search-schemes", "none,static",
                             "--search-schedule", "0:0.5,0.25:0:0.5", "--seed", "3"]))
    assert c.quantize.calibration_data == c.prune.calibration_data == "d" and c.prune.heads == 0.5
    assert (c.recover.epochs, c.recover.augment, c.quantize.scheme.value, c.seed) == (1.0, 2, "static", 3)
    assert c.search.max_accuracy_drop == 2.0 and [s.value for s in c.search.schemes] == ["none", "static"]
    assert c.search.schedule == ((0.0, 0.5), (0.25, 0.0, 0.5)) and c.search.latency_rounds == 3
    b = bench_cfg(_parse(["bench", "a", "--batch-sizes", "2,4", "--seq-lens", "16", "--headline", "2x16",
                          "--baselines", "hf-pipeline", "--device", "cpu"]))
    assert (b.batch_sizes, b.seq_lens, b.headline, [x.value for x in b.baselines]) == ((2, 4), (16,), (2, 16),
                                                                                        ["hf-pipeline"])
    f = finetune_cfg(_parse(["finetune", "--labels", "neg,pos", "--resume", "--teacher", "t", "--augment", "1"]))
    assert (f.labels, f.resume, f.teacher, f.augment) == (("neg", "pos"), True, "t", 1)


def test_help_shows_defaults_as_typed():
    from bertpress.app.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    bench = sub.choices["bench"].format_help()
    assert "(default: 1,8,32)" in " ".join(bench.split())
    compress = " ".join(sub.choices["compress"].format_help().split())
    assert "--quantize {none,dynamic,static} int8 scheme for the Linear layers (default: dynamic)" in compress
    assert "--recover-augment N" in compress and "recovery:" in compress and "pruning:" in compress
