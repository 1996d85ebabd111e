"""The automatic search's trials as Ray tasks: `compress --executor ray [--ray-address ADDR]`, and
the default search on a machine with several GPUs (one trial per GPU).

Same space, stop rule, table and winner as the in-process search (compress/autosearch.py): this
module changes *where* a shape is trained, not which shapes are trained or how they are judged.

- **The driver keeps the search.** The Optuna study, the candidates' timing, the incumbent, the
  scoring of a trained shape's variants in their runtime and the published winner stay in this
  process, which picks the shapes as `_AutoSearch.search` does (bisection over the speed order).
  What runs remotely is one shape's distillation with its rungs (`run_trial`): the stop rule at a
  rung is the trial's own threshold (`autosearch.over_budget`), so a remote trial applies it where
  it runs and the driver replays its rung drops into the study (`trial.report`) when it returns.
- **Speculation, taken up in the search's order.** Up to W trials run at once: the next shapes of
  `autosearch.bisection_order` still in play. A result is taken up only when the search picks its
  shape, so the incumbent moves exactly as in the sequential search; when it moves, or a miss rules
  out the shapes pruned further, running trials that can no longer change the answer are cancelled
  (their Optuna trials are told FAIL, attribute `cancelled`).
- **Data once, scratch per trial.** The teacher, tokenizer, eval rows and training rows are put
  in Ray's object store once (`ray.put`); workers read no path of the user's. Each trial trains
  in its own temporary directory (recover's work_dir) and returns its student's weights as
  safetensors bytes; the driver keeps them beside the study for resume and publishes the winner
  once through compress's staged output.
- **A lost trial is one trial.** A trial that raises, or whose worker dies (retried once on a
  system failure, e.g. a node lost), is recorded FAIL in the study and the search goes on; the
  same command later resumes from the study as the in-process search does.

Ray is an optional extra (`pip install 'bertpress[ray]'`), imported only here and only when this
executor runs. We use Ray core (tasks, the object store, cancel) rather than Ray Tune: the order
(bisection over the measured speed) and the stop rule (the incumbent bounds what is worth training)
are the search's own, and Tune's schedulers would replace them rather than run them.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import socket
import time
from typing import Any, Callable

from bertpress.compress import api  # noqa: F401  (registers the HANDLERS a worker runs)
from bertpress.compress import evaluate
from bertpress.compress.autosearch import Candidate, _AutoSearch, _rung_callback, over_budget, shape_key
from bertpress.compress.config import RecoverConfig, SearchConfig
from bertpress.compress.state import HANDLERS, Work
from bertpress.errors import ConfigError, DeviceError, first_line

RAY_EXTRA = "pip install 'bertpress[ray]'"
ADDRESS_TIMEOUT_S = 3.0  # a cluster address that does not answer a TCP connect in this long is refused
SYSTEM_RETRIES = 1  # a trial whose worker dies (not one that raises) is run once more


def import_ray():
    """The ray module, or a one-line refusal naming the extra."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--executor ray needs Ray, an optional extra: {RAY_EXTRA} (or drop --executor ray)") \
            from None
    return ray


def ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


def cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def search_class(s: SearchConfig, say: Callable[[str], None]) -> type:
    """The search to run: RaySearch for --executor ray, and for the default search on a machine
    with several GPUs when Ray is installed (one trial per GPU); else the in-process search."""
    if s.executor == "ray":
        return RaySearch
    n = cuda_devices()
    if n > 1:
        if ray_installed():
            say(f"search: {n} GPUs: trials run one per GPU on a local Ray runtime")
            return RaySearch
        say(f"search: {n} GPUs, trials one at a time on one of them; {RAY_EXTRA} trains one per GPU")
    return _AutoSearch


def check_reachable(address: str, timeout: float = ADDRESS_TIMEOUT_S) -> None:
    """Refuse a cluster address that does not accept a TCP connection within `timeout` seconds
    (ray.init itself waits much longer before it gives up on an unreachable GCS)."""
    if address in ("auto", "local"):  # Ray's own words: the cluster of this machine / a new local one
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--ray-address {address!r} is not HOST:PORT; give the head's address, e.g. head:6379 "
                          "(or ray://head:10001 for Ray Client)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise DeviceError(f"--ray-address {address}: no Ray cluster answers there ({exc.strerror or exc}); "
                          "start one (`ray start --head`) or fix the address") from None


# transformers 5 captures hidden states and attention maps (which the distillation reads) with
# forward hooks it installs on a model's first call, driven by a per-process registry of model
# classes filled in PreTrainedModel.__init__. A model sent to another process is unpickled, not
# constructed: it must go without the hooks (local closures: pickle refuses them, cloudpickle
# copies them with a copy of the context variable they write to) and the worker must register its
# classes, or it returns no hidden states. These two functions are that, and all of it: a
# transformers release that moves the names fails test_raysearch, not silently.
def portable(model):
    """A deep copy of `model` that pickles: without transformers' output-capturing hooks (the copy
    installs its own on its first call)."""
    model = copy.deepcopy(model)
    for module in model.modules():
        for hid, hook in list(module._forward_hooks.items()):
            if getattr(hook, "__module__", "").startswith("transformers.") and "<locals>" in hook.__qualname__:
                for table in (module._forward_hooks, module._forward_hooks_with_kwargs,
                              module._forward_hooks_always_called):
                    table.pop(hid, None)
        module.__dict__.pop("_output_capturing_hooks_installed", None)
    return model


def arrived(model):
    """A model unpickled in this process, registered as its construction would have done."""
    try:
        from transformers.utils.output_capturing import _CAN_RECORD_REGISTRY
    except ImportError:  # a transformers without the registry needs nothing
        return model
    from transformers import PreTrainedModel

    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            _CAN_RECORD_REGISTRY[module] = module._can_record_outputs
    return model


@dataclasses.dataclass
class Shared:
    """What every trial reads, put in Ray's object store once per search."""

    teacher: Any
    tokenizer: Any
    labels: list
    cfg: Any  # CompressConfig
    rcfg: RecoverConfig
    eval_data: Any
    data_cache: dict  # {(spec, "train"): TextDataset}: the training rows, so workers read no path
    columns: Any
    metric: str
    base: float  # the uncompressed model's metric
    max_length: int
    rungs: tuple
    slack: tuple
    max_drop: float


@dataclasses.dataclass
class TrialJob:
    """One shape's trial: its pruned, untrained student and where training must stop."""

    key: str
    student: Any
    details: dict  # the pruned Work's details (its pruning record maps student layers to the teacher's)
    threads: int | None  # torch threads on a CPU worker
    deadline: float | None  # time.time() the time budget ends (wall clock: the worker may be another host)


def run_trial(shared: Shared, job: TrialJob) -> dict:
    """Train one shape with rungs, where Ray placed it: the same recovery handler and rung rule as
    the in-process search. {stopped, drops, train_s} and, when it finished, {drop, state (the
    student's safetensors bytes), recovery}."""
    import torch
    from safetensors.torch import save


    if job.threads:
        torch.set_num_threads(job.threads)
    deadline = None if job.deadline is None else time.monotonic() + (job.deadline - time.time())

    def drop_of(model) -> float:
        got = evaluate.scores(model, shared.tokenizer, shared.eval_data, max_length=shared.max_length)
        return 100 * (shared.base - got[shared.metric])

    cb = _rung_callback(shared.rungs, drop_of, lambda k, d: over_budget(d, k, shared.max_drop, shared.slack),
                        deadline)
    work = Work(model=arrived(job.student), tokenizer=shared.tokenizer, teacher=arrived(shared.teacher),
                labels=shared.labels, cfg=shared.cfg, eval_data=shared.eval_data, details=dict(job.details),
                progress=False, data_cache=dict(shared.data_cache), columns=shared.columns, recover_callbacks=[cb])
    t0 = time.monotonic()
    work = HANDLERS[RecoverConfig](work, shared.rcfg)
    out: dict[str, Any] = {"stopped": cb.stopped, "drops": dict(cb.drops), "train_s": time.monotonic() - t0}
    if cb.stopped:
        return out
    work.model.cpu()
    out.update(drop=drop_of(work.model), recovery=work.details.get("recovery"),
               state=save({k: v.contiguous() for k, v in work.model.state_dict().items()}))
    return out


class RaySearch(_AutoSearch):
    """The automatic search with its trials on Ray (see the module's docstring)."""

    trial_fn = staticmethod(run_trial)  # what a Ray task runs (a test swaps it for one that crashes)

    def __init__(self, work, cfg, say, max_length, out_dir, runtimes=None) -> None:
        super().__init__(work, cfg, say, max_length, out_dir, runtimes)
        self.ray = import_ray()
        if self.s.ray_address:  # fail in seconds, before the minutes of timing
            check_reachable(self.s.ray_address)
        self.running: dict[tuple, tuple] = {}  # shape -> (ObjectRef, optuna trial)
        self.held: dict[tuple, tuple] = {}  # shape -> (outcome, optuna trial): returned, not yet taken up
        self.queue: list[tuple] = []
        self.started_ray = False

    # ---- the runtime ----------------------------------------------------------------------

    def connect(self) -> None:
        """Join the cluster at --ray-address, or start a local runtime sized to this machine (a
        runtime this process already holds, e.g. the tests', is used as it is)."""
        ray = self.ray
        if not ray.is_initialized():
            kw = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            try:
                ray.init(address=self.s.ray_address, **kw) if self.s.ray_address else ray.init(**kw)
            except (ConnectionError, RuntimeError, TimeoutError) as exc:
                raise DeviceError(f"Ray: could not {'join ' + self.s.ray_address if self.s.ray_address else 'start'}"
                                  f" ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); check the "
                                  "cluster (`ray status`) or run without --executor ray") from None
            self.started_ray = True
        res = ray.cluster_resources()
        cpus, gpus = int(res.get("CPU", 1)), int(res.get("GPU", 0))
        if gpus:  # one GPU per trial; its CPUs feed it
            self.width = self.s.parallel_trials or gpus
            self.threads = max(1, cpus // max(1, min(gpus, self.width)))
            self.resources = {"num_gpus": 1, "num_cpus": min(self.threads, cpus)}
        else:  # CPUs shared among the trials that can run at once
            self.width = self.s.parallel_trials or max(1, min(cpus, len(self.queue)))
            self.threads = max(1, cpus // self.width)
            self.resources = {"num_cpus": min(self.threads, cpus)}
        self.remote = ray.remote(self.trial_fn).options(max_retries=SYSTEM_RETRIES, **self.resources)
        where = self.s.ray_address or "a local Ray runtime"
        self.say(f"search: {len(self.queue)} shapes to train on {where} ({cpus} CPUs, {gpus} GPUs): up to "
                 f"{self.width} at once, " + ("1 GPU each" if gpus else f"{self.threads} CPU threads each"))
        self.event("ray", address=where, cpus=cpus, gpus=gpus, parallel=self.width, threads=self.threads)

    # ---- hooks of _AutoSearch.search --------------------------------------------------------

    def before_training(self, worth: list, fastest_ms: dict, incumbent: Candidate | None) -> None:
        self.fastest = fastest_ms
        self.inc_ms = incumbent.ms if incumbent is not None else None
        self.queue = [sh for sh in worth if self.earlier_trial(shape_key(sh)) is None]  # resumed ones stay here
        if not self.queue:
            return
        self.connect()
        w = self.work
        spec = self.cfg.recover_data
        train = w.load_data(spec, "train", "recover.data" if self.rcfg.data else "--calibration-data")
        self.shared = self.ray.put(Shared(
            teacher=portable(w.teacher), tokenizer=w.tokenizer, labels=w.labels, cfg=self.cfg, rcfg=self.rcfg,
            eval_data=w.eval_data, data_cache={(spec, "train"): train}, columns=w.columns, metric=self.metric,
            base=self.base[self.metric], max_length=self.ml, rungs=self.s.rungs, slack=self.s.rung_slack,
            max_drop=self.s.max_accuracy_drop))
        self.fill()

    def on_incumbent(self, c: Candidate) -> None:
        """Cancel the running trials (and forget the queued shapes) that cannot beat `c`."""
        self.inc_ms = c.ms
        for shape in [sh for sh in self.running if self.fastest[sh] >= c.ms]:
            ref, trial = self.running.pop(shape)
            self.ray.cancel(ref)
            self.abandon(shape, trial, "slower than the incumbent")
        self.queue = [sh for sh in self.queue if self.fastest[sh] < c.ms]
        self.fill()

    def on_ruled_out(self, shapes: list) -> None:
        """Cancel the running trials (and forget the queued shapes) the search ruled out."""
        if not hasattr(self, "fastest"):  # before the training loop: nothing queued yet
            return
        for shape in [sh for sh in self.running if sh in shapes]:
            ref, trial = self.running.pop(shape)
            self.ray.cancel(ref)
            self.abandon(shape, trial, "ruled out by another shape's result")
        self.queue = [sh for sh in self.queue if sh not in shapes]
        self.fill()

    def costs_nothing(self, shape) -> bool:
        """Also a shape whose trial was started ahead (running or returned): its time is spent."""
        return shape in self.running or shape in self.held or super().costs_nothing(shape)

    def after_training(self) -> None:
        """Cancel what still runs; tell the study the results nobody took up (so that a resume
        finds them); stop the runtime this search started."""
        try:
            for shape, (ref, trial) in list(self.running.items()):
                self.ray.cancel(ref)
                self.abandon(shape, trial, "the search ended")
            self.running.clear()
            for shape, (out, trial) in list(self.held.items()):
                key = shape_key(shape)
                kept = self.trials.get(key)
                self.take_up(shape, out, trial)
                if kept is not None:  # the table says what the search did with the shape (as in-process)
                    self.trials[key] = {**kept, "trained": "in parallel, then not needed"}
            self.held.clear()
        finally:
            if self.started_ray:
                self.ray.shutdown()
                self.started_ray = False

    def train(self, shape) -> Any:
        """The shape's trial result, taken up in the sequential order: dispatched earlier (or now),
        waited for while the other trials go on."""
        found, tw = self.from_study(shape)
        if found:
            return tw
        if shape not in self.running and shape not in self.held:  # not dispatched yet: it is next
            if shape in self.queue:
                self.queue.remove(shape)
            self.dispatch(shape)
        while shape not in self.held:
            self.collect()
        out, trial = self.held.pop(shape)
        return self.take_up(shape, out, trial)

    # ---- dispatch and results ---------------------------------------------------------------

    def fill(self) -> None:
        """Dispatch the next shapes of the queue (the search's bisection order) while fewer than `width` run."""
        while self.queue and len(self.running) < self.width:
            left = self.left_s()
            if left is not None and left <= 0:
                return
            self.dispatch(self.queue.pop(0))

    def dispatch(self, shape) -> None:
        pw, _ = self.prune(shape)
        trial = self.new_trial(shape)
        job = TrialJob(key=shape_key(shape), student=portable(pw.model), details=dict(pw.details),
                       threads=self.threads, deadline=None if self.deadline is None
                       else time.time() + (self.deadline - time.monotonic()))
        self.running[shape] = (self.remote.remote(self.shared, job), trial)
        self.event("trial dispatched", shape=shape_key(shape))
        self.say(f"search: training {shape_key(shape)} on Ray (recovery: {self.rcfg.epochs:g} epochs)")

    def collect(self) -> None:
        """Wait for one running trial to return (or fail); hold its outcome; dispatch the next."""
        refs = {ref: sh for sh, (ref, _) in self.running.items()}
        ready, _ = self.ray.wait(list(refs), num_returns=1)
        for ref in ready:
            shape = refs[ref]
            _, trial = self.running.pop(shape)
            try:
                out = self.ray.get(ref)
            except Exception as exc:  # the trial raised, or its worker died (after SYSTEM_RETRIES)
                cause = getattr(exc, "cause", None) or exc
                out = {"error": f"{type(cause).__name__}: {first_line(cause)}"}
            self.held[shape] = (out, trial)
        self.fill()

    def abandon(self, shape, trial, why: str) -> None:
        from optuna.trial import TrialState

        trial.set_user_attr("cancelled", why)
        self.study.tell(trial, state=TrialState.FAIL)
        self.event("trial cancelled", shape=shape_key(shape), why=why)

    def take_up(self, shape, out: dict, trial) -> Any:
        """Record a returned trial as the in-process search records its own; the trained Work, or
        None (stopped at a rung, out of time, or failed)."""
        from optuna.trial import TrialState

        key = shape_key(shape)
        if "error" in out:
            trial.set_user_attr("error", out["error"])
            self.study.tell(trial, state=TrialState.FAIL)
            self.trials[key] = {"state": "failed", "why": out["error"]}
            self.event("trial failed", shape=key, why=out["error"])
            self.say(f"search: {key}: trial failed ({out['error']}); the search goes on")
            return None
        for k, d in sorted(out["drops"].items()):
            trial.report(d, k)
        if out["stopped"]:
            return self.finish_trial(shape, trial, stopped=out["stopped"], drops=out["drops"], took=out["train_s"])
        from safetensors.torch import load

        pw, _ = self.prune(shape)
        tw = dataclasses.replace(pw, model=copy.deepcopy(pw.model), details=dict(pw.details))
        tw.model.load_state_dict(load(out["state"]))
        tw.model.eval()
        tw.details["recovery"] = out["recovery"]
        return self.finish_trial(shape, trial, stopped=None, drops=out["drops"], took=out["train_s"], tw=tw,
                                 drop=out["drop"])
