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

`address: auto` joins the cluster that `ray start` made on this machine (a head, or a node of a bigger
cluster); `address: local` starts a private one-machine cluster for the stage and stops it after.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Hashable

from cifarbench.errors import ConfigError
from cifarbench.execute import Done, ExecutorConfig


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
        nodes = sum(1 for node in ray.nodes() if node["Alive"])
        self.where = (f"ray: {nodes} node(s), {self.slots} run(s) at once, each {ask} "
                      f"({int(resources.get('CPU', 0))} CPUs, {gpus} GPUs in the cluster)")
        self._task = ray.remote(max_calls=1 if gpus else 0)(_call).options(
            max_retries=cfg.max_retries, retry_exceptions=False, **ask)
        self._refs: dict[Any, Hashable] = {}
        self._code = _training_code()

    def warm(self) -> None:
        """Ray's workers start with the cluster; nothing to do."""

    def submit(self, key: Hashable, fn: Callable[[Any], Any], arg: Any) -> None:
        self._refs[self._task.remote(fn, arg, self.threads, self._code)] = key

    def pending(self) -> int:
        return len(self._refs)

    def next_done(self) -> Done:
        ray = self._ray
        [ref], _ = ray.wait(list(self._refs), num_returns=1)
        key = self._refs.pop(ref)
        try:
            return Done(key, ray.get(ref))
        except ray.exceptions.RayTaskError as exc:  # the run raised: its traceback
            return Done(key, error=str(exc))
        except ray.exceptions.RayError as exc:  # its worker or node died more than max_retries times
            return Done(key, error=f"{type(exc).__name__}: {exc}")

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
        self._ray.shutdown()


CANCEL_WAIT_S = 30  # a force-cancelled task's worker is killed in ~0.1 s (measured); a lost node may never answer


def _training_code() -> str:
    from cifarbench.codeclosure import training_code_digest

    return training_code_digest()


def _call(fn: Callable[[Any], Any], arg: Any, threads: int, code: str) -> Any:
    import torch

    if _training_code() != code:
        raise RuntimeError("this Ray worker imports another version of cifarbench's training code than the "
                           f"coordinator (from {Path(__file__).parents[1]}): install the same code on every node")
    torch.set_num_threads(threads)
    sys.stdout.flush()
    return fn(arg)
