"""The model-family seam: where a family keeps its layers, attention, FFN, embeddings and head,
which inputs it takes, how a pruned model is reshaped and recorded so that it reloads, and
which ONNX Runtime optimizer model type applies.

Every stage asks `adapter_for(model)` instead of reaching into `model.bert.encoder.layer`;
adding a family is one `Family` subclass registered in `FAMILIES` plus its tests.
"""

from __future__ import annotations

from typing import Any, Sequence

from bertpress.errors import InputError
from bertpress.registry import Registry

FAMILIES: Registry = Registry("model family")


class Family:
    """The BERT layout (BertForSequenceClassification); other families override what differs."""

    model_type = "bert"
    base = "bert"  # the encoder's attribute on the *ForSequenceClassification model
    inputs: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")
    ort_model_type = "bert"  # onnxruntime.transformers.optimizer model_type
    # Module-name prefixes kept fp32 by int8 scope "encoder" (the small pooler and classifier).
    head_prefixes: tuple[str, ...] = ("bert.pooler", "classifier")
    head_node_markers: tuple[str, ...] = ("pooler", "classifier")  # ONNX node names of the head
    prunable = True

    # ---- where things are ---------------------------------------------------------------
    def encoder(self, model) -> Any:
        return getattr(model, self.base)

    def layers(self, model) -> Sequence[Any]:
        return self.encoder(model).encoder.layer

    def attention(self, layer) -> Any:
        """The module holding query/key/value and the head count."""
        return layer.attention.self

    def attention_output(self, layer):
        return layer.attention.output.dense

    def ffn_in(self, layer):
        return layer.intermediate.dense

    def ffn_out(self, layer):
        return layer.output.dense

    def num_heads(self, layer) -> int:
        return int(self.attention(layer).num_attention_heads)

    def head_size(self, layer) -> int:
        return int(self.attention(layer).attention_head_size)

    def qkv(self, layer) -> tuple[Any, Any, Any]:
        att = self.attention(layer)
        return att.query, att.key, att.value

    def is_encoder_linear(self, name: str) -> bool:
        """Whether a Linear's module name belongs to the encoder layers (scope "encoder")."""
        return not any(name == p or name.startswith(p + ".") for p in self.head_prefixes) and \
            ".layer." in f".{name}."

    # ---- shapes and pruning ---------------------------------------------------------------
    def shapes(self, model) -> list[dict[str, int]]:
        """Heads, head size and FFN width per encoder layer, read from the modules."""
        return [{"heads": self.num_heads(layer), "head_size": self.head_size(layer),
                 "ffn": int(self.ffn_in(layer).out_features)} for layer in self.layers(model)]

    def set_heads(self, layer, kept: int, pruned: Sequence[int]) -> None:
        """Record a new head count on a layer whose q/k/v were shrunk (torch-pruning does not)."""
        att = self.attention(layer)
        att.num_attention_heads = kept
        att.all_head_size = kept * int(att.attention_head_size)
        layer.attention.pruned_heads = set(int(h) for h in pruned)

    def apply_pruning(self, model, pruned_heads: dict[Any, Sequence[int]], ffn_per_layer: Sequence[int] | None) -> None:
        """Shrink a freshly built model (config shapes) to a recorded pruning, without
        transformers' prune_heads (gone in 5.x): the same rows of q/k/v and columns of the
        attention output that head pruning removes; FFN width comes from config.intermediate_size."""
        import torch
        from torch import nn

        def shrink(lin: nn.Linear, dim: int, idx) -> nn.Linear:
            w = lin.weight.detach().index_select(dim, idx).clone()
            b = lin.bias.detach().clone() if lin.bias is not None else None
            if dim == 0 and b is not None:
                b = b.index_select(0, idx).clone()
            new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
            new.weight.data.copy_(w)
            if b is not None:
                new.bias.data.copy_(b)
            return new

        layers = self.layers(model)
        for key, heads in (pruned_heads or {}).items():
            heads = sorted(int(h) for h in heads)
            if not heads:
                continue
            layer = layers[int(key)]
            att = self.attention(layer)
            size = self.head_size(layer)
            keep = [h for h in range(self.num_heads(layer)) if h not in set(heads)]
            idx = torch.tensor([h * size + j for h in keep for j in range(size)], dtype=torch.long)
            att.query, att.key, att.value = (shrink(m, 0, idx) for m in (att.query, att.key, att.value))
            layer.attention.output.dense = shrink(layer.attention.output.dense, 1, idx)
            self.set_heads(layer, len(keep), heads)

    # ---- runtimes ---------------------------------------------------------------------------
    def ort_fusion_options(self):
        from onnxruntime.transformers.fusion_options import FusionOptions

        return FusionOptions(self.ort_model_type)


FAMILIES.register("bert")(Family())


def model_type_of(model_or_config) -> str:
    config = getattr(model_or_config, "config", model_or_config)
    return str(getattr(config, "model_type", type(model_or_config).__name__))


def adapter_for(model_or_config, *, action: str = "handle") -> Family:
    """The family adapter of a model (or its config); a one-line InputError for others."""
    mtype = model_type_of(model_or_config)
    if mtype not in FAMILIES:
        raise InputError(f"bertpress cannot {action} model type {mtype!r}; supported: {', '.join(FAMILIES)}")
    return FAMILIES.get(mtype)


def supported_model_types() -> tuple[str, ...]:
    return FAMILIES.names()
