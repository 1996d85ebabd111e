"""Tiny random BERTs, tokenizers and data for tests and examples (nothing touches the network)."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Sequence

POSITIVE = ["good", "great", "fine", "lovely", "superb", "happy", "fun", "warm", "best", "bright"]
NEGATIVE = ["bad", "awful", "dull", "boring", "poor", "sad", "worst", "weak", "ugly", "cold"]
NEUTRAL = ["the", "a", "film", "movie", "plot", "story", "is", "was", "very", "and", "it", "of",
           "acting", "music", "ending", "cast", "scene", "this", "really", "quite"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_vocab() -> list[str]:
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = SPECIAL + list(".,!?'-") + [str(d) for d in range(10)] + letters
    vocab += ["##" + ch for ch in letters + [str(d) for d in range(10)]]
    vocab += POSITIVE + NEGATIVE + NEUTRAL
    return list(dict.fromkeys(vocab))


def tiny_tokenizer(directory: str | Path | None = None):
    """A real WordPiece `BertTokenizerFast` over a small vocabulary."""
    from transformers import BertTokenizerFast

    directory = Path(directory or tempfile.mkdtemp(prefix="bertpress-tok-"))
    directory.mkdir(parents=True, exist_ok=True)
    vocab_file = directory / "vocab.txt"
    vocab_file.write_text("\n".join(tiny_vocab()) + "\n", encoding="utf-8")
    # from_pretrained(directory) reads vocab.txt on every transformers line: 5.x silently ignores
    # the `vocab_file=` constructor argument (it takes `vocab=`) and would build a 5-token vocabulary.
    tok = BertTokenizerFast.from_pretrained(str(directory), do_lower_case=True, model_max_length=128)
    if len(tok.get_vocab()) != len(tiny_vocab()):  # pragma: no cover - guards the line above
        raise RuntimeError(f"tiny tokenizer has {len(tok.get_vocab())} tokens, expected {len(tiny_vocab())}")
    return tok


def tiny_bert(
    *,
    num_labels: int = 2,
    labels: Sequence[str] | None = None,
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    intermediate_size: int = 37,
    max_position_embeddings: int = 128,
    seed: int = 0,
):
    """(model, tokenizer): a random-initialised BertForSequenceClassification, eval mode."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = tiny_tokenizer()
    if labels is None:
        labels = ["negative", "positive"] if num_labels == 2 else [f"label_{i}" for i in range(num_labels)]
    labels = [str(x) for x in labels]
    config = BertConfig(
        vocab_size=len(tokenizer.get_vocab()),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).eval()
    return model, tokenizer


def save_tiny_checkpoint(path: str | Path, *, manifest: bool = True, **kwargs) -> Path:
    """Save a tiny BERT as an HF directory (+ a `checkpoint` manifest unless manifest=False)."""
    from bertpress.artifact import Manifest, write_manifest
    from bertpress.models import label_names_of

    path = Path(path)
    model, tokenizer = tiny_bert(**kwargs)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    if manifest:
        write_manifest(path, Manifest(
            kind="checkpoint",
            labels=label_names_of(model),
            max_length=model.config.max_position_embeddings,
            details={"origin": "bertpress.testing.tiny_bert (random weights)"},
        ))
    return path


def tiny_sentences(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """Sentences whose sentiment word decides the label: learnable by a tiny BERT."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        label = rng.randint(0, 1)
        word = rng.choice(POSITIVE if label else NEGATIVE)
        words = rng.sample(NEUTRAL, rng.randint(2, 8))
        words.insert(rng.randint(0, len(words)), word)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def write_tiny_dataset(directory: str | Path, n_train: int = 96, n_dev: int = 32, seed: int = 0) -> Path:
    """Write `train.tsv` and `dev.tsv` (sentence<TAB>label) with learnable tiny sentences."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for split, n, s in (("train", n_train, seed), ("dev", n_dev, seed + 1)):
        texts, labels = tiny_sentences(n, seed=s)
        lines = ["sentence\tlabel"] + [f"{t}\t{lab}" for t, lab in zip(texts, labels)]
        (directory / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


def tiny_pairs(n: int, seed: int = 0) -> tuple[list[str], list[str], list[int]]:
    """Sentence pairs whose label only the *second* text decides (its sentiment word); the
    first text is neutral words. A model that reads pairs learns it; one that reads only the
    first column cannot beat chance - so a test can tell that pairs reach the model."""
    rng = random.Random(seed)
    firsts, seconds, labels = [], [], []
    for _ in range(n):
        label = rng.randint(0, 1)
        firsts.append(" ".join(rng.sample(NEUTRAL, rng.randint(2, 6))))
        words = rng.sample(NEUTRAL, rng.randint(2, 6))
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label else NEGATIVE))
        seconds.append(" ".join(words))
        labels.append(label)
    return firsts, seconds, labels


def write_tiny_pair_dataset(directory: str | Path, n_train: int = 96, n_dev: int = 32, seed: int = 0) -> Path:
    """Write `train.tsv` and `dev.tsv` in MRPC's layout (label<TAB>sentence1<TAB>sentence2)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for split, n, s in (("train", n_train, seed), ("dev", n_dev, seed + 1)):
        firsts, seconds, labels = tiny_pairs(n, seed=s)
        lines = ["label\tsentence1\tsentence2"] + [f"{lab}\t{a}\t{b}" for a, b, lab in zip(firsts, seconds, labels)]
        (directory / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


def many_label_names(k: int = 40) -> list[str]:
    """k distinct string label names (not integers, not sorted the way their ids are)."""
    words = POSITIVE + NEGATIVE + NEUTRAL
    return [f"{words[i % len(words)]}-{chr(ord('z') - i // len(words))}" for i in range(k)]


def write_many_label_dataset(directory: str | Path, num_labels: int = 40, per_class_train: int = 4,
                             per_class_dev: int = 2, seed: int = 0) -> Path:
    """`train.tsv` / `dev.tsv` (sentence<TAB>label) with `num_labels` string labels, every class
    in both splits; the class's name word is in its sentences (learnable, given enough steps)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = many_label_names(num_labels)
    rng = random.Random(seed)
    for split, per in (("train", per_class_train), ("dev", per_class_dev)):
        rows = []
        for name in names:
            for _ in range(per):
                words = rng.sample(NEUTRAL, rng.randint(2, 5))
                words.insert(rng.randint(0, len(words)), name.replace("-", " "))
                rows.append(f"{' '.join(words)}\t{name}")
        rng.shuffle(rows)
        (directory / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return directory
