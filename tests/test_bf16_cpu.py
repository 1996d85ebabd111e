"""bench/bf16_cpu.py: the PyTorch bf16-on-CPU probe behind docs/results/bf16-cpu.md, on a tiny BERT."""

from __future__ import annotations

import json


def test_probe_measures_every_variant_and_counts_autocasts_recasts(tiny_checkpoint, capsys):
    from bertpress.bench.bf16_cpu import main, measure

    res = measure(str(tiny_checkpoint), seq=16, threads=1, rounds=2, min_iters=2, min_seconds=0.0)
    assert set(res["variants"]) == {"fp32 eager", "fp32 eager, oneDNN off", "bf16 autocast", "bf16 weights"}
    for v in res["variants"].values():
        assert len(v["p50_ms_per_round"]) == 2 and v["p50_ms"] > 0
    assert res["variants"]["fp32 eager"]["speedup_vs_fp32"] == 1.0
    d = res["max_abs_dlogit_vs_fp32"]
    assert d["fp32 eager"] == 0.0 and d["fp32 eager, oneDNN off"] < 1e-5
    assert 0 < d["bf16 weights"] < 0.5 and 0 < d["bf16 autocast"] < 0.5  # bf16 really ran, and close
    # autocast re-casts every Linear weight on every call; a bf16-weight model casts none of them
    casts = res["casts_per_call"]
    n = res["linear_layers"]
    assert casts["bf16 autocast"].get("aten::_to_copy", 0) >= n
    assert casts["bf16 weights"].get("aten::_to_copy", 0) < n
    assert casts["bf16 weights"].get("aten::_to_copy", 0) < casts["bf16 autocast"]["aten::_to_copy"]
    main([ "--model", str(tiny_checkpoint), "--seq", "16", "--threads", "1", "--rounds", "1",
          "--min-iters", "1", "--min-seconds", "0", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["rounds"] == 1 and out["mkldnn_bf16_supported"] in (True, False)
