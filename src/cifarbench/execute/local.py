"""The local executor: a pool of warm worker processes on this machine (concurrent.futures, spawned
interpreters: no forked OpenMP or SQLite state).

Sizing: on a CPU, `cores // cpus_per_run` processes of `cpus_per_run` torch threads each; on a GPU
machine one process per GPU, each seeing only its own (CUDA_VISIBLE_DEVICES, set before torch starts).
A worker that dies (killed, out of memory) breaks the whole pool (that is how ProcessPoolExecutor
reports it): the pool is rebuilt and every run that was in flight is submitted again, up to
`max_retries` times each; they resume from their checkpoints. A run that had already returned is kept. The pool is handed one run per worker at a
time (the rest wait here), so "in flight" means running: a death charges an attempt to those runs only,
not to the whole queued matrix behind them. Workers ignore SIGINT (Ctrl-C reaches the whole process
group; the coordinator decides) and die with the coordinator (Linux PDEATHSIG), so a
killed stage leaves no process behind.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import importlib
import multiprocessing
import os
import signal
import sys
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any, Hashable

from cifarbench.execute import Done, ExecutorConfig

# Imported by every worker as it starts (~5 s on 2 cores), not by its first run: MLflow's SQL store
# (SQLAlchemy, alembic) is the larger half.
PRELOAD = ("mlflow", "mlflow.store.tracking.sqlalchemy_store", "optuna", "cifarbench.runner")


class LocalExecutor:
    kind = "local"

    def __init__(self, cfg: ExecutorConfig, *, gpu: bool):
        import torch

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        gpus = torch.cuda.device_count() if gpu else 0
        if gpus:
            self.devices: list[str | None] = [str(i) for i in range(gpus)]
            self.threads = max(1, cores // gpus)
        else:
            self.threads = min(cfg.cpus_per_run, cores)
            self.devices = [None] * max(1, cores // self.threads)
        self.slots = len(self.devices)
        self.max_retries = cfg.max_retries
        on = f"{gpus} GPU(s)" if gpus else f"{cores} core(s)"
        self.where = f"local: {self.slots} worker process(es) x {self.threads} thread(s) on {on}"
        self._futures: dict[cf.Future, tuple[Hashable, Callable, Any, int]] = {}  # in the pool: running
        self._queued: deque[tuple[Hashable, Callable, Any, int]] = deque()  # not yet handed to the pool
        self._ready: list[Done] = []  # finished (or given up), not yet handed out by next_done
        self._pool = self._start()

    def _start(self) -> cf.ProcessPoolExecutor:
        ctx = multiprocessing.get_context("spawn")
        devices = ctx.Queue()
        for device in self.devices:
            devices.put(device)
        return cf.ProcessPoolExecutor(self.slots, mp_context=ctx, initializer=_init_worker,
                                      initargs=(devices, self.threads, os.getpid()))

    def warm(self) -> None:
        """Start every worker now (they import torch and the run's modules while the caller plans)."""
        for _ in range(self.slots):
            self._pool.submit(int)

    def submit(self, key: Hashable, fn: Callable[[Any], Any], arg: Any) -> None:
        self._queued.append((key, fn, arg, 0))
        self._feed()

    def _feed(self) -> None:
        while self._queued and len(self._futures) < self.slots:
            run = self._queued.popleft()
            try:
                self._futures[self._pool.submit(_call, *run[1:3])] = run
            except cf.process.BrokenProcessPool:  # a worker died since the last wait: this run never started
                self._queued.appendleft(run)
                self._restart()
                return

    def pending(self) -> int:
        return len(self._futures) + len(self._queued) + len(self._ready)

    def next_done(self) -> Done:
        while not self._ready:
            done, _ = cf.wait(self._futures, return_when=cf.FIRST_COMPLETED)
            future = min(done, key=_broken)  # runs that returned first, then the pool's breakage
            if _broken(future):
                self._restart()
                continue
            key = self._futures.pop(future)[0]
            self._feed()
            return _done(key, future)
        return self._ready.pop(0)

    def _restart(self) -> None:
        """A worker died, and with it the pool: every run still in flight goes to a fresh pool (its attempt
        counted: which run killed the worker cannot be told apart), or is given up after max_retries. A run
        that had already returned (its future done, not yet handed out) is kept as it finished: never
        trained again nor charged an attempt."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._start()
        in_flight, self._futures, broken = self._futures, {}, []
        for future, run in in_flight.items():
            if future.done() and not _broken(future):
                self._ready.append(_done(run[0], future))
            else:
                broken.append(run)
        print(f"executor: a worker process died; {len(broken)} run(s) in flight start again from their "
              "checkpoints", file=sys.stderr, flush=True)
        again = []
        for key, fn, arg, attempt in broken:
            if attempt >= self.max_retries:
                self._ready.append(Done(key, error=f"its worker process died {attempt + 1} time(s) "
                                                   "(killed, or out of memory)"))
            else:
                again.append((key, fn, arg, attempt + 1))
        self._queued.extendleft(reversed(again))  # ahead of the runs that never started, in their order
        self._feed()

    def close(self) -> None:
        """Stop every worker now (running runs are killed; their checkpoints stay)."""
        # Private: no public way to kill the workers before Python 3.14, and its kill_workers() does not wait
        # for them to exit. tests/test_install.py::test_process_pool_keeps_its_workers_in_processes fails
        # if the attribute goes or changes shape.
        processes = list((self._pool._processes or {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.kill()
        for process in processes:
            process.join()
        self._futures.clear()
        self._queued.clear()


def _broken(future: cf.Future) -> bool:
    """Whether a done future ended because its pool broke (a worker died), not by its run's own doing."""
    return future.cancelled() or isinstance(future.exception(), cf.process.BrokenProcessPool)


def _done(key: Hashable, future: cf.Future) -> Done:
    error = future.exception()
    return Done(key, future.result()) if error is None else Done(key, error=_text(error))


def _text(error: BaseException) -> str:
    cause = getattr(error, "__cause__", None)  # concurrent.futures keeps the worker's traceback here
    return str(cause) if cause is not None else "".join(traceback.format_exception(error))


def _init_worker(devices, threads: int, parent: int) -> None:
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    device = devices.get()
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    import torch

    torch.set_num_threads(threads)
    for module in PRELOAD:
        importlib.import_module(module)


def _call(fn: Callable[[Any], Any], arg: Any) -> Any:
    return fn(arg)


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
