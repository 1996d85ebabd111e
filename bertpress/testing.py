"""Tiny random BERTs, tokenizers and data for tests and examples (nothing touches the network)."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Sequence

from bertpress.arch import max_positions
from bertpress.artifact import Manifest, write_manifest
from bertpress.models import label_names_of
from bertpress.quiet import quiet

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


def save_tiny_checkpoint(path: str | Path, *, manifest: bool = True, family: str = "bert", **kwargs) -> Path:
    """Save a tiny model of `family` (default BERT) as an HF directory (+ a `checkpoint` manifest
    unless manifest=False)."""
    path = Path(path)
    model, tokenizer = tiny_bert(**kwargs) if family == "bert" else tiny_model(family, **kwargs)

    with quiet():  # no "Writing model shards" bar in test output
        model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    if manifest:
        write_manifest(path, Manifest(
            kind="checkpoint",
            labels=label_names_of(model),
            max_length=max_positions(model.config),
            details={"origin": f"bertpress.testing.tiny_model({family!r}) (random weights)"},
        ))
    return path


# ---- every family -----------------------------------------------------------------------------
# Tokenizers are real ones of each family's kind, built offline: WordPiece over tiny_vocab() (BERT,
# DistilBERT, ELECTRA, MPNet), byte-level BPE (RoBERTa, ModernBERT) and Unigram (XLM-R, DeBERTa-v3, ALBERT)
# trained with the `tokenizers` library on tiny_sentences().
TINY_FAMILIES = ("bert", "distilbert", "roberta", "xlm-roberta", "electra", "deberta-v2", "modernbert", "albert",
                 "mpnet")


def _corpus() -> list[str]:
    texts = tiny_sentences(400, seed=7)[0] + [" ".join(POSITIVE + NEGATIVE + NEUTRAL)] * 5
    return texts + [" ".join("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-")]


def _bpe_tokenizer(directory: Path):
    """Byte-level BPE as RoBERTa uses (vocab.json + merges.txt), through RobertaTokenizer."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(_corpus(), vocab_size=400, min_frequency=1, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(directory))
    return RobertaTokenizer.from_pretrained(str(directory), model_max_length=128)


def _unigram_vocab(specials: list[str], unk: str) -> list[tuple[str, float]]:
    import json

    from tokenizers import SentencePieceUnigramTokenizer

    uni = SentencePieceUnigramTokenizer()
    uni.train_from_iterator(_corpus(), vocab_size=200, special_tokens=specials, unk_token=unk, show_progress=False)
    return [(str(piece), float(score)) for piece, score in json.loads(uni.to_str())["model"]["vocab"]]


def _modernbert_tokenizer():
    """ModernBERT ships a tokenizers-backed fast tokenizer (BPE, [CLS] x [SEP], no token types)."""
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    bpe.train_from_iterator(_corpus(), vocab_size=400, min_frequency=1, show_progress=False, special_tokens=specials)
    tok = bpe._tokenizer
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=128,
                                   model_input_names=["input_ids", "attention_mask"])


def tiny_family_tokenizer(family: str):
    """A real tokenizer of the kind `family` uses, built offline."""
    directory = Path(tempfile.mkdtemp(prefix=f"bertpress-tok-{family}-"))
    if family in ("bert", "electra"):  # ELECTRA's tokenizer is BERT's WordPiece
        return tiny_tokenizer(directory)
    if family == "distilbert":
        from transformers import DistilBertTokenizer

        tiny_tokenizer(directory)
        return DistilBertTokenizer.from_pretrained(str(directory), do_lower_case=True, model_max_length=128)
    if family == "roberta":
        return _bpe_tokenizer(directory)
    if family == "xlm-roberta":
        from transformers import XLMRobertaTokenizer

        vocab = _unigram_vocab(["<s>", "<pad>", "</s>", "<unk>"], "<unk>") + [("<mask>", 0.0)]
        return XLMRobertaTokenizer(vocab=vocab, model_max_length=128)
    if family == "deberta-v2":
        from transformers import DebertaV2Tokenizer

        return DebertaV2Tokenizer(vocab=_unigram_vocab(["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"], "[UNK]"),
                                  model_max_length=128)
    if family == "modernbert":
        return _modernbert_tokenizer()
    if family == "albert":
        from transformers import AlbertTokenizer

        return AlbertTokenizer(vocab=_unigram_vocab(["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"], "<unk>"),
                               model_max_length=128)
    if family == "mpnet":  # WordPiece with RoBERTa-style special tokens
        from transformers import MPNetTokenizer

        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        vocab = specials + [t for t in tiny_vocab() if t not in SPECIAL]
        (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
        return MPNetTokenizer.from_pretrained(str(directory), do_lower_case=True, model_max_length=128)
    raise ValueError(f"no tiny tokenizer for family {family!r}; one of {TINY_FAMILIES}")


def tiny_config(family: str, tokenizer, *, labels: Sequence[str], hidden_size: int = 32, num_hidden_layers: int = 2,
                num_attention_heads: int = 4, intermediate_size: int = 37, max_length: int = 128):
    """A small config of `family` whose shapes mirror tiny_bert's (hidden 32, 4 heads, 2 layers)."""
    import transformers as T

    common = dict(vocab_size=len(tokenizer), num_labels=len(labels), id2label=dict(enumerate(labels)),
                  label2id={n: i for i, n in enumerate(labels)}, pad_token_id=tokenizer.pad_token_id)
    bert_like = dict(hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
                     num_attention_heads=num_attention_heads, intermediate_size=intermediate_size)
    if family == "bert":
        return T.BertConfig(**common, **bert_like, max_position_embeddings=max_length)
    if family == "distilbert":
        return T.DistilBertConfig(**common, dim=hidden_size, n_layers=num_hidden_layers, n_heads=num_attention_heads,
                                  hidden_dim=intermediate_size, max_position_embeddings=max_length)
    if family in ("roberta", "xlm-roberta"):  # as roberta-base: positions after padding_idx, one token type
        cls = T.RobertaConfig if family == "roberta" else T.XLMRobertaConfig
        return cls(**common, **bert_like, max_position_embeddings=max_length + tokenizer.pad_token_id + 1,
                   type_vocab_size=1, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    if family == "electra":  # embedding_size below hidden_size, as electra-small (embeddings_project)
        return T.ElectraConfig(**common, **bert_like, embedding_size=hidden_size // 2, max_position_embeddings=max_length)
    if family == "deberta-v2":  # DeBERTa-v3's shape: relative attention, shared keys, no token types
        return T.DebertaV2Config(**common, **bert_like, max_position_embeddings=max_length, type_vocab_size=0,
                                 relative_attention=True, position_buckets=16, max_relative_positions=-1,
                                 pos_att_type=["p2c", "c2p"], share_att_key=True, norm_rel_ebd="layer_norm",
                                 position_biased_input=False)
    if family == "modernbert":  # one global layer then local ones, as modernbert-base (every 3rd global)
        specials = {k: getattr(tokenizer, f"{k}_token_id") for k in ("cls", "sep", "bos", "eos")}
        specials["bos"], specials["eos"] = specials["cls"], specials["sep"]
        return T.ModernBertConfig(**common, **bert_like, max_position_embeddings=max_length,
                                  global_attn_every_n_layers=2, local_attention=16,
                                  cls_token_id=specials["cls"], sep_token_id=specials["sep"],
                                  bos_token_id=specials["bos"], eos_token_id=specials["eos"])
    if family == "albert":  # one shared layer (as albert-base), embedding_size below hidden_size
        return T.AlbertConfig(**common, **bert_like, embedding_size=hidden_size // 2, max_position_embeddings=max_length,
                              hidden_act="gelu_new", num_hidden_groups=1, inner_group_num=1,
                              bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)
    if family == "mpnet":  # positions after padding_idx, as mpnet-base (514 for 512 tokens)
        return T.MPNetConfig(**common, **bert_like, max_position_embeddings=max_length + tokenizer.pad_token_id + 1,
                             relative_attention_num_buckets=32, bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id)
    raise ValueError(f"no tiny config for family {family!r}; one of {TINY_FAMILIES}")


def tiny_model(family: str = "bert", *, num_labels: int = 2, labels: Sequence[str] | None = None, seed: int = 0,
               **shape):
    """(model, tokenizer): a random-initialised *ForSequenceClassification of `family`, eval mode."""
    import torch
    from transformers import AutoModelForSequenceClassification

    if labels is None:
        labels = ["negative", "positive"] if num_labels == 2 else [f"label_{i}" for i in range(num_labels)]
    labels = [str(x) for x in labels]
    tokenizer = tiny_family_tokenizer(family)
    config = tiny_config(family, tokenizer, labels=labels, **shape)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    return model, tokenizer


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
