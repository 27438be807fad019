"""Run one function over several items side by side in forked, single-threaded child processes.

A benchmark cell trains its seeds this way on small CPUs: the CPU presets' models are too small to keep
two threads busy, so two 1-thread processes train faster than one 2-thread process (measured on 2 cores,
train images/s, batch 32: resnet18 width 0.125 stem 2 1,327 vs 2,228; lenet5 width 2 2,906 vs 3,789;
googlenet 406 vs 828). Forking keeps the parent's imports and loaded data (no re-import, shared pages).
A forked child must stay at one torch thread: GNU OpenMP hangs a child whose parent had already used its
thread pool once the child runs a parallel region (reproduced with torch 2.14 on this project's machine).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from typing import Any

import torch

Report = Callable[[Any], None]


class ChildFailed(RuntimeError):
    """A child process raised, or died without a result (killed, out of memory)."""


def side_by_side(items: Sequence[Any]) -> int:
    """How many of `items` (seeds) to run at once: one 1-thread process per core when cores are fewer than
    two per item; otherwise 1 (one process, all threads, is as fast there and stays deterministic)."""
    threads = torch.get_num_threads()
    return min(len(items), threads) if 2 <= len(items) and threads < 2 * len(items) else 1


def map_forked(fn: Callable[[Any, Report], Any], items: Sequence[Any], *, processes: int,
               on_report: Callable[[Any, Any], None] = lambda item, payload: None) -> list[Any]:
    """[fn(item, report) for item in items], run in up to `processes` forked 1-thread children at once.

    `report(payload)` inside fn reaches `on_report(item, payload)` in this process (progress bars, logs).
    Children start one at a time: the next starts once the previous one has reported, so one-time setup
    (e.g. creating the MLflow database) never races. Results and payloads must pickle. processes <= 1
    runs everything here, in order. The first failure stops the others (their work so far stays wherever
    fn saved it) and raises ChildFailed with the child's traceback. Children die with this process
    (Linux), so killing a stage leaves no orphans training on."""
    if processes <= 1 or len(items) <= 1:
        return [fn(item, lambda payload, item=item: on_report(item, payload)) for item in items]
    ctx = multiprocessing.get_context("fork")
    pending, running, results, starting = list(enumerate(items)), {}, {}, None
    try:
        while pending or running:
            if pending and len(running) < processes and starting is None:
                index, item = pending.pop(0)
                reader, writer = ctx.Pipe(duplex=False)
                child = ctx.Process(target=_child, args=(fn, item, writer, os.getpid()), daemon=True)
                child.start()
                writer.close()
                running[reader] = (index, item, child)
                starting = reader
            for conn in wait(list(running)):
                if conn is starting:
                    starting = None
                index, item, child = running[conn]
                try:
                    kind, payload = conn.recv()
                except EOFError:
                    child.join()
                    raise ChildFailed(f"the process for {item!r} died without a result (exit code {child.exitcode}); "
                                      "rerun to resume from its last checkpoint") from None
                if kind == "report":
                    on_report(item, payload)
                    continue
                del running[conn]
                conn.close()
                child.join()
                if kind == "error":
                    raise ChildFailed(f"{item!r} failed in its process:\n{payload}")
                results[index] = payload
    finally:
        for _, _, child in running.values():
            child.kill()
            child.join()
    return [results[i] for i in range(len(items))]


def _child(fn: Callable[[Any, Report], Any], item: Any, conn, parent: int) -> None:
    _die_with_parent(parent)
    torch.set_num_threads(1)
    try:
        conn.send(("result", fn(item, lambda payload: conn.send(("report", payload)))))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()
        sys.stdout.flush()
        sys.stderr.flush()


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
