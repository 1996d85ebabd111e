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
    # The inputs the exported model takes, in order: what the family's Hugging Face tokenizer
    # returns and the model uses (`input_names(config)` may drop one the config switches off).
    inputs: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")
    ort_model_type = "bert"  # onnxruntime.transformers.optimizer model_type
    # Whether ONNX Runtime's optimizer fuses this family's attention into its contrib Attention op;
    # where it cannot, `attention_unfused` says why (manifest `attention_fused: false` + reason).
    attention_fuses = True
    attention_unfused: str = ""
    # Module-name prefixes kept fp32 by int8 scope "encoder" (the small pooler and classifier).
    head_prefixes: tuple[str, ...] = ("bert.pooler", "classifier")
    head_node_markers: tuple[str, ...] = ("pooler", "classifier")  # ONNX node names of the head
    layer_marker = ".layer."  # a module-name piece only encoder-layer modules have
    prunable = True
    prune_refusal = ""  # why not, when prunable is False
    ffn_config_key = "intermediate_size"  # the config field holding the FFN width
    layers_config_key = "num_hidden_layers"  # the config field holding the encoder depth
    layer_drop_refusal = ""  # why whole encoder layers cannot be removed ("" when they can)
    heads_attr, head_size_attr, all_head_attr = "num_attention_heads", "attention_head_size", "all_head_size"
    config_minimums: dict[str, int] = {}  # overrides of bertpress.models' sanity minimums
    positions_after_padding = False  # RoBERTa / XLM-R / MPNet (see offset)

    # ---- inputs and lengths ----------------------------------------------------------------
    def input_names(self, config) -> tuple[str, ...]:
        return self.inputs

    def max_positions(self, config) -> int | None:
        """The longest sequence the position embeddings allow (None if the config has no limit)."""
        limit = _cfg_get(config, "max_position_embeddings")
        if not isinstance(limit, int) or isinstance(limit, bool):
            return None
        return limit - self.offset(config)

    def offset(self, config) -> int:
        """Position ids the embeddings reserve: RoBERTa-style models (positions_after_padding)
        number positions from padding_idx + 1, so padding_idx + 1 rows are never used for tokens."""
        if not self.positions_after_padding:
            return 0
        pad = _cfg_get(config, "pad_token_id", 1)
        return int(pad) + 1 if isinstance(pad, int) and not isinstance(pad, bool) else 2

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
        return int(getattr(self.attention(layer), self.heads_attr))

    def head_size(self, layer) -> int:
        return int(getattr(self.attention(layer), self.head_size_attr))

    def qkv(self, layer) -> tuple[Any, Any, Any]:
        att = self.attention(layer)
        return att.query, att.key, att.value

    def is_encoder_linear(self, name: str) -> bool:
        """Whether a Linear's module name belongs to the encoder layers (scope "encoder")."""
        return not any(name == p or name.startswith(p + ".") for p in self.head_prefixes) and \
            self.layer_marker in f".{name}."

    # ---- shapes and pruning ---------------------------------------------------------------
    def shapes(self, model) -> list[dict[str, int]]:
        """Heads, head size and FFN width per encoder layer, read from the modules."""
        return [{"heads": self.num_heads(layer), "head_size": self.head_size(layer),
                 "ffn": int(self.ffn_in(layer).out_features)} for layer in self.layers(model)]

    def set_heads(self, layer, kept: int, pruned: Sequence[int]) -> None:
        """Record a new head count on a layer whose q/k/v were shrunk (torch-pruning does not)."""
        att = self.attention(layer)
        setattr(att, self.heads_attr, kept)
        if self.all_head_attr:
            setattr(att, self.all_head_attr, kept * self.head_size(layer))
        if hasattr(layer.attention, "pruned_heads"):
            layer.attention.pruned_heads = set(int(h) for h in pruned)

    def head_pruning_refusal(self, config) -> str:
        """Why this model's heads cannot be pruned ("" when they can)."""
        return ""

    def set_ffn(self, config, width: int) -> None:
        """Record a uniform pruned FFN width in the config (so a fresh model has that shape)."""
        setattr(config, self.ffn_config_key, int(width))

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
            self.set_qkv(layer, *(shrink(m, 0, idx) for m in self.qkv(layer)))
            self.set_attention_output(layer, shrink(self.attention_output(layer), 1, idx))
            self.set_heads(layer, len(keep), heads)

    def layer_list(self, model) -> tuple[Any, str]:
        """(module, attribute) holding the encoder layers' nn.ModuleList (what layer dropping replaces)."""
        return self.encoder(model).encoder, "layer"

    def keep_layers(self, model, keep: Sequence[int]) -> None:
        """Keep only the encoder layers at `keep` (original indices, ascending) and record the new
        depth in the config: the saved checkpoint numbers them 0..k-1, so a fresh model built from
        config.json has their shapes and plain from_pretrained reloads it."""
        from torch import nn

        if self.layer_drop_refusal:
            raise InputError(f"cannot remove layers of model type {self.model_type!r}: {self.layer_drop_refusal}")
        owner, attr = self.layer_list(model)
        old = getattr(owner, attr)
        kept = nn.ModuleList([old[int(i)] for i in keep])
        for new_idx, layer in enumerate(kept):  # decoder-cache bookkeeping some layers carry
            for m in layer.modules():
                if isinstance(getattr(m, "layer_idx", None), int):
                    m.layer_idx = new_idx
        setattr(owner, attr, kept)
        setattr(model.config, self.layers_config_key, len(kept))

    def set_qkv(self, layer, q, k, v) -> None:
        att = self.attention(layer)
        att.query, att.key, att.value = q, k, v

    def set_attention_output(self, layer, lin) -> None:
        layer.attention.output.dense = lin

    # ---- runtimes ---------------------------------------------------------------------------
    def ort_fusion_options(self):
        from onnxruntime.transformers.fusion_options import FusionOptions

        return FusionOptions(self.ort_model_type)


FAMILIES.register("bert")(Family())


def _cfg_get(config, key, default=None):
    """A config value from a PretrainedConfig (attribute_map aware) or a config.json dict."""
    if isinstance(config, dict):
        return config.get(key, default)
    return getattr(config, key, default)


class DistilBert(Family):
    """DistilBertForSequenceClassification: no token types, q_lin/k_lin/v_lin/out_lin, FFN lin1/lin2
    (config `hidden_dim`), head pre_classifier + classifier. ORT's BERT fusions match its graph."""

    model_type = base = "distilbert"
    inputs = ("input_ids", "attention_mask")
    head_prefixes = ("pre_classifier", "classifier")
    head_node_markers = ("pre_classifier", "classifier")
    ffn_config_key = "hidden_dim"
    layers_config_key = "n_layers"
    heads_attr, all_head_attr = "n_heads", ""

    def layers(self, model):
        return self.encoder(model).transformer.layer

    def layer_list(self, model):
        return self.encoder(model).transformer, "layer"

    def attention(self, layer):
        return layer.attention

    def attention_output(self, layer):
        return layer.attention.out_lin

    def ffn_in(self, layer):
        return layer.ffn.lin1

    def ffn_out(self, layer):
        return layer.ffn.lin2

    def qkv(self, layer):
        att = layer.attention
        return att.q_lin, att.k_lin, att.v_lin

    def set_qkv(self, layer, q, k, v) -> None:
        layer.attention.q_lin, layer.attention.k_lin, layer.attention.v_lin = q, k, v

    def set_attention_output(self, layer, lin) -> None:
        layer.attention.out_lin = lin


class Roberta(Family):
    """RobertaForSequenceClassification: BERT's encoder, no pooler, classifier.dense/out_proj; the
    tokenizer returns no token_type_ids (the embedding exists with one type, never fed); positions
    start after padding_idx, so max_position_embeddings - (pad_token_id + 1) tokens fit."""

    model_type = base = "roberta"
    inputs = ("input_ids", "attention_mask")
    positions_after_padding = True
    head_prefixes = ("classifier",)
    head_node_markers = ("classifier",)


class XLMRoberta(Roberta):
    """XLMRobertaForSequenceClassification: RoBERTa's layout under the attribute `roberta`."""

    model_type, base = "xlm-roberta", "roberta"


class Electra(Family):
    """ElectraForSequenceClassification: BERT's encoder (+ embeddings_project when the embedding
    size differs), token types as BERT, head classifier.dense/out_proj (no pooler)."""

    model_type = base = "electra"
    head_prefixes = ("classifier",)
    head_node_markers = ("classifier",)


class DebertaV2(Family):
    """DebertaV2ForSequenceClassification (DeBERTa-v2 and -v3): query_proj/key_proj/value_proj,
    BERT's FFN, ContextPooler + classifier. token_type_ids only when type_vocab_size > 0 (v3: 0).
    Its disentangled relative-position attention has no ONNX Runtime fusion: the graph is exported
    and quantized unfused. Heads prune only with share_att_key (v3): without it pos_key_proj /
    pos_query_proj would have to shrink with q/k, which torch-pruning's graph does not tie."""

    model_type, base = "deberta-v2", "deberta"
    attention_fuses = False
    attention_unfused = ("DeBERTa's disentangled (relative-position) attention matches none of ONNX Runtime's "
                         "attention fusion patterns; LayerNorm and Gelu fuse, attention runs as separate ops")
    head_prefixes = ("pooler", "classifier")
    config_minimums = {"type_vocab_size": 0}  # DeBERTa-v3 has no token types

    def input_names(self, config) -> tuple[str, ...]:
        types = _cfg_get(config, "type_vocab_size", 0)
        return self.inputs if isinstance(types, int) and types > 0 else ("input_ids", "attention_mask")

    def qkv(self, layer):
        att = layer.attention.self
        return att.query_proj, att.key_proj, att.value_proj

    def set_qkv(self, layer, q, k, v) -> None:
        att = layer.attention.self
        att.query_proj, att.key_proj, att.value_proj = q, k, v

    def head_pruning_refusal(self, config) -> str:
        if _cfg_get(config, "relative_attention", False) and not _cfg_get(config, "share_att_key", False):
            return ("this DeBERTa-v2 has separate relative-position projections (share_att_key false), which "
                    "would have to shrink with the heads; prune the FFN only (--prune-heads 0)")
        return ""


class ModernBert(Family):
    """ModernBertForSequenceClassification: fused Wqkv, gated (GLU) FFN Wi -> Wo, rotary positions,
    alternating local/global attention, head `head` + classifier; no token types. Not pruned
    (fused q/k/v and the GLU halves would need a hand-written reshape torch-pruning cannot check),
    and ONNX Runtime's BERT attention fusion does not match its rotary attention."""

    model_type, base = "modernbert", "model"
    inputs = ("input_ids", "attention_mask")
    attention_fuses = False
    attention_unfused = ("ModernBERT's rotary-embedding attention (fused Wqkv, local/global windows) matches none of "
                         "ONNX Runtime's BERT attention fusion patterns; LayerNorm and Gelu fuse where they can")
    head_prefixes = ("head", "classifier")
    head_node_markers = ("/head/", "classifier")
    layer_marker = ".layers."
    prunable = False
    prune_refusal = ("ModernBERT fuses q/k/v into one Wqkv and gates its FFN (GLU Wi), which bertpress does not "
                     "prune")
    heads_attr, head_size_attr, all_head_attr = "", "head_dim", ""

    def layers(self, model):
        return model.model.layers

    def attention(self, layer):
        return layer.attn

    def attention_output(self, layer):
        return layer.attn.Wo

    def ffn_in(self, layer):
        return layer.mlp.Wi

    def ffn_out(self, layer):
        return layer.mlp.Wo

    def num_heads(self, layer) -> int:
        return int(layer.attn.Wqkv.out_features) // (3 * self.head_size(layer))

    def qkv(self, layer):
        return (layer.attn.Wqkv,)

    def shapes(self, model):
        return [{"heads": self.num_heads(layer), "head_size": self.head_size(layer),
                 "ffn": int(self.ffn_out(layer).in_features)} for layer in self.layers(model)]


class Albert(Family):
    """AlbertForSequenceClassification: one set of layer weights shared by every layer
    (albert_layer_groups[g].albert_layers[i]; `layers` lists the distinct modules, so pruning one
    prunes every layer that shares it), attention query/key/value/dense, FFN ffn/ffn_output,
    embedding projection, pooler + classifier. Inputs as ALBERT's tokenizer returns them (no token
    types)."""

    model_type = base = "albert"
    inputs = ("input_ids", "attention_mask")
    attention_fuses = False
    attention_unfused = ("ALBERT runs one shared layer's weights in every layer; ONNX Runtime's attention fusion "
                         "does not fuse every use of them (1 of 2 layers in the tiny test model, 11 of 12 at "
                         "albert-base size), so attention is recorded as not fully fused")
    head_prefixes = ("albert.pooler", "classifier")
    layer_marker = ".albert_layers."
    layer_drop_refusal = ("every ALBERT layer runs the same shared weights, so removing layers frees no weights; "
                          "prune heads/FFN (--prune-heads, --prune-ffn) or quantize instead")

    def layers(self, model):
        return [layer for group in self.encoder(model).encoder.albert_layer_groups for layer in group.albert_layers]

    def attention(self, layer):
        return layer.attention

    def attention_output(self, layer):
        return layer.attention.dense

    def ffn_in(self, layer):
        return layer.ffn

    def ffn_out(self, layer):
        return layer.ffn_output

    def set_attention_output(self, layer, lin) -> None:
        layer.attention.dense = lin


class MPNet(Family):
    """MPNetForSequenceClassification: attention.attn.q/k/v/o with a relative position bias,
    BERT's FFN, RoBERTa-style positions (after padding_idx), head classifier.dense/out_proj; no
    token types (MPNet's tokenizer returns none)."""

    model_type = base = "mpnet"
    inputs = ("input_ids", "attention_mask")
    positions_after_padding = True
    attention_fuses = False
    attention_unfused = ("MPNet adds a relative-position bias to the attention scores, which ONNX Runtime's BERT "
                         "attention fusion patterns do not match; LayerNorm and Gelu fuse, attention runs as separate ops")
    head_prefixes = ("classifier",)
    head_node_markers = ("classifier",)

    def attention(self, layer):
        return layer.attention.attn

    def attention_output(self, layer):
        return layer.attention.attn.o

    def qkv(self, layer):
        att = layer.attention.attn
        return att.q, att.k, att.v

    def set_qkv(self, layer, q, k, v) -> None:
        att = layer.attention.attn
        att.q, att.k, att.v = q, k, v

    def set_attention_output(self, layer, lin) -> None:
        layer.attention.attn.o = lin

    def head_pruning_refusal(self, config) -> str:
        return ("MPNet adds one relative-position bias, computed once per head, to every layer's attention, so its "
                "heads cannot be removed per layer; prune the FFN only (--prune-heads 0)")


FAMILIES.register("distilbert")(DistilBert())
FAMILIES.register("roberta")(Roberta())
FAMILIES.register("xlm-roberta")(XLMRoberta())
FAMILIES.register("electra")(Electra())
FAMILIES.register("deberta-v2")(DebertaV2())
FAMILIES.register("modernbert")(ModernBert())
FAMILIES.register("albert")(Albert())
FAMILIES.register("mpnet")(MPNet())


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


def input_names(model_or_config) -> tuple[str, ...]:
    """The inputs a model of a supported family takes, in the exported models' order."""
    config = getattr(model_or_config, "config", model_or_config)
    return adapter_for(config).input_names(config)


def max_positions(config) -> int | None:
    """The longest sequence a model (config object or config.json dict) accepts; for a family we do
    not know, max_position_embeddings as it is."""
    mtype = _cfg_get(config, "model_type")
    if mtype in FAMILIES:
        return FAMILIES.get(mtype).max_positions(config)
    limit = _cfg_get(config, "max_position_embeddings")
    return limit if isinstance(limit, int) and not isinstance(limit, bool) else None
