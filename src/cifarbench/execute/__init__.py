"""Executors: where the runs of the benchmark run. A run is one unit of work (one (architecture, ablation,
seed) of the train stage, or one tuning trial): a module-level function and a picklable argument.

    local  (default, no services)  a pool of warm worker processes on this machine, sized to it: one
                                   1-thread process per core on a CPU (two 1-thread processes train the
                                   CPU presets' small models 1.2-2x faster than one 2-thread process,
                                   measured), one process per GPU on a GPU machine (each sees only its GPU)
    ray                            the same runs as Ray tasks on a Ray cluster (`ray start --head` /
                                   `ray start --address HEAD:6379`), each asking for its CPUs or GPU

Both import torch once per worker, not once per run. The executor is chosen outside the cached params
(params.yaml `executor:`, which no stage depends on, or CIFARBENCH_EXECUTOR), so switching it never
invalidates a result: a run's numbers depend on its device and thread count, which are the same under
both (and recorded with the run: tags `fast.device`, `fast.threads`).

Failure semantics, the same for both:
- a run whose worker process (or Ray node) dies is retried up to `max_retries` times; it resumes from its
  last epoch checkpoint (on a filesystem all workers share, at the same path), so its final numbers are
  those of an uninterrupted run;
- a run that runs past `run_timeout_s` (hung: a deadlocked kernel, a stuck file system) is killed and
  counted like a worker death: retried from its checkpoint up to `max_retries` times, then failed with a
  message naming the run and the limit;
- a run that raises is not retried: the other runs go on, and the caller gets the error;
- Ctrl-C (SIGINT) or SIGTERM stops every worker and raises KeyboardInterrupt in the caller.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Hashable, Literal, Protocol

from pydantic import Field

from cifarbench.config import Section
from cifarbench.redact import mask_credentials

ENV_EXECUTOR = "CIFARBENCH_EXECUTOR"  # local | ray: overrides params.yaml executor.kind
ENV_RAY_ADDRESS = "CIFARBENCH_RAY_ADDRESS"  # overrides executor.address
RUN_TIMEOUT_S = 6 * 3600.0  # executor.run_timeout_s by default


class ExecutorConfig(Section):
    """params.yaml `executor:`: how runs are spread over the machine(s). No stage depends on it."""

    kind: Literal["local", "ray"] = "local"
    address: str = Field("auto", min_length=1, description="ray: the cluster's address (`auto`: the one `ray start` "
                         "made on this machine); `local`: start a private one-machine cluster for this stage")
    cpus_per_run: int = Field(1, ge=1, le=1024, description="CPU threads of a run on a CPU")
    max_retries: int = Field(2, ge=0, le=100, description="a run whose worker or node died is retried this often")
    # 6 h by default: far above a run of the CPU presets (minutes); a `full` run of a large model on a slow GPU
    # may need more (set it, or null for no limit). A limit that is hit costs a retry, not the result.
    run_timeout_s: float | None = Field(RUN_TIMEOUT_S, gt=0, le=30 * 86_400, description="seconds one attempt of a "
                                        "run may take before it is killed and retried (null: no limit)")


def resolve(cfg: ExecutorConfig) -> ExecutorConfig:
    """The config with the environment's overrides applied (CIFARBENCH_EXECUTOR, CIFARBENCH_RAY_ADDRESS)."""
    update = {k: v for k, v in (("kind", os.environ.get(ENV_EXECUTOR)), ("address", os.environ.get(ENV_RAY_ADDRESS)))
              if v}
    return ExecutorConfig.model_validate(cfg.model_dump() | update) if update else cfg


def timeout_message(key: Hashable, limit_s: float) -> str:
    """What a run killed for running past the limit is told, in both executors' words."""
    return (f"run {key} ran past executor.run_timeout_s ({limit_s:g} s) and was killed (hung?); raise "
            "executor.run_timeout_s in params.yaml if its runs are really that long")


@dataclass(frozen=True)
class Done:
    """A finished run: its key, and either its result or why it failed."""

    key: Hashable
    result: Any = None
    error: str | None = None  # the run's traceback, or what killed its worker too often

    def __post_init__(self) -> None:  # a traceback holds the URLs MLflow or Optuna failed on, passwords included
        if self.error is not None:
            object.__setattr__(self, "error", mask_credentials(self.error))

    @property
    def ok(self) -> bool:
        return self.error is None


class Executor(Protocol):
    kind: str  # local | ray
    slots: int  # runs that execute at once
    threads: int  # torch threads of one run
    where: str  # one line for the log: which executor, how many slots, on what

    def warm(self) -> None: ...

    def submit(self, key: Hashable, fn: Callable[[Any], Any], arg: Any) -> None: ...

    def pending(self) -> int: ...

    def next_done(self) -> Done: ...

    def close(self) -> None: ...


def open_executor(cfg: ExecutorConfig, *, gpu: bool) -> Executor:
    """An executor for runs that want a GPU (`gpu`) or the CPU."""
    cfg = resolve(cfg)
    if cfg.kind == "ray":
        from cifarbench.execute.ray_cluster import RayExecutor

        return RayExecutor(cfg, gpu=gpu)
    from cifarbench.execute.local import LocalExecutor

    return LocalExecutor(cfg, gpu=gpu)


@contextlib.contextmanager
def running(cfg: ExecutorConfig, *, gpu: bool) -> Iterator[Executor]:
    """An open executor, closed (every worker stopped) on the way out. SIGTERM (how CI and DVC's
    callers stop a job) is turned into KeyboardInterrupt meanwhile, so it unwinds like Ctrl-C."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    executor = open_executor(cfg, gpu=gpu)
    try:
        yield executor
    finally:
        signal.signal(signal.SIGTERM, previous)
        executor.close()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
