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

`augment_for_distillation(data, tokenizer, embeddings, copies)` returns only the new rows, labelled
`IGNORE_LABEL` (no label of their own); `augmented_features` tokenises them for the Trainer, so
`recover(..., RecoverConfig(augment=N))` (compress --recover-augment) and `finetune --teacher --augment N` train
on them with the teacher's soft targets alone.
"""

from __future__ import annotations

import dataclasses
import random
import unicodedata
from collections import Counter
from typing import Any

from bertpress.data import TextDataset
from bertpress.errors import ConfigError, InputError
from bertpress.finetune.distill import IGNORE_LABEL
from bertpress.finetune.features import Features, tokenize

#: Candidates less similar than this (cosine of input embeddings) are not neighbours: in a
#: trained model's embeddings unrelated words sit near 0.
MIN_SIMILARITY = 0.3

_APOSTROPHES = "'\u2019"


def word_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every word of `text`: a letter of any script followed by letters and
    combining marks (Devanagari vowel signs, decomposed accents), with inner apostrophes kept
    (don't, n't). Digits, punctuation and spaces are not words and stay as they are.

    By hand because the standard `re` has no class for combining marks (Unicode category M):
    `[^\\W\\d_]+` cuts हिन्दी into single consonants and leaves a decomposed accent dangling."""
    spans: list[tuple[int, int]] = []
    i, n = 0, len(text)
    while i < n:
        if unicodedata.category(text[i])[0] != "L":
            i += 1
            continue
        j = i + 1
        while j < n:
            cat = unicodedata.category(text[j])[0]
            if cat in "LM":
                j += 1
            elif text[j] in _APOSTROPHES and j + 1 < n and unicodedata.category(text[j + 1])[0] == "L":
                j += 2
            else:
                break
        spans.append((i, j))
        i = j
    return spans


def _words(text: str) -> list[str]:
    return [text[a:b] for a, b in word_spans(text)]


@dataclasses.dataclass
class Augmented:
    data: TextDataset  # the new rows only, every label IGNORE_LABEL
    copies: int
    prob: float
    vocabulary: int  # distinct token ids of the text's single-token words (special tokens and [UNK] left out)
    with_neighbours: int  # distinct words that have candidates
    words_seen: int  # word occurrences in the source text
    words_replaceable: int  # of those, occurrences of a word with candidates
    duplicates_dropped: int  # copies in which no word was replaced, not kept

    def summary(self) -> dict[str, Any]:
        """What the manifests record (compress details.recovery.metrics.augmented, finetune
        details.distillation.augmented)."""
        return {"copies": self.copies, "prob": self.prob, "rows": len(self.data), "vocabulary": self.vocabulary,
                "with_neighbours": self.with_neighbours,
                "coverage": round(self.words_replaceable / self.words_seen, 4) if self.words_seen else 0.0,
                "duplicates_dropped": self.duplicates_dropped}

    def describe(self) -> str:
        """The one line the stages print."""
        share = 100 * self.words_replaceable / self.words_seen if self.words_seen else 0.0
        return (f"{len(self.data)} augmented rows ({self.copies} per row, p={self.prob}; {share:.0f}% of the "
                "words have candidates), taught by the teacher alone")


def word_neighbours(texts: list[str], tokenizer, embeddings, k: int = 15, min_similarity: float = MIN_SIMILARITY,
                    progress: bool = False) -> tuple[dict[str, list[str]], int]:
    """For every distinct word of `texts` that the tokenizer keeps as one token (as it appears
    after a space), its up to k nearest such words by cosine similarity of `embeddings` rows
    (the model's input-embedding matrix), each with a cosine of at least `min_similarity`.

    Words are compared by token id: spellings that share one id (The / the in an uncased
    vocabulary, café / cafe where accents are stripped) are one candidate, written as the most
    frequent spelling, and never each other's neighbours; special tokens ([UNK], [CLS], ...) are
    never candidates. Returns (neighbours, number of distinct candidate ids)."""
    return _nearest(Counter(w for t in texts for w in _words(t)), tokenizer, embeddings, k, min_similarity, progress)


def _nearest(counts: Counter, tokenizer, embeddings, k: int, min_similarity: float,
             progress: bool) -> tuple[dict[str, list[str]], int]:
    """word_neighbours from the words' counts (augment_for_distillation has them from its spans)."""
    import torch
    from tqdm.auto import tqdm

    words = sorted(counts)
    if not words:
        return {}, 0
    # Tokenize as the word appears mid-sentence: BPE tokenizers (RoBERTa) mark the leading
    # space in the token; WordPiece and SentencePiece give the same id either way.
    ids = tokenizer([" " + w for w in words], add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids)
    word_id = {w: i[0] for w, i in zip(words, ids) if len(i) == 1 and i[0] not in special}
    surface: dict[int, str] = {}
    for w, tid in word_id.items():  # words in sorted order: ties keep the first spelling
        if tid not in surface or counts[w] > counts[surface[tid]]:
            surface[tid] = w
    uniq = sorted(surface)
    if len(uniq) < 2:
        return {}, len(uniq)
    near_id: dict[int, list[int]] = {}
    with torch.no_grad():
        emb = embeddings.detach()[torch.tensor(uniq, device=embeddings.device)].float()
        emb = torch.nn.functional.normalize(emb, dim=-1)
        n = len(uniq)
        chunk = max(1, min(2048, 2 ** 26 // n))  # a chunk x n similarity block stays <= 256 MiB
        for start in tqdm(range(0, n, chunk), desc="augment: nearest words", unit="chunk", disable=not progress,
                          leave=False):
            sims = emb[start:start + chunk] @ emb.T
            rows = torch.arange(sims.shape[0], device=sims.device)
            sims[rows, rows + start] = -2.0  # not itself
            top = sims.topk(min(k, n - 1), dim=-1)
            for r, (vals, idx) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
                got = [uniq[j] for v, j in zip(vals, idx) if v >= min_similarity]
                if got:
                    near_id[uniq[start + r]] = got
    near = {w: [surface[j] for j in near_id[tid]] for w, tid in word_id.items() if tid in near_id}
    return near, len(uniq)


def augment_for_distillation(data: TextDataset, tokenizer, embeddings, copies: int, *, prob: float = 0.4,
                             k: int = 15, seed: int = 0, flag: str = "--recover-augment",
                             progress: bool = False) -> Augmented:
    """`copies` new versions of every row of `data`, each word with candidates replaced with
    probability `prob` by one of its k nearest words (`word_neighbours`); a pair's two texts are
    both rewritten. A copy in which no word was replaced is dropped. The new rows are labelled
    IGNORE_LABEL. Deterministic for a seed (on one device). Raises InputError (one line, naming
    `flag`) when no word of the text has candidates."""
    if not isinstance(copies, int) or copies < 1:
        raise ConfigError(f"augment: copies={copies!r} must be an integer >= 1")
    if not 0.0 < prob <= 1.0:
        raise ConfigError(f"augment: prob={prob!r} must be in (0, 1]")
    if not isinstance(k, int) or k < 1:
        raise ConfigError(f"augment: k={k!r} must be an integer >= 1")
    sources = list(data.texts) + (list(data.text_pairs) if data.text_pairs is not None else [])
    spans = {t: word_spans(t) for t in sources}
    counts = Counter(t[a:b] for t in sources for a, b in spans[t])
    near, vocabulary = _nearest(counts, tokenizer, embeddings, k, MIN_SIMILARITY, progress)
    if not near:
        why = ("the tokenizer keeps none of its words as one token" if not vocabulary else
               f"none of its {vocabulary} single-token words has a neighbour with cosine >= {MIN_SIMILARITY}")
        raise InputError(f"augment: no word of the training text can be replaced ({why}); drop {flag}")
    seen = sum(counts.values())
    replaceable = sum(c for w, c in counts.items() if w in near)
    rng = random.Random(seed)

    def rewrite(text: str) -> tuple[str, bool]:
        parts, last, changed = [], 0, False
        for a, b in spans[text]:
            cands = near.get(text[a:b])
            if cands and rng.random() < prob:
                parts += [text[last:a], rng.choice(cands)]
                last, changed = b, True
        return "".join(parts) + text[last:], changed

    texts: list[str] = []
    pairs: list[str] | None = [] if data.text_pairs is not None else None
    dropped = 0
    for i, text in enumerate(data.texts):
        pair = data.text_pairs[i] if data.text_pairs is not None else None
        for _ in range(copies):
            new, changed = rewrite(text)
            new_pair, changed_pair = rewrite(pair) if pair is not None else (None, False)
            if not (changed or changed_pair):
                dropped += 1
                continue
            texts.append(new)
            if pairs is not None:
                pairs.append(new_pair)
    out = dataclasses.replace(data, texts=texts, labels=[IGNORE_LABEL] * len(texts), text_pairs=pairs, skipped=0,
                              source=f"{data.source} (word substitution x{copies}, p={prob}, seed {seed})")
    return Augmented(out, copies, prob, vocabulary, len(near), seen, replaceable, dropped)


def augmented_features(base, data: TextDataset, tokenizer, teacher, copies: int, *, max_length: int,
                       prob: float = 0.4, seed: int = 0, flag: str = "--recover-augment",
                       progress: bool = False):
    """The Trainer's rows `base` (`features.tokenize(data, ...)`) followed by
    `augment_for_distillation(data, ...)` with the teacher's input embeddings, tokenised the same
    way (every label IGNORE_LABEL): what recover (RecoverConfig.augment=N) and finetune --augment train on.
    Returns (Features, Augmented)."""
    augmented = augment_for_distillation(data, tokenizer, teacher.get_input_embeddings().weight, copies, prob=prob,
                                         seed=seed, flag=flag, progress=progress)
    rows = tokenize(augmented.data, tokenizer, max_length).rows if len(augmented.data) else []
    return Features(base.rows + rows), augmented
