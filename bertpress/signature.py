"""The exported models' interface: three int64 inputs (batch, sequence) and `logits`.

Every exported file — ONNX, TorchScript, and the Optimum/`predict.py` consumers — uses these
names, so a bundle can be fed by any tokenizer that produces them.
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


def encode(tokenizer, texts: Sequence[str], max_length: int, pad_to_max: bool = False) -> dict[str, np.ndarray]:
    enc = tokenizer(list(texts), padding="max_length" if pad_to_max else True, truncation=True,
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
