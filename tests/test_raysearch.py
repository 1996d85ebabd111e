"""The automatic search's trials on Ray (compress/raysearch.py), for real on a local 2-CPU Ray
runtime shared by the module: the same winner and table as the in-process search, a crashing
trial (or a killed worker) recorded as failed while the search finishes, an unreachable cluster
refused in seconds, and the refusals without Ray. Tiny models, small spaces."""

from __future__ import annotations

import dataclasses
import socket
import sys
import time

import pytest

from bertpress.compress import api as A
from bertpress.compress import raysearch as RS
from bertpress.compress.config import SearchConfig
from bertpress.errors import ConfigError, DeviceError
from tests.test_autosearch import cfg_for, ckpt, data, speed_by_depth  # noqa: F401 - fixtures


@pytest.fixture(scope="module")
def ray_runtime():
    """One local runtime for the module (Ray starts in seconds; a search reuses a runtime it finds)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def on_ray(cfg, **kw):
    return dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, executor="ray", **kw))


def comparable(s: dict) -> dict:
    """What must not depend on the executor: the winner, and the table's rows (scores to 1e-6)."""
    rows = [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()} for r in s["table"]]
    return {"winner": s["winner"], "met": s["met_budget"], "rows": rows,
            "states": {k: t["state"] for k, t in s["trials"].items()}}


@pytest.mark.slow  # two searches and a Ray worker's start: ~40 s on 2 shared cores
def test_ray_search_finds_the_in_process_winner_and_table(ckpt, data, tmp_path, speed_by_depth,  # noqa: F811
                                                          ray_runtime):
    cfg = cfg_for(data, layers=(0.0, 0.25, 0.5))
    local = A.compress(ckpt, cfg, tmp_path / "local", progress=False).manifest.details["search"]
    art = A.compress(ckpt, on_ray(cfg), tmp_path / "ray", progress=False)
    remote = art.manifest.details["search"]
    assert comparable(remote) == comparable(local), remote["trials"]
    assert remote["study"]["name"] == local["study"]["name"]  # how a search runs is not what it searches
    assert remote["winner"]["layers"] == 0.5 and remote["met_budget"]  # every candidate passes: the fastest wins
    events = [e["event"] for e in remote["timeline"]]
    assert "ray" in events and events.count("trial dispatched") == 2  # both pruned shapes ran at once
    assert A.load_compressed(art.path)  # the winner, published once by the driver, is a usable artifact
    assert not (tmp_path / ".ray.search").exists()


def crash_or_die(shared, job):
    """A trial function for the test below: one shape raises, the other's worker dies."""
    import os

    if job.key.endswith("l0.500"):
        raise ValueError("boom in the trial")
    if job.key.endswith("l0.250"):
        os._exit(3)  # the worker process dies mid-trial (retried once, then recorded failed)
    return RS.run_trial(shared, job)


@pytest.mark.slow  # workers die and restart: ~30 s on 2 shared cores
def test_a_crashing_trial_is_recorded_failed_and_the_search_finishes(ckpt, data, tmp_path,  # noqa: F811
                                                                     speed_by_depth, monkeypatch, ray_runtime):
    import optuna

    ray_runtime.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    monkeypatch.setattr(RS.RaySearch, "trial_fn", staticmethod(crash_or_die))
    monkeypatch.setattr("bertpress.compress.autosearch.remove_study", lambda out: None)  # read the study below
    art = A.compress(ckpt, on_ray(cfg_for(data, layers=(0.0, 0.25, 0.5))), tmp_path / "o", progress=False)
    s = art.manifest.details["search"]
    trials = {k[-6:]: t for k, t in s["trials"].items()}
    assert trials["l0.500"]["state"] == "failed" and "ValueError: boom in the trial" in trials["l0.500"]["why"]
    assert trials["l0.250"]["state"] == "failed" and "Worker" in trials["l0.250"]["why"]
    assert s["winner"]["layers"] == 0.0 and s["met_budget"]  # the unpruned incumbent stands
    study = optuna.load_study(study_name=s["study"]["name"], storage=f"sqlite:///{s['study']['storage']}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 2


def test_an_unreachable_cluster_is_refused_in_seconds(ckpt, data, tmp_path):  # noqa: F811
    pytest.importorskip("ray")
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match=rf"--ray-address 127.0.0.1:{port}: no Ray cluster answers there"):
        A.compress(ckpt, on_ray(cfg_for(data), ray_address=f"127.0.0.1:{port}"), tmp_path / "o", progress=False)
    assert time.monotonic() - t0 < 15
    assert not (tmp_path / "o").exists()
    with pytest.raises(ConfigError, match="is not HOST:PORT"):
        RS.check_reachable("head")


def test_cli_refusal_is_one_line(ckpt, data, tmp_path, capsys):  # noqa: F811
    pytest.importorskip("ray")
    from bertpress.app.cli import main

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = main(["compress", str(ckpt), "--out", str(tmp_path / "o"), "--max-accuracy-drop", "1",
                 "--eval-data", str(data), "--calibration-data", str(data), "--search-schemes", "dynamic",
                 "--importance", "magnitude", "--executor", "ray", "--ray-address", f"127.0.0.1:{port}",
                 "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "no Ray cluster answers there" in err[0], err


def test_without_ray_the_executor_is_a_one_line_refusal_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ConfigError, match=r"needs Ray, an optional extra: pip install 'bertpress\[ray\]'"):
        RS.import_ray()


def test_executor_settings_are_refused_where_they_change_nothing():
    with pytest.raises(ConfigError, match="--ray-address applies to the Ray executor; add --executor ray"):
        SearchConfig(ray_address="head:6379")
    with pytest.raises(ConfigError, match="--parallel-trials applies to the Ray executor"):
        SearchConfig(parallel_trials=2)
    with pytest.raises(ConfigError, match="search.executor runs the automatic search's trials"):
        SearchConfig(schedule=["0:0.5"], executor="ray")
    with pytest.raises(ConfigError, match="search.executor='dask' is not valid"):
        SearchConfig(executor="dask")


def test_default_search_uses_ray_with_several_gpus(monkeypatch):
    said = []
    monkeypatch.setattr(RS, "cuda_devices", lambda: 4)
    monkeypatch.setattr(RS, "ray_installed", lambda: True)
    assert RS.search_class(SearchConfig(), said.append) is RS.RaySearch
    assert "one per GPU" in said[-1]
    monkeypatch.setattr(RS, "ray_installed", lambda: False)
    from bertpress.compress.autosearch import _AutoSearch

    assert RS.search_class(SearchConfig(), said.append) is _AutoSearch and "bertpress[ray]" in said[-1]
    monkeypatch.setattr(RS, "cuda_devices", lambda: 1)
    assert RS.search_class(SearchConfig(), said.append) is _AutoSearch
