"""Structured pruning of BERT attention heads and FFN channels with torch-pruning.

torch-pruning's dependency graph finds what shrinks together (query/key/value rows + the
attention output's columns for a head; intermediate rows + output columns for an FFN channel)
and its importance criteria score the channels (`GroupTaylorImportance` from a few labelled
batches, `GroupMagnitudeImportance` without data). We pick whole heads (summing channel scores
per head) and the same FFN width in every layer, rounded to `round_to`.

Unlike torch-pruning's HF BERT example, the result reloads: the pruned model's config gets
`pruned_heads` (original head indices per layer) and the new `intermediate_size`, which is
exactly what `from_pretrained` in transformers 4.x replays on a fresh model, so the checkpoint
stays a stock transformers checkpoint. transformers 5.x dropped `pruned_heads`; the manifest
records the per-layer head indices too and `rebuild_pruned` reshapes a fresh model from them.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable

import torch
from torch import nn

from bertpress.compress.config import Importance, PruneConfig
from bertpress.errors import InputError

SUPPORTED_MODEL_TYPES = ("bert",)


def check_prunable(model: nn.Module) -> None:
    mtype = getattr(model.config, "model_type", type(model).__name__)
    layers = getattr(getattr(getattr(model, "bert", None), "encoder", None), "layer", None)
    if mtype not in SUPPORTED_MODEL_TYPES or layers is None:
        raise InputError(f"cannot prune model type {mtype!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)} "
                         "(BertForSequenceClassification); use --quantize alone for other models")


def _layers(model: nn.Module):
    return model.bert.encoder.layer


def plan_shapes(model: nn.Module, cfg: PruneConfig) -> tuple[int, int, int]:
    """(heads removed per layer, heads kept, FFN width kept) for `cfg`, or InputError."""
    att = _layers(model)[0].attention.self
    n_heads = int(att.num_attention_heads)
    ffn = int(_layers(model)[0].intermediate.dense.out_features)
    drop = int(round(cfg.heads * n_heads))
    if drop >= n_heads:
        raise InputError(f"--prune-heads {cfg.heads} would remove all {n_heads} heads of each layer (zero left); "
                         f"use a ratio below {(n_heads - 0.5) / n_heads:.2f}")
    keep_ffn = ffn
    if cfg.ffn > 0:
        m = cfg.round_to
        keep_ffn = max(m, int(round(ffn * (1.0 - cfg.ffn) / m)) * m)
        if keep_ffn >= ffn:  # rounding ate the pruning: keep the largest multiple below ffn if any
            if ffn <= m:
                raise InputError(f"--prune-ffn {cfg.ffn}: the FFN width {ffn} is not above --round-to {m}, "
                                 "so nothing would be pruned; lower --round-to")
            keep_ffn = (ffn - 1) // m * m
    return drop, n_heads - drop, keep_ffn


def _example_inputs(tokenizer, max_length: int) -> dict[str, torch.Tensor]:
    enc = tokenizer(["a b", "c d e"], return_tensors="pt", padding="max_length", truncation=True,
                    max_length=min(16, max_length))
    return dict(enc)


def _accumulate_gradients(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> int:
    """Sum dL/dw over labelled batches (model in eval mode: no dropout noise in the scores)."""
    model.zero_grad(set_to_none=True)
    n = 0
    with torch.enable_grad():
        for batch in batches:
            out = model(**batch)
            out.loss.backward()
            n += 1
    return n


def prune_model(
    model: nn.Module,
    tokenizer,
    cfg: PruneConfig,
    batches: Iterable[dict[str, torch.Tensor]] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """A pruned copy of `model` (the caller's model is untouched) and the facts to record."""
    import torch_pruning as tp

    check_prunable(model)
    drop_heads, keep_heads, keep_ffn = plan_shapes(model, cfg)
    model = copy.deepcopy(model).eval()
    for p in model.parameters():
        p.requires_grad_(True)
    layers = _layers(model)
    before = {"heads": int(layers[0].attention.self.num_attention_heads),
              "ffn": int(layers[0].intermediate.dense.out_features),
              "params": sum(p.numel() for p in model.parameters())}
    n_batches = 0
    if cfg.importance is Importance.TAYLOR:
        if batches is None:
            raise InputError("Taylor importance needs labelled calibration batches; pass --calibration-data "
                             "SPEC or --importance magnitude")
        n_batches = _accumulate_gradients(model, batches)
        if n_batches == 0:
            raise InputError("the calibration data gave no batches; give a non-empty --calibration-data")
        scorer = tp.importance.GroupTaylorImportance()
    else:
        scorer = tp.importance.GroupMagnitudeImportance(p=2)

    dg = tp.DependencyGraph().build_dependency(model, example_inputs=_example_inputs(tokenizer, cfg.max_length))
    plan = []  # (layer index, head channels to prune, heads pruned, ffn channels to prune)
    for i, layer in enumerate(layers):
        att = layer.attention.self
        head_size = int(att.attention_head_size)
        head_idxs: list[int] = []
        heads: list[int] = []
        if drop_heads:
            group = dg.get_pruning_group(att.query, tp.prune_linear_out_channels,
                                         idxs=list(range(att.query.out_features)))
            score = scorer(group).view(int(att.num_attention_heads), head_size).sum(dim=1)
            heads = sorted(int(h) for h in torch.argsort(score)[:drop_heads])
            head_idxs = [h * head_size + j for h in heads for j in range(head_size)]
        ffn_idxs: list[int] = []
        width = int(layer.intermediate.dense.out_features)
        if keep_ffn < width:
            group = dg.get_pruning_group(layer.intermediate.dense, tp.prune_linear_out_channels,
                                         idxs=list(range(width)))
            score = scorer(group)
            ffn_idxs = sorted(int(c) for c in torch.argsort(score)[: width - keep_ffn])
        plan.append((i, head_idxs, heads, ffn_idxs))

    pruned_heads: dict[int, list[int]] = {}
    for i, head_idxs, heads, ffn_idxs in plan:
        layer = layers[i]
        if head_idxs:
            dg.get_pruning_group(layer.attention.self.query, tp.prune_linear_out_channels, idxs=head_idxs).prune()
            att = layer.attention.self
            att.num_attention_heads = keep_heads
            att.all_head_size = keep_heads * att.attention_head_size
            layer.attention.pruned_heads = set(heads)
            pruned_heads[i] = heads
        if ffn_idxs:
            dg.get_pruning_group(layer.intermediate.dense, tp.prune_linear_out_channels, idxs=ffn_idxs).prune()

    model.zero_grad(set_to_none=True)
    for p in model.parameters():
        p.requires_grad_(False)
    # What from_pretrained replays on a fresh model (transformers 4.x), so the checkpoint reloads.
    model.config.pruned_heads = {i: h for i, h in pruned_heads.items()}
    model.config.intermediate_size = keep_ffn
    _check_shapes(model, keep_heads, keep_ffn)
    facts = {
        "heads_ratio": cfg.heads,
        "ffn_ratio": cfg.ffn,
        "importance": cfg.importance.value,
        "calibration_batches": n_batches,
        "round_to": cfg.round_to,
        "original": before,
        "heads_per_layer": [int(l.attention.self.num_attention_heads) for l in layers],
        "head_size": int(layers[0].attention.self.attention_head_size),
        "pruned_heads": {str(i): h for i, h in pruned_heads.items()},
        "ffn_per_layer": [int(l.intermediate.dense.out_features) for l in layers],
        "params": sum(p.numel() for p in model.parameters()),
    }
    return model.eval(), facts


def _check_shapes(model: nn.Module, heads: int, ffn: int) -> None:
    """Fail loudly if torch-pruning and our bookkeeping disagree (a broken model must not be saved)."""
    for i, layer in enumerate(_layers(model)):
        att = layer.attention.self
        want = heads * att.attention_head_size
        got = (att.query.out_features, att.key.out_features, att.value.out_features,
               layer.attention.output.dense.in_features)
        if any(g != want for g in got) or layer.intermediate.dense.out_features != ffn \
                or layer.output.dense.in_features != ffn:
            raise RuntimeError(f"layer {i}: pruned shapes {got} / FFN {layer.intermediate.dense.out_features} "
                               f"do not match the plan ({want}, {ffn}); this is a bug in compress/prune.py")


def manual_prune_heads(model: nn.Module, pruned_heads: dict[Any, list[int]]) -> None:
    """Shrink a fresh model's attention to match recorded pruned heads, without HF's prune_heads.

    The fallback for transformers versions without `config.pruned_heads` (5.x): the same rows of
    query/key/value and columns of the attention output as `BertAttention.prune_heads` removes.
    """
    for key, heads in pruned_heads.items():
        heads = sorted(int(h) for h in heads)
        if not heads:
            continue
        layer = _layers(model)[int(key)]
        att = layer.attention.self
        size = int(att.attention_head_size)
        keep = [h for h in range(int(att.num_attention_heads)) if h not in set(heads)]
        idx = torch.tensor([h * size + j for h in keep for j in range(size)], dtype=torch.long)

        def shrink(lin: nn.Linear, dim: int) -> nn.Linear:
            w = lin.weight.detach().index_select(dim, idx).clone()
            b = lin.bias.detach().clone() if lin.bias is not None else None
            if dim == 0 and b is not None:
                b = b.index_select(0, idx).clone()
            new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
            new.weight.data.copy_(w)
            if b is not None:
                new.bias.data.copy_(b)
            return new

        att.query, att.key, att.value = shrink(att.query, 0), shrink(att.key, 0), shrink(att.value, 0)
        layer.attention.output.dense = shrink(layer.attention.output.dense, 1)
        att.num_attention_heads = len(keep)
        att.all_head_size = len(keep) * size
        layer.attention.pruned_heads = set(heads)
