"""The exported models' interface: int64 inputs (batch, sequence) and `logits`.

The inputs are the model family's (`input_names(model)`, decided by its `bertpress.arch`
adapter): BERT and ELECTRA take `input_ids, attention_mask, token_type_ids`; DistilBERT,
RoBERTa, XLM-R, ModernBERT and DeBERTa-v3 (type_vocab_size 0) take no `token_type_ids`. Every
exported file — ONNX, TorchScript, OpenVINO, and the Optimum/`predict.py` consumers — uses those
names, so a bundle can be fed by the family's own tokenizer. Feeds built here (`synthetic_batch`,
`encode`) carry all three; each runner passes the ones its model takes.

`tokenize` is the one place texts become token ids: an example is a text, or a (text,
text_pair) tuple for sentence-pair models (`TextDataset.examples`), which the tokenizer encodes
as the family's pair template (BERT: `[CLS] a [SEP] b [SEP]` with token_type_ids 0 then 1;
RoBERTa: `<s> a </s></s> b </s>`, no token types), truncating the longer text first.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from bertpress.arch import input_names as family_inputs

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")  # every input any family takes
TRAFFIC_BATCH_SIZE = 32  # real traffic's default batch: bench's traffic_batch_size, the search's traffic objective
OUTPUT_NAMES = ("logits",)
# Rows per call wherever bertpress scores labelled data (the search, compress's checks, export's
# gate): one size for all, because dynamic int8 takes its activation ranges per batch, so the same
# rows in other batches give other logits, and a search's score must be what export then measures.
EVAL_BATCH = 32


def input_names(model_or_config) -> tuple[str, ...]:
    """The inputs this model's exported files take, in order (its family adapter decides)."""
    return family_inputs(model_or_config)


def logits_module(model):
    """Wrap an HF classifier so that it takes its inputs as positional tensors, named as in
    `input_names(model)`, and returns only the logits (tracing and the ONNX exporter need a
    tensor output, not a ModelOutput; a traced TorchScript file keeps the argument names)."""
    import torch

    names = input_names(model)

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids, return_dict=False)[0]

    class LogitsOnlyNoTypes(LogitsOnly):
        def forward(self, input_ids, attention_mask):  # type: ignore[override]
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)[0]

    if tuple(names) == INPUT_NAMES:
        return LogitsOnly(model).eval()
    if tuple(names) == INPUT_NAMES[:2]:
        return LogitsOnlyNoTypes(model).eval()
    raise ValueError(f"no positional wrapper for inputs {names}")  # pragma: no cover - adapters use one of the two


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


def traffic_batches(tokenizer, examples: Sequence[Any], max_length: int | None,
                    batch_size: int) -> tuple[list[int], list[np.ndarray], list[list]]:
    """Real traffic as a serving batcher forms it: every example's token length (truncated at
    max_length), the examples' indices sorted by that length (stable) and cut into batches of
    `batch_size`, so that dynamic padding pads each batch to nearly its own length, and those
    batches' examples (texts or (text, text_pair) pairs). The one definition of the scenario for
    bench's real traffic and compress's `--search-objective traffic`."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1")
    lengths = [len(ids) for ids in tokenize(tokenizer, examples, truncation=True, max_length=max_length)["input_ids"]]
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return lengths, batches, [[examples[j] for j in b] for b in batches]


def script_input_names(module) -> tuple[str, ...]:
    """The input names of a traced TorchScript module (its forward's arguments, as traced)."""
    import re

    args = [a.name for a in module.forward.schema.arguments][1:]  # drop self
    return tuple(re.sub(r"\.\d+$", "", a) for a in args)


def torch_runner(model):
    """A numpy-in, numpy-out callable over a torch classifier or a traced TorchScript module,
    fed the inputs that model takes."""
    import torch

    if isinstance(model, torch.jit.ScriptModule):
        module, names = model, script_input_names(model)
    else:
        module, names = logits_module(model), input_names(model)

    def run(feed: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            out = module(*(torch.from_numpy(feed[n]) for n in names))
        return out.detach().float().numpy()

    return run
