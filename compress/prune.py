"""Structured pruning of BERT-family attention heads and FFN channels with torch-pruning.

torch-pruning's dependency graph finds what shrinks together (query/key/value rows + the
attention output's columns for a head; intermediate rows + output columns for an FFN channel)
and its importance criteria score the channels (`GroupTaylorImportance` from a few labelled
batches, `GroupMagnitudeImportance` without data). We pick whole heads (summing channel scores
per head) and the same FFN width in every layer, rounded to `round_to`.

Unlike torch-pruning's HF BERT example, the result reloads: the new `intermediate_size` goes into
the config (an FFN-only pruned checkpoint loads with plain `from_pretrained`), and the removed
heads are recorded per layer in the manifest, from which `bertpress.models.rebuild_pruned`
reshapes a fresh model — transformers 5.x has no head pruning, so a head-pruned checkpoint loads
only through bertpress. The config also keeps `pruned_heads`, which transformers 4.x replays.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Iterable

import torch
from torch import nn

from bertpress.arch import Family, FAMILIES, model_type_of
from bertpress.compress.config import Importance, PruneConfig
from bertpress.errors import InputError
from bertpress.registry import Registry

# Importance criteria: name -> factory(torch_pruning) -> scorer; `needs_data` on the factory
# says whether labelled calibration batches must be accumulated first (gradients).
IMPORTANCE: Registry = Registry("pruning importance", names=Importance)


@IMPORTANCE.register("taylor")
def _taylor(tp):
    """|w * dL/dw| summed over the group, from a few labelled calibration batches."""
    return tp.importance.GroupTaylorImportance()


_taylor.needs_data = True  # type: ignore[attr-defined]


@IMPORTANCE.register("magnitude")
def _magnitude(tp):
    """L2 norm of the weights; needs no data."""
    return tp.importance.GroupMagnitudeImportance(p=2)


_magnitude.needs_data = False  # type: ignore[attr-defined]


def check_prunable(model: nn.Module) -> Family:
    """The model's family adapter, if its heads and FFN can be pruned; else a one-line refusal."""
    mtype = model_type_of(model)
    fam = FAMILIES.get(mtype) if mtype in FAMILIES else None
    if fam is None or not fam.prunable:
        prunable = [n for n in FAMILIES if FAMILIES.get(n).prunable]
        why = f" ({fam.prune_refusal})" if fam is not None and fam.prune_refusal else ""
        raise InputError(f"cannot prune model type {mtype!r}{why}; pruning supports: {', '.join(prunable)}; "
                         "int8 quantization (--quantize dynamic|static) works without pruning")
    return fam


class NothingRemoved(InputError):
    """A pruning ratio that removes nothing of what it names (the search skips such a candidate)."""


def removed_count(ratio: float, n: int) -> int:
    """How many of `n` units (layers, heads of a layer) a ratio removes: the nearest whole number,
    halves rounded up (ratio * n + 0.5, floored). One rule for every ratio, stated in --help and
    docs/reliability.md; Python's round() would send 0.5 of 1 layer to 0 (half to even)."""
    return int(math.floor(ratio * n + 0.5 + 1e-9))


def _refuse_nothing(flag: str, ratio: float, n: int, units: str) -> None:
    """One line for a ratio > 0 that rounds to removing none of `n`: the nearest ratio that removes one."""
    raise NothingRemoved(f"{flag} {ratio:g} of {n} {units} rounds to 0, so it removes nothing; the nearest ratio "
                         f"that removes one is {math.ceil(100 / n) / 100:g} (1 of {n}), or leave {flag} at 0")


def plan_shapes(model: nn.Module, cfg: PruneConfig) -> tuple[int, int, int]:
    """(heads removed per layer, heads kept, FFN width kept) for `cfg`, or InputError."""
    fam = check_prunable(model)
    first = fam.layers(model)[0]
    n_heads = fam.num_heads(first)
    ffn = int(fam.ffn_in(first).out_features)
    drop = removed_count(cfg.heads, n_heads)
    if cfg.heads > 0 and drop == 0:
        _refuse_nothing("--prune-heads", cfg.heads, n_heads, "heads per layer")
    refusal = fam.head_pruning_refusal(model.config) if drop else ""
    if refusal:
        raise InputError(f"cannot prune the heads of model type {model_type_of(model)!r}: {refusal}")
    if drop >= n_heads:
        raise InputError(f"--prune-heads {cfg.heads} would remove all {n_heads} heads of each layer (zero left); "
                         f"use a ratio below {(n_heads - 0.5) / n_heads:.2f}")
    keep_ffn = ffn
    if cfg.ffn > 0:
        m = cfg.round_to
        keep_ffn = max(m, int(round(ffn * (1.0 - cfg.ffn) / m)) * m)
        if keep_ffn >= ffn:  # rounding ate the pruning: say so (nothing else is what was asked)
            if ffn <= m:
                raise NothingRemoved(f"--prune-ffn {cfg.ffn}: the FFN width {ffn} is not above --round-to {m}, "
                                     "so nothing would be pruned; lower --round-to")
            nearest = math.ceil((ffn - (ffn - 1) // m * m) / ffn * 100) / 100
            raise NothingRemoved(f"--prune-ffn {cfg.ffn:g} removes no FFN channel of {ffn} (kept width rounds to "
                                 f"{ffn} with --round-to {m}); the nearest ratio that removes some is {nearest:g}, "
                                 "or leave --prune-ffn at 0")
    return drop, n_heads - drop, keep_ffn


def plan_layers(model: nn.Module, cfg: PruneConfig) -> list[int]:
    """The encoder layers kept (original indices) when `cfg.layers` of them are removed, or InputError.

    The kept layers are spread evenly from the first to the last (rounding half up): the
    student's first layer is the teacher's first, so it receives the embeddings it was trained
    on (keeping layer 1 first, PKD-skip's map, fed it inputs it had never seen), and its last is
    the teacher's last. `finetune.recover` matches each kept layer's hidden states to the teacher
    layer it came from when --recover-hidden-weight > 0. 6 -> 4 keeps 0, 2, 3, 5; 6 -> 3 keeps
    0, 3, 5; one layer kept is the first. Measured (docs/results/autosearch.md §8, SST-2, same
    teacher and recovery): 6 -> 4 x FFN 384 recovered to 88.76 % fp32 / 89.33 % dynamic int8
    keeping 0, 2, 3, 5, against 87.96 / 87.50 keeping 1, 2, 4, 5.
    """
    fam = check_prunable(model)
    if cfg.layers > 0 and fam.layer_drop_refusal:
        raise InputError(f"cannot remove layers of model type {model_type_of(model)!r}: {fam.layer_drop_refusal}")
    n = len(fam.layers(model))
    drop = removed_count(cfg.layers, n)
    if not drop:
        if cfg.layers > 0:
            _refuse_nothing("--prune-layers", cfg.layers, n, "encoder layers")
        return list(range(n))
    if drop >= n:
        raise InputError(f"--prune-layers {cfg.layers} would remove all {n} encoder layers (zero left); "
                         f"use a ratio below {(n - 0.5) / n:.2f}")
    k = n - drop
    if k == 1:
        return [0]
    return [(j * (n - 1) + (k - 1) // 2) // (k - 1) for j in range(k)]  # round(j (n-1) / (k-1)), half up


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

    fam = check_prunable(model)
    drop_heads, keep_heads, keep_ffn = plan_shapes(model, cfg)
    layers_kept = plan_layers(model, cfg)
    model = copy.deepcopy(model).eval()
    for p in model.parameters():
        p.requires_grad_(True)
    layers = fam.layers(model)
    before = {"heads": fam.num_heads(layers[0]), "ffn": int(fam.ffn_in(layers[0]).out_features),
              "layers": len(layers), "params": sum(p.numel() for p in model.parameters())}
    # Whole layers go first, so head and FFN importance is scored in the model that remains and
    # the recorded head indices number the kept layers 0..k-1, as the saved checkpoint does.
    if len(layers_kept) < len(layers):
        fam.keep_layers(model, layers_kept)
        layers = fam.layers(model)
    n_batches = 0
    make_scorer = IMPORTANCE.get(cfg.importance)
    if make_scorer.needs_data and (drop_heads or keep_ffn < before["ffn"]):
        if batches is None:
            raise InputError(f"{cfg.importance.value} importance needs labelled calibration batches; pass "
                             "--calibration-data SPEC or --importance magnitude")
        n_batches = _accumulate_gradients(model, batches)
        if n_batches == 0:
            raise InputError("the calibration data gave no batches; give a non-empty --calibration-data")
    scorer = make_scorer(tp)

    dg = tp.DependencyGraph().build_dependency(model, example_inputs=_example_inputs(tokenizer, cfg.max_length))
    plan = []  # (layer index, head channels to prune, heads pruned, ffn channels to prune)
    for i, layer in enumerate(layers):
        query = fam.qkv(layer)[0]
        head_size = fam.head_size(layer)
        head_idxs: list[int] = []
        heads: list[int] = []
        if drop_heads:
            group = dg.get_pruning_group(query, tp.prune_linear_out_channels, idxs=list(range(query.out_features)))
            score = scorer(group).view(fam.num_heads(layer), head_size).sum(dim=1)
            heads = sorted(int(h) for h in torch.argsort(score)[:drop_heads])
            head_idxs = [h * head_size + j for h in heads for j in range(head_size)]
        ffn_idxs: list[int] = []
        width = int(fam.ffn_in(layer).out_features)
        if keep_ffn < width:
            group = dg.get_pruning_group(fam.ffn_in(layer), tp.prune_linear_out_channels,
                                         idxs=list(range(width)))
            score = scorer(group)
            ffn_idxs = sorted(int(c) for c in torch.argsort(score)[: width - keep_ffn])
        plan.append((i, head_idxs, heads, ffn_idxs))

    pruned_heads: dict[int, list[int]] = {}
    for i, head_idxs, heads, ffn_idxs in plan:
        layer = layers[i]
        if head_idxs:
            dg.get_pruning_group(fam.qkv(layer)[0], tp.prune_linear_out_channels, idxs=head_idxs).prune()
            fam.set_heads(layer, keep_heads, heads)
            pruned_heads[i] = heads
        if ffn_idxs:
            dg.get_pruning_group(fam.ffn_in(layer), tp.prune_linear_out_channels, idxs=ffn_idxs).prune()

    model.zero_grad(set_to_none=True)
    for p in model.parameters():
        p.requires_grad_(False)
    # What from_pretrained replays on a fresh model (transformers 4.x), so the checkpoint reloads.
    model.config.pruned_heads = {i: h for i, h in pruned_heads.items()}
    fam.set_ffn(model.config, keep_ffn)
    _check_shapes(model, keep_heads, keep_ffn)
    facts = {
        "heads_ratio": cfg.heads,
        "ffn_ratio": cfg.ffn,
        "layers_ratio": cfg.layers,
        "layers_kept": layers_kept if len(layers_kept) < before["layers"] else [],  # [] = every layer kept
        "importance": cfg.importance.value,
        "calibration_batches": n_batches,
        "round_to": cfg.round_to,
        "original": before,
        "heads_per_layer": [fam.num_heads(l) for l in layers],
        "head_size": fam.head_size(layers[0]),
        "pruned_heads": {str(i): h for i, h in pruned_heads.items()},
        "ffn_per_layer": [int(fam.ffn_in(l).out_features) for l in layers],
        "params": sum(p.numel() for p in model.parameters()),
        # what was actually removed (counts; the ratios above are what was asked, rounded by removed_count)
        "removed": {"layers": before["layers"] - len(layers), "heads_per_layer": drop_heads,
                    "ffn_per_layer": before["ffn"] - keep_ffn},
    }
    return model.eval(), facts


def _check_shapes(model: nn.Module, heads: int, ffn: int) -> None:
    """Fail loudly if torch-pruning and our bookkeeping disagree (a broken model must not be saved)."""
    fam = check_prunable(model)
    for i, layer in enumerate(fam.layers(model)):
        want = heads * fam.head_size(layer)
        got = tuple(m.out_features for m in fam.qkv(layer)) + (fam.attention_output(layer).in_features,)
        if any(g != want for g in got) or fam.ffn_in(layer).out_features != ffn \
                or fam.ffn_out(layer).in_features != ffn:
            raise RuntimeError(f"layer {i}: pruned shapes {got} / FFN {fam.ffn_in(layer).out_features} "
                               f"do not match the plan ({want}, {ffn}); this is a bug in compress/prune.py")
