"""The Ray executor: runs as Ray tasks on a cluster (`pip install -e '.[ray]'`).

Each task asks for `cpus_per_run` CPUs, or one GPU where the cluster has GPUs (Ray then sets
CUDA_VISIBLE_DEVICES for it). Ray retries a task whose worker process or node died (`max_retries`,
`retry_exceptions=False`: a run that raises is not retried); the retried run resumes from its checkpoint,
which is why every path in a run's argument is absolute and must name the same shared folder on every
node. Workers import cifarbench from their node's environment (what `ray start` had: its venv, PYTHONPATH);
a run refuses to start on a worker whose training code differs from the coordinator's, whose cell keys it
would otherwise fill with other code's numbers. CPU runs reuse Ray's long-lived workers (torch stays
imported); a GPU run gets a fresh worker process (Ray's default for GPU tasks, kept on purpose: a process
holds the CUDA device it first initialized, and a reused one could be handed another GPU).

A run that asks for more than any live node has would wait for such a node forever (Ray queues an
infeasible task without an error): refused before any is submitted, naming the fix. A run past
`run_timeout_s` kills its own worker process (a timer in the worker, which on a cluster is the one that
knows when the run started): Ray retries it like any dead worker, from its checkpoint, up to `max_retries`.

`address: auto` joins the cluster that `ray start` made on this machine (a head, or a node of a bigger
cluster); `address: local` starts a private one-machine cluster for the stage and stops it after.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Hashable

from cifarbench.errors import ConfigError
from cifarbench.execute import Done, ExecutorConfig, timeout_message


class RayExecutor:
    kind = "ray"

    def __init__(self, cfg: ExecutorConfig, *, gpu: bool):
        try:
            import ray
        except ImportError:
            raise ConfigError("executor.kind is `ray` but Ray is not installed: pip install -e '.[ray]' "
                              "(or set executor.kind: local)") from None
        self._ray = ray
        sigterm = signal.getsignal(signal.SIGTERM)
        joined = ray.is_initialized()  # a cluster this process is already connected to is not ours to leave
        try:
            # "local" is Ray's own word for a new private cluster (None would join RAY_ADDRESS or the
            # cluster `ray start` made here, like "auto").
            ray.init(address=cfg.address, include_dashboard=False, logging_level="WARNING", configure_logging=True,
                     log_to_driver=True, ignore_reinit_error=True)
        except ConnectionError as exc:
            raise ConfigError(f"no Ray cluster at executor.address {cfg.address!r} ({exc}): start one with "
                              "`ray start --head`, or set executor.address: local") from None
        finally:  # ray.init replaces SIGTERM's handler with sys.exit; the caller's (cancel, end runs KILLED) stays
            if sigterm is not None:
                signal.signal(signal.SIGTERM, sigterm)
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0)) if gpu else 0
        self.threads = 1 if gpus else cfg.cpus_per_run
        ask = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": cfg.cpus_per_run}
        self.slots = max(1, gpus or int(resources.get("CPU", 1)) // cfg.cpus_per_run)
        alive = [node["Resources"] for node in ray.nodes() if node["Alive"]]
        if unfit := _no_node_fits(ask, alive, cfg.address):
            if not joined:
                ray.shutdown()
            raise ConfigError(unfit)
        self.where = (f"ray: {len(alive)} node(s), {self.slots} run(s) at once, each {ask} "
                      f"({int(resources.get('CPU', 0))} CPUs, {gpus} GPUs in the cluster)")
        self._task = ray.remote(max_calls=1 if gpus else 0)(_call).options(
            max_retries=cfg.max_retries, retry_exceptions=False, **ask)
        self._refs: dict[Any, Hashable] = {}
        self._submitted: dict[Any, float] = {}  # time.monotonic() of each submission
        self._code = _training_code()
        self.timeout_s = cfg.run_timeout_s

    def warm(self) -> None:
        """Ray's workers start with the cluster; nothing to do."""

    def submit(self, key: Hashable, fn: Callable[[Any], Any], arg: Any) -> None:
        ref = self._task.remote(fn, arg, self.threads, self._code, str(key), self.timeout_s)
        self._refs[ref], self._submitted[ref] = key, time.monotonic()

    def pending(self) -> int:
        return len(self._refs)

    def next_done(self) -> Done:
        ray = self._ray
        [ref], _ = ray.wait(list(self._refs), num_returns=1)
        key, submitted = self._refs.pop(ref), self._submitted.pop(ref)
        try:
            return Done(key, ray.get(ref))
        except ray.exceptions.RayTaskError as exc:  # the run raised: its traceback
            return Done(key, error=str(exc))
        except ray.exceptions.RayError as exc:  # its worker or node died more than max_retries times
            error = f"{type(exc).__name__}: {exc}"
            if self.timeout_s is not None and time.monotonic() - submitted >= self.timeout_s:
                error += f"\n(possibly: {timeout_message(key, self.timeout_s)}; its worker's output says so if it was)"
            return Done(key, error=error)

    def close(self) -> None:
        """Cancel every task (force: their workers are killed; checkpoints stay) and leave the cluster."""
        refs = list(self._refs)
        for ref in refs:
            self._ray.cancel(ref, force=True)
        # Cancelling is asynchronous: wait until every task is over, so that the caller, which then ends
        # their MLflow runs KILLED, does not race a run still writing.
        if refs:
            self._ray.wait(refs, num_returns=len(refs), timeout=CANCEL_WAIT_S)
        self._refs.clear()
        self._submitted.clear()
        self._ray.shutdown()


CANCEL_WAIT_S = 30  # a force-cancelled task's worker is killed in ~0.1 s (measured); a lost node may never answer


def _training_code() -> str:
    from cifarbench.codeclosure import training_code_digest

    return training_code_digest()


GIL_GRACE_S = 30  # past the limit, faulthandler's C thread ends a run whose hang holds the GIL (the timer cannot)


def _no_node_fits(ask: dict[str, int], nodes: list[dict[str, float]], address: str) -> str | None:
    """Why no live node can run a task asking `ask` (None when one can): the fix is in params.yaml."""
    need = {"CPU": ask["num_cpus"], **({"GPU": ask["num_gpus"]} if "num_gpus" in ask else {})}
    if any(all(node.get(name, 0) >= amount for name, amount in need.items()) for node in nodes):
        return None
    if "GPU" in need:
        return (f"no live node of the Ray cluster at executor.address {address!r} has a GPU and a CPU free for a "
                "run: start its GPU nodes with CPUs (`ray start --num-cpus`), or train on the CPU (train.device: cpu)")
    largest = max((int(node.get("CPU", 0)) for node in nodes), default=0)
    return (f"executor.cpus_per_run asks {need['CPU']} CPUs per run, but the largest live node of the Ray cluster "
            f"at executor.address {address!r} has {largest}: no run could start (Ray would wait for a bigger node "
            f"forever). Lower executor.cpus_per_run in params.yaml to {max(largest, 1)}, or add a node with "
            f"{need['CPU']} CPUs")


def _call(fn: Callable[[Any], Any], arg: Any, threads: int, code: str, key: str, timeout_s: float | None) -> Any:
    import torch

    if _training_code() != code:
        raise RuntimeError("this Ray worker imports another version of cifarbench's training code than the "
                           f"coordinator (from {Path(__file__).parents[1]}): install the same code on every node")
    torch.set_num_threads(threads)
    sys.stdout.flush()
    with _killed_past(timeout_s, key):
        return fn(arg)


@contextlib.contextmanager
def _killed_past(timeout_s: float | None, key: str) -> Iterator[None]:
    """Kill this worker process if the run `key` inside is still running after `timeout_s`: Ray then
    retries it as a dead worker's task. A timer thread says why and where the run hung, then SIGKILLs;
    faulthandler's watchdog (a C thread) ends the process GIL_GRACE_S later if the hang holds the GIL."""
    if timeout_s is None:
        yield
        return

    def kill() -> None:
        print(f"executor: {timeout_message(key, timeout_s)}; where it was:", file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):  # stderr without a file descriptor: no traceback, still killed
            faulthandler.dump_traceback(sys.stderr)
        os.kill(os.getpid(), signal.SIGKILL)

    timer = threading.Timer(timeout_s, kill)
    timer.daemon = True
    timer.start()
    faulthandler.dump_traceback_later(timeout_s + GIL_GRACE_S, exit=True)
    try:
        yield
    finally:
        timer.cancel()
        faulthandler.cancel_dump_traceback_later()
