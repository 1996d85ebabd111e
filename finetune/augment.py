"""Word-substitution augmentation for distillation (TinyBERT's data augmentation, offline).

A distilled student learns from the teacher's soft labels, so its training text need not carry
gold labels: text *near* the data, with some words swapped for related ones, is extra signal the
teacher labels for free. TinyBERT (Jiao et al., 2020, §3.1) replaces each word with probability
0.4 by one of its K=15 nearest candidates: BERT's masked-LM predictions for single-piece words,
GloVe neighbours for the others. Neither is available offline or for every family, so the
candidates here are the **teacher's own input embeddings**: the nearest words (by cosine) among
the single-token words of the training text itself. That needs nothing but the model being
distilled and works for every tokenizer (WordPiece, BPE, SentencePiece). Words that split into
several pieces, numbers and punctuation are kept as they are.

Why by hand: nlpaug / TextAttack offer word substitution, but through WordNet (downloads at run
time), GloVe / word2vec files or a masked LM (hub downloads), none of which exists offline or for
a non-English model; what is left is a nearest-neighbour lookup in one embedding matrix.

`augment_for_distillation(data, tokenizer, embeddings, copies)` returns only the new rows;
`augmented_features` tokenises them for the Trainer with their labels ignored (`IGNORE_LABEL`), so
`recover(..., augment=N)` (compress --recover-augment) and `finetune --teacher --augment N` train
on them with the teacher's soft targets alone.
"""

from __future__ import annotations

import dataclasses
import random
import re
from typing import Any

from bertpress.data import TextDataset
from bertpress.errors import ConfigError, InputError

#: The label of an augmented row: the cross-entropy term skips it (PyTorch's ignore_index),
#: so the row learns from the teacher's soft targets only.
IGNORE_LABEL = -100

# A word: a run of letters (any script), no digits or underscore. Everything between words
# (spaces, punctuation, numbers) is copied unchanged.
_WORD = re.compile(r"[^\W\d_]+")

#: Candidates less similar than this (cosine of input embeddings) are not neighbours: in a
#: trained model's embeddings unrelated words sit near 0.
MIN_SIMILARITY = 0.3


@dataclasses.dataclass
class Augmented:
    data: TextDataset  # the new rows only (labels copied from the source rows; recover ignores them)
    vocabulary: int  # distinct single-token words found in the text
    with_neighbours: int  # of those, words that have candidates
    words_seen: int  # word occurrences in the source text
    words_replaceable: int  # of those, occurrences of a word with candidates
    duplicates_dropped: int  # copies equal to their source row (no word drawn), not kept

    def summary(self) -> dict[str, Any]:
        return {"rows": len(self.data), "vocabulary": self.vocabulary, "with_neighbours": self.with_neighbours,
                "coverage": round(self.words_replaceable / self.words_seen, 4) if self.words_seen else 0.0,
                "duplicates_dropped": self.duplicates_dropped}


def word_neighbours(texts: list[str], tokenizer, embeddings, k: int = 15, min_similarity: float = MIN_SIMILARITY,
                    chunk: int = 2048) -> tuple[dict[str, list[str]], int]:
    """For every distinct word of `texts` that the tokenizer keeps as one token (as it appears
    after a space), its up to k nearest such words by cosine similarity of `embeddings` rows
    (the model's input-embedding matrix) with a cosine of at least `min_similarity`.
    Returns (neighbours, number of single-token words)."""
    import torch

    words = sorted({w for t in texts for w in _WORD.findall(t)})
    if not words:
        return {}, 0
    # Tokenize as the word appears mid-sentence: BPE tokenizers (RoBERTa) mark the leading
    # space in the token; WordPiece and SentencePiece give the same id either way.
    ids = tokenizer([" " + w for w in words], add_special_tokens=False)["input_ids"]
    single = [(w, i[0]) for w, i in zip(words, ids) if len(i) == 1]
    if len(single) < 2:
        return {}, len(single)
    vocab = [w for w, _ in single]
    with torch.no_grad():
        emb = embeddings.detach().float()[torch.tensor([i for _, i in single])]
        emb = torch.nn.functional.normalize(emb, dim=-1)
        out: dict[str, list[str]] = {}
        for start in range(0, len(vocab), chunk):
            sims = emb[start:start + chunk] @ emb.T
            sims[torch.arange(sims.shape[0]), torch.arange(start, start + sims.shape[0])] = -2.0  # not itself
            top = sims.topk(min(k, len(vocab) - 1), dim=-1)
            for r, (vals, idx) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
                near = [vocab[j] for v, j in zip(vals, idx) if v >= min_similarity]
                if near:
                    out[vocab[start + r]] = near
    return out, len(vocab)


def augment_for_distillation(data: TextDataset, tokenizer, embeddings, copies: int, *, prob: float = 0.4,
                             k: int = 15, seed: int = 0) -> Augmented:
    """`copies` new versions of every row of `data`, each word with candidates replaced with
    probability `prob` by one of its k nearest words (`word_neighbours`); a pair's two texts are
    both rewritten. A copy identical to its row is dropped. Deterministic for a seed. Raises
    InputError (one line) when no word of the text has candidates."""
    if not isinstance(copies, int) or copies < 1:
        raise ConfigError(f"augment: copies={copies!r} must be an integer >= 1")
    if not 0.0 < prob <= 1.0:
        raise ConfigError(f"augment: prob={prob!r} must be in (0, 1]")
    if not isinstance(k, int) or k < 1:
        raise ConfigError(f"augment: k={k!r} must be an integer >= 1")
    sources = list(data.texts) + (list(data.text_pairs) if data.text_pairs is not None else [])
    near, vocabulary = word_neighbours(sources, tokenizer, embeddings, k=k)
    if not near:
        why = ("the tokenizer keeps none of its words as one token" if not vocabulary else
               f"none of its {vocabulary} single-token words has a neighbour with cosine >= {MIN_SIMILARITY}")
        raise InputError(f"augment: no word of the training text can be replaced ({why}); "
                         "drop --recover-augment")
    seen = replaceable = 0
    for t in sources:
        for w in _WORD.findall(t):
            seen += 1
            replaceable += w in near
    rng = random.Random(seed)

    def rewrite(text: str) -> str:
        def swap(m: re.Match) -> str:
            cands = near.get(m.group(0))
            return rng.choice(cands) if cands and rng.random() < prob else m.group(0)
        return _WORD.sub(swap, text)

    texts: list[str] = []
    pairs: list[str] | None = [] if data.text_pairs is not None else None
    labels: list[int] = []
    dropped = 0
    for i, text in enumerate(data.texts):
        pair = data.text_pairs[i] if data.text_pairs is not None else None
        for _ in range(copies):
            new = rewrite(text)
            new_pair = rewrite(pair) if pair is not None else None
            if new == text and new_pair == pair:
                dropped += 1
                continue
            texts.append(new)
            labels.append(data.labels[i])
            if pairs is not None:
                pairs.append(new_pair)
    out = dataclasses.replace(data, texts=texts, labels=labels, text_pairs=pairs, skipped=0,
                              source=f"{data.source} (word substitution x{copies}, p={prob}, seed {seed})")
    return Augmented(out, vocabulary, len(near), seen, replaceable, dropped)


def augmented_features(data: TextDataset, tokenizer, embeddings, copies: int, *, max_length: int,
                       prob: float = 0.4, seed: int = 0) -> tuple[list[dict[str, Any]], Augmented]:
    """`augment_for_distillation`, tokenised for the Trainer (`features.tokenize`) with every
    row's label set to IGNORE_LABEL: what recover(augment=N) and finetune --augment append to
    the training rows."""
    from bertpress.finetune.features import tokenize

    augmented = augment_for_distillation(data, tokenizer, embeddings, copies, prob=prob, seed=seed)
    rows = tokenize(augmented.data, tokenizer, max_length).rows if len(augmented.data) else []
    for row in rows:
        row["labels"] = IGNORE_LABEL  # the teacher's soft targets only (distill.distillation_loss)
    return rows, augmented
