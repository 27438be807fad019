"""The Ray executor: runs as Ray tasks on a cluster (`pip install -e '.[ray]'`).

Each task asks for `cpus_per_run` CPUs, or one GPU where the cluster has GPUs (Ray then sets
CUDA_VISIBLE_DEVICES for it). Ray retries a task whose worker process or node died (`max_retries`,
`retry_exceptions=False`: a run that raises is not retried); the retried run resumes from its checkpoint,
which is why every path in a run's argument is absolute and must name the same shared folder on every
node. Ray's workers are long-lived: torch stays imported between runs.

`address: auto` joins the cluster that `ray start` made on this machine (a head, or a node of a bigger
cluster); `address: local` starts a private one-machine cluster for the stage and stops it after.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
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
        address = None if cfg.address == "local" else cfg.address
        try:
            ray.init(address=address, include_dashboard=False, logging_level="WARNING", configure_logging=True,
                     log_to_driver=True, ignore_reinit_error=True)
        except ConnectionError as exc:
            raise ConfigError(f"no Ray cluster at executor.address {cfg.address!r} ({exc}): start one with "
                              "`ray start --head`, or set executor.address: local") from None
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0)) if gpu else 0
        self.threads = 1 if gpus else cfg.cpus_per_run
        ask = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": cfg.cpus_per_run}
        self.slots = max(1, gpus or int(resources.get("CPU", 1)) // cfg.cpus_per_run)
        nodes = sum(1 for node in ray.nodes() if node["Alive"])
        self.where = (f"ray: {nodes} node(s), {self.slots} run(s) at once, each {ask} "
                      f"({int(resources.get('CPU', 0))} CPUs, {gpus} GPUs in the cluster)")
        self._task = ray.remote(_call).options(max_retries=cfg.max_retries, retry_exceptions=False, **ask)
        self._refs: dict[Any, Hashable] = {}

    def warm(self) -> None:
        """Ray's workers start with the cluster; nothing to do."""

    def submit(self, key: Hashable, fn: Callable[[Any], Any], arg: Any) -> None:
        self._refs[self._task.remote(fn, arg, self.threads)] = key

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
        for ref in self._refs:
            self._ray.cancel(ref, force=True)
        self._refs.clear()
        self._ray.shutdown()


def _call(fn: Callable[[Any], Any], arg: Any, threads: int) -> Any:
    import torch

    torch.set_num_threads(threads)
    sys.stdout.flush()
    return fn(arg)
