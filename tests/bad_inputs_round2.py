"""Bad-input matrix entries for the classes of issue #18 (round 2 of reliability).

Each class is exercised through several entry points (the four verbs, `run`, `quickstart`, the
Python API), so the rule is shown to live in one place, not in the example. Builders take the
case's `Ctx` (tests/test_bad_inputs.py) and return an argv for the CLI or a zero-argument callable
for the API.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import tests.test_bad_inputs as base  # helpers are looked up when a case runs (circular import)

BOMB = """\
a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
out: x
finetune: {epochs: *f}
"""


# ---- small builders ------------------------------------------------------------------------


def ft(c, *extra, **kw):
    return base.ft(c, *extra, **kw)


def cp(c, *extra, **kw):
    return base.cp(c, *extra, **kw)


def ex(c, *extra, **kw):
    return base.ex(c, *extra, **kw)


def bn(c, *extra, **kw):
    return base.bn(c, *extra, **kw)


def _config(**changes):
    def f(d: Path) -> None:
        cfg = json.loads((d / "config.json").read_text())
        cfg.update(changes)
        (d / "config.json").write_text(json.dumps(cfg))
    return f


def _manifest(**changes):
    def f(d: Path) -> None:
        m = json.loads((d / "bertpress.json").read_text())
        m.update(changes)
        (d / "bertpress.json").write_text(json.dumps(m))
    return f


def _fifo(name):
    def f(d: Path) -> None:
        (d / name).unlink(missing_ok=True)
        os.mkfifo(d / name)
    return f


def _drop_tensor(key="bert.encoder.layer.0.output.dense.weight"):
    def f(d: Path) -> None:
        from safetensors.torch import load_file, save_file

        tensors = load_file(d / "model.safetensors")
        del tensors[key]
        save_file(tensors, d / "model.safetensors", metadata={"format": "pt"})
    return f


def _remove(*names):
    def f(d: Path) -> None:
        for n in names:
            (d / n).unlink(missing_ok=True)
    return f


def _chain(*fs):
    def f(d: Path) -> None:
        for g in fs:
            g(d)
    return f


def _small_vocab_model(c) -> str:
    """A self-consistent model whose embedding table (20 rows) is smaller than its tokenizer."""
    from transformers import BertConfig, BertForSequenceClassification

    from bertpress.testing import tiny_tokenizer

    d = c.inputs / "small-vocab"
    cfg = BertConfig(vocab_size=20, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                     intermediate_size=37, max_position_embeddings=64, num_labels=2,
                     id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    BertForSequenceClassification(cfg).save_pretrained(d)
    tiny_tokenizer(d).save_pretrained(d)
    return str(d)


def _planted_partial(c) -> None:
    """A Trainer checkpoint in OUT's partial dir whose rng_state.pth would run code if unpickled."""
    import pickle

    ck = c.tmp / ".out.partial" / "checkpoint-2"
    ck.mkdir(parents=True)
    (ck / "trainer_state.json").write_text(json.dumps({"global_step": 2, "log_history": []}))

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {c.tmp / 'PWNED'}",))

    (ck / "rng_state.pth").write_bytes(pickle.dumps({"python": Payload()}))


def enc(c) -> str:
    """The tiny checkpoint as a plain encoder (not a classifier): labels come from the data."""
    return c.ckpt_variant("enc", _config(architectures=["BertModel"]))


def _copy_data(c, rel: str) -> str:
    import shutil

    shutil.copytree(c.data, c.inputs / rel)
    return str(c.inputs / rel)


def _datadir_both(c) -> str:
    d = c.datadir("d", "sentence\tlabel\ngood\t1\nbad\t0\n")
    (Path(d) / "train.csv").write_text("sentence,label\ngood,1\nbad,0\n")
    return d


def _fifo_datadir(c) -> str:
    d = Path(c.datadir("d", "sentence\tlabel\ngood\t1\nbad\t0\n"))
    (d / "train.tsv").unlink()
    os.mkfifo(d / "train.tsv")
    return str(d)


def _id_rows(n=30) -> str:
    return "sentence\tlabel\n" + "".join(f"good film {i}\t{i}\n" for i in range(n))


def _run_dir_with(c, sub: str, files: dict[str, str]) -> Path:
    run = c.tmp / "run"
    c.user_dir(run / sub, files)
    return run


def _own_checkpoint_recipe(c) -> list[str]:
    import shutil

    run = c.tmp / "run"
    shutil.copytree(c.ckpt, run / "checkpoint")
    c.protected.append(run / "checkpoint")
    return ["run", c.recipe({"out": str(run), "finetune": {
        "model": str(run / "checkpoint"), "data": str(c.data), "epochs": 1, "batch_size": 8, "max_length": 32}})]


def _cwd_case(c, verb: str, out: str) -> list[str]:
    c.cwd = c.user_dir(c.tmp / "here", {"mine.txt": "x"})
    argv = {"ft": ft, "cp": cp, "ex": ex, "bn": bn}[verb](c)
    i = argv.index("--out")
    argv[i + 1] = out
    return argv + ["--overwrite"]


def _symlink_out(c, target: Path) -> list[str]:
    c.out.symlink_to(target)
    return ex(c, "--overwrite")


# ---- the Python API --------------------------------------------------------------------------


def api_export(c, **kw):
    from bertpress.export import ExportConfig, export

    return lambda: export(c.ckpt, ExportConfig(**kw.pop("cfg", {})), c.out, **kw)


def api_compress(c, cfg=None, **kw):
    from bertpress.compress import CompressConfig, compress

    return lambda: compress(c.ckpt, cfg or CompressConfig(), c.out, progress=False, **kw)


def api_finetune(c, overwrite=False):
    from bertpress.finetune import FinetuneConfig, finetune

    return lambda: finetune(c.ckpt, FinetuneConfig(data=str(c.data), epochs=1, batch_size=8, max_length=32),
                            c.out, overwrite=overwrite, progress=False)


def api_bench(c, **kw):
    from bertpress.bench import BenchConfig, bench

    return lambda: bench([c.ckpt], BenchConfig(batch_sizes=(1,), seq_lens=(8,), min_iters=1, min_seconds=0,
                                               warmup=0), c.out, progress=False, **kw)


def api_staged(c):
    from bertpress.artifact import staged_output

    def f():
        with staged_output(c.out, overwrite=True):
            raise AssertionError("staged_output must refuse before the body runs")
    return f


def api_config(cls_path: str, **kw):
    def f():
        import importlib

        module, cls = cls_path.rsplit(".", 1)
        getattr(importlib.import_module(module), cls)(**kw)
    return f


def api_run_recipe(c, data: dict):
    from bertpress.app.pipeline import parse_recipe, run_recipe

    return lambda: run_recipe(parse_recipe(data, source="api"), progress=lambda m: None)


NAN, INF = float("nan"), float("inf")
# Issue #18's classes by entry-name prefix (the test summary prints a count per class).
CLASSES = {"own-": "1 ownership", "nan-": "2 NaN/inf", "lab-": "3 labels/columns", "col-": "3 labels/columns",
           "mdl-": "4 models", "res-": "5 resume", "out-": "6 output locations", "dos-": "7 bounded messages"}
OWN = r"refusing to delete or replace it"
INSIDE = r"inside \(or contains\) the input"
FINITE = r"is not a finite number"

CASES_ROUND2 = [
    # --- 1. ownership of output directories ---
    ("own-ft-overwrite-user-dir", lambda c: (c.user_dir(), ft(c, "--overwrite"))[-1], OWN),
    ("own-cp-overwrite-user-dir", lambda c: (c.user_dir(), cp(c, "--overwrite"))[-1], OWN),
    ("own-ex-overwrite-user-dir", lambda c: (c.user_dir(), ex(c, "--overwrite"))[-1], OWN),
    ("own-bn-overwrite-user-dir", lambda c: (c.user_dir(), bn(c, "--overwrite"))[-1], OWN),
    ("own-ex-overwrite-home-like-dir", lambda c: (c.user_dir(files={"Documents/cv.pdf": "x", ".bashrc": "y"}),
                                                  ex(c, "--overwrite"))[-1], OWN),
    ("own-ex-corrupt-manifest-dir", lambda c: (c.user_dir(files={"bertpress.json": "{not json", "a.txt": "x"}),
                                               ex(c, "--overwrite"))[-1], OWN),
    ("own-ex-artifact-plus-user-file", lambda c: (
        base.shutil.copytree(c.ckpt, c.out / "onnx"), c.user_dir(files={"todo.txt": "mine"}),
        ex(c, "--overwrite"))[-1], r"todo.txt was not written by bertpress"),
    ("own-ex-symlink-to-user-dir", lambda c: _symlink_out(c, c.user_dir(c.tmp / "target")), OWN),
    ("own-ex-symlink-to-file", lambda c: _symlink_out(c, Path(c.file("plain.txt", "x"))), r"is a file"),
    ("own-run-stage-dir-foreign", lambda c: ["run", c.recipe({
        "out": str(_run_dir_with(c, "export", {"notes.txt": "mine"})), "checkpoint": str(c.ckpt),
        "export": {"format": "onnx"}})], r"export output .*refusing to delete or replace it"),
    ("own-run-checkpoint-dir-foreign", lambda c: ["run", c.recipe({
        "out": str(_run_dir_with(c, "checkpoint", {"data.csv": "mine"})), "finetune": {
            "model": str(c.ckpt), "data": str(c.data), "epochs": 1}})], OWN),
    ("own-run-finetune-from-own-checkpoint", _own_checkpoint_recipe, INSIDE),
    ("own-run-data-inside-stage-dir", lambda c: ["run", c.recipe({
        "out": str(c.inputs), "finetune": {"model": str(c.ckpt), "data": _copy_data(c, "checkpoint/d"),
                                            "epochs": 1}})], INSIDE),
    ("own-run-data-is-parent-of-out", lambda c: ["run", c.recipe({
        "out": str(c.data / "run"), "finetune": {"model": str(c.ckpt), "data": str(c.data), "epochs": 1}})], INSIDE),
    ("own-run-recipe-inside-stage-dir", lambda c: ["run", str(
        (c.inputs / "compressed").mkdir() or Path(c.file("compressed/r.yaml", yaml_dump({
            "out": str(c.inputs), "checkpoint": str(c.ckpt), "compress": {"quantize": {"scheme": "dynamic"}}}))))],
     r"compress output .*inside"),
    ("own-qs-overwrite-user-dir", lambda c: ["quickstart", "--out", str(c.user_dir(files={
        "recipe.yaml": "out: mine\n", "thesis.tex": "years"})), "--overwrite", "--recipe-only"], OWN),
    ("own-qs-overwrite-recipe-only-dir", lambda c: ["quickstart", "--out", str(c.user_dir(files={
        "recipe.yaml": "out: mine\n"})), "--overwrite", "--recipe-only"], r"recipe.yaml was not written"),
    ("own-qs-recipe-only-keeps-user-recipe", lambda c: ["quickstart", "--out", str(c.user_dir(files={
        "recipe.yaml": "out: my-own\n"})), "--recipe-only"], r"recipe.yaml: exists and was not written"),
    ("own-qs-data-inside-out", lambda c: ["quickstart", "--out", str(c.inputs), "--data", str(c.data),
                                         "--overwrite", "--recipe-only"], INSIDE),
    ("own-cp-out-contains-calibration-data", lambda c: (
        c.user_dir(files={"calib.tsv": "sentence\tlabel\ngood\t1\nbad\t0\n"}),
        cp(c, "--quantize", "static", "--calibration-data", str(c.out / "calib.tsv"), "--overwrite"))[-1], INSIDE),
    ("own-ex-out-contains-eval-data", lambda c: ex(c, "--eval-data", str(c.data / "dev.tsv"))[:2] + [
        "--out", str(c.data), "--eval-data", str(c.data / "dev.tsv")], INSIDE),
    ("own-bn-out-contains-eval-data", lambda c: bn(c, "--eval-data", str(c.data / "dev.tsv"))[:2] + [
        "--out", str(c.data)] + bn(c, "--eval-data", str(c.data / "dev.tsv"))[4:], INSIDE),
    ("own-ft-out-is-teacher", lambda c: ft(c, "--teacher", str(c.ckpt))[:5] + ["--out", str(c.ckpt)]
     + ft(c, "--teacher", str(c.ckpt))[7:], INSIDE),
    ("own-ex-out-dot", lambda c: _cwd_case(c, "ex", "."), r"current directory"),
    ("own-cp-out-dot", lambda c: _cwd_case(c, "cp", "."), r"current directory"),
    ("own-ft-out-parent-of-cwd", lambda c: _cwd_case(c, "ft", ".."), r"current directory"),
    ("own-run-out-is-file", lambda c: ["run", c.recipe({"out": c.file("f.txt", "x"), "checkpoint": str(c.ckpt),
                                                        "export": {}})], r"cannot create|is a file"),
    ("own-run-out-on-readonly-fs", lambda c: ["run", c.recipe({"out": "/proc/bertpress-no", "checkpoint": str(c.ckpt),
                                                               "export": {}})], r"cannot create|cannot write"),
    ("own-ex-out-on-readonly-fs", lambda c: ex(c)[:2] + ["--out", "/proc/bertpress-no/x"], r"cannot create|cannot write"),
    ("own-api-export-overwrite-user-dir", lambda c: (c.user_dir(), api_export(c, overwrite=True))[-1], OWN),
    ("own-api-compress-overwrite-user-dir", lambda c: (c.user_dir(), api_compress(c, overwrite=True))[-1], OWN),
    ("own-api-finetune-overwrite-user-dir", lambda c: (c.user_dir(), api_finetune(c, overwrite=True))[-1], OWN),
    ("own-api-bench-overwrite-user-dir", lambda c: (c.user_dir(), api_bench(c, overwrite=True))[-1], OWN),
    ("own-api-staged-output-user-dir", lambda c: (c.user_dir(), api_staged(c))[-1], OWN),
    ("own-api-remove-owned-user-dir", lambda c: (c.user_dir(), lambda: __import__(
        "bertpress.artifact", fromlist=["x"]).remove_owned(c.out))[-1], OWN),
    ("own-api-run-finetune-from-own-checkpoint", lambda c: (
        base.shutil.copytree(c.ckpt, c.tmp / "run" / "checkpoint"), c.protected.append(c.tmp / "run"),
        api_run_recipe(c, {"out": str(c.tmp / "run"), "finetune": {
            "model": str(c.tmp / "run" / "checkpoint"), "data": str(c.data), "epochs": 1}}))[-1], INSIDE),
    # --- 2. NaN / inf in numeric options and recipe fields ---
    ("nan-ft-lr", lambda c: ft(c, "--lr", "nan"), r"lr=nan " + FINITE),
    ("nan-ft-weight-decay", lambda c: ft(c, "--weight-decay", "nan"), FINITE),
    ("nan-ft-epochs-inf", lambda c: ft(c)[:-1] + ["--epochs", "inf"], r"epochs=inf " + FINITE),
    ("nan-ft-warmup", lambda c: ft(c, "--warmup", "nan"), FINITE),
    ("nan-ft-alpha", lambda c: ft(c, "--alpha", "nan"), FINITE),
    ("nan-ft-temperature-inf", lambda c: ft(c, "--temperature", "inf"), FINITE),
    ("nan-cp-prune-heads", lambda c: cp(c, "--prune-heads", "nan", "--importance", "magnitude"), FINITE),
    ("nan-cp-prune-ffn-inf", lambda c: cp(c, "--prune-ffn", "inf", "--importance", "magnitude"), FINITE),
    ("nan-cp-recover-lr", lambda c: cp(c, "--recover-lr", "nan"), FINITE),
    ("nan-cp-recover-epochs-inf", lambda c: cp(c, "--recover-epochs", "inf", "--calibration-data", str(c.data)),
     FINITE),
    ("nan-cp-max-accuracy-drop", lambda c: cp(c, "--max-accuracy-drop", "nan", "--eval-data", str(c.data)), FINITE),
    ("nan-ex-min-agreement", lambda c: ex(c, "--min-agreement", "nan"), FINITE),
    ("nan-ex-fp32-atol-inf", lambda c: ex(c, "--fp32-atol", "inf"), FINITE),
    ("nan-ex-int8-atol", lambda c: ex(c, "--int8-atol", "nan"), FINITE),
    ("nan-bn-min-seconds", lambda c: bn(c)[:-1] + ["--min-seconds", "nan", "--no-progress"], FINITE),
    ("nan-run-finetune-lr", lambda c: ["run", c.recipe("out: x\nfinetune: {lr: .nan}\n")], r"finetune.lr: .*" + FINITE),
    ("nan-run-export-min-agreement-inf", lambda c: ["run", c.recipe(
        f"out: x\ncheckpoint: {c.ckpt}\nexport: {{min_agreement: .inf}}\n")], FINITE),
    ("nan-run-search-schedule", lambda c: ["run", c.recipe(
        f"out: x\ncheckpoint: {c.ckpt}\ncompress: {{eval_data: {c.data}, search: {{schedule: [[.nan, 0.0]]}}}}\n")],
     FINITE),
    ("nan-run-recover-temperature", lambda c: ["run", c.recipe(
        f"out: x\ncheckpoint: {c.ckpt}\ncompress: {{recover: {{temperature: -.inf}}}}\n")], FINITE),
    ("nan-api-finetune-config", lambda c: api_config("bertpress.finetune.FinetuneConfig", lr=NAN), FINITE),
    ("nan-api-export-config", lambda c: api_config("bertpress.export.ExportConfig", min_agreement=INF), FINITE),
    ("nan-api-prune-config", lambda c: api_config("bertpress.compress.PruneConfig", heads=NAN), FINITE),
    ("nan-api-search-config", lambda c: api_config("bertpress.compress.config.SearchConfig",
                                                   schedule=((0.0, math_nan()),)), FINITE),
    ("nan-api-bench-config", lambda c: api_config("bertpress.bench.BenchConfig", min_seconds=INF), FINITE),
    # --- 3. labels and columns silently misread ---
    ("lab-1-and-1.0", lambda c: ft(c, model=enc(c), data=c.datadir("d", "sentence\tlabel\ngood\t1\nbad\t0\nfine\t1.0\n")),
     r"number but not an integer id|also spelled"),
    ("lab-01-and-1", lambda c: ft(c, model=enc(c), data=c.datadir("d", "sentence\tlabel\ngood\t1\nbad\t0\nfine\t01\n")),
     r"'01' is also spelled '1'|'1' is also spelled '01'|also spelled"),
    ("lab-ints-and-names", lambda c: ft(c, model=enc(c), data=c.datadir("d", "sentence\tlabel\ngood\t1\nbad\t0\nfine\tpositive\n")),
     r"mix numbers .* and names"),
    ("lab-float-labels", lambda c: ft(c, model=enc(c), data=c.datadir("d", "sentence\tlabel\ngood\t1.0\nbad\t0.0\n")),
     r"not an integer id"),
    ("lab-case-variants", lambda c: ft(c, model=enc(c), data=c.datadir("d", "sentence\tlabel\ngood\tPositive\nbad\tnegative\n"
                                                            "fine\tpositive\n")), r"differ only in case"),
    ("lab-single-int-class", lambda c: ft(c, model=enc(c), data=c.datadir("d", "sentence\tlabel\ngood\t1\nbad\t1\nfine\t1\n")),
     r"one value \('1'\) in all 3 rows"),
    ("lab-id-like-ints", lambda c: ft(c, model=enc(c), data=c.datadir("d", _id_rows())), r"looks like an ID"),
    ("lab-id-like-names", lambda c: ft(c, model=enc(c), data=c.datadir("d", "sentence\tlabel\n" + "".join(
        f"text {i}\tuser{i}\n" for i in range(6)))), r"looks like an ID"),
    ("lab-sparse-int-ids", lambda c: ft(c, model=enc(c), data=c.datadir("d", "sentence\tlabel\ngood\t1000\nbad\t0\nok\t1000\n")),
     r"looks like an ID"),
    ("lab-names-and-ids-of-map", lambda c: ft(c, "--labels", "negative,positive", data=c.datadir(
        "d", "sentence\tlabel\ngood\tpositive\nbad\t0\n")), r"mix names .* and integer ids"),
    ("lab-bn-eval-names-and-ids", lambda c: bn(c, "--eval-data", c.file("e.tsv", "sentence\tlabel\nx\tpositive\ny\t0\n")),
     r"mix names"),
    ("lab-cp-eval-1.0", lambda c: cp(c, "--eval-data", c.file("e.tsv", "sentence\tlabel\nx\t1.0\ny\t0\n")),
     r"label '1.0' is not one of"),
    ("col-duplicate-header", lambda c: ft(c, data=c.datadir("d", "sentence\tlabel\tlabel\ngood\t1\t0\nbad\t0\t1\n")),
     r"duplicate column name"),
    ("col-duplicate-header-csv", lambda c: bn(c, "--eval-data", c.file("e.csv", "text,text,label\na,b,0\nc,d,1\n")),
     r"duplicate column name"),
    ("col-jsonl-duplicate-key", lambda c: bn(c, "--eval-data", c.file(
        "e.jsonl", '{"text": "a", "label": 1, "label": 0}\n')), r"duplicate key"),
    ("col-train-tsv-and-csv", lambda c: ft(c, data=_datadir_both(c)), r"train.tsv and train.csv"),
    ("col-dev-and-validation", lambda c: ft(c, data=(lambda d: (Path(d, "validation.tsv").write_text(
        "sentence\tlabel\nx\t1\n"), d)[-1])(c.datadir("d", "sentence\tlabel\ngood\t1\nbad\t0\n"))),
     r"dev.tsv and validation.tsv"),
    ("col-quoted-still-ragged", lambda c: ft(c, data=c.datadir("d", 'sentence\tlabel\ngood\t1\n"bad\tworse\t0\nok\t1\n')),
     r"3 fields where the header has 2"),
    # (col-fragment-labels, a CSV-quoted text whose tab and newline cancel out, is no longer bad input:
    # issue 31 item 9 reads it with its quotes; tests/test_reliability3a.py checks that.)
    ("col-data-fifo", lambda c: ft(c, data=_fifo_datadir(c)), r"not a regular file"),
    ("col-eval-data-fifo", lambda c: bn(c, "--eval-data", str((os.mkfifo(c.inputs / "e.tsv"), c.inputs / "e.tsv")[-1])),
     r"not a regular file"),
    # sentence pairs (issue #15): both texts are checked, the pair column must exist and differ
    ("col-pair-blank-second-text", lambda c: ft(c, data=c.datadir(
        "d", "label\tsentence1\tsentence2\n1\tgood\tfine\n0\tbad\t  \n")), r"train.tsv:3: blank text in column 'sentence2'"),
    ("col-pair-column-missing", lambda c: ft(c, "--text-pair-column", "nope", data=c.datadir(
        "d", "label\tsentence1\tsentence2\n1\tgood\tfine\n0\tbad\tdull\n")), r"text pair column 'nope' not found"),
    ("col-pair-same-column", lambda c: ft(c, "--text-column", "sentence1", "--text-pair-column", "sentence1"),
     r"must name different columns"),
    ("col-pair-eval-data-missing", lambda c: bn(c, "--eval-data", c.file("e.jsonl", '{"premise": "a", "label": 1}\n'),
                                                "--text-pair-column", "hypothesis"), r"text pair column 'hypothesis'"),
    ("lab-api-load-mixed", lambda c: _later(load_data, c.file("m.tsv", "sentence\tlabel\na\t0\nb\tpositive\n")),
     r"mix numbers"),
    ("lab-api-load-id-like", lambda c: _later(load_data, c.file("m.tsv", _id_rows(40))), r"looks like an ID"),
    # --- 4. models that are silently wrong or crash ---
    ("mdl-config-not-object", lambda c: ft(c, model=c.ckpt_variant("m", base._write("config.json", "[1, 2]"))),
     r"must be a JSON object"),
    ("mdl-config-string", lambda c: cp(c, src=c.ckpt_variant("m", base._write("config.json", '"bert"'))),
     r"must be a JSON object"),
    ("mdl-max-position-0", lambda c: ft(c, model=c.ckpt_variant("m", _config(max_position_embeddings=0))),
     r"max_position_embeddings=0"),
    ("mdl-ex-max-position-0", lambda c: ex(c, src=c.ckpt_variant("m", _config(max_position_embeddings=0))),
     r"max_position_embeddings=0"),
    ("mdl-vocab-size-string", lambda c: cp(c, src=c.ckpt_variant("m", _config(vocab_size="many"))),
     r"vocab_size|unusable config"),
    ("mdl-vocab-smaller-than-tokenizer", lambda c: cp(c, src=_small_vocab_model(c)), r"vocab_size is 20"),
    ("mdl-bn-vocab-smaller-than-tokenizer", lambda c: bn(c, src=_small_vocab_model(c)), r"vocab_size is 20"),
    ("mdl-wrong-shape-encoder-new-head", lambda c: ft(c, "--labels", "a,b", model=c.ckpt_variant(
        "m", _config(intermediate_size=40, architectures=["BertModel"]))),
     r"has shape \[37.*\] in the checkpoint but \[40.*only a new classification head"),
    ("mdl-missing-encoder-weight", lambda c: cp(c, src=c.ckpt_variant("m", _drop_tensor())),
     r"no weights for bert.encoder.layer.0.output.dense.weight"),
    ("mdl-ex-missing-encoder-weight", lambda c: ex(c, src=c.ckpt_variant("m", _drop_tensor())),
     r"no weights for"),
    ("mdl-no-tokenizer-files", lambda c: cp(c, src=c.ckpt_variant("m", _remove("tokenizer.json", "vocab.txt"))),
     r"no tokenizer files \(expected one of tokenizer.json, vocab.txt"),
    ("mdl-ex-no-tokenizer-files", lambda c: ex(c, src=c.ckpt_variant("m", _remove("tokenizer.json", "vocab.txt"))),
     r"no tokenizer files"),
    ("mdl-manifest-max-length-too-big", lambda c: ex(c, src=c.ckpt_variant("m", _manifest(max_length=100000))),
     r"max_length 100000 is above the model's 128 position embeddings"),
    ("mdl-cp-manifest-max-length-too-big", lambda c: cp(c, src=c.ckpt_variant("m", _manifest(max_length=4096))),
     r"max_length 4096 is above"),
    ("mdl-bn-manifest-max-length-too-big", lambda c: bn(c, src=c.ckpt_variant("m", _manifest(max_length=4096))),
     r"max_length 4096 is above"),
    ("mdl-manifest-max-length-1", lambda c: ex(c, src=c.ckpt_variant("m", _manifest(max_length=1))),
     r"max_length=1 is below 2"),
    ("mdl-config-fifo", lambda c: ft(c, model=c.ckpt_variant("m", _fifo("config.json"))), r"FIFO"),
    ("mdl-tokenizer-fifo", lambda c: cp(c, src=c.ckpt_variant("m", _fifo("tokenizer.json"))), r"FIFO"),
    ("mdl-weights-fifo", lambda c: ex(c, src=c.ckpt_variant("m", _fifo("model.safetensors"))), r"FIFO"),
    ("mdl-bn-onnx-fifo", lambda c: bn(c, src=c.ckpt_variant("o", _chain(_fifo("model.onnx"), _manifest(kind="onnx")))),
     r"FIFO"),
    ("mdl-recipe-fifo", lambda c: ["run", str((os.mkfifo(c.inputs / "r.yaml"), c.inputs / "r.yaml")[-1])],
     r"not a regular file"),
    ("mdl-api-config-not-object", lambda c: _later(load_model, c.ckpt_variant("m", base._write("config.json", "[]"))),
     r"must be a JSON object"),
    ("mdl-api-artifact-max-length", lambda c: _later(base.Artifact.load, c.ckpt_variant(
        "m", _manifest(max_length=999))), r"max_length 999 is above"),
    # --- 5. resume never runs code ---
    ("res-planted-pickle", lambda c: (_planted_partial(c), ft(c, "--resume"))[-1],
     r"--resume: .*rng_state.pth: refused to load pickled weights"),
    # --- 6. output locations (signals, disk full, leftovers are fault tests in test_faults.py) ---
    ("out-ft-out-is-file", lambda c: ft(c)[:5] + ["--out", c.file("f.txt", "x")] + ft(c)[7:], r"is a file"),
    ("out-run-out-under-file", lambda c: ["run", c.recipe({"out": c.file("g.txt", "x") + "/run",
                                                           "checkpoint": str(c.ckpt), "export": {}})],
     r"cannot create"),
    # --- 7. denial of service: bounded messages ---
    ("dos-yaml-alias-bomb", lambda c: ["run", c.recipe(BOMB)], r"expands to more than 100000 values"),
    ("dos-huge-text-column", lambda c: ft(c, "--text-column", "x" * 1_000_000), r"characters cut.*--text-column"),
    ("dos-huge-recipe-value", lambda c: ["run", c.recipe({"out": "x", "finetune": {"epochs": "y" * 1_000_000}})],
     r"must be a number"),
    ("dos-huge-label", lambda c: ft(c, "--labels", "negative,positive", data=c.datadir(
        "d", "sentence\tlabel\ngood\tpositive\nbad\t" + "z" * 500_000 + "\n")), r"is not one of the model's labels"),
    ("dos-huge-enum", lambda c: ["run", c.recipe(
        {"out": "x", "checkpoint": str(c.ckpt), "export": {"format": "q" * 300_000}})], r"format=.*is not valid"),
]


def yaml_dump(data) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


def math_nan() -> float:
    return float("nan")


def _later(fn, *args):
    """Build the inputs now (before the snapshot), call the API when the case runs."""
    return lambda: fn(*args)


def load_data(path):
    from bertpress.data import load_text_classification

    return load_text_classification(path)


def load_model(path):
    from bertpress.models import load_classifier

    return load_classifier(path)
