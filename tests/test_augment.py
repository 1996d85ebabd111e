"""Distillation data augmentation (finetune.augment, recover(augment=N), compress --recover-augment)."""

from __future__ import annotations

import json

import pytest
import torch

from bertpress.data import TextDataset
from bertpress.errors import InputError
from bertpress.finetune import RecoverConfig, distillation_loss, recover
from bertpress.finetune.augment import IGNORE_LABEL, augment_for_distillation, word_neighbours
from bertpress.testing import save_tiny_checkpoint, tiny_bert, tiny_model, tiny_sentences

# Families whose tiny offline tokenizer keeps whole words as one token (the tiny SentencePiece
# vocabularies of XLM-R, DeBERTa-v3 and ALBERT are 87 pieces: every word splits; real ones do not).
WHOLE_WORD_FAMILIES = ("bert", "distilbert", "roberta", "electra", "modernbert", "mpnet")


def _embeddings(tok, groups: list[list[str]], seed: int = 0) -> torch.Tensor:
    """An embedding matrix in which the words of each group point the same way (cosine ~1) and
    every group is orthogonal to the others and to every other token."""
    g = torch.Generator().manual_seed(seed)
    dim = 64
    emb = torch.zeros(len(tok), dim)
    for i in range(len(tok)):
        emb[i, 32 + i % 32] = 1.0  # every other token: far from the groups
    for n, group in enumerate(groups):
        for w in group:
            (tid,) = tok(" " + w, add_special_tokens=False)["input_ids"]
            emb[tid] = 0.0
            emb[tid, n] = 1.0
            emb[tid, 32 + n] = 0.01 * torch.rand(1, generator=g).item()
    return emb


def test_neighbours_are_the_nearest_single_token_words_of_the_text():
    _, tok = tiny_bert()
    emb = _embeddings(tok, [["good", "great", "superb"], ["bad", "awful"]])
    near, vocabulary = word_neighbours(["a good film", "a great and superb film", "bad , awful 42 ! zzzq"], tok, emb)
    # "zzzq" splits into pieces: not a candidate; "42" and punctuation are not words.
    assert vocabulary == 8  # a, good, film, great, and, superb, bad, awful
    assert sorted(near["good"]) == ["great", "superb"] and near["bad"] == ["awful"]
    assert "film" not in near  # nothing within cosine 0.3 of it
    assert "zzzq" not in near


def test_augmentation_replaces_only_words_with_candidates_and_is_reproducible():
    _, tok = tiny_bert()
    emb = _embeddings(tok, [["good", "great"], ["bad", "awful"]])
    data = TextDataset(texts=["the film was good , 42 times !", "a great plot", "quite bad , awful"],
                       labels=[1, 1, 0], label_names=["negative", "positive"], source="test")
    out = augment_for_distillation(data, tok, emb, 2, prob=1.0, seed=3)
    # prob 1: every word with a candidate (a word of the text itself) swaps to its only neighbour;
    # the rest is kept byte for byte.
    assert out.data.texts == ["the film was great , 42 times !"] * 2 + ["a good plot"] * 2 + ["quite awful , bad"] * 2
    assert out.data.labels == [IGNORE_LABEL] * 6  # no label of their own: the teacher's alone
    assert out.summary()["rows"] == 6 and out.summary()["duplicates_dropped"] == 0
    again = augment_for_distillation(data, tok, emb, 2, prob=0.5, seed=11)
    assert augment_for_distillation(data, tok, emb, 2, prob=0.5, seed=11).data.texts == again.data.texts
    # A copy in which no word was drawn is not kept.
    assert len(again.data) + again.duplicates_dropped == 6
    assert "word substitution x2" in again.data.source


def test_augmentation_rewrites_both_texts_of_a_pair():
    _, tok = tiny_bert()
    emb = _embeddings(tok, [["good", "great"], ["film", "movie"]])
    data = TextDataset(texts=["a good film"], labels=[1], label_names=["no", "yes"], source="test",
                       text_pairs=["the movie was great"])
    out = augment_for_distillation(data, tok, emb, 1, prob=1.0)
    assert out.data.texts == ["a great movie"] and out.data.text_pairs == ["the film was good"]


@pytest.mark.parametrize("family", WHOLE_WORD_FAMILIES)
def test_every_tokenizer_kind_finds_candidates_in_the_models_own_embeddings(family):
    """WordPiece, byte-level BPE (a word after a space is its own token) and ModernBERT's BPE."""
    model, tok = tiny_model(family)
    texts, labels = tiny_sentences(40)
    data = TextDataset(texts=texts, labels=labels, label_names=["negative", "positive"], source="test")
    out = augment_for_distillation(data, tok, model.get_input_embeddings().weight, 1, prob=1.0, k=3)
    assert out.vocabulary >= 20 and out.with_neighbours > 0
    assert len(out.data) + out.duplicates_dropped == len(texts) and len(out.data) > 0
    # every kept copy tokenizes differently from every source row (a real substitution, not a respelling)
    ids = {tuple(x) for x in tok(texts)["input_ids"]}
    assert not ids & {tuple(x) for x in tok(out.data.texts)["input_ids"]}


def test_words_are_letters_and_combining_marks_with_inner_apostrophes():
    from bertpress.finetune.augment import word_spans

    def words(t):
        return [t[a:b] for a, b in word_spans(t)]

    assert words("it's 42 films, don't!") == ["it's", "films", "don't"]
    assert words("हिन्दी भाषा") == ["हिन्दी", "भाषा"]  # vowel signs (category M) stay in the word
    assert words("cafe\u0301 au lait") == ["cafe\u0301", "au", "lait"]  # a decomposed accent stays too
    assert words("naïve über_alles x2") == ["naïve", "über", "alles", "x"]
    assert words("-- 123 '' ") == []


def test_spellings_that_share_a_token_are_one_candidate_and_unknown_words_none():
    """An uncased vocabulary gives The and the one id: they are not each other's neighbours, the
    candidate is written as the more frequent spelling; words that are [UNK] are never candidates."""
    _, tok = tiny_bert()
    emb = _embeddings(tok, [["good", "great"]])
    unk = tok.unk_token_id
    emb[unk] = emb[tok(" good", add_special_tokens=False)["input_ids"][0]]  # [UNK] right beside good
    texts = ["The good film", "the great film", "GREAT great film", "ζζζ good"]
    near, vocabulary = word_neighbours(texts, tok, emb)
    assert tok(" ζζζ", add_special_tokens=False)["input_ids"] == [unk]
    assert near["good"] == ["great"] and near["GREAT"] == ["good"] and near["great"] == ["good"]
    assert "ζζζ" not in near and all("ζζζ" not in v for v in near.values())
    assert "the" not in near.get("The", []) and vocabulary == 4  # the, good, film, great


def test_no_replaceable_word_is_refused_in_one_line():
    model, tok = tiny_model("xlm-roberta")  # 87 pieces: every word splits
    texts, labels = tiny_sentences(10)
    data = TextDataset(texts=texts, labels=labels, label_names=["negative", "positive"], source="test")
    with pytest.raises(InputError, match=r"^augment: no word of the training text can be replaced \(the tokenizer "
                                         r"keeps none of its words as one token\); drop --recover-augment$"):
        augment_for_distillation(data, tok, model.get_input_embeddings().weight, 1)


def test_rows_without_a_label_learn_from_the_teacher_alone():
    torch.manual_seed(0)
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    y = torch.tensor([0, IGNORE_LABEL, 2, IGNORE_LABEL])
    T, alpha = 2.0, 0.3
    kl = torch.nn.functional.kl_div(torch.log_softmax(s / T, -1), torch.log_softmax(t / T, -1), log_target=True,
                                    reduction="none").sum(-1) * T * T
    ce = torch.nn.functional.cross_entropy(s, y.clamp(min=0), reduction="none")
    want = torch.stack([(1 - alpha) * ce[0] + alpha * kl[0], kl[1], (1 - alpha) * ce[2] + alpha * kl[2], kl[3]]).mean()
    assert torch.allclose(distillation_loss(s, t, y, alpha=alpha, temperature=T), want)
    only_unlabelled = torch.full((4,), IGNORE_LABEL)
    assert torch.allclose(distillation_loss(s, t, only_unlabelled, alpha=alpha, temperature=T), kl.mean())
    assert torch.allclose(distillation_loss(s, t, only_unlabelled, alpha=0.0, temperature=T), kl.mean())
    # Labelled rows are unchanged: mean CE at alpha 0, as before.
    labelled = torch.tensor([0, 1, 2, 1])
    assert torch.allclose(distillation_loss(s, t, labelled, alpha=0.0, temperature=T),
                          torch.nn.functional.cross_entropy(s, labelled))


def _trained_labels(monkeypatch) -> dict:
    """{"rows": the label of every row the DistillationTrainer is given}, filled when it is built."""
    from bertpress.finetune import distill

    seen: dict = {}
    real_init = distill.DistillationTrainer.__init__

    def spy(self, *args, **kwargs):
        seen["rows"] = [row["labels"] for row in kwargs["train_dataset"].rows]
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(distill.DistillationTrainer, "__init__", spy)
    return seen


def test_recover_trains_on_the_augmented_rows_with_soft_targets_only(monkeypatch):
    teacher, tok = tiny_bert(seed=1)
    student, _ = tiny_bert(intermediate_size=20, seed=3)
    texts, labels = tiny_sentences(24)
    train = TextDataset(texts=texts, labels=labels, label_names=["negative", "positive"], source="test")
    seen = _trained_labels(monkeypatch)
    recover(student, teacher, tok, train, RecoverConfig(epochs=1.0, max_steps=2, batch_size=8, augment=2, augment_prob=0.5),
            progress=False)
    info = student.recover_metrics["augmented"]
    assert info["copies"] == 2 and info["prob"] == 0.5 and info["rows"] > 0
    assert len(seen["rows"]) == 24 + info["rows"]
    assert seen["rows"][:24] == labels and set(seen["rows"][24:]) == {IGNORE_LABEL}
    assert info["rows"] + info["duplicates_dropped"] == 48


def test_compress_cli_records_the_augmentation(tmp_path, tiny_data):
    from tests.conftest import run_cli

    ckpt = save_tiny_checkpoint(tmp_path / "ckpt", num_hidden_layers=4)
    res = run_cli("compress", str(ckpt), "--out", str(tmp_path / "o"), "--prune-layers", "0.5",
                  "--importance", "magnitude", "--quantize", "none", "--calibration-data", str(tiny_data),
                  "--recover-epochs", "1", "--recover-max-steps", "2", "--recover-augment", "1",
                  "--recover-augment-prob", "0.6", "--no-progress")
    assert res.returncode == 0, res.stderr[-2000:]
    rec = json.loads((tmp_path / "o" / "bertpress.json").read_text())["details"]["recovery"]
    assert rec["augment"] == 1 and rec["augment_prob"] == 0.6
    assert rec["metrics"]["augmented"]["rows"] > 0 and rec["metrics"]["steps"] == 2


@pytest.mark.parametrize("flags, message", [
    (["--recover-augment", "-1"], "recover.augment=-1 "),
    (["--recover-augment-prob", "0"], "recover.augment_prob=0.0 "),
    (["--recover-augment-prob", "1.5"], "recover.augment_prob=1.5 "),
])
def test_bad_augmentation_values_are_refused_in_one_line(tmp_path, tiny_data, flags, message):
    from tests.conftest import run_cli

    ckpt = save_tiny_checkpoint(tmp_path / "ckpt")
    res = run_cli("compress", str(ckpt), "--out", str(tmp_path / "o"), "--prune-ffn", "0.5", "--importance",
                  "magnitude", "--calibration-data", str(tiny_data), "--recover-epochs", "1", *flags)
    assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "o").exists()


def test_finetune_with_a_teacher_trains_on_augmented_rows_too(tmp_path, tiny_data, monkeypatch):
    from bertpress.finetune import FinetuneConfig, finetune

    seen = _trained_labels(monkeypatch)
    student, teacher = save_tiny_checkpoint(tmp_path / "s"), save_tiny_checkpoint(tmp_path / "t", seed=5)
    cfg = FinetuneConfig(model=str(student), data=str(tiny_data), teacher=str(teacher), augment=1, augment_prob=1.0,
                         epochs=1.0, batch_size=32, max_length=32)
    art = finetune(None, cfg, tmp_path / "kd", progress=False)
    aug = art.manifest.details["distillation"]["augmented"]
    assert aug["copies"] == 1 and aug["prob"] == 1.0 and aug["rows"] == 96  # every tiny sentence has candidates
    assert seen["rows"].count(IGNORE_LABEL) == 96 and len(seen["rows"]) == 192
    assert art.manifest.recipe["_data"]["augment"] == 1  # the recipe reproduces it


def test_finetune_augment_without_a_teacher_is_refused_in_one_line(tmp_path, tiny_data):
    from tests.conftest import run_cli

    ckpt = save_tiny_checkpoint(tmp_path / "ckpt")
    res = run_cli("finetune", "--model", str(ckpt), "--data", str(tiny_data), "--out", str(tmp_path / "o"),
                  "--augment", "2")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert ("augment=2 needs a teacher: the rewritten rows have no labels and learn from the teacher's soft "
            "targets alone; add --teacher CHECKPOINT or drop --augment") in res.stderr
    assert not (tmp_path / "o").exists()


def test_augment_without_recovery_epochs_is_refused_in_one_line(tmp_path, tiny_data):
    from bertpress.compress.config import RecoverConfig
    from bertpress.errors import ConfigError
    from tests.conftest import run_cli

    with pytest.raises(ConfigError, match=r"^recover.augment=2 needs recovery to train on the copies: add "
                                          r"--recover-epochs E \(e.g. 1\) or drop --recover-augment$"):
        RecoverConfig(augment=2)
    ckpt = save_tiny_checkpoint(tmp_path / "ckpt")
    res = run_cli("compress", str(ckpt), "--out", str(tmp_path / "o"), "--prune-ffn", "0.5", "--importance",
                  "magnitude", "--recover-augment", "1")
    assert res.returncode == 2 and "recover.augment=1 needs recovery" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_bad_augmentation_arguments_are_refused_in_one_line():
    from bertpress.errors import ConfigError
    from bertpress.finetune import FinetuneConfig

    teacher, tok = tiny_bert(seed=1)
    texts, labels = tiny_sentences(8)
    data = TextDataset(texts=texts, labels=labels, label_names=["negative", "positive"], source="test")
    emb = teacher.get_input_embeddings().weight
    for kwargs, message in [({"copies": 0}, r"^augment: copies=0 must be an integer >= 1$"),
                            ({"copies": 1, "prob": 0.0}, r"^augment: prob=0.0 must be in \(0, 1\]$"),
                            ({"copies": 1, "k": 0}, r"^augment: k=0 must be an integer >= 1$")]:
        copies = kwargs.pop("copies")
        with pytest.raises(ConfigError, match=message):
            augment_for_distillation(data, tok, emb, copies, **kwargs)
    # recover takes a RecoverConfig: bad settings are refused when it is built, a config that
    # trains nothing by recover itself.
    with pytest.raises(ConfigError, match=r"^recover.augment=-1 is out of range; it must be in \[0, inf\)$"):
        RecoverConfig(epochs=1.0, augment=-1)
    with pytest.raises(ConfigError, match=r"^recover.augment_prob=1.5 is out of range; it must be in \(0.0, 1.0\]$"):
        RecoverConfig(epochs=1.0, augment=1, augment_prob=1.5)
    with pytest.raises(ConfigError, match=r"^recover: epochs=0.0 trains nothing"):
        recover(teacher, teacher, tok, data, RecoverConfig(), progress=False)
    with pytest.raises(ConfigError, match=r"augment_prob"):
        FinetuneConfig(teacher="t", augment=1, augment_prob=0.0)


def test_words_with_no_near_neighbour_are_refused_in_one_line():
    """Every token orthogonal to every other: single-token words exist, none has a neighbour."""
    _, tok = tiny_bert()
    texts, labels = tiny_sentences(8)
    data = TextDataset(texts=texts, labels=labels, label_names=["negative", "positive"], source="test")
    with pytest.raises(InputError, match=r"^augment: no word of the training text can be replaced \(none of its \d+ "
                                         r"single-token words has a neighbour with cosine >= 0.3\); drop --augment$"):
        augment_for_distillation(data, tok, torch.eye(len(tok)), 1, flag="--augment")
