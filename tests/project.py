"""A throwaway copy of the project as a real git + DVC repo, for pipeline tests.

The pipeline's files (dvc.yaml, params.yaml, stages/, src/ for DVC's dependency hashes) are copied;
the stages import the installed cifarbench package. params.yaml is edited the way a user would.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from cifarbench.config import read_yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv running the tests: dvc, mlflow and python come from here


class Project:
    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def create(cls, path: Path, **params) -> Project:
        for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
            shutil.copy(ROOT / name, path / name)
        for name in ("stages", "src"):
            shutil.copytree(ROOT / name, path / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        project = cls(path)
        project.git("init", "-q")
        project.run("dvc", "init", "-q")
        project.run("dvc", "config", "core.analytics", "false")
        project.set_params(**params)
        project.git("add", "-A")
        project.git("commit", "-qm", "pipeline")
        return project

    @property
    def params(self) -> dict:
        return read_yaml((self.path / "params.yaml").read_text())

    def set_params(self, **changes) -> None:
        """Set dotted keys, `data__url="..."` style (`__` separates levels); None deletes a key. Edited as
        `dvc exp run -S` edits it (DVC's round-trip YAML): comments and layout stay, as a user's editor keeps them."""
        from dvc.utils.serialize import modify_yaml

        with modify_yaml(self.path / "params.yaml") as tree:
            for dotted, value in changes.items():
                *parents, last = dotted.split("__")
                node = tree
                for key in parents:
                    node = node[key]
                if value is None:
                    node.pop(last, None)
                else:
                    node[last] = value

    def env(self, **extra) -> dict:
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
               "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
               "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}
        env.pop("MLFLOW_TRACKING_URI", None)
        return {**env, **extra}

    def run(self, *cmd: str, check: bool = True, **env) -> subprocess.CompletedProcess:
        result = subprocess.run(cmd, cwd=self.path, env=self.env(**env), capture_output=True, text=True)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def git(self, *args: str) -> None:
        self.run("git", *args)

    def repro(self, *targets: str, check: bool = True, **env) -> subprocess.CompletedProcess:
        return self.run("dvc", "repro", *targets, check=check, **env)


@contextlib.contextmanager
def mlflow_server(folder: Path, backend_uri: str, *extra_args: str) -> Iterator[str]:
    """A real `mlflow server` on a free 127.0.0.1 port over `backend_uri`; yields its URL, stops it after."""
    with mlflow_server_process(folder, backend_uri, *extra_args) as (url, _):
        yield url


@contextlib.contextmanager
def mlflow_server_process(folder: Path, backend_uri: str, *extra_args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """`mlflow_server`, also yielding the server process: it runs in its own process group, so
    `stop_server` (which the block may call early, e.g. to kill it mid-run) stops it and its workers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = folder / "mlflow-server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                                   "--workers", "1", "--backend-store-uri", backend_uri, *extra_args],
                                  stdout=log, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180  # ~15 s idle, ~45 s on 2 busy cores
            while True:
                try:
                    urllib.request.urlopen(f"{url}/health", timeout=2)
                    break
                except OSError:
                    assert server.poll() is None, log_path.read_text()
                    assert time.monotonic() < deadline, f"mlflow server did not answer in 180 s: {log_path.read_text()}"
                    time.sleep(1)
            yield url, server
        finally:
            stop_server(server)


def stop_server(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (its workers too), then wait for it."""
    if server.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def architecture(params: dict, arch: str) -> dict:
    """params.yaml's architectures.<arch>, without its presets' `ablations` lists: a test project that keeps
    only some ablations would otherwise name the others there (an error, as a typo would be)."""
    spec = dict(params["architectures"][arch])
    spec["presets"] = {name: {k: v for k, v in budget.items() if k != "ablations"}
                       for name, budget in (spec.get("presets") or {}).items()}
    return spec
