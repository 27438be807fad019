"""The local executor: a pool of warm worker processes on this machine (concurrent.futures, spawned
interpreters: no forked OpenMP or SQLite state).

Sizing: on a CPU, `cores // cpus_per_run` processes of `cpus_per_run` torch threads each; on a GPU
machine one process per GPU, each seeing only its own (CUDA_VISIBLE_DEVICES, set before torch starts).
A worker that dies (killed, out of memory) breaks the whole pool (that is how ProcessPoolExecutor
reports it): the pool is rebuilt and every run that was in flight is submitted again, up to
`max_retries` times each; they resume from their checkpoints. A run that had already returned is kept. The pool is handed one run per worker at a
time (the rest wait here), so "in flight" means running: a death charges an attempt to those runs only,
not to the whole queued matrix behind them. A run past `run_timeout_s` (counted from when its worker
starts it: each worker posts the run's start and its own pid) has its worker killed here; that breaks the
pool too, but only the overdue run is charged an attempt. Workers ignore SIGINT (Ctrl-C reaches the whole process
group; the coordinator decides) and die with the coordinator (Linux PDEATHSIG), so a
killed stage leaves no process behind.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import importlib
import itertools
import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any, Hashable

from cifarbench.execute import Done, ExecutorConfig, timeout_message

# Imported by every worker as it starts (~5 s on 2 cores), not by its first run: MLflow's SQL store
# (SQLAlchemy, alembic) is the larger half.
PRELOAD = ("mlflow", "mlflow.store.tracking.sqlalchemy_store", "optuna", "cifarbench.runner")
POLL_S = 0.5  # with a run time limit: how often the coordinator looks for runs that started or ran over
_started = None  # in a worker: where it posts (token, its pid, time.monotonic()) as it starts a run


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
        self.max_retries, self.timeout_s = cfg.max_retries, cfg.run_timeout_s
        on = f"{gpus} GPU(s)" if gpus else f"{cores} core(s)"
        self.where = f"local: {self.slots} worker process(es) x {self.threads} thread(s) on {on}"
        self._futures: dict[cf.Future, tuple[Hashable, Callable, Any, int]] = {}  # in the pool: running
        self._queued: deque[tuple[Hashable, Callable, Any, int]] = deque()  # not yet handed to the pool
        self._ready: list[Done] = []  # finished (or given up), not yet handed out by next_done
        self._tokens = itertools.count()
        self._token: dict[cf.Future, int] = {}  # names a run in flight in its worker's start notice
        self._running: dict[int, tuple[int, float]] = {}  # token -> (worker pid, start on time.monotonic)
        self._overdue: set[cf.Future] = set()  # runs whose worker was killed for passing run_timeout_s
        self._pool = self._start()

    def _start(self) -> cf.ProcessPoolExecutor:
        ctx = multiprocessing.get_context("spawn")
        devices = ctx.Queue()
        for device in self.devices:
            devices.put(device)
        self._notices = ctx.SimpleQueue()  # put() writes at once: no feeder thread a hung run could starve
        return cf.ProcessPoolExecutor(self.slots, mp_context=ctx, initializer=_init_worker,
                                      initargs=(devices, self.threads, os.getpid(), self._notices))

    def warm(self) -> None:
        """Start every worker now (they import torch and the run's modules while the caller plans)."""
        for _ in range(self.slots):
            self._pool.submit(int)

    def submit(self, key: Hashable, fn: Callable[[Any], Any], arg: Any) -> None:
        self._queued.append((key, fn, arg, 0))
        self._feed()

    def _feed(self) -> None:
        while self._queued and len(self._futures) < self.slots:
            run, token = self._queued.popleft(), next(self._tokens)
            try:
                future = self._pool.submit(_call, *run[1:3], token)
                self._futures[future], self._token[future] = run, token
            except cf.process.BrokenProcessPool:  # a worker died since the last wait: this run never started
                self._queued.appendleft(run)
                self._restart()
                return

    def pending(self) -> int:
        return len(self._futures) + len(self._queued) + len(self._ready)

    def next_done(self) -> Done:
        while not self._ready:
            done, _ = cf.wait(self._futures, timeout=self._wait_s(), return_when=cf.FIRST_COMPLETED)
            if not done:
                self._kill_overdue()
                continue
            future = min(done, key=_broken)  # runs that returned first, then the pool's breakage
            if _broken(future):
                self._restart()
                continue
            key = self._futures.pop(future)[0]
            self._running.pop(self._token.pop(future), None)
            self._feed()
            return _done(key, future)
        return self._ready.pop(0)

    def _wait_s(self) -> float | None:
        """How long the next wait may last: until the first running run's limit, at most POLL_S while a run
        handed to the pool has not posted its start; None (until a run ends) without a limit."""
        if self.timeout_s is None:
            return None
        while not self._notices.empty():
            token, pid, started = self._notices.get()
            self._running[token] = (pid, started)
        now, waits = time.monotonic(), []
        for future, token in self._token.items():
            if future in self._overdue:
                waits.append(POLL_S)  # killed: the pool reports its breakage shortly
            elif token in self._running:
                waits.append(self._running[token][1] + self.timeout_s - now)
            else:
                waits.append(POLL_S)
        return max(0.0, min(waits, default=POLL_S))

    def _kill_overdue(self) -> None:
        """Kill the worker of every run past its limit (the pool then breaks, and `_restart` charges them)."""
        now = time.monotonic()
        for future, token in self._token.items():
            if future in self._overdue or token not in self._running or future.done():
                continue
            pid, started = self._running[token]
            if now - started >= self.timeout_s:
                self._overdue.add(future)
                print(f"executor: {timeout_message(self._futures[future][0], self.timeout_s)}", file=sys.stderr,
                      flush=True)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:  # its worker died meanwhile: the pool breaks all the same
                    pass

    def _restart(self) -> None:
        """A worker died, and with it the pool: every run still in flight goes to a fresh pool, or is given
        up after max_retries. Which run killed a worker cannot be told apart, so each is charged an attempt;
        except when this coordinator killed workers for their runs' time limit: then only those runs are.
        A run that had already returned (its future done, not yet handed out) is kept as it finished: never
        trained again nor charged an attempt."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._start()
        in_flight, self._futures, broken = self._futures, {}, []
        overdue, self._overdue, self._token, self._running = self._overdue, set(), {}, {}
        for future, run in in_flight.items():
            if future.done() and not _broken(future):
                self._ready.append(_done(run[0], future))
            else:
                broken.append((run, future in overdue))
        what = "was killed (time limit)" if overdue else "died"
        print(f"executor: a worker process {what}; {len(broken)} run(s) in flight start again from their "
              "checkpoints, or are given up after executor.max_retries", file=sys.stderr, flush=True)
        again = []
        for (key, fn, arg, attempt), timed_out in broken:
            charged = timed_out or not overdue
            if charged and attempt >= self.max_retries:
                why = (timeout_message(key, self.timeout_s) if timed_out else
                       "its worker process died (killed, or out of memory)")
                self._ready.append(Done(key, error=f"{why}; given up after {attempt + 1} attempt(s) "
                                                   f"(executor.max_retries: {self.max_retries})"))
            else:
                again.append((key, fn, arg, attempt + charged))
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


def _init_worker(devices, threads: int, parent: int, started) -> None:
    global _started
    _die_with_parent(parent)
    _started = started
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    device = devices.get()
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    import torch

    torch.set_num_threads(threads)
    for module in PRELOAD:
        importlib.import_module(module)


def _call(fn: Callable[[Any], Any], arg: Any, token: int) -> Any:
    _started.put((token, os.getpid(), time.monotonic()))  # CLOCK_MONOTONIC: one clock for every process
    return fn(arg)


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
