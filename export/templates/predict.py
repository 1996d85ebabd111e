#!/usr/bin/env python3
"""Classify texts with this bundle. Needs only onnxruntime, tokenizers and numpy.

    python predict.py "a gripping film" "dull and long"
    echo "one text per line" | python predict.py
    echo '{"text": "a JSON line"}' | python predict.py     # JSON lines: the model's text column or "text"
    python predict.py --json --top 2 "text"

A sentence-pair model (bertpress.json `columns.text_pair` is set, e.g. one trained on MRPC)
reads pairs instead:

    python predict.py "first text" "second text"          # one pair (2N arguments: N pairs)
    echo '{"sentence1": "a", "sentence2": "b"}' | python predict.py   # JSON lines: the two columns
    printf 'first text\tsecond text\n' | python predict.py           # or text <TAB> text_pair
                                                           # (JSON keys "text"/"text_pair" work too)

Input is read as the bertpress CLI reads it: strict UTF-8 (binary input is refused in one line),
texts cut to 100,000 characters. Prints one line per input: label <TAB> score <TAB> text [<TAB> text_pair]. Reads model.onnx (or
--model FILE, e.g. model.ort), tokenizer.json and bertpress.json from the directory this file is in.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

HERE = Path(__file__).resolve().parent
# Characters kept per text, as the bertpress CLI (bertpress.data.MAX_TEXT_CHARS): only the first
# max_length tokens are used, and tokenizing is linear in characters (a 10 MB line took 12.7 s and 1.5 GB).
MAX_TEXT_CHARS = 100_000
# The text columns the CLI looks for when a model records none (bertpress.data.TEXT_COLUMNS).
TEXT_COLUMNS = ("sentence", "text")


def fail(message):
    """One line on stderr and exit status 2, as the bertpress CLI does for bad input."""
    print(f"predict.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def read_stdin_lines():
    """Non-blank stdin lines, decoded as strict UTF-8 (a leading BOM dropped), or a one-line error."""
    lines = []
    for n, raw in enumerate(sys.stdin.buffer.read().split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            fail(f"stdin line {n}: bytes that are not UTF-8 (binary input?); give text encoded as UTF-8")
        if n == 1:
            line = line.removeprefix("\ufeff")
        if "\x00" in line:
            fail(f"stdin line {n}: a NUL byte (binary input?); give text, one per line")
        line = line.rstrip("\r")
        if line.strip():
            lines.append((n, line))
    return lines


def cap(texts):
    """Cut texts longer than MAX_TEXT_CHARS, saying how many were cut (as the CLI does)."""
    def one(t):
        return t[:MAX_TEXT_CHARS] if isinstance(t, str) else tuple(x[:MAX_TEXT_CHARS] for x in t)

    long = sum(1 for t in texts if max(map(len, [t] if isinstance(t, str) else t)) > MAX_TEXT_CHARS)
    if long:
        print(f"predict.py: note: {long} text(s) longer than {MAX_TEXT_CHARS} characters were cut to "
              f"{MAX_TEXT_CHARS} before tokenizing (only the first max_length tokens are used)", file=sys.stderr)
    return [one(t) for t in texts] if long else texts


def json_line(n, line):
    """The JSON object on a stdin line starting with '{', or None when the line is plain text."""
    if not line.lstrip().startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        fail(f"stdin line {n}: invalid JSON ({exc.msg}); write one JSON object or one plain text per line")
    if not isinstance(obj, dict):
        fail(f"stdin line {n}: a JSON line must be an object")
    return obj


def read_texts(lines, columns):
    """Single texts from stdin lines: plain text, or a JSON object's text (the first of `columns`
    it has: the model's text column, else the CLI's TEXT_COLUMNS; "text" always works)."""
    texts = []
    for n, line in lines:
        obj = json_line(n, line)
        if obj is None:
            texts.append(line)
            continue
        key = next((k for k in columns if k in obj), None)
        if key is None or not isinstance(obj[key], str) or not obj[key].strip():
            fail(f"stdin line {n}: a JSON line needs the text as a non-empty string under "
                 f"{' or '.join(map(repr, columns))}")
        texts.append(obj[key])
    return texts


def load(model_file: Path, threads: int):
    meta = json.loads((HERE / "bertpress.json").read_text(encoding="utf-8"))
    pre = meta["details"]["preprocessing"]
    tok = Tokenizer.from_file(str(HERE / pre.get("tokenizer_file", "tokenizer.json")))
    tok.enable_truncation(max_length=int(pre["max_length"]))
    pad_id = pre.get("pad_token_id") or 0
    tok.enable_padding(pad_id=pad_id, pad_token=pre.get("special_tokens", {}).get("pad_token") or "[PAD]")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    # Fusions bertpress measured slower on this runtime and left out of the graph; ONNX Runtime
    # would redo them at load time unless told not to.
    disabled = meta["details"].get("model", {}).get("ort_disabled_optimizers") or []
    sess = ort.InferenceSession(str(model_file), opts, providers=["CPUExecutionProvider"],
                                **({"disabled_optimizers": disabled} if disabled else {}))
    return meta, tok, sess


def pair_columns(meta):
    """(first, second) column names of a sentence-pair model, or None for single texts."""
    cols = meta.get("columns") or {}
    return (cols.get("text") or "text", cols["text_pair"]) if cols.get("text_pair") else None


def read_pairs(args, lines, names, fail):
    """[(text, text_pair)] from 2N arguments, or from stdin lines (JSON objects or TAB-separated)."""
    if args:
        if len(args) % 2:
            fail(f"this model classifies sentence pairs: give an even number of texts (text text_pair ...), "
                 f"got {len(args)}")
        return [(args[i], args[i + 1]) for i in range(0, len(args), 2)]
    pairs = []
    for n, line in lines:
        obj = json_line(n, line)
        if obj is not None:
            keys = next(((a, b) for a, b in (names, ("text", "text_pair")) if a in obj and b in obj), None)
            if keys is None or not all(isinstance(obj[k], str) and obj[k].strip() for k in keys):
                fail(f"stdin line {n}: a JSON line needs the two texts as {names[0]!r} and {names[1]!r} "
                     "(or 'text' and 'text_pair')")
            pairs.append((obj[keys[0]], obj[keys[1]]))
        else:
            parts = line.split("\t")
            if len(parts) != 2 or not all(p.strip() for p in parts):
                fail(f"stdin line {n}: this model classifies sentence pairs: write text<TAB>text_pair or a JSON "
                     f"object with {names[0]!r} and {names[1]!r}")
            pairs.append((parts[0], parts[1]))
    return pairs


def predict(texts, meta, tok, sess, batch_size=32):
    """Ranked (label, probability) lists, one per text or (text, text_pair) tuple."""
    names = {i.name for i in sess.get_inputs()}
    labels = meta["labels"]
    results = []
    for start in range(0, len(texts), batch_size):
        encs = tok.encode_batch(texts[start:start + batch_size])
        feed = {
            "input_ids": np.array([e.ids for e in encs], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int64),
        }
        logits = sess.run(["logits"], {k: v for k, v in feed.items() if k in names})[0].astype(np.float64)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        for p in probs:
            order = np.argsort(-p)
            results.append([(labels[i], float(p[i])) for i in order])
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description="Classify texts with this ONNX bundle.")
    ap.add_argument("texts", nargs="*", help="texts to classify (default: one per line from stdin); for a "
                    "sentence-pair model: text text_pair [text text_pair ...]")
    ap.add_argument("--model", default=None, help="model file inside the bundle (default model.onnx)")
    ap.add_argument("--top", type=int, default=1, help="how many labels to show per text")
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = all cores)")
    ap.add_argument("--json", action="store_true", help="print JSON lines instead of TSV")
    args = ap.parse_args(argv)
    model_file = HERE / (args.model or "model.onnx")
    if not model_file.is_file():
        fail(f"{model_file}: no such model file in the bundle; give --model with a file of this directory")
    meta = json.loads((HERE / "bertpress.json").read_text(encoding="utf-8"))
    names = pair_columns(meta)
    lines = [] if args.texts else read_stdin_lines()
    recorded = (meta.get("columns") or {}).get("text")
    columns = tuple(dict.fromkeys([recorded, "text"])) if recorded else TEXT_COLUMNS
    texts = read_pairs(args.texts, lines, names, fail) if names else (args.texts or read_texts(lines, columns))
    if not texts:
        fail("no texts: give them as arguments or on stdin")
    texts = cap(texts)
    meta, tok, sess = load(model_file, args.threads)
    for text, ranked in zip(texts, predict(texts, meta, tok, sess)):
        top = ranked[: max(1, args.top)]
        pair = text if names else (text, None)
        if args.json:
            print(json.dumps({"text": pair[0], **({"text_pair": pair[1]} if names else {}),
                              "label": top[0][0], "score": top[0][1],
                              "top": [{"label": l, "score": s} for l, s in top]}))
        else:
            print("\t".join([f"{l}\t{s:.4f}" for l, s in top] + [t for t in pair if t is not None]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
