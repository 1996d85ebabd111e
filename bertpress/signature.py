"""The exported models' interface: three int64 inputs (batch, sequence) and `logits`.

Every exported file — ONNX, TorchScript, and the Optimum/`predict.py` consumers — uses these
names, so a bundle can be fed by any tokenizer that produces them.

`tokenize` is the one place texts become token ids: an example is a text, or a (text,
text_pair) tuple for sentence-pair models (`TextDataset.examples`), which the tokenizer encodes
as `[CLS] a [SEP] b [SEP]` with token_type_ids 0 then 1, truncating the longer text first.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAMES = ("logits",)


def logits_module(model):
    """Wrap an HF classifier so that it takes positional tensors and returns only the logits
    (tracing and the ONNX exporter need a tensor output, not a ModelOutput)."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids, return_dict=False)[0]

    return LogitsOnly(model).eval()


def synthetic_batch(vocab_size: int, special: dict[str, int], batch: int, seq: int,
                    rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random token ids framed by [CLS]/[SEP]; rows after the first are right-padded to a random
    length, so the attention mask is exercised (an all-ones mask hides mask bugs in traces)."""
    low = max(special.values()) + 1 if special else 0
    low = min(low, vocab_size - 1)
    ids = rng.integers(low, vocab_size, size=(batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    types = np.zeros((batch, seq), dtype=np.int64)
    for row in range(batch):
        length = seq if row == 0 else int(rng.integers(max(2, seq // 2), seq + 1))
        ids[row, 0] = special.get("cls", ids[row, 0])
        ids[row, length - 1] = special.get("sep", ids[row, length - 1])
        ids[row, length:] = special.get("pad", 0)
        mask[row, length:] = 0
        types[row, length // 2:length] = 1 if row % 2 else 0  # a second segment in odd rows
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def special_ids(tokenizer) -> dict[str, int]:
    out = {}
    for key, attr in (("cls", "cls_token_id"), ("sep", "sep_token_id"), ("pad", "pad_token_id")):
        v = getattr(tokenizer, attr, None)
        if v is not None:
            out[key] = int(v)
    return out


def split_examples(examples: Sequence[Any]) -> tuple[list[str], list[str] | None]:
    """(first texts, second texts or None): a batch is all single texts or all pairs."""
    items = list(examples)
    is_pair = [isinstance(x, (tuple, list)) for x in items]
    if not any(is_pair):
        return items, None
    if not all(is_pair) or any(len(x) != 2 for x in items):
        raise ValueError("a batch mixes single texts and text pairs (or a pair is not two texts); "
                         "give all texts or all (text, text_pair) pairs")
    return [x[0] for x in items], [x[1] for x in items]


def tokenize(tokenizer, examples: Sequence[Any], **kwargs):
    """The tokenizer's encoding of texts or (text, text_pair) pairs (kwargs go to the tokenizer)."""
    first, second = split_examples(examples)
    if second is None:
        return tokenizer(first, **kwargs)
    return tokenizer(first, second, **kwargs)


def encode(tokenizer, texts: Sequence[Any], max_length: int | None, pad_to_max: bool = False) -> dict[str, np.ndarray]:
    """int64 numpy inputs for texts or (text, text_pair) pairs, padded (to the longest, or to max_length)."""
    enc = tokenize(tokenizer, texts, padding="max_length" if pad_to_max else True, truncation=True,
                   max_length=max_length, return_tensors="np")
    out: dict[str, Any] = {}
    for name in INPUT_NAMES:
        if name in enc:
            out[name] = np.asarray(enc[name], dtype=np.int64)
        else:
            out[name] = np.zeros_like(np.asarray(enc["input_ids"], dtype=np.int64))
    return out


def torch_runner(model):
    """A numpy-in, numpy-out callable over a torch module taking the three inputs."""
    import torch

    module = logits_module(model) if not isinstance(model, torch.jit.ScriptModule) else model

    def run(feed: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            out = module(*(torch.from_numpy(feed[n]) for n in INPUT_NAMES))
        return out.detach().float().numpy()

    return run
