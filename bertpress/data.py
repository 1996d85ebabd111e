"""Labeled text-classification data: TSV / CSV / JSONL files, a directory of split files, or
a Hugging Face datasets id (for users who are online).

Every bad row is an `InputError` naming the file, the line and the fix. Nothing is dropped
silently: with `skip_bad_rows=True` bad rows are skipped and counted in `TextDataset.skipped`
(the caller must report that count).

Nothing is silently misread either: a UTF-8 BOM is stripped; duplicate column names, two files
for one split, labels spelled two ways (`1` and `1.0`, ids mixed with names, names differing
only in case), a single-class or ID-like label column are refused with the cause. TSV is read
literally (GLUE keeps quotes as text); if that leaves ragged rows and the file is exactly what a
CSV writer produces (pandas `to_csv(sep="\t")` quotes fields holding tabs, newlines or quotes),
it is re-read with quoting and a note says so; rows that stay ragged are refused, never trained on. Texts longer than `MAX_TEXT_CHARS` are
cut before anyone tokenizes them (only the first max_length tokens count), with a note.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import random
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

from bertpress.errors import InputError, echo

TEXT_COLUMNS = ("sentence", "text")
LABEL_COLUMN = "label"
SUFFIXES = (".tsv", ".csv", ".jsonl")
SPLIT_ALIASES = {
    "train": ("train",),
    "dev": ("dev", "validation", "val", "valid"),
    "validation": ("validation", "dev", "val", "valid"),
    "test": ("test",),
}
# Characters kept per text: far more than any max_length of tokens needs (a WordPiece token is at
# least one character), small enough that a 50 MB "sentence" costs milliseconds, not minutes.
MAX_TEXT_CHARS = 100_000
# A label column with more distinct values than this (and than half the rows) is an ID, not a label.
MAX_PLAUSIBLE_CLASSES = 20


def note(message: str) -> None:
    """Tell the user about a reading decision (stderr: stdout stays clean for --json)."""
    print(f"note: {message}", file=sys.stderr)


@dataclasses.dataclass
class TextDataset:
    texts: list[str]
    labels: list[int]
    label_names: list[str]
    source: str
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, n: int | None, seed: int = 0) -> "TextDataset":
        """A reproducible random subset of at most n rows (all rows if n is None or too big)."""
        if n is None or n >= len(self):
            return self
        idx = sorted(random.Random(seed).sample(range(len(self)), n))
        return dataclasses.replace(
            self,
            texts=[self.texts[i] for i in idx],
            labels=[self.labels[i] for i in idx],
            source=f"{self.source} (random {n} of {len(self)}, seed {seed})",
        )


@dataclasses.dataclass
class _Row:
    line: int
    text: Any
    label: Any


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and value.strip().lstrip("-").isdigit()


def _is_number(value: str) -> bool:
    try:
        return math.isfinite(float(value)) or True
    except ValueError:
        return False


def _infer_names(raw: list[str], where: str, training: bool = True) -> list[str]:
    """The label map of data that has none given: integer ids 0..K-1, or sorted names.

    Refuses what would silently become the wrong classes: one label spelled two ways, ids
    mixed with names, a single class, or a column that is an ID rather than a label."""
    n = len(raw)
    values = sorted(set(raw))
    fix = "write every label the same way (integer ids 0..K-1, or names)"
    if all(_is_int(v) for v in raw):
        ints = sorted({int(v) for v in raw})
        if ints[0] < 0:
            raise InputError(f"{where}: negative integer labels; labels must be 0..K-1 or names")
        spellings: dict[int, set[str]] = {}
        for v in values:
            spellings.setdefault(int(v), set()).add(v)
        twice = next((sorted(s) for s in spellings.values() if len(s) > 1), None)
        if twice:
            raise InputError(f"{where}: label {twice[0]!r} is also spelled {twice[1]!r}; {fix}")
        classes = ints[-1] + 1
    else:
        numbers = [v for v in values if _is_number(v)]
        names = [v for v in values if not _is_number(v)]
        if numbers and names:
            raise InputError(f"{where}: labels mix numbers (e.g. {numbers[0]!r}) and names (e.g. {names[0]!r}); "
                             f"{fix}")
        if numbers:
            odd = next(v for v in numbers if not _is_int(v))
            raise InputError(f"{where}: label {echo(odd)} is a number but not an integer id; {fix}")
        folded: dict[str, str] = {}
        for v in values:
            other = folded.setdefault(v.casefold(), v)
            if other != v:
                raise InputError(f"{where}: labels {other!r} and {v!r} differ only in case; {fix}")
        classes = len(values)
    if len(values) == 1 and training:
        raise InputError(f"{where}: the label column has one value ({echo(values[0])}) in all {n} rows; a "
                         "classifier needs at least two classes - is it the right column? pass --label-column NAME")
    counts: dict[str, int] = {}
    for v in raw:
        counts[v] = counts.get(v, 0) + 1
    id_like = classes > max(MAX_PLAUSIBLE_CLASSES, n // 2) or (len(values) >= 5 and max(counts.values()) == 1)
    if id_like:
        raise InputError(f"{where}: the label column has {len(values)} distinct values ({classes} classes) in {n} "
                         "rows - it looks like an ID, not a label; pass --label-column NAME (or --labels)")
    if all(_is_int(v) for v in raw):
        return [str(i) for i in range(classes)]
    return values


class _Collector:
    """Turns raw rows into (texts, labels) with one stable label map and counted skips."""

    def __init__(self, where: str, label_names: Sequence[str] | None, skip_bad_rows: bool,
                 training: bool = True):
        self.where = where
        self.training = training  # a training split must have two classes; a dev subset may not
        self.label_names = list(label_names) if label_names is not None else None
        self.skip = skip_bad_rows
        self.skipped = 0

    def bad(self, line: int | None, problem: str, fix: str) -> None:
        loc = f"{self.where}:{line}" if line is not None else self.where
        if self.skip:
            self.skipped += 1
            return
        raise InputError(f"{loc}: {problem}; {fix}")

    def build(self, rows: Iterable[_Row]) -> tuple[list[str], list[int], list[str]]:
        kept: list[_Row] = []
        for row in rows:
            if row.text is not None and not isinstance(row.text, str):
                self.bad(row.line, f"text is a {type(row.text).__name__}, not a string",
                         "write the text as a string")
                continue
            if row.text is None or not row.text.strip():
                self.bad(row.line, "blank text", "fill it in or remove the row")
                continue
            if row.label is None or (isinstance(row.label, str) and not row.label.strip()):
                self.bad(row.line, "missing label", "fill it in or remove the row")
                continue
            kept.append(row)
        names = self.label_names
        if names is None:
            raw = [str(r.label).strip() for r in kept]
            names = _infer_names(raw, self.where, self.training) if raw else []
        index = {n: i for i, n in enumerate(names)}
        texts, labels = [], []
        by_name = by_id = None  # first row matched each way: one file spells labels one way
        for row in kept:
            lab = str(row.label).strip()
            if lab in index:
                lid = index[lab]
                by_name = by_name or (row.line, lab)
            elif _is_int(lab) and 0 <= int(lab) < len(names):
                lid = int(lab)
                by_id = by_id or (row.line, lab)
            else:
                self.bad(
                    row.line,
                    f"label {lab!r} is not one of the model's labels {names}",
                    "fix the label, or train a model with this label set",
                )
                continue
            if by_name and by_id:
                line = max(by_name[0], by_id[0])
                raise InputError(
                    f"{self.where}:{line}: labels mix names (e.g. {echo(by_name[1])}) and integer ids (e.g. "
                    f"{echo(by_id[1])}) of the label map {names}; write every label the same way"
                )
            texts.append(row.text.strip())
            labels.append(lid)
        return texts, labels, names


def _decode_lines(path: Path, col: _Collector) -> list[tuple[int, str]]:
    data = path.read_bytes()
    lines = []
    for i, raw in enumerate(data.split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            col.bad(i, "bytes that are not UTF-8", "re-save the file as UTF-8")
            continue
        if i == 1:
            text = text.removeprefix("\ufeff")  # a UTF-8 BOM (Excel, Notepad) is not part of the header
        lines.append((i, text.rstrip("\r")))
    while lines and not lines[-1][1].strip():
        lines.pop()
    return lines


def _pick_columns(header: Sequence[str], where: str, text_column: str | None, label_column: str) -> tuple[str, str]:
    cols = [h.strip() for h in header]
    dups = sorted({c for c in cols if cols.count(c) > 1})
    if dups:
        raise InputError(f"{where}: duplicate column name(s) {[echo(d) for d in dups]} in the header; "
                         "rename them so every column has one name")
    if text_column is None:
        text_column = next((c for c in TEXT_COLUMNS if c in cols), None)
        if text_column is None:
            raise InputError(
                f"{where}: no text column (looked for {' or '.join(TEXT_COLUMNS)}; found {cols}); "
                "pass --text-column NAME"
            )
    elif text_column not in cols:
        raise InputError(f"{where}: text column {text_column!r} not found (columns: {cols}); pass --text-column NAME")
    if label_column not in cols:
        raise InputError(f"{where}: label column {label_column!r} not found (columns: {cols}); pass --label-column NAME")
    return text_column, label_column


def _read_delimited(path: Path, delimiter: str, col: _Collector, text_column: str | None, label_column: str) -> list[_Row]:
    lines = _decode_lines(path, col)
    if not lines:
        raise InputError(f"{path}: the file is empty; give a file with a header row and data rows")
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    first_line, header_text = lines[0]
    header = next(csv.reader([header_text], delimiter=delimiter, quoting=quoting))
    tcol, lcol = _pick_columns(header, str(path), text_column, label_column)
    header = [h.strip() for h in header]
    ti, li = header.index(tcol), header.index(lcol)
    rows: list[_Row] = []
    if delimiter == "\t":
        parsed = _split_tsv(path, lines, len(header))
    else:
        # CSV may quote newlines inside a field, so parse the whole text; line numbers follow
        # the reader's position.
        body = "\n".join(t for _, t in lines[1:])
        reader = csv.reader(body.splitlines(keepends=True), delimiter=delimiter)
        parsed = ((first_line + 1 + reader.line_num - 1, r) for r in reader)
    for n, fields in parsed:
        if not any(f.strip() for f in fields):
            continue  # blank line
        if len(fields) != len(header):
            col.bad(n, f"{len(fields)} fields where the header has {len(header)}",
                    f"fix the row so it has exactly the columns {header}")
            continue
        rows.append(_Row(n, fields[ti], fields[li]))
    if not rows and not col.skipped:
        raise InputError(f"{path}: no data rows after the header; add labeled rows")
    return rows


def _tsv_quoted(lines: list[tuple[int, str]]) -> list[tuple[int, list[str]]] | None:
    """The body parsed with CSV quoting (tab-delimited); None if that is not well formed."""
    line_of = [n for n, _ in lines]
    body = [t + "\n" for _, t in lines]
    reader = csv.reader(body, delimiter="\t", quoting=csv.QUOTE_MINIMAL, strict=True)
    out = []
    try:
        for fields in reader:
            out.append((line_of[min(reader.line_num, len(line_of)) - 1], fields))
    except csv.Error:
        return None
    return out


def _round_trips(rows: list[tuple[int, list[str]]], body: list[tuple[int, str]]) -> bool:
    """True if writing `rows` back with CSV quoting (what pandas `to_csv(sep="\\t")` and
    `csv.writer` do) gives exactly the file's text: then the file *is* CSV-quoted. GLUE files,
    whose quotes are literal text, never round-trip (a writer would double their quotes)."""
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    for _, fields in rows:
        writer.writerow(fields)
    return buf.getvalue() == "".join(t + "\n" for _, t in body)


def _split_tsv(path: Path, lines: list[tuple[int, str]], width: int) -> list[tuple[int, list[str]]]:
    """TSV rows: read literally (GLUE files keep quotes as text - MRPC's dev.tsv even looks
    CSV-quoted in places and must still be read literally). Only if that leaves ragged rows and
    the file is exactly CSV-quoted (it round-trips through a CSV writer, as pandas
    `to_csv(sep="\\t")` output does) is it re-read with quoting - and a note says so."""
    body = lines[1:]
    literal = [(n, t.split("\t")) for n, t in body]
    ragged = [n for n, f in literal if len(f) != width and any(x.strip() for x in f)]
    if not ragged or not any('"' in t for _, t in body):
        return literal
    quoted = _tsv_quoted(body)
    if quoted is None or not _round_trips(quoted, body):
        return literal  # the caller reports the first ragged row
    if any(len(f) != width for _, f in quoted if any(x.strip() for x in f)):
        return literal
    note(f"{path}: {len(ragged)} row(s) had the wrong number of fields when read literally (first: line "
         f"{ragged[0]}); the file is CSV-quoted (e.g. pandas to_csv(sep='\\t')), so it was re-read with "
         "quotes honoured (embedded tabs/newlines kept, quotes removed)")
    return quoted


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    dups = sorted({k for k in keys if keys.count(k) > 1})
    if dups:
        raise ValueError(f"duplicate key(s) {[echo(d) for d in dups]}")
    return dict(pairs)


def _read_jsonl(path: Path, col: _Collector, text_column: str | None, label_column: str) -> list[_Row]:
    lines = [(n, t) for n, t in _decode_lines(path, col) if t.strip()]
    if not lines:
        raise InputError(f"{path}: the file is empty; give one JSON object per line")
    rows: list[_Row] = []
    tcol = text_column
    for n, text in lines:
        try:
            obj = json.loads(text, object_pairs_hook=_no_duplicate_keys)
        except json.JSONDecodeError as exc:
            col.bad(n, f"invalid JSON ({exc.msg})", "write one JSON object per line")
            continue
        except ValueError as exc:
            col.bad(n, f"{exc} in one object", "give every key once")
            continue
        if not isinstance(obj, dict):
            col.bad(n, "a JSON value that is not an object", "write one JSON object per line")
            continue
        if tcol is None:
            tcol, _ = _pick_columns(list(obj), f"{path}:{n}", None, label_column)
        if tcol not in obj or label_column not in obj:
            _pick_columns(list(obj), f"{path}:{n}", tcol, label_column)
        rows.append(_Row(n, obj.get(tcol), obj.get(label_column)))
    return rows


def _find_split_file(directory: Path, split: str) -> Path:
    names = SPLIT_ALIASES.get(split, (split,))
    found = [directory / f"{name}{suffix}" for name in names for suffix in SUFFIXES
             if (directory / f"{name}{suffix}").exists()]
    if len(found) > 1:
        raise InputError(
            f"{directory}: {' and '.join(p.name for p in found)} all hold split {split!r}; keep one of them, or "
            "pass the file itself"
        )
    if found:
        return found[0]
    wanted = ", ".join(f"{n}{s}" for n in names for s in SUFFIXES)
    raise InputError(f"{directory}: no file for split {split!r} (looked for {wanted}); add one or pass the file itself")


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or spec.endswith(SUFFIXES) or "\\" in spec


def resolve_data_file(spec: str | Path, split: str) -> Path | None:
    """The local file for (spec, split), or None if spec names a hub dataset."""
    path = Path(spec).expanduser()
    if path.exists() and not path.is_dir():
        from bertpress.safety import check_regular_file

        check_regular_file(path, "data file")
    if path.is_file():
        return path
    if path.is_dir():
        return _find_split_file(path, split)
    if _looks_like_path(str(spec)) or str(spec).count("/") > 1:
        raise InputError(f"{spec}: no such file or directory; give a TSV/CSV/JSONL file, a directory with train/dev files, or a datasets id like glue/sst2")
    return None


def load_text_classification(
    spec: str | Path,
    split: str = "train",
    *,
    text_column: str | None = None,
    label_column: str = LABEL_COLUMN,
    label_names: Sequence[str] | None = None,
    skip_bad_rows: bool = False,
) -> TextDataset:
    """Load one split of a labeled text dataset.

    spec: a .tsv/.csv/.jsonl file (split is then ignored), a directory holding
    `train.*`/`dev.*` files, or a Hugging Face datasets id such as `glue/sst2` (needs network).
    label_names: the model's label map; labels must be in it (by name, or as an integer id).
    Without it, integer labels become ids 0..max and string labels are sorted into a map.
    """
    file = resolve_data_file(spec, split)
    if file is None:
        return _load_hub(str(spec), split, text_column, label_column, label_names)
    from bertpress.safety import check_regular_file

    check_regular_file(file, "data file")  # a FIFO would block the read forever
    col = _Collector(str(file), label_names, skip_bad_rows, training=split == "train")
    suffix = file.suffix.lower()
    try:
        if suffix == ".tsv":
            rows = _read_delimited(file, "\t", col, text_column, label_column)
        elif suffix == ".csv":
            rows = _read_delimited(file, ",", col, text_column, label_column)
        elif suffix == ".jsonl":
            rows = _read_jsonl(file, col, text_column, label_column)
        else:
            raise InputError(f"{file}: unsupported file type {suffix!r}; use .tsv, .csv or .jsonl")
    except csv.Error as exc:
        raise InputError(f"{file}: malformed CSV ({exc}); fix the quoting or re-save the file") from None
    except OSError as exc:
        raise InputError(f"{file}: cannot read it ({exc.strerror}); check the path and permissions") from None
    texts, labels, names = col.build(rows)
    if not texts:
        raise InputError(f"{file}: no usable rows ({col.skipped} skipped as bad); fix the file")
    return TextDataset(cap_texts(texts, str(file)), labels, names, str(file), skipped=col.skipped)


def cap_texts(texts: list[str], where: str, limit: int = MAX_TEXT_CHARS) -> list[str]:
    """Cut texts longer than `limit` characters (tokenizers are linear in characters, and only
    the first max_length tokens are used), saying how many were cut."""
    cut = sum(1 for t in texts if len(t) > limit)
    if not cut:
        return texts
    note(f"{where}: {cut} text(s) longer than {limit} characters were cut to {limit} before tokenizing "
         "(only the first max_length tokens are used)")
    return [t[:limit] for t in texts]


def _load_hub(spec: str, split: str, text_column: str | None, label_column: str,
              label_names: Sequence[str] | None) -> TextDataset:
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise InputError(f"{spec}: loading hub datasets needs the 'datasets' package ({exc})") from None
    name, _, config = spec.partition("/")
    args = (name, config) if config else (spec,)
    last_exc: Exception | None = None
    for candidate in SPLIT_ALIASES.get(split, (split,)):
        try:
            ds = datasets.load_dataset(*args, split=candidate)
            break
        except ValueError as exc:  # unknown split: try the next alias
            last_exc = exc
            continue
        except Exception as exc:  # network, unknown dataset
            raise InputError(
                f"{spec}: could not load it with datasets.load_dataset ({type(exc).__name__}: {str(exc)[:200]}); "
                "check the name and your network, or give a local TSV/CSV/JSONL file"
            ) from None
    else:
        raise InputError(f"{spec}: no split {split!r} ({last_exc}); pass another split")
    cols = list(ds.column_names)
    tcol, lcol = _pick_columns(cols, spec, text_column, label_column)
    names = label_names
    feature = ds.features.get(lcol)
    if names is None and hasattr(feature, "names"):
        names = list(feature.names)
    rows = [_Row(i + 1, r[tcol], r[lcol]) for i, r in enumerate(ds)]
    # Hub test splits often carry label -1 (hidden); that is a clear error below.
    col = _Collector(spec, names, skip_bad_rows=False, training=split == "train")
    texts, labels, names = col.build(rows)
    return TextDataset(cap_texts(texts, spec), labels, names, f"{spec}[{split}]")


def data_spec(spec: str | None) -> str | None:
    """A data spec as recorded in manifests: local paths made absolute so they reload anywhere."""
    if spec is None:
        return None
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec
