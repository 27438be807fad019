"""A warm worker that runs pipeline stages in forks of a process that has already imported torch and
mlflow, so the ~100 train cells of `dvc repro` do not each pay ~11 s of imports (measured on 2 cores:
torch 3.2 s, mlflow 3.0 s, mlflow's SQLAlchemy store 4.7 s more on first use).

DVC still runs one command per cell; that command (`stages/train.py`) is a thin client importing only the
standard library. It connects to a Unix socket, starting the worker if none is listening, and hands over
its stdin/stdout/stderr, working directory, environment and arguments. The worker forks; the child
becomes the stage (same output, same exit status) and the client waits for it. Killing the client kills
the child. The worker exits after `CIFARBENCH_WORKER_IDLE` seconds (default 120) without work; its socket
name carries a hash of the package's source files, so edited code always gets a fresh worker.
`CIFARBENCH_WORKER=0` runs every stage in its own process instead.

This module imports nothing heavy at the top: the client side must stay cheap.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PRELOAD = ("torch", "mlflow", "mlflow.store.tracking.sqlalchemy_store", "cifarbench.pipeline", "cifarbench.runner")
# Read when torch initializes, so a worker started under other values must not serve this client.
IMPORT_TIME_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "PYTHONPATH", "PYTHONHASHSEED")
START_TIMEOUT_S = 120


def run(target: str, argv: list[str]) -> int:
    """Run `target` ("module:function", called with argv, returning an exit status) in a warm worker,
    or in this process when the worker is disabled or cannot be reached."""
    if os.environ.get("CIFARBENCH_WORKER", "1") == "0":
        return _call(target, argv)
    try:
        conn = _connect(socket_path())
    except OSError as exc:
        print(f"cifarbench: warm worker unavailable ({exc}); running in this process", file=sys.stderr)
        return _call(target, argv)
    with conn:
        request = json.dumps({"target": target, "argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)})
        socket.send_fds(conn, [request.encode() + b"\n"], [0, 1, 2])
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = conn.recv(4096)
            if not chunk:
                print("cifarbench: the warm worker went away before the stage finished", file=sys.stderr)
                return 1
            reply += chunk
    return int(json.loads(reply)["status"])


def socket_path() -> Path:
    digest = hashlib.sha256(sys.executable.encode())
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path}:{stat.st_mtime_ns}:{stat.st_size}".encode())
    for name in IMPORT_TIME_ENV:
        digest.update(f"{name}={os.environ.get(name)}".encode())
    return Path(tempfile.gettempdir()) / f"cifarbench-worker-{os.getuid()}-{digest.hexdigest()[:16]}.sock"


def _connect(path: Path) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
        return conn
    except OSError:
        pass
    log = open(path.with_suffix(".log"), "ab")
    subprocess.Popen([sys.executable, "-m", "cifarbench.worker", str(path)], stdin=subprocess.DEVNULL,
                     stdout=log, stderr=log, start_new_session=True)  # never holds the caller's pipes
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            conn.connect(str(path))
            return conn
        except OSError:
            if time.monotonic() > deadline:
                conn.close()
                raise TimeoutError(f"no worker listening on {path} after {START_TIMEOUT_S} s; see {path.with_suffix('.log')}")
            time.sleep(0.05)


def _call(target: str, argv: list[str]) -> int:
    module, function = target.split(":")
    return int(getattr(importlib.import_module(module), function)(argv) or 0)


def serve(path: Path, idle_s: float) -> None:
    for name in PRELOAD:
        importlib.import_module(name)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = path.with_name(f"{path.name}.{os.getpid()}")
    server.bind(str(tmp))
    server.listen(8)
    os.replace(tmp, path)  # appears only once it accepts: a concurrent client never sees a dead socket
    inode = os.stat(path).st_ino
    try:
        while select.select([server], [], [], idle_s)[0]:
            _accept_and_serve(server)
    finally:
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == inode:  # not a newer worker's socket that replaced ours
                path.unlink()  # from here on a new client starts a new worker
        server.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:  # clients that connected before the unlink are still served
                _accept_and_serve(server)
        server.close()


def _accept_and_serve(server: socket.socket) -> None:
    conn, _ = server.accept()
    conn.setblocking(True)
    with conn:
        _serve_one(conn)


def _serve_one(conn: socket.socket) -> None:
    message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    while not message.endswith(b"\n"):
        message += conn.recv(1 << 20)
    request = json.loads(message)
    pid = os.fork()
    if pid == 0:  # the child becomes the stage
        conn.close()
        for fd, target_fd in zip(fds, (0, 1, 2)):
            os.dup2(fd, target_fd)
        sys.stdin, sys.stdout, sys.stderr = (open(i, mode, closefd=False, buffering=1 if i else -1)
                                             for i, mode in ((0, "r"), (1, "w"), (2, "w")))
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        status = 1
        try:
            status = _call(request["target"], request["argv"])
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    for fd in fds:
        os.close(fd)
    status = _wait(pid, conn)
    try:
        conn.sendall(json.dumps({"status": status}).encode() + b"\n")
    except OSError:
        pass


def _wait(pid: int, conn: socket.socket) -> int:
    """The child's exit status; kills it if the client hangs up first (DVC interrupted, SIGKILL)."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
        if select.select([conn], [], [], 0.2)[0] and not conn.recv(1, socket.MSG_PEEK):
            os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    serve(Path(sys.argv[1]), float(os.environ.get("CIFARBENCH_WORKER_IDLE", "120")))
