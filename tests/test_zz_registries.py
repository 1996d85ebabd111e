"""Meta-test of the registries (runs last: the file name sorts after every other test file).

Each registry built on a vocabulary has a member for every name of it, and — when the whole suite
ran in this process — every registered member was looked up (so exercised) by some test.
"""

from __future__ import annotations

import pytest


def _registries():
    import bertpress.arch  # noqa: F401
    import bertpress.bench.runtimes  # noqa: F401
    import bertpress.compress.prune  # noqa: F401
    import bertpress.compress.quantize  # noqa: F401
    import bertpress.export.formats  # noqa: F401
    from bertpress.registry import all_registries

    return all_registries()


def test_every_registry_fills_its_vocabulary():
    """A registry built on a vocabulary (bertpress.names or the config enum that validates the
    name) has a member for each of its names; registering a name outside it is refused."""
    regs = _registries()
    assert set(regs) >= {"quantization scheme", "calibration method", "pruning importance", "bench runtime",
                         "model family", "export format"}
    assert {k: r.missing() for k, r in regs.items() if r.missing()} == {}
    assert "bert" in regs["model family"]
    with pytest.raises(ValueError, match="not one of none, dynamic, static"):
        regs["quantization scheme"].register("fp4")


def test_unknown_member_is_refused_in_one_line():
    from bertpress.errors import ConfigError

    reg = _registries()["quantization scheme"]
    with pytest.raises(ConfigError) as e:
        reg.get("fp4")
    assert str(e.value) == "unknown quantization scheme 'fp4' (known: none, dynamic, static)"


# CUDA-only members cannot run on a machine without a GPU; their tests skip there.
CUDA_ONLY = {("bench runtime", "pytorch-fp16")}


def test_every_registered_member_is_exercised(request):
    session = request.session
    if session.config.option.keyword or session.config.option.markexpr or \
            session.testscollected < 100 or len(session.config.args) > 1 or \
            not str(session.config.args[0]).rstrip("/").endswith("tests"):
        pytest.skip("only meaningful after the whole suite ran in this process (make test)")
    import torch

    missing = [f"{kind}: {name}" for kind, reg in _registries().items() for name in reg
               if not reg.uses.get(name) and not ((kind, name) in CUDA_ONLY and not torch.cuda.is_available())]
    assert not missing, "registered but never used by a test: " + ", ".join(missing)
